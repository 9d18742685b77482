//! The services framework: Marathon-compatible long-running apps on Agora.
#![forbid(unsafe_code)]

pub mod app;
pub mod constraints;
pub mod core;
pub mod launch;
