//! Compose files as Marathon groups, pure: `agora stack deploy -c docker-compose.yml NAME` reads
//! a Compose file (the Compose spec, "version 3") into group `/NAME` with one Docker app per
//! service, `/NAME/<service>`.
//!
//! ```text
//!  YAML ──parse──▶ Stack { services (checked, each nearly an app) }
//!                    │  global services need the agents that match their constraints
//!  agents ──────────▶ Stack::group(agents) ──▶ Marathon group JSON (PUT /v2/groups/NAME),
//!                                             checked by the same reader the API uses
//! ```
//!
//! Every key the translation does not support, anywhere in the file, is refused and named
//! (`service web: unsupported key 'build'`), never dropped; a bad value names its service and
//! key (`service web: ports[0]: ...`). All errors of a file come back together.
//!
//! What each supported key becomes is listed in the README ("Compose stacks").

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::app::{limits, valid_segment};

/// Bytes of a Compose file.
pub const MAX_FILE: usize = 1024 * 1024;
/// Services in one file.
pub const MAX_SERVICES: usize = 200;
/// Characters of a stack or service name (a DNS label).
pub const MAX_NAME: usize = limits::MAX_ID_SEGMENT;
/// `deploy.replicas` is at most this.
pub const MAX_REPLICAS: u32 = 10_000;
/// The label on every app of a stack, naming the stack (as Docker's `docker stack deploy` does).
pub const STACK_LABEL: &str = "com.docker.stack.namespace";
/// `cpus` of a service without `deploy.resources` (Compose sets no reservation; Marathon needs one).
pub const DEFAULT_CPUS: f64 = 0.1;
/// `mem` (MiB) of a service without `deploy.resources`.
pub const DEFAULT_MEM: f64 = 128.0;

/// The stack an app belongs to: `NAME` when the app is `/NAME/<service>` and carries
/// `com.docker.stack.namespace=NAME` (as every app `agora stack deploy` makes does; a group put
/// through `/v2/groups` with that label is a stack too), with its service name.
pub fn stack_of(app: &crate::app::App) -> Option<(&str, &str)> {
    let stack = app.labels.get(STACK_LABEL)?;
    let (top, service) = app.id.strip_prefix('/')?.split_once('/')?;
    (top == stack.as_str() && !service.is_empty() && !service.contains('/'))
        .then_some((top, service))
}

/// The names a task of `app` resolves to its agent's routing mesh (`ContainerInfo.host_aliases`),
/// as a Swarm task resolves its stack's services: for every app of the same stack (see
/// [`stack_of`], `app` itself included) that has a service port, its service name (`db`) and its
/// full name `<stack>_<service>` (`shop_db`). Then `db:5432` — the published port, which is the
/// service port — reaches a healthy `db` task through the mesh of whichever agent the task is on.
/// Empty for an app outside a stack. Sorted; names a hosts file cannot hold are left out; at most
/// [`agora_proto::host_aliases::MAX_HOST_ALIASES`].
pub fn stack_aliases<'a>(
    app: &crate::app::App,
    apps: impl IntoIterator<Item = &'a crate::app::App>,
) -> Vec<String> {
    use agora_proto::host_aliases::{alias_problem, MAX_HOST_ALIASES};
    let Some((stack, _)) = stack_of(app) else {
        return Vec::new();
    };
    let mut names = BTreeSet::new();
    for other in apps {
        let Some((s, service)) = stack_of(other) else {
            continue;
        };
        if s != stack || crate::ports::service_ports(other).is_empty() {
            continue;
        }
        for name in [service.to_string(), format!("{stack}_{service}")] {
            if alias_problem(&name).is_none() {
                names.insert(name);
            }
        }
    }
    names.into_iter().take(MAX_HOST_ALIASES).collect()
}

/// One problem in a Compose file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeError {
    /// The service it is in (`None`: the top level, or the file itself).
    pub service: Option<String>,
    /// The key, dotted, with list indices: `deploy.resources.limits.memory`, `ports[1]`.
    pub key: String,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A key the translation does not support.
    Unsupported,
    /// A value that cannot be used, and why.
    Bad(String),
}

impl std::fmt::Display for ComposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.service, &self.problem) {
            (Some(s), Problem::Unsupported) => {
                write!(f, "service {s}: unsupported key '{}'", self.key)
            }
            (None, Problem::Unsupported) => write!(f, "unsupported top-level key '{}'", self.key),
            (Some(s), Problem::Bad(m)) if self.key.is_empty() => write!(f, "service {s}: {m}"),
            (Some(s), Problem::Bad(m)) => write!(f, "service {s}: {}: {m}", self.key),
            (None, Problem::Bad(m)) => write!(f, "{}: {m}", self.key),
        }
    }
}

/// Every problem of a Compose file, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ComposeErrors(pub Vec<ComposeError>);

/// An agent as global services count them: its hostname and attributes (`node.labels.*`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Agent {
    pub hostname: String,
    pub attributes: BTreeMap<String, String>,
}

/// `deploy.update_config`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Update {
    /// Tasks replaced at once; 0: all.
    parallelism: u32,
    start_first: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Service {
    name: String,
    /// The app JSON, but `instances` and `upgradeStrategy`.
    app: Map<String, Value>,
    /// `None`: `deploy.mode: global`.
    replicas: Option<u32>,
    constraints: Vec<Vec<String>>,
    update: Update,
}

/// A Compose file, read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    name: String,
    services: Vec<Service>,
}

/// Reads a Compose file for stack `name`. `env` gives the deploying user's environment
/// variables, which `environment` entries without a value take (as in Compose).
///
/// # Errors
/// Every problem of the file ([`ComposeErrors`]).
pub fn parse(
    name: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Stack, ComposeErrors> {
    let mut errs = Errors::default();
    if !valid_name(name) {
        errs.top(
            "NAME",
            format!(
                "stack name '{}' must be 1-{MAX_NAME} lowercase letters, digits, '-' and '.', not \
                 starting or ending with '-'",
                short(name)
            ),
        );
    }
    if text.len() > MAX_FILE {
        errs.top(
            "file",
            format!("is {} bytes; at most {MAX_FILE} are read", text.len()),
        );
        return Err(errs.done());
    }
    let doc = match read_yaml(text) {
        Ok(v) => v,
        Err(e) => {
            errs.top("file", e);
            return Err(errs.done());
        }
    };
    let Value::Object(top) = doc else {
        errs.top("file", "must be a mapping with a 'services' key".into());
        return Err(errs.done());
    };
    for k in top.keys() {
        if !matches!(k.as_str(), "version" | "name" | "services") && !k.starts_with("x-") {
            errs.0.push(ComposeError {
                service: None,
                key: k.clone(),
                problem: Problem::Unsupported,
            });
        }
    }
    let services = match top.get("services") {
        Some(Value::Object(s)) if !s.is_empty() => s.clone(),
        Some(Value::Object(_)) | None | Some(Value::Null) => {
            errs.top("services", "the file defines no service".into());
            return Err(errs.done());
        }
        Some(_) => {
            errs.top("services", "must be a mapping of service names".into());
            return Err(errs.done());
        }
    };
    if services.len() > MAX_SERVICES {
        errs.top(
            "services",
            format!(
                "has {} services; at most {MAX_SERVICES} are allowed",
                services.len()
            ),
        );
        return Err(errs.done());
    }
    let names: BTreeSet<String> = services.keys().cloned().collect();
    let mut out = Vec::new();
    for (sname, body) in &services {
        if !valid_name(sname) {
            errs.top(
                &format!("services.{}", short(sname)),
                format!(
                    "a service name must be 1-{MAX_NAME} lowercase letters, digits, '-' and '.', \
                     not starting or ending with '-' (it becomes the app id /{name}/<service>)"
                ),
            );
            continue;
        }
        let mut s = ServiceErrors {
            service: sname,
            errs: &mut errs,
        };
        if let Some(svc) = service(name, sname, body, &names, env, &mut s) {
            out.push(svc);
        }
    }
    // A published port is one service port in the whole cluster: one service may hold it.
    let mut published: BTreeMap<u64, &str> = BTreeMap::new();
    for svc in &out {
        for (i, pm) in port_mappings(&svc.app).iter().enumerate() {
            if let Some(p) = pm.get("servicePort").and_then(Value::as_u64) {
                if let Some(other) = published.insert(p, &svc.name) {
                    errs.0.push(ComposeError {
                        service: Some(svc.name.clone()),
                        key: format!("ports[{i}]"),
                        problem: Problem::Bad(format!(
                            "published port {p} is published by service {other} too"
                        )),
                    });
                }
            }
        }
    }
    if errs.0.is_empty() {
        Ok(Stack {
            name: name.to_string(),
            services: out,
        })
    } else {
        Err(errs.done())
    }
}

fn port_mappings(app: &Map<String, Value>) -> Vec<Value> {
    app.get("container")
        .and_then(|c| c.get("portMappings"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

impl Stack {
    /// The stack's name (the group is `/NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a service runs in `deploy.mode: global`: [`Stack::group`] then needs the
    /// cluster's active agents.
    pub fn needs_agents(&self) -> bool {
        self.services.iter().any(|s| s.replicas.is_none())
    }

    /// The services' names, in file order (sorted).
    pub fn services(&self) -> Vec<&str> {
        self.services.iter().map(|s| s.name.as_str()).collect()
    }

    /// The Marathon group: `{"id": "/NAME", "apps": [...]}`. A global service gets the label
    /// `AGORA_GLOBAL=true` (the services framework then runs one instance on every agent its
    /// constraints allow, following agents as they join and leave: [`crate::global`]), a
    /// `hostname UNIQUE` constraint, and as its first `instances` the agents of `agents` (the
    /// active ones) that its constraints allow.
    ///
    /// # Errors
    /// What the services API's own reader refuses in the apps, named by service and app field
    /// (a translation this module got wrong, or a value only that reader bounds).
    pub fn group(&self, agents: &[Agent]) -> Result<Value, ComposeErrors> {
        let mut apps = Vec::new();
        for s in &self.services {
            let mut app = s.app.clone();
            let mut constraints = s.constraints.clone();
            let instances = match s.replicas {
                Some(n) => n,
                None => {
                    let n = crate::global::allowed_agents(
                        &constraints,
                        agents.iter().map(|a| (a.hostname.as_str(), &a.attributes)),
                    );
                    constraints.push(vec!["hostname".into(), "UNIQUE".into()]);
                    u32::try_from(n).unwrap_or(u32::MAX).min(MAX_REPLICAS)
                }
            };
            app.insert("instances".into(), json!(instances));
            if !constraints.is_empty() {
                app.insert("constraints".into(), json!(constraints));
            }
            app.insert(
                "upgradeStrategy".into(),
                upgrade_strategy(s.update, instances),
            );
            apps.push(Value::Object(app));
        }
        let group = json!({ "id": format!("/{}", self.name), "apps": apps });
        let body: crate::group::GroupBody = serde_json::from_value(group.clone()).map_err(|e| {
            ComposeErrors(vec![ComposeError {
                service: None,
                key: "group".into(),
                problem: Problem::Bad(e.to_string()),
            }])
        })?;
        if let Err(fields) = crate::group::read_group(&format!("/{}", self.name), &body) {
            let errs = fields
                .into_iter()
                .map(|f| {
                    // `/apps/3/cpus` → service #3, key `cpus`.
                    let mut parts = f.path.trim_start_matches('/').splitn(3, '/');
                    let (service, key) = match (parts.next(), parts.next(), parts.next()) {
                        (Some("apps"), Some(i), rest) => (
                            i.parse::<usize>()
                                .ok()
                                .and_then(|i| self.services.get(i))
                                .map(|s| s.name.clone()),
                            format!("(app field /{})", rest.unwrap_or("")),
                        ),
                        _ => (None, format!("(group field {})", f.path)),
                    };
                    ComposeError {
                        service,
                        key,
                        problem: Problem::Bad(f.errors.join("; ")),
                    }
                })
                .collect();
            return Err(ComposeErrors(errs));
        }
        Ok(group)
    }
}

/// Makes a redeploy that only changes replicas a scale, not a restart: Marathon restarts an app
/// whose `upgradeStrategy` changed, and ours follows the instance count (Compose's parallelism
/// is a number of tasks, Marathon's capacities are fractions). For each app of `group` that
/// differs from its deployed version (`deployed`, apps as `GET /v2/groups` shows them) only in
/// `instances` and `upgradeStrategy`, the deployed strategy is kept. Any other change sends the
/// strategy computed for the new count. Returns the ids of the apps that became plain scales.
pub fn keep_strategy_on_scale(group: &mut Value, deployed: &[Value]) -> Vec<String> {
    let mut scaled = Vec::new();
    let Some(apps) = group.get_mut("apps").and_then(Value::as_array_mut) else {
        return scaled;
    };
    for app in apps.iter_mut() {
        let Some(id) = app.get("id").and_then(Value::as_str).map(str::to_string) else {
            continue;
        };
        let Some(old) = deployed
            .iter()
            .find(|d| d.get("id").and_then(Value::as_str) == Some(&id))
        else {
            continue;
        };
        let (Ok(mut new_app), Ok(mut old_app)) = (
            crate::app::from_value(app.clone()),
            crate::app::from_value(old.clone()),
        ) else {
            continue;
        };
        new_app.normalize();
        old_app.normalize();
        // Service ports of 0 take back the deployed ones (as the services framework does).
        if let (Some(n), Some(o)) = (new_app.container.as_mut(), old_app.container.as_ref()) {
            for (pm, opm) in n.port_mappings.iter_mut().zip(&o.port_mappings) {
                if pm.service_port.unwrap_or(0) == 0 {
                    pm.service_port = opm.service_port;
                }
            }
        }
        new_app.instances = old_app.instances;
        new_app.upgrade_strategy = old_app.upgrade_strategy;
        new_app.version = None;
        old_app.version = None;
        if new_app == old_app {
            if let Some(m) = app.as_object_mut() {
                m.insert("upgradeStrategy".into(), json!(old_app.upgrade_strategy));
            }
            scaled.push(id);
        }
    }
    scaled
}

/// `update_config` as Marathon's upgrade strategy. `start-first`: up to `parallelism` new tasks
/// start before old ones stop (`maximumOverCapacity`); `stop-first`: up to `parallelism` old
/// tasks stop first (`minimumHealthCapacity` below 1, no extra task).
fn upgrade_strategy(u: Update, instances: u32) -> Value {
    let n = f64::from(instances.max(1));
    let share = if u.parallelism == 0 {
        1.0
    } else {
        (f64::from(u.parallelism) / n).min(1.0)
    };
    // Rounded down to 1/1000 so that Marathon's `ceil(instances × capacity)` never keeps one
    // task more than asked.
    let third = |v: f64| (v * 1000.0).floor() / 1000.0;
    if u.start_first {
        json!({ "minimumHealthCapacity": 1.0, "maximumOverCapacity": (share * 1000.0).ceil() / 1000.0 })
    } else {
        json!({ "minimumHealthCapacity": third(1.0 - share), "maximumOverCapacity": 0.0 })
    }
}

fn valid_name(s: &str) -> bool {
    s.len() <= MAX_NAME && valid_segment(s)
}

/// At most 64 characters of a name, for messages.
fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// YAML (merge keys `<<` applied) as JSON.
fn read_yaml(text: &str) -> Result<Value, String> {
    let mut y: yaml_serde::Value =
        yaml_serde::from_str(text).map_err(|e| format!("is not valid YAML: {e}"))?;
    y.apply_merge()
        .map_err(|e| format!("a merge key '<<' cannot be applied: {e}"))?;
    serde_json::to_value(&y).map_err(|e| {
        format!("holds a value that has no JSON form (a non-string key, a tagged value): {e}")
    })
}

#[derive(Default)]
struct Errors(Vec<ComposeError>);

impl Errors {
    fn top(&mut self, key: &str, m: String) {
        self.0.push(ComposeError {
            service: None,
            key: key.to_string(),
            problem: Problem::Bad(m),
        });
    }

    fn done(self) -> ComposeErrors {
        ComposeErrors(self.0)
    }
}

/// The errors of one service.
struct ServiceErrors<'a> {
    service: &'a str,
    errs: &'a mut Errors,
}

impl ServiceErrors<'_> {
    fn bad(&mut self, key: &str, m: impl Into<String>) {
        self.errs.0.push(ComposeError {
            service: Some(self.service.to_string()),
            key: key.to_string(),
            problem: Problem::Bad(m.into()),
        });
    }

    fn unsupported(&mut self, key: &str) {
        self.errs.0.push(ComposeError {
            service: Some(self.service.to_string()),
            key: key.to_string(),
            problem: Problem::Unsupported,
        });
    }

    /// Refuses every key of `map` not in `allowed` (extension keys `x-*` are allowed, as the
    /// spec says).
    fn only(&mut self, prefix: &str, map: &Map<String, Value>, allowed: &[&str]) {
        for k in map.keys() {
            if !allowed.contains(&k.as_str()) && !k.starts_with("x-") {
                self.unsupported(&join_key(prefix, k));
            }
        }
    }

    fn count(&self) -> usize {
        self.errs
            .0
            .iter()
            .filter(|e| e.service.as_deref() == Some(self.service))
            .count()
    }
}

fn join_key(prefix: &str, k: &str) -> String {
    let k = short(k);
    if prefix.is_empty() {
        k
    } else {
        format!("{prefix}.{k}")
    }
}

/// A scalar as text (`8080`, `true`, `"x"`).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Compose's `$$` is a literal `$`; `$VAR` and `${VAR}` would be interpolated, which this
/// translation does not do: refused rather than passed on as text.
fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('$') => {
                chars.next();
                out.push('$');
            }
            Some(n) if *n == '{' || *n == '_' || n.is_ascii_alphabetic() => {
                return Err(format!(
                    "'{}' uses variable interpolation ($VAR, ${{VAR}}), which is not supported; \
                     write the value, or '$$' for a literal '$'",
                    short(s)
                ))
            }
            _ => out.push('$'),
        }
    }
    Ok(out)
}

/// Every string (and map key) below `v`, unescaped; errors at their keys.
fn unescape_all(v: &mut Value, key: &str, s: &mut ServiceErrors<'_>) {
    match v {
        Value::String(t) => match unescape(t) {
            Ok(u) => *t = u,
            Err(e) => s.bad(key, e),
        },
        Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                unescape_all(x, &format!("{key}[{i}]"), s);
            }
        }
        Value::Object(m) => {
            let old = std::mem::take(m);
            for (k, mut x) in old {
                let sub = join_key(key, &k);
                unescape_all(&mut x, &sub, s);
                match unescape(&k) {
                    Ok(u) => {
                        m.insert(u, x);
                    }
                    Err(e) => s.bad(&sub, e),
                }
            }
        }
        _ => {}
    }
}

/// A command as a list of words: a list as is, a string split as a shell would (no shell runs).
fn words(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => shlex::split(s)
            .ok_or_else(|| "has an unclosed quote or a trailing backslash".to_string()),
        Value::Array(a) => a
            .iter()
            .map(|x| text(x).ok_or_else(|| "must be a list of strings".to_string()))
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err("must be a string or a list of strings".into()),
    }
}

/// `KEY=VALUE` list or `KEY: VALUE` map. A list entry without `=` (`None` value) or a null map
/// value takes the value from `missing` (`None`: left out).
fn pairs(
    v: &Value,
    key: &str,
    s: &mut ServiceErrors<'_>,
    missing: &dyn Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut put = |k: &str, val: Option<String>, at: &str, s: &mut ServiceErrors<'_>| {
        if k.is_empty() || k.contains(['=', '\0']) {
            s.bad(at, "a name must be non-empty, without '=' or NUL");
            return;
        }
        if let Some(val) = val.or_else(|| missing(k)) {
            out.insert(k.to_string(), val);
        }
    };
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let at = format!("{key}[{i}]");
                match text(x) {
                    Some(t) => match t.split_once('=') {
                        Some((k, val)) => put(k, Some(val.to_string()), &at, s),
                        None => put(&t, None, &at, s),
                    },
                    None => s.bad(&at, "must be a string KEY=VALUE"),
                }
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                let at = join_key(key, k);
                match x {
                    Value::Null => put(k, None, &at, s),
                    x => match text(x) {
                        Some(t) => put(k, Some(t), &at, s),
                        None => s.bad(&at, "must be a string, number or boolean"),
                    },
                }
            }
        }
        Value::Null => {}
        _ => s.bad(key, "must be a list of KEY=VALUE or a mapping"),
    }
    out
}

/// A port number 1-65535 from a number or a string.
fn port(v: &Value) -> Result<u16, String> {
    let t = text(v).ok_or("must be a port number")?;
    match t.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ if t.contains('-') => Err(format!(
            "'{}': port ranges are not supported; list each port",
            short(&t)
        )),
        _ => Err(format!("'{}' is not a port (1-65535)", short(&t))),
    }
}

fn protocol(v: &str) -> Result<String, String> {
    match v.to_ascii_lowercase().as_str() {
        p @ ("tcp" | "udp") => Ok(p.to_string()),
        _ => Err(format!("protocol '{}' must be tcp or udp", short(v))),
    }
}

/// One `ports` entry as a Marathon port mapping.
fn port_entry(v: &Value, key: &str, s: &mut ServiceErrors<'_>) -> Option<Value> {
    let (target, published, proto, host_mode) = match v {
        Value::Object(m) => {
            s.only(key, m, &["target", "published", "protocol", "mode"]);
            let Some(t) = m.get("target") else {
                s.bad(key, "the long syntax needs 'target', the container port");
                return None;
            };
            let target = port(t)
                .map_err(|e| s.bad(&format!("{key}.target"), e))
                .ok()?;
            let published = match m.get("published") {
                None | Some(Value::Null) => None,
                Some(p) => Some(
                    port(p)
                        .map_err(|e| s.bad(&format!("{key}.published"), e))
                        .ok()?,
                ),
            };
            let proto = match m.get("protocol").map(text) {
                None => "tcp".to_string(),
                Some(Some(p)) => protocol(&p)
                    .map_err(|e| s.bad(&format!("{key}.protocol"), e))
                    .ok()?,
                Some(None) => {
                    s.bad(&format!("{key}.protocol"), "must be tcp or udp");
                    return None;
                }
            };
            let host_mode = match m.get("mode").map(text) {
                None => false,
                Some(Some(mode)) if mode == "ingress" => false,
                Some(Some(mode)) if mode == "host" => true,
                Some(_) => {
                    s.bad(&format!("{key}.mode"), "must be ingress or host");
                    return None;
                }
            };
            (target, published, proto, host_mode)
        }
        Value::String(_) | Value::Number(_) => {
            let t = text(v).unwrap_or_default();
            let (spec, proto) = match t.rsplit_once('/') {
                Some((a, p)) => (a.to_string(), protocol(p).map_err(|e| s.bad(key, e)).ok()?),
                None => (t.clone(), "tcp".to_string()),
            };
            let parts: Vec<&str> = spec.split(':').collect();
            let (published, target) = match parts.as_slice() {
                [t] => (None, *t),
                ["", t] => (None, *t),
                [p, t] => (Some(*p), *t),
                _ => {
                    s.bad(
                        key,
                        format!(
                            "'{}': binding to a host IP is not supported; use PUBLISHED:TARGET",
                            short(&t)
                        ),
                    );
                    return None;
                }
            };
            let target = port(&json!(target)).map_err(|e| s.bad(key, e)).ok()?;
            let published = match published {
                Some(p) => Some(port(&json!(p)).map_err(|e| s.bad(key, e)).ok()?),
                None => None,
            };
            (target, published, proto, false)
        }
        _ => {
            s.bad(key, "must be a port string (\"8080:80\") or a mapping");
            return None;
        }
    };
    let mut pm = json!({ "containerPort": target, "protocol": proto });
    if host_mode {
        let Some(p) = published else {
            s.bad(
                key,
                "mode: host needs a published port (the port on the agent)",
            );
            return None;
        };
        pm["hostPort"] = json!(p);
    } else {
        pm["hostPort"] = json!(0);
        pm["servicePort"] = json!(published.unwrap_or(0));
    }
    Some(pm)
}

/// Compose's byte values (`512m`, `1.5g`, `1024`, `100kb`) in MiB.
fn mebibytes(v: &Value) -> Result<f64, String> {
    let t = text(v).ok_or("must be a size such as 512M")?;
    let l = t.trim().to_ascii_lowercase();
    let l = l.strip_suffix('b').unwrap_or(&l);
    let (num, mult) = match l.char_indices().last() {
        Some((i, 'k')) => (&l[..i], 1.0 / 1024.0),
        Some((i, 'm')) => (&l[..i], 1.0),
        Some((i, 'g')) => (&l[..i], 1024.0),
        Some(_) => (l, 1.0 / (1024.0 * 1024.0)),
        None => ("", 0.0),
    };
    match num.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok(n * mult),
        _ => Err(format!(
            "'{}' is not a size (a number with an optional b, k, m or g unit)",
            short(&t)
        )),
    }
}

fn cpus(v: &Value) -> Result<f64, String> {
    let t = text(v).ok_or("must be a number of CPUs such as 0.5")?;
    match t.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(format!("'{}' is not a positive number of CPUs", short(&t))),
    }
}

/// Compose durations (`1m30s`, `500ms`, `10s`, `2h`) in seconds.
fn duration(v: &Value) -> Result<f64, String> {
    let t = text(v).ok_or("must be a duration such as 30s")?;
    let bad = || {
        format!(
            "'{}' is not a duration (numbers with units us, ms, s, m, h: 1m30s)",
            short(&t)
        )
    };
    let mut rest = t.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..n_end].parse().map_err(|_| bad())?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[u_end..];
        total += n * unit;
    }
    if total.is_finite() && total <= limits::MAX_HEALTH_SECONDS {
        Ok(total)
    } else {
        Err(format!(
            "'{}' is longer than {} seconds",
            short(&t),
            limits::MAX_HEALTH_SECONDS
        ))
    }
}

/// `node.hostname == x`, `node.labels.k != v` as a Marathon constraint.
fn constraint(c: &str) -> Result<Vec<String>, String> {
    let (field, op, value) = if let Some((f, v)) = c.split_once("!=") {
        (f, "UNLIKE", v)
    } else if let Some((f, v)) = c.split_once("==") {
        (f, "LIKE", v)
    } else {
        return Err(format!(
            "'{}' must be 'ATTRIBUTE==VALUE' or 'ATTRIBUTE!=VALUE'",
            short(c)
        ));
    };
    let (field, value) = (field.trim(), value.trim());
    let field = if field == "node.hostname" {
        "hostname".to_string()
    } else if let Some(label) = field.strip_prefix("node.labels.") {
        if label.is_empty() {
            return Err("node.labels. needs a label name".into());
        }
        label.to_string()
    } else {
        return Err(format!(
            "'{}': only node.hostname and node.labels.<name> are supported",
            short(field)
        ));
    };
    if value.is_empty() {
        return Err(format!("'{}' needs a value", short(c)));
    }
    Ok(vec![field, op.into(), regex::escape(value)])
}

#[allow(clippy::too_many_lines)]
fn service(
    stack: &str,
    name: &str,
    body: &Value,
    names: &BTreeSet<String>,
    env: &dyn Fn(&str) -> Option<String>,
    s: &mut ServiceErrors<'_>,
) -> Option<Service> {
    let before = s.count();
    let mut body = body.clone();
    let Value::Object(_) = body else {
        s.bad("", "a service must be a mapping");
        return None;
    };
    unescape_all(&mut body, "", s);
    let Value::Object(m) = body else {
        return None;
    };
    s.only(
        "",
        &m,
        &[
            "image",
            "command",
            "entrypoint",
            "environment",
            "ports",
            "deploy",
            "depends_on",
            "healthcheck",
            "volumes",
            "labels",
            "user",
            "working_dir",
        ],
    );
    let mut app = Map::new();
    app.insert("id".into(), json!(format!("/{stack}/{name}")));
    let mut docker = json!({ "image": "", "forcePullImage": false });
    match m.get("image").map(text) {
        Some(Some(i)) if !i.trim().is_empty() => docker["image"] = json!(i.trim()),
        Some(_) => s.bad("image", "must name an image"),
        None => s.bad(
            "image",
            "is required: a stack runs images (build them beforehand, without `build:`)",
        ),
    }
    // Compose: the entrypoint replaces the image's ENTRYPOINT, the command its CMD; with an
    // entrypoint and no command the image's CMD is not used. A Marathon app runs `args` as the
    // container's command after the image's own ENTRYPOINT, so an entrypoint goes in front.
    let mut argv = Vec::new();
    let mut has_entrypoint = false;
    for key in ["entrypoint", "command"] {
        if let Some(v) = m.get(key) {
            match words(v) {
                Ok(w) => {
                    has_entrypoint |= key == "entrypoint";
                    argv.extend(w);
                }
                Err(e) => s.bad(key, e),
            }
        }
    }
    if !argv.is_empty() {
        app.insert("args".into(), json!(argv));
    } else if has_entrypoint {
        s.bad(
            "entrypoint",
            "an empty entrypoint without a command leaves nothing to run",
        );
    }
    if let Some(v) = m.get("environment") {
        let e = pairs(v, "environment", s, env);
        if !e.is_empty() {
            app.insert("env".into(), json!(e));
        }
    }
    let mut mappings = Vec::new();
    match m.get("ports") {
        None | Some(Value::Null) => {}
        Some(Value::Array(ports)) => {
            if ports.len() > limits::MAX_LIST {
                s.bad(
                    "ports",
                    format!("has more than {} entries", limits::MAX_LIST),
                );
            } else {
                for (i, p) in ports.iter().enumerate() {
                    if let Some(pm) = port_entry(p, &format!("ports[{i}]"), s) {
                        let dup = mappings.iter().any(|o: &Value| {
                            (pm["servicePort"].as_u64().is_some_and(|x| x > 0)
                                && o["servicePort"] == pm["servicePort"])
                                || (pm["hostPort"].as_u64().is_some_and(|x| x > 0)
                                    && o["hostPort"] == pm["hostPort"])
                        });
                        if dup {
                            s.bad(&format!("ports[{i}]"), "publishes a port given before");
                        }
                        mappings.push(pm);
                    }
                }
            }
        }
        Some(_) => s.bad("ports", "must be a list"),
    }
    let mut volumes = Vec::new();
    match m.get("volumes") {
        None | Some(Value::Null) => {}
        Some(Value::Array(vs)) if vs.len() <= limits::MAX_LIST => {
            for (i, v) in vs.iter().enumerate() {
                if let Some(vol) = volume(v, &format!("volumes[{i}]"), s) {
                    volumes.push(vol);
                }
            }
        }
        Some(Value::Array(_)) => s.bad(
            "volumes",
            format!("has more than {} entries", limits::MAX_LIST),
        ),
        Some(_) => s.bad("volumes", "must be a list"),
    }
    let mut labels = match m.get("labels") {
        Some(v) => pairs(v, "labels", s, &|_| Some(String::new())),
        None => BTreeMap::new(),
    };
    if let Some(v) = m.get("user") {
        match text(v) {
            Some(u) if u.contains(':') => s.bad(
                "user",
                format!(
                    "'{}': a group is not supported; name a user (the agent takes its groups)",
                    short(&u)
                ),
            ),
            Some(u) if !u.trim().is_empty() => {
                app.insert("user".into(), json!(u.trim()));
            }
            _ => s.bad("user", "must name a user"),
        }
    }
    if let Some(v) = m.get("working_dir") {
        match text(v) {
            Some(d) if d.starts_with('/') => {
                docker["parameters"] = json!([{ "key": "workdir", "value": d }]);
            }
            _ => s.bad("working_dir", "must be an absolute path"),
        }
    }
    let mut replicas = Some(1);
    let mut constraints = Vec::new();
    let mut update = Update {
        parallelism: 1,
        start_first: false,
    };
    let (mut cpus_v, mut mem_v) = (None, None);
    match m.get("deploy") {
        None | Some(Value::Null) => {}
        Some(Value::Object(d)) => {
            deploy(
                d,
                s,
                &mut replicas,
                &mut constraints,
                &mut update,
                &mut cpus_v,
                &mut mem_v,
                &mut labels,
            );
        }
        Some(_) => s.bad("deploy", "must be a mapping"),
    }
    if labels.contains_key(STACK_LABEL) {
        s.bad(
            "labels",
            format!("'{STACK_LABEL}' is set by `agora stack deploy` to the stack's name"),
        );
    }
    if labels.contains_key(crate::global::GLOBAL_LABEL) {
        s.bad(
            "labels",
            format!(
                "'{}' is set by `agora stack deploy` from deploy.mode",
                crate::global::GLOBAL_LABEL
            ),
        );
    }
    labels.insert(STACK_LABEL.into(), stack.to_string());
    if replicas.is_none() {
        labels.insert(crate::global::GLOBAL_LABEL.into(), "true".into());
    }
    app.insert("labels".into(), json!(labels));
    app.insert("cpus".into(), json!(cpus_v.unwrap_or(DEFAULT_CPUS)));
    app.insert("mem".into(), json!(mem_v.unwrap_or(DEFAULT_MEM)));
    match m.get("depends_on") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let deps = depends_on(v, name, names, s);
            if !deps.is_empty() {
                app.insert(
                    "dependencies".into(),
                    json!(deps
                        .iter()
                        .map(|d| format!("/{stack}/{d}"))
                        .collect::<Vec<_>>()),
                );
            }
        }
    }
    match m.get("healthcheck") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            if let Some(hc) = healthcheck(h, s) {
                app.insert("healthChecks".into(), json!([hc]));
            }
        }
        Some(_) => s.bad("healthcheck", "must be a mapping"),
    }
    let mut container = json!({ "type": "DOCKER", "docker": docker });
    if !mappings.is_empty() {
        container["portMappings"] = json!(mappings);
    }
    if !volumes.is_empty() {
        container["volumes"] = json!(volumes);
    }
    app.insert("container".into(), container);
    app.insert("networks".into(), json!([{ "mode": "container/bridge" }]));
    (s.count() == before).then(|| Service {
        name: name.to_string(),
        app,
        replicas,
        constraints,
        update,
    })
}

#[allow(clippy::too_many_arguments)]
fn deploy(
    d: &Map<String, Value>,
    s: &mut ServiceErrors<'_>,
    replicas: &mut Option<u32>,
    constraints: &mut Vec<Vec<String>>,
    update: &mut Update,
    cpus_v: &mut Option<f64>,
    mem_v: &mut Option<f64>,
    labels: &mut BTreeMap<String, String>,
) {
    s.only(
        "deploy",
        d,
        &[
            "mode",
            "replicas",
            "resources",
            "placement",
            "update_config",
            "labels",
        ],
    );
    let global = match d.get("mode").map(text) {
        None => false,
        Some(Some(m)) if m == "replicated" => false,
        Some(Some(m)) if m == "global" => true,
        Some(_) => {
            s.bad("deploy.mode", "must be replicated or global");
            false
        }
    };
    match d.get("replicas") {
        None | Some(Value::Null) => {}
        Some(_) if global => s.bad(
            "deploy.replicas",
            "cannot be given with mode: global (one task per agent)",
        ),
        Some(v) => match v.as_u64() {
            Some(n) if n <= u64::from(MAX_REPLICAS) => *replicas = u32::try_from(n).ok(),
            _ => s.bad(
                "deploy.replicas",
                format!("must be a whole number from 0 to {MAX_REPLICAS}"),
            ),
        },
    }
    if global {
        *replicas = None;
    }
    match d.get("resources") {
        None | Some(Value::Null) => {}
        Some(Value::Object(r)) => {
            s.only("deploy.resources", r, &["limits", "reservations"]);
            let mut read = |which: &str| -> (Option<f64>, Option<f64>) {
                let key = format!("deploy.resources.{which}");
                match r.get(which) {
                    None | Some(Value::Null) => (None, None),
                    Some(Value::Object(l)) => {
                        s.only(&key, l, &["cpus", "memory"]);
                        let c = l.get("cpus").and_then(|v| {
                            cpus(v).map_err(|e| s.bad(&format!("{key}.cpus"), e)).ok()
                        });
                        let mem = l.get("memory").and_then(|v| {
                            mebibytes(v)
                                .map_err(|e| s.bad(&format!("{key}.memory"), e))
                                .ok()
                        });
                        (c, mem)
                    }
                    Some(_) => {
                        s.bad(&key, "must be a mapping");
                        (None, None)
                    }
                }
            };
            let (lc, lm) = read("limits");
            let (rc, rm) = read("reservations");
            if let (Some(l), Some(r)) = (lc, rc) {
                if r > l {
                    s.bad(
                        "deploy.resources.reservations.cpus",
                        format!("{r} is more than the limit {l}"),
                    );
                }
            }
            if let (Some(l), Some(r)) = (lm, rm) {
                if r > l {
                    s.bad(
                        "deploy.resources.reservations.memory",
                        format!("{r} MiB is more than the limit {l} MiB"),
                    );
                }
            }
            // A Marathon app's cpus and mem are both what it is given and its limit.
            *cpus_v = lc.or(rc);
            *mem_v = lm.or(rm);
        }
        Some(_) => s.bad("deploy.resources", "must be a mapping"),
    }
    match d.get("placement") {
        None | Some(Value::Null) => {}
        Some(Value::Object(p)) => {
            s.only(
                "deploy.placement",
                p,
                &["constraints", "max_replicas_per_node"],
            );
            match p.get("constraints") {
                None | Some(Value::Null) => {}
                Some(Value::Array(cs)) if cs.len() <= limits::MAX_LIST => {
                    for (i, c) in cs.iter().enumerate() {
                        let key = format!("deploy.placement.constraints[{i}]");
                        match text(c).map(|c| constraint(&c)) {
                            Some(Ok(c)) => constraints.push(c),
                            Some(Err(e)) => s.bad(&key, e),
                            None => s.bad(&key, "must be a string"),
                        }
                    }
                }
                Some(_) => s.bad(
                    "deploy.placement.constraints",
                    format!("must be a list of at most {} strings", limits::MAX_LIST),
                ),
            }
            match p.get("max_replicas_per_node") {
                None | Some(Value::Null) => {}
                Some(v) => match v.as_u64() {
                    Some(n) if n >= 1 && n <= u64::from(MAX_REPLICAS) => {
                        constraints.push(vec!["hostname".into(), "MAX_PER".into(), n.to_string()]);
                    }
                    _ => s.bad(
                        "deploy.placement.max_replicas_per_node",
                        format!("must be a whole number from 1 to {MAX_REPLICAS}"),
                    ),
                },
            }
        }
        Some(_) => s.bad("deploy.placement", "must be a mapping"),
    }
    match d.get("update_config") {
        None | Some(Value::Null) => {}
        Some(Value::Object(u)) => {
            s.only("deploy.update_config", u, &["parallelism", "order"]);
            match u.get("parallelism") {
                None | Some(Value::Null) => {}
                Some(v) => match v.as_u64() {
                    Some(n) if n <= u64::from(MAX_REPLICAS) => {
                        update.parallelism = u32::try_from(n).unwrap_or(MAX_REPLICAS);
                    }
                    _ => s.bad(
                        "deploy.update_config.parallelism",
                        format!("must be a whole number from 0 (all at once) to {MAX_REPLICAS}"),
                    ),
                },
            }
            match u.get("order").map(text) {
                None => {}
                Some(Some(o)) if o == "start-first" => update.start_first = true,
                Some(Some(o)) if o == "stop-first" => update.start_first = false,
                Some(_) => s.bad(
                    "deploy.update_config.order",
                    "must be start-first or stop-first",
                ),
            }
        }
        Some(_) => s.bad("deploy.update_config", "must be a mapping"),
    }
    if let Some(v) = d.get("labels") {
        for (k, val) in pairs(v, "deploy.labels", s, &|_| Some(String::new())) {
            if labels.get(&k).is_some_and(|old| old != &val) {
                s.bad(
                    &format!("deploy.labels.{}", short(&k)),
                    "is also in labels with another value",
                );
            }
            labels.insert(k, val);
        }
    }
}

fn depends_on(
    v: &Value,
    me: &str,
    names: &BTreeSet<String>,
    s: &mut ServiceErrors<'_>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |d: &str, key: &str, s: &mut ServiceErrors<'_>| {
        if d == me {
            s.bad(key, "a service cannot depend on itself");
        } else if !names.contains(d) {
            s.bad(key, format!("'{}' is not a service of this file", short(d)));
        } else if !out.iter().any(|o| o == d) {
            out.push(d.to_string());
        }
    };
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let key = format!("depends_on[{i}]");
                match x.as_str() {
                    Some(d) => check(d, &key, s),
                    None => s.bad(&key, "must be a service name"),
                }
            }
        }
        Value::Object(m) => {
            for (d, cond) in m {
                let key = join_key("depends_on", d);
                match cond {
                    Value::Null => {}
                    Value::Object(c) => {
                        s.only(&key, c, &["condition"]);
                        match c.get("condition").and_then(Value::as_str) {
                            None | Some("service_started" | "service_healthy") => {}
                            Some(other) => s.bad(
                                &format!("{key}.condition"),
                                format!(
                                    "'{}' is not supported (service_started or service_healthy: \
                                     a dependency's tasks are running and, with a health check, \
                                     healthy)",
                                    short(other)
                                ),
                            ),
                        }
                    }
                    _ => {
                        s.bad(&key, "must be a mapping with a condition");
                        continue;
                    }
                }
                check(d, &key, s);
            }
        }
        _ => s.bad("depends_on", "must be a list of services or a mapping"),
    }
    out
}

fn healthcheck(h: &Map<String, Value>, s: &mut ServiceErrors<'_>) -> Option<Value> {
    s.only(
        "healthcheck",
        h,
        &[
            "test",
            "interval",
            "timeout",
            "retries",
            "start_period",
            "disable",
        ],
    );
    if h.get("disable").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    if h.get("disable").is_some_and(|d| !d.is_boolean()) {
        s.bad("healthcheck.disable", "must be true or false");
    }
    let command = match h.get("test") {
        None => {
            s.bad(
                "healthcheck.test",
                "is required (an image's own HEALTHCHECK is not read)",
            );
            return None;
        }
        Some(Value::String(c)) => c.clone(),
        Some(Value::Array(a)) => {
            let w: Vec<String> = a.iter().filter_map(text).collect();
            match w.split_first() {
                Some((k, rest)) if k == "NONE" => {
                    if !rest.is_empty() {
                        s.bad("healthcheck.test", "NONE takes nothing after it");
                    }
                    return None;
                }
                Some((k, [c])) if k == "CMD-SHELL" => c.clone(),
                Some((k, _)) if k == "CMD-SHELL" => {
                    s.bad(
                        "healthcheck.test",
                        "CMD-SHELL takes one string, the shell command",
                    );
                    return None;
                }
                Some((k, rest)) if k == "CMD" && !rest.is_empty() => {
                    match shlex::try_join(rest.iter().map(String::as_str)) {
                        Ok(c) => c,
                        Err(e) => {
                            s.bad(
                                "healthcheck.test",
                                format!("cannot be quoted for a shell: {e}"),
                            );
                            return None;
                        }
                    }
                }
                _ => {
                    s.bad(
                        "healthcheck.test",
                        "must be a string, [\"CMD\", args...], [\"CMD-SHELL\", command] or [\"NONE\"]",
                    );
                    return None;
                }
            }
        }
        Some(_) => {
            s.bad("healthcheck.test", "must be a string or a list");
            return None;
        }
    };
    if command.trim().is_empty() {
        s.bad("healthcheck.test", "the command is empty");
        return None;
    }
    // Docker's defaults: every 30 s, 30 s timeout, 3 retries, no start period. Marathon counts
    // whole seconds.
    let mut secs = |key: &str, default: f64, min: f64| -> f64 {
        match h.get(key) {
            None | Some(Value::Null) => default,
            Some(v) => match duration(v) {
                Ok(d) => d.ceil().max(min),
                Err(e) => {
                    s.bad(&format!("healthcheck.{key}"), e);
                    default
                }
            },
        }
    };
    let interval = secs("interval", 30.0, 1.0);
    let timeout = secs("timeout", 30.0, 1.0);
    let grace = secs("start_period", 0.0, 0.0);
    let retries = match h.get("retries") {
        None | Some(Value::Null) => 3,
        Some(v) => match v.as_u64() {
            Some(n) if n <= u64::from(limits::MAX_CONSECUTIVE_FAILURES) => n,
            _ => {
                s.bad(
                    "healthcheck.retries",
                    format!(
                        "must be a whole number from 0 to {}",
                        limits::MAX_CONSECUTIVE_FAILURES
                    ),
                );
                3
            }
        },
    };
    Some(json!({
        "protocol": "COMMAND",
        "command": { "value": command },
        "intervalSeconds": interval,
        "timeoutSeconds": timeout,
        "gracePeriodSeconds": grace,
        "maxConsecutiveFailures": retries,
    }))
}

/// A bind mount: `/host:/container[:ro|rw]` or the long syntax with `type: bind`.
fn volume(v: &Value, key: &str, s: &mut ServiceErrors<'_>) -> Option<Value> {
    let (source, target, read_only) = match v {
        Value::String(t) => {
            let parts: Vec<&str> = t.split(':').collect();
            let (src, dst, mode) = match parts.as_slice() {
                [src, dst] => (*src, *dst, "rw"),
                [src, dst, mode] => (*src, *dst, *mode),
                [_] => {
                    s.bad(
                        key,
                        format!(
                            "'{}': anonymous volumes are not supported; bind a host path (/host:/container)",
                            short(t)
                        ),
                    );
                    return None;
                }
                _ => {
                    s.bad(
                        key,
                        format!("'{}' must be HOST:CONTAINER[:ro|rw]", short(t)),
                    );
                    return None;
                }
            };
            let ro = match mode {
                "ro" => true,
                "rw" => false,
                other => {
                    s.bad(
                        key,
                        format!("mode '{}' is not supported (ro or rw)", short(other)),
                    );
                    return None;
                }
            };
            (src.to_string(), dst.to_string(), ro)
        }
        Value::Object(m) => {
            s.only(key, m, &["type", "source", "target", "read_only"]);
            if m.get("type").and_then(Value::as_str) != Some("bind") {
                s.bad(
                    &format!("{key}.type"),
                    "only bind mounts are supported (type: bind)",
                );
                return None;
            }
            let (Some(src), Some(dst)) = (
                m.get("source").and_then(Value::as_str),
                m.get("target").and_then(Value::as_str),
            ) else {
                s.bad(key, "a bind mount needs source and target");
                return None;
            };
            let ro = match m.get("read_only") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    s.bad(&format!("{key}.read_only"), "must be true or false");
                    return None;
                }
            };
            (src.to_string(), dst.to_string(), ro)
        }
        _ => {
            s.bad(key, "must be a string or a mapping");
            return None;
        }
    };
    if !source.starts_with('/') {
        s.bad(
            key,
            format!(
                "source '{}' must be an absolute path on the agents (named volumes and paths \
                 relative to the Compose file are not supported)",
                short(&source)
            ),
        );
        return None;
    }
    if !target.starts_with('/') {
        s.bad(
            key,
            format!(
                "target '{}' must be an absolute path in the container",
                short(&target)
            ),
        );
        return None;
    }
    Some(json!({
        "hostPath": source,
        "containerPath": target,
        "mode": if read_only { "RO" } else { "RW" },
    }))
}

#[cfg(test)]
mod tests;
