//! Custom executors: a task that names an `executor` runs the executor's command (in the
//! executor's container, or the task's) instead of its own, with the task's and the executor's
//! resources, and finds its TaskInfo in the sandbox (`task.pb`, protobuf; `task.json`, the main
//! fields) through `AGORA_TASK_INFO_FILE`. One task per executor container; the agent reports the
//! task's states from the executor process's life, as for the command executor.
#![forbid(unsafe_code)]

use std::path::Path;

use agora_proto::{v1, Resources};
use prost::Message;

/// What the containerizer runs for a task with a custom executor.
///
/// # Errors
/// A sentence naming the bad field.
pub fn as_executor_task(task: &v1::TaskInfo) -> Result<v1::TaskInfo, String> {
    let Some(ex) = task.executor.as_ref() else {
        return Ok(task.clone());
    };
    if ex.executor_id.is_empty() {
        return Err("executor.executor_id must not be empty".into());
    }
    let mut command = ex
        .command
        .clone()
        .filter(|c| !c.value.is_empty() || !c.arguments.is_empty())
        .ok_or("executor.command is required: the command that starts the executor")?;
    if let Some(own) = &task.command {
        // The executor runs as the user the executor's command names, else as the task's.
        if command.user.trim().is_empty() {
            command.user = own.user.clone();
        }
        for (k, v) in &own.environment {
            command
                .environment
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
    }
    let mut resources =
        Resources::from_proto(&task.resources).map_err(|e| format!("resources: {e}"))?;
    resources.add(
        &Resources::from_proto(&ex.resources).map_err(|e| format!("executor.resources: {e}"))?,
    );
    let mut out = task.clone();
    out.command = Some(command);
    out.resources = resources.to_proto();
    if ex.container.is_some() {
        out.container = ex.container.clone();
    }
    Ok(out)
}

/// Writes the original TaskInfo into the sandbox for the executor to read.
///
/// # Errors
/// The I/O error.
pub fn write_task_files(task: &v1::TaskInfo, sandbox: &Path) -> std::io::Result<()> {
    std::fs::write(sandbox.join("task.pb"), task.encode_to_vec())?;
    let hex: String = task.data.iter().map(|b| format!("{b:02x}")).collect();
    let json = serde_json::json!({
        "task_id": task.task_id,
        "name": task.name,
        "agent_id": task.agent_id,
        "executor_id": task.executor.as_ref().map(|e| e.executor_id.clone()),
        "command": task.command.as_ref().map(|c| serde_json::json!({
            "shell": c.shell, "value": c.value, "arguments": c.arguments,
        })),
        "labels": task.labels,
        "data_hex": hex,
    });
    std::fs::write(sandbox.join("task.json"), json.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> v1::TaskInfo {
        v1::TaskInfo {
            task_id: "t1".into(),
            resources: Resources::parse("cpus:0.5;mem:64").expect("res").to_proto(),
            command: Some(v1::CommandInfo {
                shell: true,
                value: "work".into(),
                environment: [("A".to_string(), "1".to_string())].into(),
                user: "alice".into(),
                ..Default::default()
            }),
            executor: Some(v1::ExecutorInfo {
                executor_id: "ex1".into(),
                command: Some(v1::CommandInfo {
                    shell: true,
                    value: "./my-executor".into(),
                    ..Default::default()
                }),
                resources: Resources::parse("cpus:0.1;mem:32").expect("res").to_proto(),
                ..Default::default()
            }),
            data: vec![1, 255],
            ..Default::default()
        }
    }

    #[test]
    fn the_executor_command_runs_with_both_resources_and_the_task_env() {
        let t = as_executor_task(&task()).expect("valid");
        let c = t.command.expect("command");
        assert_eq!(c.value, "./my-executor");
        assert_eq!(c.environment["A"], "1");
        assert_eq!(
            c.user, "alice",
            "the task's user carries over to its executor"
        );
        let mut own = task();
        if let Some(e) = own.executor.as_mut().and_then(|e| e.command.as_mut()) {
            e.user = "bob".into();
        }
        let c = as_executor_task(&own)
            .expect("valid")
            .command
            .expect("command");
        assert_eq!(c.user, "bob", "the executor's own user wins");
        assert_eq!(
            Resources::from_proto(&t.resources).expect("res"),
            Resources::parse("cpus:0.6;mem:96").expect("res")
        );
        let mut bad = task();
        if let Some(e) = bad.executor.as_mut() {
            e.command = None;
        }
        assert!(as_executor_task(&bad)
            .unwrap_err()
            .contains("executor.command"));
    }

    #[test]
    fn the_task_info_is_written_for_the_executor() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_task_files(&task(), dir.path()).expect("write");
        let bytes = std::fs::read(dir.path().join("task.pb")).expect("read");
        assert_eq!(
            v1::TaskInfo::decode(bytes.as_slice()).expect("decode"),
            task()
        );
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("task.json")).expect("read"))
                .expect("json");
        assert_eq!(json["data_hex"], "01ff");
        assert_eq!(json["executor_id"], "ex1");
    }
}
