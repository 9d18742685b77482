//! The Chronos-compatible REST API, under `/v1/scheduler` and `/scheduler`: jobs in, runs and
//! statistics out. Handlers translate; the actor's core decides. Errors are JSON naming each bad
//! field (`{"message":"Object is not valid","details":[{"path":"/schedule","errors":[…]}]}`), and a
//! rejected request changes nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::core::{BatchCore, BatchError, JobState, Run, RunStatus};
use crate::handle::{BatchHandle, Leadership};
use crate::job::{FieldError, InvalidJob, Job};

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

/// The API's routes; with `api_token`, all but [`OPEN_PATHS`] require it.
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
        .route("/job/success/{name}", post(mark_success))
        .route("/task/kill/{name}", delete(kill_tasks))
        .route("/graph/csv", get(graph_csv))
        .route("/stats/{percentile}", get(stats));
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
    agora_net::http_auth::protect(routes, api_token, "batch", OPEN_PATHS)
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
    let mut v = serde_json::to_value(&st.job).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        let stats = serde_json::to_value(&st.stats).unwrap_or(Value::Null);
        if let Value::Object(s) = stats {
            map.extend(s);
        }
        map.insert(
            "nextRun".into(),
            json!(st.next_at.map(|t| t.to_rfc3339()).unwrap_or_default()),
        );
        map.insert("running".into(), json!(core.is_running(&st.job.name)));
    }
    v
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
    let name = q.get("name").cloned().unwrap_or_default().to_lowercase();
    let command = q.get("command").cloned().unwrap_or_default().to_lowercase();
    let jobs = api
        .batch()?
        .call(move |core, _| {
            core.jobs()
                .filter(|j| j.job.name.to_lowercase().contains(&name))
                .filter(|j| j.job.command.to_lowercase().contains(&command))
                .map(|j| job_json(j, core))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(unavailable)?;
    Ok(Json(Value::Array(jobs)))
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

fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running",
        RunStatus::Succeeded => "success",
        RunStatus::Failed => "failure",
        RunStatus::Skipped => "skipped",
    }
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn histogram(mut d: Vec<f64>) -> Value {
    d.sort_by(f64::total_cmp);
    let mean = if d.is_empty() {
        0.0
    } else {
        d.iter().sum::<f64>() / d.len() as f64
    };
    json!({
        "75thPercentile": percentile(&d, 75.0),
        "95thPercentile": percentile(&d, 95.0),
        "98thPercentile": percentile(&d, 98.0),
        "99thPercentile": percentile(&d, 99.0),
        "median": percentile(&d, 50.0),
        "mean": mean,
        "count": d.len(),
    })
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
            let history: Vec<Value> = core
                .runs_of(&name)
                .into_iter()
                .flat_map(|r| r.tasks.iter().map(move |t| (r, t)))
                .map(|(r, t)| {
                    json!({
                        "taskId": t.task_id,
                        "jobName": r.job,
                        "taskState": t.state,
                        "slaveId": t.agent_id,
                        "exitCode": t.exit_code,
                        "elapsedTime": match (t.launched_at, t.finished_at) {
                            (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
                            _ => 0.0,
                        },
                    })
                })
                .collect();
            Ok::<_, BatchError>(json!({
                "histogram": histogram(core.durations(&name)),
                "taskStatHistory": history,
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
    let out = api
        .batch()?
        .call(move |core, _| {
            core.jobs()
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
                    json!({ "jobNameLabel": j.job.name, "time": time })
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(unavailable)?;
    Ok(Json(Value::Array(out)))
}

async fn graph_csv(State(api): State<Api>) -> Result<Response, ApiError> {
    let csv = api
        .batch()?
        .call(|core, _| {
            let mut out = String::new();
            for j in core.jobs() {
                let last = core
                    .runs_of(&j.job.name)
                    .into_iter()
                    .find(|r| matches!(r.status, RunStatus::Succeeded | RunStatus::Failed))
                    .map(|r| status_name(r.status))
                    .unwrap_or("fresh");
                let state = if core.is_running(&j.job.name) {
                    "running"
                } else {
                    "idle"
                };
                out.push_str(&format!("node,{},{last},{state}\n", j.job.name));
            }
            for (p, c) in core.edges() {
                out.push_str(&format!("link,{p},{c}\n"));
            }
            out
        })
        .await
        .map_err(unavailable)?;
    Ok(([(header::CONTENT_TYPE, "text/csv")], csv).into_response())
}

async fn metrics(State(api): State<Api>) -> Result<Response, ApiError> {
    let launched = api.counters.tasks_launched.load(Ordering::Relaxed);
    let text = api.batch()?.call(move |core, _| {
            let mut running = 0;
            let mut by_status = std::collections::BTreeMap::<&str, u64>::new();
            let mut success = 0;
            let mut error = 0;
            for j in core.jobs() {
                success += j.stats.success_count;
                error += j.stats.error_count;
                if core.is_running(&j.job.name) {
                    running += 1;
                }
                for r in core.runs_of(&j.job.name) {
                    *by_status.entry(status_name(r.status)).or_default() += 1;
                }
            }
            let mut out = format!(
                "# TYPE agora_batch_jobs gauge\nagora_batch_jobs {}\n# TYPE agora_batch_jobs_running gauge\nagora_batch_jobs_running {running}\n# TYPE agora_batch_runs_succeeded_total counter\nagora_batch_runs_succeeded_total {success}\n# TYPE agora_batch_runs_failed_total counter\nagora_batch_runs_failed_total {error}\n# TYPE agora_batch_tasks_launched_total counter\nagora_batch_tasks_launched_total {launched}\n# TYPE agora_batch_runs_in_history gauge\n",
                core.jobs().count()
            );
            for (s, n) in by_status {
                out.push_str(&format!("agora_batch_runs_in_history{{status=\"{s}\"}} {n}\n"));
            }
            out
        })
        .await
        .map_err(unavailable)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

impl From<BatchError> for crate::http::ApiError {
    fn from(e: BatchError) -> Self {
        crate::http::ApiError::from_batch(e)
    }
}
