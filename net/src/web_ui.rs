//! What Agora's web UIs share (the master's page at `/`, the services framework's at `/ui/`):
//! one script and one stylesheet, embedded in the binary (no build step, no CDN), served by each
//! UI under its own path, and the headers every UI response carries.
//!
//! `common.js` defines one global, `Agora`: the API token (taken once from `?token=` in the address
//! or from a prompt, kept in the tab's `sessionStorage`, sent as `Authorization: Bearer`), a
//! `request` that returns status and JSON, and the HTML helpers (`esc`, `pill`, `table`).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The shared script (defines `Agora`).
pub const COMMON_JS: &str = include_str!("web_ui/common.js");
/// The shared stylesheet (palette, header, sections, tables, pills, forms).
pub const COMMON_CSS: &str = include_str!("web_ui/common.css");

/// The content security policy of every UI response: scripts and styles only from the server
/// itself (no inline script, nothing from elsewhere), fetches only to it, never framed.
pub const CSP: &str =
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                       frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// An embedded asset as an HTTP response of `content_type`, with [`CSP`], `nosniff` and
/// `no-cache` (a new binary serves new assets; the browser revalidates instead of mixing versions).
pub fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// The shared script as a response.
pub fn common_js() -> Response {
    asset("text/javascript; charset=utf-8", COMMON_JS)
}

/// The shared stylesheet as a response.
pub fn common_css() -> Response {
    asset("text/css; charset=utf-8", COMMON_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_carry_their_type_and_the_policy() {
        let r = common_js();
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(COMMON_JS.contains("const Agora"));
        assert!(COMMON_CSS.contains(".pill"));
    }
}
