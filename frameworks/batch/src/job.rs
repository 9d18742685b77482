//! Job definitions as Chronos accepts them (and a few fields beyond), with validation that names
//! every bad field. Unknown fields are ignored, as Chronos clients send many.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::schedule::{parse_duration, Schedule};

fn yes() -> bool {
    true
}
fn default_retries() -> u32 {
    2
}
fn default_cpus() -> f64 {
    0.1
}
fn default_mem() -> f64 {
    128.0
}
fn default_disk() -> f64 {
    256.0
}
fn one() -> u32 {
    1
}
fn default_epsilon() -> String {
    "PT60S".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct KeyValue {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NameValue {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    #[serde(default)]
    pub container_path: String,
    #[serde(default)]
    pub host_path: String,
    #[serde(default)]
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// `DOCKER` (default) or `MESOS` (the native containerizer).
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub image: String,
    /// `BRIDGE`, `HOST` or `NONE`.
    #[serde(default)]
    pub network: String,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub force_pull_image: bool,
    #[serde(default)]
    pub parameters: Vec<KeyValue>,
}

/// A job, as posted to `/v1/scheduler/iso8601` or `/v1/scheduler/dependency`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub name: String,
    #[serde(default)]
    pub command: String,
    #[serde(default = "yes")]
    pub shell: bool,
    #[serde(default)]
    pub arguments: Vec<String>,
    /// `R[n]/<start>/<period>` or a five-field cron expression. Empty for dependent jobs.
    #[serde(default)]
    pub schedule: String,
    #[serde(default)]
    pub schedule_time_zone: String,
    #[serde(default)]
    pub parents: Vec<String>,
    /// A run missed by more than this (ISO 8601 duration) is skipped and recorded.
    #[serde(default = "default_epsilon")]
    pub epsilon: String,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default)]
    pub concurrent: bool,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default, rename = "async")]
    pub is_async: bool,
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    #[serde(default = "default_mem")]
    pub mem: f64,
    #[serde(default = "default_disk")]
    pub disk: f64,
    #[serde(default)]
    pub container: Option<Container>,
    #[serde(default)]
    pub environment_variables: Vec<NameValue>,
    /// `[field, OPERATOR, value]`; operators `EQUALS`, `LIKE`, `UNLIKE`.
    #[serde(default)]
    pub constraints: Vec<Vec<String>>,
    /// Files fetched into each task's sandbox (http://, file:// or absolute paths).
    #[serde(default)]
    pub uris: Vec<String>,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub description: String,
    /// Beyond Chronos: tasks run at once in a run.
    #[serde(default = "one")]
    pub parallelism: u32,
    /// Beyond Chronos: successful tasks that complete a run.
    #[serde(default = "one")]
    pub completions: u32,
    /// Beyond Chronos: a run still going after this many seconds is killed and failed (0: none).
    #[serde(default)]
    pub active_deadline_seconds: f64,
}

/// One field's problems, in Marathon/Chronos-client-friendly form.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    pub path: String,
    pub errors: Vec<String>,
}

/// A rejected job: every bad field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("Object is not valid: {}", .0.iter().map(|e| format!("{} {}", e.path, e.errors.join(", "))).collect::<Vec<_>>().join("; "))]
pub struct InvalidJob(pub Vec<FieldError>);

/// Reads a job from a JSON body. A type error names its field as a JSON pointer (`/cpus`,
/// `/container/image`; a missing field is named too), where plain serde_json only gives a line and
/// column.
///
/// # Errors
/// [`InvalidJob`] with one [`FieldError`] for the first field that cannot be read (`/` for a
/// syntax error).
pub fn parse(json: &[u8]) -> Result<Job, InvalidJob> {
    agora_framework::read_json(json).map_err(|e| {
        InvalidJob(vec![FieldError {
            path: e.pointer,
            errors: vec![e.message],
        }])
    })
}

/// Whether `name` is a usable job name (it becomes part of task ids and URLs).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Job {
    /// Checks every field. `known_jobs` says which parent names exist; `now` fills an empty
    /// schedule start.
    ///
    /// # Errors
    /// [`InvalidJob`] listing each bad field.
    pub fn validate(
        &self,
        known_jobs: &dyn Fn(&str) -> bool,
        now: DateTime<Utc>,
    ) -> Result<Option<Schedule>, InvalidJob> {
        let mut errors: Vec<FieldError> = Vec::new();
        let mut bad = |path: &str, e: String| match errors.iter_mut().find(|f| f.path == path) {
            Some(f) => f.errors.push(e),
            None => errors.push(FieldError {
                path: path.to_string(),
                errors: vec![e],
            }),
        };
        if !valid_name(&self.name) {
            bad(
                "/name",
                "must be 1-200 characters of letters, digits, '-' and '_'".into(),
            );
        }
        let image = self
            .container
            .as_ref()
            .is_some_and(|c| !c.image.trim().is_empty());
        if self.command.trim().is_empty() && self.arguments.is_empty() && !image {
            bad(
                "/command",
                "is required (or arguments, or a container image)".into(),
            );
        }
        let mut schedule = None;
        match (self.schedule.trim().is_empty(), self.parents.is_empty()) {
            (false, false) => bad(
                "/schedule",
                "a job has either a schedule or parents, never both".into(),
            ),
            (true, true) => bad("/schedule", "is required unless the job has parents".into()),
            (false, true) => match Schedule::parse(&self.schedule, now) {
                Ok(s) => schedule = Some(s),
                Err(e) => bad("/schedule", e),
            },
            (true, false) => {}
        }
        for (i, p) in self.parents.iter().enumerate() {
            if p == &self.name {
                bad(
                    &format!("/parents/{i}"),
                    "a job cannot be its own parent".into(),
                );
            } else if !known_jobs(p) {
                bad(
                    &format!("/parents/{i}"),
                    format!("unknown parent job '{p}'"),
                );
            }
        }
        if !self.schedule_time_zone.is_empty()
            && !matches!(
                self.schedule_time_zone.as_str(),
                "UTC" | "Z" | "Etc/UTC" | "GMT"
            )
        {
            bad(
                "/scheduleTimeZone",
                format!(
                    "'{}' is not supported: give start times with an offset and leave this empty or UTC",
                    self.schedule_time_zone
                ),
            );
        }
        if let Err(e) = parse_duration(&self.epsilon) {
            bad("/epsilon", e);
        }
        // The upper bound is the resource algebra's: a larger amount could never be offered.
        let max = agora_proto::resources::MAX_SCALAR;
        for (field, v, min) in [("/cpus", self.cpus, 0.001), ("/mem", self.mem, 1.0)] {
            if !v.is_finite() || v < min || v > max {
                bad(field, format!("{v} must be from {min} to {max}"));
            }
        }
        if !self.disk.is_finite() || self.disk < 0.0 || self.disk > max {
            bad("/disk", format!("{} must be from 0 to {max}", self.disk));
        }
        if self.parallelism == 0 {
            bad("/parallelism", "must be at least 1".into());
        }
        if self.completions == 0 {
            bad("/completions", "must be at least 1".into());
        }
        if !self.active_deadline_seconds.is_finite() || self.active_deadline_seconds < 0.0 {
            bad(
                "/activeDeadlineSeconds",
                "must be a number of seconds >= 0".into(),
            );
        }
        if let Some(c) = &self.container {
            let kind = c.kind.to_ascii_uppercase();
            if !matches!(kind.as_str(), "" | "DOCKER" | "MESOS") {
                bad(
                    "/container/type",
                    format!("'{}' must be DOCKER or MESOS", c.kind),
                );
            }
            if kind != "MESOS" && c.image.trim().is_empty() {
                bad(
                    "/container/image",
                    "is required for a DOCKER container".into(),
                );
            }
            if !matches!(
                c.network.to_ascii_uppercase().as_str(),
                "" | "BRIDGE" | "HOST" | "NONE"
            ) {
                bad(
                    "/container/network",
                    format!("'{}' must be BRIDGE, HOST or NONE", c.network),
                );
            }
        }
        for (i, u) in self.uris.iter().enumerate() {
            if !(u.starts_with("http://")
                || u.starts_with("https://")
                || u.starts_with("file://")
                || u.starts_with('/'))
            {
                bad(
                    &format!("/uris/{i}"),
                    format!(
                        "'{u}' must be an http://, https:// or file:// URL or an absolute path"
                    ),
                );
            }
        }
        for (i, c) in self.constraints.iter().enumerate() {
            let ok = c.len() == 3
                && matches!(
                    c[1].to_ascii_uppercase().as_str(),
                    "EQUALS" | "LIKE" | "UNLIKE"
                );
            if !ok {
                bad(
                    &format!("/constraints/{i}"),
                    "must be [field, EQUALS|LIKE|UNLIKE, value]".into(),
                );
            }
        }
        if errors.is_empty() {
            Ok(schedule)
        } else {
            Err(InvalidJob(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .expect("t")
            .with_timezone(&Utc)
    }

    #[test]
    fn a_chronos_job_parses_with_chronos_defaults() {
        let j: Job = serde_json::from_str(
            r#"{"name":"backup","command":"tar cf /tmp/x /etc","schedule":"R/2026-11-24T12:00:00Z/PT1H","owner":"ops@example.com","unknownField":1}"#,
        )
        .expect("parse");
        assert_eq!((j.retries, j.cpus, j.mem, j.disk), (2, 0.1, 128.0, 256.0));
        assert!(j.shell && !j.concurrent);
        assert!(j.validate(&|_| false, now()).expect("valid").is_some());
    }

    #[test]
    fn every_bad_field_is_named() {
        let j: Job = serde_json::from_str(
            r#"{"name":"bad name","schedule":"R/2026-11-24T12:00:00Z/PT1H","parents":["ghost"],"cpus":-1,"epsilon":"60s","container":{"type":"rkt"},"constraints":[["rack","NEAR"]]}"#,
        )
        .expect("parse");
        let InvalidJob(errors) = j.validate(&|_| false, now()).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        for p in [
            "/name",
            "/command",
            "/schedule",
            "/parents/0",
            "/epsilon",
            "/cpus",
            "/container/type",
            "/constraints/0",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
        let dependent: Job =
            serde_json::from_str(r#"{"name":"child","command":"true","parents":["parent"]}"#)
                .expect("parse");
        assert_eq!(dependent.validate(&|p| p == "parent", now()), Ok(None));
    }
}
