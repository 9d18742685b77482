//! The Agora agent: runs tasks in containers on one machine, checkpoints what it launched so tasks
//! survive an agent restart, serves sandbox files over HTTP, and talks to the master.
//!
//! ```text
//!                  ┌──────────────────────── agent ──────────────────────────┐
//!  master ◀─gRPC─▶ │ master_link ──cmd──▶ agent actor ──jobs──▶ containerizers │──▶ native / docker
//!                  │      ▲                 │ status updates (checkpointed,  │
//!                  │      └────outbox───────┘ resent until acknowledged)      │
//!                  │                        ▲ health results                 │
//!                  │  prober (one checker per RUNNING task with a health check:│
//!                  │  HTTP/TCP to 127.0.0.1:<port>, command via containerizer)│
//!  people ──HTTP─▶ │ http: /files/read, /files/browse, /monitor/statistics   │
//!                  └──────────────────────────────────────────────────────────┘
//! ```
//!
//! # API the `agora agent` subcommand calls
//! ```no_run
//! # async fn f() -> Result<(), agora_agent::AgentError> {
//! let config = agora_agent::AgentConfig {
//!     master: Some("127.0.0.1:5050".into()),
//!     work_dir: "/var/lib/agora".into(),
//!     ..Default::default()
//! };
//! agora_agent::run(config, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//! Flags map one to one onto [`AgentConfig`] fields: `--master`, `--port` (5051), `--work-dir`,
//! `--resources`, `--attributes`, `--containerizers docker,native`, `--hostname`,
//! `--default-task-user` (`nobody`), `--allow-root-tasks`, `--dns-*` ([`dns`]), `--mesh`,
//! `--mesh-http-port`, `--mesh-max-connections`, `--mesh-connect-timeout`, `--mesh-threads`
//! ([`mesh`]: the routing mesh, a listener per service port relaying to the service's tasks on
//! any agent).
//! For embedding (tests, `agora local`), [`Agent::start`] gives the [`AgentHandle`] and the outbox of
//! status updates without HTTP or a master.
//!
//! Modules: [`agent`] (the actor), [`containerizer`] (trait, native, docker, cgroups),
//! [`lifecycle`], [`status_update`] and [`health`] (pure cores), [`prober`] (health-check probes),
//! [`command`] (argv of a `CommandInfo`, check commands on the host), [`checkpoint`], [`paths`], [`http`], [`master_link`], [`certificates`] (the certificate of a secure-by-default cluster: joined with an `AGORA-1-…` token, renewed on the session), [`user`] (which Unix user a task runs as).
//!
//! `unsafe` is denied crate-wide and forbidden in every module but `sys`, which holds the one
//! `pre_exec` hook that enters namespaces.
#![deny(unsafe_code)]

pub mod agent;
pub mod certificates;
pub mod checkpoint;
pub mod command;
pub mod containerizer;
pub mod dns;
pub mod endpoints;
pub mod error;
pub mod executor;
pub mod fetcher;
pub mod health;
pub mod http;
pub mod lifecycle;
pub mod limits;
pub mod master_link;
pub mod mesh;
pub mod paths;
pub mod prober;
pub mod status_update;
mod sys;
#[cfg(test)]
mod test_tls;
pub mod user;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora_proto::v1;
use agora_proto::Resources;
use tokio::sync::mpsc;
use tracing::{info, warn};

pub use agent::{AgentHandle, AgentSettings, ContainerStatistics};
pub use containerizer::{Containerizer, ContainerizerKind};
pub use error::{AgentError, ContainerError};

/// Default HTTP port of an agent.
pub const DEFAULT_PORT: u16 = 5051;

/// Command-line configuration of `agora agent`.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `--master`: `host:port` of a master (or `zk://…` once the detector exists). `None` runs the
    /// agent standalone (HTTP only, no tasks arrive).
    pub master: Option<String>,
    /// `--port`: HTTP port (sandbox files, statistics, health). 0 picks a free port.
    pub port: u16,
    /// Address the HTTP server binds (default all interfaces).
    pub bind: IpAddr,
    /// `--work-dir`: checkpoints and sandboxes.
    pub work_dir: PathBuf,
    /// `--resources`, e.g. `cpus:4;mem:8192;ports:[31000-32000]`; detected from the machine when absent.
    pub resources: Option<String>,
    /// `--attributes`, e.g. `rack:a;zone:eu`.
    pub attributes: Option<String>,
    /// `--containerizers`: comma-separated, `docker,native` (`native` here; the `agora agent`
    /// command defaults to [`containerizer::default_containerizers`]).
    pub containerizers: String,
    /// `--hostname`: advertised hostname; the machine's when absent.
    pub hostname: Option<String>,
    /// cgroup filesystem root (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// Parent cgroup for the agent's containers (`agora`).
    pub cgroup_parent: String,
    /// First retry of an unacknowledged status update (10 s); doubles up to `status_retry_max` (10 min).
    pub status_retry_initial: Duration,
    pub status_retry_max: Duration,
    /// `--join-token-file` / `AGORA_JOIN_TOKEN`: presented when registering.
    pub join_token: Option<String>,
    /// `--default-task-user`: the Unix user tasks run as when neither the task's command nor its
    /// framework names one (`nobody`).
    pub default_task_user: String,
    /// `--allow-root-tasks`: a task that asks for root may run as root. Without it such tasks end
    /// TASK_ERROR (see [`user`]).
    pub allow_root_tasks: bool,
    /// `--tls-cert`/`--tls-key`: TLS on the HTTP port and the certificate presented to the master;
    /// `--tls-ca`: the CA the master's certificate must be signed by (TLS to the master).
    pub tls: agora_net::tls::TlsFiles,
    /// `--api-token-file` (the master's): the HTTP API (all but `/health`) requires it.
    pub api_token: Option<agora_net::http_auth::ApiToken>,
    /// `--dns-port`/`--dns-domain`/`--dns-forward`: DNS from the endpoint table; `None`: off.
    pub dns: Option<dns::DnsConfig>,
    /// `--mesh`/`--mesh-http-port`/`--mesh-max-connections`/`--mesh-connect-timeout`/
    /// `--mesh-threads`: the routing mesh on the agent's address; `None`: off.
    pub mesh: Option<mesh::MeshConfig>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            master: None,
            port: DEFAULT_PORT,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            work_dir: PathBuf::from("/var/lib/agora/agent"),
            resources: None,
            attributes: None,
            containerizers: "native".into(),
            hostname: None,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: "agora".into(),
            status_retry_initial: Duration::from_secs(10),
            status_retry_max: Duration::from_secs(600),
            join_token: None,
            default_task_user: user::DEFAULT_TASK_USER.into(),
            allow_root_tasks: false,
            tls: agora_net::tls::TlsFiles::default(),
            dns: None,
            mesh: None,
            api_token: None,
        }
    }
}

/// Parses `--containerizers` (`docker,native`).
///
/// # Errors
/// [`AgentError::UnknownContainerizer`].
pub fn parse_containerizers(s: &str) -> Result<Vec<ContainerizerKind>, AgentError> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let k = ContainerizerKind::parse(name)
            .ok_or_else(|| AgentError::UnknownContainerizer(name.into()))?;
        if !out.contains(&k) {
            out.push(k);
        }
    }
    if out.is_empty() {
        return Err(AgentError::UnknownContainerizer(s.into()));
    }
    Ok(out)
}

/// Parses `--attributes` (`rack:a;zone:eu`).
///
/// # Errors
/// [`AgentError::Attributes`] for an entry without `name:value`.
pub fn parse_attributes(s: &str) -> Result<Vec<v1::Attribute>, AgentError> {
    s.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once(':') {
            Some((n, v)) if !n.trim().is_empty() => Ok(v1::Attribute {
                name: n.trim().into(),
                text: v.trim().into(),
            }),
            _ => Err(AgentError::Attributes(s.into())),
        })
        .collect()
}

/// The machine's resources when `--resources` is absent: all cpus, memory minus 1 GiB kept for the
/// system (at least half of it offered), ports 31000-32000.
pub fn detect_resources() -> Resources {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let mem_total_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| (kb / 1024.0).floor())
        .unwrap_or(1024.0);
    let mem = (mem_total_mib - 1024.0).max(mem_total_mib / 2.0).floor();
    let spec = format!("cpus:{cpus};mem:{mem};ports:[31000-32000]");
    Resources::parse(&spec).unwrap_or_default()
}

/// Sets the work dir's permissions for tasks that run as other users: `meta` (checkpoints) is
/// root's alone (0700); the work dir and the sandbox tree can be entered by anyone (each sandbox is
/// then private to its task's user). Warns when the default task user could not reach sandboxes
/// because a parent of the work dir is closed to it.
/// The containerizers of `kinds` for the agent work dir of `layout`.
async fn containerizers(
    kinds: &[ContainerizerKind],
    layout: &paths::Layout,
    config: &AgentConfig,
) -> Result<Vec<Arc<dyn Containerizer>>, AgentError> {
    let owner = container_owner(layout, &config.cgroup_parent)?;
    let mut out: Vec<Arc<dyn Containerizer>> = Vec::new();
    for k in kinds {
        match k {
            ContainerizerKind::Native => {
                out.push(Arc::new(containerizer::native::NativeContainerizer::new(
                    layout.clone(),
                    &config.cgroup_root,
                    &owner.parent,
                    owner.own,
                )))
            }
            ContainerizerKind::Docker => {
                let d = containerizer::docker::DockerContainerizer::connect()
                    .await
                    .map_err(|e| AgentError::DockerUnavailable(e.to_string()))?
                    .with_owner(owner.own.then(|| owner.parent.clone()));
                out.push(Arc::new(d));
            }
        }
    }
    Ok(out)
}

/// `agora agent cleanup`: destroys every container the agent of `config.work_dir` launched —
/// checkpointed or not — with the agent stopped, for retiring a machine (or after a test). Its
/// tasks are killed; their sandboxes stay. Returns how many containers were destroyed.
///
/// # Errors
/// An unusable work dir, an unreachable Docker engine when `docker` is among the containerizers.
pub async fn destroy_containers(config: &AgentConfig) -> Result<usize, AgentError> {
    let kinds = parse_containerizers(&config.containerizers)?;
    let work_dir =
        std::fs::canonicalize(&config.work_dir).map_err(|e| AgentError::io(&config.work_dir, e))?;
    let layout = paths::Layout::new(&work_dir);
    let none = std::collections::HashSet::new();
    let mut destroyed = 0;
    for c in containerizers(&kinds, &layout, config).await? {
        for id in c.orphans(&none).await {
            info!(container = %id, containerizer = c.kind().as_str(), "destroying container");
            c.destroy(&id).await;
            destroyed += 1;
        }
        c.retire();
    }
    Ok(destroyed)
}

/// Where this agent's containers live: its cgroup parent (also its Docker owner label), and
/// whether that parent is its own.
struct ContainerOwner {
    parent: String,
    own: bool,
}

/// The file in `meta/` naming this agent's cgroup parent.
const CGROUP_PARENT_FILE: &str = "cgroup-parent";

/// Each agent work dir gets a cgroup parent of its own, `<base>/<12 hex>`, chosen at its first
/// start and kept in `meta/cgroup-parent` (stable across restarts and upgrades), so that agents
/// sharing a host never see each other's containers and recovery may destroy every container
/// under it that no checkpoint knows. A work dir with checkpoints from before that file existed
/// keeps the shared `<base>` (its containers are there) and gets no orphan reaping.
fn container_owner(layout: &paths::Layout, base: &str) -> Result<ContainerOwner, AgentError> {
    let file = layout.meta().join(CGROUP_PARENT_FILE);
    let valid = |p: &str| {
        !p.is_empty()
            && p.len() <= 200
            && p.split('/').all(|c| {
                !c.is_empty()
                    && c != ".."
                    && c.chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
            })
    };
    match std::fs::read_to_string(&file) {
        Ok(text) if valid(text.trim()) => {
            return Ok(ContainerOwner {
                parent: text.trim().to_string(),
                own: true,
            })
        }
        Ok(text) => {
            warn!(file = %file.display(), content = %text.trim(), "unreadable cgroup parent: set aside, choosing a new one");
            agent::recovery::set_aside(layout, &file, "not a cgroup path");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(AgentError::io(&file, e)),
    }
    let has_checkpoints = std::fs::read_dir(layout.frameworks_meta())
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if has_checkpoints {
        return Ok(ContainerOwner {
            parent: base.to_string(),
            own: false,
        });
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let parent = format!("{base}/{}", &id[..12]);
    std::fs::create_dir_all(layout.meta()).map_err(|e| AgentError::io(layout.meta(), e))?;
    agora_ha::store::write_atomic(&file, parent.as_bytes())
        .map_err(|e| AgentError::io(&file, e))?;
    Ok(ContainerOwner { parent, own: true })
}

fn prepare_work_dir(layout: &paths::Layout, config: &AgentConfig) -> Result<(), AgentError> {
    use std::os::unix::fs::PermissionsExt;
    if !user::can_switch_users() {
        return Ok(());
    }
    let set = |p: PathBuf, mode: u32| -> Result<(), AgentError> {
        std::fs::create_dir_all(&p).map_err(|e| AgentError::io(&p, e))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| AgentError::io(&p, e))
    };
    set(layout.meta(), 0o700)?;
    set(layout.work_dir().to_path_buf(), 0o755)?;
    set(layout.sandboxes_root(), 0o755)?;
    let policy = user::UserPolicy {
        default_user: config.default_task_user.clone(),
        allow_root: config.allow_root_tasks,
    };
    match user::resolve("", "", &policy) {
        Ok(u) => {
            if let Some((dir, mode, owner)) =
                user::blocked_ancestor(&layout.sandboxes_root().join("x"), &u)
            {
                warn!(
                    dir = %dir.display(), mode = format!("{mode:o}"), owner,
                    "native tasks running as '{}' cannot reach their sandboxes below this directory and will fail: make it searchable (chmod o+x) or choose another --work-dir",
                    u.name
                );
            }
        }
        Err(e) => warn!(error = %e, "--default-task-user: tasks that name no user will fail"),
    }
    Ok(())
}

/// A started agent: its handle, its outbox of status updates, what it tells the master, and its
/// cgroup parent's [`Release`].
pub struct Agent {
    pub handle: AgentHandle,
    pub outbox: mpsc::UnboundedReceiver<v1::StatusUpdate>,
    pub info: v1::AgentInfo,
    pub release: Release,
}

/// Dropped when the agent stops (in-process or [`run`] returning): removes the agent's own cgroup
/// parent if no container is left in it, so that an agent whose tasks are all gone leaves nothing
/// in the host's cgroup hierarchies. One whose tasks still run keeps it (the kernel refuses to
/// remove a cgroup with children), and the restarted agent recovers them there.
pub struct Release(Vec<Arc<dyn Containerizer>>);

impl Drop for Release {
    fn drop(&mut self) {
        for c in &self.0 {
            c.retire();
        }
    }
}

impl Agent {
    /// Sets up containerizers, recovers checkpointed tasks and starts the actor. No HTTP, no master:
    /// see [`run`] for the whole agent.
    ///
    /// # Errors
    /// Bad flags, an unreachable Docker engine when `docker` is enabled, unreadable checkpoints.
    pub async fn start(config: &AgentConfig) -> Result<Agent, AgentError> {
        let kinds = parse_containerizers(&config.containerizers)?;
        let resources = match &config.resources {
            Some(r) => Resources::parse(r).map_err(|e| AgentError::Resources(e.to_string()))?,
            None => detect_resources(),
        };
        let attributes = parse_attributes(config.attributes.as_deref().unwrap_or(""))?;
        let hostname = config.hostname.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into())
        });
        std::fs::create_dir_all(&config.work_dir)
            .map_err(|e| AgentError::io(&config.work_dir, e))?;
        let work_dir = std::fs::canonicalize(&config.work_dir)
            .map_err(|e| AgentError::io(&config.work_dir, e))?;
        let layout = paths::Layout::new(&work_dir);
        prepare_work_dir(&layout, config)?;
        let containerizers = containerizers(&kinds, &layout, config).await?;
        let release = Release(containerizers.clone());
        let (handle, outbox) = agent::start(AgentSettings {
            work_dir,
            hostname: hostname.clone(),
            containerizers,
            status_retry_initial: config.status_retry_initial,
            status_retry_max: config.status_retry_max,
            user_policy: user::UserPolicy {
                default_user: config.default_task_user.clone(),
                allow_root: config.allow_root_tasks,
            },
            mesh_ip: config.mesh.as_ref().map(|m| m.ip),
            mesh_bridge_ip: config.mesh.as_ref().and_then(|m| m.bridge_ip),
        })
        .await?;
        let info = v1::AgentInfo {
            hostname,
            resources: resources.to_proto(),
            attributes,
            http_port: config.port as u32,
            version: env!("CARGO_PKG_VERSION").into(),
            ip: String::new(),
        };
        Ok(Agent {
            handle,
            outbox,
            info,
            release,
        })
    }
}

/// The `AGORA-1-…` join token, if `config.join_token` is one (then the agent gets its certificate
/// from the cluster CA; TLS files may not be given too).
fn join_token_of(config: &AgentConfig) -> Result<Option<agora_net::pki::JoinToken>, AgentError> {
    let Some(t) = config
        .join_token
        .as_deref()
        .filter(|t| agora_net::pki::JoinToken::looks_like(t))
    else {
        return Ok(None);
    };
    if !config.tls.is_empty() {
        return Err(AgentError::Config(
            "--join-token AGORA-1-… gets the agent its certificate from the cluster CA: \
             drop --tls-cert, --tls-key and --tls-ca (or use a plain token with them)"
                .into(),
        ));
    }
    agora_net::pki::JoinToken::parse(t)
        .map(Some)
        .map_err(|e| AgentError::Config(e.to_string()))
}

/// Runs a whole agent until `shutdown` resolves: recovery, the HTTP server on `config.port`, and the
/// link to the master when `config.master` is set. On shutdown the agent stops but leaves its tasks
/// running (a restarted agent recovers them).
///
/// # Errors
/// Start-up errors (see [`Agent::start`]), [`AgentError::Bind`], or the master shutting the agent down.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let Agent {
        handle,
        outbox,
        mut info,
        release,
    } = Agent::start(&config).await?;
    let issued = match (&config.master, join_token_of(&config)?) {
        (Some(master), Some(token)) => {
            let names = certificates::names(&info.hostname, Some(config.bind));
            Some(
                certificates::Issued::obtain(master, &token, &config.work_dir.join("tls"), names)
                    .await?,
            )
        }
        _ => None,
    };
    let server_tls = match &issued {
        Some(i) => Some(i.server_config()?),
        None => config
            .tls
            .server_config()
            .map_err(|e| AgentError::Config(e.to_string()))?,
    };
    let client_tls = config
        .tls
        .client()
        .map_err(|e| AgentError::Config(e.to_string()))?;
    let addr = SocketAddr::new(config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| AgentError::Bind {
            addr: addr.to_string(),
            source: e,
        })?;
    let local = listener.local_addr().map_err(|e| AgentError::Bind {
        addr: addr.to_string(),
        source: e,
    })?;
    info.http_port = local.port() as u32;
    if !config.bind.is_unspecified() {
        info.ip = config.bind.to_string();
    } else if let Ok(ip) = info.hostname.parse::<IpAddr>() {
        info.ip = ip.to_string();
    }
    let dns_metrics = std::sync::Arc::new(dns::DnsMetrics::default());
    let endpoints = endpoints::Endpoints::new();
    let mesh = match &config.mesh {
        Some(m) => Some(
            mesh::Mesh::start(m.clone(), &endpoints)
                .await
                .map_err(|e| AgentError::Config(e.to_string()))?,
        ),
        None => None,
    };
    info!(agent_id = %handle.agent_id(), http = %local, "agent started");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let listener =
        agora_net::tls::Listener::new(listener, server_tls).map_err(|e| AgentError::Bind {
            addr: addr.to_string(),
            source: e,
        })?;
    let server = agora_net::tls::serve(
        listener,
        http::protected_router(
            handle.clone(),
            config.api_token.clone(),
            http::metrics_router(dns_metrics.clone(), mesh.clone()),
        ),
        async move {
            let _ = http_stop.wait_for(|s| *s).await;
        },
    );
    let http = tokio::spawn(server);
    let dns_server = match &config.dns {
        Some(d) => {
            let (server, addr) = dns::start(d, &endpoints, dns_metrics.clone())
                .await
                .map_err(|e| AgentError::Config(e.to_string()))?;
            info!(dns = %addr, "agent DNS started");
            Some(server)
        }
        None => None,
    };
    let link = match &config.master {
        Some(master) => {
            let l = master_link::MasterLink::new(master.clone(), handle.clone(), info.clone())
                .with_endpoints(endpoints.clone())
                .with_join_token(config.join_token.clone())
                .with_tls(client_tls)
                .with_issued(issued.clone());
            let stop = stop_rx.clone();
            Some(tokio::spawn(l.run(outbox, stop)))
        }
        None => {
            warn!("no --master given: the agent runs standalone and receives no tasks");
            drop(outbox);
            None
        }
    };
    let result = tokio::select! {
        () = shutdown => Ok(()),
        r = async {
            match link {
                Some(l) => l.await.unwrap_or(Ok(())),
                None => std::future::pending().await,
            }
        } => r,
    };
    let _ = stop_tx.send(true);
    if let Some(m) = &mesh {
        m.stop();
    }
    if let Some(mut s) = dns_server {
        let _ = tokio::time::timeout(Duration::from_secs(2), s.shutdown_gracefully()).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    handle.abort();
    drop(release);
    info!("agent stopped; its tasks keep running");
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        assert_eq!(
            parse_containerizers("docker, native").expect("parse"),
            [ContainerizerKind::Docker, ContainerizerKind::Native]
        );
        assert!(
            matches!(parse_containerizers("lxc"), Err(AgentError::UnknownContainerizer(n)) if n == "lxc")
        );
        let a = parse_attributes("rack:a; zone:eu").expect("attrs");
        assert_eq!((a[1].name.as_str(), a[1].text.as_str()), ("zone", "eu"));
        assert!(parse_attributes("rack").is_err());
        let r = detect_resources();
        assert!(r.scalar_total("cpus") >= 1.0 && r.scalar_total("mem") > 0.0);
    }
}
