//! High availability on a real ZooKeeper (the one `scripts/test` starts, `AGORA_TEST_ZK`): three
//! masters, agents that find the leader through ZooKeeper, leader death, a leader cut off from
//! ZooKeeper, and the registry surviving a restart of every master.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use agora_proto::v1::{self, TaskState};

use crate::harness::{eventually, free_port, shell_task, Agent, Process, TestFramework, ZkProxy};

const SESSION_TIMEOUT: f64 = 4.0;

pub(crate) fn zk_servers() -> String {
    std::env::var("AGORA_TEST_ZK").unwrap_or_else(|_| "127.0.0.1:2181".into())
}

/// A ZooKeeper path of its own for each test.
pub(crate) fn zk_url(servers: &str, test: &str) -> String {
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("zk://{servers}/agora-test-{test}-{unique}")
}

async fn start_master(dir: &std::path::Path, zk: &str, port: u16) -> Process {
    start_master_with(dir, zk, port, SESSION_TIMEOUT)
}

/// A master on `port` in the election under `zk`, with this ZooKeeper session timeout (seconds).
pub(crate) fn start_master_with(
    dir: &std::path::Path,
    zk: &str,
    port: u16,
    session_timeout: f64,
) -> Process {
    start_master_with_args(dir, zk, port, session_timeout, &[])
}

/// [`start_master_with`], with `extra` flags.
pub(crate) fn start_master_with_args(
    dir: &std::path::Path,
    zk: &str,
    port: u16,
    session_timeout: f64,
    extra: &[&str],
) -> Process {
    let work = dir.join(format!("master-{port}"));
    let mut args: Vec<String> = [
        "master",
        "--insecure",
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--work-dir",
        &work.display().to_string(),
        "--allocation-interval",
        "0.1",
        "--zk",
        zk,
        "--zk-session-timeout",
        &session_timeout.to_string(),
        "--agent-reregister-timeout",
        "20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Process::spawn(&format!("master-{port}"), &args, dir)
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client")
}

/// The port of the master that answers `/state` itself (the leader), among `ports`.
pub(crate) async fn leader_among(ports: &[u16]) -> Option<u16> {
    let client = no_redirects();
    for &p in ports {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{p}/state"))
            .send()
            .await
        {
            if r.status() == 200 {
                return Some(p);
            }
        }
    }
    None
}

pub(crate) async fn state_of(port: u16) -> Option<serde_json::Value> {
    let r = no_redirects()
        .get(format!("http://127.0.0.1:{port}/state"))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json().await.ok()
}

pub(crate) fn running_tasks(state: &serde_json::Value) -> HashSet<String> {
    state["tasks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .filter_map(|t| t["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_takes_over_when_the_leader_dies_and_nothing_running_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zk = zk_url(&zk_servers(), "failover");
    // Agents start before any master exists and find it once one is elected.
    let _a1 = Agent::start(dir.path(), "agent-1", &zk, "cpus:1;mem:256");
    let _a2 = Agent::start(dir.path(), "agent-2", &zk, "cpus:1;mem:256");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut masters = Vec::new();
    for &p in &ports {
        masters.push((p, start_master(dir.path(), &zk, p).await));
    }
    let leader = eventually("a leader", Duration::from_secs(20), || leader_among(&ports)).await;
    // Standbys redirect to it, and refuse gRPC calls naming it.
    let standby = *ports.iter().find(|p| **p != leader).expect("a standby");
    let redirect = eventually(
        "a standby to know the leader",
        Duration::from_secs(10),
        || async {
            let r = no_redirects()
                .get(format!("http://127.0.0.1:{standby}/redirect"))
                .send()
                .await
                .ok()?;
            (r.status() == 307)
                .then(|| r.headers().get("location").cloned())
                .flatten()
        },
    )
    .await;
    assert_eq!(
        redirect.to_str().expect("ascii"),
        format!("//127.0.0.1:{leader}/")
    );
    let err = TestFramework::try_subscribe(
        &format!("127.0.0.1:{standby}"),
        TestFramework::info("t", "web", 600.0),
    )
    .await
    .err()
    .expect("a standby refuses");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(
        err.metadata()
            .get("agora-leader")
            .and_then(|v| v.to_str().ok()),
        Some(format!("127.0.0.1:{leader}").as_str())
    );

    eventually(
        "both agents registered",
        Duration::from_secs(30),
        || async {
            let s = state_of(leader).await?;
            (s["agents"].as_array()?.len() == 2).then_some(())
        },
    )
    .await;
    // Weights are registry state: they must survive the failover.
    let put = reqwest::Client::new()
        .put(format!("http://127.0.0.1:{leader}/api/v1/weights"))
        .body(r#"[{"role":"web","weight":3}]"#)
        .send()
        .await
        .expect("PUT weights");
    assert_eq!(put.status(), 204);

    let mut fw = TestFramework::subscribe(
        &format!("127.0.0.1:{leader}"),
        TestFramework::info("t", "web", 600.0),
    )
    .await;
    let id = fw.header.framework_id.clone();
    let mut launched = 0;
    while launched < 2 {
        let offer = fw.next_offer().await;
        launched += 1;
        fw.launch(
            &offer,
            vec![shell_task(
                &format!("svc-{launched}"),
                "sleep 300",
                "cpus:0.5;mem:64",
            )],
        )
        .await
        .expect("accept");
    }
    fw.until_state("svc-1", TaskState::TaskRunning).await;
    fw.until_state("svc-2", TaskState::TaskRunning).await;

    let (_, leader_process) = masters
        .iter_mut()
        .find(|(p, _)| *p == leader)
        .expect("leader process");
    let killed_at = Instant::now();
    leader_process.kill();
    let remaining: Vec<u16> = ports.iter().copied().filter(|p| *p != leader).collect();
    let new_leader = eventually("a new leader", Duration::from_secs(30), || {
        leader_among(&remaining)
    })
    .await;
    let took = killed_at.elapsed();
    assert!(
        took <= Duration::from_secs_f64(SESSION_TIMEOUT + 2.0),
        "took {took:?} to elect a new leader"
    );
    // Agents follow by themselves and bring their tasks: both still running, same ids.
    eventually(
        "the tasks on the new leader",
        Duration::from_secs(30),
        || async {
            let s = state_of(new_leader).await?;
            (running_tasks(&s) == HashSet::from(["svc-1".to_string(), "svc-2".to_string()]))
                .then_some(())
        },
    )
    .await;
    // The old stream carried no terminal update for them.
    while let Ok(e) = fw.events.try_recv() {
        if let Some(v1::event::Event::Update(u)) = e.event {
            let st = u.status.expect("status");
            assert!(
                !agora_proto::is_terminal(TaskState::try_from(st.state).expect("state")),
                "spurious terminal update {st:?}"
            );
        }
    }
    drop(fw);
    // The framework fails over to the new leader with its id and finds its tasks running.
    let mut detector = agora_ha::detector::Detector::new(&zk).expect("detector");
    let address = detector
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("leader in ZooKeeper");
    assert_eq!(address, format!("127.0.0.1:{new_leader}"));
    let mut info = TestFramework::info("t", "web", 600.0);
    info.id = id.clone();
    let mut fw = TestFramework::subscribe(&address, info).await;
    assert_eq!(fw.header.framework_id, id);
    fw.client
        .reconcile(v1::ReconcileRequest {
            header: Some(fw.header.clone()),
            tasks: vec![],
        })
        .await
        .expect("reconcile");
    let mut seen = HashSet::new();
    while seen.len() < 2 {
        let st = fw
            .next("reconciliation", Duration::from_secs(10), |e| {
                match &e.event {
                    Some(v1::event::Event::Update(u)) => u.status.clone(),
                    _ => None,
                }
            })
            .await;
        assert_eq!(st.state, TaskState::TaskRunning as i32, "{st:?}");
        seen.insert(st.task_id);
    }
    let roles: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{new_leader}/api/v1/roles"))
            .await
            .expect("GET roles")
            .json()
            .await
            .expect("json");
    let web = roles["roles"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "web"))
        .expect("role web");
    assert_eq!(web["weight"], 3.0);
    drop(fw);

    // Every master restarts: the registry (agents, weights) is intact.
    for (_, m) in masters.iter_mut() {
        m.kill();
    }
    let fresh = free_port();
    let _again = start_master(dir.path(), &zk, fresh).await;
    eventually(
        "the restarted master to lead with the registry",
        Duration::from_secs(30),
        || async {
            let roles: serde_json::Value = no_redirects()
                .get(format!("http://127.0.0.1:{fresh}/api/v1/roles"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let w = roles["roles"]
                .as_array()?
                .iter()
                .find(|r| r["name"] == "web")?["weight"]
                .clone();
            (w == 3.0).then_some(())
        },
    )
    .await;
    eventually("the agents back on it", Duration::from_secs(30), || async {
        let s = state_of(fresh).await?;
        (running_tasks(&s).len() == 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_cut_off_from_zookeeper_stops_before_another_leads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let servers = zk_servers();
    let proxy = ZkProxy::start(servers.clone()).await;
    let proxy_port = proxy.port;
    let path_url = zk_url(&servers, "partition");
    let path = path_url
        .rsplit_once('/')
        .map(|(_, p)| p.to_string())
        .expect("path");
    // The first master reaches ZooKeeper only through the proxy; it leads.
    let first_port = free_port();
    let mut first = start_master(
        dir.path(),
        &format!("zk://127.0.0.1:{proxy_port}/{path}"),
        first_port,
    )
    .await;
    let first_only = [first_port];
    eventually("the first master to lead", Duration::from_secs(20), || {
        leader_among(&first_only)
    })
    .await;
    let second_port = free_port();
    let _second = start_master(dir.path(), &path_url, second_port).await;
    let _agent = Agent::start(dir.path(), "agent-1", &path_url, "cpus:1;mem:256");
    eventually(
        "the agent on the leader",
        Duration::from_secs(20),
        || async {
            let s = state_of(first_port).await?;
            (s["agents"].as_array()?.len() == 1).then_some(())
        },
    )
    .await;
    let mut fw = TestFramework::subscribe(
        &format!("127.0.0.1:{first_port}"),
        TestFramework::info("t", "web", 600.0),
    )
    .await;
    let first_offer = fw.next_offer().await;

    proxy.cut();
    let cut_at = Instant::now();
    // The old leader steps down (exits non-zero) within a third of the session timeout, plus
    // the time to notice the disconnection.
    let exited = eventually(
        "the cut-off leader to exit",
        Duration::from_secs(20),
        || {
            let status = first.try_wait();
            async move { status }
        },
    )
    .await;
    let stepped_down = cut_at.elapsed();
    assert!(
        !exited.success(),
        "it must exit non-zero for its supervisor"
    );
    assert!(
        first.log_text().contains("leadership lost"),
        "{}",
        first.log_text()
    );
    // Only after that does the other master lead (the session must expire first).
    let second_only = [second_port];
    let new_leader = eventually("the second master to lead", Duration::from_secs(30), || {
        leader_among(&second_only)
    })
    .await;
    let took_over = cut_at.elapsed();
    assert_eq!(new_leader, second_port);
    assert!(
        stepped_down < took_over,
        "the old leader stopped at {stepped_down:?}, the new one led at {took_over:?}"
    );
    // Offers after the cut come only from the new leader.
    let mut info = TestFramework::info("t2", "web", 600.0);
    info.id = fw.header.framework_id.clone();
    drop(fw);
    let mut fw = TestFramework::subscribe(&format!("127.0.0.1:{second_port}"), info).await;
    let offer = fw.next_offer().await;
    assert_ne!(offer.master_id, first_offer.master_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_services_instance_pointed_at_the_masters_zookeeper_path_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zk = zk_url(&zk_servers(), "foreign-path");
    let port = free_port();
    let _master = start_master(dir.path(), &zk, port).await;
    eventually("the master to lead", Duration::from_secs(30), || async {
        leader_among(&[port]).await
    })
    .await;
    let args: Vec<String> = [
        "services",
        "--master",
        &zk,
        "--zk",
        &zk,
        "--ip",
        "127.0.0.1",
        "--port",
        &free_port().to_string(),
        "--work-dir",
        &dir.path().join("services").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut services = Process::spawn("services-foreign", &args, dir.path());
    let status = eventually("services to refuse", Duration::from_secs(30), || {
        let s = services.try_wait();
        async move { s }
    })
    .await;
    assert!(!status.success(), "it must exit non-zero: {status}");
    let log = services.log_text();
    assert!(log.contains("belongs to the masters"), "{log}");
    // It never registered where agents look for the leading master.
    let state = state_of(port).await.expect("state");
    assert_eq!(state["leader"], format!("127.0.0.1:{port}"), "{state}");
}

/// A planned stop (systemd's SIGTERM) is the fastest failover: the leader leaves the election
/// first, so a standby leads within a moment — not after the ZooKeeper session timeout (10 s here)
/// or the open streams' timeouts — and the stopped master exits cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_stopped_with_sigterm_hands_over_within_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zk = zk_url(&zk_servers(), "sigterm");
    let _agent = Agent::start(dir.path(), "agent-1", &zk, "cpus:1;mem:256");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut masters = Vec::new();
    for &p in &ports {
        masters.push((p, start_master_with(dir.path(), &zk, p, 10.0)));
    }
    let leader = eventually("a leader", Duration::from_secs(20), || leader_among(&ports)).await;
    eventually("the agent registered", Duration::from_secs(30), || async {
        let s = state_of(leader).await?;
        (s["agents"].as_array()?.len() == 1).then_some(())
    })
    .await;
    // An open framework stream: a stop must not wait for it to time out.
    let _fw = TestFramework::subscribe(
        &format!("127.0.0.1:{leader}"),
        TestFramework::info("t", "web", 600.0),
    )
    .await;

    let (_, old) = masters
        .iter_mut()
        .find(|(p, _)| *p == leader)
        .expect("the leader's process");
    // A client with a connection already open to the leader (as a CLI or a proxy keeps one):
    // once the leader has resigned it must not answer `/state` as if it still led.
    let kept = no_redirects();
    let url = format!("http://127.0.0.1:{leader}/state");
    let r = kept.get(&url).send().await.expect("the leader answers");
    assert_eq!(r.status(), 200);
    let stopped_at = Instant::now();
    old.signal("TERM");
    let poller = tokio::spawn(async move {
        let mut answers = Vec::new();
        while stopped_at.elapsed() < Duration::from_secs(3) {
            if let Ok(r) = kept.get(&url).send().await {
                answers.push((stopped_at.elapsed(), r.status().as_u16()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        answers
    });
    let others: Vec<u16> = ports.iter().copied().filter(|p| *p != leader).collect();
    let next = eventually("a new leader", Duration::from_secs(30), || {
        leader_among(&others)
    })
    .await;
    let handover = stopped_at.elapsed();
    let answers = poller.await.expect("the poller");
    let late: Vec<_> = answers
        .iter()
        .filter(|(at, status)| *status == 200 && *at > Duration::from_millis(100))
        .collect();
    assert!(
        late.is_empty(),
        "the resigned leader still answered /state as leader: {late:?} (all answers: {answers:?})"
    );
    println!("the stopping leader's /state answers after SIGTERM: {answers:?}");
    let status = eventually("the old leader to exit", Duration::from_secs(30), || {
        let s = old.try_wait();
        async move { s }
    })
    .await;
    let exited = stopped_at.elapsed();
    assert!(
        status.success(),
        "SIGTERM is a clean stop: {status:?}\n{}",
        old.log_text()
    );
    assert!(
        handover < Duration::from_secs(5),
        "a standby led {handover:?} after the leader's SIGTERM (the session timeout is 10 s)"
    );
    assert!(
        exited < Duration::from_secs(8),
        "the stopped leader took {exited:?} to exit"
    );
    assert!(
        old.log_text().contains("left the election"),
        "{}",
        old.log_text()
    );
    // The agent follows the new leader.
    eventually(
        "the agent on the new leader",
        Duration::from_secs(30),
        || async {
            let s = state_of(next).await?;
            (s["agents"].as_array()?.len() == 1).then_some(())
        },
    )
    .await;
    println!("SIGTERM handover: new leader after {handover:?}, old master exited after {exited:?}");
}
