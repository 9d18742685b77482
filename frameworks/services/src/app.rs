//! App definitions as Marathon accepts them: both networking forms, Marathon's defaults, PATCH
//! merging, and validation that names every bad field (`/cpus`, `/container/docker/image`, …).
//! Unknown fields are ignored, as Marathon clients send many.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

fn d_cpus() -> f64 {
    1.0
}
fn d_mem() -> f64 {
    128.0
}
fn d_instances() -> u32 {
    1
}
fn d_backoff() -> f64 {
    1.0
}
fn d_factor() -> f64 {
    1.15
}
fn d_max_delay() -> f64 {
    300.0
}
fn d_one() -> f64 {
    1.0
}
fn d_kill_selection() -> String {
    "YOUNGEST_FIRST".into()
}
fn d_grace() -> f64 {
    300.0
}
fn d_interval() -> f64 {
    60.0
}
fn d_timeout() -> f64 {
    20.0
}
fn d_failures() -> u32 {
    3
}
fn d_kill_grace() -> f64 {
    3.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    #[serde(default)]
    pub container_port: u32,
    /// 0: any port from the offer.
    #[serde(default)]
    pub host_port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_port: Option<u32>,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn tcp() -> String {
    "tcp".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    /// 0: any port from the offer.
    #[serde(default)]
    pub port: u32,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Docker {
    #[serde(default)]
    pub image: String,
    /// Old form: `BRIDGE`, `HOST`, `NONE`, `USER` (normalised into `networks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Old form (normalised into `container.portMappings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
    #[serde(default)]
    pub force_pull_image: bool,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub parameters: Vec<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct KeyValue {
    #[serde(default)]
    pub key: String,
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
    /// `DOCKER` or `MESOS` (Agora's native containerizer).
    #[serde(default = "docker_kind", rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<Docker>,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
}

fn docker_kind() -> String {
    "DOCKER".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Network {
    /// `container/bridge`, `host` or `container`.
    #[serde(default = "host_mode")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn host_mode() -> String {
    "host".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `HTTP`, `HTTPS`, `TCP`, `COMMAND`, `MESOS_HTTP`, `MESOS_HTTPS`, `MESOS_TCP`.
    #[serde(default = "http_protocol")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Value>,
    #[serde(default = "d_grace")]
    pub grace_period_seconds: f64,
    #[serde(default = "d_interval")]
    pub interval_seconds: f64,
    #[serde(default = "d_timeout")]
    pub timeout_seconds: f64,
    #[serde(default = "d_failures")]
    pub max_consecutive_failures: u32,
    #[serde(default)]
    pub delay_seconds: f64,
}

fn http_protocol() -> String {
    "HTTP".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    #[serde(default = "d_one")]
    pub minimum_health_capacity: f64,
    #[serde(default = "d_one")]
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

/// A file fetched into each task's sandbox before it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fetch {
    pub uri: String,
    #[serde(default)]
    pub executable: bool,
    /// Extract archives (Marathon's default).
    #[serde(default = "yes")]
    pub extract: bool,
    #[serde(default)]
    pub cache: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_file: Option<String>,
}

fn yes() -> bool {
    true
}

/// What to do with tasks whose agent is unreachable: count them as running for
/// `inactiveAfterSeconds` (then replace them), and forget them (killing them if they come back)
/// after `expungeAfterSeconds`. `"disabled"`: never replace them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UnreachableStrategy {
    Enabled {
        #[serde(rename = "inactiveAfterSeconds", default)]
        inactive_after_seconds: f64,
        #[serde(rename = "expungeAfterSeconds", default)]
        expunge_after_seconds: f64,
    },
    Disabled(Disabled),
}

/// The string `"disabled"`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Disabled {
    #[serde(rename = "disabled")]
    Disabled,
}

impl Default for UnreachableStrategy {
    fn default() -> Self {
        UnreachableStrategy::Enabled {
            inactive_after_seconds: 0.0,
            expunge_after_seconds: 0.0,
        }
    }
}

/// A Marathon app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default = "d_cpus")]
    pub cpus: f64,
    #[serde(default = "d_mem")]
    pub mem: f64,
    #[serde(default)]
    pub disk: f64,
    #[serde(default = "d_instances")]
    pub instances: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default)]
    pub networks: Vec<Network>,
    #[serde(default)]
    pub port_definitions: Vec<PortDefinition>,
    /// Old form of `portDefinitions`.
    #[serde(default, skip_serializing)]
    pub ports: Option<Vec<u32>>,
    #[serde(default)]
    pub require_ports: bool,
    #[serde(default)]
    pub env: BTreeMap<String, Value>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub constraints: Vec<Vec<String>>,
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    #[serde(default)]
    pub upgrade_strategy: UpgradeStrategy,
    #[serde(default = "d_backoff")]
    pub backoff_seconds: f64,
    #[serde(default = "d_factor")]
    pub backoff_factor: f64,
    #[serde(default = "d_max_delay")]
    pub max_launch_delay_seconds: f64,
    #[serde(default = "d_kill_selection")]
    pub kill_selection: String,
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default = "d_kill_grace")]
    pub task_kill_grace_period_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default)]
    pub unreachable_strategy: UnreachableStrategy,
    #[serde(default)]
    pub fetch: Vec<Fetch>,
    /// Old form of `fetch` (normalised into it).
    #[serde(default, skip_serializing)]
    pub uris: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One field's problems (Marathon's error format).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    pub path: String,
    pub errors: Vec<String>,
}

/// Reads an app from a JSON body. A type error names its field as a JSON pointer
/// (`/container/docker/image`, `/healthChecks/0/portIndex`; a missing field is named too), where
/// plain serde_json only gives a line and column.
///
/// # Errors
/// One [`FieldError`] for the first field that cannot be read (`/` for a syntax error).
pub fn parse(json: &[u8]) -> Result<App, Vec<FieldError>> {
    read(json)
}

/// [`parse`] for `PUT /v2/apps`, a list of apps: errors are located as `/1/cpus`.
///
/// # Errors
/// As [`parse`].
pub fn parse_list(json: &[u8]) -> Result<Vec<App>, Vec<FieldError>> {
    read(json)
}

fn read<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, Vec<FieldError>> {
    agora_framework::read_json(json).map_err(field_error)
}

/// [`parse`] for a body already read as JSON (a PATCH merged into the stored app).
///
/// # Errors
/// As [`parse`].
pub fn from_value(json: Value) -> Result<App, Vec<FieldError>> {
    agora_framework::read_json_value(json).map_err(field_error)
}

fn field_error(e: agora_framework::UnreadableField) -> Vec<FieldError> {
    vec![FieldError {
        path: e.pointer,
        errors: vec![e.message],
    }]
}

/// Normalises an app id as Marathon's path normalisation does: absolute, empty segments collapsed,
/// no trailing slash (`web` → `/web`, `//prod//web/` → `/prod/web`).
pub fn normalize_id(id: &str) -> String {
    let segments: Vec<&str> = id.trim().split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", segments.join("/"))
}

/// The bounds every app field is held to at the API edge. Durations are at most a year; counts and
/// sizes are far above any real app and far below what would hurt an agent (a 300-character id made
/// every sandbox path "File name too long").
pub mod limits {
    /// The longest duration of any `…Seconds` field: one year.
    pub const MAX_SECONDS: f64 = 31_536_000.0;
    /// `taskKillGracePeriodSeconds`: at most an hour, the master's bound for a kill policy (a
    /// longer one would be refused at launch, TASK_ERROR, relaunched forever).
    pub const MAX_KILL_GRACE_SECONDS: f64 = 3600.0;
    /// Health-check timings: at most a day, the master's bound.
    pub const MAX_HEALTH_SECONDS: f64 = 86_400.0;
    /// Characters in one segment of an app id (a DNS label's length).
    pub const MAX_ID_SEGMENT: usize = 63;
    /// Characters in a whole app id.
    pub const MAX_ID: usize = 255;
    pub const MAX_INSTANCES: u32 = 100_000;
    /// Bytes of `cmd`, of all `args` together, of a health check's command.
    pub const MAX_CMD: usize = 64 * 1024;
    /// Entries of `args` (the master takes at most 1,000 arguments).
    pub const MAX_ARGS: usize = 1000;
    /// Entries of `env`: the master takes at most 1,000 variables, and the framework adds its
    /// own (`MARATHON_APP_ID`, `HOST`, `PORT*`, … up to two per port).
    pub const MAX_ENV: usize = 800;
    /// Bytes of all `env` names and values together (the master takes at most 256 KiB, the
    /// framework's own variables included).
    pub const MAX_ENV_TOTAL: usize = 192 * 1024;
    pub const MAX_ENV_KEY: usize = 255;
    pub const MAX_ENV_VALUE: usize = 32 * 1024;
    /// Entries of `labels` (the master keeps at most 100 labels per task; the framework adds
    /// its own).
    pub const MAX_LABELS: usize = 90;
    pub const MAX_LABEL_KEY: usize = 255;
    pub const MAX_LABEL_VALUE: usize = 4096;
    /// Entries of `constraints`, `healthChecks`, `portDefinitions`, port mappings, volumes,
    /// `fetch`, `dependencies`, docker parameters, networks.
    pub const MAX_LIST: usize = 64;
    pub const MAX_HEALTH_CHECKS: usize = 16;
    /// Bytes of a short string: a name, a path, a URI, an image, a user, a constraint part.
    pub const MAX_STRING: usize = 4096;
    pub const MAX_PORT: u32 = 65_535;
    /// `backoffFactor` is from 1 to this.
    pub const MAX_BACKOFF_FACTOR: f64 = 100.0;
    /// The master's bound for `consecutive_failures`.
    pub const MAX_CONSECUTIVE_FAILURES: u32 = 1000;

    /// `secs` as a usable duration: NaN, negative and infinite values (possible only in state
    /// saved by an older version) become `0` or [`MAX_SECONDS`].
    pub fn clamp_seconds(secs: f64) -> f64 {
        clamp_seconds_to(secs, MAX_SECONDS)
    }

    /// [`clamp_seconds`] with another ceiling (a kill grace period, a health-check timing).
    pub fn clamp_seconds_to(secs: f64, max: f64) -> f64 {
        if secs.is_nan() {
            0.0
        } else {
            secs.clamp(0.0, max)
        }
    }

    /// A fraction clamped into 0..=1 (NaN: `default`).
    pub fn clamp_fraction(v: f64, default: f64) -> f64 {
        if v.is_nan() {
            default
        } else {
            v.clamp(0.0, 1.0)
        }
    }
}

/// Refuses a body for `PUT`/`PATCH /v2/apps/{id}` whose `id` names another app (a PATCH of
/// `{"id":"/other"}` created a copy). A body without an id, or with the same id written another
/// way (`other`, `/other/`), is fine.
///
/// # Errors
/// A [`FieldError`] at `/id`.
pub fn check_body_id(path_id: &str, body: &Value) -> Result<(), Vec<FieldError>> {
    match body.get("id") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(id)) if normalize_id(id) == path_id => Ok(()),
        Some(other) => Err(vec![FieldError {
            path: "/id".into(),
            errors: vec![format!(
                "{other} differs from the app id {path_id} in the URL: an app cannot be renamed"
            )],
        }]),
    }
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s != "."
        && s != ".."
}

impl App {
    /// Moves the old networking form (`container.docker.network`/`portMappings`, `ports`) into
    /// the new one (`networks`, `container.portMappings`, `portDefinitions`), which replies use.
    pub fn normalize(&mut self) {
        self.id = normalize_id(&self.id);
        if let Some(c) = self.container.as_mut() {
            c.kind = c.kind.to_ascii_uppercase();
            if let Some(d) = c.docker.as_mut() {
                if let Some(pm) = d.port_mappings.take() {
                    if c.port_mappings.is_empty() {
                        c.port_mappings = pm;
                    }
                }
                if let Some(net) = d.network.take() {
                    if self.networks.is_empty() {
                        let mode = match net.to_ascii_uppercase().as_str() {
                            "BRIDGE" => "container/bridge",
                            "USER" => "container",
                            _ => "host",
                        };
                        self.networks.push(Network {
                            mode: mode.into(),
                            name: None,
                        });
                    }
                }
            }
        }
        if let Some(ports) = self.ports.take() {
            if self.port_definitions.is_empty() {
                self.port_definitions = ports
                    .into_iter()
                    .map(|port| PortDefinition {
                        port,
                        protocol: "tcp".into(),
                        name: None,
                        labels: BTreeMap::new(),
                    })
                    .collect();
            }
        }
        if let Some(uris) = self.uris.take() {
            if self.fetch.is_empty() {
                self.fetch = uris
                    .into_iter()
                    .map(|uri| Fetch {
                        uri,
                        executable: false,
                        extract: true,
                        cache: false,
                        output_file: None,
                    })
                    .collect();
            }
        }
        for hc in self.health_checks.iter_mut() {
            hc.protocol = hc.protocol.to_ascii_uppercase();
        }
        self.kill_selection = self.kill_selection.to_ascii_uppercase();
    }

    /// Whether the app runs on the container bridge network (port mappings apply).
    pub fn bridged(&self) -> bool {
        self.networks.iter().any(|n| n.mode == "container/bridge")
    }

    /// How many host ports each task needs.
    pub fn host_ports(&self) -> usize {
        if self.bridged() {
            self.container.as_ref().map_or(0, |c| c.port_mappings.len())
        } else {
            self.port_definitions.len()
        }
    }

    /// Checks every field (after [`App::normalize`]).
    ///
    /// # Errors
    /// Every bad field, each with its errors.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors: Vec<FieldError> = Vec::new();
        let mut bad = |path: &str, e: String| match errors.iter_mut().find(|f| f.path == path) {
            Some(f) => f.errors.push(e),
            None => errors.push(FieldError {
                path: path.to_string(),
                errors: vec![e],
            }),
        };
        let segments: Vec<&str> = self.id.trim_start_matches('/').split('/').collect();
        if self.id == "/" || segments.iter().any(|s| !valid_segment(s)) {
            bad(
                "/id",
                "must be a path of segments of lowercase letters, digits, '-' and '.', a segment not \
                 starting or ending with '-'"
                    .into(),
            );
        }
        if segments.iter().any(|s| s.len() > limits::MAX_ID_SEGMENT) {
            bad(
                "/id",
                format!(
                    "a segment is longer than {} characters",
                    limits::MAX_ID_SEGMENT
                ),
            );
        }
        if self.id.len() > limits::MAX_ID {
            bad(
                "/id",
                format!("is longer than {} characters", limits::MAX_ID),
            );
        }
        if self.instances > limits::MAX_INSTANCES {
            bad(
                "/instances",
                format!("must be between 0 and {}", limits::MAX_INSTANCES),
            );
        }
        if let Some(cmd) = &self.cmd {
            too_long(&mut bad, "/cmd", cmd, limits::MAX_CMD);
        }
        if let Some(args) = &self.args {
            too_many(&mut bad, "/args", args.len(), limits::MAX_ARGS);
            let total: usize = args.iter().map(String::len).sum();
            if total > limits::MAX_CMD {
                bad(
                    "/args",
                    format!(
                        "are {total} bytes together; at most {} are allowed",
                        limits::MAX_CMD
                    ),
                );
            }
        }
        too_many(&mut bad, "/env", self.env.len(), limits::MAX_ENV);
        let env_total: usize = self
            .env
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or_else(|| v.to_string().len(), str::len))
            .sum();
        if env_total > limits::MAX_ENV_TOTAL {
            bad(
                "/env",
                format!(
                    "names and values are {env_total} bytes together; at most {} are allowed",
                    limits::MAX_ENV_TOTAL
                ),
            );
        }
        for (k, v) in &self.env {
            let p = format!("/env/{}", pointer_escape(k));
            if k.is_empty() || k.len() > limits::MAX_ENV_KEY || k.contains(['=', '\0']) {
                bad(
                    &p,
                    format!(
                        "a variable name must be 1-{} bytes without '=' or NUL",
                        limits::MAX_ENV_KEY
                    ),
                );
            }
            let len = match v {
                Value::String(s) => s.len(),
                Value::Object(_) | Value::Array(_) => {
                    bad(&p, "must be a string, number or boolean".into());
                    0
                }
                other => other.to_string().len(),
            };
            if len > limits::MAX_ENV_VALUE {
                bad(
                    &p,
                    format!(
                        "is {len} bytes long; at most {} are allowed",
                        limits::MAX_ENV_VALUE
                    ),
                );
            }
        }
        check_labels(&mut bad, "/labels", &self.labels);
        if let Some(u) = &self.user {
            too_long(&mut bad, "/user", u, limits::MAX_ENV_KEY);
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
        too_many(
            &mut bad,
            "/healthChecks",
            self.health_checks.len(),
            limits::MAX_HEALTH_CHECKS,
        );
        too_many(
            &mut bad,
            "/portDefinitions",
            self.port_definitions.len(),
            limits::MAX_LIST,
        );
        for (i, p) in self.port_definitions.iter().enumerate() {
            if let Some(n) = &p.name {
                too_long(
                    &mut bad,
                    &format!("/portDefinitions/{i}/name"),
                    n,
                    limits::MAX_ENV_KEY,
                );
            }
            check_labels(&mut bad, &format!("/portDefinitions/{i}/labels"), &p.labels);
        }
        too_many(&mut bad, "/networks", self.networks.len(), limits::MAX_LIST);
        too_many(&mut bad, "/fetch", self.fetch.len(), limits::MAX_LIST);
        for (i, f) in self.fetch.iter().enumerate() {
            too_long(
                &mut bad,
                &format!("/fetch/{i}/uri"),
                &f.uri,
                limits::MAX_STRING,
            );
            if let Some(o) = &f.output_file {
                too_long(
                    &mut bad,
                    &format!("/fetch/{i}/outputFile"),
                    o,
                    limits::MAX_ENV_KEY,
                );
            }
        }
        too_many(
            &mut bad,
            "/dependencies",
            self.dependencies.len(),
            limits::MAX_LIST,
        );
        for (i, d) in self.dependencies.iter().enumerate() {
            too_long(&mut bad, &format!("/dependencies/{i}"), d, limits::MAX_ID);
        }
        seconds_within(
            &mut bad,
            "/taskKillGracePeriodSeconds",
            self.task_kill_grace_period_seconds,
            limits::MAX_KILL_GRACE_SECONDS,
        );
        for (field, v) in [
            ("/backoffSeconds", self.backoff_seconds),
            ("/maxLaunchDelaySeconds", self.max_launch_delay_seconds),
        ] {
            seconds(&mut bad, field, v);
        }
        if let Some(c) = &self.container {
            too_many(
                &mut bad,
                "/container/portMappings",
                c.port_mappings.len(),
                limits::MAX_LIST,
            );
            for (i, pm) in c.port_mappings.iter().enumerate() {
                if pm.service_port.is_some_and(|p| p > limits::MAX_PORT) {
                    bad(
                        &format!("/container/portMappings/{i}/servicePort"),
                        "must be 0-65535".into(),
                    );
                }
                if let Some(n) = &pm.name {
                    too_long(
                        &mut bad,
                        &format!("/container/portMappings/{i}/name"),
                        n,
                        limits::MAX_ENV_KEY,
                    );
                }
                check_labels(
                    &mut bad,
                    &format!("/container/portMappings/{i}/labels"),
                    &pm.labels,
                );
            }
            too_many(
                &mut bad,
                "/container/volumes",
                c.volumes.len(),
                limits::MAX_LIST,
            );
            for (i, v) in c.volumes.iter().enumerate() {
                for (field, s) in [
                    ("containerPath", &v.container_path),
                    ("hostPath", &v.host_path),
                ] {
                    too_long(
                        &mut bad,
                        &format!("/container/volumes/{i}/{field}"),
                        s,
                        limits::MAX_STRING,
                    );
                }
                // What the agent refuses (the task would be relaunched forever).
                if !matches!(v.mode.to_ascii_uppercase().as_str(), "" | "RO" | "RW") {
                    bad(
                        &format!("/container/volumes/{i}/mode"),
                        "must be RO or RW".into(),
                    );
                }
                if !v.container_path.starts_with('/') {
                    bad(
                        &format!("/container/volumes/{i}/containerPath"),
                        "must be an absolute path".into(),
                    );
                }
                if v.host_path.is_empty()
                    || (!v.host_path.starts_with('/') && v.host_path.split('/').any(|c| c == ".."))
                {
                    bad(
                        &format!("/container/volumes/{i}/hostPath"),
                        "must be an absolute path, or a relative one (in the sandbox) without '..'"
                            .into(),
                    );
                }
            }
            if let Some(d) = &c.docker {
                too_long(
                    &mut bad,
                    "/container/docker/image",
                    &d.image,
                    limits::MAX_STRING,
                );
                too_many(
                    &mut bad,
                    "/container/docker/parameters",
                    d.parameters.len(),
                    limits::MAX_LIST,
                );
                for (i, kv) in d.parameters.iter().enumerate() {
                    too_long(
                        &mut bad,
                        &format!("/container/docker/parameters/{i}/key"),
                        &kv.key,
                        limits::MAX_ENV_KEY,
                    );
                    too_long(
                        &mut bad,
                        &format!("/container/docker/parameters/{i}/value"),
                        &kv.value,
                        limits::MAX_STRING,
                    );
                }
            }
        }
        let has_cmd = self.cmd.as_ref().is_some_and(|c| !c.trim().is_empty());
        let has_args = self.args.as_ref().is_some_and(|a| !a.is_empty());
        let has_image = self
            .container
            .as_ref()
            .and_then(|c| c.docker.as_ref())
            .is_some_and(|d| !d.image.trim().is_empty());
        if has_cmd && has_args {
            bad("/cmd", "cmd and args are exclusive: give one".into());
        }
        if !has_cmd && !has_args && !has_image {
            bad("/cmd", "an app needs cmd, args or a container image".into());
        }
        // The upper bound is the resource algebra's: a larger amount could never be offered.
        let max = agora_proto::resources::MAX_SCALAR;
        if !self.cpus.is_finite() || self.cpus < 0.001 || self.cpus > max {
            bad(
                "/cpus",
                format!("{} must be from 0.001 to {max}", self.cpus),
            );
        }
        if !self.mem.is_finite() || self.mem < 0.0 || self.mem > max {
            bad("/mem", format!("{} must be from 0 to {max}", self.mem));
        }
        if !self.disk.is_finite() || self.disk < 0.0 || self.disk > max {
            bad("/disk", format!("{} must be from 0 to {max}", self.disk));
        }
        let us = self.upgrade_strategy;
        for (field, v) in [
            (
                "/upgradeStrategy/minimumHealthCapacity",
                us.minimum_health_capacity,
            ),
            (
                "/upgradeStrategy/maximumOverCapacity",
                us.maximum_over_capacity,
            ),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bad(
                    field,
                    if v > 1.0 {
                        "is greater than 1".into()
                    } else if v < 0.0 {
                        "is less than 0".into()
                    } else {
                        "must be a number from 0 to 1".into()
                    },
                );
            }
        }
        if !(self.backoff_factor.is_finite()
            && (1.0..=limits::MAX_BACKOFF_FACTOR).contains(&self.backoff_factor))
        {
            bad(
                "/backoffFactor",
                format!("must be between 1 and {}", limits::MAX_BACKOFF_FACTOR),
            );
        }
        if !matches!(
            self.kill_selection.as_str(),
            "YOUNGEST_FIRST" | "OLDEST_FIRST"
        ) {
            bad(
                "/killSelection",
                "must be YOUNGEST_FIRST or OLDEST_FIRST".into(),
            );
        }
        if let Some(c) = &self.container {
            if !matches!(c.kind.as_str(), "DOCKER" | "MESOS") {
                bad(
                    "/container/type",
                    format!("'{}' must be DOCKER or MESOS", c.kind),
                );
            }
            if c.kind == "DOCKER" && !has_image {
                bad(
                    "/container/docker/image",
                    "is required for a DOCKER container".into(),
                );
            }
            for (i, pm) in c.port_mappings.iter().enumerate() {
                if pm.container_port > 65535 {
                    bad(
                        &format!("/container/portMappings/{i}/containerPort"),
                        "must be 0-65535".into(),
                    );
                }
                if pm.host_port > 65535 {
                    bad(
                        &format!("/container/portMappings/{i}/hostPort"),
                        "must be 0-65535".into(),
                    );
                }
                if !matches!(pm.protocol.as_str(), "tcp" | "udp" | "udp,tcp" | "tcp,udp") {
                    bad(
                        &format!("/container/portMappings/{i}/protocol"),
                        "must be tcp or udp".into(),
                    );
                }
            }
            if !c.port_mappings.is_empty() && !self.bridged() {
                bad(
                    "/container/portMappings",
                    "port mappings need the container/bridge network (networks: [{\"mode\": \"container/bridge\"}])".into(),
                );
            }
        }
        for (i, n) in self.networks.iter().enumerate() {
            if !matches!(n.mode.as_str(), "host" | "container/bridge" | "container") {
                bad(
                    &format!("/networks/{i}/mode"),
                    "must be host, container/bridge or container".into(),
                );
            }
        }
        let mut fixed = std::collections::HashSet::new();
        for (i, p) in self.port_definitions.iter().enumerate() {
            if p.port > 65535 {
                bad(
                    &format!("/portDefinitions/{i}/port"),
                    "must be 0-65535".into(),
                );
            }
            if p.port != 0 && !fixed.insert(p.port) {
                bad(
                    &format!("/portDefinitions/{i}/port"),
                    format!("port {} is given twice", p.port),
                );
            }
        }
        for (i, c) in self.constraints.iter().enumerate() {
            if let Err(e) = agora_framework::constraints::Constraint::parse(c) {
                bad(&format!("/constraints/{i}"), e);
            }
        }
        for (i, h) in self.health_checks.iter().enumerate() {
            let p = format!("/healthChecks/{i}");
            if !matches!(
                h.protocol.as_str(),
                "HTTP" | "HTTPS" | "TCP" | "COMMAND" | "MESOS_HTTP" | "MESOS_HTTPS" | "MESOS_TCP"
            ) {
                bad(
                    &format!("{p}/protocol"),
                    format!("'{}' is not a health check protocol", h.protocol),
                );
            }
            if h.protocol == "COMMAND" && h.command.is_none() {
                bad(
                    &format!("{p}/command"),
                    "is required for a COMMAND check".into(),
                );
            }
            if h.protocol != "COMMAND" && h.port.is_none() {
                let idx = h.port_index.unwrap_or(0) as usize;
                if idx >= self.host_ports() {
                    bad(
                        &format!("{p}/portIndex"),
                        format!(
                            "{idx} is not the index of one of the app's {} ports",
                            self.host_ports()
                        ),
                    );
                }
            }
            for (field, v) in [
                ("gracePeriodSeconds", h.grace_period_seconds),
                ("intervalSeconds", h.interval_seconds),
                ("timeoutSeconds", h.timeout_seconds),
                ("delaySeconds", h.delay_seconds),
            ] {
                seconds_within(
                    &mut bad,
                    &format!("{p}/{field}"),
                    v,
                    limits::MAX_HEALTH_SECONDS,
                );
            }
            if h.max_consecutive_failures > limits::MAX_CONSECUTIVE_FAILURES {
                bad(
                    &format!("{p}/maxConsecutiveFailures"),
                    format!("must be between 0 and {}", limits::MAX_CONSECUTIVE_FAILURES),
                );
            }
            for (field, port) in [("port", h.port), ("portIndex", h.port_index)] {
                if port.is_some_and(|v| v > limits::MAX_PORT) {
                    bad(&format!("{p}/{field}"), "must be 0-65535".into());
                }
            }
            if let Some(path) = &h.path {
                too_long(&mut bad, &format!("{p}/path"), path, limits::MAX_STRING);
            }
            if let Some(c) = &h.command {
                if c.to_string().len() > limits::MAX_CMD {
                    bad(
                        &format!("{p}/command"),
                        format!("is longer than {} bytes", limits::MAX_CMD),
                    );
                }
            }
        }
        if let UnreachableStrategy::Enabled {
            inactive_after_seconds: i,
            expunge_after_seconds: e,
        } = self.unreachable_strategy
        {
            seconds(&mut bad, "/unreachableStrategy/inactiveAfterSeconds", i);
            seconds(&mut bad, "/unreachableStrategy/expungeAfterSeconds", e);
            if !(e.is_finite() && e >= i) {
                bad(
                    "/unreachableStrategy/expungeAfterSeconds",
                    "must be at least inactiveAfterSeconds".into(),
                );
            }
        }
        for (i, f) in self.fetch.iter().enumerate() {
            let u = f.uri.as_str();
            if !(u.starts_with("http://")
                || u.starts_with("https://")
                || u.starts_with("file://")
                || u.starts_with('/'))
            {
                bad(
                    &format!("/fetch/{i}/uri"),
                    format!(
                        "'{u}' must be an http://, https:// or file:// URL or an absolute path"
                    ),
                );
            }
        }
        for (i, dep) in self.dependencies.iter().enumerate() {
            if normalize_id(dep) == self.id {
                bad(
                    &format!("/dependencies/{i}"),
                    "an app cannot depend on itself".into(),
                );
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Refuses a duration that is negative, NaN, infinite or longer than a year.
fn seconds(bad: &mut impl FnMut(&str, String), path: &str, v: f64) {
    seconds_within(bad, path, v, limits::MAX_SECONDS);
}

fn seconds_within(bad: &mut impl FnMut(&str, String), path: &str, v: f64, max: f64) {
    if !(v.is_finite() && (0.0..=max).contains(&v)) {
        bad(path, format!("must be between 0 and {max}"));
    }
}

fn too_long(bad: &mut impl FnMut(&str, String), path: &str, s: &str, max: usize) {
    if s.len() > max {
        bad(
            path,
            format!("is {} bytes long; at most {max} are allowed", s.len()),
        );
    }
}

fn too_many(bad: &mut impl FnMut(&str, String), path: &str, n: usize, max: usize) {
    if n > max {
        bad(path, format!("has {n} entries; at most {max} are allowed"));
    }
}

fn check_labels(bad: &mut impl FnMut(&str, String), path: &str, labels: &BTreeMap<String, String>) {
    too_many(bad, path, labels.len(), limits::MAX_LABELS);
    for (k, v) in labels {
        let p = format!("{path}/{}", pointer_escape(k));
        if k.len() > limits::MAX_LABEL_KEY || v.len() > limits::MAX_LABEL_VALUE {
            bad(
                &p,
                format!(
                    "a label's key may have {} bytes and its value {}",
                    limits::MAX_LABEL_KEY,
                    limits::MAX_LABEL_VALUE
                ),
            );
        }
    }
}

/// A map key as a JSON pointer segment (`~` → `~0`, `/` → `~1`), cut short so that an error never
/// echoes a huge key.
fn pointer_escape(key: &str) -> String {
    let short: String = key.chars().take(64).collect();
    short.replace('~', "~0").replace('/', "~1")
}

/// Merges a PATCH body into an app's JSON: objects merge key by key, anything else replaces.
pub fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(json: &str) -> App {
        let mut a: App = serde_json::from_str(json).expect("app json");
        a.normalize();
        a
    }

    #[test]
    fn marathon_defaults_and_the_old_network_form_are_normalised() {
        let a = app(
            r#"{"id":"prod/web/","container":{"type":"DOCKER","docker":{"image":"nginx","network":"BRIDGE","portMappings":[{"containerPort":80,"hostPort":0}]}},"extra":"ignored"}"#,
        );
        assert_eq!(a.id, "/prod/web");
        assert_eq!((a.cpus, a.mem, a.disk, a.instances), (1.0, 128.0, 0.0, 1));
        assert_eq!(
            (
                a.backoff_seconds,
                a.backoff_factor,
                a.max_launch_delay_seconds
            ),
            (1.0, 1.15, 300.0)
        );
        assert_eq!(a.upgrade_strategy, UpgradeStrategy::default());
        assert_eq!(a.networks[0].mode, "container/bridge");
        assert_eq!(a.container.as_ref().map(|c| c.port_mappings.len()), Some(1));
        assert_eq!(a.host_ports(), 1);
        assert!(a.validate().is_ok());
        let reply = serde_json::to_value(&a).expect("json");
        assert!(
            reply["container"]["docker"].get("network").is_none(),
            "{reply}"
        );
    }

    #[test]
    fn a_list_of_apps_locates_a_type_error_by_index() {
        let errors = parse_list(br#"[{"id":"/a","cmd":"x"},{"id":"/b","cmd":"x","cpus":"lots"}]"#)
            .expect_err("a string for cpus");
        assert_eq!(errors[0].path, "/1/cpus", "{errors:?}");
        assert_eq!(
            parse_list(br#"[{"id":"/a","cmd":"x"}]"#).map(|l| l.len()),
            Ok(1)
        );
    }

    #[test]
    fn every_bad_field_is_named_as_marathon_does() {
        let a = app(
            r#"{"id":"/Bad_Id","cmd":"x","args":["y"],"cpus":0,"mem":-1,"upgradeStrategy":{"minimumHealthCapacity":1.5},"constraints":[["hostname","NEAR"]],"healthChecks":[{"protocol":"TCP","portIndex":2}],"killSelection":"RANDOM"}"#,
        );
        let errors = a.validate().unwrap_err();
        let find = |p: &str| {
            errors
                .iter()
                .find(|e| e.path == p)
                .map(|e| e.errors.join(" "))
        };
        assert!(find("/id").is_some());
        assert!(find("/cmd").expect("cmd").contains("exclusive"));
        assert!(find("/cpus").is_some());
        assert!(find("/mem").is_some());
        assert_eq!(
            find("/upgradeStrategy/minimumHealthCapacity").as_deref(),
            Some("is greater than 1")
        );
        assert!(find("/constraints/0").is_some());
        assert!(find("/healthChecks/0/portIndex").is_some());
        assert!(find("/killSelection").is_some());
    }

    /// The first error at `path` for `base` with `field` (a JSON pointer) set to `value`.
    fn refusal(base: &Value, field: &str, value: Value) -> Option<String> {
        let mut v = base.clone();
        let mut parts: Vec<&str> = field.trim_start_matches('/').split('/').collect();
        let last = parts.pop().expect("a field");
        let mut at = &mut v;
        for p in parts {
            at = match at {
                Value::Array(a) => &mut a[p.parse::<usize>().expect("index")],
                other => other
                    .as_object_mut()
                    .expect("object")
                    .entry(p)
                    .or_insert(serde_json::json!({})),
            };
        }
        at.as_object_mut()
            .expect("object")
            .insert(last.into(), value);
        let mut a: App = match serde_json::from_value(v) {
            Ok(a) => a,
            Err(e) => return Some(format!("unreadable: {e}")),
        };
        a.normalize();
        let errors = a.validate().err()?;
        errors
            .iter()
            .find(|e| e.path == field)
            .map(|e| e.errors.join(" "))
            .or_else(|| Some(format!("refused, but not at {field}: {errors:?}")))
    }

    fn base() -> Value {
        serde_json::json!({
            "id": "/web", "cmd": "sleep 1", "portDefinitions": [{"port": 0}],
            "healthChecks": [{"protocol": "TCP", "portIndex": 0}],
            "container": {"type": "DOCKER", "docker": {"image": "busybox"},
                          "volumes": [{"containerPath": "/data", "hostPath": "/tmp", "mode": "RW"}]},
            "unreachableStrategy": {"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0}
        })
    }

    #[test]
    fn every_duration_and_count_is_bounded_and_named() {
        use serde_json::json;
        let year = limits::MAX_SECONDS;
        // (field, a value just inside the bound, values beyond it)
        let table: &[(&str, Value, &[Value])] = &[
            (
                "/taskKillGracePeriodSeconds",
                json!(3600),
                &[json!(1e300), json!(1.8e19), json!(-1), json!(3600.5)],
            ),
            ("/backoffSeconds", json!(year), &[json!(1e300), json!(-0.5)]),
            (
                "/maxLaunchDelaySeconds",
                json!(year),
                &[json!(1e300), json!(-1)],
            ),
            (
                "/backoffFactor",
                json!(100),
                &[json!(1e300), json!(0.5), json!(101)],
            ),
            (
                "/healthChecks/0/gracePeriodSeconds",
                json!(86_400),
                &[json!(1e300), json!(-1), json!(86_401)],
            ),
            (
                "/healthChecks/0/intervalSeconds",
                json!(86_400),
                &[json!(1e300), json!(-1), json!(86_401)],
            ),
            (
                "/healthChecks/0/timeoutSeconds",
                json!(86_400),
                &[json!(1e300), json!(-1), json!(86_401)],
            ),
            (
                "/healthChecks/0/delaySeconds",
                json!(86_400),
                &[json!(1e300), json!(-1), json!(86_401)],
            ),
            (
                "/healthChecks/0/maxConsecutiveFailures",
                json!(1000),
                &[json!(1001), json!(u32::MAX)],
            ),
            ("/healthChecks/0/port", json!(65_535), &[json!(65_536)]),
            (
                "/upgradeStrategy/minimumHealthCapacity",
                json!(1),
                &[json!(1e300), json!(-1)],
            ),
            (
                "/upgradeStrategy/maximumOverCapacity",
                json!(0),
                &[json!(1.5), json!(-1e300)],
            ),
            (
                "/instances",
                json!(100_000),
                &[json!(100_001), json!(u32::MAX)],
            ),
            (
                "/unreachableStrategy/inactiveAfterSeconds",
                json!(0),
                &[json!(1e300), json!(-1)],
            ),
            (
                "/unreachableStrategy/expungeAfterSeconds",
                json!(year),
                &[json!(1e300)],
            ),
            (
                "/portDefinitions/0/port",
                json!(65_535),
                &[json!(65_536), json!(u32::MAX)],
            ),
            ("/cpus", json!(1), &[json!(1e300), json!(-1)]),
            ("/mem", json!(1), &[json!(1e300), json!(-1)]),
        ];
        let b = base();
        for (field, ok, bad) in table {
            assert_eq!(refusal(&b, field, ok.clone()), None, "{field} = {ok}");
            for v in *bad {
                let r = refusal(&b, field, v.clone());
                assert!(
                    r.as_deref().is_some_and(|e| !e.starts_with("refused, but")),
                    "{field} = {v}: {r:?}"
                );
            }
        }
        assert_eq!(
            refusal(&b, "/taskKillGracePeriodSeconds", json!(1e300)).as_deref(),
            Some("must be between 0 and 3600")
        );
    }

    #[test]
    fn sizes_and_lists_are_bounded_and_named() {
        use serde_json::json;
        let big = |n: usize| json!("x".repeat(n));
        let many = |n: usize, v: Value| Value::Array(vec![v; n]);
        let env = |n: usize| Value::Object((0..n).map(|i| (format!("K{i}"), json!("v"))).collect());
        let b = base();
        let table: &[(&str, Value, Value)] = &[
            ("/cmd", big(limits::MAX_CMD), big(limits::MAX_CMD + 1)),
            ("/env", env(limits::MAX_ENV), env(limits::MAX_ENV + 1)),
            (
                "/labels",
                env(limits::MAX_LABELS),
                env(limits::MAX_LABELS + 1),
            ),
            (
                "/constraints",
                many(64, json!(["hostname", "UNIQUE"])),
                many(65, json!(["hostname", "UNIQUE"])),
            ),
            (
                "/fetch",
                many(64, json!({"uri": "/x"})),
                many(65, json!({"uri": "/x"})),
            ),
            (
                "/dependencies",
                many(64, json!("/db")),
                many(65, json!("/db")),
            ),
            (
                "/container/volumes",
                many(64, json!({"containerPath": "/d", "hostPath": "/h"})),
                many(65, json!({"containerPath": "/d", "hostPath": "/h"})),
            ),
            (
                "/container/docker/image",
                big(100),
                big(limits::MAX_STRING + 1),
            ),
            ("/user", json!("nobody"), big(256)),
        ];
        for (field, ok, bad) in table {
            assert_eq!(
                refusal(&b, field, ok.clone()),
                None,
                "{field} inside its bound"
            );
            let r = refusal(&b, field, bad.clone());
            assert!(
                r.as_deref().is_some_and(|e| !e.starts_with("refused, but")),
                "{field}: {r:?}"
            );
        }
        // args: count and total size; args and cmd are exclusive, so start from an args app.
        let mut a = b.clone();
        a.as_object_mut().expect("o").remove("cmd");
        assert!(refusal(&a, "/args", many(limits::MAX_ARGS + 1, json!("a"))).is_some());
        assert!(refusal(&a, "/args", many(2, big(limits::MAX_CMD / 2 + 1))).is_some());
        assert_eq!(
            refusal(&a, "/args", many(limits::MAX_ARGS, json!("a"))),
            None
        );
        // The agent's own refusals, caught here instead of relaunching forever.
        for (field, v) in [
            ("/container/volumes/0/containerPath", json!("data")),
            ("/container/volumes/0/hostPath", json!("../../etc")),
            ("/container/volumes/0/hostPath", json!("")),
            ("/container/volumes/0/mode", json!("rwx")),
        ] {
            assert!(
                refusal(&b, field, v.clone()).is_some_and(|e| !e.starts_with("refused, but")),
                "{field} = {v}"
            );
        }
        // An env value must be a scalar; a huge key is refused under its own (shortened) name.
        let r = refusal(&b, "/env", json!({"A": {"nested": 1}}));
        assert!(r.is_some(), "{r:?}");
    }

    #[test]
    fn app_ids_are_normalised_and_bounded() {
        use serde_json::json;
        for (given, stored) in [
            ("//orphan", "/orphan"),
            ("/prod//web/", "/prod/web"),
            ("web", "/web"),
            ("///a///b///", "/a/b"),
        ] {
            assert_eq!(normalize_id(given), stored);
            assert_eq!(refusal(&base(), "/id", json!(given)), None, "{given}");
        }
        let seg63 = "a".repeat(63);
        assert_eq!(refusal(&base(), "/id", json!(format!("/{seg63}"))), None);
        let long_ok = format!("/{seg63}/{seg63}/{seg63}/{}", "b".repeat(62));
        assert_eq!(long_ok.len(), 255);
        assert_eq!(refusal(&base(), "/id", json!(long_ok)), None);
        for bad in [
            format!("/{}", "a".repeat(64)),
            format!("/{}", "a".repeat(300)),
            format!("{long_ok}/c"),
            "/".into(),
            "//".into(),
            "/a/../b".into(),
            "/a b".into(),
            "/é".into(),
        ] {
            assert!(
                refusal(&base(), "/id", json!(bad)).is_some_and(|e| !e.starts_with("refused, but")),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_body_id_that_differs_from_the_url_is_refused() {
        use serde_json::json;
        assert_eq!(check_body_id("/base", &json!({"instances": 2})), Ok(()));
        assert_eq!(check_body_id("/base", &json!({"id": "base/"})), Ok(()));
        assert_eq!(check_body_id("/base", &json!({"id": "/base"})), Ok(()));
        for body in [
            json!({"id": "/other"}),
            json!({"id": 7}),
            json!({"id": "/base/x"}),
        ] {
            let e = check_body_id("/base", &body).unwrap_err();
            assert_eq!(e[0].path, "/id", "{body}");
        }
    }

    #[test]
    fn patch_merges_objects_and_replaces_the_rest() {
        let mut base = serde_json::json!({"id": "/a", "instances": 1, "env": {"A": "1", "B": "2"}});
        merge(
            &mut base,
            &serde_json::json!({"instances": 3, "env": {"B": "x"}}),
        );
        assert_eq!(
            base,
            serde_json::json!({"id": "/a", "instances": 3, "env": {"A": "1", "B": "x"}})
        );
    }
}
