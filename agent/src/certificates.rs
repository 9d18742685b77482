//! The agent's certificate in a secure-by-default cluster: joined with an `AGORA-1-…` token,
//! stored in the work dir, renewed over the session's own connection.
//!
//! ```text
//!  start: <work>/tls/{ca.pem, agent.pem, agent-key.pem} valid and of the token's CA? ─ yes ─▶ use it
//!         no ─▶ fetch_pinned_ca(master, token digest)   (a mismatch is permanent: the agent exits)
//!             ─▶ Certificates/Issue(secret, CSR of a new key) over TLS verified by that CA
//!             ─▶ store (key 0600) ─▶ mutual TLS to the master, TLS on the agent's own port
//!  session: at 2/3 of the certificate's life ─▶ Certificates/Renew(CSR) on the session's channel
//!           ─▶ store, swap: new connections and handshakes use it; the session stays
//!           every check_interval: Certificates/Authority ─▶ keep the roots it names (ca.pem);
//!           its issuer is not this certificate's (the CA was rotated) ─▶ renew at once
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use agora_net::pki::{self, Csr, JoinToken};
use agora_net::tls::{ClientTls, SwappableCert};
use agora_proto::v1::{self, certificates_client::CertificatesClient};
use tracing::{info, warn};

use crate::error::AgentError;

/// How long one attempt to join may take.
const JOIN_ATTEMPT: Duration = Duration::from_secs(10);

/// Longest wait between two attempts to join an unreachable master.
const JOIN_MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What the agent holds now.
#[derive(Clone)]
struct Held {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    /// When to renew.
    renew_at: Instant,
    /// Unix seconds after which the certificate is no longer valid.
    not_after: i64,
    /// How often to ask the masters which CA issues now.
    check_every: Duration,
}

/// The agent's issued certificate, shared by the master link (client side) and the agent's
/// listener (server side).
pub struct Issued {
    dir: PathBuf,
    names: Vec<String>,
    held: RwLock<Held>,
    server: Arc<SwappableCert>,
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn config(e: impl std::fmt::Display) -> AgentError {
    AgentError::Config(e.to_string())
}

/// The names of an agent's certificate: its hostname and address, those that are valid names.
pub fn names(hostname: &str, ip: Option<std::net::IpAddr>) -> Vec<String> {
    let mut names = vec![hostname.to_string()];
    if let Some(ip) = ip.filter(|ip| !ip.is_unspecified()) {
        names.push(ip.to_string());
    }
    names.dedup();
    names.retain(|n| pki::check_names("names", std::slice::from_ref(n)).is_ok());
    names
}

fn files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("ca.pem"),
        dir.join("agent.pem"),
        dir.join("agent-key.pem"),
    )
}

/// Writes the files, the key readable by the agent's user only.
fn store(dir: &Path, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<(), AgentError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| AgentError::io(dir, e))?;
    let (ca, cert, key) = files(dir);
    crate::checkpoint::write_atomic(&ca, ca_pem.as_bytes())?;
    crate::checkpoint::write_atomic(&cert, cert_pem.as_bytes())?;
    agora_ha::store::write_private(&key, key_pem.as_bytes()).map_err(|e| AgentError::io(&key, e))
}

fn held(
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    lifetime: Duration,
) -> Result<Held, AgentError> {
    let der = pki::first_der("the agent certificate", &cert_pem).map_err(config)?;
    let not_after = pki::not_after(&der).unwrap_or_else(|| now_unix() + 60);
    Ok(Held {
        ca_pem,
        cert_pem,
        key_pem,
        renew_at: Instant::now() + lifetime * 2 / 3,
        not_after,
        check_every: pki::rotation::check_interval(lifetime),
    })
}

/// Why a join attempt failed: worth retrying, or not.
enum JoinError {
    Retry(String),
    Permanent(String),
}

impl Issued {
    /// The stored certificate when it is valid and of the token's CA; else joins `master` with
    /// `token`, retrying while the master cannot be reached.
    ///
    /// # Errors
    /// [`AgentError::JoinRefused`]: the master's CA is not the token's, or the secret is wrong;
    /// [`AgentError::Config`]/[`AgentError::Io`] for local failures.
    pub async fn obtain(
        master: &str,
        token: &JoinToken,
        dir: &Path,
        names: Vec<String>,
    ) -> Result<Arc<Issued>, AgentError> {
        if let Some(h) = Self::stored(dir, token) {
            info!(dir = %dir.display(), "using the stored agent certificate");
            return Self::from_held(dir, names, h);
        }
        let leader = agora_ha::detector::Detector::new(master)
            .map_err(|e| AgentError::BadMaster(e.to_string()))?
            .watch();
        let mut backoff = Duration::from_millis(500);
        loop {
            let attempt = match leader.current() {
                Some(address) => Self::join(&address, token, &names).await,
                None => Err(JoinError::Retry(
                    "no leading master is listed in ZooKeeper yet".into(),
                )),
            };
            match attempt {
                Ok((ca, cert, key, lifetime)) => {
                    store(dir, &ca, &cert, &key)?;
                    info!(dir = %dir.display(), ?lifetime, "joined the cluster: certificate issued");
                    return Self::from_held(dir, names, held(ca, cert, key, lifetime)?);
                }
                Err(JoinError::Permanent(m)) => return Err(AgentError::JoinRefused(m)),
                Err(JoinError::Retry(m)) => {
                    warn!(error = %m, retry_in = ?backoff, "cannot join the cluster yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(JOIN_MAX_BACKOFF);
                }
            }
        }
    }

    fn stored(dir: &Path, token: &JoinToken) -> Option<Held> {
        let (ca, cert, key) = files(dir);
        let read = |p: &Path| std::fs::read_to_string(p).ok();
        let (ca_pem, cert_pem, key_pem) = (read(&ca)?, read(&cert)?, read(&key)?);
        // During a CA rotation the stored roots are the new CA and the old: either may be the
        // token's.
        let pinned = pki::rotation::check_roots("ca.pem", &ca_pem)
            .ok()?
            .iter()
            .any(|der| pki::digest_hex(der) == token.ca_digest);
        if !pinned {
            info!("the stored certificate is of another CA than the token's: joining again");
            return None;
        }
        let der = pki::first_der("cert", &cert_pem).ok()?;
        let not_after = pki::not_after(&der)?;
        let left = not_after - now_unix();
        if left <= 0 {
            info!("the stored certificate has expired: joining again");
            return None;
        }
        // Its original lifetime is not stored: renew once two thirds of what is left have passed,
        // so that a certificate is renewed before it ends whatever its lifetime.
        let left = Duration::from_secs(u64::try_from(left).unwrap_or(0));
        Some(Held {
            ca_pem,
            cert_pem,
            key_pem,
            renew_at: Instant::now() + left * 2 / 3,
            not_after,
            check_every: pki::rotation::check_interval(left),
        })
    }

    fn from_held(dir: &Path, names: Vec<String>, h: Held) -> Result<Arc<Issued>, AgentError> {
        let server =
            SwappableCert::from_pem(h.cert_pem.as_bytes(), h.key_pem.as_bytes()).map_err(config)?;
        Ok(Arc::new(Issued {
            dir: dir.to_path_buf(),
            names,
            held: RwLock::new(h),
            server,
        }))
    }

    async fn join(
        address: &str,
        token: &JoinToken,
        names: &[String],
    ) -> Result<(String, String, String, Duration), JoinError> {
        let j = pki::join(address, token, names, JOIN_ATTEMPT)
            .await
            .map_err(|e| {
                if e.is_permanent() {
                    JoinError::Permanent(e.to_string())
                } else {
                    JoinError::Retry(e.to_string())
                }
            })?;
        Ok((j.ca_pem, j.cert_pem, j.key_pem, j.lifetime))
    }

    /// Joins again with `token` at `address` (the certificate expired while the agent was cut off
    /// from the masters) and swaps the new certificate in.
    ///
    /// # Errors
    /// `Err((true, reason))` when no retry can help (wrong secret, another CA), `Err((false, …))`
    /// otherwise.
    pub async fn rejoin(&self, address: &str, token: &JoinToken) -> Result<(), (bool, String)> {
        let (ca, cert, key, lifetime) =
            Self::join(address, token, &self.names)
                .await
                .map_err(|e| match e {
                    JoinError::Permanent(m) => (true, m),
                    JoinError::Retry(m) => (false, m),
                })?;
        let new = held(ca, cert, key, lifetime).map_err(|e| (false, e.to_string()))?;
        self.server
            .replace(new.cert_pem.as_bytes(), new.key_pem.as_bytes())
            .map_err(|e| (false, e.to_string()))?;
        store(&self.dir, &new.ca_pem, &new.cert_pem, &new.key_pem)
            .map_err(|e| (false, e.to_string()))?;
        if let Ok(mut h) = self.held.write() {
            *h = new;
        }
        info!(
            ?lifetime,
            "the certificate had expired: joined again with the token"
        );
        Ok(())
    }

    /// The client side: the cluster CA and this certificate (mutual TLS).
    pub fn client(&self) -> Option<ClientTls> {
        let h = self.held.read().ok()?;
        Some(ClientTls {
            ca_pem: h.ca_pem.clone().into_bytes(),
            identity: Some((
                h.cert_pem.clone().into_bytes(),
                h.key_pem.clone().into_bytes(),
            )),
        })
    }

    /// The agent's listener's TLS configuration (its certificate follows renewals).
    ///
    /// # Errors
    /// [`AgentError::Config`].
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, AgentError> {
        agora_net::tls::server_config_with(self.server.clone(), None).map_err(config)
    }

    /// When the certificate is due for renewal.
    pub fn renew_at(&self) -> Instant {
        self.held
            .read()
            .map(|h| h.renew_at)
            .unwrap_or_else(|_| Instant::now())
    }

    /// True when the certificate is past its end (a new one needs the token again).
    pub fn expired(&self) -> bool {
        self.held
            .read()
            .map(|h| h.not_after <= now_unix())
            .unwrap_or(true)
    }

    /// Renews over `channel` (a connection made with the current certificate), stores and swaps
    /// the new one in.
    ///
    /// # Errors
    /// The master's refusal or an unusable answer.
    pub async fn renew(&self, channel: tonic::transport::Channel) -> Result<(), AgentError> {
        let csr = Csr::generate(&self.names).map_err(config)?;
        let resp = CertificatesClient::new(channel)
            .renew(v1::RenewCertificateRequest {
                csr_pem: csr.csr_pem,
                names: self.names.clone(),
            })
            .await
            .map_err(|s| AgentError::Config(format!("renewing the certificate: {}", s.message())))?
            .into_inner();
        let lifetime = Duration::from_secs(resp.lifetime_seconds.max(1));
        let held_ca = self
            .held
            .read()
            .map(|h| h.ca_pem.clone())
            .map_err(|_| AgentError::Stopped)?;
        let leaf =
            pki::first_der("the renewed certificate", &resp.certificate_pem).map_err(config)?;
        // After a CA rotation the master names the CAs to trust now.
        let ca_pem = pki::rotation::roots_after_renewal(&held_ca, &resp.ca_pem, &leaf);
        let new = held(ca_pem, resp.certificate_pem, csr.key_pem, lifetime)?;
        self.server
            .replace(new.cert_pem.as_bytes(), new.key_pem.as_bytes())
            .map_err(config)?;
        store(&self.dir, &new.ca_pem, &new.cert_pem, &new.key_pem)?;
        if let Ok(mut h) = self.held.write() {
            *h = new;
        }
        info!(?lifetime, "renewed the agent certificate");
        Ok(())
    }

    /// How often to ask the masters which CA issues now ([`Issued::check_authority`]).
    pub fn check_every(&self) -> Duration {
        self.held
            .read()
            .map(|h| h.check_every)
            .unwrap_or(pki::rotation::MAX_CHECK_INTERVAL)
    }

    /// Asks `Certificates/Authority` over `channel` (the session's: verified by the roots held)
    /// which CAs to trust, keeps them (stored as `ca.pem`), and says whether the certificate is
    /// due for renewal now: at two thirds of its life, or at once when the CA issuing now is not
    /// the one that signed it (the cluster CA was rotated).
    ///
    /// # Errors
    /// The call failed or its answer is unusable.
    pub async fn check_authority(
        &self,
        channel: tonic::transport::Channel,
        address: &str,
    ) -> Result<bool, AgentError> {
        let authority = pki::rotation::authority(channel, address)
            .await
            .map_err(config)?;
        let h = self
            .held
            .read()
            .map(|h| h.clone())
            .map_err(|_| AgentError::Stopped)?;
        if authority.roots_pem != h.ca_pem {
            store(&self.dir, &authority.roots_pem, &h.cert_pem, &h.key_pem)?;
            if let Ok(mut held) = self.held.write() {
                held.ca_pem = authority.roots_pem.clone();
            }
            info!("the cluster's CAs changed: stored the ones the master names");
        }
        let leaf = pki::first_der("the agent certificate", &h.cert_pem).map_err(config)?;
        let of_current = pki::rotation::issued_by(&leaf, &authority.issuer_der);
        if !of_current {
            info!(
                "the certificate's issuer is no longer the cluster's CA (rotated): renewing it now"
            );
        }
        let (not_before, not_after) = pki::rotation::validity(&leaf).unwrap_or((0, 0));
        Ok(pki::rotation::renewal_due(
            now_unix(),
            not_before,
            not_after,
            of_current,
        ))
    }
}
