//! Tests drive the server with reqwest (as the engine will) and, where byte
//! control matters (chunked bodies, garbage, pipelining), with raw sockets.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bound for anything that is supposed to finish quickly; tests fail
/// instead of hanging if the server misbehaves.
const GUARD: Duration = Duration::from_secs(2);

fn client() -> reqwest::Client {
    client_with_timeout(GUARD)
}

fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        // Environment proxies must not intercept loopback traffic.
        .no_proxy()
        // As the engine: a redirect is an answer to look at, never followed.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .unwrap()
}

/// Sends raw bytes on a fresh connection, half-closes it, and returns
/// everything the server writes until it closes its side.
async fn raw_exchange(server: &TargetServer, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut out))
        .await
        .expect("server did not close the connection")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn default_reply_is_ok_json() {
    let server = TargetServer::start().await.unwrap();
    assert!(server.addr().ip().is_loopback());
    assert!(server.base_url().starts_with("http://127.0.0.1:"));

    let resp = client()
        .post(server.url("/orders?x=1"))
        .header("Idempotency-Key", "k-1")
        .body(r#"{"id":7}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert_eq!(resp.text().await.unwrap(), r#"{"ok":true}"#);

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.seq, 1);
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/orders");
    assert_eq!(r.query.as_deref(), Some("x=1"));
    assert_eq!(r.header("IDEMPOTENCY-KEY"), Some("k-1"));
    assert_eq!(r.idempotency_key(), Some("k-1"));
    assert_eq!(r.json(), Some(serde_json::json!({"id": 7})));
    assert_eq!(server.request_count(), 1);
    assert_eq!(server.requests_to("/orders").len(), 1);
    assert!(server.requests_to("/other").is_empty());
}

#[tokio::test]
async fn queued_replies_per_path_then_default() {
    let server = TargetServer::start().await.unwrap();
    server.push_replies(
        "/a",
        [
            Reply::status(500),
            Reply::status(429).with_header("Retry-After", "3"),
            Reply::json(201, serde_json::json!({"id": "x"})),
        ],
    );
    server.default_reply(Reply::status(202));
    assert_eq!(server.queued_replies("/a"), 3);
    let c = client();

    let mut seen = Vec::new();
    for path in ["/a", "/b", "/a", "/a", "/a"] {
        let resp = c.get(server.url(path)).send().await.unwrap();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        seen.push((
            resp.status().as_u16(),
            retry_after,
            resp.text().await.unwrap(),
        ));
    }
    assert_eq!(seen[0].0, 500);
    assert_eq!(seen[0].2, r#"{"status":500}"#);
    assert_eq!(seen[1].0, 202, "/b has no queue: default applies");
    assert_eq!(seen[2].0, 429);
    assert_eq!(seen[2].1.as_deref(), Some("3"));
    assert_eq!(seen[3].0, 201);
    assert_eq!(seen[3].2, r#"{"id":"x"}"#);
    assert_eq!(seen[4].0, 202, "queue exhausted: default applies");
    assert_eq!(server.queued_replies("/a"), 0);
}

#[tokio::test]
async fn delay_beyond_client_timeout_times_out() {
    let server = TargetServer::start().await.unwrap();
    server.default_reply(Reply::ok().delayed(Duration::from_secs(5)));
    let started = Instant::now();
    let err = client_with_timeout(Duration::from_millis(150))
        .get(server.url("/slow"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < GUARD);
    assert_eq!(server.request_count(), 1);

    // A delay shorter than the timeout still produces the inner reply.
    server.default_reply(Reply::Delay(
        Duration::from_millis(50),
        Box::new(Reply::status(204)),
    ));
    let resp = client().get(server.url("/slow")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 204);
}

/// Runs a request to completion (including the body) and returns the error.
async fn failing_request(server: &TargetServer) -> reqwest::Error {
    let attempt = async {
        let resp = client().get(server.url("/x")).send().await?;
        resp.bytes().await
    };
    let err = tokio::time::timeout(GUARD, attempt)
        .await
        .expect("client hung instead of failing")
        .expect_err("request unexpectedly succeeded");
    assert!(!err.is_timeout(), "expected a connection error: {err:?}");
    err
}

#[tokio::test]
async fn reset_gives_client_error() {
    let server = TargetServer::start().await.unwrap();
    server.default_reply(Reply::Reset);
    failing_request(&server).await;
    assert!(server.request_count() >= 1);
}

#[tokio::test]
async fn reset_mid_response_gives_client_error() {
    let server = TargetServer::start().await.unwrap();
    server.default_reply(Reply::ResetMidResponse);
    failing_request(&server).await;
}

#[tokio::test]
async fn malformed_gives_client_error() {
    let server = TargetServer::start().await.unwrap();
    server.default_reply(Reply::Malformed);
    failing_request(&server).await;
}

#[tokio::test]
async fn hang_times_out_and_shutdown_closes_it() {
    let server = TargetServer::start().await.unwrap();
    server.default_reply(Reply::Hang);
    let err = client_with_timeout(Duration::from_millis(100))
        .get(server.url("/hang"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");

    // A raw connection left hanging is closed by shutdown.
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream
        .write_all(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert!(server.wait_for_requests(2, GUARD).await);
    server.shutdown().await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(GUARD, stream.read(&mut buf))
        .await
        .expect("connection still open after shutdown");
    assert!(matches!(read, Ok(0) | Err(_)));
    // Listener is gone as well.
    assert!(TcpStream::connect(server.addr()).await.is_err());
}

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let server = TargetServer::start().await.unwrap();
    let c = client();
    for i in 0..5 {
        let resp = c
            .post(server.url("/k"))
            .body(format!("{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.bytes().await.unwrap();
    }
    assert_eq!(server.request_count(), 5);
    assert_eq!(server.connections_accepted(), 1);
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let server = TargetServer::start().await.unwrap();
    // If the server ignored "close", read_to_end would wait for the guard.
    let out = raw_exchange(
        &server,
        b"GET /c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("Connection: close\r\n"));
    assert!(out.ends_with(r#"{"ok":true}"#));
}

#[tokio::test]
async fn chunked_body_and_pipelining() {
    let server = TargetServer::start().await.unwrap();
    let out = raw_exchange(
        &server,
        b"POST /c HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n\
          5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: y\r\n\r\n\
          POST /d HTTP/1.1\r\nHost: t\r\nCONTENT-LENGTH: 3\r\nConnection: close\r\n\r\nabc",
    )
    .await;
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].path, "/c");
    assert_eq!(reqs[0].body, b"hello, world");
    assert_eq!(reqs[1].path, "/d");
    assert_eq!(reqs[1].body, b"abc");
    assert_eq!(server.connections_accepted(), 1);
}

#[tokio::test]
async fn garbage_is_rejected_without_killing_the_server() {
    let server = TargetServer::start().await.unwrap();
    let out = raw_exchange(&server, b"\x16\x03\x01 definitely not http\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    let out = raw_exchange(&server, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    let out = raw_exchange(&server, b"GET / HTTP/2.0\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 505 "), "{out}");
    let out = raw_exchange(
        &server,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    let out = raw_exchange(
        &server,
        b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 413 "), "{out}");

    let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    big.resize(MAX_HEAD_BYTES + 10, b'a');
    let out = raw_exchange(&server, &big).await;
    assert!(out.starts_with("HTTP/1.1 431 "), "{out}");

    // Half a request followed by EOF is simply dropped.
    let out = raw_exchange(&server, b"GET / HTTP/1.1\r\nHost:").await;
    assert!(out.is_empty(), "{out}");

    assert_eq!(server.rejected_requests(), 6);
    assert_eq!(server.request_count(), 0);
    let resp = client().get(server.url("/")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn cyrillic_basic_auth_round_trips() {
    let server = TargetServer::start().await.unwrap();
    client()
        .get(server.url("/odata"))
        .basic_auth("Администратор", Some("пароль:с:двоеточием"))
        .send()
        .await
        .unwrap();
    let req = &server.requests()[0];
    assert_eq!(
        req.basic_auth(),
        Some(("Администратор".to_owned(), "пароль:с:двоеточием".to_owned()))
    );
    let expected_raw = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode("Администратор:пароль:с:двоеточием".as_bytes())
    );
    assert_eq!(req.authorization(), Some(expected_raw.as_str()));
    assert_eq!(
        req.basic_auth_bytes().unwrap(),
        "Администратор:пароль:с:двоеточием".as_bytes()
    );
}

#[tokio::test]
async fn redirect_reply_carries_its_location() {
    let server = TargetServer::start().await.unwrap();
    server.push_replies(
        "/moved",
        [
            Reply::redirect(302, "/landing"),
            Reply::redirect(307, "http://other.invalid/x?y=1"),
        ],
    );
    let c = client();
    let first = c
        .post(server.url("/moved"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 302);
    assert_eq!(first.headers()["location"].to_str().unwrap(), "/landing");
    assert_eq!(first.text().await.unwrap(), r#"{"redirect":"/landing"}"#);
    let second = c
        .post(server.url("/moved"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(second.status().as_u16(), 307);
    assert_eq!(
        second.headers()["location"].to_str().unwrap(),
        "http://other.invalid/x?y=1"
    );
    // The client did not follow: only the two requests to /moved arrived.
    assert_eq!(server.request_count(), 2);
    assert!(server.requests_to("/landing").is_empty());
}

#[tokio::test]
async fn echo_sends_the_request_back() {
    let server = TargetServer::start().await.unwrap();
    server.echo_requests(400);
    let resp = client()
        .post(server.url("/echo?a=1"))
        .basic_auth("Администратор", Some("secret"))
        .header("Idempotency-Key", "k-9")
        .body(r#"{"n":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let text = resp.text().await.unwrap();
    let req = &server.requests()[0];
    assert_eq!(text, req.echo_text());
    assert!(text.starts_with("POST /echo?a=1 HTTP/1.1\r\n"), "{text}");
    let auth = req.authorization().unwrap();
    assert!(
        text.contains(&format!("authorization: {auth}\r\n")),
        "{text}"
    );
    assert!(text.contains("idempotency-key: k-9\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n{\"n\":1}"), "{text}");
}

#[tokio::test]
async fn required_basic_auth_gives_401() {
    let server = TargetServer::start().await.unwrap();
    server.required_basic_auth("Администратор", "secret");
    let c = client();

    let none = c.get(server.url("/p")).send().await.unwrap();
    assert_eq!(none.status().as_u16(), 401);
    assert_eq!(none.text().await.unwrap(), r#"{"error":"unauthorized"}"#);

    let wrong = c
        .get(server.url("/p"))
        .basic_auth("Администратор", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);

    let right = c
        .get(server.url("/p"))
        .basic_auth("Администратор", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status().as_u16(), 200);
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn idempotency_keys_are_counted_and_duplicates_reported() {
    let server = TargetServer::start().await.unwrap();
    // A strict partner: the first delivery wins, replays conflict.
    server.set_responder(|req, nth| {
        assert!(req.idempotency_key().is_some() || nth == 0);
        (nth > 1).then(|| Reply::status(409))
    });
    let c = client();
    let mut statuses = Vec::new();
    for key in [Some("A"), Some("B"), Some("A"), None, Some("A")] {
        let mut rb = c.post(server.url("/i")).body("{}");
        if let Some(key) = key {
            rb = rb.header("Idempotency-Key", key);
        }
        statuses.push(rb.send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 409, 200, 409]);
    assert_eq!(server.count_for_key("A"), 3);
    assert_eq!(server.count_for_key("B"), 1);
    assert_eq!(server.count_for_key("C"), 0);
    assert_eq!(server.duplicate_keys(), vec![("A".to_owned(), 3)]);
    assert_eq!(server.duplicates(), server.duplicate_keys());
    assert_eq!(server.keys_seen().len(), 2);

    server.clear();
    assert_eq!(server.request_count(), 0);
    assert!(server.requests().is_empty());
    assert!(server.keys_seen().is_empty());
}

#[tokio::test]
async fn responder_none_falls_through_to_queue() {
    let server = TargetServer::start().await.unwrap();
    server.push_replies("/q", [Reply::status(418)]);
    server.set_responder(|req, _| (req.method == "DELETE").then(|| Reply::status(405)));
    let c = client();
    let del = c.delete(server.url("/q")).send().await.unwrap();
    assert_eq!(del.status().as_u16(), 405);
    let get = c.get(server.url("/q")).send().await.unwrap();
    assert_eq!(get.status().as_u16(), 418);
}

#[tokio::test]
async fn outage_gives_503_and_is_counted() {
    let server = TargetServer::start().await.unwrap();
    server.set_up(false);
    let c = client();
    let resp = c.get(server.url("/")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    server.set_up(true);
    let resp = c.get(server.url("/")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn wait_for_requests_honours_deadline() {
    let server = TargetServer::start().await.unwrap();
    assert!(!server.wait_for_requests(1, Duration::from_millis(50)).await);

    // Waiter registered before the requests arrive must be woken.
    let url = server.url("/w");
    let sender = tokio::spawn(async move {
        let c = client();
        for _ in 0..2 {
            c.get(&url).send().await.unwrap();
        }
    });
    assert!(server.wait_for_requests(2, GUARD).await);
    sender.await.unwrap();
    assert!(server.wait_for_requests(2, Duration::ZERO).await);
    assert!(!server.wait_for_requests(3, Duration::from_millis(50)).await);
}

#[tokio::test]
async fn bodies_can_be_left_unrecorded() {
    let server = TargetServer::start().await.unwrap();
    server.record_bodies(false);
    server.set_responder(|req, _| (req.body != b"payload").then(|| Reply::status(400)));
    let c = client();
    let resp = c
        .post(server.url("/b"))
        .header("Idempotency-Key", "z")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "responder sees the body");
    assert!(server.requests()[0].body.is_empty());

    server.record_requests(false);
    c.post(server.url("/b"))
        .header("Idempotency-Key", "z")
        .send()
        .await
        .unwrap();
    assert_eq!(server.requests().len(), 1);
    assert_eq!(server.request_count(), 2);
    assert_eq!(server.count_for_key("z"), 2);
}

#[tokio::test]
async fn dropping_last_handle_stops_the_server() {
    let server = TargetServer::start().await.unwrap();
    let addr = server.addr();
    let clone = server.clone();
    drop(server);
    // Still served while a clone lives.
    let resp = client().get(clone.url("/")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let task = lock(&clone.inner.accept_task).take().unwrap();
    drop(clone);
    tokio::time::timeout(GUARD, task)
        .await
        .expect("accept loop kept running")
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}

/// Throughput smoke check: `cargo test --release -- --ignored throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    let server = TargetServer::start().await.unwrap();
    server.record_requests(false);
    let total = 50_000;
    let workers = 16;
    let c = client();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for w in 0..workers {
        let (c, url) = (c.clone(), server.url("/load"));
        tasks.spawn(async move {
            for i in 0..total / workers {
                let resp = c
                    .post(&url)
                    .header("Idempotency-Key", format!("{w}-{i}"))
                    .body(r#"{"n":1}"#)
                    .send()
                    .await
                    .unwrap();
                resp.bytes().await.unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{total} requests in {secs:.2}s = {:.0} req/s over {} connections",
        total as f64 / secs,
        server.connections_accepted()
    );
    assert_eq!(server.request_count(), total as u64);
    assert!(server.duplicate_keys().is_empty());
}

#[test]
fn handle_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<TargetServer>();
    check::<Reply>();
    check::<ReceivedRequest>();
}
