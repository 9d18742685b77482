//! The services framework: Marathon-compatible long-running apps on Agora.
//!
//! ```text
//!  Marathon clients ──HTTP /v2/…──▶ actor ──▶ ServicesCore (pure: apps, tasks, deployments)
//!                                    │  ▲           │ launches (recorded first) and kills
//!                                    ▼  │ updates   ▼
//!                              agora-sdk Framework ──gRPC──▶ master ──▶ agents
//! ```
#![forbid(unsafe_code)]

pub mod app;
pub mod compose;
pub mod core;
pub mod global;
pub mod group;
pub mod handle;
pub mod http;
pub mod launch;
pub mod offer_stats;
pub mod ports;
pub mod service;
pub mod ui;
pub mod wire;

pub use ports::PortRange;
pub use service::{run, start, start_with, RunningServices, ServicesConfig};

/// Default port of the services framework's API.
pub const DEFAULT_PORT: u16 = 8080;
