//! Frameworks: subscription and failover, disconnection and removal, the call header every
//! scheduler call is checked against, teardown, revive and suppress.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use agora_proto::v1::{self, event, master_message, TaskState};

use super::{status, Bookkeeping, Clock, Framework, Outbound, TaskKey};
use crate::error::MasterError;

impl Bookkeeping {
    /// A framework subscribes (or fails over with its id). Returns its id and the new stream id;
    /// the SUBSCRIBED event is in the outbound queue.
    ///
    /// # Errors
    /// [`MasterError::InvalidArgument`] for bad roles or timeouts;
    /// [`MasterError::FailedPrecondition`] for a framework that was torn down.
    pub fn subscribe(
        &mut self,
        req: v1::SubscribeRequest,
        clock: &Clock,
    ) -> Result<(String, String), MasterError> {
        let mut info = req
            .framework_info
            .ok_or_else(|| MasterError::invalid("framework_info", "is required"))?;
        check_info(&mut info, &req.suppressed_roles)?;
        if self.removed_frameworks.contains(&info.id) {
            return Err(MasterError::FailedPrecondition(format!(
                "framework '{}' was torn down or timed out; subscribe without an id to start anew",
                info.id
            )));
        }
        self.next_stream += 1;
        // The stream id is what authorizes a scheduler's calls (with no credentials, the only
        // thing): 128 random bits from the OS, never a counter a client could guess.
        let stream_id = format!(
            "{}-stream-{}-{}",
            self.master_id(),
            self.next_stream,
            uuid::Uuid::new_v4().simple()
        );
        let id = if info.id.is_empty() {
            self.next_framework += 1;
            format!("{}-{:04}", self.master_id(), self.next_framework)
        } else {
            info.id.clone()
        };
        info.id = id.clone();
        if let Some(fw) = self.frameworks.get_mut(&id) {
            // Failover: the new scheduler instance replaces the old one and keeps the tasks.
            let role_change = fw.info.roles != info.roles;
            fw.info = info.clone();
            fw.connected = true;
            fw.stream_id = stream_id.clone();
            fw.failover_deadline = None;
            if role_change {
                // The old stream is gone: its offers go back without RESCIND events.
                self.change_roles(&id, false);
            }
            let _ = self.allocator.activate_framework(&id);
        } else {
            self.allocator
                .add_framework(&id, &info.roles)
                .map_err(|e| MasterError::invalid("framework_info.id", e.to_string()))?;
            self.frameworks.insert(
                id.clone(),
                Framework {
                    info: info.clone(),
                    connected: true,
                    stream_id: stream_id.clone(),
                    failover_deadline: None,
                    registered_time: clock.wall,
                    offers: HashSet::new(),
                    tasks: HashSet::new(),
                    suppressed: HashSet::new(),
                },
            );
        }
        if let Some(fw) = self.frameworks.get_mut(&id) {
            fw.suppressed = req.suppressed_roles.iter().cloned().collect();
        }
        let suppressed: Vec<&str> = req.suppressed_roles.iter().map(String::as_str).collect();
        let all_roles: Vec<&str> = info.roles.iter().map(String::as_str).collect();
        let _ = self.allocator.revive(&id, &all_roles);
        if !suppressed.is_empty() {
            let _ = self.allocator.suppress(&id, &suppressed);
        }
        let subscribed = v1::Event {
            event: Some(event::Event::Subscribed(event::Subscribed {
                framework_id: id.clone(),
                heartbeat_interval_seconds: self.settings.framework_heartbeat.as_secs_f64(),
                master_info: Some(self.settings.master_info.clone()),
                stream_id: stream_id.clone(),
            })),
        };
        self.to_framework(&id, subscribed);
        Ok((id, stream_id))
    }

    /// The framework's roles changed (in `info` already): it is re-added to the allocator under
    /// the new ones, every offer it holds goes back (with a RESCIND event when `notify`), and a
    /// task whose role it no longer has is counted under its first role.
    fn change_roles(&mut self, id: &str, notify: bool) {
        let Some(fw) = self.frameworks.get(id) else {
            return;
        };
        let roles = fw.info.roles.clone();
        let offers: Vec<String> = fw.offers.iter().cloned().collect();
        for o in offers {
            self.rescind(&o, notify);
        }
        let keys: Vec<TaskKey> = self.tasks.keys().filter(|k| k.0 == id).cloned().collect();
        // The allocator keeps a removed framework's resources allocated until they are recovered:
        // the tasks' resources are freed first, then allocated again under the new roles.
        for key in &keys {
            if let Some(t) = self.tasks.get(key) {
                if t.allocated {
                    let _ = self
                        .allocator
                        .recover(&t.task.agent_id, id, &t.role, &t.resources);
                }
            }
        }
        let _ = self.allocator.remove_framework(id);
        let _ = self.allocator.add_framework(id, &roles);
        for key in keys {
            if let Some(t) = self.tasks.get_mut(&key) {
                if !roles.contains(&t.role) {
                    t.role = roles[0].clone();
                }
                if t.allocated {
                    t.allocated = self
                        .allocator
                        .allocate_used(&t.task.agent_id, id, &t.role, &t.resources)
                        .is_ok();
                }
            }
        }
    }

    /// A subscribed framework changes its `FrameworkInfo` and its suppressed roles without
    /// subscribing again (Mesos's `UPDATE_FRAMEWORK`): all of it at once or nothing. `id`, `user`,
    /// `principal` and `checkpoint` cannot change. New roles are offered at once; when the roles
    /// change, the offers the framework holds are rescinded (RESCIND events) and come again under
    /// the new roles. `suppressed_roles` replaces the suppressed set (a subset of the new roles);
    /// a role that leaves it is revived (its filters cleared), the others keep their filters.
    ///
    /// # Errors
    /// Header errors; [`MasterError::InvalidArgument`] naming the field for a bad or disallowed
    /// change.
    pub fn update_framework(
        &mut self,
        header: Option<&v1::CallHeader>,
        mut info: v1::FrameworkInfo,
        suppressed_roles: Vec<String>,
    ) -> Result<(), MasterError> {
        let id = self.check_header(header)?;
        if info.id != id {
            return Err(MasterError::invalid(
                "framework_info.id",
                format!("'{}' is not the calling framework '{id}'", info.id),
            ));
        }
        check_info(&mut info, &suppressed_roles)?;
        let fw = &self.frameworks[&id];
        let fixed: [(&str, String, String); 3] = [
            (
                "principal",
                fw.info.principal.clone(),
                info.principal.clone(),
            ),
            ("user", fw.info.user.clone(), info.user.clone()),
            (
                "checkpoint",
                fw.info.checkpoint.to_string(),
                info.checkpoint.to_string(),
            ),
        ];
        for (field, old, new) in fixed {
            if old != new {
                return Err(MasterError::invalid(
                    format!("framework_info.{field}"),
                    format!("cannot be changed (from '{old}' to '{new}')"),
                ));
            }
        }
        let role_change = fw.info.roles != info.roles;
        let was_suppressed = fw.suppressed.clone();
        if let Some(fw) = self.frameworks.get_mut(&id) {
            fw.info = info;
            fw.suppressed = suppressed_roles.iter().cloned().collect();
        }
        if role_change {
            // Re-added: every role starts unsuppressed and without filters.
            self.change_roles(&id, true);
        } else {
            let leaving: Vec<&str> = was_suppressed
                .iter()
                .filter(|r| !suppressed_roles.contains(r))
                .map(String::as_str)
                .collect();
            if !leaving.is_empty() {
                let _ = self.allocator.revive(&id, &leaving);
            }
        }
        let suppressed: Vec<&str> = suppressed_roles.iter().map(String::as_str).collect();
        if !suppressed.is_empty() {
            let _ = self.allocator.suppress(&id, &suppressed);
        }
        Ok(())
    }

    /// The framework's subscription stream `stream_id` ended. A stale stream (already replaced by a
    /// failover) changes nothing.
    pub fn framework_disconnected(&mut self, framework_id: &str, stream_id: &str, clock: &Clock) {
        let Some(fw) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        if !same_stream(&fw.stream_id, stream_id) || !fw.connected {
            return;
        }
        fw.connected = false;
        let timeout = Duration::from_secs_f64(fw.info.failover_timeout_seconds.clamp(0.0, 1e9));
        fw.failover_deadline = Some(clock.now + timeout);
        let offers: Vec<String> = fw.offers.iter().cloned().collect();
        let _ = self.allocator.deactivate_framework(framework_id);
        for o in offers {
            self.rescind(&o, false);
        }
        if timeout.is_zero() {
            self.remove_framework(
                framework_id,
                "it disconnected and its failover timeout is 0",
                clock,
            );
        }
    }

    /// Removes a framework: its offers go back, its tasks are killed on their agents.
    pub(super) fn remove_framework(&mut self, framework_id: &str, why: &str, clock: &Clock) {
        let Some(fw) = self.frameworks.remove(framework_id) else {
            return;
        };
        for o in &fw.offers {
            if let Some(entry) = self.offers.remove(o) {
                if let Some(a) = self.agents.get_mut(&entry.offer.agent_id) {
                    a.offers.remove(o);
                }
                let _ = self.allocator.recover(
                    &entry.offer.agent_id,
                    framework_id,
                    &entry.role,
                    &entry.resources,
                );
            }
        }
        let mut agents = BTreeMap::new();
        for task_id in &fw.tasks {
            let key = (framework_id.to_string(), task_id.clone());
            let Some(entry) = self.tasks.get_mut(&key) else {
                continue;
            };
            agents.insert(entry.task.agent_id.clone(), ());
            entry.task.state = TaskState::TaskKilled as i32;
            self.endpoints_dirty.insert(key.clone());
            entry.task.status = Some(status(
                task_id,
                &entry.task.agent_id,
                TaskState::TaskKilled,
                v1::Reason::FrameworkRemoved,
                format!("framework '{framework_id}' was removed: {why}"),
                clock.wall,
            ));
            self.finish_task(&key);
        }
        for agent_id in agents.keys() {
            if self.agents.contains_key(agent_id) {
                self.to_agent(
                    agent_id,
                    master_message::Message::ShutdownFramework(master_message::ShutdownFramework {
                        framework_id: framework_id.to_string(),
                    }),
                );
            }
        }
        let _ = self.allocator.remove_framework(framework_id);
        self.removed_frameworks.insert(framework_id.to_string());
        if fw.connected {
            self.outbound.push(Outbound::Framework {
                framework_id: framework_id.to_string(),
                event: v1::Event {
                    event: Some(event::Event::Error(event::Error {
                        message: format!("framework '{framework_id}' was removed: {why}"),
                    })),
                },
            });
        }
        self.outbound.push(Outbound::CloseFramework {
            framework_id: framework_id.to_string(),
        });
    }

    /// Who a call with this framework id and stream id comes from, told apart the way Mesos's
    /// HTTP API answers them (unknown framework 400, not subscribed 403, wrong stream 400); the
    /// gRPC path folds them into [`Bookkeeping::check_header`]'s errors.
    pub fn caller(&self, framework_id: &str, stream_id: &str) -> Caller {
        match self.frameworks.get(framework_id) {
            None if self.removed_frameworks.contains(framework_id) => Caller::Removed,
            None => Caller::Unknown,
            Some(fw) if !fw.connected => Caller::NotSubscribed,
            Some(fw) if !same_stream(&fw.stream_id, stream_id) => Caller::WrongStream,
            Some(_) => Caller::Current,
        }
    }

    /// Checks a call's header: the framework exists and the stream is its current one.
    pub(super) fn check_header(
        &self,
        header: Option<&v1::CallHeader>,
    ) -> Result<String, MasterError> {
        let header = header.ok_or_else(|| MasterError::invalid("header", "is required"))?;
        if header.framework_id.is_empty() {
            return Err(MasterError::invalid(
                "header.framework_id",
                "must not be empty",
            ));
        }
        let Some(fw) = self.frameworks.get(&header.framework_id) else {
            if self.removed_frameworks.contains(&header.framework_id) {
                return Err(MasterError::FailedPrecondition(format!(
                    "framework '{}' was removed",
                    header.framework_id
                )));
            }
            return Err(MasterError::not_found_hint(
                "framework",
                &header.framework_id,
                "subscribe first",
            ));
        };
        if !fw.connected || !same_stream(&fw.stream_id, &header.stream_id) {
            return Err(MasterError::FailedPrecondition(format!(
                "header.stream_id '{}' is not the current subscription of framework '{}': another \
                 scheduler instance replaced this one, or it is not subscribed",
                header.stream_id, header.framework_id
            )));
        }
        Ok(header.framework_id.clone())
    }

    /// Unregisters a framework and kills its tasks.
    ///
    /// # Errors
    /// Header errors.
    pub fn teardown(&mut self, req: v1::TeardownRequest, clock: &Clock) -> Result<(), MasterError> {
        let id = self.check_header(req.header.as_ref())?;
        self.remove_framework(&id, "it asked to be torn down", clock);
        Ok(())
    }

    /// The principal a framework registered with.
    pub fn framework_principal(&self, id: &str) -> Option<String> {
        self.frameworks.get(id).map(|f| f.info.principal.clone())
    }

    /// Tears a framework down on an operator's request (no stream header).
    ///
    /// # Errors
    /// [`MasterError::NotFound`].
    pub fn teardown_by_operator(
        &mut self,
        framework_id: &str,
        clock: &Clock,
    ) -> Result<(), MasterError> {
        if !self.frameworks.contains_key(framework_id) {
            return Err(MasterError::not_found("framework", framework_id));
        }
        self.remove_framework(framework_id, "an operator tore it down", clock);
        Ok(())
    }

    /// Roles of a call, checked against the framework's.
    fn roles_of_call(&self, id: &str, roles: &[String]) -> Result<Vec<String>, MasterError> {
        let fw = &self.frameworks[id];
        for (i, r) in roles.iter().enumerate() {
            if !fw.info.roles.contains(r) {
                return Err(MasterError::invalid(
                    format!("roles[{i}]"),
                    format!(
                        "'{r}' is not one of the framework's roles {:?}",
                        fw.info.roles
                    ),
                ));
            }
        }
        Ok(if roles.is_empty() {
            fw.info.roles.clone()
        } else {
            roles.to_vec()
        })
    }

    /// Clears filters and resumes offers.
    ///
    /// # Errors
    /// Header errors; a role the framework does not have.
    pub fn revive(&mut self, req: v1::ReviveRequest) -> Result<(), MasterError> {
        let id = self.check_header(req.header.as_ref())?;
        let roles = self.roles_of_call(&id, &req.roles)?;
        let refs: Vec<&str> = roles.iter().map(String::as_str).collect();
        let _ = self.allocator.revive(&id, &refs);
        if let Some(fw) = self.frameworks.get_mut(&id) {
            for r in &roles {
                fw.suppressed.remove(r);
            }
        }
        Ok(())
    }

    /// Stops offers until REVIVE.
    ///
    /// # Errors
    /// Header errors; a role the framework does not have.
    pub fn suppress(&mut self, req: v1::SuppressRequest) -> Result<(), MasterError> {
        let id = self.check_header(req.header.as_ref())?;
        let roles = self.roles_of_call(&id, &req.roles)?;
        let refs: Vec<&str> = roles.iter().map(String::as_str).collect();
        let _ = self.allocator.suppress(&id, &refs);
        if let Some(fw) = self.frameworks.get_mut(&id) {
            fw.suppressed.extend(roles);
        }
        Ok(())
    }
}

/// Checks a framework's info as SUBSCRIBE and UPDATE_FRAMEWORK take it: its sizes, roles (`*` when
/// none), the failover timeout, and suppressed roles among its roles.
fn check_info(
    info: &mut v1::FrameworkInfo,
    suppressed_roles: &[String],
) -> Result<(), MasterError> {
    super::limits::framework_info(info)?;
    if info.roles.is_empty() {
        info.roles.push("*".to_string());
    }
    for (i, role) in info.roles.iter().enumerate() {
        agora_proto::resources::validate_role(role)
            .map_err(|p| MasterError::invalid(format!("framework_info.roles[{i}]"), p))?;
    }
    if !info.failover_timeout_seconds.is_finite() || info.failover_timeout_seconds < 0.0 {
        return Err(MasterError::invalid(
            "framework_info.failover_timeout_seconds",
            format!(
                "{} must be a finite number >= 0",
                info.failover_timeout_seconds
            ),
        ));
    }
    for (i, role) in suppressed_roles.iter().enumerate() {
        if !info.roles.contains(role) {
            return Err(MasterError::invalid(
                format!("suppressed_roles[{i}]"),
                format!("'{role}' is not one of the framework's roles"),
            ));
        }
    }
    Ok(())
}

/// Stream ids are secrets: compared without telling, through timing, how much of a guess was right.
/// See [`Bookkeeping::caller`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// No such framework.
    Unknown,
    /// Torn down or timed out.
    Removed,
    /// Known, but no scheduler is subscribed for it now.
    NotSubscribed,
    /// Subscribed, with another stream id.
    WrongStream,
    /// The current subscription.
    Current,
}

fn same_stream(expected: &str, given: &str) -> bool {
    agora_net::http_auth::constant_time_eq(expected.as_bytes(), given.as_bytes())
}

#[cfg(test)]
mod stream_id_tests {
    use super::same_stream;

    #[test]
    fn stream_ids_match_only_whole() {
        let id = "m1-stream-1-0123456789abcdef0123456789abcdef";
        assert!(same_stream(id, id));
        assert!(!same_stream(id, "m1-stream-1"));
        assert!(!same_stream(id, &format!("{id}0")));
        assert!(!same_stream(id, ""));
    }
}
