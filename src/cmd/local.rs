//! `agora local`: a whole cluster in one process for a first run — a master, N agents (each
//! with its own work dir, its own loopback address `127.0.0.N` and a share of the machine), and the
//! services and batch frameworks, with
//! state under `--work-dir` so that a second start recovers the first one's tasks. No ZooKeeper.
//!
//! Secure by default, the same way as a cluster of machines: the master makes the cluster CA in
//! `--work-dir/master` (as a standalone master does), the agents join with the agent token and
//! the frameworks with the framework token, in this process, and every listener speaks TLS with a
//! certificate of that CA. The CLI is logged in ([`super::login`]) into `~/.agora`
//! (`AGORA_HOME`), as `docker swarm init` makes the local CLI a manager, unless that directory
//! holds a login to another master. `--insecure` runs it all in clear.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::sync::watch;

#[derive(Args, Debug)]
pub struct LocalArgs {
    /// How many agents to run; the machine's resources are split between them.
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// Where the master's registry and the agents' checkpoints and sandboxes live.
    #[arg(long, default_value = "./agora-local")]
    work_dir: PathBuf,
    /// The master's port (gRPC, HTTP API and web UI).
    #[arg(long, default_value_t = agora_master::DEFAULT_PORT)]
    port: u16,
    /// The port every agent listens on, each on its own loopback address (127.0.0.2, 127.0.0.3,
    /// …); another one lets two `agora local` run side by side.
    #[arg(long, default_value_t = 5051)]
    agent_port: u16,
    /// Port of the services framework's Marathon-compatible API.
    #[arg(long, default_value_t = agora_services::DEFAULT_PORT)]
    services_port: u16,
    /// The services framework assigns service ports (`port: 0`, `servicePort: 0`) from this
    /// range, MIN-MAX (as `agora services --service-port-range`).
    #[arg(long, default_value = "10000-20000")]
    service_port_range: agora_services::PortRange,
    /// Port of the batch framework's Chronos-compatible API.
    #[arg(long, default_value_t = agora_batch::DEFAULT_PORT)]
    batch_port: u16,
    /// Containerizers: `docker,native`, `native`; default: Docker too when an engine answers.
    #[arg(long)]
    containerizers: Option<String>,
    /// Unix user tasks run as when neither the task nor its framework names one.
    #[arg(long, default_value = agora_agent::user::DEFAULT_TASK_USER)]
    default_task_user: String,
    /// Let tasks that ask for user `root` run as root (otherwise they end TASK_ERROR).
    #[arg(long)]
    allow_root_tasks: bool,
    /// Port of the mesh's virtual hosts (`HAPROXY_0_VHOST`) on every agent's address; 0 (the
    /// default) picks a free one, printed at start.
    #[arg(long, default_value_t = 0)]
    mesh_http_port: u16,
    /// Threads of each agent's mesh event loop (1: one thread each); 0 runs the meshes on the
    /// process's runtime.
    #[arg(long, default_value_t = agora_agent::mesh::DEFAULT_THREADS)]
    mesh_threads: usize,
    /// Run no routing mesh on the agents.
    #[arg(long)]
    no_mesh: bool,
    /// Run in clear: no cluster CA, no TLS, no certificates, no login of the CLI. Without it
    /// every listener speaks TLS with a certificate of the cluster CA made in --work-dir/master.
    #[arg(long)]
    insecure: bool,
}

/// What `agora local` runs with on the cluster CA: the tokens its agents and frameworks join
/// with, and the CA clients verify against.
struct Secure {
    agent_token: String,
    framework_token: agora_net::pki::JoinToken,
    ca_file: PathBuf,
    verify: agora_net::tls::ClientTls,
}

impl Secure {
    /// Reads what the master made in `master_dir` (its work dir), as `agora master token` does.
    async fn load(master_dir: &Path) -> anyhow::Result<Secure> {
        use agora_master::pki;
        let home = pki::home(master_dir, None, None, Duration::from_secs(10))?;
        let secrets = pki::load_or_create(&home, pki::now()).await?;
        let framework_token =
            agora_net::pki::JoinToken::parse(&secrets.token(pki::TokenKind::Framework)?)?;
        let ca_file = master_dir.join("ca.pem");
        Ok(Secure {
            agent_token: secrets.token(pki::TokenKind::Agent)?,
            framework_token,
            ca_file,
            verify: agora_net::tls::ClientTls {
                ca_pem: secrets.ca_cert_pem.clone().into_bytes(),
                identity: None,
            },
        })
    }

    /// Logs the CLI in to this cluster (`agora login` with the framework token) unless the login
    /// directory holds one to another master; says which, for the banner.
    async fn cli_login(&self, master: &str) -> String {
        let dir = match super::login::home() {
            Ok(d) => d,
            Err(e) => return format!("not logged in ({e:#})"),
        };
        let by_hand = format!(
            "agora login --master {master} --token-file <(agora master token --framework --work-dir {})",
            self.ca_file.parent().map_or_else(String::new, |d| d.display().to_string())
        );
        if let Ok(Some(other)) = super::login::load() {
            if other.master != master {
                return format!(
                    "{} holds a login to {}, kept: to use this cluster instead, {by_hand}",
                    dir.display(),
                    other.master
                );
            }
        }
        match super::login::login_into(&dir, master, &self.framework_token).await {
            Ok(_) => format!(
                "logged in ({}): `agora cluster status`, `agora app list`, … need no flags (`agora logout` undoes it)",
                dir.display()
            ),
            Err(e) => format!("not logged in ({e:#}); try {by_hand}"),
        }
    }
}

/// Splits the machine (or the given total) evenly between `n` agents, ports included.
pub fn share(total: &agora_proto::Resources, n: usize, i: usize) -> String {
    let n_f = n.max(1) as f64;
    let cpus = (total.scalar_total("cpus") / n_f * 1000.0).floor() / 1000.0;
    let mem = (total.scalar_total("mem") / n_f).floor();
    let ports_per = 1000 / n.max(1) as u64;
    let first = 31000 + ports_per * i as u64;
    format!(
        "cpus:{cpus};mem:{mem};disk:{};ports:[{first}-{}]",
        (10240.0 / n_f).floor(),
        first + ports_per - 1
    )
}

async fn docker_answers() -> bool {
    tokio::time::timeout(
        Duration::from_secs(3),
        agora_agent::containerizer::docker::DockerContainerizer::connect(),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

/// The Docker bridge's gateway, where bridge-network containers reach this host; `None` (logged)
/// when the engine does not tell.
async fn docker_bridge_gateway() -> Option<IpAddr> {
    let asked = tokio::time::timeout(Duration::from_secs(3), async {
        agora_agent::containerizer::docker::DockerContainerizer::connect()
            .await?
            .bridge_gateway()
            .await
    })
    .await;
    match asked {
        Ok(Ok(Some(ip))) => Some(ip),
        Ok(Ok(None)) => {
            tracing::warn!("Docker's bridge network has no IPv4 gateway: bridge-network containers will not reach the routing mesh");
            None
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read Docker's bridge network: bridge-network containers will not reach the routing mesh");
            None
        }
        Err(_) => {
            tracing::warn!("Docker did not describe its bridge network within 3 s: bridge-network containers will not reach the routing mesh");
            None
        }
    }
}

/// Tasks run as `--default-task-user` (`nobody`) and open their sandboxes by absolute path: a
/// work dir below a directory that user cannot enter (a 0700 home, `/root`) would make every task
/// fail, so say so before starting anything.
fn check_task_user_reaches(work_dir: &Path, user: &str, allow_root: bool) -> anyhow::Result<()> {
    use agora_agent::user;
    if !user::can_switch_users() {
        return Ok(());
    }
    let policy = user::UserPolicy {
        default_user: user.to_string(),
        allow_root,
    };
    let task_user =
        user::resolve("", "", &policy).map_err(|e| anyhow::anyhow!("--default-task-user: {e}"))?;
    if let Some((dir, mode, _)) = user::blocked_ancestor(&work_dir.join("agent-1"), &task_user) {
        anyhow::bail!(
            "tasks run as '{}', which cannot enter {} (mode {mode:o}) on the way to --work-dir {}: \
             every task would fail. Pass a --work-dir others can enter (e.g. --work-dir \
             /var/tmp/agora-local), make {} searchable (chmod o+x), or choose the task user with \
             --default-task-user",
            task_user.name,
            dir.display(),
            work_dir.display(),
            dir.display()
        );
    }
    Ok(())
}

pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    if args.agents == 0 || args.agents > 200 {
        anyhow::bail!("--agents must be between 1 and 200, got {}", args.agents);
    }
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating --work-dir {}", args.work_dir.display()))?;
    let work_dir = std::fs::canonicalize(&args.work_dir)?;
    check_task_user_reaches(&work_dir, &args.default_task_user, args.allow_root_tasks)?;
    let containerizers = match args.containerizers {
        Some(c) => c,
        None if docker_answers().await => "docker,native".to_string(),
        None => "native".to_string(),
    };
    let mut master = agora_master::start(agora_master::MasterConfig {
        bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.port),
        work_dir: work_dir.join("master"),
        allocation_interval: Duration::from_millis(250),
        cluster_ca: !args.insecure,
        ..Default::default()
    })
    .await
    .with_context(|| format!("starting the master on 127.0.0.1:{}", args.port))?;
    let master_address = format!("127.0.0.1:{}", master.address.port());
    let secure = if args.insecure {
        None
    } else {
        Some(
            Secure::load(&work_dir.join("master"))
                .await
                .context("reading the cluster CA the master made")?,
        )
    };
    let scheme = agora_net::tls::scheme(secure.is_some());
    let http = super::cli::with_tls(
        reqwest::Client::builder().timeout(Duration::from_secs(5)),
        secure.as_ref().map(|s| s.verify.clone()).as_ref(),
    )?
    .build()?;

    let machine = agora_agent::detect_resources();
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each agent's end is reported here: one that stops by itself stops `agora local`.
    let (agent_done_tx, mut agent_done) = tokio::sync::mpsc::unbounded_channel();
    let mut agents = Vec::new();
    // DNS on every agent, each on its own loopback address, all on one free port.
    let dns_port = free_dns_port().context("finding a free port for the agents' DNS")?;
    // The agents' addresses are loopback, which a bridge-network container cannot reach (its
    // loopback is its own): the first agent's mesh also listens on the Docker bridge's gateway,
    // and every agent points its bridge containers' host aliases there.
    let bridge_ip = if args.no_mesh || !containerizers.contains("docker") {
        None
    } else {
        docker_bridge_gateway().await
    };
    let mesh_http_port = match (args.no_mesh, args.mesh_http_port) {
        (true, _) => 0,
        (false, 0) => {
            free_tcp_port().context("finding a free port for the mesh's virtual hosts")?
        }
        (false, p) => p,
    };
    for i in 0..args.agents {
        // Each agent on its own loopback address, so that hostnames (and UNIQUE constraints) tell
        // them apart and every sandbox link works.
        let ip = Ipv4Addr::new(127, 0, 0, (i + 2) as u8);
        let config = agora_agent::AgentConfig {
            master: Some(master_address.clone()),
            port: args.agent_port,
            bind: IpAddr::V4(ip),
            work_dir: work_dir.join(format!("agent-{}", i + 1)),
            resources: Some(share(&machine, args.agents, i)),
            attributes: Some(format!("agent:{}", i + 1)),
            containerizers: containerizers.clone(),
            hostname: Some(ip.to_string()),
            default_task_user: args.default_task_user.clone(),
            allow_root_tasks: args.allow_root_tasks,
            dns: Some(agora_agent::dns::DnsConfig {
                listen: std::net::SocketAddr::new(IpAddr::V4(ip), dns_port),
                domain: "agora".into(),
                forward: true,
            }),
            join_token: secure.as_ref().map(|s| s.agent_token.clone()),
            mesh: (!args.no_mesh).then(|| agora_agent::mesh::MeshConfig {
                http_port: mesh_http_port,
                threads: args.mesh_threads,
                bridge_ip,
                listen_on_bridge_ip: i == 0,
                ..agora_agent::mesh::MeshConfig::new(IpAddr::V4(ip))
            }),
            ..Default::default()
        };
        let mut stop = stop_rx.clone();
        let done = agent_done_tx.clone();
        agents.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let result = agora_agent::run(config, shutdown).await;
            let _ = done.send((i + 1, result.as_ref().err().map(|e| e.to_string())));
            result
        }));
    }

    let state_url = format!("{scheme}://{master_address}/state");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let registered = match http.get(&state_url).send().await {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|s| s["agents"].as_array().map(|a| a.len()))
                .unwrap_or(0),
            Err(_) => 0,
        };
        if registered >= args.agents {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "only {registered} of {} agents registered within 30 s; see the log above",
                args.agents
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut services = agora_services::start_with(
        agora_services::ServicesConfig {
            master: master_address.clone(),
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.services_port),
            work_dir: work_dir.join("services"),
            role: "*".into(),
            framework_name: "services".into(),
            // A first try on one machine: no API token (every listener is on 127.0.0.1).
            api_token: None,
            failover_timeout: Duration::from_secs(7 * 24 * 3600),
            zk: None,
            zk_session_timeout: Duration::from_secs(10),
            advertise: None,
            credential: None,
            tls: Default::default(),
            join_token: secure.as_ref().map(|s| s.framework_token.clone()),
            issued: None,
        },
        args.service_port_range,
    )
    .await
    .with_context(|| {
        format!(
            "starting the services framework on 127.0.0.1:{}",
            args.services_port
        )
    })?;
    let mut batch = agora_batch::start(agora_batch::BatchConfig {
        master: master_address.clone(),
        bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.batch_port),
        work_dir: work_dir.join("batch"),
        role: "*".into(),
        framework_name: "batch".into(),
        api_token: None,
        failover_timeout: Duration::from_secs(7 * 24 * 3600),
        zk: None,
        zk_session_timeout: Duration::from_secs(10),
        advertise: None,
        credential: None,
        tls: Default::default(),
        join_token: secure.as_ref().map(|s| s.framework_token.clone()),
        issued: None,
    })
    .await
    .with_context(|| {
        format!(
            "starting the batch framework on 127.0.0.1:{}",
            args.batch_port
        )
    })?;
    let uses = if containerizers.contains("docker") {
        "Docker (engine found) and the native containerizer"
    } else {
        "the native containerizer (no Docker engine answered)"
    };
    println!(
        "Agora is running locally with {} agents, using {uses}.",
        args.agents
    );
    println!("  web UI and master API   {scheme}://{master_address}/");
    println!("  cluster state           {scheme}://{master_address}/state");
    println!("  metrics                 {scheme}://{master_address}/metrics");
    println!(
        "  services (Marathon)     {scheme}://{}/v2/apps",
        services.address
    );
    println!(
        "  services web UI         {scheme}://{}/ui/",
        services.address
    );
    println!(
        "  batch jobs (Chronos)    {scheme}://{}/v1/scheduler/jobs",
        batch.address
    );
    if let Some(s) = &secure {
        let ca = s.ca_file.display();
        println!(
            "  cluster CA              {ca}   (curl --cacert {ca} {scheme}://{master_address}/state; add it to a browser's trusted authorities for the web UIs)"
        );
        println!(
            "  agora CLI               {}",
            s.cli_login(&master_address).await
        );
    } else {
        println!("  in clear (--insecure)   no TLS, no certificates: anyone who reaches these ports is trusted");
    }
    let dns: Vec<String> = (0..args.agents)
        .map(|i| format!("127.0.0.{}:{dns_port}", i + 2))
        .collect();
    println!(
        "  DNS (each agent)        {}   (dig @127.0.0.2 -p {dns_port} <app>.services.agora)",
        dns.join(", ")
    );
    if !args.no_mesh {
        println!(
            "  routing mesh            every agent's address on an app's service port, e.g. curl http://127.0.0.2:<servicePort>/ (services on any agent, load balanced)"
        );
        println!(
            "  mesh virtual hosts      http://127.0.0.N:{mesh_http_port}/ by Host header (label HAPROXY_0_VHOST), e.g. curl -H 'Host: web.example.com' http://127.0.0.2:{mesh_http_port}/"
        );
        if let Some(ip) = bridge_ip {
            println!(
                "  mesh (bridge network)   {ip}:<servicePort> (the Docker bridge's gateway; a stack's service names point there)"
            );
        }
    }
    println!("  state is kept in        {}", work_dir.display());
    println!("Try: agora app create -f examples/apps/hello.json   ·   agora job add -f examples/jobs/hello.json   ·   Ctrl-C stops everything.");

    // One component that cannot go on stops them all, cleanly, and says why.
    let failure = tokio::select! {
        () = super::shutdown_signal() => None,
        e = services.failed() => Some(format!("the services framework: {e}")),
        e = batch.failed() => Some(format!("the batch framework: {e}")),
        e = master.failed() => Some(format!("the master: {e}")),
        Some((n, e)) = agent_done.recv() => Some(format!(
            "agent {n} stopped: {}",
            e.unwrap_or_else(|| "without an error".into())
        )),
    };
    if let Some(why) = &failure {
        eprintln!("stopping everything: {why}");
    }
    println!("stopping: agents first (their tasks keep running and are recovered next start), then the master");
    batch.stop().await;
    services.stop().await;
    let _ = stop_tx.send(true);
    for a in agents {
        match tokio::time::timeout(Duration::from_secs(10), a).await {
            Ok(Ok(Err(e))) => eprintln!("an agent stopped with: {e}"),
            Ok(Err(e)) => eprintln!("an agent task failed: {e}"),
            _ => {}
        }
    }
    let stopped = master.stop().await;
    if let Some(why) = failure {
        anyhow::bail!("{why}");
    }
    stopped?;
    Ok(())
}

/// A port free for both UDP and TCP on 127.0.0.2 (the first agent's address; the others' are
/// distinct addresses, so the same port is free there unless something binds all of loopback).
fn free_dns_port() -> std::io::Result<u16> {
    let mut last = None;
    for _ in 0..20 {
        let udp = std::net::UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 2), 0))?;
        let port = udp.local_addr()?.port();
        match std::net::TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), port)) {
            Ok(_) => return Ok(port),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
}

/// A TCP port free on 127.0.0.2 (and so, normally, on the other agents' addresses).
fn free_tcp_port() -> std::io::Result<u16> {
    Ok(
        std::net::TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), 0))?
            .local_addr()?
            .port(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_is_split_evenly_with_disjoint_ports() {
        let total = agora_proto::Resources::parse("cpus:2;mem:8000").expect("res");
        assert_eq!(
            share(&total, 2, 0),
            "cpus:1;mem:4000;disk:5120;ports:[31000-31499]"
        );
        assert_eq!(
            share(&total, 2, 1),
            "cpus:1;mem:4000;disk:5120;ports:[31500-31999]"
        );
        assert!(agora_proto::Resources::parse(&share(&total, 3, 2)).is_ok());
    }
}
