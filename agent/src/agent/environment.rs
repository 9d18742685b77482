//! A task's environment, pure: the host ports of its `ports` resource and the variables it runs
//! with (its command's own, `AGORA_*`, `HOST`, `PORT`, `PORTS`, `PORT0`…). Health-check commands
//! that run on the host get the same variables.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use agora_proto::Resources;

use crate::checkpoint::TaskCheckpoint;
use crate::status_update::TaskKey;

/// Host ports of a task's `ports` resource, in order (at most 1024).
pub(super) fn task_ports(resources: &Resources) -> Vec<u16> {
    resources
        .ranges_total("ports")
        .pairs()
        .iter()
        .flat_map(|(b, e)| *b..=*e)
        .filter_map(|p| u16::try_from(p).ok())
        .take(1024)
        .collect()
}

/// The environment a task runs with: its command's variables plus `AGORA_*`, `HOST` and `PORT*`.
/// Health-check commands that run on the host get it too.
pub(super) fn task_env(
    agent_id: &str,
    hostname: &str,
    key: &TaskKey,
    cp: &TaskCheckpoint,
    ports: &[u16],
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = cp
        .task
        .as_ref()
        .and_then(|t| t.command.as_ref())
        .map(|c| c.environment.clone().into_iter().collect())
        .unwrap_or_default();
    env.insert("AGORA_AGENT_ID".into(), agent_id.into());
    env.insert("AGORA_FRAMEWORK_ID".into(), key.0.clone());
    env.insert("AGORA_EXECUTOR_ID".into(), cp.executor_id.clone());
    env.insert("AGORA_TASK_ID".into(), key.1.clone());
    env.insert("AGORA_CONTAINER_ID".into(), cp.container_id.clone());
    env.insert("AGORA_SANDBOX".into(), cp.sandbox.clone());
    env.insert("HOST".into(), hostname.into());
    if let Some(first) = ports.first() {
        env.insert(
            "PORTS".into(),
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
        for (i, p) in ports.iter().take(16).enumerate() {
            env.insert(format!("PORT{i}"), p.to_string());
        }
        env.insert("PORT".into(), first.to_string());
    }
    env
}
