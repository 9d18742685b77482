//! The Marathon-compatible REST API: `/v2/apps`, `/v2/tasks`, `/v2/queue`, `/v2/info`,
//! `/v2/leader`, `/ping`, `/metrics`; `/v2/groups`, `/v2/deployments` and `/v2/events`
//! (server-sent events) are in `http/groups.rs`. Errors are
//! Marathon's: 422 naming every bad field, 400 for malformed JSON, 409 for an existing id or a
//! locked app, 404 for unknown ids; a rejected request changes nothing. The JSON shapes (tasks,
//! apps with their `embed` options, `/v2/info`, the `text/plain` task list) are built in
//! [`crate::wire`]; the handlers here read the request, call the core and send what it built.

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
use crate::core::{ServicesCore, ServicesError};
use crate::handle::{Leadership, ServicesHandle};

mod groups;
use groups::ClientIp;

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
            ServicesError::Exists(_) | ServicesError::GroupExists(_) => {
                ApiError(StatusCode::CONFLICT, json!({ "message": msg }))
            }
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
        .route("/v2/queue", get(queue))
        // groups: groups, deployment plans, events.
        .route(
            "/v2/groups",
            get(groups::root_get)
                .post(groups::root_post)
                .put(groups::root_put)
                .delete(groups::root_delete),
        )
        .route(
            "/v2/groups/{*rest}",
            get(groups::group_get)
                .post(groups::group_post)
                .put(groups::group_put)
                .delete(groups::group_delete),
        )
        .route("/v2/deployments", get(groups::list_deployments))
        .route("/v2/deployments/{id}", delete(groups::cancel_deployment))
        .route("/v2/events", get(groups::events))
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

/// A boolean query parameter as Marathon (JAX-RS) reads it: `true` in any case (Python clients
/// send `True`), or present without a value.
fn is_true(v: &str) -> bool {
    v.eq_ignore_ascii_case("true") || v.is_empty()
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| is_true(v))
}

/// Every value of a repeated query parameter (`embed=app.tasks&embed=app.counts`).
fn all_of<'q>(q: &'q [(String, String)], name: &'q str) -> impl Iterator<Item = &'q str> + 'q {
    q.iter()
        .filter(move |(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn first_of<'q>(q: &'q [(String, String)], name: &str) -> Option<&'q str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// [`flag`] of a query read with its repeated parameters.
fn flag_in(q: &[(String, String)], name: &str) -> bool {
    first_of(q, name).is_some_and(is_true)
}

/// The client asked for `text/plain` before (or without) JSON.
fn wants_text(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match (accept.find("text/plain"), accept.find("application/json")) {
        (Some(t), Some(j)) => t < j,
        (Some(_), None) => true,
        _ => false,
    }
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// Marathon's reply to a change: `{"deploymentId", "version"}` and the `Marathon-Deployment-Id`
/// header.
fn deployment_result(status: StatusCode, dep: String, version: String) -> Response {
    (
        status,
        [("Marathon-Deployment-Id", dep.clone())],
        Json(json!({ "deploymentId": dep, "version": version })),
    )
        .into_response()
}

fn bad_request(message: &str) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, json!({ "message": message }))
}

const SCALE_AND_WIPE: &str = "You cannot use scale and wipe at the same time.";

/// The most task ids one `POST /v2/tasks/delete` takes.
pub const MAX_KILL_IDS: usize = 10_000;
/// The longest task id it takes (an app id of at most 255 characters, a dot and a UUID).
pub const MAX_TASK_ID: usize = 512;

fn render<T: serde::Serialize>(v: &T) -> Result<Response, ApiError> {
    serde_json::to_vec(v)
        .map(|body| ([(header::CONTENT_TYPE, "application/json")], body).into_response())
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "message": format!("cannot render the reply: {e}") }),
            )
        })
}

async fn info(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let h = api.handle()?;
    let framework_id = h.framework_id.read().ok().and_then(|f| f.clone());
    let tls = &h.config.tls;
    Ok(Json(crate::wire::info(&crate::wire::InfoInputs {
        config: &h.config,
        me: &api.me,
        framework_id,
        https: tls.cert.is_some() && tls.key.is_some(),
    })))
}

async fn leader(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    match api.leadership.leader() {
        Some(leader) => Ok(Json(json!({ "leader": leader }))),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            json!({ "message": "There is no leader" }),
        )),
    }
}

/// `GET /v2/apps?cmd=&id=&label=&embed=…`: `cmd` and `id` match case-insensitive substrings,
/// `label` is Marathon's label selector.
async fn list_apps(
    State(api): State<Api>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let embed = crate::wire::Embed::for_list(all_of(&q, "embed"));
    let cmd = first_of(&q, "cmd").map(str::to_lowercase);
    let id = first_of(&q, "id").map(str::to_lowercase);
    let label = first_of(&q, "label")
        .map(crate::wire::LabelSelector::parse)
        .transpose()
        .map_err(|e| bad_request(&format!("Invalid label selector: {e}")))?;
    // Serialized in the actor, straight from the records (no copy of the tasks).
    api.call(move |core, now| {
        let apps: Vec<_> = core
            .apps()
            .filter(|a| {
                cmd.as_ref().is_none_or(|c| {
                    a.app
                        .cmd
                        .as_ref()
                        .is_some_and(|x| x.to_lowercase().contains(c.as_str()))
                }) && id
                    .as_ref()
                    .is_none_or(|i| a.app.id.to_lowercase().contains(i.as_str()))
                    && label.as_ref().is_none_or(|l| l.matches(&a.app.labels))
            })
            .map(|a| crate::wire::app_info(a, core, embed, now))
            .collect();
        render(&json!({ "apps": apps }))
    })
    .await?
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
    ClientIp(ip): ClientIp,
    body: Bytes,
) -> Result<Response, ApiError> {
    let app = parse_app(&body)?;
    let force = flag(&q, "force");
    let (dep, app_json_v, id) = api
        .call(move |core, now| {
            let id = normalize_id(&app.id);
            let (dep, _) = core.put_app(app, true, force, now)?;
            core.api_post_event(&id, ip, "/v2/apps", now);
            let st = core
                .app(&id)
                .ok_or_else(|| ServicesError::UnknownApp(id.clone()))?;
            let embed = crate::wire::Embed {
                counts: true,
                deployments: true,
                ..Default::default()
            };
            Ok::<_, ServicesError>((dep, crate::wire::app_info_value(st, core, embed, now), id))
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
    ClientIp(ip): ClientIp,
    body: Bytes,
) -> Result<Response, ApiError> {
    let apps: Vec<App> = crate::app::parse_list(&body).map_err(unreadable_app)?;
    let force = flag(&q, "force");
    let result = api
        .call(move |core, now| {
            // All or nothing: validate every app first; then one plan for them all.
            let mut puts = Vec::new();
            for mut a in apps {
                a.normalize();
                a.version = None;
                a.validate().map_err(ServicesError::Invalid)?;
                puts.push(a);
            }
            let ids: Vec<String> = puts.iter().map(|a| a.id.clone()).collect();
            let changes = crate::core::Changes {
                puts,
                always: true,
                ..Default::default()
            };
            let r = core.apply(changes, "/", force, now)?;
            for id in ids {
                core.api_post_event(&id, ip.clone(), "/v2/apps", now);
            }
            Ok::<_, ServicesError>(r)
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
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (id, tail) = split_rest(&rest);
    let embed = crate::wire::Embed::for_app(all_of(&q, "embed"));
    let as_text = wants_text(&headers);
    api.call(move |core, now| {
        let st = core
            .app(&id)
            .ok_or_else(|| ServicesError::UnknownApp(id.clone()))?;
        Ok(match (tail.first().map(String::as_str), tail.get(1)) {
            (Some("tasks"), _) if as_text => text(crate::wire::endpoints_text([st])),
            (Some("tasks"), _) => render(&json!({ "tasks": crate::wire::tasks_of(st) }))?,
            (Some("versions"), Some(v)) => {
                let app = crate::wire::app_at_version(st, v)
                    .ok_or_else(|| ServicesError::UnknownVersion(id.clone(), v.clone()))?;
                render(&app)?
            }
            (Some("versions"), None) => {
                render(&json!({ "versions": st.versions.iter().rev().map(|(v, _)| v).collect::<Vec<_>>() }))?
            }
            _ => render(&json!({ "app": crate::wire::app_info(st, core, embed, now) }))?,
        })
    })
    .await?
}

/// Why a `PUT` could not be applied: a body that is no app (400) or the core's refusal.
enum PutError {
    Unreadable(Vec<crate::app::FieldError>),
    Core(ServicesError),
}

impl From<PutError> for ApiError {
    fn from(e: PutError) -> Self {
        match e {
            PutError::Unreadable(details) => unreadable_app(details),
            PutError::Core(e) => e.into(),
        }
    }
}

/// `PUT /v2/apps/{id}`: with `{"version": …}` (and at most `id` besides) a rollback to that
/// stored version; otherwise a partial update merged into the app (`partialUpdate=false`: a
/// complete replacement), or a new app when it does not exist (201).
async fn app_put(
    State(api): State<Api>,
    Path(rest): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
    ClientIp(ip): ClientIp,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (id, _) = split_rest(&rest);
    // The URL names the app: a body naming another one is refused, not silently renamed.
    let raw: Value = serde_json::from_slice(&body).map_err(invalid_json)?;
    crate::app::check_body_id(&id, &raw).map_err(|e| ApiError::from(ServicesError::Invalid(e)))?;
    let force = flag_in(&q, "force");
    let partial = first_of(&q, "partialUpdate").is_none_or(|v| !v.eq_ignore_ascii_case("false"));
    if let Some(version) = raw.get("version") {
        let only = raw
            .as_object()
            .is_some_and(|m| m.keys().all(|k| k == "id" || k == "version"));
        let field = |path: &str, e: &str| {
            ApiError::from(ServicesError::Invalid(vec![crate::app::FieldError {
                path: path.into(),
                errors: vec![e.into()],
            }]))
        };
        if !only {
            return Err(field(
                "/",
                "The 'version' field may only be combined with the 'id' field.",
            ));
        }
        let Some(version) = version.as_str().map(str::to_string) else {
            return Err(field("/version", "must be a version string"));
        };
        let (dep, version) = api
            .call(move |core, now| core.rollback(&id, &version, force, now))
            .await??;
        return Ok(deployment_result(StatusCode::OK, dep, version));
    }
    // Marathon accepts a body without an id on /v2/apps/{id}.
    let mut whole = raw.clone();
    if let Value::Object(m) = &mut whole {
        m.insert("id".into(), json!(id));
    }
    let (created, (dep, version)) = api
        .call(move |core, now| {
            let app = match core.app(&id) {
                Some(st) if partial => {
                    let mut base = serde_json::to_value(&st.app).unwrap_or(Value::Null);
                    merge(&mut base, &raw);
                    crate::app::from_value(base)
                        .map_err(|e| PutError::Core(ServicesError::Invalid(e)))?
                }
                _ => crate::app::from_value(whole).map_err(PutError::Unreadable)?,
            };
            let created = core.app(&id).is_none();
            let r = core
                .put_app(app, false, force, now)
                .map_err(PutError::Core)?;
            core.api_post_event(&id, ip, &format!("/v2/apps{id}"), now);
            Ok::<_, PutError>((created, r))
        })
        .await??;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(deployment_result(status, dep, version))
}

async fn app_patch(
    State(api): State<Api>,
    Path(rest): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ClientIp(ip): ClientIp,
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
            let r = core.put_app(app, false, force, now)?;
            core.api_post_event(&id, ip, &format!("/v2/apps{id}"), now);
            Ok::<_, ServicesError>(r)
        })
        .await??;
    Ok((
        StatusCode::OK,
        [("Marathon-Deployment-Id", dep.clone())],
        Json(json!({ "deploymentId": dep, "version": version })),
    )
        .into_response())
}

/// `DELETE /v2/apps/{id}`, `DELETE /v2/apps/{id}/tasks?host=&scale=&wipe=&force=` and
/// `DELETE /v2/apps/{id}/tasks/{taskId}?scale=&wipe=&force=`. Without `scale` the killed tasks
/// are replaced and the reply lists them (`{"tasks": […]}`, `{"task": …}`); with it the app is
/// scaled down by as many and the reply is the deployment. `host` picks the tasks on that host
/// (`*`: all). `wipe` (forget persistent state) is a plain kill here: Agora keeps none.
async fn app_delete(
    State(api): State<Api>,
    Path(rest): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let (id, tail) = split_rest(&rest);
    let force = flag_in(&q, "force");
    let scale = flag_in(&q, "scale");
    if tail.first().map(String::as_str) != Some("tasks") {
        // Marathon's default for deleting an app is force=true.
        let force = first_of(&q, "force").is_none_or(|v| !v.eq_ignore_ascii_case("false"));
        let (dep, version) = api
            .call(move |core, now| core.delete_app(&id, force, now))
            .await??;
        return Ok(deployment_result(StatusCode::OK, dep, version));
    }
    if scale && flag_in(&q, "wipe") {
        return Err(bad_request(SCALE_AND_WIPE));
    }
    let one = tail.get(1).cloned();
    let host = first_of(&q, "host").map(str::to_string);
    let reply = api
        .call(move |core, now| {
            let st = core
                .app(&id)
                .ok_or_else(|| ServicesError::UnknownApp(id.clone()))?;
            let ids: Vec<String> = match &one {
                Some(t) if st.tasks.contains_key(t) => vec![t.clone()],
                Some(t) => return Err(ServicesError::UnknownTask(t.clone())),
                None => st
                    .tasks
                    .values()
                    .filter(|t| host.as_deref().is_none_or(|h| h == "*" || h == t.host))
                    .map(|t| t.id.clone())
                    .collect(),
            };
            let ports = crate::wire::service_ports(&st.app);
            if scale {
                let (dep, version) = core.kill_and_scale(&ids, force, now)?.unwrap_or_else(|| {
                    (
                        uuid::Uuid::new_v4().to_string(),
                        crate::core::version_of(now),
                    )
                });
                return Ok(deployment_result(StatusCode::OK, dep, version));
            }
            let mut killed: Vec<Value> = core
                .kill_tasks(&ids)
                .iter()
                .map(|t| crate::wire::task_value(t, ports.clone()))
                .collect();
            Ok(match one {
                Some(t) => match killed.pop() {
                    Some(task) => Json(json!({ "task": task })).into_response(),
                    None => return Err(ServicesError::UnknownTask(t)),
                },
                None => Json(json!({ "tasks": killed })).into_response(),
            })
        })
        .await??;
    Ok(reply)
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
    Ok(deployment_result(StatusCode::OK, dep, version))
}

/// `GET /v2/tasks`: JSON (`status=running|staging`, also as `status[]`, picks tasks in that
/// state), or with `Accept: text/plain` the load balancers' list ([`crate::wire::endpoints_text`]).
async fn list_tasks(
    State(api): State<Api>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if wants_text(&headers) {
        let body = api
            .call(|core, _| crate::wire::endpoints_text(core.apps()))
            .await?;
        return Ok(text(body));
    }
    let states: Vec<&'static str> = all_of(&q, "status")
        .chain(all_of(&q, "status[]"))
        .filter_map(|s| match s.to_ascii_lowercase().as_str() {
            "running" => Some("TASK_RUNNING"),
            "staging" => Some("TASK_STAGING"),
            _ => None,
        })
        .collect();
    api.call(move |core, _| {
        let tasks: Vec<_> = core
            .apps()
            .flat_map(crate::wire::tasks_of)
            .filter(|t| states.is_empty() || states.contains(&t.state()))
            .collect();
        render(&json!({ "tasks": tasks }))
    })
    .await?
}

/// `POST /v2/tasks/delete?scale=&wipe=&force=` with `{"ids": […]}`: ids of unknown tasks are
/// skipped; an id that is no Marathon task id (`<app>.<unique>`) is a 400.
async fn delete_tasks(
    State(api): State<Api>,
    Query(q): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    struct Ids {
        ids: Vec<String>,
    }
    let ids: Ids = serde_json::from_slice(&body).map_err(invalid_json)?;
    let scale = flag_in(&q, "scale");
    let force = flag_in(&q, "force");
    if scale && flag_in(&q, "wipe") {
        return Err(bad_request(SCALE_AND_WIPE));
    }
    if ids.ids.len() > MAX_KILL_IDS {
        return Err(ApiError::from(ServicesError::Invalid(vec![
            crate::app::FieldError {
                path: "/ids".into(),
                errors: vec![format!("has more than {MAX_KILL_IDS} task ids")],
            },
        ])));
    }
    if let Some(bad) = ids.ids.iter().find(|id| {
        id.len() > MAX_TASK_ID
            || id
                .rsplit_once('.')
                .is_none_or(|(a, u)| a.is_empty() || u.is_empty())
    }) {
        let shown: String = bad.chars().take(80).collect();
        return Err(bad_request(&format!("Invalid task id '{shown}'.")));
    }
    api.call(move |core, now| {
        if scale {
            let (dep, version) = core
                .kill_and_scale(&ids.ids, force, now)?
                .unwrap_or_else(|| {
                    (
                        uuid::Uuid::new_v4().to_string(),
                        crate::core::version_of(now),
                    )
                });
            return Ok(deployment_result(StatusCode::OK, dep, version));
        }
        let killed = core.kill_tasks(&ids.ids);
        let tasks: Vec<Value> = killed
            .iter()
            .map(|t| {
                let ports = core
                    .app(&t.app_id)
                    .map(|a| crate::wire::service_ports(&a.app))
                    .unwrap_or_default();
                crate::wire::task_value(t, ports)
            })
            .collect();
        Ok::<_, ServicesError>(Json(json!({ "tasks": tasks })).into_response())
    })
    .await?
    .map_err(ApiError::from)
}

/// `GET /v2/queue[?embed=lastUnusedOffers]`: every app waiting for tasks, with Marathon's
/// offer statistics saying why (`processedOffersSummary`; the unused offers themselves when
/// embedded).
async fn queue(State(api): State<Api>, req: Request) -> Result<Json<Value>, ApiError> {
    let embed_offers = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .any(|kv| kv == "embed=lastUnusedOffers");
    let items = api
        .call(move |core, now| {
            core.apps()
                .filter_map(|st| {
                    let count = core.queued(st, now);
                    if count == 0 {
                        return None;
                    }
                    let left = st
                        .next_launch_at
                        .map(|t| (t - now).num_milliseconds().max(0))
                        .unwrap_or(0);
                    let mut app = serde_json::to_value(&st.app).unwrap_or(Value::Null);
                    if let Value::Object(m) = &mut app {
                        m.insert("version".into(), json!(st.version));
                    }
                    let stats = &st.offer_stats;
                    let mut item = json!({
                        "app": app,
                        "count": count,
                        // Whole seconds, rounded up: 0 only once the delay is over.
                        "delay": { "timeLeftSeconds": (left + 999) / 1000, "overdue": left == 0 },
                        "since": crate::offer_stats::timestamp(stats.since.unwrap_or(now)),
                        "processedOffersSummary": stats.summary_json(),
                    });
                    if embed_offers {
                        if let Value::Object(m) = &mut item {
                            m.insert("lastUnusedOffers".into(), stats.last_unused_json());
                        }
                    }
                    Some(item)
                })
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(Json(json!({ "queue": items })))
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
