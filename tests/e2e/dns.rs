//! DNS on every agent, asked with Debian's `dig` over UDP: a master, two agents (127.0.0.2 and
//! 127.0.0.3, each with its DNS port) and `agora services`; an app `/prod/web` with 2 native
//! busybox httpd tasks and a TCP health check. Both agents answer `web-prod.services.agora` (A:
//! the agents of the healthy tasks) and `_web-prod._tcp.services.agora` (SRV: their host ports),
//! exactly the healthy tasks; the answers follow a scale-down and a task kill within seconds;
//! unknown names under the domain are NXDOMAIN; outside it, an agent with `--dns-forward=false`
//! refuses; the agent's `/metrics` counts it all.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{agent_args, eventually, free_port, Master, Process};

/// `dig` output lines for `name`/`qtype` at `server:port` (`+short`), or its status with
/// `status = true`.
fn dig(server: &str, port: u16, name: &str, qtype: &str, status: bool) -> String {
    let mut cmd = Command::new("dig");
    cmd.args([
        &format!("@{server}"),
        "-p",
        &port.to_string(),
        "+tries=1",
        "+time=2",
        name,
        qtype,
    ]);
    if !status {
        cmd.arg("+short");
    }
    let out = cmd
        .output()
        .expect("dig runs (Debian's dnsutils; scripts/test installs it)");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn dig_status(server: &str, port: u16, name: &str) -> String {
    let text = dig(server, port, name, "A", true);
    text.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("no answer")
        .to_string()
}

/// The A answers as a set.
fn a_records(server: &str, port: u16) -> BTreeSet<String> {
    dig(server, port, "web-prod.services.agora", "A", false)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The SRV answers as (port, target) pairs.
fn srv_records(server: &str, port: u16) -> BTreeSet<(u64, String)> {
    dig(server, port, "_web-prod._tcp.services.agora", "SRV", false)
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            Some((w.get(2)?.parse().ok()?, w.get(3)?.to_string()))
        })
        .collect()
}

/// (agent ip, host port) of the app's RUNNING tasks whose health check passed.
async fn healthy(services: &str) -> Option<(BTreeSet<String>, BTreeSet<u64>, Vec<String>)> {
    let r = reqwest::get(format!("{services}/v2/apps/prod/web?embed=app.tasks"))
        .await
        .ok()?;
    let app: Value = r.json().await.ok()?;
    let tasks = app["app"]["tasks"].as_array()?.clone();
    let mut hosts = BTreeSet::new();
    let mut ports = BTreeSet::new();
    let mut ids = Vec::new();
    for t in tasks {
        let alive = t["healthCheckResults"][0]["alive"] == true;
        if t["state"] == "TASK_RUNNING" && alive {
            hosts.insert(t["host"].as_str()?.to_string());
            ports.insert(t["ports"][0].as_u64()?);
            ids.push(t["id"].as_str()?.to_string());
        }
    }
    Some((hosts, ports, ids))
}

const AGENTS: [(&str, &str); 2] = [("dns-a1", "127.0.0.2"), ("dns-a2", "127.0.0.3")];

/// Waits until both agents' DNS lists exactly the healthy tasks (`n` of them) and returns their
/// (ids, ports).
async fn until_dns_lists(
    services: &str,
    dns: &[u16],
    n: usize,
    within: Duration,
) -> (Vec<String>, BTreeSet<u64>) {
    eventually(
        &format!("both agents' DNS to list exactly the {n} healthy tasks"),
        within,
        || async {
            let (hosts, ports, ids) = healthy(services).await?;
            if ports.len() != n {
                return None;
            }
            let ips: BTreeSet<String> = hosts
                .iter()
                .filter_map(|h| AGENTS.iter().find(|a| a.0 == h).map(|a| a.1.to_string()))
                .collect();
            assert_eq!(ips.len(), hosts.len(), "tasks on unknown hosts: {hosts:?}");
            for (i, (_, ip)) in AGENTS.iter().enumerate() {
                if a_records(ip, dns[i]) != ips {
                    return None;
                }
                let srv = srv_records(ip, dns[i]);
                let srv_ports: BTreeSet<u64> = srv.iter().map(|s| s.0).collect();
                if srv_ports != ports
                    || !srv
                        .iter()
                        .all(|(_, t)| t.ends_with(".web-prod.services.agora."))
                {
                    return None;
                }
            }
            eprintln!("DNS lists {ips:?} / {ports:?} for tasks {ids:?}");
            Some((ids, ports))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_answer_mesos_dns_names_with_only_the_healthy_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let dns: Vec<u16> = AGENTS.iter().map(|_| free_port()).collect();
    let mut agents = Vec::new();
    let http: Vec<u16> = AGENTS.iter().map(|_| free_port()).collect();
    for (i, (name, ip)) in AGENTS.iter().enumerate() {
        let range = format!(
            "cpus:1;mem:512;ports:[{}-{}]",
            31400 + i * 50,
            31449 + i * 50
        );
        let mut args = agent_args(
            dir.path(),
            name,
            &master.address(),
            http[i],
            &range,
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
        if i == 1 {
            args.push("--dns-forward=false".into());
        }
        agents.push(Process::spawn(name, &args, dir.path()));
    }
    let port = free_port();
    let services_args: Vec<String> = [
        "services",
        "--master",
        &master.address(),
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--work-dir",
        &dir.path().join("services").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _services = Process::spawn("services", &services_args, dir.path());
    let url = format!("http://127.0.0.1:{port}");
    eventually("the services API", Duration::from_secs(30), || async {
        reqwest::get(format!("{url}/ping"))
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    })
    .await;
    // Before any app: the name is unknown under the domain.
    eventually("agent DNS to answer", Duration::from_secs(20), || async {
        (dig_status(AGENTS[0].1, dns[0], "web-prod.services.agora") == "NXDOMAIN").then_some(())
    })
    .await;

    let app = json!({
        "id": "/prod/web",
        "cmd": "exec busybox httpd -f -p $PORT0 -h /",
        "cpus": 0.1, "mem": 32, "instances": 2,
        "constraints": [["hostname", "UNIQUE"]],
        "portDefinitions": [{"port": 0, "name": "http"}],
        "healthChecks": [{"protocol": "TCP", "portIndex": 0, "gracePeriodSeconds": 5,
                          "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 3}]
    });
    let r = reqwest::Client::new()
        .post(format!("{url}/v2/apps"))
        .json(&app)
        .send()
        .await
        .expect("POST /v2/apps");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let (ids, _) = until_dns_lists(&url, &dns, 2, Duration::from_secs(60)).await;
    assert_eq!(ids.len(), 2);
    // Each SRV target resolves to its agent's address.
    for (port, target) in srv_records(AGENTS[0].1, dns[0]) {
        let a = dig(AGENTS[0].1, dns[0], &target, "A", false);
        assert!(
            AGENTS.iter().any(|(_, ip)| a.trim() == *ip),
            "SRV target {target} (port {port}) resolves to {a:?}"
        );
    }
    // TTL ≤ 5 s.
    let full = dig(AGENTS[1].1, dns[1], "web-prod.services.agora", "A", true);
    let ttl: u64 = full
        .lines()
        .find(|l| l.starts_with("web-prod.services.agora."))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|t| t.parse().ok())
        .expect("an answer line with a TTL");
    assert!(ttl <= 5, "TTL {ttl}");

    // Unknown names under the domain: NXDOMAIN; outside it, the agent without forwarding refuses.
    for (i, (_, ip)) in AGENTS.iter().enumerate() {
        assert_eq!(dig_status(ip, dns[i], "nope.services.agora"), "NXDOMAIN");
        assert_eq!(dig_status(ip, dns[i], "web-prod.other.agora"), "NXDOMAIN");
    }
    assert_eq!(dig_status(AGENTS[1].1, dns[1], "example.com"), "REFUSED");

    // Scale down to 1: both agents drop the killed task within a couple of seconds.
    let r = reqwest::Client::new()
        .put(format!("{url}/v2/apps/prod/web"))
        .json(&json!({"instances": 1}))
        .send()
        .await
        .expect("PUT");
    assert!(r.status().is_success(), "{}", r.status());
    let t0 = Instant::now();
    let (ids, ports) = until_dns_lists(&url, &dns, 1, Duration::from_secs(20)).await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "scale-down seen after {:?}",
        t0.elapsed()
    );

    // Kill the remaining task: it leaves DNS at once; its replacement appears once healthy.
    let old = *ports.iter().next().expect("one port");
    let r = reqwest::Client::new()
        .delete(format!("{url}/v2/apps/prod/web/tasks/{}", ids[0]))
        .send()
        .await
        .expect("DELETE task");
    assert!(r.status().is_success(), "{}", r.status());
    let t0 = Instant::now();
    eventually(
        "the killed task out of DNS",
        Duration::from_secs(10),
        || async {
            AGENTS
                .iter()
                .enumerate()
                .all(|(i, (_, ip))| !srv_records(ip, dns[i]).iter().any(|s| s.0 == old))
                .then_some(())
        },
    )
    .await;
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "kill seen after {:?}",
        t0.elapsed()
    );
    let (new_ids, _) = until_dns_lists(&url, &dns, 1, Duration::from_secs(60)).await;
    assert_ne!(new_ids, ids);

    // The agent counts queries, answers and NXDOMAINs.
    let metrics = reqwest::get(format!("http://{}:{}/metrics", AGENTS[0].1, http[0]))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    for m in [
        "agora_agent_dns_queries_total",
        "agora_agent_dns_answers_total",
        "agora_agent_dns_nxdomain_total",
    ] {
        let v: u64 = metrics
            .lines()
            .find(|l| l.starts_with(&format!("{m} ")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(v > 0, "{m} is {v}: {metrics}");
    }
}
