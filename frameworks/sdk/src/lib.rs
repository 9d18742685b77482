//! The scheduler SDK: what a framework written in Rust uses to talk to Agora.
//!
//! ```text
//!  your code ◀── next_event() ── driver task ◀── Subscribe stream ── leading master
//!      │                          │  detection (host:port or zk://), reconnect with backoff,
//!      └── launch/decline/… ──────┘  failover with the framework id, heartbeat watch, auto-ack
//! ```
//!
//! Under ZooKeeper the driver watches the leader (`Detector::watch`): when ZooKeeper lists a new
//! leader it leaves the old one (its stream, or the backoff wait after a failed attempt) and
//! subscribes to the new one at once; backoff applies only to retries against the master that
//! ZooKeeper still lists as the leader.
//!
//! ```no_run
//! # async fn f() -> Result<(), agora_sdk::SdkError> {
//! use agora_sdk::{Event, Framework};
//! let mut fw = Framework::builder("zk://z1:2181/agora", "my-framework")
//!     .role("batch")
//!     .failover_timeout(std::time::Duration::from_secs(3600))
//!     .connect()?;
//! while let Some(event) = fw.next_event().await {
//!     match event {
//!         Event::Offers(offers) => {
//!             let ids: Vec<String> = offers.iter().map(|o| o.id.clone()).collect();
//!             fw.decline(&ids, 60.0).await?; // nothing to run: decline for a minute
//!         }
//!         Event::Update(status) => println!("{} is {:?}", status.task_id, status.state()),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Updates that carry a uuid are acknowledged by the SDK after they are handed to you
//! ([`FrameworkBuilder::manual_acknowledgements`] turns that off). A dropped connection, a master
//! failover or a heartbeat gap is reported as [`Event::Disconnected`] and followed by
//! [`Event::Subscribed`] again once the SDK has re-subscribed with the same framework id — your
//! tasks keep running meanwhile if the failover timeout allows. Reconcile after each
//! `Subscribed` that follows a `Disconnected`.
#![forbid(unsafe_code)]

pub mod offers;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_ha::detector::{Detector, LeaderWatch};
use agora_proto::v1::{self, scheduler_client::SchedulerClient};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tracing::{info, warn};

pub use offers::{carve, carve_many, fits, Carved, TaskNeeds};

/// Why an SDK call failed.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// `--master` is not `host:port` or `zk://…`.
    #[error(transparent)]
    Detect(#[from] agora_ha::detector::DetectError),
    /// The call was made while not subscribed (before SUBSCRIBED, or during a reconnection).
    #[error("not subscribed to a master right now; wait for Event::Subscribed")]
    NotSubscribed,
    /// The master refused the call; the status names the field or id at fault.
    #[error("the master refused the call: {0}")]
    Rpc(#[from] tonic::Status),
}

/// What the master tells the framework, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Subscribed (first time, or again after a reconnection) with this framework id.
    Subscribed {
        framework_id: String,
        master: v1::MasterInfo,
        /// True when this re-subscription followed a disconnection: reconcile now.
        resubscribed: bool,
    },
    Offers(Vec<v1::Offer>),
    Rescind {
        offer_id: String,
    },
    Update(v1::TaskStatus),
    Message {
        agent_id: String,
        executor_id: String,
        data: Vec<u8>,
    },
    /// An agent or executor was lost.
    Failure {
        agent_id: String,
        executor_id: String,
        status: Option<i32>,
    },
    /// The master closed the subscription for good (for example after TEARDOWN): the SDK stops.
    Error(String),
    /// The connection to the master was lost; the SDK is reconnecting.
    Disconnected(String),
}

/// Reconnection delays: doubling from `min` to `max`, reset after a successful subscription.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// How long the SDK waits for any event before it declares the connection dead: three heartbeat
/// intervals, as Mesos schedulers do.
pub fn heartbeat_timeout(interval_seconds: f64) -> Duration {
    let interval = if interval_seconds.is_finite() && interval_seconds > 0.0 {
        interval_seconds
    } else {
        15.0
    };
    Duration::from_secs_f64(interval * 3.0)
}

/// Builds a [`Framework`].
pub struct FrameworkBuilder {
    master: String,
    authorization: Option<String>,
    info: v1::FrameworkInfo,
    auto_ack: bool,
    suppressed_roles: Vec<String>,
    tls: Option<agora_net::tls::SharedClientTls>,
    join_token: Option<agora_net::pki::JoinToken>,
}

impl FrameworkBuilder {
    /// Join a secure-by-default cluster with the framework token (`agora master token
    /// --framework`, parsed with [`agora_net::pki::JoinToken::parse`]): before its first
    /// subscription the driver pins the token's CA, gets a certificate of the framework role for
    /// a key it generates ([`agora_net::pki::join`]) and talks to the masters with mutual TLS;
    /// a connection made past two thirds of the certificate's life renews it first
    /// (`Certificates/Renew`), as does one made after the cluster CA was rotated
    /// (`Certificates/Authority` names another issuer), and one made past its end joins again. Replaces [`FrameworkBuilder::tls`].
    /// A token the master refuses (another cluster's CA, a wrong secret) ends the driver with
    /// [`Event::Error`].
    pub fn join_token(mut self, token: agora_net::pki::JoinToken) -> Self {
        self.join_token = Some(token);
        self
    }

    /// Talk to the master over TLS, verifying it against the cluster CA (and presenting a client
    /// certificate when the material has one). See [`agora_net::tls::TlsFiles::client`].
    pub fn tls(mut self, tls: Option<agora_net::tls::ClientTls>) -> Self {
        self.tls = tls.map(agora_net::tls::SharedClientTls::new);
        self
    }

    /// [`FrameworkBuilder::tls`] with material that is replaced while the framework runs (a
    /// renewed certificate): each new connection to a master takes the current one.
    pub fn tls_shared(mut self, tls: Option<agora_net::tls::SharedClientTls>) -> Self {
        self.tls = tls;
        self
    }

    /// The framework's role (call again for several roles). Default `*`.
    pub fn role(mut self, role: &str) -> Self {
        self.info.roles.push(role.to_string());
        self
    }

    /// How long the master keeps the tasks when the framework disconnects. Default 0 (killed).
    pub fn failover_timeout(mut self, t: Duration) -> Self {
        self.info.failover_timeout_seconds = t.as_secs_f64();
        self
    }

    /// Fail over as an existing framework (its id from an earlier run).
    pub fn framework_id(mut self, id: &str) -> Self {
        self.info.id = id.to_string();
        self
    }

    pub fn principal(mut self, p: &str) -> Self {
        self.info.principal = p.to_string();
        self
    }

    pub fn webui_url(mut self, url: &str) -> Self {
        self.info.webui_url = url.to_string();
        self
    }

    /// Authenticates as `principal` with `secret` (for masters started with `--credentials`).
    pub fn credential(mut self, principal: &str, secret: &str) -> Self {
        use base64::Engine as _;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{principal}:{secret}"));
        self.authorization = Some(format!("Basic {token}"));
        self.info.principal = principal.to_string();
        self
    }

    /// Acknowledge updates yourself with [`Framework::acknowledge`].
    pub fn manual_acknowledgements(mut self) -> Self {
        self.auto_ack = false;
        self
    }

    /// Start with these roles suppressed (no offers until [`Framework::revive`]).
    pub fn suppressed(mut self, roles: &[&str]) -> Self {
        self.suppressed_roles = roles.iter().map(|r| r.to_string()).collect();
        self
    }

    /// Full control over the FrameworkInfo.
    pub fn info(mut self, f: impl FnOnce(&mut v1::FrameworkInfo)) -> Self {
        f(&mut self.info);
        self
    }

    /// Starts the driver: it finds the master, subscribes, and keeps reconnecting until the
    /// framework is torn down or dropped.
    ///
    /// # Errors
    /// [`SdkError::Detect`] for a malformed master address.
    pub fn connect(mut self) -> Result<Framework, SdkError> {
        let detector = Detector::new(&self.master)?;
        if self.info.roles.is_empty() {
            self.info.roles.push("*".into());
        }
        self.info
            .capabilities
            .push(v1::FrameworkCapability::PartitionAware as i32);
        let (tx, events) = mpsc::unbounded_channel();
        let session = Arc::new(Mutex::new(None));
        let subscription = Arc::new(Mutex::new(Subscription {
            info: self.info,
            suppressed_roles: self.suppressed_roles,
        }));
        let driver = Driver {
            authorization: self.authorization,
            tls: self.tls,
            join: self.join_token.map(|token| Join {
                token,
                joined: None,
            }),
            detector,
            subscription: subscription.clone(),
            auto_ack: self.auto_ack,
            session: session.clone(),
            events: tx,
        };
        let task = tokio::spawn(driver.run());
        Ok(Framework {
            events,
            session,
            subscription,
            driver: task,
        })
    }
}

/// The scheduler client of a session: every call carries the framework's credentials, which a
/// master started with `--credentials` checks on unary calls as on SUBSCRIBE.
type Client =
    SchedulerClient<tonic::service::interceptor::InterceptedService<Channel, Credentials>>;

/// Adds `authorization: Basic …` to each call when the framework has a credential.
#[derive(Clone)]
struct Credentials(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The current subscription: a client to the leader and the header of its calls.
#[derive(Clone)]
struct Session {
    client: Client,
    header: v1::CallHeader,
}

/// What the driver subscribes (and re-subscribes) with: the builder's, then the framework id
/// from SUBSCRIBED and what [`Framework::update_framework`] changed.
struct Subscription {
    info: v1::FrameworkInfo,
    suppressed_roles: Vec<String>,
}

/// A subscribed framework: events in, calls out. Dropping it closes the subscription.
pub struct Framework {
    events: mpsc::UnboundedReceiver<Event>,
    session: Arc<Mutex<Option<Session>>>,
    subscription: Arc<Mutex<Subscription>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Framework {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Framework {
    /// Starts building a framework that finds its master through `master` (`host:port` or
    /// `zk://h1:2181,h2:2181/agora`).
    pub fn builder(master: &str, name: &str) -> FrameworkBuilder {
        FrameworkBuilder {
            master: master.to_string(),
            authorization: None,
            info: v1::FrameworkInfo {
                name: name.to_string(),
                checkpoint: true,
                ..Default::default()
            },
            auto_ack: true,
            suppressed_roles: Vec::new(),
            tls: None,
            join_token: None,
        }
    }

    /// The next event; `None` once the framework was torn down.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The framework id, once subscribed.
    pub fn framework_id(&self) -> Option<String> {
        self.session().ok().map(|s| s.header.framework_id)
    }

    /// The `FrameworkInfo` the framework subscribes with now (its id once subscribed, and what
    /// [`Framework::update_framework`] last changed): the starting point of an update.
    pub fn info(&self) -> v1::FrameworkInfo {
        self.subscription
            .lock()
            .map(|s| s.info.clone())
            .unwrap_or_default()
    }

    fn session(&self) -> Result<Session, SdkError> {
        self.session
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .ok_or(SdkError::NotSubscribed)
    }

    /// Runs operations on offers of one agent; what they leave is declined for `refuse_seconds`.
    ///
    /// # Errors
    /// [`SdkError::NotSubscribed`]; the master's refusal (unknown offer, …).
    pub async fn accept(
        &self,
        offer_ids: &[String],
        operations: Vec<v1::Operation>,
        refuse_seconds: f64,
    ) -> Result<(), SdkError> {
        let mut s = self.session()?;
        s.client
            .accept(v1::AcceptRequest {
                header: Some(s.header.clone()),
                offer_ids: offer_ids.to_vec(),
                operations,
                filters: Some(v1::Filters {
                    refuse_seconds: Some(refuse_seconds),
                }),
            })
            .await?;
        Ok(())
    }

    /// Launches tasks on one offer (the rest is declined for 5 s).
    ///
    /// # Errors
    /// As [`Framework::accept`].
    pub async fn launch(&self, offer_id: &str, tasks: Vec<v1::TaskInfo>) -> Result<(), SdkError> {
        let op = v1::Operation {
            operation: Some(v1::operation::Operation::Launch(v1::operation::Launch {
                tasks,
            })),
        };
        self.accept(&[offer_id.to_string()], vec![op], 5.0).await
    }

    /// Returns offers unused for `refuse_seconds` (decline with long filters when idle).
    ///
    /// # Errors
    /// As [`Framework::accept`].
    pub async fn decline(&self, offer_ids: &[String], refuse_seconds: f64) -> Result<(), SdkError> {
        let mut s = self.session()?;
        s.client
            .decline(v1::DeclineRequest {
                header: Some(s.header.clone()),
                offer_ids: offer_ids.to_vec(),
                filters: Some(v1::Filters {
                    refuse_seconds: Some(refuse_seconds),
                }),
            })
            .await?;
        Ok(())
    }

    /// Resumes offers in `roles` (all when empty) and clears filters.
    ///
    /// # Errors
    /// As [`Framework::accept`].
    pub async fn revive(&self, roles: &[&str]) -> Result<(), SdkError> {
        let mut s = self.session()?;
        s.client
            .revive(v1::ReviveRequest {
                header: Some(s.header.clone()),
                roles: roles.iter().map(|r| r.to_string()).collect(),
            })
            .await?;
        Ok(())
    }

    /// Stops offers in `roles` (all when empty) until [`Framework::revive`].
    ///
    /// # Errors
    /// As [`Framework::accept`].
    pub async fn suppress(&self, roles: &[&str]) -> Result<(), SdkError> {
        let mut s = self.session()?;
        s.client
            .suppress(v1::SuppressRequest {
                header: Some(s.header.clone()),
                roles: roles.iter().map(|r| r.to_string()).collect(),
            })
            .await?;
        Ok(())
    }

    /// Changes the framework's info and suppressed roles without subscribing again (the
    /// `UpdateFramework` call, Mesos's UPDATE_FRAMEWORK); it returns once the master applied it.
    /// `info` is the whole new info — start from [`Framework::info`] — with `name`, `roles`,
    /// `capabilities`, `failover_timeout_seconds`, `hostname`, `webui_url` and `labels` free to
    /// change; `id`, `user`, `principal` and `checkpoint` are fixed (an empty `id` means this
    /// framework's). `suppressed_roles` (a subset of the new roles) replaces the suppressed set:
    /// a role leaving it is revived. When the roles change, held offers are rescinded
    /// ([`Event::Rescind`]) and offers come again under the new roles. All of it applies or
    /// nothing does; once applied, the driver re-subscribes with the new info after a
    /// disconnection.
    ///
    /// ```no_run
    /// # async fn f(fw: &agora_sdk::Framework) -> Result<(), agora_sdk::SdkError> {
    /// let mut info = fw.info();
    /// info.roles = vec!["analytics".into()];
    /// fw.update_framework(info, &[]).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Framework::accept`]; INVALID_ARGUMENT naming the field (`framework_info.user` for a
    /// changed user, a role name, a limit), PERMISSION_DENIED for a role the principal may not
    /// use.
    pub async fn update_framework(
        &self,
        mut info: v1::FrameworkInfo,
        suppressed_roles: &[&str],
    ) -> Result<(), SdkError> {
        let mut s = self.session()?;
        if info.id.is_empty() {
            info.id = s.header.framework_id.clone();
        }
        let suppressed_roles: Vec<String> =
            suppressed_roles.iter().map(|r| r.to_string()).collect();
        s.client
            .update_framework(v1::UpdateFrameworkRequest {
                header: Some(s.header.clone()),
                framework_info: Some(info.clone()),
                suppressed_roles: suppressed_roles.clone(),
            })
            .await?;
        if let Ok(mut current) = self.subscription.lock() {
            *current = Subscription {
                info,
                suppressed_roles,
            };
        }
        Ok(())
    }

    /// Kills a task (its kill policy applies).
    ///
    /// # Errors
    /// As [`Framework::accept`]; NOT_FOUND for a task the master does not know.
    pub async fn kill(&self, task_id: &str) -> Result<(), SdkError> {
        let mut s = self.session()?;
        s.client
            .kill(v1::KillRequest {
                header: Some(s.header.clone()),
                task_id: task_id.to_string(),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// Acknowledges an update (only needed with manual acknowledgements).
    ///
    /// # Errors
    /// As [`Framework::accept`].
    pub async fn acknowledge(&self, status: &v1::TaskStatus) -> Result<(), SdkError> {
        let s = self.session()?;
        acknowledge(s, status).await
    }

    /// Asks for the latest state of `tasks` (task id, agent id), or of every task when empty.
    ///
    /// # Errors
    /// As [`Framework::accept`].
    pub async fn reconcile(&self, tasks: &[(String, String)]) -> Result<(), SdkError> {
        let mut s = self.session()?;
        s.client
            .reconcile(v1::ReconcileRequest {
                header: Some(s.header.clone()),
                tasks: tasks
                    .iter()
                    .map(|(t, a)| v1::reconcile_request::TaskRef {
                        task_id: t.clone(),
                        agent_id: a.clone(),
                    })
                    .collect(),
            })
            .await?;
        Ok(())
    }

    /// Unregisters the framework: every task is killed and the id cannot subscribe again.
    ///
    /// # Errors
    /// As [`Framework::accept`].
    pub async fn teardown(self) -> Result<(), SdkError> {
        let mut s = self.session()?;
        s.client
            .teardown(v1::TeardownRequest {
                header: Some(s.header.clone()),
            })
            .await?;
        Ok(())
    }
}

async fn acknowledge(mut s: Session, status: &v1::TaskStatus) -> Result<(), SdkError> {
    s.client
        .acknowledge(v1::AcknowledgeRequest {
            header: Some(s.header.clone()),
            agent_id: status.agent_id.clone(),
            task_id: status.task_id.clone(),
            uuid: status.uuid.clone(),
        })
        .await?;
    Ok(())
}

/// Resolves with the new leader once `leader` names a master other than `address` (or none).
async fn moved_from(leader: &mut LeaderWatch, address: &str) -> Option<String> {
    loop {
        let now = leader.changed().await;
        if now.as_deref() != Some(address) {
            return now;
        }
    }
}

/// A standby master names the leader in `agora-leader` metadata.
fn leader_hint(status: &tonic::Status) -> Option<String> {
    (status.code() == tonic::Code::Unavailable)
        .then(|| status.metadata().get("agora-leader"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// True when the master at `address` says another CA than the one that signed `current` issues
/// now (`Certificates/Authority`: the cluster CA was rotated). False when it cannot be asked.
async fn rotated(address: &str, current: &agora_net::pki::Joined) -> bool {
    let Ok(endpoint) = agora_net::tls::endpoint(address, Some(&current.client())) else {
        return false;
    };
    let Ok(channel) = endpoint
        .connect_timeout(JOIN_ATTEMPT)
        .timeout(JOIN_ATTEMPT)
        .connect()
        .await
    else {
        return false;
    };
    match agora_net::pki::rotation::authority(channel, address).await {
        Ok(a) => agora_net::pki::first_der("cert", &current.cert_pem)
            .is_ok_and(|leaf| !agora_net::pki::rotation::issued_by(&leaf, &a.issuer_der)),
        Err(_) => false,
    }
}

/// [`FrameworkBuilder::join_token`]'s state in the driver.
struct Join {
    token: agora_net::pki::JoinToken,
    /// The certificate and when to renew it.
    joined: Option<(agora_net::pki::Joined, std::time::Instant)>,
}

/// The names a framework's client certificate is issued for (a client's names are not checked:
/// the master verifies its chain and role).
const JOIN_NAMES: &[&str] = &["agora-framework"];

/// How long one attempt to join or renew may take.
const JOIN_ATTEMPT: Duration = Duration::from_secs(10);

struct Driver {
    authorization: Option<String>,
    tls: Option<agora_net::tls::SharedClientTls>,
    join: Option<Join>,
    detector: Detector,
    subscription: Arc<Mutex<Subscription>>,
    auto_ack: bool,
    session: Arc<Mutex<Option<Session>>>,
    events: mpsc::UnboundedSender<Event>,
}

enum StreamEnd {
    /// Reconnect.
    Lost(String),
    /// Stop for good.
    Closed,
}

impl Driver {
    async fn run(mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        let mut leader = self.detector.watch();
        let mut hint: Option<String> = None;
        let mut was_subscribed = false;
        loop {
            let address = match hint.take().or_else(|| leader.seen()) {
                Some(a) => a,
                None => {
                    warn!("no leading master listed yet; waiting for one");
                    // A look at most every second, and at once when one is listed.
                    let wait = backoff.next_delay().min(Duration::from_secs(1));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = leader.changed() => {}
                    }
                    continue;
                }
            };
            let attempt = tokio::select! {
                r = self.subscribe_once(&address, was_subscribed, &mut backoff) => Some(r),
                to = moved_from(&mut leader, &address) => {
                    info!(from = %address, ?to, "ZooKeeper lists a new leader: leaving the old one");
                    None
                }
            };
            let Some(attempt) = attempt else {
                // Moved: drop the old subscription and go to the new leader now.
                backoff.reset();
                if self.take_session() {
                    was_subscribed = true;
                    let why = format!("the leader moved away from {address}");
                    if self.events.send(Event::Disconnected(why)).is_err() {
                        return;
                    }
                }
                continue;
            };
            match attempt {
                Ok(StreamEnd::Closed) => return,
                Ok(StreamEnd::Lost(why)) => {
                    was_subscribed = true;
                    self.set_session(None);
                    if self.events.send(Event::Disconnected(why.clone())).is_err() {
                        return;
                    }
                    info!(%why, "disconnected from the master; reconnecting");
                }
                Err(status) => {
                    if let Some(leader) = leader_hint(&status) {
                        hint = Some(leader);
                        continue;
                    }
                    if matches!(
                        status.code(),
                        tonic::Code::InvalidArgument
                            | tonic::Code::FailedPrecondition
                            | tonic::Code::Unauthenticated
                            | tonic::Code::PermissionDenied
                    ) && !was_subscribed
                    {
                        // The master will never accept this subscription as it is.
                        let _ = self.events.send(Event::Error(status.message().to_string()));
                        return;
                    }
                    warn!(error = %status.message(), "subscription failed; retrying");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                to = moved_from(&mut leader, &address) => {
                    // No backoff against a master ZooKeeper no longer lists.
                    info!(leader = ?to, "new leader listed in ZooKeeper: subscribing at once");
                    backoff.reset();
                }
            }
        }
    }

    /// Clears the current session; true when there was one.
    fn take_session(&self) -> bool {
        self.session
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .is_some()
    }

    fn set_session(&self, s: Option<Session>) {
        if let Ok(mut slot) = self.session.lock() {
            *slot = s;
        }
    }

    /// With a join token: a certificate valid for a new connection to `address` (joined,
    /// renewed or joined again as needed) in `self.tls`.
    async fn certificate(&mut self, address: &str) -> Result<(), tonic::Status> {
        let Some(join) = &mut self.join else {
            return Ok(());
        };
        let now = std::time::Instant::now();
        if let Some((current, _)) = join.joined.as_ref().filter(|(_, at)| now < *at) {
            // Not due: unless the cluster CA was rotated (the CA issuing now did not sign it).
            if !rotated(address, current).await {
                return Ok(());
            }
            info!("the framework certificate's issuer is no longer the cluster's CA (rotated): renewing it now");
        }
        let names: Vec<String> = JOIN_NAMES.iter().map(|n| n.to_string()).collect();
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let valid = join.joined.as_ref().filter(|(j, _)| {
            agora_net::pki::first_der("cert", &j.cert_pem)
                .ok()
                .and_then(|d| agora_net::pki::not_after(&d))
                .is_some_and(|end| end > unix_now)
        });
        let result = match valid {
            Some((current, _)) => {
                agora_net::pki::renew(address, current, &names, JOIN_ATTEMPT).await
            }
            None => agora_net::pki::join(address, &join.token, &names, JOIN_ATTEMPT).await,
        };
        let joined = result.map_err(|e| {
            if e.is_permanent() {
                tonic::Status::permission_denied(format!("join token: {e}"))
            } else {
                tonic::Status::unavailable(e.to_string())
            }
        })?;
        info!(lifetime = ?joined.lifetime, "framework certificate issued by the cluster CA");
        let renew_at = now + joined.lifetime * 2 / 3;
        self.tls = Some(agora_net::tls::SharedClientTls::new(joined.client()));
        join.joined = Some((joined, renew_at));
        Ok(())
    }

    async fn subscribe_once(
        &mut self,
        address: &str,
        resubscribed: bool,
        backoff: &mut Backoff,
    ) -> Result<StreamEnd, tonic::Status> {
        self.certificate(address).await?;
        let tls = self.tls.as_ref().map(agora_net::tls::SharedClientTls::get);
        let endpoint = agora_net::tls::endpoint(address, tls.as_ref())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let channel = endpoint.connect().await.map_err(|e| {
            tonic::Status::unavailable(format!("{address}: {}", agora_net::tls::error_chain(&e)))
        })?;
        let credentials = match &self.authorization {
            Some(auth) => Some(auth.parse().map_err(|_| {
                tonic::Status::invalid_argument("the credential is not valid ASCII")
            })?),
            None => None,
        };
        let mut client = SchedulerClient::with_interceptor(channel, Credentials(credentials));
        let request = {
            let current = self
                .subscription
                .lock()
                .map_err(|_| tonic::Status::internal("the framework's info is unavailable"))?;
            tonic::Request::new(v1::SubscribeRequest {
                framework_info: Some(current.info.clone()),
                suppressed_roles: current.suppressed_roles.clone(),
            })
        };
        let mut stream = client.subscribe(request).await?.into_inner();
        let mut heartbeat = heartbeat_timeout(15.0);
        loop {
            let next = tokio::time::timeout(heartbeat, stream.message()).await;
            let event = match next {
                Err(_) => return Ok(StreamEnd::Lost(format!("no heartbeat from {address}"))),
                Ok(Err(status)) => {
                    return Ok(StreamEnd::Lost(format!("{address}: {}", status.message())))
                }
                Ok(Ok(None)) => return Ok(StreamEnd::Lost(format!("{address} closed the stream"))),
                Ok(Ok(Some(e))) => e,
            };
            let Some(event) = event.event else { continue };
            use v1::event::Event as E;
            let out = match event {
                E::Subscribed(s) => {
                    heartbeat = heartbeat_timeout(s.heartbeat_interval_seconds);
                    // Keep the id: every re-subscription is a failover with it.
                    if let Ok(mut current) = self.subscription.lock() {
                        current.info.id = s.framework_id.clone();
                    }
                    self.set_session(Some(Session {
                        client: client.clone(),
                        header: v1::CallHeader {
                            framework_id: s.framework_id.clone(),
                            stream_id: s.stream_id,
                        },
                    }));
                    backoff.reset();
                    Event::Subscribed {
                        framework_id: s.framework_id,
                        master: s.master_info.unwrap_or_default(),
                        resubscribed,
                    }
                }
                E::Offers(o) => Event::Offers(o.offers),
                E::Rescind(r) => Event::Rescind {
                    offer_id: r.offer_id,
                },
                E::Update(u) => {
                    let Some(status) = u.status else { continue };
                    if self.auto_ack && !status.uuid.is_empty() {
                        let session = self.session.lock().ok().and_then(|s| s.clone());
                        if let Some(s) = session {
                            let st = status.clone();
                            // Acknowledge off the event path so a slow master does not stall it.
                            tokio::spawn(async move {
                                if let Err(e) = acknowledge(s, &st).await {
                                    warn!(task = %st.task_id, error = %e, "acknowledgement failed; the agent will resend");
                                }
                            });
                        }
                    }
                    Event::Update(status)
                }
                E::Message(m) => Event::Message {
                    agent_id: m.agent_id,
                    executor_id: m.executor_id,
                    data: m.data,
                },
                E::Failure(f) => Event::Failure {
                    agent_id: f.agent_id,
                    executor_id: f.executor_id,
                    status: f.status,
                },
                E::Error(e) => {
                    let _ = self.events.send(Event::Error(e.message));
                    self.set_session(None);
                    return Ok(StreamEnd::Closed);
                }
                E::Heartbeat(_) => continue,
            };
            if self.events.send(out).is_err() {
                return Ok(StreamEnd::Closed);
            }
        }
    }
}

/// A shell-command task for the built-in command executor (native containerizer).
pub fn shell_task(task_id: &str, command: &str, resources: &Carved) -> v1::TaskInfo {
    v1::TaskInfo {
        name: task_id.to_string(),
        task_id: task_id.to_string(),
        resources: resources.to_proto(),
        command: Some(v1::CommandInfo {
            shell: true,
            value: command.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A fresh task id: `prefix` and a short random suffix.
pub fn task_id(prefix: &str) -> String {
    format!(
        "{prefix}.{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(1));
        let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [250, 500, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(250));
    }

    #[test]
    fn three_missed_heartbeats_mean_a_dead_connection() {
        assert_eq!(heartbeat_timeout(15.0), Duration::from_secs(45));
        assert_eq!(heartbeat_timeout(0.0), Duration::from_secs(45));
        assert_eq!(heartbeat_timeout(0.5), Duration::from_millis(1500));
    }

    #[test]
    fn a_standby_answer_names_the_leader() {
        let mut s = tonic::Status::unavailable("standby");
        s.metadata_mut()
            .insert("agora-leader", "10.0.0.4:5050".parse().expect("ascii"));
        assert_eq!(leader_hint(&s).as_deref(), Some("10.0.0.4:5050"));
        assert_eq!(leader_hint(&tonic::Status::internal("x")), None);
    }
}
