//! Nothing outlives its tasks by accident: each agent work dir has a cgroup parent of its own
//! (agents sharing a host never see each other's containers); an agent that starts destroys the
//! containers under it that no checkpoint knows (as Mesos destroys orphan containers on recovery);
//! `agora agent cleanup` destroys all of them and leaves no cgroup behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agora_proto::v1::TaskState;

use crate::harness::{eventually, free_port, shell_task, Agent, Master, TestFramework};

/// The hierarchy whose `cgroup.procs` lists a container's processes: the unified root (v2) or
/// the memory controller's (v1).
fn main_hierarchy() -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        root.to_path_buf()
    } else {
        root.join("memory")
    }
}

fn cgroup_parent(work_dir: &Path) -> String {
    std::fs::read_to_string(work_dir.join("meta/cgroup-parent"))
        .expect("the agent records its cgroup parent")
        .trim()
        .to_string()
}

fn containers(parent: &str) -> Vec<PathBuf> {
    std::fs::read_dir(main_hierarchy().join(parent))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn pids(cgroup: &Path) -> Vec<i32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_destroys_containers_no_checkpoint_knows_and_cleanup_leaves_nothing() {
    if !nix_is_root() {
        panic!("this test needs root (cgroups), as scripts/test runs it");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let port = free_port();
    let a = Agent::start_with(
        dir.path(),
        "agent-a",
        &master.address(),
        "cpus:2;mem:512",
        "native",
        port,
    );
    let mut fw = TestFramework::subscribe(
        &master.address(),
        TestFramework::info("orphans", "*", 600.0),
    )
    .await;
    let offer = fw.next_offer().await;
    assert_eq!(offer.hostname, "agent-a");
    fw.launch(
        &offer,
        vec![shell_task("sleeper", "sleep 300", "cpus:0.1;mem:32")],
    )
    .await
    .expect("accept");
    fw.until_state("sleeper", TaskState::TaskRunning).await;
    // A second agent on the same host, started once the first one's task runs.
    let b = Agent::start(dir.path(), "agent-b", &master.address(), "cpus:2;mem:512");
    eventually("agent-b's cgroup parent", Duration::from_secs(20), || {
        let ok = b.work_dir.join("meta/cgroup-parent").is_file();
        async move { ok.then_some(()) }
    })
    .await;

    let (pa, pb) = (cgroup_parent(&a.work_dir), cgroup_parent(&b.work_dir));
    assert_ne!(pa, pb, "two agents on one host share a cgroup parent");
    assert!(
        pa.starts_with("agora/") && pb.starts_with("agora/"),
        "{pa} {pb}"
    );
    let cgroups = containers(&pa);
    assert_eq!(cgroups.len(), 1, "one container under {pa}: {cgroups:?}");
    // RUNNING is reported once the supervisor is started; it joins the cgroup right after.
    let task_pids = eventually("the task in its cgroup", Duration::from_secs(10), || {
        let p = pids(&cgroups[0]);
        async move { (!p.is_empty()).then_some(p) }
    })
    .await;
    assert!(containers(&pb).is_empty(), "agent-b sees no container");

    // The agent dies and its checkpoints are lost: the task is now nobody's.
    let work_a = a.work_dir.clone();
    let mut a = a;
    a.process.kill();
    std::fs::remove_dir_all(work_a.join("meta/frameworks")).expect("remove checkpoints");
    let a2 = Agent::start_with(
        dir.path(),
        "agent-a",
        &master.address(),
        "cpus:2;mem:512",
        "native",
        port,
    );
    eventually("the orphan destroyed", Duration::from_secs(20), || {
        let gone = !cgroups[0].exists()
            && task_pids
                .iter()
                .all(|p| !Path::new(&format!("/proc/{p}")).exists());
        async move { gone.then_some(()) }
    })
    .await;
    assert!(
        a2.process
            .log_text()
            .contains("destroying an orphan container"),
        "{}",
        a2.process.log_text()
    );
    // agent-b's parent is untouched by agent-a's reaping.
    assert!(main_hierarchy().join(&pb).is_dir());

    // Retiring agent-b's machine: stop it, clean up, nothing of it is left.
    let work_b = b.work_dir.clone();
    let mut b = b;
    b.process.kill();
    let out = Command::new(env!("CARGO_BIN_EXE_agora"))
        .args([
            "agent",
            "cleanup",
            "--containerizers",
            "native",
            "--work-dir",
        ])
        .arg(&work_b)
        .output()
        .expect("agora agent cleanup runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !main_hierarchy().join(&pb).exists(),
        "agora agent cleanup left the cgroup parent {pb}"
    );
    drop(a);
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}
