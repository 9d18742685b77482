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
pub mod protobuf;
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

/// The two encodings of Mesos's bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`: Mesos's JSON mapping of its messages.
    Json,
    /// `application/x-protobuf`: the messages' binary encoding ([`protobuf`]).
    Protobuf,
}

impl Format {
    /// The `Content-Type` of a body in this format.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Protobuf => protobuf::MEDIA_TYPE,
        }
    }
}

/// The media types one header admits, lowercased, without parameters.
fn media_types(headers: &HeaderMap, name: &str) -> Option<Vec<String>> {
    let v = headers.get(name)?.to_str().ok()?;
    Some(
        v.split(',')
            .map(|m| {
                m.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .collect(),
    )
}

/// The format of the answer, as Mesos picks it from `Accept`: JSON when admitted (also when
/// `Accept` is absent), else protobuf when admitted; with `application/recordio` (streamed
/// events), the records' format from `Message-Accept` the same way. `None`: 406.
pub fn answer_format(headers: &HeaderMap) -> Option<Format> {
    let pick = |types: Option<Vec<String>>| -> Option<Format> {
        let Some(types) = types else {
            return Some(Format::Json);
        };
        let admits = |want: &str| {
            let (family, _) = want.split_once('/').unwrap_or((want, ""));
            types
                .iter()
                .any(|t| t == want || t == "*/*" || *t == format!("{family}/*"))
        };
        if admits("application/json") {
            Some(Format::Json)
        } else if admits(protobuf::MEDIA_TYPE) {
            Some(Format::Protobuf)
        } else {
            None
        }
    };
    let accept = media_types(headers, header::ACCEPT.as_str());
    if accept
        .as_ref()
        .is_some_and(|a| a.iter().any(|t| t == "application/recordio"))
    {
        return pick(media_types(headers, "message-accept"));
    }
    pick(accept)
}

/// Mesos's checks of a POSTed call, in its order after leadership: 405 for another method, 400
/// without a Content-Type, 415 for a type other than JSON or protobuf. Returns the body's format.
fn check_post(method: &axum::http::Method, headers: &HeaderMap) -> Result<Format, Response> {
    if method != axum::http::Method::POST {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Expecting 'POST', received '{method}'"),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return Err(r);
    }
    let Some(media) = media_types(headers, header::CONTENT_TYPE.as_str()) else {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "Expecting 'Content-Type' to be present",
        ));
    };
    match media.first().map(String::as_str).unwrap_or("") {
        "application/json" => Ok(Format::Json),
        protobuf::MEDIA_TYPE => Ok(Format::Protobuf),
        other => Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Expecting 'Content-Type' of application/json or application/x-protobuf, \
                 received '{other}'"
            ),
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
/// method and content type are checked, the body is read and parsed as `what` (JSON, or the
/// protobuf message `proto` read into Mesos's JSON mapping). Returns the request's parts
/// (headers for the stream id and credentials) and the call.
async fn read_call<T: serde::de::DeserializeOwned>(
    node: &Node,
    request: axum::extract::Request,
    what: &str,
    proto: &'static str,
) -> Result<(axum::http::request::Parts, T), Response> {
    let (parts, raw) = request.into_parts();
    if let Some(r) = standby(node, parts.uri.path()) {
        return Err(r);
    }
    let format = check_post(&parts.method, &parts.headers)?;
    let bytes = body(raw).await?;
    let call = match format {
        Format::Json => parse(what, &bytes)?,
        Format::Protobuf => {
            let json = protobuf::decode(proto, &bytes).map_err(|e| {
                text(
                    StatusCode::BAD_REQUEST,
                    format!("Failed to parse body into {what}: {e}"),
                )
            })?;
            serde_path_to_error::deserialize(json).map_err(|e| {
                let path = e.path().to_string();
                text(
                    StatusCode::BAD_REQUEST,
                    format!("Failed to parse body into {what}: {path}: {}", e.inner()),
                )
            })?
        }
    };
    Ok((parts, call))
}

/// A document in the answer's format (JSON as Mesos writes it: compact, ASCII).
fn answer(format: Format, message: &'static str, v: &serde_json::Value) -> Response {
    match format {
        Format::Json => json_response(v),
        Format::Protobuf => match protobuf::encode(message, v) {
            Ok(bytes) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, protobuf::MEDIA_TYPE)],
                bytes,
            )
                .into_response(),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("could not encode the answer as {message}: {e}"),
            ),
        },
    }
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
