//! The services framework process: one actor owns the [`ServicesCore`] and the SDK subscription;
//! it persists the core after every change (before launching, so a failover never loses track of
//! a task), reconciles after every (re-)subscription, declines offers it cannot use with long
//! filters and suppresses when nothing is pending.
//!
//! An API call is answered only once the state after it is saved (see the runtime's
//! documentation, "A reply means it is durable"): a failed save answers the batch of calls
//! `503`, rolls the core back to the last saved state and reconciles its tasks (the status
//! updates since then are asked for again). Failed saves of the actor's own (ticks, status
//! updates) are retried on the next tick; meanwhile nothing is launched. Only a write conflict —
//! another instance leads — ends the actor with a [`Fatal`] error, reported by
//! [`RunningServices::wait`]; the binary exits.

use std::sync::Arc;
use std::time::Duration;

use agora_framework::{Fatal, Jobs, OfferGate, Persisted, Replies};
use agora_ha::store::StateStore;
use agora_sdk::{Event, Framework};
use chrono::Utc;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{info, warn};

use crate::core::{Effect, ServicesCore};
pub use crate::handle::{Leadership, ServicesHandle};
use crate::ports::PortRange;

/// Configuration of `agora services` (the flags every framework process shares).
pub type ServicesConfig = agora_framework::FrameworkConfig;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Api(#[from] agora_framework::ApiSetupError),
    #[error("state: {0}")]
    State(String),
    #[error(transparent)]
    Sdk(#[from] agora_sdk::SdkError),
    #[error("ZooKeeper: {0}")]
    ZooKeeper(String),
    /// A flag's value is unusable (TLS files); the message names the flag.
    #[error("{0}")]
    Config(String),
    /// It started, then could not go on.
    #[error(transparent)]
    Fatal(#[from] Fatal),
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Saved {
    core: ServicesCore,
}

/// [`Saved`]'s JSON, written from a borrow (no copy of the whole state per save).
#[derive(serde::Serialize)]
struct SavedRef<'a> {
    core: &'a ServicesCore,
}

/// A running services framework.
pub type RunningServices = agora_framework::Running;

/// Binds the API, then (after winning the election, with `zk`) loads the state and leads; service
/// ports come from Marathon's default range, 10000-20000.
///
/// # Errors
/// [`StartError`].
pub async fn start(config: ServicesConfig) -> Result<RunningServices, StartError> {
    start_with(config, PortRange::default()).await
}

/// [`start`] with the service port range of `--service-port-range`.
///
/// # Errors
/// [`StartError`].
pub async fn start_with(
    config: ServicesConfig,
    service_ports: PortRange,
) -> Result<RunningServices, StartError> {
    std::fs::create_dir_all(&config.work_dir)
        .map_err(|e| StartError::State(format!("{}: {e}", config.work_dir.display())))?;
    let config = agora_framework::join::secure(config)
        .await
        .map_err(|e| StartError::Config(e.to_string()))?;
    let api = agora_framework::BoundApi::bind(&config).await?;
    let (address, advertised, scheme) = (api.address, api.advertised.clone(), api.scheme);
    let leadership: Arc<Leadership> = Arc::new(Leadership::new(advertised.clone()));
    let (stop, stop_rx) = watch::channel(false);
    let (fatal_tx, fatal) = mpsc::unbounded_channel();
    let proxy = agora_ha::leadership::LeaderProxy::new(
        scheme == "https",
        api.client_tls.as_ref().map(|c| c.ca_pem.as_slice()),
        "X-Marathon-Via",
        "X-Marathon-Leader",
    )
    .map_err(StartError::Config)?;
    let app = crate::http::router(
        leadership.clone(),
        advertised.clone(),
        config.api_token.clone(),
        proxy,
    );
    let contender = agora_framework::contender(&config, &advertised)
        .map_err(|e| StartError::ZooKeeper(e.to_string()))?;
    let leader = Leader {
        config: config.clone(),
        leadership: leadership.clone(),
        stop_rx: stop_rx.clone(),
        fatal: fatal_tx.clone(),
        webui: format!("{scheme}://{advertised}"),
        service_ports,
    };
    let actor = if config.zk.is_none() {
        // Standalone: leads at once, so that the API answers as soon as `start` returns.
        let term = contender
            .campaign(Arc::new(|_| {}))
            .await
            .map_err(|e| StartError::ZooKeeper(e.to_string()))?;
        leader.lead(term.store).await?
    } else {
        agora_framework::spawn_campaign(
            contender,
            leadership.clone(),
            stop_rx.clone(),
            fatal_tx,
            move |store| async move { leader.lead(store).await.map_err(|e| e.to_string()) },
        )
    };
    let server = api.serve(app, stop_rx, "services");
    info!(%address, "services framework started");
    Ok(agora_framework::Running::new(
        "services", address, stop, fatal, actor, server,
    ))
}

/// Runs until `shutdown` resolves.
///
/// # Errors
/// [`StartError`].
pub async fn run(
    config: ServicesConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let running = start(config).await?;
    Ok(running.wait(shutdown).await?)
}

struct Leader {
    config: ServicesConfig,
    leadership: Arc<Leadership>,
    stop_rx: watch::Receiver<bool>,
    fatal: mpsc::UnboundedSender<Fatal>,
    /// Where this instance's API is, shown as the framework's web UI at the master.
    webui: String,
    /// `--service-port-range`.
    service_ports: PortRange,
}

impl Leader {
    async fn lead(
        &self,
        store: Box<dyn StateStore>,
    ) -> Result<tokio::task::JoinHandle<()>, StartError> {
        let mut state = Persisted::new(store);
        let loaded = state
            .load()
            .await
            .map_err(|e| StartError::State(e.to_string()))?;
        let mut saved: Saved = match loaded {
            None => Saved::default(),
            Some(b) => serde_json::from_slice(&b).map_err(|e| StartError::State(e.to_string()))?,
        };
        saved.core.set_service_port_range(self.service_ports);
        let mut builder = Framework::builder(&self.config.master, &self.config.framework_name)
            .role(&self.config.role)
            .failover_timeout(self.config.failover_timeout)
            .webui_url(&self.webui)
            .tls_shared(
                agora_framework::join::client_tls(&self.config)
                    .map_err(|e| StartError::Config(e.to_string()))?,
            );
        if let Some((principal, secret)) = &self.config.credential {
            builder = builder.credential(principal, secret);
        }
        if let Some(id) = &saved.core.framework_id {
            builder = builder.framework_id(id);
        }
        let fw = builder.connect()?;
        let (core, rx) = agora_framework::Handle::channel();
        let (events, _) = broadcast::channel(1024);
        let framework_id = Arc::new(std::sync::RwLock::new(saved.core.framework_id.clone()));
        let handle = ServicesHandle {
            core,
            events: events.clone(),
            framework_id: framework_id.clone(),
            master: self.config.master.clone(),
            config: Arc::new(self.config.clone()),
        };
        let actor = Actor {
            core: saved.core,
            fw,
            state,
            gate: OfferGate::default(),
            updates_unsaved: false,
            events,
            framework_id,
            fatal: self.fatal.clone(),
        };
        self.leadership.lead(handle);
        Ok(agora_framework::spawn_actor(
            actor.run(rx, self.stop_rx.clone()),
            self.fatal.clone(),
        ))
    }
}

struct Actor {
    core: ServicesCore,
    fw: Framework,
    state: Persisted,
    gate: OfferGate,
    /// Status updates applied since the last save.
    updates_unsaved: bool,
    events: broadcast::Sender<(String, Value)>,
    framework_id: Arc<std::sync::RwLock<Option<String>>>,
    fatal: mpsc::UnboundedSender<Fatal>,
}

impl Actor {
    /// Sends the core's new events to `/v2/events` subscribers.
    fn publish_events(&mut self) {
        for e in self.core.take_events() {
            let _ = self.events.send(e);
        }
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        serde_json::to_vec(&SavedRef { core: &self.core })
            .map_err(|e| format!("the services state does not serialize: {e}"))
    }

    /// Saves the state when it changed (the actor's own saves: ticks, status updates, before
    /// launching). `Ok(false)`: not saved — logged, and retried on the next tick.
    ///
    /// # Errors
    /// Another instance writes the state: this one must stop.
    async fn persist(&mut self) -> Result<bool, Fatal> {
        self.publish_events();
        let bytes = self.bytes();
        let saved = self.state.save_or_retry(bytes, "services").await?;
        self.updates_unsaved = !saved;
        Ok(saved)
    }

    /// Saves the state after the API calls `replies` holds, then answers them; when the save
    /// fails they are answered `CallError::NotSaved` and the core is rolled back. `Ok(true)`:
    /// saved.
    ///
    /// # Errors
    /// Another instance writes the state, or the last saved state does not load.
    async fn commit(&mut self, replies: Replies) -> Result<bool, Fatal> {
        let bytes = self.bytes();
        if self
            .state
            .commit_or_refuse(bytes, replies, "services")
            .await?
        {
            self.updates_unsaved = false;
            self.publish_events();
            Ok(true)
        } else {
            self.roll_back().await?;
            Ok(false)
        }
    }

    /// Back to the last saved state (what the refused calls did is gone); the framework id the
    /// master gave is kept, and the tasks are reconciled so that the status updates since that
    /// save come again.
    async fn roll_back(&mut self) -> Result<(), Fatal> {
        let saved: Saved = self.state.restore().map_err(|e| {
            Fatal::CannotLead(format!("the last saved services state does not load: {e}"))
        })?;
        let range = self.core.service_port_range();
        self.core = saved.core;
        self.core.set_service_port_range(range);
        let id = self.framework_id.read().ok().and_then(|f| f.clone());
        if id.is_some() {
            self.core.framework_id = id;
        }
        // Saved again (if anything differs) on the next tick.
        self.updates_unsaved = true;
        let live = self.core.live_tasks();
        if !live.is_empty() {
            if let Err(e) = self.fw.reconcile(&live).await {
                warn!(error = %e, "reconciliation failed");
            }
        }
        Ok(())
    }

    async fn apply(&mut self, effects: Vec<Effect>) {
        for Effect::Kill(id) in effects {
            if let Err(e) = self.fw.kill(&id).await {
                warn!(task = %id, error = %e, "kill refused");
            }
        }
    }

    /// Revives when work is waiting and offers are suppressed, or when `new_work` (an API call)
    /// arrived after offers were declined with filters; suppresses when nothing waits.
    async fn offers_wanted(&mut self, new_work: bool) {
        let wants = self.core.wants_offers(Utc::now());
        self.gate.apply(&self.fw, wants, new_work).await;
    }

    async fn on_offers(&mut self, offers: Vec<agora_proto::v1::Offer>) -> Result<(), Fatal> {
        let now = Utc::now();
        let mut plans = Vec::new();
        for offer in &offers {
            plans.push((offer.id.clone(), self.core.launches_for(offer, now)));
        }
        // Recorded first: a crash after the launch must not lose the task. Not recorded: not
        // launched (it could run twice after a failover); offered again soon.
        if plans.iter().any(|(_, launches)| !launches.is_empty()) && !self.persist().await? {
            let mut ids = Vec::new();
            for (offer_id, launches) in plans {
                for l in launches {
                    self.core.launch_failed(&l.task.task_id);
                }
                ids.push(offer_id);
            }
            let _ = self.fw.decline(&ids, 2.0).await;
            self.gate.declined();
            return Ok(());
        }
        for (offer_id, launches) in plans {
            if launches.is_empty() {
                // Nothing fits here now: keep it away for a while (offer etiquette).
                let _ = self.fw.decline(&[offer_id], 15.0).await;
                self.gate.declined();
                continue;
            }
            let tasks: Vec<_> = launches.into_iter().map(|l| l.task).collect();
            let ids: Vec<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
            if let Err(e) = self.fw.launch(&offer_id, tasks).await {
                warn!(error = %e, "launch refused; relaunching on a later offer");
                for id in ids {
                    self.core.launch_failed(&id);
                }
                self.updates_unsaved = true;
            }
        }
        Ok(())
    }

    /// Runs the actor; a write conflict (another instance leads) stops it and is reported on
    /// `fatal`.
    async fn run(mut self, rx: Jobs<ServicesCore>, stop: watch::Receiver<bool>) {
        let fatal = self.fatal.clone();
        if let Err(e) = self.serve(rx, stop).await {
            let _ = fatal.send(e);
        }
    }

    async fn serve(
        &mut self,
        mut rx: Jobs<ServicesCore>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), Fatal> {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() { break; }
                }
                job = rx.recv() => {
                    let Some(job) = job else { break };
                    // Group commit: the API calls already queued are applied before the one save
                    // (each save writes the whole state); they are answered after it.
                    let replies = agora_framework::apply_queued(&mut self.core, job, &mut rx);
                    let mut effects = self.core.take_deferred();
                    effects.extend(self.core.plan(Utc::now()));
                    // What the calls asked for (kills) is done only once they are saved.
                    if self.commit(replies).await? {
                        self.apply(effects).await;
                    }
                    self.offers_wanted(true).await;
                }
                _ = tick.tick() => {
                    let effects = self.core.plan(Utc::now());
                    // What the plan derives from time alone (inactive or expunged unreachable
                    // tasks, finished deployments) it derives again after a restart: save only
                    // when updates arrived or it acted, not the whole state twice a second.
                    let save = self.updates_unsaved || !effects.is_empty();
                    self.apply(effects).await;
                    if save {
                        self.persist().await?;
                    } else {
                        self.publish_events();
                    }
                    self.offers_wanted(false).await;
                }
                event = self.fw.next_event() => {
                    let Some(event) = event else { break };
                    match event {
                        Event::Subscribed { framework_id, .. } => {
                            info!(%framework_id, "subscribed; reconciling tasks");
                            self.core.framework_id = Some(framework_id.clone());
                            if let Ok(mut f) = self.framework_id.write() { *f = Some(framework_id); }
                            self.gate.subscribed();
                            let live = self.core.live_tasks();
                            if !live.is_empty() {
                                if let Err(e) = self.fw.reconcile(&live).await {
                                    warn!(error = %e, "reconciliation failed");
                                }
                            }
                            self.persist().await?;
                            self.offers_wanted(false).await;
                        }
                        Event::Offers(offers) => self.on_offers(offers).await?,
                        Event::Update(status) => {
                            let effects = self.core.on_update(&status, Utc::now());
                            self.apply(effects).await;
                            self.updates_unsaved = true;
                            // Saved on the next tick or before the next launch, not once per
                            // update: a lost update is recovered by reconciliation after a
                            // failover, and one save per update made starting N tasks cost N².
                            self.publish_events();
                        }
                        Event::Error(e) => {
                            // Permanent: saved first, then the process ends non-zero.
                            self.persist().await?;
                            return Err(Fatal::Refused(e));
                        }
                        _ => {}
                    }
                }
            }
        }
        self.persist().await.map(|_| ())
    }
}
