//! "A reply means it is durable" for the services and batch frameworks: a state that cannot be
//! saved answers the call 5xx and forgets it (the process goes on serving and saves again once
//! it can), and a `kill -9` right after a 201 never loses what was acknowledged.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{eventually, free_port, Master, Process};

/// A framework process (`services` or `batch`) with its work dir under `dir`.
struct Fw {
    process: Process,
    base: String,
    state: PathBuf,
}

fn spawn(kind: &str, dir: &Path, master: &str, port: u16, name: &str) -> Fw {
    let work = dir.join(kind);
    let args: Vec<String> = [
        kind,
        "--master",
        master,
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--work-dir",
        &work.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Fw {
        process: Process::spawn(name, &args, dir),
        base: format!("http://127.0.0.1:{port}"),
        state: work.join("state.json"),
    }
}

async fn start(kind: &str, dir: &Path, master: &str, port: u16, name: &str) -> Fw {
    let fw = spawn(kind, dir, master, port, name);
    let ping = format!("{}/ping", fw.base);
    eventually(&format!("the {kind} API"), Duration::from_secs(20), || {
        let ping = ping.clone();
        async move {
            let r = reqwest::get(&ping).await.ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await;
    fw
}

async fn post(url: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .expect("POST")
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url)
        .await
        .expect("GET")
        .json()
        .await
        .expect("json")
}

async fn app_ids(s: &Fw) -> Vec<String> {
    let v = get_json(&format!("{}/v2/apps", s.base)).await;
    let mut ids: Vec<String> = v["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .filter_map(|a| a["id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

async fn job_names(b: &Fw) -> Vec<String> {
    let v = get_json(&format!("{}/v1/scheduler/jobs", b.base)).await;
    let mut names: Vec<String> = v
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

fn app(id: &str) -> Value {
    json!({"id": id, "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": 0})
}

fn job(name: &str) -> Value {
    json!({"name": name, "command": "true", "schedule": "R/2035-01-01T00:00:00Z/P1D", "cpus": 0.1, "mem": 16})
}

/// Makes the state file unwritable: a directory where the file is (the atomic rename over it
/// fails, whoever runs the test).
fn break_state(path: &Path) {
    std::fs::remove_file(path).expect("remove state.json");
    std::fs::create_dir(path).expect("a directory in its place");
}

fn fix_state(path: &Path) {
    std::fs::remove_dir(path).expect("remove the directory");
}

async fn assert_not_saved(r: reqwest::Response) {
    let status = r.status();
    let body: Value = r.json().await.expect("json");
    assert_eq!(status, 503, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("the state could not be saved: "),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsaved_app_or_job_is_refused_forgotten_and_saving_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let port = free_port();
    let mut s = start("services", dir.path(), &master.address(), port, "services").await;
    let apps = format!("{}/v2/apps", s.base);
    assert_eq!(post(&apps, &app("/kept")).await.status(), 201);
    assert!(s.state.is_file());

    break_state(&s.state);
    assert_not_saved(post(&apps, &app("/refused")).await).await;
    // Still serving, and the refused app is not there.
    assert_eq!(app_ids(&s).await, vec!["/kept"]);
    assert_not_saved(post(&apps, &app("/refused-too")).await).await;
    assert!(s.process.try_wait().is_none(), "services kept running");

    fix_state(&s.state);
    assert_eq!(post(&apps, &app("/after")).await.status(), 201);
    s.process.kill();
    drop(s);
    let s = start(
        "services",
        dir.path(),
        &master.address(),
        port,
        "services-2",
    )
    .await;
    assert_eq!(app_ids(&s).await, vec!["/after", "/kept"]);
    drop(s);

    let port = free_port();
    let mut b = start("batch", dir.path(), &master.address(), port, "batch").await;
    let jobs = format!("{}/v1/scheduler/iso8601", b.base);
    assert_eq!(post(&jobs, &job("kept")).await.status(), 204);
    assert!(b.state.is_file());
    break_state(&b.state);
    assert_not_saved(post(&jobs, &job("refused")).await).await;
    assert_eq!(job_names(&b).await, vec!["kept"]);
    assert!(b.process.try_wait().is_none(), "batch kept running");
    fix_state(&b.state);
    assert_eq!(post(&jobs, &job("after")).await.status(), 204);
    b.process.kill();
    drop(b);
    let b = start("batch", dir.path(), &master.address(), port, "batch-2").await;
    assert_eq!(job_names(&b).await, vec!["after", "kept"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_right_after_a_201_loses_no_acknowledged_app() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No master needed: the API and the state file are what is tested, and a master to
    // subscribe to would only slow each restart down.
    let master = format!("127.0.0.1:{}", free_port());
    let began = Instant::now();
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..50 {
        let mut s = start(
            "services",
            dir.path(),
            &master,
            free_port(),
            &format!("services-{round}"),
        )
        .await;
        let present = app_ids(&s).await;
        // Saved but its reply lost with the process is allowed; acknowledged but gone is not.
        let lost: Vec<&String> = acknowledged
            .iter()
            .filter(|a| !present.contains(a))
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged before kill -9, gone after the restart: {lost:?}"
        );
        let apps = format!("{}/v2/apps", s.base);
        // Two creations in flight; the process dies the moment the first is acknowledged (the
        // other may or may not have been).
        let ids = [format!("/r{round:02}a"), format!("/r{round:02}b")];
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for id in &ids {
            let (apps, body, id, tx) = (apps.clone(), app(id), id.clone(), tx.clone());
            tokio::spawn(async move {
                let status = reqwest::Client::new()
                    .post(&apps)
                    .json(&body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                let _ = tx.send((id, status));
            });
        }
        drop(tx);
        let (id, first) = rx.recv().await.expect("a reply");
        s.process.kill();
        assert_eq!(first.as_ref().ok(), Some(&201), "round {round}: {first:?}");
        acknowledged.push(id);
        while let Some((id, status)) = rx.recv().await {
            if status.ok() == Some(201) {
                acknowledged.push(id);
            }
        }
    }
    let s = start(
        "services",
        dir.path(),
        &master,
        free_port(),
        "services-last",
    )
    .await;
    let present = app_ids(&s).await;
    assert!(
        acknowledged.iter().all(|a| present.contains(a)),
        "acknowledged {acknowledged:?}, present {present:?}"
    );
    assert!(acknowledged.len() >= 50);
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "50 rounds took {:?}",
        began.elapsed()
    );
}

/// docs/deploy.md §9 "Backup and restore", followed literally for a cluster without ZooKeeper:
/// stop the master, services and batch (SIGTERM), copy `registry.json` and the two `state.json`,
/// wipe their work dirs, put the copies back, start them: the apps, jobs, weights and agents are
/// all there, and the tasks that ran through it were not relaunched.
#[tokio::test(flavor = "multi_thread")]
async fn the_documented_backup_and_restore_brings_back_apps_jobs_weights_and_agents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut master = Master::start_on(dir.path(), port, &[]).await;
    let agent =
        crate::harness::Agent::start(dir.path(), "agent-1", &master.address(), "cpus:2;mem:512");
    let (sp, bp) = (free_port(), free_port());
    let mut s = start("services", dir.path(), &master.address(), sp, "services").await;
    let mut b = start("batch", dir.path(), &master.address(), bp, "batch").await;
    let weights = format!("{}/api/v1/weights", master.url());
    let put = reqwest::Client::new()
        .put(&weights)
        .body(r#"[{"role":"web","weight":3}]"#)
        .send()
        .await
        .expect("PUT weights");
    assert_eq!(put.status(), 204);
    let mut sleeper = app("/kept");
    sleeper["instances"] = json!(1);
    assert_eq!(
        post(&format!("{}/v2/apps", s.base), &sleeper)
            .await
            .status(),
        201
    );
    assert_eq!(
        post(&format!("{}/v1/scheduler/iso8601", b.base), &job("nightly"))
            .await
            .status(),
        204
    );
    let tasks_url = format!("{}/v2/tasks", s.base);
    let running = eventually(
        "the app's task running",
        Duration::from_secs(30),
        || async {
            let t: Value = reqwest::get(&tasks_url).await.ok()?.json().await.ok()?;
            let ids: Vec<String> = t["tasks"]
                .as_array()?
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .filter_map(|t| t["id"].as_str().map(str::to_string))
                .collect();
            (ids.len() == 1).then_some(ids)
        },
    )
    .await;

    // Back up: stop, copy the three files.
    for p in [&s.process, &b.process, &master.process] {
        p.signal("TERM");
    }
    for p in [&mut s.process, &mut b.process, &mut master.process] {
        let status = eventually("a clean stop", Duration::from_secs(20), || {
            let st = p.try_wait();
            async move { st }
        })
        .await;
        assert!(status.success(), "{status:?}");
    }
    let backup = dir.path().join("backup");
    std::fs::create_dir_all(&backup).expect("backup dir");
    let files = [
        (master.work_dir.join("registry.json"), "registry.json"),
        (dir.path().join("services/state.json"), "services.json"),
        (dir.path().join("batch/state.json"), "batch.json"),
    ];
    for (from, name) in &files {
        std::fs::copy(from, backup.join(name))
            .unwrap_or_else(|e| panic!("back up {}: {e}", from.display()));
    }
    // Lose the machines' state, then restore it.
    std::fs::remove_dir_all(&master.work_dir).expect("wipe");
    std::fs::remove_dir_all(dir.path().join("services")).expect("wipe");
    std::fs::remove_dir_all(dir.path().join("batch")).expect("wipe");
    for (to, name) in &files {
        std::fs::create_dir_all(to.parent().expect("parent")).expect("dir");
        std::fs::copy(backup.join(name), to).expect("restore");
    }

    let master = Master::start_on(dir.path(), port, &[]).await;
    let s = start("services", dir.path(), &master.address(), sp, "services-2").await;
    let b = start("batch", dir.path(), &master.address(), bp, "batch-2").await;
    let roles = get_json(&format!("{}/api/v1/roles", master.url())).await;
    let web = roles["roles"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "web"))
        .cloned()
        .unwrap_or_else(|| panic!("role web after the restore: {roles}"));
    assert_eq!(web["weight"], 3.0);
    assert_eq!(app_ids(&s).await, vec!["/kept"]);
    assert_eq!(job_names(&b).await, vec!["nightly"]);
    let state_url = format!("{}/state", master.url());
    eventually(
        "the agent back with its task",
        Duration::from_secs(60),
        || async {
            let st: Value = reqwest::get(&state_url).await.ok()?.json().await.ok()?;
            let agents = st["agents"].as_array()?.len();
            let tasks: Vec<String> = st["tasks"]
                .as_array()?
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .filter_map(|t| t["id"].as_str().map(str::to_string))
                .collect();
            (agents == 1 && tasks == running).then_some(())
        },
    )
    .await;
    let after = eventually("the app settled", Duration::from_secs(30), || async {
        let t: Value = reqwest::get(&tasks_url).await.ok()?.json().await.ok()?;
        let ids: Vec<String> = t["tasks"]
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .filter_map(|t| t["id"].as_str().map(str::to_string))
            .collect();
        (!ids.is_empty()).then_some(ids)
    })
    .await;
    assert_eq!(
        after, running,
        "the task ran through the restore, not relaunched"
    );
    drop(agent);
}

/// A ZooKeeper server of this test's own (Debian's `zookeeper`, as `scripts/test` runs the
/// shared one) on a free port with its data under `dir`: the backup test stops and restores
/// ZooKeeper itself, which the shared server must never be. `zkServer.sh start-foreground`
/// execs the JVM, so the child is ZooKeeper itself; it is killed on drop.
struct OwnZooKeeper {
    child: std::process::Child,
    data: PathBuf,
}

impl OwnZooKeeper {
    async fn start(dir: &Path, port: u16) -> OwnZooKeeper {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("ZooKeeper dataDir");
        let cfg = dir.join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={port}\n\
                 clientPortAddress=127.0.0.1\nmaxSessionTimeout=60000\nminSessionTimeout=1000\n\
                 4lw.commands.whitelist=ruok\nadmin.enableServer=false\n",
                data.display()
            ),
        )
        .expect("zoo.cfg");
        let log = std::fs::File::create(dir.join("zookeeper.out")).expect("log");
        let child = std::process::Command::new("/usr/share/zookeeper/bin/zkServer.sh")
            .arg("start-foreground")
            .arg(&cfg)
            .env("ZOO_LOG_DIR", dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("Debian's zookeeper is installed (scripts/test installs it)");
        let zk = OwnZooKeeper { child, data };
        eventually(
            "ZooKeeper to answer ruok",
            Duration::from_secs(60),
            || async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let ask = async {
                    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .ok()?;
                    s.write_all(b"ruok").await.ok()?;
                    let mut answer = String::new();
                    s.read_to_string(&mut answer).await.ok()?;
                    (answer == "imok").then_some(())
                };
                tokio::time::timeout(Duration::from_secs(2), ask)
                    .await
                    .ok()
                    .flatten()
            },
        )
        .await;
        zk
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnZooKeeper {
    fn drop(&mut self) {
        self.stop();
    }
}

/// docs/deploy.md §9 "Backup and restore" with ZooKeeper: the masters' registry and the
/// services' and batch's state are in ZooKeeper; its `dataDir` is copied while it runs, then the
/// ensemble and every component are stopped and their state lost (ZooKeeper's data and the work
/// dirs wiped), the files are put back and ZooKeeper started: the masters, services and batch
/// come back with the weights, the app, the job and the agent, whose task ran through it.
#[tokio::test(flavor = "multi_thread")]
async fn the_documented_zookeeper_backup_and_restore_brings_the_cluster_back() {
    // HTTP calls here have no deadline of their own: the whole test has one.
    tokio::time::timeout(Duration::from_secs(240), zookeeper_backup_and_restore())
        .await
        .expect("the ZooKeeper backup and restore within 4 minutes");
}

async fn zookeeper_backup_and_restore() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zk_dir = dir.path().join("zk");
    let zk_port = free_port();
    let mut zk = OwnZooKeeper::start(&zk_dir, zk_port).await;
    let masters_zk = format!("zk://127.0.0.1:{zk_port}/agora");
    let port = free_port();
    let master_args = [
        "--zk",
        masters_zk.as_str(),
        "--agent-reregister-timeout",
        "20",
    ];
    let mut master = Master::start_on(dir.path(), port, &master_args).await;
    let leads = |port: u16| async move {
        eventually(
            "the master to lead",
            Duration::from_secs(30),
            || async move {
                let r = reqwest::get(format!("http://127.0.0.1:{port}/state"))
                    .await
                    .ok()?;
                (r.status() == 200).then_some(())
            },
        )
        .await
    };
    leads(port).await;
    let agent = crate::harness::Agent::start(dir.path(), "agent-1", &masters_zk, "cpus:2;mem:512");
    let (sp, bp) = (free_port(), free_port());
    let spawn_fw = |kind: &str, port: u16, name: &str| {
        let args = crate::harness::framework_args(
            kind,
            dir.path(),
            port,
            &masters_zk,
            &format!("zk://127.0.0.1:{zk_port}/agora-{kind}"),
            Duration::from_secs(10),
        );
        Process::spawn(name, &args, dir.path())
    };
    let ready = |port: u16| async move {
        eventually("the API", Duration::from_secs(30), || async move {
            let r = reqwest::get(format!("http://127.0.0.1:{port}/ping"))
                .await
                .ok()?;
            r.status().is_success().then_some(())
        })
        .await
    };
    let mut services = spawn_fw("services", sp, "services");
    let mut batch = spawn_fw("batch", bp, "batch");
    ready(sp).await;
    ready(bp).await;
    let (sbase, bbase) = (
        format!("http://127.0.0.1:{sp}"),
        format!("http://127.0.0.1:{bp}"),
    );
    let put = reqwest::Client::new()
        .put(format!("{}/api/v1/weights", master.url()))
        .body(r#"[{"role":"web","weight":3}]"#)
        .send()
        .await
        .expect("PUT weights");
    assert_eq!(put.status(), 204);
    let mut sleeper = app("/kept");
    sleeper["instances"] = json!(1);
    let created = eventually("the app created", Duration::from_secs(30), || {
        let (url, body) = (format!("{sbase}/v2/apps"), sleeper.clone());
        async move {
            let r = post(&url, &body).await;
            (r.status() == 201).then_some(())
        }
    });
    created.await;
    eventually("the job created", Duration::from_secs(30), || {
        let url = format!("{bbase}/v1/scheduler/iso8601");
        async move { (post(&url, &job("nightly")).await.status() == 204).then_some(()) }
    })
    .await;
    let tasks_url = format!("{sbase}/v2/tasks");
    let running_ids = || async {
        let t: Value = reqwest::get(&tasks_url).await.ok()?.json().await.ok()?;
        let ids: Vec<String> = t["tasks"]
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .filter_map(|t| t["id"].as_str().map(str::to_string))
            .collect();
        (!ids.is_empty()).then_some(ids)
    };
    let running = eventually(
        "the app's task running",
        Duration::from_secs(30),
        running_ids,
    )
    .await;

    // Back up: ZooKeeper's dataDir, copied while it runs.
    let backup = dir.path().join("zk-backup");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&zk.data)
        .arg(&backup)
        .status()
        .expect("cp runs");
    assert!(copied.success());

    // Lose it all: the ensemble and the components stop, their state is wiped.
    for p in [&services, &batch, &master.process] {
        p.signal("TERM");
    }
    for p in [&mut services, &mut batch, &mut master.process] {
        eventually("a clean stop", Duration::from_secs(20), || {
            let st = p.try_wait();
            async move { st }
        })
        .await;
    }
    zk.stop();
    std::fs::remove_dir_all(&zk.data).expect("wipe ZooKeeper's data");
    // With --zk a master keeps nothing in its work dir; wipe it if it is there.
    let _ = std::fs::remove_dir_all(&master.work_dir);
    for work in [format!("services-{sp}"), format!("batch-{bp}")] {
        let _ = std::fs::remove_dir_all(dir.path().join(work));
    }

    // Restore: the files back, ZooKeeper started, then the components.
    let restored = std::process::Command::new("cp")
        .arg("-a")
        .arg(&backup)
        .arg(&zk.data)
        .status()
        .expect("cp runs");
    assert!(restored.success());
    drop(zk);
    let _zk = OwnZooKeeper::start(&zk_dir, zk_port).await;
    let master = Master::start_on(dir.path(), port, &master_args).await;
    leads(port).await;
    let _services = spawn_fw("services", sp, "services-2");
    let _batch = spawn_fw("batch", bp, "batch-2");
    ready(sp).await;
    ready(bp).await;
    let state = master
        .state_where(
            "the agent back with its task on the restored master",
            Duration::from_secs(60),
            |st| {
                let tasks: Vec<&str> = st["tasks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|t| t["state"] == "TASK_RUNNING")
                    .filter_map(|t| t["id"].as_str())
                    .collect();
                st["agents"].as_array().map(|a| a.len()) == Some(1) && tasks == running
            },
        )
        .await;
    let web = state["roles"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "web"))
        .cloned()
        .unwrap_or_else(|| panic!("role web after the restore: {state}"));
    assert_eq!(web["weight"], 3.0);
    let names = |url: String, list: &'static str, key: &'static str| async move {
        let v: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
        let all: Vec<String> = match list {
            "" => v.as_array()?.clone(),
            l => v[l].as_array()?.clone(),
        }
        .iter()
        .filter_map(|a| a[key].as_str().map(str::to_string))
        .collect();
        Some(all)
    };
    eventually(
        "the app and the job back",
        Duration::from_secs(30),
        || async {
            let apps = names(format!("{sbase}/v2/apps"), "apps", "id").await?;
            let jobs = names(format!("{bbase}/v1/scheduler/jobs"), "", "name").await?;
            (apps == ["/kept"] && jobs == ["nightly"]).then_some(())
        },
    )
    .await;
    let after = eventually("the app settled", Duration::from_secs(30), running_ids).await;
    assert_eq!(
        after, running,
        "the task ran through the restore, not relaunched"
    );
    drop(agent);
}
