//! Hostile inputs (docs/reliability.md, "Hostile inputs: agent"): extreme kill grace periods from a
//! task's kill policy and from a kill request, and checkpoints that cannot be recovered (corrupt
//! bytes, impossible values, huge kill policies, an unreadable agent id). The agent must neither
//! panic nor refuse to start: it clamps, or sets the checkpoint aside and reports the task lost.

use std::fs;

use agora_agent::checkpoint::{write_message, TaskCheckpoint};
use agora_agent::paths::Layout;
use agora_proto::v1::{self, Reason, TaskState};

use crate::common::*;

/// A kill with a grace period of 1e300 s (and a task whose kill policy says 1.8e19 s) used to panic
/// the agent ("cannot convert float seconds to Duration"), and again at every restart while it
/// recovered the checkpointed kill policy. Now the grace is clamped to an hour; the task still
/// stops at SIGTERM, and a restarted agent recovers the killed task.
#[tokio::test]
async fn huge_kill_grace_periods_are_clamped_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fw = framework();
    let mut a = start(dir.path(), "native").await;
    for (id, policy) in [
        ("huge-policy", 1.8e19),
        ("inf-policy", f64::INFINITY),
        ("max-policy", f64::MAX),
    ] {
        a.handle
            .run_task(
                fw.clone(),
                with_grace(shell_task(id, "exec sleep 60", "cpus:0.1;mem:32"), policy),
            )
            .expect("run");
        wait_for(&mut a, id, TaskState::TaskRunning).await;
        a.handle.kill_task(&fw.id, id, None).expect("kill");
        let (s, _) = wait_for(&mut a, id, TaskState::TaskKilled).await;
        assert_eq!(s.reason(), Reason::KillRequested);
    }
    a.handle
        .run_task(
            fw.clone(),
            shell_task("huge-kill", "exec sleep 60", "cpus:0.1;mem:32"),
        )
        .expect("run");
    wait_for(&mut a, "huge-kill", TaskState::TaskRunning).await;
    let grace = agora_agent::limits::kill_grace("kill_policy.grace_period_seconds", 1e300);
    assert_eq!(grace, Some(agora_agent::limits::MAX_KILL_GRACE));
    a.handle
        .kill_task(&fw.id, "huge-kill", grace)
        .expect("kill");
    wait_for(&mut a, "huge-kill", TaskState::TaskKilled).await;
    // The actor is alive and answers.
    a.handle.tasks().await.expect("the agent still answers");
}

/// Writes a checkpoint directory for `(fw, task)` with `task.pb` holding `bytes`.
fn plant(layout: &Layout, fw: &str, task: &str, bytes: &[u8]) {
    let dir = layout.task_meta(fw, task);
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join("task.pb"), bytes).expect("write");
}

fn checkpoint(fw: &str, task: &str) -> TaskCheckpoint {
    TaskCheckpoint {
        framework: Some(v1::FrameworkInfo {
            id: fw.into(),
            ..Default::default()
        }),
        task: Some(shell_task(task, "true", "cpus:0.1;mem:32")),
        executor_id: task.into(),
        container_id: uuid::Uuid::new_v4().to_string(),
        containerizer: "native".into(),
        state: TaskState::TaskRunning as i32,
        launched: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn unrecoverable_checkpoints_are_set_aside_and_their_tasks_reported_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path());
    let fw = "fw-hostile";
    // Bytes that are no protobuf.
    plant(&layout, fw, "corrupt", b"\xff\xff\xff\xff garbage");
    // A state no agent writes.
    let mut impossible = checkpoint(fw, "impossible");
    impossible.state = 9999;
    write_message(
        &layout.task_meta(fw, "impossible").join("task.pb"),
        &impossible,
    )
    .expect("write");
    // A checkpoint that names another task than its directory.
    write_message(
        &layout.task_meta(fw, "misplaced").join("task.pb"),
        &checkpoint(fw, "someone-else"),
    )
    .expect("write");
    // Extreme values that are valid: a kill in progress with a grace of 1.8e19 s, a start time of
    // NaN, a health check delayed by 1e300 s. Its container is gone, so the task is recovered and
    // reported FAILED, not lost.
    let mut extreme = with_grace(shell_task("extreme", "true", "cpus:0.1;mem:32"), 1.8e19);
    extreme.health_check = Some(v1::HealthCheck {
        r#type: v1::health_check::Type::Tcp as i32,
        tcp: Some(v1::health_check::Tcp { port: 31000 }),
        delay_seconds: 1e300,
        ..Default::default()
    });
    let mut cp = checkpoint(fw, "extreme");
    cp.task = Some(extreme);
    cp.kill_requested = true;
    cp.started_at = f64::NAN;
    write_message(&layout.task_meta(fw, "extreme").join("task.pb"), &cp).expect("write");
    // Undecodable pending updates of a task whose own checkpoint is fine.
    write_message(
        &layout.task_meta(fw, "bad-updates").join("task.pb"),
        &checkpoint(fw, "bad-updates"),
    )
    .expect("write");
    fs::write(
        layout.task_meta(fw, "bad-updates").join("updates.pb"),
        b"\xff\xff\xff",
    )
    .expect("write");
    // An agent id that is no id.
    fs::create_dir_all(layout.meta()).expect("mkdir");
    fs::write(layout.agent_id_file(), b"\x00\xff\n").expect("write");

    let mut a = tokio::time::timeout(
        WAIT,
        agora_agent::Agent::start(&config(dir.path(), "native")),
    )
    .await
    .expect("start in time")
    .expect("the agent starts despite its checkpoint");
    assert!(!a.handle.agent_id().is_empty());

    let mut last = std::collections::BTreeMap::new();
    let fut = async {
        while last.len() < 5 {
            let u = a.outbox.recv().await.expect("outbox");
            let s = u.status.expect("status");
            last.insert(
                s.task_id.clone(),
                (s.state(), s.reason(), s.message.clone()),
            );
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out; saw {last:#?}"));
    for lost in ["corrupt", "impossible", "misplaced"] {
        let (state, reason, msg) = &last[lost];
        assert_eq!(*state, TaskState::TaskLost, "{lost}: {msg}");
        assert_eq!(*reason, Reason::AgentRestarted, "{lost}");
        assert!(
            msg.contains("could not recover its checkpoint"),
            "{lost}: {msg}"
        );
        assert!(msg.contains("quarantine"), "{lost}: {msg}");
    }
    assert!(
        last["impossible"].2.contains("9999"),
        "{:?}",
        last["impossible"]
    );
    assert!(
        last["misplaced"].2.contains("someone-else"),
        "{:?}",
        last["misplaced"]
    );
    assert_eq!(
        last["extreme"].0,
        TaskState::TaskFailed,
        "{:?}",
        last["extreme"]
    );
    assert_eq!(
        last["bad-updates"].0,
        TaskState::TaskFailed,
        "{:?}",
        last["bad-updates"]
    );

    let quarantined: Vec<String> = fs::read_dir(layout.quarantine())
        .expect("quarantine exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    for what in [
        "tasks+corrupt.corrupt-",
        "tasks+impossible.corrupt-",
        "tasks+misplaced.corrupt-",
        "updates.pb.corrupt-",
        "agent_id.corrupt-",
    ] {
        assert!(
            quarantined.iter().any(|n| n.contains(what)),
            "{what} in {quarantined:?}"
        );
    }
    assert!(
        quarantined.iter().any(|n| n.ends_with(".reason")),
        "reasons written: {quarantined:?}"
    );

    // A second start is clean: nothing crash-loops.
    a.handle.abort();
    drop(a);
    let b = agora_agent::Agent::start(&config(dir.path(), "native"))
        .await
        .expect("restarts");
    b.handle.tasks().await.expect("answers");
}

/// Every task runs as `nobody`, so without isolation one task could read another framework's
/// mode-600 files. In its mount namespace a native task sees the agent's work dir as an empty,
/// unlistable tmpfs with only its own sandbox bound back in.
#[tokio::test]
async fn a_native_task_sees_no_sandbox_but_its_own() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: native tasks share the agent's user and view; skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let work = fs::canonicalize(dir.path()).expect("canonical");
    let mut a = start(&work, "native").await;
    let (fa, fb) = (framework(), framework());
    a.handle
        .run_task(
            fa.clone(),
            shell_task(
                "owner",
                "umask 077; echo s3cret > secret; chmod 600 secret; cat secret; echo own=$?; exec sleep 60",
                "cpus:0.1;mem:32",
            ),
        )
        .expect("run");
    wait_for(&mut a, "owner", TaskState::TaskRunning).await;
    let sandbox_a = sandbox(&a, &fa.id, "owner");
    eventually("the owner's stdout", || {
        read(&sandbox_a.join("stdout")).contains("own=")
    })
    .await;
    // The secret is real, mode 600 and owned by the task's user (nobody), as B would be.
    let secret = sandbox_a.join("secret");
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(&secret)
            .expect("secret exists")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode, 0o600);
    let probe = format!(
        "cat {s}; echo cat=$?; ls {w}; echo ls=$?; ls {w}/meta; echo meta=$?; ls {w}/slaves; echo slaves=$?; echo mine > mine; cat mine",
        s = secret.display(),
        w = work.display()
    );
    a.handle
        .run_task(fb.clone(), shell_task("prober", &probe, "cpus:0.1;mem:32"))
        .expect("run");
    wait_for(&mut a, "prober", TaskState::TaskFinished).await;
    let out = read(&sandbox(&a, &fb.id, "prober").join("stdout"));
    let err = read(&sandbox(&a, &fb.id, "prober").join("stderr"));
    assert!(!out.contains("s3cret"), "B read A's secret: {out}");
    for what in ["cat", "ls", "meta", "slaves"] {
        assert!(
            out.contains(&format!("{what}=")),
            "{what} ran: {out} / {err}"
        );
        assert!(
            !out.contains(&format!("{what}=0")),
            "{what} succeeded: {out} / {err}"
        );
    }
    // B still works in its own sandbox, and the agent still serves both tasks' output.
    assert!(out.contains("mine"), "{out} / {err}");
    let out_a = read(&sandbox_a.join("stdout"));
    assert!(
        out_a.contains("s3cret") && out_a.contains("own=0"),
        "A read its own file: {out_a}"
    );
    a.handle.kill_task(&fa.id, "owner", None).expect("kill");
    wait_for(&mut a, "owner", TaskState::TaskKilled).await;
}
