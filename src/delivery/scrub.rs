//! Masking a target's own secrets in what comes back from it.
//!
//! A target may echo the request (a debugging endpoint, a misconfigured proxy, a chatty error
//! page: "invalid password 'x' for user 'y'"). Whatever it answers ends up in
//! `ferry_attempts.response_excerpt`, `ferry_outbox.last_error`, the workflow's `on_done`
//! `:response`, logs and `Debug` output, so the delivery layer passes every text that comes from
//! a response (body, `Location`, transport error text) through the target's [`Scrubber`] before
//! anything else sees it. The target knows its own secrets: the base64 credential of Basic auth
//! (so the whole `Authorization` value shows as `Basic ***`), the raw password, the bearer token.
//! Each is also looked for in the forms an echo commonly re-encodes it into (JSON string escapes,
//! `\uXXXX` escapes, `\/`, percent-encoding, HTML entities).

use std::fmt;

use base64::Engine;

use crate::workflow::Auth;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// The secrets of one target, in every form they are looked for, longest first.
#[derive(Clone, Default)]
pub struct Scrubber {
    needles: Vec<String>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("needles", &self.needles.len())
            .finish()
    }
}

impl Scrubber {
    /// The secrets of a target with this authentication (none for [`Auth::None`]).
    pub fn for_auth(auth: &Auth) -> Scrubber {
        let secrets: Vec<String> = match auth {
            Auth::None => Vec::new(),
            Auth::Basic { username, password } => {
                let b64 = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()).as_bytes());
                // The whole header value is masked through its credential part, which keeps the
                // scheme readable: `Authorization: Basic ***`.
                vec![
                    b64.clone(),
                    // Unpadded, as some echoes normalise it.
                    b64.trim_end_matches('=').to_string(),
                    password.expose().to_string(),
                ]
            }
            Auth::Bearer { token } => vec![token.expose().to_string()],
        };
        let mut needles: Vec<String> = Vec::new();
        for secret in &secrets {
            for form in forms(secret) {
                if !form.is_empty() && !needles.contains(&form) {
                    needles.push(form);
                }
            }
        }
        // Longest first, so a secret inside a longer one (the password inside the header value's
        // decoded form) never leaves a piece of the longer one behind.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Scrubber { needles }
    }

    /// Whether there is nothing to mask (a target without credentials).
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every secret replaced by [`MASK`]. Returns `text` itself (no copy) when no
    /// secret occurs, which is the common case.
    pub fn scrub(&self, text: String) -> String {
        let mut text = text;
        for needle in &self.needles {
            if text.contains(needle.as_str()) {
                text = text.replace(needle.as_str(), MASK);
            }
        }
        text
    }
}

/// The forms one secret may take in an answer.
fn forms(secret: &str) -> Vec<String> {
    let json = json_escaped(secret);
    let ascii_lower = ascii_escaped(&json, false);
    let ascii_upper = ascii_escaped(&json, true);
    let mut out = vec![
        secret.to_string(),
        json.replace('/', "\\/"),
        ascii_lower.replace('/', "\\/"),
        ascii_upper.replace('/', "\\/"),
        json,
        ascii_lower,
        ascii_upper,
        percent_encoded(secret, false),
        percent_encoded(secret, true),
        percent_encoded(secret, false).replace("%20", "+"),
        html_escaped(secret, "&#39;"),
        html_escaped(secret, "&#x27;"),
    ];
    out.dedup();
    out
}

/// The secret as the inside of a JSON string (serde_json's escapes).
fn json_escaped(secret: &str) -> String {
    let quoted = serde_json::to_string(secret).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_default()
        .to_string()
}

/// A JSON-escaped string with every non-ASCII character as `\uXXXX` (UTF-16 units), as
/// ASCII-only JSON encoders write it (Python's default, .NET, 1C's own JSON writer).
fn ascii_escaped(json: &str, upper: bool) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
            continue;
        }
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            if upper {
                out.push_str(&format!("\\u{unit:04X}"));
            } else {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// RFC 3986 percent-encoding of the UTF-8 bytes (unreserved characters kept).
fn percent_encoded(secret: &str, upper: bool) -> String {
    let mut out = String::with_capacity(secret.len() * 3);
    for b in secret.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// HTML-escaped, as an error page would print it.
fn html_escaped(secret: &str, apostrophe: &str) -> String {
    let mut out = String::with_capacity(secret.len());
    for c in secret.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str(apostrophe),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::Secret;

    fn basic(user: &str, password: &str) -> Scrubber {
        Scrubber::for_auth(&Auth::Basic {
            username: user.into(),
            password: Secret::new(password),
        })
    }

    #[test]
    fn basic_credentials_are_masked_in_every_form() {
        let user = "Администратор";
        let password = "пароль/1С\"<&>'";
        let s = basic(user, password);
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(format!("{user}:{password}").as_bytes());
        let header = format!("Basic {b64}");
        let json = serde_json::to_string(password).unwrap();
        let forms = [
            format!("Authorization: {header}\r\nX: y"),
            format!("token={b64}&next"),
            format!("{{\"auth\":{}}}", serde_json::to_string(&header).unwrap()),
            format!("{{\"auth\":\"{}\"}}", header.replace('/', "\\/")),
            format!("user {user}, password {password}!"),
            format!("{{\"password\":{json}}}"),
            format!(
                "{{\"password\":\"{}\"}}",
                ascii_escaped(&json_escaped(password), false)
            ),
            format!(
                "{{\"password\":\"{}\"}}",
                ascii_escaped(&json_escaped(password), true)
            ),
            format!("?p={}", percent_encoded(password, true)),
            format!("?p={}", percent_encoded(password, false)),
            format!("<b>{}</b>", html_escaped(password, "&#39;")),
            format!("b64 without padding: {}.", b64.trim_end_matches('=')),
        ];
        for text in forms {
            let out = s.scrub(text.clone());
            assert!(out.contains(MASK), "{text} -> {out}");
            for secret in [password, b64.as_str(), b64.trim_end_matches('=')] {
                assert!(!out.contains(secret), "{text} -> {out}");
            }
            assert!(!out.contains("пароль") && !out.contains("\\u043f"), "{out}");
        }
        assert_eq!(
            s.scrub(format!("Authorization: {header}")),
            "Authorization: Basic ***"
        );
        assert_eq!(
            s.scrub(format!("user {user}, password {password}")),
            format!("user {user}, password ***"),
            "the user name is not a secret"
        );
    }

    #[test]
    fn bearer_tokens_are_masked() {
        let s = Scrubber::for_auth(&Auth::Bearer {
            token: Secret::new("tok.en/123"),
        });
        assert_eq!(
            s.scrub("Authorization: Bearer tok.en/123; again tok.en/123, tok.en%2F123".into()),
            "Authorization: Bearer ***; again ***, ***"
        );
    }

    #[test]
    fn clean_text_is_returned_as_it_is() {
        let s = basic("u", "secret-password");
        let text = String::from("{\"ok\":true}");
        let ptr = text.as_ptr();
        let out = s.scrub(text);
        assert_eq!(out, "{\"ok\":true}");
        assert_eq!(out.as_ptr(), ptr, "no copy when nothing is masked");
        let none = Scrubber::for_auth(&Auth::None);
        assert!(none.is_empty());
        assert_eq!(none.scrub("Basic abc".into()), "Basic abc");
    }

    #[test]
    fn debug_shows_no_secret() {
        let s = basic("u", "secret-password");
        let shown = format!("{s:?}");
        assert!(!shown.contains("secret-password"), "{shown}");
        assert!(shown.starts_with("Scrubber"), "{shown}");
    }
}
