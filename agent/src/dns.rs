//! DNS on the agent (hickory-server), answering from the endpoint table with Mesos-DNS names.
//!
//! App `/prod/web` of framework `services` under domain `agora`:
//! ```text
//!  web-prod.services.agora.            A    each healthy endpoint's agent IP (IPv4)
//!  _web-prod._tcp.services.agora.      SRV  0 0 <host port> <host>.web-prod.services.agora.
//!  <host>.web-prod.services.agora.     A    that agent's IP
//! ```
//! Path segments are reversed and joined with `-`; labels are lower-cased, characters other than
//! `a-z 0-9 -` become `-`, and a label longer than 63 bytes leaves the service out of DNS (logged).
//! Names under the domain that the table does not hold are NXDOMAIN; other names are forwarded to
//! the host's resolvers (`/etc/resolv.conf`) or REFUSED (`--dns-forward=false`). TTL is
//! [`TTL_SECONDS`]. The zone is rebuilt from each new table snapshot, so queries read a prepared
//! map.
//!
//! UDP queries are received by our own loops ([`fast`]: replies prepared per table change, only
//! the id, flags and question put in); what they do not answer goes to the hickory-server handler
//! below, as TCP does.
#![forbid(unsafe_code)]

pub mod fast;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

use crate::endpoints::{EndpointTable, Endpoints};

/// TTL of every answer, in seconds (tasks come and go: keep caches short).
pub const TTL_SECONDS: u32 = 5;
/// Longest DNS label.
pub const MAX_LABEL: usize = 63;
/// Longest domain (`--dns-domain`), in bytes.
pub const MAX_DOMAIN: usize = 200;
/// Most names in the zone (A, SRV and per-host names together).
pub const MAX_NAMES: usize = 500_000;
/// Most records in one answer (a UDP reply is truncated by hickory beyond its size anyway).
pub const MAX_ANSWERS: usize = 256;
/// How long a forwarded query may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// `--dns-*` settings.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Address and port to listen on (UDP and TCP).
    pub listen: SocketAddr,
    /// `--dns-domain` (default `agora`).
    pub domain: String,
    /// `--dns-forward`: resolve other names through the host's resolvers (else REFUSED).
    pub forward: bool,
}

/// Errors starting DNS.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("--dns-domain {domain:?}: {why}")]
    Domain { domain: String, why: String },
    #[error("cannot listen for DNS on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct DnsMetrics {
    pub queries: AtomicU64,
    pub answers: AtomicU64,
    pub nxdomain: AtomicU64,
    pub forwarded: AtomicU64,
    pub refused: AtomicU64,
    pub failures: AtomicU64,
    pub names: AtomicU64,
}

impl DnsMetrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, v, kind) in [
            (
                "agora_agent_dns_queries_total",
                "DNS queries received",
                &self.queries,
                "counter",
            ),
            (
                "agora_agent_dns_answers_total",
                "DNS queries answered from the endpoint table with records",
                &self.answers,
                "counter",
            ),
            (
                "agora_agent_dns_nxdomain_total",
                "DNS queries answered NXDOMAIN",
                &self.nxdomain,
                "counter",
            ),
            (
                "agora_agent_dns_forwarded_total",
                "DNS queries forwarded to the host's resolvers",
                &self.forwarded,
                "counter",
            ),
            (
                "agora_agent_dns_refused_total",
                "DNS queries refused (outside the domain, forwarding off)",
                &self.refused,
                "counter",
            ),
            (
                "agora_agent_dns_failures_total",
                "DNS queries answered SERVFAIL",
                &self.failures,
                "counter",
            ),
            (
                "agora_agent_dns_names",
                "Names in the DNS zone",
                &self.names,
                "gauge",
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// One DNS label from free text: lower case, `[a-z0-9-]`, no leading/trailing `-`; `None` when
/// empty or longer than [`MAX_LABEL`].
pub fn label(text: &str) -> Option<String> {
    let s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-').to_string();
    (!s.is_empty() && s.len() <= MAX_LABEL).then_some(s)
}

/// Mesos-DNS's task label of a discovery name: `/prod/web` → `web-prod`.
pub fn service_label(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).rev().collect();
    label(&parts.join("-"))
}

/// SRV records as (port, target name).
pub type SrvTargets = Vec<(u16, String)>;

/// Records of one name.
#[derive(Debug, Default, Clone)]
struct Rrset {
    a: BTreeSet<Ipv4Addr>,
    srv: BTreeSet<(u16, String)>,
}

/// The prepared zone: lower-case name with the trailing dot → records.
#[derive(Debug, Default)]
pub struct Zone {
    domain: String,
    names: HashMap<String, Rrset>,
    /// The answers of each name as DNS records, made once per table change so that a query
    /// only copies them.
    prepared: HashMap<String, Prepared>,
    /// The same answers as whole UDP replies (the fast path).
    replies: fast::Replies,
}

/// One name's answers, ready to send.
#[derive(Debug, Default)]
struct Prepared {
    a: Vec<Record>,
    srv: Vec<Record>,
    /// The A records of the SRV targets.
    srv_additionals: Vec<Record>,
}

fn prepare(names: &HashMap<String, Rrset>) -> HashMap<String, Prepared> {
    let mut out = HashMap::with_capacity(names.len());
    for (key, set) in names {
        let Ok(owner) = Name::from_ascii(key) else {
            continue;
        };
        let a = set
            .a
            .iter()
            .take(MAX_ANSWERS)
            .map(|ip| record(&owner, RData::A(A(*ip))))
            .collect();
        let mut srv = Vec::new();
        let mut srv_additionals = Vec::new();
        for (port, target) in set.srv.iter().take(MAX_ANSWERS) {
            let Ok(t) = Name::from_ascii(target) else {
                continue;
            };
            if let Some(host) = names.get(target) {
                srv_additionals.extend(host.a.iter().map(|ip| record(&t, RData::A(A(*ip)))));
            }
            srv.push(record(&owner, RData::SRV(SRV::new(0, 0, *port, t))));
        }
        out.insert(
            key.clone(),
            Prepared {
                a,
                srv,
                srv_additionals,
            },
        );
    }
    out
}

impl Zone {
    /// The zone of `table` under `domain` (no trailing dot); `forward` is whether names outside
    /// it are forwarded (the replies' RA flag).
    pub fn build(table: &EndpointTable, domain: &str, forward: bool) -> Zone {
        let mut names: HashMap<String, Rrset> = HashMap::new();
        let mut skipped = 0usize;
        for ((framework, name), service) in &table.services {
            let (Some(svc), Some(fw)) = (service_label(name), label(framework)) else {
                skipped += 1;
                continue;
            };
            let base = format!("{svc}.{fw}.{domain}.");
            for e in &service.endpoints {
                if names.len() >= MAX_NAMES {
                    skipped += 1;
                    break;
                }
                let ip =
                    e.ip.parse::<Ipv4Addr>()
                        .ok()
                        .or_else(|| e.host.parse::<Ipv4Addr>().ok());
                let Ok(port) = u16::try_from(e.port) else {
                    continue;
                };
                let host = label(&e.host).unwrap_or_else(|| label(&e.agent_id).unwrap_or_default());
                if let Some(ip) = ip {
                    names.entry(base.clone()).or_default().a.insert(ip);
                    if !host.is_empty() {
                        names
                            .entry(format!("{host}.{base}"))
                            .or_default()
                            .a
                            .insert(ip);
                    }
                }
                if host.is_empty() {
                    continue;
                }
                let protocol = e.protocol.to_ascii_lowercase();
                for proto in ["tcp", "udp"] {
                    let listed = protocol.split(',').any(|p| p.trim() == proto)
                        || (protocol.is_empty() && proto == "tcp");
                    if listed {
                        names
                            .entry(format!("_{svc}._{proto}.{fw}.{domain}."))
                            .or_default()
                            .srv
                            .insert((port, format!("{host}.{base}")));
                    }
                }
            }
        }
        if skipped > 0 {
            warn!(
                skipped,
                max_label = MAX_LABEL,
                max_names = MAX_NAMES,
                "services left out of DNS (name too long or zone full)"
            );
        }
        let prepared = prepare(&names);
        let apex = Name::from_ascii(format!("{domain}.")).unwrap_or_else(|_| Name::root());
        let replies = fast::Replies::build(
            prepared.iter().map(|(name, p)| fast::NameRecords {
                name,
                a: &p.a,
                srv: &p.srv,
                srv_additionals: &p.srv_additionals,
            }),
            &apex,
            &soa_record(&apex),
            forward,
        );
        Zone {
            domain: format!("{domain}."),
            names,
            prepared,
            replies,
        }
    }

    /// The prepared UDP replies.
    pub fn replies(&self) -> &fast::Replies {
        &self.replies
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether `name` (lower case, trailing dot) is the domain or under it.
    pub fn covers(&self, name: &str) -> bool {
        name == self.domain || name.ends_with(&format!(".{}", self.domain))
    }

    /// A and SRV (port, target) records of `name`: `None` when the name is unknown.
    pub fn lookup(&self, name: &str) -> Option<(Vec<Ipv4Addr>, SrvTargets)> {
        let r = self.names.get(name)?;
        Some((
            r.a.iter().copied().collect(),
            r.srv.iter().cloned().collect(),
        ))
    }
}

/// The request handler: the zone (rebuilt on table changes) and the forwarders.
#[derive(Clone)]
pub struct Handler {
    zone: Arc<RwLock<Arc<Zone>>>,
    /// The zone's domain in lower case with its trailing dot, as zone keys are.
    domain_key: String,
    /// The zone's SOA record (authority of negative answers), made once.
    soa: Record,
    forwarders: Vec<SocketAddr>,
    forward: bool,
    metrics: Arc<DnsMetrics>,
}

fn record(name: &Name, rdata: RData) -> Record {
    Record::from_rdata(name.clone(), TTL_SECONDS, rdata)
}

/// The zone's SOA record (authority of negative answers).
fn soa_record(domain: &Name) -> Record {
    let mname = Name::from_ascii("ns")
        .and_then(|n| n.append_domain(domain))
        .unwrap_or_else(|_| domain.clone());
    let rname = Name::from_ascii("hostmaster")
        .and_then(|n| n.append_domain(domain))
        .unwrap_or_else(|_| domain.clone());
    record(
        domain,
        RData::SOA(SOA::new(mname, rname, 1, 60, 60, 3600, TTL_SECONDS)),
    )
}

impl Handler {
    fn new(
        zone: Arc<RwLock<Arc<Zone>>>,
        domain: Name,
        forwarders: Vec<SocketAddr>,
        forward: bool,
        metrics: Arc<DnsMetrics>,
    ) -> Handler {
        let soa = soa_record(&domain);
        let mut domain_key = domain.to_lowercase().to_ascii();
        if !domain_key.ends_with('.') {
            domain_key.push('.');
        }
        Handler {
            zone,
            domain_key,
            soa,
            forwarders,
            forward,
            metrics,
        }
    }

    /// Whether `key` (lower case, trailing dot) is the domain or a name under it.
    fn covers(&self, key: &str) -> bool {
        key.strip_suffix(self.domain_key.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
    }

    /// Answers from the zone: (rcode, answers, authority, additionals). `key` is `name` in lower
    /// case with its trailing dot; answers carry `name` as asked (its case kept).
    fn answer(
        &self,
        name: &Name,
        key: &str,
        qtype: RecordType,
    ) -> (ResponseCode, Vec<Record>, Vec<Record>, Vec<Record>) {
        let zone = self.zone.read().map(|z| z.clone()).unwrap_or_default();
        if key == self.domain_key {
            return match qtype {
                RecordType::SOA => (
                    ResponseCode::NoError,
                    vec![self.soa.clone()],
                    vec![],
                    vec![],
                ),
                _ => (
                    ResponseCode::NoError,
                    vec![],
                    vec![self.soa.clone()],
                    vec![],
                ),
            };
        }
        let Some(set) = zone.prepared.get(key) else {
            return (
                ResponseCode::NXDomain,
                vec![],
                vec![self.soa.clone()],
                vec![],
            );
        };
        let owned = |records: &[Record]| -> Vec<Record> {
            records
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.set_name(name.clone());
                    r
                })
                .collect()
        };
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        if matches!(qtype, RecordType::A | RecordType::ANY) {
            answers.extend(owned(&set.a));
        }
        if matches!(qtype, RecordType::SRV | RecordType::ANY) {
            answers.extend(owned(&set.srv));
            additionals.extend(set.srv_additionals.iter().cloned());
        }
        let authority = if answers.is_empty() {
            vec![self.soa.clone()]
        } else {
            vec![]
        };
        (ResponseCode::NoError, answers, authority, additionals)
    }

    async fn forward(&self, query: &Query, recursion: bool) -> Option<Message> {
        let mut msg = Message::new();
        msg.set_id(rand_id());
        msg.set_message_type(MessageType::Query);
        msg.set_op_code(OpCode::Query);
        msg.set_recursion_desired(recursion);
        msg.add_query(query.clone());
        let bytes = msg.to_vec().ok()?;
        for upstream in &self.forwarders {
            let bind: SocketAddr = if upstream.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let Ok(sock) = UdpSocket::bind(bind).await else {
                continue;
            };
            if sock.send_to(&bytes, upstream).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 4096];
            let deadline = tokio::time::Instant::now() + FORWARD_TIMEOUT;
            while let Ok(Ok((n, from))) =
                tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await
            {
                if from != *upstream {
                    continue;
                }
                match Message::from_vec(&buf[..n]) {
                    Ok(reply) if reply.id() == msg.id() => return Some(reply),
                    _ => continue,
                }
            }
            debug!(%upstream, "forwarded DNS query got no answer");
        }
        None
    }
}

fn rand_id() -> u16 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u16::from_be_bytes([b[0], b[1]])
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        self.metrics.queries.fetch_add(1, Ordering::Relaxed);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        // Answer EDNS with EDNS (RFC 6891), as the fast path does.
        if let Some(asked) = request.edns() {
            let mut edns = Edns::new();
            edns.set_max_payload(
                asked
                    .max_payload()
                    .clamp(fast::PLAIN_UDP_MAX as u16, fast::EDNS_UDP_MAX),
            )
            .set_version(0);
            edns.set_dnssec_ok(asked.flags().dnssec_ok);
            builder.edns(edns);
        }
        let info = match request.request_info() {
            Ok(i)
                if request.op_code() == OpCode::Query
                    && request.message_type() == MessageType::Query =>
            {
                i
            }
            _ => {
                let reply = builder.error_msg(request.header(), ResponseCode::FormErr);
                let header = *reply.header();
                return send(header, response.send_response(reply).await);
            }
        };
        let name: Name = info.query.name().into();
        let qtype = info.query.query_type();
        let mut lower = name.to_lowercase().to_ascii();
        if !lower.ends_with('.') {
            lower.push('.');
        }
        let covered = self.covers(&lower);
        let mut header = Header::response_from_request(request.header());
        header.set_recursion_available(self.forward);
        if covered {
            let (code, answers, authority, additionals) = self.answer(&name, &lower, qtype);
            header.set_authoritative(true);
            header.set_response_code(code);
            match code {
                ResponseCode::NXDomain => self.metrics.nxdomain.fetch_add(1, Ordering::Relaxed),
                _ if !answers.is_empty() => self.metrics.answers.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
            let reply = builder.build(
                header,
                answers.iter(),
                authority.iter(),
                std::iter::empty(),
                additionals.iter(),
            );
            let r = response.send_response(reply).await;
            return send(header, r);
        }
        if !self.forward {
            self.metrics.refused.fetch_add(1, Ordering::Relaxed);
            header.set_response_code(ResponseCode::Refused);
            let reply = builder.build_no_records(header);
            let r = response.send_response(reply).await;
            return send(header, r);
        }
        let query = Query::query(name, qtype);
        match self.forward(&query, request.recursion_desired()).await {
            Some(up) => {
                self.metrics.forwarded.fetch_add(1, Ordering::Relaxed);
                header.set_response_code(up.response_code());
                let reply = builder.build(
                    header,
                    up.answers().iter(),
                    up.name_servers().iter(),
                    std::iter::empty(),
                    up.additionals().iter(),
                );
                let r = response.send_response(reply).await;
                send(header, r)
            }
            None => {
                self.metrics.failures.fetch_add(1, Ordering::Relaxed);
                header.set_response_code(ResponseCode::ServFail);
                let reply = builder.build_no_records(header);
                let r = response.send_response(reply).await;
                send(header, r)
            }
        }
    }
}

fn send(header: Header, result: std::io::Result<ResponseInfo>) -> ResponseInfo {
    match result {
        Ok(info) => info,
        Err(e) => {
            debug!(error = %e, "DNS reply not sent");
            header.into()
        }
    }
}

/// The `nameserver` lines of a resolv.conf, as port-53 addresses, leaving out `own` (the agent's
/// DNS itself: forwarding there would loop).
pub fn parse_resolv_conf(text: &str, own: SocketAddr) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .filter_map(|a| a.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .filter(|a| {
            *a != own
                && !(own.ip().is_unspecified() && a.port() == own.port() && a.ip().is_loopback())
        })
        .take(3)
        .collect()
}

/// Checks `--dns-domain`: 1–[`MAX_DOMAIN`] bytes of dot-separated labels.
///
/// # Errors
/// [`DnsError::Domain`] saying what is wrong.
pub fn check_domain(domain: &str) -> Result<Name, DnsError> {
    let bad = |why: &str| DnsError::Domain {
        domain: domain.to_string(),
        why: why.to_string(),
    };
    let d = domain.trim_end_matches('.');
    if d.is_empty() || d.len() > MAX_DOMAIN {
        return Err(bad(&format!("must be 1 to {MAX_DOMAIN} bytes")));
    }
    for l in d.split('.') {
        if label(l).as_deref() != Some(&l.to_ascii_lowercase()) {
            return Err(bad(
                "each label must be 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'",
            ));
        }
    }
    Name::from_ascii(format!("{}.", d.to_ascii_lowercase())).map_err(|e| bad(&e.to_string()))
}

/// Most UDP queries the hickory-server handler works on at once (forwarded ones wait up to
/// [`FORWARD_TIMEOUT`]); beyond it further slow-path queries are dropped, as a busy server does.
pub const MAX_SLOW_QUERIES: usize = 1024;
/// Most UDP receive loops (one per core the agent's runtime has, up to this).
pub const MAX_UDP_LOOPS: usize = 4;

/// A running DNS server: our UDP loops and hickory-server's TCP listener. Dropping it stops the
/// UDP loops; [`DnsServer::shutdown_gracefully`] stops both.
pub struct DnsServer {
    tcp: ServerFuture<Handler>,
    udp: Vec<tokio::task::JoinHandle<()>>,
}

impl DnsServer {
    /// Stops answering: UDP at once, TCP after its open connections finish.
    pub async fn shutdown_gracefully(&mut self) {
        for t in &self.udp {
            t.abort();
        }
        let _ = self.tcp.shutdown_gracefully().await;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for t in &self.udp {
            t.abort();
        }
    }
}

/// Whether a reply can be sent to `src` (as hickory-server checks: no port 0, no unspecified or
/// broadcast address).
fn can_reply_to(src: SocketAddr) -> bool {
    src.port() != 0
        && match src.ip() {
            IpAddr::V4(ip) => !ip.is_unspecified() && !ip.is_broadcast(),
            IpAddr::V6(ip) => !ip.is_unspecified(),
        }
}

/// One UDP receive loop: the fast path for what it covers, the hickory-server handler (in a
/// task of its own, at most [`MAX_SLOW_QUERIES`] at once) for the rest.
async fn udp_loop(
    sock: Arc<UdpSocket>,
    zone: Arc<RwLock<Arc<Zone>>>,
    handler: Arc<Handler>,
    slow: Arc<tokio::sync::Semaphore>,
    metrics: Arc<DnsMetrics>,
) {
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::with_capacity(fast::PLAIN_UDP_MAX);
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                use std::io::ErrorKind::{ConnectionRefused, ConnectionReset, Interrupted};
                // ICMP errors of earlier replies surface here (ECONNREFUSED); keep serving. Any
                // other error is logged and retried after a pause, never in a busy loop.
                if !matches!(e.kind(), ConnectionRefused | ConnectionReset | Interrupted) {
                    warn!(error = %e, "DNS receive failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let Some(query) = buf.get(..n) else { continue };
        if !can_reply_to(src) {
            continue;
        }
        let zone_now = zone.read().map(|z| z.clone()).ok();
        if let Some(outcome) = zone_now.and_then(|z| z.replies().reply(query, &mut out)) {
            metrics.queries.fetch_add(1, Ordering::Relaxed);
            match outcome {
                fast::Outcome::Answer => metrics.answers.fetch_add(1, Ordering::Relaxed),
                fast::Outcome::NxDomain => metrics.nxdomain.fetch_add(1, Ordering::Relaxed),
                fast::Outcome::NoData => 0,
            };
            if let Err(e) = sock.send_to(&out, src).await {
                debug!(error = %e, %src, "DNS reply not sent");
            }
            continue;
        }
        let Ok(permit) = slow.clone().try_acquire_owned() else {
            debug!(%src, "DNS query dropped: too many queries in the slow path");
            continue;
        };
        let bytes = query.to_vec();
        let (sock, handler) = (sock.clone(), handler.clone());
        tokio::spawn(async move {
            slow_query(&bytes, src, sock, &handler).await;
            drop(permit);
        });
    }
}

/// A UDP query the fast path left: decoded and answered by the hickory-server handler.
async fn slow_query(bytes: &[u8], src: SocketAddr, sock: Arc<UdpSocket>, handler: &Handler) {
    use hickory_proto::serialize::binary::BinDecodable;
    let message = match hickory_server::authority::MessageRequest::from_bytes(bytes) {
        Ok(m) => m,
        Err(e) => {
            // A readable header gets FORMERR (as hickory-server does); anything else is dropped.
            let mut d = hickory_proto::serialize::binary::BinDecoder::new(bytes);
            if let Ok(h) = Header::read(&mut d) {
                if h.message_type() == MessageType::Query {
                    debug!(error = %e, %src, "malformed DNS query");
                    let reply = Message::error_msg(h.id(), h.op_code(), ResponseCode::FormErr);
                    if let Ok(b) = reply.to_vec() {
                        let _ = sock.send_to(&b, src).await;
                    }
                }
            }
            return;
        }
    };
    if message.message_type() != MessageType::Query {
        return; // no replies to replies (reflection)
    }
    let request = Request::new(message, src, hickory_proto::xfer::Protocol::Udp);
    handler
        .handle_request(&request, UdpReply { sock, dst: src })
        .await;
}

/// Sends a hickory-server reply over our UDP socket, bounded as hickory-server's own UDP replies
/// are (the reply's EDNS payload size, else 512 bytes; hickory truncates beyond it).
#[derive(Clone)]
struct UdpReply {
    sock: Arc<UdpSocket>,
    dst: SocketAddr,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpReply {
    async fn send_response<'a>(
        &mut self,
        response: hickory_server::authority::MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> std::io::Result<ResponseInfo> {
        let id = response.header().id();
        let max = response
            .get_edns()
            .as_ref()
            .map_or(fast::PLAIN_UDP_MAX as u16, |e| e.max_payload());
        let mut buf = Vec::with_capacity(fast::PLAIN_UDP_MAX);
        let mut encoder = hickory_proto::serialize::binary::BinEncoder::new(&mut buf);
        encoder.set_max_size(max);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(e) => {
                warn!(error = %e, "DNS reply could not be encoded; SERVFAIL");
                let reply = Message::error_msg(id, OpCode::Query, ResponseCode::ServFail);
                buf = reply.to_vec().map_err(std::io::Error::other)?;
                (*reply.header()).into()
            }
        };
        self.sock.send_to(&buf, self.dst).await?;
        Ok(info)
    }
}

/// Starts DNS on `config.listen` (UDP and TCP), answering from `endpoints` until the returned
/// server is dropped or shut down.
///
/// # Errors
/// A bad domain or a port that cannot be bound.
pub async fn start(
    config: &DnsConfig,
    endpoints: &Endpoints,
    metrics: Arc<DnsMetrics>,
) -> Result<(DnsServer, SocketAddr), DnsError> {
    let domain = check_domain(&config.domain)?;
    let plain = domain.to_ascii().trim_end_matches('.').to_string();
    let bind_err = |e| DnsError::Bind {
        addr: config.listen.to_string(),
        source: e,
    };
    let udp = Arc::new(UdpSocket::bind(config.listen).await.map_err(bind_err)?);
    let local = udp.local_addr().map_err(bind_err)?;
    let tcp = tokio::net::TcpListener::bind(local)
        .await
        .map_err(bind_err)?;
    let forwarders = if config.forward {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let f = parse_resolv_conf(&text, local);
        if f.is_empty() {
            warn!("--dns-forward: /etc/resolv.conf lists no usable nameserver; names outside the domain get SERVFAIL");
        }
        f
    } else {
        Vec::new()
    };
    let mut rx = endpoints.subscribe();
    let forward = config.forward;
    let first = Zone::build(&rx.borrow_and_update(), &plain, forward);
    metrics.names.store(first.len() as u64, Ordering::Relaxed);
    let zone = Arc::new(RwLock::new(Arc::new(first)));
    let handler = Handler::new(
        zone.clone(),
        domain,
        forwarders,
        config.forward,
        metrics.clone(),
    );
    // Rebuild the zone on each new table; the task ends when the table's sender is gone.
    {
        let (zone, metrics) = (zone.clone(), metrics.clone());
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let z = Zone::build(&rx.borrow_and_update(), &plain, forward);
                metrics.names.store(z.len() as u64, Ordering::Relaxed);
                if let Ok(mut w) = zone.write() {
                    *w = Arc::new(z);
                }
            }
        });
    }
    let loops = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_UDP_LOOPS);
    let shared = Arc::new(handler.clone());
    let slow = Arc::new(tokio::sync::Semaphore::new(MAX_SLOW_QUERIES));
    let udp_tasks = (0..loops)
        .map(|_| {
            tokio::spawn(udp_loop(
                udp.clone(),
                zone.clone(),
                shared.clone(),
                slow.clone(),
                metrics.clone(),
            ))
        })
        .collect();
    let mut server = ServerFuture::new(handler);
    server.register_listener(tcp, Duration::from_secs(5));
    info!(dns = %local, domain = %config.domain, forward = config.forward, udp_loops = loops, "DNS listening");
    Ok((
        DnsServer {
            tcp: server,
            udp: udp_tasks,
        },
        local,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::v1;

    #[test]
    fn mesos_dns_names() {
        assert_eq!(service_label("/prod/web").as_deref(), Some("web-prod"));
        assert_eq!(service_label("/web").as_deref(), Some("web"));
        assert_eq!(service_label("/a/b/c").as_deref(), Some("c-b-a"));
        assert_eq!(
            service_label("/Prod/My_App").as_deref(),
            Some("my-app-prod")
        );
        assert_eq!(service_label("/"), None);
        assert_eq!(service_label(&format!("/{}", "x".repeat(64))), None);
        assert_eq!(label("127.0.0.2").as_deref(), Some("127-0-0-2"));
    }

    #[test]
    fn the_zone_lists_a_srv_and_host_names() {
        let mut table = EndpointTable::default();
        table.apply(v1::master_message::EndpointUpdate {
            full: true,
            ack_seq: 0,
            services: vec![v1::ServiceEndpoints {
                framework: "services".into(),
                name: "/prod/web".into(),
                endpoints: vec![
                    v1::Endpoint {
                        task_id: "t1".into(),
                        host: "a1".into(),
                        ip: "10.0.0.1".into(),
                        port: 31000,
                        protocol: "tcp".into(),
                        ..Default::default()
                    },
                    v1::Endpoint {
                        task_id: "t2".into(),
                        host: "a2".into(),
                        ip: "10.0.0.2".into(),
                        port: 31001,
                        protocol: "udp,tcp".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
        });
        let z = Zone::build(&table, "agora", false);
        let (a, _) = z.lookup("web-prod.services.agora.").expect("A name");
        assert_eq!(a, [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]);
        let (_, srv) = z
            .lookup("_web-prod._tcp.services.agora.")
            .expect("SRV name");
        assert_eq!(
            srv,
            [
                (31000, "a1.web-prod.services.agora.".to_string()),
                (31001, "a2.web-prod.services.agora.".to_string())
            ]
        );
        let (_, udp) = z.lookup("_web-prod._udp.services.agora.").expect("udp SRV");
        assert_eq!(udp.len(), 1);
        assert_eq!(
            z.lookup("a2.web-prod.services.agora.").expect("host").0,
            [Ipv4Addr::new(10, 0, 0, 2)]
        );
        assert!(z.lookup("nope.services.agora.").is_none());
        assert!(
            z.covers("nope.services.agora.") && z.covers("agora.") && !z.covers("example.com.")
        );
    }

    #[test]
    fn prepared_answers_keep_the_asked_case_and_carry_srv_targets() {
        let mut table = EndpointTable::default();
        table.apply(v1::master_message::EndpointUpdate {
            full: true,
            ack_seq: 0,
            services: vec![v1::ServiceEndpoints {
                framework: "services".into(),
                name: "/prod/web".into(),
                endpoints: vec![v1::Endpoint {
                    task_id: "t1".into(),
                    host: "a1".into(),
                    ip: "10.0.0.1".into(),
                    port: 31000,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let domain = check_domain("agora").expect("domain");
        let zone = Arc::new(RwLock::new(Arc::new(Zone::build(&table, "agora", false))));
        let h = Handler::new(zone, domain, vec![], false, Arc::new(DnsMetrics::default()));
        assert!(h.covers("agora.") && h.covers("x.services.agora.") && !h.covers("xagora."));
        let asked = Name::from_ascii("Web-Prod.Services.Agora.").expect("name");
        let (code, answers, authority, _) =
            h.answer(&asked, "web-prod.services.agora.", RecordType::A);
        assert_eq!(code, ResponseCode::NoError);
        assert!(authority.is_empty());
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].name().to_ascii(), "Web-Prod.Services.Agora.");
        let srv = Name::from_ascii("_web-prod._tcp.services.agora.").expect("name");
        let (_, answers, _, additionals) =
            h.answer(&srv, "_web-prod._tcp.services.agora.", RecordType::SRV);
        assert_eq!(answers.len(), 1);
        assert_eq!(additionals.len(), 1);
        assert_eq!(
            additionals[0].name().to_ascii(),
            "a1.web-prod.services.agora."
        );
        let nope = Name::from_ascii("nope.services.agora.").expect("name");
        let (code, answers, authority, _) = h.answer(&nope, "nope.services.agora.", RecordType::A);
        assert_eq!(code, ResponseCode::NXDomain);
        assert!(answers.is_empty());
        assert_eq!(authority.len(), 1);
    }

    #[test]
    fn domains_and_resolv_conf() {
        assert!(check_domain("agora").is_ok());
        assert!(check_domain("cluster.local.").is_ok());
        for bad in ["", "-x", "a..b", "ex ample"] {
            let e = check_domain(bad).expect_err(bad).to_string();
            assert!(e.contains("--dns-domain"), "{e}");
        }
        let own: SocketAddr = "127.0.0.1:53".parse().expect("addr");
        let f = parse_resolv_conf(
            "# c\nnameserver 127.0.0.1\nnameserver 10.0.0.2\nsearch x\nnameserver fe80::1%eth0\n",
            own,
        );
        assert_eq!(
            f,
            [
                "10.0.0.2:53".parse::<SocketAddr>().expect("a"),
                "[fe80::1]:53".parse().expect("b")
            ]
        );
    }
}

#[cfg(test)]
mod fast_tests {
    use super::*;
    use agora_proto::v1;

    fn endpoint(task: &str, host: &str, ip: &str, port: u32) -> v1::Endpoint {
        v1::Endpoint {
            task_id: task.into(),
            host: host.into(),
            ip: ip.into(),
            port,
            protocol: "tcp".into(),
            ..Default::default()
        }
    }

    fn table_of(endpoints: Vec<v1::Endpoint>) -> EndpointTable {
        let mut table = EndpointTable::default();
        table.apply(v1::master_message::EndpointUpdate {
            full: true,
            ack_seq: 0,
            services: vec![v1::ServiceEndpoints {
                framework: "services".into(),
                name: "/prod/web".into(),
                endpoints,
                ..Default::default()
            }],
        });
        table
    }

    fn query(id: u16, name: &str, qtype: RecordType, edns: Option<bool>) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
        if let Some(dnssec_ok) = edns {
            let mut e = Edns::new();
            e.set_max_payload(4096).set_dnssec_ok(dnssec_ok);
            m.set_edns(e);
        }
        m.to_vec().expect("encode")
    }

    fn ask(zone: &Zone, q: &[u8]) -> Option<(fast::Outcome, Message)> {
        let mut out = Vec::new();
        let outcome = zone.replies().reply(q, &mut out)?;
        Some((outcome, Message::from_vec(&out).expect("the reply decodes")))
    }

    #[test]
    fn a_reply_carries_the_askers_id_flags_and_case() {
        let zone = Zone::build(
            &table_of(vec![
                endpoint("t1", "a1", "10.0.0.1", 31000),
                endpoint("t2", "a2", "10.0.0.2", 31001),
            ]),
            "agora",
            true,
        );
        let q = query(0xBEEF, "wEb-PrOd.SERVICES.agora.", RecordType::A, None);
        let (outcome, m) = ask(&zone, &q).expect("answered by the fast path");
        assert_eq!(outcome, fast::Outcome::Answer);
        assert_eq!(m.id(), 0xBEEF, "the asker's id");
        assert_eq!(m.message_type(), MessageType::Response);
        assert!(m.recursion_desired() && m.recursion_available() && m.authoritative());
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert_eq!(m.queries().len(), 1);
        assert_eq!(m.queries()[0].name().to_ascii(), "wEb-PrOd.SERVICES.agora.");
        let mut ips: Vec<String> = m
            .answers()
            .iter()
            .map(|r| {
                assert_eq!(
                    r.name().to_ascii(),
                    "wEb-PrOd.SERVICES.agora.",
                    "asked case"
                );
                assert!(r.ttl() <= TTL_SECONDS);
                r.data().to_string()
            })
            .collect();
        ips.sort();
        assert_eq!(ips, ["10.0.0.1", "10.0.0.2"]);
        assert!(m.extensions().is_none(), "no OPT to a query without one");
        // Another id, another case: the same prepared bytes, patched.
        let q = query(7, "web-prod.services.AGORA.", RecordType::A, None);
        let (_, m) = ask(&zone, &q).expect("answered");
        assert_eq!(m.id(), 7);
        assert_eq!(m.answers().len(), 2);
        assert_eq!(m.answers()[0].name().to_ascii(), "web-prod.services.AGORA.");
        // RD off in the query: off in the reply.
        let mut plain = Message::from_vec(&q).expect("q");
        plain.set_recursion_desired(false);
        let (_, m) = ask(&zone, &plain.to_vec().expect("q")).expect("answered");
        assert!(!m.recursion_desired());
    }

    #[test]
    fn fast_replies_match_the_handler_for_srv_nxdomain_and_nodata() {
        let zone = Zone::build(
            &table_of(vec![endpoint("t1", "a1", "10.0.0.1", 31000)]),
            "agora",
            false,
        );
        let handler = Handler::new(
            Arc::new(RwLock::new(Arc::new(Zone::build(
                &table_of(vec![endpoint("t1", "a1", "10.0.0.1", 31000)]),
                "agora",
                false,
            )))),
            check_domain("agora").expect("domain"),
            vec![],
            false,
            Arc::new(DnsMetrics::default()),
        );
        for (name, qtype, outcome) in [
            (
                "_web-prod._tcp.services.agora.",
                RecordType::SRV,
                fast::Outcome::Answer,
            ),
            (
                "web-prod.services.agora.",
                RecordType::ANY,
                fast::Outcome::Answer,
            ),
            (
                "a1.web-prod.services.agora.",
                RecordType::A,
                fast::Outcome::Answer,
            ),
            (
                "nope.services.agora.",
                RecordType::A,
                fast::Outcome::NxDomain,
            ),
            (
                "web-prod.services.agora.",
                RecordType::AAAA,
                fast::Outcome::NoData,
            ),
            ("agora.", RecordType::SOA, fast::Outcome::Answer),
            ("agora.", RecordType::A, fast::Outcome::NoData),
        ] {
            let (got, m) = ask(&zone, &query(1, name, qtype, None)).expect(name);
            assert_eq!(got, outcome, "{name} {qtype}");
            let asked = Name::from_ascii(name).expect("name");
            let (code, answers, authority, additionals) = handler.answer(&asked, name, qtype);
            assert_eq!(m.response_code(), code, "{name} {qtype}");
            assert_eq!(m.answers(), answers.as_slice(), "{name} {qtype}");
            assert_eq!(m.name_servers(), authority.as_slice(), "{name} {qtype}");
            assert_eq!(m.additionals(), additionals.as_slice(), "{name} {qtype}");
        }
        // Outside the domain, another class, a non-query: the handler's.
        assert!(ask(&zone, &query(1, "example.com.", RecordType::A, None)).is_none());
        let mut chaos =
            Message::from_vec(&query(1, "web-prod.services.agora.", RecordType::A, None))
                .expect("q");
        let mut q = chaos.queries()[0].clone();
        q.set_query_class(hickory_proto::rr::DNSClass::CH);
        chaos.take_queries();
        chaos.add_query(q);
        assert!(ask(&zone, &chaos.to_vec().expect("q")).is_none());
        let mut notify = Message::from_vec(&query(1, "agora.", RecordType::SOA, None)).expect("q");
        notify.set_op_code(OpCode::Notify);
        assert!(ask(&zone, &notify.to_vec().expect("q")).is_none());
        // A question that points into the header instead of spelling its name: the handler's.
        let mut pointed = query(1, "nope.services.agora.", RecordType::A, None);
        pointed.truncate(12);
        pointed.extend_from_slice(&[0xC0, 0x04, 0, 1, 0, 1]);
        assert!(zone.replies().reply(&pointed, &mut Vec::new()).is_none());
        // Garbage: never a panic, never a reply.
        for junk in [
            &[][..],
            &[0u8; 5],
            &[0xff; 40],
            &query(1, "agora.", RecordType::A, None)[..14],
        ] {
            assert!(zone.replies().reply(junk, &mut Vec::new()).is_none());
        }
    }

    #[test]
    fn edns_is_answered_with_edns_and_size_limits_hold() {
        let zone = Zone::build(
            &table_of(vec![endpoint("t1", "a1", "10.0.0.1", 31000)]),
            "agora",
            false,
        );
        for dnssec_ok in [false, true] {
            let q = query(
                9,
                "web-prod.services.agora.",
                RecordType::A,
                Some(dnssec_ok),
            );
            let (_, m) = ask(&zone, &q).expect("answered");
            let e = m.extensions().as_ref().expect("an OPT record");
            assert_eq!(e.max_payload(), fast::EDNS_UDP_MAX);
            assert_eq!(e.flags().dnssec_ok, dnssec_ok);
            assert_eq!(m.answers().len(), 1);
        }
        // 200 tasks: more than 512 bytes of A records; no EDNS → the handler (which truncates).
        let many: Vec<v1::Endpoint> = (0..200u32)
            .map(|i| {
                endpoint(
                    &format!("t{i}"),
                    &format!("h{i}"),
                    &format!("10.0.{}.{}", i / 250, i % 250 + 1),
                    31000,
                )
            })
            .collect();
        let zone = Zone::build(&table_of(many), "agora", false);
        assert!(ask(
            &zone,
            &query(1, "web-prod.services.agora.", RecordType::A, None)
        )
        .is_none());
        // With EDNS the reply may be up to 1232 bytes: 200 A records (16 bytes each) are more.
        assert!(ask(
            &zone,
            &query(1, "web-prod.services.agora.", RecordType::A, Some(false))
        )
        .is_none());
        assert!(ask(
            &zone,
            &query(1, "h1.web-prod.services.agora.", RecordType::A, None)
        )
        .is_some());
    }

    #[test]
    fn a_name_whose_tasks_turn_unhealthy_is_gone_at_the_next_table_change() {
        let q = query(3, "web-prod.services.agora.", RecordType::A, None);
        let healthy = table_of(vec![
            endpoint("t1", "a1", "10.0.0.1", 31000),
            endpoint("t2", "a2", "10.0.0.2", 31000),
        ]);
        let (_, m) = ask(&Zone::build(&healthy, "agora", false), &q).expect("answered");
        assert_eq!(m.answers().len(), 2);
        // t2 unhealthy: the master's next table lists only t1.
        let one = table_of(vec![endpoint("t1", "a1", "10.0.0.1", 31000)]);
        let zone = Zone::build(&one, "agora", false);
        let (_, m) = ask(&zone, &q).expect("answered");
        assert_eq!(
            m.answers()
                .iter()
                .map(|r| r.data().to_string())
                .collect::<Vec<_>>(),
            ["10.0.0.1"]
        );
        let (outcome, _) = ask(
            &zone,
            &query(3, "a2.web-prod.services.agora.", RecordType::A, None),
        )
        .expect("answered");
        assert_eq!(outcome, fast::Outcome::NxDomain);
        // None healthy: the service has no endpoints; its names are unknown.
        let zone = Zone::build(&table_of(vec![]), "agora", false);
        let (outcome, m) = ask(&zone, &q).expect("answered");
        assert_eq!(outcome, fast::Outcome::NxDomain);
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
        assert!(m.answers().is_empty());
    }
}
