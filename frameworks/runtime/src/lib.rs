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
//! - [`bounds`]: the length, count and duration checks every API applies at its edge.
//! - [`handle`]: [`Handle<C>`], a closure run on the core inside its actor, answered once saved.
//! - [`persist`]: [`Persisted`], the core's state saved when it changed, and the last durable one.
//! - [`offers`]: [`OfferGate`], suppress and revive.
//! - [`constraints`]: Marathon's and Chronos's placement constraints.
//! - [`running`]: [`Running`], a started framework: stop it, wait for it, or learn why it failed.
//! - [`lead`]: the contender for a process's flags and the background campaign.
//!
//! Offer carving (taking a task's resources out of an offer) is the SDK's (`agora_sdk::carve`):
//! any framework uses it, not only these processes.
//!
//! # A reply means it is durable
//!
//! An API handler's [`Handle::call`] answers only once the state after it is saved:
//!
//! 1. the actor runs the call and every call already queued on its core ([`apply_queued`]:
//!    group commit, one save for the batch) and holds their replies;
//! 2. it saves the core once ([`Persisted::commit`]: a local file is written and fsync'd, or a
//!    ZooKeeper node set with compare-and-set); bytes equal to the last save are not written, so
//!    read-only calls cost no write;
//! 3. then it delivers the replies. If the save failed, every call of the batch gets
//!    [`CallError::NotSaved`] (the HTTP layers answer `503 {"message": "the state could not be
//!    saved: <reason>"}`), and the actor rolls its core back to the last durable state
//!    ([`Persisted::restore`]: the bytes last loaded or saved, or the default state when nothing
//!    was ever saved) — a refused app or job is not listed afterwards. The process keeps serving;
//!    the next call or tick tries to save again.
//!
//! Saves on the actor's own paths (ticks, status updates, after launches) that fail are logged
//! and retried on the next tick, without a rollback (they record what the master reported).
//! While the state is not saved the actor launches nothing and declines its offers: a task
//! launched but not recorded could run twice after a failover. A compare-and-set conflict
//! ([`SaveError::Fenced`]: another instance wrote the state) is still [`Fatal`]: this instance no
//! longer leads. A `kill -9` at any point loses no acknowledged call, since nothing is
//! acknowledged before its save returned.
#![forbid(unsafe_code)]

pub mod api;
pub mod bounds;
pub mod config;
pub mod constraints;
pub mod handle;
pub mod join;
pub mod json;
pub mod lead;
pub mod offers;
pub mod persist;
pub mod running;

pub use api::{ApiSetupError, BoundApi};
pub use config::FrameworkConfig;
pub use handle::{apply_queued, CallError, Delivery, Handle, Job, Jobs, Replies};
pub use join::JoinSetupError;
pub use json::{read_json, read_json_value, UnreadableField};
pub use lead::{contender, spawn_actor, spawn_campaign, Fatal, STATE_FILE};
pub use offers::{GateAction, OfferGate};
pub use persist::{Persisted, SaveError};
pub use running::Running;
