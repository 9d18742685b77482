//! The Agora master: allocator, offers, agents, frameworks and task bookkeeping.
//!
//! ```text
//!            ┌────────────────────────── agora master (one port) ──────────────────────────┐
//!  agents ───┤ gRPC AgentControl ┐                                                          │
//!  frameworks┤ gRPC Scheduler    ├─▶ actor (one task) ─▶ Bookkeeping ─▶ Allocator (pure DRF) │
//!  operators ┤ gRPC Operator     ┘        │                  │                              │
//!  people ───┤ HTTP /state /metrics /api/v1/…               └─▶ Registry ─▶ StateStore      │
//!            └──────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! - [`allocator`]: the pure DRF allocator that turns the cluster's free resources into offers.
//! - [`bookkeeping`]: the pure core — agents, frameworks, offers, tasks, and the rules of each call.
//! - [`actor`]: the one task that owns the core and the streams; timers drive it.
//! - [`grpc`], [`http`]: thin translations of calls into actor requests.
//! - [`mesos`]: Apache Mesos's v1 scheduler and operator HTTP APIs on the same port, translated
//!   onto the same actor calls, so that Mesos frameworks and tools run unchanged.
//! - [`pki`]: secure by default — the cluster CA made at first start, this master's certificate,
//!   and the `Certificates` service that signs agents' and frameworks' keys for a join token.
//! - [`registry`]: the durable state, kept through `agora-ha`'s `StateStore` (a local file, or
//!   ZooKeeper when elected there).
//!
//! Accept validation: every offer must be outstanding, this framework's, on one agent and in one
//! role, and the agent connected — otherwise the call fails naming each offer and every task of it
//! is reported `TASK_DROPPED`. Each task is then checked on its own (id unique among the
//! framework's live tasks, agent id, command or executor, Docker image, resources within what is
//! left of the offers); a task that fails gets `TASK_ERROR` with a message naming the field, and the
//! rest launch. What no operation used is declined with the call's filter.
#![forbid(unsafe_code)]

pub mod actor;
pub mod allocator;
pub mod auth;
pub mod bookkeeping;
pub mod drain;
pub mod endpoints;
pub mod error;
pub mod grpc;
pub mod http;
pub mod join_token;
pub mod mesos;
pub mod metrics;
pub mod node;
pub mod pki;
pub mod registry;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_ha::election::{self, Contender};
use agora_proto::v1;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

pub use allocator::{
    AllocationStats, Allocator, AllocatorConfig, AllocatorError, Offer, Policy, Quantities,
    RoleShare, SorterKind,
};
pub use error::{MasterError, RunError, StoreError};

/// Default port of a master (gRPC and HTTP).
pub const DEFAULT_PORT: u16 = 5050;

/// Configuration of `agora master`; flags map one to one.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// Address to listen on (`--ip`, `--port`; port 0 picks one).
    pub bind: SocketAddr,
    /// `--advertise-ip`: the address agents and frameworks are told to use; the bound address when
    /// absent.
    pub advertise_ip: Option<String>,
    /// `--hostname`: the name shown in the UI and MasterInfo.
    pub hostname: Option<String>,
    /// `--work-dir`: where the registry lives.
    pub work_dir: PathBuf,
    /// `--allocation-interval`.
    pub allocation_interval: Duration,
    /// `--offer-timeout`: rescind offers unanswered this long; `None`: never.
    pub offer_timeout: Option<Duration>,
    /// `--agent-timeout`: an agent silent this long is unreachable.
    pub agent_timeout: Duration,
    /// `--agent-gone-timeout`: an unreachable agent is gone after this long.
    pub agent_gone_timeout: Duration,
    /// `--framework-recovery-timeout`: after a master restart, frameworks reported by agents have
    /// at least this long to re-subscribe.
    pub framework_recovery_timeout: Duration,
    /// `--framework-heartbeat`: HEARTBEAT event period.
    pub framework_heartbeat: Duration,
    /// `--allocation-policy drf|strict-priority`.
    pub policy: Policy,
    /// Seed of the allocator's agent shuffle.
    pub seed: u64,
    /// `--zk zk://h1:2181,h2:2181/agora`: elect the leader and keep the registry in ZooKeeper.
    /// `None`: standalone, registry in `work_dir`.
    pub zk: Option<String>,
    /// `--zk-session-timeout`.
    pub zk_session_timeout: Duration,
    /// `--join-token-file`: agents must present the token in this file to register (created when
    /// missing). `None`: anyone may join.
    pub join_token_file: Option<PathBuf>,
    /// `--credentials`: frameworks must authenticate with a principal and secret from this file.
    pub credentials_file: Option<PathBuf>,
    /// `--acls`: who may register in which roles and tear down whose frameworks.
    pub acls_file: Option<PathBuf>,
    /// `--api-token-file`: the HTTP API (all but `/`, `/health`) requires
    /// `Authorization: Bearer <token>` with the token in this file. `None`: open.
    pub api_token: Option<agora_net::http_auth::ApiToken>,
    /// `--agent-reregister-timeout`: after taking over, a new leader waits this long for the
    /// registry's agents to re-register before it makes offers without them.
    pub agent_reregister_timeout: Duration,
    /// `--tls-cert`, `--tls-key`, `--tls-ca`: TLS on the one port (gRPC and HTTP); with a CA,
    /// clients may authenticate with certificates it signed.
    pub tls: agora_net::tls::TlsFiles,
    /// `--tls-require-agent-cert`: agents must present a certificate signed by `--tls-ca`.
    pub require_agent_certificate: bool,
    /// `--drain-period`: a killed task with endpoints leaves every agent's endpoint table first;
    /// its kill waits for every agent's acknowledgement, at most this long (zero: off).
    pub drain_period: Duration,
    /// Secure by default: without `tls` files, serve TLS with a certificate of the cluster CA
    /// (made at the cluster's first start, see [`pki`]) and require agents to present agent
    /// certificates of it. `agora master` sets it unless `--insecure`; embedders (`agora local`,
    /// `agora bench`, tests) choose. `false` without `tls` files: plain TCP.
    pub cluster_ca: bool,
    /// `--zk-auth-file`'s `user:password`: the cluster PKI's znode is readable only by sessions
    /// with this digest credential.
    pub zk_auth: Option<String>,
    /// Lifetime of the certificates this master issues (90 days; a test flag shortens it).
    pub certificate_lifetime: Duration,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            bind: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            advertise_ip: None,
            hostname: None,
            work_dir: PathBuf::from("/var/lib/agora/master"),
            allocation_interval: Duration::from_secs(1),
            offer_timeout: None,
            agent_timeout: Duration::from_secs(75),
            agent_gone_timeout: Duration::from_secs(3600),
            framework_recovery_timeout: Duration::from_secs(600),
            framework_heartbeat: Duration::from_secs(15),
            policy: Policy::Drf,
            seed: 0,
            zk: None,
            join_token_file: None,
            credentials_file: None,
            acls_file: None,
            api_token: None,
            zk_session_timeout: Duration::from_secs(10),
            agent_reregister_timeout: Duration::from_secs(60),
            tls: agora_net::tls::TlsFiles::default(),
            require_agent_certificate: false,
            drain_period: drain::DEFAULT_DRAIN_PERIOD,
            cluster_ca: false,
            zk_auth: None,
            certificate_lifetime: agora_net::pki::DEFAULT_LIFETIME,
        }
    }
}

/// How long open connections get to close when a master stops.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// A running master process: its address, its leadership, and how to stop it.
pub struct RunningMaster {
    pub address: SocketAddr,
    pub node: Arc<node::Node>,
    stop: tokio::sync::watch::Sender<bool>,
    fatal: tokio::sync::mpsc::UnboundedReceiver<RunError>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    server: tokio::task::JoinHandle<Result<(), RunError>>,
}

impl RunningMaster {
    /// The actor's handle, once this master leads.
    pub fn handle(&self) -> Option<actor::MasterHandle> {
        self.node.leading().ok().cloned()
    }

    /// Stops serving and waits for the registry to be written.
    ///
    /// # Errors
    /// Whatever stopped the server or the registry.
    pub async fn stop(self) -> Result<(), RunError> {
        // Answer as a standby at once (HTTP 307/503, gRPC UNAVAILABLE): clients go looking for
        // the next leader while this one finishes its last writes and leaves the election.
        self.node.resign();
        let _ = self.stop.send(true);
        // Streams (framework subscriptions, agent sessions) do not end by themselves: they get a
        // short grace to close, then are cut, so a planned stop never waits for their timeouts.
        let mut server = self.server;
        let result = match tokio::time::timeout(STOP_GRACE, &mut server).await {
            Ok(joined) => joined.map_err(|e| RunError::Serve(e.to_string()))?,
            Err(_) => {
                info!(grace = ?STOP_GRACE, "open streams cut at stop");
                server.abort();
                Ok(())
            }
        };
        let tasks: Vec<_> = self
            .tasks
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        result
    }

    /// Resolves with the error that stops this master (lost leadership, a registry write failure,
    /// the server failing), for a caller that runs it beside other components; it stays running
    /// meanwhile (call [`RunningMaster::stop`] afterwards).
    pub async fn failed(&mut self) -> RunError {
        self.fatal
            .recv()
            .await
            .unwrap_or_else(|| RunError::Serve("the master stopped".into()))
    }

    /// Runs until `shutdown` resolves, or until a fatal error (lost leadership, a registry write
    /// failure, the server failing), which is returned.
    ///
    /// # Errors
    /// Whatever stopped it.
    pub async fn wait(mut self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        tokio::select! {
            () = shutdown => self.stop().await,
            e = self.fatal.recv() => {
                let e = e.unwrap_or_else(|| RunError::Serve("the master stopped".into()));
                error!(error = %e, "master stopping");
                let _ = self.stop.send(true);
                Err(e)
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Binds and starts serving. Standalone, it leads at once with the registry in `work_dir`; with
/// `zk`, it serves as a standby (redirecting to the leader) until ZooKeeper elects it, then loads
/// the registry from ZooKeeper and leads.
///
/// # Errors
/// [`RunError::Bind`]; [`RunError::Store`] if the local registry cannot be read;
/// [`RunError::LostLeadership`] if the `--zk` URL is malformed (an unreachable ZooKeeper is
/// waited for).
pub async fn start(config: MasterConfig) -> Result<RunningMaster, RunError> {
    let tls = config
        .tls
        .server_config()
        .map_err(|e| RunError::Config(e.to_string()))?;
    if config.require_agent_certificate && (tls.is_none() || config.tls.ca.is_none()) {
        return Err(RunError::Config(
            "--tls-require-agent-cert needs --tls-cert, --tls-key and --tls-ca (the CA that signs agents' certificates)".into(),
        ));
    }
    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|source| RunError::Bind {
            addr: config.bind.to_string(),
            source,
        })?;
    let address = listener.local_addr().map_err(|source| RunError::Bind {
        addr: config.bind.to_string(),
        source,
    })?;
    let advertised_host = config.advertise_ip.clone().unwrap_or_else(|| {
        if address.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            address.ip().to_string()
        }
    });
    let advertised = format!("{advertised_host}:{}", address.port());
    let shown_hostname = config.hostname.clone().unwrap_or_else(hostname);
    let auto_tls = if !config.tls.is_empty() {
        None
    } else if !config.cluster_ca {
        warn!("insecure: this master serves in clear (no TLS): join tokens, credentials and tasks travel unencrypted and unauthenticated");
        None
    } else {
        let home = pki::home(
            &config.work_dir,
            config.zk.as_deref(),
            config.zk_auth.clone(),
            config.zk_session_timeout,
        )?;
        let names = pki::own_names(&shown_hostname, &advertised_host, config.bind.ip());
        let auto = pki::start(home, &config.work_dir, names, config.certificate_lifetime).await?;
        info!(
            ca = %auto.ca_file.display(),
            digest = %auto.digest,
            "serving TLS with a certificate of the cluster CA (print join tokens with `agora master token`)"
        );
        Some(auto)
    };
    let tls = match &auto_tls {
        Some(auto) => Some(auto.server.clone()),
        None => tls,
    };
    let master_info = v1::MasterInfo {
        id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
        hostname: shown_hostname,
        address: advertised.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        start_time: bookkeeping::Clock::system().wall,
    };
    let read = |path: &Option<PathBuf>, what: &str| -> Result<Option<String>, RunError> {
        path.as_ref()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map_err(|e| RunError::Config(format!("--{what} {}: {e}", p.display())))
            })
            .transpose()
    };
    let credentials = read(&config.credentials_file, "credentials")?
        .map(|t| {
            serde_json::from_str::<auth::Credentials>(&t)
                .map_err(|e| RunError::Config(format!("--credentials: {e}")))
        })
        .transpose()?;
    let acls = read(&config.acls_file, "acls")?
        .map(|t| {
            serde_json::from_str::<auth::Acls>(&t)
                .map_err(|e| RunError::Config(format!("--acls: {e}")))
        })
        .transpose()?
        .unwrap_or_default();
    let node = Arc::new(
        node::Node::new(advertised.clone())
            .with_join_token_file(match (&auto_tls, &config.join_token_file) {
                (Some(_), Some(path)) => {
                    warn!(
                        file = %path.display(),
                        "--join-token-file is ignored: agents join with the cluster CA's AGORA-1 token \
                         (`agora master token`) and authenticate with its certificates"
                    );
                    None
                }
                (_, file) => file.clone(),
            })
            .with_auth(credentials, acls)
            .with_api_token(config.api_token.clone())
            .with_agent_certificates_required(
                config.require_agent_certificate || auto_tls.is_some(),
            )
            .with_agent_role_required(auto_tls.is_some()),
    );
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (fatal_tx, fatal) = tokio::sync::mpsc::unbounded_channel();
    let tasks = Arc::new(Mutex::new(Vec::new()));
    let _ = metrics::handle();

    let services = grpc::Services::new(node.clone());
    let grpc =
        tonic::service::Routes::new(v1::scheduler_server::SchedulerServer::new(services.clone()))
            .add_service(v1::agent_control_server::AgentControlServer::new(
                services.clone(),
            ))
            .add_service(v1::operator_server::OperatorServer::new(services));
    let grpc = match &auto_tls {
        Some(auto) => grpc.add_service(v1::certificates_server::CertificatesServer::new(
            auto.service.clone(),
        )),
        None => grpc,
    }
    .prepare()
    .into_axum_router();
    let app = http::router(node.clone(), config.api_token.clone())
        .merge(mesos::router(node.clone(), config.api_token.clone()))
        .merge(grpc)
        .fallback(http::not_found)
        .layer(axum::middleware::from_fn(metrics::time_request));
    let listener =
        agora_net::tls::Listener::new(listener, tls).map_err(|source| RunError::Bind {
            addr: config.bind.to_string(),
            source,
        })?;
    if let Some(renew) = auto_tls.as_ref().map(pki::AutoTls::renewal) {
        let mut stopping = stop_rx.clone();
        let t = tokio::spawn(async move {
            tokio::select! {
                () = renew => {}
                _ = stopping.wait_for(|s| *s) => {}
            }
        });
        if let Ok(mut tasks) = tasks.lock() {
            tasks.push(t);
        }
    }
    let mut serve_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        agora_net::tls::serve(listener, app, async move {
            let _ = serve_stop.wait_for(|s| *s).await;
        })
        .await
        .map_err(|e| RunError::Serve(e.to_string()))
    });

    let leader = Leader {
        config: config.clone(),
        master_info: master_info.clone(),
        node: node.clone(),
        stop_rx,
        fatal: fatal_tx.clone(),
        tasks: tasks.clone(),
        actor_done: Arc::new(tokio::sync::watch::channel(false).0),
    };
    let contender: Box<dyn Contender> = match &config.zk {
        None => Box::new(election::Standalone {
            store: Box::new(registry::local_store(&config.work_dir)?),
        }),
        Some(zk) => Box::new(
            election::ZooKeeper::new(
                zk,
                agora_ha::detector::MasterInfoJson::from(&master_info),
                config.zk_session_timeout,
            )
            .map_err(|e| RunError::LostLeadership(e.to_string()))?,
        ),
    };
    if config.zk.is_none() {
        // Standalone: leads at once, so that a caller of `start` may use the handle right away.
        let term = contender
            .campaign(Arc::new(|_| {}))
            .await
            .map_err(|e| RunError::LostLeadership(e.to_string()))?;
        leader.lead(Arc::from(term.store)).await?;
    } else {
        let fatal = leader.fatal.clone();
        let campaign = tokio::spawn(async move {
            if let Err(e) = campaign(leader, contender).await {
                let _ = fatal.send(e);
            }
        });
        if let Ok(mut t) = tasks.lock() {
            t.push(campaign);
        }
    }
    info!(id = %master_info.id, %address, advertised = %advertised, "master started");
    Ok(RunningMaster {
        address,
        node,
        stop,
        fatal,
        tasks,
        server,
    })
}

/// Waits to be elected, leads, and reports losing leadership as fatal.
/// On a planned stop (SIGTERM) a leader resigns first, so that a standby leads within a moment
/// rather than after this session's timeout; a standby just stops campaigning.
async fn campaign(leader: Leader, contender: Box<dyn Contender>) -> Result<(), RunError> {
    let node = leader.node.clone();
    let mut stopping = leader.stop_rx.clone();
    let mut stopped = async move || {
        let _ = stopping.wait_for(|s| *s).await;
    };
    let term = tokio::select! {
        t = contender.campaign(Arc::new(move |l| node.set_leader(l))) => {
            t.map_err(|e| RunError::LostLeadership(e.to_string()))?
        }
        () = stopped() => return Ok(()),
    };
    info!("elected leading master");
    leader.lead(Arc::from(term.store)).await?;
    tokio::select! {
        e = term.lost => Err(RunError::LostLeadership(e.to_string())),
        () = stopped() => {
            // The actor stops on the same signal; its last registry write is fenced on the
            // election node, so it lands (or fails, unacknowledged) before the node goes.
            leader.actor_stopped().await;
            (term.resign)().await;
            leader.node.set_leader(None);
            Ok(())
        }
    }
}

/// Everything needed to start leading.
struct Leader {
    config: MasterConfig,
    master_info: v1::MasterInfo,
    node: Arc<node::Node>,
    stop_rx: tokio::sync::watch::Receiver<bool>,
    fatal: tokio::sync::mpsc::UnboundedSender<RunError>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// Set when the actor has ended (after its last registry write).
    actor_done: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Leader {
    /// Waits (bounded) for the actor to end after a stop.
    async fn actor_stopped(&self) {
        let mut done = self.actor_done.subscribe();
        let _ = tokio::time::timeout(STOP_GRACE, done.wait_for(|d| *d)).await;
    }

    /// Loads the registry and starts the actor; calls reach it from now on.
    async fn lead(&self, store: Arc<dyn registry::StateStore>) -> Result<(), RunError> {
        let loaded = store.load().await?;
        let (registry, version) = match loaded {
            Some(v) => (
                registry::Registry::from_bytes(&v.data, "the registry")?,
                Some(v.version),
            ),
            None => (registry::Registry::default(), None),
        };
        let config = &self.config;
        let settings = bookkeeping::Settings {
            master_info: self.master_info.clone(),
            agent_timeout: config.agent_timeout,
            agent_gone_timeout: config.agent_gone_timeout,
            offer_timeout: config.offer_timeout,
            framework_recovery_timeout: config.framework_recovery_timeout,
            framework_heartbeat: config.framework_heartbeat,
            completed_tasks_kept: 1000,
            agent_reregister_timeout: config.agent_reregister_timeout,
            drain_period: config.drain_period.min(drain::MAX_DRAIN_PERIOD),
        };
        let alloc_config = AllocatorConfig {
            policy: config.policy,
            seed: config.seed,
            ..Default::default()
        };
        let book = bookkeeping::Bookkeeping::new(settings, alloc_config, registry);
        let timers = actor::Timers {
            allocation_interval: config.allocation_interval.max(Duration::from_millis(1)),
            housekeeping: Duration::from_millis(200),
            framework_heartbeat: config.framework_heartbeat.max(Duration::from_millis(10)),
        };
        let (handle, actor_join) = actor::spawn(
            book,
            store,
            version,
            timers,
            self.node.me().to_string(),
            self.stop_rx.clone(),
        );
        if let Some(path) = &config.join_token_file {
            // Create it now, so that `agora master token` and the first agents agree on it.
            join_token::load_or_create(path)?;
        }
        self.node.become_leader(handle);
        let fatal = self.fatal.clone();
        let done = self.actor_done.clone();
        let watcher = tokio::spawn(async move {
            let ended = actor_join.await;
            done.send_replace(true);
            match ended {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let _ = fatal.send(RunError::Store(e));
                }
                Err(e) => {
                    let _ = fatal.send(RunError::Serve(e.to_string()));
                }
            }
        });
        if let Ok(mut t) = self.tasks.lock() {
            t.push(watcher);
        }
        Ok(())
    }
}

/// Runs a master until `shutdown` resolves.
///
/// # Errors
/// See [`start`] and [`RunningMaster::wait`].
pub async fn run(config: MasterConfig, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    start(config).await?.wait(shutdown).await
}
