//! The services framework as the community's Marathon client sees it: PyPI `marathon` (from the
//! venv `scripts/test` sets up, `AGORA_TEST_PYTHON`) drives `agora local` through every call it
//! has for apps, tasks, deployments, the queue, info, the leader and ping, and checks each typed
//! result (tests/python/marathon_client.py). Native `sleep` tasks: no image needed.

use std::time::Duration;

use crate::harness::{free_port, local_ready, run_python_script, spawn_local};

#[tokio::test(flavor = "multi_thread")]
async fn the_marathon_python_client_drives_every_app_task_and_deployment_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let services = free_port();
    let local = spawn_local(dir.path(), free_port(), "local", services);
    local_ready(&local).await;
    let out = run_python_script(
        "marathon_client.py",
        vec![format!("http://127.0.0.1:{services}")],
        Duration::from_secs(420),
    )
    .await;
    assert!(
        out.contains("all checks passed"),
        "{out}\n{}",
        local.log_text()
    );
}
