//! One module per process the binary runs.

pub mod agent;
pub mod batch;
pub mod bench;
pub mod cli;
pub mod local;
pub mod login;
pub mod master;
pub mod services;
pub mod stack;

/// Parses a duration flag given in seconds (`1`, `0.5`).
pub fn seconds(s: &str) -> Result<std::time::Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("'{s}' must be a finite number of seconds >= 0"));
    }
    std::time::Duration::try_from_secs_f64(v).map_err(|_| format!("'{s}' is too many seconds"))
}

/// The flags `agora services` and `agora batch` share.
#[derive(clap::Args, Debug)]
pub struct FrameworkArgs {
    /// The master: `host:port` or `zk://h1:2181,h2:2181/agora`.
    #[arg(long, env = "AGORA_MASTER", default_value = "127.0.0.1:5050")]
    master: String,
    /// Address the API listens on.
    #[arg(long, default_value = "0.0.0.0")]
    ip: std::net::IpAddr,
    /// The role the framework's offers come in.
    #[arg(long, default_value = "*")]
    role: String,
    /// `host:port` standby instances send clients to (default: the listen address).
    #[arg(long)]
    advertise: Option<String>,
    /// Principal to authenticate as with a master started with `--credentials`.
    #[arg(long)]
    principal: Option<String>,
    /// File holding the principal's secret.
    #[arg(long, requires = "principal")]
    secret_file: Option<std::path::PathBuf>,
    /// Seconds of ZooKeeper session (with --zk): a standby takes over this long after the
    /// leader falls silent; a leader cut off from ZooKeeper for that long exits.
    #[arg(long, default_value = "10", value_parser = seconds)]
    zk_session_timeout: std::time::Duration,
    #[command(flatten)]
    tls: TlsArgs,
    /// Talk to the master and serve the API in clear (a master started with --insecure); the
    /// same as giving no --tls-* files, said explicitly.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_ca", "join_token", "join_token_file"])]
    insecure: bool,
    /// The cluster's framework token (`agora master token --framework` on a master prints it,
    /// AGORA-1-…): at start the framework gets a certificate from the cluster CA, talks to the
    /// master with mutual TLS and serves its API over https with it. Prefer --join-token-file
    /// (the environment is visible to tasks).
    #[arg(
        long,
        env = "AGORA_FRAMEWORK_JOIN_TOKEN",
        hide_env_values = true,
        conflicts_with_all = ["tls_cert", "tls_key", "tls_ca"]
    )]
    join_token: Option<String>,
    /// A file holding the framework token (see --join-token).
    #[arg(
        long,
        env = "AGORA_FRAMEWORK_JOIN_TOKEN_FILE",
        conflicts_with_all = ["tls_cert", "tls_key", "tls_ca", "join_token"]
    )]
    join_token_file: Option<std::path::PathBuf>,
}

impl FrameworkArgs {
    /// The framework process's configuration, with the flags whose defaults differ between
    /// services and batch.
    pub fn config(
        self,
        port: u16,
        work_dir: std::path::PathBuf,
        zk: Option<String>,
        framework_name: String,
        api_token_file: Option<std::path::PathBuf>,
    ) -> anyhow::Result<agora_framework::FrameworkConfig> {
        let join_token = match (&self.join_token_file, &self.join_token) {
            (Some(path), _) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("--join-token-file {}: {e}", path.display()))?,
            ),
            (None, token) => token.clone(),
        }
        .map(|t| agora_net::pki::JoinToken::parse(t.trim()))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--join-token: {e}"))?;
        if join_token.is_none() && !self.insecure && self.tls.files().is_empty() {
            tracing::warn!(
                "no --tls-* files: this framework talks to the master and serves its API in clear \
                 (pass --insecure to say so)"
            );
        }
        Ok(agora_framework::FrameworkConfig {
            credential: credential(self.principal, self.secret_file)?,
            tls: self.tls.files(),
            api_token: cli::api_token(api_token_file)?,
            master: self.master,
            bind: std::net::SocketAddr::new(self.ip, port),
            work_dir,
            role: self.role,
            framework_name,
            // A framework's tasks outlive a week-long outage of it, as Marathon's do.
            failover_timeout: std::time::Duration::from_secs(7 * 24 * 3600),
            zk,
            zk_session_timeout: self.zk_session_timeout,
            advertise: self.advertise,
            join_token,
            issued: None,
        })
    }
}

/// Refuses to start a framework in clear against a master that speaks TLS (no --join-token, no
/// --tls-* files), saying what it needs, instead of failing at the first call.
pub async fn refuse_clear_to_tls(config: &agora_framework::FrameworkConfig) -> anyhow::Result<()> {
    if config.join_token.is_some() || !config.tls.is_empty() {
        return Ok(());
    }
    let within = std::time::Duration::from_secs(3);
    let Ok(mut detector) = agora_ha::detector::Detector::new(&config.master) else {
        return Ok(());
    };
    let Ok(address) = detector.wait_for_leader(within).await else {
        return Ok(());
    };
    if agora_net::tls::speaks_tls(&address, within).await {
        anyhow::bail!(
            "the master at {address} speaks TLS: give this framework the cluster's framework \
             token (--join-token AGORA-1-…, printed by `agora master token --framework` on a \
             master), or --tls-ca (and --tls-cert/--tls-key)"
        );
    }
    Ok(())
}

/// A framework's `--principal` and the secret in `--secret-file`.
pub fn credential(
    principal: Option<String>,
    secret_file: Option<std::path::PathBuf>,
) -> anyhow::Result<Option<(String, String)>> {
    match (principal, secret_file) {
        (Some(p), Some(f)) => {
            let secret = std::fs::read_to_string(&f)
                .map_err(|e| anyhow::anyhow!("--secret-file {}: {e}", f.display()))?;
            Ok(Some((p, secret.trim().to_string())))
        }
        (Some(p), None) => Ok(Some((p, String::new()))),
        _ => Ok(None),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// `--tls-cert`, `--tls-key`, `--tls-ca`: the same three flags on every component.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// This component's certificate chain (PEM). With --tls-key its port speaks TLS, and as a
    /// client it presents the certificate (mutual TLS).
    #[arg(long, env = "AGORA_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "AGORA_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
    /// The cluster CA (PEM). Clients verify the master (and other servers) against it; a server
    /// with it verifies client certificates.
    #[arg(long, env = "AGORA_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
}

impl TlsArgs {
    pub fn files(&self) -> agora_net::tls::TlsFiles {
        agora_net::tls::TlsFiles {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            ca: self.tls_ca.clone(),
        }
    }
}
