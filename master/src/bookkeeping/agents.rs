//! Agents: registration and re-registration (with the tasks and frameworks they bring
//! back), heartbeats and messages, status updates, draining, and unreachable or gone agents.

use std::collections::HashSet;
use std::time::Duration;

use agora_proto::v1::{self, agent_message, event, master_message, TaskState};
use agora_proto::{is_terminal, Resources};

use super::{
    limits, state_of, status, update_event, Agent, AgentStatus, Bookkeeping, Clock, Framework,
    Outbound, TaskEntry, TaskKey, MAX_TIMED_UPDATES,
};
use crate::error::MasterError;
use crate::registry::AgentRecord;
use agora_net::http_auth::constant_time_eq;

impl Bookkeeping {
    fn validate_agent_info(
        info: Option<v1::AgentInfo>,
    ) -> Result<(v1::AgentInfo, Resources), MasterError> {
        let info = info.ok_or_else(|| MasterError::invalid("agent_info", "is required"))?;
        if info.hostname.trim().is_empty() {
            return Err(MasterError::invalid(
                "agent_info.hostname",
                "must not be empty",
            ));
        }
        let total = Resources::from_proto(&info.resources)
            .map_err(|e| MasterError::invalid("agent_info.resources", e.to_string()))?;
        if total.is_empty() {
            return Err(MasterError::invalid(
                "agent_info.resources",
                "are empty: an agent must offer at least cpus or mem",
            ));
        }
        Ok((info, total))
    }

    /// The answer to a (re-)registration, with a new session token (128 bits from the OS's
    /// generator: unguessable, unlike the seeded shuffles of the core); the previous token of
    /// the agent stops working.
    fn response(&mut self, agent_id: &str) -> v1::RegisterAgentResponse {
        let token = format!("{:032x}", rand::random::<u128>());
        self.session_tokens
            .insert(agent_id.to_string(), token.clone());
        v1::RegisterAgentResponse {
            agent_id: agent_id.to_string(),
            master_info: Some(self.settings.master_info.clone()),
            heartbeat_interval_seconds: self.settings.agent_heartbeat().as_secs_f64(),
            session_token: token,
        }
    }

    /// Refuses a session whose `hello` does not carry the token of the agent's latest
    /// registration (compared in constant time).
    ///
    /// # Errors
    /// [`MasterError::PermissionDenied`] saying what to do.
    pub fn check_session_token(&self, agent_id: &str, token: &str) -> Result<(), MasterError> {
        match self.session_tokens.get(agent_id) {
            Some(expected)
                if agora_net::http_auth::constant_time_eq(
                    expected.as_bytes(),
                    token.as_bytes(),
                ) =>
            {
                Ok(())
            }
            _ => Err(MasterError::PermissionDenied(format!(
                "agent '{agent_id}': the session's token is not the one of its latest \
                 registration: register (or re-register) first and present its session_token"
            ))),
        }
    }

    /// Requires agents to present `token` when they register (`None`: anyone may join). Agents
    /// already admitted re-register without it, so rotating the token does not cut them off.
    pub fn set_join_token(&mut self, token: Option<String>) {
        self.join_token = token.filter(|t| !t.is_empty());
    }

    fn check_join_token(&self, given: &str) -> Result<(), MasterError> {
        match &self.join_token {
            Some(expected) if !constant_time_eq(expected.as_bytes(), given.as_bytes()) => {
                Err(MasterError::PermissionDenied(if given.is_empty() {
                    "join token rejected: this cluster requires one; give the agent \
                     --join-token-file FILE or AGORA_JOIN_TOKEN (print it with `agora master token`)"
                        .into()
                } else {
                    "join token rejected: it is not this cluster's current token (was it \
                     rotated?); print it with `agora master token`"
                        .into()
                }))
            }
            _ => Ok(()),
        }
    }

    /// A new agent: assigns its id and adds its resources to the allocator.
    ///
    /// # Errors
    /// [`MasterError::InvalidArgument`] for a missing hostname or bad resources.
    pub fn register_agent(
        &mut self,
        req: v1::RegisterAgentRequest,
        clock: &Clock,
    ) -> Result<v1::RegisterAgentResponse, MasterError> {
        self.check_join_token(&req.join_token)?;
        let (info, total) = Self::validate_agent_info(req.agent_info)?;
        self.next_agent += 1;
        let id = format!("{}-S{}", self.master_id(), self.next_agent);
        self.admit_agent(&id, info, total, clock);
        Ok(self.response(&id))
    }

    fn admit_agent(&mut self, id: &str, info: v1::AgentInfo, mut total: Resources, clock: &Clock) {
        if let Some((expected, _)) = self.recovering.as_mut() {
            expected.remove(id);
        }
        let record = self.registry.agents.get(id).cloned().unwrap_or_default();
        if !record.reservations.is_empty() {
            if let Ok(reserved) = Resources::parse(&record.reservations) {
                total.subtract(&reserved.flatten());
                total.add(&reserved);
            }
        }
        let draining = record.draining;
        // Known ids are re-added below with their tasks; a fresh entry never collides.
        let _ = self.allocator.add_agent(id, total.clone());
        if draining {
            let _ = self.allocator.set_draining(id, true);
        }
        self.registry.agents.insert(
            id.to_string(),
            AgentRecord {
                hostname: info.hostname.clone(),
                unreachable_since: None,
                draining,
                reservations: record.reservations,
            },
        );
        self.registry_dirty = true;
        self.agents.insert(
            id.to_string(),
            Agent {
                info,
                total,
                status: AgentStatus::Active,
                connected: false,
                last_seen: clock.now,
                registered_time: clock.wall,
                draining,
                tasks: HashSet::new(),
                offers: HashSet::new(),
                usage: Vec::new(),
            },
        );
        self.counters.agents_registered += 1;
    }

    /// An agent that was registered before (it restarted, the master restarted, or it was
    /// unreachable) comes back with the tasks it runs.
    ///
    /// # Errors
    /// [`MasterError::FailedPrecondition`] for an agent marked gone; invalid agent info.
    pub fn reregister_agent(
        &mut self,
        req: v1::ReregisterAgentRequest,
        clock: &Clock,
    ) -> Result<v1::RegisterAgentResponse, MasterError> {
        let id = req.agent_id.clone();
        if id.is_empty() {
            return Err(MasterError::invalid("agent_id", "must not be empty"));
        }
        if self.registry.gone_agents.contains(&id) {
            return Err(MasterError::FailedPrecondition(format!(
                "agent '{id}' was marked gone and may not re-register; remove its work dir's \
                 meta/registered file to register as a new agent"
            )));
        }
        if !self.registry.agents.contains_key(&id) && !self.agents.contains_key(&id) {
            // Not admitted before (or the registry was lost): it must prove it may join.
            self.check_join_token(&req.join_token)?;
        }
        let (info, total) = Self::validate_agent_info(req.agent_info)?;
        // Forget the old view of the agent (its allocator entry and offers); keep its task records
        // to compare with what it reports.
        let mut previous_tasks = HashSet::new();
        if let Some((tasks, offers, status)) = self
            .agents
            .get(&id)
            .map(|a| (a.tasks.clone(), a.offers.clone(), a.status))
        {
            previous_tasks = tasks;
            for o in offers {
                self.rescind(&o, false);
            }
            if status == AgentStatus::Active {
                let _ = self.allocator.remove_agent(&id);
            }
            for key in &previous_tasks {
                if let Some(t) = self.tasks.get_mut(key) {
                    t.allocated = false;
                }
            }
            self.agents.remove(&id);
        }
        self.admit_agent(&id, info, total, clock);

        for fw in req.frameworks {
            if fw.id.is_empty() || self.frameworks.contains_key(&fw.id) {
                continue;
            }
            if self.removed_frameworks.contains(&fw.id) {
                continue;
            }
            self.recover_framework(fw, clock);
        }

        let mut reported = HashSet::new();
        for mut task in req.tasks {
            limits::bound_reported_task(&mut task);
            let key = (task.framework_id.clone(), task.task_id.clone());
            if self.removed_frameworks.contains(&task.framework_id) {
                self.to_agent(
                    &id,
                    master_message::Message::ShutdownFramework(master_message::ShutdownFramework {
                        framework_id: task.framework_id.clone(),
                    }),
                );
                continue;
            }
            reported.insert(key.clone());
            if is_terminal(state_of(&task)) {
                self.ended_while_away(&id, task);
                continue;
            }
            self.adopt_task(&id, task, clock);
        }
        // Tasks the master sent to this agent but the agent does not have: they never arrived.
        for key in previous_tasks.difference(&reported) {
            let Some(entry) = self.tasks.get(key) else {
                continue;
            };
            if is_terminal(state_of(&entry.task)) {
                continue;
            }
            let state = if state_of(&entry.task) == TaskState::TaskStaging {
                TaskState::TaskDropped
            } else {
                TaskState::TaskLost
            };
            let st = status(
                &key.1,
                &id,
                state,
                v1::Reason::AgentRestarted,
                format!("agent '{id}' re-registered without this task: it is not running"),
                clock.wall,
            );
            self.apply_status(&key.0, st, clock, true);
        }
        Ok(self.response(&id))
    }

    /// A task an agent reports as ended (its update not acknowledged yet: it ended while no master
    /// was listening). It is recorded as ended, not treated as missing (TASK_LOST) nor forgotten
    /// (reconciliation would answer TASK_UNKNOWN): frameworks take both as "relaunch it", which
    /// would run a finished batch job twice. The update itself reaches the framework when the
    /// agent resends it.
    fn ended_while_away(&mut self, agent_id: &str, mut task: v1::Task) {
        let key = (task.framework_id.clone(), task.task_id.clone());
        task.agent_id = agent_id.to_string();
        if let Some(entry) = self.tasks.get_mut(&key) {
            entry.task.state = task.state;
            entry.task.status = task.status;
            self.finish_task(&key);
        } else if !self
            .completed
            .iter()
            .any(|t| t.framework_id == key.0 && t.task_id == key.1)
        {
            self.completed.push_front(task);
            self.completed.truncate(self.settings.completed_tasks_kept);
        }
    }

    /// A framework known only from an agent's report, waiting for the framework to re-subscribe.
    fn recover_framework(&mut self, info: v1::FrameworkInfo, clock: &Clock) {
        let roles = if info.roles.is_empty() {
            vec!["*".to_string()]
        } else {
            info.roles.clone()
        };
        if self.allocator.add_framework(&info.id, &roles).is_err() {
            return;
        }
        let _ = self.allocator.deactivate_framework(&info.id);
        // Reported by an agent, not validated by a subscribe: NaN or 1e300 must not panic.
        let timeout = limits::clamped_duration(
            info.failover_timeout_seconds,
            Duration::from_secs(1_000_000_000),
        )
        .max(self.settings.framework_recovery_timeout);
        let mut info = info;
        info.roles = roles;
        self.frameworks.insert(
            info.id.clone(),
            Framework {
                info,
                connected: false,
                stream_id: String::new(),
                failover_deadline: Some(limits::later(clock.now, timeout)),
                registered_time: clock.wall,
                offers: HashSet::new(),
                tasks: HashSet::new(),
                suppressed: HashSet::new(),
            },
        );
    }

    /// Takes a task an agent reports into the master's records and the allocator.
    fn adopt_task(&mut self, agent_id: &str, mut task: v1::Task, clock: &Clock) {
        let key = (task.framework_id.clone(), task.task_id.clone());
        let Ok(resources) = Resources::from_proto(&task.resources) else {
            return;
        };
        task.agent_id = agent_id.to_string();
        let role = self
            .tasks
            .get(&key)
            .map(|t| t.role.clone())
            .or_else(|| {
                self.frameworks
                    .get(&task.framework_id)
                    .and_then(|f| f.info.roles.first().cloned())
            })
            .unwrap_or_else(|| "*".to_string());
        let was_unreachable = self
            .tasks
            .get(&key)
            .is_some_and(|t| state_of(&t.task) == TaskState::TaskUnreachable);
        let allocated = self
            .allocator
            .allocate_used(agent_id, &task.framework_id, &role, &resources)
            .is_ok();
        if was_unreachable {
            // The framework was told the task was unreachable: tell it the task is back.
            // The agent's own latest status when it sent one, else its state as it reports it.
            let mut st = task.status.clone().unwrap_or_else(|| v1::TaskStatus {
                task_id: task.task_id.clone(),
                agent_id: agent_id.to_string(),
                source: v1::StatusSource::SourceMaster as i32,
                ..Default::default()
            });
            st.state = task.state;
            st.uuid.clear();
            st.reason = v1::Reason::Reconciliation as i32;
            st.message = format!("agent '{agent_id}' re-registered: the task is back");
            st.timestamp = clock.wall;
            self.to_framework(&task.framework_id.clone(), update_event(st));
        }
        if let Some(f) = self.frameworks.get_mut(&task.framework_id) {
            f.tasks.insert(task.task_id.clone());
        }
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.tasks.insert(key.clone());
        }
        self.touch_endpoints(&key);
        self.tasks.insert(
            key,
            TaskEntry {
                task,
                role,
                resources,
                allocated,
            },
        );
    }

    /// The agent opened its session stream (its `Hello`).
    ///
    /// # Errors
    /// [`MasterError::NotFound`] if it has not (re-)registered with this master.
    pub fn agent_connected(&mut self, agent_id: &str, clock: &Clock) -> Result<(), MasterError> {
        let agent = self.agents.get_mut(agent_id).ok_or_else(|| {
            MasterError::not_found_hint(
                "agent",
                agent_id,
                "call Register or Reregister before opening a session",
            )
        })?;
        if agent.status != AgentStatus::Active {
            return Err(MasterError::FailedPrecondition(format!(
                "agent '{agent_id}' was marked unreachable: call Reregister with its tasks first"
            )));
        }
        agent.connected = true;
        agent.last_seen = clock.now;
        self.send_full_endpoints(agent_id);
        Ok(())
    }

    /// The agent's session stream ended. It stays registered until its timeout.
    pub fn agent_disconnected(&mut self, agent_id: &str, clock: &Clock) {
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.connected = false;
        }
        // No more updates reach it: drains wait for it no more (a new session gets the table
        // without the draining tasks).
        self.drains.agent_left(agent_id, clock.now);
    }

    /// A message on an agent's session stream.
    pub fn agent_message(
        &mut self,
        agent_id: &str,
        message: agent_message::Message,
        clock: &Clock,
    ) {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        if agent.status != AgentStatus::Active {
            // It was marked unreachable while its stream stayed open (a freeze, a partition):
            // end the session so that it re-registers and its tasks are reconciled.
            self.outbound.push(Outbound::CloseAgent {
                agent_id: agent_id.to_string(),
            });
            return;
        }
        agent.last_seen = clock.now;
        match message {
            agent_message::Message::Hello(_) => {}
            agent_message::Message::EndpointAck(a) => self.drains.ack(agent_id, a.seq, clock.now),
            agent_message::Message::Heartbeat(h) => agent.usage = h.usage,
            agent_message::Message::StatusUpdate(u) => {
                if let Some(mut st) = u.status {
                    st.agent_id = agent_id.to_string();
                    // An agent retries an update until acknowledged: keep a few KiB of it.
                    limits::bound_status(&mut st);
                    self.counters.status_updates += 1;
                    self.agent_status_update(agent_id, &u.framework_id, st, clock);
                }
            }
            agent_message::Message::ExecutorMessage(m) => {
                let ev = v1::Event {
                    event: Some(event::Event::Message(event::Message {
                        agent_id: agent_id.to_string(),
                        executor_id: m.executor_id,
                        data: m.data,
                    })),
                };
                self.to_framework(&m.framework_id, ev);
            }
            agent_message::Message::ExecutorExited(e) => {
                let ev = v1::Event {
                    event: Some(event::Event::Failure(event::Failure {
                        agent_id: agent_id.to_string(),
                        executor_id: e.executor_id,
                        status: Some(e.status),
                    })),
                };
                self.to_framework(&e.framework_id, ev);
            }
        }
    }

    fn agent_status_update(
        &mut self,
        agent_id: &str,
        framework_id: &str,
        st: v1::TaskStatus,
        clock: &Clock,
    ) {
        if self.removed_frameworks.contains(framework_id) {
            // Nobody will acknowledge it: stop the agent resending, and stop the framework's tasks.
            self.to_agent(
                agent_id,
                master_message::Message::AcknowledgeUpdate(master_message::AcknowledgeUpdate {
                    framework_id: framework_id.to_string(),
                    task_id: st.task_id.clone(),
                    uuid: st.uuid.clone(),
                }),
            );
            self.to_agent(
                agent_id,
                master_message::Message::ShutdownFramework(master_message::ShutdownFramework {
                    framework_id: framework_id.to_string(),
                }),
            );
            return;
        }
        if !st.uuid.is_empty() && self.awaiting_ack.len() < MAX_TIMED_UPDATES {
            self.awaiting_ack.insert(st.uuid.clone(), clock.now);
        }
        self.apply_status(framework_id, st, clock, false);
    }

    /// Records a task's new status, frees its resources when it ends, and forwards the update.
    fn apply_status(
        &mut self,
        framework_id: &str,
        st: v1::TaskStatus,
        clock: &Clock,
        from_master: bool,
    ) {
        let key = (framework_id.to_string(), st.task_id.clone());
        let new_state = TaskState::try_from(st.state).unwrap_or(TaskState::Unspecified);
        if let Some(entry) = self.tasks.get_mut(&key) {
            let old_state = state_of(&entry.task);
            if !is_terminal(old_state) {
                entry.task.state = st.state;
                if new_state == TaskState::TaskRunning && entry.task.started_at == 0.0 {
                    entry.task.started_at = if st.timestamp > 0.0 {
                        st.timestamp
                    } else {
                        clock.wall
                    };
                }
            }
            entry.task.status = Some(st.clone());
            self.endpoints_dirty.insert(key.clone());
            if !is_terminal(old_state) && is_terminal(new_state) {
                self.finish_task(&key);
            }
        }
        let _ = from_master;
        self.to_framework(framework_id, update_event(st));
    }

    /// Frees a terminal task's resources and moves it to the completed list.
    pub(super) fn finish_task(&mut self, key: &TaskKey) {
        let Some(entry) = self.tasks.remove(key) else {
            return;
        };
        // Ended while draining: reported as any end, and no kill follows.
        self.drains.finished(key);
        self.touch_endpoints(key);
        let agent_id = entry.task.agent_id.clone();
        if entry.allocated {
            let _ = self
                .allocator
                .recover(&agent_id, &key.0, &entry.role, &entry.resources);
        }
        if let Some(a) = self.agents.get_mut(&agent_id) {
            a.tasks.remove(key);
        }
        if let Some(f) = self.frameworks.get_mut(&key.0) {
            f.tasks.remove(&key.1);
        }
        self.completed.push_front(entry.task);
        self.completed.truncate(self.settings.completed_tasks_kept);
    }

    /// Maintenance: no new offers on the agent; its tasks are killed with their grace period
    /// (or `grace` for all of them).
    ///
    /// # Errors
    /// [`MasterError::NotFound`].
    pub fn drain_agent(
        &mut self,
        agent_id: &str,
        grace: Option<f64>,
        clock: &Clock,
    ) -> Result<(), MasterError> {
        if let Some(g) = grace {
            limits::seconds("grace_period_seconds", g, limits::MAX_KILL_GRACE_SECONDS)?;
        }
        let agent = self
            .agents
            .get_mut(agent_id)
            .ok_or_else(|| MasterError::not_found("agent", agent_id))?;
        agent.draining = true;
        let offers: Vec<String> = agent.offers.iter().cloned().collect();
        let tasks: Vec<TaskKey> = agent.tasks.iter().cloned().collect();
        let _ = self.allocator.set_draining(agent_id, true);
        if let Some(r) = self.registry.agents.get_mut(agent_id) {
            r.draining = true;
            self.registry_dirty = true;
        }
        for o in offers {
            self.rescind(&o, true);
        }
        for key in tasks {
            let policy = match grace {
                Some(g) => Some(v1::KillPolicy {
                    grace_period_seconds: g,
                }),
                None => self.tasks.get(&key).and_then(|t| t.task.kill_policy),
            };
            // Its tasks leave the other agents' tables before they are stopped, as any kill.
            let kill = master_message::KillTask {
                framework_id: key.0.clone(),
                task_id: key.1.clone(),
                kill_policy: policy,
            };
            self.kill_or_drain(key, agent_id.to_string(), kill, clock);
        }
        Ok(())
    }

    /// Ends maintenance on an agent.
    ///
    /// # Errors
    /// [`MasterError::NotFound`].
    pub fn reactivate_agent(&mut self, agent_id: &str) -> Result<(), MasterError> {
        let agent = self
            .agents
            .get_mut(agent_id)
            .ok_or_else(|| MasterError::not_found("agent", agent_id))?;
        agent.draining = false;
        let _ = self.allocator.set_draining(agent_id, false);
        if let Some(r) = self.registry.agents.get_mut(agent_id) {
            r.draining = false;
            self.registry_dirty = true;
        }
        Ok(())
    }

    /// Declares an agent gone for good (operator call, or unreachable past its gone timeout).
    ///
    /// # Errors
    /// [`MasterError::NotFound`].
    pub fn mark_agent_gone(&mut self, agent_id: &str, clock: &Clock) -> Result<(), MasterError> {
        let agent = self
            .agents
            .remove(agent_id)
            .ok_or_else(|| MasterError::not_found("agent", agent_id))?;
        self.drains.agent_left(agent_id, clock.now);
        for o in &agent.offers {
            self.rescind(o, false);
        }
        if agent.status == AgentStatus::Active {
            let _ = self.allocator.remove_agent(agent_id);
        }
        for key in &agent.tasks {
            if let Some(t) = self.tasks.get_mut(key) {
                t.allocated = false;
            }
            let aware = self
                .frameworks
                .get(&key.0)
                .is_some_and(|f| f.partition_aware());
            let state = if aware {
                TaskState::TaskGone
            } else {
                TaskState::TaskLost
            };
            let st = status(
                &key.1,
                agent_id,
                state,
                v1::Reason::AgentRemoved,
                format!("agent '{agent_id}' is gone: the task is not running"),
                clock.wall,
            );
            self.apply_status(&key.0, st, clock, true);
        }
        self.registry.mark_gone(agent_id);
        self.registry_dirty = true;
        self.to_agent(
            agent_id,
            master_message::Message::Shutdown(master_message::Shutdown {
                message: format!("agent '{agent_id}' was marked gone by the master"),
            }),
        );
        self.outbound.push(Outbound::CloseAgent {
            agent_id: agent_id.to_string(),
        });
        Ok(())
    }

    pub(super) fn mark_agent_unreachable(&mut self, agent_id: &str, clock: &Clock) {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        if agent.status != AgentStatus::Active {
            return;
        }
        agent.status = AgentStatus::Unreachable { since: clock.now };
        agent.connected = false;
        self.drains.agent_left(agent_id, clock.now);
        let offers: Vec<String> = agent.offers.iter().cloned().collect();
        let tasks: Vec<TaskKey> = agent.tasks.iter().cloned().collect();
        for o in offers {
            self.rescind(&o, false);
        }
        let _ = self.allocator.remove_agent(agent_id);
        self.counters.agents_unreachable += 1;
        for key in tasks {
            let aware = self
                .frameworks
                .get(&key.0)
                .is_some_and(|f| f.partition_aware());
            let Some(entry) = self.tasks.get_mut(&key) else {
                continue;
            };
            entry.allocated = false;
            entry.task.state = TaskState::TaskUnreachable as i32;
            self.endpoints_dirty.insert(key.clone());
            let state = if aware {
                TaskState::TaskUnreachable
            } else {
                TaskState::TaskLost
            };
            let st = status(
                &key.1,
                agent_id,
                state,
                v1::Reason::AgentUnreachable,
                format!(
                    "agent '{agent_id}' has not been heard from for {:.0} s: the task may still be running",
                    self.settings.agent_timeout.as_secs_f64()
                ),
                clock.wall,
            );
            entry.task.status = Some(st.clone());
            self.to_framework(&key.0, update_event(st));
        }
        if let Some(r) = self.registry.agents.get_mut(agent_id) {
            r.unreachable_since = Some(clock.wall);
            self.registry_dirty = true;
        }
    }
}
