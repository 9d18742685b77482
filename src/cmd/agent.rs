//! `agora agent`: runs tasks on this machine for the master.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
#[command(subcommand_negates_reqs = true)]
pub struct AgentArgs {
    /// Without a subcommand, `agora agent` runs an agent; these manage the cluster's agents.
    #[command(subcommand)]
    action: Option<AgentCommand>,
    /// The master: `host:port` or `zk://h1:2181,h2:2181/agora`.
    #[arg(long, env = "AGORA_MASTER", global = true)]
    master: Option<String>,
    /// Print JSON instead of a table (with `list`).
    #[arg(long, global = true)]
    json: bool,
    /// HTTP port (sandbox files, statistics, health).
    #[arg(long, default_value_t = agora_agent::DEFAULT_PORT)]
    port: u16,
    /// Address the HTTP server listens on.
    #[arg(long, default_value = "0.0.0.0")]
    ip: IpAddr,
    /// Checkpoints and sandboxes.
    #[arg(
        long,
        default_value = "/var/lib/agora/agent",
        env = "AGORA_AGENT_WORK_DIR",
        global = true
    )]
    work_dir: PathBuf,
    /// Resources offered, e.g. `cpus:4;mem:8192;disk:20480;ports:[31000-32000]` (default: detected).
    #[arg(long)]
    resources: Option<String>,
    /// Attributes for placement constraints, e.g. `rack:a;zone:eu`.
    #[arg(long)]
    attributes: Option<String>,
    /// Containerizers to enable, comma-separated: `docker`, `native` (default: `docker,native` when
    /// a Docker engine answers, else `native`).
    #[arg(long)]
    containerizers: Option<String>,
    /// Hostname advertised to the master and frameworks (default: the machine's).
    #[arg(long)]
    hostname: Option<String>,
    /// Seconds before an unacknowledged status update is first resent (doubling up to 10 min).
    #[arg(long, default_value = "10", value_parser = super::seconds)]
    status_retry_initial: std::time::Duration,
    /// File holding the cluster's join token (`agora master token` prints it).
    #[arg(long, env = "AGORA_AGENT_JOIN_TOKEN_FILE")]
    join_token_file: Option<PathBuf>,
    /// The join token itself (prefer --join-token-file: the environment is visible to tasks).
    #[arg(long = "join-token", env = "AGORA_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// File holding the cluster's API token (the master's --api-token-file): the agent's HTTP API
    /// (sandbox files, statistics; all but /health) then requires it.
    #[arg(long)]
    api_token_file: Option<PathBuf>,
    /// cgroup filesystem root.
    #[arg(long, default_value = "/sys/fs/cgroup", global = true)]
    cgroup_root: PathBuf,
    /// Unix user tasks run as when neither the task nor its framework names one.
    #[arg(long, default_value = agora_agent::user::DEFAULT_TASK_USER)]
    default_task_user: String,
    /// Let tasks that ask for user `root` run as root (otherwise they end TASK_ERROR).
    #[arg(long)]
    allow_root_tasks: bool,
    /// DNS port (UDP and TCP) on `--ip`, answering Mesos-DNS names of the cluster's services
    /// (`web-prod.services.agora`); 0 turns DNS off.
    #[arg(long, default_value_t = 53)]
    dns_port: u16,
    /// The domain DNS answers for.
    #[arg(long, default_value = "agora")]
    dns_domain: String,
    /// Forward names outside `--dns-domain` to the resolvers of /etc/resolv.conf
    /// (`--dns-forward=false`: refuse them).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    dns_forward: bool,
    /// The routing mesh: a listener on `--ip` for each service port of the cluster, relaying to
    /// the service's healthy tasks on any agent (`--mesh=false`: off).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    mesh: bool,
    /// Port on `--ip` serving apps with a virtual host (`HAPROXY_{n}_VHOST`) by `Host` header;
    /// 0 turns it off.
    #[arg(long, default_value_t = 80)]
    mesh_http_port: u16,
    /// Most client connections open at once per mesh listener (more wait in the backlog).
    #[arg(long, default_value_t = agora_agent::mesh::DEFAULT_MAX_CONNECTIONS)]
    mesh_max_connections: usize,
    /// Seconds a mesh connect to a task may take before another task is tried.
    #[arg(long, default_value = "2", value_parser = super::seconds)]
    mesh_connect_timeout: std::time::Duration,
    /// Threads of the mesh's own event loop (1: one thread, no hand-offs between threads); 0 runs
    /// the mesh on the agent's runtime.
    #[arg(long, default_value_t = agora_agent::mesh::DEFAULT_THREADS)]
    mesh_threads: usize,
    /// A second address the mesh also listens on, where bridge-network containers reach this
    /// host (the Docker bridge's gateway, e.g. 172.17.0.1), for an agent whose `--ip` they cannot
    /// reach (loopback); tasks' host aliases in such containers point there.
    #[arg(long)]
    mesh_bridge_ip: Option<std::net::IpAddr>,
    // The API token of `agora agent list|drain|reactivate` (a master started with
    // --api-token-file).
    #[command(flatten)]
    token: super::cli::TokenArgs,
    #[command(flatten)]
    tls: super::TlsArgs,
    /// Talk to the master and serve the HTTP port in clear (a master started with --insecure).
    /// Without it the agent needs a join token `AGORA-1-…` (`agora master token`), with which it
    /// gets its certificate from the cluster CA, or --tls-* files.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_ca"])]
    insecure: bool,
}

/// `agora agent SUBCOMMAND`: the cluster's agents (through the master), or this machine's
/// containers.
#[derive(clap::Subcommand, Debug)]
pub enum AgentCommand {
    #[command(flatten)]
    Cluster(super::cli::AgentAction),
    /// Destroy every container the agent of --work-dir launched (its tasks are killed, their
    /// sandboxes stay), with the agent stopped: for retiring a machine. A running agent does this
    /// by itself for containers no checkpoint knows.
    Cleanup {
        /// Containerizers whose containers to destroy (default: as `agora agent` would use).
        #[arg(long)]
        containerizers: Option<String>,
    },
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    if let Some(AgentCommand::Cleanup { containerizers }) = args.action {
        let config = agora_agent::AgentConfig {
            work_dir: args.work_dir,
            cgroup_root: args.cgroup_root,
            containerizers: match containerizers {
                Some(c) => c,
                None => agora_agent::containerizer::default_containerizers()
                    .await
                    .to_string(),
            },
            ..Default::default()
        };
        let n = agora_agent::destroy_containers(&config).await?;
        println!("destroyed {n} container(s)");
        return Ok(());
    }
    if let Some(AgentCommand::Cluster(action)) = args.action {
        let m = super::cli::MasterAddress {
            master: args.master.clone(),
            json: args.json,
            token: args.token,
            tls_ca: args.tls.tls_ca.clone(),
        };
        return super::cli::agent(action, m).await;
    }
    let Some(master) = args.master else {
        anyhow::bail!("--master is required to run an agent (host:port or zk://…)");
    };
    if let Some(ip) = args.mesh_bridge_ip {
        if !args.mesh {
            anyhow::bail!("--mesh-bridge-ip {ip} is an address for the routing mesh, which --mesh=false turns off: drop one of the two");
        }
        if ip.is_unspecified() || ip.is_loopback() || ip == args.ip {
            anyhow::bail!("--mesh-bridge-ip {ip}: give the address of this host that bridge-network containers reach (the Docker bridge's gateway, e.g. 172.17.0.1), not a wildcard, a loopback address or --ip itself");
        }
    }
    if let Some(r) = &args.resources {
        agora_proto::Resources::parse(r).map_err(|e| anyhow::anyhow!("--resources: {e}"))?;
    }
    let join_token = match (&args.join_token_file, args.join_token) {
        (Some(path), _) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--join-token-file {}: {e}", path.display()))?
                .trim()
                .to_string(),
        ),
        (None, token) => token,
    };
    let secure_token = join_token
        .as_deref()
        .is_some_and(agora_net::pki::JoinToken::looks_like);
    if secure_token && args.insecure {
        anyhow::bail!("--insecure cannot be used with an AGORA-1-… join token (it gets the agent a certificate)");
    }
    if !secure_token && !args.insecure && args.tls.files().is_empty() {
        anyhow::bail!(
            "give the agent the cluster's join token (--join-token AGORA-1-…, printed by \
             `agora master token` on a master), or --tls-* files, or --insecure for a master \
             started with --insecure"
        );
    }
    let api_token = args
        .api_token_file
        .as_ref()
        .map(agora_net::http_auth::ApiToken::from_file)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--api-token-file: {e}"))?;
    let config = agora_agent::AgentConfig {
        master: Some(master),
        port: args.port,
        bind: args.ip,
        work_dir: args.work_dir,
        resources: args.resources,
        attributes: args.attributes,
        containerizers: match args.containerizers {
            Some(c) => c,
            None => agora_agent::containerizer::default_containerizers()
                .await
                .to_string(),
        },
        hostname: args.hostname,
        cgroup_root: args.cgroup_root,
        status_retry_initial: args.status_retry_initial,
        join_token,
        default_task_user: args.default_task_user,
        allow_root_tasks: args.allow_root_tasks,
        tls: args.tls.files(),
        api_token,
        dns: (args.dns_port != 0).then(|| agora_agent::dns::DnsConfig {
            listen: std::net::SocketAddr::new(args.ip, args.dns_port),
            domain: args.dns_domain.clone(),
            forward: args.dns_forward,
        }),
        mesh: args.mesh.then(|| agora_agent::mesh::MeshConfig {
            http_port: args.mesh_http_port,
            max_connections: args.mesh_max_connections,
            connect_timeout: args.mesh_connect_timeout,
            threads: args.mesh_threads,
            bridge_ip: args.mesh_bridge_ip,
            listen_on_bridge_ip: args.mesh_bridge_ip.is_some(),
            ..agora_agent::mesh::MeshConfig::new(args.ip)
        }),
        ..Default::default()
    };
    agora_agent::run(config, super::shutdown_signal()).await?;
    Ok(())
}
