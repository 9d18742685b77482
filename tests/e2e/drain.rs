//! Drain before kill, seen from outside: a master, two agents with their DNS (127.0.0.2 and
//! 127.0.0.3) and a gRPC framework. A task with discovery info (`web`, listed by both agents'
//! DNS as `_web._tcp.drainfw.agora` SRV) records when it gets SIGTERM (a bash `trap` writing
//! `$EPOCHREALTIME`); the test asks both DNS servers over UDP in tight loops while the framework
//! kills it. Each agent's DNS must have stopped listing the task before the task got its SIGTERM,
//! and the kill must still come within the drain period. A task without discovery info is
//! killed without delay. With one agent frozen (SIGSTOP: its session open, no acknowledgement),
//! the kill waits for the drain period and no longer.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agora_proto::v1;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::UdpSocket;

use crate::harness::{
    agent_args, eventually, free_port, shell_task, Master, Process, TestFramework,
};

const AGENTS: [(&str, &str); 2] = [("drain-a1", "127.0.0.2"), ("drain-a2", "127.0.0.3")];
const SRV_NAME: &str = "_web._tcp.drainfw.agora.";
const TASK_PORT: u16 = 31777;
/// `--drain-period` of the master: the bound the kill must come within.
const DRAIN_PERIOD: f64 = 3.0;

fn wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The SRV ports `server` answers for [`SRV_NAME`], or `None` when it did not answer.
async fn srv_ports(sock: &UdpSocket, server: SocketAddr, id: u16) -> Option<Vec<u16>> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(false);
    m.add_query(Query::query(
        Name::from_ascii(SRV_NAME).ok()?,
        RecordType::SRV,
    ));
    sock.send_to(&m.to_vec().ok()?, server).await.ok()?;
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        let r = Message::from_vec(&buf[..n]).ok()?;
        if r.id() != id {
            continue; // a late answer to an earlier query
        }
        return Some(
            r.answers()
                .iter()
                .filter_map(|a| match a.data() {
                    RData::SRV(s) => Some(s.port()),
                    _ => None,
                })
                .collect(),
        );
    }
}

/// When a DNS server stopped listing the task, as seen by a client asking in a tight loop.
struct Removal {
    /// When the last query still answered with the task was sent: the server's table changed
    /// after it (the answer is made after the query is sent).
    listed_asked: f64,
    /// When the first answer without the task arrived: the table had changed by then.
    gone: f64,
}

/// Asks `server` again and again until its answer no longer lists [`TASK_PORT`]. An answer can
/// arrive well after the table changed on a loaded machine, so "listed at SIGTERM" is proven
/// by [`Removal::listed_asked`] (a query sent after SIGTERM still answered with the task), not
/// by [`Removal::gone`].
async fn first_answer_without_the_task(server: SocketAddr, within: Duration) -> Removal {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("udp socket");
    let until = std::time::Instant::now() + within;
    let mut id: u16 = 1;
    let mut listed_asked = f64::NEG_INFINITY;
    loop {
        id = id.wrapping_add(1);
        let asked = wall();
        if let Some(ports) = srv_ports(&sock, server, id).await {
            if !ports.contains(&TASK_PORT) {
                return Removal {
                    listed_asked,
                    gone: wall(),
                };
            }
            listed_asked = asked;
        }
        assert!(
            std::time::Instant::now() < until,
            "{server} still lists the killed task after {within:?}"
        );
    }
}

/// A bash task that writes `$EPOCHREALTIME` to `<id>.sigterm` in its sandbox (its working
/// directory) when it gets SIGTERM, then exits.
fn trapping_task(id: &str) -> v1::TaskInfo {
    let cmd = format!(
        "exec bash -c 'trap \"echo \\$EPOCHREALTIME > {id}.sigterm; exit 0\" TERM; sleep 1000 & wait $!'"
    );
    let mut t = shell_task(id, &cmd, "cpus:0.1;mem:32");
    t.kill_policy = Some(v1::KillPolicy {
        grace_period_seconds: 5.0,
    });
    t
}

/// The file named `name` anywhere under `dir`.
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if p.is_dir() && !p.is_symlink() {
            if let Some(f) = find(&p, name) {
                return Some(f);
            }
        }
    }
    None
}

/// The SIGTERM time task `id` wrote in its sandbox under the agent's work dir, once it has.
async fn sigterm_time(agent_dir: &Path, id: &str) -> f64 {
    let name = format!("{id}.sigterm");
    eventually(
        "the task to record its SIGTERM",
        Duration::from_secs(20),
        || async {
            std::fs::read_to_string(find(agent_dir, &name)?)
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
        },
    )
    .await
}

/// Discovery info of the `web` service: one TCP port, [`TASK_PORT`].
fn web_discovery() -> Option<v1::DiscoveryInfo> {
    Some(v1::DiscoveryInfo {
        name: "web".into(),
        ports: vec![v1::DiscoveryPort {
            number: u32::from(TASK_PORT),
            protocol: "tcp".into(),
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// Waits until `server`'s DNS lists the task.
async fn until_listed(server: SocketAddr) {
    eventually(
        "the agent's DNS to list the task",
        Duration::from_secs(20),
        || async move {
            let sock = UdpSocket::bind("127.0.0.1:0").await.ok()?;
            srv_ports(&sock, server, 7)
                .await
                .filter(|p| p.contains(&TASK_PORT))
                .map(|_| ())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_task_leaves_every_agents_dns_before_it_gets_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let period = DRAIN_PERIOD.to_string();
    let master = Master::start(dir.path(), &["--drain-period", &period]).await;
    let dns: Vec<u16> = AGENTS.iter().map(|_| free_port()).collect();
    let mut agents = Vec::new();
    for (i, (name, ip)) in AGENTS.iter().enumerate() {
        let mut args = agent_args(
            dir.path(),
            name,
            &master.address(),
            free_port(),
            "cpus:2;mem:1024",
            "native",
        );
        for w in 0..args.len() - 1 {
            if args[w] == "--ip" {
                args[w + 1] = ip.to_string();
            }
            if args[w] == "--dns-port" {
                args[w + 1] = dns[i].to_string();
            }
        }
        agents.push(Process::spawn(name, &args, dir.path()));
    }
    let servers: Vec<SocketAddr> = AGENTS
        .iter()
        .zip(&dns)
        .map(|((_, ip), port)| format!("{ip}:{port}").parse().expect("address"))
        .collect();
    master
        .state_where("both agents registered", Duration::from_secs(30), |s| {
            s["agents"].as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
    let mut fw = TestFramework::subscribe(
        &master.address(),
        TestFramework::info("drainfw", "web", 0.0),
    )
    .await;
    // Offers come in batches, several agents each: the first agent's, wherever it is.
    let offer = fw
        .next(
            "an offer of the first agent",
            Duration::from_secs(30),
            |e| match &e.event {
                Some(v1::event::Event::Offers(o)) => {
                    o.offers.iter().find(|o| o.hostname == AGENTS[0].0).cloned()
                }
                _ => None,
            },
        )
        .await;
    let agent_dir = dir.path().join(AGENTS[0].0);
    let mut web = trapping_task("web-1");
    web.discovery = web_discovery();
    let plain = trapping_task("plain-1");
    fw.launch(&offer, vec![web, plain]).await.expect("launch");
    fw.until_state("web-1", v1::TaskState::TaskRunning).await;
    fw.until_state("plain-1", v1::TaskState::TaskRunning).await;
    // Both agents' DNS list the task.
    for s in &servers {
        until_listed(*s).await;
    }

    // Kill it while both DNS servers are asked in tight loops.
    let watchers: Vec<_> = servers
        .iter()
        .map(|s| tokio::spawn(first_answer_without_the_task(*s, Duration::from_secs(20))))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed_at = wall();
    fw.client
        .kill(v1::KillRequest {
            header: Some(fw.header.clone()),
            task_id: "web-1".into(),
            agent_id: String::new(),
            kill_policy: None,
        })
        .await
        .expect("kill");
    let term = sigterm_time(&agent_dir, "web-1").await;
    fw.until_state("web-1", v1::TaskState::TaskKilled).await;
    for (w, (name, _)) in watchers.into_iter().zip(AGENTS) {
        let r = w.await.expect("dns watcher");
        eprintln!(
            "{name}: DNS last listed the task to a query {:.1} ms after the kill, answered without \
             it {:.1} ms after it; SIGTERM {:.1} ms after it",
            (r.listed_asked - killed_at) * 1e3,
            (r.gone - killed_at) * 1e3,
            (term - killed_at) * 1e3
        );
        assert!(
            r.listed_asked < term,
            "{name}'s DNS still listed the task to a query sent {:.1} ms after its SIGTERM",
            (r.listed_asked - term) * 1e3
        );
    }
    assert!(
        term - killed_at <= DRAIN_PERIOD + 1.0,
        "SIGTERM {:.2} s after the kill: past the drain period of {DRAIN_PERIOD} s",
        term - killed_at
    );

    // A task without endpoints: killed at once (well under the drain period).
    let killed_at = wall();
    fw.client
        .kill(v1::KillRequest {
            header: Some(fw.header.clone()),
            task_id: "plain-1".into(),
            agent_id: String::new(),
            kill_policy: None,
        })
        .await
        .expect("kill");
    let term = sigterm_time(&agent_dir, "plain-1").await;
    fw.until_state("plain-1", v1::TaskState::TaskKilled).await;
    eprintln!(
        "plain task: SIGTERM {:.1} ms after the kill",
        (term - killed_at) * 1e3
    );
    assert!(
        term - killed_at < 1.0,
        "a task without endpoints waited {:.2} s for its SIGTERM",
        term - killed_at
    );
    // An agent that stops answering (frozen: its session stays open, no acknowledgement comes)
    // holds the kill for the drain period, no longer.
    let offer = fw
        .next(
            "another offer of the first agent",
            Duration::from_secs(30),
            |e| match &e.event {
                Some(v1::event::Event::Offers(o)) => {
                    o.offers.iter().find(|o| o.hostname == AGENTS[0].0).cloned()
                }
                _ => None,
            },
        )
        .await;
    let mut web2 = trapping_task("web-2");
    web2.discovery = web_discovery();
    fw.launch(&offer, vec![web2]).await.expect("launch web-2");
    fw.until_state("web-2", v1::TaskState::TaskRunning).await;
    until_listed(servers[0]).await;
    agents[1].freeze();
    let killed_at = wall();
    fw.client
        .kill(v1::KillRequest {
            header: Some(fw.header.clone()),
            task_id: "web-2".into(),
            agent_id: String::new(),
            kill_policy: None,
        })
        .await
        .expect("kill");
    let r = first_answer_without_the_task(servers[0], Duration::from_secs(20)).await;
    let term = sigterm_time(&agent_dir, "web-2").await;
    agents[1].signal("CONT");
    fw.until_state("web-2", v1::TaskState::TaskKilled).await;
    eprintln!(
        "one agent frozen: DNS of the other without the task {:.1} ms after the kill, SIGTERM {:.1} ms after it",
        (r.gone - killed_at) * 1e3,
        (term - killed_at) * 1e3
    );
    assert!(
        r.listed_asked < term,
        "the answering agent's DNS still listed the task to a query sent after SIGTERM"
    );
    assert!(
        term - killed_at >= DRAIN_PERIOD - 0.3 && term - killed_at <= DRAIN_PERIOD + 1.5,
        "SIGTERM {:.2} s after the kill with an agent silent: the drain period is {DRAIN_PERIOD} s",
        term - killed_at
    );

    // The master counts both drains: one acknowledged by both agents, one ended by the deadline.
    let metrics = reqwest::get(format!("{}/metrics", master.url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    for want in [
        "agora_master_drains_total{outcome=\"acknowledged\"} 1",
        "agora_master_drains_total{outcome=\"deadline\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == want),
            "{want} not in:\n{}",
            metrics
                .lines()
                .filter(|l| l.contains("drain"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    drop(agents);
}
