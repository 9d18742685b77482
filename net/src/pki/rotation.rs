//! Rotating the cluster CA without an outage (`agora master ca rotate`), as Docker Swarm's
//! `docker swarm ca --rotate`: a new CA, its certificate cross-signed by the old one, and a
//! transition during which both are trusted.
//!
//! ```text
//!  rotate   new CA N (new key), cross = N's certificate signed by the old CA O
//!           Trust { current: N, transition: Some { previous: O, cross } }
//!           masters serve  [leaf(N), cross, O, N]  a peer trusting only O: leaf ← cross ← O
//!                                                  a peer trusting N:      leaf ← N
//!                                                  a joiner pinning O or N finds it in the chain
//!           masters trust client certificates of O and N; they issue from N only, [leaf, cross]
//!           agents/frameworks ask Certificates/Authority every check_interval: issuer ≠ N ─▶ renew now,
//!           and keep the roots it names (N, O) as their ca.pem
//!  finish   Trust { current: N, transition: None }: masters serve [leaf(N), N], trust N only
//! ```
//!
//! Everything here is synchronous and I/O-free except [`authority`]; time is passed in.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa};
use rustls::pki_types::CertificateDer;

use super::{cert_err, digest_hex, first_der, pem_of, ClusterCa, PkiError};

/// Largest CA bundle accepted from a master (PEM).
pub const MAX_ROOTS_BYTES: usize = 64 * 1024;

/// Most certificates in a CA bundle from a master (the current CA and the previous one).
pub const MAX_ROOTS: usize = 4;

/// Longest wait between two `Certificates/Authority` checks of a certificate holder.
pub const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// A rotation in progress: the CA being replaced, still trusted, and the new CA's certificate
/// signed by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The previous CA's certificate (PEM).
    pub previous_pem: String,
    /// The current CA's certificate cross-signed by the previous CA (PEM).
    pub cross_pem: String,
}

/// What the cluster trusts and serves: the current CA and, during a rotation, the previous one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    /// The CA that issues certificates (PEM).
    pub current_pem: String,
    /// Set from `agora master ca rotate` until `--finish`.
    pub transition: Option<Transition>,
}

fn with_newline(pem: &str) -> String {
    let mut s = pem.trim_end().to_string();
    s.push('\n');
    s
}

impl Trust {
    /// The roots a holder of a certificate trusts (PEM): the current CA first, then the previous
    /// one during a rotation. What `ca.pem` files hold.
    pub fn roots_pem(&self) -> String {
        let mut out = with_newline(&self.current_pem);
        if let Some(t) = &self.transition {
            out.push_str(&with_newline(&t.previous_pem));
        }
        out
    }

    /// The chain a master serves for its certificate `leaf_pem`: `[leaf, current]`, and during a
    /// rotation `[leaf, cross, previous, current]` so that a peer trusting only the previous CA
    /// verifies it through the cross-signed certificate, and a joiner pinning either CA's digest
    /// finds that CA in the chain. The cross-signed certificate comes before the self-signed
    /// current CA, for clients that take the first matching issuer.
    pub fn serving_chain(&self, leaf_pem: &str) -> String {
        let mut out = with_newline(leaf_pem);
        if let Some(t) = &self.transition {
            out.push_str(&with_newline(&t.cross_pem));
            out.push_str(&with_newline(&t.previous_pem));
        }
        out.push_str(&with_newline(&self.current_pem));
        out
    }

    /// The chain handed out with a certificate the current CA signed for an agent or a framework:
    /// the certificate, and during a rotation the cross-signed CA (so that the holder's own
    /// listener is verified by clients that still trust only the previous CA).
    pub fn issued_chain(&self, leaf_pem: &str) -> String {
        let mut out = with_newline(leaf_pem);
        if let Some(t) = &self.transition {
            out.push_str(&with_newline(&t.cross_pem));
        }
        out
    }

    /// The digests a join token may pin: the current CA's, and the previous one's during a
    /// rotation (it is in the chain the masters serve).
    ///
    /// # Errors
    /// [`PkiError::Certificate`] when a stored certificate does not parse.
    pub fn digests(&self) -> Result<Vec<String>, PkiError> {
        let mut out = vec![digest_hex(&first_der("cluster CA", &self.current_pem)?)];
        if let Some(t) = &self.transition {
            out.push(digest_hex(&first_der(
                "previous cluster CA",
                &t.previous_pem,
            )?));
        }
        Ok(out)
    }
}

impl ClusterCa {
    /// `new`'s certificate signed by this CA: same subject, key and key identifier as `new`'s,
    /// issued by this CA, allowing no CA below it. A peer that trusts only this CA verifies what
    /// `new` signs through it.
    ///
    /// # Errors
    /// [`PkiError::Certificate`].
    pub fn cross_sign(&self, new: &ClusterCa) -> Result<String, PkiError> {
        let mut params =
            CertificateParams::from_ca_cert_pem(new.cert_pem()).map_err(cert_err("new CA"))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.serial_number = None;
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&new.key, &self.issuer, &self.key)
            .map_err(cert_err("cross-signed CA certificate"))?;
        Ok(cert.pem())
    }

    /// A certificate and a new key for this process (a master's listener), PEM `(chain, key)`,
    /// with the chain `trust` says a master serves ([`Trust::serving_chain`]). `trust` is this
    /// CA's.
    ///
    /// # Errors
    /// [`PkiError`].
    pub fn issue_serving(
        &self,
        trust: &Trust,
        role: super::Role,
        names: &[String],
        now: i64,
        lifetime: Duration,
    ) -> Result<(String, String), PkiError> {
        let key = rcgen::KeyPair::generate().map_err(cert_err("key"))?;
        let cert = Self::leaf_params(role, names, now, lifetime)?
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(cert_err("certificate"))?;
        Ok((trust.serving_chain(&cert.pem()), key.serialize_pem()))
    }
}

/// True when `ca_der` signed `cert_der`: the certificate's issuer is the CA's subject and its
/// signature verifies with the CA's key. False for anything that does not parse.
pub fn issued_by(cert_der: &[u8], ca_der: &[u8]) -> bool {
    let (Ok((_, cert)), Ok((_, ca))) = (
        x509_parser::parse_x509_certificate(cert_der),
        x509_parser::parse_x509_certificate(ca_der),
    ) else {
        return false;
    };
    cert.issuer().as_raw() == ca.subject().as_raw()
        && cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// Whether a certificate valid from `not_before` to `not_after` (Unix seconds) is due for
/// renewal at `now`: at two thirds of its life, or at once when the cluster's current CA did not
/// issue it (`of_current_ca` false: the CA was rotated).
pub fn renewal_due(now: i64, not_before: i64, not_after: i64, of_current_ca: bool) -> bool {
    if !of_current_ca {
        return true;
    }
    let life = not_after.saturating_sub(not_before);
    life <= 0 || now >= not_before.saturating_add(life / 3 * 2)
}

/// A certificate's validity, `(notBefore, notAfter)` in Unix seconds.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}

/// How often a holder of a certificate of `lifetime` asks the masters which CA issues now: a
/// tenth of the lifetime, between one second and [`MAX_CHECK_INTERVAL`].
pub fn check_interval(lifetime: Duration) -> Duration {
    (lifetime / 10).clamp(Duration::from_secs(1), MAX_CHECK_INTERVAL)
}

/// What `Certificates/Authority` says, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// The roots to trust (PEM, the current CA first).
    pub roots_pem: String,
    /// The CA issuing now (DER).
    pub issuer_der: Vec<u8>,
}

/// Checks a CA bundle from a master: at most [`MAX_ROOTS_BYTES`] and [`MAX_ROOTS`] certificates,
/// each a CA certificate. Returns the certificates (DER).
///
/// # Errors
/// [`PkiError::Field`] naming `field`.
pub fn check_roots(field: &'static str, pem: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    let bad = |message: String| PkiError::Field { field, message };
    if pem.len() > MAX_ROOTS_BYTES {
        return Err(bad(format!(
            "{} bytes, at most {MAX_ROOTS_BYTES}",
            pem.len()
        )));
    }
    let ders: Vec<Vec<u8>> = rustls::pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes())
        .map(|c: Result<CertificateDer<'_>, _>| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
    if ders.is_empty() || ders.len() > MAX_ROOTS {
        return Err(bad(format!(
            "{} certificates, expected 1 to {MAX_ROOTS}",
            ders.len()
        )));
    }
    for der in &ders {
        let is_ca = x509_parser::parse_x509_certificate(der)
            .ok()
            .and_then(|(_, c)| c.basic_constraints().ok().flatten().map(|b| b.value.ca))
            .unwrap_or(false);
        if !is_ca {
            return Err(bad("a certificate that is not a CA's".into()));
        }
    }
    Ok(ders)
}

/// The roots a holder keeps after a master answered with `roots_pem` for its new certificate
/// `leaf_der`: those roots when they are valid and one of them signed the certificate, else
/// `held` (what it trusted before).
pub fn roots_after_renewal(held: &str, roots_pem: &str, leaf_der: &[u8]) -> String {
    match check_roots("ca_pem", roots_pem) {
        Ok(ders) if ders.iter().any(|ca| issued_by(leaf_der, ca)) => roots_pem.to_string(),
        _ => held.to_string(),
    }
}

/// The roots a joiner keeps: the master's bundle when it holds the CA the token pinned (it came
/// over a connection that CA verified), else that CA alone.
pub fn roots_after_join(pinned_der: &[u8], roots_pem: &str) -> String {
    match check_roots("ca_pem", roots_pem) {
        Ok(ders) if ders.iter().any(|d| d == pinned_der) => roots_pem.to_string(),
        _ => pem_of(pinned_der),
    }
}

/// Asks `Certificates/Authority` over `channel` (a connection verified by the roots the caller
/// trusts) which CAs to trust and which one issues now.
///
/// # Errors
/// [`PkiError::Connect`] when the call fails; [`PkiError::Field`] for an unusable answer.
pub async fn authority(
    channel: tonic::transport::Channel,
    address: &str,
) -> Result<Authority, PkiError> {
    use agora_proto::v1;
    let resp = v1::certificates_client::CertificatesClient::new(channel)
        .authority(v1::CertificateAuthorityRequest {})
        .await
        .map_err(|s| PkiError::Connect {
            address: address.to_string(),
            message: format!("Certificates/Authority: {}: {}", s.code(), s.message()),
        })?
        .into_inner();
    check_roots("ca_pem", &resp.ca_pem)?;
    let issuer = check_roots("issuer_pem", &resp.issuer_pem)?;
    let Some(issuer_der) = issuer.into_iter().next() else {
        return Err(PkiError::Field {
            field: "issuer_pem",
            message: "no certificate".into(),
        });
    };
    Ok(Authority {
        roots_pem: resp.ca_pem,
        issuer_der,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{not_after, Csr, Role, DEFAULT_LIFETIME};
    use super::*;

    const NOW: i64 = 1_780_000_000;

    fn der(pem: &str) -> Vec<u8> {
        first_der("cert", pem).expect("der")
    }

    fn chain_ders(pem: &str) -> Vec<CertificateDer<'static>> {
        rustls::pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<CertificateDer<'static>>, _>>()
            .expect("chain")
    }

    fn rotated() -> (ClusterCa, ClusterCa, Trust) {
        let old = ClusterCa::generate(NOW).expect("old");
        let new = ClusterCa::generate(NOW + 10).expect("new");
        let cross = old.cross_sign(&new).expect("cross");
        let trust = Trust {
            current_pem: new.cert_pem().to_string(),
            transition: Some(Transition {
                previous_pem: old.cert_pem().to_string(),
                cross_pem: cross,
            }),
        };
        (old, new, trust)
    }

    /// Verifies `chain` (leaf first) for `name` against `roots` the way every rustls client of
    /// the cluster does.
    fn verifies(chain: &str, roots_pem: &str, name: &str, at: i64) -> Result<(), String> {
        let roots = crate::tls::pem_roots(roots_pem.as_bytes()).map_err(|e| e.to_string())?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider,
        )
        .build()
        .map_err(|e| e.to_string())?;
        let certs = chain_ders(chain);
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).expect("name");
        let now = rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
            u64::try_from(at).expect("positive"),
        ));
        rustls::client::danger::ServerCertVerifier::verify_server_cert(
            verifier.as_ref(),
            &certs[0],
            &certs[1..],
            &server,
            &[],
            now,
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    #[test]
    fn during_a_rotation_the_served_chain_verifies_with_either_root_and_after_it_only_the_new() {
        let (old, new, trust) = rotated();
        let names = ["m1".to_string(), "127.0.0.1".to_string()];
        let (chain, _key) = new
            .issue_serving(&trust, Role::Master, &names, NOW + 20, DEFAULT_LIFETIME)
            .expect("issue");
        assert_eq!(
            chain_ders(&chain).len(),
            4,
            "[leaf, cross, previous, current]"
        );
        let at = NOW + 60;
        verifies(&chain, old.cert_pem(), "m1", at).expect("a peer trusting only the old CA");
        verifies(&chain, new.cert_pem(), "m1", at).expect("a peer trusting only the new CA");
        verifies(&chain, &trust.roots_pem(), "m1", at).expect("a peer trusting both");
        let stranger = ClusterCa::generate(NOW).expect("stranger");
        assert!(verifies(&chain, stranger.cert_pem(), "m1", at).is_err());
        // Both digests are in the chain: a joiner pinning either finds its CA.
        let digests: Vec<String> = chain_ders(&chain)
            .iter()
            .map(|c| digest_hex(c.as_ref()))
            .collect();
        for d in trust.digests().expect("digests") {
            assert!(digests.contains(&d), "{d} in {digests:?}");
        }
        assert_eq!(trust.digests().expect("d")[0], new.digest());

        // Finished: [leaf, current], the old root alone no longer verifies it.
        let finished = Trust {
            current_pem: new.cert_pem().to_string(),
            transition: None,
        };
        let (chain, _) = new
            .issue_serving(&finished, Role::Master, &names, NOW + 20, DEFAULT_LIFETIME)
            .expect("issue");
        assert_eq!(chain_ders(&chain).len(), 2);
        verifies(&chain, new.cert_pem(), "m1", at).expect("the new CA");
        assert!(verifies(&chain, old.cert_pem(), "m1", at).is_err());
        assert_eq!(finished.roots_pem(), with_newline(new.cert_pem()));
        assert_eq!(finished.digests().expect("d"), [new.digest()]);
    }

    #[test]
    fn the_cross_signed_certificate_is_the_new_ca_issued_by_the_old() {
        let (old, new, trust) = rotated();
        let cross = der(&trust.transition.as_ref().expect("t").cross_pem);
        assert!(issued_by(&cross, old.der()));
        assert!(!issued_by(&cross, new.der()));
        let (_, c) = x509_parser::parse_x509_certificate(&cross).expect("parse");
        let (_, n) = x509_parser::parse_x509_certificate(new.der()).expect("parse");
        assert_eq!(c.subject().as_raw(), n.subject().as_raw());
        assert_eq!(c.public_key().raw, n.public_key().raw);
        assert_eq!(
            c.basic_constraints()
                .expect("ext")
                .map(|b| b.value.path_len_constraint),
            Some(Some(0))
        );
        // A leaf the new CA signed chains to the old through it (as the issued chain says).
        let csr = Csr::generate(&["agent-1".into()]).expect("csr");
        let leaf = new
            .sign_csr(
                Role::Agent,
                &csr.csr_pem,
                &["agent-1".into()],
                NOW + 20,
                DEFAULT_LIFETIME,
            )
            .expect("sign");
        let issued = trust.issued_chain(&leaf);
        assert_eq!(chain_ders(&issued).len(), 2);
        verifies(&issued, old.cert_pem(), "agent-1", NOW + 60).expect("through the cross");
        assert!(issued_by(&der(&leaf), new.der()));
        assert!(!issued_by(&der(&leaf), old.der()));
        assert!(!issued_by(b"junk", new.der()));
        // A new CA allows one CA below it, for the next rotation's cross-signed certificate.
        let (_, n) = x509_parser::parse_x509_certificate(new.der()).expect("parse");
        assert_eq!(
            n.basic_constraints()
                .expect("ext")
                .map(|b| b.value.path_len_constraint),
            Some(Some(1))
        );
    }

    #[test]
    fn renewal_is_due_at_two_thirds_or_at_once_after_a_rotation() {
        let (start, end) = (NOW, NOW + 90);
        assert!(!renewal_due(NOW + 10, start, end, true));
        assert!(!renewal_due(NOW + 59, start, end, true));
        assert!(renewal_due(NOW + 60, start, end, true));
        assert!(renewal_due(NOW + 200, start, end, true));
        assert!(
            renewal_due(NOW + 1, start, end, false),
            "issued by a CA no longer current"
        );
        assert!(
            renewal_due(NOW, end, start, true),
            "nonsense validity renews"
        );
        assert_eq!(
            check_interval(Duration::from_secs(6)),
            Duration::from_secs(1)
        );
        assert_eq!(
            check_interval(Duration::from_secs(120)),
            Duration::from_secs(12)
        );
        assert_eq!(check_interval(DEFAULT_LIFETIME), MAX_CHECK_INTERVAL);
    }

    #[test]
    fn bundles_from_a_master_are_bounded_and_kept_only_when_they_fit() {
        let (old, new, trust) = rotated();
        let roots = trust.roots_pem();
        assert_eq!(check_roots("ca_pem", &roots).expect("ok").len(), 2);
        let e = check_roots("ca_pem", "junk").expect_err("junk").to_string();
        assert!(e.starts_with("ca_pem: 0 certificates"), "{e}");
        let five = roots.repeat(3);
        let e = check_roots("ca_pem", &five).expect_err("many").to_string();
        assert!(e.contains("expected 1 to 4"), "{e}");
        let e = check_roots("ca_pem", &"x".repeat(MAX_ROOTS_BYTES + 1))
            .expect_err("big")
            .to_string();
        assert!(e.contains("at most"), "{e}");
        let csr = Csr::generate(&[]).expect("csr");
        let leaf = new
            .sign_csr(
                Role::Agent,
                &csr.csr_pem,
                &["a".into()],
                NOW + 20,
                DEFAULT_LIFETIME,
            )
            .expect("sign");
        let e = check_roots("ca_pem", &leaf)
            .expect_err("a leaf")
            .to_string();
        assert!(e.contains("not a CA"), "{e}");
        // Renewal: the master's roots when one of them signed the new certificate.
        let leaf_der = der(&leaf);
        assert_eq!(
            roots_after_renewal(old.cert_pem(), &roots, &leaf_der),
            roots
        );
        let stranger = ClusterCa::generate(NOW).expect("stranger");
        assert_eq!(
            roots_after_renewal(old.cert_pem(), stranger.cert_pem(), &leaf_der),
            old.cert_pem()
        );
        assert_eq!(roots_after_renewal("held", "junk", &leaf_der), "held");
        // Join: the master's roots when they hold the pinned CA, else the pinned CA alone.
        assert_eq!(roots_after_join(old.der(), &roots), roots);
        assert_eq!(
            roots_after_join(old.der(), new.cert_pem()),
            pem_of(old.der())
        );
        assert_eq!(not_after(&leaf_der), Some(NOW + 20 + 90 * 24 * 3600));
    }
}
