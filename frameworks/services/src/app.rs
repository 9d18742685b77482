//! App definitions as Marathon accepts them: both networking forms, Marathon's defaults, PATCH
//! merging, and validation that names every bad field (`/cpus`, `/container/docker/image`, …).
//! Unknown fields are ignored, as Marathon clients send many.

use agora_framework::bounds::{seconds_within, too_long, too_many};
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

pub mod limits;

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

pub(crate) fn valid_segment(s: &str) -> bool {
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
        // The mesh balances as marathon-lb's HAPROXY_{n}_BALANCE says, for the values it has.
        for (k, v) in &self.labels {
            let known = agora_proto::MESH_BALANCE_VALUES
                .iter()
                .any(|b| b.eq_ignore_ascii_case(v.trim()));
            if agora_proto::is_balance_label(k) && !known {
                bad(
                    &format!("/labels/{}", pointer_escape(k)),
                    format!(
                        "{k} must be one of {} (the routing mesh's balancing)",
                        agora_proto::MESH_BALANCE_VALUES.join(", ")
                    ),
                );
            }
        }
        if let Some(p) = crate::global::label_problem(self) {
            bad(&format!("/labels/{}", crate::global::GLOBAL_LABEL), p);
        }
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
mod tests;
