//! The Agora master: allocator, offers, agents, frameworks and task bookkeeping.
//!
//! Work in progress: see the open issues for what this crate will own.
#![forbid(unsafe_code)]
