//! Chronos-compatible batch jobs framework.
//!
//! Work in progress: see the open issues for what this crate will own.
#![forbid(unsafe_code)]
