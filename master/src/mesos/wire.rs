//! Mesos v1 wire messages as JSON, written from Mesos's documented format (proto field names,
//! enums by name, bytes as base64), and their translation to and from Agora's own messages.
//!
//! Input (`Call` and what it carries) is parsed leniently, as Mesos does ([`super::lenient`]);
//! output is built field by field, with only fields Mesos defines, so that a typed Mesos client
//! parses every event and document.

use std::collections::HashMap;

use agora_proto::v1;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::lenient;
use crate::error::MasterError;

/// The Mesos release whose HTTP API this adapter speaks; `/version` and `master_info` say it, and
/// clients compare it numerically (pymesos turns on features at 1.0.0).
pub const MESOS_VERSION: &str = "1.11.0";

// ---------------------------------------------------------------------------------------------
// Input: scheduler calls
// ---------------------------------------------------------------------------------------------

/// `mesos.v1.scheduler.Call`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Call {
    #[serde(rename = "type", deserialize_with = "lenient::string")]
    pub kind: String,
    #[serde(deserialize_with = "lenient::id")]
    pub framework_id: String,
    pub subscribe: Option<Subscribe>,
    pub accept: Option<Accept>,
    pub decline: Option<Decline>,
    pub revive: Option<Roles>,
    pub suppress: Option<Roles>,
    pub kill: Option<Kill>,
    pub shutdown: Option<Shutdown>,
    pub acknowledge: Option<Acknowledge>,
    pub reconcile: Option<Reconcile>,
    pub message: Option<Message>,
    pub update_framework: Option<UpdateFramework>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Subscribe {
    pub framework_info: Option<FrameworkInfo>,
    #[serde(deserialize_with = "lenient::list")]
    pub suppressed_roles: Vec<String>,
}

/// `Call.UpdateFramework` (Mesos 1.9+). `offer_constraints` (attribute predicates Mesos's
/// allocator applies as a hint) is read and not applied: Agora offers every agent, and Mesos
/// frameworks check the offers they get themselves, as Mesos tells them to.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UpdateFramework {
    pub framework_info: Option<FrameworkInfo>,
    #[serde(deserialize_with = "lenient::list")]
    pub suppressed_roles: Vec<String>,
    pub offer_constraints: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FrameworkInfo {
    #[serde(deserialize_with = "lenient::string")]
    pub user: String,
    #[serde(deserialize_with = "lenient::string")]
    pub name: String,
    #[serde(deserialize_with = "lenient::id")]
    pub id: String,
    #[serde(deserialize_with = "lenient::f64")]
    pub failover_timeout: f64,
    #[serde(deserialize_with = "lenient::bool")]
    pub checkpoint: bool,
    /// Pre-MULTI_ROLE frameworks name one role here.
    #[serde(deserialize_with = "lenient::string")]
    pub role: String,
    #[serde(deserialize_with = "lenient::list")]
    pub roles: Vec<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub hostname: String,
    #[serde(deserialize_with = "lenient::string")]
    pub principal: String,
    #[serde(deserialize_with = "lenient::string")]
    pub webui_url: String,
    #[serde(deserialize_with = "lenient::list")]
    pub capabilities: Vec<Capability>,
    pub labels: Option<Labels>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Capability {
    #[serde(rename = "type", deserialize_with = "lenient::string")]
    pub kind: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Labels {
    #[serde(deserialize_with = "lenient::list")]
    pub labels: Vec<Label>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Label {
    #[serde(deserialize_with = "lenient::string")]
    pub key: String,
    #[serde(deserialize_with = "lenient::string")]
    pub value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Filters {
    #[serde(deserialize_with = "lenient::opt_f64")]
    pub refuse_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Accept {
    #[serde(deserialize_with = "lenient::ids")]
    pub offer_ids: Vec<String>,
    #[serde(deserialize_with = "lenient::list")]
    pub operations: Vec<Operation>,
    pub filters: Option<Filters>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Decline {
    #[serde(deserialize_with = "lenient::ids")]
    pub offer_ids: Vec<String>,
    pub filters: Option<Filters>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Roles {
    #[serde(deserialize_with = "lenient::list")]
    pub roles: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Kill {
    #[serde(deserialize_with = "lenient::id")]
    pub task_id: String,
    #[serde(deserialize_with = "lenient::id")]
    pub agent_id: String,
    pub kill_policy: Option<KillPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Shutdown {
    #[serde(deserialize_with = "lenient::id")]
    pub executor_id: String,
    #[serde(deserialize_with = "lenient::id")]
    pub agent_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Acknowledge {
    #[serde(deserialize_with = "lenient::id")]
    pub agent_id: String,
    #[serde(deserialize_with = "lenient::id")]
    pub task_id: String,
    #[serde(deserialize_with = "lenient::string")]
    pub uuid: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Reconcile {
    #[serde(deserialize_with = "lenient::list")]
    pub tasks: Vec<ReconcileTask>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReconcileTask {
    #[serde(deserialize_with = "lenient::id")]
    pub task_id: String,
    #[serde(deserialize_with = "lenient::id")]
    pub agent_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Message {
    #[serde(deserialize_with = "lenient::id")]
    pub agent_id: String,
    #[serde(deserialize_with = "lenient::id")]
    pub executor_id: String,
    #[serde(deserialize_with = "lenient::string")]
    pub data: String,
}

// ---------------------------------------------------------------------------------------------
// Input: offer operations and what they carry
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Operation {
    #[serde(rename = "type", deserialize_with = "lenient::string")]
    pub kind: String,
    pub launch: Option<Launch>,
    pub launch_group: Option<LaunchGroup>,
    pub reserve: Option<ResourceList>,
    pub unreserve: Option<ResourceList>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Launch {
    #[serde(deserialize_with = "lenient::list")]
    pub task_infos: Vec<TaskInfo>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LaunchGroup {
    pub executor: Option<ExecutorInfo>,
    pub task_group: Option<TaskGroup>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TaskGroup {
    #[serde(deserialize_with = "lenient::list")]
    pub tasks: Vec<TaskInfo>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ResourceList {
    #[serde(deserialize_with = "lenient::list")]
    pub resources: Vec<Resource>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Resource {
    #[serde(deserialize_with = "lenient::string")]
    pub name: String,
    #[serde(rename = "type", deserialize_with = "lenient::string")]
    pub kind: String,
    pub scalar: Option<Scalar>,
    pub ranges: Option<Ranges>,
    pub set: Option<Set>,
    #[serde(deserialize_with = "lenient::string")]
    pub role: String,
    pub reservation: Option<Reservation>,
    /// Reservation refinement (RESERVATION_REFINEMENT frameworks): the last one is in force.
    #[serde(deserialize_with = "lenient::list")]
    pub reservations: Vec<Reservation>,
}

/// `Value.Set`: the items of a SET resource.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Set {
    #[serde(deserialize_with = "lenient::list")]
    pub item: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Scalar {
    #[serde(deserialize_with = "lenient::f64")]
    pub value: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Ranges {
    #[serde(deserialize_with = "lenient::list")]
    pub range: Vec<Range>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Range {
    #[serde(deserialize_with = "lenient::u64")]
    pub begin: u64,
    #[serde(deserialize_with = "lenient::u64")]
    pub end: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Reservation {
    #[serde(rename = "type", deserialize_with = "lenient::string")]
    pub kind: String,
    #[serde(deserialize_with = "lenient::string")]
    pub role: String,
    #[serde(deserialize_with = "lenient::string")]
    pub principal: String,
    pub labels: Option<Labels>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TaskInfo {
    #[serde(deserialize_with = "lenient::string")]
    pub name: String,
    #[serde(deserialize_with = "lenient::id")]
    pub task_id: String,
    #[serde(deserialize_with = "lenient::id")]
    pub agent_id: String,
    /// The pre-1.0 name of `agent_id`, which some clients still send.
    #[serde(deserialize_with = "lenient::id")]
    pub slave_id: String,
    #[serde(deserialize_with = "lenient::list")]
    pub resources: Vec<Resource>,
    pub executor: Option<ExecutorInfo>,
    pub command: Option<CommandInfo>,
    pub container: Option<ContainerInfo>,
    pub health_check: Option<HealthCheck>,
    pub kill_policy: Option<KillPolicy>,
    #[serde(deserialize_with = "lenient::string")]
    pub data: String,
    pub labels: Option<Labels>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ExecutorInfo {
    #[serde(deserialize_with = "lenient::id")]
    pub executor_id: String,
    #[serde(deserialize_with = "lenient::id")]
    pub framework_id: String,
    #[serde(deserialize_with = "lenient::string")]
    pub name: String,
    pub command: Option<CommandInfo>,
    pub container: Option<ContainerInfo>,
    #[serde(deserialize_with = "lenient::list")]
    pub resources: Vec<Resource>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CommandInfo {
    #[serde(deserialize_with = "lenient::string")]
    pub value: String,
    /// Mesos's default is true: `value` runs with `/bin/sh -c`.
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub shell: Option<bool>,
    #[serde(deserialize_with = "lenient::list")]
    pub arguments: Vec<String>,
    pub environment: Option<Environment>,
    #[serde(deserialize_with = "lenient::string")]
    pub user: String,
    #[serde(deserialize_with = "lenient::list")]
    pub uris: Vec<Uri>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Environment {
    #[serde(deserialize_with = "lenient::list")]
    pub variables: Vec<Variable>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Variable {
    #[serde(deserialize_with = "lenient::string")]
    pub name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Uri {
    #[serde(deserialize_with = "lenient::string")]
    pub value: String,
    #[serde(deserialize_with = "lenient::bool")]
    pub executable: bool,
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub extract: Option<bool>,
    #[serde(deserialize_with = "lenient::string")]
    pub output_file: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContainerInfo {
    #[serde(rename = "type", deserialize_with = "lenient::string")]
    pub kind: String,
    pub docker: Option<DockerInfo>,
    #[serde(deserialize_with = "lenient::list")]
    pub volumes: Vec<Volume>,
    #[serde(deserialize_with = "lenient::string")]
    pub hostname: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DockerInfo {
    #[serde(deserialize_with = "lenient::string")]
    pub image: String,
    #[serde(deserialize_with = "lenient::string")]
    pub network: String,
    #[serde(deserialize_with = "lenient::list")]
    pub port_mappings: Vec<PortMapping>,
    #[serde(deserialize_with = "lenient::bool")]
    pub privileged: bool,
    #[serde(deserialize_with = "lenient::list")]
    pub parameters: Vec<Parameter>,
    #[serde(deserialize_with = "lenient::bool")]
    pub force_pull_image: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PortMapping {
    #[serde(deserialize_with = "lenient::u64")]
    pub host_port: u64,
    #[serde(deserialize_with = "lenient::u64")]
    pub container_port: u64,
    #[serde(deserialize_with = "lenient::string")]
    pub protocol: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Parameter {
    #[serde(deserialize_with = "lenient::string")]
    pub key: String,
    #[serde(deserialize_with = "lenient::string")]
    pub value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Volume {
    #[serde(deserialize_with = "lenient::string")]
    pub container_path: String,
    #[serde(deserialize_with = "lenient::string")]
    pub host_path: String,
    #[serde(deserialize_with = "lenient::string")]
    pub mode: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HealthCheck {
    #[serde(rename = "type", deserialize_with = "lenient::string")]
    pub kind: String,
    pub http: Option<HttpCheck>,
    pub tcp: Option<TcpCheck>,
    pub command: Option<CommandInfo>,
    #[serde(deserialize_with = "lenient::opt_f64")]
    pub delay_seconds: Option<f64>,
    #[serde(deserialize_with = "lenient::opt_f64")]
    pub interval_seconds: Option<f64>,
    #[serde(deserialize_with = "lenient::opt_f64")]
    pub timeout_seconds: Option<f64>,
    #[serde(deserialize_with = "lenient::opt_f64")]
    pub grace_period_seconds: Option<f64>,
    #[serde(deserialize_with = "lenient::u64")]
    pub consecutive_failures: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HttpCheck {
    #[serde(deserialize_with = "lenient::string")]
    pub scheme: String,
    #[serde(deserialize_with = "lenient::u64")]
    pub port: u64,
    #[serde(deserialize_with = "lenient::string")]
    pub path: String,
    #[serde(deserialize_with = "lenient::list")]
    pub statuses: Vec<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TcpCheck {
    #[serde(deserialize_with = "lenient::u64")]
    pub port: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KillPolicy {
    pub grace_period: Option<DurationInfo>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DurationInfo {
    #[serde(deserialize_with = "lenient::i64")]
    pub nanoseconds: i64,
}

// ---------------------------------------------------------------------------------------------
// Translation of input into Agora's messages
// ---------------------------------------------------------------------------------------------

/// Mesos's defaults for a subscription: the roles (`roles`, else the old single `role`, else
/// `*`), the capabilities Agora knows (others are ignored), labels as a map.
pub fn framework_info(f: FrameworkInfo) -> v1::FrameworkInfo {
    let roles = if !f.roles.is_empty() {
        f.roles
    } else if !f.role.is_empty() {
        vec![f.role]
    } else {
        vec!["*".to_string()]
    };
    let capabilities = f
        .capabilities
        .iter()
        .filter_map(|c| match c.kind.as_str() {
            "MULTI_ROLE" => Some(v1::FrameworkCapability::MultiRole as i32),
            "PARTITION_AWARE" => Some(v1::FrameworkCapability::PartitionAware as i32),
            "RESERVATION_REFINEMENT" => Some(v1::FrameworkCapability::ReservationRefinement as i32),
            "TASK_KILLING_STATE" => Some(v1::FrameworkCapability::TaskKillingState as i32),
            _ => None,
        })
        .collect();
    v1::FrameworkInfo {
        id: f.id,
        name: f.name,
        user: f.user,
        roles,
        principal: f.principal,
        failover_timeout_seconds: f.failover_timeout,
        capabilities,
        hostname: f.hostname,
        webui_url: f.webui_url,
        checkpoint: f.checkpoint,
        labels: labels(f.labels),
    }
}

fn labels(l: Option<Labels>) -> HashMap<String, String> {
    l.map(|l| l.labels.into_iter().map(|l| (l.key, l.value)).collect())
        .unwrap_or_default()
}

/// Mesos bytes fields are base64.
pub fn bytes(field: &str, b64: &str) -> Result<Vec<u8>, MasterError> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| MasterError::invalid(field, format!("is not base64: {e}")))
}

fn encode(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub fn filters(f: Option<Filters>) -> Option<v1::Filters> {
    f.map(|f| v1::Filters {
        refuse_seconds: f.refuse_seconds,
    })
}

pub fn resource(field: &str, r: Resource) -> Result<v1::Resource, MasterError> {
    let value = match (r.kind.as_str(), r.scalar, r.ranges) {
        ("SET", ..) | (_, None, None) if r.set.is_some() => {
            return Err(MasterError::invalid(field, set_problem(&r.name)))
        }
        ("RANGES", _, Some(rs)) | ("", None, Some(rs)) => v1::resource::Value::Ranges(v1::Ranges {
            range: rs
                .range
                .into_iter()
                .map(|x| v1::Range {
                    begin: x.begin,
                    end: x.end,
                })
                .collect(),
        }),
        ("SCALAR" | "", Some(s), _) => v1::resource::Value::Scalar(s.value),
        (kind, ..) => {
            return Err(MasterError::invalid(
                field,
                format!(
                    "'{}' of type '{kind}' has no matching value (scalar or ranges)",
                    r.name
                ),
            ))
        }
    };
    // With refinement the last reservation is in force; the old form has role + reservation.
    let (role, reservation) = match r.reservations.into_iter().last() {
        Some(last) => {
            let dynamic = last.kind != "STATIC";
            let role = last.role.clone();
            (role, dynamic.then(|| reservation(last)))
        }
        None => (r.role, r.reservation.map(reservation)),
    };
    Ok(v1::Resource {
        name: r.name,
        value: Some(value),
        role: if role.is_empty() { "*".into() } else { role },
        reservation,
    })
}

fn reservation(r: Reservation) -> v1::ReservationInfo {
    v1::ReservationInfo {
        principal: r.principal,
        labels: labels(r.labels),
    }
}

fn resources(field: &str, list: Vec<Resource>) -> Result<Vec<v1::Resource>, MasterError> {
    list.into_iter()
        .enumerate()
        .map(|(i, r)| resource(&format!("{field}[{i}]"), r))
        .collect()
}

fn port(field: &str, p: u64) -> Result<u32, MasterError> {
    u16::try_from(p)
        .map(u32::from)
        .map_err(|_| MasterError::invalid(field, format!("{p} is not a port (0-65535)")))
}

fn command(c: CommandInfo) -> v1::CommandInfo {
    v1::CommandInfo {
        shell: c.shell.unwrap_or(true),
        value: c.value,
        arguments: c.arguments,
        environment: c
            .environment
            .map(|e| e.variables.into_iter().map(|v| (v.name, v.value)).collect())
            .unwrap_or_default(),
        user: c.user,
        uris: c
            .uris
            .into_iter()
            .map(|u| v1::Uri {
                value: u.value,
                executable: u.executable,
                extract: u.extract.unwrap_or(true),
                output_file: u.output_file,
            })
            .collect(),
    }
}

fn container(field: &str, c: ContainerInfo) -> Result<v1::ContainerInfo, MasterError> {
    let kind = match c.kind.as_str() {
        "DOCKER" => v1::ContainerType::Docker,
        "MESOS" => v1::ContainerType::Native,
        "" if c.docker.is_some() => v1::ContainerType::Docker,
        "" => v1::ContainerType::Unspecified,
        other => {
            return Err(MasterError::invalid(
                format!("{field}.type"),
                format!("'{other}' is not DOCKER or MESOS"),
            ))
        }
    };
    let docker = match c.docker {
        None => None,
        Some(d) => {
            let network = match d.network.as_str() {
                "" | "HOST" => v1::DockerNetwork::Host,
                "BRIDGE" => v1::DockerNetwork::Bridge,
                "NONE" => v1::DockerNetwork::None,
                other => {
                    return Err(MasterError::invalid(
                        format!("{field}.docker.network"),
                        format!("'{other}' is not HOST, BRIDGE or NONE"),
                    ))
                }
            };
            let mut port_mappings = Vec::new();
            for (i, m) in d.port_mappings.into_iter().enumerate() {
                let f = format!("{field}.docker.port_mappings[{i}]");
                port_mappings.push(v1::PortMapping {
                    host_port: port(&format!("{f}.host_port"), m.host_port)?,
                    container_port: port(&format!("{f}.container_port"), m.container_port)?,
                    protocol: m.protocol,
                    name: String::new(),
                });
            }
            Some(v1::DockerInfo {
                image: d.image,
                network: network as i32,
                port_mappings,
                force_pull_image: d.force_pull_image,
                privileged: d.privileged,
                parameters: d
                    .parameters
                    .into_iter()
                    .map(|p| v1::Parameter {
                        key: p.key,
                        value: p.value,
                    })
                    .collect(),
            })
        }
    };
    Ok(v1::ContainerInfo {
        r#type: kind as i32,
        docker,
        volumes: c
            .volumes
            .into_iter()
            .map(|v| v1::Volume {
                container_path: v.container_path,
                host_path: v.host_path,
                mode: v.mode,
            })
            .collect(),
        hostname: c.hostname,
        host_aliases: Vec::new(),
    })
}

fn health_check(field: &str, h: HealthCheck) -> Result<v1::HealthCheck, MasterError> {
    use v1::health_check::Type;
    let kind = match h.kind.as_str() {
        "COMMAND" => Type::Command,
        "HTTP" => Type::Http,
        "TCP" => Type::Tcp,
        other => {
            return Err(MasterError::invalid(
                format!("{field}.type"),
                format!("'{other}' is not COMMAND, HTTP or TCP"),
            ))
        }
    };
    let http = match h.http {
        None => None,
        Some(x) => Some(v1::health_check::Http {
            port: port(&format!("{field}.http.port"), x.port)?,
            path: x.path,
            scheme: x.scheme,
            statuses: x.statuses,
        }),
    };
    let tcp = match h.tcp {
        None => None,
        Some(t) => Some(v1::health_check::Tcp {
            port: port(&format!("{field}.tcp.port"), t.port)?,
        }),
    };
    Ok(v1::HealthCheck {
        r#type: kind as i32,
        http,
        tcp,
        command: h.command.map(command),
        // Mesos's defaults.
        grace_period_seconds: h.grace_period_seconds.unwrap_or(10.0),
        interval_seconds: h.interval_seconds.unwrap_or(10.0),
        timeout_seconds: h.timeout_seconds.unwrap_or(20.0),
        consecutive_failures: u32::try_from(h.consecutive_failures).unwrap_or(u32::MAX),
        delay_seconds: h.delay_seconds.unwrap_or(15.0),
    })
}

/// Mesos's `DurationInfo` nanoseconds as seconds (negative is refused by the core's bounds).
pub fn kill_policy(k: KillPolicy) -> v1::KillPolicy {
    let nanos = k
        .grace_period
        .map(|g| g.nanoseconds)
        .unwrap_or(3_000_000_000);
    // i64 nanoseconds → f64 seconds: exact enough for any grace period.
    v1::KillPolicy {
        grace_period_seconds: nanos as f64 / 1e9,
    }
}

fn executor(field: &str, e: ExecutorInfo) -> Result<v1::ExecutorInfo, MasterError> {
    Ok(v1::ExecutorInfo {
        executor_id: e.executor_id,
        framework_id: e.framework_id,
        command: e.command.map(command),
        container: e
            .container
            .map(|c| container(&format!("{field}.container"), c))
            .transpose()?,
        resources: resources(&format!("{field}.resources"), e.resources)?,
        name: e.name,
    })
}

pub fn task_info(field: &str, t: TaskInfo) -> Result<v1::TaskInfo, MasterError> {
    let agent_id = if t.agent_id.is_empty() {
        t.slave_id
    } else {
        t.agent_id
    };
    Ok(v1::TaskInfo {
        name: t.name,
        task_id: t.task_id,
        agent_id,
        resources: resources(&format!("{field}.resources"), t.resources)?,
        command: t.command.map(command),
        container: t
            .container
            .map(|c| container(&format!("{field}.container"), c))
            .transpose()?,
        executor: t
            .executor
            .map(|e| executor(&format!("{field}.executor"), e))
            .transpose()?,
        health_check: t
            .health_check
            .map(|h| health_check(&format!("{field}.health_check"), h))
            .transpose()?,
        kill_policy: t.kill_policy.map(kill_policy),
        labels: labels(t.labels),
        data: if t.data.is_empty() {
            Vec::new()
        } else {
            bytes(&format!("{field}.data"), &t.data)?
        },
        // Mesos's DiscoveryInfo is not read from Mesos-API tasks yet.
        discovery: None,
    })
}

/// Most items of one SET resource.
pub const MAX_SET_ITEMS: usize = crate::bookkeeping::limits::MAX_LIST_ITEMS;
/// Longest item of a SET resource, and longest name of one.
pub const MAX_SET_ITEM_BYTES: usize = crate::bookkeeping::limits::MAX_ID_BYTES;

fn set_problem(name: &str) -> String {
    format!(
        "'{name}' is a SET resource; no Agora agent has SET resources (they have scalars and \
         ranges), so no offer holds it"
    )
}

/// The first SET resource among `list` (at `field`), as the reason a task or operation using it
/// cannot be carried out: `Ok(None)` when there is none. Every SET resource is checked against
/// [`MAX_SET_ITEMS`] and [`MAX_SET_ITEM_BYTES`] first (an error naming the field).
///
/// # Errors
/// [`MasterError::InvalidArgument`] for a SET resource over the bounds.
pub fn set_resource(field: &str, list: &[Resource]) -> Result<Option<String>, MasterError> {
    let mut first = None;
    for (i, r) in list.iter().enumerate() {
        let Some(set) = &r.set else { continue };
        if !(r.kind == "SET" || (r.kind.is_empty() && r.scalar.is_none() && r.ranges.is_none())) {
            continue;
        }
        let at = format!("{field}[{i}]");
        if r.name.len() > MAX_SET_ITEM_BYTES {
            return Err(MasterError::invalid(
                format!("{at}.name"),
                format!("must be at most {MAX_SET_ITEM_BYTES} bytes"),
            ));
        }
        if set.item.len() > MAX_SET_ITEMS {
            return Err(MasterError::invalid(
                format!("{at}.set.item"),
                format!(
                    "must have at most {MAX_SET_ITEMS} items (got {})",
                    set.item.len()
                ),
            ));
        }
        if let Some(j) = set.item.iter().position(|x| x.len() > MAX_SET_ITEM_BYTES) {
            return Err(MasterError::invalid(
                format!("{at}.set.item[{j}]"),
                format!("must be at most {MAX_SET_ITEM_BYTES} bytes"),
            ));
        }
        first.get_or_insert_with(|| {
            format!("{at} {{{}}}: {}", set.item.join(","), set_problem(&r.name))
        });
    }
    Ok(first)
}

/// Why a task cannot run: it (or its executor) uses a SET resource. Its id is checked then, as
/// the TASK_ERROR names it.
fn task_set_resource(field: &str, t: &TaskInfo) -> Result<Option<String>, MasterError> {
    let why = match set_resource(&format!("{field}.resources"), &t.resources)? {
        Some(why) => Some(why),
        None => match &t.executor {
            Some(e) => set_resource(&format!("{field}.executor.resources"), &e.resources)?,
            None => None,
        },
    };
    let max = crate::bookkeeping::limits::MAX_ID_BYTES;
    if why.is_some() && (t.task_id.is_empty() || t.task_id.len() > max) {
        return Err(MasterError::invalid(
            format!("{field}.task_id"),
            format!("must be 1 to {max} bytes"),
        ));
    }
    Ok(why)
}

/// An ACCEPT operation translated for the core. What the core cannot take is taken out, as
/// Mesos treats an operation its offers cannot satisfy: a task using a SET resource is
/// `refused` (TASK_ERROR, the others launch; a whole group with it), a RESERVE or UNRESERVE of one
/// is `dropped` (the other operations go on).
#[derive(Debug, Default)]
pub struct Translated {
    pub operation: Option<v1::Operation>,
    /// Task ids with why.
    pub refused: Vec<(String, String)>,
    /// Why the operation was dropped.
    pub dropped: Option<String>,
}

pub fn operation(field: &str, op: Operation) -> Result<Translated, MasterError> {
    use v1::operation::{Launch as L, LaunchGroup as G, Operation as O, Reserve, Unreserve};
    let missing = |what: &str| MasterError::invalid(format!("{field}.{what}"), "is required");
    let mut refused = Vec::new();
    let operation = match op.kind.as_str() {
        "LAUNCH" => {
            let l = op.launch.ok_or_else(|| missing("launch"))?;
            let mut tasks = Vec::new();
            for (i, t) in l.task_infos.into_iter().enumerate() {
                let at = format!("{field}.launch.task_infos[{i}]");
                if let Some(why) = task_set_resource(&at, &t)? {
                    refused.push((t.task_id, why));
                    continue;
                }
                tasks.push(task_info(&at, t)?);
            }
            O::Launch(L { tasks })
        }
        "LAUNCH_GROUP" => {
            let g = op.launch_group.ok_or_else(|| missing("launch_group"))?;
            let group = g.task_group.map(|g| g.tasks).unwrap_or_default();
            let mut why_not = g
                .executor
                .as_ref()
                .map(|e| {
                    set_resource(
                        &format!("{field}.launch_group.executor.resources"),
                        &e.resources,
                    )
                })
                .transpose()?
                .flatten();
            for (i, t) in group.iter().enumerate() {
                let at = format!("{field}.launch_group.task_group.tasks[{i}]");
                if let Some(why) = task_set_resource(&at, t)? {
                    why_not.get_or_insert(why);
                }
            }
            if let Some(why) = why_not {
                let refused = group
                    .into_iter()
                    .map(|t| (t.task_id, format!("task group refused: {why}")))
                    .collect();
                return Ok(Translated {
                    operation: None,
                    refused,
                    dropped: None,
                });
            }
            let mut tasks = Vec::new();
            for (i, t) in group.into_iter().enumerate() {
                tasks.push(task_info(
                    &format!("{field}.launch_group.task_group.tasks[{i}]"),
                    t,
                )?);
            }
            O::LaunchGroup(G {
                executor: g
                    .executor
                    .map(|e| executor(&format!("{field}.launch_group.executor"), e))
                    .transpose()?,
                task_group: Some(v1::TaskGroupInfo { tasks }),
            })
        }
        "RESERVE" | "UNRESERVE" => {
            let (list, at) = if op.kind == "RESERVE" {
                (
                    op.reserve.ok_or_else(|| missing("reserve"))?.resources,
                    "reserve",
                )
            } else {
                (
                    op.unreserve.ok_or_else(|| missing("unreserve"))?.resources,
                    "unreserve",
                )
            };
            let at = format!("{field}.{at}.resources");
            if let Some(why) = set_resource(&at, &list)? {
                return Ok(Translated {
                    operation: None,
                    refused: Vec::new(),
                    dropped: Some(why),
                });
            }
            let resources = resources(&at, list)?;
            if op.kind == "RESERVE" {
                O::Reserve(Reserve { resources })
            } else {
                O::Unreserve(Unreserve { resources })
            }
        }
        other => {
            return Err(MasterError::invalid(
                format!("{field}.type"),
                format!(
                    "'{other}' is not supported (LAUNCH, LAUNCH_GROUP, RESERVE and UNRESERVE are)"
                ),
            ))
        }
    };
    Ok(Translated {
        operation: Some(v1::Operation {
            operation: Some(operation),
        }),
        refused,
        dropped: None,
    })
}

// ---------------------------------------------------------------------------------------------
// Output: events and the documents operators read
// ---------------------------------------------------------------------------------------------

/// `{"value": id}`.
pub fn id(v: &str) -> Value {
    json!({ "value": v })
}

/// Mesos's `MasterInfo`: `ip` is the IPv4 address as Mesos stores it (network byte order in a
/// uint32, little-endian hosts' reading of it), omitted for a master advertised by name.
pub fn master_info(m: &v1::MasterInfo) -> Value {
    let (host, port) = split_address(&m.address);
    let mut o = json!({
        "id": m.id,
        "port": port,
        "pid": format!("master@{host}:{port}"),
        "hostname": m.hostname,
        "version": MESOS_VERSION,
        "address": { "hostname": m.hostname, "ip": host, "port": port },
    });
    if let (Ok(ip), Some(obj)) = (host.parse::<std::net::Ipv4Addr>(), o.as_object_mut()) {
        obj.insert("ip".into(), json!(u32::from_le_bytes(ip.octets())));
    }
    o
}

/// `host:port` → (host, port); a missing or bad port is 0.
pub fn split_address(address: &str) -> (String, u16) {
    match address.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse().unwrap_or(0),
        ),
        None => (address.to_string(), 0),
    }
}

/// A resource with Mesos's type tag; `allocation_role` adds `allocation_info` (offers, used
/// resources of a framework).
pub fn resource_json(r: &v1::Resource, allocation_role: Option<&str>) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(r.name));
    match &r.value {
        Some(v1::resource::Value::Scalar(s)) => {
            o.insert("type".into(), json!("SCALAR"));
            o.insert("scalar".into(), json!({ "value": s }));
        }
        Some(v1::resource::Value::Ranges(rs)) => {
            o.insert("type".into(), json!("RANGES"));
            let range: Vec<Value> = rs
                .range
                .iter()
                .map(|x| json!({ "begin": x.begin, "end": x.end }))
                .collect();
            o.insert("ranges".into(), json!({ "range": range }));
        }
        None => {
            o.insert("type".into(), json!("SCALAR"));
            o.insert("scalar".into(), json!({ "value": 0.0 }));
        }
    }
    let role = if r.role.is_empty() { "*" } else { &r.role };
    o.insert("role".into(), json!(role));
    if role != "*" {
        let mut res = json!({
            "type": if r.reservation.is_some() { "DYNAMIC" } else { "STATIC" },
            "role": role,
        });
        if let Some(info) = &r.reservation {
            let labels = labels_json(&info.labels);
            let mut old = json!({ "principal": info.principal });
            if let (Some(n), Some(o2)) = (res.as_object_mut(), old.as_object_mut()) {
                n.insert("principal".into(), json!(info.principal));
                if !info.labels.is_empty() {
                    n.insert("labels".into(), labels.clone());
                    o2.insert("labels".into(), labels);
                }
            }
            o.insert("reservation".into(), old);
        }
        o.insert("reservations".into(), json!([res]));
    }
    if let Some(a) = allocation_role {
        o.insert("allocation_info".into(), json!({ "role": a }));
    }
    Value::Object(o)
}

pub fn resources_json(list: &[v1::Resource], allocation_role: Option<&str>) -> Value {
    Value::Array(
        list.iter()
            .map(|r| resource_json(r, allocation_role))
            .collect(),
    )
}

/// `{"labels": [{"key", "value"}]}`, sorted by key so documents are stable.
pub fn labels_json(l: &HashMap<String, String>) -> Value {
    let mut pairs: Vec<(&String, &String)> = l.iter().collect();
    pairs.sort();
    json!({ "labels": pairs.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect::<Vec<_>>() })
}

/// An agent attribute, typed as Mesos types them: a number is SCALAR, anything else TEXT.
pub fn attribute_json(a: &v1::Attribute) -> Value {
    match a.text.trim().parse::<f64>() {
        Ok(n) if n.is_finite() => {
            json!({ "name": a.name, "type": "SCALAR", "scalar": { "value": n } })
        }
        _ => json!({ "name": a.name, "type": "TEXT", "text": { "value": a.text } }),
    }
}

pub fn offer_json(o: &v1::Offer) -> Value {
    let role = if o.allocation_role.is_empty() {
        "*"
    } else {
        &o.allocation_role
    };
    json!({
        "id": id(&o.id),
        "framework_id": id(&o.framework_id),
        "agent_id": id(&o.agent_id),
        "hostname": o.hostname,
        "resources": resources_json(&o.resources, Some(role)),
        "attributes": o.attributes.iter().map(attribute_json).collect::<Vec<_>>(),
        "executor_ids": [],
        "allocation_info": { "role": role },
    })
}

/// A task state's Mesos name. A framework that is not PARTITION_AWARE knows none of the
/// partition states and is told TASK_LOST instead, as Mesos does.
pub fn task_state(state: i32, partition_aware: bool) -> &'static str {
    use v1::TaskState as S;
    match S::try_from(state).unwrap_or(S::Unspecified) {
        S::TaskStaging => "TASK_STAGING",
        S::TaskStarting => "TASK_STARTING",
        S::TaskRunning => "TASK_RUNNING",
        S::TaskKilling => "TASK_KILLING",
        S::TaskFinished => "TASK_FINISHED",
        S::TaskFailed => "TASK_FAILED",
        S::TaskKilled => "TASK_KILLED",
        S::TaskError => "TASK_ERROR",
        S::TaskLost => "TASK_LOST",
        S::TaskDropped if partition_aware => "TASK_DROPPED",
        S::TaskUnreachable if partition_aware => "TASK_UNREACHABLE",
        S::TaskGone if partition_aware => "TASK_GONE",
        S::TaskUnknown if partition_aware => "TASK_UNKNOWN",
        S::TaskDropped | S::TaskUnreachable | S::TaskGone | S::TaskUnknown => "TASK_LOST",
        // A task the master has no state for yet is staging.
        S::Unspecified => "TASK_STAGING",
    }
}

/// A reason's Mesos name; reasons only Agora has map onto Mesos's nearest, or none.
pub fn reason(reason: i32) -> Option<&'static str> {
    use v1::Reason as R;
    Some(match R::try_from(reason).ok()? {
        R::CommandExecutorFailed => "REASON_COMMAND_EXECUTOR_FAILED",
        R::ContainerLaunchFailed | R::ImagePullFailed => "REASON_CONTAINER_LAUNCH_FAILED",
        R::ContainerLimitationMemory => "REASON_CONTAINER_LIMITATION_MEMORY",
        R::ContainerLimitationDisk => "REASON_CONTAINER_LIMITATION_DISK",
        R::ContainerPreempted => "REASON_CONTAINER_PREEMPTED",
        R::ExecutorTerminated => "REASON_EXECUTOR_TERMINATED",
        R::ExecutorRegistrationTimeout => "REASON_EXECUTOR_REGISTRATION_TIMEOUT",
        R::FrameworkRemoved => "REASON_FRAMEWORK_REMOVED",
        R::InvalidOffers => "REASON_INVALID_OFFERS",
        R::AgentUnreachable | R::AgentRemoved => "REASON_AGENT_REMOVED",
        R::AgentRestarted => "REASON_AGENT_RESTARTED",
        R::AgentDisconnected => "REASON_AGENT_DISCONNECTED",
        R::AgentDraining => "REASON_AGENT_DRAINING",
        R::MasterDisconnected => "REASON_MASTER_DISCONNECTED",
        R::Reconciliation => "REASON_RECONCILIATION",
        R::TaskInvalid => "REASON_TASK_INVALID",
        R::TaskUnknown => "REASON_TASK_UNKNOWN",
        R::TaskKilledDuringLaunch => "REASON_TASK_KILLED_DURING_LAUNCH",
        R::TaskHealthCheckStatusUpdated => "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED",
        R::ResourcesUnknown => "REASON_RESOURCES_UNKNOWN",
        R::TaskUnauthorized => "REASON_TASK_UNAUTHORIZED",
        R::Unspecified | R::CommandExited | R::KillRequested | R::TaskUnhealthy => return None,
    })
}

fn source(source: i32) -> Option<&'static str> {
    match v1::StatusSource::try_from(source).ok()? {
        v1::StatusSource::SourceMaster => Some("SOURCE_MASTER"),
        v1::StatusSource::SourceAgent => Some("SOURCE_AGENT"),
        v1::StatusSource::SourceExecutor => Some("SOURCE_EXECUTOR"),
        v1::StatusSource::Unspecified => None,
    }
}

/// `TaskStatus`: `uuid` only when the update expects an acknowledgement; `agent_id` whenever
/// the task has one (always with a uuid: clients acknowledge with it).
pub fn status_json(s: &v1::TaskStatus, partition_aware: bool) -> Value {
    let mut o = Map::new();
    o.insert("task_id".into(), id(&s.task_id));
    o.insert("state".into(), json!(task_state(s.state, partition_aware)));
    if let Some(r) = reason(s.reason) {
        o.insert("reason".into(), json!(r));
    }
    if !s.message.is_empty() {
        o.insert("message".into(), json!(s.message));
    }
    if let Some(src) = source(s.source) {
        o.insert("source".into(), json!(src));
    }
    if !s.agent_id.is_empty() {
        o.insert("agent_id".into(), id(&s.agent_id));
    }
    if !s.executor_id.is_empty() {
        o.insert("executor_id".into(), id(&s.executor_id));
    }
    o.insert("timestamp".into(), json!(s.timestamp));
    if !s.uuid.is_empty() {
        o.insert("uuid".into(), json!(encode(&s.uuid)));
    }
    if let Some(h) = s.healthy {
        o.insert("healthy".into(), json!(h));
    }
    if !s.data.is_empty() {
        o.insert("data".into(), json!(encode(&s.data)));
    }
    Value::Object(o)
}

/// One scheduler event as Mesos's JSON; `None` for nothing to send.
pub fn event_json(e: &v1::Event, partition_aware: bool) -> Option<Value> {
    use v1::event::Event as E;
    Some(match e.event.as_ref()? {
        E::Subscribed(s) => json!({
            "type": "SUBSCRIBED",
            "subscribed": {
                "framework_id": id(&s.framework_id),
                "heartbeat_interval_seconds": s.heartbeat_interval_seconds,
                "master_info": s.master_info.as_ref().map(master_info),
            },
        }),
        E::Offers(o) => json!({
            "type": "OFFERS",
            "offers": { "offers": o.offers.iter().map(offer_json).collect::<Vec<_>>() },
        }),
        E::Rescind(r) => json!({ "type": "RESCIND", "rescind": { "offer_id": id(&r.offer_id) } }),
        E::Update(u) => json!({
            "type": "UPDATE",
            "update": { "status": status_json(u.status.as_ref()?, partition_aware) },
        }),
        E::Message(m) => json!({
            "type": "MESSAGE",
            "message": {
                "agent_id": id(&m.agent_id),
                "executor_id": id(&m.executor_id),
                "data": encode(&m.data),
            },
        }),
        E::Failure(f) => {
            let mut failure = Map::new();
            failure.insert("agent_id".into(), id(&f.agent_id));
            if !f.executor_id.is_empty() {
                failure.insert("executor_id".into(), id(&f.executor_id));
            }
            if let Some(s) = f.status {
                failure.insert("status".into(), json!(s));
            }
            json!({ "type": "FAILURE", "failure": failure })
        }
        E::Error(er) => error_event(&er.message),
        E::Heartbeat(_) => heartbeat_event(),
    })
}

pub fn error_event(message: &str) -> Value {
    json!({ "type": "ERROR", "error": { "message": message } })
}

pub fn heartbeat_event() -> Value {
    json!({ "type": "HEARTBEAT" })
}

/// Compact JSON with every non-ASCII character escaped (`\uXXXX`, surrogate pairs above the
/// BMP): clients that split the stream on newlines and count characters as bytes (mesoshttp)
/// then read each record right.
pub fn ascii_json(v: &Value) -> String {
    // Straight into a buffer (`to_string` goes through `fmt::Display`, a third slower).
    let s = serde_json::to_string(v).unwrap_or_default();
    if s.is_ascii() {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// One RecordIO record: the length in bytes in decimal, a newline, the bytes.
pub fn record(payload: &[u8]) -> Vec<u8> {
    let len = payload.len().to_string();
    let mut out = Vec::with_capacity(len.len() + 1 + payload.len());
    out.extend_from_slice(len.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader of RecordIO written here from the format's definition, to check the writer
    /// against: `<decimal length>\n<that many bytes>`, repeated, nothing between records.
    fn read_records(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let nl = bytes
                .iter()
                .position(|b| *b == b'\n')
                .expect("a length line");
            let len: usize = std::str::from_utf8(&bytes[..nl])
                .expect("ascii")
                .parse()
                .expect("decimal");
            out.push(bytes[nl + 1..nl + 1 + len].to_vec());
            bytes = &bytes[nl + 1 + len..];
        }
        out
    }

    #[test]
    fn recordio_frames_byte_for_byte() {
        assert_eq!(record(b"hello"), b"5\nhello".to_vec());
        assert_eq!(record(b""), b"0\n".to_vec());
        let heartbeat = ascii_json(&heartbeat_event());
        assert_eq!(heartbeat, r#"{"type":"HEARTBEAT"}"#);
        let mut stream = record(heartbeat.as_bytes());
        assert_eq!(stream, b"20\n{\"type\":\"HEARTBEAT\"}".to_vec());
        // A multi-byte payload: the length counts bytes (after escaping, bytes = characters).
        let error = ascii_json(&error_event("caf\u{e9} \u{1f600}"));
        assert_eq!(
            error,
            r#"{"error":{"message":"caf\u00e9 \ud83d\ude00"},"type":"ERROR"}"#
        );
        stream.extend(record(error.as_bytes()));
        let records = read_records(&stream);
        assert_eq!(records.len(), 2);
        assert_eq!(records[1], error.as_bytes());
        let back: Value = serde_json::from_slice(&records[1]).expect("json");
        assert_eq!(back["error"]["message"], "caf\u{e9} \u{1f600}");
    }

    #[test]
    fn a_launch_call_as_pymesos_and_mesoshttp_send_it_translates() {
        let call: Call = serde_json::from_str(
            r#"{
              "type": "ACCEPT", "framework_id": {"value": "fw"},
              "unknown_field": [1, 2],
              "accept": {
                "offer_ids": {"value": "o1"},
                "filters": {"refuse_seconds": "7.5"},
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
                  "name": "t", "task_id": {"value": "t1"}, "slave_id": {"value": "a1"},
                  "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}, "role": "*",
                     "allocation_info": {"role": "*"}},
                    {"name": "ports", "type": "RANGES",
                     "ranges": {"range": {"begin": "31000", "end": 31001}}}
                  ],
                  "command": {"value": "echo hi",
                              "environment": {"variables": [{"name": "A", "value": "1"}]}},
                  "labels": {"labels": [{"key": "k", "value": "v"}]},
                  "kill_policy": {"grace_period": {"nanoseconds": 2500000000}},
                  "data": "aGk="
                }]}}]
              }
            }"#,
        )
        .expect("parses");
        assert_eq!(call.kind, "ACCEPT");
        assert_eq!(call.framework_id, "fw");
        let accept = call.accept.expect("accept");
        assert_eq!(accept.offer_ids, vec!["o1".to_string()]);
        assert_eq!(
            filters(accept.filters).and_then(|f| f.refuse_seconds),
            Some(7.5)
        );
        let op = operation(
            "accept.operations[0]",
            accept.operations.into_iter().next().expect("one"),
        )
        .expect("translates");
        let Some(v1::operation::Operation::Launch(l)) = op.operation.and_then(|o| o.operation)
        else {
            panic!("not a launch");
        };
        let t = &l.tasks[0];
        assert_eq!(t.task_id, "t1");
        assert_eq!(t.agent_id, "a1", "slave_id stands for agent_id");
        assert_eq!(t.resources[0].value, Some(v1::resource::Value::Scalar(0.5)));
        assert_eq!(t.resources[0].role, "*");
        assert_eq!(
            t.resources[1].value,
            Some(v1::resource::Value::Ranges(v1::Ranges {
                range: vec![v1::Range {
                    begin: 31000,
                    end: 31001
                }]
            }))
        );
        assert_eq!(t.resources[1].role, "*", "no role is unreserved");
        let cmd = t.command.as_ref().expect("command");
        assert!(cmd.shell, "Mesos's shell defaults to true");
        assert_eq!(cmd.environment.get("A").map(String::as_str), Some("1"));
        assert_eq!(t.labels.get("k").map(String::as_str), Some("v"));
        assert_eq!(
            t.kill_policy.as_ref().map(|k| k.grace_period_seconds),
            Some(2.5)
        );
        assert_eq!(t.data, b"hi");
    }

    #[test]
    fn bad_inputs_name_the_field() {
        let bad = |json: &str| {
            let op: Operation = serde_json::from_str(json).expect("parses");
            operation("accept.operations[0]", op)
                .unwrap_err()
                .to_string()
        };
        let e = bad(
            r#"{"type":"LAUNCH","launch":{"task_infos":[{"resources":[{"name":"x","type":"RANGES","scalar":{"value":1}}]}]}}"#,
        );
        assert!(
            e.starts_with("accept.operations[0].launch.task_infos[0].resources[0]"),
            "{e}"
        );
        let e = bad(
            r#"{"type":"LAUNCH","launch":{"task_infos":[{"container":{"type":"DOCKER","docker":{"image":"x","port_mappings":[{"host_port":70000,"container_port":80}]}}}]}}"#,
        );
        assert!(e.contains("port_mappings[0].host_port"), "{e}");
        let e = bad(r#"{"type":"CREATE"}"#);
        assert!(e.starts_with("accept.operations[0].type"), "{e}");
        let e = bad(r#"{"type":"LAUNCH"}"#);
        assert!(e.starts_with("accept.operations[0].launch"), "{e}");
        assert!(bytes("acknowledge.uuid", "not base64!")
            .unwrap_err()
            .to_string()
            .starts_with("acknowledge.uuid"));
        // A number where a string is expected is taken; an object where a number is, is not.
        assert!(serde_json::from_str::<Filters>(r#"{"refuse_seconds":{"x":1}}"#).is_err());
    }

    #[test]
    fn set_resources_are_read_bounded_and_refuse_only_what_uses_them() {
        let op: Operation = serde_json::from_str(
            r#"{"type":"LAUNCH","launch":{"task_infos":[
              {"task_id":{"value":"plain"},"command":{"value":"true"},
               "resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.1}}]},
              {"task_id":{"value":"gpu"},"command":{"value":"true"},
               "resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.1}},
                            {"name":"gpu_ids","type":"SET","set":{"item":["g0","g1"]},"role":"*"}]},
              {"task_id":{"value":"exec"},"executor":{"executor_id":{"value":"e"},
               "resources":[{"name":"disks","set":{"item":"d0"}}]}}
            ]}}"#,
        )
        .expect("parses");
        let t = operation("accept.operations[0]", op).expect("translates");
        let Some(v1::operation::Operation::Launch(l)) = t.operation.and_then(|o| o.operation)
        else {
            panic!("not a launch");
        };
        assert_eq!(l.tasks.len(), 1);
        assert_eq!(l.tasks[0].task_id, "plain");
        assert_eq!(t.refused.len(), 2);
        assert_eq!(t.refused[0].0, "gpu");
        assert!(
            t.refused[0].1.starts_with(
                "accept.operations[0].launch.task_infos[1].resources[1] {g0,g1}: 'gpu_ids' is a SET"
            ),
            "{}",
            t.refused[0].1
        );
        // Without a type, a `set` alone makes it a SET (a single item where a list is expected).
        assert_eq!(t.refused[1].0, "exec");
        assert!(
            t.refused[1].1.starts_with(
                "accept.operations[0].launch.task_infos[2].executor.resources[0] {d0}"
            ),
            "{}",
            t.refused[1].1
        );
        // A group with one SET task is refused whole; a RESERVE of one is dropped.
        let group: Operation = serde_json::from_str(
            r#"{"type":"LAUNCH_GROUP","launch_group":{"task_group":{"tasks":[
              {"task_id":{"value":"a"},"resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":1}}]},
              {"task_id":{"value":"b"},"resources":[{"name":"s","type":"SET","set":{"item":[]}}]}]}}}"#,
        )
        .expect("parses");
        let t = operation("accept.operations[1]", group).expect("translates");
        assert!(t.operation.is_none());
        let ids: Vec<&str> = t.refused.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(t.refused[0].1.starts_with("task group refused: "));
        let reserve: Operation = serde_json::from_str(
            r#"{"type":"RESERVE","reserve":{"resources":[{"name":"s","type":"SET","set":{"item":["x"]},"role":"web"}]}}"#,
        )
        .expect("parses");
        let t = operation("accept.operations[2]", reserve).expect("translates");
        assert!(t.operation.is_none() && t.refused.is_empty());
        assert!(t
            .dropped
            .is_some_and(|d| d.starts_with("accept.operations[2].reserve.resources[0] {x}")));
        // Bounds, naming the field.
        let with_items = |items: Vec<String>| -> String {
            let op: Operation = serde_json::from_value(json!({
                "type": "LAUNCH",
                "launch": {"task_infos": [{"task_id": {"value": "t"},
                    "resources": [{"name": "s", "type": "SET", "set": {"item": items}}]}]}
            }))
            .expect("parses");
            operation("accept.operations[0]", op)
                .unwrap_err()
                .to_string()
        };
        let e = with_items(vec!["i".into(); MAX_SET_ITEMS + 1]);
        assert!(
            e.starts_with("accept.operations[0].launch.task_infos[0].resources[0].set.item:"),
            "{e}"
        );
        let e = with_items(vec!["ok".into(), "x".repeat(MAX_SET_ITEM_BYTES + 1)]);
        assert!(
            e.starts_with("accept.operations[0].launch.task_infos[0].resources[0].set.item[1]"),
            "{e}"
        );
    }

    #[test]
    fn set_resources_map_both_ways_between_json_and_protobuf() {
        let json_form = json!({
            "name": "gpu_ids", "type": "SET", "set": {"item": ["g0", "g1"]}, "role": "*"
        });
        let bytes =
            super::super::protobuf::encode("mesos.v1.Resource", &json_form).expect("encodes");
        let back = super::super::protobuf::decode("mesos.v1.Resource", &bytes).expect("decodes");
        assert_eq!(back["type"], "SET");
        assert_eq!(back["set"]["item"], json!(["g0", "g1"]));
        assert_eq!(back["name"], "gpu_ids");
        let from_pb: Resource = serde_json::from_value(back).expect("reads");
        let from_json: Resource = serde_json::from_value(json_form).expect("reads");
        for r in [&from_pb, &from_json] {
            assert_eq!(r.kind, "SET");
            assert_eq!(
                r.set.as_ref().map(|s| s.item.clone()),
                Some(vec!["g0".to_string(), "g1".to_string()])
            );
        }
    }

    #[test]
    fn reservations_in_both_mesos_forms_become_agora_reservations() {
        let old: Resource = serde_json::from_str(
            r#"{"name":"cpus","type":"SCALAR","scalar":{"value":1},"role":"web",
                "reservation":{"principal":"p","labels":{"labels":[{"key":"a","value":"b"}]}}}"#,
        )
        .expect("old");
        let refined: Resource = serde_json::from_str(
            r#"{"name":"cpus","type":"SCALAR","scalar":{"value":1},
                "reservations":[{"type":"DYNAMIC","role":"web","principal":"p",
                                 "labels":{"labels":[{"key":"a","value":"b"}]}}]}"#,
        )
        .expect("refined");
        let a = resource("r", old).expect("old translates");
        let b = resource("r", refined).expect("refined translates");
        assert_eq!(a, b);
        assert_eq!(a.role, "web");
        assert_eq!(
            a.reservation.as_ref().map(|r| r.principal.as_str()),
            Some("p")
        );
        // And back out: both forms, so either kind of framework reads it.
        let out = resource_json(&a, Some("web"));
        assert_eq!(out["role"], "web");
        assert_eq!(out["reservation"]["principal"], "p");
        assert_eq!(out["reservations"][0]["type"], "DYNAMIC");
        assert_eq!(out["allocation_info"]["role"], "web");
        let again: Resource = serde_json::from_value(out).expect("reads its own output");
        assert_eq!(resource("r", again).expect("round trip"), a);
    }

    #[test]
    fn events_have_mesos_field_names_enums_by_name_and_base64_uuids() {
        let update = v1::Event {
            event: Some(v1::event::Event::Update(v1::event::Update {
                status: Some(v1::TaskStatus {
                    task_id: "t1".into(),
                    state: v1::TaskState::TaskDropped as i32,
                    reason: v1::Reason::InvalidOffers as i32,
                    message: "stale".into(),
                    source: v1::StatusSource::SourceMaster as i32,
                    agent_id: "a1".into(),
                    uuid: vec![1, 2, 3],
                    timestamp: 12.5,
                    ..Default::default()
                }),
            })),
        };
        let v = event_json(&update, false).expect("an event");
        assert_eq!(
            v,
            json!({"type": "UPDATE", "update": {"status": {
                "task_id": {"value": "t1"}, "state": "TASK_LOST",
                "reason": "REASON_INVALID_OFFERS", "message": "stale",
                "source": "SOURCE_MASTER", "agent_id": {"value": "a1"},
                "timestamp": 12.5, "uuid": "AQID"}}})
        );
        let aware = event_json(&update, true).expect("an event");
        assert_eq!(aware["update"]["status"]["state"], "TASK_DROPPED");
        // No uuid: nothing to acknowledge, so none is sent (clients ack whenever it is there).
        let reconciled = v1::TaskStatus {
            task_id: "t1".into(),
            state: v1::TaskState::TaskRunning as i32,
            reason: v1::Reason::CommandExited as i32,
            ..Default::default()
        };
        let s = status_json(&reconciled, false);
        assert!(s.get("uuid").is_none());
        assert!(s.get("agent_id").is_none());
        assert!(s.get("reason").is_none(), "Agora-only reasons are not sent");
        let offers = v1::Event {
            event: Some(v1::event::Event::Offers(v1::event::Offers {
                offers: vec![v1::Offer {
                    id: "o1".into(),
                    framework_id: "fw".into(),
                    agent_id: "a1".into(),
                    hostname: "h1".into(),
                    resources: vec![v1::Resource {
                        name: "mem".into(),
                        value: Some(v1::resource::Value::Scalar(128.0)),
                        role: String::new(),
                        reservation: None,
                    }],
                    attributes: vec![
                        v1::Attribute {
                            name: "rack".into(),
                            text: "r1".into(),
                        },
                        v1::Attribute {
                            name: "zone".into(),
                            text: "3".into(),
                        },
                    ],
                    allocation_role: "*".into(),
                    ..Default::default()
                }],
            })),
        };
        let v = event_json(&offers, false).expect("offers");
        let o = &v["offers"]["offers"][0];
        assert_eq!(o["id"], json!({"value": "o1"}));
        assert_eq!(o["agent_id"], json!({"value": "a1"}));
        assert_eq!(
            o["resources"][0],
            json!({"name": "mem", "type": "SCALAR", "scalar": {"value": 128.0}, "role": "*",
                   "allocation_info": {"role": "*"}})
        );
        assert_eq!(o["attributes"][0]["type"], "TEXT");
        assert_eq!(
            o["attributes"][1],
            json!({"name": "zone", "type": "SCALAR", "scalar": {"value": 3.0}})
        );
        let subscribed = v1::Event {
            event: Some(v1::event::Event::Subscribed(v1::event::Subscribed {
                framework_id: "fw".into(),
                heartbeat_interval_seconds: 15.0,
                master_info: Some(v1::MasterInfo {
                    id: "m".into(),
                    hostname: "h".into(),
                    address: "10.0.0.4:5050".into(),
                    ..Default::default()
                }),
                stream_id: "secret".into(),
            })),
        };
        let v = event_json(&subscribed, false).expect("subscribed");
        assert_eq!(v["subscribed"]["framework_id"], json!({"value": "fw"}));
        assert_eq!(
            v["subscribed"]["master_info"]["pid"],
            "master@10.0.0.4:5050"
        );
        assert_eq!(
            v["subscribed"]["master_info"]["address"],
            json!({"hostname": "h", "ip": "10.0.0.4", "port": 5050})
        );
        assert!(
            !v.to_string().contains("secret"),
            "the stream id travels in the header only"
        );
    }

    #[test]
    fn a_subscription_takes_mesos_defaults() {
        let f: FrameworkInfo = serde_json::from_str(
            r#"{"user":"root","name":"x","role":"web","failover_timeout":"100",
                "capabilities":[{"type":"GPU_RESOURCES"},{"type":"PARTITION_AWARE"}]}"#,
        )
        .expect("parses");
        let info = framework_info(f);
        assert_eq!(info.roles, vec!["web".to_string()]);
        assert_eq!(info.failover_timeout_seconds, 100.0);
        assert_eq!(
            info.capabilities,
            vec![v1::FrameworkCapability::PartitionAware as i32]
        );
        let bare = framework_info(FrameworkInfo::default());
        assert_eq!(bare.roles, vec!["*".to_string()]);
    }
}
