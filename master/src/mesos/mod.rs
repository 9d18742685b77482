//! Apache Mesos's HTTP APIs on the master's port, so that frameworks and tools written for Mesos
//! run on Agora unchanged: the v1 scheduler API (`POST /api/v1/scheduler`, a RecordIO event
//! stream), the v1 operator API's read calls (`POST /api/v1`) and the JSON documents old tools
//! read (`/master/state`, `/master/frameworks`, `/master/slaves`, `/master/tasks`, `/version`,
//! `/master/redirect`).
//!
//! An adapter, not a second master: every call becomes the same actor call the gRPC `Scheduler`
//! and `Operator` services make ([`crate::grpc`]), and every event the actor sends a framework is
//! translated to Mesos's JSON on the way out ([`wire`]).
//!
//! ```text
//!  Mesos framework ──JSON Call──▶ scheduler.rs ──▶ wire.rs (→ v1 requests) ──▶ actor ──▶ Bookkeeping
//!                 ◀─RecordIO────  scheduler.rs ◀── wire.rs (v1::Event → JSON) ◀─ actor's stream
//!  Mesos tools ──GET/POST──▶ operator.rs ──▶ actor: state() ──▶ wire.rs / Mesos's documents
//! ```

// The handlers' early answers are `Response`s; boxing them would only add noise.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;

use crate::error::MasterError;
use crate::node::Node;

pub mod lenient;
pub mod operator;
pub mod scheduler;
pub mod wire;

/// Largest call body read (a LAUNCH of many tasks fits many times over).
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// Paths of this module anyone may call when the master has an API token: the scheduler API
/// (frameworks authenticate with `--credentials`, as on gRPC), the version and the redirect.
pub const OPEN_PATHS: &[&str] = &[
    "/api/v1/scheduler",
    "/master/api/v1/scheduler",
    "/version",
    "/master/redirect",
];

/// The Mesos routes; with `api_token`, all but [`OPEN_PATHS`] require it.
pub fn router(node: Arc<Node>, api_token: Option<agora_net::http_auth::ApiToken>) -> Router {
    let mut routes = Router::new()
        .route("/api/v1/scheduler", any(scheduler::call))
        .route("/master/api/v1/scheduler", any(scheduler::call))
        .route("/api/v1", any(operator::call))
        .route("/master/api/v1", any(operator::call))
        .route("/version", get(operator::version))
        .route("/master/redirect", get(operator::redirect));
    for path in ["/master/state", "/master/state.json", "/state.json"] {
        routes = routes.route(path, get(operator::state));
    }
    for path in ["/master/frameworks", "/frameworks"] {
        routes = routes
            .route(path, get(operator::frameworks))
            .route(&format!("{path}/"), get(operator::frameworks));
    }
    for path in ["/master/slaves", "/slaves"] {
        routes = routes
            .route(path, get(operator::slaves))
            .route(&format!("{path}/"), get(operator::slaves));
    }
    for path in ["/master/tasks", "/tasks"] {
        routes = routes
            .route(path, get(operator::tasks))
            .route(&format!("{path}/"), get(operator::tasks));
    }
    agora_net::http_auth::protect(routes.with_state(node), api_token, "master", OPEN_PATHS)
}

/// A plain-text answer, as Mesos gives its errors.
fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

/// A JSON document answered as Mesos does (compact, ASCII).
fn json_response(v: &serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        wire::ascii_json(v),
    )
        .into_response()
}

/// The HTTP status Mesos gives to an error of the core.
fn error_response(e: &MasterError) -> Response {
    let status = match e {
        MasterError::InvalidArgument { .. }
        | MasterError::NotFound { .. }
        | MasterError::FailedPrecondition(_) => StatusCode::BAD_REQUEST,
        MasterError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        MasterError::Unauthenticated(_) => {
            return (
                StatusCode::UNAUTHORIZED,
                [
                    (header::WWW_AUTHENTICATE, "Basic realm=\"mesos\""),
                    (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                ],
                e.to_string(),
            )
                .into_response()
        }
        MasterError::Unavailable(_) | MasterError::NotLeader { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    text(status, e.to_string())
}

/// A standby's answer: 307 to the leader with the same path (`Location: //leader:port/path`),
/// or 503 while none is elected.
fn standby(node: &Node, path: &str) -> Option<Response> {
    (!node.is_leading()).then(|| {
        agora_ha::leadership::standby_response(
            node.leader(),
            path,
            true,
            "no leading master is elected yet",
        )
    })
}

/// Mesos's checks of a POSTed call, in its order after leadership: 405 for another method, 400
/// without a Content-Type, 415 for a type other than JSON.
fn check_post(method: &axum::http::Method, headers: &HeaderMap) -> Result<(), Response> {
    if method != axum::http::Method::POST {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Expecting 'POST', received '{method}'"),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return Err(r);
    }
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "Expecting 'Content-Type' to be present",
        ));
    };
    let media = content_type
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" => Ok(()),
        "application/x-protobuf" => Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Agora's Mesos API takes 'application/json' bodies; 'application/x-protobuf' is not \
             supported",
        )),
        other => Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Expecting 'Content-Type' of application/json, received '{other}'"),
        )),
    }
}

/// The body, up to [`MAX_BODY_BYTES`].
async fn body(body: axum::body::Body) -> Result<axum::body::Bytes, Response> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        })
}

/// The steps every `POST` call of both APIs starts with: a standby redirects (or 503), the
/// method and content type are checked, the body is read and parsed as `what`. Returns the
/// request's parts (headers for the stream id and credentials) and the call.
async fn read_call<T: serde::de::DeserializeOwned>(
    node: &Node,
    request: axum::extract::Request,
    what: &str,
) -> Result<(axum::http::request::Parts, T), Response> {
    let (parts, raw) = request.into_parts();
    if let Some(r) = standby(node, parts.uri.path()) {
        return Err(r);
    }
    check_post(&parts.method, &parts.headers)?;
    let bytes = body(raw).await?;
    let call = parse(what, &bytes)?;
    Ok((parts, call))
}

/// Parses a JSON body, naming the field that does not parse.
fn parse<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Response> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        text(
            StatusCode::BAD_REQUEST,
            format!("Failed to parse body into {what}: {path}: {}", e.inner()),
        )
    })
}
