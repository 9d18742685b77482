//! The agent's copy of the master's endpoint table: service (framework name, discovery name) →
//! its endpoints, updated by the master's `EndpointUpdate` deltas (each listed service replaces what
//! was known of it; `full` forgets the rest). Pure: the master link applies updates, readers (DNS,
//! a routing mesh) watch [`Endpoints::subscribe`] for snapshots.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use agora_proto::v1::{self, master_message::EndpointUpdate};
use tokio::sync::watch;
use tracing::warn;

/// (framework name, discovery name).
pub type ServiceKey = (String, String);

/// Most services kept; further ones are dropped with a log line.
pub const MAX_SERVICES: usize = 100_000;
/// Most endpoints kept per service.
pub const MAX_ENDPOINTS_PER_SERVICE: usize = 10_000;

/// One snapshot of the table.
#[derive(Debug, Clone, Default)]
pub struct EndpointTable {
    pub services: BTreeMap<ServiceKey, Arc<v1::ServiceEndpoints>>,
    /// Updates applied so far.
    pub version: u64,
}

impl EndpointTable {
    /// Applies one update from the master.
    pub fn apply(&mut self, update: EndpointUpdate) {
        if update.full {
            self.services.clear();
        }
        for mut s in update.services {
            let key = (s.framework.clone(), s.name.clone());
            if s.endpoints.is_empty() {
                self.services.remove(&key);
                continue;
            }
            if !self.services.contains_key(&key) && self.services.len() >= MAX_SERVICES {
                warn!(framework = %key.0, service = %key.1, max = MAX_SERVICES, "endpoint table full (services): service left out");
                continue;
            }
            if s.endpoints.len() > MAX_ENDPOINTS_PER_SERVICE {
                warn!(framework = %key.0, service = %key.1, max = MAX_ENDPOINTS_PER_SERVICE, "too many endpoints: the rest are left out");
                s.endpoints.truncate(MAX_ENDPOINTS_PER_SERVICE);
            }
            self.services.insert(key, Arc::new(s));
        }
        self.version += 1;
    }

    pub fn get(&self, framework: &str, name: &str) -> Option<&v1::ServiceEndpoints> {
        self.services
            .get(&(framework.to_string(), name.to_string()))
            .map(|s| s.as_ref())
    }
}

/// The shared, watched table: one writer (the master link), any number of readers.
#[derive(Debug, Clone)]
pub struct Endpoints {
    tx: Arc<watch::Sender<Arc<EndpointTable>>>,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self::new()
    }
}

impl Endpoints {
    pub fn new() -> Self {
        Endpoints {
            tx: Arc::new(watch::channel(Arc::new(EndpointTable::default())).0),
        }
    }

    /// Applies an update and publishes the new snapshot.
    pub fn apply(&self, update: EndpointUpdate) {
        self.tx.send_modify(|t| Arc::make_mut(t).apply(update));
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<EndpointTable> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<EndpointTable>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, tasks: &[&str]) -> v1::ServiceEndpoints {
        v1::ServiceEndpoints {
            framework: "services".into(),
            name: name.into(),
            endpoints: tasks
                .iter()
                .map(|t| v1::Endpoint {
                    task_id: t.to_string(),
                    port: 31000,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn deltas_replace_services_and_full_forgets_the_rest() {
        let e = Endpoints::new();
        let mut rx = e.subscribe();
        e.apply(EndpointUpdate {
            full: true,
            ack_seq: 0,
            services: vec![service("/a", &["t1", "t2"]), service("/b", &["t3"])],
        });
        assert!(rx.has_changed().unwrap_or(false));
        rx.mark_unchanged();
        assert_eq!(e.snapshot().services.len(), 2);
        e.apply(EndpointUpdate {
            full: false,
            ack_seq: 0,
            services: vec![service("/a", &["t2"])],
        });
        let s = e.snapshot();
        assert_eq!(s.get("services", "/a").map(|s| s.endpoints.len()), Some(1));
        assert!(s.get("services", "/b").is_some());
        e.apply(EndpointUpdate {
            full: false,
            ack_seq: 0,
            services: vec![service("/b", &[])],
        });
        assert!(e.snapshot().get("services", "/b").is_none());
        e.apply(EndpointUpdate {
            full: true,
            ack_seq: 0,
            services: vec![service("/c", &["t9"])],
        });
        let s = e.snapshot();
        assert_eq!(
            s.services.keys().map(|k| k.1.as_str()).collect::<Vec<_>>(),
            ["/c"]
        );
        assert_eq!(s.version, 4);
    }
}
