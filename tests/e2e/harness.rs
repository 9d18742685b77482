//! Starting real `agora` processes on loopback ports chosen at run time, and waiting on conditions
//! with deadlines (never fixed sleeps). Every process is killed when its handle drops.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora_proto::v1::{self, scheduler_client::SchedulerClient};
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// A free TCP port on 127.0.0.1 (bound, then released for the process to take), never one this
/// test binary has handed out before: the kernel may give a released port again to the next
/// `bind(0)`, and two roles of one cluster then collided (the services framework was handed the
/// master's port before the master had bound it).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.insert(port) {
            return port;
        }
    }
}

/// Polls `check` every 50 ms until it returns `Some` or `within` passes.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process of the `agora` binary, with its output in a log file.
pub struct Process {
    child: Child,
    pub log: PathBuf,
    pub name: String,
    /// The agent work dir (`agora agent`) or the `agora local` work dir this process runs on.
    agents: Option<AgentDirs>,
}

/// Where a process's agents keep their containers' records.
#[derive(Clone, PartialEq, Eq, Hash)]
enum AgentDirs {
    Agent(PathBuf),
    /// `agora local --work-dir W`: its agents are `W/agent-N`.
    Local(PathBuf),
}

impl AgentDirs {
    fn of(args: &[String]) -> Option<AgentDirs> {
        let work_dir = args
            .iter()
            .position(|a| a == "--work-dir")
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from);
        match args.first().map(String::as_str) {
            Some("agent") if args.get(1).is_none_or(|a| a.starts_with("--")) => {
                work_dir.map(AgentDirs::Agent)
            }
            Some("local") => Some(AgentDirs::Local(
                work_dir.unwrap_or_else(|| PathBuf::from("agora-local")),
            )),
            _ => None,
        }
    }

    fn agent_work_dirs(&self) -> Vec<PathBuf> {
        match self {
            AgentDirs::Agent(w) => vec![w.clone()],
            AgentDirs::Local(w) => std::fs::read_dir(w)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter(|e| e.file_name().to_string_lossy().starts_with("agent-"))
                        .map(|e| e.path())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// How many live [`Process`]es run on each agent work dir: a test that restarts an agent on the
/// same work dir starts the new process before the old handle drops.
static LIVE_AGENTS: std::sync::Mutex<Vec<(AgentDirs, usize)>> = std::sync::Mutex::new(Vec::new());

/// Tasks outlive their agent by design; a test's do not outlive the test. When the last process
/// on an agent work dir is gone, `agora agent cleanup` destroys the containers it launched
/// (processes, cgroups, Docker containers), before the test's temporary directory goes.
fn release_agents(dirs: &AgentDirs) {
    let last = match LIVE_AGENTS.lock() {
        Ok(mut live) => match live.iter().position(|(d, _)| d == dirs) {
            Some(i) => {
                live[i].1 -= 1;
                let last = live[i].1 == 0;
                if last {
                    live.remove(i);
                }
                last
            }
            None => false,
        },
        Err(_) => false,
    };
    if !last {
        return;
    }
    for w in dirs.agent_work_dirs() {
        if !w.join("meta").is_dir() {
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_agora"))
            .args(["agent", "cleanup", "--work-dir"])
            .arg(&w)
            .output();
        if let Ok(o) = out {
            if !o.status.success() {
                eprintln!(
                    "agora agent cleanup --work-dir {}: {}",
                    w.display(),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
    }
}

impl Process {
    pub fn spawn(name: &str, args: &[String], dir: &Path) -> Process {
        Process::spawn_with_env(name, args, dir, &[])
    }

    /// [`Process::spawn`] with environment variables set (`AGORA_HOME` for the CLI's login).
    pub fn spawn_with_env(
        name: &str,
        args: &[String],
        dir: &Path,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Process {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_agora"))
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("the agora binary starts");
        let agents = AgentDirs::of(args);
        if let (Some(d), Ok(mut live)) = (&agents, LIVE_AGENTS.lock()) {
            match live.iter_mut().find(|(l, _)| l == d) {
                Some((_, n)) => *n += 1,
                None => live.push((d.clone(), 1)),
            }
        }
        Process {
            child,
            log,
            name: name.to_string(),
            agents,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    /// SIGSTOP, and waits until every thread of the process has stopped: `kill` returns once the
    /// signal is queued, while the group stop only begins when one of its threads next runs, so
    /// on a loaded machine the others keep working (answering) for milliseconds meanwhile.
    pub fn freeze(&self) {
        self.signal("STOP");
        let tasks = format!("/proc/{}/task", self.pid());
        let stopped = || {
            std::fs::read_dir(&tasks).is_ok_and(|d| {
                d.flatten().all(|t| {
                    std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| {
                        // "tid (comm) STATE …": the command may hold spaces and parentheses.
                        s.rsplit_once(')')
                            .and_then(|(_, rest)| rest.trim_start().chars().next())
                            .is_some_and(|c| matches!(c, 'T' | 't' | 'Z' | 'X'))
                    })
                })
            })
        };
        let until = Instant::now() + Duration::from_secs(10);
        while !stopped() {
            assert!(
                Instant::now() < until,
                "{}: not every thread stopped 10 s after SIGSTOP",
                self.name
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if let Some(d) = self.agents.take() {
            release_agents(&d);
        }
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.log_text());
        }
    }
}

/// A ZooKeeper URL of the test's ZooKeeper (`AGORA_TEST_ZK`) under a path of its own,
/// `/PREFIX-<nanoseconds>`.
pub fn unique_zk_url(prefix: &str) -> String {
    let servers = std::env::var("AGORA_TEST_ZK").unwrap_or_else(|_| "127.0.0.1:2181".into());
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("zk://{servers}/{prefix}-{unique}")
}

/// One `agora services` instance of `master` (in clear), elected under a ZooKeeper path of its
/// own: the process and its API's base URL.
pub fn spawn_services(dir: &Path, master: &str, zk_prefix: &str) -> (Process, String) {
    let port = free_port();
    let p = Process::spawn(
        "services",
        &framework_args(
            "services",
            dir,
            port,
            master,
            &unique_zk_url(zk_prefix),
            Duration::from_secs(10),
        ),
        dir,
    );
    (p, format!("http://127.0.0.1:{port}"))
}

/// The arguments of an `agora services` or `agora batch` instance on `127.0.0.1:port` with its
/// work dir under `dir`, in the ZooKeeper election at `zk` with this session timeout.
pub fn framework_args(
    kind: &str,
    dir: &Path,
    port: u16,
    master: &str,
    zk: &str,
    session: Duration,
) -> Vec<String> {
    [
        kind,
        "--insecure",
        "--master",
        master,
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--work-dir",
        &dir.join(format!("{kind}-{port}")).display().to_string(),
        "--zk",
        zk,
        "--zk-session-timeout",
        &session.as_secs_f64().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A master process.
pub struct Master {
    pub process: Process,
    pub port: u16,
    pub work_dir: PathBuf,
}

impl Master {
    pub async fn start(dir: &Path, extra: &[&str]) -> Master {
        let port = free_port();
        Self::start_on(dir, port, extra).await
    }

    pub async fn start_on(dir: &Path, port: u16, extra: &[&str]) -> Master {
        let work_dir = dir.join("master");
        let mut args: Vec<String> = vec![
            "master".into(),
            // Tests run in clear unless they are about TLS (tls.rs, secure.rs).
            "--insecure".into(),
            "--ip".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--work-dir".into(),
            work_dir.display().to_string(),
            "--allocation-interval".into(),
            "0.1".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let process = Process::spawn(&format!("master-{port}"), &args, dir);
        let m = Master {
            process,
            port,
            work_dir,
        };
        let url = format!("{}/health", m.url());
        eventually(
            "the master to answer /health",
            Duration::from_secs(20),
            || {
                let url = url.clone();
                async move {
                    let r = reqwest::get(&url).await.ok()?;
                    r.status().is_success().then_some(())
                }
            },
        )
        .await;
        // /health answers before a master leads. One without ZooKeeper leads on its own once it
        // has read its registry (until then gRPC calls get UNAVAILABLE): wait for that too, on
        // `/` (open without the API token; a standby's is 503 or 307). One with --zk may be a
        // standby by design; its tests wait for what they need.
        if !extra.contains(&"--zk") {
            let url = format!("{}/", m.url());
            eventually("the master to lead", Duration::from_secs(20), || {
                let url = url.clone();
                async move {
                    let r = reqwest::get(&url).await.ok()?;
                    r.status().is_success().then_some(())
                }
            })
            .await;
        }
        m
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn state(&self) -> serde_json::Value {
        reqwest::get(format!("{}/state", self.url()))
            .await
            .expect("GET /state")
            .json()
            .await
            .expect("/state is JSON")
    }

    /// Waits until `/state` satisfies `pred`, and returns it.
    pub async fn state_where(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let url = format!("{}/state", self.url());
        eventually(what, within, || {
            let url = url.clone();
            let pred = &pred;
            async move {
                let s: serde_json::Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
                pred(&s).then_some(s)
            }
        })
        .await
    }
}

/// An agent process with the native containerizer.
pub struct Agent {
    pub process: Process,
    pub port: u16,
    pub work_dir: PathBuf,
}

/// The arguments of `agora agent` on loopback, its work dir under `dir/name`.
pub fn agent_args(
    dir: &Path,
    name: &str,
    master: &str,
    port: u16,
    resources: &str,
    containerizers: &str,
) -> Vec<String> {
    [
        "agent",
        // In clear, as the harness's masters are (tls.rs strips it for its own PKI).
        "--insecure",
        "--master",
        master,
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--work-dir",
        &dir.join(name).display().to_string(),
        "--resources",
        resources,
        "--hostname",
        name,
        "--containerizers",
        containerizers,
        // Agents of a test share 127.0.0.1: DNS (port 53 by default) only where a test asks.
        "--dns-port",
        "0",
        // … and so would the routing mesh's listeners (a test that wants it turns it on).
        "--mesh=false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Agent {
    pub fn start(dir: &Path, name: &str, master: &str, resources: &str) -> Agent {
        Self::start_with(dir, name, master, resources, "native", free_port())
    }

    /// An agent with the containerizers and port chosen.
    pub fn start_with(
        dir: &Path,
        name: &str,
        master: &str,
        resources: &str,
        containerizers: &str,
        port: u16,
    ) -> Agent {
        let args = agent_args(dir, name, master, port, resources, containerizers);
        Agent {
            process: Process::spawn(name, &args, dir),
            port,
            work_dir: dir.join(name),
        }
    }
}

/// A framework written directly against the gRPC contract, as a framework author in another
/// language would: subscribe, then unary calls with the header, events on a channel.
pub struct TestFramework {
    pub client: SchedulerClient<Channel>,
    pub header: v1::CallHeader,
    pub events: mpsc::UnboundedReceiver<v1::Event>,
    /// Why the event stream ended, once it has.
    pub closed: tokio::sync::watch::Receiver<Option<String>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for TestFramework {
    /// Dropping the framework closes its subscription, as a crashed scheduler would.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl TestFramework {
    pub async fn subscribe(master: &str, info: v1::FrameworkInfo) -> TestFramework {
        Self::try_subscribe(master, info).await.expect("subscribe")
    }

    pub async fn try_subscribe(
        master: &str,
        info: v1::FrameworkInfo,
    ) -> Result<TestFramework, tonic::Status> {
        let mut client = SchedulerClient::connect(format!("http://{master}"))
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut stream = client
            .subscribe(v1::SubscribeRequest {
                framework_info: Some(info),
                suppressed_roles: vec![],
            })
            .await?
            .into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unknown("stream ended before SUBSCRIBED"))?;
        let Some(v1::event::Event::Subscribed(s)) = first.event else {
            return Err(tonic::Status::unknown(format!("first event was {first:?}")));
        };
        let (tx, events) = mpsc::unbounded_channel();
        let (closed_tx, closed) = tokio::sync::watch::channel(None);
        let reader = tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(e)) => {
                        if tx.send(e).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = closed_tx.send(Some("stream ended".into()));
                        return;
                    }
                    Err(status) => {
                        let _ = closed_tx.send(Some(status.message().to_string()));
                        return;
                    }
                }
            }
        });
        Ok(TestFramework {
            client,
            header: v1::CallHeader {
                framework_id: s.framework_id,
                stream_id: s.stream_id,
            },
            events,
            closed,
            reader,
        })
    }

    pub fn info(name: &str, role: &str, failover: f64) -> v1::FrameworkInfo {
        v1::FrameworkInfo {
            name: name.into(),
            roles: vec![role.into()],
            failover_timeout_seconds: failover,
            capabilities: vec![v1::FrameworkCapability::PartitionAware as i32],
            checkpoint: true,
            ..Default::default()
        }
    }

    /// The next event matching `pick`, skipping others (heartbeats, offers when waiting for
    /// updates, …).
    pub async fn next<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut pick: impl FnMut(&v1::Event) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => {
                    if let Some(v) = pick(&e) {
                        return v;
                    }
                }
                Ok(None) => panic!("event stream ended while waiting for {what}"),
                Err(_) => panic!("timed out after {within:?} waiting for {what}"),
            }
        }
    }

    pub async fn next_offer(&mut self) -> v1::Offer {
        self.next("an offer", Duration::from_secs(20), |e| match &e.event {
            Some(v1::event::Event::Offers(o)) => o.offers.first().cloned(),
            _ => None,
        })
        .await
    }

    /// The next update of `task_id`, acknowledged if it carries a uuid.
    pub async fn next_update(&mut self, task_id: &str, within: Duration) -> v1::TaskStatus {
        let id = task_id.to_string();
        let st = self
            .next(&format!("an update of {task_id}"), within, |e| {
                match &e.event {
                    Some(v1::event::Event::Update(u)) => {
                        u.status.clone().filter(|s| s.task_id == id)
                    }
                    _ => None,
                }
            })
            .await;
        if !st.uuid.is_empty() {
            self.client
                .acknowledge(v1::AcknowledgeRequest {
                    header: Some(self.header.clone()),
                    agent_id: st.agent_id.clone(),
                    task_id: st.task_id.clone(),
                    uuid: st.uuid.clone(),
                })
                .await
                .expect("acknowledge");
        }
        st
    }

    /// Waits for `task_id` to reach `state` (acknowledging every update on the way).
    pub async fn until_state(&mut self, task_id: &str, state: v1::TaskState) -> v1::TaskStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let st = self.next_update(task_id, left).await;
            if st.state == state as i32 {
                return st;
            }
        }
    }

    pub async fn launch(
        &mut self,
        offer: &v1::Offer,
        tasks: Vec<v1::TaskInfo>,
    ) -> Result<(), tonic::Status> {
        self.client
            .accept(v1::AcceptRequest {
                header: Some(self.header.clone()),
                offer_ids: vec![offer.id.clone()],
                operations: vec![v1::Operation {
                    operation: Some(v1::operation::Operation::Launch(v1::operation::Launch {
                        tasks,
                    })),
                }],
                filters: Some(v1::Filters {
                    refuse_seconds: Some(0.0),
                }),
            })
            .await
            .map(|_| ())
    }
}

/// A native shell task.
pub fn shell_task(id: &str, cmd: &str, resources: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        name: id.into(),
        task_id: id.into(),
        resources: agora_proto::Resources::parse(resources)
            .expect("resources")
            .to_proto(),
        command: Some(v1::CommandInfo {
            shell: true,
            value: cmd.into(),
            ..Default::default()
        }),
        kill_policy: Some(v1::KillPolicy {
            grace_period_seconds: 1.0,
        }),
        ..Default::default()
    }
}

/// Task states by id from `/state` (`tasks` and `completed_tasks`).
pub fn task_state(state: &serde_json::Value, task_id: &str) -> Option<String> {
    ["tasks", "completed_tasks"].iter().find_map(|k| {
        state[k].as_array()?.iter().find_map(|t| {
            (t["id"] == task_id).then(|| t["state"].as_str().unwrap_or("").to_string())
        })
    })
}

/// A tiny Docker image made of Debian's static busybox, imported locally (no registry is
/// reachable): `agora-e2e-busybox:latest`, with `/www/index.html` = `agora-ok`.
pub fn ensure_busybox_image() -> &'static str {
    const IMAGE: &str = "agora-e2e-busybox:latest";
    static ONCE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let exists = Command::new("docker")
            .args(["image", "inspect", IMAGE])
            .output()
            .is_ok_and(|o| o.status.success());
        if exists {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("rootfs");
        for d in ["bin", "tmp", "www", "etc"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox"))
            .expect("busybox-static is installed");
        let list = Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter(|a| *a != "busybox")
        {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
        std::fs::write(root.join("www/index.html"), "agora-ok\n").expect("index");
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").expect("passwd");
        let tar = dir.path().join("rootfs.tar");
        let ok = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("tar");
        assert!(ok.success(), "tar failed");
        let out = Command::new("docker")
            .arg("import")
            .arg(&tar)
            .arg(IMAGE)
            .output()
            .expect("docker import");
        assert!(
            out.status.success(),
            "docker import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    IMAGE
}

/// A TCP proxy in front of ZooKeeper that the test can cut (every open connection dropped, new
/// ones closed at once, as in a partition) and restore. The system ZooKeeper keeps running for
/// the other tests.
pub struct ZkProxy {
    pub port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ZkProxy {
    pub async fn start(target: String) -> ZkProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cut.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut inbound).await;
                    continue;
                }
                let target = target.clone();
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let watch_cut = async {
                        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {}
                        _ = watch_cut => {}
                    }
                });
            }
        });
        ZkProxy { port, cut }
    }

    pub fn servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `agora local` with 2 agents running native tasks only, the master on `port`, the services
/// framework on `services`, the batch framework on a free port, state under `dir/state`.
pub fn spawn_local(dir: &Path, port: u16, name: &str, services: u16) -> Process {
    spawn_local_with(dir, port, name, services, "native")
}

/// [`spawn_local`] with the agents' `--containerizers` given (`docker,native` for Docker tasks).
pub fn spawn_local_with(
    dir: &Path,
    port: u16,
    name: &str,
    services: u16,
    containerizers: &str,
) -> Process {
    let args = local_args(dir, port, services, free_port(), containerizers);
    Process::spawn(name, &args, dir)
}

/// `agora local` on the cluster CA (no `--insecure`), its batch API on `batch`, the CLI login it
/// makes kept in `agora_home` (`AGORA_HOME`).
pub fn spawn_local_secure(
    dir: &Path,
    port: u16,
    name: &str,
    (services, batch): (u16, u16),
    agora_home: &Path,
) -> Process {
    let mut args = local_args(dir, port, services, batch, "native");
    args.retain(|a| a != "--insecure");
    Process::spawn_with_env(name, &args, dir, &[("AGORA_HOME", agora_home.as_os_str())])
}

/// The flags of [`spawn_local_with`]: in clear, two agents, the given ports, state under `dir`.
fn local_args(
    dir: &Path,
    port: u16,
    services: u16,
    batch: u16,
    containerizers: &str,
) -> Vec<String> {
    let agent_port = local_agent_port(dir);
    [
        "local",
        "--insecure",
        "--agent-port",
        &agent_port.to_string(),
        "--port",
        &port.to_string(),
        "--work-dir",
        &dir.join("state").display().to_string(),
        "--agents",
        "2",
        "--containerizers",
        containerizers,
        "--batch-port",
        &batch.to_string(),
        "--services-port",
        &services.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The agents' HTTP port of the `agora local` under `dir`: free when first chosen, then the same
/// for a restart on the same state (so that two `agora local` tests never share 127.0.0.N:port).
pub fn local_agent_port(dir: &Path) -> u16 {
    let file = dir.join("agent-port");
    if let Some(p) = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return p;
    }
    let p = free_port();
    std::fs::write(&file, p.to_string()).expect("write the agent port");
    p
}

/// Waits for `agora local`'s ready banner.
pub async fn local_ready(local: &Process) {
    eventually("the ready banner", Duration::from_secs(40), || {
        let log = local.log_text();
        async move {
            log.contains("Agora is running locally with 2 agents")
                .then_some(())
        }
    })
    .await;
}

/// The Python with the ecosystem's community clients: `AGORA_TEST_PYTHON` (`scripts/test` sets
/// it up), else the venv `scripts/test` makes. A missing client fails the test that needs it.
pub fn test_python() -> String {
    std::env::var("AGORA_TEST_PYTHON")
        .unwrap_or_else(|_| "/tmp/agora-test-services/venv/bin/python".to_string())
}

/// Runs `tests/python/<script>` with `args` under `test_python()` (at most `limit`), and
/// returns its stdout; fails the test with both outputs if it exits non-zero.
pub async fn run_python_script(script: &str, args: Vec<String>, limit: Duration) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let python = test_python();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg(limit.as_secs().to_string())
            .arg(&python)
            .arg(&path)
            .args(&args)
            .output()
    })
    .await
    .expect("join")
    .expect("timeout and python run");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script} failed ({}; python: {}):\n{stdout}\n{}",
        out.status,
        test_python(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// [`test_python`] as a path, checked: a test of a community client must fail, not skip,
/// without the client.
pub fn community_python() -> PathBuf {
    let python = PathBuf::from(test_python());
    assert!(
        python.exists(),
        "no Python with the community clients at {} (run scripts/test, which makes the venv and \
         exports AGORA_TEST_PYTHON)",
        python.display()
    );
    python
}
