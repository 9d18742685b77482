//! Persistence of a framework core's state: one JSON document in a [`StateStore`] (a local file,
//! fsync'd, or ZooKeeper), written only when it changed.
//!
//! [`Persisted`] keeps the bytes last loaded or saved — the last *durable* state — so that an
//! actor whose save failed can roll its core back to it ([`Persisted::restore`]) instead of
//! going on with changes nobody may rely on. A failed save is [`SaveError::Failed`] (I/O, disk
//! full, ZooKeeper unreachable: retry later) or [`SaveError::Fenced`] (another instance wrote the
//! document: this one must stop leading).

use agora_ha::store::{Document, StateStore, StoreError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use tracing::error;

use crate::handle::{CallError, Replies};
use crate::lead::Fatal;

/// A save that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The write failed; the durable state is still the one last saved. Retry later.
    #[error("{0}")]
    Failed(StoreError),
    /// The store holds a version this instance did not write: another instance leads.
    #[error("another instance writes the state: {0}")]
    Fenced(StoreError),
}

impl From<StoreError> for SaveError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => SaveError::Fenced(e),
            other => SaveError::Failed(other),
        }
    }
}

/// See the module documentation.
pub struct Persisted {
    doc: Document,
    /// The last durable state: loaded or saved (`None`: nothing stored yet).
    last_saved: Option<Vec<u8>>,
}

impl Persisted {
    pub fn new(store: Box<dyn StateStore>) -> Self {
        Persisted {
            doc: Document::new(store),
            last_saved: None,
        }
    }

    /// The stored document, if any; it becomes the last durable state.
    ///
    /// # Errors
    /// [`StoreError`] naming the file or ZooKeeper node.
    pub async fn load(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        let loaded = self.doc.load().await?;
        self.last_saved.clone_from(&loaded);
        Ok(loaded)
    }

    /// Saves `bytes` unless they are what was saved last; returns once they are durable.
    ///
    /// # Errors
    /// [`SaveError`]: the state is not saved (the last durable state is unchanged).
    pub async fn save_if_changed(&mut self, bytes: Vec<u8>) -> Result<(), SaveError> {
        if self.last_saved.as_ref() == Some(&bytes) {
            return Ok(());
        }
        self.doc.save(bytes.clone()).await?;
        self.last_saved = Some(bytes);
        Ok(())
    }

    /// Saves `bytes` — the state after the calls `replies` holds — and then answers them: their
    /// values once durable, [`CallError::NotSaved`] when the save failed. After an `Err` the
    /// caller must roll its core back ([`Persisted::restore`]): what the calls did is not saved.
    ///
    /// # Errors
    /// The [`SaveError`], after the calls were answered.
    pub async fn commit(&mut self, bytes: Vec<u8>, replies: Replies) -> Result<(), SaveError> {
        let saved = self.save_if_changed(bytes).await;
        let outcome = match &saved {
            Ok(()) => Ok(()),
            Err(e) => Err(CallError::NotSaved(e.to_string())),
        };
        replies.deliver(&outcome);
        saved
    }

    /// An actor's own save (ticks, status updates, before launching) of the state `what` names
    /// (`services`, `batch`), given as its bytes or why they could not be made. `Ok(true)`:
    /// saved; `Ok(false)`: not saved — logged, the caller launches nothing and retries on its
    /// next tick.
    ///
    /// # Errors
    /// [`Fatal::Save`]: another instance writes the state, this one must stop.
    pub async fn save_or_retry(
        &mut self,
        bytes: Result<Vec<u8>, String>,
        what: &str,
    ) -> Result<bool, Fatal> {
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                error!(error = %e, "cannot save the {what} state");
                return Ok(false);
            }
        };
        match self.save_if_changed(bytes).await {
            Ok(()) => Ok(true),
            Err(SaveError::Failed(e)) => {
                error!(error = %e, "cannot save the {what} state: launching nothing; retrying on the next tick");
                Ok(false)
            }
            Err(SaveError::Fenced(e)) => {
                error!(error = %e, "another instance writes the {what} state: stopping");
                Err(Fatal::Save(e))
            }
        }
    }

    /// [`Persisted::commit`] for the actor: `Ok(true)`: saved and the calls answered;
    /// `Ok(false)`: not saved, the calls answered [`CallError::NotSaved`] — the caller must roll
    /// its core back ([`Persisted::restore`]).
    ///
    /// # Errors
    /// [`Fatal::Save`]: another instance writes the state, this one must stop.
    pub async fn commit_or_refuse(
        &mut self,
        bytes: Result<Vec<u8>, String>,
        replies: Replies,
        what: &str,
    ) -> Result<bool, Fatal> {
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                replies.deliver(&Err(CallError::NotSaved(e.clone())));
                error!(error = %e, "cannot save the {what} state: the API calls are refused and undone");
                return Ok(false);
            }
        };
        match self.commit(bytes, replies).await {
            Ok(()) => Ok(true),
            Err(SaveError::Failed(e)) => {
                error!(error = %e, "cannot save the {what} state: the API calls are refused and undone");
                Ok(false)
            }
            Err(SaveError::Fenced(e)) => {
                error!(error = %e, "another instance writes the {what} state: stopping");
                Err(Fatal::Save(e))
            }
        }
    }

    /// The last durable state, deserialized; `T::default()` when nothing was ever stored —
    /// which is what a restart would load too, so its bytes then count as saved (a read after
    /// the rollback writes nothing).
    ///
    /// # Errors
    /// The bytes are not a `T` (they were loaded or saved as one, so this means a bug).
    pub fn restore<T: DeserializeOwned + Serialize + Default>(
        &mut self,
    ) -> Result<T, serde_json::Error> {
        match &self.last_saved {
            None => {
                let t = T::default();
                self.last_saved = Some(serde_json::to_vec(&t)?);
                Ok(t)
            }
            Some(b) => serde_json::from_slice(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use agora_ha::store::{StoreFuture, Versioned};
    use tokio::sync::Semaphore;

    use super::*;
    use crate::handle::{apply_queued, Handle};

    /// A store in memory that fails on demand and, when `gated`, holds each write until a permit
    /// is added.
    struct FlakyStore {
        fail: AtomicBool,
        conflict: AtomicBool,
        gated: AtomicBool,
        gate: Semaphore,
        data: Mutex<Option<Vec<u8>>>,
        version: AtomicU64,
        writes: AtomicU64,
    }

    impl FlakyStore {
        fn new() -> Arc<Self> {
            Arc::new(FlakyStore {
                fail: AtomicBool::new(false),
                conflict: AtomicBool::new(false),
                gated: AtomicBool::new(false),
                gate: Semaphore::new(0),
                data: Mutex::new(None),
                version: AtomicU64::new(0),
                writes: AtomicU64::new(0),
            })
        }
    }

    struct Shared(Arc<FlakyStore>);

    impl StateStore for Shared {
        fn load(&self) -> StoreFuture<'_, Option<Versioned>> {
            Box::pin(async move {
                let data = self.0.data.lock().map(|d| d.clone()).unwrap_or_default();
                Ok(data.map(|data| Versioned {
                    data,
                    version: self.0.version.load(Ordering::SeqCst),
                }))
            })
        }

        fn store(&self, data: Vec<u8>, expected: Option<u64>) -> StoreFuture<'_, u64> {
            Box::pin(async move {
                let s = &self.0;
                if s.gated.load(Ordering::SeqCst) {
                    s.gate.acquire().await.expect("gate").forget();
                }
                if s.conflict.load(Ordering::SeqCst) {
                    return Err(StoreError::Conflict {
                        expected,
                        found: Some(99),
                    });
                }
                if s.fail.load(Ordering::SeqCst) {
                    return Err(StoreError::Io {
                        path: "state.json".into(),
                        source: std::io::Error::other("No space left on device"),
                    });
                }
                s.writes.fetch_add(1, Ordering::SeqCst);
                *s.data.lock().expect("lock") = Some(data);
                Ok(s.version.fetch_add(1, Ordering::SeqCst) + 1)
            })
        }
    }

    #[derive(serde::Serialize, serde::Deserialize, Default, Debug, PartialEq, Clone)]
    struct Core {
        apps: Vec<String>,
    }

    /// The actor loop the frameworks run, reduced to the commit protocol: apply the queued
    /// calls, save once, answer, roll back on a failed save.
    fn spawn_actor(
        mut jobs: crate::handle::Jobs<Core>,
        mut state: Persisted,
        mut core: Core,
    ) -> tokio::task::JoinHandle<Core> {
        tokio::spawn(async move {
            while let Some(job) = jobs.recv().await {
                let replies = apply_queued(&mut core, job, &mut jobs);
                let bytes = serde_json::to_vec(&core).expect("json");
                match state.commit(bytes, replies).await {
                    Ok(()) => {}
                    Err(SaveError::Failed(_)) => core = state.restore().expect("restore"),
                    Err(SaveError::Fenced(_)) => break,
                }
            }
            core
        })
    }

    fn add(
        handle: &Handle<Core>,
        id: &str,
    ) -> impl std::future::Future<Output = Result<usize, CallError>> {
        let (handle, id) = (handle.clone(), id.to_string());
        async move {
            handle
                .call(move |c: &mut Core, _| {
                    c.apps.push(id);
                    c.apps.len()
                })
                .await
        }
    }

    #[tokio::test]
    async fn a_reply_is_delivered_only_after_the_save_completes() {
        let store = FlakyStore::new();
        store.gated.store(true, Ordering::SeqCst);
        let (handle, jobs) = Handle::channel();
        let actor = spawn_actor(
            jobs,
            Persisted::new(Box::new(Shared(store.clone()))),
            Core::default(),
        );
        let call = tokio::spawn(add(&handle, "/a"));
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert!(!call.is_finished(), "no reply while the write is in flight");
        assert_eq!(store.writes.load(Ordering::SeqCst), 0);
        store.gate.add_permits(1);
        assert_eq!(call.await.expect("task"), Ok(1));
        assert_eq!(store.writes.load(Ordering::SeqCst), 1);
        assert_eq!(
            store.data.lock().expect("lock").as_deref(),
            Some(br#"{"apps":["/a"]}"#.as_slice())
        );
        drop(handle);
        actor.await.expect("actor");
    }

    #[tokio::test]
    async fn a_failed_save_answers_not_saved_rolls_back_and_a_later_call_saves() {
        let store = FlakyStore::new();
        let (handle, jobs) = Handle::channel();
        let actor = spawn_actor(
            jobs,
            Persisted::new(Box::new(Shared(store.clone()))),
            Core::default(),
        );
        // Nothing saved yet: a refused first call rolls back to the default state.
        store.fail.store(true, Ordering::SeqCst);
        let e = add(&handle, "/refused").await.unwrap_err();
        assert!(
            matches!(&e, CallError::NotSaved(r) if r.contains("No space left")),
            "{e}"
        );
        let list = |h: &Handle<Core>| {
            let h = h.clone();
            async move { h.call(|c, _| c.apps.clone()).await }
        };
        // Reads go on (nothing changed since the rollback: no write is attempted).
        assert_eq!(list(&handle).await, Ok(Vec::<String>::new()));
        store.fail.store(false, Ordering::SeqCst);
        assert_eq!(add(&handle, "/a").await, Ok(1));
        // Something durable now: a refused call rolls back to it, not to nothing.
        store.fail.store(true, Ordering::SeqCst);
        assert!(add(&handle, "/b").await.is_err());
        assert_eq!(list(&handle).await, Ok(vec!["/a".to_string()]));
        let writes = store.writes.load(Ordering::SeqCst);
        store.fail.store(false, Ordering::SeqCst);
        assert_eq!(list(&handle).await, Ok(vec!["/a".to_string()]));
        assert_eq!(
            store.writes.load(Ordering::SeqCst),
            writes,
            "a read writes nothing"
        );
        assert_eq!(add(&handle, "/c").await, Ok(2));
        // A conflict (another instance wrote) stops the actor; the caller hears why first.
        store.conflict.store(true, Ordering::SeqCst);
        assert!(matches!(
            add(&handle, "/d").await,
            Err(CallError::NotSaved(_))
        ));
        assert_eq!(
            actor.await.expect("actor").apps,
            vec!["/a".to_string(), "/c".to_string(), "/d".to_string()]
        );
        assert_eq!(add(&handle, "/e").await, Err(CallError::Stopped));
    }

    #[tokio::test]
    async fn the_loaded_state_is_the_durable_one_and_identical_bytes_are_not_written() {
        let store = FlakyStore::new();
        *store.data.lock().expect("lock") = Some(br#"{"apps":["/x"]}"#.to_vec());
        store.version.store(4, Ordering::SeqCst);
        let mut state = Persisted::new(Box::new(Shared(store.clone())));
        assert!(state.restore::<Core>().expect("restore").apps.is_empty());
        state.load().await.expect("load");
        assert_eq!(state.restore::<Core>().expect("restore").apps, vec!["/x"]);
        state
            .save_if_changed(br#"{"apps":["/x"]}"#.to_vec())
            .await
            .expect("save");
        assert_eq!(store.writes.load(Ordering::SeqCst), 0);
        store.fail.store(true, Ordering::SeqCst);
        let e = state.save_if_changed(b"{}".to_vec()).await.unwrap_err();
        assert!(matches!(e, SaveError::Failed(_)), "{e}");
        assert_eq!(state.restore::<Core>().expect("restore").apps, vec!["/x"]);
        store.conflict.store(true, Ordering::SeqCst);
        let e = state.save_if_changed(b"{}".to_vec()).await.unwrap_err();
        assert!(matches!(e, SaveError::Fenced(_)), "{e}");
    }
}
