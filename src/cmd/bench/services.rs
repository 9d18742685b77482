//! `agora bench services`: the services framework under load. The driver starts a real master
//! and a real `agora services` (child processes of this executable) and simulated agents (those of
//! `agora bench load`, whose tasks run until the end), then drives the Marathon API over HTTP:
//!
//! - `one-app`: one app of `--instances` instances: `POST /v2/apps` → `tasksRunning` of
//!   `GET /v2/apps/ID` reaches `--instances`;
//! - `many-apps`: `--apps` apps of one instance each, posted by `--concurrency` clients →
//!   the sum of `tasksRunning` over `GET /v2/apps` reaches `--apps`;
//! - `embed`: `--tasks` tasks running in `--embed-apps` apps, then `--requests` sequential
//!   `GET /v2/apps?embed=apps.tasks`, timed from request sent to body read.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::args::{LoadArgs, ServicesBenchArgs};
use super::cluster::Cluster;
use super::counters::Shared;
use super::load::spawn_agents;
use super::processes::{proc_cpu_seconds, proc_status_kib, start_master, MasterProc};

/// Runs one scenario.
///
/// # Errors
/// Bad flags; a process that cannot be started; an API call answered with an error; the
/// scenario not done within `--timeout`.
pub async fn run(args: ServicesBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.agents > 0, "--agents must be at least 1");
    anyhow::ensure!(
        args.task_cpus > 0.0 && args.task_mem > 0.0,
        "--task-cpus and --task-mem must be > 0"
    );
    let wanted = match args.scenario.as_str() {
        "one-app" => args.instances,
        "many-apps" => args.apps,
        _ => args.tasks,
    };
    anyhow::ensure!(wanted > 0, "the scenario needs at least one task");
    anyhow::ensure!(
        args.concurrency > 0 && args.embed_apps > 0 && args.requests > 0,
        "--concurrency, --embed-apps and --requests must be at least 1"
    );
    let per_agent = ((args.agent_cpus / args.task_cpus + 1e-9).floor())
        .min((args.agent_mem / args.task_mem + 1e-9).floor());
    anyhow::ensure!(
        per_agent * args.agents as f64 >= wanted as f64,
        "{} agents hold at most {} tasks; raise --agents",
        args.agents,
        per_agent * args.agents as f64
    );
    // The simulated agents of `bench load`, with tasks that never finish by themselves.
    let load = LoadArgs {
        agents: args.agents,
        frameworks: 0,
        tasks: 0,
        task_seconds: Duration::from_secs(365 * 24 * 3600),
        master: None,
        allocation_interval: args.allocation_interval,
        agent_cpus: args.agent_cpus,
        agent_mem: args.agent_mem,
        task_cpus: args.task_cpus,
        task_mem: args.task_mem,
        tasks_per_offer: 1,
        launch_rate: None,
        agents_per_connection: 100,
        timeout: args.timeout,
        master_log: args.log.clone(),
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
    let mut master = start_master(&load, tmp.path(), 0, &[]).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let result = async {
        let mut services = start_services(&args, &master.address, tmp.path()).await?;
        let r = scenario(&args, &load, &master, &services, stop_rx).await;
        let _ = services.child.start_kill();
        let _ = services.child.wait().await;
        r
    }
    .await;
    let _ = stop_tx.send(true);
    let _ = master.child.start_kill();
    let _ = master.child.wait().await;
    let figures = result?;
    if args.json {
        println!("{figures}");
    } else if let Value::Object(m) = &figures {
        for (k, v) in m {
            println!("{k:<28} {v}");
        }
    }
    Ok(())
}

/// `agora services` started by the driver.
struct ServicesProc {
    child: tokio::process::Child,
    pid: Option<u32>,
    /// `http://127.0.0.1:PORT`.
    url: String,
}

async fn start_services(
    args: &ServicesBenchArgs,
    master: &str,
    dir: &std::path::Path,
) -> anyhow::Result<ServicesProc> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("a free port")?;
    let exe = std::env::current_exe().context("the path of this executable")?;
    let log_path = dir.join("services.log");
    let log = std::fs::File::create(&log_path).context("services log file")?;
    let child = tokio::process::Command::new(exe)
        .args([
            "services",
            "--insecure",
            "--master",
            master,
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--work-dir",
            &dir.join("services").display().to_string(),
        ])
        .env("RUST_LOG", &args.log)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().context("services log file")?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting `agora services`")?;
    let url = format!("http://127.0.0.1:{port}");
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{url}/ping")).await {
            if r.status().is_success() {
                return Ok(ServicesProc {
                    pid: child.id(),
                    child,
                    url,
                });
            }
        }
        if Instant::now() > until {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            anyhow::bail!(
                "`agora services` did not answer {url}/ping within 30 s; its log:\n{text}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn app(args: &ServicesBenchArgs, id: &str, instances: usize) -> Value {
    json!({
        "id": id,
        "cmd": "sleep 3600",
        "cpus": args.task_cpus,
        "mem": args.task_mem,
        "instances": instances,
    })
}

async fn post_app(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<()> {
    let r = http
        .post(format!("{url}/v2/apps"))
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {url}/v2/apps"))?;
    let status = r.status();
    if !status.is_success() {
        let text = r.text().await.unwrap_or_default();
        anyhow::bail!("POST /v2/apps of {} answered {status}: {text}", body["id"]);
    }
    Ok(())
}

/// Sum of `tasksRunning` over the apps whose id starts with `prefix` (`GET /v2/apps`).
async fn running_under(http: &reqwest::Client, url: &str, prefix: &str) -> anyhow::Result<usize> {
    let v: Value = http
        .get(format!("{url}/v2/apps"))
        .send()
        .await
        .context("GET /v2/apps")?
        .error_for_status()
        .context("GET /v2/apps")?
        .json()
        .await
        .context("GET /v2/apps: JSON body")?;
    let apps = v["apps"]
        .as_array()
        .context("GET /v2/apps: no `apps` array")?;
    Ok(apps
        .iter()
        .filter(|a| a["id"].as_str().is_some_and(|id| id.starts_with(prefix)))
        .filter_map(|a| a["tasksRunning"].as_u64())
        .sum::<u64>() as usize)
}

/// Polls until `want` tasks of the apps under `prefix` run; returns when that was seen.
async fn wait_running(
    http: &reqwest::Client,
    url: &str,
    prefix: &str,
    want: usize,
    deadline: Instant,
) -> anyhow::Result<Instant> {
    let mut last = Instant::now();
    loop {
        let n = running_under(http, url, prefix).await?;
        if n >= want {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{n} of {want} tasks running under {prefix} before --timeout"
        );
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            eprintln!("bench: {n} of {want} tasks running");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scenario(
    args: &ServicesBenchArgs,
    load: &LoadArgs,
    master: &MasterProc,
    services: &ServicesProc,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + args.timeout;
    let shared = Arc::new(Shared::new(load.clone()));
    let (_leader_tx, leader_rx) = watch::channel(master.address.clone());
    let cluster = Arc::new(Cluster::new(leader_rx, load.agents_per_connection));
    let peaks: Vec<Arc<std::sync::atomic::AtomicU64>> = [master.pid, services.pid]
        .into_iter()
        .map(|pid| {
            let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let p = peak.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let Some(pid) = pid else { return };
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if let Some(kib) = proc_status_kib(pid, "VmRSS:") {
                                p.fetch_max(kib, Ordering::Relaxed);
                            }
                        }
                        _ = stop.changed() => return,
                    }
                }
            });
            peak
        })
        .collect();

    let t0 = Instant::now();
    spawn_agents(&cluster, &shared, &stop);
    while shared.registered.load(Ordering::Relaxed) < args.agents {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {} agents registered before --timeout",
            shared.registered.load(Ordering::Relaxed),
            args.agents
        );
        if let Some(e) = shared.errors.lock().ok().and_then(|e| e.first().cloned()) {
            anyhow::bail!("a simulated agent failed: {e}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let register_seconds = t0.elapsed().as_secs_f64();
    eprintln!(
        "bench: {} agents registered in {register_seconds:.2} s",
        args.agents
    );

    let http = reqwest::Client::new();
    let url = services.url.as_str();
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    let mut out = json!({
        "scenario": args.scenario,
        "agents": args.agents,
        "register_seconds": r2(register_seconds),
    });
    let figures = match args.scenario.as_str() {
        "one-app" => {
            let t = Instant::now();
            post_app(&http, url, &app(args, "/bench/one", args.instances)).await?;
            let posted = t.elapsed().as_secs_f64();
            let done = wait_running(&http, url, "/bench/one", args.instances, deadline).await?;
            let s = done.duration_since(t).as_secs_f64();
            json!({
                "instances": args.instances,
                "post_seconds": r2(posted),
                "all_running_seconds": r2(s),
                "tasks_per_second": r2(args.instances as f64 / s),
            })
        }
        "many-apps" => {
            let t = Instant::now();
            let mut posters = Vec::new();
            for c in 0..args.concurrency {
                let http = http.clone();
                let url = url.to_string();
                let bodies: Vec<Value> = (c..args.apps)
                    .step_by(args.concurrency)
                    .map(|i| app(args, &format!("/bench/many/app-{i}"), 1))
                    .collect();
                posters.push(tokio::spawn(async move {
                    for b in &bodies {
                        post_app(&http, &url, b).await?;
                    }
                    anyhow::Ok(())
                }));
            }
            for p in posters {
                p.await.context("a posting client panicked")??;
            }
            let posted = t.elapsed().as_secs_f64();
            let done = wait_running(&http, url, "/bench/many/", args.apps, deadline).await?;
            let s = done.duration_since(t).as_secs_f64();
            json!({
                "apps": args.apps,
                "concurrency": args.concurrency,
                "post_seconds": r2(posted),
                "all_running_seconds": r2(s),
                "apps_per_second": r2(args.apps as f64 / s),
            })
        }
        _ => {
            let t = Instant::now();
            let per = args.tasks.div_ceil(args.embed_apps);
            let mut left = args.tasks;
            for a in 0..args.embed_apps {
                let n = per.min(left);
                left -= n;
                if n > 0 {
                    post_app(&http, url, &app(args, &format!("/bench/embed/app-{a}"), n)).await?;
                }
            }
            let done = wait_running(&http, url, "/bench/embed/", args.tasks, deadline).await?;
            let setup = done.duration_since(t).as_secs_f64();
            eprintln!(
                "bench: {} tasks running after {setup:.2} s; timing requests",
                args.tasks
            );
            let mut lat = Vec::with_capacity(args.requests);
            let mut bytes = 0;
            for _ in 0..args.requests {
                let t = Instant::now();
                let r = http
                    .get(format!("{url}/v2/apps?embed=apps.tasks"))
                    .send()
                    .await
                    .context("GET /v2/apps?embed=apps.tasks")?
                    .error_for_status()
                    .context("GET /v2/apps?embed=apps.tasks")?;
                let body = r.bytes().await.context("reading the body")?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                bytes = body.len();
                // The answer must hold every task, or the timing measures the wrong thing.
                let v: Value = serde_json::from_slice(&body).context("the body is not JSON")?;
                let tasks: usize = v["apps"]
                    .as_array()
                    .map(|apps| {
                        apps.iter()
                            .filter_map(|a| a["tasks"].as_array().map(Vec::len))
                            .sum()
                    })
                    .unwrap_or(0);
                anyhow::ensure!(
                    tasks >= args.tasks,
                    "GET /v2/apps?embed=apps.tasks listed {tasks} tasks, not {}",
                    args.tasks
                );
            }
            lat.sort_by(f64::total_cmp);
            let pct =
                |q: f64| lat[((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1];
            json!({
                "tasks": args.tasks,
                "apps": args.embed_apps,
                "setup_seconds": r2(setup),
                "requests": args.requests,
                "body_bytes": bytes,
                "embed_latency_ms": {"p50": r2(pct(0.5)), "p99": r2(pct(0.99)), "max": r2(pct(1.0))},
            })
        }
    };
    if let (Value::Object(o), Value::Object(f)) = (&mut out, figures) {
        o.extend(f);
        let mib =
            |p: &Arc<std::sync::atomic::AtomicU64>| r2(p.load(Ordering::Relaxed) as f64 / 1024.0);
        o.insert("master_rss_mib".into(), mib(&peaks[0]).into());
        o.insert("services_rss_mib".into(), mib(&peaks[1]).into());
        o.insert(
            "master_cpu_seconds".into(),
            master.pid.and_then(proc_cpu_seconds).map(r2).into(),
        );
        o.insert(
            "services_cpu_seconds".into(),
            services.pid.and_then(proc_cpu_seconds).map(r2).into(),
        );
        let errors = shared.errors.lock().map(|e| e.clone()).unwrap_or_default();
        o.insert("errors".into(), json!(errors));
    }
    Ok(out)
}
