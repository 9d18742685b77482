//! `agora stack …` against `agora local` with Docker tasks: a Compose file of two services (a
//! busybox httpd with a published port and a health check, and a worker that depends on it) is
//! deployed as group `/shop` — the worker starts only once the web task is healthy, the web app's
//! service port is the published port, the page is served on the task's host port — then listed
//! (`stack ls`, `stack ps`), scaled by a second deploy, and removed (`stack rm`). A bad Compose
//! file is refused with errors naming the service and key, and nothing is deployed.
//! Then: tasks of a stack call each other by Compose name through their agent's mesh (native and
//! host-network Docker tasks on `agora local`; a deployed Compose file's bridge containers, there
//! too, through the mesh on the Docker bridge's gateway), and a global service follows agents as
//! they join and leave.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{ensure_busybox_image, eventually, free_port, spawn_local_with};

fn agora(services: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(args)
        .env("AGORA_SERVICES", services)
        .env_remove("AGORA_TOKEN")
        .env_remove("AGORA_TOKEN_FILE")
        .output()
        .expect("agora runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "agora failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

async fn get(url: &str) -> Option<Value> {
    let r = reqwest::get(url).await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

fn compose(image: &str, published: u16, web_replicas: u32) -> String {
    format!(
        r#"
version: "3.8"
services:
  web:
    image: {image}
    # No -h: httpd serves its working directory, so the page proves working_dir is applied.
    command: httpd -f -p 8080
    working_dir: /www
    ports:
      - "{published}:8080"
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]
      interval: 1s
      timeout: 2s
      retries: 3
      start_period: 1s
    labels:
      tier: front
    deploy:
      replicas: {web_replicas}
      resources:
        limits: {{ cpus: "0.1", memory: 32M }}
      update_config: {{ parallelism: 1, order: start-first }}
  worker:
    image: {image}
    command: ["sh", "-c", "sleep 3600"]
    environment:
      - ROLE=worker
    depends_on:
      web:
        condition: service_healthy
    deploy:
      resources:
        limits: {{ cpus: "0.1", memory: 32M }}
"#
    )
}

/// The tasks of app `id` in `/v2/tasks`.
fn tasks_of<'a>(tasks: &'a Value, id: &str) -> Vec<&'a Value> {
    tasks["tasks"]
        .as_array()
        .map(|t| t.iter().filter(|t| t["appId"] == id).collect())
        .unwrap_or_default()
}

fn healthy(t: &Value) -> bool {
    t["state"] == "TASK_RUNNING"
        && t["healthCheckResults"]
            .as_array()
            .is_some_and(|r| !r.is_empty() && r.iter().all(|h| h["alive"] == true))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compose_stack_deploys_in_dependency_order_scales_and_is_removed() {
    let image = ensure_busybox_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let services_port = free_port();
    let url = format!("http://127.0.0.1:{services_port}");
    let master_port = free_port();
    let local = spawn_local_with(
        dir.path(),
        master_port,
        "local",
        services_port,
        "docker,native",
    );
    eventually("the services API", Duration::from_secs(60), || {
        let u = format!("{url}/v2/groups");
        async move { get(&u).await }
    })
    .await;

    // A bad file: every problem named by service and key, nothing deployed.
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        format!(
            "services:\n  web:\n    image: {image}\n    build: .\n    cap_add: [NET_ADMIN]\n  worker:\n    image: {image}\n    ports: ['80-90:80']\n    deploy:\n      replicas: many\nnetworks:\n  front: {{}}\n"
        ),
    )
    .expect("write");
    let out = agora(
        &url,
        &["stack", "deploy", "-c", &bad.display().to_string(), "shop"],
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{err}");
    for want in [
        "unsupported top-level key 'networks'",
        "service web: unsupported key 'build'",
        "service web: unsupported key 'cap_add'",
        "service worker: ports[0]: ",
        "service worker: deploy.replicas: ",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(get(&format!("{url}/v2/groups/shop")).await.is_none());

    // Deploy: the group as --dry-run prints it is what is deployed.
    let published = free_port();
    let file = dir.path().join("docker-compose.yml");
    std::fs::write(&file, compose(image, published, 1)).expect("write");
    let f = file.display().to_string();
    let dry: Value = serde_json::from_str(&ok(&agora(
        &url,
        &["stack", "deploy", "-c", &f, "shop", "--dry-run"],
    )))
    .expect("dry run prints JSON");
    assert_eq!(dry["id"], "/shop");
    assert_eq!(dry["apps"].as_array().map(Vec::len), Some(2), "{dry}");
    assert!(
        get(&format!("{url}/v2/groups/shop")).await.is_none(),
        "a dry run deploys nothing"
    );

    // deploy.mode: global: one instance per active agent the constraints allow, counted from
    // the master's agents (2 in `agora local`).
    let master = format!("127.0.0.1:{master_port}");
    let state = get(&format!("http://{master}/state")).await.expect("state");
    let first_host = state["agents"][0]["hostname"]
        .as_str()
        .expect("hostname")
        .to_string();
    let global = dir.path().join("global.yml");
    for (constraint, want) in [("", 2), (&*format!("node.hostname == {first_host}"), 1)] {
        let placement = if constraint.is_empty() {
            String::new()
        } else {
            format!("\n      placement:\n        constraints: ['{constraint}']")
        };
        std::fs::write(
            &global,
            format!("services:\n  probe:\n    image: {image}\n    deploy:\n      mode: global{placement}\n"),
        )
        .expect("write");
        let g: Value = serde_json::from_str(&ok(&agora(
            &url,
            &[
                "stack",
                "deploy",
                "-c",
                &global.display().to_string(),
                "probe",
                "--dry-run",
                "--master",
                &master,
            ],
        )))
        .expect("json");
        assert_eq!(g["apps"][0]["instances"], want, "{constraint}: {g}");
        assert_eq!(g["apps"][0]["labels"]["AGORA_GLOBAL"], "true", "{g}");
        assert!(
            g["apps"][0]["constraints"]
                .as_array()
                .is_some_and(|c| c.contains(&serde_json::json!(["hostname", "UNIQUE"]))),
            "{g}"
        );
    }

    let out = ok(&agora(&url, &["stack", "deploy", "-c", &f, "shop"]));
    assert!(
        out.contains("creating stack shop (2 services: web, worker): deployment "),
        "{out}"
    );
    // The worker appears only once the web task is healthy (it depends on web).
    let web_seen_healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    eventually(
        "web healthy and the worker running",
        Duration::from_secs(120),
        || {
            let u = format!("{url}/v2/tasks");
            let seen = web_seen_healthy.clone();
            async move {
                let tasks = get(&u).await?;
                let web = tasks_of(&tasks, "/shop/web");
                let worker = tasks_of(&tasks, "/shop/worker");
                if web.iter().any(|t| healthy(t)) {
                    seen.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                assert!(
                    worker.is_empty() || seen.load(std::sync::atomic::Ordering::SeqCst),
                    "the worker started before web was healthy: {tasks}"
                );
                (worker.iter().any(|t| t["state"] == "TASK_RUNNING")).then_some(())
            }
        },
    )
    .await;

    let web = get(&format!("{url}/v2/apps/shop/web?embed=app.tasks"))
        .await
        .expect("web app");
    let web = &web["app"];
    assert_eq!(
        web["container"]["portMappings"][0]["servicePort"], published,
        "{web}"
    );
    assert_eq!(web["container"]["portMappings"][0]["containerPort"], 8080);
    assert_eq!(web["labels"]["com.docker.stack.namespace"], "shop");
    assert_eq!(web["labels"]["tier"], "front");
    let worker = get(&format!("{url}/v2/apps/shop/worker"))
        .await
        .expect("worker app");
    assert_eq!(
        worker["app"]["dependencies"],
        serde_json::json!(["/shop/web"])
    );
    assert_eq!(worker["app"]["env"]["ROLE"], "worker");
    let task = &web["tasks"][0];
    let first_web_task = task["id"].as_str().expect("task id").to_string();
    let host = task["host"].as_str().expect("host");
    let port = task["ports"][0].as_u64().expect("host port");
    let page = reqwest::get(format!("http://{host}:{port}/"))
        .await
        .expect("GET the web task")
        .text()
        .await
        .expect("text");
    assert_eq!(page, "agora-ok\n");

    // ls and ps, as tables and JSON.
    let ls = ok(&agora(&url, &["stack", "ls"]));
    assert!(
        ls.lines().next().is_some_and(|h| h.starts_with("NAME")),
        "{ls}"
    );
    assert!(
        ls.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["shop", "2"]),
        "{ls}"
    );
    let ls: Value =
        serde_json::from_str(&ok(&agora(&url, &["stack", "ls", "--json"]))).expect("json");
    assert_eq!(ls[0]["name"], "shop");
    assert_eq!(ls[0]["serviceNames"], serde_json::json!(["web", "worker"]));
    let ps: Value =
        serde_json::from_str(&ok(&agora(&url, &["stack", "ps", "shop", "--json"]))).expect("json");
    let rows = ps.as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{ps}");
    assert_eq!(rows[0]["service"], "web");
    assert_eq!(rows[0]["health"], "healthy");
    assert_eq!(rows[0]["endpoint"], format!("{host}:{port}"));
    assert_eq!(rows[1]["service"], "worker");
    assert_eq!(rows[1]["state"], "TASK_RUNNING");
    assert_eq!(rows[1]["health"], "-");
    let table = ok(&agora(&url, &["stack", "ps", "shop"]));
    assert!(table.starts_with("SERVICE"), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("web ")
            && l.contains(&format!("{host}:{port}"))
            && l.contains("TASK_RUNNING")
            && l.ends_with("healthy")),
        "{table}"
    );

    // Update: web scaled to 2 by deploying the changed file; --wait returns once it is done.
    std::fs::write(&file, compose(image, published, 2)).expect("write");
    let out = ok(&agora(
        &url,
        &["stack", "deploy", "-c", &f, "shop", "--wait"],
    ));
    assert!(out.contains("updating stack shop"), "{out}");
    let tasks = get(&format!("{url}/v2/tasks")).await.expect("tasks");
    let web = tasks_of(&tasks, "/shop/web");
    assert_eq!(web.len(), 2, "{tasks}");
    assert!(web.iter().all(|t| healthy(t)), "{tasks}");
    assert!(
        web.iter().any(|t| t["id"] == first_web_task.as_str()),
        "a change of replicas is a scale: the first task keeps running: {tasks}"
    );
    assert_eq!(tasks_of(&tasks, "/shop/worker").len(), 1, "{tasks}");
    let app = get(&format!("{url}/v2/apps/shop/web")).await.expect("web");
    assert_eq!(app["app"]["instances"], 2);
    assert_eq!(
        app["app"]["container"]["portMappings"][0]["servicePort"], published,
        "the service port is kept"
    );

    // A group that is not a stack is left alone.
    let r = reqwest::Client::new()
        .put(format!("{url}/v2/groups/plain"))
        .json(&serde_json::json!({ "id": "/plain", "apps": [{ "id": "/plain/x", "cmd": "sleep 100", "cpus": 0.1, "mem": 16, "instances": 0 }] }))
        .send()
        .await
        .expect("PUT");
    assert!(r.status().is_success());
    let out = agora(&url, &["stack", "rm", "plain"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a stack"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls = ok(&agora(&url, &["stack", "ls"]));
    assert!(!ls.contains("plain"), "{ls}");

    // Remove: the group, its apps and their tasks are gone.
    let out = ok(&agora(&url, &["stack", "rm", "shop", "--wait"]));
    assert!(out.contains("removing stack shop"), "{out}");
    assert!(get(&format!("{url}/v2/groups/shop")).await.is_none());
    eventually("the stack's tasks gone", Duration::from_secs(60), || {
        let u = format!("{url}/v2/tasks");
        async move {
            let tasks = get(&u).await?;
            (tasks_of(&tasks, "/shop/web").is_empty()
                && tasks_of(&tasks, "/shop/worker").is_empty())
            .then_some(())
        }
    })
    .await;
    let ls = ok(&agora(&url, &["stack", "ls"]));
    assert!(!ls.contains("shop"), "{ls}");
    let out = agora(&url, &["stack", "ps", "shop"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no stack 'shop'"));
    drop(local);
}

/// `PUT /v2/groups/{id}` with `group`; the deployment is accepted.
async fn put_group(url: &str, id: &str, group: Value) {
    let r = reqwest::Client::new()
        .put(format!("{url}/v2/groups/{id}"))
        .json(&group)
        .send()
        .await
        .expect("PUT /v2/groups");
    assert!(
        r.status().is_success(),
        "{}",
        r.text().await.unwrap_or_default()
    );
}

/// GET `url`'s body when it answers 200.
async fn page(url: &str) -> Option<String> {
    let r = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?
        .get(url)
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.text().await.ok()
}

/// Waits until `page_url` (what a web task fetched from its db by name) is `<prefix> <task id>`
/// of a RUNNING task of app `db` (a db task replaced meanwhile is fine: its successor answers).
async fn fetched_from(url: &str, db: &str, prefix: &str, page_url: &str) {
    eventually(
        &format!("{page_url}: the answer of a running task of {db}"),
        Duration::from_secs(90),
        || {
            let tasks = format!("{url}/v2/apps{db}?embed=app.tasks");
            let p = page_url.to_string();
            let prefix = prefix.to_string();
            async move {
                let got = page(&p).await?;
                let app = get(&tasks).await?;
                app["app"]["tasks"]
                    .as_array()?
                    .iter()
                    .filter(|t| t["state"] == "TASK_RUNNING")
                    .any(|t| {
                        t["id"]
                            .as_str()
                            .is_some_and(|id| got == format!("{prefix} {id}\n"))
                    })
                    .then_some(())
            }
        },
    )
    .await;
}

/// Inside a stack a task reaches a sibling service by its Compose name and published port
/// (`db:PORT`, and Swarm's full name `calls_db:PORT`), through its own agent's routing mesh, for
/// native tasks (a per-task `/etc/hosts` in the task's mount namespace: the host's entries plus
/// the aliases; the host's own file unchanged) and Docker tasks (the container's extra hosts; host
/// network here, as `agora local`'s agents listen on loopback addresses a bridge container cannot
/// reach). Each `web` task fetches `db`'s page by name from inside the task, every second, and
/// serves what it got; the test reads it through the mesh. The stacks are groups put through
/// `/v2/groups` with the stack label (as `agora stack deploy` makes them; Compose files only make
/// Docker apps). A group without the label gets no aliases.
#[tokio::test(flavor = "multi_thread")]
async fn tasks_of_a_stack_call_each_other_by_compose_name() {
    let image = ensure_busybox_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let services_port = free_port();
    let url = format!("http://127.0.0.1:{services_port}");
    let local = spawn_local_with(
        dir.path(),
        free_port(),
        "local",
        services_port,
        "docker,native",
    );
    eventually("the services API", Duration::from_secs(60), || {
        let u = format!("{url}/v2/groups");
        async move { get(&u).await }
    })
    .await;
    let host_hosts = std::fs::read_to_string("/etc/hosts").expect("/etc/hosts");
    let label = |stack: &str| serde_json::json!({ "com.docker.stack.namespace": stack });

    // Native: db serves its task id; web fetches http://db:DB/ and http://calls_db:DB/ by name.
    let (db_port, web_port) = (free_port(), free_port());
    let fetch = |name: &str, file: &str| {
        format!("busybox wget -q -O www/{file}.tmp http://{name}:{db_port}/ && mv www/{file}.tmp www/{file}; ")
    };
    put_group(
        &url,
        "calls",
        serde_json::json!({
            "id": "/calls",
            "apps": [
                {
                    "id": "/calls/db",
                    "cmd": "mkdir -p www && echo \"db $MESOS_TASK_ID\" > www/index.html && exec busybox httpd -f -p $PORT0 -h www",
                    "cpus": 0.1, "mem": 32, "instances": 1,
                    "portDefinitions": [{ "port": db_port }],
                    "labels": label("calls"),
                },
                {
                    "id": "/calls/web",
                    "cmd": format!(
                        "mkdir -p www; cp /etc/hosts www/hosts; echo web > www/index.html; \
                         (while :; do {}{}sleep 1; done) & exec busybox httpd -f -p $PORT0 -h www",
                        fetch("db", "short"),
                        fetch("calls_db", "full")
                    ),
                    "cpus": 0.1, "mem": 32, "instances": 1,
                    "portDefinitions": [{ "port": web_port }],
                    "labels": label("calls"),
                },
            ],
        }),
    )
    .await;
    // Through both agents' meshes: web's task is on one of them, either way.
    for agent in ["127.0.0.2", "127.0.0.3"] {
        for file in ["short", "full"] {
            fetched_from(
                &url,
                "/calls/db",
                "db",
                &format!("http://{agent}:{web_port}/{file}"),
            )
            .await;
        }
    }
    let hosts = page(&format!("http://127.0.0.2:{web_port}/hosts"))
        .await
        .expect("web's /etc/hosts");
    assert!(
        hosts.starts_with(&host_hosts),
        "the host's entries are kept: {hosts}"
    );
    let web_host = get(&format!("{url}/v2/apps/calls/web?embed=app.tasks"))
        .await
        .and_then(|a| a["app"]["tasks"][0]["host"].as_str().map(str::to_string))
        .expect("web's host");
    let mesh_ip = if web_host == "127.0.0.2" || web_host == "127.0.0.3" {
        web_host.clone()
    } else {
        // The agents' hostnames are not addresses: each is still one of the two meshes.
        String::new()
    };
    for name in ["calls_db", "calls_web", "db", "web"] {
        assert!(
            hosts
                .lines()
                .any(|l| l.ends_with(&format!("\t{name}")) && l.starts_with(&mesh_ip)),
            "{name} in {hosts}"
        );
    }
    assert_eq!(
        std::fs::read_to_string("/etc/hosts").expect("/etc/hosts"),
        host_hosts,
        "the host's /etc/hosts is not touched"
    );

    // Docker (host network): the same by the container's extra hosts.
    let (ddb_port, dweb_port) = (free_port(), free_port());
    let docker_app = |id: &str, cmd: String, port: u16| {
        serde_json::json!({
            "id": id,
            "cmd": cmd,
            "cpus": 0.1, "mem": 32, "instances": 1,
            "container": { "type": "DOCKER", "docker": { "image": image, "network": "HOST" } },
            "portDefinitions": [{ "port": port }],
            "labels": label("dcalls"),
        })
    };
    put_group(
        &url,
        "dcalls",
        serde_json::json!({
            "id": "/dcalls",
            "apps": [
                docker_app("/dcalls/db", "cd $AGORA_SANDBOX && mkdir -p w && echo \"docker db $MESOS_TASK_ID\" > w/index.html && exec httpd -f -p $PORT0 -h w".into(), ddb_port),
                docker_app(
                    "/dcalls/web",
                    format!("cd $AGORA_SANDBOX; mkdir -p w; cp /etc/hosts w/hosts; (while :; do wget -q -O w/f.tmp http://db:{ddb_port}/ && mv w/f.tmp w/short; wget -q -O w/g.tmp http://dcalls_db:{ddb_port}/ && mv w/g.tmp w/full; sleep 1; done) & exec httpd -f -p $PORT0 -h w"),
                    dweb_port,
                ),
            ],
        }),
    )
    .await;
    for file in ["short", "full"] {
        fetched_from(
            &url,
            "/dcalls/db",
            "docker db",
            &format!("http://127.0.0.2:{dweb_port}/{file}"),
        )
        .await;
    }
    let hosts = page(&format!("http://127.0.0.2:{dweb_port}/hosts"))
        .await
        .expect("docker web's /etc/hosts");
    assert!(
        hosts
            .lines()
            .any(|l| l.ends_with("\tdb") || l.ends_with(" db")),
        "{hosts}"
    );

    // A group that is not a stack: its tasks get no aliases.
    let plain_port = free_port();
    put_group(
        &url,
        "plainer",
        serde_json::json!({
            "id": "/plainer",
            "apps": [{
                "id": "/plainer/web",
                "cmd": "mkdir -p www; cp /etc/hosts www/hosts; exec busybox httpd -f -p $PORT0 -h www",
                "cpus": 0.1, "mem": 32, "instances": 1,
                "portDefinitions": [{ "port": plain_port }],
            }],
        }),
    )
    .await;
    let hosts = eventually("the plain task's hosts", Duration::from_secs(60), || {
        let u = format!("http://127.0.0.2:{plain_port}/hosts");
        async move { page(&u).await }
    })
    .await;
    assert_eq!(hosts, host_hosts, "no aliases outside a stack");

    for g in ["calls", "dcalls", "plainer"] {
        let r = reqwest::Client::new()
            .delete(format!("{url}/v2/groups/{g}"))
            .send()
            .await
            .expect("DELETE");
        assert!(r.status().is_success());
    }
    eventually("every task gone", Duration::from_secs(60), || {
        let u = format!("{url}/v2/tasks");
        async move {
            let tasks = get(&u).await?;
            tasks["tasks"].as_array()?.is_empty().then_some(())
        }
    })
    .await;
    drop(local);
}

/// `deploy.mode: global` follows the agents without a redeploy: a master (agents unreachable
/// after 2 s of silence), two agents and the services framework; the global service runs 2
/// tasks, a third agent that joins gets one (3, `instances` 3 in `/v2/apps`), and when that
/// agent dies (killed, its containers cleaned up) the count drops back to 2 while the other two
/// tasks keep running.
#[tokio::test(flavor = "multi_thread")]
async fn a_global_service_follows_agents_as_they_join_and_leave() {
    use crate::harness::{Agent, Master};
    let image = ensure_busybox_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &["--agent-timeout", "2"]).await;
    let res = "cpus:2;mem:512";
    let agent = |name: &str| {
        Agent::start_with(
            dir.path(),
            name,
            &master.address(),
            res,
            "docker,native",
            free_port(),
        )
    };
    let _g1 = agent("g1");
    let _g2 = agent("g2");
    let (_services, url) =
        crate::harness::spawn_services(dir.path(), &master.address(), "agora-test-global");
    master
        .state_where("two agents", Duration::from_secs(30), |s| {
            s["agents"].as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
    eventually("the services API", Duration::from_secs(60), || {
        let u = format!("{url}/v2/groups");
        async move { get(&u).await }
    })
    .await;
    let file = dir.path().join("global.yml");
    std::fs::write(
        &file,
        format!(
            "services:\n  probe:\n    image: {image}\n    command: ['sh', '-c', 'sleep 3600']\n    deploy:\n      mode: global\n      resources:\n        limits: {{ cpus: '0.1', memory: 32M }}\n"
        ),
    )
    .expect("write");
    ok(&agora(
        &url,
        &[
            "stack",
            "deploy",
            "-c",
            &file.display().to_string(),
            "everywhere",
            "--master",
            &master.address(),
        ],
    ));
    // (running tasks' hosts, instances)
    let running = |want: usize| {
        let u = format!("{url}/v2/apps/everywhere/probe?embed=app.tasks");
        async move {
            let app = get(&u).await?;
            let hosts: Vec<String> = app["app"]["tasks"]
                .as_array()?
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .filter_map(|t| t["host"].as_str().map(str::to_string))
                .collect();
            let unique: std::collections::BTreeSet<&String> = hosts.iter().collect();
            (hosts.len() == want
                && unique.len() == want
                && app["app"]["instances"] == want
                && app["app"]["tasks"].as_array()?.len() == want)
                .then(|| {
                    app["app"]["tasks"]
                        .as_array()
                        .map(|t| {
                            t.iter()
                                .filter_map(|t| t["id"].as_str().map(str::to_string))
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default()
                })
        }
    };
    let two = eventually("2 tasks on 2 agents", Duration::from_secs(90), || {
        running(2)
    })
    .await;
    // A third agent joins: it gets a task, no redeploy.
    let g3 = agent("g3");
    let three = eventually(
        "3 tasks once a third agent joined",
        Duration::from_secs(90),
        || running(3),
    )
    .await;
    assert!(two.iter().all(|t| three.contains(t)), "{two:?} {three:?}");
    // It dies: back to 2, the first two tasks untouched.
    drop(g3);
    let after = eventually(
        "2 tasks once the third agent is gone",
        Duration::from_secs(90),
        || running(2),
    )
    .await;
    assert_eq!(
        after.iter().collect::<std::collections::BTreeSet<_>>(),
        two.iter().collect(),
        "the tasks on the agents that stayed keep running"
    );
    ok(&agora(&url, &["stack", "rm", "everywhere", "--wait"]));
    eventually("the stack's tasks gone", Duration::from_secs(60), || {
        let u = format!("{url}/v2/tasks");
        async move {
            let tasks = get(&u).await?;
            tasks["tasks"].as_array()?.is_empty().then_some(())
        }
    })
    .await;
}

/// The Swarm case end to end, on `agora local`: `agora stack deploy` of a Compose file whose `web`
/// service (a bridge-network container) fetches `http://db:PUBLISHED/` and
/// `http://calls_db:PUBLISHED/` by name. The agents' addresses are loopback, which a bridge
/// container cannot reach: the names resolve (the container's extra hosts) to the Docker bridge's
/// gateway, where the first agent's mesh also listens, and it relays the published port to db's
/// task. The test reads what web got through web's published port on the other agent's mesh.
#[tokio::test(flavor = "multi_thread")]
async fn a_compose_stack_s_bridge_containers_call_each_other_by_name() {
    let image = ensure_busybox_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let services_port = free_port();
    let url = format!("http://127.0.0.1:{services_port}");
    let _local = spawn_local_with(
        dir.path(),
        free_port(),
        "local",
        services_port,
        "docker,native",
    );
    eventually("the services API", Duration::from_secs(60), || {
        let u = format!("{url}/v2/groups");
        async move { get(&u).await }
    })
    .await;
    let (db, web) = (free_port(), free_port());
    let file = dir.path().join("docker-compose.yml");
    std::fs::write(
        &file,
        format!(
            r#"
services:
  db:
    image: {image}
    command: httpd -f -p 8080
    working_dir: /www
    ports: ["{db}:8080"]
    deploy:
      resources:
        limits: {{ cpus: "0.1", memory: 32M }}
  web:
    image: {image}
    command:
      - sh
      - -c
      - "cd $$AGORA_SANDBOX; mkdir -p w; (while :; do wget -q -O w/a http://db:{db}/ && mv w/a w/short; wget -q -O w/b http://calls_db:{db}/ && mv w/b w/full; sleep 1; done) & exec httpd -f -p 8081 -h w"
    ports: ["{web}:8081"]
    deploy:
      resources:
        limits: {{ cpus: "0.1", memory: 32M }}
"#
        ),
    )
    .expect("write");
    let out = ok(&agora(
        &url,
        &[
            "stack",
            "deploy",
            "-c",
            &file.display().to_string(),
            "calls",
        ],
    ));
    assert!(out.contains("creating stack calls"), "{out}");
    for name in ["short", "full"] {
        let got = eventually(
            &format!("web's fetch of db by name ({name})"),
            Duration::from_secs(90),
            || {
                let u = format!("http://127.0.0.3:{web}/{name}");
                async move { page(&u).await }
            },
        )
        .await;
        assert_eq!(got, "agora-ok\n", "{name}: db's page, through the mesh");
    }
    ok(&agora(&url, &["stack", "rm", "calls", "--wait"]));
    eventually("the stack's tasks gone", Duration::from_secs(60), || {
        let u = format!("{url}/v2/tasks");
        async move {
            let tasks = get(&u).await?;
            tasks["tasks"].as_array()?.is_empty().then_some(())
        }
    })
    .await;
}
