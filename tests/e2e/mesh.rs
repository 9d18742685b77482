//! The routing mesh on every agent, with real curl over TCP: a master, four agents on their own
//! loopback addresses (three with the mesh, 127.0.0.41–43, one with `--mesh=false`, 127.0.0.44),
//! `agora services`, and busybox httpd tasks that each serve their own task id.
//!
//! - `/mesh/web` (3 instances, `HAPROXY_0_VHOST`: HTTP mode): every mesh agent's address on the
//!   service port answers, the responding task varies (new connections and one keep-alive
//!   connection alike), `X-Forwarded-For` reaches the task; by `Host` on `--mesh-http-port`, and an
//!   unknown host is 503; SIGKILL of one task's process → every request keeps succeeding.
//! - `/mesh/tcp` (2 instances, no label: TCP mode): the same through plain relaying, and a SIGKILL.
//! - The mesh=false agent has no listener; scale to 0 → the listener is gone everywhere.
//! - A Docker task (bridge network) on one agent, reached through another agent's mesh.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{agent_args, eventually, free_port, Master, Process};

const MESH: [&str; 3] = ["127.0.0.41", "127.0.0.42", "127.0.0.43"];
const NO_MESH: &str = "127.0.0.44";

/// `curl` of `url` (a new connection each time) with extra args: (HTTP status, body).
pub(crate) fn curl(url: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn refused(ip: &str, port: u16) -> bool {
    let addr: SocketAddr = format!("{ip}:{port}").parse().expect("addr");
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// The app's (RUNNING tasks' ids, its first service port).
pub(crate) async fn running(services: &str, id: &str) -> Option<(Vec<String>, u16)> {
    let r = reqwest::get(format!("{services}/v2/apps{id}?embed=app.tasks"))
        .await
        .ok()?;
    let app: Value = r.json().await.ok()?;
    let sp = app["app"]["portDefinitions"][0]["port"]
        .as_u64()
        .or_else(|| app["app"]["container"]["portMappings"][0]["servicePort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())?;
    let ids = app["app"]["tasks"]
        .as_array()?
        .iter()
        .filter(|t| t["state"] == "TASK_RUNNING" && t["healthCheckResults"][0]["alive"] == true)
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect();
    Some((ids, sp))
}

pub(crate) async fn post_app(services: &str, app: Value) {
    let r = reqwest::Client::new()
        .post(format!("{services}/v2/apps"))
        .json(&app)
        .send()
        .await
        .expect("POST /v2/apps");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

/// Waits until `n` tasks of `id` are healthy and every mesh agent answers on its service port
/// with one of them; returns (ids, service port).
pub(crate) async fn until_meshed(
    services: &str,
    id: &str,
    n: usize,
    ips: &[&str],
) -> (Vec<String>, u16) {
    eventually(
        &format!("{n} healthy tasks of {id} reachable through every mesh agent"),
        Duration::from_secs(90),
        || async {
            let (ids, sp) = running(services, id).await?;
            if ids.len() != n {
                eprintln!("{id}: {} healthy tasks of {n}", ids.len());
                return None;
            }
            for ip in ips {
                let (code, body) = curl(&format!("http://{ip}:{sp}/"), &[]);
                if code != 200 || !ids.contains(&body.trim().to_string()) {
                    eprintln!("{id} via {ip}:{sp}: {code} {body:?} (tasks {ids:?})");
                    return None;
                }
            }
            Some((ids, sp))
        },
    )
    .await
}

/// The pid of the busybox httpd serving host port `port`.
pub(crate) fn httpd_pid(port: u64) -> Option<u32> {
    let want = format!("-p\0{port}\0");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        (cmd.contains("httpd\0") && cmd.contains(&want)).then_some(pid)
    })
}

/// The host port of task `task` of app `id`.
pub(crate) async fn host_port(services: &str, id: &str, task: &str) -> u64 {
    let app: Value = reqwest::get(format!("{services}/v2/apps{id}?embed=app.tasks"))
        .await
        .expect("GET app")
        .json()
        .await
        .expect("json");
    app["app"]["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["id"] == task))
        .and_then(|t| t["ports"][0].as_u64())
        .expect("the task's host port")
}

pub(crate) fn metric(text: &str, name: &str, service: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.starts_with(&format!("{name}{{")) && l.contains(&format!("service=\"{service}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

pub(crate) fn start_services(
    dir: &std::path::Path,
    master: &str,
    range: &str,
) -> (Process, String) {
    let port = free_port();
    let args: Vec<String> = [
        "services",
        "--master",
        master,
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--work-dir",
        &dir.join("services").display().to_string(),
        "--service-port-range",
        range,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    (
        Process::spawn("services", &args, dir),
        format!("http://127.0.0.1:{port}"),
    )
}

/// Agent args on `ip` with the mesh on (virtual hosts on `http_port`) or off.
pub(crate) fn mesh_agent(
    dir: &std::path::Path,
    name: &str,
    master: &str,
    ip: &str,
    ports: &str,
    containerizers: &str,
    mesh_http_port: Option<u16>,
) -> (Process, u16) {
    let http = free_port();
    let mut args = agent_args(
        dir,
        name,
        master,
        http,
        &format!("cpus:1;mem:512;ports:[{ports}]"),
        containerizers,
    );
    for w in 0..args.len() - 1 {
        if args[w] == "--ip" {
            args[w + 1] = ip.to_string();
        }
    }
    if let Some(p) = mesh_http_port {
        args.retain(|a| a != "--mesh=false");
        args.push("--mesh-http-port".into());
        args.push(p.to_string());
        args.push("--mesh-connect-timeout".into());
        args.push("1".into());
    }
    (Process::spawn(name, &args, dir), http)
}

pub(crate) async fn services_ready(url: &str) {
    eventually("the services API", Duration::from_secs(30), || async {
        reqwest::get(format!("{url}/ping"))
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_agent_routes_service_ports_to_tasks_anywhere_with_retries_and_vhosts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let vhost_port = free_port();
    let mut agents = Vec::new();
    for (i, ip) in MESH.iter().chain([NO_MESH].iter()).enumerate() {
        let ports = format!("{}-{}", 31600 + i * 20, 31619 + i * 20);
        let mesh = (*ip != NO_MESH).then_some(vhost_port);
        agents.push(mesh_agent(
            dir.path(),
            &format!("mesh-a{}", i + 1),
            &master.address(),
            ip,
            &ports,
            "native",
            mesh,
        ));
    }
    let (_services, url) = start_services(dir.path(), &master.address(), "17100-17199");
    services_ready(&url).await;

    let serve_id = "mkdir -p www/cgi-bin && echo $MESOS_TASK_ID > www/index.html && \
        printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho \"$HTTP_X_FORWARDED_FOR\"\\n' > www/cgi-bin/xff && \
        chmod +x www/cgi-bin/xff && exec busybox httpd -f -p $PORT0 -h www";
    let health = json!([{"protocol": "TCP", "portIndex": 0, "gracePeriodSeconds": 5,
        "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 3}]);
    post_app(
        &url,
        json!({
            "id": "/mesh/web", "cmd": serve_id, "cpus": 0.1, "mem": 32, "instances": 3,
            "constraints": [["hostname", "UNIQUE"]],
            "portDefinitions": [{"port": 0, "name": "http"}],
            "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "web.mesh.test, www.mesh.test"},
            "healthChecks": health
        }),
    )
    .await;
    post_app(
        &url,
        json!({
            "id": "/mesh/tcp", "cmd": serve_id, "cpus": 0.1, "mem": 32, "instances": 2,
            "constraints": [["hostname", "UNIQUE"]],
            "portDefinitions": [{"port": 0}],
            "healthChecks": health
        }),
    )
    .await;
    let (ids, sp) = until_meshed(&url, "/mesh/web", 3, &MESH).await;
    let (tcp_ids, tcp_sp) = until_meshed(&url, "/mesh/tcp", 2, &MESH).await;
    assert!((17100..17200).contains(&sp) && (17100..17200).contains(&tcp_sp));

    // Every mesh agent, new connections: all succeed and the responding task varies.
    for (port, ids) in [(sp, &ids), (tcp_sp, &tcp_ids)] {
        for ip in MESH {
            let mut seen = BTreeSet::new();
            for _ in 0..12 {
                let (code, body) = curl(&format!("http://{ip}:{port}/"), &[]);
                assert_eq!(code, 200, "{ip}:{port}: {body}");
                assert!(
                    ids.contains(&body.trim().to_string()),
                    "{body} not in {ids:?}"
                );
                seen.insert(body.trim().to_string());
            }
            assert!(seen.len() >= 2, "{ip}:{port} always answered by {seen:?}");
        }
    }
    // One keep-alive connection (curl reuses it for several URLs): HTTP mode balances each request.
    let urls: Vec<String> = (0..9)
        .map(|_| format!("http://{}:{sp}/", MESH[0]))
        .collect();
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "|%{num_connects}\n"])
        .args(&urls)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<(&str, &str)> = text.lines().filter_map(|l| l.rsplit_once('|')).collect();
    assert_eq!(lines.len(), 9, "{text}");
    let connects: u64 = lines
        .iter()
        .filter_map(|(_, n)| n.parse::<u64>().ok())
        .sum();
    assert_eq!(connects, 1, "curl should reuse one connection: {text}");
    let seen: BTreeSet<&str> = text
        .lines()
        .filter(|l| ids.iter().any(|id| l.trim() == id))
        .collect();
    assert!(
        seen.len() >= 2,
        "one keep-alive connection saw only {seen:?}: {text}"
    );
    // X-Forwarded-For reaches the task (busybox httpd's CGI environment).
    let (code, body) = curl(&format!("http://{}:{sp}/cgi-bin/xff", MESH[1]), &[]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body.trim(), "127.0.0.1", "X-Forwarded-For seen by the task");

    // Virtual hosts on the mesh HTTP port, by Host header; unknown host → 503.
    for ip in MESH {
        for host in ["web.mesh.test", "WWW.mesh.test:8080"] {
            let (code, body) = curl(
                &format!("http://{ip}:{vhost_port}/"),
                &["-H", &format!("Host: {host}")],
            );
            assert_eq!(code, 200, "{ip} {host}: {body}");
            assert!(ids.contains(&body.trim().to_string()), "{body}");
        }
        let (code, body) = curl(
            &format!("http://{ip}:{vhost_port}/"),
            &["-H", "Host: nope.mesh.test"],
        );
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("No server is available"), "{body}");
    }

    // The mesh=false agent has no listener.
    assert!(refused(NO_MESH, sp), "mesh=false agent listens on {sp}");
    assert!(
        refused(NO_MESH, vhost_port),
        "mesh=false agent listens on {vhost_port}"
    );

    // SIGKILL one task of each app: every request keeps succeeding (retry + ejection).
    for (app, port, ids) in [("/mesh/web", sp, &ids), ("/mesh/tcp", tcp_sp, &tcp_ids)] {
        let victim = &ids[0];
        let hp = host_port(&url, app, victim).await;
        let pid = httpd_pid(hp).unwrap_or_else(|| panic!("httpd of {victim} on port {hp}"));
        let ok = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -9 {pid}");
        for round in 0..10 {
            for ip in MESH {
                let (code, body) = curl(&format!("http://{ip}:{port}/"), &[]);
                assert_eq!(
                    code, 200,
                    "{app} via {ip} after SIGKILL (round {round}): {body}"
                );
                assert_ne!(body.trim(), victim.as_str(), "the killed task answered");
            }
        }
    }

    // Metrics per service on the agents' /metrics.
    let mut total_requests = 0;
    let mut total_ejections = 0;
    let mut tcp_connections = 0;
    for (i, ip) in MESH.iter().enumerate() {
        let http_port = agents[i].1;
        let text = reqwest::get(format!("http://{ip}:{http_port}/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("text");
        total_requests += metric(&text, "agora_agent_mesh_requests_total", "/mesh/web");
        total_ejections += metric(&text, "agora_agent_mesh_ejections_total", "/mesh/web")
            + metric(&text, "agora_agent_mesh_ejections_total", "/mesh/tcp");
        tcp_connections += metric(&text, "agora_agent_mesh_connections_total", "/mesh/tcp");
        assert!(
            metric(&text, "agora_agent_mesh_bytes_out_total", "/mesh/tcp") > 0,
            "{text}"
        );
        assert!(text.contains("agora_agent_mesh_endpoints{"), "{text}");
    }
    assert!(
        total_requests >= 3 * 12,
        "requests counted: {total_requests}"
    );
    assert!(
        tcp_connections >= 3 * 12,
        "connections counted: {tcp_connections}"
    );
    assert!(
        total_ejections >= 1,
        "no ejection counted after the SIGKILLs"
    );

    // Scale to 0: the listener is gone on every agent.
    let r = reqwest::Client::new()
        .put(format!("{url}/v2/apps/mesh/web"))
        .json(&json!({"instances": 0}))
        .send()
        .await
        .expect("PUT");
    assert!(r.status().is_success(), "{}", r.status());
    eventually(
        "the service port's listener gone on every agent",
        Duration::from_secs(30),
        || async { MESH.iter().all(|ip| refused(ip, sp)).then_some(()) },
    )
    .await;
    // … and its virtual host with it; the other app is still served.
    let (code, _) = curl(
        &format!("http://{}:{vhost_port}/", MESH[2]),
        &["-H", "Host: web.mesh.test"],
    );
    assert_eq!(code, 503);
    let (code, _) = curl(&format!("http://{}:{tcp_sp}/", MESH[2]), &[]);
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_task_is_reached_through_another_agents_mesh() {
    let image = crate::harness::ensure_busybox_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let vhost_port = free_port();
    let (_docker, _) = mesh_agent(
        dir.path(),
        "mesh-docker",
        &master.address(),
        "127.0.0.46",
        "31700-31719",
        "docker",
        Some(vhost_port),
    );
    let (_native, _) = mesh_agent(
        dir.path(),
        "mesh-native",
        &master.address(),
        "127.0.0.47",
        "31720-31739",
        "native",
        Some(vhost_port),
    );
    let (_services, url) = start_services(dir.path(), &master.address(), "17200-17299");
    services_ready(&url).await;
    post_app(
        &url,
        json!({
            "id": "/mesh/docker",
            "container": {"type": "DOCKER", "docker": {"image": image, "network": "BRIDGE",
                "portMappings": [{"containerPort": 8080, "hostPort": 0, "servicePort": 0, "name": "http"}]}},
            "cmd": "mkdir -p $AGORA_SANDBOX/w && echo $MESOS_TASK_ID > $AGORA_SANDBOX/w/index.html && exec httpd -f -p 8080 -h $AGORA_SANDBOX/w",
            "cpus": 0.1, "mem": 32, "instances": 1,
            "constraints": [["hostname", "CLUSTER", "mesh-docker"]],
            "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0, "gracePeriodSeconds": 10,
                              "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 3}]
        }),
    )
    .await;
    // Reached through both agents, the one without the task included.
    let (ids, sp) = until_meshed(&url, "/mesh/docker", 1, &["127.0.0.46", "127.0.0.47"]).await;
    for _ in 0..5 {
        let (code, body) = curl(&format!("http://127.0.0.47:{sp}/"), &[]);
        assert_eq!((code, body.trim()), (200, ids[0].as_str()));
    }
    let r = reqwest::Client::new()
        .delete(format!("{url}/v2/apps/mesh/docker"))
        .send()
        .await
        .expect("DELETE");
    assert!(r.status().is_success());
    eventually("the listener gone", Duration::from_secs(60), || async {
        (refused("127.0.0.46", sp) && refused("127.0.0.47", sp)).then_some(())
    })
    .await;
}

/// marathon-lb's `HAPROXY_0_BALANCE=leastconn`: while one connection is held open to a task, new
/// connections go to the other; once it closes, both serve again. An unknown value is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_sends_new_connections_away_from_a_busy_task() {
    use std::io::{BufRead, BufReader, Write};
    const IPS: [&str; 2] = ["127.0.0.51", "127.0.0.52"];
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let vhost_port = free_port();
    let mut agents = Vec::new();
    for (i, ip) in IPS.iter().enumerate() {
        let ports = format!("{}-{}", 31740 + i * 20, 31759 + i * 20);
        agents.push(mesh_agent(
            dir.path(),
            &format!("least-a{}", i + 1),
            &master.address(),
            ip,
            &ports,
            "native",
            Some(vhost_port),
        ));
    }
    let (_services, url) = start_services(dir.path(), &master.address(), "17400-17499");
    services_ready(&url).await;

    // A value the mesh does not implement: 422 naming the label.
    let r = reqwest::Client::new()
        .post(format!("{url}/v2/apps"))
        .json(
            &json!({"id": "/mesh/bad", "cmd": "sleep 100", "cpus": 0.1, "mem": 32,
                      "labels": {"HAPROXY_0_BALANCE": "source"}}),
        )
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 422);
    let body = r.text().await.unwrap_or_default();
    assert!(
        body.contains("/labels/HAPROXY_0_BALANCE") && body.contains("leastconn"),
        "{body}"
    );

    // Each task serves its id at / and, at /cgi-bin/hold, its id and then 8 s of silence.
    let cmd = "mkdir -p www/cgi-bin && echo $MESOS_TASK_ID > www/index.html && \
        printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho %s\\nsleep 8\\n' \"$MESOS_TASK_ID\" > www/cgi-bin/hold && \
        chmod +x www/cgi-bin/hold && exec busybox httpd -f -p $PORT0 -h www";
    post_app(
        &url,
        json!({
            "id": "/mesh/least", "cmd": cmd, "cpus": 0.1, "mem": 32, "instances": 2,
            "constraints": [["hostname", "UNIQUE"]],
            "portDefinitions": [{"port": 0}],
            "labels": {"HAPROXY_0_BALANCE": "leastconn"},
            "healthChecks": [{"protocol": "TCP", "portIndex": 0, "gracePeriodSeconds": 5,
                "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 3}]
        }),
    )
    .await;
    let (ids, sp) = until_meshed(&url, "/mesh/least", 2, &IPS).await;

    // Idle: new connections alternate (ties in turn).
    let answers = |ip: &str, n: usize| -> BTreeSet<String> {
        (0..n)
            .map(|_| {
                let (code, body) = curl(&format!("http://{ip}:{sp}/"), &[]);
                assert_eq!(code, 200, "{body}");
                body.trim().to_string()
            })
            .collect()
    };
    assert_eq!(answers(IPS[0], 4).len(), 2, "both tasks answer when idle");

    // Hold one connection open (TCP mode: the connection is relayed to one task for its life).
    let mut held = TcpStream::connect((IPS[0], sp)).expect("connect to the mesh");
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    held.write_all(b"GET /cgi-bin/hold HTTP/1.0\r\n\r\n")
        .expect("send");
    let mut reader = BufReader::new(held.try_clone().expect("clone"));
    let busy = loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("read the held response");
        assert!(n > 0, "the held connection closed early");
        if let Some(id) = ids.iter().find(|id| line.trim() == id.as_str()) {
            break id.clone();
        }
    };
    let other: Vec<&String> = ids.iter().filter(|id| **id != busy).collect();
    // While it is open every new connection goes to the other task.
    for _ in 0..10 {
        let (code, body) = curl(&format!("http://{}:{sp}/", IPS[0]), &[]);
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            body.trim(),
            other[0].as_str(),
            "a new connection went to {busy}, which holds an open connection"
        );
    }
    // The other agent's mesh counts only its own connections: it still alternates.
    assert_eq!(answers(IPS[1], 4).len(), 2, "another agent's mesh");
    drop(reader);
    drop(held);
    // Once the held response ends, both tasks serve new connections again.
    eventually(
        "both tasks answering after the held connection ended",
        Duration::from_secs(30),
        || async { (answers(IPS[0], 4).len() == 2).then_some(()) },
    )
    .await;
}

/// `--mesh-bridge-ip` must be an address bridge containers reach: a wildcard, a loopback address,
/// `--ip` itself or no address at all is refused, naming the flag, before the agent starts; so is
/// one given with `--mesh=false`, where it would do nothing.
#[test]
fn a_bad_mesh_bridge_ip_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("agent").display().to_string();
    for (ip, bridge) in [
        ("10.9.8.7", "0.0.0.0"),
        ("10.9.8.7", "::"),
        ("10.9.8.7", "127.0.0.1"),
        ("10.9.8.7", "10.9.8.7"),
        ("10.9.8.7", "gateway"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_agora"))
            .args(["agent", "--master", "127.0.0.1:1", "--work-dir", &work])
            .args(["--ip", ip, "--mesh-bridge-ip", bridge])
            .output()
            .expect("agora runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bridge}: accepted");
        assert!(err.contains("--mesh-bridge-ip"), "{bridge}: {err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(["agent", "--master", "127.0.0.1:1", "--work-dir", &work])
        .args([
            "--ip",
            "10.9.8.7",
            "--mesh=false",
            "--mesh-bridge-ip",
            "172.17.0.1",
        ])
        .output()
        .expect("agora runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "--mesh=false with a bridge ip: accepted"
    );
    assert!(
        err.contains("--mesh-bridge-ip") && err.contains("--mesh=false"),
        "{err}"
    );
    assert!(
        !dir.path().join("agent").exists(),
        "nothing is made before the flags are checked"
    );
}
