//! The scheduler SDK against a real master and agent: the example framework, failover across a
//! master restart, acknowledgements that stop the agent's retransmissions, and UpdateFramework.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use agora_proto::v1::TaskState;
use agora_sdk::{carve_many, shell_task, Event, Framework, SdkError, TaskNeeds};

use crate::harness::{Agent, Master, Process};

fn example(name: &str) -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_agora"));
    bin.parent()
        .expect("target dir")
        .join("examples")
        .join(name)
}

async fn next_matching<T>(
    fw: &mut Framework,
    what: &str,
    mut pick: impl FnMut(Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, fw.next_event()).await {
            Ok(Some(e)) => {
                if let Some(v) = pick(e) {
                    return v;
                }
            }
            Ok(None) => panic!("the framework stopped while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

async fn launch_one(fw: &mut Framework, id: &str, cmd: &str) {
    let offer = next_matching(fw, "an offer", |e| match e {
        Event::Offers(o) => o.into_iter().next(),
        _ => None,
    })
    .await;
    let needs = TaskNeeds::parse("cpus:0.1;mem:32", 0).expect("needs");
    let carved = carve_many(&offer, &needs, 1);
    fw.launch(&offer.id, vec![shell_task(id, cmd, &carved[0])])
        .await
        .expect("launch");
}

#[tokio::test(flavor = "multi_thread")]
async fn hello_framework_runs_its_tasks_to_completion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let _agent = Agent::start(dir.path(), "agent-a", &master.address(), "cpus:1;mem:256");
    let out = tokio::task::spawn_blocking({
        let address = master.address();
        move || {
            Command::new(example("hello_framework"))
                .args(["--master", &address, "--tasks", "3", "--cmd", "echo hi"])
                .output()
        }
    })
    .await
    .expect("join")
    .expect("the example runs (cargo test builds examples)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all 3 tasks finished"), "{stdout}");
    assert_eq!(stdout.matches("TASK_FINISHED").count(), 3, "{stdout}");
    // It tore itself down: the master has no framework left.
    master
        .state_where("the framework gone", Duration::from_secs(10), |s| {
            s["frameworks"].as_array().is_some_and(|f| f.is_empty())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sdk_fails_over_across_a_master_restart_and_keeps_its_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut master = Master::start(dir.path(), &[]).await;
    let port = master.port;
    let _agent = Agent::start(dir.path(), "agent-a", &master.address(), "cpus:1;mem:256");
    let mut fw = Framework::builder(&master.address(), "sdk-failover")
        .failover_timeout(Duration::from_secs(600))
        .connect()
        .expect("connect");
    let id = next_matching(&mut fw, "subscribed", |e| match e {
        Event::Subscribed { framework_id, .. } => Some(framework_id),
        _ => None,
    })
    .await;
    launch_one(&mut fw, "keeps-running", "sleep 120").await;
    next_matching(&mut fw, "running", |e| match e {
        Event::Update(s) if s.state() == TaskState::TaskRunning => Some(()),
        _ => None,
    })
    .await;
    master.process.kill();
    next_matching(&mut fw, "disconnected", |e| match e {
        Event::Disconnected(_) => Some(()),
        _ => None,
    })
    .await;
    let _master = Master::start_on(dir.path(), port, &[]).await;
    let (again, resubscribed) = next_matching(&mut fw, "subscribed again", |e| match e {
        Event::Subscribed {
            framework_id,
            resubscribed,
            ..
        } => Some((framework_id, resubscribed)),
        _ => None,
    })
    .await;
    assert_eq!(again, id);
    assert!(resubscribed);
    // The agent re-registers its task with the new master; reconciliation finds it running.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        fw.reconcile(&[]).await.expect("reconcile");
        let found = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match fw.next_event().await {
                    Some(Event::Update(s)) if s.task_id == "keeps-running" => return s.state(),
                    Some(_) => continue,
                    None => return TaskState::Unspecified,
                }
            }
        })
        .await;
        if found == Ok(TaskState::TaskRunning) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task was not reconciled"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledgements_stop_the_agents_retransmissions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let agent_port = crate::harness::free_port();
    let args: Vec<String> = [
        "agent",
        "--insecure",
        "--master",
        &master.address(),
        "--ip",
        "127.0.0.1",
        "--port",
        &agent_port.to_string(),
        "--work-dir",
        &dir.path().join("agent").display().to_string(),
        "--resources",
        "cpus:1;mem:256",
        "--status-retry-initial",
        "0.5",
        "--dns-port",
        "0",
        "--mesh=false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _agent = Process::spawn("agent", &args, dir.path());
    let mut fw = Framework::builder(&master.address(), "manual-acks")
        .manual_acknowledgements()
        .connect()
        .expect("connect");
    launch_one(&mut fw, "acked", "sleep 60").await;
    // Updates of a task are delivered one at a time, each after the previous one is
    // acknowledged (as Mesos does): acknowledge the earlier ones, hold back TASK_RUNNING.
    let mut running = Vec::new();
    while running.len() < 2 {
        let s = next_matching(&mut fw, "an update", |e| match e {
            Event::Update(s) if s.task_id == "acked" => Some(s),
            _ => None,
        })
        .await;
        if s.state() == TaskState::TaskRunning {
            running.push(s);
        } else {
            fw.acknowledge(&s).await.expect("acknowledge");
        }
    }
    // Not acknowledged: the agent sent the same update again.
    let again = running.pop().expect("resent");
    assert_eq!(again.uuid, running[0].uuid);
    fw.acknowledge(&again).await.expect("acknowledge");
    // Acknowledged: no more copies arrive.
    let quiet = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match fw.next_event().await {
                Some(Event::Update(s)) if s.task_id == "acked" => return s,
                Some(_) => continue,
                None => std::future::pending::<()>().await,
            }
        }
    })
    .await;
    assert!(
        quiet.is_err(),
        "still resent after the acknowledgement: {quiet:?}"
    );
}

/// The framework's entry in the master's `/state`.
fn state_framework<'a>(state: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    state["frameworks"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["id"] == id))
        .unwrap_or(&serde_json::Value::Null)
}

/// An SDK framework subscribed in role `alpha` moves to role `beta` with `update_framework`
/// (gRPC `UpdateFramework`): the offer it holds is rescinded, offers come for `beta`, `/state` and
/// `/master/frameworks` show the new name and role; a changed `user` is refused naming the field
/// and changes nothing; suppressing `beta` the same way shows in `/state`; after a master restart
/// the SDK re-subscribes with the updated info, not the builder's.
#[tokio::test(flavor = "multi_thread")]
async fn the_sdk_updates_its_framework_info_and_gets_offers_for_its_new_role() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut master = Master::start(dir.path(), &[]).await;
    let port = master.port;
    let _agent = Agent::start(dir.path(), "agent-a", &master.address(), "cpus:1;mem:256");
    let mut fw = Framework::builder(&master.address(), "sdk-before")
        .role("alpha")
        .failover_timeout(Duration::from_secs(600))
        .connect()
        .expect("connect");
    let id = next_matching(&mut fw, "subscribed", |e| match e {
        Event::Subscribed { framework_id, .. } => Some(framework_id),
        _ => None,
    })
    .await;
    let held = next_matching(&mut fw, "an offer for alpha", |e| match e {
        Event::Offers(o) => o.into_iter().next(),
        _ => None,
    })
    .await;
    assert_eq!(held.allocation_role, "alpha");

    // Refused: the user is fixed. Nothing changes.
    let mut info = fw.info();
    assert_eq!(info.id, id);
    info.user = "someone-else".into();
    info.name = "never".into();
    match fw.update_framework(info, &[]).await {
        Err(SdkError::Rpc(status)) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert!(
                status.message().contains("framework_info.user"),
                "{status:?}"
            );
        }
        other => panic!("a changed user was not refused: {other:?}"),
    }
    let state = master.state().await;
    assert_eq!(
        state_framework(&state, &id)["name"],
        "sdk-before",
        "{state}"
    );

    // Role alpha → beta, with a new name and a label.
    let mut info = fw.info();
    info.name = "sdk-after".into();
    info.roles = vec!["beta".into()];
    info.labels.insert("team".into(), "data".into());
    fw.update_framework(info, &[])
        .await
        .expect("update_framework");
    let rescinded = next_matching(&mut fw, "the held offer rescinded", |e| match e {
        Event::Rescind { offer_id } => Some(offer_id),
        _ => None,
    })
    .await;
    assert_eq!(rescinded, held.id);
    let offer = next_matching(&mut fw, "an offer for beta", |e| match e {
        Event::Offers(o) => o.into_iter().next(),
        _ => None,
    })
    .await;
    assert_eq!(offer.allocation_role, "beta");
    let state = master.state().await;
    let entry = state_framework(&state, &id);
    assert_eq!(entry["name"], "sdk-after", "{state}");
    assert_eq!(entry["roles"], serde_json::json!(["beta"]), "{state}");
    let frameworks: serde_json::Value = reqwest::get(format!("{}/master/frameworks", master.url()))
        .await
        .expect("GET /master/frameworks")
        .json()
        .await
        .expect("json");
    let listed = frameworks["frameworks"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["id"] == id.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(listed["name"], "sdk-after", "{frameworks}");
    assert_eq!(listed["role"], "beta", "{frameworks}");
    assert_eq!(
        listed["labels"],
        serde_json::json!([{"key": "team", "value": "data"}]),
        "{frameworks}"
    );
    fw.launch(
        &offer.id,
        vec![shell_task(
            "in-beta",
            "sleep 120",
            &carve_many(
                &offer,
                &TaskNeeds::parse("cpus:0.1;mem:32", 0).expect("needs"),
                1,
            )[0],
        )],
    )
    .await
    .expect("launch in beta");
    next_matching(&mut fw, "running", |e| match e {
        Event::Update(s) if s.task_id == "in-beta" && s.state() == TaskState::TaskRunning => {
            Some(())
        }
        _ => None,
    })
    .await;

    // Suppressed through the same call: the suppressed set is replaced.
    fw.update_framework(fw.info(), &["beta"])
        .await
        .expect("suppress beta");
    master
        .state_where("beta suppressed", Duration::from_secs(10), |s| {
            state_framework(s, &id)["suppressed_roles"] == serde_json::json!(["beta"])
        })
        .await;

    // The driver re-subscribes with the updated info after the master restarts.
    master.process.kill();
    next_matching(&mut fw, "disconnected", |e| match e {
        Event::Disconnected(_) => Some(()),
        _ => None,
    })
    .await;
    let master = Master::start_on(dir.path(), port, &[]).await;
    let again = next_matching(&mut fw, "subscribed again", |e| match e {
        Event::Subscribed { framework_id, .. } => Some(framework_id),
        _ => None,
    })
    .await;
    assert_eq!(again, id);
    let state = master
        .state_where("the framework back", Duration::from_secs(10), |s| {
            state_framework(s, &id)["connected"] == true
        })
        .await;
    let entry = state_framework(&state, &id);
    assert_eq!(entry["name"], "sdk-after", "{state}");
    assert_eq!(entry["roles"], serde_json::json!(["beta"]), "{state}");
    assert_eq!(
        entry["suppressed_roles"],
        serde_json::json!(["beta"]),
        "{state}"
    );
}
