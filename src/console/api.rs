//! The JSON API under `/api/`: each handler parses the request, calls one operator action and
//! renders what it returns with serde. Errors are `{"error": "…"}` with a fitting status.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::guard::actor;
use super::Console;
use crate::outbox::{State as RowState, StoreError};
use crate::service::{BulkAction, BulkFilter, Operator, ServiceError, BULK_MAX};

/// `{"error": message}` with `status`.
pub(crate) fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// A refused or failed request: its status and what to tell the caller.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, self.message)
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        fail(e)
    }
}

type ApiResult = Result<Response, ApiError>;

fn fail(e: ServiceError) -> ApiError {
    let status = match &e {
        ServiceError::Store(StoreError::NotFound(_)) => StatusCode::NOT_FOUND,
        ServiceError::Store(StoreError::WrongState { .. }) | ServiceError::Conflict(_) => {
            StatusCode::CONFLICT
        }
        ServiceError::BadRequest(_)
        | ServiceError::InvalidPayload(_)
        | ServiceError::Workflow(_) => StatusCode::BAD_REQUEST,
        _ => {
            tracing::warn!(error = %e, "console request failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    ApiError {
        status,
        message: e.to_string(),
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        message: message.into(),
    }
}

fn ok(value: impl serde::Serialize) -> ApiResult {
    Ok(Json(value).into_response())
}

impl Console {
    /// The operator, recording actions as `console:<name>` (the `X-Ferry-Operator` header).
    fn acting(&self, headers: &HeaderMap) -> Operator {
        self.operator.acting_as(actor(headers))
    }
}

pub(crate) async fn no_route() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message:
            "no such API endpoint (see the README: GET /api/overview, /api/rows, /api/rows/{id}, …)"
                .into(),
    }
}

/// What the page needs to know before anything else.
pub(crate) async fn session(State(c): State<Console>) -> ApiResult {
    ok(json!({
        "actions_enabled": c.config.token.is_some(),
        "hide_payload": c.config.hide_payload,
        "relay": c.metrics.is_some(),
        "database": c.operator.store().url().to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "bulk_max": BULK_MAX,
    }))
}

/// Passes the guard only with the right token: lets the page check a token once.
pub(crate) async fn session_check(State(c): State<Console>, headers: HeaderMap) -> ApiResult {
    ok(json!({ "ok": true, "actor": c.acting(&headers).actor() }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct OverviewParams {
    minutes: Option<i64>,
}

pub(crate) async fn overview(
    State(c): State<Console>,
    Query(p): Query<OverviewParams>,
) -> ApiResult {
    ok(c.operator
        .overview(p.minutes.unwrap_or(360), c.metrics.as_deref())
        .await?)
}

/// The filter fields, as query parameters of `GET /api/rows` or the `filter` object of a bulk
/// request. Blank values mean "any".
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FilterParams {
    workflow: Option<String>,
    state: Option<String>,
    key: Option<String>,
    code: Option<String>,
    q: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// A time: RFC 3339 (`2026-02-13T10:00:00Z`, `…+07:00`) or a UTC date (`2026-02-13`).
fn parse_time(name: &str, v: &str) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(bad(format!(
        "{name}: '{v}' is not a time like 2026-02-13T10:00:00Z or a date like 2026-02-13"
    )))
}

impl FilterParams {
    fn filter(&self) -> Result<BulkFilter, ApiError> {
        fn text(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        let state = match text(&self.state) {
            Some(s) => Some(
                s.parse::<RowState>()
                    .map_err(|e| bad(format!("state: {e}")))?,
            ),
            None => None,
        };
        Ok(BulkFilter {
            workflow: text(&self.workflow).map(str::to_string),
            state,
            key: text(&self.key).map(str::to_string),
            code: text(&self.code).map(str::to_string),
            q: text(&self.q).map(str::to_string),
            from: text(&self.from)
                .map(|v| parse_time("from", v))
                .transpose()?,
            to: text(&self.to).map(|v| parse_time("to", v)).transpose()?,
        })
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct RowsParams {
    #[serde(flatten)]
    filter: FilterParams,
    cursor: Option<String>,
    /// A string: numbers inside a flattened query struct arrive as text.
    limit: Option<String>,
}

pub(crate) async fn rows(State(c): State<Console>, Query(p): Query<RowsParams>) -> ApiResult {
    let filter = p.filter.filter()?;
    let limit = match p.limit.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
        None => 50,
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| bad(format!("limit: '{l}' is not a number")))?,
    };
    ok(c.operator.rows(&filter, p.cursor.as_deref(), limit).await?)
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| bad(format!("'{id}' is not a row id")))
}

pub(crate) async fn row(State(c): State<Console>, Path(id): Path<String>) -> ApiResult {
    let view = c.operator.row_view(parse_id(&id)?).await?;
    let mut value = serde_json::to_value(&view).map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: e.to_string(),
    })?;
    // The payload is the business document: sent as JSON to show formatted, or not at all.
    let hidden = c.config.hide_payload;
    if let Some(row) = value.get_mut("row").and_then(Value::as_object_mut) {
        let payload = if hidden {
            Value::Null
        } else {
            row.get("payload")
                .and_then(Value::as_str)
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or(Value::Null)
        };
        row.insert("payload".into(), payload);
    }
    value["payload_hidden"] = Value::Bool(hidden);
    ok(value)
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ReasonBody {
    reason: Option<String>,
}

/// An optional JSON body: absent or empty is `{}`.
fn body<T: for<'de> Deserialize<'de> + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| bad(format!("the request body is not valid: {e}")))
}

pub(crate) async fn retry(
    State(c): State<Console>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> ApiResult {
    let id = parse_id(&id)?;
    let b = body::<ReasonBody>(&bytes)?;
    ok(c.acting(&headers).retry(id, b.reason.as_deref()).await?)
}

pub(crate) async fn cancel(
    State(c): State<Console>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> ApiResult {
    let id = parse_id(&id)?;
    let b = body::<ReasonBody>(&bytes)?;
    let reason = b.reason.unwrap_or_default();
    ok(c.acting(&headers).cancel(id, &reason).await?)
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct BulkBody {
    /// `retry` or `cancel`.
    action: Option<String>,
    #[serde(default)]
    filter: FilterParams,
    /// The previewed count the operator confirmed.
    expected: Option<u64>,
    reason: Option<String>,
}

impl BulkBody {
    fn parse(&self) -> Result<(BulkAction, BulkFilter), ApiError> {
        let action = match self.action.as_deref() {
            Some("retry") => BulkAction::Retry,
            Some("cancel") => BulkAction::Cancel {
                reason: self.reason.clone().unwrap_or_default(),
            },
            other => {
                return Err(bad(format!(
                    "action: expected \"retry\" or \"cancel\", got {}",
                    other
                        .map(|a| format!("\"{a}\""))
                        .unwrap_or("nothing".into())
                )))
            }
        };
        Ok((action, self.filter.filter()?))
    }
}

pub(crate) async fn bulk_preview(State(c): State<Console>, bytes: axum::body::Bytes) -> ApiResult {
    let (action, filter) = body::<BulkBody>(&bytes)?.parse()?;
    ok(c.operator.preview(&action, &filter).await?)
}

pub(crate) async fn bulk(
    State(c): State<Console>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> ApiResult {
    let b = body::<BulkBody>(&bytes)?;
    let (action, filter) = b.parse()?;
    let Some(expected) = b.expected else {
        return Err(bad(
            "expected: the previewed count is required (POST /api/bulk/preview first)",
        ));
    };
    ok(c.acting(&headers)
        .bulk(&action, &filter, Some(expected), b.reason.as_deref())
        .await?)
}

#[derive(Debug, Deserialize)]
pub(crate) struct ActionsParams {
    limit: Option<i64>,
}

pub(crate) async fn actions(State(c): State<Console>, Query(p): Query<ActionsParams>) -> ApiResult {
    ok(c.operator.actions(p.limit.unwrap_or(50)).await?)
}
