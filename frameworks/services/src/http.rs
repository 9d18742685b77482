//! The Marathon-compatible REST API: `/v2/apps`, `/v2/tasks`, `/v2/deployments`, `/v2/queue`,
//! `/v2/info`, `/v2/leader`, `/v2/events` (server-sent events), `/ping`, `/metrics`. Errors are
//! Marathon's: 422 naming every bad field, 400 for malformed JSON, 409 for an existing id or a
//! locked app, 404 for unknown ids; a rejected request changes nothing.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures::Stream;
use serde_json::{json, Value};

use crate::app::{merge, normalize_id, App};
use crate::core::{AppState, ServicesCore, ServicesError, TaskRecord};
use crate::handle::{Leadership, ServicesHandle};

#[derive(Clone)]
struct Api {
    leadership: Arc<Leadership>,
    me: String,
}

/// A Marathon error with its status.
pub struct ApiError(StatusCode, Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<ServicesError> for ApiError {
    fn from(e: ServicesError) -> Self {
        let msg = e.to_string();
        match e {
            ServicesError::Invalid(details) => ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "message": "Object is not valid", "details": details }),
            ),
            ServicesError::Locked(ids) => ApiError(
                StatusCode::CONFLICT,
                json!({ "message": msg, "deployments": ids.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>() }),
            ),
            ServicesError::Exists(_) => ApiError(StatusCode::CONFLICT, json!({ "message": msg })),
            _ => ApiError(StatusCode::NOT_FOUND, json!({ "message": msg })),
        }
    }
}

/// A call the framework did not carry out: it is stopping, or the state after the call could not
/// be saved (the call was undone; the client may retry).
impl From<agora_framework::CallError> for ApiError {
    fn from(e: agora_framework::CallError) -> Self {
        let message = match e {
            agora_framework::CallError::Stopped => "the services framework is stopping".to_string(),
            e @ agora_framework::CallError::NotSaved(_) => e.to_string(),
        };
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "message": message }),
        )
    }
}

fn invalid_json(e: serde_json::Error) -> ApiError {
    ApiError(
        StatusCode::BAD_REQUEST,
        json!({ "message": "Invalid JSON", "details": [{ "path": "/", "errors": [e.to_string()] }] }),
    )
}

impl Api {
    fn handle(&self) -> Result<&ServicesHandle, ApiError> {
        self.leadership.handle().ok_or_else(|| {
            ApiError(StatusCode::SERVICE_UNAVAILABLE, json!({ "message": "this instance is not the leader", "leader": self.leadership.leader() }))
        })
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ServicesCore, chrono::DateTime<chrono::Utc>) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        Ok(self.handle()?.call(f).await?)
    }
}

/// Paths anyone may call when the API requires a token (load balancers' health checks).
pub const OPEN_PATHS: &[&str] = &["/ping"];

/// The API's routes; with `api_token`, all but [`OPEN_PATHS`] require it. The token is checked
/// before a standby proxies (the leader checks it again: the header is forwarded).
pub fn router(
    leadership: Arc<Leadership>,
    me: String,
    api_token: Option<agora_net::http_auth::ApiToken>,
    proxy: agora_ha::leadership::LeaderProxy,
) -> Router {
    let routes = Router::new()
        .route("/ping", get(|| async { "pong" }))
        .route("/v2/info", get(info))
        .route("/v2/leader", get(leader))
        .route("/v2/apps", get(list_apps).post(create_app).put(put_apps))
        .route(
            "/v2/apps/{*rest}",
            get(app_get)
                .put(app_put)
                .patch(app_patch)
                .delete(app_delete)
                .post(app_post),
        )
        .route("/v2/tasks", get(list_tasks))
        .route("/v2/tasks/delete", post(delete_tasks))
        .route("/v2/deployments", get(list_deployments))
        .route("/v2/deployments/{id}", delete(cancel_deployment))
        .route("/v2/queue", get(queue))
        .route("/v2/events", get(events))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(
            (leadership.clone(), proxy),
            agora_ha::leadership::standby_proxy::<ServicesHandle>,
        ))
        .with_state(Api { leadership, me });
    agora_net::http_auth::protect(routes, api_token, "services", OPEN_PATHS)
        // ui: the web UI's page and assets, open to all (they hold no data; the page sends the token).
        .merge(crate::ui::routes())
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v == "true" || v.is_empty())
}

/// A task as Marathon shows it, serialized straight from the record: `GET
/// /v2/apps?embed=apps.tasks` lists every task, and building a `Value` tree per task made it cost
/// ~20 ms per 1,000 tasks.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskJson<'a> {
    id: &'a str,
    app_id: &'a str,
    host: &'a str,
    ports: &'a [u64],
    slave_id: &'a str,
    agent_id: &'a str,
    staged_at: String,
    started_at: Option<String>,
    version: &'a str,
    state: &'a str,
    message: &'a str,
    ip_addresses: [IpAddressJson<'a>; 1],
    health_check_results: Vec<HealthJson<'a>>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct IpAddressJson<'a> {
    ip_address: &'a str,
    protocol: &'static str,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct HealthJson<'a> {
    alive: bool,
    task_id: &'a str,
    consecutive_failures: u32,
}

impl<'a> From<&'a TaskRecord> for TaskJson<'a> {
    fn from(t: &'a TaskRecord) -> Self {
        TaskJson {
            id: &t.id,
            app_id: &t.app_id,
            host: &t.host,
            ports: &t.ports,
            slave_id: &t.agent_id,
            agent_id: &t.agent_id,
            staged_at: t.staged_at.to_rfc3339(),
            started_at: t.started_at.map(|s| s.to_rfc3339()),
            version: &t.version,
            state: &t.state,
            message: &t.message,
            ip_addresses: [IpAddressJson {
                ip_address: &t.host,
                protocol: "IPv4",
            }],
            health_check_results: t
                .healthy
                .map(|alive| HealthJson {
                    alive,
                    task_id: &t.id,
                    consecutive_failures: u32::from(!alive),
                })
                .into_iter()
                .collect(),
        }
    }
}

/// An app with its tasks embedded, serialized without an intermediate `Value` for the tasks.
#[derive(serde::Serialize)]
struct AppWithTasksJson<'a> {
    #[serde(flatten)]
    app: serde_json::Map<String, Value>,
    tasks: Vec<TaskJson<'a>>,
}

/// `{"apps": [...]}`.
#[derive(serde::Serialize)]
struct AppsJson<T> {
    apps: Vec<T>,
}

fn task_json(t: &TaskRecord) -> Value {
    serde_json::to_value(TaskJson::from(t)).unwrap_or(Value::Null)
}

fn app_json(st: &AppState, core: &ServicesCore, embed_tasks: bool, embed_failure: bool) -> Value {
    let mut v = serde_json::to_value(&st.app).unwrap_or(Value::Null);
    let tasks: Vec<&TaskRecord> = st.tasks.values().collect();
    let running = tasks.iter().filter(|t| t.state == "TASK_RUNNING").count();
    let staged = tasks
        .iter()
        .filter(|t| matches!(t.state.as_str(), "TASK_STAGING" | "TASK_STARTING"))
        .count();
    let with_checks = !st.app.health_checks.is_empty();
    let healthy = if with_checks {
        tasks.iter().filter(|t| t.healthy == Some(true)).count()
    } else {
        0
    };
    let unhealthy = if with_checks {
        tasks.iter().filter(|t| t.healthy == Some(false)).count()
    } else {
        0
    };
    if let Value::Object(m) = &mut v {
        m.insert("version".into(), json!(st.version));
        m.insert(
            "versionInfo".into(),
            json!({ "lastScalingAt": st.version, "lastConfigChangeAt": st.config_version }),
        );
        m.insert("tasksRunning".into(), json!(running));
        m.insert("tasksStaged".into(), json!(staged));
        m.insert("tasksHealthy".into(), json!(healthy));
        m.insert("tasksUnhealthy".into(), json!(unhealthy));
        m.insert(
            "deployments".into(),
            json!(core
                .deployments()
                .iter()
                .filter(|d| d.app_id == st.app.id)
                .map(|d| json!({ "id": d.id }))
                .collect::<Vec<_>>()),
        );
        if embed_tasks {
            m.insert(
                "tasks".into(),
                json!(tasks.iter().map(|t| task_json(t)).collect::<Vec<_>>()),
            );
        }
        if embed_failure {
            if let Some(f) = &st.last_task_failure {
                m.insert("lastTaskFailure".into(), f.clone());
            }
        }
    }
    v
}

fn embeds(raw: &str) -> (bool, bool) {
    let tasks = raw.contains("embed=apps.tasks") || raw.contains("embed=app.tasks");
    let failure = raw.contains("lastTaskFailure");
    (tasks, failure)
}

async fn info(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let h = api.handle()?;
    let fid = h.framework_id.read().ok().and_then(|f| f.clone());
    Ok(Json(json!({
        "name": "agora-services",
        "version": env!("CARGO_PKG_VERSION"),
        "elected": true,
        "leader": api.me,
        "frameworkId": fid,
        "marathon_config": { "master": h.master, "framework_name": "services" },
        "http_config": { "http_port": api.me.rsplit(':').next() },
    })))
}

async fn leader(State(api): State<Api>) -> Json<Value> {
    Json(json!({ "leader": api.me }))
}

async fn list_apps(State(api): State<Api>, req: Request) -> Result<Response, ApiError> {
    let raw = req.uri().query().unwrap_or("").to_string();
    let (t, f) = embeds(&raw);
    let id_filter = raw
        .split('&')
        .find_map(|kv| kv.strip_prefix("id="))
        .map(str::to_string);
    // Serialized in the actor, straight from the records (no copy of the tasks).
    let body = api
        .call(move |core, _| {
            let apps = core.apps().filter(|a| {
                id_filter
                    .as_ref()
                    .is_none_or(|p| a.app.id.contains(p.as_str()))
            });
            if t {
                let apps: Vec<AppWithTasksJson> = apps
                    .map(|a| AppWithTasksJson {
                        app: match app_json(a, core, false, f) {
                            Value::Object(m) => m,
                            _ => serde_json::Map::new(),
                        },
                        tasks: a.tasks.values().map(TaskJson::from).collect(),
                    })
                    .collect();
                serde_json::to_vec(&AppsJson { apps })
            } else {
                let apps: Vec<Value> = apps.map(|a| app_json(a, core, false, f)).collect();
                serde_json::to_vec(&AppsJson { apps })
            }
        })
        .await?
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "message": format!("cannot render the apps: {e}") }),
            )
        })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

fn parse_app(body: &Bytes) -> Result<App, ApiError> {
    crate::app::parse(body).map_err(unreadable_app)
}

/// An app body that is not JSON or has a field of the wrong type: 400, naming the field.
fn unreadable_app(details: Vec<crate::app::FieldError>) -> ApiError {
    ApiError(
        StatusCode::BAD_REQUEST,
        json!({ "message": "Invalid JSON", "details": details }),
    )
}

async fn create_app(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let app = parse_app(&body)?;
    let force = flag(&q, "force");
    let (dep, app_json_v, id) = api
        .call(move |core, now| {
            let id = normalize_id(&app.id);
            let (dep, _) = core.put_app(app, true, force, now)?;
            let st = core
                .app(&id)
                .ok_or_else(|| ServicesError::UnknownApp(id.clone()))?;
            Ok::<_, ServicesError>((dep, app_json(st, core, false, false), id))
        })
        .await??;
    let mut headers = HeaderMap::new();
    if let Ok(v) = format!("/v2/apps{id}").parse() {
        headers.insert(header::LOCATION, v);
    }
    if let Ok(v) = dep.parse() {
        headers.insert("Marathon-Deployment-Id", v);
    }
    Ok((StatusCode::CREATED, headers, Json(app_json_v)).into_response())
}

async fn put_apps(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let apps: Vec<App> = crate::app::parse_list(&body).map_err(unreadable_app)?;
    let force = flag(&q, "force");
    let result = api
        .call(move |core, now| {
            // All or nothing: validate every app first.
            for a in &apps {
                let mut n = a.clone();
                n.normalize();
                n.validate().map_err(ServicesError::Invalid)?;
            }
            let mut last = (String::new(), String::new());
            for a in apps {
                last = core.put_app(a, false, force, now)?;
            }
            Ok::<_, ServicesError>(last)
        })
        .await??;
    Ok((
        StatusCode::OK,
        Json(json!({ "deploymentId": result.0, "version": result.1 })),
    )
        .into_response())
}

/// Splits `/prod/web/tasks/abc` into the app id and what follows.
fn split_rest(rest: &str) -> (String, Vec<String>) {
    let parts: Vec<&str> = rest.trim_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        if matches!(*p, "restart" | "tasks" | "versions") && i > 0 {
            return (
                normalize_id(&parts[..i].join("/")),
                parts[i..].iter().map(|s| s.to_string()).collect(),
            );
        }
    }
    (normalize_id(&parts.join("/")), Vec::new())
}

async fn app_get(
    State(api): State<Api>,
    Path(rest): Path<String>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let raw = req.uri().query().unwrap_or("").to_string();
    let (id, tail) = split_rest(&rest);
    let (_, f) = embeds(&raw);
    api.call(move |core, _| {
        let st = core.app(&id).ok_or_else(|| ServicesError::UnknownApp(id.clone()))?;
        Ok::<_, ServicesError>(match tail.first().map(String::as_str) {
            Some("tasks") => json!({ "tasks": st.tasks.values().map(task_json).collect::<Vec<_>>() }),
            Some("versions") => match tail.get(1) {
                Some(v) => st
                    .versions
                    .iter()
                    .find(|(ver, _)| ver == v)
                    .map(|(ver, a)| {
                        let mut j = serde_json::to_value(a).unwrap_or(Value::Null);
                        if let Value::Object(m) = &mut j {
                            m.insert("version".into(), json!(ver));
                        }
                        j
                    })
                    .ok_or_else(|| ServicesError::UnknownApp(format!("{id} version {v}")))?,
                None => json!({ "versions": st.versions.iter().rev().map(|(v, _)| v).collect::<Vec<_>>() }),
            },
            _ => json!({ "app": app_json(st, core, true, f || true) }),
        })
    })
    .await?
    .map(Json)
    .map_err(ApiError::from)
}

async fn app_put(
    State(api): State<Api>,
    Path(rest): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (id, _) = split_rest(&rest);
    // The URL names the app: a body naming another one is refused, not silently renamed.
    let raw: Value = serde_json::from_slice(&body).map_err(invalid_json)?;
    crate::app::check_body_id(&id, &raw).map_err(|e| ApiError::from(ServicesError::Invalid(e)))?;
    let mut app = parse_app(&body).or_else(|_| {
        // Marathon accepts a body without an id on /v2/apps/{id}.
        let mut v: Value = serde_json::from_slice(&body).map_err(invalid_json)?;
        if let Value::Object(m) = &mut v {
            m.insert("id".into(), json!(id));
        }
        crate::app::from_value(v).map_err(unreadable_app)
    })?;
    app.id = id.clone();
    let force = flag(&q, "force");
    let (created, (dep, version)) = api
        .call(move |core, now| {
            let created = core.app(&id).is_none();
            core.put_app(app, false, force, now).map(|r| (created, r))
        })
        .await??;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [("Marathon-Deployment-Id", dep.clone())],
        Json(json!({ "deploymentId": dep, "version": version })),
    )
        .into_response())
}

async fn app_patch(
    State(api): State<Api>,
    Path(rest): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (id, _) = split_rest(&rest);
    let patch: Value = serde_json::from_slice(&body).map_err(invalid_json)?;
    // `{"id":"/other"}` merged into the app would create a copy named /other.
    crate::app::check_body_id(&id, &patch)
        .map_err(|e| ApiError::from(ServicesError::Invalid(e)))?;
    let force = flag(&q, "force");
    let (dep, version) = api
        .call(move |core, now| {
            let st = core
                .app(&id)
                .ok_or_else(|| ServicesError::UnknownApp(id.clone()))?;
            let mut base = serde_json::to_value(&st.app).unwrap_or(Value::Null);
            merge(&mut base, &patch);
            let app = crate::app::from_value(base).map_err(ServicesError::Invalid)?;
            core.put_app(app, false, force, now)
        })
        .await??;
    Ok((
        StatusCode::OK,
        [("Marathon-Deployment-Id", dep.clone())],
        Json(json!({ "deploymentId": dep, "version": version })),
    )
        .into_response())
}

async fn app_delete(
    State(api): State<Api>,
    Path(rest): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (id, tail) = split_rest(&rest);
    let force = flag(&q, "force");
    let scale = flag(&q, "scale");
    match tail.first().map(String::as_str) {
        Some("tasks") => {
            let task = tail.get(1).cloned();
            let killed = api
                .call(move |core, now| {
                    let st = core
                        .app(&id)
                        .ok_or_else(|| ServicesError::UnknownApp(id.clone()))?;
                    let ids: Vec<String> = match task {
                        Some(t) => vec![t],
                        None => st.tasks.keys().cloned().collect(),
                    };
                    core.kill_tasks(&ids, scale, now)
                })
                .await??;
            Ok(
                Json(json!({ "tasks": killed.iter().map(task_json).collect::<Vec<_>>() }))
                    .into_response(),
            )
        }
        _ => {
            let (dep, version) = api
                .call(move |core, now| core.delete_app(&id, force, now))
                .await??;
            Ok(Json(json!({ "deploymentId": dep, "version": version })).into_response())
        }
    }
}

async fn app_post(
    State(api): State<Api>,
    Path(rest): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    method: Method,
) -> Result<Response, ApiError> {
    let (id, tail) = split_rest(&rest);
    if tail.first().map(String::as_str) != Some("restart") {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            json!({ "message": format!("{method} /v2/apps/{rest} is not an endpoint") }),
        ));
    }
    let force = flag(&q, "force");
    let (dep, version) = api
        .call(move |core, now| core.restart(&id, force, now))
        .await??;
    Ok(Json(json!({ "deploymentId": dep, "version": version })).into_response())
}

async fn list_tasks(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let tasks = api
        .call(|core, _| {
            core.apps()
                .flat_map(|a| a.tasks.values().map(task_json))
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(Json(json!({ "tasks": tasks })))
}

async fn delete_tasks(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    #[derive(serde::Deserialize)]
    struct Ids {
        ids: Vec<String>,
    }
    let ids: Ids = serde_json::from_slice(&body).map_err(invalid_json)?;
    let scale = flag(&q, "scale");
    let killed = api
        .call(move |core, now| core.kill_tasks(&ids.ids, scale, now))
        .await??;
    Ok(Json(
        json!({ "tasks": killed.iter().map(task_json).collect::<Vec<_>>() }),
    ))
}

async fn list_deployments(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let deps = api
        .call(|core, _| {
            core.deployments()
                .iter()
                .map(|d| {
                    let action = json!({ "action": d.action, "app": d.app_id });
                    json!({
                        "id": d.id,
                        "version": d.version,
                        "affectedApps": [d.app_id],
                        "steps": [{ "actions": [action.clone()] }],
                        "currentActions": [action],
                        "currentStep": 1,
                        "totalSteps": 1,
                    })
                })
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(Json(Value::Array(deps)))
}

async fn cancel_deployment(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let force = flag(&q, "force");
    match api
        .call(move |core, now| core.cancel_deployment(&id, force, now))
        .await??
    {
        None => Ok(StatusCode::ACCEPTED.into_response()),
        Some((dep, version)) => {
            Ok(Json(json!({ "deploymentId": dep, "version": version })).into_response())
        }
    }
}

async fn queue(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let items = api
        .call(|core, now| {
            core.apps()
                .filter_map(|st| {
                    let count = core.wanted(st, now);
                    let live = st
                        .tasks
                        .values()
                        .filter(|t| !matches!(t.state.as_str(), "TASK_KILLED" | "TASK_FAILED"))
                        .count();
                    let waiting = (st.app.instances as usize).saturating_sub(live);
                    if count == 0 && waiting == 0 {
                        return None;
                    }
                    let left = st
                        .next_launch_at
                        .map(|t| (t - now).num_milliseconds().max(0) as f64 / 1000.0)
                        .unwrap_or(0.0);
                    Some(json!({
                        "app": { "id": st.app.id, "instances": st.app.instances },
                        "count": count.max(waiting),
                        "delay": { "timeLeftSeconds": left, "overdue": left == 0.0 },
                        "lastUnusedOfferReason": st.last_offer_problem,
                    }))
                })
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(Json(json!({ "queue": items })))
}

async fn events(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
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
    let filter: Vec<String> = q
        .get("event_type")
        .map(|t| t.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let mut rx = api.handle()?.events.subscribe();
    let stream = async_stream::stream! {
        yield Ok::<_, Infallible>(SseEvent::default().event("event_stream_attached").data(json!({ "eventType": "event_stream_attached" }).to_string()));
        loop {
            match rx.recv().await {
                Ok((kind, body)) => {
                    if filter.is_empty() || filter.iter().any(|f| f == &kind) {
                        yield Ok(SseEvent::default().event(kind).data(body.to_string()));
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    };
    Ok(sse(stream))
}

fn sse<S: Stream<Item = Result<SseEvent, Infallible>> + Send + 'static>(s: S) -> Response {
    Sse::new(s).keep_alive(KeepAlive::default()).into_response()
}

async fn metrics(State(api): State<Api>) -> Result<Response, ApiError> {
    let text = api
        .call(|core, _| {
            let apps = core.apps().count();
            let mut by_state: std::collections::BTreeMap<String, usize> = Default::default();
            for a in core.apps() {
                for t in a.tasks.values() {
                    *by_state.entry(t.state.clone()).or_default() += 1;
                }
            }
            let mut out = format!(
                "# TYPE agora_services_apps gauge\nagora_services_apps {apps}\n# TYPE agora_services_deployments gauge\nagora_services_deployments {}\n# TYPE agora_services_tasks gauge\n",
                core.deployments().len()
            );
            for (s, n) in by_state {
                out.push_str(&format!("agora_services_tasks{{state=\"{s}\"}} {n}\n"));
            }
            out
        })
        .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
