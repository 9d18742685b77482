//! The services framework end to end, as a Marathon user tries it: a real master, two agents and
//! an `agora services` process, driven through the `/v2` API.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{eventually, free_port, Agent, Master, Process};

struct Services {
    process: Process,
    url: String,
    port: u16,
}

fn start_services(dir: &Path, master: &str, port: u16, name: &str) -> Services {
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
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Services {
        process: Process::spawn(name, &args, dir),
        url: format!("http://127.0.0.1:{port}"),
        port,
    }
}

async fn app(s: &Services, id: &str) -> Option<Value> {
    let r = reqwest::get(format!("{}/v2/apps/{}", s.url, id.trim_start_matches('/')))
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json::<Value>().await.ok().map(|v| v["app"].clone())
}

async fn running_tasks(s: &Services, id: &str) -> Vec<Value> {
    app(s, id)
        .await
        .and_then(|a| a["tasks"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .collect()
}

async fn until_running(s: &Services, id: &str, n: usize) -> Vec<Value> {
    eventually(
        &format!("{id} to run {n} tasks"),
        Duration::from_secs(40),
        || async {
            let t = running_tasks(s, id).await;
            let stable = app(s, id)
                .await
                .is_some_and(|a| a["deployments"].as_array().is_some_and(|d| d.is_empty()));
            (t.len() == n && stable).then_some(t)
        },
    )
    .await
}

async fn send(method: reqwest::Method, url: &str, body: Option<Value>) -> reqwest::Response {
    let mut r = reqwest::Client::new().request(method, url);
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.expect("request")
}

#[tokio::test(flavor = "multi_thread")]
async fn marathon_apps_run_scale_restart_heal_and_validate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &["--agent-timeout", "2"]).await;
    let mut a = Agent::start(
        dir.path(),
        "agent-a",
        &master.address(),
        "cpus:2;mem:1024;ports:[31000-31050]",
    );
    let mut b = Agent::start(
        dir.path(),
        "agent-b",
        &master.address(),
        "cpus:2;mem:1024;ports:[31100-31150]",
    );
    let s = start_services(dir.path(), &master.address(), free_port(), "services");
    eventually("the services API", Duration::from_secs(20), || async {
        reqwest::get(format!("{}/ping", s.url))
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    })
    .await;

    // Validation as Marathon answers it.
    let r = send(reqwest::Method::POST, &format!("{}/v2/apps", s.url), Some(json!({"id": "/Bad", "cmd": "x", "args": ["y"], "cpus": 0, "upgradeStrategy": {"minimumHealthCapacity": 2}}))).await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["message"], "Object is not valid");
    let paths: HashSet<String> = body["details"]
        .as_array()
        .expect("details")
        .iter()
        .filter_map(|d| d["path"].as_str().map(str::to_string))
        .collect();
    for p in [
        "/id",
        "/cmd",
        "/cpus",
        "/upgradeStrategy/minimumHealthCapacity",
    ] {
        assert!(paths.contains(p), "{p} missing in {body}");
    }
    let r = reqwest::Client::new()
        .post(format!("{}/v2/apps", s.url))
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let r = reqwest::get(format!("{}/v2/apps/nope", s.url))
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.expect("json")["message"],
        "App '/nope' does not exist"
    );

    // Create: 201, Location, deployment id; two instances on two hosts (hostname UNIQUE).
    let web = json!({
        "id": "/prod/web", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "instances": 2,
        "portDefinitions": [{"port": 0, "name": "http"}],
        "constraints": [["hostname", "UNIQUE"]],
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5}
    });
    let r = send(
        reqwest::Method::POST,
        &format!("{}/v2/apps", s.url),
        Some(web.clone()),
    )
    .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/v2/apps/prod/web")
    );
    assert!(r.headers().get("marathon-deployment-id").is_some());
    let tasks = until_running(&s, "/prod/web", 2).await;
    let hosts: HashSet<&str> = tasks.iter().filter_map(|t| t["host"].as_str()).collect();
    assert_eq!(hosts.len(), 2, "UNIQUE spreads them: {tasks:?}");
    assert!(tasks
        .iter()
        .all(|t| t["ports"].as_array().is_some_and(|p| p.len() == 1)));
    let r = send(
        reqwest::Method::POST,
        &format!("{}/v2/apps", s.url),
        Some(web),
    )
    .await;
    assert_eq!(r.status(), 409);

    // Scale to 3: only two hosts exist, so one waits and /v2/queue says why.
    let r = send(
        reqwest::Method::PATCH,
        &format!("{}/v2/apps/prod/web", s.url),
        Some(json!({"instances": 3})),
    )
    .await;
    assert_eq!(r.status(), 200);
    let queue = eventually("the queue to explain", Duration::from_secs(10), || async {
        let q: Value = reqwest::get(format!("{}/v2/queue", s.url))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let steps = q["queue"][0]["processedOffersSummary"]["rejectSummaryLaunchAttempt"]
            .as_array()?
            .clone();
        steps
            .iter()
            .any(|s| s["reason"] == "UnfulfilledConstraint" && s["declined"].as_u64() > Some(0))
            .then_some(q)
    })
    .await;
    assert_eq!(queue["queue"][0]["count"], 1, "{queue}");
    // A locked app refuses changes without force.
    let r = send(
        reqwest::Method::PUT,
        &format!("{}/v2/apps/prod/web", s.url),
        Some(json!({"cmd": "sleep 999", "cpus": 0.1, "mem": 32, "instances": 2})),
    )
    .await;
    assert_eq!(r.status(), 409);
    assert!(r.json::<Value>().await.expect("json")["deployments"]
        .as_array()
        .is_some_and(|d| !d.is_empty()));
    let r = send(
        reqwest::Method::PATCH,
        &format!("{}/v2/apps/prod/web?force=true", s.url),
        Some(json!({"instances": 1})),
    )
    .await;
    assert_eq!(r.status(), 200);
    let left = until_running(&s, "/prod/web", 1).await;

    // Rolling restart: every task replaced, never below 50 % (of 1 → at least 1 healthy).
    let r = send(
        reqwest::Method::POST,
        &format!("{}/v2/apps/prod/web/restart", s.url),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let after = eventually(
        "the restart to replace the task",
        Duration::from_secs(30),
        || async {
            let t = running_tasks(&s, "/prod/web").await;
            let stable = app(&s, "/prod/web")
                .await
                .is_some_and(|a| a["deployments"].as_array().is_some_and(|d| d.is_empty()));
            (t.len() == 1 && stable && t[0]["id"] != left[0]["id"]).then_some(t)
        },
    )
    .await;
    assert_ne!(after[0]["id"], left[0]["id"]);

    // Keeping the count: a killed task is replaced; an agent that dies has its tasks replaced on
    // the other one.
    let survivor =
        json!({"id": "/survivor", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "instances": 2});
    send(
        reqwest::Method::POST,
        &format!("{}/v2/apps", s.url),
        Some(survivor),
    )
    .await;
    let tasks = until_running(&s, "/survivor", 2).await;
    let victim = tasks[0]["id"].as_str().expect("id").to_string();
    let r = send(
        reqwest::Method::DELETE,
        &format!("{}/v2/apps/survivor/tasks/{victim}", s.url),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    eventually(
        "the killed task replaced",
        Duration::from_secs(30),
        || async {
            let t = running_tasks(&s, "/survivor").await;
            (t.len() == 2 && t.iter().all(|x| x["id"] != victim.as_str())).then_some(())
        },
    )
    .await;
    // Kill the agent running (at least) the first task: everything ends up on the other one.
    let tasks = running_tasks(&s, "/survivor").await;
    let (dead, alive) = if tasks[0]["host"] == "agent-a" {
        ("agent-a", "agent-b")
    } else {
        ("agent-b", "agent-a")
    };
    if dead == "agent-a" {
        a.process.kill();
    } else {
        b.process.kill();
    }
    eventually(
        &format!("every task back on {alive}"),
        Duration::from_secs(40),
        || async {
            let t = running_tasks(&s, "/survivor").await;
            (t.len() == 2 && t.iter().all(|x| x["host"] == alive)).then_some(())
        },
    )
    .await;

    // Server-sent events.
    let mut events = reqwest::Client::new()
        .get(format!(
            "{}/v2/events?event_type=status_update_event",
            s.url
        ))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("events");
    send(
        reqwest::Method::DELETE,
        &format!("{}/v2/apps/survivor", s.url),
        None,
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    while !seen.contains("status_update_event") {
        let chunk = tokio::time::timeout_at(deadline, events.chunk())
            .await
            .expect("a status update event within 20 s")
            .expect("the event stream")
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("\"taskStatus\""), "{seen}");
    let r = reqwest::get(format!("{}/v2/events", s.url))
        .await
        .expect("get");
    assert_eq!(r.status(), 406);
    drop(s);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_services_framework_keeps_its_tasks_without_relaunching() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let _a = Agent::start(
        dir.path(),
        "agent-a",
        &master.address(),
        "cpus:2;mem:1024;ports:[31000-31050]",
    );
    let port = free_port();
    let mut s = start_services(dir.path(), &master.address(), port, "services");
    eventually("the services API", Duration::from_secs(20), || async {
        reqwest::get(format!("{}/ping", s.url))
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    })
    .await;
    send(
        reqwest::Method::POST,
        &format!("{}/v2/apps", s.url),
        Some(json!({"id": "/keep", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "instances": 2})),
    )
    .await;
    let before: HashSet<String> = until_running(&s, "/keep", 2)
        .await
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect();
    s.process.kill();
    s = start_services(dir.path(), &master.address(), port, "services-again");
    let after: HashSet<String> = until_running(&s, "/keep", 2)
        .await
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(before, after, "no task was relaunched");
    let state = master.state().await;
    let launched = state["tasks"].as_array().map_or(0, |t| t.len())
        + state["completed_tasks"].as_array().map_or(0, |t| t.len());
    assert_eq!(launched, 2, "{state}");
    let _ = s.port;
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_apps_publish_ports_pass_health_checks_and_unhealthy_ones_are_replaced() {
    let image = crate::harness::ensure_busybox_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let args: Vec<String> = [
        "agent",
        "--insecure",
        // Tests run side by side: no agent of theirs takes 127.0.0.1:53.
        "--dns-port",
        "0",
        "--mesh=false",
        "--master",
        &master.address(),
        "--ip",
        "127.0.0.1",
        "--port",
        &free_port().to_string(),
        "--work-dir",
        &dir.path().join("agent").display().to_string(),
        "--resources",
        "cpus:2;mem:1024;ports:[32000-32050]",
        "--hostname",
        "127.0.0.1",
        "--containerizers",
        "docker,native",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _agent = Process::spawn("docker-agent", &args, dir.path());
    let s = start_services(dir.path(), &master.address(), free_port(), "services");
    eventually("the services API", Duration::from_secs(20), || async {
        reqwest::get(format!("{}/ping", s.url))
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    })
    .await;
    let web = json!({
        "id": "/docker/web",
        "container": {"type": "DOCKER", "docker": {"image": image, "network": "BRIDGE",
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "name": "http"}]}},
        "cmd": "httpd -f -p 8080 -h /www",
        "cpus": 0.1, "mem": 32, "instances": 1,
        "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0, "gracePeriodSeconds": 10,
                          "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 3}]
    });
    let r = send(
        reqwest::Method::POST,
        &format!("{}/v2/apps", s.url),
        Some(web),
    )
    .await;
    assert_eq!(r.status(), 201);
    let app_json = eventually(
        "the container to be healthy",
        Duration::from_secs(60),
        || async {
            let a = app(&s, "/docker/web").await?;
            (a["tasksHealthy"] == 1).then_some(a)
        },
    )
    .await;
    let port = app_json["tasks"][0]["ports"][0]
        .as_u64()
        .expect("a host port");
    assert!((32000..=32050).contains(&port), "{port}");
    let body = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert_eq!(body, "agora-ok\n");

    // An app whose health check fails is killed by the agent and replaced by the framework.
    let sick = json!({
        "id": "/docker/sick",
        "container": {"type": "DOCKER", "docker": {"image": image, "network": "BRIDGE",
            "portMappings": [{"containerPort": 8080, "hostPort": 0}]}},
        "cmd": "httpd -f -p 8080 -h /www",
        "cpus": 0.1, "mem": 32, "instances": 1, "backoffSeconds": 0.5,
        "healthChecks": [{"protocol": "HTTP", "path": "/missing", "portIndex": 0, "gracePeriodSeconds": 0,
                          "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 2}]
    });
    send(
        reqwest::Method::POST,
        &format!("{}/v2/apps", s.url),
        Some(sick),
    )
    .await;
    let first = eventually("a sick task", Duration::from_secs(60), || async {
        let a = app(&s, "/docker/sick").await?;
        a["tasks"][0]["id"].as_str().map(str::to_string)
    })
    .await;
    eventually(
        "the sick task replaced",
        Duration::from_secs(60),
        || async {
            let a = app(&s, "/docker/sick").await?;
            let id = a["tasks"][0]["id"].as_str()?.to_string();
            (id != first).then_some(())
        },
    )
    .await;
    for id in ["docker/web", "docker/sick"] {
        send(
            reqwest::Method::DELETE,
            &format!("{}/v2/apps/{id}", s.url),
            None,
        )
        .await;
    }
    eventually("the containers gone", Duration::from_secs(30), || async {
        let state = master.state().await;
        state["tasks"]
            .as_array()
            .is_some_and(|t| t.is_empty())
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_proxies_to_the_leader_and_takes_over_without_relaunching_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let _a = Agent::start(
        dir.path(),
        "agent-a",
        &master.address(),
        "cpus:2;mem:1024;ports:[31000-31050]",
    );
    let zk = crate::harness::unique_zk_url("agora-test-services");
    let start = |name: &str| {
        let port = free_port();
        let args: Vec<String> = [
            "services",
            "--master",
            &master.address(),
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--work-dir",
            &dir.path().join(name).display().to_string(),
            "--zk",
            &zk,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Services {
            process: Process::spawn(name, &args, dir.path()),
            url: format!("http://127.0.0.1:{port}"),
            port,
        }
    };
    let mut first = start("services-1");
    eventually(
        "the first instance to lead",
        Duration::from_secs(20),
        || async {
            let r = reqwest::get(format!("{}/v2/apps", first.url)).await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    let second = start("services-2");
    // The standby proxies: the app is created on the leader through it.
    let r = eventually("the standby to proxy", Duration::from_secs(20), || async {
        let r = reqwest::Client::new()
            .post(format!("{}/v2/apps", second.url))
            .json(
                &json!({"id": "/ha", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "instances": 2}),
            )
            .send()
            .await
            .ok()?;
        (r.status() == 201).then_some(r)
    })
    .await;
    assert_eq!(
        r.headers()
            .get("x-marathon-leader")
            .and_then(|v| v.to_str().ok()),
        Some(format!("127.0.0.1:{}", first.port).as_str())
    );
    let before: HashSet<String> = until_running(&first, "/ha", 2)
        .await
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect();
    first.process.kill();
    let after: HashSet<String> = eventually(
        "the standby to lead with the same tasks",
        Duration::from_secs(40),
        || async {
            let r = reqwest::get(format!("{}/v2/leader", second.url))
                .await
                .ok()?;
            let leader: Value = r.json().await.ok()?;
            if leader["leader"] != format!("127.0.0.1:{}", second.port) {
                return None;
            }
            let t = running_tasks(&second, "/ha").await;
            (t.len() == 2).then(|| {
                t.iter()
                    .filter_map(|t| t["id"].as_str().map(str::to_string))
                    .collect()
            })
        },
    )
    .await;
    assert_eq!(before, after, "no task relaunched");
}

#[tokio::test(flavor = "multi_thread")]
async fn fetched_files_are_in_the_sandbox_before_the_task_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("hello.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"hello from a fetched script\"\n").expect("write");
    let master = Master::start(dir.path(), &[]).await;
    // A resolvable hostname, so that `agora task logs` can reach the agent's sandbox API.
    let args: Vec<String> = [
        "agent",
        "--insecure",
        // Tests run side by side: no agent of theirs takes 127.0.0.1:53.
        "--dns-port",
        "0",
        "--mesh=false",
        "--master",
        &master.address(),
        "--ip",
        "127.0.0.1",
        "--port",
        &free_port().to_string(),
        "--work-dir",
        &dir.path().join("agent").display().to_string(),
        "--resources",
        "cpus:2;mem:1024",
        "--hostname",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _a = Process::spawn("agent", &args, dir.path());
    let s = start_services(dir.path(), &master.address(), free_port(), "services");
    eventually("the services API", Duration::from_secs(20), || async {
        reqwest::get(format!("{}/ping", s.url))
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    })
    .await;
    let r = send(
        reqwest::Method::POST,
        &format!("{}/v2/apps", s.url),
        Some(json!({"id": "/fetcher", "cmd": "./hello.sh && sleep 1000", "cpus": 0.1, "mem": 32,
                    "fetch": [{"uri": format!("file://{}", script.display()), "executable": true}]})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let tasks = until_running(&s, "/fetcher", 1).await;
    let task = tasks[0]["id"].as_str().expect("id").to_string();
    let logs = eventually("the script's output", Duration::from_secs(10), || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_agora"))
            .args(["task", "logs", &task, "--master", &master.address()])
            .output();
        async move {
            let text = String::from_utf8_lossy(&out.ok()?.stdout).to_string();
            text.contains("hello from a fetched script").then_some(text)
        }
    })
    .await;
    assert_eq!(logs, "hello from a fetched script\n");
    // A URI that cannot be fetched fails the task with a message naming it.
    let r = send(
        reqwest::Method::POST,
        &format!("{}/v2/apps", s.url),
        Some(json!({"id": "/nofetch", "cmd": "true", "cpus": 0.1, "mem": 32, "fetch": [{"uri": "/no/such/file"}]})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let failure = eventually(
        "the fetch failure recorded",
        Duration::from_secs(20),
        || async {
            let r = reqwest::get(format!(
                "{}/v2/apps/nofetch?embed=app.lastTaskFailure",
                s.url
            ))
            .await
            .ok()?;
            let v: Value = r.json().await.ok()?;
            v["app"]["lastTaskFailure"]["message"]
                .as_str()
                .map(str::to_string)
        },
    )
    .await;
    assert!(failure.contains("/no/such/file"), "{failure}");
    let r = send(
        reqwest::Method::POST,
        &format!("{}/v2/apps", s.url),
        Some(json!({"id": "/ftp", "cmd": "true", "fetch": [{"uri": "ftp://example.com/x"}]})),
    )
    .await;
    assert_eq!(r.status(), 422);
}
