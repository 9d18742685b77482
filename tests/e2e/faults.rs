//! Fault tests (issue #12): real masters, agents and frameworks on the real ZooKeeper
//! (`AGORA_TEST_ZK`), each fault injected for real (`kill -9`, ZooKeeper cut off by a TCP proxy),
//! every wait bounded. Each test ends with [`assert_consistent`]: no running task lost or
//! duplicated, and the services and batch frameworks' views match the master's and the agents'.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{eventually, free_port, Agent, Master, Process, TestFramework, ZkProxy};

/// The masters' ZooKeeper session timeout: short, to keep the tests short.
const MASTER_SESSION: f64 = 4.0;
/// The frameworks' ZooKeeper session timeout (`--zk-session-timeout`): shorter than the default
/// 10 s to keep the takeover tests short, longer than the masters' so that the masters' election
/// settles first.
const FRAMEWORK_SESSION: Duration = Duration::from_secs(6);

fn zk_servers() -> String {
    std::env::var("AGORA_TEST_ZK").unwrap_or_else(|_| "127.0.0.1:2181".into())
}

/// A ZooKeeper path of its own for each test and component.
fn unique_path(test: &str) -> String {
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("agora-faults-{test}-{unique}")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// A process the test restarts when it exits, as systemd does with `Restart=always
/// RestartSec=1`: same arguments, one second after the exit.
struct Supervised {
    name: String,
    args: Vec<String>,
    process: Process,
    exited_at: Option<Instant>,
    restarts: u32,
}

impl Supervised {
    fn spawn(dir: &Path, name: &str, args: Vec<String>) -> Supervised {
        Supervised {
            process: Process::spawn(name, &args, dir),
            name: name.to_string(),
            args,
            exited_at: None,
            restarts: 0,
        }
    }

    fn tick(&mut self, dir: &Path) {
        if self.exited_at.is_none() && self.process.try_wait().is_some() {
            self.exited_at = Some(Instant::now());
        }
        if self
            .exited_at
            .is_some_and(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.restarts += 1;
            let name = format!("{}-restart-{}", self.name, self.restarts);
            self.process = Process::spawn(&name, &self.args, dir);
            self.exited_at = None;
        }
    }
}

/// Every supervised process, ticked in the background every 100 ms while `on` is set.
#[derive(Clone)]
struct Systemd {
    units: Arc<Mutex<Vec<Supervised>>>,
    on: Arc<AtomicBool>,
}

impl Systemd {
    fn new(dir: PathBuf) -> Systemd {
        let s = Systemd {
            units: Arc::new(Mutex::new(Vec::new())),
            on: Arc::new(AtomicBool::new(false)),
        };
        let bg = s.clone();
        tokio::spawn(async move {
            // Ends when the test drops its last handle.
            while Arc::strong_count(&bg.units) > 1 {
                if bg.on.load(Ordering::SeqCst) {
                    if let Ok(mut units) = bg.units.lock() {
                        for u in units.iter_mut() {
                            u.tick(&dir);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        s
    }

    fn add(&self, unit: Supervised) {
        self.units.lock().expect("units").push(unit);
    }

    fn enable(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }

    /// `(name, restarts)` of every unit.
    fn restarts(&self) -> Vec<(String, u32)> {
        self.units
            .lock()
            .expect("units")
            .iter()
            .map(|u| (u.name.clone(), u.restarts))
            .collect()
    }

    /// `kill -9` of the unit called `name`.
    fn kill(&self, name: &str) {
        let mut units = self.units.lock().expect("units");
        let u = units
            .iter_mut()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no unit {name}"));
        u.process.kill();
    }

    /// Whether the unit called `name` has exited and not been restarted yet.
    fn exited(&self, name: &str) -> bool {
        let mut units = self.units.lock().expect("units");
        units
            .iter_mut()
            .find(|u| u.name == name)
            .is_some_and(|u| u.exited_at.is_some() || u.process.try_wait().is_some())
    }
}

fn master_args(dir: &Path, port: u16, zk: &str) -> Vec<String> {
    strings(&[
        "master",
        "--insecure",
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--work-dir",
        &dir.join(format!("master-{port}")).display().to_string(),
        "--allocation-interval",
        "0.1",
        "--zk",
        zk,
        "--zk-session-timeout",
        &MASTER_SESSION.to_string(),
        "--agent-reregister-timeout",
        "30",
    ])
}

fn framework_args(kind: &str, dir: &Path, port: u16, master: &str, zk: &str) -> Vec<String> {
    crate::harness::framework_args(kind, dir, port, master, zk, FRAMEWORK_SESSION)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client")
}

async fn get_json(url: &str) -> Option<Value> {
    let r = client().get(url).send().await.ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json().await.ok()
}

/// The masters among `ports` answering `/state` themselves (leading).
async fn leaders(ports: &[u16]) -> Vec<u16> {
    let mut out = Vec::new();
    for &p in ports {
        if get_json(&format!("http://127.0.0.1:{p}/state"))
            .await
            .is_some()
        {
            out.push(p);
        }
    }
    out
}

async fn one_leader(ports: &[u16]) -> Option<u16> {
    match leaders(ports).await[..] {
        [one] => Some(one),
        _ => None,
    }
}

/// A services or batch instance's API base.
struct Api {
    base: String,
}

impl Api {
    fn on(port: u16) -> Api {
        Api {
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn up(&self, path: &str) -> bool {
        matches!(client().get(format!("{}{path}", self.base)).send().await, Ok(r) if r.status() == 200)
    }
}

/// `/v2/tasks` of the services framework: id → (state, version, appId).
async fn services_tasks(s: &Api) -> Option<Vec<Value>> {
    get_json(&format!("{}/v2/tasks", s.base))
        .await?
        .get("tasks")?
        .as_array()
        .cloned()
}

async fn app_settled(s: &Api, id: &str, n: usize) -> Option<Vec<Value>> {
    let app = get_json(&format!(
        "{}/v2/apps/{}",
        s.base,
        id.trim_start_matches('/')
    ))
    .await?
    .get("app")?
    .clone();
    let running: Vec<Value> = app["tasks"]
        .as_array()?
        .iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .cloned()
        .collect();
    let settled = app["deployments"].as_array().is_some_and(|d| d.is_empty());
    (settled && running.len() == n && app["tasks"].as_array()?.len() == n).then_some(running)
}

async fn batch_runs(b: &Api, job: &str) -> Option<Vec<Value>> {
    get_json(&format!("{}/v1/scheduler/job/{job}/runs", b.base))
        .await?
        .as_array()
        .cloned()
}

fn ids(tasks: &[Value], key: &str) -> HashSet<String> {
    tasks
        .iter()
        .filter_map(|t| t[key].as_str().map(str::to_string))
        .collect()
}

/// The running task ids each agent reports from its containers (`/monitor/statistics`), with
/// duplicates kept so that a task running twice shows.
async fn agents_running(agents: &[&Agent]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for a in agents {
        let stats = get_json(&format!("http://127.0.0.1:{}/monitor/statistics", a.port)).await?;
        for s in stats.as_array()? {
            out.push(s["task_id"].as_str()?.to_string());
        }
    }
    Some(out)
}

/// What [`assert_consistent`] compares, gathered at one point in time.
#[derive(Debug)]
struct Views {
    master: HashMap<String, String>,
    agents: Vec<String>,
    services: HashSet<String>,
    batch: HashSet<String>,
    services_fw: String,
    batch_fw: String,
}

async fn views(
    leader: u16,
    agents: &[&Agent],
    services: Option<&Api>,
    batch: Option<(&Api, &str)>,
) -> Option<Views> {
    let state = get_json(&format!("http://127.0.0.1:{leader}/state")).await?;
    let fw_id = |name: &str| {
        state["frameworks"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["name"] == name))
            .and_then(|f| f["id"].as_str())
            .unwrap_or("")
            .to_string()
    };
    let mut master = HashMap::new();
    for t in state["tasks"].as_array()? {
        if t["state"] == "TASK_RUNNING" {
            let id = t["id"].as_str()?.to_string();
            // A task id listed twice by the master is a duplicate.
            assert!(
                master
                    .insert(id.clone(), t["framework_id"].as_str()?.to_string())
                    .is_none(),
                "{id} twice in the master's /state"
            );
        }
    }
    let services = match services {
        Some(s) => services_tasks(s)
            .await?
            .into_iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .filter_map(|t| t["id"].as_str().map(str::to_string))
            .collect(),
        None => HashSet::new(),
    };
    let batch = match batch {
        Some((b, job)) => batch_runs(b, job)
            .await?
            .iter()
            .flat_map(|r| r["tasks"].as_array().cloned().unwrap_or_default())
            .filter(|t| t["state"] == "TASK_RUNNING")
            .filter_map(|t| t["taskId"].as_str().map(str::to_string))
            .collect(),
        None => HashSet::new(),
    };
    Some(Views {
        agents: agents_running(agents).await?,
        master,
        services,
        batch,
        services_fw: fw_id("services"),
        batch_fw: fw_id("batch"),
    })
}

/// No running task lost or duplicated, and every view agrees: the agents run exactly what the
/// leading master lists as running (each once), and each framework's running tasks are exactly
/// the master's running tasks of that framework. Retried until the views agree (updates are in
/// flight for a moment after a fault), then asserted with the last views shown.
async fn assert_consistent(
    leader: u16,
    agents: &[&Agent],
    services: Option<&Api>,
    batch: Option<(&Api, &str)>,
) -> Views {
    let agree = |v: &Views| {
        let on_agents: HashSet<&String> = v.agents.iter().collect();
        let of = |fw: &str| -> HashSet<String> {
            v.master
                .iter()
                .filter(|(_, f)| *f == fw)
                .map(|(t, _)| t.clone())
                .collect()
        };
        on_agents.len() == v.agents.len()
            && on_agents == v.master.keys().collect::<HashSet<_>>()
            && (services.is_none() || of(&v.services_fw) == v.services)
            && (batch.is_none() || of(&v.batch_fw) == v.batch)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = views(leader, agents, services, batch).await;
        match v {
            Some(v) if agree(&v) => return v,
            Some(v) if Instant::now() >= deadline => {
                panic!("the views disagree (lost or duplicated tasks): {v:#?}")
            }
            None if Instant::now() >= deadline => panic!("the views could not be read"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A cluster on ZooKeeper: three masters, agents, and the services and batch frameworks (one
/// instance each, electing themselves in ZooKeeper), all reaching ZooKeeper at `zk_servers`.
struct Cluster {
    systemd: Systemd,
    master_ports: Vec<u16>,
    /// The masters' ZooKeeper URL (every agent's and framework's `--master`).
    masters_zk: String,
    agents: Vec<Agent>,
    services: Api,
    batch: Api,
    /// Last: removed after the processes are killed and their logs shown.
    dir: tempfile::TempDir,
}

const SERVICES: &str = "services";
const BATCH: &str = "batch";

impl Drop for Cluster {
    /// The supervised processes die with the background supervisor, after the test thread:
    /// show their logs here when the test failed.
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(units) = self.systemd.units.lock() {
                for u in units.iter() {
                    eprintln!("---- {} log ----\n{}", u.process.name, u.process.log_text());
                }
            }
        }
    }
}

impl Cluster {
    async fn start(test: &str, zk_servers: &str, agents: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let systemd = Systemd::new(dir.path().to_path_buf());
        let masters_zk = format!("zk://{zk_servers}/{}", unique_path(test));
        let master_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        for &p in &master_ports {
            let args = master_args(dir.path(), p, &masters_zk);
            systemd.add(Supervised::spawn(dir.path(), &format!("master-{p}"), args));
        }
        let agents: Vec<Agent> = (0..agents)
            .map(|i| {
                Agent::start(
                    dir.path(),
                    &format!("agent-{i}"),
                    &masters_zk,
                    "cpus:4;mem:2048;disk:4096;ports:[31000-31100]",
                )
            })
            .collect();
        let (sp, bp) = (free_port(), free_port());
        let services_zk = format!("zk://{zk_servers}/{}-services", unique_path(test));
        let batch_zk = format!("zk://{zk_servers}/{}-batch", unique_path(test));
        let args = framework_args("services", dir.path(), sp, &masters_zk, &services_zk);
        systemd.add(Supervised::spawn(dir.path(), SERVICES, args));
        let args = framework_args("batch", dir.path(), bp, &masters_zk, &batch_zk);
        systemd.add(Supervised::spawn(dir.path(), BATCH, args));
        let c = Cluster {
            systemd,
            master_ports,
            masters_zk: masters_zk.clone(),
            agents,
            services: Api::on(sp),
            batch: Api::on(bp),
            dir,
        };
        let leader = c.leader(Duration::from_secs(30)).await;
        eventually(
            "every agent registered",
            Duration::from_secs(30),
            || async {
                let s = get_json(&format!("http://127.0.0.1:{leader}/state")).await?;
                let n = s["agents"].as_array()?.len();
                let fws = s["frameworks"].as_array()?.len();
                (n == c.agents.len() && fws == 2).then_some(())
            },
        )
        .await;
        eventually("both framework APIs", Duration::from_secs(30), || async {
            (c.services.up("/v2/apps").await && c.batch.up("/v1/scheduler/jobs").await)
                .then_some(())
        })
        .await;
        c
    }

    async fn leader(&self, within: Duration) -> u16 {
        eventually("exactly one leading master", within, || {
            one_leader(&self.master_ports)
        })
        .await
    }

    /// The running task ids on `leader` once every agent is active on it and both frameworks
    /// are connected to it.
    async fn all_on(&self, leader: u16) -> Option<HashSet<String>> {
        let s = get_json(&format!("http://127.0.0.1:{leader}/state")).await?;
        let count = |key: &str, field: &str| {
            s[key]
                .as_array()
                .map_or(0, |v| v.iter().filter(|x| x[field] == true).count())
        };
        if count("agents", "active") != self.agents.len() || count("frameworks", "connected") != 2 {
            return None;
        }
        Some(
            s["tasks"]
                .as_array()?
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .filter_map(|t| t["id"].as_str().map(str::to_string))
                .collect(),
        )
    }

    fn agent_refs(&self) -> Vec<&Agent> {
        self.agents.iter().collect()
    }

    /// Creates an app of `n` native `sleep` tasks and waits for all of them to run.
    async fn sleep_app(&self, id: &str, n: usize) -> HashSet<String> {
        let r = client()
            .post(format!("{}/v2/apps", self.services.base))
            .json(&json!({"id": id, "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": n}))
            .send()
            .await
            .expect("POST /v2/apps");
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        let running = eventually(
            &format!("{id} to run {n} tasks"),
            Duration::from_secs(40),
            || app_settled(&self.services, id, n),
        )
        .await;
        ids(&running, "id")
    }

    /// Adds a one-shot job running `cmd` and waits for its run's task to be running.
    async fn running_job(&self, job: &str, cmd: &str) -> String {
        let r = client()
            .post(format!("{}/v1/scheduler/iso8601", self.batch.base))
            .json(&json!({"name": job, "command": cmd, "schedule": "R1//PT1H", "cpus": 0.1, "mem": 16}))
            .send()
            .await
            .expect("POST iso8601");
        assert_eq!(r.status(), 204, "{:?}", r.text().await);
        eventually(
            &format!("{job}'s task running"),
            Duration::from_secs(30),
            || async {
                let runs = batch_runs(&self.batch, job).await?;
                runs.first()?["tasks"]
                    .as_array()?
                    .iter()
                    .find(|t| t["state"] == "TASK_RUNNING")
                    .and_then(|t| t["taskId"].as_str().map(str::to_string))
            },
        )
        .await
    }

    /// Waits for `job`'s only run to succeed, and checks it ran once: one run, one task.
    async fn job_succeeded_once(&self, job: &str, within: Duration) {
        let runs = eventually(&format!("{job}'s run to succeed"), within, || async {
            let runs = batch_runs(&self.batch, job).await?;
            runs.iter()
                .any(|r| r["status"] == "success")
                .then_some(runs)
        })
        .await;
        assert_eq!(runs.len(), 1, "one run of {job}, not more: {runs:#?}");
        let tasks = runs[0]["tasks"].as_array().expect("tasks");
        assert_eq!(tasks.len(), 1, "{job} was not launched twice: {tasks:#?}");
        assert_eq!(tasks[0]["state"], "TASK_FINISHED", "{tasks:#?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_master_kill_9_under_load_loses_and_relaunches_nothing() {
    let c = Cluster::start("kill-leader", &zk_servers(), 3).await;
    let before = c.sleep_app("/load", 10).await;
    let job_task = c.running_job("long", "sleep 15").await;
    let leader = c.leader(Duration::from_secs(5)).await;
    assert_consistent(
        leader,
        &c.agent_refs(),
        Some(&c.services),
        Some((&c.batch, "long")),
    )
    .await;

    let killed_at = Instant::now();
    c.systemd.kill(&format!("master-{leader}"));
    let others: Vec<u16> = c
        .master_ports
        .iter()
        .copied()
        .filter(|p| *p != leader)
        .collect();
    let new_leader = eventually("a new leader", Duration::from_secs(30), || {
        one_leader(&others)
    })
    .await;
    eprintln!("new leader after {:?}", killed_at.elapsed());
    // Agents and both frameworks follow it: the agents bring the 10 tasks (and the job's, unless
    // it finished meanwhile), the services framework still sees the same 10 ids.
    eventually(
        "agents and frameworks on the new leader",
        Duration::from_secs(40),
        || async {
            let running = c.all_on(new_leader).await?;
            before.is_subset(&running).then_some(())
        },
    )
    .await;
    eprintln!(
        "everything on the new leader after {:?}",
        killed_at.elapsed()
    );
    let after = eventually(
        "the app settled with its tasks",
        Duration::from_secs(20),
        || app_settled(&c.services, "/load", 10),
    )
    .await;
    assert_eq!(ids(&after, "id"), before, "no task relaunched");
    c.job_succeeded_once("long", Duration::from_secs(40)).await;
    let v = assert_consistent(
        new_leader,
        &c.agent_refs(),
        Some(&c.services),
        Some((&c.batch, "long")),
    )
    .await;
    assert_eq!(v.master.len(), 10, "{v:#?}");
    assert!(!v.master.contains_key(&job_task));
}

#[tokio::test(flavor = "multi_thread")]
async fn zookeeper_away_past_the_session_timeout_stops_offers_and_keeps_tasks() {
    let proxy = ZkProxy::start(zk_servers()).await;
    let c = Cluster::start("zk-outage", &proxy.servers(), 2).await;
    let before = c.sleep_app("/steady", 4).await;
    c.running_job("during", "sleep 8").await;
    let leader = c.leader(Duration::from_secs(5)).await;
    let agents = c.agent_refs();
    let running_before = assert_consistent(
        leader,
        &agents,
        Some(&c.services),
        Some((&c.batch, "during")),
    )
    .await;
    // A framework of the test's own, subscribed to the leader.
    let mut fw = TestFramework::subscribe(
        &format!("127.0.0.1:{leader}"),
        TestFramework::info("watcher", "watch", 600.0),
    )
    .await;

    c.systemd.enable(true);
    proxy.cut();
    let cut_at = Instant::now();
    // Every master and both frameworks lose ZooKeeper; the leader steps down (exits for its
    // supervisor) within a third of its session timeout after noticing.
    eventually(
        "the leader to step down",
        Duration::from_secs(15),
        || async { c.systemd.exited(&format!("master-{leader}")).then_some(()) },
    )
    .await;
    let stepped_down = cut_at.elapsed();
    eprintln!("leader stepped down after {stepped_down:?}");
    // What it sent before it stopped may still be queued here; after that its stream is over.
    while fw.events.try_recv().is_ok() {}
    let closed = fw.closed.clone();
    eventually(
        "the watcher's stream to end",
        Duration::from_secs(5),
        || {
            let ended = closed.borrow().is_some();
            async move { ended.then_some(()) }
        },
    )
    .await;
    while fw.events.try_recv().is_ok() {}
    // Keep ZooKeeper away past every session timeout (the frameworks' is the longest); all that
    // time nothing leads, no framework can subscribe (so nothing is offered), and the agents
    // keep running every task.
    let away = FRAMEWORK_SESSION + Duration::from_secs(2);
    let mut checks = 0;
    while cut_at.elapsed() < away {
        assert_eq!(
            leaders(&c.master_ports).await,
            Vec::<u16>::new(),
            "a master leads without ZooKeeper"
        );
        for &p in &c.master_ports {
            let r = TestFramework::try_subscribe(
                &format!("127.0.0.1:{p}"),
                TestFramework::info("late", "watch", 600.0),
            )
            .await;
            assert!(
                r.is_err(),
                "master {p} accepted a subscription without ZooKeeper"
            );
        }
        while let Ok(e) = fw.events.try_recv() {
            assert!(
                !matches!(e.event, Some(agora_proto::v1::event::Event::Offers(_))),
                "an offer after the leader stepped down"
            );
        }
        let mut on_agents = agents_running(&agents).await.expect("the agents answer");
        on_agents.sort();
        let mut expected: Vec<String> = running_before.agents.clone();
        expected.sort();
        // The job's task may finish while ZooKeeper is away; nothing else may change.
        on_agents.retain(|t| !t.starts_with("during"));
        expected.retain(|t| !t.starts_with("during"));
        assert_eq!(
            on_agents, expected,
            "tasks changed on the agents without ZooKeeper"
        );
        checks += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(checks > 3);
    drop(fw);
    let restarts = c.systemd.restarts();
    eprintln!("restarts while ZooKeeper was away: {restarts:?}");
    // Restarted masters wait for ZooKeeper instead of crash-looping.
    for (name, n) in &restarts {
        if name.starts_with("master-") {
            assert!(
                *n <= 1,
                "{name} restarted {n} times: it should wait for ZooKeeper"
            );
        }
    }

    proxy.restore();
    let restored_at = Instant::now();
    let leader = c.leader(Duration::from_secs(40)).await;
    eprintln!("one leader {:?} after the restore", restored_at.elapsed());
    eventually(
        "the agents back with their tasks",
        Duration::from_secs(60),
        || async {
            let s = get_json(&format!("http://127.0.0.1:{leader}/state")).await?;
            let active = s["agents"]
                .as_array()?
                .iter()
                .filter(|a| a["active"] == true)
                .count();
            let running: HashSet<String> = s["tasks"]
                .as_array()?
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .filter_map(|t| t["id"].as_str().map(str::to_string))
                .collect();
            (active == c.agents.len() && before.is_subset(&running)).then_some(())
        },
    )
    .await;
    eprintln!("agents back {:?} after the restore", restored_at.elapsed());
    let after = eventually(
        "the services framework back with the same tasks",
        Duration::from_secs(60),
        || app_settled(&c.services, "/steady", 4),
    )
    .await;
    assert_eq!(ids(&after, "id"), before, "no task relaunched");
    c.job_succeeded_once("during", Duration::from_secs(60))
        .await;
    eprintln!("reconciled {:?} after the restore", restored_at.elapsed());
    assert_eq!(one_leader(&c.master_ports).await, Some(leader));
    let v = assert_consistent(
        leader,
        &agents,
        Some(&c.services),
        Some((&c.batch, "during")),
    )
    .await;
    assert_eq!(v.master.len(), 4, "{v:#?}");
    c.systemd.enable(false);
    let _ = &c.dir;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_services_leader_killed_mid_deployment_is_finished_by_the_standby() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let resources = "cpus:4;mem:2048;disk:4096;ports:[31000-31100]";
    let a = Agent::start(dir.path(), "agent-a", &master.address(), resources);
    let b = Agent::start(dir.path(), "agent-b", &master.address(), resources);
    let zk = format!("zk://{}/{}", zk_servers(), unique_path("deploy"));
    let systemd = Systemd::new(dir.path().to_path_buf());
    let (p1, p2) = (free_port(), free_port());
    systemd.add(Supervised::spawn(
        dir.path(),
        "services-1",
        framework_args("services", dir.path(), p1, &master.address(), &zk),
    ));
    let first = Api::on(p1);
    eventually(
        "the first instance to lead",
        Duration::from_secs(30),
        || async { first.up("/v2/apps").await.then_some(()) },
    )
    .await;
    systemd.add(Supervised::spawn(
        dir.path(),
        "services-2",
        framework_args("services", dir.path(), p2, &master.address(), &zk),
    ));
    let second = Api::on(p2);
    eventually("the standby to be up", Duration::from_secs(30), || async {
        second.up("/ping").await.then_some(())
    })
    .await;
    // New tasks turn healthy 3 s after they start and old ones are replaced one at a time, so a
    // restart of 4 instances takes well over 10 s.
    let app = json!({
        "id": "/roll", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 4,
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": "true"},
                          "delaySeconds": 3, "intervalSeconds": 1, "gracePeriodSeconds": 30}],
        "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 0.25}
    });
    let r = client()
        .post(format!("{}/v2/apps", first.base))
        .json(&app)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 201);
    let old = eventually("4 healthy tasks", Duration::from_secs(60), || async {
        let running = app_settled(&first, "/roll", 4).await?;
        running
            .iter()
            .all(|t| t["healthCheckResults"][0]["alive"] == true)
            .then_some(running)
    })
    .await;
    let old_version = old[0]["version"].as_str().expect("version").to_string();
    let r = client()
        .post(format!("{}/v2/apps/roll/restart", first.base))
        .send()
        .await
        .expect("restart");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    // Kill the leader once the restart has replaced some, not all, of the old tasks.
    eventually(
        "the deployment under way",
        Duration::from_secs(40),
        || async {
            let tasks = services_tasks(&first).await?;
            let olds = tasks
                .iter()
                .filter(|t| t["version"] == old_version.as_str() && t["state"] == "TASK_RUNNING")
                .count();
            let deps = get_json(&format!("{}/v2/deployments", first.base)).await?;
            (olds > 0 && olds < 4 && !deps.as_array()?.is_empty()).then_some(())
        },
    )
    .await;
    systemd.kill("services-1");
    let killed_at = Instant::now();
    let tasks = eventually(
        "the standby to finish the deployment",
        Duration::from_secs(60),
        || async {
            let leader = get_json(&format!("{}/v2/leader", second.base)).await?;
            if leader["leader"] != format!("127.0.0.1:{p2}") {
                return None;
            }
            let deps = get_json(&format!("{}/v2/deployments", second.base)).await?;
            if !deps.as_array()?.is_empty() {
                return None;
            }
            app_settled(&second, "/roll", 4).await
        },
    )
    .await;
    eprintln!(
        "deployment finished {:?} after the kill",
        killed_at.elapsed()
    );
    assert!(
        tasks.iter().all(|t| t["version"] != old_version.as_str()),
        "old-version tasks left: {tasks:#?}"
    );
    assert!(ids(&tasks, "id").is_disjoint(&ids(&old, "id")));
    let state = master.state().await;
    let fw = state["frameworks"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == "services"))
        .and_then(|f| f["id"].as_str())
        .expect("services framework")
        .to_string();
    let v = assert_consistent(master.port, &[&a, &b], Some(&second), None).await;
    assert_eq!(v.services_fw, fw);
    assert_eq!(v.master.len(), 4, "{v:#?}");
}

/// Resources of the agents of the agent-fault tests.
const AGENT_RESOURCES: &str = "cpus:2;mem:1024;ports:[31000-31100]";

/// A standalone master with the services framework and agents, for the agent faults.
struct Standalone {
    master: Master,
    agents: Vec<Agent>,
    services: Api,
    _services: Process,
    dir: tempfile::TempDir,
}

impl Standalone {
    async fn start(master_flags: &[&str], agents: &[(&str, &str)]) -> Standalone {
        let dir = tempfile::tempdir().expect("tempdir");
        let master = Master::start(dir.path(), master_flags).await;
        let agents: Vec<Agent> = agents
            .iter()
            .map(|(name, containerizers)| {
                Agent::start_with(
                    dir.path(),
                    name,
                    &master.address(),
                    AGENT_RESOURCES,
                    containerizers,
                    free_port(),
                )
            })
            .collect();
        let port = free_port();
        let services = Process::spawn(
            "services",
            &strings(&[
                "services",
                "--master",
                &master.address(),
                "--ip",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--work-dir",
                &dir.path().join("services").display().to_string(),
            ]),
            dir.path(),
        );
        let s = Standalone {
            master,
            agents,
            services: Api::on(port),
            _services: services,
            dir,
        };
        let n = s.agents.len();
        s.master
            .state_where("every agent and services", Duration::from_secs(30), |st| {
                st["agents"].as_array().is_some_and(|a| a.len() == n)
                    && st["frameworks"].as_array().is_some_and(|f| f.len() == 1)
            })
            .await;
        s
    }

    async fn create(&self, app: Value) {
        let r = client()
            .post(format!("{}/v2/apps", self.services.base))
            .json(&app)
            .send()
            .await
            .expect("POST /v2/apps");
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
    }

    async fn settled(&self, id: &str, n: usize, within: Duration) -> Vec<Value> {
        eventually(&format!("{id} settled with {n} running"), within, || {
            app_settled(&self.services, id, n)
        })
        .await
    }

    fn agent_refs(&self) -> Vec<&Agent> {
        self.agents.iter().collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_and_restarted_keeps_its_docker_and_native_tasks() {
    let image = crate::harness::ensure_busybox_image();
    let mut c = Standalone::start(&[], &[("agent-d", "docker,native")]).await;
    c.create(json!({"id": "/native", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 2}))
        .await;
    c.create(json!({
        "id": "/docked", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 1,
        "container": {"type": "DOCKER", "docker": {"image": image}}
    }))
    .await;
    let native = ids(
        &c.settled("/native", 2, Duration::from_secs(60)).await,
        "id",
    );
    let docked = ids(
        &c.settled("/docked", 1, Duration::from_secs(60)).await,
        "id",
    );
    let before: HashSet<String> = native.union(&docked).cloned().collect();

    let port = c.agents[0].port;
    c.agents[0].process.kill();
    // Killed, not stopped: its tasks (detached native processes, Docker containers) live on.
    let name = "agent-d";
    let restarted = Agent::start_with(
        c.dir.path(),
        name,
        &c.master.address(),
        AGENT_RESOURCES,
        "docker,native",
        port,
    );
    c.agents[0] = restarted;
    c.master
        .state_where(
            "the restarted agent back with its three tasks",
            Duration::from_secs(30),
            |s| {
                s["agents"][0]["active"] == true
                    && s["tasks"].as_array().is_some_and(|t| {
                        t.iter().filter(|t| t["state"] == "TASK_RUNNING").count() == 3
                    })
            },
        )
        .await;
    let v = assert_consistent(c.master.port, &c.agent_refs(), Some(&c.services), None).await;
    let running: HashSet<String> = v.master.keys().cloned().collect();
    assert_eq!(running, before, "the same tasks, none relaunched");
    // Nothing is relaunched a little later either (services saw no task end).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let native_after = ids(
        &c.settled("/native", 2, Duration::from_secs(10)).await,
        "id",
    );
    let docked_after = ids(
        &c.settled("/docked", 1, Duration::from_secs(10)).await,
        "id",
    );
    assert_eq!((native_after, docked_after), (native, docked));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_agent_s_tasks_are_replaced_and_the_surplus_killed_when_it_thaws() {
    let c = Standalone::start(
        &["--agent-timeout", "1.5"],
        &[
            ("agent-a", "native"),
            ("agent-b", "native"),
            ("agent-c", "native"),
        ],
    )
    .await;
    c.create(json!({
        "id": "/spread", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 2,
        "constraints": [["hostname", "UNIQUE"]],
        "unreachableStrategy": {"inactiveAfterSeconds": 1, "expungeAfterSeconds": 3600}
    }))
    .await;
    let first = c.settled("/spread", 2, Duration::from_secs(60)).await;
    let hosts: HashSet<String> = ids(&first, "host");
    assert_eq!(hosts.len(), 2, "UNIQUE hostname: {first:#?}");
    let frozen_name = hosts.iter().min().cloned().expect("a host");
    let frozen = c
        .agents
        .iter()
        .find(|a| a.process.name == frozen_name)
        .expect("the agent running the task");
    frozen.process.freeze();

    // Unreachable past inactiveAfterSeconds: replaced on the agent that had none.
    let replaced = eventually(
        "a replacement on the third agent",
        Duration::from_secs(30),
        || async {
            let tasks = services_tasks(&c.services).await?;
            let running_elsewhere: HashSet<String> = tasks
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING" && t["host"] != frozen_name.as_str())
                .filter_map(|t| t["host"].as_str().map(str::to_string))
                .collect();
            (running_elsewhere.len() == 2).then_some(running_elsewhere)
        },
    )
    .await;
    assert!(!replaced.contains(&frozen_name));

    frozen.process.signal("CONT");
    // Back: three copies would run; the surplus is killed and the app is back to 2, one per host.
    let settled = c.settled("/spread", 2, Duration::from_secs(40)).await;
    let hosts: Vec<String> = settled
        .iter()
        .filter_map(|t| t["host"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        hosts.iter().collect::<HashSet<_>>().len(),
        2,
        "still one per host after the thaw: {settled:#?}"
    );
    c.master
        .state_where("the thawed agent active", Duration::from_secs(20), |s| {
            s["agents"]
                .as_array()
                .is_some_and(|a| a.iter().all(|a| a["active"] == true))
        })
        .await;
    let v = assert_consistent(c.master.port, &c.agent_refs(), Some(&c.services), None).await;
    assert_eq!(v.master.len(), 2, "two tasks run, not three: {v:#?}");
}

impl Systemd {
    /// `kill -SIG` of the unit called `name` (a planned stop: `systemctl restart` sends TERM).
    fn signal(&self, name: &str, sig: &str) {
        let units = self.units.lock().expect("units");
        let u = units
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no unit {name}"));
        u.process.signal(sig);
    }

    fn restarts_of(&self, name: &str) -> u32 {
        self.restarts()
            .into_iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, r)| r)
    }
}

/// A rolling upgrade as an operator makes one (docs/deploy.md §6), with `systemctl restart`
/// (SIGTERM, then a start): every master one at a time (standbys first, the leader last), then
/// the frameworks, then the agents, under load. No task is lost or relaunched, the batch run is
/// not duplicated, and each master step hands over before the stopped master's ZooKeeper session
/// could have expired.
#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_of_every_component_loses_and_relaunches_nothing() {
    let mut c = Cluster::start("rolling", &zk_servers(), 2).await;
    c.systemd.enable(true);
    let before = c.sleep_app("/load", 6).await;
    c.running_job("long", "sleep 45").await;
    let first_leader = c.leader(Duration::from_secs(5)).await;
    let mut order: Vec<u16> = c
        .master_ports
        .iter()
        .copied()
        .filter(|p| *p != first_leader)
        .collect();
    order.push(first_leader);
    let mut worst = Duration::ZERO;
    for port in order {
        let unit = format!("master-{port}");
        let restarts = c.systemd.restarts_of(&unit);
        let stopped_at = Instant::now();
        c.systemd.signal(&unit, "TERM");
        // Without a leader from the stop until one answers again (a standby's stop never
        // leaves the cluster without one).
        // Probed every 50 ms: each interval that ends in a probe without exactly one leader
        // counts as leaderless.
        let mut leaderless = Duration::ZERO;
        let tick = Duration::from_millis(50);
        let mut last = Instant::now();
        loop {
            let led = one_leader(&c.master_ports).await.is_some();
            let now = Instant::now();
            if !led {
                leaderless += now - last;
            }
            last = now;
            if led && c.systemd.restarts_of(&unit) > restarts {
                break;
            }
            assert!(
                stopped_at.elapsed() < Duration::from_secs(60),
                "{unit} did not come back with a leader in the cluster"
            );
            tokio::time::sleep(tick).await;
        }
        eprintln!("{unit}: {leaderless:?} without a leader");
        worst = worst.max(leaderless);
        // The restarted master is back in the election (a standby) before the next one goes.
        let back = port;
        eventually(
            "the restarted master to answer",
            Duration::from_secs(30),
            || async move {
                reqwest::get(format!("http://127.0.0.1:{back}/health"))
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            },
        )
        .await;
    }
    // The bound is functional, not a speed target (BENCHMARKS.md has the handover's figures): a
    // planned stop gives up its election node, so the next master leads before the stopped one's
    // ZooKeeper session could have expired. A stop that left its node to expire would be
    // leaderless for the session timeout and more. Under the whole suite's load on 2 cores a
    // handover took 3.0 s once.
    assert!(
        worst < Duration::from_secs_f64(MASTER_SESSION),
        "a master's planned stop left the cluster without a leader for {worst:?}, as long as its ZooKeeper session ({MASTER_SESSION} s) would take to expire"
    );
    let leader = c.leader(Duration::from_secs(10)).await;
    // Everything follows the last leader before the frameworks go.
    eventually(
        "agents and frameworks on the leader",
        Duration::from_secs(40),
        || async { c.all_on(leader).await.map(|_| ()) },
    )
    .await;

    for unit in [SERVICES, BATCH] {
        let restarts = c.systemd.restarts_of(unit);
        c.systemd.signal(unit, "TERM");
        eventually(
            &format!("{unit} restarted"),
            Duration::from_secs(30),
            || {
                let again = c.systemd.restarts_of(unit) > restarts;
                async move { again.then_some(()) }
            },
        )
        .await;
    }
    eventually(
        "both framework APIs back",
        Duration::from_secs(40),
        || async {
            (c.services.up("/v2/apps").await && c.batch.up("/v1/scheduler/jobs").await)
                .then_some(())
        },
    )
    .await;

    for i in 0..c.agents.len() {
        let (name, port) = {
            let a = &c.agents[i];
            (format!("agent-{i}"), a.port)
        };
        let masters = c.masters_zk.clone();
        c.agents[i].process.signal("TERM");
        eventually(&format!("{name} stopped"), Duration::from_secs(20), || {
            let s = c.agents[i].process.try_wait();
            async move { s.map(|_| ()) }
        })
        .await;
        let fresh = Agent::start_with(
            c.dir.path(),
            &name,
            &masters,
            "cpus:4;mem:2048;disk:4096;ports:[31000-31100]",
            "native",
            port,
        );
        let old = std::mem::replace(&mut c.agents[i], fresh);
        drop(old);
    }
    let leader = c.leader(Duration::from_secs(10)).await;
    let after = eventually(
        "the app settled with its tasks",
        Duration::from_secs(40),
        || app_settled(&c.services, "/load", 6),
    )
    .await;
    assert_eq!(ids(&after, "id"), before, "no task relaunched");
    c.job_succeeded_once("long", Duration::from_secs(60)).await;
    assert_consistent(
        leader,
        &c.agent_refs(),
        Some(&c.services),
        Some((&c.batch, "long")),
    )
    .await;
}
