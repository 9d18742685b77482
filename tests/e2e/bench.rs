//! `agora bench load`: a small run of the load driver (20 simulated agents, 2 frameworks, 100 tasks)
//! against a master it starts itself, checking the JSON report.

use std::time::Duration;

#[tokio::test]
async fn bench_load_runs_every_task_and_reports_json() {
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
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("bench load finishes within 20 s")
        .expect("the agora binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench load failed: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is one JSON object ({e}): {stdout}"));
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
