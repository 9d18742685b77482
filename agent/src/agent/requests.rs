//! Requests to the actor (the [`Command`]s an [`super::AgentHandle`] sends, mostly on the master's
//! behalf): run a task (validate it, checkpoint it, prepare its sandbox, start the launch job), kill
//! one or all of a framework's tasks, acknowledge status updates, and answer queries (tasks,
//! frameworks, container statistics) and the agent id a master assigns.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use agora_proto::v1::{self, Reason, TaskState};
use agora_proto::{ResourceError, Resources};
use tracing::{debug, warn};

use super::{environment, now, sandbox, Actor, Command, ContainerStatistics, Event, TaskEntry};
use crate::checkpoint::{write_atomic, TaskCheckpoint};
use crate::containerizer::{ContainerizerKind, HostAliases, LaunchSpec};
use crate::health::HealthCheckSpec;
use crate::status_update::{Ack, TaskKey};
use crate::user::{TaskUser, UserError};

impl Actor {
    pub(super) fn command(&mut self, cmd: Command) {
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
                running_since: None,
            },
        );
        // Checkpoint before acting; a leftover checkpoint of an earlier task with this id is replaced.
        let _ = fs::remove_file(self.layout.task_meta(&key.0, &key.1).join("updates.pb"));
        self.checkpoint_task(&key);

        let problem = self.refusal(&task, kind, executor_problem, &resources, &user);
        if let Some((state, reason, msg)) = problem {
            self.update(&key, state, reason, msg, None);
            return;
        }
        let Ok(resources) = resources else { return };
        let Ok(user) = user else { return };
        if let Err(msg) = sandbox::prepare(&sandbox, user.as_ref(), kind) {
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
        let ports = environment::task_ports(&resources);
        let mut env = match self.tasks.get(&key) {
            Some(e) => environment::task_env(&self.agent_id(), &self.hostname, &key, &e.cp, &ports),
            None => return,
        };
        if original.is_some() {
            env.insert(
                "AGORA_TASK_INFO_FILE".into(),
                sandbox.join("task.pb").display().to_string(),
            );
        }
        let cpus = Some(resources.scalar_total("cpus")).filter(|c| *c > 0.0);
        let host_aliases = self.host_aliases(&key, &task);
        let spec = LaunchSpec {
            container_id: container_id.clone(),
            agent_id: self.agent_id(),
            framework_id: key.0.clone(),
            executor_id,
            task,
            sandbox,
            work_dir: self.layout.work_dir().to_path_buf(),
            cpus,
            mem_mib,
            ports,
            env,
            user,
            host_aliases,
        };
        let Some(c) = self.containerizer(Some(kind)) else {
            return;
        };
        let events = self.events.clone();
        self.jobs.spawn(async move {
            let result = async {
                sandbox::fetch_into(&spec).await?;
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

    /// The names the task resolves to this agent's routing mesh (its `container.host_aliases`,
    /// already bounded by [`Self::refusal`]); none, logged, when the agent runs no mesh.
    fn host_aliases(&self, key: &TaskKey, task: &v1::TaskInfo) -> Option<HostAliases> {
        let names = task
            .container
            .as_ref()
            .map(|c| c.host_aliases.clone())
            .filter(|n| !n.is_empty())?;
        match self.mesh_ip {
            Some(ip) => Some(HostAliases {
                names,
                ip,
                bridge_ip: self.mesh_bridge_ip,
            }),
            None => {
                warn!(framework = %key.0, task = %key.1, aliases = ?names, "the task asks for host aliases to the routing mesh, but this agent runs no mesh (--mesh=false): it gets none, so those names will not resolve in it");
                None
            }
        }
    }

    /// Why a task cannot be launched, as its TASK_ERROR or TASK_FAILED update (the first problem
    /// found, in this order); `None` when it can be.
    fn refusal(
        &self,
        task: &v1::TaskInfo,
        kind: ContainerizerKind,
        executor_problem: Option<String>,
        resources: &Result<Resources, ResourceError>,
        user: &Result<Option<TaskUser>, UserError>,
    ) -> Option<(TaskState, Reason, String)> {
        let invalid = |msg: String| (TaskState::TaskError, Reason::TaskInvalid, msg);
        if let Some(e) = executor_problem {
            Some(invalid(e))
        } else if self.containerizer(Some(kind)).is_none() {
            Some(invalid(format!("the task needs the {} containerizer, which is not enabled on this agent (--containerizers)", kind.as_str())))
        } else if let Err(e) = resources {
            Some(invalid(format!("invalid resources: {e}")))
        } else if let Some(Err((field, why))) = task
            .container
            .as_ref()
            .map(|c| agora_proto::host_aliases::check(&c.host_aliases))
        {
            Some(invalid(format!("container.{field}: {why}")))
        } else if let Some(Err(e)) = task.health_check.as_ref().map(HealthCheckSpec::from_proto) {
            Some(invalid(e.to_string()))
        } else if privileged(task) && !self.user_policy.allow_root {
            Some((
                TaskState::TaskError,
                Reason::TaskUnauthorized,
                "container.docker.privileged: a privileged container holds the host's root powers \
                 and this agent refuses root tasks: start the agent with --allow-root-tasks to allow them"
                    .to_string(),
            ))
        } else if let Err(e) = user {
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
        }
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

    fn kill_task(&mut self, key: &TaskKey, grace: Option<Duration>) {
        self.kill_task_because(key, grace, Reason::KillRequested, String::new());
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
}

/// Whether the task asks for a privileged Docker container.
fn privileged(task: &v1::TaskInfo) -> bool {
    task.container
        .as_ref()
        .and_then(|c| c.docker.as_ref())
        .is_some_and(|d| d.privileged)
}
