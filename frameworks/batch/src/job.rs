//! Job definitions as Chronos accepts them (and a few fields beyond), with validation that names
//! every bad field. Unknown fields are ignored, as Chronos clients send many.

use agora_framework::bounds::{too_long, too_many};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::schedule::{parse_duration, Schedule, MAX_API_PERIOD_SECONDS, MAX_REPEATS};

/// The bounds every job field is held to at the API edge (the same as the services framework's
/// for apps): far above any real job, far below what hurts an agent or the scheduler.
pub mod limits {
    /// Characters of a job name: it becomes part of task ids and sandbox directory names
    /// (`<name>.<run>.<slot>.<attempt>`), which must stay under the 255-byte file-name limit.
    pub const MAX_NAME: usize = 128;
    /// Bytes of `command`, of all `arguments` together.
    pub const MAX_COMMAND: usize = 64 * 1024;
    pub const MAX_ARGUMENTS: usize = 1024;
    pub const MAX_RETRIES: u32 = 100;
    /// `parallelism` and `completions`.
    pub const MAX_TASKS_PER_RUN: u32 = 10_000;
    /// The longest `activeDeadlineSeconds`: one year.
    pub const MAX_SECONDS: f64 = 31_536_000.0;
    pub const MAX_ENV: usize = 1024;
    pub const MAX_ENV_NAME: usize = 255;
    pub const MAX_ENV_VALUE: usize = 32 * 1024;
    /// Entries of `uris`, `constraints`, `parents`, container volumes and parameters.
    pub const MAX_LIST: usize = 64;
    /// Bytes of a URI, an image, a path, a constraint part, `owner`, `scheduleTimeZone`.
    pub const MAX_STRING: usize = 4096;
    pub const MAX_DESCRIPTION: usize = 64 * 1024;
}

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
    /// Absent (never `null`) in replies: clients that check a container's fields choke on null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    /// Chronos's human-readable name of the owner.
    #[serde(default)]
    pub owner_name: String,
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
        && name.len() <= limits::MAX_NAME
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
                format!(
                    "must be 1-{} characters of letters, digits, '-' and '_'",
                    limits::MAX_NAME
                ),
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
                Ok(s) => {
                    if let Schedule::Iso {
                        repeats, period, ..
                    } = &s
                    {
                        if period.approx_seconds() > MAX_API_PERIOD_SECONDS {
                            bad(
                                "/schedule",
                                format!(
                                    "the period must be at most a year ({MAX_API_PERIOD_SECONDS} s, a month counted as 30 days)"
                                ),
                            );
                        }
                        if repeats.is_some_and(|n| n > MAX_REPEATS) {
                            bad("/schedule", format!("at most {MAX_REPEATS} repetitions"));
                        }
                    }
                    schedule = Some(s)
                }
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
        match parse_duration(&self.epsilon) {
            Err(e) => bad("/epsilon", e),
            Ok(p) if p.approx_seconds() > MAX_API_PERIOD_SECONDS => bad(
                "/epsilon",
                format!("must be at most a year ({MAX_API_PERIOD_SECONDS} s)"),
            ),
            Ok(_) => {}
        }
        if self.retries > limits::MAX_RETRIES {
            bad(
                "/retries",
                format!("must be between 0 and {}", limits::MAX_RETRIES),
            );
        }
        too_long(&mut bad, "/command", &self.command, limits::MAX_COMMAND);
        too_many(
            &mut bad,
            "/arguments",
            self.arguments.len(),
            limits::MAX_ARGUMENTS,
        );
        let total: usize = self.arguments.iter().map(String::len).sum();
        if total > limits::MAX_COMMAND {
            bad(
                "/arguments",
                format!(
                    "are {total} bytes together; at most {} are allowed",
                    limits::MAX_COMMAND
                ),
            );
        }
        too_many(&mut bad, "/parents", self.parents.len(), limits::MAX_LIST);
        too_long(&mut bad, "/schedule", &self.schedule, limits::MAX_STRING);
        too_long(
            &mut bad,
            "/scheduleTimeZone",
            &self.schedule_time_zone,
            limits::MAX_STRING,
        );
        too_long(&mut bad, "/owner", &self.owner, limits::MAX_STRING);
        too_long(&mut bad, "/ownerName", &self.owner_name, limits::MAX_STRING);
        too_long(
            &mut bad,
            "/description",
            &self.description,
            limits::MAX_DESCRIPTION,
        );
        too_many(
            &mut bad,
            "/environmentVariables",
            self.environment_variables.len(),
            limits::MAX_ENV,
        );
        for (i, nv) in self.environment_variables.iter().enumerate() {
            if nv.name.is_empty()
                || nv.name.len() > limits::MAX_ENV_NAME
                || nv.name.contains(['=', '\0'])
            {
                bad(
                    &format!("/environmentVariables/{i}/name"),
                    format!(
                        "must be 1-{} bytes without '=' or NUL",
                        limits::MAX_ENV_NAME
                    ),
                );
            }
            too_long(
                &mut bad,
                &format!("/environmentVariables/{i}/value"),
                &nv.value,
                limits::MAX_ENV_VALUE,
            );
        }
        too_many(&mut bad, "/uris", self.uris.len(), limits::MAX_LIST);
        for (i, u) in self.uris.iter().enumerate() {
            too_long(&mut bad, &format!("/uris/{i}"), u, limits::MAX_STRING);
        }
        too_many(
            &mut bad,
            "/constraints",
            self.constraints.len(),
            limits::MAX_LIST,
        );
        for (i, c) in self.constraints.iter().enumerate() {
            for part in c {
                too_long(
                    &mut bad,
                    &format!("/constraints/{i}"),
                    part,
                    limits::MAX_STRING,
                );
            }
        }
        for (field, n) in [
            ("/parallelism", self.parallelism),
            ("/completions", self.completions),
        ] {
            if n > limits::MAX_TASKS_PER_RUN {
                bad(
                    field,
                    format!("must be between 1 and {}", limits::MAX_TASKS_PER_RUN),
                );
            }
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
        if !(self.active_deadline_seconds.is_finite()
            && (0.0..=limits::MAX_SECONDS).contains(&self.active_deadline_seconds))
        {
            bad(
                "/activeDeadlineSeconds",
                format!("must be between 0 and {}", limits::MAX_SECONDS),
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
            too_long(&mut bad, "/container/image", &c.image, limits::MAX_STRING);
            too_many(
                &mut bad,
                "/container/volumes",
                c.volumes.len(),
                limits::MAX_LIST,
            );
            for (i, v) in c.volumes.iter().enumerate() {
                // What the agent refuses (every run would fail).
                if !v.container_path.starts_with('/') || v.container_path.len() > limits::MAX_STRING
                {
                    bad(
                        &format!("/container/volumes/{i}/containerPath"),
                        "must be an absolute path".into(),
                    );
                }
                if v.host_path.is_empty()
                    || v.host_path.len() > limits::MAX_STRING
                    || (!v.host_path.starts_with('/') && v.host_path.split('/').any(|c| c == ".."))
                {
                    bad(
                        &format!("/container/volumes/{i}/hostPath"),
                        "must be an absolute path, or a relative one (in the sandbox) without '..'"
                            .into(),
                    );
                }
                if !matches!(v.mode.to_ascii_uppercase().as_str(), "" | "RO" | "RW") {
                    bad(
                        &format!("/container/volumes/{i}/mode"),
                        "must be RO or RW".into(),
                    );
                }
            }
            too_many(
                &mut bad,
                "/container/parameters",
                c.parameters.len(),
                limits::MAX_LIST,
            );
            for (i, kv) in c.parameters.iter().enumerate() {
                if kv.key.len() > limits::MAX_ENV_NAME || kv.value.len() > limits::MAX_STRING {
                    bad(
                        &format!("/container/parameters/{i}"),
                        format!(
                            "a key may have {} bytes and a value {}",
                            limits::MAX_ENV_NAME,
                            limits::MAX_STRING
                        ),
                    );
                }
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

    /// The errors at `field` when `field` of a valid job is set to `value` (`None`: accepted).
    fn refusal(field: &str, value: serde_json::Value) -> Option<String> {
        let mut v = serde_json::json!({"name": "ok", "command": "true",
            "schedule": "R/2026-11-24T12:00:00Z/PT1H", "uris": ["/x"],
            "environmentVariables": [{"name": "A", "value": "1"}],
            "container": {"image": "busybox", "volumes": [{"containerPath": "/d", "hostPath": "/h"}]}});
        let (parent, last) = field.rsplit_once('/').expect("a pointer");
        let at = if parent.is_empty() {
            &mut v
        } else {
            v.pointer_mut(parent).expect("parent")
        };
        match at {
            serde_json::Value::Array(a) => a[last.parse::<usize>().expect("index")] = value,
            other => other[last] = value,
        }
        let j: Job = match serde_json::from_value(v) {
            Ok(j) => j,
            Err(e) => return Some(format!("unreadable: {e}")),
        };
        let InvalidJob(errors) = j.validate(&|_| false, now()).err()?;
        Some(
            errors
                .iter()
                .find(|e| e.path == field)
                .map(|e| e.errors.join(" "))
                .unwrap_or_else(|| format!("refused, but not at {field}: {errors:?}")),
        )
    }

    #[test]
    fn every_field_is_bounded_and_named() {
        use serde_json::json;
        let big = |n: usize| json!("x".repeat(n));
        let many = |n: usize, v: serde_json::Value| serde_json::Value::Array(vec![v; n]);
        let env = |n: usize| many(n, json!({"name": "A", "value": "1"}));
        // (field, inside its bound, beyond it)
        let table: Vec<(&str, serde_json::Value, Vec<serde_json::Value>)> = vec![
            (
                "/name",
                big(128),
                vec![big(129), big(300), json!("a/b"), json!("..")],
            ),
            (
                "/command",
                big(limits::MAX_COMMAND),
                vec![big(limits::MAX_COMMAND + 1)],
            ),
            ("/retries", json!(100), vec![json!(101), json!(u32::MAX)]),
            (
                "/epsilon",
                json!("P1Y"),
                vec![json!("P2Y"), json!("PT31622401S"), json!("P999Y")],
            ),
            (
                "/schedule",
                json!("R1000000000/2026-11-24T12:00:00Z/P366D"),
                vec![
                    json!("R1000000001/2026-11-24T12:00:00Z/PT1H"),
                    json!("R/2026-11-24T12:00:00Z/P13M"),
                    json!("R/2026-11-24T12:00:00Z/P999Y"),
                    json!("R/2026-11-24T12:00:00Z/PT1e300S"),
                ],
            ),
            (
                "/activeDeadlineSeconds",
                json!(31_536_000),
                vec![json!(1e300), json!(-1), json!(31_536_001)],
            ),
            ("/parallelism", json!(10_000), vec![json!(10_001), json!(0)]),
            (
                "/completions",
                json!(10_000),
                vec![json!(u32::MAX), json!(0)],
            ),
            ("/cpus", json!(1), vec![json!(1e300), json!(-1), json!(0)]),
            ("/mem", json!(32), vec![json!(1e300), json!(0.5)]),
            ("/disk", json!(0), vec![json!(1e300), json!(-1)]),
            (
                "/environmentVariables",
                env(limits::MAX_ENV),
                vec![env(limits::MAX_ENV + 1)],
            ),
            (
                "/environmentVariables/0/name",
                json!("A"),
                vec![json!(""), json!("A=B"), big(256)],
            ),
            ("/uris", many(64, json!("/x")), vec![many(65, json!("/x"))]),
            (
                "/uris/0",
                json!("/x"),
                vec![json!(format!("/{}", "x".repeat(limits::MAX_STRING)))],
            ),
            (
                "/constraints",
                many(64, json!(["rack", "EQUALS", "a"])),
                vec![many(65, json!(["rack", "EQUALS", "a"]))],
            ),
            (
                "/arguments",
                many(1024, json!("a")),
                vec![many(1025, json!("a")), many(2, big(40_000))],
            ),
            ("/owner", big(100), vec![big(limits::MAX_STRING + 1)]),
            ("/ownerName", big(100), vec![big(limits::MAX_STRING + 1)]),
            (
                "/container/image",
                json!("busybox"),
                vec![big(limits::MAX_STRING + 1)],
            ),
            (
                "/container/volumes",
                many(64, json!({"containerPath": "/d", "hostPath": "/h"})),
                vec![many(65, json!({"containerPath": "/d", "hostPath": "/h"}))],
            ),
            (
                "/container/volumes/0/containerPath",
                json!("/d"),
                vec![json!("d"), json!("")],
            ),
            (
                "/container/volumes/0/hostPath",
                json!("data"),
                vec![json!(""), json!("../etc")],
            ),
            ("/container/volumes/0/mode", json!("ro"), vec![json!("rwx")]),
        ];
        for (field, ok, bad) in table {
            if field == "/arguments" {
                // arguments go with an empty command (either is enough).
                assert_eq!(refusal(field, ok.clone()), None, "{field} inside its bound");
            } else {
                assert_eq!(refusal(field, ok.clone()), None, "{field} = {ok}");
            }
            for v in bad {
                let r = refusal(field, v.clone());
                assert!(
                    r.as_deref().is_some_and(|e| !e.starts_with("refused, but")),
                    "{field} = {}: {r:?}",
                    v.to_string().chars().take(80).collect::<String>()
                );
            }
        }
        assert_eq!(
            refusal("/retries", json!(1000)).as_deref(),
            Some("must be between 0 and 100")
        );
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
