//! The cluster's own PKI, as in Docker Swarm: a CA made at a master's first start, join tokens that
//! pin it, and certificates it signs for keys their holders generated.
//!
//! ```text
//!  master (first start)  ClusterCa::generate ─▶ stored once for the cluster (ZooKeeper or work dir)
//!                        issue_own(Master, names) ─▶ its listener's certificate, chain [leaf, CA]
//!  agora master token    JoinToken { ca_digest: sha256(CA DER), secret } ─▶ "AGORA-1-<hex>-<secret>"
//!  agent (join)          fetch_pinned_ca: TLS handshake whose verifier accepts the master's chain only
//!                        when it holds a CA with the pinned digest that signed the leaf ─▶ CA
//!                        Csr::generate ─▶ Certificates/Issue(secret, CSR) over TLS verified by that CA
//!                        ─▶ certificate (role Agent), mutual TLS from then on, renewed at 2/3 of its life
//! ```
//!
//! Everything here is synchronous and I/O-free except [`fetch_pinned_ca`] and [`join`]; time is passed in as
//! Unix seconds. The role of a certificate (master, agent, framework) is its subject's
//! organisational unit, read back with [`role_of`].

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

pub mod rotation;

/// What a join token starts with; the `1` is the format's version.
pub const TOKEN_PREFIX: &str = "AGORA-1-";

/// Default lifetime of the certificates the cluster CA issues to agents and frameworks.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// Lifetime of the cluster CA itself.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Certificates are valid from this long before they are issued, for clocks a little behind.
pub const BACKDATE: Duration = Duration::from_secs(300);

/// Most names one certificate may be issued for.
pub const MAX_NAMES: usize = 16;

/// Longest name (a DNS name's limit).
pub const MAX_NAME_LEN: usize = 253;

/// Largest CSR accepted (PEM).
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// Bounds of a token's secret.
const SECRET_MIN: usize = 16;
const SECRET_MAX: usize = 128;

/// What went wrong with the PKI; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen could not make or sign a certificate.
    #[error("{what}: {message}")]
    Certificate { what: &'static str, message: String },
    /// A join token is malformed.
    #[error("join token: {0} (expected AGORA-1-<64 hex digits>-<secret>, as `agora master token` prints)")]
    Token(String),
    /// A field of a request is out of bounds.
    #[error("{field}: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
    /// The master's chain does not hold the pinned CA.
    #[error("the master's CA digest {found} does not match the join token's {pinned}: the token is from another cluster, its CA was rotated away (`agora master token` prints the current token), or someone is in the middle")]
    DigestMismatch { found: String, pinned: String },
    /// The master could not be reached, or the TLS handshake failed for another reason.
    #[error("cannot reach the master at {address}: {message}")]
    Connect { address: String, message: String },
    /// The master refused to issue a certificate (wrong secret, a bad request): retrying with the
    /// same token cannot help.
    #[error("the master refused the certificate: {0}")]
    Refused(String),
}

impl PkiError {
    /// True when trying again later cannot help (another CA, a refused secret, a bad request).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, PkiError::Connect { .. })
    }
}

fn cert_err(what: &'static str) -> impl Fn(rcgen::Error) -> PkiError {
    move |e| PkiError::Certificate {
        what,
        message: e.to_string(),
    }
}

/// Lowercase hex SHA-256 of `bytes` (a certificate's DER: its digest in a join token).
pub fn digest_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random secret: 32 bytes from the system's generator, hex.
///
/// # Errors
/// [`PkiError::Certificate`] if the system has no randomness to give.
pub fn generate_secret() -> Result<String, PkiError> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(|_| {
        PkiError::Certificate {
            what: "secret",
            message: "the system's random generator failed".into(),
        }
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares two secrets in constant time (for the lengths given).
pub fn secrets_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `AGORA-1-<sha256 of the CA certificate, hex>-<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Lowercase hex SHA-256 of the cluster CA certificate's DER.
    pub ca_digest: String,
    /// What the master checks before it signs a certificate.
    pub secret: String,
}

impl fmt::Debug for JoinToken {
    /// The secret is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_digest", &self.ca_digest)
            .field("secret", &"…")
            .finish()
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOKEN_PREFIX}{}-{}", self.ca_digest, self.secret)
    }
}

impl JoinToken {
    /// True for a string in the `AGORA-1-` format (an older plain join token is not).
    pub fn looks_like(s: &str) -> bool {
        s.trim().starts_with(TOKEN_PREFIX)
    }

    /// Parses `AGORA-1-<64 hex>-<secret>`.
    ///
    /// # Errors
    /// [`PkiError::Token`] naming what is wrong (never echoing the secret).
    pub fn parse(s: &str) -> Result<JoinToken, PkiError> {
        let s = s.trim();
        let rest = s
            .strip_prefix(TOKEN_PREFIX)
            .ok_or_else(|| PkiError::Token(format!("does not start with {TOKEN_PREFIX}")))?;
        let (digest, secret) = rest
            .split_once('-')
            .ok_or_else(|| PkiError::Token("no '-' between the CA digest and the secret".into()))?;
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PkiError::Token(format!(
                "the CA digest must be 64 hex digits, got {} characters",
                digest.len()
            )));
        }
        if !(SECRET_MIN..=SECRET_MAX).contains(&secret.len())
            || !secret.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(PkiError::Token(format!(
                "the secret must be {SECRET_MIN} to {SECRET_MAX} letters and digits"
            )));
        }
        Ok(JoinToken {
            ca_digest: digest.to_ascii_lowercase(),
            secret: secret.to_string(),
        })
    }
}

/// Who a certificate belongs to: its subject's organisational unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A master's own serving certificate.
    Master,
    /// An agent (joined with the agent token).
    Agent,
    /// A framework, the CLI or an operator (joined with the framework token).
    Framework,
}

impl Role {
    /// The organisational unit naming the role.
    pub fn unit(self) -> &'static str {
        match self {
            Role::Master => "agora-master",
            Role::Agent => "agora-agent",
            Role::Framework => "agora-framework",
        }
    }

    fn from_unit(unit: &str) -> Option<Role> {
        [Role::Master, Role::Agent, Role::Framework]
            .into_iter()
            .find(|r| r.unit() == unit)
    }
}

/// The role of a certificate the cluster CA issued (`None` for any other certificate).
pub fn role_of(der: &[u8]) -> Option<Role> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let unit = cert
        .subject()
        .iter_organizational_unit()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Role::from_unit(&unit)
}

/// Checks the names a certificate is asked for: at most [`MAX_NAMES`], each a DNS name or an IP
/// address of at most [`MAX_NAME_LEN`] bytes.
///
/// # Errors
/// [`PkiError::Field`] naming `field`.
pub fn check_names(field: &'static str, names: &[String]) -> Result<(), PkiError> {
    if names.len() > MAX_NAMES {
        return Err(PkiError::Field {
            field,
            message: format!("{} names, at most {MAX_NAMES}", names.len()),
        });
    }
    for n in names {
        let ok = !n.is_empty()
            && n.len() <= MAX_NAME_LEN
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
        if !ok {
            return Err(PkiError::Field {
                field,
                message: format!(
                    "'{}' is not a DNS name or an IP address (1 to {MAX_NAME_LEN} letters, digits, '.', '-', ':')",
                    n.chars().take(64).collect::<String>()
                ),
            });
        }
    }
    Ok(())
}

fn time_at(unix: i64) -> Result<time::OffsetDateTime, PkiError> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(|e| PkiError::Certificate {
        what: "validity",
        message: e.to_string(),
    })
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

fn name(common: &str, role: Option<Role>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Agora");
    if let Some(role) = role {
        dn.push(DnType::OrganizationalUnitName, role.unit());
    }
    dn.push(DnType::CommonName, common);
    dn
}

/// The cluster CA: its certificate (what tokens pin) and its key (what signs).
pub struct ClusterCa {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
    /// The CA's parameters re-signed with its key: rcgen's issuer (same subject and key as the
    /// stored certificate, so what it signs chains to that certificate).
    issuer: rcgen::Certificate,
    key: KeyPair,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("digest", &self.digest())
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A new CA, valid from `now` (Unix seconds, less [`BACKDATE`]) for [`CA_LIFETIME`].
    ///
    /// # Errors
    /// [`PkiError::Certificate`].
    pub fn generate(now: i64) -> Result<ClusterCa, PkiError> {
        let key = KeyPair::generate().map_err(cert_err("cluster CA key"))?;
        let mut params = CertificateParams::default();
        let id = generate_secret()?;
        params.distinguished_name = name(&format!("Agora cluster CA {}", &id[..12]), None);
        // One CA below it: the next CA's certificate it cross-signs at a rotation
        // (rotation::Trust::serving_chain); OpenSSL clients enforce a root's path length.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = time_at(now - secs(BACKDATE))?;
        params.not_after = time_at(now + secs(CA_LIFETIME))?;
        let cert = params
            .self_signed(&key)
            .map_err(cert_err("cluster CA certificate"))?;
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        Self::from_pem(&cert_pem, &key_pem)
    }

    /// The CA stored as PEM (certificate and PKCS#8 key).
    ///
    /// # Errors
    /// [`PkiError::Certificate`] when either does not parse or the key is not the certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(cert_err("cluster CA key"))?;
        let params =
            CertificateParams::from_ca_cert_pem(cert_pem).map_err(cert_err("cluster CA"))?;
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map(|c: CertificateDer<'_>| c.to_vec())
            .map_err(|e| PkiError::Certificate {
                what: "cluster CA",
                message: e.to_string(),
            })?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::Certificate {
                what: "cluster CA",
                message: e.to_string(),
            })?;
        if parsed.public_key().raw != key.public_key_der().as_slice() {
            return Err(PkiError::Certificate {
                what: "cluster CA key",
                message: "the key is not the CA certificate's".into(),
            });
        }
        let issuer = params
            .self_signed(&key)
            .map_err(cert_err("cluster CA issuer"))?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            der,
            issuer,
            key,
        })
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PEM (keep it private).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The certificate, DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// What join tokens pin: the hex SHA-256 of the certificate's DER.
    pub fn digest(&self) -> String {
        digest_hex(&self.der)
    }

    fn leaf_params(
        role: Role,
        names: &[String],
        now: i64,
        lifetime: Duration,
    ) -> Result<CertificateParams, PkiError> {
        check_names("names", names)?;
        let mut params =
            CertificateParams::new(names.to_vec()).map_err(cert_err("certificate names"))?;
        let common = names.first().map_or(role.unit(), String::as_str);
        params.distinguished_name = name(common, Some(role));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = time_at(now - secs(BACKDATE))?;
        params.not_after = time_at(now + secs(lifetime))?;
        Ok(params)
    }

    /// A certificate and a new key for this process (a master's listener), PEM: `(chain, key)`
    /// with the chain `[certificate, CA]` so that a client holding only the CA's digest can check
    /// it.
    ///
    /// # Errors
    /// [`PkiError`].
    pub fn issue_own(
        &self,
        role: Role,
        names: &[String],
        now: i64,
        lifetime: Duration,
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate().map_err(cert_err("key"))?;
        let cert = Self::leaf_params(role, names, now, lifetime)?
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(cert_err("certificate"))?;
        Ok((
            format!("{}{}", cert.pem(), self.cert_pem),
            key.serialize_pem(),
        ))
    }

    /// Signs the key of `csr_pem` (whose signature proves its holder has the key) for `role` and
    /// `names`; the CSR's own subject and names are ignored. Returns the certificate, PEM.
    ///
    /// # Errors
    /// [`PkiError::Field`] for a CSR too large or invalid, or bad names.
    pub fn sign_csr(
        &self,
        role: Role,
        csr_pem: &str,
        names: &[String],
        now: i64,
        lifetime: Duration,
    ) -> Result<String, PkiError> {
        if csr_pem.len() > MAX_CSR_BYTES {
            return Err(PkiError::Field {
                field: "csr_pem",
                message: format!("{} bytes, at most {MAX_CSR_BYTES}", csr_pem.len()),
            });
        }
        let csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| PkiError::Field {
                field: "csr_pem",
                message: format!("not a valid signed PKCS#10 request: {e}"),
            })?;
        let cert = Self::leaf_params(role, names, now, lifetime)?
            .signed_by(&csr.public_key, &self.issuer, &self.key)
            .map_err(cert_err("certificate"))?;
        Ok(cert.pem())
    }
}

/// A key this process generated and a request for a certificate of it.
pub struct Csr {
    /// The request, PEM (what is sent).
    pub csr_pem: String,
    /// The private key, PEM (what stays: write it readable by the owner only).
    pub key_pem: String,
}

impl Csr {
    /// A new ECDSA P-256 key and a signed request for `names`.
    ///
    /// # Errors
    /// [`PkiError`].
    pub fn generate(names: &[String]) -> Result<Csr, PkiError> {
        check_names("names", names)?;
        let key = KeyPair::generate().map_err(cert_err("key"))?;
        let params = CertificateParams::new(names.to_vec()).map_err(cert_err("request names"))?;
        let csr = params
            .serialize_request(&key)
            .map_err(cert_err("certificate request"))?;
        Ok(Csr {
            csr_pem: csr.pem().map_err(cert_err("certificate request"))?,
            key_pem: key.serialize_pem(),
        })
    }
}

/// The DER of the first certificate in `pem`.
///
/// # Errors
/// [`PkiError::Certificate`] when there is none.
pub fn first_der(what: &'static str, pem: &str) -> Result<Vec<u8>, PkiError> {
    rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|c: CertificateDer<'_>| c.to_vec())
        .map_err(|e| PkiError::Certificate {
            what,
            message: e.to_string(),
        })
}

/// A certificate's `notAfter`, Unix seconds.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// PEM of a certificate's DER.
pub fn pem_of(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// The verifier of a first connection: accepts the server's chain only when it holds a CA whose
/// digest is the pinned one and that CA signed the server's certificate (for the name connected
/// to, and valid now).
#[derive(Debug)]
struct Pinned {
    pinned: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// The CA found, or the digests seen instead.
    outcome: Mutex<Option<Result<Vec<u8>, String>>>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let found = intermediates
            .iter()
            .find(|c| digest_hex(c.as_ref()) == self.pinned);
        let Some(ca) = found else {
            let seen = intermediates.last().map_or_else(
                || "(none: no CA in the chain)".to_string(),
                |c| digest_hex(c),
            );
            if let Ok(mut o) = self.outcome.lock() {
                *o = Some(Err(seen));
            }
            return Err(rustls::Error::General("CA digest mismatch".into()));
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("the pinned CA: {e}")))?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verified = verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if let Ok(mut o) = self.outcome.lock() {
            *o = Some(Ok(ca.to_vec()));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Connects to `address` (`host:port`) over TLS, verifying its chain against the CA whose digest
/// is `pinned` (see [`JoinToken`]), and returns that CA's certificate (DER): after this the CA is
/// known and ordinary verification against it can be used.
///
/// # Errors
/// [`PkiError::DigestMismatch`] naming both digests; [`PkiError::Connect`] otherwise.
pub async fn fetch_pinned_ca(
    address: &str,
    pinned: &str,
    within: Duration,
) -> Result<Vec<u8>, PkiError> {
    let connect = |message: String| PkiError::Connect {
        address: address.to_string(),
        message,
    };
    let host_port = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address)
        .trim_end_matches('/');
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let server_name =
        ServerName::try_from(host.to_string()).map_err(|e| connect(format!("'{host}': {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Pinned {
        pinned: pinned.to_ascii_lowercase(),
        provider: provider.clone(),
        outcome: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| connect(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(host_port)
            .await
            .map_err(|e| connect(e.to_string()))?;
        connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| connect(e.to_string()))
    };
    let result = tokio::time::timeout(within, attempt)
        .await
        .map_err(|_| connect(format!("no TLS handshake within {within:?}")))
        .and_then(|r| r);
    let outcome = verifier.outcome.lock().ok().and_then(|mut o| o.take());
    match (outcome, result) {
        (Some(Err(found)), _) => Err(PkiError::DigestMismatch {
            found,
            pinned: pinned.to_string(),
        }),
        (Some(Ok(ca)), Ok(_)) => Ok(ca),
        (_, Err(e)) => Err(e),
        (None, Ok(_)) => Err(connect("the handshake ended without a certificate".into())),
    }
}

/// A certificate the master issued for a key this process generated: what [`join`] returns.
#[derive(Clone)]
pub struct Joined {
    /// The cluster CA (PEM), the one the token pinned.
    pub ca_pem: String,
    /// The issued certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PEM; keep it readable by the owner only).
    pub key_pem: String,
    /// How long the certificate is valid (renew at 2/3 of it).
    pub lifetime: Duration,
}

impl Joined {
    /// TLS as a client of the cluster: verify against the CA, present the certificate.
    pub fn client(&self) -> crate::tls::ClientTls {
        crate::tls::ClientTls {
            ca_pem: self.ca_pem.clone().into_bytes(),
            identity: Some((
                self.cert_pem.clone().into_bytes(),
                self.key_pem.clone().into_bytes(),
            )),
        }
    }
}

/// Joins the cluster through the master at `address` with `token`: fetches the CA the token pins
/// ([`fetch_pinned_ca`]), then asks `Certificates/Issue` for a certificate of a new key for
/// `names` over TLS verified by that CA. The role (agent or framework) is the token's.
///
/// # Errors
/// [`PkiError::Connect`] when the master cannot be reached (retry later); otherwise permanent
/// ([`PkiError::is_permanent`]): another CA, the secret refused, unusable names.
pub async fn join(
    address: &str,
    token: &JoinToken,
    names: &[String],
    within: Duration,
) -> Result<Joined, PkiError> {
    use agora_proto::v1;
    let ca_der = fetch_pinned_ca(address, &token.ca_digest, within).await?;
    let verify = crate::tls::ClientTls {
        ca_pem: pem_of(&ca_der).into_bytes(),
        identity: None,
    };
    let csr = Csr::generate(names)?;
    let connect = |message: String| PkiError::Connect {
        address: address.to_string(),
        message,
    };
    let channel = crate::tls::endpoint(address, Some(&verify))
        .map_err(|e| PkiError::Refused(e.to_string()))?
        .connect_timeout(within)
        .timeout(within)
        .connect()
        .await
        .map_err(|e| connect(crate::tls::error_chain(&e)))?;
    let resp = v1::certificates_client::CertificatesClient::new(channel)
        .issue(v1::IssueCertificateRequest {
            secret: token.secret.clone(),
            csr_pem: csr.csr_pem,
            names: names.to_vec(),
        })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
            | tonic::Code::InvalidArgument => PkiError::Refused(s.message().to_string()),
            _ => connect(format!("{}: {}", s.code(), s.message())),
        })?
        .into_inner();
    Ok(Joined {
        // During a CA rotation the master names both CAs: the token's and the current one.
        ca_pem: rotation::roots_after_join(&ca_der, &resp.ca_pem),
        cert_pem: resp.certificate_pem,
        key_pem: csr.key_pem,
        lifetime: Duration::from_secs(resp.lifetime_seconds.max(1)),
    })
}

/// Renews `current` through the master at `address`: a new key for `names`, `Certificates/Renew`
/// over mutual TLS with the current certificate (no token needed: a rotated secret does not stop
/// renewals).
///
/// # Errors
/// [`PkiError::Connect`] when the master cannot be reached; [`PkiError::Refused`] otherwise.
pub async fn renew(
    address: &str,
    current: &Joined,
    names: &[String],
    within: Duration,
) -> Result<Joined, PkiError> {
    use agora_proto::v1;
    let csr = Csr::generate(names)?;
    let connect = |message: String| PkiError::Connect {
        address: address.to_string(),
        message,
    };
    let channel = crate::tls::endpoint(address, Some(&current.client()))
        .map_err(|e| PkiError::Refused(e.to_string()))?
        .connect_timeout(within)
        .timeout(within)
        .connect()
        .await
        .map_err(|e| connect(crate::tls::error_chain(&e)))?;
    let resp = v1::certificates_client::CertificatesClient::new(channel)
        .renew(v1::RenewCertificateRequest {
            csr_pem: csr.csr_pem,
            names: names.to_vec(),
        })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
            | tonic::Code::InvalidArgument => PkiError::Refused(s.message().to_string()),
            _ => connect(format!("{}: {}", s.code(), s.message())),
        })?
        .into_inner();
    let leaf = first_der("the renewed certificate", &resp.certificate_pem)
        .map_err(|e| PkiError::Refused(e.to_string()))?;
    Ok(Joined {
        // After a CA rotation: the roots the master names now (over a connection verified by
        // the ones held), when one of them signed the new certificate.
        ca_pem: rotation::roots_after_renewal(&current.ca_pem, &resp.ca_pem, &leaf),
        cert_pem: resp.certificate_pem,
        key_pem: csr.key_pem,
        lifetime: Duration::from_secs(resp.lifetime_seconds.max(1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_000_000;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_named() {
        let t = JoinToken {
            ca_digest: "ab".repeat(32),
            secret: "0123456789abcdef0123".into(),
        };
        let s = t.to_string();
        assert!(s.starts_with("AGORA-1-abab"), "{s}");
        assert_eq!(JoinToken::parse(&s).expect("parse"), t);
        assert!(JoinToken::looks_like(&s) && !JoinToken::looks_like("agora-1234"));
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
        for (bad, says) in [
            ("agora-123", "does not start"),
            ("AGORA-1-abcd", "no '-'"),
            ("AGORA-1-abcd-0123456789abcdef", "64 hex"),
            (&format!("AGORA-1-{}-short", "ab".repeat(32)), "16 to 128"),
            (
                &format!("AGORA-1-{}-{}", "ab".repeat(32), "x!".repeat(10)),
                "letters",
            ),
        ] {
            let e = JoinToken::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_ca_signs_csrs_with_the_role_and_names_it_decides() {
        let ca = ClusterCa::generate(NOW).expect("ca");
        let again = ClusterCa::from_pem(ca.cert_pem(), ca.key_pem()).expect("reload");
        assert_eq!(again.digest(), ca.digest());
        assert_eq!(ca.digest().len(), 64);
        let csr = Csr::generate(&["evil-master".into()]).expect("csr");
        let pem = again
            .sign_csr(
                Role::Agent,
                &csr.csr_pem,
                &["agent-1".into(), "127.0.0.1".into()],
                NOW,
                Duration::from_secs(60),
            )
            .expect("sign");
        let der = first_der("cert", &pem).expect("der");
        assert_eq!(role_of(&der), Some(Role::Agent));
        assert_eq!(not_after(&der), Some(NOW + 60));
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
        let names: Vec<String> = cert
            .subject_alternative_name()
            .expect("ext")
            .expect("san")
            .value
            .general_names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect();
        assert!(names.iter().any(|n| n.contains("agent-1")), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("evil")), "{names:?}");
        // Signed by the CA: verify with the CA's key.
        let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.der()).expect("ca");
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the cluster CA");
    }

    #[test]
    fn bad_requests_are_refused_naming_the_field() {
        let ca = ClusterCa::generate(NOW).expect("ca");
        let e = ca
            .sign_csr(Role::Agent, "junk", &[], NOW, DEFAULT_LIFETIME)
            .expect_err("junk");
        assert!(e.to_string().starts_with("csr_pem:"), "{e}");
        let csr = Csr::generate(&[]).expect("csr");
        let many: Vec<String> = (0..17).map(|i| format!("n{i}")).collect();
        let e = ca
            .sign_csr(Role::Agent, &csr.csr_pem, &many, NOW, DEFAULT_LIFETIME)
            .expect_err("many");
        assert!(e.to_string().contains("at most 16"), "{e}");
        let e = ca
            .sign_csr(
                Role::Agent,
                &csr.csr_pem,
                &["a b".into()],
                NOW,
                DEFAULT_LIFETIME,
            )
            .expect_err("space");
        assert!(e.to_string().contains("not a DNS name"), "{e}");
        let other = ClusterCa::generate(NOW).expect("other");
        assert!(ClusterCa::from_pem(ca.cert_pem(), other.key_pem()).is_err());
    }

    /// A TLS server on 127.0.0.1 serving `chain`/`key`, answering handshakes until dropped.
    async fn tls_server(chain: &str, key: &str) -> (String, tokio::task::JoinHandle<()>) {
        let cert = crate::tls::SwappableCert::from_pem(chain.as_bytes(), key.as_bytes())
            .expect("certificate");
        let config = crate::tls::server_config_with(cert, None).expect("config");
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = tcp.local_addr().expect("addr").to_string();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = tcp.accept().await {
                let a = acceptor.clone();
                tokio::spawn(async move {
                    let _ = a.accept(s).await;
                });
            }
        });
        (address, task)
    }

    #[tokio::test]
    async fn the_first_connection_accepts_only_the_pinned_ca() {
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs(),
        )
        .expect("now");
        let ca = ClusterCa::generate(now).expect("ca");
        let (chain, key) = ca
            .issue_own(Role::Master, &["127.0.0.1".into()], now, DEFAULT_LIFETIME)
            .expect("issue");
        let (address, server) = tls_server(&chain, &key).await;
        let within = Duration::from_secs(5);
        let got = fetch_pinned_ca(&address, &ca.digest(), within)
            .await
            .expect("the pinned CA");
        assert_eq!(got, ca.der());
        let other = "ab".repeat(32);
        match fetch_pinned_ca(&address, &other, within).await {
            Err(PkiError::DigestMismatch { found, pinned }) => {
                assert_eq!((found, pinned), (ca.digest(), other));
            }
            r => panic!("expected a digest mismatch, got {r:?}"),
        }
        // The CA's digest pinned, but the server's certificate is not for the name dialled.
        let (chain, key) = ca
            .issue_own(Role::Master, &["elsewhere".into()], now, DEFAULT_LIFETIME)
            .expect("issue");
        let (wrong_name, second) = tls_server(&chain, &key).await;
        let e = fetch_pinned_ca(&wrong_name, &ca.digest(), within)
            .await
            .expect_err("wrong name");
        assert!(matches!(e, PkiError::Connect { .. }), "{e}");
        server.abort();
        second.abort();
    }

    #[test]
    fn secrets_compare_by_content() {
        let a = generate_secret().expect("secret");
        assert_eq!(a.len(), 64);
        assert!(secrets_equal(&a, &a.clone()));
        assert!(!secrets_equal(&a, &generate_secret().expect("secret")));
        assert!(!secrets_equal(&a, &a[..63]));
    }
}
