//! What every Agora framework process (`agora services`, `agora batch`, and frameworks built the
//! same way) shares around its own pure core and event loop:
//!
//! ```text
//!  FrameworkConfig ─▶ BoundApi (listener, TLS) ─▶ axum router ─▶ Handle<C>::call ─▶ actor owns C
//!                     contender() ─▶ spawn_campaign ─▶ lead(store) ─▶ Persisted (state document)
//!                                                   └─ the term ends ─▶ Fatal (the binary exits)
//!  actor: OfferGate (suppress/revive) · constraints (Marathon, Chronos) · SDK offer carving
//! ```
//!
//! - [`config`]: [`FrameworkConfig`], the flags every framework process takes.
//! - [`api`]: [`BoundApi`], the API port bound before start and served until stopped.
//! - [`json`]: [`read_json`], request bodies read so that an error names the field.
//! - [`handle`]: [`Handle<C>`], a closure run on the core inside its actor.
//! - [`persist`]: [`Persisted`], the core's state saved when it changed.
//! - [`offers`]: [`OfferGate`], suppress and revive.
//! - [`constraints`]: Marathon's and Chronos's placement constraints.
//! - [`lead`]: the contender for a process's flags and the background campaign.
//!
//! Offer carving (taking a task's resources out of an offer) is the SDK's (`agora_sdk::carve`):
//! any framework uses it, not only these processes.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod constraints;
pub mod handle;
pub mod json;
pub mod lead;
pub mod offers;
pub mod persist;

pub use api::{ApiSetupError, BoundApi};
pub use config::FrameworkConfig;
pub use handle::{Handle, Job, Jobs};
pub use json::{read_json, read_json_value, UnreadableField};
pub use lead::{contender, spawn_actor, spawn_campaign, Fatal, STATE_FILE};
pub use offers::{GateAction, OfferGate};
pub use persist::Persisted;
