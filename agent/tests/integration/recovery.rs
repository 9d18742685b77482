//! Agent crash and recovery: an agent instance is aborted (like kill -9: no cleanup, its tasks keep
//! running) and a new instance on the same work dir recovers the tasks without relaunching them.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use agora_proto::v1::{self, Reason, TaskState};

use crate::common::*;
use crate::docker::{docker_task, ensure_image, Cleanup, IMAGE};

/// Receives updates until `done` says so, acknowledging those `ack` accepts. Bounded by `WAIT`.
async fn collect(
    agent: &mut agora_agent::Agent,
    mut ack: impl FnMut(&v1::TaskStatus) -> bool,
    mut done: impl FnMut(&[v1::TaskStatus]) -> bool,
) -> Vec<v1::TaskStatus> {
    let mut seen = Vec::new();
    let fut = async {
        while !done(&seen) {
            let u = agent.outbox.recv().await.expect("outbox");
            let s = u.status.expect("status");
            if ack(&s) {
                agent
                    .handle
                    .acknowledge(&u.framework_id, &s.task_id, &s.uuid)
                    .expect("ack");
            }
            seen.push(s);
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out; saw {seen:#?}"));
    seen
}

fn latest(seen: &[v1::TaskStatus]) -> HashMap<String, TaskState> {
    seen.iter()
        .map(|s| (s.task_id.clone(), s.state()))
        .collect()
}

fn container_id(sandbox: &Path) -> String {
    sandbox
        .file_name()
        .and_then(|n| n.to_str())
        .expect("run dir")
        .to_string()
}

#[tokio::test]
async fn a_restarted_agent_recovers_running_tasks_without_relaunching_them() {
    ensure_image().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let fw = framework();
    let mut a = start(dir.path(), "docker,native").await;
    let _cleanup = Cleanup(a.handle.agent_id());
    let agent_id = a.handle.agent_id();
    a.handle
        .run_task(
            fw.clone(),
            shell_task("long", "echo started; exec sleep 120", "cpus:0.1;mem:32"),
        )
        .expect("run");
    a.handle
        .run_task(
            fw.clone(),
            shell_task("short", "sleep 1; exit 4", "cpus:0.1;mem:32"),
        )
        .expect("run");
    a.handle
        .run_task(
            fw.clone(),
            shell_task("unacked", "exec sleep 120", "cpus:0.1;mem:32"),
        )
        .expect("run");
    a.handle
        .run_task(
            fw.clone(),
            docker_task(
                "dlong",
                "echo started; exec sleep 120",
                "cpus:0.1;mem:32",
                IMAGE,
            ),
        )
        .expect("run");
    let all_running = |seen: &[v1::TaskStatus]| {
        let l = latest(seen);
        ["long", "short", "unacked", "dlong"]
            .iter()
            .all(|t| l.get(*t) == Some(&TaskState::TaskRunning))
    };
    // Everything is acknowledged except the RUNNING update of `unacked`.
    let seen = collect(
        &mut a,
        |s| !(s.task_id == "unacked" && s.state() == TaskState::TaskRunning),
        all_running,
    )
    .await;
    let unacked_uuid = seen
        .iter()
        .find(|s| s.task_id == "unacked" && s.state() == TaskState::TaskRunning)
        .map(|s| s.uuid.clone())
        .expect("unacked RUNNING");

    let long_sb = sandbox(&a, &fw.id, "long");
    let short_sb = sandbox(&a, &fw.id, "short");
    let dlong_sb = sandbox(&a, &fw.id, "dlong");
    let layout = a.handle.layout().clone();
    let long_pid =
        std::fs::read_to_string(layout.container_meta(&container_id(&long_sb)).join("pid"))
            .expect("pid file");
    eventually("dlong to print", || {
        read(&dlong_sb.join("stdout")).contains("started")
    })
    .await;

    // "kill -9" the agent: the actor and its watchers stop; the tasks do not.
    a.handle.abort();
    drop(a);
    // `short` ends while no agent is watching.
    let short_exit = layout
        .container_meta(&container_id(&short_sb))
        .join("exit_status");
    eventually("short to exit while the agent is down", || {
        read(&short_exit).trim() == "4"
    })
    .await;

    let mut b = start(dir.path(), "docker,native").await;
    assert_eq!(
        b.handle.agent_id(),
        agent_id,
        "same agent id after the restart"
    );
    let tasks = b.handle.tasks().await.expect("tasks");
    let state_of = |id: &str| tasks.iter().find(|t| t.task_id == id).map(|t| t.state());
    assert_eq!(state_of("long"), Some(TaskState::TaskRunning));
    assert_eq!(state_of("dlong"), Some(TaskState::TaskRunning));
    assert_eq!(state_of("unacked"), Some(TaskState::TaskRunning));
    assert_eq!(state_of("short"), Some(TaskState::TaskFailed));

    // The recovered agent reports the task that died meanwhile and resends the unacknowledged update.
    let seen = collect(
        &mut b,
        |_| true,
        |seen| {
            let l = latest(seen);
            l.get("short") == Some(&TaskState::TaskFailed) && l.contains_key("unacked")
        },
    )
    .await;
    let short = seen
        .iter()
        .find(|s| s.task_id == "short")
        .expect("short update");
    assert_eq!(short.exit_code, Some(4));
    assert_eq!(short.reason(), Reason::CommandExited);
    assert!(
        short.message.contains("while the agent was down"),
        "{}",
        short.message
    );
    let resent = seen
        .iter()
        .find(|s| s.task_id == "unacked")
        .expect("unacked resent");
    assert_eq!(resent.state(), TaskState::TaskRunning);
    assert_eq!(
        resent.uuid, unacked_uuid,
        "the same update is resent, not a new one"
    );
    assert!(
        !seen
            .iter()
            .any(|s| s.task_id == "long" || s.task_id == "dlong"),
        "running tasks are not relaunched: {seen:#?}"
    );

    // Not relaunched: same supervisor, printed once; one docker container.
    let meta = layout.container_meta(&container_id(&long_sb));
    assert_eq!(
        std::fs::read_to_string(meta.join("pid")).expect("pid"),
        long_pid
    );
    assert_eq!(read(&long_sb.join("stdout")), "started\n");
    let stats = b.handle.statistics().await.expect("statistics");
    assert!(
        stats
            .iter()
            .any(|s| s.task_id == "dlong" && s.containerizer == "docker"),
        "{stats:?}"
    );
    assert!(
        stats
            .iter()
            .any(|s| s.task_id == "long" && s.statistics.mem_limit_bytes == Some(32 << 20)),
        "{stats:?}"
    );

    // The recovered agent still controls them.
    for t in ["long", "dlong", "unacked"] {
        b.handle
            .kill_task(&fw.id, t, Some(Duration::from_secs(1)))
            .expect("kill");
    }
    let seen = collect(
        &mut b,
        |_| true,
        |seen| {
            let l = latest(seen);
            ["long", "dlong", "unacked"]
                .iter()
                .all(|t| l.get(*t) == Some(&TaskState::TaskKilled))
        },
    )
    .await;
    assert!(
        seen.iter().all(|s| s.state() == TaskState::TaskKilled),
        "{seen:#?}"
    );
    // Acknowledged terminal tasks are forgotten, checkpoint included.
    eventually("the checkpoint of finished tasks to be removed", || {
        std::fs::read_dir(layout.task_meta(&fw.id, "long")).is_err()
    })
    .await;
}
