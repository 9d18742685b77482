//! Tasks: kill, executor shutdown, acknowledgements, reconciliation and framework messages.

use agora_proto::v1::{self, master_message, TaskState};

use super::{limits, state_of, status, update_event, AgentStatus, Bookkeeping, Clock};
use crate::error::MasterError;

impl Bookkeeping {
    /// Asks the task's agent to kill it. A task with endpoints drains first (see
    /// [`crate::drain`]): it leaves the endpoint table now, and the kill goes to its agent once
    /// every connected agent has acknowledged that, at the latest after `--drain-period`. A kill
    /// of a task already draining is not sent twice.
    ///
    /// # Errors
    /// Header errors; [`MasterError::NotFound`] for a task the master does not know;
    /// [`MasterError::InvalidArgument`] for an agent id that is not the task's.
    pub fn kill(&mut self, req: v1::KillRequest, clock: &Clock) -> Result<(), MasterError> {
        let framework_id = self.check_header(req.header.as_ref())?;
        // The agent turns the grace period into a Duration: bound it here, not there.
        limits::kill_policy("kill_policy", req.kill_policy.as_ref())?;
        let key = (framework_id.clone(), req.task_id.clone());
        let Some(entry) = self.tasks.get(&key) else {
            return Err(MasterError::not_found_hint(
                "task",
                &req.task_id,
                "it has ended or was never launched; reconcile to learn its last state",
            ));
        };
        if !req.agent_id.is_empty() && req.agent_id != entry.task.agent_id {
            return Err(MasterError::invalid(
                "agent_id",
                format!(
                    "task '{}' runs on agent '{}', not '{}'",
                    req.task_id, entry.task.agent_id, req.agent_id
                ),
            ));
        }
        if self.drains.is_draining(&key) {
            // Its kill is already held: it goes out when the drain ends.
            return Ok(());
        }
        let agent_id = entry.task.agent_id.clone();
        let policy = req.kill_policy.or(entry.task.kill_policy);
        let reachable = self
            .agents
            .get(&agent_id)
            .is_some_and(|a| a.status == AgentStatus::Active);
        if !reachable {
            return Err(MasterError::FailedPrecondition(format!(
                "task '{}' is on agent '{agent_id}', which is unreachable: the kill is sent when it \
                 re-registers; retry then",
                req.task_id
            )));
        }
        if state_of(&entry.task) == TaskState::TaskStaging {
            // The agent may not have it yet; the kill follows the launch on the same stream.
            let _ = clock;
        }
        let kill = master_message::KillTask {
            framework_id,
            task_id: req.task_id,
            kill_policy: policy,
        };
        self.kill_or_drain(key, agent_id, kill, clock);
        Ok(())
    }

    /// Holds `kill` while the task drains if it has endpoints (and draining is on); sends it now
    /// otherwise.
    pub(super) fn kill_or_drain(
        &mut self,
        key: super::TaskKey,
        agent_id: String,
        kill: master_message::KillTask,
        clock: &Clock,
    ) {
        let period = self.settings.drain_period;
        if !period.is_zero() && !self.drains.is_draining(&key) {
            if self.has_endpoints(&key) {
                let held = crate::drain::HeldKill {
                    agent_id: agent_id.clone(),
                    kill: kill.clone(),
                };
                if self.drains.start(key.clone(), held, clock.now, period) {
                    self.counters.drains_started += 1;
                    self.touch_endpoints(&key);
                    return;
                }
                tracing::warn!(
                    task = %key.1,
                    max = crate::drain::MAX_DRAINING,
                    "too many tasks draining: killed without a drain"
                );
            }
        } else if self.drains.is_draining(&key) {
            return;
        }
        self.to_agent(&agent_id, master_message::Message::KillTask(kill));
    }

    /// Shuts a custom executor down.
    ///
    /// # Errors
    /// Header errors; an unknown agent.
    pub fn shutdown_executor(&mut self, req: v1::ShutdownRequest) -> Result<(), MasterError> {
        let framework_id = self.check_header(req.header.as_ref())?;
        if !self.agents.contains_key(&req.agent_id) {
            return Err(MasterError::not_found("agent", &req.agent_id));
        }
        if req.executor_id.is_empty() {
            return Err(MasterError::invalid("executor_id", "must not be empty"));
        }
        self.to_agent(
            &req.agent_id,
            master_message::Message::ShutdownExecutor(master_message::ShutdownExecutor {
                framework_id,
                executor_id: req.executor_id,
            }),
        );
        Ok(())
    }

    /// Relays an acknowledgement to the agent, which then stops resending the update.
    ///
    /// # Errors
    /// Header errors; an unknown agent; an empty uuid.
    pub fn acknowledge(
        &mut self,
        req: v1::AcknowledgeRequest,
        clock: &Clock,
    ) -> Result<(), MasterError> {
        let framework_id = self.check_header(req.header.as_ref())?;
        if req.uuid.is_empty() {
            return Err(MasterError::invalid(
                "uuid",
                "must not be empty: updates without a uuid need no acknowledgement",
            ));
        }
        if !self.agents.contains_key(&req.agent_id) {
            return Err(MasterError::not_found("agent", &req.agent_id));
        }
        if let Some(arrived) = self.awaiting_ack.remove(&req.uuid) {
            self.round_trips
                .push(clock.now.saturating_duration_since(arrived));
        }
        self.to_agent(
            &req.agent_id,
            master_message::Message::AcknowledgeUpdate(master_message::AcknowledgeUpdate {
                framework_id,
                task_id: req.task_id,
                uuid: req.uuid,
            }),
        );
        Ok(())
    }

    /// Sends the latest known state of tasks as UPDATE events (reason RECONCILIATION, no uuid).
    ///
    /// # Errors
    /// Header errors.
    pub fn reconcile(
        &mut self,
        req: v1::ReconcileRequest,
        clock: &Clock,
    ) -> Result<(), MasterError> {
        let framework_id = self.check_header(req.header.as_ref())?;
        let mut answers = Vec::new();
        let latest = |entry: &v1::Task| {
            let mut st = entry.status.clone().unwrap_or_else(|| {
                status(
                    &entry.task_id,
                    &entry.agent_id,
                    state_of(entry),
                    v1::Reason::Reconciliation,
                    "",
                    clock.wall,
                )
            });
            st.state = entry.state;
            st.uuid.clear();
            st.reason = v1::Reason::Reconciliation as i32;
            st.timestamp = clock.wall;
            st
        };
        if req.tasks.is_empty() {
            let fw = &self.frameworks[&framework_id];
            for task_id in &fw.tasks {
                if let Some(e) = self.tasks.get(&(framework_id.clone(), task_id.clone())) {
                    answers.push(latest(&e.task));
                }
            }
        } else {
            for r in &req.tasks {
                let key = (framework_id.clone(), r.task_id.clone());
                if let Some(e) = self.tasks.get(&key) {
                    answers.push(latest(&e.task));
                } else if let Some(done) = self
                    .completed
                    .iter()
                    .find(|t| t.framework_id == framework_id && t.task_id == r.task_id)
                {
                    answers.push(latest(done));
                } else if self.awaiting_reregistration(&r.agent_id) {
                    // A new leader whose registry lists the agent, which has not re-registered
                    // yet: it may still bring the task. Answering UNKNOWN would make the framework
                    // relaunch a task that is running; as in Mesos, nothing is answered and the
                    // agent's re-registration (or a later reconciliation) tells.
                    continue;
                } else {
                    let unreachable = self
                        .agents
                        .get(&r.agent_id)
                        .is_some_and(|a| matches!(a.status, AgentStatus::Unreachable { .. }))
                        || self
                            .registry
                            .agents
                            .get(&r.agent_id)
                            .is_some_and(|a| a.unreachable_since.is_some());
                    let state = if unreachable {
                        TaskState::TaskUnreachable
                    } else {
                        TaskState::TaskUnknown
                    };
                    answers.push(status(
                        &r.task_id,
                        &r.agent_id,
                        state,
                        v1::Reason::Reconciliation,
                        format!("the master knows no task '{}' of this framework", r.task_id),
                        clock.wall,
                    ));
                }
            }
        }
        for st in answers {
            self.to_framework(&framework_id, update_event(st));
        }
        Ok(())
    }

    /// Whether this leader still waits for `agent_id` (any agent, when empty) to re-register
    /// after taking over.
    fn awaiting_reregistration(&self, agent_id: &str) -> bool {
        match &self.recovering {
            Some((expected, _)) if agent_id.is_empty() => !expected.is_empty(),
            Some((expected, _)) => expected.contains(agent_id),
            None => false,
        }
    }

    /// Relays opaque data to an executor.
    ///
    /// # Errors
    /// Header errors; an unknown agent.
    pub fn message(&mut self, req: v1::MessageRequest) -> Result<(), MasterError> {
        let framework_id = self.check_header(req.header.as_ref())?;
        if !self.agents.contains_key(&req.agent_id) {
            return Err(MasterError::not_found("agent", &req.agent_id));
        }
        self.to_agent(
            &req.agent_id,
            master_message::Message::FrameworkMessage(master_message::FrameworkToExecutor {
                framework_id,
                executor_id: req.executor_id,
                data: req.data,
            }),
        );
        Ok(())
    }
}
