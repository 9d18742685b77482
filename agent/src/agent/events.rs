//! Events from the actor's jobs and the jobs that send them: a launch finished, a container ended
//! (from [`crate::containerizer::Containerizer::wait`]), a health check ended (from the checker,
//! [`crate::prober::run`]). Each becomes a status update and the next job: watch the container,
//! kill it, destroy what is left of it, or start and stop the task's health checker. Kills start
//! here too (`kill_task_because`), whether a framework asked or the health checks failed.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use agora_proto::v1::{self, Reason, TaskState};
use agora_proto::Resources;
use tracing::{debug, warn};

use super::{environment, now, now_secs, Actor, Event, HealthRun};
use crate::error::ContainerError;
use crate::health::{HealthCheckSpec, HealthTracker, Verdict};
use crate::lifecycle::terminal_status;
use crate::status_update::TaskKey;

impl Actor {
    pub(super) fn watch(&mut self, key: TaskKey) {
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

    pub(super) fn start_kill(&mut self, key: &TaskKey, grace: Duration) {
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

    /// Kills a task; `reason` and `why` (empty: "killed on request") end up on its terminal update.
    /// The first cause of a kill sticks: a framework's kill after a health kill changes nothing.
    pub(super) fn kill_task_because(
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

    pub(super) fn event(&mut self, ev: Event) {
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
    pub(super) fn start_health(&mut self, key: &TaskKey) {
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
        // The grace period runs from the task's start: the monotonic instant when this process
        // started it, else (recovered) the checkpoint's wall-clock start.
        let started = e.running_since.unwrap_or_else(|| {
            let elapsed =
                Duration::try_from_secs_f64(now_secs() - e.cp.started_at).unwrap_or(Duration::ZERO);
            now().checked_sub(elapsed).unwrap_or_else(now)
        });
        let elapsed = now().saturating_duration_since(started);
        let tracker = HealthTracker::new(spec.policy, started, e.cp.healthy);
        let ports =
            e.cp.task
                .as_ref()
                .and_then(|t| Resources::from_proto(&t.resources).ok())
                .map(|r| environment::task_ports(&r))
                .unwrap_or_default();
        let container_id = e.cp.container_id.clone();
        let target = crate::prober::Target {
            probe: spec.probe,
            timeout: spec.policy.timeout,
            containerizer,
            container_id: container_id.clone(),
            task_env: environment::task_env(&self.agent_id(), &self.hostname, key, &e.cp, &ports),
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

    pub(super) fn destroy(&mut self, key: &TaskKey) {
        let Some(e) = self.tasks.get(key) else { return };
        let Some(c) = self.containerizer(e.kind) else {
            return;
        };
        let cid = e.cp.container_id.clone();
        self.jobs.spawn(async move { c.destroy(&cid).await });
    }
}
