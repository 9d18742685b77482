//! Persistence of a framework core's state: one JSON document in a [`StateStore`] (a local file
//! or ZooKeeper), written only when it changed. A failed save is returned to the actor, which must
//! stop acting (launching what is not recorded could run it twice after a failover).

use agora_ha::store::{Document, StateStore, StoreError};

/// See the module documentation.
pub struct Persisted {
    doc: Document,
    last_saved: Vec<u8>,
}

impl Persisted {
    pub fn new(store: Box<dyn StateStore>) -> Self {
        Persisted {
            doc: Document::new(store),
            last_saved: Vec::new(),
        }
    }

    /// The stored document, if any.
    ///
    /// # Errors
    /// [`StoreError`] naming the file or ZooKeeper node.
    pub async fn load(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        self.doc.load().await
    }

    /// Saves `bytes` unless they are what was saved last; returns once they are durable.
    ///
    /// # Errors
    /// [`StoreError`]: the state is not saved.
    pub async fn save_if_changed(&mut self, bytes: Vec<u8>) -> Result<(), StoreError> {
        if bytes == self.last_saved {
            return Ok(());
        }
        self.doc.save(bytes.clone()).await?;
        self.last_saved = bytes;
        Ok(())
    }
}
