//! `agora master`: the leader of a cluster, standalone or elected through ZooKeeper (`--zk`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::seconds;

#[derive(clap::Subcommand, Debug)]
pub enum MasterAction {
    /// Print the cluster's agent join token, `AGORA-1-<CA digest>-<secret>` (creating the cluster
    /// CA if no master made it yet), or the framework/operator token with --framework; --rotate
    /// replaces the secret.
    Token {
        #[command(flatten)]
        store: PkiStoreArgs,
        /// The framework/operator token (client certificates for frameworks, the CLI, the SDK)
        /// instead of the agent token.
        #[arg(long)]
        framework: bool,
        /// Replace the secret: new joins need the new token; certificates already issued keep
        /// working.
        #[arg(long)]
        rotate: bool,
        /// An older cluster's plain token file (a master started with --join-token-file): print
        /// or rotate that token instead.
        #[arg(long, conflicts_with_all = ["zk", "framework"])]
        join_token_file: Option<PathBuf>,
    },
    /// The cluster CA.
    Ca {
        #[command(subcommand)]
        action: CaAction,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum CaAction {
    /// Replace the cluster CA without an outage: a new CA (new key), cross-signed by the old one
    /// which stays trusted until --finish. The masters pick it up within seconds, agents and
    /// frameworks renew their certificates from it within a minute, and `agora master token`
    /// prints tokens that pin it (tokens pinning the old CA keep working until --finish).
    Rotate {
        #[command(flatten)]
        store: PkiStoreArgs,
        /// End the rotation: the old CA is no longer trusted, nor accepted in join tokens. Run it
        /// once every agent and framework holds a certificate of the new CA.
        #[arg(long)]
        finish: bool,
    },
}

/// Where the cluster CA and the join secrets live, as the masters are given it.
#[derive(Args, Debug)]
pub struct PkiStoreArgs {
    /// The cluster's ZooKeeper URL, as the masters are given (the CA and secrets live there).
    #[arg(long, env = "AGORA_ZK")]
    zk: Option<String>,
    /// Without --zk: the master's work dir (the CA and secrets live in <dir>/pki).
    #[arg(
        long,
        default_value = "/var/lib/agora/master",
        env = "AGORA_MASTER_WORK_DIR"
    )]
    work_dir: PathBuf,
    /// File with ZooKeeper's `user:password` (digest scheme), as the masters are given.
    #[arg(long)]
    zk_auth_file: Option<PathBuf>,
}

impl PkiStoreArgs {
    fn home(&self) -> anyhow::Result<agora_ha::secret_store::SecretHome> {
        Ok(agora_master::pki::home(
            &self.work_dir,
            self.zk.as_deref(),
            zk_auth(self.zk_auth_file.as_deref())?,
            Duration::from_secs(10),
        )?)
    }
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MasterArgs {
    /// Without a subcommand, `agora master` runs a master.
    #[command(subcommand)]
    action: Option<MasterAction>,
    /// Port for gRPC (agents, frameworks, operators) and HTTP (/state, /metrics, web UI).
    #[arg(long, default_value_t = agora_master::DEFAULT_PORT, env = "AGORA_MASTER_PORT")]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    ip: IpAddr,
    /// Address agents and frameworks are told to reach this master at (default: the listen
    /// address, or when listening on all interfaces the machine's address on its default route,
    /// else 127.0.0.1).
    #[arg(long)]
    advertise_ip: Option<String>,
    /// Name shown in the UI and in MasterInfo (default: the machine's hostname).
    #[arg(long)]
    hostname: Option<String>,
    /// Directory for the registry (admitted agents, weights, quota, maintenance).
    #[arg(
        long,
        default_value = "/var/lib/agora/master",
        env = "AGORA_MASTER_WORK_DIR"
    )]
    work_dir: PathBuf,
    /// Seconds between batched allocation cycles.
    #[arg(long, default_value = "1", value_parser = seconds)]
    allocation_interval: Duration,
    /// Seconds after which an unanswered offer is rescinded (default: never).
    #[arg(long, value_parser = seconds)]
    offer_timeout: Option<Duration>,
    /// Seconds of silence after which an agent is unreachable (its tasks TASK_UNREACHABLE).
    #[arg(long, default_value = "75", value_parser = seconds)]
    agent_timeout: Duration,
    /// Seconds after which an unreachable agent is gone (its tasks TASK_GONE).
    #[arg(long, default_value = "3600", value_parser = seconds)]
    agent_gone_timeout: Duration,
    /// Seconds frameworks reported by re-registering agents have to re-subscribe after a master
    /// restart.
    #[arg(long, default_value = "600", value_parser = seconds)]
    framework_recovery_timeout: Duration,
    /// Seconds between HEARTBEAT events to frameworks.
    #[arg(long, default_value = "15", value_parser = seconds)]
    framework_heartbeat: Duration,
    /// ZooKeeper URL for leader election and the registry, e.g. `zk://z1:2181,z2:2181/agora`.
    /// Without it the master runs standalone with its registry in --work-dir.
    #[arg(long, env = "AGORA_ZK")]
    zk: Option<String>,
    /// Agents must present the token in this file to register (it is created when missing; print
    /// it with `agora master token`). Without it anyone who reaches the port may join.
    #[arg(long, env = "AGORA_JOIN_TOKEN_FILE")]
    join_token_file: Option<PathBuf>,
    /// Frameworks must authenticate (`authorization: Basic base64(principal:secret)` on
    /// Subscribe) with a credential from this JSON file: `{"credentials":[{"principal","secret"}]}`.
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// Authorization rules (JSON): which principals may register in which roles
    /// (`register_frameworks`) and tear down whose frameworks (`teardown_frameworks`).
    #[arg(long)]
    acls: Option<PathBuf>,
    /// The HTTP API (/state, /metrics, /api/v1/…; not /health or the web UI's page) requires
    /// `Authorization: Bearer <token>` with the token in this file, re-read every second (rotate
    /// by replacing the file). The web UI takes it once as `/?token=…`. gRPC is not affected.
    #[arg(long, env = "AGORA_MASTER_API_TOKEN_FILE")]
    api_token_file: Option<PathBuf>,
    /// Seconds of ZooKeeper session timeout. A leader disconnected for a third of it steps down.
    #[arg(long, default_value = "10", value_parser = seconds)]
    zk_session_timeout: Duration,
    /// Seconds a newly elected leader waits for the registry's agents to re-register before it
    /// makes offers without them (they are then recorded unreachable).
    #[arg(long, default_value = "60", value_parser = seconds)]
    agent_reregister_timeout: Duration,
    /// Seconds a killed task with endpoints (discovery info) drains before its kill is sent:
    /// it leaves every agent's endpoint table (DNS, mesh) first, and the kill goes out once every
    /// connected agent has acknowledged that, at the latest after this long. 0 turns draining
    /// off; at most 60.
    #[arg(long, default_value = "2", value_parser = drain_period)]
    drain_period: Duration,
    /// Role ordering: `drf` (weighted dominant resource fairness) or `strict-priority`.
    #[arg(long, default_value = "drf", value_parser = ["drf", "strict-priority"])]
    allocation_policy: String,
    #[command(flatten)]
    tls: super::TlsArgs,
    /// Agents must present a TLS client certificate signed by --tls-ca (mutual TLS); frameworks
    /// and browsers on the same port still need none.
    #[arg(long)]
    tls_require_agent_cert: bool,
    /// Serve in clear: no TLS, no certificates. Without it (and without --tls-* files) the master
    /// serves TLS with a certificate of the cluster CA, made at the cluster's first start and kept
    /// in ZooKeeper (--zk) or in --work-dir/pki, and agents join with `agora master token`'s token.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_ca", "tls_require_agent_cert"])]
    insecure: bool,
    /// File with `user:password` for ZooKeeper's digest scheme: the cluster CA's znode is then
    /// readable only by sessions with that credential (give all masters the same file).
    #[arg(long)]
    zk_auth_file: Option<PathBuf>,
    /// Seconds the certificates issued to agents and frameworks are valid (tests).
    #[arg(long, hide = true, value_parser = seconds)]
    test_certificate_lifetime: Option<Duration>,
}

fn zk_auth(file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    let Some(path) = file else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--zk-auth-file {}: {e}", path.display()))?;
    let auth = text.trim().to_string();
    match auth.split_once(':') {
        Some((user, password))
            if !user.is_empty() && !password.is_empty() && auth.len() <= 1024 =>
        {
            Ok(Some(auth))
        }
        _ => anyhow::bail!(
            "--zk-auth-file {}: expected one line `user:password` (at most 1024 bytes)",
            path.display()
        ),
    }
}

async fn ca(action: CaAction) -> anyhow::Result<()> {
    use agora_master::pki;
    let CaAction::Rotate { store, finish } = action;
    let home = store.home()?;
    if finish {
        let secrets = pki::finish_ca_rotation(&home, pki::now()).await?;
        println!(
            "finished: only the CA {} is trusted now (the masters drop the previous one within {} s)",
            secrets.ca()?.digest(),
            pki::PKI_POLL.as_secs()
        );
        return Ok(());
    }
    let secrets = pki::rotate_ca(&home, pki::now()).await?;
    let digests = secrets.trust().digests()?;
    println!("new CA {}", digests[0]);
    if let Some(old) = digests.get(1) {
        println!("old CA {old} (trusted until `agora master ca rotate --finish`)");
    }
    println!(
        "the masters pick it up within {} s; agents and frameworks renew within a minute; \
         `agora master token` prints tokens that pin the new CA",
        pki::PKI_POLL.as_secs()
    );
    Ok(())
}

pub async fn run(args: MasterArgs) -> anyhow::Result<()> {
    let args = match args.action {
        Some(MasterAction::Ca { action }) => return ca(action).await,
        action => MasterArgs { action, ..args },
    };
    if let Some(MasterAction::Token {
        store,
        framework,
        rotate,
        join_token_file,
    }) = args.action
    {
        if let Some(file) = join_token_file {
            let token = if rotate {
                agora_master::join_token::rotate(&file)?
            } else {
                agora_master::join_token::load_or_create(&file)?
            };
            println!("{token}");
            return Ok(());
        }
        use agora_master::pki;
        let home = store.home()?;
        let kind = if framework {
            pki::TokenKind::Framework
        } else {
            pki::TokenKind::Agent
        };
        let secrets = if rotate {
            pki::rotate(&home, kind, pki::now()).await?
        } else {
            pki::load_or_create(&home, pki::now()).await?
        };
        println!("{}", secrets.token(kind)?);
        return Ok(());
    }
    let cluster_ca = !args.insecure && args.tls.files().is_empty();
    if args.join_token_file.is_none() && !cluster_ca {
        tracing::warn!("no --join-token-file: any agent that reaches this master may join");
    }
    let config = agora_master::MasterConfig {
        bind: SocketAddr::new(args.ip, args.port),
        advertise_ip: Some(agora_net::addr::advertised_ip(args.advertise_ip, args.ip)),
        hostname: args.hostname,
        work_dir: args.work_dir,
        allocation_interval: args.allocation_interval,
        offer_timeout: args.offer_timeout,
        agent_timeout: args.agent_timeout,
        agent_gone_timeout: args.agent_gone_timeout,
        framework_recovery_timeout: args.framework_recovery_timeout,
        framework_heartbeat: args.framework_heartbeat,
        policy: match args.allocation_policy.as_str() {
            "strict-priority" => agora_master::Policy::StrictPriority,
            _ => agora_master::Policy::Drf,
        },
        seed: rand_seed(),
        zk: args.zk,
        join_token_file: args.join_token_file,
        credentials_file: args.credentials,
        acls_file: args.acls,
        api_token: super::cli::api_token(args.api_token_file)?,
        zk_session_timeout: args.zk_session_timeout,
        agent_reregister_timeout: args.agent_reregister_timeout,
        tls: args.tls.files(),
        require_agent_certificate: args.tls_require_agent_cert,
        drain_period: args.drain_period,
        cluster_ca,
        zk_auth: zk_auth(args.zk_auth_file.as_deref())?,
        certificate_lifetime: args
            .test_certificate_lifetime
            .unwrap_or(agora_net::pki::DEFAULT_LIFETIME),
    };
    let master = agora_master::start(config).await?;
    eprintln!("agora master listening on {}", master.address);
    master.wait(super::shutdown_signal()).await?;
    Ok(())
}

/// `--drain-period`: seconds, at most [`agora_master::drain::MAX_DRAIN_PERIOD`].
fn drain_period(s: &str) -> Result<Duration, String> {
    let max = agora_master::drain::MAX_DRAIN_PERIOD;
    // Checked before it becomes a Duration (which panics on 1e300).
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=max.as_secs_f64()).contains(&v) => seconds(s),
        _ => Err(format!(
            "--drain-period: seconds between 0 and {}, got '{s}'",
            max.as_secs()
        )),
    }
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
