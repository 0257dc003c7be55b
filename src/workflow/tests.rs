//! Tests for loading and validating workflow files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn fake_env(name: &str) -> Option<String> {
    let value = match name {
        "ONEC_BASE_URL" => "https://1c.example.ru/unf/",
        "ONEC_USERNAME" => "ferry",
        "ONEC_PASSWORD" => "s3cr3t-onec-Пароль",
        "API_BASE_URL" => "https://partner.example.vn/api",
        "API_USERNAME" => "ferry-vn",
        "API_PASSWORD" => "s3cr3t-partner-mật-khẩu",
        "EMPTY" => "",
        _ => return None,
    };
    Some(value.to_owned())
}

/// A valid workflow named `w`; tests break one thing at a time.
const VALID: &str = r#"
name = "w"
description = "test"
document = "onec_invoice"
identify_by = "invoice_number"

[target]
name = "onec"
base_url = "${ONEC_BASE_URL}"
max_concurrency = 4
auth = { kind = "basic", username = "${ONEC_USERNAME}", password = "${ONEC_PASSWORD}" }

[request]
method = "POST"
path = "/hs/invoices"
timeout = "60s"

[retry]
waits = ["2s", "5s", "10s"]
retry_on_status = [500, 502, 503, 504]

[on_done]
sql = "UPDATE orders SET onec_response = :response WHERE id = CAST(:key AS BIGINT)"
"#;

fn file(name: &str) -> PathBuf {
    Path::new("workflows").join(format!("{name}.toml"))
}

fn load(text: &str) -> Result<Registry, WorkflowErrors> {
    Registry::from_files(&[(file("w"), text.to_owned())], &fake_env)
}

/// `VALID` with `from` replaced by `to` (which must change something).
fn variant(from: &str, to: &str) -> String {
    assert!(VALID.contains(from), "{from:?} not in VALID");
    VALID.replacen(from, to, 1)
}

fn errors(text: &str) -> Vec<WorkflowError> {
    match load(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(WorkflowErrors(list)) => list,
    }
}

/// Asserts some error is on `field` and its problem contains `needle`.
fn assert_error(text: &str, field: &str, needle: &str) {
    let list = errors(text);
    assert!(
        list.iter()
            .any(|e| e.field.as_deref() == Some(field) && e.problem.contains(needle)),
        "no error on {field} containing {needle:?}; got:\n{}",
        WorkflowErrors(list.clone())
    );
}

#[test]
fn valid_base_loads() {
    let registry = load(VALID).unwrap();
    let w = registry.get("w").unwrap();
    assert_eq!(w.url(), "https://1c.example.ru/unf/hs/invoices");
    assert_eq!(w.retry.max_attempts, 4);
    assert!(w.retry.retry_on_timeout && w.retry.retry_on_connect_error);
    assert_eq!(w.target.circuit, CircuitPolicy::default());
    assert!(w.target.tls_verify);
}

// --- the shipped files --------------------------------------------------

fn shipped() -> Registry {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
    Registry::load_dir(&dir, &fake_env).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn shipped_onec_invoice() {
    let registry = shipped();
    assert_eq!(registry.len(), 4);
    let w = registry.get("onec_invoice").unwrap();
    assert_eq!(w.document, DocumentKind::OnecInvoice);
    assert_eq!(w.identify_by.as_deref(), Some("invoice_number"));
    assert_eq!(w.target.name, "onec");
    assert_eq!(w.target.max_concurrency, 4);
    assert_eq!(w.target.base_url, "https://1c.example.ru/unf");
    assert_eq!(
        w.target.auth,
        Auth::Basic {
            username: "ferry".into(),
            password: Secret::new("s3cr3t-onec-Пароль"),
        }
    );
    assert_eq!(w.method, "POST");
    assert_eq!(w.url(), "https://1c.example.ru/unf/hs/invoices");
    assert_eq!(w.timeout, Duration::from_secs(60));
    let secs = Duration::from_secs;
    assert_eq!(
        w.retry.backoff,
        Backoff::Fixed(vec![secs(2), secs(5), secs(10)])
    );
    assert_eq!(w.retry.max_attempts, 4);
    assert_eq!(w.retry.retry_on_status, [500, 502, 503, 504]);
    assert!(w.retry.retry_on_timeout && w.retry.retry_on_connect_error);
    assert!(!w.retry.retries_status(429));
    let sql = w.on_done_sql.as_deref().unwrap();
    assert!(sql.contains("CAST(:key AS BIGINT)"), "{sql}");
    let (pg, names) = bind_params(sql, ParamStyle::Dollar);
    assert_eq!(names, ["response", "key"]);
    assert!(pg.contains("onec_response = $1") && pg.contains("CAST($2 AS BIGINT)"));
    let source = w.source.as_ref().expect("[source] for export-invoice");
    assert!(source.order_sql.contains(":key") && source.items_sql.contains(":key"));
}

#[test]
fn shipped_partner_workflows() {
    let registry = shipped();
    for (name, path, code) in [
        ("partner_phieu_nhap", "/phieunhap", "invoiceCode"),
        ("partner_phieu_xuat", "/phieuxuat", "invoiceCode"),
        ("partner_hoa_don", "/hoadon", "billCode"),
    ] {
        let w = registry.get(name).unwrap();
        assert_eq!(w.document.name(), name);
        assert_eq!(w.identify_by.as_deref(), Some(code));
        assert_eq!(w.target.name, "partner");
        assert_eq!(w.target.max_concurrency, 8);
        assert_eq!(w.url(), format!("https://partner.example.vn/api{path}"));
        assert_eq!(w.method, "POST");
        assert_eq!(w.timeout, Duration::from_secs(30));
        let Auth::Basic { username, password } = &w.target.auth else {
            panic!("basic auth expected");
        };
        assert_eq!(username, "ferry-vn");
        assert_eq!(password.expose(), "s3cr3t-partner-mật-khẩu");
        assert_eq!(
            w.retry.backoff,
            Backoff::Exponential {
                initial: Duration::from_secs(10),
                factor: 2.0,
                max: Duration::from_secs(30 * 60),
                jitter: 0.2,
            }
        );
        // 72h of 10s, 20s, … capped at 30m.
        assert_eq!(w.retry.max_attempts, 151);
        assert_eq!(w.retry.retry_on_status, [408, 425, 429, 500, 502, 503, 504]);
        assert!(w.on_done_sql.is_none() && w.source.is_none() && w.reconcile.is_none());
    }
    assert_eq!(registry.max_timeout(), Duration::from_secs(60));
    let targets: Vec<&str> = registry.targets().map(|t| t.name.as_str()).collect();
    assert_eq!(targets, ["onec", "partner"]);
    let names: Vec<&str> = registry.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "onec_invoice",
            "partner_hoa_don",
            "partner_phieu_nhap",
            "partner_phieu_xuat"
        ]
    );
}

#[test]
fn shipped_files_report_every_missing_variable() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
    let err = Registry::load_dir(&dir, &|_| None).unwrap_err();
    let text = err.to_string();
    // 3 onec variables + 3 partner variables in each of 3 files.
    assert_eq!(err.0.len(), 12, "{text}");
    assert!(text.contains("onec_invoice.toml: target.auth.password: environment variable ONEC_PASSWORD is not set"), "{text}");
    assert!(
        text.contains(
            "partner_hoa_don.toml: target.base_url: environment variable API_BASE_URL is not set"
        ),
        "{text}"
    );
}

// --- secrets ----------------------------------------------------------------

#[test]
fn debug_never_shows_secrets() {
    let registry = shipped();
    let w = registry.get("onec_invoice").unwrap();
    let debug = [
        format!("{:?}", w.target.auth),
        format!("{:#?}", w.target),
        format!("{w:?}"),
        format!("{w:#?}"),
        format!("{registry:?}"),
    ];
    for text in debug {
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("***"), "{text}");
    }
    let bearer = Auth::Bearer {
        token: Secret::new("tok-123"),
    };
    assert_eq!(format!("{bearer:?}"), "Bearer { token: *** }");
    assert_eq!(Secret::new("x").to_string(), "***");
}

#[test]
fn header_values_are_hidden_in_debug() {
    let text = variant(
        "timeout = \"60s\"",
        "timeout = \"60s\"\nheaders = { \"X-Api-Key\" = \"key-987\", \"X-Source\" = \"ferry\" }",
    );
    let registry = load(&text).unwrap();
    let w = registry.get("w").unwrap();
    // Parsed once into the map the request carries (names are case-insensitive, kept lower case).
    let headers: Vec<(&str, &str)> = w
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
        .collect();
    assert_eq!(headers, [("x-api-key", "key-987"), ("x-source", "ferry")]);
    assert!(w.headers.values().all(|v| v.is_sensitive()));
    let debug = format!("{w:?}");
    assert!(
        !debug.contains("key-987") && debug.contains("x-api-key"),
        "{debug}"
    );
}

#[test]
fn errors_never_echo_secrets() {
    // A password with a colon in the username slot, a bad token, etc. must
    // not end up in messages.
    let text = variant(
        "username = \"${ONEC_USERNAME}\"",
        "username = \"a:${ONEC_PASSWORD}\"",
    );
    let all = WorkflowErrors(errors(&text)).to_string();
    assert!(!all.contains("s3cr3t"), "{all}");
    let text = variant("${ONEC_BASE_URL}", "https://u:${ONEC_PASSWORD}@host");
    let all = WorkflowErrors(errors(&text)).to_string();
    assert!(
        !all.contains("s3cr3t") && all.contains("credentials"),
        "{all}"
    );
}

// --- error formatting -------------------------------------------------------

#[test]
fn display_names_file_field_and_problem() {
    let list = errors(&variant("\"5s\"", "\"5x\""));
    assert_eq!(list.len(), 1, "{list:?}");
    let text = list[0].to_string();
    assert!(
        text.starts_with("workflows/w.toml: retry.waits[1]: invalid duration \"5x\": "),
        "{text}"
    );
}

#[test]
fn all_mistakes_in_all_files_are_collected() {
    let bad_one = variant("max_concurrency = 4", "max_concurrency = 0")
        .replace("\"60s\"", "\"0s\"")
        .replace("POST", "GET");
    let bad_two = VALID
        .replace("name = \"w\"", "name = \"v\"")
        .replace("/hs/invoices", "hs/invoices");
    let err =
        Registry::from_files(&[(file("w"), bad_one), (file("v"), bad_two)], &fake_env).unwrap_err();
    let fields: Vec<(String, Option<&str>)> = err
        .0
        .iter()
        .map(|e| (e.file.display().to_string(), e.field.as_deref()))
        .collect();
    for expected in [
        ("workflows/w.toml", Some("target.max_concurrency")),
        ("workflows/w.toml", Some("request.timeout")),
        ("workflows/w.toml", Some("request.method")),
        ("workflows/v.toml", Some("request.path")),
    ] {
        assert!(
            fields.contains(&(expected.0.to_owned(), expected.1)),
            "{expected:?} missing from {fields:?}"
        );
    }
    assert_eq!(err.to_string().lines().count(), err.0.len());
}

// --- one test per rule --------------------------------------------------------

#[test]
fn toml_syntax_error_has_line_and_column() {
    let list = errors(&variant("max_concurrency = 4", "max_concurrency = = 4"));
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].field, None);
    assert!(
        list[0]
            .problem
            .starts_with("TOML syntax error at line 10, column 19"),
        "{}",
        list[0].problem
    );
}

#[test]
fn unknown_fields() {
    assert_error(
        &variant("[request]", "colour = \"red\"\n[request]"),
        "target.colour",
        "unknown field",
    );
    assert_error(
        &variant("password =", "pasword ="),
        "target.auth.pasword",
        "`password`",
    );
    assert_error(&format!("extra = 1\n{VALID}"), "extra", "unknown field");
}

#[test]
fn missing_and_mistyped_fields() {
    assert_error(
        &variant("document = \"onec_invoice\"\n", ""),
        "document",
        "missing required field",
    );
    assert_error(
        &variant("max_concurrency = 4", "max_concurrency = \"4\""),
        "target.max_concurrency",
        "expected an integer, got a string",
    );
    assert_error(
        &variant("timeout = \"60s\"", "timeout = 60"),
        "request.timeout",
        "expected a string",
    );
}

#[test]
fn name_must_match_file_stem() {
    assert_error(
        &variant("name = \"w\"", "name = \"other\""),
        "name",
        "must equal the file name",
    );
}

#[test]
fn name_characters() {
    let text = variant("name = \"w\"", "name = \"Bad-Name\"");
    let err = Registry::from_files(&[(file("Bad-Name"), text)], &fake_env).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(err.0[0].problem.contains("a-z, 0-9 and _"), "{err}");
}

#[test]
fn unknown_document_kind() {
    assert_error(
        &variant("document = \"onec_invoice\"", "document = \"invoice\""),
        "document",
        "unknown document kind \"invoice\"; expected one of onec_invoice, partner_phieu_nhap",
    );
}

#[test]
fn base_url_scheme() {
    assert_error(
        &variant("${ONEC_BASE_URL}", "ftp://1c"),
        "target.base_url",
        "http:// or https://",
    );
    assert_error(
        &variant("${ONEC_BASE_URL}", "1c.example.ru"),
        "target.base_url",
        "http:// or https://",
    );
    assert_error(
        &variant("${ONEC_BASE_URL}", "https://"),
        "target.base_url",
        "no host",
    );
    assert_error(
        &variant("${ONEC_BASE_URL}", "https://h/x?y=1"),
        "target.base_url",
        "query",
    );
    // What the HTTP client refuses at start-up is refused here, without echoing the value.
    for (url, needle) in [
        ("http://127.0.0.1:99999", "invalid port number"),
        ("http://h:8x", "invalid port number"),
        ("http://[::1", "invalid IPv6 address"),
        ("http://999.1.1.1", "invalid IPv4 address"),
        ("http://ex%ample.com", "invalid international domain name"),
    ] {
        let text = variant("${ONEC_BASE_URL}", url);
        assert_error(&text, "target.base_url", needle);
        let shown = WorkflowErrors(errors(&text)).to_string();
        assert!(!shown.contains(url), "{shown}");
    }
    let registry = load(&variant("${ONEC_BASE_URL}", "http://localhost:8080//")).unwrap();
    assert_eq!(
        registry.get("w").unwrap().target.base_url,
        "http://localhost:8080"
    );
}

#[test]
fn path_must_start_with_slash() {
    assert_error(
        &variant("/hs/invoices", "hs/invoices"),
        "request.path",
        "must start with '/'",
    );
    assert_error(
        &variant("/hs/invoices", "/hs/in voices"),
        "request.path",
        "spaces",
    );
}

#[test]
fn timeout_bounds() {
    assert_error(
        &variant("\"60s\"", "\"0s\""),
        "request.timeout",
        "greater than zero",
    );
    assert_error(
        &variant("\"60s\"", "\"11m\""),
        "request.timeout",
        "10m maximum",
    );
    assert_error(
        &variant("\"60s\"", "\"soon\""),
        "request.timeout",
        "invalid duration \"soon\"",
    );
    assert!(load(&variant("\"60s\"", "\"10m\"")).is_ok());
}

#[test]
fn max_concurrency_zero() {
    assert_error(
        &variant("max_concurrency = 4", "max_concurrency = 0"),
        "target.max_concurrency",
        "between 1 and 1024, got 0",
    );
}

#[test]
fn waits_and_backoff_exclusive() {
    let both = variant(
        "waits = [\"2s\", \"5s\", \"10s\"]",
        "waits = [\"2s\"]\nbackoff = { initial = \"1s\", factor = 2.0, max = \"1m\" }\nmax_attempts = 3",
    );
    assert_error(&both, "retry", "not both");
    let neither = variant("waits = [\"2s\", \"5s\", \"10s\"]\n", "");
    assert_error(&neither, "retry", "missing the schedule");
}

const BACKOFF: &str = "backoff = { initial = \"30s\", factor = 2.0, max = \"30m\", jitter = 0.2 }";

fn with_backoff(backoff: &str, stop: &str) -> String {
    variant(
        "waits = [\"2s\", \"5s\", \"10s\"]",
        &format!("{backoff}\n{stop}"),
    )
}

#[test]
fn backoff_needs_a_stop_condition() {
    assert_error(
        &with_backoff(BACKOFF, ""),
        "retry",
        "needs `max_attempts` or `give_up_after`",
    );
    assert_error(
        &with_backoff(BACKOFF, "max_attempts = 5\ngive_up_after = \"1h\""),
        "retry",
        "not both",
    );
    let registry = load(&with_backoff(BACKOFF, "max_attempts = 60")).unwrap();
    assert_eq!(registry.get("w").unwrap().retry.max_attempts, 60);
    assert_error(
        &with_backoff(BACKOFF, "max_attempts = 0"),
        "retry.max_attempts",
        "between 1",
    );
    assert_error(
        &with_backoff(BACKOFF, "give_up_after = \"10s\""),
        "retry.give_up_after",
        "shorter than the first wait",
    );
    assert_error(
        &variant("retry_on_status", "max_attempts = 3\nretry_on_status"),
        "retry.max_attempts",
        "not used with `waits`",
    );
}

#[test]
fn backoff_factor_and_jitter_ranges() {
    let stop = "max_attempts = 5";
    assert_error(
        &with_backoff(&BACKOFF.replace("2.0", "0.5"), stop),
        "retry.backoff.factor",
        "between 1.0",
    );
    assert_error(
        &with_backoff(&BACKOFF.replace("0.2", "1.5"), stop),
        "retry.backoff.jitter",
        "between 0.0 and 1.0",
    );
    assert_error(
        &with_backoff(&BACKOFF.replace("0.2", "-0.1"), stop),
        "retry.backoff.jitter",
        "between 0.0 and 1.0",
    );
    assert_error(
        &with_backoff(&BACKOFF.replace("\"30m\"", "\"10s\""), stop),
        "retry.backoff.max",
        "at least initial",
    );
    // An integer factor is fine, jitter defaults to none.
    let text = with_backoff(
        "backoff = { initial = \"1s\", factor = 3, max = \"1m\" }",
        stop,
    );
    let registry = load(&text).unwrap();
    let Backoff::Exponential { factor, jitter, .. } = registry.get("w").unwrap().retry.backoff
    else {
        panic!("exponential expected");
    };
    assert_eq!((factor, jitter), (3.0, 0.0));
}

#[test]
fn retry_on_status_codes() {
    let with = |codes: &str| variant("[500, 502, 503, 504]", codes);
    assert_error(
        &with("[500, 204]"),
        "retry.retry_on_status[1]",
        "success status",
    );
    assert_error(
        &with("[99]"),
        "retry.retry_on_status[0]",
        "not an HTTP status",
    );
    assert_error(
        &with("[600]"),
        "retry.retry_on_status[0]",
        "not an HTTP status",
    );
    assert_error(
        &with("[-1]"),
        "retry.retry_on_status[0]",
        "not an HTTP status",
    );
    assert_error(
        &with("[503, 503]"),
        "retry.retry_on_status[1]",
        "listed twice",
    );
}

#[test]
fn unset_env_var_names_variable_file_and_field() {
    let list = errors(&variant("${ONEC_PASSWORD}", "${NOT_SET_ANYWHERE}"));
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0].to_string(),
        "workflows/w.toml: target.auth.password: environment variable NOT_SET_ANYWHERE is not set and has no default (write ${NOT_SET_ANYWHERE:-default} to give one)"
    );
    let registry = load(&variant("/hs/invoices", "${NOT_SET:-/hs/default}")).unwrap();
    assert_eq!(registry.get("w").unwrap().path, "/hs/default");
}

#[test]
fn empty_secret_is_refused() {
    assert_error(
        &variant("${ONEC_PASSWORD}", "${EMPTY}"),
        "target.auth.password",
        "must not be empty",
    );
}

#[test]
fn auth_kinds() {
    let none = variant(
        "{ kind = \"basic\", username = \"${ONEC_USERNAME}\", password = \"${ONEC_PASSWORD}\" }",
        "{ kind = \"none\" }",
    );
    assert_eq!(
        load(&none).unwrap().get("w").unwrap().target.auth,
        Auth::None
    );
    let bearer = variant(
        "{ kind = \"basic\", username = \"${ONEC_USERNAME}\", password = \"${ONEC_PASSWORD}\" }",
        "{ kind = \"bearer\", token = \"eyJhbGciOi.J9-_~+/=\" }",
    );
    assert!(matches!(
        load(&bearer).unwrap().get("w").unwrap().target.auth,
        Auth::Bearer { .. }
    ));
    // A header cannot carry it: the deliverer used to send such requests with no Authorization.
    let cyrillic = variant(
        "{ kind = \"basic\", username = \"${ONEC_USERNAME}\", password = \"${ONEC_PASSWORD}\" }",
        "{ kind = \"bearer\", token = \"${ONEC_PASSWORD}\" }",
    );
    assert_error(&cyrillic, "target.auth.token", "printable ASCII");
    let registry = load(&bearer).unwrap();
    let deliverer = crate::delivery::HttpDeliverer::new(&registry).unwrap();
    drop(deliverer);
    assert!(crate::delivery::auth_header(&registry.get("w").unwrap().target.auth).is_some());
    assert_error(
        &variant("kind = \"basic\"", "kind = \"digest\""),
        "target.auth.kind",
        "none, basic or bearer",
    );
    assert_error(
        &variant("kind = \"basic\"", "kind = \"bearer\""),
        "target.auth.username",
        "not used",
    );
    assert_error(
        &variant("kind = \"basic\"", "kind = \"bearer\""),
        "target.auth.token",
        "required",
    );
}

#[test]
fn tls_verify_defaults_true_and_can_be_disabled_explicitly() {
    let text = variant(
        "max_concurrency = 4",
        "max_concurrency = 4\ntls_verify = false",
    );
    assert!(!load(&text).unwrap().get("w").unwrap().target.tls_verify);
}

#[test]
fn circuit_defaults_and_bounds() {
    let text = variant("[request]", "circuit = { open_for = \"10m\" }\n[request]");
    let circuit = load(&text).unwrap().get("w").unwrap().target.circuit;
    assert_eq!(circuit.failures, 5);
    assert_eq!(circuit.max_open_for, Duration::from_secs(600));
    let text = variant(
        "[request]",
        "circuit = { failures = 0, open_for = \"1m\", max_open_for = \"30s\" }\n[request]",
    );
    assert_error(&text, "target.circuit.failures", "between 1");
    assert_error(&text, "target.circuit.max_open_for", "at least open_for");
}

#[test]
fn reserved_and_invalid_headers() {
    let with = |headers: &str| {
        variant(
            "timeout = \"60s\"",
            &format!("timeout = \"60s\"\nheaders = {headers}"),
        )
    };
    assert_error(
        &with("{ Authorization = \"Basic x\" }"),
        "request.headers.Authorization",
        "set by ferry",
    );
    assert_error(
        &with("{ \"idempotency-key\" = \"x\" }"),
        "request.headers.idempotency-key",
        "set by ferry",
    );
    assert_error(
        &with("{ \"Bad Name\" = \"x\" }"),
        "request.headers.Bad Name",
        "invalid header name",
    );
    assert_error(
        &with("{ \"X-A\" = \"a\\r\\nX-Evil: 1\" }"),
        "request.headers.X-A",
        "line breaks",
    );
    assert_error(
        &with("{ \"X-A\" = \"1\", \"x-a\" = \"2\" }"),
        "request.headers.x-a",
        "given twice",
    );
}

#[test]
fn bad_cron_expression() {
    let text = format!("{VALID}\n[reconcile]\nschedule = \"every five minutes\"\nsql = \"SELECT id FROM orders LIMIT :limit\"\n");
    assert_error(
        &text,
        "reconcile.schedule",
        "invalid cron expression \"every five minutes\"",
    );
    let good = text.replace("every five minutes", "0 */5 * * * *");
    let registry = load(&good).unwrap();
    let reconcile = registry.get("w").unwrap().reconcile.as_ref().unwrap();
    assert_eq!(reconcile.schedule_text, "0 */5 * * * *");
}

#[test]
fn unknown_sql_params() {
    assert_error(
        &variant(":response", ":reponse"),
        "on_done.sql",
        "unknown SQL parameter :reponse",
    );
    // `::` casts and quoted text are not parameters.
    assert!(load(&variant(
        ":response WHERE",
        ":response::text WHERE note <> ':nope' AND"
    ))
    .is_ok());
    let source = format!("{VALID}\n[source]\norder_sql = \"SELECT * FROM orders WHERE id = :key\"\nitems_sql = \"SELECT * FROM items WHERE order_id = :order\"\n");
    assert_error(&source, "source.items_sql", "unknown SQL parameter :order");
    let empty = format!("{VALID}\n[source]\norder_sql = \" \"\nitems_sql = \"SELECT 1\"\n");
    assert_error(&empty, "source.order_sql", "must not be empty");
}

#[test]
fn conflicting_target_definitions() {
    let other = VALID.replace("name = \"w\"", "name = \"v\"");
    let same = Registry::from_files(
        &[(file("w"), VALID.into()), (file("v"), other.clone())],
        &fake_env,
    );
    assert_eq!(same.unwrap().len(), 2);

    let url = other.replace("${ONEC_BASE_URL}", "https://elsewhere.example");
    let auth = other.replace("${ONEC_PASSWORD}", "other-pass-777");
    let cap = other.replace("max_concurrency = 4", "max_concurrency = 2");
    for (text, field) in [
        (url, "target.base_url"),
        (auth, "target.auth"),
        (cap, "target.max_concurrency"),
    ] {
        let err = Registry::from_files(&[(file("w"), VALID.into()), (file("v"), text)], &fake_env)
            .unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        let e = &err.0[0];
        assert_eq!(
            (e.file.as_path(), e.field.as_deref()),
            (file("v").as_path(), Some(field))
        );
        assert!(
            e.problem.contains("also defined in workflows/w.toml"),
            "{err}"
        );
        assert!(
            !e.problem.contains("s3cr3t") && !e.problem.contains("other-pass-777"),
            "{err}"
        );
    }
}

#[test]
fn duplicate_workflow_names() {
    let err = Registry::from_files(
        &[(file("w"), VALID.into()), (file("w"), VALID.into())],
        &fake_env,
    )
    .unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(err.0[0].problem.contains("already defined"), "{err}");
}

// --- directories --------------------------------------------------------------

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "ferry-wf-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn missing_directory_is_named() {
    let dir = Path::new("/definitely/not/here/workflows");
    let err = Registry::load_dir(dir, &fake_env).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert!(
        err.to_string().contains("/definitely/not/here/workflows"),
        "{err}"
    );
}

#[test]
fn empty_directory_is_an_error_and_other_files_are_ignored() {
    let dir = TempDir::new("empty");
    std::fs::write(dir.0.join("README.md"), "not a workflow").unwrap();
    std::fs::write(dir.0.join("w.toml.bak"), "broken = [").unwrap();
    let err = Registry::load_dir(&dir.0, &fake_env).unwrap_err();
    assert_eq!(
        err.0[0].problem,
        format!("no workflow files (*.toml) in {}", dir.0.display())
    );

    std::fs::write(dir.0.join("w.toml"), VALID).unwrap();
    let registry = Registry::load_dir(&dir.0, &fake_env).unwrap();
    assert_eq!(registry.len(), 1);
    assert_eq!(registry.get("w").unwrap().file, dir.0.join("w.toml"));
}

#[test]
fn document_code_uses_identify_by() {
    let registry = shipped();
    let payload = serde_json::json!({ "invoice_number": "INV-2026-001" });
    assert_eq!(
        registry
            .get("onec_invoice")
            .unwrap()
            .document_code(&payload)
            .as_deref(),
        Some("INV-2026-001")
    );
}
