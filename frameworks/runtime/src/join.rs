//! A framework process joining a secure-by-default cluster with the framework token
//! (`agora master token --framework`): the same join as an agent's ([`agora_net::pki::join`]),
//! then everything else reads the files it stores as if they were `--tls-*` files.
//!
//! ```text
//!  token ─▶ leading master (Detector) ─▶ pki::join: pinned CA, CSR of a new key, Certificates/Issue
//!        ─▶ <work-dir>/tls/{ca.pem, framework.pem, framework-key.pem (0600)}
//!        ─▶ config.tls = those files: mutual TLS to the master, https on the API port
//! ```
//!
//! The certificate is issued at every start (the token stays valid) and renewed at two thirds of
//! its life over mutual TLS with the current one (`Certificates/Renew`); the API listener and new
//! connections to the masters use the renewed one without a restart. Meanwhile it asks
//! `Certificates/Authority` every [`pki::rotation::check_interval`]: after `agora master ca
//! rotate` it keeps the CAs named there and renews at once from the new CA.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use agora_net::pki::{self, JoinToken};
use tracing::{debug, info, warn};

use crate::config::FrameworkConfig;

/// How long one attempt to join may take.
const JOIN_ATTEMPT: Duration = Duration::from_secs(10);

/// Longest wait between two attempts to join an unreachable master.
const JOIN_MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Why a framework could not join the cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinSetupError {
    /// The master refused, or its CA is not the token's: retrying cannot help.
    #[error("--join-token: {0}")]
    Refused(String),
    /// The token cannot go with `--tls-*` files.
    #[error("--join-token gets the framework its certificate: give it without --tls-cert/--tls-key/--tls-ca")]
    WithTlsFiles,
    /// The master address is unusable.
    #[error("--master: {0}")]
    Master(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> JoinSetupError + '_ {
    move |source| JoinSetupError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The names of a framework's certificate: the host of `--advertise` (else the bound address,
/// 127.0.0.1 for an unspecified one, as [`crate::BoundApi`] advertises), the machine's hostname,
/// and `localhost` for a loopback address; those that are valid names.
pub fn names(config: &FrameworkConfig) -> Vec<String> {
    let advertised = match &config.advertise {
        Some(a) => a
            .rsplit_once(':')
            .map_or(a.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        None if config.bind.ip().is_unspecified() => "127.0.0.1".to_string(),
        None => config.bind.ip().to_string(),
    };
    let mut names = vec![advertised.clone()];
    if let Ok(h) = nix::unistd::gethostname() {
        if let Some(h) = h.to_str() {
            names.push(h.to_string());
        }
    }
    let loopback = advertised
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        names.push("localhost".into());
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names.retain(|n| pki::check_names("names", std::slice::from_ref(n)).is_ok());
    names
}

/// Writes the files, the key readable by this user only.
fn store(dir: &Path, joined: &pki::Joined) -> Result<agora_net::tls::TlsFiles, JoinSetupError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("framework.pem"),
        dir.join("framework-key.pem"),
    );
    agora_ha::store::write_atomic(&ca, joined.ca_pem.as_bytes()).map_err(io(&ca))?;
    agora_ha::store::write_atomic(&cert, joined.cert_pem.as_bytes()).map_err(io(&cert))?;
    agora_ha::store::write_private(&key, joined.key_pem.as_bytes()).map_err(io(&key))?;
    Ok(agora_net::tls::TlsFiles {
        cert: Some(cert),
        key: Some(key),
        ca: Some(ca),
    })
}

/// The certificate a framework joined with, renewed while it runs: the API listener serves the
/// current one from the next handshake on, and each new connection to a master presents it.
pub struct Credentials {
    dir: std::path::PathBuf,
    names: Vec<String>,
    master: String,
    token: JoinToken,
    joined: RwLock<pki::Joined>,
    /// The API listener's certificate.
    pub server: Arc<agora_net::tls::SwappableCert>,
    /// The roots the API listener verifies client certificates with (the cluster's CAs).
    client_roots: Arc<agora_net::tls::SwappableClientRoots>,
    /// What connections to the masters present.
    pub client: agora_net::tls::SharedClientTls,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("dir", &self.dir)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The API listener's TLS configuration: the current certificate; clients may present one of
    /// the cluster CA.
    ///
    /// # Errors
    /// [`agora_net::tls::TlsError`].
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, agora_net::tls::TlsError> {
        agora_net::tls::server_config_swappable(self.server.clone(), self.client_roots.clone())
    }

    fn current(&self) -> pki::Joined {
        match self.joined.read() {
            Ok(j) => j.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Stores `new` and swaps it in.
    fn install(&self, new: pki::Joined) -> Result<(), String> {
        self.server
            .replace(new.cert_pem.as_bytes(), new.key_pem.as_bytes())
            .map_err(|e| e.to_string())?;
        let roots = agora_net::tls::pem_roots(new.ca_pem.as_bytes()).map_err(|e| e.to_string())?;
        store(&self.dir, &new).map_err(|e| e.to_string())?;
        self.client_roots
            .replace(roots)
            .map_err(|e| e.to_string())?;
        self.client.set(new.client());
        match self.joined.write() {
            Ok(mut j) => *j = new,
            Err(p) => *p.into_inner() = new,
        }
        Ok(())
    }

    /// Asks the leading master which CAs to trust (kept, with the stored `ca.pem`) and which one
    /// issues; true when that is not the one that signed the current certificate (the cluster CA
    /// was rotated: renew now). False when the master cannot be asked.
    async fn rotated(&self) -> bool {
        let current = self.current();
        let leader = match agora_ha::detector::Detector::new(&self.master) {
            Ok(mut d) => d.wait_for_leader(JOIN_ATTEMPT).await.ok(),
            Err(_) => None,
        };
        let Some(address) = leader else { return false };
        let Ok(endpoint) = agora_net::tls::endpoint(&address, Some(&current.client())) else {
            return false;
        };
        let channel = match endpoint
            .connect_timeout(JOIN_ATTEMPT)
            .timeout(JOIN_ATTEMPT)
            .connect()
            .await
        {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %agora_net::tls::error_chain(&e), "asking the master which CA issues");
                return false;
            }
        };
        let authority = match pki::rotation::authority(channel, &address).await {
            Ok(a) => a,
            Err(e) => {
                debug!(error = %e, "asking the master which CA issues");
                return false;
            }
        };
        if authority.roots_pem != current.ca_pem {
            let mut kept = current.clone();
            kept.ca_pem = authority.roots_pem.clone();
            match self.install(kept) {
                Ok(()) => info!("the cluster's CAs changed: stored the ones the master names"),
                Err(error) => warn!(%error, "storing the cluster's CAs"),
            }
        }
        let issued_by_current = pki::first_der("cert", &current.cert_pem)
            .is_ok_and(|leaf| pki::rotation::issued_by(&leaf, &authority.issuer_der));
        if !issued_by_current {
            info!("the framework certificate's issuer is no longer the cluster's CA (rotated): renewing it now");
        }
        !issued_by_current
    }
}

/// Unix seconds now.
fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Renews at two thirds of each certificate's life, on a connection made with the current one;
/// past its end (cut off from the masters), joins again with the token. Runs as long as the
/// process's runtime (the API listener and the SDK hold the certificate as long as they run, and
/// do not say when they stop).
async fn renew_loop(c: Arc<Credentials>, first: Duration) {
    let mut wait = first * 2 / 3;
    let mut check_every = pki::rotation::check_interval(first);
    loop {
        let due = tokio::time::Instant::now() + wait;
        // Until then, ask now and then which CA issues: a rotation makes the renewal due at once.
        loop {
            let now = tokio::time::Instant::now();
            if now >= due {
                break;
            }
            tokio::time::sleep((due - now).min(check_every)).await;
            if tokio::time::Instant::now() >= due || c.rotated().await {
                break;
            }
        }
        let current = c.current();
        let expired = pki::first_der("cert", &current.cert_pem)
            .ok()
            .and_then(|d| pki::not_after(&d))
            .is_none_or(|end| end <= now_unix());
        let leader = match agora_ha::detector::Detector::new(&c.master) {
            Ok(mut d) => d.wait_for_leader(JOIN_ATTEMPT).await.ok(),
            Err(_) => None,
        };
        let attempt = match &leader {
            None => Err("no leading master".to_string()),
            Some(a) if expired => pki::join(a, &c.token, &c.names, JOIN_ATTEMPT)
                .await
                .map_err(|e| e.to_string()),
            Some(a) => pki::renew(a, &current, &c.names, JOIN_ATTEMPT)
                .await
                .map_err(|e| e.to_string()),
        };
        match attempt.and_then(|new| {
            let lifetime = new.lifetime;
            c.install(new).map(|()| lifetime)
        }) {
            Ok(lifetime) => {
                info!(
                    ?lifetime,
                    joined_again = expired,
                    "renewed the framework certificate"
                );
                wait = lifetime * 2 / 3;
                check_every = pki::rotation::check_interval(lifetime);
            }
            Err(error) => {
                warn!(%error, "cannot renew the framework certificate yet");
                wait = (first / 10).clamp(Duration::from_millis(500), JOIN_MAX_BACKOFF);
            }
        }
    }
}

/// `config` as it runs: unchanged without a join token; with one, joined (retrying while no
/// master can be reached), its `tls` pointing at the stored certificate, key and CA, and
/// [`FrameworkConfig::issued`] the certificate renewed from then on.
///
/// # Errors
/// [`JoinSetupError`].
pub async fn secure(config: FrameworkConfig) -> Result<FrameworkConfig, JoinSetupError> {
    let Some(token) = config.join_token.clone() else {
        return Ok(config);
    };
    if !config.tls.is_empty() {
        return Err(JoinSetupError::WithTlsFiles);
    }
    let names = names(&config);
    let joined = join(&config.master, &token, &names).await?;
    let der = pki::first_der("the issued certificate", &joined.cert_pem)
        .map_err(|e| JoinSetupError::Refused(e.to_string()))?;
    if pki::role_of(&der) != Some(pki::Role::Framework) {
        return Err(JoinSetupError::Refused(
            "this is not the framework token (the master issued a certificate of another role): \
             use the one `agora master token --framework` prints"
                .into(),
        ));
    }
    let dir = config.work_dir.join("tls");
    let tls = store(&dir, &joined)?;
    info!(?names, lifetime = ?joined.lifetime, "joined the cluster: framework certificate issued");
    let server = agora_net::tls::SwappableCert::from_pem(
        joined.cert_pem.as_bytes(),
        joined.key_pem.as_bytes(),
    )
    .map_err(|e| JoinSetupError::Refused(e.to_string()))?;
    let lifetime = joined.lifetime;
    let client_roots = agora_net::tls::pem_roots(joined.ca_pem.as_bytes())
        .and_then(agora_net::tls::SwappableClientRoots::new)
        .map_err(|e| JoinSetupError::Refused(e.to_string()))?;
    let creds = Arc::new(Credentials {
        client_roots,
        dir,
        names,
        master: config.master.clone(),
        token,
        client: agora_net::tls::SharedClientTls::new(joined.client()),
        joined: RwLock::new(joined),
        server,
    });
    tokio::spawn(renew_loop(creds.clone(), lifetime));
    Ok(FrameworkConfig {
        tls,
        issued: Some(creds),
        ..config
    })
}

/// The TLS a framework's connections to the masters use: the renewed certificate when it joined
/// with a token, else its `--tls-*` files.
///
/// # Errors
/// [`agora_net::tls::TlsError`] naming the flag.
pub fn client_tls(
    config: &FrameworkConfig,
) -> Result<Option<agora_net::tls::SharedClientTls>, agora_net::tls::TlsError> {
    match &config.issued {
        Some(c) => Ok(Some(c.client.clone())),
        None => Ok(config
            .tls
            .client()?
            .map(agora_net::tls::SharedClientTls::new)),
    }
}

async fn join(
    master: &str,
    token: &JoinToken,
    names: &[String],
) -> Result<pki::Joined, JoinSetupError> {
    let leader = agora_ha::detector::Detector::new(master)
        .map_err(|e| JoinSetupError::Master(e.to_string()))?
        .watch();
    let mut backoff = Duration::from_millis(500);
    loop {
        let error = match leader.current() {
            Some(address) => match pki::join(&address, token, names, JOIN_ATTEMPT).await {
                Ok(j) => return Ok(j),
                Err(e) if e.is_permanent() => return Err(JoinSetupError::Refused(e.to_string())),
                Err(e) => e.to_string(),
            },
            None => "no leading master is listed in ZooKeeper yet".into(),
        };
        warn!(%error, retry_in = ?backoff, "cannot join the cluster yet");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(JOIN_MAX_BACKOFF);
    }
}
