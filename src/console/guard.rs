//! What every console request passes before its handler: the host check (DNS rebinding), and for
//! anything that is not a read, the origin check (cross-site requests) and the operator token.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::api::{error, ApiError};
use super::Console;

/// The header that names the person acting (recorded as `console:<name>`).
pub const OPERATOR_HEADER: &str = "x-ferry-operator";

pub(crate) async fn guard(State(console): State<Console>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if console.config.loopback_hosts_only && !is_loopback_host(host) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this console listens on a loopback address and answers only requests for 127.0.0.1 or localhost, not '{host}'"
            ),
        );
    }
    let reading = matches!(*req.method(), Method::GET | Method::HEAD);
    if !reading {
        if let Err(refusal) = check_action(&console, headers, host) {
            return error(refusal.status, refusal.message);
        }
    }
    let api = req.uri().path().starts_with("/api/");
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// An action needs: no other site's `Origin`, and the operator token.
fn check_action(console: &Console, headers: &HeaderMap, host: &str) -> Result<(), ApiError> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host));
        if !same {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!("cross-origin request refused (Origin '{origin}' is not this console)"),
            ));
        }
    }
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
    {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "cross-site request refused".to_string(),
        ));
    }
    let Some(token) = console.config.token.as_deref() else {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "this console is read-only: actions need an operator token, and none is configured (set FERRY_CONSOLE_TOKEN)".to_string(),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(refuse(
            StatusCode::UNAUTHORIZED,
            "the operator token is not right".to_string(),
        )),
        None => Err(refuse(
            StatusCode::UNAUTHORIZED,
            "actions need the operator token (Authorization: Bearer <FERRY_CONSOLE_TOKEN>)"
                .to_string(),
        )),
    }
}

fn refuse(status: StatusCode, message: String) -> ApiError {
    ApiError { status, message }
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Equal, in time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The name an operator gave (`X-Ferry-Operator`), as recorded: `console:<name>`.
pub(crate) fn actor(headers: &HeaderMap) -> String {
    let name: String = headers
        .get(OPERATOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    if name.is_empty() {
        "console:anonymous".into()
    } else {
        format!("console:{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:9464",
            "localhost:1",
            "LOCALHOST",
            "[::1]:80",
            "127.3.4.5",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.example:9464",
            "",
            "10.0.0.1:1",
            "[::2]:1",
            "localhost.evil",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokeN"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
    }

    #[test]
    fn actors() {
        let mut h = HeaderMap::new();
        assert_eq!(actor(&h), "console:anonymous");
        h.insert(OPERATOR_HEADER, HeaderValue::from_static("  alice "));
        assert_eq!(actor(&h), "console:alice");
    }
}
