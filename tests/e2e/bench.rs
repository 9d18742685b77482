//! `agora bench load`: a small run of the load driver (20 simulated agents, 2 frameworks, 100 tasks)
//! against a master it starts itself, checking the JSON report.

use std::time::Duration;

/// Runs the small `agora bench load` (20 agents, 2 frameworks, 100 tasks of 0.5 s, `--json`)
/// with `extra` flags; it must succeed within `within`. Its JSON report and its stderr.
async fn small_bench_load(extra: &[&str], within: Duration) -> (serde_json::Value, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .args([
            "bench",
            "load",
            "--agents",
            "20",
            "--frameworks",
            "2",
            "--tasks",
            "100",
            "--task-seconds",
            "0.5",
            "--timeout",
            "15",
            "--json",
        ])
        .args(extra)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(within, run)
        .await
        .unwrap_or_else(|_| panic!("bench load {extra:?} finishes within {within:?}"))
        .expect("the agora binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "bench load {extra:?} failed: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is one JSON object ({e}): {stdout}"));
    (r, stderr)
}

#[tokio::test]
async fn bench_load_runs_every_task_and_reports_json() {
    let (r, _) = small_bench_load(&[], Duration::from_secs(20)).await;
    assert_eq!(r["agents"], 20, "{r}");
    assert_eq!(r["frameworks"], 2, "{r}");
    assert_eq!(r["tasks"], 100, "{r}");
    assert_eq!(
        r["tasks_running"], 100,
        "every task reached TASK_RUNNING: {r}"
    );
    assert_eq!(
        r["tasks_finished"], 100,
        "every task reached TASK_FINISHED: {r}"
    );
    assert_eq!(r["tasks_failed"], 0, "{r}");
    assert_eq!(r["accept_errors"], 0, "{r}");
    for field in [
        "register_seconds",
        "launches_per_second",
        "offers_per_second",
        "master_rss_mib",
    ] {
        let v = r[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} is a number: {r}"));
        assert!(v >= 0.0, "{field} = {v}");
    }
    assert!(r["launches_per_second"].as_f64() > Some(0.0), "{r}");
    assert!(r["master_rss_mib"].as_f64() > Some(1.0), "{r}");
    let p50 = r["launch_latency_ms"]["p50"].as_f64().expect("p50");
    let p99 = r["launch_latency_ms"]["p99"].as_f64().expect("p99");
    assert!(0.0 < p50 && p50 <= p99, "{r}");
}

/// `agora bench load --tls`: the same small run against a master on its own cluster CA, the
/// driver joined with the agent token and every connection over TLS (agents with mutual TLS).
#[tokio::test]
async fn bench_load_over_tls_runs_every_task_and_reports_the_handshake() {
    let (r, stderr) = small_bench_load(&["--tls"], Duration::from_secs(30)).await;
    assert_eq!(r["tasks_running"], 100, "{r}");
    assert_eq!(r["tasks_finished"], 100, "{r}");
    assert_eq!(r["accept_errors"], 0, "{r}");
    assert!(
        stderr.contains("TCP + TLS handshake + HTTP/2) takes"),
        "the handshake cost is reported: {stderr}"
    );
}

/// `agora bench load --failover`: 10 agents and 50 tasks under two masters on the real ZooKeeper
/// (`AGORA_TEST_ZK`); the driver kills the leader and every agent must re-register with its tasks
/// on the new leader, which must then count them itself.
#[tokio::test]
async fn bench_load_failover_reregisters_every_agent_on_the_new_leader() {
    let servers = std::env::var("AGORA_TEST_ZK").unwrap_or_else(|_| "127.0.0.1:2181".into());
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .args([
            "bench",
            "load",
            "--agents",
            "10",
            "--frameworks",
            "2",
            "--tasks",
            "50",
            "--failover",
            "--zk",
            &format!("zk://{servers}/agora-e2e-bench"),
            "--timeout",
            "40",
            "--json",
        ])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("bench load --failover finishes within 60 s")
        .expect("the agora binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench load --failover failed: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is one JSON object ({e}): {stdout}"));
    assert_eq!(r["tasks_running"], 50, "{r}");
    assert_eq!(r["failover_agents_reregistered"], 10, "{r}");
    assert_eq!(
        r["failover_tasks_reported"], 50,
        "every running task reported on re-registration: {r}"
    );
    assert_eq!(
        r["failover_new_leader_agents_active"].as_f64(),
        Some(10.0),
        "{r}"
    );
    assert_eq!(
        r["failover_new_leader_tasks_running"].as_f64(),
        Some(50.0),
        "{r}"
    );
    let s = r["failover_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("failover_seconds is a number: {r}"));
    // Measured from the kill to the last re-registration: positive, and within the timeout.
    assert!(s > 0.0 && s < 40.0, "failover_seconds = {s}: {r}");
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{r}");
}

/// `agora bench services`: a small `one-app` run (20 agents, one app of 30 instances) and a small
/// `embed` run against a real master and a real `agora services` started by the driver.
#[tokio::test]
async fn bench_services_scenarios_report_json() {
    for (scenario, extra) in [
        ("one-app", ["--instances", "30"]),
        ("embed", ["--tasks", "30"]),
    ] {
        let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_agora"))
            .args([
                "bench",
                "services",
                "--scenario",
                scenario,
                "--agents",
                "20",
                "--requests",
                "5",
                "--timeout",
                "60",
                "--json",
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(90), run)
            .await
            .expect("bench services finishes within 90 s")
            .expect("the agora binary runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "bench services {scenario} failed: {}\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        let r: serde_json::Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is one JSON object ({e}): {stdout}"));
        assert_eq!(r["scenario"], scenario, "{r}");
        assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{r}");
        if scenario == "one-app" {
            assert_eq!(r["instances"], 30, "{r}");
            assert!(r["all_running_seconds"].as_f64() > Some(0.0), "{r}");
        } else {
            // The driver itself checks that every answer lists all 30 tasks.
            assert_eq!(r["tasks"], 30, "{r}");
            let p50 = r["embed_latency_ms"]["p50"].as_f64().expect("p50");
            let p99 = r["embed_latency_ms"]["p99"].as_f64().expect("p99");
            assert!(0.0 < p50 && p50 <= p99, "{r}");
        }
    }
}
