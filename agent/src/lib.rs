//! The Agora agent: containerizers, executors, checkpointing and recovery.
//!
//! Work in progress: see the open issues for what this crate will own.
#![forbid(unsafe_code)]
