//! Master processes started by the driver: `agora master` (this executable) on a free loopback
//! port, waited for on `/health`, sampled for peak RSS and CPU from `/proc`, and stopped at the
//! end (reporting any that exited by itself).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;

use super::args::LoadArgs;
use super::counters::Shared;

/// A master started by the driver.
pub(super) struct MasterProc {
    pub(super) child: tokio::process::Child,
    pub(super) pid: Option<u32>,
    /// `host:port`.
    pub(super) address: String,
    /// Peak `VmRSS`, KiB.
    pub(super) peak_kib: Arc<AtomicU64>,
    pub(super) log_path: std::path::PathBuf,
    /// How it ended when it exited before the driver stopped it.
    pub(super) exited: Option<String>,
    /// The driver killed it (`--failover`).
    pub(super) killed: bool,
}

/// Starts `agora master` (this executable) on a free loopback port, its work dir and log under
/// `dir` (numbered `n`), and waits for `/health`.
pub(super) async fn start_master(
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
        // In clear unless `--tls` (then the master makes its cluster CA).
        .args((!args.tls).then_some("--insecure"))
        .env("RUST_LOG", &args.master_log)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().context("master log file")?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting `agora master`")?;
    let address = format!("127.0.0.1:{port}");
    let url = format!("{}://{address}/health", agora_net::tls::scheme(args.tls));
    let ca_file = dir.join(format!("master-{n}")).join("ca.pem");
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let client = match args.tls {
            false => Some(reqwest::Client::new()),
            true => std::fs::read(&ca_file)
                .ok()
                .and_then(|pem| reqwest::Certificate::from_pem(&pem).ok())
                .and_then(|ca| {
                    reqwest::Client::builder()
                        .add_root_certificate(ca)
                        .tls_built_in_root_certs(false)
                        .build()
                        .ok()
                }),
        };
        let answer = match &client {
            Some(c) => c.get(&url).send().await.ok(),
            None => None,
        };
        if let Some(r) = answer {
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
pub(super) fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU seconds of a process, from `/proc/<pid>/stat` (assumes 100 ticks/s, the
/// Linux default).
pub(super) fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Samples the peak `VmRSS` of each master into its `peak_kib` every 100 ms, until `stop`.
pub(super) fn sample_peak_rss(masters: &[MasterProc], stop: &watch::Receiver<bool>) {
    for m in masters {
        let Some(pid) = m.pid else { continue };
        let peak = m.peak_kib.clone();
        let mut stop = stop.clone();
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
}

/// Stops every master (notes first whether it had exited by itself) and reports those that did
/// in `shared.errors`, with the end of their logs on stderr.
pub(super) async fn stop_masters(masters: &mut [MasterProc], shared: &Shared) {
    for m in masters.iter_mut() {
        if m.exited.is_none() && !m.killed {
            if let Ok(Some(status)) = m.child.try_wait() {
                m.exited = Some(status.to_string());
            }
        }
        let _ = m.child.start_kill();
        let _ = m.child.wait().await;
    }
    // A master that exited by itself is a finding of the run: say so, with the end of its log.
    for m in masters.iter() {
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
}
