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
//! - [`registry`]: the durable state and the [`registry::StateStore`] trait (local directory here).
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
pub mod bookkeeping;
pub mod error;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod registry;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora_proto::v1;
use tokio::net::TcpListener;
use tracing::info;

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
        }
    }
}

/// A running master: its address and how to stop it.
pub struct RunningMaster {
    pub address: SocketAddr,
    pub handle: actor::MasterHandle,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<Result<(), RunError>>,
}

impl RunningMaster {
    /// Stops serving and waits for the registry to be written.
    ///
    /// # Errors
    /// Whatever stopped the server or the registry.
    pub async fn stop(self) -> Result<(), RunError> {
        let _ = self.stop.send(true);
        self.server
            .await
            .map_err(|e| RunError::Serve(e.to_string()))?
    }

    /// Waits until the master stops on its own (a registry failure) or `shutdown` resolves.
    ///
    /// # Errors
    /// Whatever stopped it.
    pub async fn wait(mut self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        tokio::select! {
            () = shutdown => self.stop().await,
            r = &mut self.server => r.map_err(|e| RunError::Serve(e.to_string()))?,
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

/// Binds, loads the registry and starts serving.
///
/// # Errors
/// [`RunError::Bind`], or [`RunError::Store`] if the registry cannot be read.
pub async fn start(config: MasterConfig) -> Result<RunningMaster, RunError> {
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
    let store = registry::LocalDirStore::new(&config.work_dir)?;
    use registry::StateStore as _;
    let loaded = store.load().await?;
    let (registry, version) = match loaded {
        Some(v) => (
            registry::Registry::from_bytes(&v.data, &config.work_dir.display().to_string())?,
            Some(v.version),
        ),
        None => (registry::Registry::default(), None),
    };
    let advertised_host = config.advertise_ip.clone().unwrap_or_else(|| {
        if address.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            address.ip().to_string()
        }
    });
    let advertised = format!("{advertised_host}:{}", address.port());
    let master_info = v1::MasterInfo {
        id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
        hostname: config.hostname.clone().unwrap_or_else(hostname),
        address: advertised.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        start_time: bookkeeping::Clock::system().wall,
    };
    let settings = bookkeeping::Settings {
        master_info: master_info.clone(),
        agent_timeout: config.agent_timeout,
        agent_gone_timeout: config.agent_gone_timeout,
        offer_timeout: config.offer_timeout,
        framework_recovery_timeout: config.framework_recovery_timeout,
        framework_heartbeat: config.framework_heartbeat,
        completed_tasks_kept: 1000,
    };
    let alloc_config = AllocatorConfig {
        policy: config.policy,
        seed: config.seed,
        ..Default::default()
    };
    let book = bookkeeping::Bookkeeping::new(settings, alloc_config, registry);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let timers = actor::Timers {
        allocation_interval: config.allocation_interval.max(Duration::from_millis(1)),
        housekeeping: Duration::from_millis(200),
        framework_heartbeat: config.framework_heartbeat.max(Duration::from_millis(10)),
    };
    let (handle, actor_join) = actor::spawn(
        book,
        Arc::new(store),
        version,
        timers,
        advertised.clone(),
        stop_rx.clone(),
    );
    let _ = metrics::handle();
    let services = grpc::Services::new(handle.clone());
    let grpc =
        tonic::service::Routes::new(v1::scheduler_server::SchedulerServer::new(services.clone()))
            .add_service(v1::agent_control_server::AgentControlServer::new(
                services.clone(),
            ))
            .add_service(v1::operator_server::OperatorServer::new(services))
            .prepare()
            .into_axum_router();
    let app = http::router(handle.clone()).merge(grpc);
    info!(id = %master_info.id, %address, advertised = %advertised, "master started");
    let mut serve_stop = stop_rx;
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = serve_stop.wait_for(|s| *s).await;
            })
            .into_future();
        tokio::pin!(serve);
        let mut actor_join = actor_join;
        let serve_ended = tokio::select! {
            r = &mut serve => Some(r),
            r = &mut actor_join => {
                // The actor stops only on shutdown or a registry failure: either way, stop serving.
                return match r {
                    Ok(r) => r.map_err(RunError::from),
                    Err(e) => Err(RunError::Serve(e.to_string())),
                };
            }
        };
        if let Some(Err(e)) = serve_ended {
            actor_join.abort();
            return Err(RunError::Serve(e.to_string()));
        }
        match actor_join.await {
            Ok(r) => r.map_err(RunError::from),
            Err(e) => Err(RunError::Serve(e.to_string())),
        }
    });
    Ok(RunningMaster {
        address,
        handle,
        stop,
        server,
    })
}

/// Runs a master until `shutdown` resolves.
///
/// # Errors
/// See [`start`]; a registry write failure.
pub async fn run(config: MasterConfig, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    start(config).await?.wait(shutdown).await
}
