//! HTTP basic auth for Chronos's clients, which know no bearer tokens (Chronos itself takes
//! `--http_credentials user:password`): with `--api-token-file`, the API token is also accepted
//! as the password of `Authorization: Basic base64(user:password)`, whatever the user name, and a
//! refusal offers both schemes, `WWW-Authenticate: Bearer …, Basic realm="agora-batch"`, so that
//! clients that answer only a Basic challenge (httplib2, under PyPI `chronos-python`) send their
//! credentials.
//!
//! ```text
//!  request ─▶ basic_as_bearer ─(Basic user:token → + Bearer token)─▶ http_auth::protect ─▶ routes
//!                   ▲                                                     │
//!                   └──────── 401: + WWW-Authenticate: Basic ◀────────────┘
//! ```
//!
//! The token is still checked by [`agora_net::http_auth`] alone (constant time, re-read from its
//! file); this layer only translates (and reads the body first: see [`basic_as_bearer`]).

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

/// The longest `Authorization` value decoded (a token file holds far less).
pub const MAX_BASIC_VALUE: usize = 8 * 1024;

/// The challenge added to a 401.
pub const CHALLENGE: &str = "Basic realm=\"agora-batch\", charset=\"UTF-8\"";

/// The password of a `Basic base64(user:password)` value (scheme case-insensitive); `None` for
/// another scheme, a value too long or not base64 of UTF-8 `user:password`, or an empty password.
pub fn basic_password(value: &str) -> Option<String> {
    if value.len() > MAX_BASIC_VALUE {
        return None;
    }
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (_, password) = text.split_once(':')?;
    (!password.is_empty()).then(|| password.to_string())
}

/// The largest request body read (axum's default limit, which the job handlers apply too).
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// Axum middleware, outside `http_auth::protect`: see the module documentation.
///
/// The body is read before the request goes on: a client that authenticates only once
/// challenged (httplib2) sends its first POST without credentials, and a 401 answered before its
/// body was read closes the connection under it (a broken pipe, not a challenge).
pub async fn basic_as_bearer(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return (
            StatusCode::PAYLOAD_TOO_LARGE,
            axum::Json(serde_json::json!({
                "message": format!("cannot read the request body (at most {MAX_BODY} bytes): {e}")
            })),
        )
            .into_response(),
    };
    let mut req = Request::from_parts(parts, axum::body::Body::from(bytes));
    let passwords: Vec<String> = req
        .headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(basic_password)
        .collect();
    for p in passwords {
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {p}")) {
            req.headers_mut().append(header::AUTHORIZATION, v);
        }
    }
    let mut response = next.run(req).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        // One header naming both schemes: some clients read only the first WWW-Authenticate.
        let bearer = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let both = match bearer {
            Some(b) => format!("{b}, {CHALLENGE}"),
            None => CHALLENGE.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&both) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(s: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }

    #[test]
    fn the_password_of_a_basic_value() {
        assert_eq!(
            basic_password(&basic("ops:s3cret")),
            Some("s3cret".to_string())
        );
        // Only the first ':' separates: a password may hold more.
        assert_eq!(basic_password(&basic("ops:a:b")), Some("a:b".to_string()));
        assert_eq!(basic_password(&basic(":token")).as_deref(), Some("token"));
        assert_eq!(
            basic_password(&format!("bAsIc {}", &basic("u:p")[6..])).as_deref(),
            Some("p")
        );
        for bad in [
            basic("ops:"),
            basic("no-colon"),
            "Basic !!!not-base64".to_string(),
            "Bearer abc".to_string(),
            "Basic".to_string(),
            String::new(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode([b'u', b':', 0xff, 0xfe])
            ),
            basic(&format!("u:{}", "x".repeat(MAX_BASIC_VALUE))),
        ] {
            assert_eq!(basic_password(&bad), None, "{bad:.40}");
        }
    }
}
