//! Task health checks against real servers: busybox `httpd` and `nc` in native tasks, command checks
//! on the host and, for Docker tasks, inside the container through the engine's exec API.

use std::time::{Duration, Instant};

use agora_agent::Agent;
use agora_proto::v1::{self, health_check::Type, Reason, TaskState};

use crate::common::*;
use crate::docker::{docker_task, ensure_image, Cleanup, IMAGE};

fn check(t: Type, interval: f64, failures: u32) -> v1::HealthCheck {
    v1::HealthCheck {
        r#type: t as i32,
        interval_seconds: interval,
        timeout_seconds: 2.0,
        consecutive_failures: failures,
        ..Default::default()
    }
}

fn http_check(port: u16, path: &str) -> v1::HealthCheck {
    v1::HealthCheck {
        http: Some(v1::health_check::Http {
            port: port.into(),
            path: path.into(),
            ..Default::default()
        }),
        ..check(Type::Http, 0.2, 0)
    }
}

fn command_check(cmd: &str, interval: f64, failures: u32) -> v1::HealthCheck {
    v1::HealthCheck {
        command: Some(v1::CommandInfo {
            shell: true,
            value: cmd.into(),
            ..Default::default()
        }),
        ..check(Type::Command, interval, failures)
    }
}

fn with_check(mut t: v1::TaskInfo, hc: v1::HealthCheck) -> v1::TaskInfo {
    t.health_check = Some(hc);
    t
}

/// Receives updates (acknowledging each) until `task` reports `healthy == want`; returns that
/// status and the task's statuses on the way. Panics if the task ends first or on timeout.
async fn wait_healthy(
    agent: &mut Agent,
    task: &str,
    want: bool,
) -> (v1::TaskStatus, Vec<v1::TaskStatus>) {
    let mut seen = Vec::new();
    let fut = async {
        loop {
            let u = agent.outbox.recv().await.expect("outbox open");
            let s = u.status.clone().expect("status");
            agent
                .handle
                .acknowledge(&u.framework_id, &s.task_id, &s.uuid)
                .expect("ack");
            if s.task_id != task {
                continue;
            }
            seen.push(s.clone());
            if s.healthy == Some(want) {
                return s;
            }
            assert!(
                !agora_proto::is_terminal(s.state()),
                "task {task} ended {:?} ({}) before healthy={want}; updates: {seen:?}",
                s.state(),
                s.message
            );
        }
    };
    let s = tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {task} to be healthy={want}"));
    (s, seen)
}

#[tokio::test]
async fn http_check_passes_on_2xx_and_fails_on_404() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start(dir.path(), "native").await;
    let fw = framework();
    let port = free_port();
    let server =
        "mkdir -p www && echo ok > www/index.html && exec /bin/busybox httpd -f -p $PORT0 -h www";
    let res = format!("cpus:0.1;mem:32;ports:[{port}-{port}]");
    // A grace period covers the moment before httpd listens: refused connections then do not count.
    let mut hc = http_check(port, "/index.html");
    hc.grace_period_seconds = 10.0;
    agent
        .handle
        .run_task(fw.clone(), with_check(shell_task("web", server, &res), hc))
        .expect("run");
    let t0 = Instant::now();
    let (s, seen) = wait_healthy(&mut agent, "web", true).await;
    eprintln!("HTTP check healthy {:?} after the launch", t0.elapsed());
    assert_eq!(s.state(), TaskState::TaskRunning);
    assert_eq!(s.reason(), Reason::TaskHealthCheckStatusUpdated);
    // RUNNING is first reported without a health result: none has counted yet.
    let running: Vec<Option<bool>> = seen
        .iter()
        .filter(|s| s.state() == TaskState::TaskRunning)
        .map(|s| s.healthy)
        .collect();
    assert_eq!(running, [None, Some(true)], "{seen:?}");
    // Only changes are reported: no more updates while the server keeps answering.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        agent.outbox.try_recv().is_err(),
        "an unchanged health was reported again"
    );
    // The task list shows the health too.
    let tasks = agent.handle.tasks().await.expect("tasks");
    let web = tasks.iter().find(|t| t.task_id == "web").expect("web");
    assert_eq!(web.status.as_ref().and_then(|s| s.healthy), Some(true));

    // A 404 from the same (running) server is unhealthy, and the message says what it answered.
    agent
        .handle
        .run_task(
            fw.clone(),
            with_check(
                shell_task("web404", "exec sleep 60", "cpus:0.1;mem:32"),
                http_check(port, "/missing"),
            ),
        )
        .expect("run");
    let (s, _) = wait_healthy(&mut agent, "web404", false).await;
    assert!(
        s.message
            .contains(&format!("GET http://127.0.0.1:{port}/missing answered 404")),
        "{}",
        s.message
    );
    agent
        .handle
        .kill_task(&fw.id, "web404", None)
        .expect("kill");
    wait_for(&mut agent, "web404", TaskState::TaskKilled).await;
    agent.handle.kill_task(&fw.id, "web", None).expect("kill");
    let (s, _) = wait_for(&mut agent, "web", TaskState::TaskKilled).await;
    assert_eq!(
        s.healthy,
        Some(true),
        "terminal updates carry the last health"
    );
}

#[tokio::test]
async fn tcp_check_failures_in_the_grace_period_are_not_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start(dir.path(), "native").await;
    let fw = framework();
    let port = free_port();
    // The server only listens after 1.5 s; with one failure allowed and a 10 s grace period, the
    // checks that fail before it listens must neither kill the task nor report it unhealthy.
    let mut hc = check(Type::Tcp, 0.2, 1);
    hc.tcp = Some(v1::health_check::Tcp { port: port.into() });
    hc.grace_period_seconds = 10.0;
    let task = shell_task(
        "late",
        "sleep 1.5; exec /bin/busybox nc -ll -p $PORT0 -e /bin/true",
        &format!("cpus:0.1;mem:32;ports:[{port}-{port}]"),
    );
    agent
        .handle
        .run_task(fw.clone(), with_check(task, hc))
        .expect("run");
    let t0 = Instant::now();
    let (_, seen) = wait_healthy(&mut agent, "late", true).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(1400),
        "healthy before the server listened"
    );
    assert!(seen.iter().all(|s| s.healthy != Some(false)), "{seen:?}");
    eprintln!("TCP check healthy {:?} after the launch", t0.elapsed());
    agent.handle.kill_task(&fw.id, "late", None).expect("kill");
    let (s, _) = wait_for(&mut agent, "late", TaskState::TaskKilled).await;
    assert_eq!(s.reason(), Reason::KillRequested);
}

#[tokio::test]
async fn command_check_flips_from_healthy_to_unhealthy_without_a_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start(dir.path(), "native").await;
    let fw = framework();
    // The check runs on the host in the task's sandbox with the task's environment: it passes while
    // the file the task wrote exists, and fails once the task removed it.
    let task = shell_task(
        "flip",
        "echo $AGORA_TASK_ID > marker; sleep 1; rm marker; exec sleep 60",
        "cpus:0.1;mem:32",
    );
    let hc = command_check("test \"$(cat marker)\" = \"$AGORA_TASK_ID\"", 0.2, 0);
    agent
        .handle
        .run_task(fw.clone(), with_check(task, hc))
        .expect("run");
    wait_healthy(&mut agent, "flip", true).await;
    let (s, _) = wait_healthy(&mut agent, "flip", false).await;
    assert_eq!(s.state(), TaskState::TaskRunning);
    assert_eq!(s.reason(), Reason::TaskHealthCheckStatusUpdated);
    assert!(
        s.message.contains("command exited with status 1"),
        "{}",
        s.message
    );
    // consecutive_failures = 0: reported, never killed.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let tasks = agent.handle.tasks().await.expect("tasks");
    let flip = tasks.iter().find(|t| t.task_id == "flip").expect("flip");
    assert_eq!(flip.state(), TaskState::TaskRunning);
    agent.handle.kill_task(&fw.id, "flip", None).expect("kill");
    let (s, _) = wait_for(&mut agent, "flip", TaskState::TaskKilled).await;
    assert_eq!(s.reason(), Reason::KillRequested);
    assert_eq!(s.healthy, Some(false));
}

#[tokio::test]
async fn failing_check_kills_the_task_as_unhealthy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start(dir.path(), "native").await;
    let mut fw = framework();
    fw.capabilities = vec![v1::FrameworkCapability::TaskKillingState as i32];
    let port = free_port();
    // Nothing listens on the port: every check fails, the third in a row kills the task.
    let hc = v1::HealthCheck {
        http: Some(v1::health_check::Http {
            port: port.into(),
            ..Default::default()
        }),
        ..check(Type::Http, 0.1, 3)
    };
    let task = with_grace(
        shell_task(
            "sick",
            "exec sleep 60",
            &format!("cpus:0.1;mem:32;ports:[{port}-{port}]"),
        ),
        1.0,
    );
    agent
        .handle
        .run_task(fw.clone(), with_check(task, hc))
        .expect("run");
    let t0 = Instant::now();
    let (s, seen) = wait_for(&mut agent, "sick", TaskState::TaskKilled).await;
    eprintln!("unhealthy task killed {:?} after the launch", t0.elapsed());
    assert_eq!(s.reason(), Reason::TaskUnhealthy, "{}", s.message);
    assert_eq!(s.healthy, Some(false));
    assert!(
        s.message.contains(
            "killed after failing its health check 3 times in a row: GET http://127.0.0.1:"
        ),
        "{}",
        s.message
    );
    assert!(s.message.contains("refused"), "{}", s.message);
    let states: Vec<(TaskState, Reason, Option<bool>)> = seen
        .iter()
        .map(|s| (s.state(), s.reason(), s.healthy))
        .collect();
    assert_eq!(
        states,
        [
            (TaskState::TaskStarting, Reason::Unspecified, None),
            (TaskState::TaskRunning, Reason::Unspecified, None),
            (
                TaskState::TaskRunning,
                Reason::TaskHealthCheckStatusUpdated,
                Some(false)
            ),
            (TaskState::TaskKilling, Reason::TaskUnhealthy, Some(false)),
            (TaskState::TaskKilled, Reason::TaskUnhealthy, Some(false)),
        ]
    );
}

#[tokio::test]
async fn a_check_that_hangs_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start(dir.path(), "native").await;
    let fw = framework();
    let mut hc = command_check("sleep 30", 0.1, 1);
    hc.timeout_seconds = 0.3;
    agent
        .handle
        .run_task(
            fw,
            with_check(shell_task("hang", "exec sleep 60", "cpus:0.1;mem:32"), hc),
        )
        .expect("run");
    let t0 = Instant::now();
    let (s, _) = wait_for(&mut agent, "hang", TaskState::TaskKilled).await;
    assert_eq!(s.reason(), Reason::TaskUnhealthy);
    assert!(s.message.contains("timed out after 300ms"), "{}", s.message);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn invalid_health_checks_end_in_task_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start(dir.path(), "native").await;
    let fw = framework();
    let mut hc = http_check(31999, "/");
    if let Some(h) = hc.http.as_mut() {
        h.scheme = "ftp".into();
    }
    agent
        .handle
        .run_task(
            fw.clone(),
            with_check(shell_task("ftp", "sleep 5", "cpus:0.1;mem:32"), hc),
        )
        .expect("run");
    let (s, _) = wait_for(&mut agent, "ftp", TaskState::TaskError).await;
    assert_eq!(s.reason(), Reason::TaskInvalid);
    assert!(
        s.message.contains("health_check.http.scheme 'ftp'"),
        "{}",
        s.message
    );

    let hc = check(Type::Tcp, 1.0, 0);
    agent
        .handle
        .run_task(
            fw,
            with_check(shell_task("notcp", "sleep 5", "cpus:0.1;mem:32"), hc),
        )
        .expect("run");
    let (s, _) = wait_for(&mut agent, "notcp", TaskState::TaskError).await;
    assert!(
        s.message.contains("health_check.tcp must be set"),
        "{}",
        s.message
    );
}

#[tokio::test]
async fn docker_command_check_runs_inside_the_container() {
    ensure_image().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start(dir.path(), "docker,native").await;
    let _cleanup = Cleanup(agent.handle.agent_id());
    let fw = framework();
    // The marker exists only in the container's filesystem: the check passes only through exec.
    let marker = format!("/tmp/agora-health-{}", uuid::Uuid::new_v4());
    assert!(!std::path::Path::new(&marker).exists());
    let task = docker_task(
        "inside",
        &format!("touch {marker}; sleep 1.5; rm {marker}; exec sleep 60"),
        "cpus:0.1;mem:64",
        IMAGE,
    );
    let mut hc = command_check(&format!("test -f {marker}"), 0.2, 2);
    // Until the task has written its file, failures do not count; after a first pass they do.
    hc.grace_period_seconds = 10.0;
    agent
        .handle
        .run_task(fw.clone(), with_check(with_grace(task, 1.0), hc))
        .expect("run");
    let t0 = Instant::now();
    wait_healthy(&mut agent, "inside", true).await;
    eprintln!(
        "docker exec check healthy {:?} after the launch",
        t0.elapsed()
    );
    let (s, _) = wait_for(&mut agent, "inside", TaskState::TaskKilled).await;
    assert_eq!(s.reason(), Reason::TaskUnhealthy, "{}", s.message);
    assert!(
        s.message.contains("command exited with status 1"),
        "{}",
        s.message
    );
    crate::docker::remove_containers(&agent.handle.agent_id()).await;
}

#[tokio::test]
async fn checks_resume_after_an_agent_restart_without_repeating_the_last_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fw = framework();
    let mut a = start(dir.path(), "native").await;
    let task = shell_task("steady", "touch ok; exec sleep 120", "cpus:0.1;mem:32");
    let mut hc = command_check("test -f ok", 0.2, 2);
    // Until the task has written its file, failures do not count; after a first pass they do.
    hc.grace_period_seconds = 10.0;
    a.handle
        .run_task(fw.clone(), with_check(with_grace(task, 1.0), hc))
        .expect("run");
    wait_healthy(&mut a, "steady", true).await;
    let sb = sandbox(&a, &fw.id, "steady");
    // A round trip through the actor: the acknowledgements sent before it have been applied, so
    // nothing is left to resend after the restart.
    a.handle.tasks().await.expect("tasks");
    // Like kill -9 of the agent: its checkers die with it, the task keeps running.
    a.handle.abort();
    drop(a);

    let mut b = start(dir.path(), "native").await;
    // Still healthy: the restarted agent checks again but has nothing new to say.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    if let Ok(u) = b.outbox.try_recv() {
        panic!("unexpected update after the restart: {u:?}");
    }
    let tasks = b.handle.tasks().await.expect("tasks");
    let steady = tasks
        .iter()
        .find(|t| t.task_id == "steady")
        .expect("steady");
    assert_eq!(steady.state(), TaskState::TaskRunning);
    // The checks did resume: breaking the task is noticed and, two failures later, it is killed.
    std::fs::remove_file(sb.join("ok")).expect("rm ok");
    let (s, seen) = wait_for(&mut b, "steady", TaskState::TaskKilled).await;
    assert_eq!(s.reason(), Reason::TaskUnhealthy, "{}", s.message);
    assert_eq!(seen[0].healthy, Some(false), "{seen:?}");
    assert_eq!(seen[0].state(), TaskState::TaskRunning, "{seen:?}");
}

#[tokio::test]
async fn docker_http_check_goes_through_the_port_mapping() {
    ensure_image().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start(dir.path(), "docker,native").await;
    let _cleanup = Cleanup(agent.handle.agent_id());
    let fw = framework();
    let port = free_port();
    let mut t = docker_task(
        "dweb",
        "exec httpd -f -p 80 -h /www",
        &format!("cpus:0.1;mem:64;ports:[{port}-{port}]"),
        IMAGE,
    );
    if let Some(d) = t.container.as_mut().and_then(|c| c.docker.as_mut()) {
        d.network = v1::DockerNetwork::Bridge as i32;
        d.port_mappings = vec![v1::PortMapping {
            host_port: port.into(),
            container_port: 80,
            ..Default::default()
        }];
    }
    let mut hc = http_check(port, "/index.html");
    hc.grace_period_seconds = 10.0;
    agent
        .handle
        .run_task(fw.clone(), with_check(with_grace(t, 1.0), hc))
        .expect("run");
    let (s, _) = wait_healthy(&mut agent, "dweb", true).await;
    assert_eq!(s.state(), TaskState::TaskRunning);
    agent.handle.kill_task(&fw.id, "dweb", None).expect("kill");
    let (s, _) = wait_for(&mut agent, "dweb", TaskState::TaskKilled).await;
    assert_eq!((s.reason(), s.healthy), (Reason::KillRequested, Some(true)));
    crate::docker::remove_containers(&agent.handle.agent_id()).await;
}

/// Processes on this machine (containers' included) whose command line is exactly `argv`.
fn count_processes(argv: &[&str]) -> usize {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn docker_check_that_times_out_is_killed_inside_the_container() {
    ensure_image().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start(dir.path(), "docker,native").await;
    let _cleanup = Cleanup(agent.handle.agent_id());
    let fw = framework();
    // An odd duration, so that no other process on the machine matches.
    let hung = ["sleep", "31.713"];
    let mut hc = command_check(&hung.join(" "), 1.0, 0);
    hc.timeout_seconds = 0.3;
    let task = docker_task("hung", "exec sleep 60", "cpus:0.1;mem:64", IMAGE);
    agent
        .handle
        .run_task(fw.clone(), with_check(with_grace(task, 1.0), hc))
        .expect("run");
    let (s, _) = wait_healthy(&mut agent, "hung", false).await;
    assert!(s.message.contains("timed out after 300ms"), "{}", s.message);
    // A check runs 0.3 s of every 1.3 s: without the kill, timed-out checks would pile up.
    let mut most = 0;
    for _ in 0..30 {
        most = most.max(count_processes(&hung));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        most <= 1,
        "{most} timed-out checks still run in the container"
    );
    agent.handle.kill_task(&fw.id, "hung", None).expect("kill");
    wait_for(&mut agent, "hung", TaskState::TaskKilled).await;
    crate::docker::remove_containers(&agent.handle.agent_id()).await;
}
