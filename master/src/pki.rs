//! Secure by default: the cluster's CA and token secrets, this master's certificate, and the
//! `Certificates` gRPC service that signs agents' and frameworks' keys.
//!
//! ```text
//!  first master to start ─▶ ClusterSecrets { CA cert+key, agent secret, framework secret }
//!                           stored once: ZooKeeper <zk path>/pki, or <work dir>/pki/cluster.json (0600)
//!  every master           ─▶ its own certificate for its names (chain [leaf, CA]), renewed in place
//!                           <work dir>/ca.pem: the CA certificate, for operators and browsers
//!  Certificates/Issue(secret, CSR) ─▶ agent secret: an Agent certificate; framework secret: Framework
//!  Certificates/Renew(CSR) over mutual TLS ─▶ a new certificate of the presented one's role
//! ```
//!
//! Every master (standbys too) serves the service: it needs only the CA, not the leader's state.
//! The secrets are re-read at each `Issue`, so `agora master token --rotate` takes effect at
//! once, without a restart; certificates already issued keep working.
//!
//! CA rotation (`agora master ca rotate`, see [`agora_net::pki::rotation`]):
//!
//! ```text
//!  rotate_ca: new CA, cross-signed by the old ─▶ ClusterSecrets { CA = new, previous: { old, cross } }
//!  every master, every PKI_POLL: the stored Trust changed? ─▶ issue its own certificate from the
//!      new CA (chain [leaf, cross, old, new]), trust client certificates of both CAs, sign with the
//!      new one, <work dir>/ca.pem = both CAs, Certificates/Authority names them
//!  holders (agents, frameworks) see Authority's issuer ≠ theirs ─▶ Certificates/Renew at once
//!  finish_ca_rotation: previous dropped ─▶ masters serve [leaf, new] and trust the new CA only
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agora_ha::secret_store::SecretHome;
use agora_net::pki::rotation::{Transition, Trust};
use agora_net::pki::{self, ClusterCa, JoinToken, Role};
use agora_proto::v1;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::error::RunError;

/// Lifetime of a master's own serving certificate (it renews it at two thirds).
pub const MASTER_CERT_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// How often every master re-reads the stored PKI to pick up a CA rotation.
pub const PKI_POLL: Duration = Duration::from_secs(5);

/// The cluster's secret document.
#[derive(Clone, Serialize, Deserialize)]
pub struct ClusterSecrets {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub agent_secret: String,
    pub framework_secret: String,
    /// Set by `agora master ca rotate` until `--finish`: the CA being replaced (its key is not
    /// kept: it signs nothing more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousCa>,
}

/// The CA a rotation replaces, still trusted until the rotation is finished.
#[derive(Clone, Serialize, Deserialize)]
pub struct PreviousCa {
    pub ca_cert_pem: String,
    /// The current CA's certificate signed by this one.
    pub cross_cert_pem: String,
    /// When the rotation started (Unix seconds).
    pub rotated_at: i64,
}

/// Which token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Agents join with it.
    Agent,
    /// Frameworks, the CLI and operators get client certificates with it.
    Framework,
}

impl ClusterSecrets {
    fn generate(now: i64) -> Result<ClusterSecrets, RunError> {
        let ca = ClusterCa::generate(now).map_err(config)?;
        Ok(ClusterSecrets {
            ca_cert_pem: ca.cert_pem().to_string(),
            ca_key_pem: ca.key_pem().to_string(),
            agent_secret: pki::generate_secret().map_err(config)?,
            framework_secret: pki::generate_secret().map_err(config)?,
            previous: None,
        })
    }

    /// What the cluster trusts and serves now.
    pub fn trust(&self) -> Trust {
        Trust {
            current_pem: self.ca_cert_pem.clone(),
            transition: self.previous.as_ref().map(|p| Transition {
                previous_pem: p.ca_cert_pem.clone(),
                cross_pem: p.cross_cert_pem.clone(),
            }),
        }
    }

    fn parse(data: &[u8], home: &SecretHome) -> Result<ClusterSecrets, RunError> {
        serde_json::from_slice(data).map_err(|e| {
            RunError::Config(format!(
                "the cluster PKI at {} is corrupt: {e}",
                home.describe()
            ))
        })
    }

    /// The CA.
    ///
    /// # Errors
    /// [`RunError::Config`] when the stored CA does not parse.
    pub fn ca(&self) -> Result<ClusterCa, RunError> {
        ClusterCa::from_pem(&self.ca_cert_pem, &self.ca_key_pem).map_err(config)
    }

    /// The token of `kind`: `AGORA-1-<CA digest>-<secret>`.
    ///
    /// # Errors
    /// [`RunError::Config`] when the stored CA does not parse.
    pub fn token(&self, kind: TokenKind) -> Result<String, RunError> {
        Ok(JoinToken {
            ca_digest: self.ca()?.digest(),
            secret: match kind {
                TokenKind::Agent => self.agent_secret.clone(),
                TokenKind::Framework => self.framework_secret.clone(),
            },
        }
        .to_string())
    }

    /// The role a token's secret gives, if it is one of this cluster's.
    pub fn role_of_secret(&self, secret: &str) -> Option<Role> {
        if pki::secrets_equal(secret, &self.agent_secret) {
            Some(Role::Agent)
        } else if pki::secrets_equal(secret, &self.framework_secret) {
            Some(Role::Framework)
        } else {
            None
        }
    }
}

fn config(e: impl std::fmt::Display) -> RunError {
    RunError::Config(e.to_string())
}

/// Where the cluster keeps its PKI: in ZooKeeper (`<path>/pki`) with `--zk`, else in
/// `<work_dir>/pki/cluster.json`.
///
/// # Errors
/// [`RunError::Config`] for a malformed `--zk` URL.
pub fn home(
    work_dir: &Path,
    zk: Option<&str>,
    zk_auth: Option<String>,
    session_timeout: Duration,
) -> Result<SecretHome, RunError> {
    match zk {
        None => Ok(SecretHome::File(work_dir.join("pki").join("cluster.json"))),
        Some(url) => match agora_ha::detector::MasterSpec::parse(url).map_err(config)? {
            agora_ha::detector::MasterSpec::ZooKeeper { servers, path } => {
                Ok(SecretHome::ZooKeeper {
                    servers,
                    path: format!("{path}/pki"),
                    auth: zk_auth,
                    session_timeout,
                })
            }
            _ => Err(RunError::Config(format!(
                "--zk {url}: expected zk://host:port,…/path"
            ))),
        },
    }
}

/// The cluster's secrets, created (once for the whole cluster) when none are stored yet.
///
/// # Errors
/// [`RunError::Store`] when the home cannot be read or written; [`RunError::Config`] when what is
/// stored is corrupt.
pub async fn load_or_create(home: &SecretHome, now: i64) -> Result<ClusterSecrets, RunError> {
    if let Some(v) = home.read().await? {
        return ClusterSecrets::parse(&v.data, home);
    }
    let fresh = ClusterSecrets::generate(now)?;
    let data = serde_json::to_vec(&fresh).map_err(config)?;
    let stored = home.create_once(&data).await?;
    let secrets = ClusterSecrets::parse(&stored, home)?;
    if stored == data {
        info!(at = %home.describe(), digest = %secrets.ca()?.digest(), "created the cluster CA");
    }
    Ok(secrets)
}

/// Applies `change` to the stored secrets (compare-and-set, retried when another writer came
/// first) and returns what was stored.
async fn update(
    home: &SecretHome,
    now: i64,
    what: &str,
    change: impl Fn(&mut ClusterSecrets) -> Result<(), RunError>,
) -> Result<ClusterSecrets, RunError> {
    for _ in 0..5 {
        load_or_create(home, now).await?;
        let Some(v) = home.read().await? else {
            continue;
        };
        let mut secrets = ClusterSecrets::parse(&v.data, home)?;
        change(&mut secrets)?;
        let data = serde_json::to_vec(&secrets).map_err(config)?;
        match home.replace(&data, v.version).await {
            Ok(()) => return Ok(secrets),
            Err(agora_ha::store::StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(RunError::Config(format!(
        "{} kept changing while {what}",
        home.describe()
    )))
}

/// Replaces the secret of `kind`; the CA is not changed.
///
/// # Errors
/// As [`load_or_create`].
pub async fn rotate(
    home: &SecretHome,
    kind: TokenKind,
    now: i64,
) -> Result<ClusterSecrets, RunError> {
    update(home, now, "rotating the token", |secrets| {
        let new = pki::generate_secret().map_err(config)?;
        match kind {
            TokenKind::Agent => secrets.agent_secret = new,
            TokenKind::Framework => secrets.framework_secret = new,
        }
        Ok(())
    })
    .await
}

/// Starts a CA rotation: a new CA (new key) becomes the current one, its certificate
/// cross-signed by the old CA, which stays trusted (and its digest accepted in join tokens)
/// until [`finish_ca_rotation`]. The token secrets are not changed.
///
/// # Errors
/// [`RunError::Config`] while another rotation is in progress; as [`load_or_create`].
pub async fn rotate_ca(home: &SecretHome, now: i64) -> Result<ClusterSecrets, RunError> {
    update(home, now, "rotating the CA", |secrets| {
        if let Some(p) = &secrets.previous {
            return Err(RunError::Config(format!(
                "a CA rotation (started at Unix time {}) is in progress: once every agent and \
                 framework has renewed, finish it with `agora master ca rotate --finish`",
                p.rotated_at
            )));
        }
        let old = secrets.ca()?;
        let new = ClusterCa::generate(now).map_err(config)?;
        let cross = old.cross_sign(&new).map_err(config)?;
        secrets.previous = Some(PreviousCa {
            ca_cert_pem: old.cert_pem().to_string(),
            cross_cert_pem: cross,
            rotated_at: now,
        });
        secrets.ca_cert_pem = new.cert_pem().to_string();
        secrets.ca_key_pem = new.key_pem().to_string();
        Ok(())
    })
    .await
}

/// Ends a CA rotation: the previous CA is no longer trusted nor accepted in join tokens.
///
/// # Errors
/// [`RunError::Config`] when no rotation is in progress; as [`load_or_create`].
pub async fn finish_ca_rotation(home: &SecretHome, now: i64) -> Result<ClusterSecrets, RunError> {
    update(home, now, "finishing the CA rotation", |secrets| {
        if secrets.previous.take().is_none() {
            return Err(RunError::Config(
                "no CA rotation is in progress (start one with `agora master ca rotate`)".into(),
            ));
        }
        Ok(())
    })
    .await
}

/// The names a master's certificate is valid for: its hostname, `--hostname`, the advertised
/// address, the bound address, and loopback.
pub fn own_names(hostname: &str, advertised_host: &str, bind: std::net::IpAddr) -> Vec<String> {
    let mut names = vec![
        hostname.to_string(),
        advertised_host.to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if !bind.is_unspecified() {
        names.push(bind.to_string());
    }
    let mut seen = std::collections::HashSet::new();
    // A hostname that is no valid DNS name is left out rather than failing the start.
    names.retain(|n| {
        pki::check_names("names", std::slice::from_ref(n)).is_ok() && seen.insert(n.clone())
    });
    names.truncate(pki::MAX_NAMES);
    names
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Writes the CA certificate to `<work_dir>/ca.pem` (world-readable: it is public).
///
/// # Errors
/// The I/O error.
pub fn write_ca_file(work_dir: &Path, ca_pem: &str) -> std::io::Result<PathBuf> {
    let path = work_dir.join("ca.pem");
    agora_ha::store::write_atomic(&path, ca_pem.as_bytes())?;
    Ok(path)
}

/// What a master signs with and hands out now; replaced when the stored PKI changes.
struct Authority {
    ca: ClusterCa,
    trust: Trust,
}

impl Authority {
    fn of(secrets: &ClusterSecrets) -> Result<Authority, RunError> {
        Ok(Authority {
            ca: secrets.ca()?,
            trust: secrets.trust(),
        })
    }
}

type Shared = Arc<std::sync::RwLock<Arc<Authority>>>;

fn current(shared: &Shared) -> Arc<Authority> {
    match shared.read() {
        Ok(a) => a.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// A master's TLS in secure-by-default mode: what its listener serves, and the service.
pub struct AutoTls {
    pub server: Arc<rustls::ServerConfig>,
    pub service: CertificateService,
    pub ca_file: PathBuf,
    pub digest: String,
    authority: Shared,
    home: SecretHome,
    work_dir: PathBuf,
    cert: Arc<agora_net::tls::SwappableCert>,
    client_roots: Arc<agora_net::tls::SwappableClientRoots>,
    names: Vec<String>,
}

/// Serves `authority`: this master's certificate from its CA with the chain its trust says, client
/// certificates verified against its roots, `ca.pem` holding them.
fn install(
    authority: &Authority,
    cert: &agora_net::tls::SwappableCert,
    client_roots: &agora_net::tls::SwappableClientRoots,
    names: &[String],
    work_dir: &Path,
) -> Result<PathBuf, RunError> {
    let (chain, key) = authority
        .ca
        .issue_serving(
            &authority.trust,
            Role::Master,
            names,
            now(),
            MASTER_CERT_LIFETIME,
        )
        .map_err(config)?;
    let roots_pem = authority.trust.roots_pem();
    let roots = agora_net::tls::pem_roots(roots_pem.as_bytes()).map_err(config)?;
    client_roots.replace(roots).map_err(config)?;
    cert.replace(chain.as_bytes(), key.as_bytes())
        .map_err(config)?;
    write_ca_file(work_dir, &roots_pem)
        .map_err(|e| RunError::Config(format!("{}/ca.pem: {e}", work_dir.display())))
}

impl AutoTls {
    /// Keeps this master's certificate current, forever (drop it to stop): renewed at two thirds
    /// of its life, and re-issued when the stored PKI changed (a CA rotation started or
    /// finished, by any master's operator), which it re-reads every [`PKI_POLL`].
    pub fn renewal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (authority, home, work_dir) = (
            self.authority.clone(),
            self.home.clone(),
            self.work_dir.clone(),
        );
        let (cert, client_roots, names) = (
            self.cert.clone(),
            self.client_roots.clone(),
            self.names.clone(),
        );
        async move {
            let mut renew_at = tokio::time::Instant::now() + MASTER_CERT_LIFETIME * 2 / 3;
            let mut poll = tokio::time::interval(PKI_POLL);
            loop {
                let held = current(&authority);
                let next = tokio::select! {
                    () = tokio::time::sleep_until(renew_at) => Some(held),
                    _ = poll.tick() => match home.read().await {
                        Ok(Some(v)) => match ClusterSecrets::parse(&v.data, &home)
                            .and_then(|s| Authority::of(&s))
                        {
                            Ok(stored) if stored.trust != held.trust => {
                                info!(
                                    digest = %stored.ca.digest(),
                                    rotating = stored.trust.transition.is_some(),
                                    "the cluster CA changed: re-issuing this master's certificate"
                                );
                                Some(Arc::new(stored))
                            }
                            Ok(_) => None,
                            Err(e) => {
                                warn!(error = %e, "re-reading the cluster PKI");
                                None
                            }
                        },
                        Ok(None) => None,
                        Err(e) => {
                            debug!(error = %e, "re-reading the cluster PKI");
                            None
                        }
                    },
                };
                let Some(next) = next else { continue };
                match install(&next, &cert, &client_roots, &names, &work_dir) {
                    Ok(_) => {
                        renew_at = tokio::time::Instant::now() + MASTER_CERT_LIFETIME * 2 / 3;
                        match authority.write() {
                            Ok(mut a) => *a = next,
                            Err(poisoned) => *poisoned.into_inner() = next,
                        }
                        info!("this master's certificate is current");
                    }
                    Err(e) => {
                        warn!(error = %e, "renewing this master's certificate");
                        renew_at = tokio::time::Instant::now() + PKI_POLL;
                    }
                }
            }
        }
    }
}

/// Loads or creates the cluster PKI (waiting for ZooKeeper while it is unreachable), issues this
/// master's certificate and starts renewing it.
///
/// # Errors
/// [`RunError::Config`] for corrupt or unusable material.
pub async fn start(
    home: SecretHome,
    work_dir: &Path,
    names: Vec<String>,
    issued_lifetime: Duration,
) -> Result<AutoTls, RunError> {
    if !home.is_protected() {
        warn!(
            at = %home.describe(),
            "the cluster CA's key is kept in a znode any client of this ZooKeeper can read: \
             give the masters --zk-auth-file (user:password) to protect it with a digest ACL"
        );
    }
    let secrets = loop {
        match load_or_create(&home, now()).await {
            Ok(s) => break s,
            Err(RunError::Store(e)) => {
                warn!(error = %e, at = %home.describe(), "waiting for the cluster PKI's store");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let authority = Authority::of(&secrets)?;
    let (chain, key) = authority
        .ca
        .issue_serving(
            &authority.trust,
            Role::Master,
            &names,
            now(),
            MASTER_CERT_LIFETIME,
        )
        .map_err(config)?;
    let cert = agora_net::tls::SwappableCert::from_pem(chain.as_bytes(), key.as_bytes())
        .map_err(config)?;
    let roots_pem = authority.trust.roots_pem();
    let ca_file = write_ca_file(work_dir, &roots_pem)
        .map_err(|e| RunError::Config(format!("{}/ca.pem: {e}", work_dir.display())))?;
    let roots = agora_net::tls::pem_roots(roots_pem.as_bytes()).map_err(config)?;
    let client_roots = agora_net::tls::SwappableClientRoots::new(roots).map_err(config)?;
    let server = agora_net::tls::server_config_swappable(cert.clone(), client_roots.clone())
        .map_err(config)?;
    let digest = authority.ca.digest();
    let authority: Shared = Arc::new(std::sync::RwLock::new(Arc::new(authority)));
    Ok(AutoTls {
        server,
        service: CertificateService {
            authority: authority.clone(),
            home: home.clone(),
            lifetime: issued_lifetime,
        },
        ca_file,
        digest,
        authority,
        home,
        work_dir: work_dir.to_path_buf(),
        cert,
        client_roots,
        names,
    })
}

/// The `Certificates` gRPC service (see the module documentation).
#[derive(Clone)]
pub struct CertificateService {
    authority: Shared,
    home: SecretHome,
    lifetime: Duration,
}

impl CertificateService {
    fn sign(
        &self,
        role: Role,
        csr_pem: &str,
        names: &[String],
    ) -> Result<v1::IssueCertificateResponse, Status> {
        let authority = current(&self.authority);
        let pem = authority
            .ca
            .sign_csr(role, csr_pem, names, now(), self.lifetime)
            .map_err(|e| match e {
                pki::PkiError::Field { .. } => Status::invalid_argument(e.to_string()),
                other => Status::internal(other.to_string()),
            })?;
        Ok(v1::IssueCertificateResponse {
            certificate_pem: authority.trust.issued_chain(&pem),
            ca_pem: authority.trust.roots_pem(),
            lifetime_seconds: self.lifetime.as_secs().max(1),
        })
    }
}

#[tonic::async_trait]
impl v1::certificates_server::Certificates for CertificateService {
    async fn issue(
        &self,
        request: Request<v1::IssueCertificateRequest>,
    ) -> Result<Response<v1::IssueCertificateResponse>, Status> {
        let r = request.into_inner();
        let stored = self
            .home
            .read()
            .await
            .map_err(|e| Status::unavailable(format!("the cluster PKI cannot be read: {e}")))?
            .ok_or_else(|| Status::unavailable("the cluster PKI is missing"))?;
        let secrets = ClusterSecrets::parse(&stored.data, &self.home)
            .map_err(|e| Status::internal(e.to_string()))?;
        let Some(role) = secrets.role_of_secret(&r.secret) else {
            return Err(Status::permission_denied(
                "the join token's secret is not this cluster's (it may have been rotated: \
                 print the current one with `agora master token`)",
            ));
        };
        let resp = self.sign(role, &r.csr_pem, &r.names)?;
        info!(role = role.unit(), names = ?r.names, "issued a certificate");
        Ok(Response::new(resp))
    }

    async fn renew(
        &self,
        request: Request<v1::RenewCertificateRequest>,
    ) -> Result<Response<v1::IssueCertificateResponse>, Status> {
        let role = match agora_net::tls::client_role(&request) {
            Some(r @ (Role::Agent | Role::Framework)) => r,
            _ => {
                return Err(Status::unauthenticated(
                    "renewal needs a valid certificate of this cluster's CA on the connection \
                     (an expired one must join again with a token)",
                ))
            }
        };
        let r = request.into_inner();
        let resp = self.sign(role, &r.csr_pem, &r.names)?;
        info!(role = role.unit(), names = ?r.names, "renewed a certificate");
        Ok(Response::new(resp))
    }

    async fn authority(
        &self,
        _request: Request<v1::CertificateAuthorityRequest>,
    ) -> Result<Response<v1::CertificateAuthorityResponse>, Status> {
        let authority = current(&self.authority);
        Ok(Response::new(v1::CertificateAuthorityResponse {
            ca_pem: authority.trust.roots_pem(),
            issuer_pem: authority.trust.current_pem.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn secrets_are_made_once_and_rotation_keeps_the_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = home(dir.path(), None, None, Duration::from_secs(5)).expect("home");
        let first = load_or_create(&home, now()).await.expect("create");
        let again = load_or_create(&home, now()).await.expect("load");
        let agent = first.token(TokenKind::Agent).expect("token");
        assert_eq!(again.token(TokenKind::Agent).expect("token"), agent);
        let framework = first.token(TokenKind::Framework).expect("token");
        assert_ne!(agent, framework);
        let parsed = JoinToken::parse(&agent).expect("parse");
        assert_eq!(parsed.ca_digest, first.ca().expect("ca").digest());
        assert_eq!(first.role_of_secret(&parsed.secret), Some(Role::Agent));
        let rotated = rotate(&home, TokenKind::Agent, now())
            .await
            .expect("rotate");
        let new = JoinToken::parse(&rotated.token(TokenKind::Agent).expect("t")).expect("p");
        assert_eq!(new.ca_digest, parsed.ca_digest, "the CA stays");
        assert_ne!(new.secret, parsed.secret);
        assert_eq!(rotated.role_of_secret(&parsed.secret), None);
        assert_eq!(
            rotated.token(TokenKind::Framework).expect("t"),
            framework,
            "the other token stays"
        );
    }

    #[tokio::test]
    async fn a_ca_rotation_keeps_the_old_ca_trusted_until_it_is_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = home(dir.path(), None, None, Duration::from_secs(5)).expect("home");
        let first = load_or_create(&home, now()).await.expect("create");
        let old = first.ca().expect("ca");
        assert!(first.trust().transition.is_none());
        let e = finish_ca_rotation(&home, now())
            .await
            .err()
            .expect("nothing to finish");
        assert!(
            e.to_string().contains("no CA rotation is in progress"),
            "{e}"
        );

        let rotated = rotate_ca(&home, now()).await.expect("rotate");
        let new = rotated.ca().expect("new ca");
        assert_ne!(new.digest(), old.digest());
        let token = JoinToken::parse(&rotated.token(TokenKind::Agent).expect("t")).expect("p");
        assert_eq!(token.ca_digest, new.digest(), "tokens pin the new CA");
        assert_eq!(token.secret, first.agent_secret, "the secrets stay");
        let trust = rotated.trust();
        assert_eq!(
            trust.digests().expect("digests"),
            [new.digest(), old.digest()],
            "both digests are accepted meanwhile"
        );
        let cross = pki::first_der(
            "cross",
            &trust.transition.as_ref().expect("transition").cross_pem,
        )
        .expect("der");
        assert!(pki::rotation::issued_by(&cross, old.der()));
        // Stored: another master reads the same.
        let again = load_or_create(&home, now()).await.expect("load");
        assert!(again.trust() == trust);
        let e = rotate_ca(&home, now()).await.err().expect("one at a time");
        assert!(e.to_string().contains("--finish"), "{e}");

        let finished = finish_ca_rotation(&home, now()).await.expect("finish");
        assert_eq!(finished.trust().digests().expect("d"), [new.digest()]);
        assert_eq!(
            load_or_create(&home, now())
                .await
                .expect("load")
                .ca()
                .expect("ca")
                .digest(),
            new.digest()
        );
        // A document written before rotations existed still reads.
        let legacy = serde_json::json!({
            "ca_cert_pem": old.cert_pem(), "ca_key_pem": old.key_pem(),
            "agent_secret": "a".repeat(64), "framework_secret": "b".repeat(64),
        });
        let parsed: ClusterSecrets = serde_json::from_value(legacy).expect("legacy");
        assert!(parsed.previous.is_none());
    }

    #[test]
    fn a_masters_names_are_deduplicated() {
        let names = own_names("m1", "127.0.0.1", "127.0.0.1".parse().expect("ip"));
        assert_eq!(names, ["m1", "127.0.0.1", "localhost", "::1"]);
    }
}
