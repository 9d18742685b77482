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
//!
//! This file holds the types and the helpers the rest share; the methods live in one child module
//! per concern: `agents`, `frameworks`, `offers`, `accept`, `tasks`, `roles`,
//! `timers` and `state` (each an `impl Bookkeeping` block).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use agora_proto::v1::{self, event, master_message, TaskState};
use agora_proto::Resources;

use crate::allocator::{Allocator, AllocatorConfig};
use crate::error::MasterError;
use crate::registry::Registry;

// `tests.rs` reaches these through `use super::*`.
#[cfg(test)]
use crate::registry::AgentRecord;
#[cfg(test)]
use agora_proto::v1::{agent_message, operation};

mod accept;
mod agents;
mod frameworks;
pub use frameworks::Caller;
pub mod limits;
mod offers;
mod roles;
mod state;
mod tasks;
mod timers;

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
    /// Drain before kill: a killed task with endpoints leaves every agent's table first; its kill
    /// waits for every connected agent's acknowledgement, at most this long (zero: off; bounded by
    /// [`crate::drain::MAX_DRAIN_PERIOD`]).
    pub drain_period: Duration,
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
    /// Session token of each agent's latest (re-)registration.
    session_tokens: HashMap<String, String>,
    /// After a take-over: the registry's agents not yet re-registered, and when to stop waiting
    /// (set by the first timer call, since `new` has no clock).
    recovering: Option<(HashSet<String>, Option<Instant>)>,
    /// Updates relayed to frameworks and not yet acknowledged: uuid → when the agent's update
    /// arrived. At most [`MAX_TIMED_UPDATES`], so frameworks that never acknowledge cannot grow it.
    awaiting_ack: HashMap<Vec<u8>, Instant>,
    /// Agent update → framework acknowledgement, since the last [`Bookkeeping::take_round_trips`].
    round_trips: Vec<Duration>,
    /// Service → endpoints, pushed to agents (see [`crate::endpoints`]).
    endpoints: crate::endpoints::EndpointTable,
    /// Tasks whose endpoints may have changed since the last [`Bookkeeping::take_outbound`].
    endpoints_dirty: HashSet<TaskKey>,
    /// Kills held while their tasks drain (see [`crate::drain`]).
    drains: crate::drain::Drains,
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
    /// Kills held for a drain, and how they were let go.
    pub drains_started: u64,
    pub drains_acknowledged: u64,
    pub drains_timed_out: u64,
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
            session_tokens: HashMap::new(),
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
            endpoints: crate::endpoints::EndpointTable::new(),
            endpoints_dirty: HashSet::new(),
            drains: crate::drain::Drains::new(),
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
        self.flush_endpoints();
        self.forward_released_kills();
        std::mem::take(&mut self.outbound)
    }

    /// Sends the kills whose drain is over to the tasks' agents.
    fn forward_released_kills(&mut self) {
        for r in self.drains.take_released() {
            match r.why {
                crate::drain::Why::Acknowledged => self.counters.drains_acknowledged += 1,
                crate::drain::Why::Deadline => {
                    self.counters.drains_timed_out += 1;
                    tracing::warn!(
                        task = %r.task.1,
                        agents = r.missing,
                        drained_ms = r.drained_for.as_millis() as u64,
                        "drain period over before every agent acknowledged the endpoint removal: killing"
                    );
                }
            }
            tracing::debug!(task = %r.task.1, why = ?r.why, drained_ms = r.drained_for.as_millis() as u64, "drained: kill forwarded");
            self.to_agent(
                &r.held.agent_id,
                master_message::Message::KillTask(r.held.kill),
            );
        }
    }

    /// Releases the kills whose drain period is over (the actor calls it at
    /// [`Bookkeeping::next_drain_deadline`]).
    pub fn drain_tick(&mut self, clock: &Clock) {
        self.drains.tick(clock.now);
    }

    /// When the earliest drain period ends, if any task is draining.
    pub fn next_drain_deadline(&self) -> Option<Instant> {
        self.drains.next_deadline()
    }

    /// How many tasks are draining (their kill held).
    pub fn draining_tasks(&self) -> usize {
        self.drains.len()
    }

    /// Marks a task whose state, health or agent changed: its endpoints are recomputed before the
    /// next messages go out.
    fn touch_endpoints(&mut self, key: &TaskKey) {
        self.endpoints_dirty.insert(key.clone());
    }

    /// Recomputes the touched tasks' endpoints and queues the changed services for every
    /// connected agent.
    fn flush_endpoints(&mut self) {
        if self.endpoints_dirty.is_empty() {
            self.drains.release_unsequenced();
            return;
        }
        for key in std::mem::take(&mut self.endpoints_dirty) {
            let entry = if self.drains.is_draining(&key) {
                None
            } else {
                self.endpoints_of(&key)
            };
            if !self.endpoints.set_task(&key, entry) {
                tracing::warn!(
                    task = %key.1,
                    max = crate::endpoints::MAX_SERVICES,
                    "endpoint table full (services): the task's service is left out"
                );
            }
        }
        let services = self.endpoints.take_changes();
        if services.is_empty() {
            // Nothing left the table (nothing was in it any more): no one to wait for.
            self.drains.release_unsequenced();
            return;
        }
        let agents = self.session_agents();
        // Drains started in this batch: the update that takes them out asks for an
        // acknowledgement, and their kills wait for it.
        let ack_seq = self.drains.sequence(&agents).unwrap_or(0);
        let update = master_message::EndpointUpdate {
            full: false,
            services,
            ack_seq,
        };
        for id in agents {
            self.to_agent(&id, master_message::Message::EndpointUpdate(update.clone()));
        }
    }

    /// What the task contributes to the endpoint table by its current state (nothing while its
    /// agent is unreachable).
    fn endpoints_of(&self, key: &TaskKey) -> Option<crate::endpoints::TaskEndpoints> {
        let t = self.tasks.get(key)?;
        let framework = &self.frameworks.get(&key.0)?.info.name;
        // A task on an unreachable agent cannot be reached.
        let agent = self
            .agents
            .get(&t.task.agent_id)
            .filter(|a| a.status == AgentStatus::Active)?;
        crate::endpoints::task_endpoints(&t.task, framework, Some(&agent.info))
    }

    /// Whether agents have, or are about to be sent, endpoints of the task.
    fn has_endpoints(&self, key: &TaskKey) -> bool {
        self.endpoints.has_task(key)
            || (self.endpoints_dirty.contains(key) && self.endpoints_of(key).is_some())
    }

    /// Agents with an open session, which endpoint updates go to.
    fn session_agents(&self) -> Vec<String> {
        self.agents
            .iter()
            .filter(|(_, a)| a.connected && a.status == AgentStatus::Active)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The whole endpoint table, for an agent whose session just opened.
    fn send_full_endpoints(&mut self, agent_id: &str) {
        self.flush_endpoints();
        let services = self.endpoints.full();
        self.to_agent(
            agent_id,
            master_message::Message::EndpointUpdate(master_message::EndpointUpdate {
                full: true,
                services,
                ack_seq: 0,
            }),
        );
    }

    /// How many services have endpoints (for `/metrics`).
    pub fn endpoint_services(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether the registry has changes [`Bookkeeping::take_registry`] has not handed out yet.
    pub fn registry_pending(&self) -> bool {
        self.registry_dirty
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

fn refuse_of(filters: Option<&v1::Filters>) -> Result<Option<Duration>, MasterError> {
    limits::refuse_seconds(filters)
}

#[cfg(test)]
mod tests;
