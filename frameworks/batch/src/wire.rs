//! What Chronos's clients read: the JSON of a job, of a job's task statistics, the search
//! parameters, the dependency graph as CSV and the Dropwizard-style `/metrics` JSON. Pure: the
//! HTTP layer passes the core in and sends what comes out.
//!
//! Shapes follow Chronos's serializers: a scheduled job carries `schedule` and
//! `scheduleTimeZone` and no `parents`, a dependent job `parents` and no `schedule` (the PyPI
//! `chronos-python` client refuses to post back a job with both), no `container` key when there
//! is none (it refuses `null` there).

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::core::{BatchCore, JobState, RunStatus};
use crate::job::{limits, FieldError};

/// Tasks listed in a job's `taskStatHistory`, newest first.
pub const TASK_STAT_HISTORY: usize = 100;
/// Chronos's default `limit` of a search.
pub const DEFAULT_SEARCH_LIMIT: usize = 10;
/// The largest `limit` and `offset` a search takes.
pub const MAX_SEARCH_LIMIT: usize = 10_000;
pub const MAX_SEARCH_OFFSET: usize = 1_000_000;

/// A job as `GET /jobs` and `/jobs/search` return it: its definition, Chronos's read-only
/// statistics, and (beyond Chronos) `nextRun` and `running`.
pub fn job_json(st: &JobState, running: bool) -> Value {
    let mut map = match serde_json::to_value(&st.job) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if st.job.parents.is_empty() {
        map.remove("parents");
    } else {
        map.remove("schedule");
        map.remove("scheduleTimeZone");
    }
    if let Ok(Value::Object(s)) = serde_json::to_value(&st.stats) {
        map.extend(s);
    }
    map.insert(
        "nextRun".into(),
        json!(st
            .next_at
            .map(crate::core::chronos_time)
            .unwrap_or_default()),
    );
    map.insert("running".into(), json!(running));
    Value::Object(map)
}

/// The query of `GET /jobs/search`: jobs whose name contains `name` and whose command contains
/// `command` (case-insensitively; an empty one matches all), or whose name or command contains
/// `any`; `offset` of them skipped, at most `limit` returned (Chronos's default 10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    pub name: String,
    pub command: String,
    pub any: String,
    pub limit: usize,
    pub offset: usize,
}

impl Search {
    /// Reads the query parameters, bounded; unknown ones are ignored.
    ///
    /// # Errors
    /// Every bad parameter, by name.
    pub fn parse(
        params: &std::collections::HashMap<String, String>,
    ) -> Result<Search, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut text = |key: &str| {
            let v = params.get(key).cloned().unwrap_or_default();
            if v.len() > limits::MAX_STRING {
                errors.push(FieldError {
                    path: key.into(),
                    errors: vec![format!(
                        "is {} bytes; at most {} are allowed",
                        v.len(),
                        limits::MAX_STRING
                    )],
                });
                String::new()
            } else {
                v.to_lowercase()
            }
        };
        let (name, command, any) = (text("name"), text("command"), text("any"));
        let mut number = |key: &str, default: usize, max: usize| match params.get(key) {
            None => default,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n <= max => n,
                _ => {
                    errors.push(FieldError {
                        path: key.into(),
                        errors: vec![format!("'{v}' must be a whole number from 0 to {max}")],
                    });
                    default
                }
            },
        };
        let limit = number("limit", DEFAULT_SEARCH_LIMIT, MAX_SEARCH_LIMIT);
        let offset = number("offset", 0, MAX_SEARCH_OFFSET);
        if errors.is_empty() {
            Ok(Search {
                name,
                command,
                any,
                limit,
                offset,
            })
        } else {
            Err(errors)
        }
    }

    fn matches(&self, st: &JobState) -> bool {
        let name = st.job.name.to_lowercase();
        let command = st.job.command.to_lowercase();
        let both = name.contains(&self.name) && command.contains(&self.command);
        both || (!self.any.is_empty() && (name.contains(&self.any) || command.contains(&self.any)))
    }

    /// The matching jobs, in name order.
    pub fn run<'a>(&self, core: &'a BatchCore) -> Vec<&'a JobState> {
        core.jobs()
            .filter(|st| self.matches(st))
            .skip(self.offset)
            .take(self.limit)
            .collect()
    }
}

/// Chronos's task times: `MM/dd/yy HH:mm:ss` in UTC, `N/A` when unknown.
fn stat_time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%m/%d/%y %H:%M:%S").to_string())
        .unwrap_or_else(|| "N/A".into())
}

/// A duration as Chronos prints it: hours and minutes when not zero, seconds always (`1h2m3s`,
/// `5s`).
fn stat_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

/// `taskStatHistory` of `GET /job/stat/{name}`: the job's launched tasks, newest first, at most
/// [`TASK_STAT_HISTORY`]: `taskId`, `jobName`, `slaveId`, `startTime`, `endTime`, `duration` (when
/// ended), `status` (`Success`, `Fail` or `Running`).
pub fn task_stat_history(core: &BatchCore, name: &str) -> Vec<Value> {
    core.runs_of(name)
        .into_iter()
        .flat_map(|r| r.tasks.iter().rev())
        .filter(|t| t.launched_at.is_some() || t.finished_at.is_some())
        .filter(|t| t.state != "PENDING")
        .take(TASK_STAT_HISTORY)
        .map(|t| {
            let status = match t.state.as_str() {
                "TASK_FINISHED" => "Success",
                s if agora_proto::is_terminal_name(s) => "Fail",
                _ => "Running",
            };
            let mut v = json!({
                "taskId": t.task_id,
                "jobName": name,
                "slaveId": t.agent_id,
                "startTime": stat_time(t.launched_at),
                "endTime": stat_time(t.finished_at),
            });
            if let (Some(a), Some(b), Value::Object(m)) = (t.launched_at, t.finished_at, &mut v) {
                m.insert(
                    "duration".into(),
                    json!(stat_duration((b - a).num_seconds())),
                );
            }
            if let Value::Object(m) = &mut v {
                m.insert("status".into(), json!(status));
            }
            v
        })
        .collect()
}

/// Nearest-rank percentile of sorted values (0 for none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let last = sorted.len() - 1;
    let rank = (p / 100.0) * last as f64;
    // `rank` is within 0..=last for p in 0..=100; the clamp keeps any other p in bounds.
    let idx = if rank.is_finite() && rank > 0.0 {
        (rank.round() as usize).min(last)
    } else {
        0
    };
    sorted[idx]
}

/// Chronos's histogram object of durations in seconds.
pub fn histogram(mut d: Vec<f64>) -> Value {
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

/// Chronos's last state of a job: `success` or `failure` by whichever of `lastSuccess` and
/// `lastError` is later, `fresh` when neither.
fn last_state(st: &JobState) -> &'static str {
    let at = |s: &str| DateTime::parse_from_rfc3339(s).ok();
    match (at(&st.stats.last_success), at(&st.stats.last_error)) {
        (None, None) => "fresh",
        (Some(_), None) => "success",
        (None, Some(_)) => "failure",
        (Some(s), Some(e)) => {
            if s > e {
                "success"
            } else {
                "failure"
            }
        }
    }
}

/// `GET /graph/csv`: `node,<name>,<success|failure|fresh>,<idle|queued|running>` per job (queued:
/// a run waits for its first task to launch), then `link,<parent>,<child>` per dependency.
pub fn graph_csv(core: &BatchCore) -> String {
    let mut out = String::new();
    for st in core.jobs() {
        let name = &st.job.name;
        let state = match core
            .runs_of(name)
            .into_iter()
            .find(|r| r.status == RunStatus::Running)
        {
            None => "idle",
            Some(r) if r.tasks.iter().all(|t| t.state == "PENDING") => "queued",
            Some(_) => "running",
        };
        out.push_str(&format!("node,{name},{},{state}\n", last_state(st)));
    }
    for (p, c) in core.edges() {
        out.push_str(&format!("link,{p},{c}\n"));
    }
    out
}

/// Totals for `/metrics`, gathered from the core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub jobs: u64,
    pub jobs_running: u64,
    pub runs_succeeded: u64,
    pub runs_failed: u64,
    pub tasks_launched: u64,
    /// Runs kept in the history, by status name.
    pub runs_in_history: std::collections::BTreeMap<&'static str, u64>,
}

/// A run status as the API names it.
pub fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running",
        RunStatus::Succeeded => "success",
        RunStatus::Failed => "failure",
        RunStatus::Skipped => "skipped",
    }
}

impl Totals {
    pub fn of(core: &BatchCore, tasks_launched: u64) -> Totals {
        let mut t = Totals {
            tasks_launched,
            ..Totals::default()
        };
        for j in core.jobs() {
            t.jobs += 1;
            t.runs_succeeded += j.stats.success_count;
            t.runs_failed += j.stats.error_count;
            if core.is_running(&j.job.name) {
                t.jobs_running += 1;
            }
            for r in core.runs_of(&j.job.name) {
                *t.runs_in_history.entry(status_name(r.status)).or_default() += 1;
            }
        }
        t
    }

    /// The Prometheus text format.
    pub fn prometheus(&self) -> String {
        let mut out = format!(
            "# TYPE agora_batch_jobs gauge\nagora_batch_jobs {}\n# TYPE agora_batch_jobs_running gauge\nagora_batch_jobs_running {}\n# TYPE agora_batch_runs_succeeded_total counter\nagora_batch_runs_succeeded_total {}\n# TYPE agora_batch_runs_failed_total counter\nagora_batch_runs_failed_total {}\n# TYPE agora_batch_tasks_launched_total counter\nagora_batch_tasks_launched_total {}\n# TYPE agora_batch_runs_in_history gauge\n",
            self.jobs, self.jobs_running, self.runs_succeeded, self.runs_failed, self.tasks_launched
        );
        for (s, n) in &self.runs_in_history {
            out.push_str(&format!(
                "agora_batch_runs_in_history{{status=\"{s}\"}} {n}\n"
            ));
        }
        out
    }

    /// The JSON Chronos serves at `/metrics` (Dropwizard's registry: `version`, `gauges` with
    /// `value`, `counters` with `count`, and the empty `histograms`, `meters`, `timers`), with
    /// the same numbers as [`Totals::prometheus`].
    pub fn dropwizard(&self) -> Value {
        let mut gauges = Map::new();
        gauges.insert("agora.batch.jobs".into(), json!({ "value": self.jobs }));
        gauges.insert(
            "agora.batch.jobs.running".into(),
            json!({ "value": self.jobs_running }),
        );
        for (s, n) in &self.runs_in_history {
            gauges.insert(
                format!("agora.batch.runs.in_history.{s}"),
                json!({ "value": n }),
            );
        }
        json!({
            "version": "3.0.0",
            "gauges": gauges,
            "counters": {
                "agora.batch.runs.succeeded": { "count": self.runs_succeeded },
                "agora.batch.runs.failed": { "count": self.runs_failed },
                "agora.batch.tasks.launched": { "count": self.tasks_launched },
            },
            "histograms": {},
            "meters": {},
            "timers": {},
        })
    }
}

/// Whether a `/metrics` request asks for the Prometheus text format (`Accept` naming
/// `text/plain` or OpenMetrics, as Prometheus's scraper sends); otherwise the answer is
/// Chronos's JSON.
pub fn wants_prometheus(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let media = part.split(';').next().unwrap_or("").trim();
            media.eq_ignore_ascii_case("text/plain")
                || media.eq_ignore_ascii_case("application/openmetrics-text")
        })
    })
}

#[cfg(test)]
mod tests;
