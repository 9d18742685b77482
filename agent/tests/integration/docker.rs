//! The Docker containerizer against the real engine, with a busybox image imported locally (no
//! registry is reachable on these machines).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use agora_agent::containerizer::docker::LABEL_AGENT;
use agora_proto::v1::{self, Reason, TaskState};
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;

use crate::common::*;

/// Tag bumped whenever the image's content changes (`:2`: a world-writable sticky `/tmp`, as in
/// real images, since tasks run as `nobody`), so that a machine holding an older import rebuilds it.
pub const IMAGE: &str = "agora-test-busybox:2";

static IMPORTED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

pub async fn docker() -> Docker {
    Docker::connect_with_local_defaults()
        .expect("docker client")
        .negotiate_version()
        .await
        .expect("docker engine reachable")
}

/// Imports a tiny image made of Debian's static busybox (test setup only: the `docker` CLI is used
/// here, never by the agent).
pub async fn ensure_image() {
    IMPORTED
        .get_or_init(|| async {
            if docker().await.inspect_image(IMAGE).await.is_ok() {
                return;
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path().join("rootfs");
            for d in ["bin", "tmp", "www", "etc"] {
                std::fs::create_dir_all(root.join(d)).expect("mkdir");
            }
            std::fs::copy("/bin/busybox", root.join("bin/busybox"))
                .expect("busybox-static is installed");
            let list = std::process::Command::new("/bin/busybox")
                .arg("--list")
                .output()
                .expect("busybox --list");
            for applet in String::from_utf8_lossy(&list.stdout)
                .lines()
                .filter(|a| *a != "busybox")
            {
                let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
            }
            std::fs::write(root.join("www/index.html"), "agora-ok\n").expect("index");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
                .expect("chmod /tmp");
            std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").expect("passwd");
            let tar = dir.path().join("rootfs.tar");
            let ok = std::process::Command::new("tar")
                .args([
                    "-C",
                    &root.display().to_string(),
                    "-cf",
                    &tar.display().to_string(),
                    ".",
                ])
                .status()
                .expect("tar");
            assert!(ok.success(), "tar failed");
            let out = std::process::Command::new("docker")
                .args(["import", &tar.display().to_string(), IMAGE])
                .output()
                .expect("docker import");
            assert!(
                out.status.success(),
                "docker import: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        })
        .await;
}

/// Removes every container of an agent (by label), whatever happened in the test.
pub async fn remove_containers(agent_id: &str) {
    let d = docker().await;
    let filters = HashMap::from([("label", vec![format!("{LABEL_AGENT}={agent_id}")])]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    for c in d.list_containers(Some(opts)).await.unwrap_or_default() {
        if let Some(id) = c.id {
            let _ = d
                .remove_container(
                    &id,
                    Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                )
                .await;
        }
    }
}

/// Removes an agent's containers when dropped, also when a test panics (test cleanup only: uses
/// the `docker` CLI so that it works outside the runtime).
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label={LABEL_AGENT}={}", self.0);
        let Ok(out) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .arg("rm")
                .arg("-f")
                .args(&ids)
                .output();
        }
    }
}

pub fn docker_task(id: &str, cmd: &str, resources: &str, image: &str) -> v1::TaskInfo {
    let mut t = shell_task(id, cmd, resources);
    t.container = Some(v1::ContainerInfo {
        r#type: v1::ContainerType::Docker as i32,
        docker: Some(v1::DockerInfo {
            image: image.into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    t
}

async fn start_docker_agent(dir: &Path) -> agora_agent::Agent {
    ensure_image().await;
    start(dir, "docker,native").await
}

#[tokio::test]
async fn docker_task_finishes_and_fails_with_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start_docker_agent(dir.path()).await;
    let _cleanup = Cleanup(agent.handle.agent_id());
    let fw = framework();
    agent
        .handle
        .run_task(
            fw.clone(),
            docker_task(
                "d-ok",
                "echo from-docker; echo oops >&2; ls $AGORA_SANDBOX",
                "cpus:0.2;mem:64",
                IMAGE,
            ),
        )
        .expect("run");
    let (s, seen) = wait_for(&mut agent, "d-ok", TaskState::TaskFinished).await;
    assert_eq!(s.exit_code, Some(0));
    let states: Vec<TaskState> = seen.iter().map(|s| s.state()).collect();
    assert_eq!(
        states,
        [
            TaskState::TaskStarting,
            TaskState::TaskRunning,
            TaskState::TaskFinished
        ]
    );
    let sb = sandbox(&agent, &fw.id, "d-ok");
    let out = read(&sb.join("stdout"));
    assert!(out.starts_with("from-docker\n"), "{out}");
    assert!(
        out.contains("stdout"),
        "the sandbox is mounted in the container: {out}"
    );
    assert_eq!(read(&sb.join("stderr")), "oops\n");

    agent
        .handle
        .run_task(
            fw.clone(),
            docker_task("d-fail", "exit 7", "cpus:0.2;mem:64", IMAGE),
        )
        .expect("run");
    let (s, _) = wait_for(&mut agent, "d-fail", TaskState::TaskFailed).await;
    assert_eq!(s.exit_code, Some(7));
    assert_eq!(s.reason(), Reason::CommandExited);
    assert!(s.message.contains("exited with status 7"), "{}", s.message);
    remove_containers(&agent.handle.agent_id()).await;
}

#[tokio::test]
async fn docker_port_mapping_is_reachable_from_the_host_and_kill_stops_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start_docker_agent(dir.path()).await;
    let _cleanup = Cleanup(agent.handle.agent_id());
    let fw = framework();
    let port = free_port();
    let mut t = docker_task(
        "web",
        "exec httpd -f -p 80 -h /www",
        &format!("cpus:0.2;mem:64;ports:[{port}-{port}]"),
        IMAGE,
    );
    if let Some(d) = t.container.as_mut().and_then(|c| c.docker.as_mut()) {
        d.network = v1::DockerNetwork::Bridge as i32;
        d.port_mappings = vec![v1::PortMapping {
            host_port: port as u32,
            container_port: 80,
            ..Default::default()
        }];
    }
    agent
        .handle
        .run_task(fw.clone(), with_grace(t, 2.0))
        .expect("run");
    wait_for(&mut agent, "web", TaskState::TaskRunning).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{port}/index.html");
    let deadline = Instant::now() + WAIT;
    let body = loop {
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => break r.text().await.expect("body"),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("{url} not reachable: {other:?}"),
        }
    };
    assert_eq!(body, "agora-ok\n");

    // Statistics come from `docker stats`, with the limit from the task's mem.
    let stats = agent.handle.statistics().await.expect("stats");
    let web = stats
        .iter()
        .find(|s| s.task_id == "web")
        .expect("web statistics");
    assert_eq!(web.containerizer, "docker");
    assert_eq!(web.statistics.mem_limit_bytes, Some(64 * 1024 * 1024));

    let t0 = Instant::now();
    agent.handle.kill_task(&fw.id, "web", None).expect("kill");
    let (s, _) = wait_for(&mut agent, "web", TaskState::TaskKilled).await;
    assert_eq!(s.reason(), Reason::KillRequested);
    eprintln!(
        "docker task killed in {:?} (exit {:?})",
        t0.elapsed(),
        s.exit_code
    );
    assert!(
        client.get(&url).send().await.is_err(),
        "the port is closed after the kill"
    );
    remove_containers(&agent.handle.agent_id()).await;
}

#[tokio::test]
async fn unknown_image_fails_with_image_pull_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start_docker_agent(dir.path()).await;
    let _cleanup = Cleanup(agent.handle.agent_id());
    let fw = framework();
    // A registry that refuses connections at once: the pull fails fast and for sure.
    let image = "127.0.0.1:1/agora/no-such-image:1";
    agent
        .handle
        .run_task(fw, docker_task("nopull", "true", "cpus:0.1;mem:32", image))
        .expect("run");
    let (s, _) = wait_for(&mut agent, "nopull", TaskState::TaskFailed).await;
    assert_eq!(s.reason(), Reason::ImagePullFailed, "{}", s.message);
    assert!(
        s.message
            .contains(&format!("failed to pull image '{image}'")),
        "{}",
        s.message
    );
    assert_eq!(s.exit_code, None);
    remove_containers(&agent.handle.agent_id()).await;
}
