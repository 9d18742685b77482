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
//!
//! This module holds the actor's state, its loop and `Actor::update` (record, checkpoint, queue a
//! status update); the rest of the actor is split by what drives it:
//! - `requests`: `Command`s from the handle (run, kill, acknowledge, shut down a framework, queries);
//! - `events`: `Event`s from the actor's jobs (launched, terminated, health results) and the jobs
//!   that send them (wait, kill, destroy, the health checker);
//! - `recovery`: the agent id and the task table rebuilt from the checkpoint at start;
//! - `environment`: a task's host ports and environment variables (pure);
//! - `sandbox`: creating a task's sandbox and handing it to the task's user.
#![forbid(unsafe_code)]

mod environment;
mod events;
pub(crate) mod recovery;
mod requests;
mod sandbox;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_proto::v1::{self, Reason, TaskState};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::checkpoint::{write_message, PendingUpdates, TaskCheckpoint};
use crate::containerizer::{Containerizer, ContainerizerKind, Usage};
use crate::error::{AgentError, ContainerError};
use crate::health::HealthTracker;
use crate::lifecycle::{can_transition, Termination};
use crate::paths::Layout;
use crate::status_update::{StatusUpdateManager, TaskKey};
use crate::user::UserPolicy;

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
    /// The routing mesh's address (`--ip`), where a task's `container.host_aliases` point;
    /// `None`: the agent runs no mesh, and tasks get no aliases.
    pub mesh_ip: Option<std::net::IpAddr>,
    /// `--mesh-bridge-ip`: where bridge-network containers' host aliases point instead.
    pub mesh_bridge_ip: Option<std::net::IpAddr>,
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
    /// When this process saw the task become RUNNING (monotonic clock); `None` for a task
    /// recovered from a checkpoint, whose start is known only as wall-clock `cp.started_at`.
    running_since: Option<Instant>,
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
                .and_then(|k| {
                    crate::limits::kill_grace(
                        "task.kill_policy.grace_period_seconds",
                        k.grace_period_seconds,
                    )
                })
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
    mesh_ip: Option<std::net::IpAddr>,
    mesh_bridge_ip: Option<std::net::IpAddr>,
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
    std::fs::create_dir_all(layout.meta()).map_err(|e| AgentError::io(layout.meta(), e))?;
    let agent_id = recovery::load_agent_id(&layout)?;
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
        mesh_ip: settings.mesh_ip,
        mesh_bridge_ip: settings.mesh_bridge_ip,
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
            e.running_since = Some(now());
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
    use crate::containerizer::{LaunchSpec, Recovered};
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
            mesh_ip: None,
            mesh_bridge_ip: None,
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
