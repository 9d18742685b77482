//! `agora bench load`: a load driver. It starts a real master as a child process (or uses
//! `--master ADDR`), then simulates many agents and frameworks in this one process, talking to the
//! master over real gRPC on loopback:
//!
//! ```text
//!  sim agents (100 per HTTP/2 connection)        sim frameworks (one connection each)
//!  Register → Session(Hello, Heartbeat,           Subscribe → Offers → Accept (pack tasks)
//!            StatusUpdate RUNNING/FINISHED)                 → Update → Acknowledge
//!             ▲ RunTask / KillTask / AcknowledgeUpdate        │
//!             └──────────────── agora master ◄────────────────┘
//! ```
//!
//! It measures registration time, launch throughput and latency (accept sent → `TASK_RUNNING`
//! received by the framework), offers per second and the master's peak RSS (sampled from
//! `/proc/<pid>/status` every 100 ms), and prints a table or one JSON object (`--json`).
//!
//! `--failover --zk zk://…/path` starts two masters electing a leader through ZooKeeper (under a
//! path of their own, `<path>-<random>`); agents and frameworks find the leader with
//! `agora_ha::detector`. Once every task runs (and its update is acknowledged), the driver
//! kills the leader with SIGKILL and measures `failover_seconds`: leader killed → every simulated
//! agent re-registered, with its running tasks, on the new leader.

mod agents;
mod frameworks;
mod services;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use super::seconds;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Simulated agents and frameworks against a real master over gRPC on loopback.
    Load(LoadArgs),
    /// The services framework (a real `agora services`) on simulated agents: one app of many
    /// instances, many apps, or `/v2/apps?embed=apps.tasks` latency.
    Services(services::ServicesBenchArgs),
}

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Simulated frameworks (each accepts every fitting offer).
    #[arg(long, default_value_t = 10)]
    pub frameworks: usize,
    /// Tasks to launch in total, over all frameworks.
    #[arg(long, default_value_t = 10_000)]
    pub tasks: usize,
    /// A task finishes (TASK_FINISHED) this long after it started running.
    #[arg(long, default_value = "1", value_parser = seconds)]
    pub task_seconds: Duration,
    /// Use this running master (`host:port`) instead of starting one; no RSS figure then.
    #[arg(long)]
    pub master: Option<String>,
    /// `--allocation-interval` of the master started by the driver.
    #[arg(long, default_value = "0.1", value_parser = seconds)]
    pub allocation_interval: Duration,
    /// CPUs of each simulated agent.
    #[arg(long, default_value_t = 8.0)]
    pub agent_cpus: f64,
    /// Memory (MiB) of each simulated agent.
    #[arg(long, default_value_t = 16384.0)]
    pub agent_mem: f64,
    /// CPUs of each task.
    #[arg(long, default_value_t = 0.1)]
    pub task_cpus: f64,
    /// Memory (MiB) of each task.
    #[arg(long, default_value_t = 32.0)]
    pub task_mem: f64,
    /// At most this many tasks are launched on one offer (spreads tasks over agents).
    #[arg(long, default_value_t = 10)]
    pub tasks_per_offer: usize,
    /// Pace the accepts to this many tasks per second over all frameworks (offers are held until
    /// their turn); without it every fitting offer is accepted at once.
    #[arg(long)]
    pub launch_rate: Option<f64>,
    /// Simulated agents sharing one HTTP/2 connection (one stream each).
    #[arg(long, default_value_t = 100)]
    pub agents_per_connection: usize,
    /// Give up after this long (the figures gathered so far are still printed).
    #[arg(long, default_value = "600", value_parser = seconds)]
    pub timeout: Duration,
    /// `RUST_LOG` of the master started by the driver.
    #[arg(long, default_value = "warn")]
    pub master_log: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Start two masters (leader and standby) under ZooKeeper (`--zk`), launch the tasks, kill
    /// the leader with SIGKILL and measure how long until every agent has re-registered with its
    /// tasks on the new leader. Tasks keep running until the end (`--task-seconds` is not used).
    #[arg(long, requires = "zk")]
    pub failover: bool,
    /// ZooKeeper for `--failover`, e.g. `zk://127.0.0.1:2181/agora-bench`; a random suffix is
    /// appended to the path so that every run starts from an empty registry.
    #[arg(long, env = "AGORA_BENCH_ZK")]
    pub zk: Option<String>,
    /// `--zk-session-timeout` of the masters. A leader killed with SIGKILL leaves its election
    /// znode until its session expires, so this bounds the failover from below; ZooKeeper
    /// raises it to at least 2 × its tickTime (4 s with the default tickTime of 2 s).
    #[arg(long, default_value = "4", value_parser = seconds)]
    pub zk_session_timeout: Duration,
}

/// Where the simulated agents find the leading master, and their HTTP/2 connections to it.
pub(crate) struct Cluster {
    /// The leader's `host:port`: fixed, or followed in ZooKeeper under `--failover`.
    pub leader: watch::Receiver<String>,
    /// Agents sharing one connection.
    per: usize,
    /// Connections by (agent group, address), made lazily: a group whose agents move to a new
    /// leader opens one new connection there.
    pool: std::sync::Mutex<HashMap<(usize, String), Channel>>,
}

impl Cluster {
    /// The connection agent `i` uses to reach `address`.
    ///
    /// # Errors
    /// `address` is not a valid endpoint.
    pub fn channel(&self, i: usize, address: &str) -> anyhow::Result<Channel> {
        let key = (i / self.per.max(1), address.to_string());
        let mut pool = self
            .pool
            .lock()
            .map_err(|_| anyhow::anyhow!("the connection pool lock is poisoned"))?;
        if let Some(c) = pool.get(&key) {
            return Ok(c.clone());
        }
        let c = endpoint(address)?.connect_lazy();
        pool.insert(key, c.clone());
        Ok(c)
    }
}

/// Counters and per-task timestamps shared by all simulated agents and frameworks.
pub(crate) struct Shared {
    pub args: LoadArgs,
    pub start: Instant,
    /// Agents registered with an open session.
    pub registered: AtomicUsize,
    /// Task indices handed out to frameworks so far (≤ `args.tasks`).
    pub claimed: AtomicUsize,
    /// When the first paced accept was due (`--launch-rate`).
    pub pace_start: std::sync::OnceLock<tokio::time::Instant>,
    /// Per task: nanoseconds since `start` at which its accept was sent (0: not yet).
    pub accept_ns: Vec<AtomicU64>,
    /// Per task: nanoseconds since `start` at which TASK_RUNNING reached its framework (0: not yet).
    pub running_ns: Vec<AtomicU64>,
    /// Per task: a terminal update has been counted (updates may be resent).
    pub ended: Vec<std::sync::atomic::AtomicBool>,
    pub running: AtomicUsize,
    pub finished: AtomicUsize,
    /// Tasks that ended in a state other than FINISHED.
    pub failed: AtomicUsize,
    pub offers: AtomicUsize,
    pub accept_errors: AtomicUsize,
    pub acks_sent: AtomicUsize,
    /// Updates received with a uuid (each needs an acknowledgement).
    pub acks_wanted: AtomicUsize,
    /// Updates the simulated agents resent because no acknowledgement came in time.
    pub updates_resent: AtomicUsize,
    /// Agents or frameworks whose stream ended early, with the first reason.
    pub errors: std::sync::Mutex<Vec<String>>,
    /// `--failover`: when the leader was killed (0: not yet).
    pub killed_ns: AtomicU64,
    /// `--failover`: agents re-registered (session open) since the kill, and the tasks they
    /// reported.
    pub reregistered: AtomicUsize,
    pub reregistered_tasks: AtomicUsize,
    /// `--failover`: when the last of them did.
    pub reregistered_last_ns: AtomicU64,
}

impl Shared {
    pub fn new(args: LoadArgs) -> Shared {
        Shared {
            accept_ns: (0..args.tasks).map(|_| AtomicU64::new(0)).collect(),
            running_ns: (0..args.tasks).map(|_| AtomicU64::new(0)).collect(),
            ended: (0..args.tasks)
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            args,
            start: Instant::now(),
            registered: AtomicUsize::new(0),
            claimed: AtomicUsize::new(0),
            pace_start: std::sync::OnceLock::new(),
            running: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            offers: AtomicUsize::new(0),
            accept_errors: AtomicUsize::new(0),
            acks_sent: AtomicUsize::new(0),
            acks_wanted: AtomicUsize::new(0),
            updates_resent: AtomicUsize::new(0),
            errors: std::sync::Mutex::new(Vec::new()),
            killed_ns: AtomicU64::new(0),
            reregistered: AtomicUsize::new(0),
            reregistered_tasks: AtomicUsize::new(0),
            reregistered_last_ns: AtomicU64::new(0),
        }
    }

    pub fn since_start_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The leader has been killed on purpose: broken streams are expected from now on.
    pub fn killed(&self) -> bool {
        self.killed_ns.load(Ordering::Relaxed) > 0
    }

    pub fn error(&self, e: String) {
        if let Ok(mut v) = self.errors.lock() {
            if v.len() < 20 {
                v.push(e);
            }
        }
    }
}

/// Runs a `bench` subcommand.
///
/// # Errors
/// The master cannot be started or reached, or the run did not complete within `--timeout`.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Load(args) => load(args).await,
        BenchCommand::Services(args) => services::run(args).await,
    }
}

/// A master started by the driver.
struct MasterProc {
    child: tokio::process::Child,
    pid: Option<u32>,
    /// `host:port`.
    address: String,
    /// Peak `VmRSS`, KiB.
    peak_kib: Arc<AtomicU64>,
    log_path: std::path::PathBuf,
    /// How it ended when it exited before the driver stopped it.
    exited: Option<String>,
    /// The driver killed it (`--failover`).
    killed: bool,
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.agents > 0, "--agents must be at least 1");
    anyhow::ensure!(args.frameworks > 0, "--frameworks must be at least 1");
    anyhow::ensure!(
        args.task_cpus > 0.0 && args.task_mem > 0.0,
        "--task-cpus and --task-mem must be > 0"
    );
    anyhow::ensure!(
        !(args.failover && args.master.is_some()),
        "--failover starts its own two masters: drop --master"
    );
    let per_agent = ((args.agent_cpus / args.task_cpus + 1e-9).floor())
        .min((args.agent_mem / args.task_mem + 1e-9).floor());
    anyhow::ensure!(
        per_agent * args.agents as f64 >= args.tasks as f64,
        "{} agents hold at most {} tasks at once; raise --agents or --agent-cpus/--agent-mem",
        args.agents,
        per_agent * args.agents as f64
    );

    let shared = Arc::new(Shared::new(args.clone()));

    let tmp = tempfile::tempdir().context("a temporary work dir")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut masters: Vec<MasterProc> = Vec::new();
    // Under --failover: the ZooKeeper servers and the run's own path (removed at the end).
    let mut zk_run: Option<(String, String)> = None;
    let (leader_tx, leader_rx) = watch::channel(String::new());
    // When the driver first saw the new leader in ZooKeeper after the kill (ns since start).
    let new_leader_ns = Arc::new(AtomicU64::new(0));
    let started: anyhow::Result<()> = async {
        match (&args.master, args.failover) {
            (Some(a), _) => {
                leader_tx.send_replace(a.clone());
            }
            (None, false) => {
                masters.push(start_master(&args, tmp.path(), 0, &[]).await?);
                leader_tx.send_replace(masters[0].address.clone());
            }
            (None, true) => {
                let zk = args.zk.as_deref().unwrap_or_default();
                let spec = agora_ha::detector::MasterSpec::parse(zk)
                    .with_context(|| format!("--zk {zk}"))?;
                let agora_ha::detector::MasterSpec::ZooKeeper { servers, path } = spec else {
                    anyhow::bail!("--zk '{zk}' must be a zk://host:port/path URL");
                };
                let path = format!("{path}-{:x}", unique());
                let url = format!("zk://{servers}{path}");
                zk_run = Some((servers, path));
                let extra = [
                    "--zk".to_string(),
                    url.clone(),
                    "--zk-session-timeout".to_string(),
                    args.zk_session_timeout.as_secs_f64().to_string(),
                ];
                // One after the other, so that the first joins the election first and leads.
                for n in 0..2 {
                    masters.push(start_master(&args, tmp.path(), n, &extra).await?);
                }
                let mut detector = agora_ha::detector::Detector::new(&url)?;
                let leader = detector.wait_for_leader(Duration::from_secs(30)).await?;
                leader_tx.send_replace(leader);
                // Follow the leader in ZooKeeper, as every agent's detector would. One detector
                // for the whole process: 10,000 ZooKeeper sessions would measure ZooKeeper.
                let shared = shared.clone();
                let new_leader_ns = new_leader_ns.clone();
                let mut stop = stop_rx.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                            _ = stop.changed() => return,
                        }
                        let Ok(now) = detector.leader().await else {
                            continue;
                        };
                        let changed = leader_tx.send_if_modified(|l| {
                            let changed = *l != now;
                            *l = now;
                            changed
                        });
                        if changed && shared.killed() {
                            let _ = new_leader_ns.compare_exchange(
                                0,
                                shared.since_start_ns(),
                                Ordering::Relaxed,
                                Ordering::Relaxed,
                            );
                        }
                    }
                });
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = started {
        for m in &mut masters {
            let _ = m.child.start_kill();
        }
        return Err(e);
    }

    // Peak RSS of each master, sampled every 100 ms.
    for m in &masters {
        let Some(pid) = m.pid else { continue };
        let peak = m.peak_kib.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Some(kib) = proc_status_kib(pid, "VmRSS:") {
                            peak.fetch_max(kib, Ordering::Relaxed);
                        }
                    }
                    _ = stop.changed() => return,
                }
            }
        });
    }

    let cluster = Arc::new(Cluster {
        leader: leader_rx,
        per: args.agents_per_connection.max(1),
        pool: std::sync::Mutex::new(HashMap::new()),
    });
    let deadline = Instant::now() + args.timeout;
    let result = drive(&args, &cluster, &shared, &mut masters, stop_rx, deadline).await;
    let _ = stop_tx.send(true);

    // The master that led first (its CPU is unknown once it was killed).
    let first_leader_pid = masters.first().and_then(|m| m.pid);
    let master_cpu = first_leader_pid.and_then(proc_cpu_seconds);
    let driver_cpu = proc_cpu_seconds(std::process::id());
    let new_leader = masters.get(1);
    let new_leader_cpu = new_leader.and_then(|m| m.pid).and_then(proc_cpu_seconds);
    let new_leader_rss = new_leader.map(|m| m.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0);
    for m in &mut masters {
        if m.exited.is_none() && !m.killed {
            if let Ok(Some(status)) = m.child.try_wait() {
                m.exited = Some(status.to_string());
            }
        }
        let _ = m.child.start_kill();
        let _ = m.child.wait().await;
    }
    // A master that exited by itself is a finding of the run: say so, with the end of its log.
    for m in &masters {
        if let Some(status) = &m.exited {
            shared.error(format!("master {} exited by itself ({status})", m.address));
            let log = std::fs::read_to_string(&m.log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!(
                "bench: master {} exited by itself ({status}); the end of its log:",
                m.address
            );
            for l in tail.iter().rev() {
                eprintln!("  {l}");
            }
        }
    }
    if let Some((servers, path)) = &zk_run {
        // Best effort: the run's registry (a few MiB at 10,000 agents) would otherwise stay.
        if let Err(e) = zk_remove_tree(servers, path).await {
            eprintln!("bench: could not remove {path} from ZooKeeper: {e:#}");
        }
    }
    let mut phases = result?;
    if let Some(f) = phases.failover.as_mut() {
        let killed = shared.killed_ns.load(Ordering::Relaxed);
        let seen = new_leader_ns.load(Ordering::Relaxed);
        f.leader_seen_seconds = (seen > killed).then(|| (seen - killed) as f64 / 1e9);
        f.new_leader_cpu_seconds = new_leader_cpu;
        f.new_leader_rss_mib = new_leader_rss;
    }
    let report = Report::new(
        &args,
        &shared,
        &phases,
        masters.first().map(|m| m.peak_kib.load(Ordering::Relaxed)),
        master_cpu,
        driver_cpu,
    );
    if args.json {
        println!("{}", report.json());
    } else {
        report.print_table();
    }
    if let Some(why) = &phases.incomplete {
        anyhow::bail!("the run did not complete: {why}");
    }
    Ok(())
}

/// A number that differs between runs (time and pid), for the run's ZooKeeper path.
fn unique() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Deletes `path` and everything under it.
async fn zk_remove_tree(servers: &str, path: &str) -> anyhow::Result<()> {
    let client = agora_ha::detector::connect(servers, Duration::from_secs(10)).await?;
    // Depth-first listing: every node comes after its parent, so deleting in reverse order
    // deletes children first.
    let mut stack = vec![path.to_string()];
    let mut order = Vec::new();
    while let Some(p) = stack.pop() {
        if let Ok(children) = client.list_children(&p).await {
            stack.extend(children.into_iter().map(|c| format!("{p}/{c}")));
        }
        order.push(p);
    }
    for p in order.iter().rev() {
        client
            .delete(p, None)
            .await
            .with_context(|| format!("deleting {p}"))?;
    }
    Ok(())
}

/// When each phase ended, in seconds since the driver started counting.
struct Phases {
    register_seconds: f64,
    /// First accept sent.
    launch_start: f64,
    /// Last TASK_RUNNING received (or the deadline).
    launch_end: f64,
    failover: Option<Failover>,
    incomplete: Option<String>,
}

/// What `--failover` measured.
struct Failover {
    /// Leader killed → every agent re-registered on the new leader.
    seconds: f64,
    /// Leader killed → the driver saw the new leader in ZooKeeper.
    leader_seen_seconds: Option<f64>,
    reregistered: usize,
    tasks_reported: usize,
    /// The new leader's own counts (`/metrics`) once every agent re-registered.
    agents_active: Option<f64>,
    tasks_running: Option<f64>,
    new_leader_cpu_seconds: Option<f64>,
    new_leader_rss_mib: Option<f64>,
}

async fn drive(
    args: &LoadArgs,
    cluster: &Arc<Cluster>,
    shared: &Arc<Shared>,
    masters: &mut [MasterProc],
    stop: watch::Receiver<bool>,
    deadline: Instant,
) -> anyhow::Result<Phases> {
    let master_pid = masters.first().and_then(|m| m.pid);
    // Agents: a few shared HTTP/2 connections, one Session stream per agent.
    let t0 = Instant::now();
    spawn_agents(cluster, shared, &stop);
    let incomplete = |what: &str, have: usize, want: usize| {
        Some(format!("{what}: {have} of {want} before --timeout"))
    };
    let mut last_progress = Instant::now();
    loop {
        let n = shared.registered.load(Ordering::Relaxed);
        if n >= args.agents {
            break;
        }
        if Instant::now() > deadline {
            return Ok(Phases {
                register_seconds: t0.elapsed().as_secs_f64(),
                launch_start: 0.0,
                launch_end: 0.0,
                failover: None,
                incomplete: incomplete("agents registered", n, args.agents),
            });
        }
        progress(&mut last_progress, shared, master_pid);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let register_seconds = t0.elapsed().as_secs_f64();
    eprintln!(
        "bench: {} agents registered in {register_seconds:.2} s",
        args.agents
    );

    let address = cluster.leader.borrow().clone();
    for f in 0..args.frameworks {
        let channel = connect(&address).await?;
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let stopped = stop.clone();
            if let Err(e) = frameworks::run_framework(f, channel, shared.clone(), stop).await {
                // Under --failover the frameworks' work is done before the kill; their streams
                // to the killed leader break, which is not an error of the run.
                if !*stopped.borrow() && !shared.killed() {
                    shared.error(format!("framework {f}: {e:#}"));
                }
            }
        });
    }
    let mut incomplete_why = None;
    loop {
        let n = shared.running.load(Ordering::Relaxed);
        if n >= args.tasks {
            break;
        }
        if Instant::now() > deadline {
            incomplete_why = incomplete("tasks running", n, args.tasks);
            break;
        }
        progress(&mut last_progress, shared, master_pid);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ns = |v: &Vec<AtomicU64>| -> Vec<u64> {
        v.iter()
            .map(|a| a.load(Ordering::Relaxed))
            .filter(|&x| x > 0)
            .collect()
    };
    let launch_start = ns(&shared.accept_ns).into_iter().min().unwrap_or(0) as f64 / 1e9;
    let launch_end = ns(&shared.running_ns).into_iter().max().unwrap_or(0) as f64 / 1e9;
    if incomplete_why.is_none() && !args.failover {
        eprintln!(
            "bench: {} tasks running; waiting for them to finish",
            shared.running.load(Ordering::Relaxed)
        );
        loop {
            let n = shared.finished.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed);
            if n >= args.tasks {
                break;
            }
            if Instant::now() > deadline {
                incomplete_why = incomplete("tasks ended", n, args.tasks);
                break;
            }
            progress(&mut last_progress, shared, master_pid);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Let the last acknowledgements reach the master before it is stopped (or killed: an agent
    // with no unacknowledged update re-registers with exactly its running tasks).
    let until = Instant::now() + Duration::from_secs(5);
    while shared.acks_sent.load(Ordering::Relaxed) < shared.acks_wanted.load(Ordering::Relaxed)
        && Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut failover = None;
    if args.failover && incomplete_why.is_none() {
        // Give the agents' AcknowledgeUpdate messages time to arrive (not counted by the driver).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (f, why) = fail_over(args, cluster, shared, masters, deadline).await?;
        failover = Some(f);
        incomplete_why = why;
    }
    Ok(Phases {
        register_seconds,
        launch_start,
        launch_end,
        failover,
        incomplete: incomplete_why,
    })
}

/// Starts `shared.args.agents` simulated agents; a failing one is recorded in `shared.errors`.
fn spawn_agents(cluster: &Arc<Cluster>, shared: &Arc<Shared>, stop: &watch::Receiver<bool>) {
    for i in 0..shared.args.agents {
        let cluster = cluster.clone();
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let stopped = stop.clone();
            if let Err(e) = agents::run_agent(i, cluster, shared.clone(), stop).await {
                // Streams breaking while the driver stops the master are not errors.
                if !*stopped.borrow() {
                    shared.error(format!("agent {i}: {e:#}"));
                }
            }
        });
    }
}

/// Kills the leader (SIGKILL) and waits for every agent to re-register on the new one.
async fn fail_over(
    args: &LoadArgs,
    cluster: &Cluster,
    shared: &Shared,
    masters: &mut [MasterProc],
    deadline: Instant,
) -> anyhow::Result<(Failover, Option<String>)> {
    let leader = cluster.leader.borrow().clone();
    for m in masters.iter_mut() {
        if let Ok(Some(status)) = m.child.try_wait() {
            m.exited = Some(status.to_string());
        }
    }
    let Some(victim) = masters.iter_mut().find(|m| m.address == leader) else {
        anyhow::bail!("the leader {leader} is not one of the masters the driver started");
    };
    if let Some(status) = &victim.exited {
        anyhow::bail!(
            "the leader {leader} exited by itself ({status}) before the driver killed it; \
             its log: {}",
            victim.log_path.display()
        );
    }
    eprintln!(
        "bench: {} tasks running; killing the leader {leader} (SIGKILL)",
        shared.running.load(Ordering::Relaxed)
    );
    shared
        .killed_ns
        .store(shared.since_start_ns(), Ordering::Relaxed);
    // tokio's start_kill sends SIGKILL: no goodbye to ZooKeeper or to the agents.
    victim.killed = true;
    victim.child.start_kill().context("killing the leader")?;
    let _ = victim.child.wait().await;
    let mut why = None;
    let mut last = Instant::now();
    loop {
        let n = shared.reregistered.load(Ordering::Relaxed);
        if n >= args.agents {
            break;
        }
        if Instant::now() > deadline {
            why = Some(format!(
                "agents re-registered after the failover: {n} of {} before --timeout",
                args.agents
            ));
            break;
        }
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            eprintln!(
                "bench: failover t={:.1}s leader {} re-registered {n}",
                (shared.since_start_ns() - shared.killed_ns.load(Ordering::Relaxed)) as f64 / 1e9,
                cluster.leader.borrow().as_str()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed = shared.killed_ns.load(Ordering::Relaxed);
    let last_ns = shared.reregistered_last_ns.load(Ordering::Relaxed);
    let seconds = last_ns.saturating_sub(killed) as f64 / 1e9;
    eprintln!(
        "bench: {} agents re-registered {:.2} s after the leader was killed",
        shared.reregistered.load(Ordering::Relaxed),
        seconds
    );
    // The new leader's own view, to check that it holds every agent and task.
    let new_leader = cluster.leader.borrow().clone();
    let (agents_active, tasks_running) = leader_counts(&new_leader).await;
    Ok((
        Failover {
            seconds,
            leader_seen_seconds: None,
            reregistered: shared.reregistered.load(Ordering::Relaxed),
            tasks_reported: shared.reregistered_tasks.load(Ordering::Relaxed),
            agents_active,
            tasks_running,
            new_leader_cpu_seconds: None,
            new_leader_rss_mib: None,
        },
        why,
    ))
}

/// `agora_master_agents{state="active"}` and `agora_master_tasks{state="TASK_RUNNING"}` from a
/// master's `/metrics`.
async fn leader_counts(address: &str) -> (Option<f64>, Option<f64>) {
    let Ok(r) = reqwest::get(format!("http://{address}/metrics")).await else {
        return (None, None);
    };
    let Ok(text) = r.text().await else {
        return (None, None);
    };
    (
        prometheus_value(&text, "agora_master_agents{state=\"active\"}"),
        prometheus_value(&text, "agora_master_tasks{state=\"TASK_RUNNING\"}"),
    )
}

/// The value of one sample in Prometheus text.
fn prometheus_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

fn progress(last: &mut Instant, shared: &Shared, master_pid: Option<u32>) {
    if last.elapsed() < Duration::from_secs(5) {
        return;
    }
    *last = Instant::now();
    let rss = master_pid
        .and_then(|p| proc_status_kib(p, "VmRSS:"))
        .map(|k| format!(", master rss {} MiB", k / 1024))
        .unwrap_or_default();
    eprintln!(
        "bench: t={:.1}s registered {} offers {} claimed {} running {} finished {}{rss}",
        shared.start.elapsed().as_secs_f64(),
        shared.registered.load(Ordering::Relaxed),
        shared.offers.load(Ordering::Relaxed),
        shared.claimed.load(Ordering::Relaxed),
        shared.running.load(Ordering::Relaxed),
        shared.finished.load(Ordering::Relaxed),
    );
}

fn endpoint(address: &str) -> anyhow::Result<Endpoint> {
    let url = if address.starts_with("http://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    Ok(Endpoint::from_shared(url)
        .with_context(|| format!("master address {address}"))?
        .tcp_nodelay(true))
}

async fn connect(address: &str) -> anyhow::Result<Channel> {
    endpoint(address)?
        .connect()
        .await
        .with_context(|| format!("connecting to the master at {address}"))
}

/// Starts `agora master` (this executable) on a free loopback port, its work dir and log under
/// `dir` (numbered `n`), and waits for `/health`.
async fn start_master(
    args: &LoadArgs,
    dir: &Path,
    n: usize,
    extra: &[String],
) -> anyhow::Result<MasterProc> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("a free port")?;
    let exe = std::env::current_exe().context("the path of this executable")?;
    let log_path = dir.join(format!("master-{n}.log"));
    let log = std::fs::File::create(&log_path).context("master log file")?;
    let child = tokio::process::Command::new(exe)
        .args([
            "master",
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--work-dir",
            &dir.join(format!("master-{n}")).display().to_string(),
            "--allocation-interval",
            &args.allocation_interval.as_secs_f64().to_string(),
        ])
        .args(extra)
        .env("RUST_LOG", &args.master_log)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().context("master log file")?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting `agora master`")?;
    let address = format!("127.0.0.1:{port}");
    let url = format!("http://{address}/health");
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(&url).await {
            if r.status().is_success() {
                return Ok(MasterProc {
                    pid: child.id(),
                    child,
                    address,
                    peak_kib: Arc::new(AtomicU64::new(0)),
                    log_path,
                    exited: None,
                    killed: false,
                });
            }
        }
        if Instant::now() > until {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            anyhow::bail!("the master did not answer {url} within 30 s; its log:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`).
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU seconds of a process, from `/proc/<pid>/stat` (assumes 100 ticks/s, the
/// Linux default).
fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

struct Report {
    agents: usize,
    frameworks: usize,
    tasks: usize,
    running: usize,
    finished: usize,
    failed: usize,
    register_seconds: f64,
    launch_seconds: f64,
    launches_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    offers: usize,
    offers_per_second: f64,
    master_rss_mib: Option<f64>,
    master_cpu_seconds: Option<f64>,
    driver_cpu_seconds: Option<f64>,
    accept_errors: usize,
    updates_resent: usize,
    /// `--failover` figures, already as JSON fields.
    failover: Option<serde_json::Map<String, serde_json::Value>>,
    errors: Vec<String>,
}

impl Report {
    fn new(
        args: &LoadArgs,
        s: &Shared,
        p: &Phases,
        peak_rss_kib: Option<u64>,
        master_cpu_seconds: Option<f64>,
        driver_cpu_seconds: Option<f64>,
    ) -> Report {
        let mut lat: Vec<f64> = s
            .accept_ns
            .iter()
            .zip(&s.running_ns)
            .filter_map(|(a, r)| {
                let (a, r) = (a.load(Ordering::Relaxed), r.load(Ordering::Relaxed));
                (a > 0 && r >= a).then(|| (r - a) as f64 / 1e6)
            })
            .collect();
        lat.sort_by(f64::total_cmp);
        let pct = |q: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
            lat[i]
        };
        let running = s.running.load(Ordering::Relaxed);
        let launch_seconds = (p.launch_end - p.launch_start).max(1e-9);
        let offers = s.offers.load(Ordering::Relaxed);
        Report {
            agents: args.agents,
            frameworks: args.frameworks,
            tasks: args.tasks,
            running,
            finished: s.finished.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            register_seconds: p.register_seconds,
            launch_seconds,
            launches_per_second: running as f64 / launch_seconds,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            max_ms: lat.last().copied().unwrap_or(0.0),
            offers,
            offers_per_second: offers as f64 / launch_seconds,
            master_rss_mib: peak_rss_kib.map(|k| k as f64 / 1024.0),
            master_cpu_seconds,
            driver_cpu_seconds,
            accept_errors: s.accept_errors.load(Ordering::Relaxed),
            updates_resent: s.updates_resent.load(Ordering::Relaxed),
            failover: p.failover.as_ref().map(|f| {
                let r2 = |x: f64| (x * 100.0).round() / 100.0;
                let mut m = serde_json::Map::new();
                m.insert("failover_seconds".into(), r2(f.seconds).into());
                m.insert(
                    "failover_leader_seen_seconds".into(),
                    f.leader_seen_seconds.map(r2).into(),
                );
                m.insert("failover_agents_reregistered".into(), f.reregistered.into());
                m.insert("failover_tasks_reported".into(), f.tasks_reported.into());
                m.insert(
                    "failover_new_leader_agents_active".into(),
                    f.agents_active.into(),
                );
                m.insert(
                    "failover_new_leader_tasks_running".into(),
                    f.tasks_running.into(),
                );
                m.insert(
                    "failover_new_leader_cpu_seconds".into(),
                    f.new_leader_cpu_seconds.map(r2).into(),
                );
                m.insert(
                    "failover_new_leader_rss_mib".into(),
                    f.new_leader_rss_mib.map(r2).into(),
                );
                m
            }),
            errors: s.errors.lock().map(|v| v.clone()).unwrap_or_default(),
        }
    }

    fn json(&self) -> serde_json::Value {
        let r2 = |x: f64| (x * 100.0).round() / 100.0;
        let mut v = serde_json::json!({
            "agents": self.agents,
            "frameworks": self.frameworks,
            "tasks": self.tasks,
            "tasks_running": self.running,
            "tasks_finished": self.finished,
            "tasks_failed": self.failed,
            "register_seconds": r2(self.register_seconds),
            "launch_seconds": r2(self.launch_seconds),
            "launches_per_second": r2(self.launches_per_second),
            "launch_latency_ms": {"p50": r2(self.p50_ms), "p99": r2(self.p99_ms), "max": r2(self.max_ms)},
            "offers": self.offers,
            "offers_per_second": r2(self.offers_per_second),
            "master_rss_mib": self.master_rss_mib.map(r2),
            "master_cpu_seconds": self.master_cpu_seconds.map(r2),
            "driver_cpu_seconds": self.driver_cpu_seconds.map(r2),
            "accept_errors": self.accept_errors,
            "updates_resent": self.updates_resent,
            "errors": self.errors,
        });
        if let (Some(f), Some(obj)) = (&self.failover, v.as_object_mut()) {
            obj.extend(f.clone());
        }
        v
    }

    fn print_table(&self) {
        let opt = |x: Option<f64>| x.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
        println!("agents                {}", self.agents);
        println!("frameworks            {}", self.frameworks);
        println!(
            "tasks                 {} (running {}, finished {}, failed {})",
            self.tasks, self.running, self.finished, self.failed
        );
        println!("register_seconds      {:.2}", self.register_seconds);
        println!("launch_seconds        {:.2}", self.launch_seconds);
        println!("launches_per_second   {:.0}", self.launches_per_second);
        println!(
            "launch_latency_ms     p50 {:.1}  p99 {:.1}  max {:.1}",
            self.p50_ms, self.p99_ms, self.max_ms
        );
        println!(
            "offers_per_second     {:.0} ({} offers)",
            self.offers_per_second, self.offers
        );
        println!("master_rss_mib (peak) {}", opt(self.master_rss_mib));
        println!("master_cpu_seconds    {}", opt(self.master_cpu_seconds));
        println!("driver_cpu_seconds    {}", opt(self.driver_cpu_seconds));
        println!("accept_errors         {}", self.accept_errors);
        for (k, v) in self.failover.iter().flatten() {
            println!("{k:<21} {v}");
        }
        for e in &self.errors {
            println!("error                 {e}");
        }
    }
}
