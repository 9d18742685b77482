//! The native containerizer with real processes, namespaces and cgroups.

use std::time::{Duration, Instant};

use agora_proto::v1::{self, Reason, TaskState};

use crate::common::*;

#[tokio::test]
async fn task_finishes_with_exit_0_and_output_in_the_sandbox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start(dir.path(), "native").await;
    let fw = framework();
    agent
        .handle
        .run_task(
            fw.clone(),
            shell_task(
                "hello",
                "echo hello-out; echo hello-err >&2",
                "cpus:0.5;mem:64",
            ),
        )
        .expect("run");
    let (s, seen) = wait_for(&mut agent, "hello", TaskState::TaskFinished).await;
    let states: Vec<TaskState> = seen.iter().map(|s| s.state()).collect();
    assert_eq!(
        states,
        [
            TaskState::TaskStarting,
            TaskState::TaskRunning,
            TaskState::TaskFinished
        ]
    );
    assert_eq!(s.exit_code, Some(0));
    assert_eq!(s.reason(), Reason::CommandExited);
    assert!(s.message.contains("exited with status 0"), "{}", s.message);
    let sb = sandbox(&agent, &fw.id, "hello");
    assert_eq!(read(&sb.join("stdout")), "hello-out\n");
    assert_eq!(read(&sb.join("stderr")), "hello-err\n");
}

#[tokio::test]
async fn task_fails_with_its_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start(dir.path(), "native").await;
    let fw = framework();
    agent
        .handle
        .run_task(fw, shell_task("three", "exit 3", "cpus:0.1;mem:32"))
        .expect("run");
    let (s, _) = wait_for(&mut agent, "three", TaskState::TaskFailed).await;
    assert_eq!(s.exit_code, Some(3));
    assert_eq!(s.reason(), Reason::CommandExited);
    assert!(s.message.contains("exited with status 3"), "{}", s.message);
}

#[tokio::test]
async fn arguments_run_without_a_shell() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start(dir.path(), "native").await;
    let fw = framework();
    let mut t = shell_task("args", "", "cpus:0.1;mem:32");
    t.command = Some(v1::CommandInfo {
        shell: false,
        value: "/bin/echo".into(),
        arguments: vec!["echo".into(), "$HOME".into(), "a b".into()],
        ..Default::default()
    });
    agent.handle.run_task(fw.clone(), t).expect("run");
    wait_for(&mut agent, "args", TaskState::TaskFinished).await;
    assert_eq!(
        read(&sandbox(&agent, &fw.id, "args").join("stdout")),
        "$HOME a b\n"
    );
}

#[tokio::test]
async fn task_runs_in_its_own_namespaces_and_cgroup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start(dir.path(), "native").await;
    let fw = framework();
    let mut t = shell_task(
        "ns",
        "echo pid=$$; echo init=$(tr '\\0' ' ' < /proc/1/cmdline); hostname; grep memory /proc/self/cgroup; echo port=$PORT0; echo oom_score_adj=$(cat /proc/self/oom_score_adj)",
        "cpus:0.2;mem:48;ports:[31005-31005]",
    );
    t.container = Some(v1::ContainerInfo {
        hostname: "agora-box".into(),
        ..Default::default()
    });
    agent.handle.run_task(fw.clone(), t).expect("run");
    wait_for(&mut agent, "ns", TaskState::TaskFinished).await;
    let out = read(&sandbox(&agent, &fw.id, "ns").join("stdout"));
    // A new PID namespace (with its own /proc): pid 1 is the agent's init, the task's pid is small.
    let pid: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {out}"));
    assert!(pid < 10, "{out}");
    assert!(
        out.contains("init=/bin/sh -c") && out.contains("agora-init"),
        "{out}"
    );
    assert!(out.contains("agora-box\n"), "{out}");
    assert!(out.contains(":memory:/agora/"), "{out}");
    assert!(out.contains("port=31005"), "{out}");
    // The supervisor shields itself from the OOM killer, the task does not.
    assert!(out.contains("oom_score_adj=0\n"), "{out}");
    // The host keeps its own hostname.
    assert_ne!(
        nix::unistd::gethostname()
            .expect("hostname")
            .to_string_lossy(),
        "agora-box"
    );
}

#[tokio::test]
async fn kill_escalates_to_sigkill_after_the_grace_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start(dir.path(), "native").await;
    let fw = framework();
    // Ignores SIGTERM: only SIGKILL after the 1 s grace stops it.
    agent
        .handle
        .run_task(
            fw.clone(),
            with_grace(
                shell_task(
                    "stubborn",
                    "trap '' TERM; echo ready; sleep 60",
                    "cpus:0.1;mem:32",
                ),
                1.0,
            ),
        )
        .expect("run");
    wait_for(&mut agent, "stubborn", TaskState::TaskRunning).await;
    let sb = sandbox(&agent, &fw.id, "stubborn");
    eventually("the trap to be set", || {
        read(&sb.join("stdout")).contains("ready")
    })
    .await;
    let t0 = Instant::now();
    agent
        .handle
        .kill_task(&fw.id, "stubborn", None)
        .expect("kill");
    let (s, _) = wait_for(&mut agent, "stubborn", TaskState::TaskKilled).await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(950),
        "killed before the grace period ended: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "kill took {took:?}");
    assert_eq!(s.exit_code, Some(137));
    assert_eq!(s.reason(), Reason::KillRequested);
    eprintln!("SIGTERM-ignoring task killed {took:?} after the kill (grace 1 s)");

    // A task that honours SIGTERM stops at once, well within a long grace period.
    agent
        .handle
        .run_task(
            fw.clone(),
            with_grace(
                shell_task("polite", "echo ready; exec sleep 60", "cpus:0.1;mem:32"),
                20.0,
            ),
        )
        .expect("run");
    wait_for(&mut agent, "polite", TaskState::TaskRunning).await;
    let sb = sandbox(&agent, &fw.id, "polite");
    eventually("the task to start", || {
        read(&sb.join("stdout")).contains("ready")
    })
    .await;
    let t0 = Instant::now();
    agent
        .handle
        .kill_task(&fw.id, "polite", None)
        .expect("kill");
    let (s, _) = wait_for(&mut agent, "polite", TaskState::TaskKilled).await;
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "SIGTERM was not delivered: {:?}",
        t0.elapsed()
    );
    assert_eq!(s.exit_code, Some(143));
    eprintln!("SIGTERM-honouring task killed in {:?}", t0.elapsed());
}

#[tokio::test]
async fn memory_over_the_limit_fails_with_container_limitation_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start(dir.path(), "native").await;
    let fw = framework();
    // `tail` keeps the whole newline-free 200 MiB "line" in memory; the limit is 32 MiB.
    agent
        .handle
        .run_task(
            fw,
            shell_task("hog", "head -c 200M /dev/zero | tail", "cpus:0.5;mem:32"),
        )
        .expect("run");
    let (s, _) = wait_for(&mut agent, "hog", TaskState::TaskFailed).await;
    assert_eq!(
        s.reason(),
        Reason::ContainerLimitationMemory,
        "{}",
        s.message
    );
    assert!(
        s.message.contains("memory limit of 32 MiB exceeded"),
        "{}",
        s.message
    );
    assert_eq!(s.exit_code, Some(137), "{}", s.message);
}

#[tokio::test]
async fn invalid_tasks_end_in_task_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start(dir.path(), "native").await;
    let fw = framework();
    let mut t = shell_task("nocmd", "x", "cpus:0.1;mem:32");
    t.command = None;
    agent.handle.run_task(fw.clone(), t).expect("run");
    let (s, _) = wait_for(&mut agent, "nocmd", TaskState::TaskError).await;
    assert_eq!(s.reason(), Reason::TaskInvalid);
    assert!(s.message.contains("no command"), "{}", s.message);

    let mut d = shell_task("dock", "true", "cpus:0.1;mem:32");
    d.container = Some(v1::ContainerInfo {
        docker: Some(v1::DockerInfo {
            image: "busybox".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    agent.handle.run_task(fw, d).expect("run");
    let (s, _) = wait_for(&mut agent, "dock", TaskState::TaskError).await;
    assert!(
        s.message
            .contains("docker containerizer, which is not enabled"),
        "{}",
        s.message
    );
}
