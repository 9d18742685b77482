//! The agent's actor: one tokio task owns every task record, the status update manager and the
//! checkpoint; everything else talks to it through [`AgentHandle`].
//!
//! ```text
//!  master link / tests ──Command──▶ actor ──launch/wait/kill jobs──▶ containerizers
//!         ▲                          │  ▲                                 │
//!         └──StatusUpdate (outbox)───┘  └──────────Event (internal)───────┘
//! ```
//! Before acting on a task the actor checkpoints it (`meta/frameworks/<fw>/tasks/<task>/task.pb`);
//! every status update is checkpointed (`updates.pb`) before it is sent, and resent with backoff until
//! acknowledged. On start the actor recovers from the checkpoint: it reattaches to containers that
//! still run, reports those that ended meanwhile, and resends unacknowledged updates.
//!
//! Health checks: when a task with a `health_check` reaches RUNNING (or is recovered running) the
//! actor spawns its checker ([`crate::prober::run`]) as a job and keeps the task's
//! [`HealthTracker`]; each result comes back as an event, and a change of health becomes a
//! TASK_RUNNING update (REASON_TASK_HEALTH_CHECK_STATUS_UPDATED) while too many failures in a row
//! kill the task (REASON_TASK_UNHEALTHY). Every later update of the task carries the last `healthy`.
//! The checker stops when the task ends or a kill starts.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_proto::v1::{self, Reason, TaskState};
use agora_proto::Resources;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::checkpoint::{
    read_message, write_atomic, write_message, PendingUpdates, TaskCheckpoint,
};
use crate::containerizer::{Containerizer, ContainerizerKind, LaunchSpec, Recovered, Usage};
use crate::error::{AgentError, ContainerError};
use crate::health::{HealthCheckSpec, HealthTracker, Verdict};
use crate::lifecycle::{can_transition, terminal_status, Termination};
use crate::paths::Layout;
use crate::status_update::{Ack, StatusUpdateManager, TaskKey};
use crate::user::{TaskUser, UserError, UserPolicy};

/// Kill grace period when neither the kill nor the task names one (as in Mesos).
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);

/// How the actor is set up; see [`crate::AgentConfig`] for the user-facing flags.
pub struct AgentSettings {
    pub work_dir: PathBuf,
    pub hostname: String,
    pub containerizers: Vec<Arc<dyn Containerizer>>,
    /// First retry of an unacknowledged update (Mesos: 10 s); doubles up to `status_retry_max`.
    pub status_retry_initial: Duration,
    pub status_retry_max: Duration,
    /// Which Unix user tasks run as (see [`crate::user`]).
    pub user_policy: UserPolicy,
}

/// Resource usage of one task's container, for `/monitor/statistics` and heartbeats.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerStatistics {
    pub framework_id: String,
    pub executor_id: String,
    pub task_id: String,
    pub container_id: String,
    pub containerizer: &'static str,
    pub statistics: Usage,
}

enum Command {
    RunTask {
        framework: Box<v1::FrameworkInfo>,
        task: Box<v1::TaskInfo>,
    },
    KillTask {
        framework_id: String,
        task_id: String,
        grace: Option<Duration>,
    },
    Acknowledge {
        framework_id: String,
        task_id: String,
        uuid: Vec<u8>,
    },
    ShutdownFramework {
        framework_id: String,
    },
    ResendUnacknowledged,
    Tasks {
        reply: oneshot::Sender<Vec<v1::Task>>,
    },
    Frameworks {
        reply: oneshot::Sender<Vec<v1::FrameworkInfo>>,
    },
    Statistics {
        reply: oneshot::Sender<Vec<ContainerStatistics>>,
    },
    SetAgentId {
        agent_id: String,
        reply: oneshot::Sender<Result<(), AgentError>>,
    },
}

enum Event {
    Launched {
        key: TaskKey,
        container_id: String,
        result: Result<(), ContainerError>,
    },
    Terminated {
        key: TaskKey,
        container_id: String,
        result: Result<Termination, ContainerError>,
    },
    /// One health check of a running task ended: `Ok` if healthy, else why not.
    Health {
        key: TaskKey,
        container_id: String,
        result: Result<(), String>,
    },
}

/// Host ports of a task's `ports` resource, in order (at most 1024).
fn task_ports(resources: &Resources) -> Vec<u16> {
    resources
        .ranges_total("ports")
        .pairs()
        .iter()
        .flat_map(|(b, e)| *b..=*e)
        .filter_map(|p| u16::try_from(p).ok())
        .take(1024)
        .collect()
}

/// The environment a task runs with: its command's variables plus `AGORA_*`, `HOST` and `PORT*`.
/// Health-check commands that run on the host get it too.
fn task_env(
    agent_id: &str,
    hostname: &str,
    key: &TaskKey,
    cp: &TaskCheckpoint,
    ports: &[u16],
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = cp
        .task
        .as_ref()
        .and_then(|t| t.command.as_ref())
        .map(|c| c.environment.clone().into_iter().collect())
        .unwrap_or_default();
    env.insert("AGORA_AGENT_ID".into(), agent_id.into());
    env.insert("AGORA_FRAMEWORK_ID".into(), key.0.clone());
    env.insert("AGORA_EXECUTOR_ID".into(), cp.executor_id.clone());
    env.insert("AGORA_TASK_ID".into(), key.1.clone());
    env.insert("AGORA_CONTAINER_ID".into(), cp.container_id.clone());
    env.insert("AGORA_SANDBOX".into(), cp.sandbox.clone());
    env.insert("HOST".into(), hostname.into());
    if let Some(first) = ports.first() {
        env.insert(
            "PORTS".into(),
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
        for (i, p) in ports.iter().take(16).enumerate() {
            env.insert(format!("PORT{i}"), p.to_string());
        }
        env.insert("PORT".into(), first.to_string());
    }
    env
}

/// A cheap, cloneable handle to the agent's actor. The actor stops when every handle is dropped or
/// [`AgentHandle::abort`] is called; running tasks are left running either way.
#[derive(Clone)]
pub struct AgentHandle {
    tx: mpsc::UnboundedSender<Command>,
    agent_id: Arc<std::sync::RwLock<String>>,
    layout: Layout,
    abort: Arc<tokio::task::AbortHandle>,
}

impl AgentHandle {
    /// The agent's id (checkpointed in `meta/agent_id`).
    pub fn agent_id(&self) -> String {
        self.agent_id.read().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn send(&self, cmd: Command) -> Result<(), AgentError> {
        self.tx.send(cmd).map_err(|_| AgentError::Stopped)
    }

    /// Launches a task with the built-in command executor (STARTING, RUNNING, then a terminal update).
    ///
    /// # Errors
    /// [`AgentError::Stopped`] when the actor is gone. Problems with the task itself are reported as
    /// status updates (TASK_ERROR / TASK_FAILED), not as errors here.
    pub fn run_task(
        &self,
        framework: v1::FrameworkInfo,
        task: v1::TaskInfo,
    ) -> Result<(), AgentError> {
        self.send(Command::RunTask {
            framework: Box::new(framework),
            task: Box::new(task),
        })
    }

    /// Kills a task: SIGTERM (or `docker stop`), then SIGKILL after `grace` (else the task's kill
    /// policy, else 3 s).
    ///
    /// # Errors
    /// [`AgentError::Stopped`] when the actor is gone.
    pub fn kill_task(
        &self,
        framework_id: &str,
        task_id: &str,
        grace: Option<Duration>,
    ) -> Result<(), AgentError> {
        self.send(Command::KillTask {
            framework_id: framework_id.into(),
            task_id: task_id.into(),
            grace,
        })
    }

    /// The framework acknowledged the update `uuid` of a task: stop resending it.
    ///
    /// # Errors
    /// [`AgentError::Stopped`] when the actor is gone.
    pub fn acknowledge(
        &self,
        framework_id: &str,
        task_id: &str,
        uuid: &[u8],
    ) -> Result<(), AgentError> {
        self.send(Command::Acknowledge {
            framework_id: framework_id.into(),
            task_id: task_id.into(),
            uuid: uuid.to_vec(),
        })
    }

    /// Kills every task of a framework.
    ///
    /// # Errors
    /// [`AgentError::Stopped`] when the actor is gone.
    pub fn shutdown_framework(&self, framework_id: &str) -> Result<(), AgentError> {
        self.send(Command::ShutdownFramework {
            framework_id: framework_id.into(),
        })
    }

    /// Resends every unacknowledged update now (after connecting to a master).
    ///
    /// # Errors
    /// [`AgentError::Stopped`] when the actor is gone.
    pub fn resend_unacknowledged(&self) -> Result<(), AgentError> {
        self.send(Command::ResendUnacknowledged)
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, AgentError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| AgentError::Stopped)
    }

    /// Tasks the agent knows: running ones and terminal ones whose last update is not acknowledged.
    ///
    /// # Errors
    /// [`AgentError::Stopped`] when the actor is gone.
    pub async fn tasks(&self) -> Result<Vec<v1::Task>, AgentError> {
        self.ask(|reply| Command::Tasks { reply }).await
    }

    /// Frameworks of the tasks the agent knows (for re-registration).
    ///
    /// # Errors
    /// [`AgentError::Stopped`] when the actor is gone.
    pub async fn frameworks(&self) -> Result<Vec<v1::FrameworkInfo>, AgentError> {
        self.ask(|reply| Command::Frameworks { reply }).await
    }

    /// cpu and memory use of every running container.
    ///
    /// # Errors
    /// [`AgentError::Stopped`] when the actor is gone.
    pub async fn statistics(&self) -> Result<Vec<ContainerStatistics>, AgentError> {
        self.ask(|reply| Command::Statistics { reply }).await
    }

    /// Adopts the id a master assigned at first registration and checkpoints it.
    ///
    /// # Errors
    /// I/O errors writing the checkpoint; [`AgentError::Stopped`].
    pub async fn set_agent_id(&self, agent_id: &str) -> Result<(), AgentError> {
        self.ask(|reply| Command::SetAgentId {
            agent_id: agent_id.into(),
            reply,
        })
        .await?
    }

    /// Stops the actor at once, as if the agent process died (kill -9): no cleanup, running tasks
    /// keep running. Used by tests of recovery; [`crate::run`] uses it on shutdown too.
    pub fn abort(&self) {
        self.abort.abort();
    }
}

struct TaskEntry {
    cp: TaskCheckpoint,
    kind: Option<ContainerizerKind>,
    mem_mib: Option<f64>,
    last_status: Option<v1::TaskStatus>,
    /// The running health checker, while the task is RUNNING and has a health check.
    health: Option<HealthRun>,
}

/// A task's health tracker and the checker task feeding it.
struct HealthRun {
    tracker: HealthTracker,
    checker: tokio::task::AbortHandle,
}

impl TaskEntry {
    fn state(&self) -> TaskState {
        TaskState::try_from(self.cp.state).unwrap_or(TaskState::Unspecified)
    }
    fn task(&self) -> v1::TaskInfo {
        self.cp.task.clone().unwrap_or_default()
    }
    /// Why the task is being killed, for its terminal update: `None` when no kill was requested.
    fn kill_cause(&self) -> Option<(Reason, String)> {
        if !self.cp.kill_requested {
            return None;
        }
        let reason = Reason::try_from(self.cp.kill_reason)
            .ok()
            .filter(|r| *r != Reason::Unspecified)
            .unwrap_or(Reason::KillRequested);
        let why = if self.cp.kill_message.is_empty() {
            "killed on request".to_string()
        } else {
            self.cp.kill_message.clone()
        };
        Some((reason, why))
    }
    fn grace(&self, over: Option<Duration>) -> Duration {
        over.or_else(|| {
            self.cp
                .task
                .as_ref()
                .and_then(|t| t.kill_policy.as_ref())
                .map(|k| k.grace_period_seconds)
                .filter(|g| g.is_finite() && *g >= 0.0)
                .map(Duration::from_secs_f64)
        })
        .unwrap_or(DEFAULT_KILL_GRACE)
    }
}

struct Actor {
    agent_id: Arc<std::sync::RwLock<String>>,
    hostname: String,
    layout: Layout,
    containerizers: HashMap<ContainerizerKind, Arc<dyn Containerizer>>,
    tasks: BTreeMap<TaskKey, TaskEntry>,
    sum: StatusUpdateManager,
    outbox: mpsc::UnboundedSender<v1::StatusUpdate>,
    events: mpsc::UnboundedSender<Event>,
    jobs: JoinSet<()>,
    user_policy: UserPolicy,
}

/// The actor's clock: tokio's, so that tests can pause and advance it (`tokio::time::pause`). The
/// same instant as `std::time::Instant::now()` when time is not paused.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Starts an agent: loads (or creates) its id, recovers checkpointed tasks, and returns a handle and
/// the outbox of status updates to forward to the master (each resent until acknowledged through
/// [`AgentHandle::acknowledge`]).
///
/// # Errors
/// Unreadable or corrupt checkpoints, an unwritable work dir.
pub async fn start(
    settings: AgentSettings,
) -> Result<(AgentHandle, mpsc::UnboundedReceiver<v1::StatusUpdate>), AgentError> {
    let layout = Layout::new(&settings.work_dir);
    fs::create_dir_all(layout.meta()).map_err(|e| AgentError::io(layout.meta(), e))?;
    let id_file = layout.agent_id_file();
    let agent_id = match fs::read_to_string(&id_file) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
        Ok(_) => {
            return Err(AgentError::CorruptCheckpoint {
                path: id_file,
                message: "empty agent id".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().to_string();
            write_atomic(&id_file, id.as_bytes())?;
            id
        }
        Err(e) => return Err(AgentError::io(id_file, e)),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let (outbox, outbox_rx) = mpsc::unbounded_channel();
    let (events, events_rx) = mpsc::unbounded_channel();
    let agent_id = Arc::new(std::sync::RwLock::new(agent_id));
    let mut actor = Actor {
        agent_id: agent_id.clone(),
        hostname: settings.hostname,
        layout: layout.clone(),
        containerizers: settings
            .containerizers
            .into_iter()
            .map(|c| (c.kind(), c))
            .collect(),
        tasks: BTreeMap::new(),
        sum: StatusUpdateManager::new(settings.status_retry_initial, settings.status_retry_max),
        outbox,
        events,
        jobs: JoinSet::new(),
        user_policy: settings.user_policy,
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    let join = tokio::spawn(async move {
        let recovered = actor.recover().await;
        let ok = recovered.is_ok();
        let _ = ready_tx.send(recovered);
        if ok {
            actor.run(rx, events_rx).await;
        }
    });
    let handle = AgentHandle {
        tx,
        agent_id,
        layout,
        abort: Arc::new(join.abort_handle()),
    };
    ready_rx.await.map_err(|_| AgentError::Stopped)??;
    Ok((handle, outbox_rx))
}

impl Actor {
    fn agent_id(&self) -> String {
        self.agent_id.read().map(|s| s.clone()).unwrap_or_default()
    }

    async fn run(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        loop {
            let deadline = self.sum.next_deadline().map(tokio::time::Instant::from_std);
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                Some(ev) = events.recv() => self.event(ev),
                _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => {}
                Some(res) = self.jobs.join_next(), if !self.jobs.is_empty() => {
                    if let Err(e) = res {
                        if e.is_panic() { warn!(error = %e, "an agent job panicked"); }
                    }
                }
            }
            self.pump();
        }
        debug!("agent actor stopped: every handle was dropped");
    }

    /// Sends the updates that are due.
    fn pump(&mut self) {
        for u in self.sum.due(now()) {
            let _ = self.outbox.send(u);
        }
    }

    fn checkpoint_task(&self, key: &TaskKey) {
        let Some(e) = self.tasks.get(key) else { return };
        let dir = self.layout.task_meta(&key.0, &key.1);
        if let Err(err) = write_message(&dir.join("task.pb"), &e.cp) {
            warn!(task = %key.1, error = %err, "cannot checkpoint task");
        }
    }

    fn checkpoint_updates(&self, key: &TaskKey) {
        let dir = self.layout.task_meta(&key.0, &key.1);
        let pending = PendingUpdates {
            updates: self.sum.pending(&key.0, &key.1),
        };
        if let Err(err) = write_message(&dir.join("updates.pb"), &pending) {
            warn!(task = %key.1, error = %err, "cannot checkpoint status updates");
        }
    }

    /// Records a new state of a task, checkpoints it, and queues the update for the master.
    fn update(
        &mut self,
        key: &TaskKey,
        state: TaskState,
        reason: Reason,
        message: String,
        exit_code: Option<i32>,
    ) {
        let agent_id = self.agent_id();
        let hostname = self.hostname.clone();
        let Some(e) = self.tasks.get_mut(key) else {
            return;
        };
        let from = e.state();
        if from != TaskState::Unspecified && from != state && !can_transition(from, state) {
            debug!(task = %key.1, ?from, to = ?state, "dropping an update that would go backwards");
            return;
        }
        if state == TaskState::TaskRunning && e.cp.started_at == 0.0 {
            e.cp.started_at = now_secs();
        }
        e.cp.state = state as i32;
        let status = v1::TaskStatus {
            task_id: key.1.clone(),
            state: state as i32,
            reason: reason as i32,
            message,
            source: v1::StatusSource::SourceAgent as i32,
            agent_id,
            executor_id: e.cp.executor_id.clone(),
            uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
            // The latest health result, once a check counted (see crate::health).
            healthy: e.cp.healthy,
            timestamp: now_secs(),
            exit_code,
            ip_addresses: vec![hostname],
            data: Vec::new(),
        };
        if agora_proto::is_terminal(state) {
            if let Some(h) = e.health.take() {
                h.checker.abort();
            }
        }
        info!(task = %key.1, state = state.as_str_name(), reason = reason.as_str_name(), message = %status.message, healthy = ?status.healthy, "task status");
        e.last_status = Some(status.clone());
        self.sum.add(
            v1::StatusUpdate {
                framework_id: key.0.clone(),
                status: Some(status),
            },
            now(),
        );
        self.checkpoint_updates(key);
        self.checkpoint_task(key);
    }

    fn containerizer(&self, kind: Option<ContainerizerKind>) -> Option<Arc<dyn Containerizer>> {
        kind.and_then(|k| self.containerizers.get(&k).cloned())
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::RunTask { framework, task } => self.run_task(*framework, *task),
            Command::KillTask {
                framework_id,
                task_id,
                grace,
            } => self.kill_task(&(framework_id, task_id), grace),
            Command::Acknowledge {
                framework_id,
                task_id,
                uuid,
            } => self.acknowledge((framework_id, task_id), &uuid),
            Command::ShutdownFramework { framework_id } => {
                let keys: Vec<TaskKey> = self
                    .tasks
                    .keys()
                    .filter(|k| k.0 == framework_id)
                    .cloned()
                    .collect();
                for k in keys {
                    self.kill_task(&k, None);
                }
            }
            Command::ResendUnacknowledged => self.sum.resend_all(now()),
            Command::Tasks { reply } => {
                let _ = reply.send(
                    self.tasks
                        .iter()
                        .map(|(k, e)| self.task_record(k, e))
                        .collect(),
                );
            }
            Command::Frameworks { reply } => {
                let mut fws: BTreeMap<String, v1::FrameworkInfo> = BTreeMap::new();
                for e in self.tasks.values() {
                    if let Some(f) = &e.cp.framework {
                        fws.insert(f.id.clone(), f.clone());
                    }
                }
                let _ = reply.send(fws.into_values().collect());
            }
            Command::Statistics { reply } => {
                let targets: Vec<_> = self
                    .tasks
                    .iter()
                    .filter(|(_, e)| e.cp.launched && !agora_proto::is_terminal(e.state()))
                    .filter_map(|(k, e)| {
                        let c = self.containerizer(e.kind)?;
                        Some((
                            k.clone(),
                            e.cp.executor_id.clone(),
                            e.cp.container_id.clone(),
                            c,
                        ))
                    })
                    .collect();
                self.jobs.spawn(async move {
                    let mut out = Vec::new();
                    for ((fw, task), ex, cid, c) in targets {
                        match c.usage(&cid).await {
                            Ok(statistics) => out.push(ContainerStatistics {
                                framework_id: fw,
                                executor_id: ex,
                                task_id: task,
                                container_id: cid,
                                containerizer: c.kind().as_str(),
                                statistics,
                            }),
                            Err(e) => debug!(container = %cid, error = %e, "no statistics"),
                        }
                    }
                    let _ = reply.send(out);
                });
            }
            Command::SetAgentId { agent_id, reply } => {
                let res = write_atomic(&self.layout.agent_id_file(), agent_id.as_bytes());
                if res.is_ok() {
                    if let Ok(mut id) = self.agent_id.write() {
                        *id = agent_id;
                    }
                }
                let _ = reply.send(res);
            }
        }
    }

    fn task_record(&self, key: &TaskKey, e: &TaskEntry) -> v1::Task {
        let info = e.task();
        v1::Task {
            name: info.name.clone(),
            task_id: key.1.clone(),
            framework_id: key.0.clone(),
            executor_id: e.cp.executor_id.clone(),
            agent_id: self.agent_id(),
            state: e.cp.state,
            resources: info.resources.clone(),
            status: e.last_status.clone(),
            labels: info.labels.clone(),
            container: info.container.clone(),
            health_check: info.health_check.clone(),
            kill_policy: info.kill_policy,
            started_at: e.cp.started_at,
            info: Some(info),
        }
    }

    fn run_task(&mut self, framework: v1::FrameworkInfo, task: v1::TaskInfo) {
        // A custom executor's task runs the executor's command; the original TaskInfo is kept
        // for the executor to read from the sandbox.
        let original = task.executor.is_some().then(|| task.clone());
        let (task, executor_problem) = match crate::executor::as_executor_task(&task) {
            Ok(t) => (t, None),
            Err(e) => (task, Some(e)),
        };
        let key: TaskKey = (framework.id.clone(), task.task_id.clone());
        if key.0.is_empty() || key.1.is_empty() {
            warn!(framework = %key.0, task = %key.1, "refusing a task without framework id or task id");
            return;
        }
        if let Some(e) = self.tasks.get(&key) {
            if !agora_proto::is_terminal(e.state()) {
                warn!(task = %key.1, "a task with this id is already running here; ignoring the duplicate launch");
                return;
            }
        }
        let kind = ContainerizerKind::for_task(&task);
        let user = self.task_user(&framework.user, &task);
        let container_id = uuid::Uuid::new_v4().to_string();
        let executor_id = task
            .executor
            .as_ref()
            .map(|e| e.executor_id.clone())
            .unwrap_or_else(|| task.task_id.clone());
        let sandbox = self
            .layout
            .sandbox(&self.agent_id(), &key.0, &executor_id, &container_id);
        let resources = Resources::from_proto(&task.resources);
        let mem_mib = resources
            .as_ref()
            .ok()
            .map(|r| r.scalar_total("mem"))
            .filter(|m| *m > 0.0);
        let mut cp = TaskCheckpoint {
            framework: Some(framework),
            task: Some(task.clone()),
            executor_id: executor_id.clone(),
            container_id: container_id.clone(),
            containerizer: kind.as_str().into(),
            sandbox: sandbox.display().to_string(),
            state: TaskState::TaskStaging as i32,
            kill_requested: false,
            launched: false,
            started_at: 0.0,
            kill_reason: Reason::Unspecified as i32,
            kill_message: String::new(),
            healthy: None,
            ..Default::default()
        };
        cp.set_user(user.as_ref().ok().and_then(Option::as_ref));
        self.tasks.insert(
            key.clone(),
            TaskEntry {
                cp,
                kind: Some(kind),
                mem_mib,
                last_status: None,
                health: None,
            },
        );
        // Checkpoint before acting; a leftover checkpoint of an earlier task with this id is replaced.
        let _ = fs::remove_file(self.layout.task_meta(&key.0, &key.1).join("updates.pb"));
        self.checkpoint_task(&key);

        let invalid = |msg: String| (TaskState::TaskError, Reason::TaskInvalid, msg);
        let problem = if let Some(e) = executor_problem {
            Some(invalid(e))
        } else if self.containerizer(Some(kind)).is_none() {
            Some(invalid(format!("the task needs the {} containerizer, which is not enabled on this agent (--containerizers)", kind.as_str())))
        } else if let Err(e) = &resources {
            Some(invalid(format!("invalid resources: {e}")))
        } else if let Some(Err(e)) = task.health_check.as_ref().map(HealthCheckSpec::from_proto) {
            Some(invalid(e.to_string()))
        } else if privileged(&task) && !self.user_policy.allow_root {
            Some((
                TaskState::TaskError,
                Reason::TaskUnauthorized,
                "container.docker.privileged: a privileged container holds the host's root powers \
                 and this agent refuses root tasks: start the agent with --allow-root-tasks to allow them"
                    .to_string(),
            ))
        } else if let Err(e) = &user {
            Some(match e {
                UserError::RootRefused { .. } => (
                    TaskState::TaskError,
                    Reason::TaskUnauthorized,
                    e.to_string(),
                ),
                UserError::Invalid { .. } => invalid(e.to_string()),
                UserError::Unknown { .. } | UserError::Lookup { .. } => (
                    TaskState::TaskFailed,
                    Reason::ContainerLaunchFailed,
                    e.to_string(),
                ),
            })
        } else {
            None
        };
        if let Some((state, reason, msg)) = problem {
            self.update(&key, state, reason, msg, None);
            return;
        }
        let Ok(resources) = resources else { return };
        let Ok(user) = user else { return };
        if let Err(msg) = prepare_sandbox(&sandbox, user.as_ref(), kind) {
            self.update(
                &key,
                TaskState::TaskFailed,
                Reason::ContainerLaunchFailed,
                msg,
                None,
            );
            return;
        }
        self.update(
            &key,
            TaskState::TaskStarting,
            Reason::Unspecified,
            "preparing the container".into(),
            None,
        );

        if let Some(original) = &original {
            if let Err(e) = crate::executor::write_task_files(original, &sandbox) {
                self.update(
                    &key,
                    TaskState::TaskFailed,
                    Reason::ContainerLaunchFailed,
                    format!(
                        "cannot write the task for its executor into {}: {e}",
                        sandbox.display()
                    ),
                    None,
                );
                return;
            }
        }
        let ports = task_ports(&resources);
        let mut env = match self.tasks.get(&key) {
            Some(e) => task_env(&self.agent_id(), &self.hostname, &key, &e.cp, &ports),
            None => return,
        };
        if original.is_some() {
            env.insert(
                "AGORA_TASK_INFO_FILE".into(),
                sandbox.join("task.pb").display().to_string(),
            );
        }
        let cpus = Some(resources.scalar_total("cpus")).filter(|c| *c > 0.0);
        let spec = LaunchSpec {
            container_id: container_id.clone(),
            agent_id: self.agent_id(),
            framework_id: key.0.clone(),
            executor_id,
            task,
            sandbox,
            cpus,
            mem_mib,
            ports,
            env,
            user,
        };
        let Some(c) = self.containerizer(Some(kind)) else {
            return;
        };
        let events = self.events.clone();
        self.jobs.spawn(async move {
            let uris = spec
                .task
                .command
                .as_ref()
                .map(|c| c.uris.clone())
                .unwrap_or_default();
            // The sandbox is the task user's before the fetcher runs (it copies and extracts as
            // that user), and again after it (downloads are written by the agent).
            let give = |sandbox: &std::path::Path| {
                crate::user::hand_over(sandbox, spec.user.as_ref()).map_err(|(p, e)| {
                    ContainerError::Launch(format!(
                        "cannot give the sandbox to user '{}': {}: {e}",
                        spec.user.as_ref().map(|u| u.name.as_str()).unwrap_or("?"),
                        p.display()
                    ))
                })
            };
            let result = async {
                give(&spec.sandbox)?;
                crate::fetcher::fetch(&uris, &spec.sandbox, spec.user.as_ref()).await?;
                give(&spec.sandbox)?;
                c.launch(&spec).await
            }
            .await;
            let _ = events.send(Event::Launched {
                key,
                container_id,
                result,
            });
        });
    }

    /// The user a task runs as (see [`crate::user`]); `Ok(None)` when the agent is not root and so
    /// cannot switch users: the task runs as the agent's own user.
    fn task_user(
        &self,
        framework_user: &str,
        task: &v1::TaskInfo,
    ) -> Result<Option<TaskUser>, UserError> {
        if !crate::user::can_switch_users() {
            return Ok(None);
        }
        let command_user = task.command.as_ref().map(|c| c.user.as_str()).unwrap_or("");
        crate::user::resolve(command_user, framework_user, &self.user_policy).map(Some)
    }

    fn watch(&mut self, key: TaskKey) {
        let Some(e) = self.tasks.get(&key) else {
            return;
        };
        let Some(c) = self.containerizer(e.kind) else {
            return;
        };
        let container_id = e.cp.container_id.clone();
        let sandbox = PathBuf::from(&e.cp.sandbox);
        let events = self.events.clone();
        self.jobs.spawn(async move {
            let result = c.wait(&container_id, &sandbox).await;
            let _ = events.send(Event::Terminated {
                key,
                container_id,
                result,
            });
        });
    }

    fn start_kill(&mut self, key: &TaskKey, grace: Duration) {
        let Some(e) = self.tasks.get(key) else { return };
        let Some(c) = self.containerizer(e.kind) else {
            return;
        };
        let cid = e.cp.container_id.clone();
        let task = key.1.clone();
        self.jobs.spawn(async move {
            if let Err(err) = c.kill(&cid, grace).await {
                warn!(%task, error = %err, "kill failed");
            }
        });
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Launched {
                key,
                container_id,
                result,
            } => {
                let Some(e) = self.tasks.get_mut(&key) else {
                    return;
                };
                if e.cp.container_id != container_id {
                    return;
                }
                match result {
                    Ok(()) => {
                        e.cp.launched = true;
                        let kill = e.cp.kill_requested.then(|| e.grace(None));
                        self.update(
                            &key,
                            TaskState::TaskRunning,
                            Reason::Unspecified,
                            "the task is running".into(),
                            None,
                        );
                        self.watch(key.clone());
                        if let Some(grace) = kill {
                            self.start_kill(&key, grace);
                        } else {
                            self.start_health(&key);
                        }
                    }
                    Err(err) => {
                        let (state, reason) = match &err {
                            ContainerError::ImagePull { .. } => {
                                (TaskState::TaskFailed, Reason::ImagePullFailed)
                            }
                            ContainerError::InvalidTask(_) => {
                                (TaskState::TaskError, Reason::TaskInvalid)
                            }
                            _ if e.cp.kill_requested => {
                                (TaskState::TaskKilled, Reason::TaskKilledDuringLaunch)
                            }
                            _ => (TaskState::TaskFailed, Reason::ContainerLaunchFailed),
                        };
                        self.update(&key, state, reason, err.to_string(), None);
                        self.destroy(&key);
                    }
                }
            }
            Event::Terminated {
                key,
                container_id,
                result,
            } => {
                let Some(e) = self.tasks.get(&key) else {
                    return;
                };
                if e.cp.container_id != container_id || agora_proto::is_terminal(e.state()) {
                    return;
                }
                let (state, reason, msg, code) = match result {
                    Ok(t) => {
                        let (s, r, m) = terminal_status(&t, e.kill_cause(), e.mem_mib);
                        (s, r, m, t.exit_code)
                    }
                    Err(err) => (
                        TaskState::TaskFailed,
                        Reason::ExecutorTerminated,
                        format!("lost track of the container: {err}"),
                        None,
                    ),
                };
                self.update(&key, state, reason, msg, code);
                self.destroy(&key);
            }
            Event::Health {
                key,
                container_id,
                result,
            } => self.health_result(&key, &container_id, result),
        }
    }

    /// Starts the health checker of a task that just reached RUNNING (or was recovered running), if
    /// it has a health check. The grace period and delay count from when the task first ran, so an
    /// agent restart does not grant a new grace period.
    fn start_health(&mut self, key: &TaskKey) {
        let Some(e) = self.tasks.get(key) else { return };
        let Some(hc) = e.cp.task.as_ref().and_then(|t| t.health_check.as_ref()) else {
            return;
        };
        let spec = match HealthCheckSpec::from_proto(hc) {
            Ok(s) => s,
            Err(err) => {
                // Validated at launch; only a checkpoint from another agent version gets here.
                warn!(task = %key.1, error = %err, "not checking the task's health");
                return;
            }
        };
        let Some(containerizer) = self.containerizer(e.kind) else {
            return;
        };
        let elapsed =
            Duration::try_from_secs_f64(now_secs() - e.cp.started_at).unwrap_or(Duration::ZERO);
        let started = now().checked_sub(elapsed).unwrap_or_else(now);
        let tracker = HealthTracker::new(spec.policy, started, e.cp.healthy);
        let ports =
            e.cp.task
                .as_ref()
                .and_then(|t| Resources::from_proto(&t.resources).ok())
                .map(|r| task_ports(&r))
                .unwrap_or_default();
        let container_id = e.cp.container_id.clone();
        let target = crate::prober::Target {
            probe: spec.probe,
            timeout: spec.policy.timeout,
            containerizer,
            container_id: container_id.clone(),
            task_env: task_env(&self.agent_id(), &self.hostname, key, &e.cp, &ports),
            sandbox: PathBuf::from(&e.cp.sandbox),
            user: e.cp.user(),
        };
        let events = self.events.clone();
        let k = key.clone();
        let report = move |result| {
            events
                .send(Event::Health {
                    key: k.clone(),
                    container_id: container_id.clone(),
                    result,
                })
                .is_ok()
        };
        let checker = self.jobs.spawn(crate::prober::run(
            target,
            spec.policy.delay.saturating_sub(elapsed),
            spec.policy.interval,
            report,
        ));
        debug!(task = %key.1, policy = ?spec.policy, "health checks started");
        if let Some(e) = self.tasks.get_mut(key) {
            if let Some(old) = e.health.replace(HealthRun { tracker, checker }) {
                old.checker.abort();
            }
        }
    }

    fn stop_health(&mut self, key: &TaskKey) {
        if let Some(h) = self.tasks.get_mut(key).and_then(|e| e.health.take()) {
            h.checker.abort();
        }
    }

    /// Applies one health-check result: a status update when the health changed, a kill with
    /// REASON_TASK_UNHEALTHY after too many failures in a row.
    fn health_result(&mut self, key: &TaskKey, container_id: &str, result: Result<(), String>) {
        let Some(e) = self.tasks.get_mut(key) else {
            return;
        };
        // A result that raced with the task's end or a kill is stale.
        if e.cp.container_id != container_id
            || e.state() != TaskState::TaskRunning
            || e.cp.kill_requested
        {
            return;
        }
        let Some(h) = e.health.as_mut() else { return };
        if let Err(why) = &result {
            debug!(task = %key.1, %why, "health check failed");
        }
        match h.tracker.record(now(), result) {
            Verdict::Quiet => {}
            Verdict::Report { healthy, message } => {
                e.cp.healthy = Some(healthy);
                self.update(
                    key,
                    TaskState::TaskRunning,
                    Reason::TaskHealthCheckStatusUpdated,
                    message,
                    None,
                );
            }
            Verdict::Kill { message } => {
                e.cp.healthy = Some(false);
                warn!(task = %key.1, %message, "killing an unhealthy task");
                self.kill_task_because(key, None, Reason::TaskUnhealthy, message);
            }
        }
    }

    fn destroy(&mut self, key: &TaskKey) {
        let Some(e) = self.tasks.get(key) else { return };
        let Some(c) = self.containerizer(e.kind) else {
            return;
        };
        let cid = e.cp.container_id.clone();
        self.jobs.spawn(async move { c.destroy(&cid).await });
    }

    fn kill_task(&mut self, key: &TaskKey, grace: Option<Duration>) {
        self.kill_task_because(key, grace, Reason::KillRequested, String::new());
    }

    /// Kills a task; `reason` and `why` (empty: "killed on request") end up on its terminal update.
    /// The first cause of a kill sticks: a framework's kill after a health kill changes nothing.
    fn kill_task_because(
        &mut self,
        key: &TaskKey,
        grace: Option<Duration>,
        reason: Reason,
        why: String,
    ) {
        self.stop_health(key);
        let Some(e) = self.tasks.get_mut(key) else {
            debug!(task = %key.1, "kill of an unknown task ignored");
            return;
        };
        if agora_proto::is_terminal(e.state()) {
            return;
        }
        let first = !e.cp.kill_requested;
        e.cp.kill_requested = true;
        if first {
            e.cp.kill_reason = reason as i32;
            e.cp.kill_message = why.clone();
        }
        let grace = e.grace(grace);
        let launched = e.cp.launched;
        let wants_killing = e.cp.framework.as_ref().is_some_and(|f| {
            f.capabilities
                .contains(&(v1::FrameworkCapability::TaskKillingState as i32))
        });
        self.checkpoint_task(key);
        if first && wants_killing {
            let msg = if why.is_empty() {
                format!("stopping, grace period {grace:?}")
            } else {
                format!("stopping, grace period {grace:?}: {why}")
            };
            self.update(key, TaskState::TaskKilling, reason, msg, None);
        }
        if launched {
            self.start_kill(key, grace);
        }
        // Not launched yet: the kill is issued when the launch completes (see Event::Launched).
    }

    fn acknowledge(&mut self, key: TaskKey, uuid: &[u8]) {
        match self.sum.acknowledge(&key.0, &key.1, uuid, now()) {
            Ack::Ignored => debug!(task = %key.1, "acknowledgement of an unknown update ignored"),
            Ack::Accepted { drained, .. } => {
                let terminal = self
                    .tasks
                    .get(&key)
                    .is_some_and(|e| agora_proto::is_terminal(e.state()));
                if drained && terminal {
                    // Done with this task: forget it (the sandbox stays for the files API).
                    self.tasks.remove(&key);
                    let dir = self.layout.task_meta(&key.0, &key.1);
                    if let Err(e) = fs::remove_dir_all(&dir) {
                        warn!(path = %dir.display(), error = %e, "cannot remove task checkpoint");
                    }
                } else {
                    self.checkpoint_updates(&key);
                }
            }
        }
    }

    /// Rebuilds the task table from the checkpoint and reconciles it with the containerizers.
    async fn recover(&mut self) -> Result<(), AgentError> {
        let root = self.layout.frameworks_meta();
        let mut found = Vec::new();
        for fw in read_dirs(&root)? {
            for task_dir in read_dirs(&fw.join("tasks"))? {
                found.push(task_dir);
            }
        }
        let now = now();
        for dir in found {
            let Some(cp) = read_message::<TaskCheckpoint>(&dir.join("task.pb"))? else {
                let _ = fs::remove_dir_all(&dir);
                continue;
            };
            let pending =
                read_message::<PendingUpdates>(&dir.join("updates.pb"))?.unwrap_or_default();
            let fw_id = cp
                .framework
                .as_ref()
                .map(|f| f.id.clone())
                .unwrap_or_default();
            let task_id = cp
                .task
                .as_ref()
                .map(|t| t.task_id.clone())
                .unwrap_or_default();
            let key: TaskKey = (fw_id, task_id);
            let kind = ContainerizerKind::parse(&cp.containerizer);
            let mem_mib = cp
                .task
                .as_ref()
                .and_then(|t| Resources::from_proto(&t.resources).ok())
                .map(|r| r.scalar_total("mem"))
                .filter(|m| *m > 0.0);
            let last_status = pending.updates.last().and_then(|u| u.status.clone());
            for u in pending.updates {
                self.sum.add(u, now);
            }
            let entry = TaskEntry {
                cp,
                kind,
                mem_mib,
                last_status,
                health: None,
            };
            let state = entry.state();
            let launched = entry.cp.launched;
            let kill_requested = entry.cp.kill_requested;
            let grace = entry.grace(None);
            self.tasks.insert(key.clone(), entry);
            if agora_proto::is_terminal(state) {
                if self.sum.pending(&key.0, &key.1).is_empty() {
                    self.tasks.remove(&key);
                    let _ = fs::remove_dir_all(&dir);
                }
                continue;
            }
            let Some(c) = self.containerizer(kind) else {
                self.update(
                    &key,
                    TaskState::TaskFailed,
                    Reason::AgentRestarted,
                    format!(
                        "the agent restarted without the '{}' containerizer the task ran in",
                        kind.map(|k| k.as_str()).unwrap_or("?")
                    ),
                    None,
                );
                continue;
            };
            let cid = self
                .tasks
                .get(&key)
                .map(|e| e.cp.container_id.clone())
                .unwrap_or_default();
            let found = match c.recover(&cid).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(task = %key.1, error = %e, "cannot recover container");
                    Recovered::Terminated(Termination {
                        exit_code: None,
                        oom_killed: false,
                        message: Some(format!("cannot recover the container: {e}")),
                    })
                }
            };
            info!(task = %key.1, container = %cid, ?found, "recovered task");
            match found {
                Recovered::Running => {
                    if let Some(e) = self.tasks.get_mut(&key) {
                        e.cp.launched = true;
                    }
                    if !launched || state != TaskState::TaskRunning {
                        self.update(
                            &key,
                            TaskState::TaskRunning,
                            Reason::AgentRestarted,
                            "the task is running (recovered after an agent restart)".into(),
                            None,
                        );
                    }
                    self.watch(key.clone());
                    if kill_requested {
                        self.start_kill(&key, grace);
                    } else {
                        self.start_health(&key);
                    }
                }
                Recovered::Terminated(t) => {
                    let (s, r, m) = {
                        let e = self.tasks.get(&key);
                        terminal_status(
                            &t,
                            e.and_then(TaskEntry::kill_cause),
                            e.and_then(|e| e.mem_mib),
                        )
                    };
                    self.update(
                        &key,
                        s,
                        r,
                        format!("{m} (while the agent was down)"),
                        t.exit_code,
                    );
                    self.destroy(&key);
                }
                Recovered::Missing => {
                    let (s, r, m) = if launched {
                        (
                            TaskState::TaskFailed,
                            Reason::ExecutorTerminated,
                            "the task's container disappeared while the agent was down",
                        )
                    } else {
                        (
                            TaskState::TaskFailed,
                            Reason::AgentRestarted,
                            "the agent restarted while launching the task; it never started",
                        )
                    };
                    self.update(&key, s, r, m.into(), None);
                    self.destroy(&key);
                }
            }
        }
        self.pump();
        Ok(())
    }
}

/// Creates a task's sandbox with its empty `stdout` and `stderr`. For a native task running as
/// another user, checks that the user can reach the sandbox by its absolute path (tasks, health
/// checks and executors use `$AGORA_SANDBOX`); Docker mounts it into the container instead.
///
/// # Errors
/// A message for the task's TASK_FAILED update.
fn prepare_sandbox(
    sandbox: &std::path::Path,
    user: Option<&TaskUser>,
    kind: ContainerizerKind,
) -> Result<(), String> {
    fs::create_dir_all(sandbox)
        .map_err(|e| format!("cannot create the sandbox {}: {e}", sandbox.display()))?;
    for name in ["stdout", "stderr"] {
        let p = sandbox.join(name);
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| format!("cannot create {}: {e}", p.display()))?;
    }
    if let Some(u) = user.filter(|_| kind == ContainerizerKind::Native) {
        if let Some((dir, mode, owner)) = crate::user::blocked_ancestor(sandbox, u) {
            return Err(format!(
                "user '{}' cannot reach the task's sandbox: {} (mode {mode:o}, owner uid {owner}) cannot be entered by it; make the agent's --work-dir and its parent directories searchable (chmod o+x)",
                u.name,
                dir.display()
            ));
        }
    }
    Ok(())
}

fn read_dirs(dir: &std::path::Path) -> Result<Vec<PathBuf>, AgentError> {
    match fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            v.sort();
            Ok(v)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(AgentError::io(dir, e)),
    }
}

/// Whether the task asks for a privileged Docker container.
fn privileged(task: &v1::TaskInfo) -> bool {
    task.container
        .as_ref()
        .and_then(|c| c.docker.as_ref())
        .is_some_and(|d| d.privileged)
}

#[cfg(test)]
mod tests {
    //! The actor's health-check wiring on a paused clock, with a fake containerizer whose command
    //! checks return scripted exit codes: delay, grace period from RUNNING, interval, the kill and
    //! its reason, and the checker stopping with the task. No processes, no sleeps.
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use futures::future::BoxFuture;
    use futures::FutureExt;

    use super::*;
    use crate::prober::{CheckCommand, CheckExit};

    struct Fake {
        /// Exit codes of the next command checks; 0 once empty.
        codes: Mutex<VecDeque<i32>>,
        /// When each check ran.
        checks: Mutex<Vec<tokio::time::Instant>>,
        killed: tokio::sync::Notify,
    }

    impl Containerizer for Fake {
        fn kind(&self) -> ContainerizerKind {
            ContainerizerKind::Native
        }
        fn launch<'a>(&'a self, _: &'a LaunchSpec) -> BoxFuture<'a, Result<(), ContainerError>> {
            async { Ok(()) }.boxed()
        }
        fn wait<'a>(
            &'a self,
            _: &'a str,
            _: &'a std::path::Path,
        ) -> BoxFuture<'a, Result<Termination, ContainerError>> {
            async {
                self.killed.notified().await;
                Ok(Termination {
                    exit_code: Some(143),
                    ..Default::default()
                })
            }
            .boxed()
        }
        fn kill<'a>(
            &'a self,
            _: &'a str,
            _: Duration,
        ) -> BoxFuture<'a, Result<(), ContainerError>> {
            self.killed.notify_one();
            async { Ok(()) }.boxed()
        }
        fn recover<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Recovered, ContainerError>> {
            async { Ok(Recovered::Missing) }.boxed()
        }
        fn usage<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Usage, ContainerError>> {
            async { Ok(Usage::default()) }.boxed()
        }
        fn destroy<'a>(&'a self, _: &'a str) -> BoxFuture<'a, ()> {
            async {}.boxed()
        }
        fn run_check<'a>(
            &'a self,
            _: &'a str,
            _: &'a CheckCommand,
        ) -> BoxFuture<'a, Result<CheckExit, ContainerError>> {
            self.checks
                .lock()
                .expect("lock")
                .push(tokio::time::Instant::now());
            let code = self.codes.lock().expect("lock").pop_front().unwrap_or(0);
            async move {
                Ok(CheckExit {
                    code,
                    output: String::new(),
                })
            }
            .boxed()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn delay_grace_interval_and_kill_on_a_paused_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = Arc::new(Fake {
            // pass, then fail for good
            codes: Mutex::new([0, 1, 1, 1, 1, 1, 1, 1].into()),
            checks: Mutex::new(Vec::new()),
            killed: tokio::sync::Notify::new(),
        });
        let (handle, mut outbox) = start(AgentSettings {
            work_dir: dir.path().to_path_buf(),
            hostname: "h".into(),
            containerizers: vec![fake.clone()],
            status_retry_initial: Duration::from_secs(10),
            status_retry_max: Duration::from_secs(600),
            user_policy: UserPolicy::default(),
        })
        .await
        .expect("start");
        let fw = v1::FrameworkInfo {
            id: "fw".into(),
            ..Default::default()
        };
        let task = v1::TaskInfo {
            task_id: "t".into(),
            command: Some(v1::CommandInfo {
                shell: true,
                value: "serve".into(),
                ..Default::default()
            }),
            health_check: Some(v1::HealthCheck {
                r#type: v1::health_check::Type::Command as i32,
                command: Some(v1::CommandInfo {
                    shell: true,
                    value: "check".into(),
                    ..Default::default()
                }),
                delay_seconds: 2.0,
                grace_period_seconds: 30.0,
                interval_seconds: 1.0,
                consecutive_failures: 3,
                ..Default::default()
            }),
            ..Default::default()
        };
        let t0 = tokio::time::Instant::now();
        handle.run_task(fw, task).expect("run");
        let secs = |at: tokio::time::Instant| ((at - t0).as_secs_f64() * 10.0).round() / 10.0;
        let mut seen = Vec::new();
        loop {
            let u = outbox.recv().await.expect("outbox");
            let s = u.status.expect("status");
            handle.acknowledge("fw", "t", &s.uuid).expect("ack");
            seen.push((
                s.state(),
                s.reason(),
                s.healthy,
                secs(tokio::time::Instant::now()),
            ));
            if agora_proto::is_terminal(s.state()) {
                break;
            }
        }
        use Reason as R;
        use TaskState as S;
        assert_eq!(
            seen,
            [
                (S::TaskStarting, R::Unspecified, None, 0.0),
                (S::TaskRunning, R::Unspecified, None, 0.0),
                // First check after the 2 s delay; it passes, which ends the 30 s grace period.
                (
                    S::TaskRunning,
                    R::TaskHealthCheckStatusUpdated,
                    Some(true),
                    2.0
                ),
                // So the first failure (1 s later) counts at once, and the third in a row kills.
                (
                    S::TaskRunning,
                    R::TaskHealthCheckStatusUpdated,
                    Some(false),
                    3.0
                ),
                (S::TaskKilled, R::TaskUnhealthy, Some(false), 5.0),
            ]
        );
        // No checks after the kill: the checker stopped with the task.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let checks: Vec<f64> = fake
            .checks
            .lock()
            .expect("lock")
            .iter()
            .map(|t| secs(*t))
            .collect();
        assert_eq!(checks, [2.0, 3.0, 4.0, 5.0]);
    }
}
