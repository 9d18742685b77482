//! Service ports and `/v2/queue` against `agora local`, with native command tasks: two apps get
//! distinct service ports from `--service-port-range`, a task lists them (`servicePorts`) and sees
//! `PORT0`/`PORT_<NAME>`/`PORT_<servicePort>` mapped onto its host ports, an update keeps them, a
//! port another app holds is refused naming the field, `requirePorts` makes the host port the
//! service port, and a restart of the whole cluster (the
//! services framework recovers its saved state) keeps them. PyPI `marathon` then parses the queue
//! of an app stuck on too much memory and reads a task's service ports.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{eventually, free_port, Process};

/// `agora local` with its agents on a port of their own (tests run side by side), service
/// ports from 10100-10199.
fn start_local(
    dir: &std::path::Path,
    port: u16,
    services: u16,
    agents: u16,
    name: &str,
) -> Process {
    let args: Vec<String> = [
        "local",
        "--insecure",
        "--port",
        &port.to_string(),
        "--work-dir",
        &dir.join("state").display().to_string(),
        "--agents",
        "2",
        "--containerizers",
        "native",
        "--batch-port",
        &free_port().to_string(),
        "--services-port",
        &services.to_string(),
        "--service-port-range",
        "10100-10199",
        "--agent-port",
        &agents.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Process::spawn(name, &args, dir)
}

async fn send(method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = reqwest::Client::new().request(method, url);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get_app(url: &str, id: &str) -> Option<Value> {
    let r = reqwest::get(format!("{url}/v2/apps{id}?embed=app.tasks"))
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json::<Value>().await.ok().map(|v| v["app"].clone())
}

fn port_numbers(app: &Value) -> Vec<u64> {
    app["portDefinitions"]
        .as_array()
        .map(|p| p.iter().filter_map(|d| d["port"].as_u64()).collect())
        .unwrap_or_default()
}

/// The app's one running task of config version `version` (any version when `None`), once its
/// deployments are done.
async fn running_task(url: &str, id: &str, not_version: Option<&str>) -> (Value, Value) {
    eventually(
        &format!("{id} to run its task"),
        Duration::from_secs(60),
        || async {
            let app = get_app(url, id).await?;
            let tasks = app["tasks"].as_array()?.clone();
            let running: Vec<&Value> = tasks
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .filter(|t| not_version.is_none_or(|v| t["version"] != v))
                .collect();
            let done = app["deployments"].as_array().is_some_and(|d| d.is_empty());
            (running.len() == 1 && tasks.len() == 1 && done)
                .then(|| (app.clone(), running[0].clone()))
        },
    )
    .await
}

/// The task's environment as it printed it (`env` into its stdout), read back with
/// `agora task logs`.
async fn task_env(master: &str, task_id: &str) -> std::collections::HashMap<String, String> {
    eventually(
        &format!("{task_id} to print its environment"),
        Duration::from_secs(30),
        || async {
            let out = Command::new(env!("CARGO_BIN_EXE_agora"))
                .args(["task", "logs", task_id])
                .env("AGORA_MASTER", master)
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.contains("ENV-END").then(|| {
                text.lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
        },
    )
    .await
}

fn python() -> String {
    std::env::var("AGORA_TEST_PYTHON")
        .unwrap_or_else(|_| "/tmp/agora-test-services/venv/bin/python".to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn service_ports_are_assigned_unique_kept_and_the_queue_says_why_an_app_waits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let master = format!("127.0.0.1:{port}");
    let services = free_port();
    let url = format!("http://127.0.0.1:{services}");
    let agents = free_port();
    let mut local = start_local(dir.path(), port, services, agents, "local");
    let ping = || async {
        reqwest::get(format!("{url}/ping"))
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    };
    eventually("the services API", Duration::from_secs(60), ping).await;

    // Two apps with port 0: distinct service ports from the range.
    let cmd = "env; echo ENV-END; sleep 1000";
    let web = json!({
        "id": "/web", "cmd": cmd, "cpus": 0.1, "mem": 32,
        "portDefinitions": [{"port": 0, "name": "http"}, {"port": 0, "name": "admin-api"}],
    });
    let (status, body) = send(reqwest::Method::POST, &format!("{url}/v2/apps"), Some(web)).await;
    assert_eq!(status, 201, "{body}");
    let web_ports = port_numbers(&body);
    let (status, body) = send(
        reqwest::Method::POST,
        &format!("{url}/v2/apps"),
        Some(json!({"id": "/api", "cmd": cmd, "cpus": 0.1, "mem": 32, "portDefinitions": [{"port": 0}]})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let api_ports = port_numbers(&body);
    assert_eq!(web_ports.len(), 2, "{web_ports:?}");
    assert_eq!(api_ports.len(), 1, "{api_ports:?}");
    let mut all: Vec<u64> = web_ports.iter().chain(&api_ports).copied().collect();
    assert!(all.iter().all(|p| (10100..=10199).contains(p)), "{all:?}");
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 3, "unique: {web_ports:?} {api_ports:?}");

    // The task lists them and its environment maps them onto its host ports.
    let (app, task) = running_task(&url, "/web", None).await;
    assert_eq!(
        port_numbers(&app),
        web_ports,
        "GET shows the assigned ports"
    );
    assert_eq!(task["servicePorts"], json!(web_ports));
    let host_ports: Vec<u64> = task["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(host_ports.len(), 2);
    let task_id = task["id"].as_str().expect("id").to_string();
    let env = task_env(&master, &task_id).await;
    assert_eq!(env["PORT0"], host_ports[0].to_string());
    assert_eq!(env["PORT1"], host_ports[1].to_string());
    assert_eq!(env["PORT"], host_ports[0].to_string());
    assert_eq!(env["PORTS"], format!("{},{}", host_ports[0], host_ports[1]));
    assert_eq!(env["PORT_HTTP"], host_ports[0].to_string());
    assert_eq!(env["PORT_ADMIN_API"], host_ports[1].to_string());
    assert_eq!(
        env[&format!("PORT_{}", web_ports[1])],
        host_ports[1].to_string()
    );
    assert_eq!(env["MARATHON_APP_ID"], "/web");
    assert_eq!(env["MESOS_TASK_ID"], task_id);
    assert_eq!(env["HOST"], task["host"].as_str().expect("host"));
    assert_eq!(
        env["MARATHON_APP_VERSION"],
        task["version"].as_str().expect("version")
    );

    // An update (new command, ports 0 again) keeps them; the new task carries them.
    let old_version = task["version"].as_str().expect("version").to_string();
    let (status, body) = send(
        reqwest::Method::PUT,
        &format!("{url}/v2/apps/web"),
        Some(json!({
            "id": "/web", "cmd": format!("echo v2; {cmd}"), "cpus": 0.1, "mem": 32,
            "portDefinitions": [{"port": 0, "name": "http"}, {"port": 0, "name": "admin-api"}],
        })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (app, task) = running_task(&url, "/web", Some(&old_version)).await;
    assert_eq!(port_numbers(&app), web_ports, "the update kept them");
    assert_eq!(task["servicePorts"], json!(web_ports));

    // A port another app holds: 422 at the field, naming the app.
    let (status, body) = send(
        reqwest::Method::POST,
        &format!("{url}/v2/apps"),
        Some(json!({"id": "/thief", "cmd": "sleep 1", "portDefinitions": [{"port": 0}, {"port": api_ports[0]}]})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["details"][0]["path"], "/portDefinitions/1/port",
        "{body}"
    );
    assert_eq!(
        body["details"][0]["errors"][0],
        format!(
            "Requested service port {} conflicts with a service port in app /api",
            api_ports[0]
        )
    );
    let (status, _) = send(reqwest::Method::GET, &format!("{url}/v2/apps/thief"), None).await;
    assert_eq!(status, 404, "a refused app is not created");

    // requirePorts: the host port is the service port (one in an agent's range, outside the
    // service port range: allowed).
    let (status, body) = send(
        reqwest::Method::POST,
        &format!("{url}/v2/apps"),
        Some(
            json!({"id": "/fixed", "cmd": cmd, "cpus": 0.1, "mem": 32, "requirePorts": true,
                    "portDefinitions": [{"port": 31400, "name": "http"}]}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (_, task) = running_task(&url, "/fixed", None).await;
    assert_eq!(task["ports"], json!([31400]));
    assert_eq!(task["servicePorts"], json!([31400]));
    let env = task_env(&master, task["id"].as_str().expect("id")).await;
    assert_eq!(env["PORT0"], "31400");
    assert_eq!(env["PORT_HTTP"], "31400");

    // A restart of the cluster: the services framework loads its saved apps with their ports.
    local.signal("INT");
    let exited = eventually("local to stop", Duration::from_secs(30), || {
        let s = local.try_wait();
        async move { s }
    })
    .await;
    assert!(exited.success(), "{}", local.log_text());
    let _again = start_local(dir.path(), port, services, agents, "local-again");
    eventually("the services API again", Duration::from_secs(60), ping).await;
    let (app, task) = running_task(&url, "/web", None).await;
    assert_eq!(port_numbers(&app), web_ports, "kept across the restart");
    assert_eq!(task["servicePorts"], json!(web_ports));
    let api = get_app(&url, "/api").await.expect("/api");
    assert_eq!(port_numbers(&api), api_ports);
    // The ports held are still known: a new app gets a port none of them has.
    let (status, body) = send(
        reqwest::Method::POST,
        &format!("{url}/v2/apps"),
        Some(json!({"id": "/late", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "portDefinitions": [{"port": 0}]})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let late = port_numbers(&body);
    assert!(
        late.len() == 1 && !all.contains(&late[0]) && (10100..=10199).contains(&late[0]),
        "{late:?} vs {all:?}"
    );

    // The ecosystem's client: the queue of an app stuck on memory, a task's service ports.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python/marathon_queue_ports.py");
    let ports_arg: Vec<String> = web_ports.iter().map(u64::to_string).collect();
    let out = tokio::process::Command::new(python())
        .arg(&script)
        .arg(&url)
        .arg("/web")
        .arg(ports_arg.join(","))
        .output()
        .await
        .expect("the Python of AGORA_TEST_PYTHON runs (scripts/test creates its venv)");
    assert!(
        out.status.success(),
        "marathon client check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
    assert!(report["insufficientMemory"]
        .as_u64()
        .is_some_and(|n| n >= 1));
    assert_eq!(report["servicePorts"], json!(web_ports));
}
