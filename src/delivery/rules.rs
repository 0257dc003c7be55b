//! Judging an answer, in two steps with one job each.
//!
//! 1. A workflow's [`ResponseRule`] reads what came back (status, body, `Retry-After`, or how the
//!    transport failed) and says what the target meant: a [`Verdict`] (accepted, worth another
//!    try, or refused for good). The default, [`StatusRule`], judges by the HTTP status and the
//!    workflow's `retry_on_*` lists; a target that answers 200 with an error code in the body
//!    gets a rule of its own.
//! 2. [`classify`] turns the verdict into an [`Outcome`] with the retry policy and the attempt
//!    number: the wait before the next attempt (a target's `Retry-After` as a floor), or dead when
//!    the attempts are spent. It is the one place that sorts outcomes.

use std::fmt;
use std::time::Duration;

use crate::outbox::{excerpt, Outcome};
use crate::workflow::RetryPolicy;

/// Longest `Retry-After` honoured; a target asking for more gets this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);
/// Most characters of a redirect's `Location` shown in a reason.
const LOCATION_MAX_CHARS: usize = 300;

/// What came back from one request (already scrubbed of the target's secrets).
#[derive(Debug, Clone)]
pub enum Answer {
    Status {
        status: u16,
        body: String,
        retry_after: Option<Duration>,
        /// The `Location` header as sent (lossy UTF-8), for 3xx reasons.
        location: Option<String>,
    },
    Transport(TransportKind, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Timeout,
    Connect,
    /// The connection broke or the answer was not HTTP (reset mid-response, garbage).
    Broken,
}

/// What a target meant by its answer, before the retry policy has its say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The document was accepted.
    Success,
    /// Not accepted, and another attempt may succeed (the target is failing: this counts against
    /// its circuit breaker). `not_before`: the target asked to be left alone this long at least.
    Retry {
        reason: String,
        not_before: Option<Duration>,
    },
    /// Not accepted, and sending it again as it is will not help. `target_failed`: whether it
    /// counts against the circuit breaker (a transport failure the workflow does not retry does;
    /// a 4xx or 3xx does not: the target is up and said no).
    Dead { reason: String, target_failed: bool },
}

impl Verdict {
    /// Whether this answer counts as a failure of the target for its circuit breaker.
    pub fn target_failed(&self) -> bool {
        match self {
            Verdict::Success => false,
            Verdict::Retry { .. } => true,
            Verdict::Dead { target_failed, .. } => *target_failed,
        }
    }
}

/// How a workflow's answers are judged: success, retry or dead, from status *and* body.
///
/// Implementations are plain functions of the answer (no I/O); one is shared by every delivery of
/// its workflow.
pub trait ResponseRule: Send + Sync + fmt::Debug + 'static {
    /// Whether the answer says the credential sent is no longer valid. The pipeline then asks the
    /// target's authenticator to refresh it and repeats the request once, without spending the
    /// row's attempt; when it cannot refresh, the answer is judged as it is. Default: HTTP 401.
    fn credential_rejected(&self, answer: &Answer) -> bool {
        matches!(answer, Answer::Status { status: 401, .. })
    }

    /// What the target meant.
    fn judge(&self, answer: &Answer) -> Verdict;
}

/// The default rule: judged by the HTTP status and the workflow's retry lists alone.
///
/// 2xx is success. A 3xx (redirects are never followed) is dead with its `Location` in the
/// reason, unless the workflow lists the status in `retry_on_status`. Other statuses are retried
/// when listed (with their `Retry-After`) and dead otherwise; timeouts and connection failures as
/// `retry_on_timeout` / `retry_on_connect_error` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRule {
    retry_on_status: Vec<u16>,
    retry_on_timeout: bool,
    retry_on_connect_error: bool,
}

impl StatusRule {
    /// The rule a workflow's `[retry]` section describes.
    pub fn new(policy: &RetryPolicy) -> StatusRule {
        StatusRule {
            retry_on_status: policy.retry_on_status.clone(),
            retry_on_timeout: policy.retry_on_timeout,
            retry_on_connect_error: policy.retry_on_connect_error,
        }
    }

    fn retries_status(&self, status: u16) -> bool {
        self.retry_on_status.contains(&status)
    }
}

impl ResponseRule for StatusRule {
    fn judge(&self, answer: &Answer) -> Verdict {
        match answer {
            Answer::Status { status, .. } if (200..300).contains(status) => Verdict::Success,
            Answer::Status {
                status, location, ..
            } if (300..400).contains(status) => {
                let reason = redirect_reason(*status, location.as_deref());
                if self.retries_status(*status) {
                    Verdict::Retry {
                        reason,
                        not_before: None,
                    }
                } else {
                    Verdict::Dead {
                        reason,
                        target_failed: false,
                    }
                }
            }
            Answer::Status {
                status,
                body,
                retry_after,
                ..
            } => {
                let reason = format!(
                    "HTTP {status} {}: {}",
                    reqwest::StatusCode::from_u16(*status)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or(""),
                    excerpt(body.trim(), 512)
                );
                if self.retries_status(*status) {
                    Verdict::Retry {
                        reason,
                        not_before: *retry_after,
                    }
                } else {
                    Verdict::Dead {
                        reason,
                        target_failed: false,
                    }
                }
            }
            Answer::Transport(kind, msg) => {
                let retryable = match kind {
                    TransportKind::Timeout => self.retry_on_timeout,
                    TransportKind::Connect | TransportKind::Broken => self.retry_on_connect_error,
                };
                if retryable {
                    Verdict::Retry {
                        reason: msg.clone(),
                        not_before: None,
                    }
                } else {
                    Verdict::Dead {
                        reason: msg.clone(),
                        target_failed: true,
                    }
                }
            }
        }
    }
}

/// Sort a verdict into an outcome, in one place: success is done, dead is dead, and a retryable
/// failure waits as the policy says after attempt `attempt` (at least as long as the target
/// asked, up to [`MAX_RETRY_AFTER`]), or is dead when the attempts are spent.
pub fn classify(verdict: Verdict, policy: &RetryPolicy, attempt: u32) -> Outcome {
    let (reason, not_before) = match verdict {
        Verdict::Success => return Outcome::Done,
        Verdict::Dead { reason, .. } => return Outcome::Dead { reason },
        Verdict::Retry { reason, not_before } => (reason, not_before),
    };
    match policy.next_wait(attempt) {
        Some(wait) if attempt < policy.max_attempts => {
            let after = match not_before {
                Some(asked) => wait.max(asked.min(MAX_RETRY_AFTER)),
                None => wait,
            };
            Outcome::Retry { after, reason }
        }
        _ => Outcome::Dead {
            reason: format!(
                "attempts exhausted ({attempt} of {}); last: {reason}",
                policy.max_attempts
            ),
        },
    }
}

/// The reason for a 3xx: where it pointed (bounded, control characters escaped) and what to do.
fn redirect_reason(status: u16, location: Option<&str>) -> String {
    const ADVICE: &str = "(redirects are not followed: fix the target URL in the workflow)";
    let Some(location) = location else {
        let name = reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("redirect");
        return format!("HTTP {status} {name} without a Location header {ADVICE}");
    };
    let mut shown = String::new();
    for (i, c) in location.chars().enumerate() {
        if i == LOCATION_MAX_CHARS {
            shown.push('…');
            break;
        }
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    format!("HTTP {status} redirect to {shown} {ADVICE}")
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::Backoff;

    fn onec_policy() -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff::Fixed(vec![
                Duration::from_secs(2),
                Duration::from_secs(5),
                Duration::from_secs(10),
            ]),
            max_attempts: 4,
            retry_on_status: vec![500, 502, 503, 504],
            retry_on_timeout: true,
            retry_on_connect_error: true,
        }
    }

    /// The default rule then `classify`, as the pipeline runs them: the outcome and whether it
    /// counts against the circuit.
    fn sort(answer: &Answer, policy: &RetryPolicy, attempt: u32) -> (Outcome, bool) {
        let verdict = StatusRule::new(policy).judge(answer);
        let failed = verdict.target_failed();
        (classify(verdict, policy, attempt), failed)
    }

    fn status(code: u16) -> Answer {
        Answer::Status {
            status: code,
            body: "{}".into(),
            retry_after: None,
            location: None,
        }
    }

    fn redirect(code: u16, location: &str) -> Answer {
        Answer::Status {
            status: code,
            body: "<html>moved</html>".into(),
            retry_after: None,
            location: Some(location.into()),
        }
    }

    #[test]
    fn classification_follows_the_directive() {
        let p = onec_policy();
        assert_eq!(sort(&status(201), &p, 1).0, Outcome::Done);
        for code in [500, 502, 503, 504] {
            let (o, failed) = sort(&status(code), &p, 1);
            assert!(matches!(o, Outcome::Retry { after, .. } if after == Duration::from_secs(2)));
            assert!(failed);
        }
        let waits: Vec<_> = (1..=3)
            .map(|a| sort(&status(503), &p, a).0.wait().unwrap())
            .collect();
        assert_eq!(waits, [2, 5, 10].map(Duration::from_secs));
        let (o, _) = sort(&status(503), &p, 4);
        assert!(
            matches!(&o, Outcome::Dead { reason } if reason.contains("attempts exhausted (4 of 4)")),
            "{o:?}"
        );
        for code in [400, 401, 404, 409, 422, 429] {
            let (o, failed) = sort(&status(code), &p, 1);
            assert!(
                matches!(&o, Outcome::Dead { reason } if reason.contains(&code.to_string())),
                "{o:?}"
            );
            assert!(!failed);
        }
        let t = Answer::Transport(TransportKind::Timeout, "timed out".into());
        assert!(matches!(sort(&t, &p, 1).0, Outcome::Retry { .. }));
        let c = Answer::Transport(TransportKind::Connect, "refused".into());
        assert!(matches!(sort(&c, &p, 2).0, Outcome::Retry { .. }));
    }

    #[test]
    fn transport_failures_not_retried_are_dead_but_count_against_the_target() {
        let mut p = onec_policy();
        p.retry_on_timeout = false;
        let t = Answer::Transport(TransportKind::Timeout, "timed out".into());
        assert_eq!(
            sort(&t, &p, 1),
            (
                Outcome::Dead {
                    reason: "timed out".into()
                },
                true
            )
        );
        let c = Answer::Transport(TransportKind::Broken, "reset".into());
        assert!(matches!(sort(&c, &p, 1), (Outcome::Retry { .. }, true)));
    }

    #[test]
    fn redirects_are_dead_by_default_with_their_location() {
        let p = onec_policy();
        for code in [301, 302, 303, 307, 308] {
            let (o, failed) = sort(&redirect(code, "http://1c.example/login?next=/hs"), &p, 1);
            assert_eq!(
                o,
                Outcome::Dead {
                    reason: format!(
                        "HTTP {code} redirect to http://1c.example/login?next=/hs (redirects are \
                         not followed: fix the target URL in the workflow)"
                    )
                }
            );
            assert!(!failed, "the target answered: not a circuit failure");
        }
        let (o, _) = sort(&status(304), &p, 1);
        assert_eq!(
            o.error(),
            Some(
                "HTTP 304 Not Modified without a Location header (redirects are not followed: \
                 fix the target URL in the workflow)"
            )
        );
        // Control characters escaped (no forged log lines), length bounded.
        let hostile = format!("http://x/\r\nFAKE: 1\u{1b}[31m{}", "a".repeat(10_000));
        let (o, _) = sort(&redirect(302, &hostile), &p, 1);
        let reason = o.error().unwrap();
        assert!(
            reason.starts_with("HTTP 302 redirect to http://x/\\r\\nFAKE: 1\\u{1b}[31maaa"),
            "{reason}"
        );
        assert!(!reason.chars().any(char::is_control), "{reason}");
        assert!(reason.len() < LOCATION_MAX_CHARS + 150, "{}", reason.len());
        assert!(
            reason.contains("a… (redirects are not followed"),
            "{reason}"
        );
    }

    #[test]
    fn a_redirect_listed_as_retryable_is_retried_then_dead() {
        let mut p = onec_policy();
        p.retry_on_status.push(307);
        let (o, failed) = sort(&redirect(307, "http://elsewhere/"), &p, 1);
        assert!(
            matches!(&o, Outcome::Retry { after, reason } if *after == Duration::from_secs(2) && reason.starts_with("HTTP 307 redirect to http://elsewhere/")),
            "{o:?}"
        );
        assert!(failed);
        let (o, _) = sort(&redirect(307, "http://elsewhere/"), &p, 4);
        assert!(
            o.error()
                .unwrap()
                .starts_with("attempts exhausted (4 of 4); last: HTTP 307 redirect"),
            "{o:?}"
        );
        // Another 3xx is still dead.
        assert!(matches!(
            sort(&redirect(302, "/"), &p, 1).0,
            Outcome::Dead { .. }
        ));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = onec_policy();
        let a = Answer::Status {
            status: 503,
            body: String::new(),
            retry_after: Some(Duration::from_secs(30)),
            location: None,
        };
        assert_eq!(sort(&a, &p, 1).0.wait(), Some(Duration::from_secs(30)));
        let a = Answer::Status {
            status: 503,
            body: String::new(),
            retry_after: Some(Duration::from_secs(1)),
            location: None,
        };
        assert_eq!(sort(&a, &p, 1).0.wait(), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        // Capped: a target cannot park a row for a week.
        let week = Verdict::Retry {
            reason: "busy".into(),
            not_before: Some(Duration::from_secs(7 * 24 * 3600)),
        };
        assert_eq!(classify(week, &p, 1).wait(), Some(MAX_RETRY_AFTER));
    }

    /// A rule of another kind plugs into the same `classify`: here success is judged from the
    /// body, as the national pharmacy API answers HTTP 200 with `{"code": …}`.
    #[test]
    fn a_rule_may_judge_from_the_body() {
        #[derive(Debug)]
        struct BodyCode;
        impl ResponseRule for BodyCode {
            fn judge(&self, answer: &Answer) -> Verdict {
                match answer {
                    Answer::Status { body, .. } if body.contains("\"code\":200") => {
                        Verdict::Success
                    }
                    Answer::Status { body, .. } => Verdict::Retry {
                        reason: format!("refused: {body}"),
                        not_before: None,
                    },
                    Answer::Transport(_, msg) => Verdict::Retry {
                        reason: msg.clone(),
                        not_before: None,
                    },
                }
            }
        }
        let p = onec_policy();
        let answer = |body: &str| Answer::Status {
            status: 200,
            body: body.into(),
            retry_after: None,
            location: None,
        };
        assert_eq!(
            classify(BodyCode.judge(&answer("{\"code\":200}")), &p, 1),
            Outcome::Done
        );
        let o = classify(BodyCode.judge(&answer("{\"code\":500}")), &p, 4);
        assert_eq!(
            o.error(),
            Some("attempts exhausted (4 of 4); last: refused: {\"code\":500}")
        );
        assert!(BodyCode.credential_rejected(&status(401)));
        assert!(!BodyCode.credential_rejected(&status(403)));
    }
}
