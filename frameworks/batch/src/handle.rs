//! What the API layer holds of the running batch framework: the handle that runs closures on the
//! [`BatchCore`] inside its actor, and who leads.

use crate::core::BatchCore;

/// Runs closures on the core inside the actor and answers once the state after them is saved
/// (`CallError::NotSaved` when it could not be: the call was undone; `CallError::Stopped` when
/// the actor has stopped).
pub type BatchHandle = agora_framework::Handle<BatchCore>;

/// Who leads among batch instances (the HTTP layer redirects standbys' requests).
pub type Leadership = agora_ha::leadership::Leadership<BatchHandle>;
