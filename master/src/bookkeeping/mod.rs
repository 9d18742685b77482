//! The master's bookkeeping: agents, frameworks, offers and tasks, and the rules that tie them.
//!
//! A pure, synchronous type: every request and timer goes in as a method call with the [`Clock`];
//! what must be sent comes out as [`Outbound`] messages that the actor delivers to agents' and
//! frameworks' streams. It owns the [`Allocator`] and the [`Registry`] document (the actor persists
//! it when [`Bookkeeping::take_registry`] says it changed).
//!
//! ```text
//!  gRPC/HTTP handlers ──request──▶ actor ──method(now)──▶ Bookkeeping ──▶ Vec<Outbound> ──▶ streams
//!                                    └── timers: allocate(now), tick(now) ─────────┘
//! ```

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use agora_proto::v1::{self, agent_message, event, master_message, operation, TaskState};
use agora_proto::{is_terminal, Resources};

use crate::allocator::{AllocationStats, Allocator, AllocatorConfig};
use crate::error::MasterError;
use crate::registry::{AgentRecord, Registry};

/// The two clocks the master needs: a monotonic one for timeouts and wall time for timestamps.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: Instant,
    /// Seconds since the Unix epoch.
    pub wall: f64,
}

impl Clock {
    /// The current time. Only the actor calls this; the core takes a `Clock` as a parameter.
    pub fn system() -> Self {
        Clock {
            now: Instant::now(),
            wall: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        }
    }
}

/// Timeouts and identity of the master.
#[derive(Debug, Clone)]
pub struct Settings {
    pub master_info: v1::MasterInfo,
    /// An agent silent this long is unreachable.
    pub agent_timeout: Duration,
    /// An unreachable agent is gone after this long.
    pub agent_gone_timeout: Duration,
    /// Offers unanswered this long are rescinded; `None`: never.
    pub offer_timeout: Option<Duration>,
    /// Frameworks learnt from re-registering agents (after a master restart) have at least this
    /// long to re-subscribe before their tasks are killed, whatever their own failover timeout.
    pub framework_recovery_timeout: Duration,
    /// How often the master sends HEARTBEAT events.
    pub framework_heartbeat: Duration,
    /// How many finished tasks `/state` keeps.
    pub completed_tasks_kept: usize,
    /// A new leader waits this long for the registry's agents to re-register before offering.
    pub agent_reregister_timeout: Duration,
}

impl Settings {
    /// Agents heartbeat five times per timeout (Mesos pings every 15 s and gives up after 5 misses).
    pub fn agent_heartbeat(&self) -> Duration {
        (self.agent_timeout / 5).clamp(Duration::from_millis(100), Duration::from_secs(15))
    }
}

/// A message the actor must deliver.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    Framework {
        framework_id: String,
        event: v1::Event,
    },
    Agent {
        agent_id: String,
        message: v1::MasterMessage,
    },
    /// End a framework's subscription stream (after its last event).
    CloseFramework { framework_id: String },
    /// End an agent's session stream (it was marked gone).
    CloseAgent { agent_id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentStatus {
    Active,
    Unreachable { since: Instant },
}

#[derive(Debug)]
struct Agent {
    info: v1::AgentInfo,
    total: Resources,
    status: AgentStatus,
    connected: bool,
    last_seen: Instant,
    registered_time: f64,
    draining: bool,
    tasks: HashSet<TaskKey>,
    offers: HashSet<String>,
    usage: Vec<v1::TaskUsage>,
}

#[derive(Debug)]
struct Framework {
    info: v1::FrameworkInfo,
    connected: bool,
    stream_id: String,
    /// Tasks are killed at this instant unless it re-subscribes first.
    failover_deadline: Option<Instant>,
    registered_time: f64,
    offers: HashSet<String>,
    tasks: HashSet<String>,
    suppressed: HashSet<String>,
}

impl Framework {
    fn partition_aware(&self) -> bool {
        self.info
            .capabilities
            .contains(&(v1::FrameworkCapability::PartitionAware as i32))
    }
}

type TaskKey = (String, String);

#[derive(Debug)]
struct TaskEntry {
    task: v1::Task,
    /// The allocation role the task's resources were offered in.
    role: String,
    /// The resources taken from the offer, with their roles.
    resources: Resources,
    /// Whether the allocator counts the resources as used (false while the agent is unreachable).
    allocated: bool,
}

#[derive(Debug)]
struct OfferEntry {
    offer: v1::Offer,
    role: String,
    resources: Resources,
    expires: Option<Instant>,
}

/// See the module documentation.
pub struct Bookkeeping {
    settings: Settings,
    allocator: Allocator,
    registry: Registry,
    registry_dirty: bool,
    agents: HashMap<String, Agent>,
    frameworks: HashMap<String, Framework>,
    removed_frameworks: HashSet<String>,
    tasks: HashMap<TaskKey, TaskEntry>,
    completed: VecDeque<v1::Task>,
    offers: HashMap<String, OfferEntry>,
    outbound: Vec<Outbound>,
    next_agent: u64,
    next_framework: u64,
    next_offer: u64,
    next_stream: u64,
    counters: Counters,
    /// The token agents must present to register (`--join-token-file`); `None`: an open cluster.
    join_token: Option<String>,
    /// After a take-over: the registry's agents not yet re-registered, and when to stop waiting
    /// (set by the first timer call, since `new` has no clock).
    recovering: Option<(HashSet<String>, Option<Instant>)>,
    /// Updates relayed to frameworks and not yet acknowledged: uuid → when the agent's update
    /// arrived. At most [`MAX_TIMED_UPDATES`], so frameworks that never acknowledge cannot grow it.
    awaiting_ack: HashMap<Vec<u8>, Instant>,
    /// Agent update → framework acknowledgement, since the last [`Bookkeeping::take_round_trips`].
    round_trips: Vec<Duration>,
}

/// Updates timed for the status-update round trip at once.
const MAX_TIMED_UPDATES: usize = 100_000;

/// Totals since the master started, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub offers_made: u64,
    pub offers_declined: u64,
    pub offers_rescinded: u64,
    pub tasks_launched: u64,
    pub tasks_invalid: u64,
    pub status_updates: u64,
    pub agents_registered: u64,
    pub agents_unreachable: u64,
}

fn status(
    task_id: &str,
    agent_id: &str,
    state: TaskState,
    reason: v1::Reason,
    message: impl Into<String>,
    wall: f64,
) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: task_id.to_string(),
        state: state as i32,
        reason: reason as i32,
        message: message.into(),
        source: v1::StatusSource::SourceMaster as i32,
        agent_id: agent_id.to_string(),
        timestamp: wall,
        ..Default::default()
    }
}

fn update_event(status: v1::TaskStatus) -> v1::Event {
    v1::Event {
        event: Some(event::Event::Update(event::Update {
            status: Some(status),
        })),
    }
}

fn to_master(message: master_message::Message) -> v1::MasterMessage {
    v1::MasterMessage {
        message: Some(message),
    }
}

fn state_of(task: &v1::Task) -> TaskState {
    TaskState::try_from(task.state).unwrap_or(TaskState::Unspecified)
}

impl Bookkeeping {
    /// A master starting from a registry loaded from its store.
    pub fn new(settings: Settings, allocator: AllocatorConfig, registry: Registry) -> Self {
        let mut alloc = Allocator::new(allocator);
        for (role, weight) in &registry.weights {
            // Stored weights were validated when set.
            let _ = alloc.update_weight(role, *weight);
        }
        for (role, quota) in &registry.quotas {
            if let Ok(q) = Resources::parse(quota) {
                alloc.set_quota(role, &q);
            }
        }
        let expected: HashSet<String> = registry
            .agents
            .iter()
            .filter(|(_, r)| r.unreachable_since.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        let recovering = (!expected.is_empty()).then_some((expected, None));
        Bookkeeping {
            join_token: None,
            recovering,
            settings,
            allocator: alloc,
            registry,
            registry_dirty: false,
            agents: HashMap::new(),
            frameworks: HashMap::new(),
            removed_frameworks: HashSet::new(),
            tasks: HashMap::new(),
            completed: VecDeque::new(),
            offers: HashMap::new(),
            outbound: Vec::new(),
            next_agent: 0,
            next_framework: 0,
            next_offer: 0,
            next_stream: 0,
            counters: Counters::default(),
            awaiting_ack: HashMap::new(),
            round_trips: Vec::new(),
        }
    }

    /// Status-update round trips (update from the agent → acknowledgement from the framework)
    /// completed since the last call.
    pub fn take_round_trips(&mut self) -> Vec<Duration> {
        std::mem::take(&mut self.round_trips)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// What must be delivered, in order.
    pub fn take_outbound(&mut self) -> Vec<Outbound> {
        std::mem::take(&mut self.outbound)
    }

    /// The registry to persist, if it changed since the last call.
    pub fn take_registry(&mut self) -> Option<Registry> {
        if std::mem::take(&mut self.registry_dirty) {
            Some(self.registry.clone())
        } else {
            None
        }
    }

    fn to_framework(&mut self, framework_id: &str, event: v1::Event) {
        let connected = self
            .frameworks
            .get(framework_id)
            .is_some_and(|f| f.connected);
        if connected {
            self.outbound.push(Outbound::Framework {
                framework_id: framework_id.to_string(),
                event,
            });
        }
    }

    fn to_agent(&mut self, agent_id: &str, message: master_message::Message) {
        self.outbound.push(Outbound::Agent {
            agent_id: agent_id.to_string(),
            message: to_master(message),
        });
    }

    fn master_id(&self) -> &str {
        &self.settings.master_info.id
    }

    // ------------------------------------------------------------------------------------------
    // Agents
    // ------------------------------------------------------------------------------------------

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

    fn response(&self, agent_id: &str) -> v1::RegisterAgentResponse {
        v1::RegisterAgentResponse {
            agent_id: agent_id.to_string(),
            master_info: Some(self.settings.master_info.clone()),
            heartbeat_interval_seconds: self.settings.agent_heartbeat().as_secs_f64(),
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
        for task in req.tasks {
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
        let timeout = Duration::from_secs_f64(info.failover_timeout_seconds.clamp(0.0, 1e9))
            .max(self.settings.framework_recovery_timeout);
        let mut info = info;
        info.roles = roles;
        self.frameworks.insert(
            info.id.clone(),
            Framework {
                info,
                connected: false,
                stream_id: String::new(),
                failover_deadline: Some(clock.now + timeout),
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
        Ok(())
    }

    /// The agent's session stream ended. It stays registered until its timeout.
    pub fn agent_disconnected(&mut self, agent_id: &str) {
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.connected = false;
        }
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
            agent_message::Message::Heartbeat(h) => agent.usage = h.usage,
            agent_message::Message::StatusUpdate(u) => {
                if let Some(mut st) = u.status {
                    st.agent_id = agent_id.to_string();
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
            if !is_terminal(old_state) && is_terminal(new_state) {
                self.finish_task(&key);
            }
        }
        let _ = from_master;
        self.to_framework(framework_id, update_event(st));
    }

    /// Frees a terminal task's resources and moves it to the completed list.
    fn finish_task(&mut self, key: &TaskKey) {
        let Some(entry) = self.tasks.remove(key) else {
            return;
        };
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
    pub fn drain_agent(&mut self, agent_id: &str, grace: Option<f64>) -> Result<(), MasterError> {
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
                None => self
                    .tasks
                    .get(&key)
                    .and_then(|t| t.task.kill_policy.clone()),
            };
            self.to_agent(
                agent_id,
                master_message::Message::KillTask(master_message::KillTask {
                    framework_id: key.0.clone(),
                    task_id: key.1.clone(),
                    kill_policy: policy,
                }),
            );
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

    fn mark_agent_unreachable(&mut self, agent_id: &str, clock: &Clock) {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        if agent.status != AgentStatus::Active {
            return;
        }
        agent.status = AgentStatus::Unreachable { since: clock.now };
        agent.connected = false;
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

    // ------------------------------------------------------------------------------------------
    // Frameworks
    // ------------------------------------------------------------------------------------------

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
        for (i, role) in req.suppressed_roles.iter().enumerate() {
            if !info.roles.contains(role) {
                return Err(MasterError::invalid(
                    format!("suppressed_roles[{i}]"),
                    format!("'{role}' is not one of the framework's roles"),
                ));
            }
        }
        if self.removed_frameworks.contains(&info.id) {
            return Err(MasterError::FailedPrecondition(format!(
                "framework '{}' was torn down or timed out; subscribe without an id to start anew",
                info.id
            )));
        }
        self.next_stream += 1;
        let stream_id = format!("{}-stream-{}", self.master_id(), self.next_stream);
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
                // Roles changed: re-add to the allocator under the new roles (its offers go back).
                let offers: Vec<String> = fw.offers.iter().cloned().collect();
                for o in offers {
                    self.rescind(&o, false);
                }
                let _ = self.allocator.remove_framework(&id);
                let _ = self.allocator.add_framework(&id, &info.roles);
                let keys: Vec<TaskKey> = self.tasks.keys().filter(|k| k.0 == id).cloned().collect();
                for key in keys {
                    if let Some(t) = self.tasks.get_mut(&key) {
                        if !info.roles.contains(&t.role) {
                            t.role = info.roles[0].clone();
                        }
                        if t.allocated {
                            t.allocated = self
                                .allocator
                                .allocate_used(&t.task.agent_id, &id, &t.role, &t.resources)
                                .is_ok();
                        }
                    }
                }
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

    /// The framework's subscription stream `stream_id` ended. A stale stream (already replaced by a
    /// failover) changes nothing.
    pub fn framework_disconnected(&mut self, framework_id: &str, stream_id: &str, clock: &Clock) {
        let Some(fw) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        if fw.stream_id != stream_id || !fw.connected {
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
    fn remove_framework(&mut self, framework_id: &str, why: &str, clock: &Clock) {
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

    /// Checks a call's header: the framework exists and the stream is its current one.
    fn check_header(&self, header: Option<&v1::CallHeader>) -> Result<String, MasterError> {
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
        if !fw.connected || fw.stream_id != header.stream_id {
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

    // ------------------------------------------------------------------------------------------
    // Offers
    // ------------------------------------------------------------------------------------------

    /// One allocation cycle: turns the allocator's decisions into OFFERS events.
    pub fn allocate(&mut self, clock: &Clock) -> AllocationStats {
        if self.still_recovering(clock) {
            return AllocationStats::default();
        }
        let offers = self.allocator.allocate(clock.now);
        self.make_offers(offers, clock);
        self.allocator.last_stats().clone()
    }

    fn make_offers(&mut self, offers: Vec<crate::allocator::Offer>, clock: &Clock) {
        let mut by_framework: BTreeMap<String, Vec<v1::Offer>> = BTreeMap::new();
        for o in offers {
            let usable = self
                .frameworks
                .get(&o.framework_id)
                .is_some_and(|f| f.connected)
                && self
                    .agents
                    .get(&o.agent_id)
                    .is_some_and(|a| a.status == AgentStatus::Active && a.connected);
            if !usable {
                let _ = self
                    .allocator
                    .recover(&o.agent_id, &o.framework_id, &o.role, &o.resources);
                continue;
            }
            self.next_offer += 1;
            let id = format!("{}-O{}", self.master_id(), self.next_offer);
            let Some(agent) = self.agents.get_mut(&o.agent_id) else {
                continue;
            };
            agent.offers.insert(id.clone());
            let offer = v1::Offer {
                id: id.clone(),
                framework_id: o.framework_id.clone(),
                agent_id: o.agent_id.clone(),
                hostname: agent.info.hostname.clone(),
                resources: o.resources.to_proto(),
                attributes: agent.info.attributes.clone(),
                allocation_role: o.role.clone(),
                master_id: self.settings.master_info.id.clone(),
                agent_url: if agent.info.http_port > 0 {
                    format!("http://{}:{}", agent.info.hostname, agent.info.http_port)
                } else {
                    String::new()
                },
            };
            if let Some(f) = self.frameworks.get_mut(&o.framework_id) {
                f.offers.insert(id.clone());
            }
            by_framework
                .entry(o.framework_id.clone())
                .or_default()
                .push(offer.clone());
            self.offers.insert(
                id,
                OfferEntry {
                    offer,
                    role: o.role,
                    resources: o.resources,
                    expires: self.settings.offer_timeout.map(|t| clock.now + t),
                },
            );
            self.counters.offers_made += 1;
        }
        for (framework_id, offers) in by_framework {
            self.to_framework(
                &framework_id,
                v1::Event {
                    event: Some(event::Event::Offers(event::Offers { offers })),
                },
            );
        }
    }

    /// Takes an offer back: its resources return to the allocator and, when `notify`, the
    /// framework gets a RESCIND event.
    fn rescind(&mut self, offer_id: &str, notify: bool) {
        let Some(entry) = self.offers.remove(offer_id) else {
            return;
        };
        let framework_id = entry.offer.framework_id.clone();
        if let Some(a) = self.agents.get_mut(&entry.offer.agent_id) {
            a.offers.remove(offer_id);
        }
        if let Some(f) = self.frameworks.get_mut(&framework_id) {
            f.offers.remove(offer_id);
        }
        let _ = self.allocator.recover(
            &entry.offer.agent_id,
            &framework_id,
            &entry.role,
            &entry.resources,
        );
        self.counters.offers_rescinded += 1;
        if notify {
            self.to_framework(
                &framework_id,
                v1::Event {
                    event: Some(event::Event::Rescind(event::Rescind {
                        offer_id: offer_id.to_string(),
                    })),
                },
            );
        }
    }

    /// Takes the framework's outstanding offers out of the books. Unknown or foreign offers are
    /// reported, and the others stay taken (the caller recovers them).
    fn take_offers(
        &mut self,
        framework_id: &str,
        offer_ids: &[String],
    ) -> (Vec<OfferEntry>, Vec<String>) {
        let mut taken = Vec::new();
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        for id in offer_ids {
            if !seen.insert(id.clone()) {
                problems.push(format!("offer '{id}' is named twice"));
                continue;
            }
            match self.offers.get(id) {
                None => problems.push(format!(
                    "offer '{id}' is not outstanding (already used, declined, rescinded, or never made)"
                )),
                Some(e) if e.offer.framework_id != framework_id => {
                    problems.push(format!("offer '{id}' was made to another framework"))
                }
                Some(_) => {
                    if let Some(e) = self.offers.remove(id) {
                        if let Some(a) = self.agents.get_mut(&e.offer.agent_id) {
                            a.offers.remove(id);
                        }
                        if let Some(f) = self.frameworks.get_mut(framework_id) {
                            f.offers.remove(id);
                        }
                        taken.push(e);
                    }
                }
            }
        }
        (taken, problems)
    }

    /// Returns offers unused, with a filter.
    ///
    /// # Errors
    /// Header errors; offers that are unknown or not this framework's are named (the others are
    /// declined all the same).
    pub fn decline(&mut self, req: v1::DeclineRequest, clock: &Clock) -> Result<(), MasterError> {
        let id = self.check_header(req.header.as_ref())?;
        let refuse = refuse_of(req.filters.as_ref())?;
        let (taken, problems) = self.take_offers(&id, &req.offer_ids);
        for e in taken {
            let _ = self.allocator.decline(
                &id,
                &e.offer.agent_id,
                &e.role,
                &e.resources,
                refuse,
                clock.now,
            );
            self.counters.offers_declined += 1;
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(MasterError::invalid("offer_ids", problems.join("; ")))
        }
    }

    /// Uses offers: runs the operations in order on the offers' agent. See the module docs of
    /// [`crate`] for the validation rules.
    ///
    /// # Errors
    /// Header errors; unusable offers (every task is then reported TASK_DROPPED and the good offers
    /// are recovered); an invalid RESERVE/UNRESERVE (nothing is applied). Problems with single
    /// tasks are not call errors: those tasks get TASK_ERROR updates and the others launch.
    pub fn accept(&mut self, req: v1::AcceptRequest, clock: &Clock) -> Result<(), MasterError> {
        let framework_id = self.check_header(req.header.as_ref())?;
        let refuse = refuse_of(req.filters.as_ref())?;
        // Only the ids: they are all a refused accept needs to report (copying whole TaskInfos
        // here was a measurable part of the master's launch path).
        let all_tasks: Vec<(String, String)> = req
            .operations
            .iter()
            .flat_map(|op| {
                let tasks: &[v1::TaskInfo] = match &op.operation {
                    Some(operation::Operation::Launch(l)) => &l.tasks,
                    Some(operation::Operation::LaunchGroup(g)) => {
                        g.task_group.as_ref().map_or(&[], |t| t.tasks.as_slice())
                    }
                    _ => &[],
                };
                tasks
                    .iter()
                    .map(|t| (t.task_id.clone(), t.agent_id.clone()))
            })
            .collect();
        if req.offer_ids.is_empty() {
            self.drop_tasks(
                &framework_id,
                &all_tasks,
                "the accept names no offers",
                clock,
            );
            return Err(MasterError::invalid(
                "offer_ids",
                "must name at least one offer",
            ));
        }
        let (taken, mut problems) = self.take_offers(&framework_id, &req.offer_ids);
        let agent_id = taken
            .first()
            .map(|e| e.offer.agent_id.clone())
            .unwrap_or_default();
        let role = taken.first().map(|e| e.role.clone()).unwrap_or_default();
        if taken.iter().any(|e| e.offer.agent_id != agent_id) {
            problems.push(
                "the offers are on different agents; accept offers of one agent at a time".into(),
            );
        }
        if taken.iter().any(|e| e.role != role) {
            problems.push("the offers were allocated to different roles".into());
        }
        let agent_ok = self
            .agents
            .get(&agent_id)
            .is_some_and(|a| a.status == AgentStatus::Active && a.connected);
        if !taken.is_empty() && !agent_ok {
            problems.push(format!("agent '{agent_id}' is not connected to the master"));
        }
        let recover_all = |this: &mut Self, taken: &[OfferEntry]| {
            for e in taken {
                let _ =
                    this.allocator
                        .recover(&e.offer.agent_id, &framework_id, &e.role, &e.resources);
            }
        };
        if !problems.is_empty() {
            let why = problems.join("; ");
            recover_all(self, &taken);
            self.drop_tasks(&framework_id, &all_tasks, &why, clock);
            return Err(MasterError::invalid("offer_ids", why));
        }
        let mut offered = Resources::new();
        for e in &taken {
            offered.add(&e.resources);
        }

        // Plan on a copy; nothing changes until every RESERVE/UNRESERVE is known to be valid.
        let mut available = offered.clone();
        let mut total = self.agents[&agent_id].total.clone();
        let mut total_changed = false;
        let mut launches: Vec<(master_message::Message, Vec<(v1::TaskInfo, Resources)>)> =
            Vec::new();
        let mut errors: Vec<(String, String)> = Vec::new();
        let mut ids_in_call = HashSet::new();
        let fw_info = self.frameworks[&framework_id].info.clone();
        for (i, op) in req.operations.iter().enumerate() {
            match &op.operation {
                None => {
                    recover_all(self, &taken);
                    self.drop_tasks(&framework_id, &all_tasks, "an operation is empty", clock);
                    return Err(MasterError::invalid(format!("operations[{i}]"), "is empty"));
                }
                Some(operation::Operation::Launch(l)) => {
                    let mut group = Vec::new();
                    for (j, task) in l.tasks.iter().enumerate() {
                        let field = format!("operations[{i}].launch.tasks[{j}]");
                        match self.check_task(
                            &framework_id,
                            &agent_id,
                            task,
                            &mut available,
                            &mut ids_in_call,
                            &field,
                        ) {
                            Ok(res) => group.push((task.clone(), res)),
                            Err(why) => errors.push((task.task_id.clone(), why)),
                        }
                    }
                    for (task, res) in group {
                        let mut t = task.clone();
                        t.agent_id = agent_id.clone();
                        let msg = master_message::Message::RunTask(master_message::RunTask {
                            framework: Some(fw_info.clone()),
                            task: Some(t),
                        });
                        launches.push((msg, vec![(task, res)]));
                    }
                }
                Some(operation::Operation::LaunchGroup(g)) => {
                    let tasks = g
                        .task_group
                        .as_ref()
                        .map(|t| t.tasks.clone())
                        .unwrap_or_default();
                    let mut group = Vec::new();
                    let mut failed = None;
                    for (j, task) in tasks.iter().enumerate() {
                        let field = format!("operations[{i}].launch_group.task_group.tasks[{j}]");
                        match self.check_task(
                            &framework_id,
                            &agent_id,
                            task,
                            &mut available,
                            &mut ids_in_call,
                            &field,
                        ) {
                            Ok(res) => group.push((task.clone(), res)),
                            Err(why) => {
                                failed = Some(why);
                                break;
                            }
                        }
                    }
                    if let Some(why) = failed {
                        // A group starts together or not at all: give back what its tasks took.
                        for (_, res) in &group {
                            available.add(res);
                        }
                        for t in &tasks {
                            errors.push((t.task_id.clone(), format!("task group refused: {why}")));
                        }
                    } else if !group.is_empty() {
                        let mut tg = v1::TaskGroupInfo::default();
                        for (t, _) in &group {
                            let mut t = t.clone();
                            t.agent_id = agent_id.clone();
                            tg.tasks.push(t);
                        }
                        let msg =
                            master_message::Message::RunTaskGroup(master_message::RunTaskGroup {
                                framework: Some(fw_info.clone()),
                                executor: g.executor.clone(),
                                task_group: Some(tg),
                            });
                        launches.push((msg, group));
                    }
                }
                Some(operation::Operation::Reserve(r)) => {
                    let field = format!("operations[{i}].reserve.resources");
                    let res = match check_reservation(&r.resources, &fw_info, &field) {
                        Ok(res) => res,
                        Err(e) => {
                            recover_all(self, &taken);
                            self.drop_tasks(&framework_id, &all_tasks, &e.to_string(), clock);
                            return Err(e);
                        }
                    };
                    let flat = res.flatten();
                    if !available.unreserved().contains(&flat) {
                        recover_all(self, &taken);
                        let e = MasterError::invalid(
                            field,
                            format!(
                                "{flat} is more than the unreserved part of the offers ({})",
                                available.unreserved()
                            ),
                        );
                        self.drop_tasks(&framework_id, &all_tasks, &e.to_string(), clock);
                        return Err(e);
                    }
                    available.subtract(&flat);
                    available.add(&res);
                    total.subtract(&flat);
                    total.add(&res);
                    total_changed = true;
                }
                Some(operation::Operation::Unreserve(u)) => {
                    let field = format!("operations[{i}].unreserve.resources");
                    let res = Resources::from_proto(&u.resources)
                        .map_err(|e| MasterError::invalid(field.clone(), e.to_string()));
                    let res = match res {
                        Ok(r) if available.contains(&r) && r.unreserved().is_empty() => r,
                        Ok(r) => {
                            recover_all(self, &taken);
                            let e = MasterError::invalid(
                                field,
                                format!(
                                    "{r} is not among the offers' reserved resources ({available})"
                                ),
                            );
                            self.drop_tasks(&framework_id, &all_tasks, &e.to_string(), clock);
                            return Err(e);
                        }
                        Err(e) => {
                            recover_all(self, &taken);
                            self.drop_tasks(&framework_id, &all_tasks, &e.to_string(), clock);
                            return Err(e);
                        }
                    };
                    available.subtract(&res);
                    available.add(&res.flatten());
                    total.subtract(&res);
                    total.add(&res.flatten());
                    total_changed = true;
                }
            }
        }

        // Apply.
        let mut used = Resources::new();
        for (_, group) in &launches {
            for (_, res) in group {
                used.add(res);
            }
        }
        if total_changed {
            recover_all(self, &taken);
            let _ = self.allocator.update_agent_total(&agent_id, total.clone());
            let mut held = used.clone();
            held.add(&available);
            let _ = self
                .allocator
                .allocate_used(&agent_id, &framework_id, &role, &held);
            if let Some(a) = self.agents.get_mut(&agent_id) {
                a.total = total.clone();
            }
            let reserved = total.filter(|k| k.principal.is_some());
            if let Some(r) = self.registry.agents.get_mut(&agent_id) {
                r.reservations = reserved.to_string();
                self.registry_dirty = true;
            }
        }
        let _ = self.allocator.decline(
            &framework_id,
            &agent_id,
            &role,
            &available,
            refuse,
            clock.now,
        );
        for (task_id, why) in errors {
            self.counters.tasks_invalid += 1;
            let st = status(
                &task_id,
                &agent_id,
                TaskState::TaskError,
                v1::Reason::TaskInvalid,
                why,
                clock.wall,
            );
            self.to_framework(&framework_id, update_event(st));
        }
        for (msg, group) in launches {
            for (info, res) in group {
                let key = (framework_id.clone(), info.task_id.clone());
                let mut info = info;
                info.agent_id = agent_id.clone();
                let task = v1::Task {
                    name: info.name.clone(),
                    task_id: info.task_id.clone(),
                    framework_id: framework_id.clone(),
                    executor_id: info
                        .executor
                        .as_ref()
                        .map(|e| e.executor_id.clone())
                        .unwrap_or_default(),
                    agent_id: agent_id.clone(),
                    state: TaskState::TaskStaging as i32,
                    resources: res.to_proto(),
                    status: None,
                    labels: info.labels.clone(),
                    container: info.container.clone(),
                    health_check: info.health_check.clone(),
                    kill_policy: info.kill_policy.clone(),
                    started_at: 0.0,
                    info: Some(info),
                };
                if let Some(a) = self.agents.get_mut(&agent_id) {
                    a.tasks.insert(key.clone());
                }
                if let Some(f) = self.frameworks.get_mut(&framework_id) {
                    f.tasks.insert(key.1.clone());
                }
                self.tasks.insert(
                    key,
                    TaskEntry {
                        task,
                        role: role.clone(),
                        resources: res,
                        allocated: true,
                    },
                );
                self.counters.tasks_launched += 1;
            }
            self.to_agent(&agent_id, msg);
        }
        Ok(())
    }

    /// Validates one task of a launch and takes its resources out of `available`.
    fn check_task(
        &self,
        framework_id: &str,
        agent_id: &str,
        task: &v1::TaskInfo,
        available: &mut Resources,
        ids_in_call: &mut HashSet<String>,
        field: &str,
    ) -> Result<Resources, String> {
        if task.task_id.is_empty() {
            return Err(format!("{field}.task_id must not be empty"));
        }
        if let Some(bad) = task.task_id.chars().find(|c| c.is_control() || *c == '/') {
            return Err(format!(
                "{field}.task_id contains {bad:?}, which is not allowed"
            ));
        }
        let key = (framework_id.to_string(), task.task_id.clone());
        if self.tasks.contains_key(&key) || !ids_in_call.insert(task.task_id.clone()) {
            return Err(format!(
                "{field}.task_id '{}' is already used by a task of this framework that has not ended",
                task.task_id
            ));
        }
        if !task.agent_id.is_empty() && task.agent_id != agent_id {
            return Err(format!(
                "{field}.agent_id '{}' is not the agent of the accepted offers ('{agent_id}')",
                task.agent_id
            ));
        }
        if task.command.is_none() && task.executor.is_none() {
            return Err(format!(
                "{field}.command is required (or a custom executor)"
            ));
        }
        if let Some(c) = &task.command {
            if task.executor.is_none() && c.value.is_empty() && c.arguments.is_empty() {
                let docker = task
                    .container
                    .as_ref()
                    .and_then(|c| c.docker.as_ref())
                    .is_some();
                if !docker {
                    return Err(format!("{field}.command has neither a value nor arguments"));
                }
            }
        }
        if let Some(c) = &task.container {
            if c.r#type == v1::ContainerType::Docker as i32
                && c.docker.as_ref().is_none_or(|d| d.image.trim().is_empty())
            {
                return Err(format!(
                    "{field}.container.docker.image is required for a DOCKER container"
                ));
            }
        }
        let mut wanted = Resources::from_proto(&task.resources)
            .map_err(|e| format!("{field}.resources: {e}"))?;
        if let Some(ex) = &task.executor {
            let ex_res = Resources::from_proto(&ex.resources)
                .map_err(|e| format!("{field}.executor.resources: {e}"))?;
            wanted.add(&ex_res);
        }
        if wanted.scalar_total("cpus") <= 0.0 && wanted.scalar_total("mem") <= 0.0 {
            return Err(format!("{field}.resources must include cpus or mem"));
        }
        available.take_flattened(&wanted).ok_or_else(|| {
            format!(
                "{field}.resources {wanted} do not fit in what is left of the offers ({available}): \
                 the accept over-commits them"
            )
        })
    }

    /// Reports every task of a refused accept as TASK_DROPPED.
    fn drop_tasks(
        &mut self,
        framework_id: &str,
        tasks: &[(String, String)],
        why: &str,
        clock: &Clock,
    ) {
        for (task_id, agent_id) in tasks {
            self.counters.tasks_invalid += 1;
            let st = status(
                task_id,
                agent_id,
                TaskState::TaskDropped,
                v1::Reason::InvalidOffers,
                format!("the accept was refused: {why}"),
                clock.wall,
            );
            self.to_framework(framework_id, update_event(st));
        }
    }

    // ------------------------------------------------------------------------------------------
    // Tasks
    // ------------------------------------------------------------------------------------------

    /// Asks the task's agent to kill it.
    ///
    /// # Errors
    /// Header errors; [`MasterError::NotFound`] for a task the master does not know;
    /// [`MasterError::InvalidArgument`] for an agent id that is not the task's.
    pub fn kill(&mut self, req: v1::KillRequest, clock: &Clock) -> Result<(), MasterError> {
        let framework_id = self.check_header(req.header.as_ref())?;
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
        let agent_id = entry.task.agent_id.clone();
        let policy = req.kill_policy.or_else(|| entry.task.kill_policy.clone());
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
        self.to_agent(
            &agent_id,
            master_message::Message::KillTask(master_message::KillTask {
                framework_id,
                task_id: req.task_id,
                kill_policy: policy,
            }),
        );
        Ok(())
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

    // ------------------------------------------------------------------------------------------
    // Roles
    // ------------------------------------------------------------------------------------------

    /// Sets role weights (all or nothing).
    ///
    /// # Errors
    /// [`MasterError::InvalidArgument`] naming the bad entry.
    pub fn update_weights(&mut self, weights: &[v1::WeightInfo]) -> Result<(), MasterError> {
        for (i, w) in weights.iter().enumerate() {
            agora_proto::resources::validate_role(&w.role)
                .map_err(|p| MasterError::invalid(format!("weights[{i}].role"), p))?;
            if !(w.weight.is_finite() && w.weight > 0.0) {
                return Err(MasterError::invalid(
                    format!("weights[{i}].weight"),
                    format!("{} must be a positive number", w.weight),
                ));
            }
        }
        for w in weights {
            let _ = self.allocator.update_weight(&w.role, w.weight);
            self.registry.weights.insert(w.role.clone(), w.weight);
        }
        self.registry_dirty = true;
        Ok(())
    }

    /// Sets (or with no resources removes) a role's quota guarantee.
    ///
    /// # Errors
    /// [`MasterError::InvalidArgument`] for a bad role or resources.
    pub fn set_quota(&mut self, req: v1::SetQuotaRequest) -> Result<(), MasterError> {
        agora_proto::resources::validate_role(&req.role)
            .map_err(|p| MasterError::invalid("role", p))?;
        if req.role == "*" {
            return Err(MasterError::invalid(
                "role",
                "the default role '*' cannot have a quota",
            ));
        }
        let q = Resources::from_proto(&req.guarantee)
            .map_err(|e| MasterError::invalid("guarantee", e.to_string()))?
            .flatten();
        self.allocator.set_quota(&req.role, &q);
        if q.is_empty() {
            self.registry.quotas.remove(&req.role);
        } else {
            self.registry.quotas.insert(req.role.clone(), q.to_string());
        }
        self.registry_dirty = true;
        Ok(())
    }

    // ------------------------------------------------------------------------------------------
    // Timers
    // ------------------------------------------------------------------------------------------

    /// Whether a new leader is still waiting for the registry's agents to re-register (it makes
    /// no offers meanwhile, so that frameworks do not launch on a half-known cluster). Agents that
    /// miss the deadline are recorded unreachable.
    pub fn still_recovering(&mut self, clock: &Clock) -> bool {
        let Some((expected, deadline)) = self.recovering.as_mut() else {
            return false;
        };
        let deadline = *deadline.get_or_insert(clock.now + self.settings.agent_reregister_timeout);
        if !expected.is_empty() && clock.now < deadline {
            return true;
        }
        let missing: Vec<String> = expected.drain().collect();
        self.recovering = None;
        for id in missing {
            if let Some(r) = self.registry.agents.get_mut(&id) {
                r.unreachable_since = Some(clock.wall);
                self.registry_dirty = true;
            }
        }
        false
    }

    /// Housekeeping: silent agents become unreachable and then gone, disconnected frameworks past
    /// their failover timeout are removed, old offers are rescinded.
    pub fn tick(&mut self, clock: &Clock) {
        self.still_recovering(clock);
        let mut silent = Vec::new();
        let mut gone = Vec::new();
        for (id, a) in &self.agents {
            match a.status {
                AgentStatus::Active => {
                    if clock.now.saturating_duration_since(a.last_seen)
                        > self.settings.agent_timeout
                    {
                        silent.push(id.clone());
                    }
                }
                AgentStatus::Unreachable { since } => {
                    if clock.now.saturating_duration_since(since) > self.settings.agent_gone_timeout
                    {
                        gone.push(id.clone());
                    }
                }
            }
        }
        silent.sort();
        for id in silent {
            self.mark_agent_unreachable(&id, clock);
        }
        gone.sort();
        for id in gone {
            let _ = self.mark_agent_gone(&id, clock);
        }
        let mut expired: Vec<String> = self
            .frameworks
            .iter()
            .filter(|(_, f)| !f.connected && f.failover_deadline.is_some_and(|d| clock.now >= d))
            .map(|(id, _)| id.clone())
            .collect();
        expired.sort();
        for id in expired {
            self.remove_framework(
                &id,
                "it did not re-subscribe within its failover timeout",
                clock,
            );
        }
        if self.settings.offer_timeout.is_some() {
            let mut old: Vec<String> = self
                .offers
                .iter()
                .filter(|(_, o)| o.expires.is_some_and(|e| clock.now >= e))
                .map(|(id, _)| id.clone())
                .collect();
            old.sort();
            for id in old {
                self.rescind(&id, true);
            }
        }
    }

    /// Connected frameworks, for heartbeats.
    pub fn connected_frameworks(&self) -> Vec<String> {
        self.frameworks
            .iter()
            .filter(|(_, f)| f.connected)
            .map(|(id, _)| id.clone())
            .collect()
    }

    // ------------------------------------------------------------------------------------------
    // State
    // ------------------------------------------------------------------------------------------

    /// The cluster as the operator API shows it.
    pub fn state(&self, leader: &str) -> v1::GetStateResponse {
        let mut agents: Vec<v1::AgentState> = self
            .agents
            .iter()
            .map(|(id, a)| {
                let mut used = Resources::new();
                for key in &a.tasks {
                    if let Some(t) = self.tasks.get(key) {
                        used.add(&t.resources);
                    }
                }
                let mut offered = Resources::new();
                for o in &a.offers {
                    if let Some(e) = self.offers.get(o) {
                        offered.add(&e.resources);
                    }
                }
                let mut info = a.info.clone();
                info.resources = a.total.to_proto();
                v1::AgentState {
                    id: id.clone(),
                    info: Some(info),
                    used_resources: used.to_proto(),
                    offered_resources: offered.to_proto(),
                    active: a.status == AgentStatus::Active,
                    draining: a.draining,
                    registered_time: a.registered_time,
                    usage: a.usage.clone(),
                }
            })
            .collect();
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        let mut frameworks: Vec<v1::FrameworkState> = self
            .frameworks
            .iter()
            .map(|(id, f)| {
                let mut used = Resources::new();
                for t in &f.tasks {
                    if let Some(e) = self.tasks.get(&(id.clone(), t.clone())) {
                        used.add(&e.resources);
                    }
                }
                let mut offered = Resources::new();
                for o in &f.offers {
                    if let Some(e) = self.offers.get(o) {
                        offered.add(&e.resources);
                    }
                }
                let share = f
                    .info
                    .roles
                    .iter()
                    .filter_map(|r| self.allocator.framework_share(id, r))
                    .fold(0.0, f64::max);
                let mut suppressed: Vec<String> = f.suppressed.iter().cloned().collect();
                suppressed.sort();
                v1::FrameworkState {
                    info: Some(f.info.clone()),
                    connected: f.connected,
                    dominant_share: share,
                    used_resources: used.to_proto(),
                    offered_resources: offered.to_proto(),
                    registered_time: f.registered_time,
                    suppressed_roles: suppressed,
                }
            })
            .collect();
        frameworks.sort_by(|a, b| {
            let ia = a.info.as_ref().map(|i| i.id.as_str()).unwrap_or("");
            let ib = b.info.as_ref().map(|i| i.id.as_str()).unwrap_or("");
            ia.cmp(ib)
        });
        let mut tasks: Vec<v1::Task> = self.tasks.values().map(|t| t.task.clone()).collect();
        tasks.sort_by(|a, b| (&a.framework_id, &a.task_id).cmp(&(&b.framework_id, &b.task_id)));
        let mut offers: Vec<v1::Offer> = self.offers.values().map(|o| o.offer.clone()).collect();
        offers.sort_by(|a, b| a.id.cmp(&b.id));
        v1::GetStateResponse {
            master_info: Some(self.settings.master_info.clone()),
            leader: leader.to_string(),
            agents,
            frameworks,
            tasks,
            offers,
            roles: self.roles(),
            completed_tasks: self.completed.iter().cloned().collect(),
        }
    }

    /// Every known role with its weight, quota, allocation and frameworks.
    pub fn roles(&self) -> Vec<v1::RoleState> {
        self.allocator
            .role_shares()
            .into_iter()
            .map(|r| {
                let mut frameworks: Vec<String> = self
                    .frameworks
                    .iter()
                    .filter(|(_, f)| f.info.roles.contains(&r.role))
                    .map(|(id, _)| id.clone())
                    .collect();
                frameworks.sort();
                v1::RoleState {
                    name: r.role.clone(),
                    weight: r.weight,
                    quota: quantities_to_proto(&r.quota),
                    allocated: quantities_to_proto(&r.allocated),
                    frameworks,
                    priority: r.priority,
                }
            })
            .collect()
    }

    /// Counts for gauges: (active agents, unreachable agents, connected frameworks, tasks by state,
    /// outstanding offers).
    pub fn gauges(&self) -> Gauges {
        let mut g = Gauges::default();
        for a in self.agents.values() {
            match a.status {
                AgentStatus::Active => g.agents_active += 1,
                AgentStatus::Unreachable { .. } => g.agents_unreachable += 1,
            }
        }
        g.frameworks_connected = self.frameworks.values().filter(|f| f.connected).count();
        g.frameworks_disconnected = self.frameworks.len() - g.frameworks_connected;
        for t in self.tasks.values() {
            *g.tasks.entry(state_of(&t.task).as_str_name()).or_default() += 1;
        }
        g.offers = self.offers.len();
        g.role_shares = self
            .allocator
            .role_shares()
            .into_iter()
            .map(|r| (r.role, r.share))
            .collect();
        g
    }
}

/// Gauge values for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub agents_active: usize,
    pub agents_unreachable: usize,
    pub frameworks_connected: usize,
    pub frameworks_disconnected: usize,
    pub tasks: BTreeMap<&'static str, usize>,
    pub offers: usize,
    pub role_shares: Vec<(String, f64)>,
}

fn quantities_to_proto(q: &crate::allocator::Quantities) -> Vec<v1::Resource> {
    let mut r = Resources::new();
    for (i, name) in crate::allocator::SHARE_RESOURCES.iter().enumerate() {
        if q.0[i] > 0 {
            r.add_scalar(agora_proto::ResourceKey::unreserved(name), q.0[i]);
        }
    }
    r.to_proto()
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn refuse_of(filters: Option<&v1::Filters>) -> Result<Option<Duration>, MasterError> {
    match filters.and_then(|f| f.refuse_seconds) {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s.min(1e9)))),
        Some(s) => Err(MasterError::invalid(
            "filters.refuse_seconds",
            format!("{s} must be a finite number >= 0"),
        )),
    }
}

fn check_reservation(
    resources: &[v1::Resource],
    fw: &v1::FrameworkInfo,
    field: &str,
) -> Result<Resources, MasterError> {
    let res =
        Resources::from_proto(resources).map_err(|e| MasterError::invalid(field, e.to_string()))?;
    if res.is_empty() {
        return Err(MasterError::invalid(field, "must not be empty"));
    }
    for (i, r) in resources.iter().enumerate() {
        if r.role.is_empty() || r.role == "*" || !fw.roles.contains(&r.role) {
            return Err(MasterError::invalid(
                format!("{field}[{i}].role"),
                format!(
                    "'{}' must be one of the framework's roles {:?}",
                    r.role, fw.roles
                ),
            ));
        }
        let Some(resv) = &r.reservation else {
            return Err(MasterError::invalid(
                format!("{field}[{i}].reservation"),
                "is required for a dynamic reservation",
            ));
        };
        if !fw.principal.is_empty() && resv.principal != fw.principal {
            return Err(MasterError::invalid(
                format!("{field}[{i}].reservation.principal"),
                format!(
                    "'{}' is not the framework's principal '{}'",
                    resv.principal, fw.principal
                ),
            ));
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests;
