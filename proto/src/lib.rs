//! Agora's wire contract and resource algebra.
//!
//! - [`v1`]: the generated gRPC types and services of `proto/agora/v1/agora.proto` (`Scheduler`,
//!   `AgentControl`, `Operator`), clients and servers.
//! - [`resources`]: exact arithmetic on resource sets (scalars in thousandths, port ranges), the
//!   agent flag syntax `cpus:4;mem:8192;ports:[31000-32000]`, and conversion to and from the wire type.
//!
//! - [`detector`] (feature `detector`): finding the leading master, at a fixed address or through
//!   ZooKeeper.
//! - [`tls`] (feature `tls`): rustls listeners (gRPC and HTTP on one port) and gRPC client TLS.
//! - [`http_auth`] (feature `http-auth`): the bearer-token middleware every HTTP API shares.
//!
//! Every other crate trusts this one for what a resource set is, so it is unit- and property-tested.
#![forbid(unsafe_code)]

#[cfg(feature = "detector")]
pub mod detector;
#[cfg(feature = "http-auth")]
pub mod http_auth;
pub mod resources;
#[cfg(feature = "tls")]
pub mod tls;

/// Generated code for package `agora.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("agora.v1");
}

pub use resources::{Ranges, ResourceError, ResourceKey, Resources, ScalarValue};

/// Terminal task states: the task will not change state again and its resources are free.
pub fn is_terminal(state: v1::TaskState) -> bool {
    use v1::TaskState::*;
    matches!(
        state,
        TaskFinished | TaskFailed | TaskKilled | TaskError | TaskLost | TaskDropped | TaskGone
    )
}

#[cfg(test)]
mod tests {
    use super::v1::TaskState;

    #[test]
    fn terminal_states_are_exactly_the_documented_ones() {
        let terminal: Vec<&str> = (0..=13)
            .filter_map(|n| TaskState::try_from(n).ok())
            .filter(|s| super::is_terminal(*s))
            .map(|s| s.as_str_name())
            .collect();
        assert_eq!(
            terminal,
            [
                "TASK_FINISHED",
                "TASK_FAILED",
                "TASK_KILLED",
                "TASK_ERROR",
                "TASK_LOST",
                "TASK_DROPPED",
                "TASK_GONE"
            ]
        );
    }
}
