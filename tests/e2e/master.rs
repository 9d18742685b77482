//! The master end to end: a real master and real agents (native containerizer, real processes) on
//! loopback, driven by a framework written against the gRPC contract and by `/state`.

use std::time::Duration;

use agora_proto::v1::{self, TaskState};

use crate::harness::{eventually, shell_task, task_state, Agent, Master, TestFramework};

const SMALL: &str = "cpus:0.1;mem:32";

#[tokio::test(flavor = "multi_thread")]
async fn agent_registration_is_visible_in_state_with_plain_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let _agent = Agent::start(
        dir.path(),
        "agent-a",
        &master.address(),
        "cpus:2;mem:1024;disk:512;ports:[31000-31009]",
    );
    let state = master
        .state_where("the agent in /state", Duration::from_secs(20), |s| {
            s["agents"].as_array().is_some_and(|a| a.len() == 1)
        })
        .await;
    let agent = &state["agents"][0];
    assert_eq!(agent["hostname"], "agent-a");
    assert_eq!(agent["active"], true);
    assert_eq!(agent["resources"]["cpus"], 2.0);
    assert_eq!(agent["resources"]["mem"], 1024.0);
    assert_eq!(agent["resources"]["ports"], "[31000-31009]");
    assert_eq!(state["leader"], master.address());
    let metrics = reqwest::get(format!("{}/metrics", master.url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("agora_master_agents{state=\"active\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agora_master_api_request_seconds")
            && metrics.contains("route=\"/state\""),
        "{metrics}"
    );
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!("{}/redirect", master.url()))
        .send()
        .await
        .expect("GET /redirect");
    assert_eq!(redirect.status(), 307);
}

#[tokio::test(flavor = "multi_thread")]
async fn offer_accept_launch_runs_a_real_process_and_updates_are_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let _agent = Agent::start(dir.path(), "agent-a", &master.address(), "cpus:2;mem:1024");
    let mut fw =
        TestFramework::subscribe(&master.address(), TestFramework::info("t", "web", 0.0)).await;
    let offer = fw.next_offer().await;
    fw.launch(
        &offer,
        vec![shell_task("hello", "echo hello-from-agora", SMALL)],
    )
    .await
    .expect("accept");
    fw.until_state("hello", TaskState::TaskRunning).await;
    let done = fw.until_state("hello", TaskState::TaskFinished).await;
    assert_eq!(done.exit_code, Some(0));
    let state = master
        .state_where(
            "the task completed in /state",
            Duration::from_secs(10),
            |s| task_state(s, "hello").as_deref() == Some("TASK_FINISHED"),
        )
        .await;
    assert!(state["tasks"].as_array().is_some_and(|t| t.is_empty()));
    // Resources came back: nothing is in use on the agent.
    master
        .state_where(
            "the agent's resources freed",
            Duration::from_secs(10),
            |s| s["agents"][0]["used_resources"] == serde_json::json!({}),
        )
        .await;
    // The framework acknowledged the updates: their round trips are in the metrics.
    let url = format!("{}/metrics", master.url());
    eventually(
        "status-update round trips in /metrics",
        Duration::from_secs(10),
        || {
            let url = url.clone();
            async move {
                let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
                let count: f64 = text
                    .lines()
                    .find(|l| l.starts_with("agora_master_status_update_round_trip_seconds_count"))?
                    .split_whitespace()
                    .last()?
                    .parse()
                    .ok()?;
                (count >= 2.0).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_accepts_are_refused_with_clear_errors_and_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let _agent = Agent::start(dir.path(), "agent-a", &master.address(), "cpus:1;mem:256");
    let mut fw =
        TestFramework::subscribe(&master.address(), TestFramework::info("t", "web", 0.0)).await;
    let offer = fw.next_offer().await;

    // An offer id that does not exist: the call fails naming it, the task is dropped.
    let mut bogus = offer.clone();
    bogus.id = "no-such-offer".into();
    let err = fw
        .launch(&bogus, vec![shell_task("a", "true", SMALL)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("no-such-offer"), "{}", err.message());
    let st = fw.next_update("a", Duration::from_secs(5)).await;
    assert_eq!(st.state, TaskState::TaskDropped as i32);

    // Over-committed: asks for more cpus than offered. TASK_ERROR names the field.
    fw.launch(&offer, vec![shell_task("b", "true", "cpus:4;mem:32")])
        .await
        .expect("the call itself is valid");
    let st = fw.next_update("b", Duration::from_secs(5)).await;
    assert_eq!(st.state, TaskState::TaskError as i32);
    assert!(st.message.contains("resources"), "{}", st.message);
    assert!(st.message.contains("over-commits"), "{}", st.message);

    // The offer was used up by that call; its resources come back in a new offer.
    let again = fw.next_offer().await;
    assert_ne!(again.id, offer.id);
    let used_again = fw.launch(&offer, vec![]).await.unwrap_err();
    assert!(
        used_again.message().contains("not outstanding"),
        "{}",
        used_again.message()
    );

    // A stale stream id is refused.
    let mut stale = fw.header.clone();
    stale.stream_id = "stale".into();
    let err = fw
        .client
        .revive(v1::ReviveRequest {
            header: Some(stale),
            roles: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    // Killing an unknown task names it.
    let err = fw
        .client
        .kill(v1::KillRequest {
            header: Some(fw.header.clone()),
            task_id: "ghost".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("ghost"));
}

#[tokio::test(flavor = "multi_thread")]
async fn decline_with_a_long_filter_stops_offers_until_revive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let _agent = Agent::start(dir.path(), "agent-a", &master.address(), "cpus:1;mem:256");
    let mut fw =
        TestFramework::subscribe(&master.address(), TestFramework::info("t", "web", 0.0)).await;
    let offer = fw.next_offer().await;
    fw.client
        .decline(v1::DeclineRequest {
            header: Some(fw.header.clone()),
            offer_ids: vec![offer.id.clone()],
            filters: Some(v1::Filters {
                refuse_seconds: Some(3600.0),
            }),
        })
        .await
        .expect("decline");
    // Ten allocation cycles pass with no offer.
    let quiet = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            if let Some(v1::event::Event::Offers(_)) = fw.events.recv().await.and_then(|e| e.event)
            {
                return;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "an offer arrived despite the filter");
    fw.client
        .revive(v1::ReviveRequest {
            header: Some(fw.header.clone()),
            roles: vec![],
        })
        .await
        .expect("revive");
    let again = fw.next_offer().await;
    assert_eq!(again.agent_id, offer.agent_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn unanswered_offers_are_rescinded_after_the_offer_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &["--offer-timeout", "0.5"]).await;
    let _agent = Agent::start(dir.path(), "agent-a", &master.address(), "cpus:1;mem:256");
    let mut fw =
        TestFramework::subscribe(&master.address(), TestFramework::info("t", "web", 0.0)).await;
    let offer = fw.next_offer().await;
    let rescinded = fw
        .next("a rescind", Duration::from_secs(10), |e| match &e.event {
            Some(v1::event::Event::Rescind(r)) => Some(r.offer_id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(rescinded, offer.id);
    let err = fw
        .launch(&offer, vec![shell_task("late", "true", SMALL)])
        .await
        .unwrap_err();
    assert!(
        err.message().contains("not outstanding"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_agent_becomes_unreachable_and_reconciles_when_it_thaws() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &["--agent-timeout", "1.5"]).await;
    let agent = Agent::start(dir.path(), "agent-a", &master.address(), "cpus:1;mem:256");
    let mut fw =
        TestFramework::subscribe(&master.address(), TestFramework::info("t", "web", 3600.0)).await;
    let offer = fw.next_offer().await;
    fw.launch(&offer, vec![shell_task("long", "sleep 120", SMALL)])
        .await
        .expect("accept");
    fw.until_state("long", TaskState::TaskRunning).await;
    agent.process.freeze();
    let st = fw.until_state("long", TaskState::TaskUnreachable).await;
    assert_eq!(st.reason, v1::Reason::AgentUnreachable as i32);
    master
        .state_where("the agent inactive", Duration::from_secs(5), |s| {
            s["agents"][0]["active"] == false
        })
        .await;
    agent.process.signal("CONT");
    master
        .state_where(
            "the agent back with its task running",
            Duration::from_secs(20),
            |s| {
                s["agents"][0]["active"] == true
                    && task_state(s, "long").as_deref() == Some("TASK_RUNNING")
            },
        )
        .await;
    // Reconciliation, as partition-aware frameworks do, says it is running again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        fw.client
            .reconcile(v1::ReconcileRequest {
                header: Some(fw.header.clone()),
                tasks: vec![v1::reconcile_request::TaskRef {
                    task_id: "long".into(),
                    agent_id: String::new(),
                }],
            })
            .await
            .expect("reconcile");
        let answer = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match fw.events.recv().await.and_then(|e| e.event) {
                    Some(v1::event::Event::Update(u)) => {
                        if let Some(st) = u.status.filter(|s| s.task_id == "long") {
                            return st.state;
                        }
                    }
                    Some(_) => continue,
                    None => return 0,
                }
            }
        })
        .await;
        if answer == Ok(TaskState::TaskRunning as i32) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reconciliation never said TASK_RUNNING (last: {answer:?})"
        );
    }
    // The task was never restarted: it is still the one process.
    fw.client
        .kill(v1::KillRequest {
            header: Some(fw.header.clone()),
            task_id: "long".into(),
            ..Default::default()
        })
        .await
        .expect("kill");
    fw.until_state("long", TaskState::TaskKilled).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn framework_failover_within_its_timeout_keeps_tasks_and_past_it_loses_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let _agent = Agent::start(dir.path(), "agent-a", &master.address(), "cpus:1;mem:256");
    let mut fw =
        TestFramework::subscribe(&master.address(), TestFramework::info("t", "web", 60.0)).await;
    let id = fw.header.framework_id.clone();
    let offer = fw.next_offer().await;
    fw.launch(&offer, vec![shell_task("keep", "sleep 120", SMALL)])
        .await
        .expect("accept");
    fw.until_state("keep", TaskState::TaskRunning).await;
    drop(fw);
    master
        .state_where("the framework disconnected", Duration::from_secs(10), |s| {
            s["frameworks"][0]["connected"] == false
        })
        .await;

    // A new scheduler instance fails over with the id, within the timeout: same framework, task
    // still running, found by implicit reconciliation.
    let mut info = TestFramework::info("t", "web", 1.0);
    info.id = id.clone();
    let mut fw = TestFramework::subscribe(&master.address(), info).await;
    assert_eq!(fw.header.framework_id, id);
    fw.client
        .reconcile(v1::ReconcileRequest {
            header: Some(fw.header.clone()),
            tasks: vec![],
        })
        .await
        .expect("reconcile");
    let st = fw.next_update("keep", Duration::from_secs(5)).await;
    assert_eq!(st.state, TaskState::TaskRunning as i32);
    assert_eq!(st.reason, v1::Reason::Reconciliation as i32);

    // Now its failover timeout is 1 s: gone for longer, its task is killed on the agent.
    drop(fw);
    let state = master
        .state_where("the task killed", Duration::from_secs(15), |s| {
            task_state(s, "keep").as_deref() == Some("TASK_KILLED")
        })
        .await;
    assert!(state["frameworks"].as_array().is_some_and(|f| f.is_empty()));
    let mut info = TestFramework::info("t", "web", 1.0);
    info.id = id;
    let err = TestFramework::try_subscribe(&master.address(), info)
        .await
        .err()
        .expect("a removed framework cannot come back");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_survive_a_master_restart_and_the_framework_takes_them_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut master = Master::start(dir.path(), &[]).await;
    let port = master.port;
    let _agent = Agent::start(dir.path(), "agent-a", &master.address(), "cpus:1;mem:256");
    let mut fw =
        TestFramework::subscribe(&master.address(), TestFramework::info("t", "web", 600.0)).await;
    let id = fw.header.framework_id.clone();
    let offer = fw.next_offer().await;
    fw.launch(&offer, vec![shell_task("survivor", "sleep 120", SMALL)])
        .await
        .expect("accept");
    fw.until_state("survivor", TaskState::TaskRunning).await;
    master.process.kill();
    drop(fw);
    let master = Master::start_on(dir.path(), port, &[]).await;
    master
        .state_where(
            "the agent re-registered with its task",
            Duration::from_secs(30),
            |s| task_state(s, "survivor").as_deref() == Some("TASK_RUNNING"),
        )
        .await;
    let mut info = TestFramework::info("t", "web", 600.0);
    info.id = id.clone();
    let mut fw = TestFramework::subscribe(&master.address(), info).await;
    fw.client
        .reconcile(v1::ReconcileRequest {
            header: Some(fw.header.clone()),
            tasks: vec![v1::reconcile_request::TaskRef {
                task_id: "survivor".into(),
                agent_id: String::new(),
            }],
        })
        .await
        .expect("reconcile");
    let st = fw.next_update("survivor", Duration::from_secs(5)).await;
    assert_eq!(st.state, TaskState::TaskRunning as i32);
    // The registry kept the agent across the restart.
    let path = master.work_dir.join("registry.json");
    eventually(
        "the registry to hold the agent",
        Duration::from_secs(5),
        || {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            async move { text.contains("agent-a").then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn draining_an_agent_kills_its_tasks_and_stops_offers_until_reactivated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let _agent = Agent::start(dir.path(), "agent-a", &master.address(), "cpus:1;mem:256");
    let mut fw =
        TestFramework::subscribe(&master.address(), TestFramework::info("t", "web", 0.0)).await;
    let offer = fw.next_offer().await;
    fw.launch(&offer, vec![shell_task("drained", "sleep 120", SMALL)])
        .await
        .expect("accept");
    fw.until_state("drained", TaskState::TaskRunning).await;
    let agent_id = offer.agent_id.clone();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_agora"))
            .args(args)
            .args(["--master", &master.address()])
            .output()
            .expect("agora runs")
    };
    let out = cli(&["agent", "drain", &agent_id, "--grace", "0.5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fw.until_state("drained", TaskState::TaskKilled).await;
    let state = master.state().await;
    assert_eq!(state["agents"][0]["draining"], true);
    // No offers from a draining agent.
    let quiet = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            if let Some(v1::event::Event::Offers(_)) = fw.events.recv().await.and_then(|e| e.event)
            {
                return;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "a draining agent was offered");
    let unknown = cli(&["agent", "drain", "no-such-agent"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no-such-agent"));
    let out = cli(&["agent", "reactivate", &agent_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = fw.next_offer().await;
    assert_eq!(again.agent_id, agent_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_custom_executor_runs_with_its_task_info_in_the_sandbox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let _agent = Agent::start(dir.path(), "agent-a", &master.address(), "cpus:2;mem:512");
    let mut fw =
        TestFramework::subscribe(&master.address(), TestFramework::info("t", "web", 0.0)).await;
    let executor = |id: &str, cmd: &str| v1::ExecutorInfo {
        executor_id: id.into(),
        command: Some(v1::CommandInfo {
            shell: true,
            value: cmd.into(),
            ..Default::default()
        }),
        resources: agora_proto::Resources::parse("cpus:0.1;mem:16")
            .expect("res")
            .to_proto(),
        ..Default::default()
    };
    let mut ok = shell_task("exec-task", "this is the task's own command", SMALL);
    ok.executor = Some(executor(
        "my-executor",
        "test -s \"$AGORA_TASK_INFO_FILE\" && grep -q '\"task_id\":\"exec-task\"' \"$AGORA_SANDBOX/task.json\" && test \"$AGORA_EXECUTOR_ID\" = my-executor",
    ));
    let mut bad = shell_task("exec-fails", "unused", SMALL);
    bad.executor = Some(executor("failing-executor", "exit 3"));
    let offer = fw.next_offer().await;
    fw.launch(&offer, vec![ok, bad]).await.expect("accept");
    // Both end; collect their terminal updates in whatever order they come.
    let mut ended = std::collections::HashMap::new();
    while ended.len() < 2 {
        let st = fw
            .next(
                "the executors to end",
                Duration::from_secs(30),
                |e| match &e.event {
                    Some(v1::event::Event::Update(u)) => u.status.clone(),
                    _ => None,
                },
            )
            .await;
        if !st.uuid.is_empty() {
            fw.client
                .acknowledge(v1::AcknowledgeRequest {
                    header: Some(fw.header.clone()),
                    agent_id: st.agent_id.clone(),
                    task_id: st.task_id.clone(),
                    uuid: st.uuid.clone(),
                })
                .await
                .expect("acknowledge");
        }
        if agora_proto::is_terminal(st.state()) {
            ended.insert(st.task_id.clone(), (st.state(), st.exit_code));
        }
    }
    assert_eq!(ended["exec-task"], (TaskState::TaskFinished, Some(0)));
    assert_eq!(ended["exec-fails"], (TaskState::TaskFailed, Some(3)));
}
