//! OpenTelemetry end to end, in its own test binary: it sets `OTEL_EXPORTER_OTLP_ENDPOINT` and
//! installs the process-wide subscriber through `ferry::ops::logging::init`, as `ferry run`
//! does. A loopback OTLP/HTTP collector decodes the exported `ExportTraceServiceRequest`s; a
//! loopback target records the requests' `traceparent` headers.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use ferry::ops::logging::{init, LogConfig, LogFormat};
use ferry::outbox::{DatabaseUrl, EnqueueOptions, Store, StoreConfig};
use ferry::relay::RelayConfig;
use ferry::service::Engine;
use ferry::testkit::{Reply, TargetServer};
use ferry::workflow::Registry;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

/// The producer's context: trace id and span id of the span that enqueued the row.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

const WORKFLOW: &str = r#"
name = "traced"
document = "json"
[target]
name = "loop"
base_url = "${BASE}"
max_concurrency = 4
auth = { kind = "none" }
[request]
method = "POST"
path = "/in"
timeout = "5s"
[retry]
waits = ["1s"]
retry_on_status = [503]
"#;

type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

async fn collect(State(received): State<Received>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    received.lock().unwrap().push(request);
    ""
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.clone())
        .and_then(|v| v.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_spans_are_exported_with_the_enqueued_parent_and_sent_to_the_target() {
    // The collector: OTLP over HTTP/protobuf at /v1/traces.
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/v1/traces", post(collect))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // The standard variables, as an operator sets them for `ferry run`. Log level `warn`: the
    // attempt spans are exported whatever the log filter.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"));
    std::env::set_var("OTEL_SERVICE_NAME", "ferry-otel-test");
    let guard = init(&LogConfig {
        format: LogFormat::Human,
        filter: "warn".to_owned(),
        dir: None,
        file_name: "ferry.log".to_owned(),
        stderr: false,
    })
    .expect("logging with OpenTelemetry");
    assert!(ferry::ops::otel::active());

    let target = TargetServer::start().await.unwrap();
    target.record_requests(true);
    target.default_reply(Reply::ok());

    let dir = std::env::temp_dir().join(format!("ferry-otel-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("ferry.db");
    let store = Store::open(&StoreConfig::new(DatabaseUrl::Sqlite(
        db.display().to_string(),
    )))
    .await
    .unwrap();
    store.migrate().await.unwrap();

    // Row 1 from Rust with the producer's traceparent; row 2 by plain SQL with it; row 3 without.
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let pool = store.sqlite_pool().unwrap().clone();
    let mut conn = pool.acquire().await.unwrap();
    let from_rust = ferry::enqueue_with(
        &mut *conn,
        "traced",
        "rust",
        &serde_json::json!({"n": 1}),
        EnqueueOptions::traceparent(traceparent.clone()),
    )
    .await
    .unwrap();
    let from_sql: i64 = sqlx::query_scalar(
        "INSERT INTO ferry_outbox (workflow, key, payload, traceparent) \
         VALUES ('traced', 'sql', '{\"n\": 2}', ?1) RETURNING id",
    )
    .bind(&traceparent)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let untraced = ferry::enqueue(&mut *conn, "traced", "none", &serde_json::json!({"n": 3}))
        .await
        .unwrap();
    drop(conn);

    let base = target.base_url();
    let env = move |name: &str| (name == "BASE").then(|| base.clone());
    let registry = Registry::from_files(&[(PathBuf::from("traced.toml"), WORKFLOW.into())], &env)
        .unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::http(store.clone(), &registry, RelayConfig::default()).unwrap();
    engine.drain().await.unwrap();
    assert_eq!(target.request_count(), 3);

    // Dropping the guard exports what the batch processor holds (off the async workers).
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .unwrap();

    let requests = received.lock().unwrap().clone();
    assert!(!requests.is_empty(), "the collector got nothing");
    let service_names: Vec<String> = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .filter_map(|rs| rs.resource.as_ref())
        .flat_map(|r| &r.attributes)
        .filter(|a| a.key == "service.name")
        .filter_map(|a| match a.value.as_ref().and_then(|v| v.value.clone()) {
            Some(Value::StringValue(s)) => Some(s),
            _ => None,
        })
        .collect();
    assert!(
        !service_names.is_empty() && service_names.iter().all(|s| s == "ferry-otel-test"),
        "{service_names:?}"
    );
    let spans: Vec<Span> = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| ss.spans.clone())
        .filter(|s| s.name == "ferry.attempt")
        .collect();
    assert_eq!(spans.len(), 3, "one span per attempt");

    for (id, key, parented) in [
        (from_rust.id, "rust", true),
        (from_sql, "sql", true),
        (untraced.id, "none", false),
    ] {
        let span = spans
            .iter()
            .find(|s| attribute(s, "outbox.id") == Some(Value::IntValue(id)))
            .unwrap_or_else(|| panic!("no span for outbox row {id}"));
        assert_eq!(attribute(span, "key"), Some(Value::StringValue(key.into())));
        assert_eq!(
            attribute(span, "workflow"),
            Some(Value::StringValue("traced".into()))
        );
        assert_eq!(attribute(span, "attempt"), Some(Value::IntValue(1)));
        assert_eq!(
            attribute(span, "http.response.status_code"),
            Some(Value::IntValue(200))
        );
        assert_eq!(span.kind, SpanKind::Client as i32);
        if parented {
            assert_eq!(
                hex(&span.trace_id),
                TRACE_ID,
                "row {key}: the producer's trace"
            );
            assert_eq!(
                hex(&span.parent_span_id),
                PARENT_ID,
                "row {key}: its parent"
            );
        } else {
            assert!(span.parent_span_id.is_empty(), "row {key}: a root span");
            assert_ne!(hex(&span.trace_id), TRACE_ID);
        }

        // The target's request carries the attempt span's own context.
        let request = target
            .requests()
            .into_iter()
            .find(|r| r.idempotency_key() == Some(&id.to_string()))
            .unwrap_or_else(|| panic!("no request for outbox row {id}"));
        let header = request.header("traceparent").expect("traceparent header");
        assert_eq!(
            header,
            format!("00-{}-{}-01", hex(&span.trace_id), hex(&span.span_id)),
            "row {key}"
        );
    }

    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
