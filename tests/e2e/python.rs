//! A framework in another language: the Python example, generated from `proto/` with grpcio-tools
//! (installed by `scripts/test` from PyPI), launches tasks on a real master and agent.

use std::path::Path;
use std::process::Command;

use crate::harness::{Agent, Master};

#[tokio::test(flavor = "multi_thread")]
async fn the_python_example_framework_runs_its_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let gen = dir.path().join("gen");
    std::fs::create_dir_all(&gen).expect("mkdir");
    let proto_dir = root.join("proto/proto/agora/v1");
    let protoc = Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto_dir)
        .arg(format!("--python_out={}", gen.display()))
        .arg(format!("--grpc_python_out={}", gen.display()))
        .arg(proto_dir.join("agora.proto"))
        .output()
        .expect("python3 runs");
    assert!(
        protoc.status.success(),
        "generating the Python stubs failed (pip install grpcio grpcio-tools; scripts/test does): {}",
        String::from_utf8_lossy(&protoc.stderr)
    );
    let master = Master::start(dir.path(), &[]).await;
    let _agent = Agent::start(dir.path(), "agent-a", &master.address(), "cpus:1;mem:256");
    let script = root.join("examples/python/hello_framework.py");
    let address = master.address();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg("60")
            .arg("python3")
            .arg(script)
            .args(["--master", &address, "--tasks", "3", "--cmd", "echo hi"])
            .env("PYTHONPATH", &gen)
            .output()
    })
    .await
    .expect("join")
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all 3 tasks finished"), "{stdout}");
    assert_eq!(stdout.matches("TASK_FINISHED").count(), 3, "{stdout}");
}
