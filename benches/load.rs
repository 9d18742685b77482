//! The end-to-end load driver: a real `agora master` process, and in this process many simulated
//! agents and frameworks talking to it over real gRPC on loopback.
//!
//! Simulated agents register, open their session, heartbeat, and answer each RunTask with an
//! immediate TASK_RUNNING (and TASK_FINISHED after `--task-seconds`, if given). Simulated
//! frameworks accept every offer that fits (packing tasks of `--task-resources`), until `--tasks`
//! are running. Results: registration time, launches/s, launch latency (accept sent → RUNNING
//! received) percentiles, offers/s, and the master's peak RSS.
//!
//! ```text
//! cargo bench --bench load -- --agents 10000 --frameworks 100 --tasks 100000 --json
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_proto::v1::{
    self, agent_control_client::AgentControlClient, agent_message, master_message,
    scheduler_client::SchedulerClient,
};
use agora_proto::Resources;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

#[derive(Debug, Clone)]
struct Args {
    agents: usize,
    frameworks: usize,
    tasks: usize,
    task_seconds: f64,
    agent_resources: String,
    task_resources: String,
    allocation_interval: f64,
    json: bool,
    master: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        agents: 1000,
        frameworks: 10,
        tasks: 10_000,
        task_seconds: 0.0,
        agent_resources: "cpus:16;mem:65536;disk:102400;ports:[31000-32000]".into(),
        task_resources: "cpus:0.1;mem:32".into(),
        allocation_interval: 0.1,
        json: false,
        master: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<f64>().map_err(|_| format!("{flag}: '{v}' is not a number"));
        match flag.as_str() {
            "--agents" => a.agents = num(value()?)? as usize,
            "--frameworks" => a.frameworks = num(value()?)? as usize,
            "--tasks" => a.tasks = num(value()?)? as usize,
            "--task-seconds" => a.task_seconds = num(value()?)?,
            "--agent-resources" => a.agent_resources = value()?,
            "--task-resources" => a.task_resources = value()?,
            "--allocation-interval" => a.allocation_interval = num(value()?)?,
            "--master" => a.master = Some(value()?),
            "--json" => a.json = true,
            // cargo bench passes --bench to harness=false targets.
            "--bench" => {}
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.agents == 0 || a.frameworks == 0 {
        return Err("--agents and --frameworks must be at least 1".into());
    }
    Ok(a)
}

/// Peak RSS of a process, sampled.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(15050)
}

#[derive(Default)]
struct Stats {
    registered: AtomicUsize,
    running: AtomicUsize,
    offers: AtomicU64,
    accepts_sent: Mutex<HashMap<String, Instant>>,
    latencies_us: Mutex<Vec<u64>>,
    first_accept: Mutex<Option<Instant>>,
    last_running: Mutex<Option<Instant>>,
}

async fn simulated_agent(
    channel: Channel,
    index: usize,
    resources: Vec<v1::Resource>,
    task_seconds: f64,
    stats: Arc<Stats>,
) -> Result<(), tonic::Status> {
    let mut client = AgentControlClient::new(channel);
    let resp = client
        .register(v1::RegisterAgentRequest {
            agent_info: Some(v1::AgentInfo {
                hostname: format!("sim-{index}"),
                resources,
                ..Default::default()
            }),
            join_token: String::new(),
        })
        .await?
        .into_inner();
    let agent_id = resp.agent_id;
    let (tx, rx) = mpsc::channel::<v1::AgentMessage>(1024);
    let hello = agent_message::Message::Hello(agent_message::Hello {
        agent_id: agent_id.clone(),
    });
    let _ = tx.send(v1::AgentMessage { message: Some(hello) }).await;
    let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
    stats.registered.fetch_add(1, Ordering::Relaxed);
    let heartbeat = Duration::from_secs_f64(resp.heartbeat_interval_seconds.max(0.5));
    let beat_tx = tx.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(heartbeat).await;
            let m = agent_message::Message::Heartbeat(agent_message::Heartbeat { usage: vec![] });
            if beat_tx.send(v1::AgentMessage { message: Some(m) }).await.is_err() {
                return;
            }
        }
    });
    let update = |fw: &str, task: &str, state: v1::TaskState| v1::AgentMessage {
        message: Some(agent_message::Message::StatusUpdate(v1::StatusUpdate {
            framework_id: fw.to_string(),
            status: Some(v1::TaskStatus {
                task_id: task.to_string(),
                state: state as i32,
                source: v1::StatusSource::SourceExecutor as i32,
                uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
                ..Default::default()
            }),
        })),
    };
    while let Ok(Some(m)) = inbound.message().await {
        match m.message {
            Some(master_message::Message::RunTask(r)) => {
                let fw = r.framework.map(|f| f.id).unwrap_or_default();
                let task = r.task.map(|t| t.task_id).unwrap_or_default();
                let _ = tx.send(update(&fw, &task, v1::TaskState::TaskRunning)).await;
                if task_seconds > 0.0 {
                    let tx = tx.clone();
                    let finished = update(&fw, &task, v1::TaskState::TaskFinished);
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs_f64(task_seconds)).await;
                        let _ = tx.send(finished).await;
                    });
                }
            }
            Some(master_message::Message::KillTask(k)) => {
                let _ = tx.send(update(&k.framework_id, &k.task_id, v1::TaskState::TaskKilled)).await;
            }
            _ => {}
        }
    }
    Ok(())
}

async fn simulated_framework(
    channel: Channel,
    index: usize,
    target: usize,
    needs: Resources,
    stats: Arc<Stats>,
    done: Arc<tokio::sync::Notify>,
) -> Result<(), tonic::Status> {
    let mut client = SchedulerClient::new(channel);
    let mut events = client
        .subscribe(v1::SubscribeRequest {
            framework_info: Some(v1::FrameworkInfo {
                name: format!("sim-fw-{index}"),
                roles: vec![format!("role-{}", index % 10)],
                failover_timeout_seconds: 600.0,
                ..Default::default()
            }),
            suppressed_roles: vec![],
        })
        .await?
        .into_inner();
    let mut header = v1::CallHeader::default();
    let mut launched = 0usize;
    let mut running = 0usize;
    let mut seq = 0u64;
    while let Some(e) = events.message().await? {
        match e.event {
            Some(v1::event::Event::Subscribed(s)) => {
                header = v1::CallHeader {
                    framework_id: s.framework_id,
                    stream_id: s.stream_id,
                };
            }
            Some(v1::event::Event::Offers(o)) => {
                stats.offers.fetch_add(o.offers.len() as u64, Ordering::Relaxed);
                for offer in o.offers {
                    let mut left = Resources::from_proto(&offer.resources).unwrap_or_default();
                    let mut tasks = Vec::new();
                    while launched < target {
                        let Some(taken) = left.take_flattened(&needs) else { break };
                        seq += 1;
                        tasks.push(v1::TaskInfo {
                            name: "sim".into(),
                            task_id: format!("f{index}-t{seq}"),
                            agent_id: offer.agent_id.clone(),
                            resources: taken.to_proto(),
                            command: Some(v1::CommandInfo {
                                shell: true,
                                value: "true".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        });
                        launched += 1;
                    }
                    let now = Instant::now();
                    {
                        let mut sent = stats.accepts_sent.lock().unwrap_or_else(|p| p.into_inner());
                        for t in &tasks {
                            sent.insert(t.task_id.clone(), now);
                        }
                    }
                    {
                        let mut first = stats.first_accept.lock().unwrap_or_else(|p| p.into_inner());
                        first.get_or_insert(now);
                    }
                    let ops = if tasks.is_empty() {
                        vec![]
                    } else {
                        vec![v1::Operation {
                            operation: Some(v1::operation::Operation::Launch(v1::operation::Launch { tasks })),
                        }]
                    };
                    let mut c = client.clone();
                    let req = v1::AcceptRequest {
                        header: Some(header.clone()),
                        offer_ids: vec![offer.id],
                        operations: ops,
                        filters: Some(v1::Filters {
                            refuse_seconds: Some(if launched >= target { 3600.0 } else { 1.0 }),
                        }),
                    };
                    tokio::spawn(async move {
                        let _ = c.accept(req).await;
                    });
                }
            }
            Some(v1::event::Event::Update(u)) => {
                let Some(st) = u.status else { continue };
                if st.state == v1::TaskState::TaskRunning as i32 {
                    let now = Instant::now();
                    let sent = stats
                        .accepts_sent
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&st.task_id);
                    if let Some(at) = sent {
                        stats
                            .latencies_us
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(now.duration_since(at).as_micros() as u64);
                        running += 1;
                        stats.running.fetch_add(1, Ordering::Relaxed);
                        *stats.last_running.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
                    }
                }
                if !st.uuid.is_empty() {
                    let mut c = client.clone();
                    let req = v1::AcknowledgeRequest {
                        header: Some(header.clone()),
                        agent_id: st.agent_id,
                        task_id: st.task_id,
                        uuid: st.uuid,
                    };
                    tokio::spawn(async move {
                        let _ = c.acknowledge(req).await;
                    });
                }
                if running >= target {
                    let _ = client
                        .suppress(v1::SuppressRequest {
                            header: Some(header.clone()),
                            roles: vec![],
                        })
                        .await;
                    done.notify_one();
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("load: {e}");
            std::process::exit(2);
        }
    };
    let dir = std::env::temp_dir().join(format!("agora-load-{}", std::process::id()));
    let mut child = None;
    let master = match &args.master {
        Some(m) => m.clone(),
        None => {
            let port = free_port();
            let c = std::process::Command::new(env!("CARGO_BIN_EXE_agora"))
                .args(["master", "--ip", "127.0.0.1", "--port", &port.to_string(), "--work-dir"])
                .arg(&dir)
                .args(["--allocation-interval", &args.allocation_interval.to_string(), "--agent-timeout", "600"])
                .env("RUST_LOG", "warn")
                .stderr(std::process::Stdio::null())
                .spawn();
            match c {
                Ok(c) => child = Some(c),
                Err(e) => {
                    eprintln!("load: cannot start the master: {e}");
                    std::process::exit(1);
                }
            }
            format!("127.0.0.1:{port}")
        }
    };
    let pid = child.as_ref().map(|c| c.id());
    let peak = Arc::new(Mutex::new(0.0f64));
    if let Some(pid) = pid {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some(r) = rss_mib(pid) {
                    let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                    *p = p.max(r);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let endpoint = format!("http://{master}");
    let mut channels = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for _ in 0..(args.agents / 100 + 1).min(64) {
        loop {
            match Channel::from_shared(endpoint.clone()) {
                Ok(e) => match e.connect().await {
                    Ok(c) => {
                        channels.push(c);
                        break;
                    }
                    Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                    Err(e) => {
                        eprintln!("load: cannot reach the master at {master}: {e}");
                        std::process::exit(1);
                    }
                },
                Err(e) => {
                    eprintln!("load: bad master address {master}: {e}");
                    std::process::exit(2);
                }
            }
        }
    }
    let resources = match Resources::parse(&args.agent_resources) {
        Ok(r) => r.to_proto(),
        Err(e) => {
            eprintln!("load: --agent-resources: {e}");
            std::process::exit(2);
        }
    };
    let needs = match Resources::parse(&args.task_resources) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("load: --task-resources: {e}");
            std::process::exit(2);
        }
    };
    let stats = Arc::new(Stats::default());
    let t0 = Instant::now();
    for i in 0..args.agents {
        let ch = channels[i % channels.len()].clone();
        let stats = stats.clone();
        let res = resources.clone();
        let secs = args.task_seconds;
        tokio::spawn(async move {
            if let Err(e) = simulated_agent(ch, i, res, secs, stats).await {
                eprintln!("load: agent {i}: {}", e.message());
            }
        });
    }
    while stats.registered.load(Ordering::Relaxed) < args.agents {
        if t0.elapsed() > Duration::from_secs(300) {
            eprintln!("load: only {} agents registered in 300 s", stats.registered.load(Ordering::Relaxed));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let register_seconds = t0.elapsed().as_secs_f64();
    let done = Arc::new(tokio::sync::Notify::new());
    let per = args.tasks / args.frameworks;
    let t1 = Instant::now();
    for f in 0..args.frameworks {
        let target = if f + 1 == args.frameworks { args.tasks - per * (args.frameworks - 1) } else { per };
        let ch = channels[f % channels.len()].clone();
        let (stats, done, needs) = (stats.clone(), done.clone(), needs.clone());
        tokio::spawn(async move {
            if let Err(e) = simulated_framework(ch, f, target, needs, stats, done).await {
                eprintln!("load: framework {f}: {}", e.message());
            }
        });
    }
    let limit = Duration::from_secs(600);
    while stats.running.load(Ordering::Relaxed) < args.tasks && t1.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let running = stats.running.load(Ordering::Relaxed);
    let first = *stats.first_accept.lock().unwrap_or_else(|p| p.into_inner());
    let last = *stats.last_running.lock().unwrap_or_else(|p| p.into_inner());
    let launch_window = match (first, last) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64().max(1e-6),
        _ => 0.0,
    };
    let mut lat = stats.latencies_us.lock().unwrap_or_else(|p| p.into_inner()).clone();
    lat.sort_unstable();
    let total = t1.elapsed().as_secs_f64();
    let result = serde_json::json!({
        "agents": args.agents,
        "frameworks": args.frameworks,
        "tasks": args.tasks,
        "tasks_running": running,
        "register_seconds": register_seconds,
        "launch_seconds": launch_window,
        "launches_per_second": if launch_window > 0.0 { running as f64 / launch_window } else { 0.0 },
        "launch_latency_ms": { "p50": percentile(&lat, 50.0), "p99": percentile(&lat, 99.0), "max": percentile(&lat, 100.0) },
        "offers_per_second": stats.offers.load(Ordering::Relaxed) as f64 / total.max(1e-6),
        "master_rss_mib": *peak.lock().unwrap_or_else(|p| p.into_inner()),
    });
    if args.json {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result).unwrap_or_default());
    }
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    if running < args.tasks {
        std::process::exit(1);
    }
}
