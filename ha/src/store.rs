//! Durable storage of one document with compare-and-set writes: the [`StateStore`] trait, its
//! local-file implementation ([`LocalFileStore`]) and [`Document`], a store together with the
//! version last read or written (what a single writer — a leading master or framework — holds).
//!
//! The ZooKeeper implementation is [`crate::zk_store::ZkStore`]. Two local on-disk layouts exist
//! and both are kept as they were written by earlier versions:
//! - [`LocalFormat::Versioned`]: `{"version": N, "data": <document>}` (the master's
//!   `registry.json`), so a stale writer is refused by the version it read;
//! - [`LocalFormat::Plain`]: the document itself (the frameworks' `state.json`); its version is
//!   counted in memory, which is enough for the one process that owns the file.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// The durable state could not be read or written. Fatal for a leader: it must not go on acting
/// on state it cannot persist.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the store's files (or ZooKeeper nodes) failed.
    #[error("registry I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The stored document is not valid JSON of the expected shape.
    #[error("registry at {path} is corrupt: {message}")]
    Corrupt { path: String, message: String },
    /// A compare-and-set write found another version than expected: someone else wrote.
    #[error("registry version conflict: expected {expected:?}, found {found:?}")]
    Conflict {
        expected: Option<u64>,
        found: Option<u64>,
    },
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
    /// returns the new version. It returns only once the write is durable.
    fn store(&self, data: Vec<u8>, expected: Option<u64>) -> StoreFuture<'_, u64>;
}

/// Writes `bytes` to `path` so that a reader (or a crash) sees either the old file or the new one:
/// a hidden temporary file in the same directory (`.<name>.tmp.<pid>`), fsync'd, renamed over
/// `path`, then the directory fsync'd so that the rename survives a power cut. Creates the parent
/// directory when missing; a failed write leaves no temporary file behind.
///
/// # Errors
/// The I/O error of whichever step failed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, 0o644)
}

/// [`write_atomic`] for a secret (a key, a token): the file is created readable and writable by
/// its owner only (mode 0600) before anything is written to it.
///
/// # Errors
/// The I/O error of whichever step failed.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, 0o600)
}

fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("document");
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    // Best effort: some filesystems refuse to fsync a directory; the rename is done anyway.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// How a [`LocalFileStore`] lays its document out on disk (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalFormat {
    /// `{"version": N, "data": <document>}`.
    Versioned,
    /// The document itself; the version is counted in memory.
    Plain,
}

/// One document in a local file, replaced atomically ([`write_atomic`]). Used by a standalone
/// master, by one-instance frameworks and by `agora local`.
#[derive(Debug)]
pub struct LocalFileStore {
    path: PathBuf,
    format: LocalFormat,
    /// [`LocalFormat::Plain`]: the version of the last load or store (0: nothing stored).
    plain_version: AtomicU64,
}

#[derive(Serialize, Deserialize)]
struct LocalDocument {
    version: u64,
    data: serde_json::Value,
}

impl LocalFileStore {
    /// A store of `file` in `dir` (created when missing), in `format`.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the directory cannot be created.
    pub fn in_dir(dir: &Path, file: &str, format: LocalFormat) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Self::at(dir.join(file), format))
    }

    /// A store of the file at `path` (its directory is created at the first write).
    pub fn at(path: PathBuf, format: LocalFormat) -> Self {
        LocalFileStore {
            path,
            format,
            plain_version: AtomicU64::new(0),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn corrupt(&self, message: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.display().to_string(),
            message,
        }
    }

    fn read(&self) -> Result<Option<Versioned>, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        match self.format {
            LocalFormat::Plain => {
                let version = self.plain_version.load(Ordering::SeqCst).max(1);
                self.plain_version.store(version, Ordering::SeqCst);
                Ok(Some(Versioned {
                    data: bytes,
                    version,
                }))
            }
            LocalFormat::Versioned => {
                let doc: LocalDocument =
                    serde_json::from_slice(&bytes).map_err(|e| self.corrupt(e.to_string()))?;
                let data =
                    serde_json::to_vec(&doc.data).map_err(|e| self.corrupt(e.to_string()))?;
                Ok(Some(Versioned {
                    data,
                    version: doc.version,
                }))
            }
        }
    }

    fn found_version(&self) -> Result<Option<u64>, StoreError> {
        match self.format {
            LocalFormat::Plain => Ok(match self.plain_version.load(Ordering::SeqCst) {
                0 if !self.path.exists() => None,
                0 => Some(1),
                v => Some(v),
            }),
            LocalFormat::Versioned => Ok(self.read()?.map(|v| v.version)),
        }
    }

    fn write(&self, data: &[u8], expected: Option<u64>) -> Result<u64, StoreError> {
        let found = self.found_version()?;
        if found != expected {
            return Err(StoreError::Conflict { expected, found });
        }
        let version = expected.map_or(1, |v| v + 1);
        match self.format {
            LocalFormat::Plain => {
                write_atomic(&self.path, data).map_err(|e| self.io(e))?;
                self.plain_version.store(version, Ordering::SeqCst);
            }
            LocalFormat::Versioned => {
                let value: serde_json::Value = serde_json::from_slice(data).map_err(|e| {
                    self.corrupt(format!(
                        "refusing to store a document that is not JSON: {e}"
                    ))
                })?;
                let doc = serde_json::to_vec(&LocalDocument {
                    version,
                    data: value,
                })
                .map_err(|e| self.corrupt(e.to_string()))?;
                write_atomic(&self.path, &doc).map_err(|e| self.io(e))?;
            }
        }
        Ok(version)
    }
}

impl StateStore for LocalFileStore {
    fn load(&self) -> StoreFuture<'_, Option<Versioned>> {
        Box::pin(async move { self.read() })
    }

    fn store(&self, data: Vec<u8>, expected: Option<u64>) -> StoreFuture<'_, u64> {
        Box::pin(async move { self.write(&data, expected) })
    }
}

/// A store and the version this writer last read or wrote: load once, then save again and again
/// (each save a compare-and-set on that version, so a writer that lost the store to another one
/// is refused instead of overwriting it).
pub struct Document {
    store: Box<dyn StateStore>,
    version: Option<u64>,
}

impl Document {
    pub fn new(store: Box<dyn StateStore>) -> Self {
        Document {
            store,
            version: None,
        }
    }

    /// The stored document, if any.
    ///
    /// # Errors
    /// [`StoreError`] naming the file or ZooKeeper node.
    pub async fn load(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        match self.store.load().await? {
            Some(v) => {
                self.version = Some(v.version);
                Ok(Some(v.data))
            }
            None => Ok(None),
        }
    }

    /// Replaces the document; returns once it is durable. A conflict means another writer leads.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn save(&mut self, bytes: Vec<u8>) -> Result<(), StoreError> {
        let v = self.store.store(bytes, self.version).await?;
        self.version = Some(v);
        Ok(())
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
    fn a_plain_file_keeps_the_document_as_it_is_and_refuses_a_stale_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("state.json");
        let store = LocalFileStore::at(path.clone(), LocalFormat::Plain);
        assert_eq!(block(store.load()).expect("load"), None);
        let v1 = block(store.store(br#"{"a":1}"#.to_vec(), None)).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), br#"{"a":1}"#);
        let err = block(store.store(b"{}".to_vec(), None)).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        block(store.store(br#"{"a":2}"#.to_vec(), Some(v1))).expect("write");
        // A new process reads what the old one wrote, and may write on from there.
        let mut doc = Document::new(Box::new(LocalFileStore::at(
            path.clone(),
            LocalFormat::Plain,
        )));
        assert_eq!(
            block(doc.load()).expect("load"),
            Some(br#"{"a":2}"#.to_vec())
        );
        block(doc.save(br#"{"a":3}"#.to_vec())).expect("save");
        assert_eq!(std::fs::read(&path).expect("read"), br#"{"a":3}"#);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .expect("ls")
            .collect();
        assert_eq!(left.len(), 1, "only state.json remains: {left:?}");
    }

    #[test]
    fn a_versioned_file_wraps_the_document_with_its_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalFileStore::in_dir(dir.path(), "registry.json", LocalFormat::Versioned)
            .expect("store");
        block(store.store(br#"{"x":true}"#.to_vec(), None)).expect("write");
        let on_disk: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("registry.json")).expect("read"))
                .expect("json");
        assert_eq!(
            on_disk,
            serde_json::json!({"version": 1, "data": {"x": true}})
        );
        let err = block(store.store(b"not json".to_vec(), Some(1))).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn write_atomic_replaces_a_file_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        write_atomic(&path, b"one").expect("write");
        write_atomic(&path, b"two").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
    }
}
