//! `bench load` itself: checks the arguments, starts the master(s), then drives the run phase by
//! phase (agents registered → tasks running → tasks ended, or the failover) while printing
//! progress every 5 s, and finally stops the masters and prints the report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;

use super::agents;
use super::args::LoadArgs;
use super::cluster::{connect, Cluster};
use super::counters::Shared;
use super::failover;
use super::frameworks;
use super::processes::{self, proc_cpu_seconds, proc_status_kib, start_master, MasterProc};
use super::report::{Phases, Report};

/// Runs `bench load`: prints the report (table or `--json`) even when the run is incomplete.
///
/// # Errors
/// The arguments do not fit together, the master(s) cannot be started or reached, or the run
/// did not complete within `--timeout`.
pub(super) async fn load(args: LoadArgs) -> anyhow::Result<()> {
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
    anyhow::ensure!(
        !args.tls || (!args.failover && args.master.is_none() && args.api == "grpc"),
        "--tls is measured on the master the driver starts, with --api grpc, without --failover"
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
                zk_run = Some(
                    failover::start_masters(
                        &args,
                        tmp.path(),
                        &mut masters,
                        &shared,
                        leader_tx,
                        &new_leader_ns,
                        &stop_rx,
                    )
                    .await?,
                );
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

    processes::sample_peak_rss(&masters, &stop_rx);

    super::cluster::set_tls(None);
    if args.tls {
        let address = leader_rx.borrow().clone();
        match super::cluster::join(&tmp.path().join("master-0"), &address).await {
            Ok(tls) => super::cluster::set_tls(Some(tls)),
            Err(e) => {
                for m in &mut masters {
                    let _ = m.child.start_kill();
                }
                return Err(e.context("joining the master with its agent token"));
            }
        }
    }
    if args.master.is_none() && !args.failover {
        // What a new connection costs: TCP, the TLS handshake (with --tls), HTTP/2.
        let address = leader_rx.borrow().clone();
        let mut times = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            connect(&address).await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        eprintln!(
            "bench: a new connection (TCP{} + HTTP/2) takes {:.2} ms (median of 20)",
            if args.tls { " + TLS handshake" } else { "" },
            times[times.len() / 2]
        );
    }

    let cluster = Arc::new(Cluster::new(leader_rx, args.agents_per_connection.max(1)));
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
    processes::stop_masters(&mut masters, &shared).await;
    if let Some((servers, path)) = &zk_run {
        // Best effort: the run's registry (a few MiB at 10,000 agents) would otherwise stay.
        if let Err(e) = failover::zk_remove_tree(servers, path).await {
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

/// Starts the agents, waits for them to register, starts the frameworks, waits for every task
/// to run (and, without `--failover`, to end), then fails over under `--failover`.
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
        let mesos = args.api == "mesos";
        let channel = if mesos {
            None
        } else {
            Some(connect(&address).await?)
        };
        let shared = shared.clone();
        let stop = stop.clone();
        let address = address.clone();
        tokio::spawn(async move {
            let stopped = stop.clone();
            let run = match channel {
                Some(channel) => frameworks::run_framework(f, channel, shared.clone(), stop).await,
                None => {
                    super::mesos_framework::run_mesos_framework(f, address, shared.clone(), stop)
                        .await
                }
            };
            if let Err(e) = run {
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
        let (f, why) = failover::fail_over(args, cluster, shared, masters, deadline).await?;
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
pub(super) fn spawn_agents(
    cluster: &Arc<Cluster>,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
) {
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

/// Prints the counters to stderr, at most once every 5 s.
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
