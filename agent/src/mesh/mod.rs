//! The routing mesh: on every agent, a listener on the agent's address for each service port of
//! the endpoint table, relaying to the service's endpoints anywhere in the cluster.
//!
//! ```text
//!  client ──▶ agent:<service port> ──TCP mode: one endpoint per connection (copy_bidirectional)──▶ task
//!                                  └─HTTP mode: hyper, one endpoint per request (pooled client)─▶ task
//!  client ──▶ agent:<--mesh-http-port> ──Host header → HAPROXY_{n}_VHOST → that port's route─────▶ task
//! ```
//! Pure core in [`table`] (routes from the table, listener plan, round-robin or least-connections
//! balancer per `HAPROXY_{n}_BALANCE`, with ejections); this module is the tokio shell. Listeners
//! come and go with the table without touching other listeners or open connections: an endpoint
//! leaving the table gets no new connection or request, connections already relayed to it run
//! until they end.
//!
//! Runtime: by default ([`MeshConfig::threads`] = 1) the mesh runs on a current-thread tokio
//! runtime on a thread of its own, so that a request's hand-offs (client connection → pooled
//! upstream connection → back) are queue pushes on one event loop, not wake-ups across the
//! agent's worker threads (HTTP mode: 80 % instead of 62 % of direct throughput, BENCHMARKS.md).
//!
//! Retries: a connect that is refused, reset or times out ([`MeshConfig::connect_timeout`]) ejects
//! the endpoint and is retried on another one, up to [`MAX_ATTEMPTS`] endpoints, before the client
//! sees anything (TCP: the connection is closed; HTTP: 503). In HTTP mode a request is retried only
//! when it has no body (the body is streamed, not buffered): on a connect failure whatever its
//! method, on another upstream error (connection closed before a response) only when its method is
//! idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE). WebSocket/`Upgrade` is not relayed in HTTP
//! mode (use TCP mode for such apps).
#![forbid(unsafe_code)]

pub mod table;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::endpoints::{EndpointTable, Endpoints, ServiceKey};
use table::{Balancer, Mode, Upstream};

/// Most endpoints one connection or request is tried on.
pub const MAX_ATTEMPTS: usize = 3;
/// Default most connections open at once per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Highest `--mesh-max-connections` accepted.
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;
/// Longest `--mesh-connect-timeout` accepted.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes of a request head (request line and headers) in HTTP mode.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most headers of a request in HTTP mode.
pub const MAX_HEADERS: usize = 100;
/// Time a client has to send a request head in HTTP mode.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `--mesh-threads`: the mesh's own event loop on one thread of its own.
pub const DEFAULT_THREADS: usize = 1;
/// Highest `--mesh-threads` accepted.
pub const MAX_THREADS: usize = 256;

/// `--mesh*` settings.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// The agent's address (`--ip`): listeners bind here.
    pub ip: IpAddr,
    /// `--mesh-bridge-ip`: where bridge-network containers reach the mesh (the Docker bridge's
    /// gateway) when `ip` is one they cannot reach (loopback); their host aliases point here.
    pub bridge_ip: Option<IpAddr>,
    /// Every listener also binds `bridge_ip` (`--mesh-bridge-ip`; on `agora local` its first
    /// agent only: every agent's mesh serves the same routes). A listener that cannot bind there
    /// is logged and keeps `ip`.
    pub listen_on_bridge_ip: bool,
    /// `--mesh-http-port`: virtual hosts by `Host` header (0: off).
    pub http_port: u16,
    /// `--mesh-max-connections`: per listener; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// `--mesh-connect-timeout`: a connect to an endpoint taking longer is a failure (retried).
    pub connect_timeout: Duration,
    /// How long an endpoint that refused stays out at most (the master's next update for its
    /// service listing it brings it back sooner).
    pub eject_for: Duration,
    /// `--mesh-threads`: threads of the mesh's own runtime (1: one event loop, no hand-offs
    /// between worker threads); 0 runs the mesh on the agent's runtime.
    pub threads: usize,
}

impl MeshConfig {
    /// The second address every listener binds, when this mesh listens on the bridge address.
    pub fn bridge_listen(&self) -> Option<IpAddr> {
        self.bridge_ip.filter(|_| self.listen_on_bridge_ip)
    }

    pub fn new(ip: IpAddr) -> Self {
        MeshConfig {
            ip,
            bridge_ip: None,
            listen_on_bridge_ip: false,
            http_port: 80,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connect_timeout: Duration::from_secs(2),
            eject_for: Duration::from_secs(10),
            threads: DEFAULT_THREADS,
        }
    }
}

/// Errors starting the mesh.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("mesh: cannot listen on {addr} (--mesh-http-port): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("--mesh-max-connections must be between 1 and {MAX_MAX_CONNECTIONS}, got {0}")]
    MaxConnections(usize),
    #[error("--mesh-connect-timeout must be more than 0 and at most 60 seconds, got {0:?}")]
    ConnectTimeout(Duration),
    #[error("--mesh-threads must be at most {MAX_THREADS}, got {0}")]
    Threads(usize),
    #[error("mesh: cannot start its runtime: {0}")]
    Runtime(#[source] io::Error),
}

/// Counters of one service port (or of the virtual-host port).
#[derive(Debug, Default)]
pub struct PortMetrics {
    pub connections: AtomicU64,
    pub active: AtomicU64,
    pub requests: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub errors: AtomicU64,
    pub retries: AtomicU64,
    pub ejections: AtomicU64,
}

/// One service port being served.
struct Route {
    port: u16,
    service: ServiceKey,
    mode: Mode,
    balancer: Mutex<Balancer>,
    metrics: Arc<PortMetrics>,
}

impl Route {
    fn pick(&self, tried: &[Upstream]) -> Option<table::Pick> {
        self.balancer
            .lock()
            .ok()
            .and_then(|mut b| b.pick(Instant::now(), tried))
    }

    fn failed(&self, u: &Upstream) {
        let newly = self
            .balancer
            .lock()
            .map(|mut b| b.eject(u, Instant::now()))
            .unwrap_or(false);
        if newly {
            self.metrics.ejections.fetch_add(1, Ordering::Relaxed);
            info!(port = self.port, service = %self.service.1, task = %u.task_id, upstream = %u.authority(), "mesh: endpoint ejected");
        }
    }

    fn succeeded(&self, u: &Upstream) {
        if let Ok(mut b) = self.balancer.lock() {
            b.succeeded(u);
        }
    }

    fn track(&self, u: &Upstream, opened: bool) {
        if let Ok(mut b) = self.balancer.lock() {
            b.track(u, opened);
        }
    }

    /// Counts a connection/request to `u` (least connections) until the guard is dropped.
    fn hold(self: &Arc<Self>, u: &Upstream) -> Held {
        self.track(u, true);
        Held {
            route: self.clone(),
            upstream: u.clone(),
        }
    }
}

/// An open connection/request counted on its endpoint (see [`Route::hold`]).
struct Held {
    route: Arc<Route>,
    upstream: Upstream,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.route.track(&self.upstream, false);
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

/// State shared by the listeners.
struct Shared {
    config: MeshConfig,
    routes: RwLock<BTreeMap<u16, Arc<Route>>>,
    vhosts: RwLock<HashMap<String, Arc<Route>>>,
    vhost_metrics: Arc<PortMetrics>,
    client: Client<HttpConnector, Body>,
}

/// A running mesh: renders its metrics; [`Mesh::stop`] stops it (so does dropping every clone when
/// it runs on its own runtime, [`MeshConfig::threads`] > 0).
#[derive(Clone)]
pub struct Mesh {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    http_addr: Option<SocketAddr>,
}

impl Mesh {
    /// Starts the mesh: the virtual-host listener now, service-port listeners as the table asks.
    /// With [`MeshConfig::threads`] > 0 the mesh runs on a runtime of its own, which ends (with
    /// its open connections) at [`Mesh::stop`] or when every clone of the `Mesh` is dropped.
    ///
    /// # Errors
    /// [`MeshError::Bind`] when `--mesh-http-port` cannot be bound.
    pub async fn start(config: MeshConfig, endpoints: &Endpoints) -> Result<Mesh, MeshError> {
        if config.max_connections == 0 || config.max_connections > MAX_MAX_CONNECTIONS {
            return Err(MeshError::MaxConnections(config.max_connections));
        }
        if config.connect_timeout.is_zero() || config.connect_timeout > MAX_CONNECT_TIMEOUT {
            return Err(MeshError::ConnectTimeout(config.connect_timeout));
        }
        if config.threads > MAX_THREADS {
            return Err(MeshError::Threads(config.threads));
        }
        let (stop, stop_rx) = watch::channel(false);
        let runtime = match config.threads {
            0 => tokio::runtime::Handle::current(),
            n => own_runtime(n, stop_rx.clone())?,
        };
        // Sockets belong to the runtime they are made on: the listeners are bound on the mesh's.
        let (shared, http_addr) = runtime
            .spawn(start_on(config, endpoints.subscribe(), stop_rx))
            .await
            .map_err(|e| MeshError::Runtime(io::Error::other(e.to_string())))??;
        Ok(Mesh {
            shared,
            stop,
            http_addr,
        })
    }

    /// Where virtual hosts are served, when on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Stops every listener (open connections end with the runtime).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// The ports listened on now.
    pub fn ports(&self) -> Vec<u16> {
        self.shared
            .routes
            .read()
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Per-service-port metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let routes: Vec<Arc<Route>> = self
            .shared
            .routes
            .read()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default();
        let now = Instant::now();
        let mut out = String::new();
        let rows: Vec<Row<'_>> = routes
            .iter()
            .map(|r| {
                let (n, ej) = r
                    .balancer
                    .lock()
                    .map(|b| (b.len(), b.ejected(now)))
                    .unwrap_or((0, 0));
                (
                    format!(
                        "framework=\"{}\",service=\"{}\",port=\"{}\",mode=\"{}\"",
                        escape(&r.service.0),
                        escape(&r.service.1),
                        r.port,
                        if r.mode == Mode::Http { "http" } else { "tcp" }
                    ),
                    &r.metrics,
                    Some((n, ej)),
                )
            })
            .collect();
        let vhost_row = (
            format!(
                "framework=\"\",service=\"\",port=\"{}\",mode=\"vhost\"",
                self.http_addr.map_or(0, |a| a.port())
            ),
            &self.shared.vhost_metrics,
            None,
        );
        let all: Vec<&Row<'_>> = rows
            .iter()
            .chain(self.http_addr.is_some().then_some(&vhost_row))
            .collect();
        type Get = fn(&PortMetrics) -> &AtomicU64;
        let counters: [(&str, &str, &str, Get); 8] = [
            (
                "connections_total",
                "Client connections accepted",
                "counter",
                |m| &m.connections,
            ),
            (
                "connections_active",
                "Client connections open",
                "gauge",
                |m| &m.active,
            ),
            (
                "requests_total",
                "HTTP requests relayed (HTTP mode)",
                "counter",
                |m| &m.requests,
            ),
            (
                "bytes_in_total",
                "Bytes received from clients",
                "counter",
                |m| &m.bytes_in,
            ),
            ("bytes_out_total", "Bytes sent to clients", "counter", |m| {
                &m.bytes_out
            }),
            (
                "errors_total",
                "Connections or requests that reached no endpoint or failed upstream",
                "counter",
                |m| &m.errors,
            ),
            (
                "retries_total",
                "Connects retried on another endpoint",
                "counter",
                |m| &m.retries,
            ),
            (
                "ejections_total",
                "Endpoints ejected after a failed connect",
                "counter",
                |m| &m.ejections,
            ),
        ];
        for (name, help, kind, get) in counters {
            let _ = writeln!(out, "# HELP agora_agent_mesh_{name} {help}");
            let _ = writeln!(out, "# TYPE agora_agent_mesh_{name} {kind}");
            for (labels, m, _) in &all {
                let _ = writeln!(
                    out,
                    "agora_agent_mesh_{name}{{{labels}}} {}",
                    get(m).load(Ordering::Relaxed)
                );
            }
        }
        for (name, help, which) in [
            ("endpoints", "Endpoints of the service port", 0),
            ("endpoints_ejected", "Endpoints ejected now", 1),
        ] {
            let _ = writeln!(out, "# HELP agora_agent_mesh_{name} {help}");
            let _ = writeln!(out, "# TYPE agora_agent_mesh_{name} gauge");
            for (labels, _, counts) in &rows {
                if let Some((n, ej)) = counts {
                    let v = if which == 0 { n } else { ej };
                    let _ = writeln!(out, "agora_agent_mesh_{name}{{{labels}}} {v}");
                }
            }
        }
        out
    }
}

/// One row of [`Mesh::render`]: labels, counters, (endpoints, ejected) of a service port.
type Row<'a> = (String, &'a Arc<PortMetrics>, Option<(usize, usize)>);

/// A Prometheus label value.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A runtime of `threads` threads for the mesh, running until `stop` says so (or its sender goes).
fn own_runtime(
    threads: usize,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::runtime::Handle, MeshError> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let rt = builder
        .enable_all()
        .thread_name("agora-mesh")
        .build()
        .map_err(MeshError::Runtime)?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("agora-mesh".into())
        .spawn(move || {
            rt.block_on(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            rt.shutdown_background();
        })
        .map_err(MeshError::Runtime)?;
    Ok(handle)
}

/// The mesh's start on the runtime it runs on.
async fn start_on(
    config: MeshConfig,
    table: watch::Receiver<Arc<EndpointTable>>,
    stop_rx: watch::Receiver<bool>,
) -> Result<(Arc<Shared>, Option<SocketAddr>), MeshError> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.connect_timeout));
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build(connector);
    let shared = Arc::new(Shared {
        config: config.clone(),
        routes: RwLock::new(BTreeMap::new()),
        vhosts: RwLock::new(HashMap::new()),
        vhost_metrics: Arc::new(PortMetrics::default()),
        client,
    });
    let mut http_addr = None;
    if config.http_port != 0 {
        let addr = SocketAddr::new(config.ip, config.http_port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| MeshError::Bind { addr, source })?;
        http_addr = listener.local_addr().ok();
        let metrics = shared.vhost_metrics.clone();
        spawn_listener(listener, shared.clone(), Serve::ByHost, metrics, &stop_rx);
        info!(addr = ?http_addr, "mesh: virtual hosts served");
        if let Some(also) = config.bridge_listen() {
            let addr = SocketAddr::new(also, http_addr.map_or(config.http_port, |a| a.port()));
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    let metrics = shared.vhost_metrics.clone();
                    spawn_listener(listener, shared.clone(), Serve::ByHost, metrics, &stop_rx);
                    info!(%addr, "mesh: virtual hosts also served on the bridge address");
                }
                Err(e) => {
                    warn!(%addr, error = %e, "mesh: cannot serve virtual hosts on the bridge address (--mesh-bridge-ip)");
                }
            }
        }
    }
    tokio::spawn(watch_table(shared.clone(), table, stop_rx));
    Ok((shared, http_addr))
}

/// Follows the endpoint table until stopped.
async fn watch_table(
    shared: Arc<Shared>,
    mut table: watch::Receiver<Arc<EndpointTable>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut listeners: BTreeMap<u16, Vec<JoinHandle<()>>> = BTreeMap::new();
    loop {
        let snapshot = table.borrow_and_update().clone();
        apply(&shared, &snapshot, &mut listeners, &stop).await;
        tokio::select! {
            r = table.changed() => if r.is_err() { break },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    for l in listeners.into_values().flatten() {
        l.abort();
    }
}

/// Brings the listeners in line with `snapshot`.
async fn apply(
    shared: &Arc<Shared>,
    snapshot: &EndpointTable,
    listeners: &mut BTreeMap<u16, Vec<JoinHandle<()>>>,
    stop: &watch::Receiver<bool>,
) {
    let (wanted, conflicts) = table::routes(snapshot);
    for (port, svc) in conflicts {
        debug!(port, framework = %svc.0, service = %svc.1, "mesh: service port already taken by another service; left out");
    }
    let running: BTreeMap<u16, (ServiceKey, Mode)> = shared
        .routes
        .read()
        .map(|r| {
            r.iter()
                .map(|(p, r)| (*p, (r.service.clone(), r.mode)))
                .collect()
        })
        .unwrap_or_default();
    let plan = table::plan(&running, &wanted);
    for port in &plan.stop {
        for l in listeners.remove(port).into_iter().flatten() {
            l.abort();
        }
        if let Ok(mut r) = shared.routes.write() {
            r.remove(port);
        }
        info!(
            port,
            "mesh: listener stopped (open connections keep running)"
        );
    }
    for port in &plan.update {
        if let (Some(spec), Ok(routes)) = (wanted.get(port), shared.routes.read()) {
            if let Some(route) = routes.get(port) {
                if let Ok(mut b) = route.balancer.lock() {
                    b.update(spec);
                }
            }
        }
    }
    for port in &plan.start {
        let Some(spec) = wanted.get(port) else {
            continue;
        };
        let addr = SocketAddr::new(shared.config.ip, *port);
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                warn!(%addr, service = %spec.service.1, error = %e, "mesh: cannot listen on the service port (retried at the next table change)");
                continue;
            }
        };
        let route = Arc::new(Route {
            port: *port,
            service: spec.service.clone(),
            mode: spec.mode,
            balancer: Mutex::new(Balancer::new(spec, shared.config.eject_for)),
            metrics: Arc::new(PortMetrics::default()),
        });
        if let Ok(mut r) = shared.routes.write() {
            r.insert(*port, route.clone());
        }
        let serve = match spec.mode {
            Mode::Tcp => Serve::Tcp(route.clone()),
            Mode::Http => Serve::Http(route.clone()),
        };
        let mut bound = vec![listener];
        if let Some(also) = shared.config.bridge_listen() {
            let addr = SocketAddr::new(also, *port);
            match TcpListener::bind(addr).await {
                Ok(l) => bound.push(l),
                Err(e) => {
                    warn!(%addr, service = %spec.service.1, error = %e, "mesh: cannot listen on the service port at the bridge address (--mesh-bridge-ip); bridge containers will not reach it");
                }
            }
        }
        let handles = bound
            .into_iter()
            .map(|listener| {
                let metrics = route.metrics.clone();
                spawn_listener(listener, shared.clone(), serve.clone(), metrics, stop)
            })
            .collect();
        listeners.insert(*port, handles);
        info!(%addr, bridge = ?shared.config.bridge_listen(), framework = %spec.service.0, service = %spec.service.1, mode = ?spec.mode, endpoints = spec.upstreams.len(), "mesh: listening");
    }
    // Virtual hosts of every HTTP route.
    let mut vhosts = HashMap::new();
    if let Ok(routes) = shared.routes.read() {
        for (port, r) in routes.iter() {
            if let Some(spec) = wanted.get(port) {
                for v in &spec.vhosts {
                    vhosts.entry(v.clone()).or_insert_with(|| r.clone());
                }
            }
        }
    }
    if let Ok(mut v) = shared.vhosts.write() {
        *v = vhosts;
    }
}

/// What a listener serves.
#[derive(Clone)]
enum Serve {
    Tcp(Arc<Route>),
    Http(Arc<Route>),
    ByHost,
}

/// Serves `listener` until the mesh stops or the handle is aborted.
fn spawn_listener(
    listener: TcpListener,
    shared: Arc<Shared>,
    serve: Serve,
    metrics: Arc<PortMetrics>,
    stop: &watch::Receiver<bool>,
) -> JoinHandle<()> {
    let mut stop = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = accept_loop(listener, shared, serve, metrics) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    })
}

/// Accepts connections, at most `max_connections` open at once (then the kernel's backlog holds
/// further clients), each in a task of its own (so stopping the listener leaves them running).
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    serve: Serve,
    metrics: Arc<PortMetrics>,
) {
    let limit = Arc::new(Semaphore::new(shared.config.max_connections));
    let local_port = listener.local_addr().map_or(0, |a| a.port());
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                debug!(error = %e, "mesh: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        metrics.connections.fetch_add(1, Ordering::Relaxed);
        let active = ActiveGuard::new(metrics.clone());
        let io = Counted {
            inner: stream,
            metrics: metrics.clone(),
        };
        let shared = shared.clone();
        let serve = serve.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _active = active;
            match serve {
                Serve::Tcp(route) => relay(io, route, &shared).await,
                Serve::Http(route) => serve_http(io, peer, local_port, shared, Some(route)).await,
                Serve::ByHost => serve_http(io, peer, local_port, shared, None).await,
            }
        });
    }
}

/// Counts a connection open until dropped.
struct ActiveGuard(Arc<PortMetrics>);

impl ActiveGuard {
    fn new(m: Arc<PortMetrics>) -> Self {
        m.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(m)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client connection counting its bytes.
struct Counted {
    inner: TcpStream,
    metrics: Arc<PortMetrics>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.metrics.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.metrics
                .bytes_out
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn connect(u: &Upstream, timeout: Duration) -> io::Result<TcpStream> {
    let attempt = async {
        match u.ip {
            Some(ip) => TcpStream::connect(SocketAddr::new(ip, u.port)).await,
            None => TcpStream::connect((u.host.as_str(), u.port)).await,
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// TCP mode: one endpoint for the whole connection.
async fn relay(mut client: Counted, route: Arc<Route>, shared: &Shared) {
    let mut tried: Vec<Upstream> = Vec::new();
    let (held, mut server) = loop {
        let Some(pick) = route.pick(&tried) else {
            route.metrics.errors.fetch_add(1, Ordering::Relaxed);
            debug!(port = route.port, "mesh: no endpoint left for a connection");
            return;
        };
        // Counted from the pick, so that connections opened at once spread (least connections).
        let held = route.hold(&pick.upstream);
        match connect(&pick.upstream, shared.config.connect_timeout).await {
            Ok(s) => {
                route.succeeded(&pick.upstream);
                break (held, s);
            }
            Err(e) => {
                debug!(port = route.port, upstream = %pick.upstream.authority(), error = %e, "mesh: connect failed");
                route.failed(&pick.upstream);
                tried.push(pick.upstream);
                if tried.len() >= MAX_ATTEMPTS {
                    route.metrics.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                route.metrics.retries.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let _ = server.set_nodelay(true);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
        debug!(port = route.port, error = %e, "mesh: relay ended with an error");
    }
    drop(held);
}

/// HTTP mode (a service port's route, or virtual hosts by `Host` when `route` is `None`).
async fn serve_http(
    io: Counted,
    peer: SocketAddr,
    local_port: u16,
    shared: Arc<Shared>,
    route: Option<Arc<Route>>,
) {
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        let route = route.clone();
        async move { Ok::<_, Infallible>(proxy(req, peer, local_port, &shared, route).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    if let Err(e) = builder.serve_connection(TokioIo::new(io), svc).await {
        debug!(error = %e, "mesh: HTTP connection ended with an error");
    }
}

fn full(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers for the upstream: hop-by-hop ones removed, `X-Forwarded-*` added as haproxy's
/// `option forwardfor` and marathon-lb's frontends do.
fn forwarded_headers(mut h: HeaderMap, peer: SocketAddr, local_port: u16) -> HeaderMap {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        h.remove(n);
    }
    let client = peer.ip().to_canonical().to_string();
    if let Ok(v) = HeaderValue::from_str(&client) {
        h.append(HeaderName::from_static("x-forwarded-for"), v);
    }
    h.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    h.insert(
        HeaderName::from_static("x-forwarded-port"),
        HeaderValue::from(local_port),
    );
    if let Some(host) = h.get(header::HOST).cloned() {
        h.entry(HeaderName::from_static("x-forwarded-host"))
            .or_insert(host);
    }
    h
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// One request: picks an endpoint (retrying as the module doc says) and relays the response.
async fn proxy(
    req: Request<Incoming>,
    peer: SocketAddr,
    local_port: u16,
    shared: &Shared,
    route: Option<Arc<Route>>,
) -> Response<Body> {
    let route = match route {
        Some(r) => r,
        None => {
            shared
                .vhost_metrics
                .requests
                .fetch_add(1, Ordering::Relaxed);
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| req.uri().host())
                .and_then(table::host_of);
            let found = host.as_deref().and_then(|h| {
                shared
                    .vhosts
                    .read()
                    .ok()
                    .and_then(|v| table::match_vhost(&v, h).cloned())
            });
            match found {
                Some(r) => r,
                None => {
                    shared.vhost_metrics.errors.fetch_add(1, Ordering::Relaxed);
                    return full(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "503 Service Unavailable\nNo server is available to handle this request.\n",
                    );
                }
            }
        }
    };
    route.metrics.requests.fetch_add(1, Ordering::Relaxed);
    if req.headers().contains_key(header::UPGRADE) {
        route.metrics.errors.fetch_add(1, Ordering::Relaxed);
        return full(
            StatusCode::NOT_IMPLEMENTED,
            "501 Not Implemented\nUpgrade is not relayed in HTTP mode.\n",
        );
    }
    let (parts, body) = req.into_parts();
    let replayable = body.is_end_stream();
    let headers = forwarded_headers(parts.headers, peer, local_port);
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut body = Some(body);
    let mut tried: Vec<Upstream> = Vec::new();
    loop {
        let Some(pick) = route.pick(&tried) else {
            route.metrics.errors.fetch_add(1, Ordering::Relaxed);
            return full(
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Unavailable\nNo server is available to handle this request.\n",
            );
        };
        let uri = match format!("http://{}{}", pick.upstream.authority(), path).parse::<http::Uri>()
        {
            Ok(u) => u,
            Err(_) => {
                route.metrics.errors.fetch_add(1, Ordering::Relaxed);
                return full(StatusCode::BAD_REQUEST, "400 Bad Request\n");
            }
        };
        let b: Body = match body.take() {
            Some(b) if !replayable => b.boxed(),
            _ => Empty::<Bytes>::new()
                .map_err(|never: Infallible| match never {})
                .boxed(),
        };
        let held = route.hold(&pick.upstream);
        let mut up = Request::new(b);
        *up.method_mut() = parts.method.clone();
        *up.uri_mut() = uri;
        *up.headers_mut() = headers.clone();
        match shared.client.request(up).await {
            Ok(resp) => {
                route.succeeded(&pick.upstream);
                let (mut rp, rb) = resp.into_parts();
                for n in HOP_BY_HOP.iter() {
                    rp.headers.remove(n);
                }
                // The request counts on its endpoint until its response body is done (or dropped).
                let rb = rb.map_frame(move |f| {
                    let _counted = &held;
                    f
                });
                return Response::from_parts(rp, rb.boxed());
            }
            Err(e) => {
                let connect = e.is_connect();
                debug!(port = route.port, upstream = %pick.upstream.authority(), error = %e, connect, "mesh: upstream request failed");
                if connect {
                    route.failed(&pick.upstream);
                }
                tried.push(pick.upstream);
                let retry = replayable
                    && (connect || idempotent(&parts.method))
                    && tried.len() < MAX_ATTEMPTS;
                if !retry {
                    route.metrics.errors.fetch_add(1, Ordering::Relaxed);
                    return if connect {
                        full(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "503 Service Unavailable\nNo server is available to handle this request.\n",
                        )
                    } else {
                        full(StatusCode::BAD_GATEWAY, "502 Bad Gateway\n")
                    };
                }
                route.metrics.retries.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::v1;
    use agora_proto::v1::master_message::EndpointUpdate;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A real TCP server answering each connection with `name`, then closing.
    async fn server(name: &'static str) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(name.as_bytes()).await;
            }
        });
        port
    }

    fn update(ports: &[u16], service_port: u32) -> EndpointUpdate {
        EndpointUpdate {
            full: true,
            ack_seq: 0,
            services: vec![v1::ServiceEndpoints {
                framework: "services".into(),
                name: "/s".into(),
                endpoints: ports
                    .iter()
                    .enumerate()
                    .map(|(i, p)| v1::Endpoint {
                        task_id: format!("t{i}"),
                        ip: "127.0.0.1".into(),
                        port: u32::from(*p),
                        service_port,
                        protocol: "tcp".into(),
                        ..Default::default()
                    })
                    .collect(),
                labels: Default::default(),
            }],
        }
    }

    /// A port nothing listens on (bound once, then let go).
    async fn unused_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .await
            .and_then(|l| l.local_addr())
            .expect("addr")
            .port()
    }

    /// Waits (at most 5 s) until the mesh listens on `port` only.
    async fn until_listening(mesh: &Mesh, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while mesh.ports() != [port] {
            assert!(Instant::now() < deadline, "listener never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// What the mesh relays from `port`, bounded in time so that a stuck relay fails the test
    /// instead of hanging it.
    async fn read_from(port: u16) -> io::Result<String> {
        read_at("127.0.0.1", port).await
    }

    async fn read_at(ip: &str, port: u16) -> io::Result<String> {
        let read = async {
            let mut s = TcpStream::connect((ip, port)).await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok(out)
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer within 10 s"))?
    }

    #[tokio::test]
    async fn tcp_mode_retries_past_a_refusing_endpoint_and_follows_the_table() {
        // On the caller's runtime, on a thread of its own, on two threads of its own.
        for threads in [0, 1, 2] {
            tcp_mode_case(threads).await;
        }
    }

    #[tokio::test]
    async fn listeners_also_bind_the_bridge_address_and_go_with_the_service() {
        let a = server("a").await;
        let sp = unused_port().await;
        let endpoints = Endpoints::new();
        let mut config = MeshConfig::new("127.0.0.1".parse().expect("ip"));
        config.http_port = 0;
        config.bridge_ip = Some("127.0.0.9".parse().expect("ip"));
        config.listen_on_bridge_ip = true;
        let mesh = Mesh::start(config, &endpoints).await.expect("start");
        endpoints.apply(update(&[a], u32::from(sp)));
        until_listening(&mesh, sp).await;
        for ip in ["127.0.0.1", "127.0.0.9"] {
            assert_eq!(read_at(ip, sp).await.expect(ip), "a", "through {ip}");
        }
        endpoints.apply(update(&[], u32::from(sp)));
        for ip in ["127.0.0.1", "127.0.0.9"] {
            let deadline = Instant::now() + Duration::from_secs(5);
            while read_at(ip, sp).await.is_ok() {
                assert!(Instant::now() < deadline, "listener still there on {ip}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        mesh.stop();
    }

    #[tokio::test]
    async fn too_many_threads_are_refused() {
        let mut config = MeshConfig::new("127.0.0.1".parse().expect("ip"));
        config.threads = MAX_THREADS + 1;
        let e = Mesh::start(config, &Endpoints::new()).await.err();
        assert!(
            e.as_ref()
                .is_some_and(|e| e.to_string().contains("--mesh-threads")),
            "{e:?}"
        );
    }

    async fn tcp_mode_case(threads: usize) {
        let a = server("a").await;
        // A port bound but never listened on, for the whole case: connects are refused, and no
        // other socket of the suite (the mesh's own listener included) can get that port.
        let reserved = tokio::net::TcpSocket::new_v4().expect("socket");
        reserved
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let dead = reserved.local_addr().expect("addr").port();
        let sp = unused_port().await;
        let endpoints = Endpoints::new();
        let mut config = MeshConfig::new("127.0.0.1".parse().expect("ip"));
        config.http_port = 0;
        config.threads = threads;
        let mesh = Mesh::start(config, &endpoints).await.expect("start");
        endpoints.apply(update(&[dead, a], u32::from(sp)));
        until_listening(&mesh, sp).await;
        for _ in 0..4 {
            assert_eq!(read_from(sp).await.expect("relayed"), "a");
        }
        let text = mesh.render();
        let value = |name: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "agora_agent_mesh_{name}{{framework=\"services\",service=\"/s\""
                    ))
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        assert_eq!(value("ejections_total"), Some(1), "{text}");
        assert_eq!(value("endpoints_ejected"), Some(1), "{text}");
        assert_eq!(value("endpoints"), Some(2), "{text}");
        assert_eq!(value("connections_total"), Some(4), "{text}");
        assert_eq!(value("bytes_out_total"), Some(4), "{text}");
        // The service leaves the table: the listener goes, the port refuses.
        endpoints.apply(update(&[], u32::from(sp)));
        let deadline = Instant::now() + Duration::from_secs(5);
        while read_from(sp).await.is_ok() {
            assert!(Instant::now() < deadline, "listener still there");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(mesh.ports().is_empty());
        mesh.stop();
        drop(reserved);
    }

    #[test]
    fn forwarded_headers_drop_hop_by_hop_and_add_x_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("web.example.com"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let peer: SocketAddr = "192.0.2.7:5555".parse().expect("addr");
        let out = forwarded_headers(h, peer, 10000);
        assert!(out.get(header::CONNECTION).is_none() && out.get("x-secret").is_none());
        let xff: Vec<&str> = out
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(xff, ["10.0.0.1", "192.0.2.7"]);
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["x-forwarded-port"], "10000");
        assert_eq!(out["x-forwarded-host"], "web.example.com");
    }
}
