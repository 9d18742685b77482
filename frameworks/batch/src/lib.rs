//! The batch framework: Chronos-compatible jobs on Agora — ISO 8601 and cron schedules,
//! dependencies between jobs, retries with backoff, parallel runs with completions, deadlines.
//!
//! ```text
//!  Chronos clients ──HTTP /v1/scheduler──▶ actor ──▶ BatchCore (pure: jobs, runs, retries)
//!                                            │  ▲         │ claim launches (persisted first)
//!                                            ▼  │ updates ▼
//!                                      agora-sdk Framework ──gRPC──▶ master ──▶ agents
//! ```
#![forbid(unsafe_code)]

pub mod basic_auth;
pub mod core;
pub mod handle;
pub mod http;
pub mod job;
pub mod schedule;
pub mod service;
pub mod wire;

pub use service::{run, start, BatchConfig, RunningBatch};

/// Default port of the batch framework's API.
pub const DEFAULT_PORT: u16 = 8090;
