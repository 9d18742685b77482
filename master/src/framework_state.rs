//! What the services and batch frameworks share for high availability: their state document in a
//! local file or in ZooKeeper (fenced on the instance's leadership), leader election among
//! instances, and who leads for their HTTP layers (standbys redirect to the leader).

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use tracing::{error, info};

use crate::registry::StateStore as _;

/// Where a framework keeps its state.
pub enum StateBackend {
    /// A JSON file, replaced atomically (one instance; `agora local`).
    Local(PathBuf),
    /// ZooKeeper, chunked and fenced on this instance's election znode.
    Zk {
        store: crate::zk_store::ZkStore,
        version: Option<u64>,
    },
}

impl StateBackend {
    /// The stored document, if any.
    ///
    /// # Errors
    /// A message naming the file or ZooKeeper and what failed.
    pub async fn load(&mut self) -> Result<Option<Vec<u8>>, String> {
        match self {
            StateBackend::Local(path) => match std::fs::read(&*path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("{}: {e}", path.display())),
            },
            StateBackend::Zk { store, version } => match store.load().await {
                Ok(Some(v)) => {
                    *version = Some(v.version);
                    Ok(Some(v.data))
                }
                Ok(None) => Ok(None),
                Err(e) => Err(format!("ZooKeeper: {e}")),
            },
        }
    }

    /// Replaces the document. A ZooKeeper conflict means another instance leads.
    ///
    /// # Errors
    /// A message saying what failed.
    pub async fn save(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        match self {
            StateBackend::Local(path) => {
                let tmp = path.with_extension("tmp");
                let write = || -> std::io::Result<()> {
                    use std::io::Write;
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    let mut f = std::fs::File::create(&tmp)?;
                    f.write_all(&bytes)?;
                    f.sync_all()?;
                    std::fs::rename(&tmp, &*path)
                };
                write().map_err(|e| format!("{}: {e}", path.display()))
            }
            StateBackend::Zk { store, version } => {
                let v = store
                    .store(bytes, *version)
                    .await
                    .map_err(|e| format!("ZooKeeper: {e}"))?;
                *version = Some(v);
                Ok(())
            }
        }
    }
}

/// Who leads, for a framework's HTTP layer: the actor's handle once this instance leads, and the
/// leader's address otherwise.
pub struct Leadership<H> {
    handle: OnceLock<H>,
    leader: RwLock<Option<String>>,
}

impl<H> Default for Leadership<H> {
    fn default() -> Self {
        Leadership {
            handle: OnceLock::new(),
            leader: RwLock::new(None),
        }
    }
}

impl<H> Leadership<H> {
    /// The actor's handle, when this instance leads.
    pub fn handle(&self) -> Option<&H> {
        self.handle.get()
    }

    /// Takes leadership.
    pub fn lead(&self, handle: H) {
        let _ = self.handle.set(handle);
    }

    /// Where the leader is (standby).
    pub fn leader(&self) -> Option<String> {
        self.leader.read().ok().and_then(|l| l.clone())
    }

    pub fn set_leader(&self, leader: Option<String>) {
        if let Ok(mut l) = self.leader.write() {
            *l = leader;
        }
    }
}

/// Joins the election at `zk` (`zk://hosts/path`) as `advertised`, then in the background waits
/// to lead, calls `lead` with a fenced ZooKeeper backend, and exits the process (for its
/// supervisor to restart it) if leadership is lost: two instances must never both act.
///
/// # Errors
/// A malformed URL (an unreachable ZooKeeper is waited for).
pub async fn elect<H, F, Fut>(
    zk: &str,
    session_timeout: Duration,
    advertised: &str,
    leadership: Arc<Leadership<H>>,
    lead: F,
) -> Result<tokio::task::JoinHandle<()>, String>
where
    H: Send + Sync + 'static,
    F: FnOnce(StateBackend) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let spec = agora_proto::detector::MasterSpec::parse(zk).map_err(|e| e.to_string())?;
    let agora_proto::detector::MasterSpec::ZooKeeper { servers, path } = spec else {
        return Err(format!("--zk '{zk}' must be a zk://host:port,…/path URL"));
    };
    let me = agora_proto::detector::MasterInfoJson {
        id: uuid::Uuid::new_v4().simple().to_string(),
        hostname: advertised.to_string(),
        address: advertised.to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
        start_time: crate::bookkeeping::Clock::system().wall,
    };
    Ok(tokio::spawn(async move {
        // An instance restarted while ZooKeeper is away waits for it (its API answers 503 "no
        // leader" meanwhile) rather than exiting and crash-looping under its supervisor.
        let election = crate::election::Election::join_when_reachable(
            &servers,
            &path,
            &me,
            session_timeout,
            Duration::from_secs(1),
        )
        .await;
        let l = leadership.clone();
        let set = move |addr: Option<String>| l.set_leader(addr);
        tokio::select! {
            r = election.wait_to_lead(&set) => {
                if let Err(e) = r {
                    error!(error = %e, "election failed: exiting for the supervisor to restart this instance");
                    std::process::exit(1);
                }
            }
            e = election.lost() => {
                error!(error = %e, "lost the ZooKeeper session: exiting");
                std::process::exit(1);
            }
        }
        info!(%path, "this instance leads");
        let store =
            crate::zk_store::ZkStore::new(election.client().clone(), &path, election.node_path());
        if let Err(e) = lead(StateBackend::Zk {
            store,
            version: None,
        })
        .await
        {
            error!(error = %e, "cannot lead: exiting");
            std::process::exit(1);
        }
        let e = election.lost().await;
        error!(error = %e, "lost leadership: exiting");
        std::process::exit(1);
    }))
}

/// Axum middleware for a framework's API: a standby instance sends every request to the leader
/// (307 keeps the method and body), or answers 503 while none is elected. `/ping` and `/health`
/// are answered by every instance.
pub async fn standby_redirect<H: Send + Sync + 'static>(
    axum::extract::State(leadership): axum::extract::State<Arc<Leadership<H>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = req.uri().path();
    if leadership.handle().is_some() || path == "/ping" || path == "/health" {
        return next.run(req).await;
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    match leadership.leader() {
        Some(leader) => (
            http::StatusCode::TEMPORARY_REDIRECT,
            // Scheme-relative: instances share their TLS flags, so the client's scheme is right.
            [(http::header::LOCATION, format!("//{leader}{target}"))],
            axum::Json(serde_json::json!({ "leader": leader })),
        )
            .into_response(),
        None => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                serde_json::json!({ "message": "no leader is elected yet", "leader": null }),
            ),
        )
            .into_response(),
    }
}

/// The configuration every framework process (`agora services`, `agora batch`) takes.
#[derive(Debug, Clone)]
pub struct FrameworkConfig {
    /// `--master`: `host:port` or `zk://…`.
    pub master: String,
    /// `--ip`, `--port`: where the API listens.
    pub bind: std::net::SocketAddr,
    /// `--work-dir`: the state (without `zk`).
    pub work_dir: PathBuf,
    /// `--role`.
    pub role: String,
    /// `--framework-name`.
    pub framework_name: String,
    /// How long the master keeps the framework's tasks while it is away.
    pub failover_timeout: Duration,
    /// `--zk zk://…/path`: state in ZooKeeper and one leader among instances (the others
    /// redirect or proxy to it). `None`: state in `work_dir`, one instance.
    pub zk: Option<String>,
    /// `--zk-session-timeout`: how long ZooKeeper waits for a silent instance before another one
    /// takes over (and how long a leader cut off from ZooKeeper may keep acting).
    pub zk_session_timeout: Duration,
    /// `--principal` and the secret from `--secret-file`, for masters that require credentials.
    pub credential: Option<(String, String)>,
    /// `--advertise`: the `host:port` standbys send clients to (default: the bound address).
    pub advertise: Option<String>,
    /// `--api-token-file`: the API requires `Authorization: Bearer <token>`. `None`: open.
    pub api_token: Option<agora_proto::http_auth::ApiToken>,
    /// `--tls-cert`/`--tls-key`: TLS on the API port; `--tls-ca`: TLS to the master, verified
    /// against that CA.
    pub tls: agora_proto::tls::TlsFiles,
}

/// Why a framework's API could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ApiSetupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// A TLS flag's value is unusable; the message names the flag.
    #[error("{0}")]
    Tls(String),
}

/// A framework's API port, bound but not serving yet: its address, the address standbys send
/// clients to, and its TLS material (checked at start, not at the first connection).
pub struct BoundApi {
    pub address: std::net::SocketAddr,
    /// `host:port` as clients and other instances reach it.
    pub advertised: String,
    /// `https` when the port speaks TLS, else `http`.
    pub scheme: &'static str,
    /// TLS to the master (and to other instances), when `--tls-ca` is given.
    pub client_tls: Option<agora_proto::tls::ClientTls>,
    listener: agora_proto::tls::Listener,
}

impl BoundApi {
    /// Binds `config.bind` and loads the TLS files.
    ///
    /// # Errors
    /// [`ApiSetupError`] naming the address or the flag.
    pub async fn bind(config: &FrameworkConfig) -> Result<BoundApi, ApiSetupError> {
        let tls_error = |e: agora_proto::tls::TlsError| ApiSetupError::Tls(e.to_string());
        let server_tls = config.tls.server_config().map_err(tls_error)?;
        let client_tls = config.tls.client().map_err(tls_error)?;
        let bind_error = |source| ApiSetupError::Bind {
            addr: config.bind.to_string(),
            source,
        };
        let tcp = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(bind_error)?;
        let address = tcp.local_addr().map_err(bind_error)?;
        let advertised = config.advertise.clone().unwrap_or_else(|| {
            if address.ip().is_unspecified() {
                format!("127.0.0.1:{}", address.port())
            } else {
                address.to_string()
            }
        });
        let scheme = agora_proto::tls::scheme(server_tls.is_some());
        let listener = agora_proto::tls::Listener::new(tcp, server_tls).map_err(bind_error)?;
        Ok(BoundApi {
            address,
            advertised,
            scheme,
            client_tls,
            listener,
        })
    }

    /// Serves `router` until `stop` turns true.
    pub fn serve(
        self,
        router: axum::Router,
        mut stop: tokio::sync::watch::Receiver<bool>,
        what: &'static str,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let serve = agora_proto::tls::serve(self.listener, router, async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "{what} API stopped");
            }
        })
    }
}

/// A request body that could not be read: where (a JSON pointer) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct UnreadableField {
    /// `/cpus`, `/1/cpus`, a missing `/id`; `/` for a syntax error.
    pub pointer: String,
    pub message: String,
}

/// Reads a JSON body into `T`, locating a type error at its field, where plain serde_json only
/// gives a line and column.
///
/// # Errors
/// The first field that cannot be read.
pub fn read_json<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, UnreadableField> {
    let mut de = serde_json::Deserializer::from_slice(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| unreadable(e.path(), e.inner()))
}

/// [`read_json`] for a document already parsed (a PATCH merged into the stored one).
///
/// # Errors
/// As [`read_json`].
pub fn read_json_value<T: serde::de::DeserializeOwned>(
    json: serde_json::Value,
) -> Result<T, UnreadableField> {
    serde_path_to_error::deserialize(json).map_err(|e| unreadable(e.path(), e.inner()))
}

fn unreadable(path: &serde_path_to_error::Path, error: &serde_json::Error) -> UnreadableField {
    use serde_path_to_error::Segment;
    let message = error.to_string();
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Map { key } => pointer.push_str(&format!("/{key}")),
            Segment::Enum { variant } => pointer.push_str(&format!("/{variant}")),
            Segment::Unknown => pointer.push_str("/?"),
        }
    }
    // serde reports a missing field at the object that lacks it; name the field itself.
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        pointer.push('/');
        pointer.push_str(name);
    }
    if pointer.is_empty() {
        pointer.push('/');
    }
    UnreadableField { pointer, message }
}
