//! The registry: the durable part of the master's state, and the stores that keep it.
//!
//! Like Mesos, the registry holds what a new master cannot learn from agents and frameworks: which
//! agents were admitted, which are unreachable or gone, draining (maintenance), dynamic reservations,
//! role weights and quota. Tasks and frameworks are *not* stored: agents report their tasks when
//! they re-register and frameworks re-subscribe.
//!
//! The whole registry is one JSON document written with a versioned compare-and-set through a
//! [`StateStore`] (from `agora-ha`), so two masters can never silently overwrite each other: a
//! local file in `--work-dir` ([`local_store`]) or ZooKeeper (`agora_ha::zk_store::ZkStore`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use agora_ha::store::{LocalFileStore, LocalFormat};

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// How many gone agent ids are remembered (so that they cannot re-register).
pub const GONE_AGENTS_KEPT: usize = 10_000;

/// What the registry remembers of one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AgentRecord {
    pub hostname: String,
    /// Unix seconds at which the agent was marked unreachable; absent while it is reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<f64>,
    /// Maintenance: no new offers on it.
    #[serde(default)]
    pub draining: bool,
    /// Dynamic reservations made on the agent, in the flag syntax (`cpus(web,alice):2`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reservations: String,
}

/// The registry document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Registry {
    #[serde(default)]
    pub agents: BTreeMap<String, AgentRecord>,
    #[serde(default)]
    pub gone_agents: BTreeSet<String>,
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
    /// Quota guarantees by role, in the flag syntax (`cpus:4;mem:8192`).
    #[serde(default)]
    pub quotas: BTreeMap<String, String>,
}

impl Registry {
    /// Serialises the registry.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A map of plain strings and numbers always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a stored registry.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] naming `origin`.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            path: origin.to_string(),
            message: e.to_string(),
        })
    }

    /// Remembers a gone agent, forgetting the oldest ids past [`GONE_AGENTS_KEPT`].
    pub fn mark_gone(&mut self, agent_id: &str) {
        self.agents.remove(agent_id);
        self.gone_agents.insert(agent_id.to_string());
        while self.gone_agents.len() > GONE_AGENTS_KEPT {
            let Some(first) = self.gone_agents.iter().next().cloned() else {
                break;
            };
            self.gone_agents.remove(&first);
        }
    }
}

pub use agora_ha::store::{StateStore, StoreFuture, Versioned};

/// The registry in a local directory: `registry.json` holding `{"version": N, "data": …}`,
/// replaced atomically (write a temporary file, fsync, rename). Used by a standalone master and by
/// `agora local`.
///
/// # Errors
/// [`StoreError::Io`] if the directory cannot be created.
pub fn local_store(dir: &Path) -> Result<LocalFileStore, StoreError> {
    LocalFileStore::in_dir(dir, "registry.json", LocalFormat::Versioned)
}

#[cfg(test)]
mod zk_tests;

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    fn block<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn local_store_round_trips_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = local_store(dir.path()).expect("store");
        assert_eq!(block(store.load()).expect("load"), None);
        let mut reg = Registry::default();
        reg.agents.insert(
            "a1".into(),
            AgentRecord {
                hostname: "h1".into(),
                ..Default::default()
            },
        );
        reg.weights.insert("web".into(), 2.0);
        let v1 = block(store.store(reg.to_bytes(), None)).expect("first write");
        assert_eq!(v1, 1);
        let reopened = local_store(dir.path()).expect("store");
        let got = block(reopened.load()).expect("load").expect("stored");
        assert_eq!(got.version, 1);
        assert_eq!(Registry::from_bytes(&got.data, "test").expect("parse"), reg);
    }

    #[test]
    fn a_write_at_a_stale_version_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = local_store(dir.path()).expect("store");
        let v1 = block(store.store(Registry::default().to_bytes(), None)).expect("write");
        let mut reg = Registry::default();
        reg.mark_gone("a9");
        let v2 = block(store.store(reg.to_bytes(), Some(v1))).expect("write");
        assert_eq!(v2, 2);
        let err = block(store.store(Registry::default().to_bytes(), Some(v1))).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Conflict {
                    expected: Some(1),
                    found: Some(2)
                }
            ),
            "{err}"
        );
        let got = block(store.load()).expect("load").expect("stored");
        assert!(Registry::from_bytes(&got.data, "t")
            .expect("parse")
            .gone_agents
            .contains("a9"));
    }

    #[test]
    fn a_corrupt_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("registry.json"), b"{not json").expect("write");
        let store = local_store(dir.path()).expect("store");
        let err = block(store.load()).unwrap_err();
        assert!(err.to_string().contains("registry.json"), "{err}");
    }

    #[test]
    fn gone_agents_are_bounded() {
        let mut reg = Registry::default();
        for i in 0..(GONE_AGENTS_KEPT + 5) {
            reg.mark_gone(&format!("a{i:06}"));
        }
        assert_eq!(reg.gone_agents.len(), GONE_AGENTS_KEPT);
    }
}
