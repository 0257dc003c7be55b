//! The two seams of the delivery pipeline, plugged with implementations of the tests' own: an
//! authenticator that can renew its credential (the shape of a token login), and a response rule
//! that judges success from the body (the shape of an API that answers 200 with an error code).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use ferry::delivery::auth::AuthFuture;
use ferry::delivery::{
    AuthFailure, AuthState, Authenticator, HttpDeliverer, Refresh, ResponseRule, Verdict,
};
use ferry::relay::{Relay, RelayConfig};
use ferry::testkit::{Reply, TargetServer};
use reqwest::header::HeaderValue;
use serde_json::json;

use crate::delivery::fast_registry;
use crate::helpers::{Backend, TestDb};

/// Hands out `Bearer token-<n>`; a refresh of the current token moves to the next `n`.
#[derive(Default)]
struct RenewingToken {
    generation: AtomicU32,
    refreshes: AtomicU32,
    /// `credential()` fails with this while set.
    failing: std::sync::Mutex<Option<AuthFailure>>,
}

impl RenewingToken {
    fn current(&self) -> HeaderValue {
        let n = self.generation.load(Ordering::SeqCst);
        HeaderValue::from_str(&format!("Bearer token-{n}")).unwrap()
    }
}

impl Authenticator for RenewingToken {
    fn credential(&self) -> AuthFuture<'_, Result<Option<HeaderValue>, AuthFailure>> {
        let result = match self.failing.lock().unwrap().clone() {
            Some(failure) => Err(failure),
            None => Ok(Some(self.current())),
        };
        Box::pin(async move { result })
    }

    fn refresh<'a>(&'a self, rejected: Option<&'a HeaderValue>) -> AuthFuture<'a, Refresh> {
        Box::pin(async move {
            self.refreshes.fetch_add(1, Ordering::SeqCst);
            if rejected == Some(&self.current()) {
                self.generation.fetch_add(1, Ordering::SeqCst);
            }
            Refresh::Renewed
        })
    }

    fn state(&self) -> AuthState {
        AuthState::Held
    }

    fn scrub(&self, text: String) -> String {
        text.replace("token-", "***-")
    }
}

fn relay(db: &TestDb, deliverer: HttpDeliverer) -> Relay<HttpDeliverer> {
    Relay::new(
        db.store.clone(),
        Arc::new(deliverer),
        RelayConfig::default(),
    )
}

/// The target refuses the first token with 401: the authenticator renews it and the request is
/// repeated once, with the same idempotency key, within the row's one attempt.
#[tokio::test]
async fn a_rejected_credential_is_renewed_and_the_request_repeated_once() {
    let db = TestDb::new(Backend::Sqlite).await;
    let target = TargetServer::start().await.unwrap();
    target.set_responder(|req, _| {
        (req.authorization() != Some("Bearer token-1"))
            .then(|| Reply::json(401, json!({"error": "token expired"})))
    });
    let auth = Arc::new(RenewingToken::default());
    let deliverer = HttpDeliverer::new(&fast_registry(&target.base_url()))
        .unwrap()
        .with_authenticator("partner", auth.clone());
    assert_eq!(
        deliverer.auth_states(),
        [
            ("onec".to_string(), AuthState::Held),
            ("partner".to_string(), AuthState::Held)
        ]
    );
    let relay = relay(&db, deliverer);
    let id = db
        .store
        .enqueue("partner_hoa_don", "HD-1", &json!({"billCode": "HD-1"}))
        .await
        .unwrap()
        .id;
    relay.drain().await.unwrap();

    let row = db.store.get(id).await.unwrap();
    assert_eq!((row.state.as_str(), row.attempts), ("done", 1), "{row:?}");
    assert_eq!(auth.refreshes.load(Ordering::SeqCst), 1);
    let requests = target.requests();
    let sent: Vec<_> = requests.iter().map(|r| r.authorization()).collect();
    assert_eq!(sent, [Some("Bearer token-0"), Some("Bearer token-1")]);
    assert!(requests
        .iter()
        .all(|r| r.idempotency_key() == Some(id.to_string().as_str())));
    assert_ne!(
        requests[0].header("x-request-id"),
        requests[1].header("x-request-id")
    );
    let history = db.store.attempts(id).await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].http_status, Some(200));
}

/// Renewed once and still refused: the 401 stands (dead, as any unlisted 4xx), no third request.
#[tokio::test]
async fn a_credential_refused_again_after_renewal_is_judged_as_it_stands() {
    let db = TestDb::new(Backend::Sqlite).await;
    let target = TargetServer::start().await.unwrap();
    target.default_reply(Reply::json(401, json!({"error": "who are you, token-0?"})));
    let auth = Arc::new(RenewingToken::default());
    let relay = relay(
        &db,
        HttpDeliverer::new(&fast_registry(&target.base_url()))
            .unwrap()
            .with_authenticator("partner", auth.clone()),
    );
    let id = db
        .store
        .enqueue("partner_hoa_don", "HD-2", &json!({"billCode": "HD-2"}))
        .await
        .unwrap()
        .id;
    relay.drain().await.unwrap();
    let row = db.store.get(id).await.unwrap();
    assert_eq!((row.state.as_str(), row.attempts), ("dead", 1), "{row:?}");
    let reason = row.last_error.unwrap();
    assert!(reason.starts_with("HTTP 401 Unauthorized"), "{reason}");
    assert!(
        reason.contains("***-0") && !reason.contains("token-0"),
        "{reason}"
    );
    assert_eq!(target.request_count(), 2);
    assert_eq!(auth.refreshes.load(Ordering::SeqCst), 1);
}

/// The kinds a workflow file declares cannot refresh: a 401 is one request, dead at once.
#[tokio::test]
async fn a_static_credential_refused_is_not_repeated() {
    let db = TestDb::new(Backend::Sqlite).await;
    let target = TargetServer::start().await.unwrap();
    target.default_reply(Reply::json(401, json!({"error": "bad password"})));
    let relay = relay(
        &db,
        HttpDeliverer::new(&fast_registry(&target.base_url())).unwrap(),
    );
    let id = db
        .store
        .enqueue("partner_hoa_don", "HD-3", &json!({"billCode": "HD-3"}))
        .await
        .unwrap()
        .id;
    relay.drain().await.unwrap();
    let row = db.store.get(id).await.unwrap();
    assert_eq!((row.state.as_str(), row.attempts), ("dead", 1), "{row:?}");
    assert_eq!(target.request_count(), 1);
}

/// No credential to be had: no request; the attempt ends with the authenticator's reason,
/// retried when it is temporary and dead when the credentials were refused.
#[tokio::test]
async fn a_failed_login_ends_the_attempt_with_its_reason() {
    let db = TestDb::new(Backend::Sqlite).await;
    let target = TargetServer::start().await.unwrap();
    let auth = Arc::new(RenewingToken::default());
    *auth.failing.lock().unwrap() =
        Some(AuthFailure::Unavailable("login endpoint timed out".into()));
    let relay = relay(
        &db,
        HttpDeliverer::new(&fast_registry(&target.base_url()))
            .unwrap()
            .with_authenticator("partner", auth.clone()),
    );
    let enqueue = |code: &'static str| {
        let store = db.store.clone();
        async move {
            store
                .enqueue("partner_hoa_don", code, &json!({ "billCode": code }))
                .await
                .unwrap()
                .id
        }
    };
    let id = enqueue("HD-4").await;
    relay.tick().await.unwrap();
    let row = db.store.get(id).await.unwrap();
    assert_eq!(
        (row.state.as_str(), row.attempts),
        ("retry_wait", 1),
        "{row:?}"
    );
    assert_eq!(row.last_error.as_deref(), Some("login endpoint timed out"));
    let history = db.store.attempts(id).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].http_status, None);

    *auth.failing.lock().unwrap() =
        Some(AuthFailure::Refused("login refused: wrong password".into()));
    let id = enqueue("HD-5").await;
    relay.tick().await.unwrap();
    let row = db.store.get(id).await.unwrap();
    assert_eq!(row.state, ferry::outbox::State::Dead, "{row:?}");
    assert_eq!(
        row.last_error.as_deref(),
        Some("login refused: wrong password")
    );
    assert_eq!(target.request_count(), 0);
}

/// Answers HTTP 200 with `{"code": …}`: only code 200 (number or string) is success.
#[derive(Debug)]
struct BodyCode;

impl ResponseRule for BodyCode {
    fn judge(&self, answer: &ferry::delivery::Answer) -> Verdict {
        let ferry::delivery::Answer::Status { body, .. } = answer else {
            return Verdict::Retry {
                reason: "no answer".into(),
                not_before: None,
            };
        };
        let code = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                v.get("code")
                    .map(|c| c.to_string().trim_matches('"').to_string())
            });
        match code.as_deref() {
            Some("200") => Verdict::Success,
            _ => Verdict::Retry {
                reason: format!("refused in the body: {body}"),
                not_before: None,
            },
        }
    }
}

/// A rule judging from the body: a 200 with an error code is retried, then delivered.
#[tokio::test]
async fn a_rule_judges_success_from_the_body() {
    let db = TestDb::new(Backend::Sqlite).await;
    let target = TargetServer::start().await.unwrap();
    target.push_replies(
        "/hoadon",
        [
            Reply::json(200, json!({"code": "500", "mess": "Lỗi hệ thống"})),
            Reply::json(200, json!({"code": 200, "ma_hoa_don_quoc_gia": "QG-1"})),
        ],
    );
    let relay = relay(
        &db,
        HttpDeliverer::new(&fast_registry(&target.base_url()))
            .unwrap()
            .with_rule("partner_hoa_don", Arc::new(BodyCode)),
    );
    let id = db
        .store
        .enqueue("partner_hoa_don", "HD-6", &json!({"billCode": "HD-6"}))
        .await
        .unwrap()
        .id;
    assert_eq!(crate::delivery::settle(&relay, &db, id).await, "done");
    let history = db.store.attempts(id).await.unwrap();
    let seen: Vec<_> = history
        .iter()
        .map(|a| (a.outcome.as_str(), a.http_status))
        .collect();
    assert_eq!(seen, [("retry", Some(200)), ("done", Some(200))]);
    assert!(history[0]
        .error
        .as_deref()
        .unwrap()
        .starts_with("refused in the body: "));
}
