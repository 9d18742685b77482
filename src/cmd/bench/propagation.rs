//! `agora bench propagation`: how fast the master's endpoint table reaches every agent. The
//! driver starts a real master (a child process), `--agents` simulated agents (sessions over real
//! gRPC, `--agents-per-connection` per HTTP/2 connection) and one gRPC framework that launches
//! `--services` tasks, each the one task of its own service, with discovery info and a health
//! check. Then, task after task (`--concurrency` at a time), it times three events:
//!
//! ```text
//!  healthy:   the task's agent sends TASK_RUNNING healthy=true   ─┐
//!  unhealthy: the task's agent sends TASK_RUNNING healthy=false  ─┼─▶ master ─▶ EndpointUpdate
//!  killed:    the framework sends Kill (drain before kill)        ─┘        ─▶ every agent
//!             t0 = when the update or the Kill call left the driver;  t1 = when the LAST of the
//!             agents received the EndpointUpdate showing the change (task listed / not listed)
//! ```
//!
//! t0 is taken in the driver just before the message is written, so a figure includes the trip
//! to the master as well as the master's push and every agent's receipt (one process: the driver's
//! own scheduling is in it too). For kills it also measures the drain: Kill sent → KillTask at the
//! task's agent, and counts kills that reached the agent before every agent had the update (with
//! acknowledgements there must be none).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use agora_proto::v1::{
    self, agent_control_client::AgentControlClient, agent_message, master_message,
    scheduler_client::SchedulerClient,
};
use anyhow::Context;
use serde_json::json;
use tokio::sync::{mpsc, watch, Notify};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::agents::{endpoint_ack, now_epoch, scalar};
use super::args::{LoadArgs, PropagationArgs};
use super::cluster::{connect, Cluster};
use super::processes::{proc_cpu_seconds, start_master};

/// What one timed event waits for: every agent seeing the service list the task or not.
struct Expect {
    task_id: String,
    present: bool,
    t0: Instant,
    /// Per agent: it has seen the change.
    seen: Vec<AtomicBool>,
    remaining: AtomicUsize,
    /// Latest receipt so far, ns after t0.
    last_ns: AtomicU64,
    done: Notify,
}

impl Expect {
    fn new(task_id: &str, present: bool, agents: usize) -> Arc<Expect> {
        Arc::new(Expect {
            task_id: task_id.to_string(),
            present,
            t0: Instant::now(),
            seen: (0..agents).map(|_| AtomicBool::new(false)).collect(),
            remaining: AtomicUsize::new(agents),
            last_ns: AtomicU64::new(0),
            done: Notify::new(),
        })
    }
}

/// Where a task runs: its agent's control channel.
type Host = mpsc::UnboundedSender<(String, String, bool)>;

/// What the simulated agents and the driver share.
struct Probe {
    agents: usize,
    registered: AtomicUsize,
    /// Service name → the event waiting on it.
    waiting: RwLock<HashMap<String, Arc<Expect>>>,
    /// Task id → (framework id, its agent's control channel).
    hosts: Mutex<HashMap<String, (String, Host)>>,
    /// Task id → when its KillTask reached its agent.
    killed_at: Mutex<HashMap<String, Instant>>,
    kill_arrived: Notify,
    errors: Mutex<Vec<String>>,
}

impl Probe {
    fn error(&self, e: String) {
        if let Ok(mut v) = self.errors.lock() {
            if v.len() < 20 {
                v.push(e);
            }
        }
    }

    /// Agent `i` received `u` at `at`.
    fn received(&self, i: usize, u: &master_message::EndpointUpdate, at: Instant) {
        let Ok(waiting) = self.waiting.read() else {
            return;
        };
        if waiting.is_empty() {
            return;
        }
        for s in &u.services {
            let Some(e) = waiting.get(&s.name) else {
                continue;
            };
            let present = s.endpoints.iter().any(|x| x.task_id == e.task_id);
            if present != e.present {
                continue;
            }
            let Some(seen) = e.seen.get(i) else { continue };
            if seen.swap(true, Ordering::AcqRel) {
                continue;
            }
            let ns = at.saturating_duration_since(e.t0).as_nanos() as u64;
            e.last_ns.fetch_max(ns, Ordering::AcqRel);
            if e.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                e.done.notify_one();
            }
        }
    }
}

/// Runs `bench propagation`.
///
/// # Errors
/// Bad flags; the master cannot be started; a stream fails; an event not seen by every agent
/// within `--timeout`.
pub async fn run(args: PropagationArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.agents > 0, "--agents must be at least 1");
    anyhow::ensure!(
        (1..=10_000).contains(&args.services),
        "--services must be between 1 and 10000"
    );
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let load = LoadArgs {
        agents: args.agents,
        frameworks: 1,
        tasks: 0,
        task_seconds: Duration::from_secs(365 * 24 * 3600),
        master: None,
        allocation_interval: args.allocation_interval,
        agent_cpus: 8.0,
        agent_mem: 16384.0,
        task_cpus: 0.1,
        task_mem: 32.0,
        tasks_per_offer: 10,
        launch_rate: None,
        agents_per_connection: args.agents_per_connection,
        timeout: args.timeout,
        master_log: args.master_log.clone(),
        json: args.json,
        api: "grpc".into(),
        failover: false,
        stop_signal: "kill".into(),
        zk: None,
        zk_session_timeout: Duration::from_secs(4),
        tls: false,
        compare_tls: false,
    };
    let tmp = tempfile::tempdir().context("a temporary work dir")?;
    let extra = vec![
        "--drain-period".to_string(),
        args.drain_period.as_secs_f64().to_string(),
    ];
    let mut master = start_master(&load, tmp.path(), 0, &extra).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let probe = Arc::new(Probe {
        agents: args.agents,
        registered: AtomicUsize::new(0),
        waiting: RwLock::new(HashMap::new()),
        hosts: Mutex::new(HashMap::new()),
        killed_at: Mutex::new(HashMap::new()),
        kill_arrived: Notify::new(),
        errors: Mutex::new(Vec::new()),
    });
    let result = drive(&args, &master.address, &probe, stop_rx).await;
    let _ = stop_tx.send(true);
    let master_cpu = master.pid.and_then(proc_cpu_seconds);
    let metrics = reqwest::get(format!("http://{}/metrics", master.address))
        .await
        .ok();
    let metrics = match metrics {
        Some(r) => r.text().await.unwrap_or_default(),
        None => String::new(),
    };
    let _ = master.child.start_kill();
    let _ = master.child.wait().await;
    let mut figures = result?;
    if let Some(obj) = figures.as_object_mut() {
        obj.insert("master_cpu_seconds".into(), json!(master_cpu));
        for line in metrics.lines() {
            if line.starts_with("agora_master_drains_total{") {
                if let Some((k, v)) = line.rsplit_once(' ') {
                    obj.insert(k.replace("agora_master_", ""), json!(v));
                }
            }
        }
        if let Ok(errors) = probe.errors.lock() {
            obj.insert("errors".into(), json!(*errors));
        }
    }
    if args.json {
        println!("{figures}");
    } else if let serde_json::Value::Object(m) = &figures {
        for (k, v) in m {
            println!("{k:<32} {v}");
        }
    }
    Ok(())
}

async fn drive(
    args: &PropagationArgs,
    address: &str,
    probe: &Arc<Probe>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + args.timeout;
    let (_leader_tx, leader_rx) = watch::channel(address.to_string());
    let cluster = Arc::new(Cluster::new(leader_rx, args.agents_per_connection.max(1)));
    let t0 = Instant::now();
    for i in 0..args.agents {
        let channel = cluster.channel(i, address)?;
        let probe = probe.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let stopped = stop.clone();
            if let Err(e) = run_agent(i, channel, probe.clone(), stop).await {
                if !*stopped.borrow() {
                    probe.error(format!("agent {i}: {e:#}"));
                }
            }
        });
    }
    wait_for(deadline, "agents registered", || {
        probe.registered.load(Ordering::Relaxed) >= args.agents
    })
    .await?;
    let register_seconds = t0.elapsed().as_secs_f64();
    eprintln!(
        "bench: {} agents registered in {register_seconds:.1} s",
        args.agents
    );

    // The framework: launches the tasks, then kills them on the driver's word.
    let channel = connect(address).await?;
    let mut client = SchedulerClient::new(channel).max_decoding_message_size(64 << 20);
    let mut events = client
        .subscribe(v1::SubscribeRequest {
            framework_info: Some(v1::FrameworkInfo {
                name: "bench-propagation".into(),
                user: "bench".into(),
                roles: vec!["bench".into()],
                ..Default::default()
            }),
            suppressed_roles: vec![],
        })
        .await?
        .into_inner();
    let header = loop {
        match events.message().await?.and_then(|e| e.event) {
            Some(v1::event::Event::Subscribed(s)) => {
                break v1::CallHeader {
                    framework_id: s.framework_id,
                    stream_id: s.stream_id,
                }
            }
            Some(_) => continue,
            None => anyhow::bail!("the master closed the event stream before SUBSCRIBED"),
        }
    };
    let running = Arc::new(AtomicUsize::new(0));
    {
        let mut client = client.clone();
        let header = header.clone();
        let running = running.clone();
        let mut pending: Vec<usize> = (0..args.services).rev().collect();
        let probe = probe.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    e = events.message() => e,
                    _ = stop.changed() => return,
                };
                let event = match event {
                    Ok(Some(e)) => e,
                    Ok(None) => return,
                    Err(e) => {
                        probe.error(format!("framework: {e}"));
                        return;
                    }
                };
                match event.event {
                    Some(v1::event::Event::Offers(o)) => {
                        for offer in o.offers {
                            let take: Vec<usize> = (0..10).map_while(|_| pending.pop()).collect();
                            let (operations, declined) = if !take.is_empty() {
                                let tasks = take
                                    .iter()
                                    .map(|&n| task_info(n, &offer.agent_id))
                                    .collect();
                                (
                                    vec![v1::Operation {
                                        operation: Some(v1::operation::Operation::Launch(
                                            v1::operation::Launch { tasks },
                                        )),
                                    }],
                                    false,
                                )
                            } else {
                                (vec![], true)
                            };
                            let req = v1::AcceptRequest {
                                header: Some(header.clone()),
                                offer_ids: vec![offer.id.clone()],
                                operations,
                                filters: declined.then_some(v1::Filters {
                                    refuse_seconds: Some(3600.0),
                                }),
                            };
                            if let Err(e) = client.accept(req).await {
                                if declined {
                                    continue;
                                }
                                // Offered before its session opened, say: launched on a later offer.
                                eprintln!(
                                    "bench: accept refused ({}): launching elsewhere",
                                    e.message()
                                );
                                pending.extend(take);
                            }
                        }
                    }
                    Some(v1::event::Event::Update(u)) => {
                        let Some(st) = u.status else { continue };
                        if st.state == v1::TaskState::TaskRunning as i32 && st.healthy.is_none() {
                            running.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {}
                }
            }
        });
    }
    wait_for(deadline, "tasks running", || {
        running.load(Ordering::Relaxed) >= args.services
    })
    .await?;
    eprintln!("bench: {} tasks running; timing events", args.services);

    let mut healthy = Vec::new();
    let mut unhealthy = Vec::new();
    let mut killed = Vec::new();
    let mut drained = Vec::new();
    let mut kill_before_update = 0usize;
    let ids: Vec<usize> = (0..args.services).collect();
    for chunk in ids.chunks(args.concurrency) {
        // healthy → unhealthy → healthy (not timed) → killed, `--concurrency` tasks at a time.
        for (present, healthy_flag, out) in [
            (true, true, Some(&mut healthy)),
            (false, false, Some(&mut unhealthy)),
            (true, true, None),
        ] {
            let mut expects = Vec::new();
            for &n in chunk {
                let (fw, host) = host_of(probe, &task_id(n))?;
                let e = Expect::new(&task_id(n), present, probe.agents);
                probe
                    .waiting
                    .write()
                    .map_err(|_| anyhow::anyhow!("lock"))?
                    .insert(service_name(n), e.clone());
                host.send((fw, task_id(n), healthy_flag))
                    .map_err(|_| anyhow::anyhow!("agent of task {n} is gone"))?;
                expects.push(e);
            }
            let lat = wait_all(&expects, deadline).await?;
            if let Some(out) = out {
                out.extend(lat);
            }
        }
        let mut expects = Vec::new();
        for &n in chunk {
            let e = Expect::new(&task_id(n), false, probe.agents);
            probe
                .waiting
                .write()
                .map_err(|_| anyhow::anyhow!("lock"))?
                .insert(service_name(n), e.clone());
            let req = v1::KillRequest {
                header: Some(header.clone()),
                task_id: task_id(n),
                agent_id: String::new(),
                kill_policy: None,
            };
            let mut c = client.clone();
            let probe = probe.clone();
            tokio::spawn(async move {
                if let Err(e) = c.kill(req).await {
                    probe.error(format!("kill: {}", e.message()));
                }
            });
            expects.push(e);
        }
        killed.extend(wait_all(&expects, deadline).await?);
        // The kills themselves: held until every agent acknowledged, then at the task's agent.
        for e in &expects {
            let arrived = loop {
                let notified = probe.kill_arrived.notified();
                if let Some(at) = probe
                    .killed_at
                    .lock()
                    .map_err(|_| anyhow::anyhow!("lock"))?
                    .get(&e.task_id)
                {
                    break *at;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the kill of {} never reached its agent",
                    e.task_id
                );
                let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
            };
            let all_seen = e.t0 + Duration::from_nanos(e.last_ns.load(Ordering::Acquire));
            if arrived < all_seen {
                kill_before_update += 1;
            }
            drained.push(arrived.saturating_duration_since(e.t0).as_secs_f64() * 1e3);
        }
        if let Ok(mut w) = probe.waiting.write() {
            w.clear();
        }
    }
    let stats = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let pct = |q: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
            (v[i] * 10.0).round() / 10.0
        };
        json!({ "n": v.len(), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0) })
    };
    Ok(json!({
        "agents": args.agents,
        "services": args.services,
        "concurrency": args.concurrency,
        "drain_period_seconds": args.drain_period.as_secs_f64(),
        "register_seconds": (register_seconds * 100.0).round() / 100.0,
        "healthy": stats(healthy),
        "unhealthy": stats(unhealthy),
        "killed": stats(killed),
        "kill_forwarded": stats(drained),
        "kills_before_every_agent_updated": kill_before_update,
    }))
}

fn task_id(n: usize) -> String {
    format!("prop-{n}")
}

fn service_name(n: usize) -> String {
    format!("/prop/s{n}")
}

fn task_info(n: usize, agent_id: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        name: task_id(n),
        task_id: task_id(n),
        agent_id: agent_id.to_string(),
        resources: vec![scalar("cpus", 0.1), scalar("mem", 32.0)],
        command: Some(v1::CommandInfo {
            shell: true,
            value: "true".into(),
            ..Default::default()
        }),
        // Only a healthy task is in the table: RUNNING alone adds nothing.
        health_check: Some(v1::HealthCheck {
            r#type: v1::health_check::Type::Tcp as i32,
            tcp: Some(v1::health_check::Tcp { port: 31000 }),
            ..Default::default()
        }),
        discovery: Some(v1::DiscoveryInfo {
            name: service_name(n),
            ports: vec![v1::DiscoveryPort {
                number: 31000,
                service_port: 10000 + (n % 50_000) as u32,
                protocol: "tcp".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn host_of(probe: &Probe, task: &str) -> anyhow::Result<(String, Host)> {
    probe
        .hosts
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .get(task)
        .cloned()
        .with_context(|| format!("no agent runs task {task}"))
}

/// Waits until every agent saw each event; returns their latencies (ms).
async fn wait_all(expects: &[Arc<Expect>], deadline: Instant) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for e in expects {
        loop {
            let notified = e.done.notified();
            if e.remaining.load(Ordering::Acquire) == 0 {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "task {} ({}): {} agents had not seen the change by --timeout",
                    e.task_id,
                    if e.present { "listed" } else { "not listed" },
                    e.remaining.load(Ordering::Acquire)
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
        out.push(e.last_ns.load(Ordering::Acquire) as f64 / 1e6);
    }
    Ok(out)
}

async fn wait_for(deadline: Instant, what: &str, done: impl Fn() -> bool) -> anyhow::Result<()> {
    while !done() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what}: not done before --timeout"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn status(
    agent_id: &str,
    framework_id: String,
    task_id: String,
    state: v1::TaskState,
    healthy: Option<bool>,
) -> v1::AgentMessage {
    v1::AgentMessage {
        message: Some(agent_message::Message::StatusUpdate(v1::StatusUpdate {
            framework_id,
            status: Some(v1::TaskStatus {
                task_id,
                state: state as i32,
                healthy,
                source: v1::StatusSource::SourceExecutor as i32,
                agent_id: agent_id.to_string(),
                timestamp: now_epoch(),
                ..Default::default()
            }),
        })),
    }
}

/// A simulated agent: registers, opens its session, runs tasks on paper, records and acknowledges
/// endpoint updates, and sends health updates of its tasks on the driver's word.
async fn run_agent(
    i: usize,
    channel: tonic::transport::Channel,
    probe: Arc<Probe>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut client = AgentControlClient::new(channel).max_decoding_message_size(64 << 20);
    let resp = client
        .register(v1::RegisterAgentRequest {
            agent_info: Some(v1::AgentInfo {
                hostname: format!("prop-agent-{i}"),
                ip: "127.0.0.1".into(),
                resources: vec![scalar("cpus", 8.0), scalar("mem", 16384.0)],
                http_port: 5051,
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            }),
            join_token: String::new(),
        })
        .await?
        .into_inner();
    let agent_id = resp.agent_id;
    let heartbeat = Duration::from_secs_f64(resp.heartbeat_interval_seconds.clamp(0.5, 60.0));
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(v1::AgentMessage {
        message: Some(agent_message::Message::Hello(agent_message::Hello {
            agent_id: agent_id.clone(),
            session_token: resp.session_token,
        })),
    })?;
    let mut inbound = client
        .session(UnboundedReceiverStream::new(rx))
        .await?
        .into_inner();
    probe.registered.fetch_add(1, Ordering::Relaxed);
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<(String, String, bool)>();
    let mut tick = tokio::time::interval(heartbeat);
    tick.tick().await;
    loop {
        tokio::select! {
            m = inbound.message() => {
                let at = Instant::now();
                let Some(m) = m? else { anyhow::bail!("the master closed the session") };
                match m.message {
                    Some(master_message::Message::EndpointUpdate(u)) => {
                        probe.received(i, &u, at);
                        if u.ack_seq != 0 {
                            tx.send(endpoint_ack(u.ack_seq))?;
                        }
                    }
                    Some(master_message::Message::RunTask(run)) => {
                        let framework_id = run.framework.map(|f| f.id).unwrap_or_default();
                        let task_id = run.task.map(|t| t.task_id).unwrap_or_default();
                        probe
                            .hosts
                            .lock()
                            .map_err(|_| anyhow::anyhow!("lock"))?
                            .insert(task_id.clone(), (framework_id.clone(), ctl_tx.clone()));
                        tx.send(status(&agent_id, framework_id, task_id, v1::TaskState::TaskRunning, None))?;
                    }
                    Some(master_message::Message::KillTask(k)) => {
                        probe
                            .killed_at
                            .lock()
                            .map_err(|_| anyhow::anyhow!("lock"))?
                            .insert(k.task_id.clone(), at);
                        probe.kill_arrived.notify_waiters();
                        tx.send(status(&agent_id, k.framework_id, k.task_id, v1::TaskState::TaskKilled, None))?;
                    }
                    Some(master_message::Message::Shutdown(s)) => {
                        anyhow::bail!("the master shut this agent down: {}", s.message)
                    }
                    _ => {}
                }
            }
            Some((framework_id, task_id, healthy)) = ctl_rx.recv() => {
                tx.send(status(&agent_id, framework_id, task_id, v1::TaskState::TaskRunning, Some(healthy)))?;
            }
            _ = tick.tick() => {
                tx.send(v1::AgentMessage {
                    message: Some(agent_message::Message::Heartbeat(agent_message::Heartbeat { usage: vec![] })),
                })?;
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}
