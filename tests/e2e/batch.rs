//! The batch framework end to end: a real master, agent and `agora batch` process, driven through
//! its Chronos-compatible API and the `agora job` CLI.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{eventually, free_port, Agent, Master, Process};

struct Batch {
    process: Process,
    url: String,
    port: u16,
}

fn start_batch(dir: &Path, master: &str, port: u16, name: &str) -> Batch {
    let args: Vec<String> = [
        "batch",
        "--master",
        master,
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--work-dir",
        &dir.join("batch").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Batch {
        process: Process::spawn(name, &args, dir),
        url: format!("http://127.0.0.1:{port}/v1/scheduler"),
        port,
    }
}

async fn post(url: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("POST")
}

async fn runs(b: &Batch, job: &str) -> Vec<Value> {
    let r = reqwest::get(format!("{}/job/{job}/runs", b.url)).await;
    match r {
        Ok(r) => r
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

async fn finished_runs(b: &Batch, job: &str, status: &str) -> usize {
    runs(b, job)
        .await
        .iter()
        .filter(|r| r["status"] == status)
        .count()
}

async fn cluster(dir: &Path) -> (Master, Agent, Batch) {
    let master = Master::start(dir, &[]).await;
    let agent = Agent::start(
        dir,
        "agent-a",
        &master.address(),
        "cpus:2;mem:1024;disk:4096",
    );
    let batch = start_batch(dir, &master.address(), free_port(), "batch");
    let ping = format!("http://127.0.0.1:{}/ping", batch.port);
    eventually("the batch API", Duration::from_secs(20), || {
        let ping = ping.clone();
        async move {
            reqwest::get(&ping)
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        }
    })
    .await;
    (master, agent, batch)
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_jobs_retries_dependencies_and_parallel_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_master, _agent, b) = cluster(dir.path()).await;

    // Bad jobs: every field named, 400, nothing stored.
    let r = post(
        &format!("{}/iso8601", b.url),
        json!({"name": "bad job", "schedule": "R/yesterday/PT1S", "cpus": -1, "parents": ["ghost"]}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.expect("json");
    let paths: Vec<&str> = body["details"]
        .as_array()
        .expect("details")
        .iter()
        .filter_map(|d| d["path"].as_str())
        .collect();
    for p in ["/name", "/schedule", "/cpus", "/parents/0"] {
        assert!(paths.contains(&p), "{p} not in {body}");
    }
    let r = reqwest::Client::new()
        .post(format!("{}/iso8601", b.url))
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 400);
    let jobs: Value = reqwest::get(format!("{}/jobs", b.url))
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(jobs, json!([]));

    // A repeating job runs its three times, a second apart.
    let r = post(
        &format!("{}/iso8601", b.url),
        json!({"name": "tick", "command": "echo tick", "schedule": "R3//PT1S", "cpus": 0.1, "mem": 32}),
    )
    .await;
    assert_eq!(r.status(), 204);
    // A failing job retries once, then records the error.
    post(
        &format!("{}/iso8601", b.url),
        json!({"name": "broken", "command": "exit 3", "schedule": "R1//PT1H", "retries": 1, "cpus": 0.1, "mem": 32}),
    )
    .await;
    // A chain a → b → c, started by a's schedule.
    post(
        &format!("{}/iso8601", b.url),
        json!({"name": "a", "command": "true", "schedule": "R1//PT1H", "cpus": 0.1, "mem": 32}),
    )
    .await;
    let r = post(
        &format!("{}/dependency", b.url),
        json!({"name": "b", "command": "true", "parents": ["a"], "cpus": 0.1, "mem": 32}),
    )
    .await;
    assert_eq!(r.status(), 204);
    post(
        &format!("{}/dependency", b.url),
        json!({"name": "c", "command": "true", "parents": ["b"], "cpus": 0.1, "mem": 32}),
    )
    .await;
    // A parallel run: 10 completions, 5 at a time.
    post(
        &format!("{}/iso8601", b.url),
        json!({"name": "par", "command": "true", "schedule": "R1//PT1H", "parallelism": 5, "completions": 10, "cpus": 0.1, "mem": 32}),
    )
    .await;

    eventually(
        "tick to run three times",
        Duration::from_secs(30),
        || async { (finished_runs(&b, "tick", "success").await == 3).then_some(()) },
    )
    .await;
    eventually(
        "broken to fail after its retry",
        Duration::from_secs(30),
        || async { (finished_runs(&b, "broken", "failure").await == 1).then_some(()) },
    )
    .await;
    let broken = runs(&b, "broken").await;
    let tasks = broken[0]["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 2, "{broken:?}");
    assert!(tasks.iter().all(|t| t["exitCode"] == 3), "{broken:?}");
    let sandbox = tasks[0]["sandbox"].as_str().expect("sandbox");
    assert!(
        sandbox.contains("/frameworks/") && sandbox.ends_with("/runs"),
        "{sandbox}"
    );
    eventually(
        "c to succeed after b after a",
        Duration::from_secs(30),
        || async { (finished_runs(&b, "c", "success").await == 1).then_some(()) },
    )
    .await;
    let started = |r: &Vec<Value>| r[0]["startedAt"].as_str().unwrap_or("").to_string();
    let (ra, rb, rc) = (
        runs(&b, "a").await,
        runs(&b, "b").await,
        runs(&b, "c").await,
    );
    assert!(started(&ra) <= started(&rb) && started(&rb) <= started(&rc));
    assert_eq!(rb[0]["trigger"], "parent a succeeded");
    eventually(
        "par to finish its 10 completions",
        Duration::from_secs(30),
        || async { (finished_runs(&b, "par", "success").await == 1).then_some(()) },
    )
    .await;
    let par = runs(&b, "par").await;
    let finished = par[0]["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|t| t["state"] == "TASK_FINISHED")
        .count();
    assert_eq!(finished, 10);

    // Chronos's read-only stats, search, graph and stats endpoints.
    let jobs: Value = reqwest::get(format!("{}/jobs/search?name=tic", b.url))
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(jobs[0]["name"], "tick");
    assert_eq!(jobs[0]["successCount"], 3);
    let graph = reqwest::get(format!("{}/graph/csv", b.url))
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert!(
        graph.contains("link,a,b") && graph.contains("link,b,c"),
        "{graph}"
    );
    let stat: Value = reqwest::get(format!("{}/job/stat/tick", b.url))
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(stat["histogram"]["count"], 3);

    // The CLI over the same API.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .args([
            "job",
            "list",
            "--batch",
            &format!("http://127.0.0.1:{}", b.port),
        ])
        .output()
        .expect("agora runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("NAME") && text.contains("tick"), "{text}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .args([
            "job",
            "run",
            "ghost",
            "--batch",
            &format!("http://127.0.0.1:{}", b.port),
        ])
        .output()
        .expect("agora runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Job 'ghost' does not exist"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_failover_mid_run_neither_loses_nor_duplicates_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (master, _agent, mut b) = cluster(dir.path()).await;
    post(
        &format!("{}/iso8601", b.url),
        json!({"name": "long", "command": "sleep 3", "schedule": "R1//PT1H", "cpus": 0.1, "mem": 32}),
    )
    .await;
    eventually(
        "the run's task to be running",
        Duration::from_secs(20),
        || async {
            let r = runs(&b, "long").await;
            r.first()
                .and_then(|r| r["tasks"].as_array().cloned())
                .filter(|t| t.iter().any(|t| t["state"] == "TASK_RUNNING"))
                .map(|_| ())
        },
    )
    .await;
    b.process.kill();
    let port = b.port;
    b = start_batch(dir.path(), &master.address(), port, "batch-again");
    eventually(
        "the run to finish after the failover",
        Duration::from_secs(30),
        || async { (finished_runs(&b, "long", "success").await == 1).then_some(()) },
    )
    .await;
    let all = runs(&b, "long").await;
    assert_eq!(all.len(), 1, "one run, not two: {all:?}");
    let tasks = all[0]["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 1, "the task was not relaunched: {tasks:?}");
    assert_eq!(tasks[0]["state"], "TASK_FINISHED");
    // The master saw one framework (the same id failed over) and one task.
    let state = master.state().await;
    let launched: Vec<&Value> = state["completed_tasks"]
        .as_array()
        .expect("completed")
        .iter()
        .filter(|t| t["id"].as_str().is_some_and(|id| id.starts_with("long.")))
        .collect();
    assert_eq!(launched.len(), 1, "{state}");
    assert_eq!(state["frameworks"].as_array().map(|f| f.len()), Some(1));
}

fn start_batch_zk(dir: &Path, master: &str, zk: &str, name: &str) -> Batch {
    let port = free_port();
    let args: Vec<String> = [
        "batch",
        "--master",
        master,
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--work-dir",
        &dir.join(name).display().to_string(),
        "--zk",
        zk,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Batch {
        process: Process::spawn(name, &args, dir),
        url: format!("http://127.0.0.1:{port}/v1/scheduler"),
        port,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_instances_elect_a_leader_in_zookeeper_and_the_standby_takes_over_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let _agent = Agent::start(
        dir.path(),
        "agent-a",
        &master.address(),
        "cpus:2;mem:1024;disk:4096",
    );
    let zk = crate::harness::unique_zk_url("agora-test-batch");
    let mut first = start_batch_zk(dir.path(), &master.address(), &zk, "batch-1");
    eventually(
        "the first instance to lead",
        Duration::from_secs(20),
        || async {
            let r = reqwest::get(format!("{}/jobs", first.url)).await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    let second = start_batch_zk(dir.path(), &master.address(), &zk, "batch-2");
    // The standby sends clients to the leader: a job posted to it lands on the leader.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = eventually(
        "the standby to know the leader",
        Duration::from_secs(20),
        || {
            let c = no_redirect.clone();
            let url = format!("{}/jobs", second.url);
            async move {
                let r = c.get(&url).send().await.ok()?;
                (r.status() == 307).then_some(r)
            }
        },
    )
    .await;
    assert_eq!(
        r.headers().get("location").and_then(|v| v.to_str().ok()),
        Some(format!("//127.0.0.1:{}/v1/scheduler/jobs", first.port).as_str())
    );
    let r = post(
        &format!("{}/iso8601", second.url),
        json!({"name": "ha-long", "command": "sleep 4", "schedule": "R1//PT1H", "cpus": 0.1, "mem": 32}),
    )
    .await;
    assert_eq!(r.status(), 204);
    eventually(
        "the run's task running",
        Duration::from_secs(20),
        || async {
            let r = runs(&first, "ha-long").await;
            r.first()
                .and_then(|r| r["tasks"].as_array().cloned())
                .filter(|t| t.iter().any(|t| t["state"] == "TASK_RUNNING"))
                .map(|_| ())
        },
    )
    .await;
    first.process.kill();
    // The standby leads after the leader's ZooKeeper session expires, picks up the run from the
    // state in ZooKeeper and sees it finish: one run, one task.
    eventually(
        "the run to succeed on the new leader",
        Duration::from_secs(40),
        || async { (finished_runs(&second, "ha-long", "success").await == 1).then_some(()) },
    )
    .await;
    let all = runs(&second, "ha-long").await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(
        all[0]["tasks"].as_array().map(|t| t.len()),
        Some(1),
        "{all:?}"
    );
}
