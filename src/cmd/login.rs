//! `agora login` / `agora logout`: the CLI's own certificate of a secure-by-default cluster, as
//! `docker swarm join` gives a node its certificate.
//!
//! ```text
//!  agora login --master m1:5050 --token AGORA-1-<CA digest>-<secret>   (the framework token)
//!    ─▶ agora_net::pki::join: the CA the token pins, a certificate of the framework role for a
//!       key generated here
//!    ─▶ $AGORA_HOME (default ~/.agora, 0700): ca.pem (public), login.json (0600: master, the
//!       certificate and its key, its lifetime)
//!  every CLI command without --tls-ca (and without --master, or with the logged-in one)
//!    ─▶ https, the master verified against ca.pem, the certificate presented (mutual TLS);
//!       past two thirds of its life it is renewed first (agora_net::pki::renew)
//!  agora logout ─▶ removes both files
//! ```
//!
//! The certificate and its key are kept in one file, written atomically, so that two commands
//! renewing at once never leave a certificate beside another one's key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_net::pki::{self, JoinToken};
use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde_json::{json, Value};

/// The environment variable naming the directory instead of `~/.agora`.
pub const HOME_ENV: &str = "AGORA_HOME";

/// How long joining or renewing may take.
const WITHIN: Duration = Duration::from_secs(10);

/// Largest login file read (a certificate, a key, a master address).
const MAX_LOGIN_FILE: u64 = 64 * 1024;

/// Longest master address kept.
const MAX_MASTER_LEN: usize = 1024;

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The master: `host:port` or `zk://h1:2181,h2:2181/agora`.
    #[arg(long, env = "AGORA_MASTER")]
    master: String,
    /// The cluster's framework token, `AGORA-1-…` (`agora master token --framework` on a master
    /// prints it). Prefer --token-file: a command line is visible to every user of the machine.
    #[arg(
        long,
        required_unless_present = "token_file",
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// A file holding the framework token.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// The directory logins are kept in: `$AGORA_HOME`, else `~/.agora`.
///
/// # Errors
/// Neither `AGORA_HOME` nor `HOME` is set.
pub fn home() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(HOME_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".agora")),
        None => bail!("neither {HOME_ENV} nor HOME is set: set {HOME_ENV} to the directory `agora login` keeps its certificate in"),
    }
}

/// A stored login: the master it was made against and the certificate it got.
#[derive(Clone)]
pub struct Login {
    /// Where it is kept.
    pub dir: PathBuf,
    /// The master as given to `agora login` (`host:port` or `zk://…`).
    pub master: String,
    /// The CA, the certificate and its key.
    pub joined: pki::Joined,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("dir", &self.dir)
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

/// What is decided about a stored certificate at `now` (Unix seconds): when it ends at `end` and
/// lived `lifetime`, it is renewed from two thirds of its life, and refused from its end.
#[derive(Debug, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    Renew,
    Expired,
}

/// See [`Freshness`].
pub fn freshness(end: i64, lifetime: Duration, now: i64) -> Freshness {
    let third = i64::try_from(lifetime.as_secs() / 3).unwrap_or(i64::MAX / 4);
    if now >= end {
        Freshness::Expired
    } else if now >= end.saturating_sub(third) {
        Freshness::Renew
    } else {
        Freshness::Fresh
    }
}

fn login_file(dir: &Path) -> PathBuf {
    dir.join("login.json")
}

/// The CA file `agora login` writes (for `curl --cacert`, browsers).
pub fn ca_file(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

/// Writes a login: the directory 0700, `ca.pem` public, `login.json` 0600.
fn store(dir: &Path, master: &str, joined: &pki::Joined) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let ca = ca_file(dir);
    agora_ha::store::write_atomic(&ca, joined.ca_pem.as_bytes())
        .with_context(|| format!("writing {}", ca.display()))?;
    let doc = json!({
        "master": master,
        "certificate_pem": joined.cert_pem,
        "key_pem": joined.key_pem,
        "lifetime_seconds": joined.lifetime.as_secs(),
    });
    let file = login_file(dir);
    agora_ha::store::write_private(&file, doc.to_string().as_bytes())
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(())
}

/// The login stored in [`home`], if any.
///
/// # Errors
/// A login file that cannot be read or is not one `agora login` wrote (named, with what to do).
pub fn load() -> anyhow::Result<Option<Login>> {
    load_from(&home()?)
}

/// A token file holds one token (about 140 bytes) and maybe a newline.
const MAX_TOKEN_FILE: u64 = 4096;

/// The UTF-8 text of `path`, refused when it is larger than `max` bytes.
fn read_capped(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(text)
}

fn load_from(dir: &Path) -> anyhow::Result<Option<Login>> {
    use std::io::Read;
    let file = login_file(dir);
    let f = match std::fs::File::open(&file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow!("{}: {e}", file.display())),
    };
    let bad = |what: &str| {
        anyhow!(
            "{}: {what}; log in again (`agora login --master HOST:PORT --token AGORA-1-…`) or remove it with `agora logout`",
            file.display()
        )
    };
    let mut text = String::new();
    f.take(MAX_LOGIN_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| bad(&e.to_string()))?;
    if text.len() as u64 > MAX_LOGIN_FILE {
        return Err(bad(&format!("larger than {MAX_LOGIN_FILE} bytes")));
    }
    let doc: Value = serde_json::from_str(&text).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let field = |name: &str| {
        doc[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| bad(&format!("no \"{name}\"")))
    };
    let master = field("master")?;
    if master.is_empty() || master.len() > MAX_MASTER_LEN {
        return Err(bad(&format!(
            "\"master\" must be 1 to {MAX_MASTER_LEN} characters"
        )));
    }
    let ca = ca_file(dir);
    let ca_pem =
        read_capped(&ca, MAX_LOGIN_FILE).map_err(|e| bad(&format!("{}: {e}", ca.display())))?;
    let joined = pki::Joined {
        ca_pem,
        cert_pem: field("certificate_pem")?,
        key_pem: field("key_pem")?,
        lifetime: Duration::from_secs(
            doc["lifetime_seconds"]
                .as_u64()
                .filter(|s| *s > 0)
                .ok_or_else(|| bad("no \"lifetime_seconds\""))?,
        ),
    };
    Ok(Some(Login {
        dir: dir.to_path_buf(),
        master,
        joined,
    }))
}

/// Joins the cluster through `master` with the framework `token` (the same join as agents' and
/// frameworks', [`pki::join`]) and stores the certificate in `dir`. Nothing is stored when the
/// master is not the token's cluster, refuses the secret, or issues a certificate of another role
/// (an agent token).
///
/// # Errors
/// Each of those, saying what to do.
pub async fn login_into(dir: &Path, master: &str, token: &JoinToken) -> anyhow::Result<Login> {
    if master.is_empty() || master.len() > MAX_MASTER_LEN {
        bail!("--master must be 1 to {MAX_MASTER_LEN} characters");
    }
    let address = super::cli::leader_address(master).await?;
    let joined = pki::join(&address, token, &[], WITHIN)
        .await
        .map_err(|e| anyhow!("agora login: {e}"))?;
    let der = pki::first_der("the issued certificate", &joined.cert_pem)?;
    if pki::role_of(&der) != Some(pki::Role::Framework) {
        bail!(
            "agora login: this is not the framework token (the master issued a certificate of \
             another role: it is the agents' token): use the one `agora master token --framework` \
             prints"
        );
    }
    store(dir, master, &joined)?;
    Ok(Login {
        dir: dir.to_path_buf(),
        master: master.to_string(),
        joined,
    })
}

impl Login {
    /// This login ready for a command: renewed (and stored) when past two thirds of its
    /// certificate's life, refused once it has ended.
    ///
    /// # Errors
    /// An expired certificate (log in again); a renewal refused or impossible while the
    /// certificate is still valid is only warned about.
    pub async fn fresh(self) -> anyhow::Result<Login> {
        let der = pki::first_der("the certificate of `agora login`", &self.joined.cert_pem)?;
        let end = pki::not_after(&der).ok_or_else(|| {
            anyhow!(
                "{}: the stored certificate does not parse; log in again",
                login_file(&self.dir).display()
            )
        })?;
        let now = agora_master::pki::now();
        match freshness(end, self.joined.lifetime, now) {
            Freshness::Fresh => Ok(self),
            Freshness::Expired => bail!(
                "the certificate `agora login` stored in {} expired {} s ago: log in again with \
                 `agora login --master {} --token AGORA-1-…` (the framework token, `agora master \
                 token --framework` on a master)",
                self.dir.display(),
                now - end,
                self.master
            ),
            Freshness::Renew => {
                let renewed = async {
                    let address = super::cli::leader_address(&self.master).await?;
                    let new = pki::renew(&address, &self.joined, &[], WITHIN).await?;
                    store(&self.dir, &self.master, &new)?;
                    anyhow::Ok(new)
                };
                match renewed.await {
                    Ok(joined) => Ok(Login { joined, ..self }),
                    Err(e) => {
                        eprintln!(
                            "warning: cannot renew the certificate of `agora login` yet ({e:#}); it is valid for {} s more",
                            end - now
                        );
                        Ok(self)
                    }
                }
            }
        }
    }

    /// TLS as a client of the cluster: the CA, the certificate presented.
    pub fn tls(&self) -> agora_net::tls::ClientTls {
        self.joined.client()
    }
}

/// `90 days`, `6 s`.
fn lifetime_text(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s => format!("{s} s"),
    }
}

pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let text = match (&args.token_file, &args.token) {
        (Some(path), _) => read_capped(path, MAX_TOKEN_FILE)
            .map_err(|e| anyhow!("--token-file {}: {e}", path.display()))?,
        (None, Some(t)) => t.clone(),
        (None, None) => bail!("give the framework token: --token AGORA-1-… or --token-file FILE"),
    };
    let token = JoinToken::parse(&text).map_err(|e| anyhow!("--token: {e}"))?;
    let dir = home()?;
    let before = load_from(&dir).ok().flatten().map(|l| l.master);
    let login = login_into(&dir, &args.master, &token).await?;
    if let Some(old) = before.filter(|m| *m != login.master) {
        println!("replaced the login to {old}");
    }
    println!(
        "logged in to {} (a certificate valid for {}, renewed by the CLI as it is used); kept in {}",
        login.master,
        lifetime_text(login.joined.lifetime),
        dir.display()
    );
    println!(
        "the cluster CA is {} (curl --cacert {} https://…; add it to a browser's authorities for the web UIs)",
        ca_file(&dir).display(),
        ca_file(&dir).display()
    );
    Ok(())
}

/// Removes the login from `dir`; says whether there was one.
///
/// # Errors
/// A file that exists and cannot be removed.
pub fn logout_from(dir: &Path) -> anyhow::Result<Option<String>> {
    let master = load_from(dir).ok().flatten().map(|l| l.master);
    let mut removed = false;
    for f in [login_file(dir), ca_file(dir)] {
        match std::fs::remove_file(&f) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow!("removing {}: {e}", f.display())),
        }
    }
    // The directory goes too when nothing else is in it.
    let _ = std::fs::remove_dir(dir);
    Ok(removed.then(|| master.unwrap_or_else(|| "the cluster".into())))
}

pub fn logout() -> anyhow::Result<()> {
    let dir = home()?;
    match logout_from(&dir)? {
        Some(master) => println!(
            "logged out of {master}: removed the certificate and CA from {}",
            dir.display()
        ),
        None => println!("not logged in ({} holds no login)", dir.display()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_and_ca_files_are_read_only_up_to_their_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("token");
        std::fs::write(&f, "x".repeat(4096)).expect("write");
        assert_eq!(
            read_capped(&f, MAX_TOKEN_FILE).expect("at the bound").len(),
            4096
        );
        std::fs::write(&f, "x".repeat(4097)).expect("write");
        let e = read_capped(&f, MAX_TOKEN_FILE).expect_err("past the bound");
        assert!(e.to_string().contains("larger than 4096 bytes"), "{e}");
        std::fs::write(&f, [0xff, 0xfe]).expect("write");
        assert!(read_capped(&f, MAX_TOKEN_FILE).is_err(), "not UTF-8");
    }

    #[test]
    fn certificates_are_renewed_from_two_thirds_and_refused_from_their_end() {
        let life = Duration::from_secs(90);
        assert_eq!(freshness(1000, life, 900), Freshness::Fresh);
        assert_eq!(freshness(1000, life, 969), Freshness::Fresh);
        assert_eq!(freshness(1000, life, 970), Freshness::Renew);
        assert_eq!(freshness(1000, life, 999), Freshness::Renew);
        assert_eq!(freshness(1000, life, 1000), Freshness::Expired);
        assert_eq!(freshness(1000, Duration::MAX, 0), Freshness::Renew);
    }

    #[test]
    fn a_login_round_trips_private_and_a_bad_file_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("agora");
        let joined = pki::Joined {
            ca_pem: "CA".into(),
            cert_pem: "CERT".into(),
            key_pem: "KEY".into(),
            lifetime: Duration::from_secs(60),
        };
        assert!(load_from(&home).expect("none").is_none());
        store(&home, "m1:5050", &joined).expect("store");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&login_file(&home)), 0o600);
        assert_eq!(mode(&home), 0o700);
        let back = load_from(&home).expect("load").expect("some");
        assert_eq!(back.master, "m1:5050");
        assert_eq!(back.joined.key_pem, "KEY");
        assert_eq!(back.joined.lifetime, Duration::from_secs(60));
        std::fs::write(login_file(&home), "{\"master\":\"m1\"}").expect("write");
        let e = load_from(&home).expect_err("bad").to_string();
        assert!(
            e.contains("login.json") && e.contains("agora logout"),
            "{e}"
        );
        assert_eq!(
            logout_from(&home).expect("logout").as_deref(),
            Some("the cluster")
        );
        assert!(!home.exists());
        assert!(logout_from(&home).expect("again").is_none());
    }
}
