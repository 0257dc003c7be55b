//! How requests to a target prove who they are: one [`Authenticator`] per target.
//!
//! The pipeline asks the target's authenticator for a credential before every request
//! ([`Authenticator::credential`]); an authenticator that logs in may fetch a token there and keep
//! it. When the target's answer says the credential is no longer valid (see
//! [`super::ResponseRule::credential_rejected`], HTTP 401 by default), the pipeline asks for a
//! [`Authenticator::refresh`] and, if one was made, repeats the request once without spending the
//! row's attempt. The kinds a workflow file declares today are fixed at start-up and cannot be
//! refreshed: [`NoAuth`] and [`StaticAuth`] (Basic, bearer token).
//!
//! An authenticator also knows its secrets, so it masks them in whatever comes back from its
//! target ([`Authenticator::scrub`]): a token fetched at run time is masked like a password.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine;
use reqwest::header::HeaderValue;

use super::rules::Verdict;
use super::scrub::Scrubber;
use crate::workflow::Auth;

/// The future an [`Authenticator`] method returns (boxed, so targets of different kinds can sit
/// behind one `dyn Authenticator`).
pub type AuthFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Gets and keeps the credential of one target.
pub trait Authenticator: Send + Sync + 'static {
    /// The `Authorization` value for the next request, or `None` to send none. Called before
    /// every request, so a kind that logs in answers from what it holds and fetches only when it
    /// holds nothing. Called after [`crate::relay::mark_waiting`]: a shutdown may cut it off
    /// without spending the row's attempt.
    ///
    /// # Errors
    /// No credential can be had: the row's attempt ends with the failure (see [`AuthFailure`]).
    fn credential(&self) -> AuthFuture<'_, Result<Option<HeaderValue>, AuthFailure>>;

    /// The target refused `rejected` (the value sent, `None` if none was): drop it and get a
    /// new one if this kind can. Concurrent deliveries may report the same rejected value; an
    /// implementation that already replaced it answers [`Refresh::Renewed`] without a new login.
    fn refresh<'a>(&'a self, rejected: Option<&'a HeaderValue>) -> AuthFuture<'a, Refresh>;

    /// What it holds now, for status displays.
    fn state(&self) -> AuthState;

    /// `text` (from the target: a body, a header, an error) with this target's secrets masked.
    fn scrub(&self, text: String) -> String;
}

/// What came of [`Authenticator::refresh`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// A new credential is ready: the request is repeated once.
    Renewed,
    /// This kind has nothing to renew (a fixed credential): the answer stands.
    CannotRefresh,
    /// Renewing failed: the attempt ends with this failure.
    Failed(AuthFailure),
}

/// Why no credential could be had. The reason is shown to operators (`last_error`, logs), so it
/// never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// Not now (the login endpoint did not answer, or answered 5xx): retried as the workflow's
    /// policy says, and counted against the target's circuit breaker.
    Unavailable(String),
    /// The credentials themselves were refused: retrying will not help until someone fixes them,
    /// so the row is dead with the reason.
    Refused(String),
}

impl AuthFailure {
    /// The failure as a verdict for [`super::classify`], like any answer.
    pub fn verdict(self) -> Verdict {
        match self {
            AuthFailure::Unavailable(reason) => Verdict::Retry {
                reason,
                not_before: None,
            },
            AuthFailure::Refused(reason) => Verdict::Dead {
                reason,
                target_failed: false,
            },
        }
    }
}

/// What an authenticator holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthState {
    /// The target needs no credential.
    NotNeeded,
    /// A credential is held and sent with every request.
    Held,
    /// Nothing held yet: the next request fetches one.
    Empty,
    /// The last try to get one failed, with the reason.
    Failed(String),
}

/// The authenticator a workflow file's `auth` declares.
pub fn authenticator(auth: &Auth) -> Arc<dyn Authenticator> {
    match auth {
        Auth::None => Arc::new(NoAuth),
        Auth::Basic { .. } | Auth::Bearer { .. } => Arc::new(StaticAuth::new(auth)),
    }
}

/// `auth = { kind = "none" }`: no `Authorization` header, nothing to mask.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAuth;

impl Authenticator for NoAuth {
    fn credential(&self) -> AuthFuture<'_, Result<Option<HeaderValue>, AuthFailure>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    fn refresh<'a>(&'a self, _rejected: Option<&'a HeaderValue>) -> AuthFuture<'a, Refresh> {
        Box::pin(std::future::ready(Refresh::CannotRefresh))
    }

    fn state(&self) -> AuthState {
        AuthState::NotNeeded
    }

    fn scrub(&self, text: String) -> String {
        text
    }
}

/// A credential fixed at start-up: Basic (`base64` of the UTF-8 `user:password`, so a Cyrillic
/// 1C user works) or a bearer token. Built once; the header value is marked sensitive, so
/// reqwest's `Debug` hides it.
pub struct StaticAuth {
    /// `None` only for an [`Auth`] built in code with a token no header can carry (workflow
    /// files with one are refused by validation): every attempt then fails with a reason rather
    /// than going out without `Authorization`.
    header: Option<HeaderValue>,
    scrubber: Scrubber,
}

impl StaticAuth {
    pub fn new(auth: &Auth) -> StaticAuth {
        StaticAuth {
            header: auth_header(auth),
            scrubber: Scrubber::for_auth(auth),
        }
    }
}

/// Hand-written: the credential is never printed.
impl std::fmt::Debug for StaticAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticAuth").finish_non_exhaustive()
    }
}

impl Authenticator for StaticAuth {
    fn credential(&self) -> AuthFuture<'_, Result<Option<HeaderValue>, AuthFailure>> {
        let credential = match &self.header {
            Some(value) => Ok(Some(value.clone())),
            None => Err(AuthFailure::Refused(
                "the configured credential cannot be sent in an HTTP header".into(),
            )),
        };
        Box::pin(std::future::ready(credential))
    }

    fn refresh<'a>(&'a self, _rejected: Option<&'a HeaderValue>) -> AuthFuture<'a, Refresh> {
        Box::pin(std::future::ready(Refresh::CannotRefresh))
    }

    fn state(&self) -> AuthState {
        match &self.header {
            Some(_) => AuthState::Held,
            None => AuthState::Failed("the configured credential is not a header value".into()),
        }
    }

    fn scrub(&self, text: String) -> String {
        self.scrubber.scrub(text)
    }
}

/// `Authorization` for a fixed credential: Basic is base64 of the UTF-8 bytes of
/// `user:password`. `None` for [`Auth::None`] or a value no header can carry.
pub fn auth_header(auth: &Auth) -> Option<HeaderValue> {
    let text = match auth {
        Auth::None => return None,
        Auth::Basic { username, password } => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{username}:{}", password.expose()).as_bytes())
        ),
        Auth::Bearer { token } => format!("Bearer {}", token.expose()),
    };
    let mut v = HeaderValue::from_str(&text).ok()?;
    v.set_sensitive(true);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::Secret;

    #[test]
    fn basic_auth_is_utf8_base64_and_hidden() {
        let v = auth_header(&Auth::Basic {
            username: "Администратор".into(),
            password: Secret::new("пароль"),
        })
        .unwrap();
        assert!(v.is_sensitive());
        let b64 = v.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(raw, "Администратор:пароль".as_bytes());
        assert!(!format!("{v:?}").contains(b64));
    }

    #[tokio::test]
    async fn static_kinds_send_their_credential_and_cannot_refresh() {
        let basic = Auth::Basic {
            username: "u".into(),
            password: Secret::new("secret-password"),
        };
        let bearer = Auth::Bearer {
            token: Secret::new("tok-123"),
        };
        for (auth, expected) in [
            (&basic, Some(auth_header(&basic).unwrap())),
            (&bearer, Some(HeaderValue::from_static("Bearer tok-123"))),
            (&Auth::None, None),
        ] {
            let a = authenticator(auth);
            let sent = a.credential().await.unwrap();
            assert_eq!(sent, expected);
            assert!(sent.as_ref().is_none_or(HeaderValue::is_sensitive));
            assert_eq!(a.refresh(sent.as_ref()).await, Refresh::CannotRefresh);
        }
        assert_eq!(authenticator(&basic).state(), AuthState::Held);
        assert_eq!(authenticator(&Auth::None).state(), AuthState::NotNeeded);
        assert_eq!(
            authenticator(&basic).scrub("password secret-password".into()),
            "password ***"
        );
        assert!(!format!("{:?}", StaticAuth::new(&basic)).contains("secret"));
    }

    #[tokio::test]
    async fn a_token_no_header_can_carry_fails_instead_of_going_out_bare() {
        let a = authenticator(&Auth::Bearer {
            token: Secret::new("line\nbreak"),
        });
        let failure = a.credential().await.unwrap_err();
        assert!(matches!(
            failure.clone().verdict(),
            Verdict::Dead {
                target_failed: false,
                ..
            }
        ));
        assert!(matches!(a.state(), AuthState::Failed(_)));
        assert!(matches!(
            AuthFailure::Unavailable("login timed out".into()).verdict(),
            Verdict::Retry { .. }
        ));
    }
}
