//! Retry schedules: when to try again after a retryable failure.

use std::time::Duration;

/// How long to wait between attempts.
#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    /// Explicit waits: after the n-th failed attempt wait `waits[n-1]`.
    Fixed(Vec<Duration>),
    /// `min(max, initial × factor^(n-1))`, then spread by ±`jitter`
    /// (a fraction, 0.2 = ±20%) so a recovering partner is not hit by every
    /// queued document in the same second.
    Exponential {
        initial: Duration,
        factor: f64,
        max: Duration,
        jitter: f64,
    },
}

impl Backoff {
    /// The wait after the `n`-th failed attempt (n ≥ 1) without jitter, or
    /// `None` past the end of a fixed list.
    pub fn nominal(&self, n: u32) -> Option<Duration> {
        let n = n.max(1);
        match self {
            Backoff::Fixed(waits) => waits.get(usize::try_from(n - 1).ok()?).copied(),
            Backoff::Exponential {
                initial,
                factor,
                max,
                ..
            } => {
                // In f64 seconds: factor^(n-1) overflows integers long before
                // it stops mattering, and min() with an infinity is just max.
                let exponent = i32::try_from(n - 1).unwrap_or(i32::MAX);
                let secs = initial.as_secs_f64() * factor.powi(exponent);
                let capped = secs.min(max.as_secs_f64());
                Some(Duration::try_from_secs_f64(capped).unwrap_or(*max))
            }
        }
    }
}

/// When and on what to retry a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    /// Total attempts including the first; at least 1.
    pub max_attempts: u32,
    /// HTTP statuses worth retrying; never 2xx.
    pub retry_on_status: Vec<u16>,
    pub retry_on_timeout: bool,
    pub retry_on_connect_error: bool,
}

impl RetryPolicy {
    /// Wait before the next attempt after `attempts_made` (1-based) failed retryably; None when attempts are exhausted.
    ///
    /// `attempts_made == 0` means nothing was tried yet, so the wait is zero.
    pub fn next_wait(&self, attempts_made: u32) -> Option<Duration> {
        self.wait_with_unit(attempts_made, fastrand::f64())
    }

    /// Like [`RetryPolicy::next_wait`] but without jitter: what operators
    /// expect to see when the schedule is printed.
    pub fn nominal_wait(&self, attempts_made: u32) -> Option<Duration> {
        self.wait_with_unit(attempts_made, 0.5)
    }

    /// `unit` in [0, 1) picks the point in the jitter range: 0.5 is the
    /// nominal wait. Split out so tests can pin the random part.
    pub(crate) fn wait_with_unit(&self, attempts_made: u32, unit: f64) -> Option<Duration> {
        if attempts_made == 0 {
            return Some(Duration::ZERO);
        }
        if attempts_made >= self.max_attempts {
            return None;
        }
        let nominal = self.backoff.nominal(attempts_made)?;
        match self.backoff {
            Backoff::Exponential { jitter, .. } if jitter > 0.0 => {
                let spread = 1.0 + jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
                let secs = (nominal.as_secs_f64() * spread).max(0.0);
                Some(Duration::try_from_secs_f64(secs).unwrap_or(nominal))
            }
            _ => Some(nominal),
        }
    }

    /// Whether an HTTP response with this status should be retried.
    pub fn retries_status(&self, status: u16) -> bool {
        self.retry_on_status.contains(&status)
    }
}

/// Attempts that fit in `give_up_after`: the first attempt plus every retry
/// whose nominal wait still ends within the budget. Request time is not
/// counted (it is bounded by the timeout and small next to the waits).
/// `None` when the count would exceed `cap`.
pub(crate) fn attempts_within(backoff: &Backoff, give_up_after: Duration, cap: u32) -> Option<u32> {
    let mut elapsed = Duration::ZERO;
    let mut attempts: u32 = 1;
    while let Some(wait) = backoff.nominal(attempts) {
        elapsed = elapsed.saturating_add(wait);
        if elapsed > give_up_after {
            break;
        }
        attempts += 1;
        if attempts > cap {
            return None;
        }
    }
    Some(attempts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn fixed() -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff::Fixed(vec![secs(2), secs(5), secs(10)]),
            max_attempts: 4,
            retry_on_status: vec![500, 502, 503, 504],
            retry_on_timeout: true,
            retry_on_connect_error: true,
        }
    }

    fn exponential(jitter: f64, max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff::Exponential {
                initial: secs(10),
                factor: 2.0,
                max: secs(1800),
                jitter,
            },
            max_attempts,
            retry_on_status: vec![429],
            retry_on_timeout: false,
            retry_on_connect_error: false,
        }
    }

    #[test]
    fn fixed_waits_in_order_then_give_up() {
        let policy = fixed();
        assert_eq!(policy.next_wait(0), Some(Duration::ZERO));
        assert_eq!(policy.next_wait(1), Some(secs(2)));
        assert_eq!(policy.next_wait(2), Some(secs(5)));
        assert_eq!(policy.next_wait(3), Some(secs(10)));
        assert_eq!(policy.next_wait(4), None);
        assert_eq!(policy.next_wait(u32::MAX), None);
    }

    #[test]
    fn exponential_grows_and_caps() {
        let policy = exponential(0.0, u32::MAX);
        let waits: Vec<u64> = (1..=10)
            .map(|n| policy.next_wait(n).unwrap().as_secs())
            .collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1280, 1800, 1800]);
        assert_eq!(policy.next_wait(u32::MAX - 1), Some(secs(1800)));
        assert_eq!(exponential(0.0, 3).next_wait(3), None);
    }

    #[test]
    fn jitter_stays_within_the_fraction() {
        let policy = exponential(0.2, 100);
        assert_eq!(policy.wait_with_unit(1, 0.0), Some(secs(8)));
        assert_eq!(policy.wait_with_unit(1, 1.0), Some(secs(12)));
        assert_eq!(policy.nominal_wait(2), Some(secs(20)));
        for _ in 0..1000 {
            let wait = policy.next_wait(20).unwrap().as_secs_f64();
            assert!((1440.0..=2160.0).contains(&wait), "{wait}");
        }
    }

    #[test]
    fn status_membership() {
        let policy = fixed();
        assert!(policy.retries_status(503));
        assert!(!policy.retries_status(400));
        assert!(!policy.retries_status(200));
    }

    #[test]
    fn give_up_after_counts_attempts_from_the_schedule() {
        let backoff = exponential(0.2, 1).backoff;
        // 10+20+…+1280 = 2550 s, then 1800 s steps: 142 more fit in 72 h.
        assert_eq!(
            attempts_within(&backoff, secs(72 * 3600), 100_000),
            Some(151)
        );
        assert_eq!(attempts_within(&backoff, secs(9), 100_000), Some(1));
        assert_eq!(attempts_within(&backoff, secs(10), 100_000), Some(2));
        assert_eq!(attempts_within(&backoff, secs(72 * 3600), 100), None);
        let tiny = Backoff::Exponential {
            initial: Duration::from_millis(1),
            factor: 1.0,
            max: Duration::from_millis(1),
            jitter: 0.0,
        };
        assert_eq!(attempts_within(&tiny, secs(3600), 100_000), None);
    }
}
