//! Agora's wire contract and resource algebra.
//!
//! - [`v1`]: the generated gRPC types and services of `proto/agora/v1/agora.proto` (`Scheduler`,
//!   `AgentControl`, `Operator`), clients and servers.
//! - [`resources`]: exact arithmetic on resource sets (scalars in thousandths, port ranges), the
//!   agent flag syntax `cpus:4;mem:8192;ports:[31000-32000]`, and conversion to and from the wire type.
//! - [`host_aliases`]: the bounds of `ContainerInfo.host_aliases`.
//! - [`is_terminal`] / [`is_terminal_name`]: the one definition of a terminal task state.
//! - [`MESH_BALANCE_VALUES`] / [`is_balance_label`]: the discovery label `HAPROXY_{n}_BALANCE`
//!   that frameworks check and the agents' mesh follows.
//!
//! Finding the leader lives in `agora-ha`, TLS and HTTP authentication in `agora-net`: this crate
//! is the contract only. Every other crate trusts it for what a resource set is, so it is unit- and
//! property-tested.
#![forbid(unsafe_code)]

pub mod host_aliases;
pub mod resources;

/// Generated code for package `agora.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("agora.v1");
}

pub use resources::{Ranges, ResourceError, ResourceKey, Resources, ScalarValue};

/// Terminal task states: the task will not change state again and its resources are free.
/// `TASK_UNKNOWN` is one: the master answers it (to reconciliation) for a task it does not know,
/// which a framework must treat as gone; the master itself never keeps a task in it.
pub fn is_terminal(state: v1::TaskState) -> bool {
    use v1::TaskState::*;
    matches!(
        state,
        TaskFinished
            | TaskFailed
            | TaskKilled
            | TaskError
            | TaskLost
            | TaskDropped
            | TaskGone
            | TaskUnknown
    )
}

/// [`is_terminal`] for a state by its wire name (`TASK_FINISHED`), as the frameworks store them.
/// An unknown name is not terminal.
pub fn is_terminal_name(state: &str) -> bool {
    v1::TaskState::from_str_name(state).is_some_and(is_terminal)
}

/// The values of discovery label `HAPROXY_{n}_BALANCE` (marathon-lb's label for HAProxy's
/// `balance` of service port `n`) that the agents' routing mesh implements, case-insensitive:
/// round robin (the default) and least connections.
pub const MESH_BALANCE_VALUES: [&str; 2] = ["roundrobin", "leastconn"];

/// Whether `key` is a `HAPROXY_{n}_BALANCE` label (`n` a service port index: decimal digits).
pub fn is_balance_label(key: &str) -> bool {
    key.strip_prefix("HAPROXY_")
        .and_then(|k| k.strip_suffix("_BALANCE"))
        .is_some_and(|n| !n.is_empty() && n.len() <= 4 && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::v1::TaskState;

    #[test]
    fn balance_labels() {
        assert!(super::is_balance_label("HAPROXY_0_BALANCE"));
        assert!(super::is_balance_label("HAPROXY_12_BALANCE"));
        for k in [
            "HAPROXY__BALANCE",
            "HAPROXY_x_BALANCE",
            "HAPROXY_0_VHOST",
            "haproxy_0_balance",
        ] {
            assert!(!super::is_balance_label(k), "{k}");
        }
    }

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
                "TASK_GONE",
                "TASK_UNKNOWN"
            ]
        );
        assert!(super::is_terminal_name("TASK_UNKNOWN"));
        assert!(!super::is_terminal_name("TASK_RUNNING"));
        assert!(!super::is_terminal_name("no such state"));
    }
}
