//! Where a cluster keeps one small secret document (the master's cluster CA and token secrets):
//! a file readable by its owner only, or a znode, written once by whichever process comes first
//! and read by all the others.
//!
//! ```text
//!  File(path)            path (mode 0600, in a directory made 0700), created with link(2): the
//!                        first writer wins, later ones read what it wrote
//!  ZooKeeper{servers,p}  znode p: create (first writer wins, NodeExists → read), set_data with the
//!                        version read (compare-and-set) to replace
//! ```
//!
//! Unlike the registry's [`crate::zk_store::ZkStore`], writes are not fenced on an election znode:
//! the document is needed before any master leads (standbys serve TLS too), and it changes only
//! by an operator's command.
//!
//! ZooKeeper ACL: with `auth` (`user:password`, the `digest` scheme) the znode is created with
//! `creator_all`, so that only sessions authenticated with the same credential can read it; without
//! it the znode can be read by any client of that ZooKeeper, which the caller is told by
//! [`SecretHome::is_protected`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zookeeper_client as zk;

use crate::store::{StoreError, Versioned};

/// See the module documentation.
#[derive(Clone)]
pub enum SecretHome {
    /// A file (mode 0600).
    File(PathBuf),
    /// A znode.
    ZooKeeper {
        servers: String,
        path: String,
        /// `user:password` for ZooKeeper's digest scheme.
        auth: Option<String>,
        session_timeout: Duration,
    },
}

impl std::fmt::Debug for SecretHome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}

fn io(path: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: path.to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn file_io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl SecretHome {
    /// Where it is, for messages (`/var/lib/…/cluster.json`, `zk://h:2181/agora/pki`).
    pub fn describe(&self) -> String {
        match self {
            SecretHome::File(p) => p.display().to_string(),
            SecretHome::ZooKeeper { servers, path, .. } => format!("zk://{servers}{path}"),
        }
    }

    /// False for a znode readable by any client of its ZooKeeper (no `auth`).
    pub fn is_protected(&self) -> bool {
        match self {
            SecretHome::File(_) => true,
            SecretHome::ZooKeeper { auth, .. } => auth.is_some(),
        }
    }

    async fn client(&self) -> Result<(zk::Client, String), StoreError> {
        let SecretHome::ZooKeeper {
            servers,
            path,
            auth,
            session_timeout,
        } = self
        else {
            return Err(io("secret", "not a ZooKeeper home"));
        };
        let mut connector = zk::Client::connector()
            .with_session_timeout(*session_timeout)
            .with_connection_timeout(Duration::from_secs(5));
        if let Some(auth) = auth {
            connector = connector.with_auth("digest", auth.as_bytes());
        }
        let client = connector
            .connect(servers)
            .await
            .map_err(|e| io(&self.describe(), e))?;
        Ok((client, path.clone()))
    }

    fn acls(&self) -> zk::Acls<'static> {
        if self.is_protected() {
            zk::Acls::creator_all()
        } else {
            zk::Acls::anyone_all()
        }
    }

    /// The document and its version, if one was written.
    ///
    /// # Errors
    /// [`StoreError::Io`], also when ZooKeeper refuses this session the znode (another `auth`).
    pub async fn read(&self) -> Result<Option<Versioned>, StoreError> {
        match self {
            SecretHome::File(p) => match std::fs::read(p) {
                Ok(data) => Ok(Some(Versioned { data, version: 0 })),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(file_io(p, e)),
            },
            SecretHome::ZooKeeper { .. } => {
                let (client, path) = self.client().await?;
                match client.get_data(&path).await {
                    Ok((data, stat)) => Ok(Some(Versioned {
                        data,
                        version: u64::try_from(stat.version).unwrap_or(0),
                    })),
                    Err(zk::Error::NoNode) => Ok(None),
                    Err(e) => Err(io(&self.describe(), e)),
                }
            }
        }
    }

    /// Stores `data` unless a document is there already; returns the stored document (this one, or
    /// the one another process wrote first).
    ///
    /// # Errors
    /// [`StoreError::Io`].
    pub async fn create_once(&self, data: &[u8]) -> Result<Vec<u8>, StoreError> {
        match self {
            SecretHome::File(p) => {
                if let Some(v) = self.read().await? {
                    return Ok(v.data);
                }
                let tmp = private_temp(p, data)?;
                // link(2) fails when `p` exists: the first writer wins, atomically.
                let linked = std::fs::hard_link(&tmp, p);
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => {
                        sync_dir(p);
                        Ok(data.to_vec())
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::fs::read(p).map_err(|e| file_io(p, e))
                    }
                    Err(e) => Err(file_io(p, e)),
                }
            }
            SecretHome::ZooKeeper { .. } => {
                let (client, path) = self.client().await?;
                if let Some((parent, _)) = path.rsplit_once('/').filter(|(p, _)| !p.is_empty()) {
                    client
                        .mkdir(
                            parent,
                            &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all()),
                        )
                        .await
                        .map_err(|e| io(parent, e))?;
                }
                let acls = self.acls();
                match client
                    .create(&path, data, &zk::CreateMode::Persistent.with_acls(acls))
                    .await
                {
                    Ok(_) => Ok(data.to_vec()),
                    Err(zk::Error::NodeExists) => client
                        .get_data(&path)
                        .await
                        .map(|(d, _)| d)
                        .map_err(|e| io(&self.describe(), e)),
                    Err(e) => Err(io(&self.describe(), e)),
                }
            }
        }
    }

    /// Replaces the document read at `version` (compare-and-set in ZooKeeper; the file is
    /// replaced atomically).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when someone else replaced it meanwhile; [`StoreError::Io`].
    pub async fn replace(&self, data: &[u8], version: u64) -> Result<(), StoreError> {
        match self {
            SecretHome::File(p) => {
                let tmp = private_temp(p, data)?;
                std::fs::rename(&tmp, p).map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    file_io(p, e)
                })?;
                sync_dir(p);
                Ok(())
            }
            SecretHome::ZooKeeper { .. } => {
                let (client, path) = self.client().await?;
                let expected = i32::try_from(version).unwrap_or(i32::MAX);
                match client.set_data(&path, data, Some(expected)).await {
                    Ok(_) => Ok(()),
                    Err(zk::Error::BadVersion) => Err(StoreError::Conflict {
                        expected: Some(version),
                        found: None,
                    }),
                    Err(e) => Err(io(&self.describe(), e)),
                }
            }
        }
    }
}

/// Writes `data` to a temporary file beside `path`, mode 0600 from its creation, fsync'd; the
/// directory is created 0700 when missing.
fn private_temp(path: &Path, data: &[u8]) -> Result<PathBuf, StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| file_io(dir, e))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("secret");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        file_io(&tmp, e)
    })?;
    Ok(tmp)
}

fn sync_dir(path: &Path) {
    if let Some(d) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn a_file_is_written_once_private_and_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = SecretHome::File(dir.path().join("pki/cluster.json"));
        assert_eq!(home.read().await.expect("read"), None);
        assert_eq!(home.create_once(b"first").await.expect("create"), b"first");
        assert_eq!(home.create_once(b"second").await.expect("again"), b"first");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("pki/cluster.json")), 0o600);
        assert_eq!(mode(&dir.path().join("pki")), 0o700);
        home.replace(b"third", 0).await.expect("replace");
        assert_eq!(
            home.read().await.expect("read").map(|v| v.data),
            Some(b"third".to_vec())
        );
        assert_eq!(mode(&dir.path().join("pki/cluster.json")), 0o600);
    }
}
