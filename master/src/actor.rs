//! The master actor: one tokio task that owns the [`Bookkeeping`] and the streams to agents and
//! frameworks. Handlers send it closures or stream events and await a oneshot reply; timers drive
//! allocation, housekeeping, heartbeats and registry writes. Nothing else touches the core.
//!
//! Acknowledged writes: a call whose closure changed the registry (agent admission, mark-gone,
//! reserve/unreserve, weights, quota, drain/reactivate) is answered only after the store's write
//! returned, and what the batch sends to agents and frameworks goes out after it too. Replies of a
//! drained batch are held until the batch's one registry write (group commit); a failed write
//! answers the calls that changed the registry with `UNAVAILABLE` naming the reason, and stops
//! the actor (a master must not act on state it cannot persist).
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

/// What a job leaves for after the batch's registry write: it sends the reply, as the job's
/// result or, when the write failed and `failure` is given, that error.
type Done = Box<dyn FnOnce(Option<&MasterError>) + Send>;
type Job = Box<dyn FnOnce(&mut Bookkeeping, &Clock) -> Done + Send>;

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
        /// The `hello`'s session token.
        session_token: String,
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
            let result = f(book, clock);
            Box::new(move |failure: Option<&MasterError>| {
                let result = match (failure, result) {
                    (Some(e), Ok(_)) => Err(e.clone()),
                    (_, r) => r,
                };
                let _ = reply.send(result);
            })
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
        held: Vec::new(),
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
    /// Replies of this batch, waiting for its registry write; `true`: the registry had changes
    /// not yet written when the job ended, so the reply depends on the write.
    held: Vec<(Done, bool)>,
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
                    crate::metrics::status_update_round_trips(&self.book.take_round_trips());
                    // Group commit: one registry write per drained batch of requests, then the
                    // replies and messages of the batch.
                    self.persist().await?;
                    self.deliver();
                }
                _ = allocation.tick() => {
                    let started = Instant::now();
                    let stats = self.book.allocate(&Clock::system());
                    crate::metrics::allocation_cycle(started.elapsed(), &stats);
                    self.deliver();
                }
                _ = housekeeping.tick() => {
                    self.book.tick(&Clock::system());
                    self.persist().await?;
                    self.deliver();
                }
                // The earliest drain deadline (a kill held for a drain goes out then at the
                // latest); far away when nothing drains.
                _ = tokio::time::sleep_until(
                    self.book
                        .next_drain_deadline()
                        .map(tokio::time::Instant::from_std)
                        .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600)),
                ) => {
                    self.book.drain_tick(&Clock::system());
                    self.deliver();
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

    /// Writes the registry if it changed, then answers the held replies: with their results
    /// once the write returned, with `UNAVAILABLE` for those that depend on a failed write.
    async fn persist(&mut self) -> Result<(), StoreError> {
        let written = match self.book.take_registry() {
            None => Ok(()),
            Some(registry) => self
                .store
                .store(registry.to_bytes(), self.store_version)
                .await
                .map(|v| self.store_version = Some(v)),
        };
        let held = std::mem::take(&mut self.held);
        match written {
            Ok(()) => {
                for (done, _) in held {
                    done(None);
                }
                Ok(())
            }
            Err(e) => {
                error!(error = %e, "cannot write the registry: stopping");
                let why = match &e {
                    StoreError::Conflict { .. } => format!(
                        "the registry write failed ({e}): another master leads; retry against it"
                    ),
                    _ => format!("the registry write failed ({e}); retry against the next leader"),
                };
                let failure = MasterError::Unavailable(why);
                for (done, depends) in held {
                    done(depends.then_some(&failure));
                }
                Err(e)
            }
        }
    }

    fn handle(&mut self, request: Request) {
        let clock = Clock::system();
        match request {
            Request::Exec(job) => {
                let done = job(&mut self.book, &clock);
                let depends = self.book.registry_pending();
                self.held.push((done, depends));
            }
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
                session_token,
                messages,
                reply,
            } => match self
                .book
                .check_session_token(&agent_id, &session_token)
                .and_then(|()| self.book.agent_connected(&agent_id, &clock))
            {
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
                    self.book.agent_disconnected(&agent_id, &clock);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Semaphore;

    use super::*;
    use crate::allocator::AllocatorConfig;
    use crate::bookkeeping::Settings;
    use crate::registry::{Registry, StoreFuture, Versioned};

    /// A store whose writes announce themselves, wait for a permit, then succeed or fail.
    struct GatedStore {
        entered: mpsc::UnboundedSender<()>,
        release: Semaphore,
        fail: Option<fn() -> StoreError>,
        writes: AtomicUsize,
    }

    impl StateStore for GatedStore {
        fn load(&self) -> StoreFuture<'_, Option<Versioned>> {
            Box::pin(async { Ok(None) })
        }

        fn store(&self, _data: Vec<u8>, expected: Option<u64>) -> StoreFuture<'_, u64> {
            Box::pin(async move {
                let _ = self.entered.send(());
                let permit = self.release.acquire().await.map_err(|e| StoreError::Io {
                    path: "gated".into(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                permit.forget();
                self.writes.fetch_add(1, Ordering::SeqCst);
                match self.fail {
                    Some(f) => Err(f()),
                    None => Ok(expected.unwrap_or(0) + 1),
                }
            })
        }
    }

    fn settings() -> Settings {
        Settings {
            master_info: v1::MasterInfo {
                id: "m1".into(),
                ..Default::default()
            },
            agent_timeout: Duration::from_secs(100),
            agent_gone_timeout: Duration::from_secs(1000),
            offer_timeout: None,
            framework_recovery_timeout: Duration::from_secs(60),
            framework_heartbeat: Duration::from_secs(3600),
            completed_tasks_kept: 10,
            agent_reregister_timeout: Duration::from_secs(20),
            drain_period: Duration::from_secs(2),
        }
    }

    struct Running {
        handle: MasterHandle,
        join: tokio::task::JoinHandle<Result<(), StoreError>>,
        store: Arc<GatedStore>,
        entered: mpsc::UnboundedReceiver<()>,
        _shutdown: watch::Sender<bool>,
    }

    fn start(fail: Option<fn() -> StoreError>, permits: usize) -> Running {
        let (entered_tx, entered) = mpsc::unbounded_channel();
        let store = Arc::new(GatedStore {
            entered: entered_tx,
            release: Semaphore::new(permits),
            fail,
            writes: AtomicUsize::new(0),
        });
        let book = Bookkeeping::new(settings(), AllocatorConfig::default(), Registry::default());
        let (shutdown_tx, shutdown) = watch::channel(false);
        let hour = Duration::from_secs(3600);
        let (handle, join) = spawn(
            book,
            store.clone(),
            None,
            Timers {
                allocation_interval: hour,
                housekeeping: hour,
                framework_heartbeat: hour,
            },
            "127.0.0.1:5050".into(),
            shutdown,
        );
        Running {
            handle,
            join,
            store,
            entered,
            _shutdown: shutdown_tx,
        }
    }

    fn weights(
        handle: &MasterHandle,
    ) -> impl std::future::Future<Output = Result<(), MasterError>> {
        let handle = handle.clone();
        async move {
            handle
                .call(|book, _| {
                    book.update_weights(&[v1::WeightInfo {
                        role: "web".into(),
                        weight: 2.0,
                    }])
                })
                .await
        }
    }

    #[tokio::test]
    async fn a_registry_change_is_answered_only_after_the_store_write_returned() {
        let mut m = start(None, 0);
        let call = tokio::spawn(weights(&m.handle));
        m.entered
            .recv()
            .await
            .expect("the actor writes the registry");
        // The write is blocked: however long the actor and the caller run, no reply yet.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(
            !call.is_finished(),
            "answered before the registry write returned"
        );
        assert_eq!(m.store.writes.load(Ordering::SeqCst), 0);
        m.store.release.add_permits(1);
        call.await.expect("join").expect("the weights were set");
        assert_eq!(m.store.writes.load(Ordering::SeqCst), 1);
        // A call that changes nothing durable does not write, and is answered at once.
        let roles = m
            .handle
            .call(|book, _| Ok(book.roles()))
            .await
            .expect("roles");
        assert!(roles.iter().any(|r| r.name == "web"));
        assert_eq!(m.store.writes.load(Ordering::SeqCst), 1);
        assert!(!m.join.is_finished());
    }

    #[tokio::test]
    async fn a_failed_registry_write_answers_unavailable_with_the_reason_and_stops() {
        let m = start(
            Some(|| StoreError::Io {
                path: "/var/lib/agora/registry.json".into(),
                source: std::io::Error::other("disk on fire"),
            }),
            1,
        );
        let err = weights(&m.handle).await.unwrap_err();
        assert!(matches!(err, MasterError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains("disk on fire"), "{err}");
        assert_eq!(err.http_status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.to_status().code(), tonic::Code::Unavailable);
        // As before: a master that cannot persist stops leading.
        let stopped = m.join.await.expect("join");
        assert!(stopped.is_err());
    }

    #[tokio::test]
    async fn a_version_conflict_says_another_master_leads() {
        let m = start(
            Some(|| StoreError::Conflict {
                expected: Some(3),
                found: Some(4),
            }),
            1,
        );
        let err = weights(&m.handle).await.unwrap_err();
        assert!(err.to_string().contains("another master leads"), "{err}");
        assert!(m.join.await.expect("join").is_err());
    }

    #[tokio::test]
    async fn an_invalid_call_is_answered_with_its_own_error_without_a_write() {
        let m = start(None, 0);
        let err = m
            .handle
            .call(|book, _| {
                book.update_weights(&[v1::WeightInfo {
                    role: "web".into(),
                    weight: f64::NAN,
                }])
            })
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("weights[0].weight"), "{err}");
        assert_eq!(m.store.writes.load(Ordering::SeqCst), 0);
    }
}
