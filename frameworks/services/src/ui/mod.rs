//! The services web UI at `/ui/` (`/` and `/ui` redirect there; the master's UI links to it as
//! the framework's web UI): one page, its script and stylesheet, and the script and stylesheet
//! every Agora UI shares ([`agora_net::web_ui`]), all embedded in the binary.
//!
//! ```text
//!  browser ──GET /ui/ (open: no token)──▶ index.html, app.js, app.css, common.js, common.css
//!     │
//!     └──fetch /v2/apps, /v2/deployments, /v2/queue, … every 2 s, and the actions
//!        (POST/PATCH/DELETE), with `Authorization: Bearer` when a token was given──▶ the API
//! ```
//!
//! The page holds no state of its own and calls nothing but the public `/v2` API, so a standby
//! serves it too (its API calls are proxied to the leader like any client's). The assets are
//! open because they hold no data; the page asks for the API token when the API answers 401.

use axum::response::{Redirect, Response};
use axum::routing::get;
use axum::Router;

use agora_net::web_ui;

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Where the UI is.
pub const PATH: &str = "/ui/";

/// The UI's routes: no state, no token (see the module's doc).
pub fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to(PATH) }))
        .route("/ui", get(|| async { Redirect::to(PATH) }))
        .route(PATH, get(index))
        .route("/ui/app.js", get(|| async { web_ui::asset(JS, APP_JS) }))
        .route("/ui/app.css", get(|| async { web_ui::asset(CSS, APP_CSS) }))
        .route("/ui/common.js", get(|| async { web_ui::common_js() }))
        .route("/ui/common.css", get(|| async { web_ui::common_css() }))
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

async fn index() -> Response {
    web_ui::asset("text/html; charset=utf-8", INDEX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every asset the page loads is one this module serves, and no script is inline (the
    /// content security policy allows none).
    #[test]
    fn the_page_loads_only_assets_served_here_and_no_inline_script() {
        for asset in [
            "/ui/common.css",
            "/ui/app.css",
            "/ui/common.js",
            "/ui/app.js",
        ] {
            assert!(INDEX.contains(&format!("\"{asset}\"")), "{asset}");
        }
        let scripts = INDEX.matches("<script").count();
        let external = INDEX.matches("<script src=").count();
        assert_eq!(
            scripts, external,
            "an inline script would be refused by the CSP"
        );
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
        assert!(!APP_JS.contains("https://"), "no CDN");
    }
}
