//! The batch framework as Chronos's community client sees it: PyPI `chronos-python`, unchanged,
//! runs tests/python/chronos_client.py against `agora local` (scheduled and dependent jobs that
//! really run, search, run now, update, kill, delete, graph, statistics, metrics), and against
//! `agora batch --api-token-file` (the token as a header and as the basic auth password).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{eventually, free_port, Master, Process};

/// The interpreter with the ecosystem's clients (`AGORA_TEST_PYTHON`, set by scripts/test).
fn python() -> PathBuf {
    let p = std::env::var_os("AGORA_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/agora-test-services/venv/bin/python"));
    assert!(
        p.exists(),
        "no Python with chronos-python at {}: run scripts/test (it creates the venv) or set AGORA_TEST_PYTHON",
        p.display()
    );
    p
}

/// Runs the client script (at most 5 minutes) and fails the test with its output unless it passed.
async fn run_script(server: String, out: &Path, token: Option<&str>) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/chronos_client.py");
    let mut cmd = Command::new("timeout");
    cmd.arg("300")
        .arg(python())
        .arg(script)
        .arg(&server)
        .arg(out);
    if let Some(t) = token {
        cmd.env("CHRONOS_TOKEN", t);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("timeout and python run");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "chronos_client.py failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A directory the task user (`nobody`) can enter and write: the jobs' commands write there.
fn shared_dir(dir: &Path) -> PathBuf {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    out
}

/// `--agent-port <free port>` when this `agora local` has the flag: without it its agents listen
/// on fixed addresses (127.0.0.2:5051, …) and two `agora local` of the suite running at once
/// fight over them. (Once every branch has the flag, pass it always.)
fn agent_port_args() -> Vec<String> {
    let help = Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(["local", "--help"])
        .output()
        .expect("agora local --help");
    if String::from_utf8_lossy(&help.stdout).contains("--agent-port") {
        vec!["--agent-port".into(), free_port().to_string()]
    } else {
        Vec::new()
    }
}

/// `agora local` with one agent, and its batch port. When another `agora local` holds the
/// agents' addresses (see [`agent_port_args`]), this one's agent cannot register and `agora
/// local` exits saying so: it is started again (for up to 5 minutes) until it comes up.
async fn start_local(dir: &Path) -> (Process, u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    for attempt in 1.. {
        let batch_port = free_port();
        let mut args: Vec<String> = [
            "local",
            "--insecure",
            "--port",
            &free_port().to_string(),
            "--work-dir",
            &dir.join(format!("state-{attempt}")).display().to_string(),
            "--agents",
            "1",
            "--containerizers",
            "native",
            "--batch-port",
            &batch_port.to_string(),
            "--services-port",
            &free_port().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(agent_port_args());
        let mut local = Process::spawn(&format!("local-{attempt}"), &args, dir);
        let started = tokio::time::Instant::now();
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "agora local neither came up nor stopped within 90 s:\n{}",
                local.log_text()
            );
            if local.log_text().contains("Agora is running locally") {
                return (local, batch_port);
            }
            if local.try_wait().is_some() {
                let log = local.log_text();
                assert!(
                    log.contains("agents registered") && tokio::time::Instant::now() < deadline,
                    "agora local stopped (attempt {attempt}):\n{log}"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    unreachable!("the loop returns or panics")
}

#[tokio::test(flavor = "multi_thread")]
async fn chronos_python_drives_the_batch_framework_of_agora_local() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = shared_dir(dir.path());
    let (_local, batch_port) = start_local(dir.path()).await;
    let stdout = run_script(format!("127.0.0.1:{batch_port}"), &out, None).await;
    assert!(
        stdout.contains("chronos-python: all checks passed"),
        "{stdout}"
    );
    // The files the jobs wrote are the runs the client saw: scheduled, manual, after the
    // parent, updated.
    let writer = std::fs::read_to_string(out.join("writer.txt")).expect("writer.txt");
    assert!(writer.starts_with("ran\nran\nran\n"), "{writer}");
    assert!(writer.ends_with("updated\n"), "{writer}");
    let child = std::fs::read_to_string(out.join("child.txt")).expect("child.txt");
    // Once after each parent success (and maybe once more on the schedule it took over when
    // its parent was deleted first).
    assert!(child.starts_with("child\nchild\n"), "{child}");
    assert!(child.lines().count() <= 3, "{child}");
}

#[tokio::test(flavor = "multi_thread")]
async fn chronos_python_authenticates_to_batch_with_the_api_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = shared_dir(dir.path());
    let token = "chronos-client-test-token-0123456789abcdef";
    let token_file = dir.path().join("api-token");
    std::fs::write(&token_file, format!("{token}\n")).expect("write token");
    let master = Master::start(dir.path(), &[]).await;
    let port = free_port();
    let args: Vec<String> = [
        "batch",
        "--master",
        &master.address(),
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--work-dir",
        &dir.path().join("batch").display().to_string(),
        "--api-token-file",
        &token_file.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _batch = Process::spawn("batch", &args, dir.path());
    eventually(
        "batch answering /ping",
        Duration::from_secs(30),
        || async move {
            reqwest::get(format!("http://127.0.0.1:{port}/ping"))
                .await
                .ok()
                .filter(|r| r.status() == 200)
        },
    )
    .await;
    let stdout = run_script(format!("127.0.0.1:{port}"), &out, Some(token)).await;
    assert!(
        stdout.contains("chronos-python auth: all checks passed"),
        "{stdout}"
    );
}
