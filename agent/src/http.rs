//! The agent's HTTP API (axum), on `--port`:
//!
//! - `GET /health` → `{"status":"ok","agent_id":…}`
//! - `GET /files/read?path=…&offset=…&length=…` → `{"data":"…","offset":N}` as Mesos answers;
//!   `offset=-1` returns the file's size as `offset` and no data.
//! - `GET /files/browse?path=…` → `[{"path","size","mode","mtime","nlink","uid","gid"}]`
//! - `GET /monitor/statistics` → per-container cpu time and memory use/limit.
//!
//! With an API token (`--api-token-file`, the master's), every path but `/health` requires
//! `Authorization: Bearer <token>`, or `?token=<token>` for links a browser follows (the master's
//! web UI links to sandboxes and cannot set a header on a link).
//!
//! Paths are absolute or relative to `<work_dir>/slaves`, and must resolve (after symlinks) inside it:
//! anything else is refused with 403 and a message saying why.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use agora_net::http_auth::ApiToken;

use crate::agent::AgentHandle;

/// Largest `length` one `/files/read` returns.
pub const MAX_READ: u64 = 4 * 1024 * 1024;

/// An HTTP error with a JSON body `{"message": …}`.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A parameter is missing or malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The path is outside the sandboxes (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such file or directory (404).
    #[error("{0}")]
    NotFound(String),
    /// The agent failed (500).
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = match &self {
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Forbidden(_) => StatusCode::FORBIDDEN,
            HttpError::NotFound(_) => StatusCode::NOT_FOUND,
            HttpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({ "message": self.to_string() }))).into_response()
    }
}

/// Resolves a requested path inside `root` (the sandboxes root), refusing `..` and anything that
/// resolves outside it.
///
/// # Errors
/// [`HttpError::BadRequest`] for an empty path, [`HttpError::Forbidden`] outside the sandboxes,
/// [`HttpError::NotFound`] when it does not exist.
pub fn resolve(root: &Path, requested: &str) -> Result<PathBuf, HttpError> {
    if requested.is_empty() {
        return Err(HttpError::BadRequest(
            "the 'path' parameter is required".into(),
        ));
    }
    let p = Path::new(requested);
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(HttpError::Forbidden(format!(
            "path '{requested}' contains '..': the files API only serves the agent's sandboxes under {}",
            root.display()
        )));
    }
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    };
    let root_c = fs::canonicalize(root)
        .map_err(|e| HttpError::Internal(format!("{}: {e}", root.display())))?;
    let real = match fs::canonicalize(&joined) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !joined.starts_with(root) && !joined.starts_with(&root_c) {
                return Err(outside(requested, root));
            }
            return Err(HttpError::NotFound(format!(
                "no such file or directory: '{requested}'"
            )));
        }
        Err(e) => return Err(HttpError::Internal(format!("{requested}: {e}"))),
    };
    if !real.starts_with(&root_c) {
        return Err(outside(requested, root));
    }
    Ok(real)
}

/// Opens a path [`resolve`] returned, without trusting that it is still the same file: tasks own
/// their sandboxes and may replace a checked path with a symbolic link, or a directory on it,
/// between the check and the open. The final component is opened without following links and
/// without blocking (a FIFO), and the kernel then says where the open file really is
/// (`/proc/self/fd`), which must still be under the sandboxes.
///
/// # Errors
/// [`HttpError::Forbidden`] when it now lies outside, [`HttpError::NotFound`], others as 500.
pub fn open_confined(root: &Path, path: &Path) -> Result<fs::File, HttpError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let shown = path.display().to_string();
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                HttpError::NotFound(format!("no such file or directory: '{shown}'"))
            }
            // ELOOP: the final component became a link.
            _ if e.raw_os_error() == Some(libc::ELOOP) => outside(&shown, root),
            _ => HttpError::Internal(format!("{shown}: {e}")),
        })?;
    let real = fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .map_err(|e| HttpError::Internal(format!("{shown}: {e}")))?;
    let root_c = fs::canonicalize(root)
        .map_err(|e| HttpError::Internal(format!("{}: {e}", root.display())))?;
    if !real.starts_with(&root_c) {
        return Err(outside(&shown, root));
    }
    Ok(f)
}

fn outside(requested: &str, root: &Path) -> HttpError {
    HttpError::Forbidden(format!(
        "path '{requested}' is outside the agent's sandboxes: only files under {} can be read",
        root.display()
    ))
}

fn param<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, HttpError> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            HttpError::BadRequest(format!("parameter '{name}' must be an integer, got '{v}'"))
        }),
    }
}

/// Reads a part of a sandbox file.
///
/// # Errors
/// See [`resolve`]; 400 for a directory or a bad offset/length.
pub fn read_file(root: &Path, q: &HashMap<String, String>) -> Result<serde_json::Value, HttpError> {
    let path = resolve(root, q.get("path").map(String::as_str).unwrap_or(""))?;
    let offset: i64 = param(q, "offset")?.unwrap_or(0);
    let length: Option<i64> = param(q, "length")?;
    let mut f = open_confined(root, &path)?;
    let meta = f
        .metadata()
        .map_err(|e| HttpError::Internal(e.to_string()))?;
    if meta.is_dir() {
        return Err(HttpError::BadRequest(format!(
            "'{}' is a directory; use /files/browse",
            path.display()
        )));
    }
    if !meta.is_file() {
        return Err(HttpError::BadRequest(format!(
            "'{}' is not a regular file",
            path.display()
        )));
    }
    let size = meta.len();
    if offset == -1 {
        return Ok(json!({ "data": "", "offset": size }));
    }
    if offset < 0 {
        return Err(HttpError::BadRequest(format!(
            "offset must be -1 or at least 0, got {offset}"
        )));
    }
    if length.is_some_and(|l| l < 0) {
        return Err(HttpError::BadRequest("length must not be negative".into()));
    }
    let offset = offset as u64;
    let want = length.map(|l| l as u64).unwrap_or(MAX_READ).min(MAX_READ);
    let mut data = Vec::new();
    if offset < size {
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| HttpError::Internal(e.to_string()))?;
        f.take(want)
            .read_to_end(&mut data)
            .map_err(|e| HttpError::Internal(e.to_string()))?;
    }
    Ok(json!({ "data": String::from_utf8_lossy(&data), "offset": offset }))
}

fn mode_string(meta: &fs::Metadata) -> String {
    let mode = meta.permissions().mode();
    let kind = if meta.is_dir() {
        'd'
    } else if meta.file_type().is_symlink() {
        'l'
    } else {
        '-'
    };
    let mut s = String::from(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// Lists a sandbox directory.
///
/// # Errors
/// See [`resolve`]; 400 when the path is a file.
pub fn browse(root: &Path, q: &HashMap<String, String>) -> Result<serde_json::Value, HttpError> {
    let path = resolve(root, q.get("path").map(String::as_str).unwrap_or(""))?;
    let dir = open_confined(root, &path)?;
    let is_dir = dir
        .metadata()
        .map_err(|e| HttpError::Internal(e.to_string()))?
        .is_dir();
    if !is_dir {
        return Err(HttpError::BadRequest(format!(
            "'{}' is not a directory; use /files/read",
            path.display()
        )));
    }
    // List the directory that was opened and checked, through its descriptor, not the path again.
    use std::os::fd::AsRawFd;
    let opened = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    let mut entries = Vec::new();
    let rd = fs::read_dir(&opened).map_err(|e| HttpError::Internal(e.to_string()))?;
    for e in rd.flatten() {
        let Ok(meta) = fs::symlink_metadata(opened.join(e.file_name())) else {
            continue;
        };
        entries.push(json!({
            "path": path.join(e.file_name()).display().to_string(),
            "size": meta.len(),
            "mode": mode_string(&meta),
            "mtime": meta.mtime(),
            "nlink": meta.nlink(),
            "uid": meta.uid(),
            "gid": meta.gid(),
        }));
    }
    entries.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    Ok(serde_json::Value::Array(entries))
}

/// The agent's HTTP routes.
pub fn router(agent: AgentHandle) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/files/read", get(files_read))
        .route("/files/browse", get(files_browse))
        .route("/monitor/statistics", get(statistics))
        .with_state(agent)
}

/// Paths anyone may call when the agent has an API token.
pub const OPEN_PATHS: &[&str] = &["/health"];

/// [`router`] guarded by `token` (all but [`OPEN_PATHS`]); unchanged without one.
pub fn protected_router(agent: AgentHandle, token: Option<ApiToken>, extra: Router) -> Router {
    let r = router(agent).merge(extra);
    match token {
        None => r,
        Some(token) => r.layer(axum::middleware::from_fn_with_state(token, guard)),
    }
}

/// `/metrics`: the agent's DNS and mesh counters in Prometheus text format.
pub fn metrics_router(
    dns: std::sync::Arc<crate::dns::DnsMetrics>,
    mesh: Option<crate::mesh::Mesh>,
) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let dns = dns.clone();
            let mesh = mesh.clone();
            async move {
                let mut text = dns.render();
                if let Some(m) = mesh {
                    text.push_str(&m.render());
                }
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    text,
                )
            }
        }),
    )
}

/// The token check: the `Authorization` header as the master checks it, or a `token` query
/// parameter (a browser following a link from the master's web UI).
async fn guard(
    State(token): State<ApiToken>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let mut headers = req.headers().clone();
    if let Some(given) = query_token(req.uri()) {
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("Bearer {given}")) {
            headers.append(axum::http::header::AUTHORIZATION, v);
        }
    }
    match token.check(&headers) {
        Ok(()) => next.run(req).await,
        Err(refusal) => refusal.response("agent"),
    }
}

/// The `token` parameter of a query string, percent-decoded.
fn query_token(uri: &axum::http::Uri) -> Option<String> {
    let Query(pairs) = Query::<HashMap<String, String>>::try_from_uri(uri).ok()?;
    pairs.get("token").filter(|t| !t.is_empty()).cloned()
}

async fn health(State(agent): State<AgentHandle>) -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "agent_id": agent.agent_id() }))
}

fn sandboxes(agent: &AgentHandle) -> Result<PathBuf, HttpError> {
    let root = agent.layout().sandboxes_root();
    fs::create_dir_all(&root)
        .map_err(|e| HttpError::Internal(format!("{}: {e}", root.display())))?;
    Ok(root)
}

async fn files_read(
    State(agent): State<AgentHandle>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let root = sandboxes(&agent)?;
    tokio::task::spawn_blocking(move || read_file(&root, &q))
        .await
        .map_err(|e| HttpError::Internal(e.to_string()))?
        .map(Json)
}

async fn files_browse(
    State(agent): State<AgentHandle>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let root = sandboxes(&agent)?;
    tokio::task::spawn_blocking(move || browse(&root, &q))
        .await
        .map_err(|e| HttpError::Internal(e.to_string()))?
        .map(Json)
}

async fn statistics(
    State(agent): State<AgentHandle>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let stats = agent
        .statistics()
        .await
        .map_err(|e| HttpError::Internal(e.to_string()))?;
    serde_json::to_value(stats)
        .map(Json)
        .map_err(|e| HttpError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_confined_to_the_sandboxes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("slaves");
        fs::create_dir_all(root.join("a/runs/c")).expect("mkdir");
        fs::write(root.join("a/runs/c/stdout"), "hello world").expect("write");
        std::os::unix::fs::symlink("/etc/passwd", root.join("a/runs/c/evil")).expect("symlink");
        let q = |p: &str| HashMap::from([("path".to_string(), p.to_string())]);

        let ok = read_file(&root, &q("a/runs/c/stdout")).expect("read");
        assert_eq!(ok["data"], "hello world");
        let abs = root.join("a/runs/c/stdout").display().to_string();
        let mut part = q(&abs);
        part.insert("offset".into(), "6".into());
        part.insert("length".into(), "3".into());
        assert_eq!(read_file(&root, &part).expect("read")["data"], "wor");
        part.insert("offset".into(), "-1".into());
        assert_eq!(read_file(&root, &part).expect("read")["offset"], 11);

        for bad in [
            "../../etc/passwd",
            "a/runs/c/../../../../etc/passwd",
            "/etc/passwd",
            "a/runs/c/evil",
        ] {
            let err = read_file(&root, &q(bad)).expect_err(bad);
            assert!(matches!(err, HttpError::Forbidden(_)), "{bad}: {err:?}");
            assert!(err.to_string().contains("sandboxes"), "{err}");
        }
        assert!(matches!(
            read_file(&root, &q("a/nope")),
            Err(HttpError::NotFound(_))
        ));
        assert!(matches!(
            read_file(&root, &q("")),
            Err(HttpError::BadRequest(_))
        ));
        let listing = browse(&root, &q("a/runs/c")).expect("browse");
        assert_eq!(listing.as_array().map(Vec::len), Some(2));
    }

    /// A task owns its sandbox: between `resolve` and the open it may swap the checked file, or a
    /// directory above it, for a link to the host. The open itself must notice.
    #[test]
    fn a_path_swapped_for_a_link_after_the_check_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("slaves");
        let sb = root.join("a/runs/c");
        fs::create_dir_all(sb.join("logs")).expect("mkdir");
        fs::write(sb.join("stdout"), "mine").expect("write");
        fs::write(sb.join("logs/passwd"), "mine too").expect("write");

        let file = resolve(&root, "a/runs/c/stdout").expect("inside");
        fs::remove_file(&file).expect("rm");
        std::os::unix::fs::symlink("/etc/passwd", &file).expect("symlink");
        assert!(matches!(
            open_confined(&root, &file),
            Err(HttpError::Forbidden(_))
        ));

        let nested = resolve(&root, "a/runs/c/logs/passwd").expect("inside");
        fs::remove_dir_all(sb.join("logs")).expect("rm");
        std::os::unix::fs::symlink("/etc", sb.join("logs")).expect("symlink");
        assert!(matches!(
            open_confined(&root, &nested),
            Err(HttpError::Forbidden(_))
        ));
        let listing = resolve(&root, "a/runs/c").expect("inside");
        fs::rename(&sb, root.join("a/runs/old")).expect("mv");
        std::os::unix::fs::symlink("/etc", &sb).expect("symlink");
        assert!(matches!(
            browse(
                &root,
                &HashMap::from([("path".to_string(), listing.display().to_string())])
            ),
            Err(HttpError::Forbidden(_))
        ));

        // A FIFO would block a plain open for ever; it is refused at once.
        let fifo = root.join("a/runs/old/fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let q = HashMap::from([("path".to_string(), fifo.display().to_string())]);
        assert!(matches!(
            read_file(&root, &q),
            Err(HttpError::BadRequest(_))
        ));
    }
}
