//! The routing mesh under load, with Debian's `wrk` as the load generator: a master, three agents
//! with the mesh on their own loopback addresses (127.0.0.61–63, default connect timeout),
//! `agora services`, and a 3-instance HTTP app (`HAPROXY_0_MODE: http`, HTTP health check) of
//! nginx tasks (Debian's `nginx-light`, keep-alive) that each answer with their own task id.
//! (busybox httpd cannot be the task here: it forks per connection with a listen backlog of 9,
//! so at ~1,000 new connections/s its SYNs are dropped and connects to healthy
//! tasks time out; that is the task's limit, not the mesh's.)
//!
//! Two `wrk` runs at once through one agent's mesh address on the service port, each paced by a
//! Lua `delay()` to ~500 req/s (together ~1,000 req/s): one on keep-alive connections, one with
//! `Connection: close` (a new connection per request). The Lua script counts statuses and the
//! responding task ids (the bodies).
//!
//! - A rolling restart (`POST /v2/apps/{id}/restart`, until its deployment is gone and the old
//!   tasks with it): 0 failed requests (wrk's socket errors, timeouts and non-2xx all 0), the
//!   responding task ids are the 3 old ones and the 3 new ones, then only the new ones.
//! - SIGKILL of one task's nginx under load: 0 failed requests (a GET has no body, so a refused
//!   connect or a connection reset before the response is retried on another endpoint), and every
//!   agent's mesh lists one endpoint fewer within 2 s (the master took it out of rotation).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{agent_args, eventually, free_port, Master, Process};
use crate::mesh::{
    curl, host_port, metric, post_app, running, services_ready, start_services, until_meshed,
};

const AGENTS: [&str; 3] = ["127.0.0.61", "127.0.0.62", "127.0.0.63"];
const APP: &str = "/load/web";
/// Milliseconds each wrk connection waits before its next request.
const DELAY_MS: u32 = 70;
/// Connections of each wrk run: 2 × 40 connections / 70 ms ≈ 1,100 req/s at most.
const CONNECTIONS: u32 = 40;

/// The task: nginx (Debian's `nginx-light`) as the task's user, one process, its config, pid and
/// temp files in the sandbox, keep-alive on, answering every request with the task id.
const NGINX: &str = r#"mkdir -p tmp && printf 'daemon off;\nmaster_process off;\nworker_processes 1;\npid nginx.pid;\nerror_log stderr;\nevents { worker_connections 1024; }\nhttp { access_log off; client_body_temp_path tmp; proxy_temp_path tmp; fastcgi_temp_path tmp; uwsgi_temp_path tmp; scgi_temp_path tmp; keepalive_requests 1000000; server { listen %s; location / { return 200 "%s\\n"; } } }\n' $PORT0 $MESOS_TASK_ID > nginx.conf && exec nginx -p $PWD/ -c nginx.conf -e stderr"#;

/// The pid of the nginx task listening on `port` (its config in its sandbox says so).
fn nginx_pid(port: u64) -> Option<u32> {
    let want = format!("listen {port};");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        let args: Vec<&str> = cmd.split('\0').collect();
        if !args.first()?.ends_with("nginx") {
            return None;
        }
        let prefix = args.iter().skip_while(|a| **a != "-p").nth(1)?;
        let conf = std::fs::read_to_string(Path::new(prefix).join("nginx.conf")).ok()?;
        conf.contains(&want).then_some(pid)
    })
}

/// An agent on `ip` with the mesh on (its default connect timeout).
fn load_agent(dir: &Path, name: &str, master: &str, ip: &str, ports: &str) -> (Process, u16) {
    let http = free_port();
    let mut args = agent_args(
        dir,
        name,
        master,
        http,
        &format!("cpus:1;mem:512;ports:[{ports}]"),
        "native",
    );
    args.retain(|a| a != "--mesh=false");
    args.extend(["--mesh-http-port".to_string(), "0".to_string()]);
    for w in 0..args.len() - 1 {
        if args[w] == "--ip" {
            args[w + 1] = ip.to_string();
        }
    }
    (Process::spawn(name, &args, dir), http)
}

/// Counts statuses and bodies per thread; `done` prints them with wrk's error counts.
const SCRIPT: &str = include_str!("../../scripts/wrk-count.lua");

/// One wrk run in the background.
struct Load {
    child: Child,
    what: &'static str,
    started: Instant,
}

/// What one wrk run saw.
#[derive(Debug, Default)]
struct Seen {
    requests: u64,
    /// connect, read, write, status (non-2xx/3xx), timeout.
    errors: [u64; 5],
    statuses: BTreeMap<u16, u64>,
    bodies: BTreeMap<String, u64>,
    seconds: f64,
    raw: String,
}

impl Seen {
    fn failed(&self) -> u64 {
        // wrk's status count is the non-2xx/3xx responses counted below too.
        [0, 1, 2, 4].iter().map(|&i| self.errors[i]).sum::<u64>()
            + self
                .statuses
                .iter()
                .filter(|(s, _)| !(200..300).contains(*s))
                .map(|(_, n)| n)
                .sum::<u64>()
    }
}

impl Load {
    /// `wrk` against `url` for at most 120 s (it is stopped with SIGINT before), new connections
    /// per request when `close`.
    fn start(dir: &Path, url: &str, close: bool) -> Load {
        let script = dir.join("count.lua");
        std::fs::write(&script, SCRIPT).expect("write the wrk script");
        let child = Command::new("wrk")
            .args([
                "-t1",
                &format!("-c{CONNECTIONS}"),
                "-d120s",
                "--timeout",
                "5s",
                "-s",
            ])
            .arg(&script)
            .arg(url)
            .arg("--")
            .arg(DELAY_MS.to_string())
            .arg(if close { "close" } else { "keep-alive" })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wrk runs (apt-get install wrk)");
        Load {
            child,
            what: if close {
                "new connections"
            } else {
                "keep-alive"
            },
            started: Instant::now(),
        }
    }

    /// Stops wrk (SIGINT: it reports what it did) and parses its report.
    fn stop(self) -> Seen {
        let seconds = self.started.elapsed().as_secs_f64();
        let ok = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -INT wrk");
        let out = self.child.wait_with_output().expect("wrk's output");
        let raw = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut seen = Seen {
            seconds,
            ..Seen::default()
        };
        for line in raw.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["status", s, n] => {
                    if let (Ok(s), Ok(n)) = (s.parse(), n.parse::<u64>()) {
                        *seen.statuses.entry(s).or_default() += n;
                    }
                }
                ["body", id, n] => {
                    if let Ok(n) = n.parse::<u64>() {
                        *seen.bodies.entry(id.to_string()).or_default() += n;
                    }
                }
                ["requests", n] => seen.requests = n.parse().unwrap_or(0),
                ["errors", rest @ ..] if rest.len() == 5 => {
                    for (i, n) in rest.iter().enumerate() {
                        seen.errors[i] = n.parse().unwrap_or(u64::MAX);
                    }
                }
                _ => {}
            }
        }
        assert!(seen.requests > 0, "{} wrk did nothing: {raw}", self.what);
        seen.raw = raw;
        eprintln!(
            "{}: {} requests in {:.1} s ({:.0} req/s), failed {}, statuses {:?}, bodies {:?}",
            self.what,
            seen.requests,
            seconds,
            seen.requests as f64 / seconds,
            seen.failed(),
            seen.statuses,
            seen.bodies
        );
        seen
    }
}

/// Each wrk is paced to ~550 req/s (together ~1,100); on 2 cores shared with the cluster (and
/// other builds) at least 300 each, so that the load is real.
fn assert_rate(seen: &Seen) {
    let rate = seen.requests as f64 / seen.seconds;
    assert!(rate >= 300.0, "only {rate:.0} req/s: {}", seen.raw);
}

/// Both kinds of load at once through `url`.
fn start_load(dir: &Path, url: &str) -> [Load; 2] {
    let keep = dir.join("keep");
    let close = dir.join("close");
    std::fs::create_dir_all(&keep).expect("mkdir");
    std::fs::create_dir_all(&close).expect("mkdir");
    [
        Load::start(&keep, url, false),
        Load::start(&close, url, true),
    ]
}

/// Whether deployment `id` is still listed by the services framework.
async fn deploying(services: &str, id: &str) -> Option<bool> {
    let d: Value = reqwest::get(format!("{services}/v2/deployments"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(d.as_array()?.iter().any(|d| d["id"] == id))
}

/// The mesh endpoints gauge of [`APP`] on the agent whose `/metrics` is on `ip:port`.
async fn endpoints_on(ip: &str, port: u16) -> Option<u64> {
    let text = reqwest::get(format!("http://{ip}:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.contains("agora_agent_mesh_endpoints{")
        .then(|| metric(&text, "agora_agent_mesh_endpoints", APP))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_and_a_sigkill_under_load_fail_no_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let mut agents = Vec::new();
    for (i, ip) in AGENTS.iter().enumerate() {
        let ports = format!("{}-{}", 31800 + i * 20, 31819 + i * 20);
        agents.push(load_agent(
            dir.path(),
            &format!("load-a{}", i + 1),
            &master.address(),
            ip,
            &ports,
        ));
    }
    let (_services, url) = start_services(dir.path(), &master.address(), "17300-17399");
    services_ready(&url).await;
    post_app(
        &url,
        json!({
            "id": APP,
            "cmd": NGINX,
            "cpus": 0.1, "mem": 32, "instances": 3,
            "portDefinitions": [{"port": 0, "name": "http"}],
            "labels": {"HAPROXY_0_MODE": "http"},
            "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0, "gracePeriodSeconds": 5,
                "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 3}]
        }),
    )
    .await;
    let (old, sp) = until_meshed(&url, APP, 3, &AGENTS).await;
    let target = format!("http://{}:{sp}/", AGENTS[0]);

    // 1. A rolling restart under load.
    let load = start_load(dir.path(), &target);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = reqwest::Client::new()
        .post(format!("{url}/v2/apps{APP}/restart"))
        .send()
        .await
        .expect("POST restart");
    assert_eq!(r.status(), 200);
    let began = Instant::now();
    let deployment: Value = r.json().await.expect("the restart's answer");
    let deployment = deployment["deploymentId"]
        .as_str()
        .expect("deploymentId")
        .to_string();
    eventually(
        "the restart's deployment done",
        Duration::from_secs(40),
        || async { (!deploying(&url, &deployment).await?).then_some(()) },
    )
    .await;
    eprintln!(
        "rolling restart done in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    // The deployment ends once the old tasks are asked to stop; they leave after their drain.
    let new = eventually(
        "3 new healthy tasks and no old one",
        Duration::from_secs(30),
        || async {
            let (ids, _) = running(&url, APP).await?;
            (ids.len() == 3 && ids.iter().all(|t| !old.contains(t))).then_some(ids)
        },
    )
    .await;
    eprintln!(
        "old tasks gone {:.1} s after the restart",
        began.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let [keep, close] = load;
    for seen in [keep.stop(), close.stop()] {
        assert_eq!(seen.failed(), 0, "failed requests: {}", seen.raw);
        let ids: BTreeSet<&String> = seen.bodies.keys().collect();
        let expected: BTreeSet<&String> = old.iter().chain(new.iter()).collect();
        assert!(
            ids.is_subset(&expected),
            "answered by {ids:?}, tasks {expected:?}"
        );
        assert!(
            old.iter().all(|t| ids.contains(t)) && new.iter().all(|t| ids.contains(t)),
            "old {old:?} and new {new:?} should all have answered: {ids:?}"
        );
        assert_rate(&seen);
    }
    // Only the new tasks answer now.
    for _ in 0..9 {
        let (code, body) = curl(&target, &[]);
        assert_eq!(code, 200, "{body}");
        assert!(
            new.contains(&body.trim().to_string()),
            "{body} not in {new:?}"
        );
    }

    // 2. SIGKILL of one task's process under load.
    let load = start_load(dir.path(), &target);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = &new[0];
    let hp = host_port(&url, APP, victim).await;
    let pid = nginx_pid(hp).unwrap_or_else(|| panic!("nginx of {victim} on port {hp}"));
    let killed = Instant::now();
    let ok = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -9 {pid}");
    // Out of rotation on every agent within 2 s: the master's table lists one endpoint fewer.
    let mut out = vec![None; AGENTS.len()];
    while killed.elapsed() < Duration::from_secs(2) && out.iter().any(Option::is_none) {
        for (i, ip) in AGENTS.iter().enumerate() {
            if out[i].is_none() && endpoints_on(ip, agents[i].1).await.is_some_and(|n| n < 3) {
                out[i] = Some(killed.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("killed endpoint out of every agent's table after {out:?}");
    assert!(
        out.iter().all(Option::is_some),
        "the killed endpoint still in an agent's table 2 s after the SIGKILL: {out:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let [keep, close] = load;
    for seen in [keep.stop(), close.stop()] {
        assert_eq!(seen.failed(), 0, "failed requests: {}", seen.raw);
        assert!(
            seen.bodies
                .keys()
                .all(|id| new.contains(id) || !old.contains(id)),
            "an old task answered: {:?}",
            seen.bodies
        );
    }
}
