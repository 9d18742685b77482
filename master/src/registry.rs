//! The registry: the durable part of the master's state, and the stores that keep it.
//!
//! Like Mesos, the registry holds what a new master cannot learn from agents and frameworks: which
//! agents were admitted, which are unreachable or gone, draining (maintenance), dynamic reservations,
//! role weights and quota. Tasks and frameworks are *not* stored: agents report their tasks when
//! they re-register and frameworks re-subscribe.
//!
//! The whole registry is one JSON document written with a versioned compare-and-set through a
//! [`StateStore`], so two masters can never silently overwrite each other. This module ships the
//! local-directory store (`--work-dir`, atomic rename); the ZooKeeper store implements the same trait.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

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

/// A stored document and the version it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub data: Vec<u8>,
    pub version: u64,
}

/// A boxed future, so that the trait stays object-safe (the ZooKeeper store is async).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Durable storage of one document with compare-and-set writes.
pub trait StateStore: Send + Sync {
    /// The document and its version, or `None` if nothing was ever stored.
    fn load(&self) -> StoreFuture<'_, Option<Versioned>>;
    /// Writes `data` if the stored version is still `expected` (`None`: nothing stored yet) and
    /// returns the new version.
    fn store(&self, data: Vec<u8>, expected: Option<u64>) -> StoreFuture<'_, u64>;
}

/// The registry in a local directory: `registry.json` holding `{"version": N, "registry": …}`,
/// replaced atomically (write a temporary file, fsync, rename). Used by a standalone master and by
/// `agora local`.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct LocalDocument {
    version: u64,
    data: serde_json::Value,
}

impl LocalDirStore {
    /// A store in `dir` (created when missing).
    ///
    /// # Errors
    /// [`StoreError::Io`] if the directory cannot be created.
    pub fn new(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(LocalDirStore {
            path: dir.join("registry.json"),
        })
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn read(&self) -> Result<Option<Versioned>, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        let doc: LocalDocument =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: self.path.display().to_string(),
                message: e.to_string(),
            })?;
        let data = serde_json::to_vec(&doc.data).map_err(|e| StoreError::Corrupt {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Some(Versioned {
            data,
            version: doc.version,
        }))
    }

    fn write(&self, data: &[u8], expected: Option<u64>) -> Result<u64, StoreError> {
        let found = self.read()?.map(|v| v.version);
        if found != expected {
            return Err(StoreError::Conflict { expected, found });
        }
        let version = expected.map_or(1, |v| v + 1);
        let value: serde_json::Value =
            serde_json::from_slice(data).map_err(|e| StoreError::Corrupt {
                path: self.path.display().to_string(),
                message: format!("refusing to store a document that is not JSON: {e}"),
            })?;
        let doc = serde_json::to_vec(&LocalDocument {
            version,
            data: value,
        })
        .map_err(|e| StoreError::Corrupt {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        let tmp = self.path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(|e| self.io(e))?;
            f.write_all(&doc).map_err(|e| self.io(e))?;
            f.sync_all().map_err(|e| self.io(e))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        Ok(version)
    }
}

impl StateStore for LocalDirStore {
    fn load(&self) -> StoreFuture<'_, Option<Versioned>> {
        Box::pin(async move { self.read() })
    }

    fn store(&self, data: Vec<u8>, expected: Option<u64>) -> StoreFuture<'_, u64> {
        Box::pin(async move { self.write(&data, expected) })
    }
}

#[cfg(test)]
mod tests {
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
        let store = LocalDirStore::new(dir.path()).expect("store");
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
        let reopened = LocalDirStore::new(dir.path()).expect("store");
        let got = block(reopened.load()).expect("load").expect("stored");
        assert_eq!(got.version, 1);
        assert_eq!(Registry::from_bytes(&got.data, "test").expect("parse"), reg);
    }

    #[test]
    fn a_write_at_a_stale_version_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalDirStore::new(dir.path()).expect("store");
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
        let store = LocalDirStore::new(dir.path()).expect("store");
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
