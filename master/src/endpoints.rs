//! The endpoint table: per service (framework name + discovery name), the reachable ports of its
//! tasks. A task contributes endpoints while it is RUNNING and, when it has a health check, its
//! latest check passed (`TaskStatus.healthy == true`; unknown counts as unhealthy).
//!
//! Pure and synchronous: the bookkeeping calls [`EndpointTable::set_task`] for every task whose
//! state, health or agent changed, then [`EndpointTable::take_changes`] hands back one
//! [`v1::ServiceEndpoints`] per service that changed (its whole endpoint list: a delta at service
//! granularity, idempotent), which the master pushes to every agent. [`EndpointTable::full`] is what
//! a newly connected agent gets first.
//!
//! ```text
//!  status update ─▶ bookkeeping ─▶ set_task(key, task_endpoints(task, framework, agent))
//!                                   take_changes() ─▶ EndpointUpdate{services} ─▶ every agent
//!  agent session opens ──────────▶ full() ─▶ EndpointUpdate{full: true} ─▶ that agent
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use agora_proto::v1::{self, TaskState};

/// A service: the framework's name and the tasks' discovery name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub framework: String,
    pub name: String,
}

/// (framework id, task id).
pub type TaskKey = (String, String);

/// What one task contributes to the table.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEndpoints {
    pub service: ServiceKey,
    pub endpoints: Vec<v1::Endpoint>,
    pub labels: HashMap<String, String>,
    /// When the task started (orders whose labels the service shows: the newest task's).
    pub started_at: f64,
}

/// Most services in the table; tasks of further services get no endpoints (logged once each).
pub const MAX_SERVICES: usize = 100_000;
/// Most ports of one task that count.
pub const MAX_PORTS_PER_TASK: usize = crate::bookkeeping::limits::MAX_DISCOVERY_PORTS;
/// Longest discovery name.
pub const MAX_NAME_LEN: usize = 255;

/// The endpoints `task` (of the framework named `framework`, on an agent described by `agent`)
/// contributes, or `None` when it has none: no discovery info, no ports, not RUNNING, or it has a
/// health check and is not (yet) healthy.
pub fn task_endpoints(
    task: &v1::Task,
    framework: &str,
    agent: Option<&v1::AgentInfo>,
) -> Option<TaskEndpoints> {
    let info = task.info.as_ref()?;
    let discovery = info.discovery.as_ref()?;
    if discovery.name.is_empty() || discovery.name.len() > MAX_NAME_LEN {
        return None;
    }
    if TaskState::try_from(task.state).ok()? != TaskState::TaskRunning {
        return None;
    }
    let has_check = info
        .health_check
        .as_ref()
        .or(task.health_check.as_ref())
        .is_some_and(|h| h.r#type != v1::health_check::Type::Unspecified as i32);
    if has_check && task.status.as_ref().and_then(|s| s.healthy) != Some(true) {
        return None;
    }
    let host = agent.map(|a| a.hostname.clone()).unwrap_or_default();
    let ip = agent.map(|a| a.ip.clone()).unwrap_or_default();
    let endpoints: Vec<v1::Endpoint> = discovery
        .ports
        .iter()
        .take(MAX_PORTS_PER_TASK)
        .filter(|p| p.number != 0 && p.number <= u32::from(u16::MAX))
        .map(|p| v1::Endpoint {
            task_id: task.task_id.clone(),
            agent_id: task.agent_id.clone(),
            host: host.clone(),
            ip: ip.clone(),
            port: p.number,
            service_port: p.service_port,
            protocol: if p.protocol.is_empty() {
                "tcp".into()
            } else {
                p.protocol.clone()
            },
            port_name: p.name.clone(),
        })
        .collect();
    if endpoints.is_empty() {
        return None;
    }
    Some(TaskEndpoints {
        service: ServiceKey {
            framework: framework.to_string(),
            name: discovery.name.clone(),
        },
        endpoints,
        labels: discovery.labels.clone(),
        started_at: task.started_at,
    })
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct EndpointTable {
    by_task: HashMap<TaskKey, TaskEndpoints>,
    services: BTreeMap<ServiceKey, BTreeSet<TaskKey>>,
    changed: BTreeSet<ServiceKey>,
}

impl EndpointTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records what `task` contributes now (`None`: nothing, for example it ended or is unhealthy).
    /// Returns false when the table is full and the task's new service was left out.
    pub fn set_task(&mut self, task: &TaskKey, entry: Option<TaskEndpoints>) -> bool {
        let old = self.by_task.get(task);
        if old == entry.as_ref() {
            return true;
        }
        if let Some(new) = &entry {
            if !self.services.contains_key(&new.service) && self.services.len() >= MAX_SERVICES {
                self.remove_task(task);
                return false;
            }
        }
        self.remove_task(task);
        if let Some(new) = entry {
            self.changed.insert(new.service.clone());
            self.services
                .entry(new.service.clone())
                .or_default()
                .insert(task.clone());
            self.by_task.insert(task.clone(), new);
        }
        true
    }

    fn remove_task(&mut self, task: &TaskKey) {
        let Some(old) = self.by_task.remove(task) else {
            return;
        };
        self.changed.insert(old.service.clone());
        if let Some(set) = self.services.get_mut(&old.service) {
            set.remove(task);
            if set.is_empty() {
                self.services.remove(&old.service);
            }
        }
    }

    /// The services that changed since the last call, each with its whole endpoint list (empty:
    /// the service left the table).
    pub fn take_changes(&mut self) -> Vec<v1::ServiceEndpoints> {
        std::mem::take(&mut self.changed)
            .into_iter()
            .map(|k| self.service(&k))
            .collect()
    }

    /// Every service with its endpoints.
    pub fn full(&self) -> Vec<v1::ServiceEndpoints> {
        self.services.keys().map(|k| self.service(k)).collect()
    }

    /// Whether `task` contributes endpoints now.
    pub fn has_task(&self, task: &TaskKey) -> bool {
        self.by_task.contains_key(task)
    }

    /// How many services have endpoints.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    fn service(&self, key: &ServiceKey) -> v1::ServiceEndpoints {
        let mut out = v1::ServiceEndpoints {
            framework: key.framework.clone(),
            name: key.name.clone(),
            ..Default::default()
        };
        let mut newest = f64::MIN;
        for t in self.services.get(key).into_iter().flatten() {
            if let Some(e) = self.by_task.get(t) {
                out.endpoints.extend(e.endpoints.iter().cloned());
                if e.started_at >= newest {
                    newest = e.started_at;
                    out.labels = e.labels.clone();
                }
            }
        }
        out.endpoints
            .sort_by(|a, b| (&a.task_id, a.port).cmp(&(&b.task_id, b.port)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, state: TaskState, check: bool, healthy: Option<bool>) -> v1::Task {
        v1::Task {
            task_id: id.into(),
            framework_id: "f1".into(),
            agent_id: "a1".into(),
            state: state as i32,
            status: Some(v1::TaskStatus {
                healthy,
                ..Default::default()
            }),
            info: Some(v1::TaskInfo {
                health_check: check.then(|| v1::HealthCheck {
                    r#type: v1::health_check::Type::Tcp as i32,
                    ..Default::default()
                }),
                discovery: Some(v1::DiscoveryInfo {
                    name: "/prod/web".into(),
                    ports: vec![v1::DiscoveryPort {
                        number: 31000,
                        service_port: 10000,
                        ..Default::default()
                    }],
                    labels: [("HAPROXY_0_VHOST".to_string(), "web.example".to_string())].into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn agent() -> v1::AgentInfo {
        v1::AgentInfo {
            hostname: "h1".into(),
            ip: "10.0.0.1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_running_and_healthy_tasks_have_endpoints() {
        let a = agent();
        let e = task_endpoints(
            &task("t", TaskState::TaskRunning, false, None),
            "services",
            Some(&a),
        )
        .expect("running, no check");
        assert_eq!(e.service.name, "/prod/web");
        assert_eq!(
            (
                e.endpoints[0].ip.as_str(),
                e.endpoints[0].port,
                e.endpoints[0].service_port
            ),
            ("10.0.0.1", 31000, 10000)
        );
        assert_eq!(e.endpoints[0].protocol, "tcp");
        for (state, check, healthy, has) in [
            (TaskState::TaskStaging, false, None, false),
            (TaskState::TaskKilling, false, None, false),
            (TaskState::TaskRunning, true, None, false),
            (TaskState::TaskRunning, true, Some(false), false),
            (TaskState::TaskRunning, true, Some(true), true),
            (TaskState::TaskFinished, true, Some(true), false),
        ] {
            assert_eq!(
                task_endpoints(&task("t", state, check, healthy), "services", Some(&a)).is_some(),
                has,
                "{state:?} check={check} healthy={healthy:?}"
            );
        }
        let mut no_discovery = task("t", TaskState::TaskRunning, false, None);
        if let Some(i) = no_discovery.info.as_mut() {
            i.discovery = None;
        }
        assert!(task_endpoints(&no_discovery, "services", Some(&a)).is_none());
    }

    #[test]
    fn changes_are_per_service_and_only_when_something_changed() {
        let a = agent();
        let mut table = EndpointTable::new();
        let k1 = ("f1".to_string(), "t1".to_string());
        let k2 = ("f1".to_string(), "t2".to_string());
        let e1 = task_endpoints(
            &task("t1", TaskState::TaskRunning, false, None),
            "services",
            Some(&a),
        );
        let e2 = task_endpoints(
            &task("t2", TaskState::TaskRunning, false, None),
            "services",
            Some(&a),
        );
        table.set_task(&k1, e1.clone());
        table.set_task(&k2, e2);
        let changes = table.take_changes();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].endpoints.len(), 2);
        assert_eq!(changes[0].labels["HAPROXY_0_VHOST"], "web.example");
        // The same again: nothing to push.
        table.set_task(&k1, e1);
        assert!(table.take_changes().is_empty());
        // t1 turns unhealthy: the service now lists t2 only.
        table.set_task(&k1, None);
        let changes = table.take_changes();
        assert_eq!(
            changes[0]
                .endpoints
                .iter()
                .map(|e| e.task_id.as_str())
                .collect::<Vec<_>>(),
            ["t2"]
        );
        assert_eq!(table.full().len(), 1);
        // t2 ends: the service leaves with an empty list.
        table.set_task(&k2, None);
        let changes = table.take_changes();
        assert_eq!((changes.len(), changes[0].endpoints.len()), (1, 0));
        assert!(table.is_empty() && table.full().is_empty());
        // Removing what is not there changes nothing.
        table.set_task(&k2, None);
        assert!(table.take_changes().is_empty());
    }

    #[test]
    fn a_task_moving_to_another_service_changes_both() {
        let a = agent();
        let mut table = EndpointTable::new();
        let k = ("f1".to_string(), "t1".to_string());
        let mut t = task("t1", TaskState::TaskRunning, false, None);
        table.set_task(&k, task_endpoints(&t, "services", Some(&a)));
        table.take_changes();
        if let Some(d) = t.info.as_mut().and_then(|i| i.discovery.as_mut()) {
            d.name = "/other".into();
        }
        table.set_task(&k, task_endpoints(&t, "services", Some(&a)));
        let names: Vec<String> = table.take_changes().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["/other", "/prod/web"]);
    }
}
