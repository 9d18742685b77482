//! `--failover`: two masters electing a leader through ZooKeeper under a path of the run's own,
//! one detector following the leader for the whole process, the kill of the leader (SIGKILL) and
//! the wait for every agent to re-register on the new one; the run's path is removed at the end.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;

use super::args::LoadArgs;
use super::cluster::Cluster;
use super::counters::Shared;
use super::processes::{start_master, MasterProc};

/// What `--failover` measured.
pub(super) struct Failover {
    /// Leader killed → every agent re-registered on the new leader.
    pub(super) seconds: f64,
    /// Leader killed → the driver saw the new leader in ZooKeeper.
    pub(super) leader_seen_seconds: Option<f64>,
    pub(super) reregistered: usize,
    pub(super) tasks_reported: usize,
    /// The new leader's own counts (`/metrics`) once every agent re-registered.
    pub(super) agents_active: Option<f64>,
    pub(super) tasks_running: Option<f64>,
    pub(super) new_leader_cpu_seconds: Option<f64>,
    pub(super) new_leader_rss_mib: Option<f64>,
}

/// Starts two masters electing a leader through ZooKeeper (`--zk`, under a path of the run's own,
/// `<path>-<random>`), sends the leader to `leader_tx` and keeps following it there until `stop`;
/// `new_leader_ns` is set when a new leader is first seen after the kill. The masters started are
/// pushed to `masters` (also when a later step fails, so that the caller can stop them).
/// Returns the ZooKeeper servers and the run's path, to remove at the end.
///
/// # Errors
/// `--zk` is not a `zk://` URL, a master does not start, or no leader is elected within 30 s.
pub(super) async fn start_masters(
    args: &LoadArgs,
    dir: &Path,
    masters: &mut Vec<MasterProc>,
    shared: &Arc<Shared>,
    leader_tx: watch::Sender<String>,
    new_leader_ns: &Arc<AtomicU64>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<(String, String)> {
    let zk = args.zk.as_deref().unwrap_or_default();
    let spec = agora_ha::detector::MasterSpec::parse(zk).with_context(|| format!("--zk {zk}"))?;
    let agora_ha::detector::MasterSpec::ZooKeeper { servers, path } = spec else {
        anyhow::bail!("--zk '{zk}' must be a zk://host:port/path URL");
    };
    let path = format!("{path}-{:x}", unique());
    let url = format!("zk://{servers}{path}");
    let extra = [
        "--zk".to_string(),
        url.clone(),
        "--zk-session-timeout".to_string(),
        args.zk_session_timeout.as_secs_f64().to_string(),
    ];
    // One after the other, so that the first joins the election first and leads.
    for n in 0..2 {
        masters.push(start_master(args, dir, n, &extra).await?);
    }
    let mut detector = agora_ha::detector::Detector::new(&url)?;
    let leader = detector.wait_for_leader(Duration::from_secs(30)).await?;
    leader_tx.send_replace(leader);
    // Follow the leader in ZooKeeper, as every agent's detector would. One detector
    // for the whole process: 10,000 ZooKeeper sessions would measure ZooKeeper.
    let shared = shared.clone();
    let new_leader_ns = new_leader_ns.clone();
    let mut stop = stop.clone();
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
    Ok((servers, path))
}

/// Kills the leader (SIGKILL) and waits for every agent to re-register on the new one.
pub(super) async fn fail_over(
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
    let term = args.stop_signal == "term";
    eprintln!(
        "bench: {} tasks running; stopping the leader {leader} ({})",
        shared.running.load(Ordering::Relaxed),
        if term { "SIGTERM" } else { "SIGKILL" }
    );
    shared
        .killed_ns
        .store(shared.since_start_ns(), Ordering::Relaxed);
    victim.killed = true;
    if term {
        // A planned stop: the master resigns from the election, then exits by itself.
        let pid = victim.child.id().context("the leader's pid")?;
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("kill -TERM")?;
        anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
    } else {
        // tokio's start_kill sends SIGKILL: no goodbye to ZooKeeper or to the agents.
        victim.child.start_kill().context("killing the leader")?;
    }
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

/// A number that differs between runs (time and pid), for the run's ZooKeeper path.
fn unique() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Deletes `path` and everything under it.
pub(super) async fn zk_remove_tree(servers: &str, path: &str) -> anyhow::Result<()> {
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
