//! The agent's HTTP API (axum), on `--port`:
//!
//! - `GET /health` → `{"status":"ok","agent_id":…}`
//! - `GET /files/read?path=…&offset=…&length=…` → `{"data":"…","offset":N}` as Mesos answers;
//!   `offset=-1` returns the file's size as `offset` and no data.
//! - `GET /files/browse?path=…` → `[{"path","size","mode","mtime","nlink","uid","gid"}]`
//! - `GET /monitor/statistics` → per-container cpu time and memory use/limit.
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
    let meta = fs::metadata(&path).map_err(|e| HttpError::Internal(e.to_string()))?;
    if meta.is_dir() {
        return Err(HttpError::BadRequest(format!(
            "'{}' is a directory; use /files/browse",
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
        let mut f = fs::File::open(&path).map_err(|e| HttpError::Internal(e.to_string()))?;
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
    if !path.is_dir() {
        return Err(HttpError::BadRequest(format!(
            "'{}' is not a directory; use /files/read",
            path.display()
        )));
    }
    let mut entries = Vec::new();
    let rd = fs::read_dir(&path).map_err(|e| HttpError::Internal(e.to_string()))?;
    for e in rd.flatten() {
        let Ok(meta) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        entries.push(json!({
            "path": e.path().display().to_string(),
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
}
