//! The batch framework process: one actor owns the [`BatchCore`] and the SDK subscription. It
//! persists the core (to `--work-dir/state.json`, atomically) after every change and *before*
//! launching what it claimed, reconciles its live tasks after every (re-)subscription, and keeps
//! its framework id so that a restarted batch framework fails over and keeps its tasks.
//!
//! An API call is answered only once the state after it is saved (see the runtime's
//! documentation, "A reply means it is durable"): a failed save answers the batch of calls
//! `503`, rolls the core back to the last saved state and reconciles its tasks. Failed saves of
//! the actor's own (ticks, status updates, launches) are retried on the next tick; meanwhile
//! nothing is launched. Only a write conflict — another instance leads — stops the actor
//! ([`Fatal`]).

use std::sync::Arc;
use std::time::Duration;

use agora_framework::{Fatal, Jobs, OfferGate, Persisted, Replies};
use agora_ha::store::StateStore;
use agora_proto::v1;
use agora_sdk::{carve, Event, Framework, TaskNeeds};
use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::core::{BatchCore, Effect, Launch};
pub use crate::handle::{BatchHandle, Leadership};

/// Configuration of `agora batch` (the flags every framework process shares).
pub type BatchConfig = agora_framework::FrameworkConfig;

/// Why the batch framework could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Api(#[from] agora_framework::ApiSetupError),
    #[error("state in {path}: {message}")]
    State { path: String, message: String },
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

/// What is persisted: the core and the framework id (so a restart fails over as the same
/// framework and keeps its tasks).
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Saved {
    framework_id: Option<String>,
    core: BatchCore,
}

/// [`Saved`]'s JSON, written from a borrow (no copy of the whole state per save).
#[derive(serde::Serialize)]
struct SavedRef<'a> {
    framework_id: &'a Option<String>,
    core: &'a BatchCore,
}

async fn load_saved(state: &mut Persisted) -> Result<Saved, StartError> {
    let bad = |message: String| StartError::State {
        path: "the batch state".into(),
        message,
    };
    match state.load().await.map_err(|e| bad(e.to_string()))? {
        None => Ok(Saved::default()),
        Some(b) => {
            let mut saved: Saved = serde_json::from_slice(&b).map_err(|e| bad(e.to_string()))?;
            saved.core = saved.core.restore(Utc::now());
            Ok(saved)
        }
    }
}

/// A running batch framework.
pub type RunningBatch = agora_framework::Running;

/// Binds the API, then (after winning the election, with `zk`) loads the state and starts the
/// actor.
///
/// # Errors
/// [`StartError`].
pub async fn start(config: BatchConfig) -> Result<RunningBatch, StartError> {
    std::fs::create_dir_all(&config.work_dir).map_err(|e| StartError::State {
        path: config.work_dir.display().to_string(),
        message: e.to_string(),
    })?;
    let config = agora_framework::join::secure(config)
        .await
        .map_err(|e| StartError::Config(e.to_string()))?;
    let api = agora_framework::BoundApi::bind(&config).await?;
    let (address, advertised, scheme) = (api.address, api.advertised.clone(), api.scheme);
    let leadership: Arc<Leadership> = Arc::new(Leadership::new(advertised.clone()));
    let counters = Arc::new(crate::http::Counters::default());
    let (stop, stop_rx) = watch::channel(false);
    let (fatal_tx, fatal) = mpsc::unbounded_channel();
    let app = crate::http::router(
        leadership.clone(),
        counters.clone(),
        config.api_token.clone(),
    );
    let contender = agora_framework::contender(&config, &advertised)
        .map_err(|e| StartError::ZooKeeper(e.to_string()))?;
    let leader = Leader {
        config: config.clone(),
        leadership: leadership.clone(),
        counters,
        stop_rx: stop_rx.clone(),
        fatal: fatal_tx.clone(),
        webui: format!("{scheme}://{advertised}"),
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
    let server = api.serve(app, stop_rx, "batch");
    info!(%address, "batch framework started");
    Ok(agora_framework::Running::new(
        "batch", address, stop, fatal, actor, server,
    ))
}

/// Everything needed to start leading.
struct Leader {
    config: BatchConfig,
    leadership: Arc<Leadership>,
    counters: Arc<crate::http::Counters>,
    stop_rx: watch::Receiver<bool>,
    fatal: mpsc::UnboundedSender<Fatal>,
    /// Where this instance's API is, shown as the framework's web UI at the master.
    webui: String,
}

impl Leader {
    async fn lead(
        &self,
        store: Box<dyn StateStore>,
    ) -> Result<tokio::task::JoinHandle<()>, StartError> {
        let mut state = Persisted::new(store);
        let saved = load_saved(&mut state).await?;
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
        if let Some(id) = &saved.framework_id {
            builder = builder.framework_id(id);
        }
        let fw = builder.connect()?;
        let (handle, rx) = BatchHandle::channel();
        let actor = Actor {
            core: saved.core,
            framework_id: saved.framework_id,
            fw,
            state,
            gate: OfferGate::default(),
            unsaved: false,
            counters: self.counters.clone(),
            fatal: self.fatal.clone(),
        };
        self.leadership.lead(handle);
        Ok(agora_framework::spawn_actor(
            actor.run(rx, self.stop_rx.clone()),
            self.fatal.clone(),
        ))
    }
}

/// Runs until `shutdown` resolves.
///
/// # Errors
/// [`StartError`].
pub async fn run(
    config: BatchConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let running = start(config).await?;
    Ok(running.wait(shutdown).await?)
}

struct Actor {
    core: BatchCore,
    framework_id: Option<String>,
    fw: Framework,
    state: Persisted,
    gate: OfferGate,
    /// A save failed and the state differs from the saved one: launch nothing until saved.
    unsaved: bool,
    counters: Arc<crate::http::Counters>,
    fatal: mpsc::UnboundedSender<Fatal>,
}

fn task_info(launch: &Launch, resources: &agora_sdk::Carved) -> v1::TaskInfo {
    let job = &launch.job;
    let mut environment: std::collections::HashMap<String, String> = job
        .environment_variables
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    environment.insert("AGORA_JOB_NAME".into(), job.name.clone());
    // Chronos's `uris`: fetched into the sandbox, archives extracted.
    let uris: Vec<v1::Uri> = job
        .uris
        .iter()
        .map(|u| v1::Uri {
            value: u.clone(),
            extract: true,
            ..Default::default()
        })
        .collect();
    let command = if job.shell || job.arguments.is_empty() {
        v1::CommandInfo {
            shell: job.shell || job.arguments.is_empty(),
            value: job.command.clone(),
            arguments: Vec::new(),
            environment,
            user: String::new(),
            uris,
        }
    } else {
        let mut argv = vec![job.command.clone()];
        argv.extend(job.arguments.iter().cloned());
        v1::CommandInfo {
            shell: false,
            value: job.command.clone(),
            arguments: argv,
            environment,
            user: String::new(),
            uris,
        }
    };
    let container = job.container.as_ref().map(|c| {
        let docker = !c.kind.eq_ignore_ascii_case("MESOS");
        v1::ContainerInfo {
            r#type: if docker {
                v1::ContainerType::Docker as i32
            } else {
                v1::ContainerType::Native as i32
            },
            docker: docker.then(|| v1::DockerInfo {
                image: c.image.clone(),
                network: match c.network.to_ascii_uppercase().as_str() {
                    "HOST" => v1::DockerNetwork::Host as i32,
                    "NONE" => v1::DockerNetwork::None as i32,
                    _ => v1::DockerNetwork::Bridge as i32,
                },
                port_mappings: Vec::new(),
                force_pull_image: c.force_pull_image,
                privileged: false,
                parameters: c
                    .parameters
                    .iter()
                    .map(|p| v1::Parameter {
                        key: p.key.clone(),
                        value: p.value.clone(),
                    })
                    .collect(),
            }),
            volumes: c
                .volumes
                .iter()
                .map(|v| v1::Volume {
                    container_path: v.container_path.clone(),
                    host_path: v.host_path.clone(),
                    mode: v.mode.clone(),
                })
                .collect(),
            hostname: String::new(),
            host_aliases: Vec::new(),
        }
    });
    v1::TaskInfo {
        name: job.name.clone(),
        task_id: launch.task_id.clone(),
        resources: resources.to_proto(),
        command: Some(command),
        container,
        labels: [("agora.batch/job".to_string(), job.name.clone())].into(),
        kill_policy: Some(v1::KillPolicy {
            grace_period_seconds: 3.0,
        }),
        ..Default::default()
    }
}

impl Actor {
    fn bytes(&self) -> Result<Vec<u8>, String> {
        serde_json::to_vec(&SavedRef {
            framework_id: &self.framework_id,
            core: &self.core,
        })
        .map_err(|e| format!("the batch state does not serialize: {e}"))
    }

    /// Saves the state when it changed (the actor's own saves: ticks, status updates,
    /// launches). `Ok(false)`: not saved — logged, and retried on the next tick.
    ///
    /// # Errors
    /// Another instance writes the state: this one must stop.
    async fn persist(&mut self) -> Result<bool, Fatal> {
        let bytes = self.bytes();
        let saved = self.state.save_or_retry(bytes, "batch").await?;
        self.unsaved = !saved;
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
        if self.state.commit_or_refuse(bytes, replies, "batch").await? {
            self.unsaved = false;
            Ok(true)
        } else {
            self.roll_back().await?;
            Ok(false)
        }
    }

    /// Back to the last saved state (what the refused calls did is gone); the framework id the
    /// master gave is kept, and the live tasks are reconciled so that the status updates since
    /// that save come again.
    async fn roll_back(&mut self) -> Result<(), Fatal> {
        let saved: Saved = self.state.restore().map_err(|e| {
            Fatal::CannotLead(format!("the last saved batch state does not load: {e}"))
        })?;
        self.core = saved.core.restore(Utc::now());
        if self.framework_id.is_some() {
            self.core.framework_id.clone_from(&self.framework_id);
        }
        // Saved again (if anything differs) on the next tick.
        self.unsaved = true;
        let live = self.core.live_tasks();
        if !live.is_empty() {
            if let Err(e) = self.fw.reconcile(&live).await {
                warn!(error = %e, "reconciliation failed");
            }
        }
        Ok(())
    }

    async fn apply(&mut self, effects: Vec<Effect>) {
        for Effect::Kill(task_id) in effects {
            if let Err(e) = self.fw.kill(&task_id).await {
                warn!(%task_id, error = %e, "kill refused");
            }
        }
    }

    async fn offers_wanted(&mut self) {
        let wants = self.core.wants_offers(Utc::now());
        // Batch declines with short filters: no revive is needed for new work after a decline.
        self.gate.apply(&self.fw, wants, false).await;
    }

    async fn on_offers(&mut self, offers: Vec<v1::Offer>) -> Result<(), Fatal> {
        let now = Utc::now();
        let mut claims = self.core.claim_launches(256, now);
        // Launches are recorded before they happen: a crash from here on cannot run them twice.
        // Not recorded: not launched; the offers come back soon.
        if !self.persist().await? {
            for launch in claims {
                self.core.unclaim(&launch.task_id);
            }
            let ids: Vec<_> = offers.into_iter().map(|o| o.id).collect();
            let _ = self.fw.decline(&ids, 2.0).await;
            return Ok(());
        }
        for offer in offers {
            let Ok(mut left) = agora_proto::Resources::from_proto(&offer.resources) else {
                continue;
            };
            let mut tasks = Vec::new();
            let mut placed = Vec::new();
            for (i, launch) in claims.iter().enumerate() {
                if !agora_framework::constraints::chronos_satisfied(&launch.job.constraints, &offer)
                {
                    continue;
                }
                let needs = match TaskNeeds::parse(
                    &format!(
                        "cpus:{};mem:{};disk:{}",
                        launch.job.cpus, launch.job.mem, launch.job.disk
                    ),
                    0,
                ) {
                    Ok(n) => n,
                    Err(_) => continue,
                };
                if let Some(carved) = carve(&mut left, &needs) {
                    tasks.push(task_info(launch, &carved));
                    placed.push(i);
                }
            }
            for i in placed.into_iter().rev() {
                claims.remove(i);
            }
            if tasks.is_empty() {
                let _ = self.fw.decline(std::slice::from_ref(&offer.id), 5.0).await;
                continue;
            }
            let ids: Vec<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
            self.counters.launched(ids.len() as u64);
            if let Err(e) = self.fw.launch(&offer.id, tasks).await {
                warn!(error = %e, "launch refused; the tasks are retried");
                for id in ids {
                    let effects =
                        self.core
                            .on_update(&id, "TASK_DROPPED", None, "", &e.to_string(), now);
                    self.apply(effects).await;
                }
            }
        }
        for launch in claims {
            self.core.unclaim(&launch.task_id);
        }
        self.persist().await.map(|_| ())
    }

    /// Runs the actor; a write conflict (another instance leads) stops it and is reported on
    /// `fatal`.
    async fn run(mut self, rx: Jobs<BatchCore>, stop: watch::Receiver<bool>) {
        let fatal = self.fatal.clone();
        if let Err(e) = self.serve(rx, stop).await {
            let _ = fatal.send(e);
        }
    }

    async fn serve(
        &mut self,
        mut rx: Jobs<BatchCore>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), Fatal> {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
                job = rx.recv() => {
                    let Some(job) = job else { break };
                    // Group commit: the calls already queued are applied before the one save;
                    // they are answered after it, and what they asked for (kills) is done only
                    // once they are saved.
                    let replies = agora_framework::apply_queued(&mut self.core, job, &mut rx);
                    let effects = self.core.take_deferred();
                    if self.commit(replies).await? {
                        self.apply(effects).await;
                    }
                    self.offers_wanted().await;
                }
                _ = tick.tick() => {
                    let effects = self.core.tick(Utc::now());
                    self.apply(effects).await;
                    self.persist().await?;
                    self.offers_wanted().await;
                }
                event = self.fw.next_event() => {
                    let Some(event) = event else { break };
                    match event {
                        Event::Subscribed { framework_id, .. } => {
                            info!(%framework_id, "subscribed; reconciling live tasks");
                            self.framework_id = Some(framework_id.clone());
                            self.core.framework_id = Some(framework_id.clone());
                            self.gate.subscribed();
                            let live = self.core.live_tasks();
                            if !live.is_empty() {
                                if let Err(e) = self.fw.reconcile(&live).await {
                                    warn!(error = %e, "reconciliation failed");
                                }
                            }
                            self.offers_wanted().await;
                        }
                        Event::Offers(offers) => self.on_offers(offers).await?,
                        Event::Update(status) => {
                            let state = status.state().as_str_name().to_string();
                            let effects = self.core.on_update(
                                &status.task_id,
                                &state,
                                status.exit_code,
                                &status.agent_id,
                                &status.message,
                                Utc::now(),
                            );
                            self.apply(effects).await;
                            self.persist().await?;
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
