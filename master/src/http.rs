//! The master's HTTP/JSON surface, on the same port as gRPC: `/health`, `/state`, `/metrics`,
//! `/redirect`, and the operator calls under `/api/v1/`. Handlers translate; the actor decides.
//!
//! `/state` is a JSON document scripts rely on: resources are objects of plain numbers
//! (`{"cpus": 4.0, "mem": 8192.0, "ports": "[31000-32000]"}`), states are the proto names
//! (`TASK_RUNNING`).

use agora_proto::{v1, Resources};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use std::sync::Arc;

use crate::error::MasterError;
use crate::node::Node;

/// Paths anyone may call when the API requires a token: health checks and the web UI's page
/// and the script and stylesheet it shares with the services UI (the page itself asks for the
/// token and sends it on its fetches).
pub const OPEN_PATHS: &[&str] = &["/", "/health", "/common.js", "/common.css"];

/// The HTTP routes; with `api_token`, all but [`OPEN_PATHS`] require it.
pub fn router(node: Arc<Node>, api_token: Option<agora_net::http_auth::ApiToken>) -> Router {
    let routes = Router::new()
        .route("/", get(ui))
        .route(
            "/common.js",
            get(|| async { agora_net::web_ui::common_js() }),
        )
        .route(
            "/common.css",
            get(|| async { agora_net::web_ui::common_css() }),
        )
        .route("/health", get(|| async { "ok" }))
        .route("/state", get(state))
        .route("/api/v1/state", get(state))
        .route("/metrics", get(metrics))
        .route("/redirect", get(redirect))
        .route("/api/v1/roles", get(roles))
        .route("/api/v1/weights", put(weights))
        .route("/api/v1/quota/{role}", put(quota))
        .route("/api/v1/agents/{id}/drain", post(drain))
        .route("/api/v1/agents/{id}/reactivate", post(reactivate))
        .route("/api/v1/agents/{id}/gone", post(gone))
        .route("/api/v1/frameworks/{id}/teardown", post(teardown))
        .with_state(node);
    agora_net::http_auth::protect(routes, api_token, "master", OPEN_PATHS)
}

/// What answers a path no route serves: gRPC calls (`content-type: application/grpc…`) get
/// gRPC's `UNIMPLEMENTED`, as tonic answers an unknown method; anything else a 404 with a JSON
/// reason, so that a mistyped path is not mistaken for an empty answer.
pub async fn not_found(req: axum::extract::Request) -> Response {
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented(format!("no such gRPC method: {}", req.uri().path()))
            .into_http::<axum::body::Body>();
    }
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "message": format!("no such path: {}", req.uri().path()) })),
    )
        .into_response()
}

/// The web UI: one page, embedded in the binary (no build step), that polls `/state`.
const UI: &str = include_str!("ui/index.html");

async fn ui(State(node): State<Arc<Node>>) -> Response {
    if !node.is_leading() {
        return standby_redirect(&node, "/");
    }
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], UI).into_response()
}

/// An error as JSON: `{"message": "..."}` with the matching status.
pub struct ApiError(pub MasterError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.0.http_status();
        (status, Json(json!({ "message": self.0.to_string() }))).into_response()
    }
}

impl From<MasterError> for ApiError {
    fn from(e: MasterError) -> Self {
        ApiError(e)
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError(MasterError::invalid("body", format!("invalid JSON: {e}"))))
}

/// Resources as a JSON object of plain numbers (roles summed) and range strings.
pub fn resources_json(resources: &[v1::Resource]) -> Value {
    let Ok(r) = Resources::from_proto(resources) else {
        return Value::Null;
    };
    let flat = r.flatten();
    let mut out = Map::new();
    for name in flat.scalar_names() {
        out.insert(name.to_string(), json!(flat.scalar_total(name)));
    }
    for (key, ranges) in flat.range_entries() {
        out.insert(key.name.clone(), json!(ranges.to_string()));
    }
    Value::Object(out)
}

fn state_name<E: TryFrom<i32>>(v: i32, name: impl Fn(E) -> &'static str) -> &'static str {
    E::try_from(v).map(name).unwrap_or("UNKNOWN")
}

fn status_json(s: &v1::TaskStatus) -> Value {
    json!({
        "state": state_name(s.state, |e: v1::TaskState| e.as_str_name()),
        "reason": state_name(s.reason, |e: v1::Reason| e.as_str_name()),
        "message": s.message,
        "source": state_name(s.source, |e: v1::StatusSource| e.as_str_name()),
        "healthy": s.healthy,
        "exit_code": s.exit_code,
        "timestamp": s.timestamp,
    })
}

fn task_json(t: &v1::Task) -> Value {
    json!({
        "id": t.task_id,
        "name": t.name,
        "framework_id": t.framework_id,
        "agent_id": t.agent_id,
        "executor_id": t.executor_id,
        "state": state_name(t.state, |e: v1::TaskState| e.as_str_name()),
        "resources": resources_json(&t.resources),
        "started_at": t.started_at,
        "labels": t.labels,
        "status": t.status.as_ref().map(status_json),
    })
}

/// The `/state` document.
pub fn state_json(s: &v1::GetStateResponse) -> Value {
    let master = s.master_info.clone().unwrap_or_default();
    json!({
        "leader": s.leader,
        "master": {
            "id": master.id,
            "hostname": master.hostname,
            "address": master.address,
            "version": master.version,
            "start_time": master.start_time,
        },
        "agents": s.agents.iter().map(|a| {
            let info = a.info.clone().unwrap_or_default();
            let attributes: Map<String, Value> = info
                .attributes
                .iter()
                .map(|at| (at.name.clone(), json!(at.text)))
                .collect();
            json!({
                "id": a.id,
                "hostname": info.hostname,
                "http_port": info.http_port,
                "resources": resources_json(&info.resources),
                "used_resources": resources_json(&a.used_resources),
                "offered_resources": resources_json(&a.offered_resources),
                "attributes": attributes,
                "active": a.active,
                "draining": a.draining,
                "registered_time": a.registered_time,
                "version": info.version,
            })
        }).collect::<Vec<_>>(),
        "frameworks": s.frameworks.iter().map(|f| {
            let info = f.info.clone().unwrap_or_default();
            json!({
                "id": info.id,
                "name": info.name,
                "roles": info.roles,
                "principal": info.principal,
                "hostname": info.hostname,
                "webui_url": info.webui_url,
                "failover_timeout_seconds": info.failover_timeout_seconds,
                "connected": f.connected,
                "dominant_share": f.dominant_share,
                "used_resources": resources_json(&f.used_resources),
                "offered_resources": resources_json(&f.offered_resources),
                "suppressed_roles": f.suppressed_roles,
                "registered_time": f.registered_time,
            })
        }).collect::<Vec<_>>(),
        "tasks": s.tasks.iter().map(task_json).collect::<Vec<_>>(),
        "completed_tasks": s.completed_tasks.iter().map(task_json).collect::<Vec<_>>(),
        "offers": s.offers.iter().map(|o| json!({
            "id": o.id,
            "framework_id": o.framework_id,
            "agent_id": o.agent_id,
            "hostname": o.hostname,
            "role": o.allocation_role,
            "resources": resources_json(&o.resources),
        })).collect::<Vec<_>>(),
        "roles": s.roles.iter().map(role_json).collect::<Vec<_>>(),
    })
}

fn role_json(r: &v1::RoleState) -> Value {
    json!({
        "name": r.name,
        "weight": r.weight,
        "quota": resources_json(&r.quota),
        "allocated": resources_json(&r.allocated),
        "frameworks": r.frameworks,
    })
}

async fn state(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let Ok(master) = node.leading() else {
        return Ok(standby_redirect(&node, "/state"));
    };
    let leader = master.leader().to_string();
    let s = master.call(move |book, _| Ok(book.state(&leader))).await?;
    Ok(Json(state_json(&s)).into_response())
}

/// A standby's answer (`agora-ha`'s): 307 to the same path on the leader, or 503 when none is
/// elected.
fn standby_redirect(node: &Node, path: &str) -> Response {
    agora_ha::leadership::standby_response(
        node.leader(),
        path,
        !node.is_leading(),
        "no leading master is elected yet",
    )
}

async fn metrics(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let master = node.leading()?;
    let (gauges, counters) = master
        .call(|book, _| Ok((book.gauges(), book.counters().clone())))
        .await?;
    let Some(handle) = crate::metrics::handle() else {
        return Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            "another metrics recorder is installed in this process",
        )
            .into_response());
    };
    crate::metrics::publish(&gauges, &counters);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response())
}

async fn redirect(State(node): State<Arc<Node>>) -> Response {
    standby_redirect(&node, "/")
}

async fn roles(State(node): State<Arc<Node>>) -> Result<Json<Value>, ApiError> {
    let master = node.leading()?;
    let roles = master.call(|book, _| Ok(book.roles())).await?;
    Ok(Json(
        json!({ "roles": roles.iter().map(role_json).collect::<Vec<_>>() }),
    ))
}

#[derive(serde::Deserialize)]
struct WeightBody {
    role: String,
    weight: f64,
}

async fn weights(State(node): State<Arc<Node>>, body: Bytes) -> Result<StatusCode, ApiError> {
    let master = node.leading()?;
    let list: Vec<WeightBody> = parse_body(&body)?;
    let weights: Vec<v1::WeightInfo> = list
        .into_iter()
        .map(|w| v1::WeightInfo {
            role: w.role,
            weight: w.weight,
        })
        .collect();
    master
        .call(move |book, _| book.update_weights(&weights))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
struct QuotaBody {
    /// Flag syntax, e.g. `cpus:4;mem:8192`; empty removes the quota.
    guarantee: String,
}

async fn quota(
    State(node): State<Arc<Node>>,
    Path(role): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let master = node.leading()?;
    let q: QuotaBody = parse_body(&body)?;
    let guarantee = if q.guarantee.trim().is_empty() {
        Resources::new()
    } else {
        Resources::parse(&q.guarantee)
            .map_err(|e| ApiError(MasterError::invalid("guarantee", e.to_string())))?
    };
    let req = v1::SetQuotaRequest {
        role,
        guarantee: guarantee.to_proto(),
    };
    master.call(move |book, _| book.set_quota(req)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize, Default)]
struct DrainBody {
    grace_period_seconds: Option<f64>,
}

async fn drain(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let master = node.leading()?;
    let d: DrainBody = if body.is_empty() {
        DrainBody::default()
    } else {
        parse_body(&body)?
    };
    if let Some(g) = d.grace_period_seconds {
        if !g.is_finite() || g < 0.0 {
            return Err(ApiError(MasterError::invalid(
                "grace_period_seconds",
                format!("{g} must be a finite number >= 0"),
            )));
        }
    }
    master
        .call(move |book, clock| book.drain_agent(&id, d.grace_period_seconds, clock))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn reactivate(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let master = node.leading()?;
    master
        .call(move |book, _| book.reactivate_agent(&id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn gone(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let master = node.leading()?;
    master
        .call(move |book, clock| book.mark_agent_gone(&id, clock))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn teardown(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<StatusCode, ApiError> {
    let master = node.leading()?;
    // The operator's principal comes as `Basic`; a `Bearer` API token may be sent beside it.
    let authorization = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| !v.trim_start().to_ascii_lowercase().starts_with("bearer "));
    let caller = node.authenticate(authorization)?.unwrap_or_default();
    let acls = node.acls().clone();
    master
        .call(move |book, clock| {
            let owner = book
                .framework_principal(&id)
                .ok_or_else(|| MasterError::not_found("framework", &id))?;
            acls.may_teardown(&caller, &owner)?;
            book.teardown_by_operator(&id, clock)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
