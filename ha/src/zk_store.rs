//! The registry in ZooKeeper: a [`StateStore`] with compare-and-set writes fenced on the leader's
//! election znode, split across chunk znodes so that it stays under ZooKeeper's 1 MiB node limit
//! at any cluster size.
//!
//! ```text
//!  <path>/registry              manifest {"generation": g, "chunks": n}   ← its version is the CAS version
//!  <path>/registry/g<g>-<i>     chunk i of generation g (≤ 512 KiB each)
//! ```
//! A write creates the new generation's chunks, then swaps the manifest in one multi-op that also
//! checks the writer's election znode still exists (a master that lost its session cannot write),
//! then deletes the old chunks. Readers only follow the manifest, so a half-written generation is
//! never seen.

use serde::{Deserialize, Serialize};
use zookeeper_client as zk;

use crate::store::{StateStore, StoreError, StoreFuture, Versioned};

/// Largest chunk written.
pub const CHUNK_BYTES: usize = 512 * 1024;

#[derive(Serialize, Deserialize)]
struct Manifest {
    generation: u64,
    chunks: usize,
}

/// See the module documentation.
pub struct ZkStore {
    client: zk::Client,
    path: String,
    /// The election znode that must exist for a write to succeed.
    fence: String,
}

fn io(path: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: path.to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl ZkStore {
    /// `path` is the cluster's ZooKeeper path (`/agora`); the registry lives in `<path>/registry`.
    pub fn new(client: zk::Client, path: &str, fence: String) -> Self {
        ZkStore {
            client,
            path: format!("{path}/registry"),
            fence,
        }
    }

    async fn read(&self) -> Result<Option<Versioned>, StoreError> {
        let (data, stat) = match self.client.get_data(&self.path).await {
            Ok(r) => r,
            Err(zk::Error::NoNode) => return Ok(None),
            Err(e) => return Err(io(&self.path, e)),
        };
        let manifest: Manifest =
            serde_json::from_slice(&data).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        let mut doc = Vec::new();
        for i in 0..manifest.chunks {
            let chunk = format!("{}/g{}-{i}", self.path, manifest.generation);
            let (bytes, _) = self
                .client
                .get_data(&chunk)
                .await
                .map_err(|e| io(&chunk, e))?;
            doc.extend_from_slice(&bytes);
        }
        Ok(Some(Versioned {
            data: doc,
            version: stat.version as u64,
        }))
    }

    async fn write(&self, data: Vec<u8>, expected: Option<u64>) -> Result<u64, StoreError> {
        let generation = expected.map_or(1, |v| v + 2);
        let chunks: Vec<&[u8]> = data.chunks(CHUNK_BYTES).collect();
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        if expected.is_none() {
            if let Some(parent) = self.path.rsplit_once('/').map(|(p, _)| p) {
                if !parent.is_empty() {
                    self.client
                        .mkdir(parent, &persistent)
                        .await
                        .map_err(|e| io(parent, e))?;
                }
            }
            // The manifest must exist before chunks can hang under it; empty means "nothing yet".
            match self.client.create(&self.path, b"", &persistent).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(io(&self.path, e)),
            }
        }
        for (i, chunk) in chunks.iter().enumerate() {
            let node = format!("{}/g{generation}-{i}", self.path);
            match self.client.create(&node, chunk, &persistent).await {
                Ok(_) => {}
                Err(zk::Error::NodeExists) => {
                    self.client
                        .set_data(&node, chunk, None)
                        .await
                        .map_err(|e| io(&node, e))?;
                }
                Err(e) => return Err(io(&node, e)),
            }
        }
        let manifest = serde_json::to_vec(&Manifest {
            generation,
            chunks: chunks.len(),
        })
        .map_err(|e| io(&self.path, e))?;
        let mut writer = self
            .client
            .new_check_writer(&self.fence, None)
            .map_err(|e| io(&self.fence, e))?;
        // A fresh manifest is the empty node created above, at version 0.
        let version = i32::try_from(expected.map_or(0, |v| v)).unwrap_or(i32::MAX);
        writer
            .add_set_data(&self.path, &manifest, Some(version))
            .map_err(|e| io(&self.path, e))?;
        let results = writer.commit().await.map_err(|e| match e {
            // The fence is gone: this master's session ended and another may lead.
            zk::CheckWriteError::CheckFailed { .. } => StoreError::Conflict {
                expected,
                found: None,
            },
            zk::CheckWriteError::OperationFailed {
                source: zk::Error::BadVersion,
                ..
            } => StoreError::Conflict {
                expected,
                found: None,
            },
            other => io(&self.path, other),
        })?;
        let new_version = results
            .into_iter()
            .find_map(|r| match r {
                zk::MultiWriteResult::SetData { stat } => Some(stat.version as u64),
                _ => None,
            })
            .unwrap_or(version as u64 + 1);
        // Old generations are garbage now; a failure here only leaves garbage.
        if let Ok(children) = self.client.list_children(&self.path).await {
            let keep = format!("g{generation}-");
            for child in children.into_iter().filter(|c| !c.starts_with(&keep)) {
                let _ = self
                    .client
                    .delete(&format!("{}/{child}", self.path), None)
                    .await;
            }
        }
        Ok(new_version)
    }
}

impl StateStore for ZkStore {
    fn load(&self) -> StoreFuture<'_, Option<Versioned>> {
        Box::pin(async move {
            match self.read().await? {
                // The manifest exists but no generation was committed yet.
                Some(v) if v.data.is_empty() && v.version == 0 => Ok(None),
                other => Ok(other),
            }
        })
    }

    fn store(&self, data: Vec<u8>, expected: Option<u64>) -> StoreFuture<'_, u64> {
        Box::pin(self.write(data, expected))
    }
}
