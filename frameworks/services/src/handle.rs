//! What the API layer holds of the running framework: the handle that runs closures on the
//! [`ServicesCore`] inside its actor (answered once saved), the event stream of `/v2/events`, and who leads.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use agora_framework::CallError;

use crate::core::ServicesCore;

/// Runs closures on the core inside the actor; carries what `/v2/info` and `/v2/events` need.
#[derive(Clone)]
pub struct ServicesHandle {
    pub core: agora_framework::Handle<ServicesCore>,
    pub events: broadcast::Sender<(String, Value)>,
    pub framework_id: Arc<std::sync::RwLock<Option<String>>>,
    pub master: String,
    /// The framework's settings, for `/v2/info`.
    pub config: Arc<crate::ServicesConfig>,
}

impl ServicesHandle {
    /// Runs `f` on the core and answers once the state after it is saved.
    ///
    /// # Errors
    /// [`CallError::Stopped`] when the actor has stopped; [`CallError::NotSaved`] when the save
    /// failed (the call was undone).
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ServicesCore, chrono::DateTime<chrono::Utc>) -> T + Send + 'static,
    ) -> Result<T, CallError> {
        self.core.call(f).await
    }
}

/// Who leads among services instances (standbys proxy to the leader).
pub type Leadership = agora_ha::leadership::Leadership<ServicesHandle>;
