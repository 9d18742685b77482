//! The Mesos HTTP APIs of a real master, driven by the Mesos ecosystem's own clients from the venv
//! (`AGORA_TEST_PYTHON`): a pymesos and a mesoshttp framework run, kill, reconcile and tear down
//! command tasks on a real agent; avmesos-cli lists agents, frameworks and tasks of a cluster a
//! gRPC framework shares with a Mesos one; the scheduler endpoint answers Mesos's status codes
//! and frames its stream as RecordIO; a client built on Google's protobuf runtime subscribes,
//! launches and reads GET_STATE over `application/x-protobuf`; pymesos and mesoshttp find the leader through ZooKeeper as
//! they find Mesos's (`zk://…/<path>`), and follow it when it dies.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agora_proto::v1;
use serde_json::{json, Value};

use crate::harness::{
    agent_args, community_python, eventually, free_port, shell_task, Master, Process, TestFramework,
};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// An agent that runs root tasks (the Python clients' frameworks run as `root`).
fn agent(dir: &Path, name: &str, master: &str, resources: &str) -> Process {
    let mut args = agent_args(dir, name, master, free_port(), resources, "native");
    args.push("--allow-root-tasks".into());
    Process::spawn(name, &args, dir)
}

/// Runs a Python script of the community clients to its end (at most `within`): its exit
/// status, the JSON summary on its last stdout line, and all it printed.
async fn run_python(args: Vec<String>, within: Duration) -> (bool, Value, String) {
    let python = community_python();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg(within.as_secs().to_string())
            .arg(python)
            .args(args)
            .output()
    })
    .await
    .expect("join")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let all = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    (out.status.success(), summary, all)
}

fn mesos_cli(config: &Path, args: &[&str]) -> String {
    let out = Command::new(community_python())
        .args(["-m", "avmesos.cli.mesos-cli"])
        .args(args)
        .env("MESOS_CLI_CONFIG", config)
        .output()
        .expect("mesos-cli runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "mesos-cli {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn get_json(url: &str) -> Value {
    let r = reqwest::get(url).await.expect("GET");
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.expect("JSON")
}

fn states(summary: &Value, task: &str) -> Vec<String> {
    summary["states"][task]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What both community frameworks must have seen: RUNNING then the right terminal state for
/// each task, the decline filter kept, the kill, and reconciliation answers.
fn check_scenario(summary: &Value, all: &str) {
    assert_eq!(summary["finished"], true, "{all}");
    assert_eq!(summary["error"], Value::Null, "{all}");
    for (task, last) in [
        ("ok", "TASK_FINISHED"),
        ("fail", "TASK_FAILED"),
        ("long", "TASK_KILLED"),
    ] {
        let seen = states(summary, task);
        assert!(seen.contains(&"TASK_RUNNING".to_string()), "{task}: {all}");
        assert_eq!(seen.last().map(String::as_str), Some(last), "{task}: {all}");
    }
    let after = summary["offer_after_decline"]
        .as_f64()
        .expect("an offer after the decline");
    assert!(
        after >= 1.8,
        "offered again {after} s after a 2 s decline filter: {all}"
    );
    assert_eq!(
        summary["reconciled"]["ghost"],
        json!(["TASK_LOST"]),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pymesos_framework_runs_kills_reconciles_and_tears_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let _agent = agent(
        dir.path(),
        "agent-a",
        &master.address(),
        "cpus:2;mem:1024;ports:[31000-31010]",
    );
    let (ok, summary, all) = run_python(
        vec![
            script("pymesos_framework.py").display().to_string(),
            "--master".into(),
            master.address(),
            "--timeout".into(),
            "90".into(),
            // Longer than the listener keeps an idle connection (10 s).
            "--idle".into(),
            "12".into(),
        ],
        Duration::from_secs(120),
    )
    .await;
    assert!(ok, "{all}");
    check_scenario(&summary, &all);
    // pymesos read /version as numbers, and turned on what Mesos >= 1.0 has.
    assert_eq!(summary["version"], "1.11.0", "{all}");
    assert_eq!(summary["acked"].as_u64(), Some(9), "{all}");
    assert_eq!(
        summary["resource_types"],
        json!(["RANGES", "SCALAR"]),
        "{all}"
    );
    // Implicit reconciliation answered the running task with REASON_RECONCILIATION.
    assert!(
        summary["reconciled"]["long"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("TASK_RUNNING"))),
        "{all}"
    );
    // The teardown removed it; its tasks are in Mesos's task list with their states.
    let id = summary["framework_id"]
        .as_str()
        .expect("framework id")
        .to_string();
    let frameworks = get_json(&format!("{}/master/frameworks", master.url())).await;
    assert!(
        !frameworks["frameworks"]
            .as_array()
            .expect("frameworks")
            .iter()
            .any(|f| f["id"] == id.as_str()),
        "{frameworks}"
    );
    let tasks = get_json(&format!(
        "{}/master/tasks?framework_id={id}&limit=-1&order=asc",
        master.url()
    ))
    .await;
    let mut seen: Vec<(String, String)> = tasks["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap_or("").to_string(),
                t["statuses"][0]["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("fail".to_string(), "TASK_FAILED".to_string()),
            ("long".to_string(), "TASK_KILLED".to_string()),
            ("ok".to_string(), "TASK_FINISHED".to_string()),
        ],
        "{tasks}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mesoshttp_framework_runs_kills_reconciles_and_tears_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    // mesoshttp hands an event over when the next record's length arrives: heartbeats every
    // second keep its callbacks prompt.
    let master = Master::start(dir.path(), &["--framework-heartbeat", "1"]).await;
    let _agent = agent(dir.path(), "agent-a", &master.address(), "cpus:2;mem:1024");
    let (ok, summary, all) = run_python(
        vec![
            script("mesoshttp_framework.py").display().to_string(),
            "--master".into(),
            master.url(),
            "--timeout".into(),
            "90".into(),
        ],
        Duration::from_secs(120),
    )
    .await;
    assert!(ok, "{all}");
    check_scenario(&summary, &all);
    assert_eq!(
        summary["reconciled"]["ok"],
        json!(["TASK_FINISHED"]),
        "{all}"
    );
    assert_eq!(summary["stream_closed"], true, "{all}");
    assert_eq!(
        summary["master_info"]["pid"],
        format!("master@{}", master.address()),
        "{all}"
    );
    let id = summary["framework_id"]
        .as_str()
        .expect("framework id")
        .to_string();
    let state = get_json(&format!("{}/master/state", master.url())).await;
    assert!(
        !state["frameworks"]
            .as_array()
            .expect("frameworks")
            .iter()
            .any(|f| f["id"] == id.as_str()),
        "torn down: {state}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_and_a_mesos_framework_share_the_cluster_and_mesos_cli_reads_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let _agent = agent(dir.path(), "agent-a", &master.address(), "cpus:2;mem:1024");
    // A gRPC framework (Agora's own API) keeps a task running on the agent.
    let mut grpc = TestFramework::subscribe(
        &master.address(),
        TestFramework::info("grpc-beside", "*", 60.0),
    )
    .await;
    let offer = grpc.next_offer().await;
    grpc.launch(
        &offer,
        vec![shell_task("grpc-long", "sleep 300", "cpus:0.5;mem:64")],
    )
    .await
    .expect("launch");
    grpc.until_state("grpc-long", v1::TaskState::TaskRunning)
        .await;
    // It wants nothing more: no new offers, and the ones it holds go back.
    grpc.client
        .suppress(v1::SuppressRequest {
            header: Some(grpc.header.clone()),
            roles: vec![],
        })
        .await
        .expect("suppress");
    // (Offers it was sent while waiting for RUNNING are outstanding: decline them all.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held: Vec<String> = master.state().await["offers"]
        .as_array()
        .expect("offers")
        .iter()
        .filter(|o| o["framework_id"] == grpc.header.framework_id.as_str())
        .filter_map(|o| o["id"].as_str().map(str::to_string))
        .collect();
    if !held.is_empty() {
        grpc.client
            .decline(v1::DeclineRequest {
                header: Some(grpc.header.clone()),
                offer_ids: held,
                filters: Some(v1::Filters {
                    refuse_seconds: Some(3600.0),
                }),
            })
            .await
            .expect("decline");
    }
    // The Mesos framework is offered the rest of the same agent and runs its tasks beside it.
    let (ok, summary, all) = run_python(
        vec![
            script("pymesos_framework.py").display().to_string(),
            "--master".into(),
            master.address(),
        ],
        Duration::from_secs(120),
    )
    .await;
    assert!(ok, "{all}");
    check_scenario(&summary, &all);
    // Both drew on the one agent: DRF offered it to each.
    let state = get_json(&format!("{}/master/state", master.url())).await;
    let agent_id = state["slaves"][0]["id"]
        .as_str()
        .expect("agent id")
        .to_string();
    let grpc_fw = state["frameworks"]
        .as_array()
        .expect("frameworks")
        .iter()
        .find(|f| f["name"] == "grpc-beside")
        .expect("the gRPC framework")
        .clone();
    assert_eq!(grpc_fw["active"], true);
    assert_eq!(grpc_fw["tasks"][0]["id"], "grpc-long");
    assert_eq!(grpc_fw["tasks"][0]["slave_id"], agent_id.as_str());
    assert_eq!(grpc_fw["tasks"][0]["state"], "TASK_RUNNING");
    assert!(state["leader"]
        .as_str()
        .is_some_and(|l| l == format!("master@{}", master.address())));
    // avmesos-cli, configured with the master's address, reads the same cluster.
    let config = dir.path().join("mesos-cli.toml");
    std::fs::write(
        &config,
        format!("[master]\naddress = \"{}\"\n", master.address()),
    )
    .expect("config");
    let agents = mesos_cli(&config, &["agent", "list"]);
    assert!(
        agents.contains(&agent_id) && agents.contains("agent-a"),
        "{agents}"
    );
    let frameworks = mesos_cli(&config, &["framework", "list"]);
    assert!(
        frameworks.contains(&grpc.header.framework_id) && frameworks.contains("grpc-beside"),
        "{frameworks}"
    );
    let tasks = mesos_cli(&config, &["task", "list"]);
    assert!(
        tasks.contains("grpc-long") && tasks.contains("TASK_RUNNING"),
        "{tasks}"
    );
    let finished = mesos_cli(&config, &["task", "list", "--all"]);
    assert!(finished.contains("TASK_KILLED"), "{finished}");
    // The v1 operator API answers the same, in its own shapes.
    let client = reqwest::Client::new();
    let call = |kind: &str| {
        client
            .post(format!("{}/api/v1", master.url()))
            .header("content-type", "application/json")
            .body(json!({ "type": kind }).to_string())
            .send()
    };
    let s: Value = call("GET_STATE")
        .await
        .expect("GET_STATE")
        .json()
        .await
        .expect("json");
    assert_eq!(s["type"], "GET_STATE");
    assert_eq!(
        s["get_state"]["get_agents"]["agents"][0]["agent_info"]["id"]["value"],
        agent_id.as_str()
    );
    assert!(s["get_state"]["get_tasks"]["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .any(|t| t["task_id"]["value"] == "grpc-long" && t["state"] == "TASK_RUNNING"));
    let v: Value = call("GET_VERSION")
        .await
        .expect("GET_VERSION")
        .json()
        .await
        .expect("json");
    assert_eq!(v["get_version"]["version_info"]["version"], "1.11.0");
    let h: Value = call("GET_HEALTH")
        .await
        .expect("GET_HEALTH")
        .json()
        .await
        .expect("json");
    assert_eq!(h["get_health"]["healthy"], true);
    let bad = call("GET_FLAGS").await.expect("GET_FLAGS");
    assert_eq!(bad.status(), 400);
}

/// Reads RecordIO records off a streamed body until `n` are complete.
async fn records(resp: &mut reqwest::Response, buf: &mut Vec<u8>, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let len: usize = std::str::from_utf8(&buf[..nl])
                .expect("length is ASCII")
                .parse()
                .expect("length is decimal");
            if buf.len() < nl + 1 + len {
                break;
            }
            let record: Value =
                serde_json::from_slice(&buf[nl + 1..nl + 1 + len]).expect("a JSON record");
            buf.drain(..nl + 1 + len);
            out.push(record);
            if out.len() == n {
                return out;
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("a record within 10 s")
            .expect("the stream reads");
        match chunk {
            Some(c) => buf.extend_from_slice(&c),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scheduler_endpoint_answers_as_mesos_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let url = format!("{}/api/v1/scheduler", master.url());
    let client = reqwest::Client::new();
    let post = |body: Value, stream: Option<&str>| {
        let mut r = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(s) = stream {
            r = r.header("Mesos-Stream-Id", s);
        }
        r.send()
    };
    assert_eq!(client.get(&url).send().await.expect("GET").status(), 405);
    let no_type = client.post(&url).body("{}").send().await.expect("POST");
    assert_eq!(no_type.status(), 400);
    let text = client
        .post(&url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_eq!(text.status(), 415);
    let garbage = client
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("POST");
    assert_eq!(garbage.status(), 400);
    let subscribe = |id: Option<&str>| {
        let mut info = json!({"user": "nobody", "name": "raw", "failover_timeout": 3600});
        let mut call = json!({"type": "SUBSCRIBE"});
        if let Some(id) = id {
            info["id"] = json!({ "value": id });
            call["framework_id"] = json!({ "value": id });
        }
        call["subscribe"] = json!({ "framework_info": info });
        call
    };
    let html_only = client
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "text/html")
        .body(subscribe(None).to_string())
        .send()
        .await
        .expect("POST");
    assert_eq!(html_only.status(), 406);

    let mut first = post(subscribe(None), None).await.expect("SUBSCRIBE");
    assert_eq!(first.status(), 200);
    let stream_id = first.headers()["mesos-stream-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        stream_id.len() >= 32,
        "an unguessable stream id: {stream_id}"
    );
    assert!(
        first.content_length().is_none(),
        "the event stream is chunked"
    );
    let mut buf = Vec::new();
    let opening = records(&mut first, &mut buf, 2).await;
    assert_eq!(opening[0]["type"], "SUBSCRIBED", "{opening:?}");
    assert_eq!(opening[0]["subscribed"]["heartbeat_interval_seconds"], 15.0);
    assert_eq!(opening[1], json!({"type": "HEARTBEAT"}));
    let fid = opening[0]["subscribed"]["framework_id"]["value"]
        .as_str()
        .expect("framework id")
        .to_string();
    let revive = json!({"type": "REVIVE", "framework_id": {"value": fid}});
    assert_eq!(
        post(revive.clone(), None).await.expect("call").status(),
        400
    );
    assert_eq!(
        post(revive.clone(), Some("wrong"))
            .await
            .expect("call")
            .status(),
        400
    );
    let unknown = json!({"type": "REVIVE", "framework_id": {"value": "nobody-knows"}});
    assert_eq!(
        post(unknown, Some(&stream_id))
            .await
            .expect("call")
            .status(),
        400
    );
    let ok = post(revive.clone(), Some(&stream_id)).await.expect("call");
    assert_eq!(ok.status(), 202);
    assert!(ok.bytes().await.expect("body").is_empty());
    let kill_unknown = json!({"type": "KILL", "framework_id": {"value": fid},
                              "kill": {"task_id": {"value": "never-launched"}}});
    assert_eq!(
        post(kill_unknown, Some(&stream_id))
            .await
            .expect("call")
            .status(),
        202
    );
    // ... and the framework hears of that task as Mesos tells it: lost.
    let lost = loop {
        let r = records(&mut first, &mut buf, 1).await;
        if r.first().is_some_and(|e| e["type"] == "UPDATE") {
            break r[0].clone();
        }
    };
    assert_eq!(
        lost["update"]["status"]["task_id"]["value"],
        "never-launched"
    );
    assert_eq!(lost["update"]["status"]["state"], "TASK_LOST");
    assert!(lost["update"]["status"].get("uuid").is_none());

    // A second SUBSCRIBE with the id fails the first stream over: ERROR, then its end.
    let second = post(subscribe(Some(&fid)), None)
        .await
        .expect("re-SUBSCRIBE");
    assert_eq!(second.status(), 200);
    let second_id = second.headers()["mesos-stream-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_ne!(second_id, stream_id);
    let tail = loop {
        let r = records(&mut first, &mut buf, 1).await;
        match r.first() {
            Some(e) if e["type"] == "ERROR" => break r,
            Some(_) => continue,
            None => panic!("the old stream ended without an ERROR event"),
        }
    };
    assert!(tail[0]["error"]["message"].as_str().is_some());
    assert!(
        records(&mut first, &mut buf, 1).await.is_empty(),
        "the old stream ends after its ERROR"
    );
    assert_eq!(
        post(revive.clone(), Some(&stream_id))
            .await
            .expect("call")
            .status(),
        400,
        "the replaced stream id is refused"
    );
    // The scheduler goes away (failover timeout 3600 s): known, but not subscribed.
    drop(second);
    let forbidden = eventually(
        "the framework to be disconnected",
        Duration::from_secs(10),
        || {
            let r = post(revive.clone(), Some(&second_id));
            async move {
                let status = r.await.ok()?.status();
                (status == 403).then_some(status)
            }
        },
    )
    .await;
    assert_eq!(forbidden, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn pymesos_follows_the_leader_through_zookeeper_when_it_dies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zk = crate::ha::zk_url(&crate::ha::zk_servers(), "mesos");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut masters: Vec<Option<Process>> = ports
        .iter()
        .map(|&p| Some(crate::ha::start_master_with(dir.path(), &zk, p, 4.0)))
        .collect();
    let leader = eventually("a leader", Duration::from_secs(30), || async {
        crate::ha::leader_among(&ports).await
    })
    .await;
    // A standby sends Mesos frameworks to the leader: 307 to the same path.
    let standby = ports
        .iter()
        .find(|&&p| p != leader)
        .copied()
        .expect("a standby");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    // (A standby that has not yet read the election answers 503, as Mesos's does: wait for it.)
    let redirected = eventually(
        "a standby that knows the leader",
        Duration::from_secs(20),
        || async {
            let r = no_redirects
                .post(format!("http://127.0.0.1:{standby}/api/v1/scheduler"))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .expect("POST to a standby");
            (r.status() != 503).then_some(r)
        },
    )
    .await;
    assert_eq!(redirected.status(), 307);
    assert_eq!(
        redirected.headers()["location"],
        format!("//127.0.0.1:{leader}/api/v1/scheduler").as_str()
    );
    let _agent = agent(dir.path(), "agent-a", &zk, "cpus:2;mem:1024");
    let ready = dir.path().join("running");
    let args = vec![
        script("pymesos_framework.py").display().to_string(),
        // The URL a Mesos framework is given for Mesos's own masters: the leader is the lowest
        // `json.info_` child of the path itself.
        "--master".into(),
        zk.clone(),
        "--failover-file".into(),
        ready.display().to_string(),
        "--timeout".into(),
        "150".into(),
    ];
    let run = tokio::spawn(run_python(args, Duration::from_secs(180)));
    eventually("the task to run", Duration::from_secs(60), || {
        let ready = ready.clone();
        async move { ready.exists().then_some(()) }
    })
    .await;
    let index = ports
        .iter()
        .position(|&p| p == leader)
        .expect("leader index");
    if let Some(mut m) = masters[index].take() {
        m.kill();
    }
    let (ok, summary, all) = run.await.expect("join");
    assert!(ok, "{all}");
    assert_eq!(summary["finished"], true, "{all}");
    assert!(
        summary["reregistrations"].as_u64().unwrap_or(0) >= 1,
        "{all}"
    );
    assert_eq!(
        states(&summary, "long").last().map(String::as_str),
        Some("TASK_KILLED"),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_protobuf_framework_launches_and_reads_the_state_over_protobuf() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let _agent = agent(dir.path(), "agent-a", &master.address(), "cpus:2;mem:1024");
    let (ok, summary, all) = run_python(
        vec![
            script("mesos_protobuf.py").display().to_string(),
            "--master".into(),
            master.address(),
            "--timeout".into(),
            "60".into(),
        ],
        Duration::from_secs(90),
    )
    .await;
    assert!(ok, "{all}");
    assert_eq!(summary["content_type"], "application/x-protobuf", "{all}");
    // SUBSCRIBED, then HEARTBEAT at once, then the offers.
    assert_eq!(summary["events"][0], 1, "{all}");
    assert_eq!(summary["events"][1], 8, "{all}");
    assert!(
        summary["events"]
            .as_array()
            .is_some_and(|e| e.contains(&json!(2))),
        "{all}"
    );
    let port: u64 = master
        .address()
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("port");
    assert_eq!(summary["master_port"].as_u64(), Some(port), "{all}");
    assert_eq!(
        summary["master_pid"],
        format!("master@{}", master.address()),
        "{all}"
    );
    assert_eq!(summary["heartbeat"].as_f64(), Some(15.0), "{all}");
    assert_eq!(summary["offer_cpus"].as_f64(), Some(2.0), "{all}");
    // STARTING (0), RUNNING (1), FINISHED (2), each acknowledged with its uuid.
    assert_eq!(summary["states"], json!([0, 1, 2]), "{all}");
    assert_eq!(summary["acked"], 3, "{all}");
    assert_eq!(
        summary["health"],
        json!({"type": 1, "healthy": true}),
        "{all}"
    );
    assert_eq!(summary["state_type"], 8, "{all}");
    let id = summary["framework_id"].as_str().expect("framework id");
    let tasks = summary["tasks"].as_array().expect("tasks");
    assert!(
        tasks
            .iter()
            .any(|t| t["id"] == "pb-task" && t["state"] == 2 && t["framework_id"] == id),
        "{all}"
    );
    assert!(
        summary["frameworks"].as_array().is_some_and(|f| f
            .iter()
            .any(|f| f["id"] == id && f["name"] == "protobuf-test" && f["roles"] == json!(["pb"]))),
        "{all}"
    );
    let agents = summary["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), 1, "{all}");
    assert_eq!(agents[0]["cpus"].as_f64(), Some(2.0), "{all}");
    assert_eq!(agents[0]["active"], true, "{all}");
    assert_eq!(agents[0]["id"], tasks[0]["agent_id"], "{all}");
}

/// Deletes a ZooKeeper tree (with the venv's kazoo), so that a test owning a fixed path starts
/// from nothing.
fn delete_zk_tree(servers: &str, path: &str) {
    let code = format!(
        "from kazoo.client import KazooClient\n\
         z = KazooClient({servers:?})\n\
         z.start(10)\n\
         z.delete({path:?}, recursive=True) if z.exists({path:?}) else None\n\
         z.stop()\n"
    );
    let out = Command::new(community_python())
        .args(["-c", &code])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "deleting {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Lists a ZooKeeper node's children (with the venv's kazoo).
fn zk_children(servers: &str, path: &str) -> Vec<String> {
    let code = format!(
        "import json\n\
         from kazoo.client import KazooClient\n\
         z = KazooClient({servers:?})\n\
         z.start(10)\n\
         print(json.dumps(sorted(z.get_children({path:?}))))\n\
         z.stop()\n"
    );
    let out = Command::new(community_python())
        .args(["-c", &code])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "listing {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON list")
}

#[tokio::test(flavor = "multi_thread")]
async fn mesoshttp_finds_the_leader_through_zookeeper_and_follows_it_when_it_dies() {
    // mesoshttp (and avmesos, the same code) lists the zk:// URL's path but reads the nodes it
    // found under `/mesos/`: it only works with Mesos's usual `--zk zk://…/mesos`, so this test
    // owns that path.
    let servers = crate::ha::zk_servers();
    delete_zk_tree(&servers, "/mesos");
    let zk = format!("zk://{servers}/mesos");
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    // mesoshttp hands an event over when the next record's length arrives: heartbeats every
    // second keep its callbacks prompt.
    let mut masters: Vec<Option<Process>> = ports
        .iter()
        .map(|&p| {
            Some(crate::ha::start_master_with_args(
                dir.path(),
                &zk,
                p,
                4.0,
                &["--framework-heartbeat", "1"],
            ))
        })
        .collect();
    let leader = eventually("a leader", Duration::from_secs(30), || async {
        crate::ha::leader_among(&ports).await
    })
    .await;
    // Only the leader is where Mesos's masters publish themselves; Agora's own election stays
    // under `masters`.
    let published = eventually("the leader's Mesos node", Duration::from_secs(10), || {
        let servers = servers.clone();
        async move {
            let children = zk_children(&servers, "/mesos");
            let info: Vec<String> = children
                .iter()
                .filter(|c| c.starts_with("json.info_"))
                .cloned()
                .collect();
            (info.len() == 1 && children.contains(&"masters".to_string())).then_some(info)
        }
    })
    .await;
    assert_eq!(published.len(), 1, "{published:?}");
    let _agent = agent(dir.path(), "agent-a", &zk, "cpus:2;mem:1024");
    let ready = dir.path().join("running");
    let args = vec![
        script("mesoshttp_framework.py").display().to_string(),
        "--master".into(),
        zk.clone(),
        "--failover-file".into(),
        ready.display().to_string(),
        "--timeout".into(),
        "150".into(),
    ];
    let run = tokio::spawn(run_python(args, Duration::from_secs(180)));
    eventually("the task to run", Duration::from_secs(60), || {
        let ready = ready.clone();
        async move { ready.exists().then_some(()) }
    })
    .await;
    let index = ports
        .iter()
        .position(|&p| p == leader)
        .expect("leader index");
    if let Some(mut m) = masters[index].take() {
        m.kill();
    }
    let (ok, summary, all) = run.await.expect("join");
    assert!(ok, "{all}");
    assert_eq!(summary["finished"], true, "{all}");
    assert!(summary["subscriptions"].as_u64().unwrap_or(0) >= 2, "{all}");
    let masters_seen: Vec<String> = summary["masters"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        masters_seen.first().map(String::as_str),
        Some(format!("http://127.0.0.1:{leader}").as_str()),
        "{all}"
    );
    let last = masters_seen.last().cloned().unwrap_or_default();
    assert!(
        last != format!("http://127.0.0.1:{leader}")
            && ports.iter().any(|p| last.ends_with(&format!(":{p}"))),
        "subscribed last to {last}: {all}"
    );
    assert_eq!(
        states(&summary, "long").last().map(String::as_str),
        Some("TASK_KILLED"),
        "{all}"
    );
    drop(masters);
    delete_zk_tree(&servers, "/mesos");
}

#[tokio::test(flavor = "multi_thread")]
async fn mesos_frameworks_authenticate_and_operator_reads_need_the_api_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let creds = dir.path().join("credentials.json");
    std::fs::write(
        &creds,
        r#"{"credentials":[{"principal":"pym","secret":"s3cret"}]}"#,
    )
    .expect("credentials");
    let token_file = dir.path().join("api-token");
    let token = "agora-e2e-mesos-token";
    std::fs::write(&token_file, format!("{token}\n")).expect("token");
    let (creds_arg, token_arg) = (
        creds.display().to_string(),
        token_file.display().to_string(),
    );
    let master = Master::start(
        dir.path(),
        &["--credentials", &creds_arg, "--api-token-file", &token_arg],
    )
    .await;
    let _agent = agent(dir.path(), "agent-a", &master.address(), "cpus:2;mem:1024");
    let pymesos = |secret: &str, timeout: &str| {
        vec![
            script("pymesos_framework.py").display().to_string(),
            "--master".into(),
            master.address(),
            "--principal".into(),
            "pym".into(),
            "--secret".into(),
            secret.into(),
            "--timeout".into(),
            timeout.into(),
        ]
    };
    // A wrong secret: SUBSCRIBE is refused with 401 and pymesos's driver gives up.
    let (ok, _, all) = run_python(pymesos("wrong", "15"), Duration::from_secs(60)).await;
    assert!(!ok, "{all}");
    assert!(all.contains("401"), "{all}");
    // The right one: the whole scenario, every call authenticated (no API token needed).
    let (ok, summary, all) = run_python(pymesos("s3cret", "60"), Duration::from_secs(120)).await;
    assert!(ok, "{all}");
    check_scenario(&summary, &all);
    // Operator reads need the API token; the version and the redirect do not.
    let client = reqwest::Client::new();
    for path in ["/master/state", "/master/slaves", "/tasks"] {
        let url = format!("{}{path}", master.url());
        assert_eq!(
            client.get(&url).send().await.expect("GET").status(),
            401,
            "{path}"
        );
        let with = client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .expect("GET");
        assert_eq!(with.status(), 200, "{path}");
    }
    let health = client
        .post(format!("{}/api/v1", master.url()))
        .header("content-type", "application/json")
        .body(r#"{"type":"GET_HEALTH"}"#)
        .send()
        .await
        .expect("POST");
    assert_eq!(health.status(), 401);
    let version = get_json(&format!("{}/version", master.url())).await;
    assert_eq!(version["version"], "1.11.0");
}

/// A pymesos framework changes its name, roles, failover timeout, labels and capabilities with
/// UPDATE_FRAMEWORK while subscribed (sent over pymesos's own HTTP session: pymesos 0.3 has no
/// method for it); `/master/frameworks` and `mesos-cli framework list` show the change, offers
/// come for the new role, and updates of fixed fields are refused with 400. Before that, one
/// ACCEPT launches a task and one asking for a SET resource: that one alone gets TASK_ERROR.
#[tokio::test(flavor = "multi_thread")]
async fn a_pymesos_framework_updates_its_framework_info_while_subscribed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let _agent = agent(dir.path(), "agent-a", &master.address(), "cpus:2;mem:1024");
    let updated = dir.path().join("updated");
    let done = dir.path().join("done");
    let python = tokio::spawn(run_python(
        vec![
            script("pymesos_update_framework.py").display().to_string(),
            "--master".into(),
            master.address(),
            "--updated-file".into(),
            updated.display().to_string(),
            "--done-file".into(),
            done.display().to_string(),
            "--timeout".into(),
            "90".into(),
        ],
        Duration::from_secs(120),
    ));
    let fw_id = eventually("the updated framework", Duration::from_secs(100), || {
        let updated = updated.clone();
        async move { std::fs::read_to_string(&updated).ok() }
    })
    .await;
    let frameworks = get_json(&format!("{}/master/frameworks", master.url())).await;
    let fw = frameworks["frameworks"]
        .as_array()
        .expect("frameworks")
        .iter()
        .find(|f| f["id"] == fw_id.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(fw["name"], "pymesos-after", "{frameworks}");
    assert_eq!(fw["roles"], json!(["analytics"]), "{frameworks}");
    assert_eq!(fw["role"], "analytics", "{frameworks}");
    assert_eq!(fw["failover_timeout"], 120.0, "{frameworks}");
    assert_eq!(fw["user"], "root", "{frameworks}");
    assert_eq!(fw["active"], true, "{frameworks}");
    assert!(
        fw["capabilities"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("PARTITION_AWARE"))),
        "{frameworks}"
    );
    assert_eq!(
        fw["labels"],
        json!([{"key": "team", "value": "data"}]),
        "{frameworks}"
    );
    // The v1 operator API and avmesos-cli read the same.
    let state: Value = reqwest::Client::new()
        .post(format!("{}/api/v1", master.url()))
        .header("content-type", "application/json")
        .body(r#"{"type":"GET_FRAMEWORKS"}"#)
        .send()
        .await
        .expect("GET_FRAMEWORKS")
        .json()
        .await
        .expect("json");
    let info = &state["get_frameworks"]["frameworks"][0]["framework_info"];
    assert_eq!(info["name"], "pymesos-after", "{state}");
    assert_eq!(info["roles"], json!(["analytics"]), "{state}");
    let config = dir.path().join("mesos-cli.toml");
    std::fs::write(
        &config,
        format!("[master]\naddress = \"{}\"\n", master.address()),
    )
    .expect("config");
    let listed = mesos_cli(&config, &["framework", "list"]);
    assert!(
        listed.contains(&fw_id)
            && listed.contains("pymesos-after")
            && !listed.contains("pymesos-before"),
        "{listed}"
    );
    // Without the stream id, the call is refused as every non-SUBSCRIBE call is.
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/scheduler", master.url()))
        .header("content-type", "application/json")
        .body(
            json!({"type": "UPDATE_FRAMEWORK", "framework_id": {"value": fw_id},
                   "update_framework": {"framework_info": {"id": {"value": fw_id}, "user": "root", "name": "x"}}})
            .to_string(),
        )
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 400);
    std::fs::write(&done, "").expect("done");
    let (ok, summary, all) = python.await.expect("join");
    assert!(ok, "{all}");
    assert_eq!(summary["update_answer"], json!({}), "{all}");
    assert_eq!(summary["bad_user_status"], 400, "{all}");
    assert_eq!(summary["other_id_status"], 400, "{all}");
    // The task asking for a SET resource was refused alone, naming it; its neighbour ran.
    assert_eq!(
        summary["states"]["with-set"],
        json!(["TASK_ERROR"]),
        "{all}"
    );
    assert_eq!(summary["set_reason"], "REASON_TASK_INVALID", "{all}");
    assert!(
        summary["set_message"]
            .as_str()
            .is_some_and(|m| m.contains("'gpu_ids' is a SET resource")),
        "{all}"
    );
    assert!(
        summary["states"]["plain"]
            .as_array()
            .is_some_and(|s| s.contains(&json!("TASK_RUNNING"))),
        "{all}"
    );
    // Offered under `*` first, then (the held offers rescinded) only under the new role.
    assert_eq!(summary["offer_roles"], json!(["*", "analytics"]), "{all}");
}
