//! Marathon 1.x's JSON shapes, as its typed clients read them: tasks, apps (`AppInfo` with the
//! `embed` options), a stored app version, `/v2/info`, and the `text/plain` task list load
//! balancers read. Typed clients (PyPI `marathon` builds objects from `**kwargs`) raise on any key
//! they do not know, so every shape here has exactly Marathon's keys, and the tests pin them.
//!
//! ```text
//!  AppState (core) ──app_info(embed)──▶ {…App, version, versionInfo, tasksRunning…, tasks[Task]}
//!  TaskRecord      ──TaskJson─────────▶ {id, appId, host, ports, servicePorts, slaveId, …}
//!  apps            ──endpoints_text───▶ "web\t10000\thost:31000\thost:31001\t\n"
//! ```
//!
//! Two deliberate choices where Marathon releases differ: the task statistics go under
//! `taskStats` (Marathon 1.1–1.4's name, the one the clients accept; later releases renamed it
//! `tasksStats`), and deprecated or DC/OS-only fields (`ports`, `uris`, `ipAddress`, `tty`,
//! `executorResources`, `resourceLimits`, `check`) are left out as Marathon 1.x leaves them out
//! or as the clients would reject them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::app::App;
use crate::core::{only_instances_differ, version_of, AppState, ServicesCore, TaskRecord};

/// A time as Marathon writes it (`2015-09-17T09:32:42.598Z`): the clients parse exactly this form.
pub fn timestamp(t: DateTime<Utc>) -> String {
    version_of(t)
}

/// The app's service ports, in port index order: `portDefinitions[].port` (host networking) or
/// `container.portMappings[].servicePort` (bridge); a 0 (not assigned) is left out, as Marathon
/// never shows one. Marathon's `/v2/tasks` shows the app's current ones on every task.
pub fn service_ports(app: &App) -> Vec<u32> {
    crate::ports::service_ports(app)
}

/// A task as Marathon shows it, serialized straight from the record: `GET
/// /v2/apps?embed=apps.tasks` lists every task, and building a `Value` tree per task made it cost
/// ~20 ms per 1,000 tasks.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskJson<'a> {
    id: &'a str,
    app_id: &'a str,
    host: &'a str,
    ports: &'a [u64],
    service_ports: Vec<u32>,
    slave_id: &'a str,
    staged_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    version: &'a str,
    state: &'a str,
    ip_addresses: [IpAddressJson<'a>; 1],
    health_check_results: Vec<HealthJson<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IpAddressJson<'a> {
    ip_address: &'a str,
    protocol: &'static str,
}

/// One health result (Marathon's `Health`): the agent runs the checks and reports the verdict.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HealthJson<'a> {
    alive: bool,
    consecutive_failures: u32,
    task_id: &'a str,
    instance_id: &'a str,
}

impl<'a> TaskJson<'a> {
    /// `service_ports`: the app's ([`service_ports`]).
    pub fn new(t: &'a TaskRecord, service_ports: Vec<u32>) -> Self {
        let v6 = t.host.parse::<std::net::Ipv6Addr>().is_ok();
        TaskJson {
            id: &t.id,
            app_id: &t.app_id,
            host: &t.host,
            ports: &t.ports,
            service_ports,
            slave_id: &t.agent_id,
            staged_at: timestamp(t.staged_at),
            started_at: t.started_at.map(timestamp),
            version: &t.version,
            state: &t.state,
            ip_addresses: [IpAddressJson {
                ip_address: &t.host,
                protocol: if v6 { "IPv6" } else { "IPv4" },
            }],
            health_check_results: t
                .healthy
                .map(|alive| HealthJson {
                    alive,
                    consecutive_failures: u32::from(!alive),
                    task_id: &t.id,
                    instance_id: &t.id,
                })
                .into_iter()
                .collect(),
        }
    }
}

impl TaskJson<'_> {
    /// The task's state (`TASK_RUNNING`, …).
    pub fn state(&self) -> &str {
        self.state
    }
}

/// The tasks of an app, in Marathon's shape.
pub fn tasks_of(st: &AppState) -> Vec<TaskJson<'_>> {
    let ports = service_ports(&st.app);
    st.tasks
        .values()
        .map(|t| TaskJson::new(t, ports.clone()))
        .collect()
}

/// A task as a `Value` (a reply with one or a few tasks).
pub fn task_value(t: &TaskRecord, service_ports: Vec<u32>) -> Value {
    serde_json::to_value(TaskJson::new(t, service_ports)).unwrap_or(Value::Null)
}

/// What `embed=` asks for (Marathon's `AppInfo.Embed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Embed {
    pub tasks: bool,
    pub counts: bool,
    pub deployments: bool,
    pub last_task_failure: bool,
    pub task_stats: bool,
    pub readiness: bool,
}

impl Embed {
    /// Reads `embed` values as Marathon does: with an `apps.`, `app.` or `group.apps.` prefix or
    /// none; `tasks` brings `deployments` along, `failures` (deprecated) means tasks, last task
    /// failure and deployments; unknown values are ignored.
    pub fn parse<'s>(values: impl IntoIterator<Item = &'s str>) -> Embed {
        let mut e = Embed::default();
        for v in values {
            let bare = ["group.apps.", "apps.", "app."]
                .iter()
                .find_map(|p| v.strip_prefix(p))
                .unwrap_or(v);
            match bare {
                "tasks" => {
                    e.tasks = true;
                    e.deployments = true;
                }
                "failures" => {
                    e.tasks = true;
                    e.last_task_failure = true;
                    e.deployments = true;
                }
                "deployments" => e.deployments = true,
                "lastTaskFailure" => e.last_task_failure = true,
                "counts" => e.counts = true,
                "taskStats" => e.task_stats = true,
                "readiness" => e.readiness = true,
                _ => {}
            }
        }
        e
    }

    /// `GET /v2/apps`: counts and deployments always.
    pub fn for_list<'s>(values: impl IntoIterator<Item = &'s str>) -> Embed {
        Embed {
            counts: true,
            deployments: true,
            ..Embed::parse(values)
        }
    }

    /// `GET /v2/apps/{id}`: counts, tasks, last task failure and deployments always.
    pub fn for_app<'s>(values: impl IntoIterator<Item = &'s str>) -> Embed {
        Embed {
            counts: true,
            tasks: true,
            last_task_failure: true,
            deployments: true,
            ..Embed::parse(values)
        }
    }
}

/// An app definition as Marathon writes it (`Raml.toRaml(app)`): the app's fields with
/// Marathon's defaults for those Agora does not use, `version` and `versionInfo`.
pub fn app_definition(
    app: &App,
    version: &str,
    last_scaling_at: &str,
    last_config_change_at: &str,
) -> Map<String, Value> {
    let mut m = match serde_json::to_value(app) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let host_networking = app.networks.iter().all(|n| n.mode == "host");
    if m.get("networks")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        m.insert("networks".into(), json!([{ "mode": "host" }]));
    }
    if !host_networking {
        // Marathon shows port definitions for host networking, port mappings otherwise.
        m.remove("portDefinitions");
    }
    if let Some(Value::Object(c)) = m.get_mut("container") {
        if host_networking {
            c.remove("portMappings");
        }
        if let Some(Value::Array(pms)) = c.get_mut("portMappings") {
            for pm in pms.iter_mut() {
                // The clients accept `tcp`, `udp` and `udp,tcp` (Marathon's spelling of both).
                if pm.get("protocol").and_then(Value::as_str) == Some("tcp,udp") {
                    pm["protocol"] = json!("udp,tcp");
                }
            }
        }
        if let Some(Value::Array(vols)) = c.get_mut("volumes") {
            for v in vols.iter_mut() {
                let mode = v
                    .get("mode")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_ascii_uppercase();
                v["mode"] = json!(if mode.is_empty() { "RW".into() } else { mode });
            }
        }
    }
    if let Some(Value::Array(hcs)) = m.get_mut("healthChecks") {
        for hc in hcs.iter_mut() {
            // Marathon's command check is `{"value": "…"}`.
            if let Some(Value::String(cmd)) = hc.get("command").cloned() {
                hc["command"] = json!({ "value": cmd });
            }
        }
    }
    m.insert("gpus".into(), json!(0));
    m.insert("executor".into(), json!(""));
    m.insert("readinessChecks".into(), json!([]));
    m.insert("secrets".into(), json!({}));
    m.insert("version".into(), json!(version));
    m.insert(
        "versionInfo".into(),
        json!({ "lastScalingAt": last_scaling_at, "lastConfigChangeAt": last_config_change_at }),
    );
    m
}

/// The app as it was at stored version `version`, with the version info it had then: the last
/// config change is the latest version up to it that changed more than `instances`.
pub fn app_at_version(st: &AppState, version: &str) -> Option<Map<String, Value>> {
    let at = st.versions.iter().position(|(v, _)| v == version)?;
    let (_, app) = &st.versions[at];
    let config_at = if version == st.version {
        st.config_version.clone()
    } else {
        let mut config_at = st.versions[0].0.clone();
        for w in st.versions[..=at].windows(2) {
            if !only_instances_differ(&w[0].1, &w[1].1) {
                config_at = w[1].0.clone();
            }
        }
        config_at
    };
    Some(app_definition(app, version, version, &config_at))
}

/// The keys of Marathon's `TaskFailure`.
const TASK_FAILURE_KEYS: &[&str] = &[
    "appId",
    "host",
    "message",
    "state",
    "taskId",
    "timestamp",
    "version",
    "slaveId",
];

/// Task counts as Marathon computes them: staged = `TASK_STAGING`, running = `TASK_RUNNING`,
/// healthy = has a health result and it is alive, unhealthy = has a failing one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub staged: usize,
    pub running: usize,
    pub healthy: usize,
    pub unhealthy: usize,
}

impl Counts {
    pub fn of<'t>(tasks: impl IntoIterator<Item = &'t TaskRecord>) -> Counts {
        let mut c = Counts::default();
        for t in tasks {
            c.staged += usize::from(t.state == "TASK_STAGING");
            c.running += usize::from(t.state == "TASK_RUNNING");
            c.healthy += usize::from(t.healthy == Some(true));
            c.unhealthy += usize::from(t.healthy == Some(false));
        }
        c
    }
}

/// Marathon's `TaskStatsByVersion`: counts and life times (seconds since `startedAt`) of all
/// tasks, of those started after the last scaling, of those with the latest config and of those
/// with an older one; a group without tasks is left out.
pub fn task_stats(st: &AppState, now: DateTime<Utc>) -> Value {
    let stats = |tasks: Vec<&TaskRecord>| -> Option<Value> {
        if tasks.is_empty() {
            return None;
        }
        let counts = Counts::of(tasks.iter().copied());
        let mut life: Vec<f64> = tasks
            .iter()
            .filter_map(|t| t.started_at)
            .map(|s| (now - s).num_milliseconds() as f64 / 1000.0)
            .collect();
        life.sort_by(f64::total_cmp);
        let mut s = json!({ "counts": counts });
        if !life.is_empty() {
            let average = life.iter().sum::<f64>() / life.len() as f64;
            s["lifeTime"] =
                json!({ "averageSeconds": average, "medianSeconds": life[life.len() / 2] });
        }
        Some(json!({ "stats": s }))
    };
    let all: Vec<&TaskRecord> = st.tasks.values().collect();
    let scaled_at = DateTime::parse_from_rfc3339(&st.version).map(|d| d.with_timezone(&Utc));
    let mut out = Map::new();
    let groups = [
        (
            "startedAfterLastScaling",
            all.iter()
                .copied()
                .filter(|t| scaled_at.is_ok_and(|s| t.staged_at >= s))
                .collect::<Vec<_>>(),
        ),
        (
            "withLatestConfig",
            all.iter()
                .copied()
                .filter(|t| t.version == st.config_version)
                .collect(),
        ),
        (
            "withOutdatedConfig",
            all.iter()
                .copied()
                .filter(|t| t.version != st.config_version)
                .collect(),
        ),
        ("totalSummary", all.clone()),
    ];
    for (name, tasks) in groups {
        if let Some(s) = stats(tasks) {
            out.insert(name.into(), s);
        }
    }
    Value::Object(out)
}

/// An app with what `embed` asks for (Marathon's `AppInfo`); the tasks, if embedded, are
/// serialized without an intermediate `Value`.
#[derive(Serialize)]
pub struct AppInfoJson<'a> {
    #[serde(flatten)]
    app: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks: Option<Vec<TaskJson<'a>>>,
}

/// See [`AppInfoJson`].
pub fn app_info<'a>(
    st: &'a AppState,
    core: &ServicesCore,
    embed: Embed,
    now: DateTime<Utc>,
) -> AppInfoJson<'a> {
    let mut m = app_definition(&st.app, &st.version, &st.version, &st.config_version);
    if embed.counts {
        let c = Counts::of(st.tasks.values());
        m.insert("tasksStaged".into(), json!(c.staged));
        m.insert("tasksRunning".into(), json!(c.running));
        m.insert("tasksHealthy".into(), json!(c.healthy));
        m.insert("tasksUnhealthy".into(), json!(c.unhealthy));
    }
    if embed.deployments {
        let ids: Vec<Value> = core
            .deployments()
            .iter()
            .filter(|d| d.affects(&st.app.id))
            .map(|d| json!({ "id": d.id }))
            .collect();
        m.insert("deployments".into(), Value::Array(ids));
    }
    if embed.readiness {
        // Agora runs no readiness checks: none has a result.
        m.insert("readinessCheckResults".into(), json!([]));
    }
    if embed.last_task_failure {
        if let Some(Value::Object(f)) = &st.last_task_failure {
            let f: Map<String, Value> = f
                .iter()
                .filter(|(k, _)| TASK_FAILURE_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            m.insert("lastTaskFailure".into(), Value::Object(f));
        }
    }
    if embed.task_stats {
        m.insert("taskStats".into(), task_stats(st, now));
    }
    AppInfoJson {
        app: m,
        tasks: embed.tasks.then(|| tasks_of(st)),
    }
}

/// An app info as a `Value`.
pub fn app_info_value(
    st: &AppState,
    core: &ServicesCore,
    embed: Embed,
    now: DateTime<Utc>,
) -> Value {
    serde_json::to_value(app_info(st, core, embed, now)).unwrap_or(Value::Null)
}

/// The app id as the text task list writes it: the leading `/` dropped, `/` → `_`.
pub fn safe_path(id: &str) -> String {
    id.trim_start_matches('/').replace('/', "_")
}

/// `GET /v2/tasks` with `Accept: text/plain`, as Marathon writes it for load balancers: per app
/// and service port, `id<TAB>servicePort<TAB>host:hostPort<TAB>…` over the running tasks (the
/// host port of the same index, 0 if the task has none); an app without service ports gets one
/// line `id<TAB> <TAB>host host …`.
pub fn endpoints_text<'a>(apps: impl IntoIterator<Item = &'a AppState>) -> String {
    let mut out = String::new();
    for st in apps {
        let id = safe_path(&st.app.id);
        let running: Vec<&TaskRecord> = st
            .tasks
            .values()
            .filter(|t| t.state == "TASK_RUNNING")
            .collect();
        let ports = service_ports(&st.app);
        if ports.is_empty() {
            out.push_str(&id);
            out.push_str("\t \t");
            for t in &running {
                out.push_str(&t.host);
                out.push(' ');
            }
            out.push('\n');
            continue;
        }
        for (i, port) in ports.iter().enumerate() {
            out.push_str(&format!("{id}\t{port}\t"));
            for t in &running {
                let host_port = t.ports.get(i).copied().unwrap_or(0);
                out.push_str(&format!("{}:{host_port}\t", t.host));
            }
            out.push('\n');
        }
    }
    out
}

/// The longest `label` selector `/v2/apps` takes.
pub const MAX_SELECTOR: usize = 4096;

/// One term of Marathon's label selector (`GET /v2/apps?label=…`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelTerm {
    Exists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// Marathon's label selector: comma-separated terms that must all hold, each `key` (present),
/// `key==value`, `key!=value`, `key in (a, b)` or `key notin (a, b)`; every term needs the key
/// present (`!=` and `notin` too, as in Marathon).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector(Vec<LabelTerm>);

impl LabelSelector {
    /// # Errors
    /// A message naming what is wrong, for a 400.
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        if s.len() > MAX_SELECTOR {
            return Err(format!(
                "the label selector is longer than {MAX_SELECTOR} bytes"
            ));
        }
        let mut terms = Vec::new();
        let mut depth = 0usize;
        let mut start = 0;
        let mut parts = Vec::new();
        for (i, ch) in s.char_indices() {
            match ch {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        let list = |rest: &str| -> Result<Vec<String>, String> {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("'{rest}' is not a list like (a, b)"))?;
            Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
        };
        let key = |k: &str| -> Result<String, String> {
            let k = k.trim();
            if k.is_empty() || k.contains(char::is_whitespace) {
                Err(format!("'{k}' is not a label key"))
            } else {
                Ok(k.to_string())
            }
        };
        for part in parts {
            let part = part.trim();
            if part.is_empty() {
                return Err(format!("'{s}' has an empty term"));
            }
            let term = if let Some((k, v)) = part.split_once("==") {
                LabelTerm::Equals(key(k)?, v.trim().to_string())
            } else if let Some((k, v)) = part.split_once("!=") {
                LabelTerm::NotEquals(key(k)?, v.trim().to_string())
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                LabelTerm::NotIn(key(k)?, list(rest)?)
            } else if let Some((k, rest)) = part.split_once(" in ") {
                LabelTerm::In(key(k)?, list(rest)?)
            } else {
                LabelTerm::Exists(key(part)?)
            };
            terms.push(term);
        }
        Ok(LabelSelector(terms))
    }

    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.0.iter().all(|t| match t {
            LabelTerm::Exists(k) => labels.contains_key(k),
            LabelTerm::Equals(k, v) => labels.get(k) == Some(v),
            LabelTerm::NotEquals(k, v) => labels.get(k).is_some_and(|l| l != v),
            LabelTerm::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            LabelTerm::NotIn(k, vs) => labels.get(k).is_some_and(|l| !vs.contains(l)),
        })
    }
}

/// `zk://user:secret@host/path` without the credentials (Marathon's `redactedConnectionString`).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, None), |(a, p)| (a, Some(p)));
    let Some((_, hosts)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let path = path.map(|p| format!("/{p}")).unwrap_or_default();
    format!("{scheme}://xxxxxxxx:xxxxxxxx@{hosts}{path}")
}

/// What `/v2/info` reports.
pub struct InfoInputs<'a> {
    pub config: &'a crate::ServicesConfig,
    /// This instance's advertised `host:port` (the leader: only the leader answers).
    pub me: &'a str,
    pub framework_id: Option<String>,
    pub https: bool,
}

/// `/v2/info` with Marathon's keys and objects, Agora's real values where it has them; settings
/// Agora does not have are left out (the clients default them), as Marathon leaves out unset
/// ones. `event_subscriber` is `null`: Agora streams events on `/v2/events` and keeps no HTTP
/// callback subscribers, Marathon's value in that case.
pub fn info(i: &InfoInputs<'_>) -> Value {
    let c = i.config;
    let port: Option<u16> = i.me.rsplit(':').next().and_then(|p| p.parse().ok());
    let host = i.me.rsplit_once(':').map_or(i.me, |(h, _)| h);
    let scheme = if i.https { "https" } else { "http" };
    let mut marathon = json!({
        "failover_timeout": c.failover_timeout.as_secs(),
        "features": [],
        "framework_name": c.framework_name,
        "ha": c.zk.is_some(),
        "hostname": host,
        "master": redact(&c.master),
        "mesos_role": c.role,
        "webui_url": format!("{scheme}://{}", i.me),
    });
    if !c.master.starts_with("zk://") {
        marathon["mesos_leader_ui_url"] = json!(format!("{scheme}://{}/", c.master));
    }
    let zookeeper = json!({
        "zk": c.zk.as_deref().map(redact),
        "zk_max_versions": crate::core::VERSIONS_KEPT,
        "zk_session_timeout": u64::try_from(c.zk_session_timeout.as_millis()).unwrap_or(u64::MAX),
    });
    let http = if i.https {
        json!({ "https_port": port })
    } else {
        json!({ "http_port": port })
    };
    json!({
        "name": "agora-services",
        "version": env!("CARGO_PKG_VERSION"),
        "buildref": option_env!("AGORA_BUILDREF").unwrap_or("unknown"),
        "elected": true,
        "leader": i.me,
        "frameworkId": i.framework_id,
        "marathon_config": marathon,
        "zookeeper_config": zookeeper,
        "http_config": http,
        "event_subscriber": Value::Null,
    })
}

#[cfg(test)]
mod tests;
