//! Mesos's operator read surface: the v1 operator API's GET_* calls (`POST /api/v1`) and the JSON
//! documents of Mesos's v0 endpoints (`/master/state`, `/master/frameworks`, `/master/slaves`,
//! `/master/tasks`), with Mesos's field names, built from the core's one state snapshot.
//! Agora's own `/state` is unchanged beside them.

use std::collections::HashMap;
use std::sync::Arc;

use agora_proto::v1;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::wire::{self, id, MESOS_VERSION};
use super::{error_response, json_response, protobuf, standby, text};
use crate::node::Node;

/// The core's state (the leader's; a standby redirects first).
async fn snapshot(node: &Node) -> Result<v1::GetStateResponse, Response> {
    let master = node.leading().map_err(|e| error_response(&e))?;
    let leader = master.leader().to_string();
    master
        .call(move |book, _| Ok(book.state(&leader)))
        .await
        .map_err(|e| error_response(&e))
}

/// `GET /version`: answered by every master for itself.
pub async fn version() -> Response {
    json_response(&json!({
        "version": MESOS_VERSION,
        "agora_version": env!("CARGO_PKG_VERSION"),
        "build_date": "",
        "build_time": 0,
        "build_user": "",
        "git_sha": "",
        "git_tag": "",
    }))
}

/// `GET /master/redirect`: 307 to the leading master (`//host:port`), 503 while none.
pub async fn redirect(State(node): State<Arc<Node>>) -> Response {
    agora_ha::leadership::standby_response(
        node.leader(),
        "",
        !node.is_leading(),
        "no leading master is elected yet",
    )
}

// ---------------------------------------------------------------------------------------------
// The v0 documents
// ---------------------------------------------------------------------------------------------

/// Resources as Mesos's v0 object: `cpus`, `mem`, `disk`, `gpus` always, ranges as
/// `"[31000-32000]"`.
fn v0_resources(list: &[v1::Resource]) -> Value {
    let mut v = crate::http::resources_json(list);
    if let Some(o) = v.as_object_mut() {
        for name in ["cpus", "mem", "disk", "gpus"] {
            o.entry(name).or_insert(json!(0.0));
        }
    }
    v
}

fn v0_attributes(list: &[v1::Attribute]) -> Value {
    let o: Map<String, Value> = list
        .iter()
        .map(|a| {
            let v = match a.text.trim().parse::<f64>() {
                Ok(n) if n.is_finite() => json!(n),
                _ => json!(a.text),
            };
            (a.name.clone(), v)
        })
        .collect();
    Value::Object(o)
}

fn v0_labels(l: &HashMap<String, String>) -> Value {
    wire::labels_json(l)
        .get("labels")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()))
}

fn latest_timestamp(t: &v1::Task) -> f64 {
    t.status.as_ref().map(|s| s.timestamp).unwrap_or(0.0)
}

fn v0_task(t: &v1::Task) -> Value {
    let statuses: Vec<Value> = t
        .status
        .iter()
        .map(|s| {
            json!({
                "state": wire::task_state(s.state, true),
                "timestamp": s.timestamp,
            })
        })
        .collect();
    json!({
        "id": t.task_id,
        "name": t.name,
        "framework_id": t.framework_id,
        "executor_id": t.executor_id,
        "slave_id": t.agent_id,
        "state": wire::task_state(t.state, true),
        "resources": v0_resources(&t.resources),
        "statuses": statuses,
        "labels": v0_labels(&t.labels),
    })
}

fn v0_agent(a: &v1::AgentState) -> Value {
    let info = a.info.clone().unwrap_or_default();
    json!({
        "id": a.id,
        "pid": format!("slave(1)@{}:{}", info.hostname, info.http_port),
        "hostname": info.hostname,
        "port": info.http_port,
        "registered_time": a.registered_time,
        "resources": v0_resources(&info.resources),
        "used_resources": v0_resources(&a.used_resources),
        "offered_resources": v0_resources(&a.offered_resources),
        "unreserved_resources": v0_resources(
            &info.resources.iter().filter(|r| r.role.is_empty() || r.role == "*").cloned().collect::<Vec<_>>()
        ),
        "attributes": v0_attributes(&info.attributes),
        "active": a.active,
        "deactivated": a.draining,
        "version": info.version,
        "capabilities": [],
    })
}

fn capability_names(c: &[i32]) -> Vec<&'static str> {
    c.iter()
        .filter_map(|c| match v1::FrameworkCapability::try_from(*c).ok()? {
            v1::FrameworkCapability::MultiRole => Some("MULTI_ROLE"),
            v1::FrameworkCapability::PartitionAware => Some("PARTITION_AWARE"),
            v1::FrameworkCapability::ReservationRefinement => Some("RESERVATION_REFINEMENT"),
            v1::FrameworkCapability::TaskKillingState => Some("TASK_KILLING_STATE"),
            v1::FrameworkCapability::Unspecified => None,
        })
        .collect()
}

fn v0_framework(f: &v1::FrameworkState, s: &v1::GetStateResponse) -> Value {
    let info = f.info.clone().unwrap_or_default();
    let mine = |t: &&v1::Task| t.framework_id == info.id;
    json!({
        "id": info.id,
        "name": info.name,
        "user": info.user,
        "hostname": info.hostname,
        "webui_url": info.webui_url,
        "principal": info.principal,
        "role": info.roles.first().cloned().unwrap_or_else(|| "*".into()),
        "roles": info.roles,
        "failover_timeout": info.failover_timeout_seconds,
        "checkpoint": info.checkpoint,
        "capabilities": capability_names(&info.capabilities),
        "active": f.connected,
        "connected": f.connected,
        "recovered": false,
        "registered_time": f.registered_time,
        "unregistered_time": 0,
        "used_resources": v0_resources(&f.used_resources),
        "offered_resources": v0_resources(&f.offered_resources),
        "resources": v0_resources(&f.used_resources),
        "tasks": s.tasks.iter().filter(mine).map(v0_task).collect::<Vec<_>>(),
        "unreachable_tasks": [],
        "completed_tasks": s.completed_tasks.iter().filter(mine).map(v0_task).collect::<Vec<_>>(),
        "offers": s.offers.iter().filter(|o| o.framework_id == info.id).map(|o| json!({
            "id": o.id,
            "framework_id": o.framework_id,
            "slave_id": o.agent_id,
            "resources": v0_resources(&o.resources),
        })).collect::<Vec<_>>(),
        "executors": [],
        "labels": v0_labels(&info.labels),
    })
}

fn v0_frameworks(s: &v1::GetStateResponse) -> Vec<Value> {
    s.frameworks.iter().map(|f| v0_framework(f, s)).collect()
}

fn v0_slaves(s: &v1::GetStateResponse) -> Vec<Value> {
    s.agents.iter().map(v0_agent).collect()
}

/// The `/master/state` document.
pub fn state_json(s: &v1::GetStateResponse) -> Value {
    let m = s.master_info.clone().unwrap_or_default();
    let (host, port) = wire::split_address(&m.address);
    let (leader_host, leader_port) = wire::split_address(&s.leader);
    let active = s.agents.iter().filter(|a| a.active).count();
    json!({
        "version": MESOS_VERSION,
        "id": m.id,
        "pid": format!("master@{host}:{port}"),
        "hostname": m.hostname,
        "start_time": m.start_time,
        "elected_time": m.start_time,
        "leader": format!("master@{leader_host}:{leader_port}"),
        "leader_info": wire::master_info(&m),
        "activated_slaves": active,
        "deactivated_slaves": s.agents.len() - active,
        "unreachable_slaves": 0,
        "flags": {},
        "slaves": v0_slaves(s),
        "frameworks": v0_frameworks(s),
        "completed_frameworks": [],
        "orphan_tasks": [],
        "unregistered_frameworks": [],
    })
}

pub async fn state(State(node): State<Arc<Node>>, request: Request) -> Response {
    if let Some(r) = standby(&node, request.uri().path()) {
        return r;
    }
    match snapshot(&node).await {
        Ok(s) => json_response(&state_json(&s)),
        Err(r) => r,
    }
}

pub async fn frameworks(State(node): State<Arc<Node>>, request: Request) -> Response {
    if let Some(r) = standby(&node, request.uri().path()) {
        return r;
    }
    match snapshot(&node).await {
        Ok(s) => json_response(&json!({
            "frameworks": v0_frameworks(&s),
            "completed_frameworks": [],
            "unregistered_frameworks": [],
        })),
        Err(r) => r,
    }
}

pub async fn slaves(State(node): State<Arc<Node>>, request: Request) -> Response {
    if let Some(r) = standby(&node, request.uri().path()) {
        return r;
    }
    match snapshot(&node).await {
        Ok(s) => json_response(&json!({ "slaves": v0_slaves(&s), "recovered_slaves": [] })),
        Err(r) => r,
    }
}

/// `/master/tasks` query, as Mesos takes it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TasksQuery {
    pub limit: Option<String>,
    pub offset: Option<String>,
    pub order: Option<String>,
    pub framework_id: Option<String>,
    pub task_id: Option<String>,
}

/// Mesos's default page.
const DEFAULT_TASKS_LIMIT: usize = 100;

/// The tasks of `/master/tasks`: live then completed, filtered, sorted by their latest status's
/// time (`order` `asc` or `des`/`desc`), then `offset` and `limit` (negative: no limit).
pub fn tasks_page(s: &v1::GetStateResponse, q: &TasksQuery) -> Result<Vec<Value>, String> {
    let limit = match q.limit.as_deref().map(str::trim) {
        None | Some("") => Some(DEFAULT_TASKS_LIMIT),
        Some(l) if l.starts_with('-') => {
            l.parse::<i64>()
                .map_err(|_| format!("limit: '{l}' is not an integer"))?;
            None
        }
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| format!("limit: '{l}' is not an integer"))?,
        ),
    };
    let offset = match q.offset.as_deref().map(str::trim) {
        None | Some("") => 0,
        Some(o) => o
            .parse::<usize>()
            .map_err(|_| format!("offset: '{o}' is not a non-negative integer"))?,
    };
    let descending = match q.order.as_deref().map(str::trim) {
        None | Some("") | Some("asc") => false,
        Some("des" | "desc") => true,
        Some(o) => return Err(format!("order: '{o}' is not 'asc' or 'des'")),
    };
    let mut tasks: Vec<&v1::Task> = s
        .tasks
        .iter()
        .chain(s.completed_tasks.iter())
        .filter(|t| q.framework_id.as_ref().is_none_or(|f| &t.framework_id == f))
        .filter(|t| q.task_id.as_ref().is_none_or(|id| &t.task_id == id))
        .collect();
    tasks.sort_by(|a, b| latest_timestamp(a).total_cmp(&latest_timestamp(b)));
    if descending {
        tasks.reverse();
    }
    Ok(tasks
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .map(v0_task)
        .collect())
}

pub async fn tasks(
    State(node): State<Arc<Node>>,
    Query(q): Query<TasksQuery>,
    request: Request,
) -> Response {
    if let Some(r) = standby(&node, request.uri().path()) {
        return r;
    }
    let s = match snapshot(&node).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match tasks_page(&s, &q) {
        Ok(tasks) => json_response(&json!({ "tasks": tasks })),
        Err(m) => text(StatusCode::BAD_REQUEST, m),
    }
}

// ---------------------------------------------------------------------------------------------
// The v1 operator API (read calls)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OperatorCall {
    #[serde(rename = "type", deserialize_with = "super::lenient::string")]
    kind: String,
}

fn nanos(seconds: f64) -> Value {
    // Our own timestamps: finite and far from i64's range; a float-to-int `as` saturates anyway.
    json!({ "nanoseconds": (seconds * 1e9) as i64 })
}

fn v1_framework_info(info: &v1::FrameworkInfo) -> Value {
    json!({
        "id": id(&info.id),
        "name": info.name,
        "user": info.user,
        "hostname": info.hostname,
        "webui_url": info.webui_url,
        "principal": info.principal,
        "roles": info.roles,
        "failover_timeout": info.failover_timeout_seconds,
        "checkpoint": info.checkpoint,
        "capabilities": capability_names(&info.capabilities).iter().map(|c| json!({ "type": c })).collect::<Vec<_>>(),
        "labels": wire::labels_json(&info.labels),
    })
}

fn v1_task(t: &v1::Task) -> Value {
    let mut o = json!({
        "name": t.name,
        "task_id": id(&t.task_id),
        "framework_id": id(&t.framework_id),
        "agent_id": id(&t.agent_id),
        "state": wire::task_state(t.state, true),
        "resources": wire::resources_json(&t.resources, None),
        "statuses": t.status.iter().map(|s| wire::status_json(s, true)).collect::<Vec<_>>(),
        "labels": wire::labels_json(&t.labels),
    });
    if let (false, Some(obj)) = (t.executor_id.is_empty(), o.as_object_mut()) {
        obj.insert("executor_id".into(), id(&t.executor_id));
    }
    o
}

fn get_tasks(s: &v1::GetStateResponse) -> Value {
    json!({
        "pending_tasks": [],
        "tasks": s.tasks.iter().map(v1_task).collect::<Vec<_>>(),
        "unreachable_tasks": [],
        "completed_tasks": s.completed_tasks.iter().map(v1_task).collect::<Vec<_>>(),
        "orphan_tasks": [],
    })
}

fn get_agents(s: &v1::GetStateResponse) -> Value {
    let agents: Vec<Value> = s
        .agents
        .iter()
        .map(|a| {
            let info = a.info.clone().unwrap_or_default();
            json!({
                "agent_info": {
                    "id": id(&a.id),
                    "hostname": info.hostname,
                    "port": info.http_port,
                    "resources": wire::resources_json(&info.resources, None),
                    "attributes": info.attributes.iter().map(wire::attribute_json).collect::<Vec<_>>(),
                },
                "active": a.active,
                "deactivated": a.draining,
                "version": info.version,
                "pid": format!("slave(1)@{}:{}", info.hostname, info.http_port),
                "registered_time": nanos(a.registered_time),
                "total_resources": wire::resources_json(&info.resources, None),
                "allocated_resources": wire::resources_json(&a.used_resources, None),
                "offered_resources": wire::resources_json(&a.offered_resources, None),
                "capabilities": [],
            })
        })
        .collect();
    json!({ "agents": agents, "recovered_agents": [] })
}

fn get_frameworks(s: &v1::GetStateResponse) -> Value {
    let frameworks: Vec<Value> = s
        .frameworks
        .iter()
        .map(|f| {
            let info = f.info.clone().unwrap_or_default();
            json!({
                "framework_info": v1_framework_info(&info),
                "active": f.connected,
                "connected": f.connected,
                "recovered": false,
                "registered_time": nanos(f.registered_time),
                "allocated_resources": wire::resources_json(&f.used_resources, None),
                "offered_resources": wire::resources_json(&f.offered_resources, None),
            })
        })
        .collect();
    json!({ "frameworks": frameworks, "completed_frameworks": [] })
}

/// The answer to one operator read call; `Err` for a type this adapter does not serve.
pub fn operator_answer(kind: &str, s: &v1::GetStateResponse) -> Result<Value, String> {
    let m = s.master_info.clone().unwrap_or_default();
    let (field, body) = match kind {
        "GET_HEALTH" => ("get_health", json!({ "healthy": true })),
        "GET_VERSION" => (
            "get_version",
            json!({ "version_info": { "version": MESOS_VERSION } }),
        ),
        "GET_MASTER" => (
            "get_master",
            json!({ "master_info": wire::master_info(&m), "start_time": m.start_time }),
        ),
        "GET_AGENTS" => ("get_agents", get_agents(s)),
        "GET_FRAMEWORKS" => ("get_frameworks", get_frameworks(s)),
        "GET_TASKS" => ("get_tasks", get_tasks(s)),
        "GET_STATE" => (
            "get_state",
            json!({
                "get_tasks": get_tasks(s),
                "get_executors": { "executors": [], "orphan_executors": [] },
                "get_frameworks": get_frameworks(s),
                "get_agents": get_agents(s),
            }),
        ),
        other => {
            return Err(format!(
                "Agora's Mesos operator API serves GET_HEALTH, GET_VERSION, GET_MASTER, \
                 GET_STATE, GET_AGENTS, GET_FRAMEWORKS and GET_TASKS; not '{other}' (Agora's \
                 own gRPC Operator service and /api/v1/… HTTP calls do the rest)"
            ))
        }
    };
    Ok(json!({ "type": kind, field: body }))
}

/// `POST /api/v1`.
pub async fn call(State(node): State<Arc<Node>>, request: Request) -> Response {
    let (parts, call): (_, OperatorCall) =
        match super::read_call(&node, request, "Call", protobuf::OPERATOR_CALL).await {
            Ok(c) => c,
            Err(r) => return r,
        };
    let Some(format) = super::answer_format(&parts.headers) else {
        return text(
            StatusCode::NOT_ACCEPTABLE,
            "Expecting 'Accept' to allow application/json or application/x-protobuf",
        );
    };
    if call.kind.is_empty() {
        return text(StatusCode::BAD_REQUEST, "Expecting 'type' to be present");
    }
    let s = match snapshot(&node).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match operator_answer(&call.kind, &s) {
        Ok(v) => super::answer(format, protobuf::OPERATOR_RESPONSE, &v),
        Err(m) => text(StatusCode::BAD_REQUEST, m),
    }
}
