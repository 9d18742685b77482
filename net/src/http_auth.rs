//! Bearer-token protection for Agora's HTTP APIs (the master's operator endpoints, `agora services`,
//! `agora batch`), shared so that the three answer alike.
//!
//! ```text
//!  request ─▶ require_token ──(open path, or `Authorization: Bearer <token>` matches)──▶ routes
//!                  │
//!                  └─▶ 401 {"message": …, "error": "missing_token" | "wrong_token"}
//!                      WWW-Authenticate: Bearer realm="agora-…"
//! ```
//!
//! The token lives in a file (`--api-token-file`). It is re-read at most every [`RECHECK`], so
//! writing a new token into the file (atomically: write a temporary file, then rename it) rotates
//! it without a restart. A file that becomes unreadable or empty refuses every request (503):
//! refusing is safer than letting anyone in.
//!
//! Several `Authorization` headers may be sent (the master's framework teardown also reads a
//! `Basic` one for the operator's principal): any `Bearer` value among them is checked.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

/// How long a token read from its file is trusted before the file is read again.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Why the token file gave no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read the API token file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file holds nothing but whitespace.
    #[error(
        "the API token file {path} is empty: put the token in it (e.g. `openssl rand -hex 32`)"
    )]
    Empty { path: String },
}

/// Reads the token in `path`: its content without surrounding whitespace.
///
/// # Errors
/// [`TokenError::Io`] for an unreadable file, [`TokenError::Empty`] for an empty one.
pub fn read_token(path: &Path) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.display().to_string(),
        });
    }
    Ok(token.to_string())
}

/// Compares without stopping at the first differing byte, so that the time taken does not tell
/// an attacker how much of a guess was right. (The length may show; tokens are long and random.)
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

struct Cached {
    read_at: Instant,
    token: Result<String, String>,
}

struct Inner {
    path: PathBuf,
    recheck: Duration,
    cache: Mutex<Cached>,
}

/// The API token of one server: the file it lives in and the last value read from it. Cheap to
/// clone (shared).
#[derive(Clone)]
pub struct ApiToken {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ApiToken {
    // Never print the token itself: configs are logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl ApiToken {
    /// Reads the token in `path` now, so that a bad flag fails at start rather than at the first
    /// request; it is re-read every [`RECHECK`].
    ///
    /// # Errors
    /// See [`read_token`].
    pub fn from_file(path: impl Into<PathBuf>) -> Result<ApiToken, TokenError> {
        Self::with_recheck(path, RECHECK)
    }

    /// As [`ApiToken::from_file`], re-reading the file after `recheck` (zero: at every request).
    ///
    /// # Errors
    /// See [`read_token`].
    pub fn with_recheck(
        path: impl Into<PathBuf>,
        recheck: Duration,
    ) -> Result<ApiToken, TokenError> {
        let path = path.into();
        let token = read_token(&path)?;
        Ok(ApiToken {
            inner: Arc::new(Inner {
                path,
                recheck,
                cache: Mutex::new(Cached {
                    read_at: Instant::now(),
                    token: Ok(token),
                }),
            }),
        })
    }

    /// The file the token is read from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The current token, re-read from the file when the cached one is older than the re-check
    /// period. The read is a small synchronous one, at most once per period, under the lock, so
    /// concurrent requests do not all read the file.
    fn current(&self) -> Result<String, String> {
        let mut cache = match self.inner.cache.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if cache.read_at.elapsed() >= self.inner.recheck {
            cache.token = read_token(&self.inner.path).map_err(|e| e.to_string());
            cache.read_at = Instant::now();
        }
        cache.token.clone()
    }

    /// Checks a gRPC request's metadata (`authorization: Bearer <token>`) against the token.
    ///
    /// # Errors
    /// The [`Refusal`]; [`Refusal::status`] turns it into the gRPC answer.
    pub fn check_metadata(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Refusal> {
        self.check(&metadata.clone().into_headers())
    }

    /// Checks a request's headers against the token.
    ///
    /// # Errors
    /// The [`Refusal`] to answer with.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let expected = self.current().map_err(Refusal::Unavailable)?;
        let mut offered = false;
        for value in headers.get_all(header::AUTHORIZATION) {
            let Some(given) = value.to_str().ok().and_then(bearer) else {
                continue;
            };
            offered = true;
            if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
                return Ok(());
            }
        }
        Err(if offered {
            Refusal::Wrong
        } else {
            Refusal::Missing
        })
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive, RFC 7235).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A bearer token that is not the configured one.
    Wrong,
    /// The token file cannot be read now; the reason.
    Unavailable(String),
}

impl Refusal {
    /// The stable code in the JSON body, for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing_token",
            Refusal::Wrong => "wrong_token",
            Refusal::Unavailable(_) => "token_unavailable",
        }
    }

    /// What to tell the client of the server called `component`, and the HTTP status.
    pub fn status_and_message(&self, component: &str) -> (StatusCode, String) {
        let how = "send `Authorization: Bearer <token>` with the token of its --api-token-file \
                   (the agora CLI: --token-file FILE or AGORA_TOKEN)";
        match self {
            Refusal::Missing => (
                StatusCode::UNAUTHORIZED,
                format!("missing bearer token: the {component} API requires one; {how}"),
            ),
            Refusal::Wrong => (
                StatusCode::UNAUTHORIZED,
                format!("wrong bearer token: the {component} API did not accept the token sent; {how}"),
            ),
            Refusal::Unavailable(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the {component} API refuses every request until its token file is fixed: {reason}"),
            ),
        }
    }

    /// The gRPC answer: `UNAUTHENTICATED` (missing or wrong token) or `UNAVAILABLE` (the token
    /// file cannot be read), with the same message as over HTTP.
    pub fn status(&self, component: &str) -> tonic::Status {
        let (_, message) = self.status_and_message(component);
        match self {
            Refusal::Unavailable(_) => tonic::Status::unavailable(message),
            _ => tonic::Status::unauthenticated(message),
        }
    }

    /// The answer of the server called `component` (`master`, `services`, `batch`).
    pub fn response(&self, component: &str) -> Response {
        let (status, message) = self.status_and_message(component);
        let body = Json(serde_json::json!({
            "message": message,
            "error": self.code(),
            "component": component,
        }));
        let mut response = (status, body).into_response();
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: no error code when no credentials were sent, `invalid_token` otherwise.
            let challenge = match self {
                Refusal::Wrong => {
                    format!("Bearer realm=\"agora-{component}\", error=\"invalid_token\"")
                }
                _ => format!("Bearer realm=\"agora-{component}\""),
            };
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        response
    }
}

/// What the middleware needs: the token, who we are, and the paths anyone may call.
#[derive(Clone)]
struct Guard {
    token: ApiToken,
    component: &'static str,
    open: &'static [&'static str],
}

async fn require_token(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    if guard.open.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    match guard.token.check(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            tracing::debug!(path = %req.uri().path(), error = refusal.code(), "API request refused");
            refusal.response(guard.component)
        }
    }
}

/// Wraps every route of `router` added so far in the token check, except the exact paths in
/// `open` (health checks, the web UI's page); with no token, returns `router` unchanged.
/// `component` names the server in refusals (`master`, `services`, `batch`).
pub fn protect<S>(
    router: Router<S>,
    token: Option<ApiToken>,
    component: &'static str,
    open: &'static [&'static str],
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    match token {
        None => router,
        Some(token) => router.layer(axum::middleware::from_fn_with_state(
            Guard {
                token,
                component,
                open,
            },
            require_token,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    fn app(token: &ApiToken) -> Router {
        let router = Router::new()
            .route("/ping", get(|| async { "pong" }))
            .route("/v2/apps", get(|| async { "apps" }));
        protect(router, Some(token.clone()), "services", &["/ping"])
    }

    async fn call(
        router: Router,
        path: &str,
        auth: &[&str],
    ) -> (StatusCode, Option<String>, serde_json::Value) {
        let mut req = Request::builder().uri(path);
        for a in auth {
            req = req.header(header::AUTHORIZATION, *a);
        }
        let resp = router
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = resp.status();
        let challenge = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, challenge, body)
    }

    fn token_file(dir: &Path, token: &str) -> PathBuf {
        let path = dir.join("api-token");
        let tmp = dir.join("api-token.tmp");
        std::fs::write(&tmp, format!("{token}\n")).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        path
    }

    #[tokio::test]
    async fn the_middleware_refuses_missing_and_wrong_tokens_and_follows_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = token_file(dir.path(), "first-token");
        let token = ApiToken::with_recheck(&path, Duration::ZERO).expect("token");

        let (status, challenge, body) = call(app(&token), "/v2/apps", &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            challenge.as_deref(),
            Some("Bearer realm=\"agora-services\"")
        );
        assert_eq!(body["error"], "missing_token");
        let msg = body["message"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with("missing bearer token: the services API"),
            "{msg}"
        );

        let (status, challenge, body) =
            call(app(&token), "/v2/apps", &["Bearer second-token"]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(challenge.unwrap_or_default().contains("invalid_token"));
        assert_eq!(body["error"], "wrong_token");

        // A Basic header alone is no bearer token.
        let (_, _, body) = call(app(&token), "/v2/apps", &["Basic b3BzOnNlY3JldA=="]).await;
        assert_eq!(body["error"], "missing_token");

        let (status, _, _) = call(app(&token), "/v2/apps", &["Bearer first-token"]).await;
        assert_eq!(status, StatusCode::OK);
        // Scheme is case-insensitive, and a Basic header beside it does not hide it.
        let (status, _, _) = call(
            app(&token),
            "/v2/apps",
            &["Basic b3BzOnNlY3JldA==", "bearer first-token"],
        )
        .await;
        assert_eq!(status, StatusCode::OK);

        let (status, _, _) = call(app(&token), "/ping", &[]).await;
        assert_eq!(status, StatusCode::OK);

        // Rotation: the new token is accepted and the old one refused, without a restart.
        token_file(dir.path(), "second-token");
        let (status, _, body) = call(app(&token), "/v2/apps", &["Bearer first-token"]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "wrong_token");
        let (status, _, _) = call(app(&token), "/v2/apps", &["Bearer second-token"]).await;
        assert_eq!(status, StatusCode::OK);

        // A token file that disappears refuses everything rather than letting anyone in.
        std::fs::remove_file(&path).expect("remove");
        let (status, _, body) = call(app(&token), "/v2/apps", &["Bearer second-token"]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "token_unavailable");
        let (status, _, _) = call(app(&token), "/ping", &[]).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn without_a_token_nothing_is_checked() {
        let router = protect(
            Router::new().route("/v2/apps", get(|| async { "apps" })),
            None,
            "services",
            &[],
        );
        let (status, _, _) = call(router, "/v2/apps", &[]).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn the_cached_token_is_kept_until_the_recheck_period_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = token_file(dir.path(), "old");
        let cached = ApiToken::with_recheck(&path, Duration::from_secs(3600)).expect("token");
        let fresh = ApiToken::with_recheck(&path, Duration::ZERO).expect("token");
        token_file(dir.path(), "new");
        assert_eq!(cached.current(), Ok("old".to_string()));
        assert_eq!(fresh.current(), Ok("new".to_string()));
    }

    #[test]
    fn a_bad_token_file_is_refused_at_start_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let e = ApiToken::from_file(&missing).expect_err("missing");
        assert!(e.to_string().contains("nope"), "{e}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").expect("write");
        let e = ApiToken::from_file(&empty).expect_err("empty");
        assert!(e.to_string().contains("is empty"), "{e}");
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert_eq!(bearer("Bearer  x "), Some("x"));
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Basic x"), None);
    }
}
