//! The Chronos-compatible REST API, under `/v1/scheduler` and `/scheduler`: jobs in, runs and
//! statistics out. Handlers translate; the actor's core decides. Errors are JSON naming each bad
//! field (`{"message":"Object is not valid","details":[{"path":"/schedule","errors":[…]}]}`), and a
//! rejected request changes nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::core::{BatchCore, BatchError, JobState, Run};
use crate::handle::{BatchHandle, Leadership};
use crate::job::{FieldError, InvalidJob, Job};
use crate::wire::{histogram, percentile, status_name, Search, Totals};

/// Totals for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    tasks_launched: AtomicU64,
}

impl Counters {
    pub fn launched(&self, n: u64) {
        self.tasks_launched.fetch_add(n, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct Api {
    leadership: Arc<Leadership>,
    counters: Arc<Counters>,
}

impl Api {
    fn batch(&self) -> Result<&BatchHandle, ApiError> {
        self.leadership.handle().ok_or_else(|| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "message": "this batch instance is not the leader", "leader": self.leadership.leader() }),
            )
        })
    }
}

/// Paths anyone may call when the API requires a token (load balancers' health checks).
pub const OPEN_PATHS: &[&str] = &["/ping", "/health"];

/// The API's routes; with `api_token`, all but [`OPEN_PATHS`] require it, as a bearer token or as
/// the password of HTTP basic auth ([`crate::basic_auth`]).
pub fn router(
    leadership: Arc<Leadership>,
    counters: Arc<Counters>,
    api_token: Option<agora_net::http_auth::ApiToken>,
) -> Router {
    let scheduler = Router::new()
        .route("/iso8601", post(put_scheduled).put(put_scheduled))
        .route("/dependency", post(put_dependent).put(put_dependent))
        .route("/jobs", get(list_jobs))
        .route("/jobs/search", get(search_jobs))
        .route("/job/{name}", put(run_now).delete(delete_job))
        .route("/job/{name}/runs", get(runs))
        .route("/job/stat/{name}", get(job_stat))
        .route("/job/success/{name}", post(mark_success).put(mark_success))
        .route("/task/kill/{name}", delete(kill_tasks))
        .route("/graph/csv", get(graph_csv))
        .route("/stats/{percentile}", get(stats))
        .route("/leader", get(leader));
    let routes = Router::new()
        .nest("/v1/scheduler", scheduler.clone())
        .nest("/scheduler", scheduler)
        .route("/ping", get(|| async { "pong" }))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(
            leadership.clone(),
            agora_ha::leadership::standby_redirect::<BatchHandle>,
        ))
        .with_state(Api {
            leadership,
            counters,
        });
    let basic = api_token.is_some();
    let routes = agora_net::http_auth::protect(routes, api_token, "batch", OPEN_PATHS);
    if basic {
        routes.layer(axum::middleware::from_fn(
            crate::basic_auth::basic_as_bearer,
        ))
    } else {
        routes
    }
}

/// An API error with its status.
pub struct ApiError(StatusCode, Value);

impl ApiError {
    pub fn from_batch(e: BatchError) -> Self {
        match e {
            BatchError::Invalid(InvalidJob(details)) => invalid(details),
            BatchError::UnknownJob(name) => ApiError(
                StatusCode::NOT_FOUND,
                json!({ "message": format!("Job '{name}' does not exist") }),
            ),
            other => ApiError(
                StatusCode::CONFLICT,
                json!({ "message": other.to_string() }),
            ),
        }
    }
}

fn invalid(details: Vec<FieldError>) -> ApiError {
    ApiError(
        StatusCode::BAD_REQUEST,
        json!({ "message": "Object is not valid", "details": details }),
    )
}

/// A call the framework did not carry out: it is stopping, or the state after the call could not
/// be saved (the call was undone; the client may retry).
fn unavailable(e: agora_framework::CallError) -> ApiError {
    let message = match e {
        agora_framework::CallError::Stopped => "the batch framework is stopping".to_string(),
        e @ agora_framework::CallError::NotSaved(_) => e.to_string(),
    };
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({ "message": message }),
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

fn parse_job(body: &Bytes) -> Result<Job, ApiError> {
    crate::job::parse(body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            json!({ "message": "Invalid JSON", "details": e.0 }),
        )
    })
}

async fn put_job(api: Api, body: Bytes, dependent: bool) -> Result<StatusCode, ApiError> {
    let job = parse_job(&body)?;
    if dependent && job.parents.is_empty() {
        return Err(invalid(vec![FieldError {
            path: "/parents".into(),
            errors: vec!["a dependent job needs at least one parent".into()],
        }]));
    }
    if !dependent && job.schedule.trim().is_empty() {
        return Err(invalid(vec![FieldError {
            path: "/schedule".into(),
            errors: vec!["a scheduled job needs a schedule (R[n]/<start>/<period> or cron)".into()],
        }]));
    }
    api.batch()?
        .call(move |core, now| core.put_job(job, true, now))
        .await
        .map_err(unavailable)?
        .map_err(ApiError::from_batch)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn put_scheduled(State(api): State<Api>, body: Bytes) -> Result<StatusCode, ApiError> {
    put_job(api, body, false).await
}

async fn put_dependent(State(api): State<Api>, body: Bytes) -> Result<StatusCode, ApiError> {
    put_job(api, body, true).await
}

fn job_json(st: &JobState, core: &BatchCore) -> Value {
    crate::wire::job_json(st, core.is_running(&st.job.name))
}

async fn list_jobs(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let jobs = api
        .batch()?
        .call(|core, _| core.jobs().map(|j| job_json(j, core)).collect::<Vec<_>>())
        .await
        .map_err(unavailable)?;
    Ok(Json(Value::Array(jobs)))
}

async fn search_jobs(
    State(api): State<Api>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let search = Search::parse(&q).map_err(invalid)?;
    let jobs = api
        .batch()?
        .call(move |core, _| {
            search
                .run(core)
                .into_iter()
                .map(|j| job_json(j, core))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(unavailable)?;
    Ok(Json(Value::Array(jobs)))
}

/// `GET /scheduler/leader`: `{"leader": "host:port"}` (empty while none is known).
async fn leader(State(api): State<Api>) -> Json<Value> {
    Json(json!({ "leader": api.leadership.leader().unwrap_or_default() }))
}

async fn run_now(State(api): State<Api>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    api.batch()?
        .call(move |core, now| core.run_now(&name, now))
        .await
        .map_err(unavailable)?
        .map_err(ApiError::from_batch)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_job(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    // The actor carries out the kills this asks for right after the call.
    api.batch()?
        .call(move |core, now| core.delete_job(&name, now))
        .await
        .map_err(unavailable)?
        .map_err(ApiError::from_batch)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn kill_tasks(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    api.batch()?
        .call(move |core, now| core.kill_job(&name, "killed on request", now))
        .await
        .map_err(unavailable)?
        .map_err(ApiError::from_batch)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn mark_success(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    api.batch()?
        .call(move |core, now| core.mark_success(&name, now))
        .await
        .map_err(unavailable)?
        .map_err(ApiError::from_batch)?;
    Ok(StatusCode::NO_CONTENT)
}

fn run_json(r: &Run, framework_id: &str) -> Value {
    json!({
        "id": r.id,
        "job": r.job,
        "status": status_name(r.status),
        "trigger": r.trigger,
        "reason": r.reason,
        "scheduledFor": r.scheduled_for.map(|t| t.to_rfc3339()),
        "startedAt": r.started_at.to_rfc3339(),
        "finishedAt": r.finished_at.map(|t| t.to_rfc3339()),
        "tasks": r.tasks.iter().map(|t| json!({
            "taskId": t.task_id,
            "slot": t.slot,
            "attempt": t.attempt,
            "state": t.state,
            "exitCode": t.exit_code,
            "agentId": t.agent_id,
            "message": t.message,
            // Under the agent's sandbox root, as its /files/browse API takes it
            // (`agora task logs TASK` reads it for you).
            "sandbox": if t.agent_id.is_empty() { String::new() } else {
                format!("{}/frameworks/{framework_id}/executors/{}/runs", t.agent_id, t.task_id)
            },
        })).collect::<Vec<_>>(),
    })
}

async fn runs(State(api): State<Api>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let out = api
        .batch()?
        .call(move |core, _| {
            core.job(&name)
                .map(|_| {
                    let fw = core.framework_id.clone().unwrap_or_default();
                    core.runs_of(&name)
                        .into_iter()
                        .map(|r| run_json(r, &fw))
                        .collect::<Vec<_>>()
                })
                .ok_or(BatchError::UnknownJob(name))
        })
        .await
        .map_err(unavailable)?
        .map_err(ApiError::from_batch)?;
    Ok(Json(Value::Array(out)))
}

async fn job_stat(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let out = api
        .batch()?
        .call(move |core, _| {
            core.job(&name)
                .ok_or(BatchError::UnknownJob(name.clone()))?;
            Ok::<_, BatchError>(json!({
                "histogram": histogram(core.durations(&name)),
                "taskStatHistory": crate::wire::task_stat_history(core, &name),
            }))
        })
        .await
        .map_err(unavailable)?
        .map_err(ApiError::from_batch)?;
    Ok(Json(out))
}

async fn stats(State(api): State<Api>, Path(p): Path<String>) -> Result<Json<Value>, ApiError> {
    let pct = match p.as_str() {
        "99thPercentile" => 99.0,
        "98thPercentile" => 98.0,
        "95thPercentile" => 95.0,
        "75thPercentile" => 75.0,
        "median" => 50.0,
        "mean" => -1.0,
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                json!({ "message": format!("unknown statistic '{other}': use 99thPercentile, 98thPercentile, 95thPercentile, 75thPercentile, median or mean") }),
            ))
        }
    };
    // Slowest first, as Chronos sorts them.
    let out = api
        .batch()?
        .call(move |core, _| {
            let mut rows: Vec<(String, f64)> = core
                .jobs()
                .map(|j| {
                    let mut d = core.durations(&j.job.name);
                    d.sort_by(f64::total_cmp);
                    let time = if pct < 0.0 {
                        if d.is_empty() {
                            0.0
                        } else {
                            d.iter().sum::<f64>() / d.len() as f64
                        }
                    } else {
                        percentile(&d, pct)
                    };
                    (j.job.name.clone(), time)
                })
                .collect();
            rows.sort_by(|a, b| b.1.total_cmp(&a.1));
            rows.into_iter()
                .map(|(name, time)| json!({ "jobNameLabel": name, "time": time }))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(unavailable)?;
    Ok(Json(Value::Array(out)))
}

async fn graph_csv(State(api): State<Api>) -> Result<Response, ApiError> {
    let csv = api
        .batch()?
        .call(|core, _| crate::wire::graph_csv(core))
        .await
        .map_err(unavailable)?;
    Ok(([(header::CONTENT_TYPE, "text/plain")], csv).into_response())
}

/// Chronos's Dropwizard JSON, or the Prometheus text format when the scraper asks for it.
async fn metrics(State(api): State<Api>, headers: HeaderMap) -> Result<Response, ApiError> {
    let launched = api.counters.tasks_launched.load(Ordering::Relaxed);
    let totals = api
        .batch()?
        .call(move |core, _| Totals::of(core, launched))
        .await
        .map_err(unavailable)?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    Ok(if crate::wire::wants_prometheus(accept) {
        (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            totals.prometheus(),
        )
            .into_response()
    } else {
        Json(totals.dropwizard()).into_response()
    })
}

impl From<BatchError> for crate::http::ApiError {
    fn from(e: BatchError) -> Self {
        crate::http::ApiError::from_batch(e)
    }
}
