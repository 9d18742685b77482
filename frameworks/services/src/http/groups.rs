//! Groups, deployment plans and the event stream, as Marathon 1.x serves them:
//! `/v2/groups[/{id}[/versions]]`, `/v2/deployments[/{id}]`, `/v2/events?event_type=…`.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{sse, Api, ApiError};
use crate::app::normalize_id;
use crate::core::{GroupNode, ServicesCore, ServicesError};
use crate::group::GroupBody;

/// The client's IP address, when the connection has one (`api_post_event`'s `clientIp`,
/// `event_stream_*`'s `remoteAddress`).
pub(super) struct ClientIp(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<agora_net::tls::Peer>>()
                .map(|c| c.0.addr.ip().to_string()),
        ))
    }
}

/// Every value of a repeated query parameter (`embed=a&embed=b`), commas splitting too.
fn values(q: &[(String, String)], name: &str) -> Vec<String> {
    q.iter()
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_string()))
        .filter(|s| !s.is_empty())
        .collect()
}

/// `?force=true` (`True` too: Python clients send their bool so; Marathon reads it case-blind).
fn forced(q: &[(String, String)]) -> bool {
    q.iter()
        .any(|(k, v)| k == "force" && (v.eq_ignore_ascii_case("true") || v.is_empty()))
}

/// What `embed` asks a group to show.
#[derive(Clone, Copy)]
struct Embed {
    groups: bool,
    apps: bool,
    tasks: bool,
    counts: bool,
    deployments: bool,
    failure: bool,
}

impl Embed {
    fn of(q: &[(String, String)]) -> Embed {
        let e = values(q, "embed");
        if e.is_empty() {
            // Marathon's default: child groups and apps.
            return Embed {
                groups: true,
                apps: true,
                tasks: false,
                counts: false,
                deployments: false,
                failure: false,
            };
        }
        let has = |s: &str| e.iter().any(|x| x == s);
        Embed {
            groups: has("group.groups"),
            apps: e.iter().any(|x| x.starts_with("group.apps")),
            tasks: has("group.apps.tasks"),
            counts: has("group.apps.counts"),
            deployments: has("group.apps.deployments"),
            failure: has("group.apps.lastTaskFailure"),
        }
    }
}

fn render(
    node: &GroupNode,
    core: &ServicesCore,
    embed: Embed,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let apps: Vec<Value> = if embed.apps {
        node.apps
            .iter()
            .filter_map(|id| core.app(id))
            .map(|st| {
                // Marathon's app JSON (the one `/v2/apps` writes), with the group's embeds.
                crate::wire::app_info_value(
                    st,
                    core,
                    crate::wire::Embed {
                        tasks: embed.tasks,
                        counts: embed.counts,
                        deployments: embed.deployments,
                        last_task_failure: embed.failure,
                        task_stats: false,
                        readiness: false,
                    },
                    now,
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let groups: Vec<Value> = if embed.groups {
        node.groups
            .iter()
            .map(|g| render(g, core, embed, now))
            .collect()
    } else {
        Vec::new()
    };
    json!({
        "id": node.id,
        "apps": apps,
        "groups": groups,
        "pods": [],
        "dependencies": node.dependencies,
        "version": node.version,
    })
}

/// `/prod/web/versions` → (`/prod/web`, true).
fn split_versions(rest: &str) -> (String, bool) {
    let r = rest.trim_end_matches('/');
    match r.strip_suffix("/versions") {
        Some(g) => (normalize_id(g), true),
        None if r == "versions" => ("/".into(), true),
        None => (normalize_id(r), false),
    }
}

async fn show(api: &Api, id: String, q: Vec<(String, String)>) -> Result<Json<Value>, ApiError> {
    let (id, versions) = split_versions(&id);
    let embed = Embed::of(&q);
    api.call(move |core, now| {
        if versions {
            return core
                .group_versions(&id)
                .map(|v| json!(v))
                .ok_or(ServicesError::UnknownGroup(id));
        }
        core.group_tree(&id)
            .map(|n| render(&n, core, embed, now))
            .ok_or(ServicesError::UnknownGroup(id))
    })
    .await?
    .map(Json)
    .map_err(ApiError::from)
}

pub(super) async fn root_get(
    State(api): State<Api>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    show(&api, "/".into(), q).await
}

pub(super) async fn group_get(
    State(api): State<Api>,
    Path(rest): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    show(&api, rest, q).await
}

fn read_body(body: &Bytes) -> Result<GroupBody, ApiError> {
    agora_framework::read_json(body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            json!({ "message": "Invalid JSON", "details": [{ "path": e.pointer, "errors": [e.message] }] }),
        )
    })
}

fn deployed(
    status: StatusCode,
    dep: String,
    version: String,
    location: Option<String>,
) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(Ok(v)) = location.map(|l| l.parse()) {
        headers.insert(header::LOCATION, v);
    }
    if let Ok(v) = dep.parse() {
        headers.insert("Marathon-Deployment-Id", v);
    }
    (
        status,
        headers,
        Json(json!({ "deploymentId": dep, "version": version })),
    )
        .into_response()
}

/// `POST /v2/groups` and `POST /v2/groups/{parent}`: the body's id is relative to the parent.
async fn create(
    api: &Api,
    parent: String,
    q: Vec<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut group = read_body(&body)?;
    // `POST /v2/groups/{id}` without a body id creates `{id}` itself.
    let rel = match (group.id.take(), parent.as_str()) {
        (Some(rel), _) => rel,
        (None, "/") => {
            return Err(ServicesError::Invalid(vec![crate::app::FieldError {
                path: "/id".into(),
                errors: vec!["is required".into()],
            }])
            .into())
        }
        (None, p) => p.to_string(),
    };
    let id = crate::group::resolve(&parent, &rel).map_err(|e| {
        ApiError::from(ServicesError::Invalid(vec![crate::app::FieldError {
            path: "/id".into(),
            errors: vec![e],
        }]))
    })?;
    if id == "/" {
        return Err(ServicesError::Invalid(vec![crate::app::FieldError {
            path: "/id".into(),
            errors: vec!["the root group exists; use PUT /v2/groups to change it".into()],
        }])
        .into());
    }
    let force = forced(&q);
    let gid = id.clone();
    let (dep, version, _) = api
        .call(move |core, now| core.put_group(&gid, &group, true, force, now))
        .await??;
    Ok(deployed(
        StatusCode::CREATED,
        dep,
        version,
        Some(format!("/v2/groups{id}")),
    ))
}

pub(super) async fn root_post(
    State(api): State<Api>,
    Query(q): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    create(&api, "/".into(), q, body).await
}

pub(super) async fn group_post(
    State(api): State<Api>,
    Path(rest): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    create(&api, normalize_id(&rest), q, body).await
}

async fn update(
    api: &Api,
    id: String,
    q: Vec<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let group = read_body(&body)?;
    let force = forced(&q);
    let (dep, version, _) = api
        .call(move |core, now| core.put_group(&id, &group, false, force, now))
        .await??;
    Ok(deployed(StatusCode::OK, dep, version, None))
}

pub(super) async fn root_put(
    State(api): State<Api>,
    Query(q): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    update(&api, "/".into(), q, body).await
}

pub(super) async fn group_put(
    State(api): State<Api>,
    Path(rest): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some((_, version)) = rest.split_once("/versions/") {
        // The client's `rollback_group`.
        return Err(ServicesError::Invalid(vec![crate::app::FieldError {
            path: "/version".into(),
            errors: vec![format!(
                "rolling a group back to version {version} is not supported; PUT the group as it was"
            )],
        }])
        .into());
    }
    update(&api, normalize_id(&rest), q, body).await
}

async fn remove(api: &Api, id: String, q: Vec<(String, String)>) -> Result<Response, ApiError> {
    let force = forced(&q);
    let (dep, version) = api
        .call(move |core, now| core.delete_group(&id, force, now))
        .await??;
    Ok(deployed(StatusCode::OK, dep, version, None))
}

pub(super) async fn root_delete(
    State(api): State<Api>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    remove(&api, "/".into(), q).await
}

pub(super) async fn group_delete(
    State(api): State<Api>,
    Path(rest): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    remove(&api, normalize_id(&rest), q).await
}

/// `GET /v2/deployments`: every plan in progress, as Marathon lists it.
pub(super) async fn list_deployments(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let deps = api
        .call(|core, _| {
            core.deployments()
                .iter()
                .map(|d| {
                    let current: Vec<Value> = d
                        .current_actions()
                        .iter()
                        .map(|a| json!({ "action": a.action, "app": a.app, "readinessCheckResults": [] }))
                        .collect();
                    json!({
                        "id": d.id,
                        "version": d.version,
                        "affectedApps": d.affected_apps(),
                        "affectedPods": [],
                        "steps": d.steps.iter().map(|s| json!({ "actions": s })).collect::<Vec<_>>(),
                        "currentActions": current,
                        "currentStep": (d.current + 1).min(d.steps.len().max(1)),
                        "totalSteps": d.steps.len(),
                    })
                })
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(Json(Value::Array(deps)))
}

/// `DELETE /v2/deployments/{id}`: a rollback deployment (200), or with `force` only stopped (202).
pub(super) async fn cancel_deployment(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let force = forced(&q);
    match api
        .call(move |core, now| core.cancel_deployment(&id, force, now))
        .await??
    {
        None => Ok(StatusCode::ACCEPTED.into_response()),
        Some((dep, version)) => Ok(deployed(StatusCode::OK, dep, version, None)),
    }
}

/// Sends `event_stream_detached` when a stream's client goes.
struct Detach {
    tx: tokio::sync::broadcast::Sender<(String, Value)>,
    remote: String,
}

impl Drop for Detach {
    fn drop(&mut self) {
        let _ = self.tx.send((
            "event_stream_detached".into(),
            stream_event("event_stream_detached", &self.remote),
        ));
    }
}

fn stream_event(kind: &str, remote: &str) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!({ "remoteAddress": remote, "eventType": kind, "timestamp": now })
}

/// At most this many `event_type` values in one request, each at most this long (an unknown
/// type matches nothing, as in Marathon).
const MAX_EVENT_FILTERS: usize = 64;
const MAX_EVENT_TYPE: usize = 64;

/// `GET /v2/events` (server-sent events), `?event_type=a&event_type=b` keeping only those; each
/// SSE `event:` is the event type.
pub(super) async fn events(
    State(api): State<Api>,
    Query(q): Query<Vec<(String, String)>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let accepts = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !accepts.contains("text/event-stream") {
        return Err(ApiError(
            StatusCode::NOT_ACCEPTABLE,
            json!({ "message": "/v2/events needs 'Accept: text/event-stream'" }),
        ));
    }
    let filter = values(&q, "event_type");
    if filter.len() > MAX_EVENT_FILTERS {
        return Err(ServicesError::Invalid(vec![crate::app::FieldError {
            path: "event_type".into(),
            errors: vec![format!("at most {MAX_EVENT_FILTERS} values")],
        }])
        .into());
    }
    if filter.iter().any(|f| f.len() > MAX_EVENT_TYPE) {
        return Err(ServicesError::Invalid(vec![crate::app::FieldError {
            path: "event_type".into(),
            errors: vec![format!(
                "a value is longer than {MAX_EVENT_TYPE} characters"
            )],
        }])
        .into());
    }
    let tx = api.handle()?.events.clone();
    let mut rx = tx.subscribe();
    let remote = ip.unwrap_or_default();
    // Every stream (this one included) hears that this one attached.
    let _ = tx.send((
        "event_stream_attached".into(),
        stream_event("event_stream_attached", &remote),
    ));
    let guard = Detach { tx, remote };
    let stream = async_stream::stream! {
        let _guard = guard;
        loop {
            match rx.recv().await {
                Ok((kind, body)) => {
                    if filter.is_empty() || filter.iter().any(|f| f == &kind) {
                        yield Ok::<_, Infallible>(SseEvent::default().event(kind).data(body.to_string()));
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    };
    Ok(sse(stream))
}
