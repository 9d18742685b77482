//! Task users with real processes (the tests run as root): native tasks run as `nobody` by default
//! and own their sandbox, root is refused unless the agent allows it, unknown users fail, Docker
//! containers and command health checks run as the task's user, and the fetcher copies as that
//! user.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use agora_agent::{Agent, AgentConfig};
use agora_proto::v1::{self, health_check::Type, Reason, TaskState};

use crate::common::*;
use crate::docker::{docker_task, ensure_image, Cleanup, IMAGE};

const NOBODY: u32 = 65534;

async fn start_with(work_dir: &Path, containerizers: &str, allow_root: bool) -> Agent {
    Agent::start(&AgentConfig {
        allow_root_tasks: allow_root,
        ..config(work_dir, containerizers)
    })
    .await
    .expect("agent starts")
}

fn as_user(mut t: v1::TaskInfo, user: &str) -> v1::TaskInfo {
    if let Some(c) = t.command.as_mut() {
        c.user = user.into();
    }
    t
}

/// Runs a task to its end and returns its final status.
async fn run_to_end(
    agent: &mut Agent,
    fw: &v1::FrameworkInfo,
    task: v1::TaskInfo,
) -> v1::TaskStatus {
    let id = task.task_id.clone();
    agent.handle.run_task(fw.clone(), task).expect("run");
    let fut = async {
        loop {
            let u = agent.outbox.recv().await.expect("outbox open");
            let s = u.status.clone().expect("status");
            agent
                .handle
                .acknowledge(&u.framework_id, &s.task_id, &s.uuid)
                .expect("ack");
            if s.task_id == id && agora_proto::is_terminal(s.state()) {
                return s;
            }
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {id} to end"))
}

#[tokio::test]
async fn native_tasks_run_as_nobody_and_own_their_sandbox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start_with(dir.path(), "native", false).await;
    let fw = framework();
    // Writes into its sandbox by relative and by absolute path, and says who it is.
    let s = run_to_end(
        &mut agent,
        &fw,
        shell_task(
            "who",
            "id -u; id -g; echo data > own-file && echo more > \"$AGORA_SANDBOX/abs-file\" && echo wrote",
            "cpus:0.1;mem:32",
        ),
    )
    .await;
    assert_eq!(s.state(), TaskState::TaskFinished, "{}", s.message);
    let sb = sandbox(&agent, &fw.id, "who");
    let out = read(&sb.join("stdout"));
    assert_eq!(
        out,
        format!("{NOBODY}\n{NOBODY}\nwrote\n"),
        "stderr: {}",
        read(&sb.join("stderr"))
    );
    for p in [
        sb.clone(),
        sb.join("stdout"),
        sb.join("stderr"),
        sb.join("own-file"),
        sb.join("abs-file"),
    ] {
        let m = std::fs::symlink_metadata(&p).expect("exists");
        assert_eq!((m.uid(), m.gid()), (NOBODY, NOBODY), "{}", p.display());
    }
    // The agent's checkpoints stay root's alone.
    let meta = std::fs::metadata(agent.handle.layout().meta()).expect("meta");
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o700));
}

#[tokio::test]
async fn root_is_refused_without_the_flag_and_granted_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start_with(&dir.path().join("strict"), "native", false).await;
    let fw = framework();
    let s = run_to_end(
        &mut agent,
        &fw,
        as_user(shell_task("r1", "id -u", "cpus:0.1;mem:32"), "root"),
    )
    .await;
    assert_eq!(
        (s.state(), s.reason()),
        (TaskState::TaskError, Reason::TaskUnauthorized)
    );
    assert!(
        s.message.contains("refuses root tasks") && s.message.contains("--allow-root-tasks"),
        "{}",
        s.message
    );
    // Root through the framework's user is refused the same way, naming that field.
    let root_fw = v1::FrameworkInfo {
        user: "root".into(),
        ..framework()
    };
    let s = run_to_end(
        &mut agent,
        &root_fw,
        shell_task("r2", "id -u", "cpus:0.1;mem:32"),
    )
    .await;
    assert_eq!(s.state(), TaskState::TaskError);
    assert!(s.message.contains("framework.user 'root'"), "{}", s.message);
    // Nothing ran: the refused task's stdout was never created.
    let runs = agent.handle.layout().sandboxes_root();
    let ran = walk(&runs).iter().any(|p| p.ends_with("stdout"));
    assert!(!ran, "a refused task must not get a sandbox");

    let mut agent = start_with(&dir.path().join("lenient"), "native", true).await;
    let s = run_to_end(
        &mut agent,
        &fw,
        as_user(shell_task("r3", "id -u", "cpus:0.1;mem:32"), "root"),
    )
    .await;
    assert_eq!(s.state(), TaskState::TaskFinished, "{}", s.message);
    assert_eq!(read(&sandbox(&agent, &fw.id, "r3").join("stdout")), "0\n");
    // Allowed root is never the default: a task naming no user still runs as nobody.
    let s = run_to_end(
        &mut agent,
        &fw,
        shell_task("r4", "id -u", "cpus:0.1;mem:32"),
    )
    .await;
    assert_eq!(s.state(), TaskState::TaskFinished, "{}", s.message);
    assert_eq!(
        read(&sandbox(&agent, &fw.id, "r4").join("stdout")),
        format!("{NOBODY}\n")
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn unknown_users_fail_naming_the_user_and_framework_users_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start_with(dir.path(), "native", false).await;
    let fw = framework();
    let s = run_to_end(
        &mut agent,
        &fw,
        as_user(
            shell_task("ghost", "true", "cpus:0.1;mem:32"),
            "no-such-user-xyz",
        ),
    )
    .await;
    assert_eq!(
        (s.state(), s.reason()),
        (TaskState::TaskFailed, Reason::ContainerLaunchFailed)
    );
    assert!(
        s.message.contains("unknown user 'no-such-user-xyz'"),
        "{}",
        s.message
    );
    // A framework's user applies to its tasks that name none; the task's own user wins.
    let daemon_fw = v1::FrameworkInfo {
        user: "daemon".into(),
        ..framework()
    };
    let s = run_to_end(
        &mut agent,
        &daemon_fw,
        shell_task("fwuser", "id -un", "cpus:0.1;mem:32"),
    )
    .await;
    assert_eq!(s.state(), TaskState::TaskFinished, "{}", s.message);
    assert_eq!(
        read(&sandbox(&agent, &daemon_fw.id, "fwuser").join("stdout")),
        "daemon\n"
    );
    let s = run_to_end(
        &mut agent,
        &daemon_fw,
        as_user(shell_task("own", "id -un", "cpus:0.1;mem:32"), "nobody"),
    )
    .await;
    assert_eq!(s.state(), TaskState::TaskFinished, "{}", s.message);
    assert_eq!(
        read(&sandbox(&agent, &daemon_fw.id, "own").join("stdout")),
        "nobody\n"
    );
}

#[tokio::test]
async fn command_health_checks_run_as_the_task_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start_with(dir.path(), "native", false).await;
    let fw = framework();
    let mut t = shell_task("hc", "exec sleep 60", "cpus:0.1;mem:32");
    // Healthy only when the check runs as nobody and can write into the sandbox.
    t.health_check = Some(v1::HealthCheck {
        r#type: Type::Command as i32,
        command: Some(v1::CommandInfo {
            shell: true,
            value: format!("test \"$(id -u)\" = {NOBODY} && touch checked"),
            ..Default::default()
        }),
        interval_seconds: 0.2,
        timeout_seconds: 5.0,
        consecutive_failures: 3,
        ..Default::default()
    });
    agent.handle.run_task(fw.clone(), t).expect("run");
    wait_for(&mut agent, "hc", TaskState::TaskRunning).await;
    let fut = async {
        loop {
            let u = agent.outbox.recv().await.expect("outbox");
            let s = u.status.clone().expect("status");
            agent
                .handle
                .acknowledge(&u.framework_id, &s.task_id, &s.uuid)
                .expect("ack");
            assert!(!agora_proto::is_terminal(s.state()), "{s:?}");
            if s.healthy.is_some() {
                return s;
            }
        }
    };
    let s = tokio::time::timeout(WAIT, fut)
        .await
        .expect("a health report");
    assert_eq!(s.healthy, Some(true), "{}", s.message);
    let sb = sandbox(&agent, &fw.id, "hc");
    assert_eq!(
        std::fs::metadata(sb.join("checked"))
            .expect("touched")
            .uid(),
        NOBODY
    );
    agent.handle.kill_task(&fw.id, "hc", None).expect("kill");
    wait_for(&mut agent, "hc", TaskState::TaskKilled).await;
}

#[tokio::test]
async fn the_fetcher_copies_as_the_task_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start_with(&dir.path().join("agent"), "native", false).await;
    let fw = framework();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).expect("mkdir");
    let public = files.join("public.sh");
    std::fs::write(&public, "#!/bin/sh\necho fetched-ok\n").expect("write");
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let secret = files.join("secret");
    std::fs::write(&secret, "root-only\n").expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    let mut t = shell_task("fetch-ok", "./public.sh", "cpus:0.1;mem:32");
    if let Some(c) = t.command.as_mut() {
        c.uris = vec![v1::Uri {
            value: format!("file://{}", public.display()),
            executable: true,
            ..Default::default()
        }];
    }
    let s = run_to_end(&mut agent, &fw, t).await;
    assert_eq!(s.state(), TaskState::TaskFinished, "{}", s.message);
    let sb = sandbox(&agent, &fw.id, "fetch-ok");
    assert_eq!(read(&sb.join("stdout")), "fetched-ok\n");
    assert_eq!(
        std::fs::metadata(sb.join("public.sh"))
            .expect("fetched")
            .uid(),
        NOBODY
    );

    // A file the task's user may not read is not fetched for it by the (root) agent.
    let mut t = shell_task("fetch-secret", "cat secret", "cpus:0.1;mem:32");
    if let Some(c) = t.command.as_mut() {
        c.uris = vec![v1::Uri {
            value: secret.display().to_string(),
            ..Default::default()
        }];
    }
    let s = run_to_end(&mut agent, &fw, t).await;
    assert_eq!(s.state(), TaskState::TaskFailed, "{}", s.message);
    assert!(
        s.message.contains(&secret.display().to_string())
            && s.message.contains("Permission denied"),
        "{}",
        s.message
    );
    let sb = sandbox(&agent, &fw.id, "fetch-secret");
    assert!(!read(&sb.join("secret")).contains("root-only"));
}

#[tokio::test]
async fn docker_tasks_run_as_the_task_user_and_write_their_sandbox() {
    ensure_image().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start_with(dir.path(), "docker,native", false).await;
    let _cleanup = Cleanup(agent.handle.agent_id());
    let fw = framework();
    let s = run_to_end(
        &mut agent,
        &fw,
        docker_task(
            "d-who",
            "id -u; id -g; echo hi > \"$AGORA_SANDBOX/from-container\" && echo wrote",
            "cpus:0.2;mem:64",
            IMAGE,
        ),
    )
    .await;
    assert_eq!(s.state(), TaskState::TaskFinished, "{}", s.message);
    let sb = sandbox(&agent, &fw.id, "d-who");
    crate::common::eventually("container output", || {
        read(&sb.join("stdout")).contains("wrote")
    })
    .await;
    assert_eq!(
        read(&sb.join("stdout")),
        format!("{NOBODY}\n{NOBODY}\nwrote\n")
    );
    assert_eq!(
        std::fs::metadata(sb.join("from-container"))
            .expect("written")
            .uid(),
        NOBODY
    );
    // Root inside a container is refused too without the flag.
    let s = run_to_end(
        &mut agent,
        &fw,
        as_user(
            docker_task("d-root", "id -u", "cpus:0.2;mem:64", IMAGE),
            "root",
        ),
    )
    .await;
    assert_eq!(s.state(), TaskState::TaskError, "{}", s.message);
    assert!(s.message.contains("--allow-root-tasks"), "{}", s.message);
    // So is a privileged container (the host's root powers), whatever its user.
    let mut privileged = docker_task("d-privileged", "true", "cpus:0.2;mem:64", IMAGE);
    if let Some(d) = privileged
        .container
        .as_mut()
        .and_then(|c| c.docker.as_mut())
    {
        d.privileged = true;
    }
    let s = run_to_end(&mut agent, &fw, privileged).await;
    assert_eq!(s.state(), TaskState::TaskError, "{}", s.message);
    assert!(
        s.message.contains("privileged") && s.message.contains("--allow-root-tasks"),
        "{}",
        s.message
    );
}

/// The task owns its sandbox, so it can plant links there: the files API must not follow one out.
#[tokio::test]
async fn the_files_api_refuses_a_link_a_task_made_to_the_host() {
    use std::future::IntoFuture;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start_with(dir.path(), "native", false).await;
    let fw = framework();
    let s = run_to_end(
        &mut agent,
        &fw,
        shell_task(
            "linker",
            "ln -s /etc/shadow shadow && ln -s /etc etc && echo linked",
            "cpus:0.1;mem:32",
        ),
    )
    .await;
    assert_eq!(s.state(), TaskState::TaskFinished, "{}", s.message);
    let sb = sandbox(&agent, &fw.id, "linker");
    assert_eq!(read(&sb.join("stdout")), "linked\n");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(
        axum::serve(listener, agora_agent::http::router(agent.handle.clone())).into_future(),
    );
    let client = reqwest::Client::new();
    for (route, path) in [
        ("read", sb.join("shadow")),
        ("read", sb.join("etc/passwd")),
        ("browse", sb.join("etc")),
    ] {
        let r = client
            .get(format!("{base}/files/{route}"))
            .query(&[("path", path.display().to_string())])
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let body = r.text().await.expect("body");
        assert_eq!(status, 403, "{route} {}: {body}", path.display());
        assert!(!body.contains("root:"), "no host file content leaks");
    }
    server.abort();
}
