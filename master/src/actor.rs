//! The master actor: one tokio task that owns the [`Bookkeeping`] and the streams to agents and
//! frameworks. Handlers send it closures or stream events and await a oneshot reply; timers drive
//! allocation, housekeeping, heartbeats and registry writes. Nothing else touches the core.
//!
//! ```text
//!  handlers ──Request──▶ mpsc ──▶ actor loop ──▶ Bookkeeping ──Outbound──▶ agent / framework streams
//!                                   ▲  timers: allocation interval, housekeeping, heartbeat
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_proto::v1;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::bookkeeping::{Bookkeeping, Clock, Outbound};
use crate::error::{MasterError, StoreError};
use crate::registry::StateStore;

/// A stream to a framework: events or a terminal status.
pub type EventSender = mpsc::UnboundedSender<Result<v1::Event, tonic::Status>>;
/// A stream to an agent.
pub type AgentSender = mpsc::UnboundedSender<Result<v1::MasterMessage, tonic::Status>>;

type Job = Box<dyn FnOnce(&mut Bookkeeping, &Clock) + Send>;

/// Messages kept for an agent without a session before new ones are dropped.
const MAX_PENDING_PER_AGENT: usize = 10_000;

/// What handlers ask of the actor.
pub enum Request {
    /// Run a closure on the core (every unary call).
    Exec(Job),
    Subscribe {
        request: v1::SubscribeRequest,
        events: EventSender,
        reply: oneshot::Sender<Result<(), MasterError>>,
    },
    FrameworkClosed {
        framework_id: String,
        stream_id: String,
    },
    AgentSession {
        agent_id: String,
        messages: AgentSender,
        reply: oneshot::Sender<Result<u64, MasterError>>,
    },
    AgentMessage {
        agent_id: String,
        message: v1::agent_message::Message,
    },
    AgentClosed {
        agent_id: String,
        connection: u64,
    },
}

/// A cheap handle to the actor.
#[derive(Clone)]
pub struct MasterHandle {
    tx: mpsc::UnboundedSender<Request>,
    leader: Arc<str>,
}

impl MasterHandle {
    /// Runs `f` on the core and returns its result.
    ///
    /// # Errors
    /// [`MasterError::Unavailable`] if the actor has stopped; otherwise whatever `f` returns.
    pub async fn call<T, F>(&self, f: F) -> Result<T, MasterError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Bookkeeping, &Clock) -> Result<T, MasterError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |book, clock| {
            let _ = reply.send(f(book, clock));
        });
        self.tx
            .send(Request::Exec(job))
            .map_err(|_| MasterError::Unavailable("the master is stopping".into()))?;
        rx.await
            .map_err(|_| MasterError::Unavailable("the master is stopping".into()))?
    }

    /// Sends a request without waiting.
    pub fn send(&self, request: Request) -> Result<(), MasterError> {
        self.tx
            .send(request)
            .map_err(|_| MasterError::Unavailable("the master is stopping".into()))
    }

    /// Address of the leading master (this one in standalone mode).
    pub fn leader(&self) -> &str {
        &self.leader
    }
}

/// Timer periods of the actor.
#[derive(Debug, Clone)]
pub struct Timers {
    pub allocation_interval: Duration,
    pub housekeeping: Duration,
    pub framework_heartbeat: Duration,
}

/// Starts the actor. It stops when `shutdown` turns true; a registry write failure stops it too
/// (a master must not act on state it cannot persist) and is returned through the join handle.
pub fn spawn(
    book: Bookkeeping,
    store: Arc<dyn StateStore>,
    store_version: Option<u64>,
    timers: Timers,
    leader: String,
    shutdown: watch::Receiver<bool>,
) -> (
    MasterHandle,
    tokio::task::JoinHandle<Result<(), StoreError>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = MasterHandle {
        tx: tx.clone(),
        leader: leader.into(),
    };
    let actor = Actor {
        book,
        store,
        store_version,
        frameworks: HashMap::new(),
        agents: HashMap::new(),
        pending: HashMap::new(),
        next_connection: 0,
        self_tx: tx,
    };
    let join = tokio::spawn(actor.run(rx, timers, shutdown));
    (handle, join)
}

struct Actor {
    book: Bookkeeping,
    store: Arc<dyn StateStore>,
    store_version: Option<u64>,
    /// framework id → (stream id, sender)
    frameworks: HashMap<String, (String, EventSender)>,
    /// agent id → (connection number, sender)
    agents: HashMap<String, (u64, AgentSender)>,
    /// Messages for agents between (re-)registration and their session's `hello` (a kill sent
    /// then must not be lost); delivered when the session opens.
    pending: HashMap<String, Vec<v1::MasterMessage>>,
    next_connection: u64,
    self_tx: mpsc::UnboundedSender<Request>,
}

impl Actor {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Request>,
        timers: Timers,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        let mut allocation = tokio::time::interval(timers.allocation_interval);
        allocation.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(timers.housekeeping);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat = tokio::time::interval(timers.framework_heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                request = rx.recv() => {
                    let Some(request) = request else { break };
                    self.handle(request);
                    // Drain what is queued before delivering, so bursts cost one delivery pass.
                    let mut n = 0;
                    while n < 1024 {
                        match rx.try_recv() {
                            Ok(r) => self.handle(r),
                            Err(_) => break,
                        }
                        n += 1;
                    }
                    self.deliver();
                    crate::metrics::status_update_round_trips(&self.book.take_round_trips());
                    // Group commit: one registry write per drained batch of requests.
                    self.persist().await?;
                }
                _ = allocation.tick() => {
                    let started = Instant::now();
                    let stats = self.book.allocate(&Clock::system());
                    crate::metrics::allocation_cycle(started.elapsed(), &stats);
                    self.deliver();
                }
                _ = housekeeping.tick() => {
                    self.book.tick(&Clock::system());
                    self.deliver();
                    self.persist().await?;
                }
                _ = heartbeat.tick() => {
                    let beat = v1::Event { event: Some(v1::event::Event::Heartbeat(v1::event::Heartbeat {})) };
                    for (_, tx) in self.frameworks.values() {
                        let _ = tx.send(Ok(beat.clone()));
                    }
                }
            }
        }
        self.persist().await?;
        info!("master actor stopped");
        Ok(())
    }

    async fn persist(&mut self) -> Result<(), StoreError> {
        let Some(registry) = self.book.take_registry() else {
            return Ok(());
        };
        match self
            .store
            .store(registry.to_bytes(), self.store_version)
            .await
        {
            Ok(v) => {
                self.store_version = Some(v);
                Ok(())
            }
            Err(e) => {
                error!(error = %e, "cannot write the registry: stopping");
                Err(e)
            }
        }
    }

    fn handle(&mut self, request: Request) {
        let clock = Clock::system();
        match request {
            Request::Exec(job) => job(&mut self.book, &clock),
            Request::Subscribe {
                request,
                events,
                reply,
            } => match self.book.subscribe(request, &clock) {
                Ok((framework_id, stream_id)) => {
                    if let Some((_, old)) = self.frameworks.remove(&framework_id) {
                        let _ = old.send(Err(tonic::Status::failed_precondition(format!(
                            "framework '{framework_id}' was re-subscribed by another scheduler \
                             instance (failover): this subscription is closed"
                        ))));
                    }
                    let watcher = events.clone();
                    let tx = self.self_tx.clone();
                    let (fid, sid) = (framework_id.clone(), stream_id.clone());
                    tokio::spawn(async move {
                        watcher.closed().await;
                        let _ = tx.send(Request::FrameworkClosed {
                            framework_id: fid,
                            stream_id: sid,
                        });
                    });
                    self.frameworks.insert(framework_id, (stream_id, events));
                    let _ = reply.send(Ok(()));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Request::FrameworkClosed {
                framework_id,
                stream_id,
            } => {
                if self
                    .frameworks
                    .get(&framework_id)
                    .is_some_and(|(s, _)| *s == stream_id)
                {
                    self.frameworks.remove(&framework_id);
                }
                self.book
                    .framework_disconnected(&framework_id, &stream_id, &clock);
            }
            Request::AgentSession {
                agent_id,
                messages,
                reply,
            } => match self.book.agent_connected(&agent_id, &clock) {
                Ok(()) => {
                    self.next_connection += 1;
                    let connection = self.next_connection;
                    for m in self.pending.remove(&agent_id).unwrap_or_default() {
                        let _ = messages.send(Ok(m));
                    }
                    self.agents.insert(agent_id, (connection, messages));
                    let _ = reply.send(Ok(connection));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Request::AgentMessage { agent_id, message } => {
                self.book.agent_message(&agent_id, message, &clock)
            }
            Request::AgentClosed {
                agent_id,
                connection,
            } => {
                if self
                    .agents
                    .get(&agent_id)
                    .is_some_and(|(c, _)| *c == connection)
                {
                    self.agents.remove(&agent_id);
                    self.book.agent_disconnected(&agent_id);
                }
            }
        }
    }

    fn deliver(&mut self) {
        for out in self.book.take_outbound() {
            match out {
                Outbound::Framework {
                    framework_id,
                    event,
                } => {
                    if let Some((_, tx)) = self.frameworks.get(&framework_id) {
                        let _ = tx.send(Ok(event));
                    }
                }
                Outbound::Agent { agent_id, message } => match self.agents.get(&agent_id) {
                    Some((_, tx)) => {
                        let _ = tx.send(Ok(message));
                    }
                    None => {
                        let queue = self.pending.entry(agent_id.clone()).or_default();
                        if queue.len() >= MAX_PENDING_PER_AGENT {
                            warn!(%agent_id, "no session to the agent and its queue is full: message dropped");
                        } else {
                            queue.push(message);
                        }
                    }
                },
                // The watcher task holds a sender clone, so dropping ours would not end the
                // stream: an error status does.
                Outbound::CloseFramework { framework_id } => {
                    if let Some((_, tx)) = self.frameworks.remove(&framework_id) {
                        let _ = tx.send(Err(tonic::Status::aborted(format!(
                            "framework '{framework_id}' was removed by the master"
                        ))));
                    }
                }
                Outbound::CloseAgent { agent_id } => {
                    self.pending.remove(&agent_id);
                    if let Some((_, tx)) = self.agents.remove(&agent_id) {
                        let _ = tx.send(Err(tonic::Status::failed_precondition(format!(
                            "the master ended the session of agent '{agent_id}': re-register"
                        ))));
                    }
                }
            }
        }
    }
}
