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
#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Header, Message, MessageType, OpCode, Query, ResponseCode};
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
    /// The zone of `table` under `domain` (no trailing dot).
    pub fn build(table: &EndpointTable, domain: &str) -> Zone {
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
        Zone {
            domain: format!("{domain}."),
            names,
            prepared,
        }
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

impl Handler {
    fn new(
        zone: Arc<RwLock<Arc<Zone>>>,
        domain: Name,
        forwarders: Vec<SocketAddr>,
        forward: bool,
        metrics: Arc<DnsMetrics>,
    ) -> Handler {
        let mname = Name::from_ascii("ns")
            .and_then(|n| n.append_domain(&domain))
            .unwrap_or_else(|_| domain.clone());
        let rname = Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(&domain))
            .unwrap_or_else(|_| domain.clone());
        let soa = record(
            &domain,
            RData::SOA(SOA::new(mname, rname, 1, 60, 60, 3600, TTL_SECONDS)),
        );
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
        let builder = MessageResponseBuilder::from_message_request(request);
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

/// Starts DNS on `config.listen` (UDP and TCP), answering from `endpoints` until the returned
/// server is dropped or shut down.
///
/// # Errors
/// A bad domain or a port that cannot be bound.
pub async fn start(
    config: &DnsConfig,
    endpoints: &Endpoints,
    metrics: Arc<DnsMetrics>,
) -> Result<(ServerFuture<Handler>, SocketAddr), DnsError> {
    let domain = check_domain(&config.domain)?;
    let plain = domain.to_ascii().trim_end_matches('.').to_string();
    let bind_err = |e| DnsError::Bind {
        addr: config.listen.to_string(),
        source: e,
    };
    let udp = UdpSocket::bind(config.listen).await.map_err(bind_err)?;
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
    let zone = Arc::new(RwLock::new(Arc::new(Zone::build(
        &rx.borrow_and_update(),
        &plain,
    ))));
    let handler = Handler::new(
        zone.clone(),
        domain,
        forwarders,
        config.forward,
        metrics.clone(),
    );
    // Rebuild the zone on each new table; the task ends when the table's sender is gone.
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let z = Zone::build(&rx.borrow_and_update(), &plain);
            metrics.names.store(z.len() as u64, Ordering::Relaxed);
            if let Ok(mut w) = zone.write() {
                *w = Arc::new(z);
            }
        }
    });
    let mut server = ServerFuture::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5));
    info!(dns = %local, domain = %config.domain, forward = config.forward, "DNS listening");
    Ok((server, local))
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
        let z = Zone::build(&table, "agora");
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
        let zone = Arc::new(RwLock::new(Arc::new(Zone::build(&table, "agora"))));
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
