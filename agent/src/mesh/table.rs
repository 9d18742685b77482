//! The mesh's pure core: which listeners the endpoint table asks for ([`routes`]), and per
//! service port the balancer with its ejections ([`Balancer`]). Synchronous, no I/O, time passed
//! in.
//!
//! A service port belongs to the first service (in the table's order) that lists it; a second
//! service claiming the same port is left out (logged by the shell). HTTP mode follows marathon-lb:
//! label `HAPROXY_{n}_MODE=http` or any `HAPROXY_{n}_VHOST`, where `n` is the index of the service
//! port among the service's service ports in ascending order (the services framework assigns an
//! app's service ports in its port-definition order from an ascending range).
//!
//! Balancing follows marathon-lb's `HAPROXY_{n}_BALANCE` (HAProxy's `balance`): `roundrobin`
//! (the default) or `leastconn` — the endpoint with the fewest connections (TCP mode) or requests
//! (HTTP mode) open through this agent's mesh, ties broken in round robin. The services framework
//! refuses other values ([`agora_proto::MESH_BALANCE_VALUES`]); a value that reaches the agent anyway (another
//! framework) means round robin.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_proto::v1;

use crate::endpoints::{EndpointTable, ServiceKey};

/// Longest virtual host name kept (a DNS name).
pub const MAX_VHOST: usize = 253;
/// Most virtual hosts per service port.
pub const MAX_VHOSTS_PER_PORT: usize = 64;

/// How a service port is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each connection relayed to one endpoint.
    Tcp,
    /// HTTP/1.1, balanced per request.
    Http,
}

/// How a service port picks an endpoint (`HAPROXY_{n}_BALANCE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// In turn.
    #[default]
    RoundRobin,
    /// The fewest open connections/requests on this agent, ties in turn.
    LeastConn,
}

impl Balance {
    /// A `HAPROXY_{n}_BALANCE` value; `None` for one the mesh does not implement.
    pub fn parse(value: &str) -> Option<Balance> {
        let [round_robin, least_conn] = agora_proto::MESH_BALANCE_VALUES;
        let v = value.trim();
        if v.eq_ignore_ascii_case(round_robin) {
            Some(Balance::RoundRobin)
        } else if v.eq_ignore_ascii_case(least_conn) {
            Some(Balance::LeastConn)
        } else {
            None
        }
    }
}

/// Where one endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Upstream {
    pub task_id: String,
    /// The agent's IP when the master knows it.
    pub ip: Option<IpAddr>,
    /// The agent's hostname (used when `ip` is unknown).
    pub host: String,
    pub port: u16,
}

impl Upstream {
    /// `ip:port` (IPv6 bracketed) or `host:port`.
    pub fn authority(&self) -> String {
        match self.ip {
            Some(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            Some(ip) => format!("{ip}:{}", self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// What the table asks one service port to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub service: ServiceKey,
    pub mode: Mode,
    pub balance: Balance,
    /// Lower-cased virtual hosts (`HAPROXY_{n}_VHOST`, comma separated).
    pub vhosts: Vec<String>,
    pub upstreams: Vec<Upstream>,
    /// The service's entry in the table this spec was built from: a new `Arc` means the master
    /// sent an update for the service (see [`Balancer::update`]).
    pub generation: usize,
}

/// A label value of `HAPROXY_{n}_{what}` of a service.
fn haproxy_label<'a>(labels: &'a HashMap<String, String>, n: usize, what: &str) -> Option<&'a str> {
    labels
        .get(&format!("HAPROXY_{n}_{what}"))
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
}

/// Parses a `HAPROXY_{n}_VHOST` value: comma separated host names, lower-cased; names that are
/// not host names (empty, too long, characters other than `a-z 0-9 - . _` or a leading `*.`) are
/// left out.
pub fn parse_vhosts(value: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for h in value.split(',').map(|h| h.trim().to_ascii_lowercase()) {
        let name = h.strip_prefix("*.").unwrap_or(&h);
        let valid = !name.is_empty()
            && h.len() <= MAX_VHOST
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if valid && !out.contains(&h) && out.len() < MAX_VHOSTS_PER_PORT {
            out.push(h);
        }
    }
    out
}

/// The routes the table asks for: service port → spec. Endpoints with service port 0 or a
/// protocol other than TCP are not meshed. Returns also the ports claimed by more than one
/// service: (port, the service left out).
pub fn routes(table: &EndpointTable) -> (BTreeMap<u16, RouteSpec>, Vec<(u16, ServiceKey)>) {
    let mut out: BTreeMap<u16, RouteSpec> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for (key, svc) in &table.services {
        let generation = Arc::as_ptr(svc) as usize;
        let tcp = |e: &&v1::Endpoint| {
            e.service_port != 0 && (e.protocol.is_empty() || e.protocol.eq_ignore_ascii_case("tcp"))
        };
        let ports: BTreeSet<u16> = svc
            .endpoints
            .iter()
            .filter(tcp)
            .filter_map(|e| u16::try_from(e.service_port).ok())
            .collect();
        for (n, sp) in ports.iter().enumerate() {
            if out.get(sp).is_some_and(|r| &r.service != key) {
                conflicts.push((*sp, key.clone()));
                continue;
            }
            let vhosts = haproxy_label(&svc.labels, n, "VHOST")
                .map(parse_vhosts)
                .unwrap_or_default();
            let http = !vhosts.is_empty()
                || haproxy_label(&svc.labels, n, "MODE")
                    .is_some_and(|m| m.eq_ignore_ascii_case("http"));
            let balance = haproxy_label(&svc.labels, n, "BALANCE")
                .and_then(Balance::parse)
                .unwrap_or_default();
            let mut upstreams: Vec<Upstream> = svc
                .endpoints
                .iter()
                .filter(tcp)
                .filter(|e| u32::from(*sp) == e.service_port)
                .filter_map(|e| {
                    Some(Upstream {
                        task_id: e.task_id.clone(),
                        ip: e.ip.parse().ok(),
                        host: e.host.clone(),
                        port: u16::try_from(e.port).ok().filter(|p| *p != 0)?,
                    })
                })
                .filter(|u| u.ip.is_some() || !u.host.is_empty())
                .collect();
            upstreams.sort();
            upstreams.dedup();
            out.insert(
                *sp,
                RouteSpec {
                    service: key.clone(),
                    mode: if http { Mode::Http } else { Mode::Tcp },
                    balance,
                    vhosts,
                    upstreams,
                    generation,
                },
            );
        }
    }
    (out, conflicts)
}

/// What the shell must change to go from the listeners it has to the routes asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListenerPlan {
    /// Ports to start listening on.
    pub start: Vec<u16>,
    /// Ports to stop listening on (their open connections keep running).
    pub stop: Vec<u16>,
    /// Ports whose listener stays and whose balancer gets the new spec.
    pub update: Vec<u16>,
}

/// `running`: port → (service, mode) of each listener the shell has. A port whose service or mode
/// changed is stopped and started again.
pub fn plan(
    running: &BTreeMap<u16, (ServiceKey, Mode)>,
    wanted: &BTreeMap<u16, RouteSpec>,
) -> ListenerPlan {
    let mut p = ListenerPlan::default();
    for (port, (svc, mode)) in running {
        match wanted.get(port) {
            Some(w) if &w.service == svc && w.mode == *mode => p.update.push(*port),
            Some(_) => {
                p.stop.push(*port);
                p.start.push(*port);
            }
            None => p.stop.push(*port),
        }
    }
    for port in wanted.keys() {
        if !running.contains_key(port) {
            p.start.push(*port);
        }
    }
    p.start.sort_unstable();
    p
}

/// One endpoint as the balancer sees it.
#[derive(Debug, Clone)]
struct Slot {
    upstream: Upstream,
    /// Connections (TCP) or requests (HTTP) open to it now.
    active: u64,
    ejected_until: Option<Instant>,
}

/// Round robin or least connections over a service port's endpoints, skipping ejected ones.
/// Endpoints are picked by index into the current list; a pick carries the upstream so a list
/// change in between is safe.
#[derive(Debug, Clone)]
pub struct Balancer {
    slots: Vec<Slot>,
    next: usize,
    balance: Balance,
    generation: usize,
    eject_for: Duration,
}

/// A chosen endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    pub upstream: Upstream,
    /// It was ejected and chosen only because no other endpoint was left.
    pub was_ejected: bool,
}

impl Balancer {
    /// `eject_for`: how long an endpoint that refused stays out at most.
    pub fn new(spec: &RouteSpec, eject_for: Duration) -> Self {
        let mut b = Balancer {
            slots: Vec::new(),
            next: 0,
            balance: spec.balance,
            generation: 0,
            eject_for,
        };
        b.update(spec);
        b
    }

    /// Takes a new spec: endpoints no longer listed get no new connection (open ones keep
    /// running; they are not tracked here); kept endpoints keep their counts; an ejected endpoint
    /// comes back when the master sent a new update for the service that lists it.
    pub fn update(&mut self, spec: &RouteSpec) {
        let fresh = spec.generation != self.generation;
        let mut old: HashMap<Upstream, Slot> = self
            .slots
            .drain(..)
            .map(|s| (s.upstream.clone(), s))
            .collect();
        self.slots = spec
            .upstreams
            .iter()
            .map(|u| match old.remove(u) {
                Some(mut s) => {
                    if fresh {
                        s.ejected_until = None;
                    }
                    s
                }
                None => Slot {
                    upstream: u.clone(),
                    active: 0,
                    ejected_until: None,
                },
            })
            .collect();
        self.generation = spec.generation;
        self.balance = spec.balance;
        if self.slots.is_empty() {
            self.next = 0;
        } else {
            self.next %= self.slots.len();
        }
    }

    /// Endpoints listed.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Endpoints ejected at `now`.
    pub fn ejected(&self, now: Instant) -> usize {
        self.slots
            .iter()
            .filter(|s| s.ejected_until.is_some_and(|t| t > now))
            .count()
    }

    /// The endpoint for a new connection/request among those not ejected and not in `tried`:
    /// round robin, the next in turn; least connections, the fewest [`Balancer::active`], the
    /// next in turn among equals. When every untried endpoint is ejected, the one whose ejection
    /// ends first (better a try than a certain failure); `None` when all were tried. The caller
    /// counts the connection with [`Balancer::track`] from the pick on.
    pub fn pick(&mut self, now: Instant, tried: &[Upstream]) -> Option<Pick> {
        let n = self.slots.len();
        let mut fallback: Option<(usize, Instant)> = None;
        let mut best: Option<(usize, u64)> = None;
        for k in 0..n {
            let i = (self.next + k) % n;
            let s = &self.slots[i];
            if tried.contains(&s.upstream) {
                continue;
            }
            match s.ejected_until {
                Some(t) if t > now => {
                    if fallback.is_none_or(|(_, f)| t < f) {
                        fallback = Some((i, t));
                    }
                }
                _ => {
                    if best.is_none_or(|(_, a)| s.active < a) {
                        best = Some((i, s.active));
                    }
                    if self.balance == Balance::RoundRobin {
                        break;
                    }
                }
            }
        }
        if let Some((i, _)) = best {
            self.next = (i + 1) % n;
            return Some(Pick {
                upstream: self.slots[i].upstream.clone(),
                was_ejected: false,
            });
        }
        fallback.map(|(i, _)| Pick {
            upstream: self.slots[i].upstream.clone(),
            was_ejected: true,
        })
    }

    /// `u` refused, reset or timed out a connect: out until the master's next update for the
    /// service lists it, or `eject_for`. Returns whether it was newly ejected.
    pub fn eject(&mut self, u: &Upstream, now: Instant) -> bool {
        match self.slots.iter_mut().find(|s| &s.upstream == u) {
            Some(s) => {
                let newly = s.ejected_until.is_none_or(|t| t <= now);
                s.ejected_until = Some(now + self.eject_for);
                newly
            }
            None => false,
        }
    }

    /// A connect to `u` succeeded: it is not ejected (any more).
    pub fn succeeded(&mut self, u: &Upstream) {
        if let Some(s) = self.slots.iter_mut().find(|s| &s.upstream == u) {
            s.ejected_until = None;
        }
    }

    /// Counts a connection/request opened to (`+1`) or closed on (`-1`) `u`.
    pub fn track(&mut self, u: &Upstream, opened: bool) {
        if let Some(s) = self.slots.iter_mut().find(|s| &s.upstream == u) {
            s.active = if opened {
                s.active.saturating_add(1)
            } else {
                s.active.saturating_sub(1)
            };
        }
    }

    /// Open connections/requests of `u` as tracked (0 once it left the list).
    pub fn active(&self, u: &Upstream) -> u64 {
        self.slots
            .iter()
            .find(|s| &s.upstream == u)
            .map_or(0, |s| s.active)
    }
}

/// Normalises a `Host` header value for virtual-host lookup: lower-cased, port and trailing dot
/// removed; `None` when it is not a plausible host name.
pub fn host_of(value: &str) -> Option<String> {
    let v = value.trim();
    let host = if let Some(rest) = v.strip_prefix('[') {
        rest.split(']').next()?
    } else {
        v.rsplit_once(':')
            .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
            .map_or(v, |(h, _)| h)
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty() && host.len() <= MAX_VHOST).then_some(host)
}

/// Finds the route of `host` in `vhosts` (exact names first, then `*.suffix` wildcards, longest
/// suffix first).
pub fn match_vhost<'a, T>(vhosts: &'a HashMap<String, T>, host: &str) -> Option<&'a T> {
    if let Some(t) = vhosts.get(host) {
        return Some(t);
    }
    let mut rest = host;
    while let Some((_, tail)) = rest.split_once('.') {
        if let Some(t) = vhosts.get(&format!("*.{tail}")) {
            return Some(t);
        }
        rest = tail;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::v1::master_message::EndpointUpdate;

    fn ep(task: &str, ip: &str, port: u32, sp: u32) -> v1::Endpoint {
        v1::Endpoint {
            task_id: task.into(),
            agent_id: "a".into(),
            host: "h".into(),
            ip: ip.into(),
            port,
            service_port: sp,
            protocol: "tcp".into(),
            port_name: String::new(),
        }
    }

    fn svc(name: &str, eps: Vec<v1::Endpoint>, labels: &[(&str, &str)]) -> v1::ServiceEndpoints {
        v1::ServiceEndpoints {
            framework: "services".into(),
            name: name.into(),
            endpoints: eps,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn table(services: Vec<v1::ServiceEndpoints>) -> EndpointTable {
        let mut t = EndpointTable::default();
        t.apply(EndpointUpdate {
            full: true,
            ack_seq: 0,
            services,
        });
        t
    }

    #[test]
    fn routes_follow_service_ports_modes_and_vhosts() {
        let t = table(vec![
            svc(
                "/web",
                vec![
                    ep("w1", "127.0.0.2", 31000, 10000),
                    ep("w1", "127.0.0.2", 31001, 10001),
                    ep("w2", "127.0.0.3", 31000, 10000),
                    ep("w2", "127.0.0.3", 31001, 10001),
                ],
                &[(
                    "HAPROXY_1_VHOST",
                    "Web.Example.com, api.example.com,bad host,",
                )],
            ),
            svc(
                "/db",
                vec![
                    ep("d1", "", 31002, 10002),
                    ep("d2", "10.0.0.1", 31003, 0),
                    v1::Endpoint {
                        protocol: "udp".into(),
                        ..ep("d3", "10.0.0.1", 31004, 10003)
                    },
                ],
                &[("HAPROXY_0_MODE", "http")],
            ),
            // Claims /web's port: left out.
            svc("/xx", vec![ep("x1", "10.0.0.9", 31009, 10000)], &[]),
        ]);
        let (r, conflicts) = routes(&t);
        assert_eq!(r.keys().copied().collect::<Vec<_>>(), [10000, 10001, 10002]);
        assert_eq!(r[&10000].mode, Mode::Tcp);
        assert_eq!(r[&10000].upstreams.len(), 2);
        assert_eq!(r[&10001].mode, Mode::Http);
        assert_eq!(r[&10001].vhosts, ["web.example.com", "api.example.com"]);
        assert_eq!(r[&10002].mode, Mode::Http);
        assert_eq!(r[&10002].upstreams[0].ip, None);
        assert_eq!(r[&10002].upstreams[0].authority(), "h:31002");
        assert_eq!(
            conflicts,
            [(10000, ("services".to_string(), "/xx".to_string()))]
        );
    }

    #[test]
    fn plan_touches_only_changed_ports() {
        let key = |n: &str| ("services".to_string(), n.to_string());
        let spec = |n: &str, mode| RouteSpec {
            service: key(n),
            mode,
            balance: Balance::RoundRobin,
            vhosts: vec![],
            upstreams: vec![],
            generation: 1,
        };
        let running = BTreeMap::from([
            (1, (key("/a"), Mode::Tcp)),
            (2, (key("/b"), Mode::Tcp)),
            (3, (key("/c"), Mode::Tcp)),
        ]);
        let wanted = BTreeMap::from([
            (1, spec("/a", Mode::Tcp)),
            (2, spec("/b", Mode::Http)),
            (4, spec("/d", Mode::Tcp)),
        ]);
        let p = plan(&running, &wanted);
        assert_eq!(p.update, [1]);
        assert_eq!(p.stop, [2, 3]);
        assert_eq!(p.start, [2, 4]);
    }

    fn up(task: &str) -> Upstream {
        Upstream {
            task_id: task.into(),
            ip: "127.0.0.1".parse().ok(),
            host: String::new(),
            port: 1,
        }
    }

    fn spec_of(tasks: &[&str], generation: usize) -> RouteSpec {
        RouteSpec {
            service: ("f".into(), "/s".into()),
            mode: Mode::Tcp,
            balance: Balance::RoundRobin,
            vhosts: vec![],
            upstreams: tasks.iter().map(|t| up(t)).collect(),
            generation,
        }
    }

    #[test]
    fn round_robin_skips_ejected_and_tried_endpoints() {
        let now = Instant::now();
        let mut b = Balancer::new(&spec_of(&["a", "b", "c"], 1), Duration::from_secs(5));
        let order: Vec<String> = (0..6)
            .map(|_| {
                b.pick(now, &[])
                    .map(|p| p.upstream.task_id)
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(order, ["a", "b", "c", "a", "b", "c"]);
        assert!(b.eject(&up("b"), now));
        assert!(!b.eject(&up("b"), now), "already ejected");
        assert_eq!(b.ejected(now), 1);
        let order: Vec<String> = (0..4)
            .map(|_| {
                b.pick(now, &[])
                    .map(|p| p.upstream.task_id)
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(order, ["a", "c", "a", "c"]);
        // A retry never goes back to an endpoint already tried.
        let p = b.pick(now, &[up("a")]).expect("pick");
        assert_eq!(p.upstream.task_id, "c");
        // Only ejected endpoints left: the one ejected first is tried rather than none.
        let p = b.pick(now, &[up("a"), up("c")]).expect("pick");
        assert_eq!((p.upstream.task_id.as_str(), p.was_ejected), ("b", true));
        assert_eq!(b.pick(now, &[up("a"), up("b"), up("c")]), None);
        // The ejection times out.
        assert_eq!(b.ejected(now + Duration::from_secs(6)), 0);
        let picks: BTreeSet<String> = (0..3)
            .map(|_| {
                b.pick(now + Duration::from_secs(6), &[])
                    .map(|p| p.upstream.task_id)
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(picks.len(), 3);
    }

    #[test]
    fn a_new_update_listing_an_ejected_endpoint_brings_it_back() {
        let now = Instant::now();
        let mut b = Balancer::new(&spec_of(&["a", "b"], 1), Duration::from_secs(60));
        b.track(&up("a"), true);
        b.eject(&up("b"), now);
        // The same table entry again (another service changed): still ejected.
        b.update(&spec_of(&["a", "b"], 1));
        assert_eq!(b.ejected(now), 1);
        // A new update for the service lists it: back.
        b.update(&spec_of(&["a", "b"], 2));
        assert_eq!(b.ejected(now), 0);
        assert_eq!(b.active(&up("a")), 1, "counts survive updates");
        // Removed: no new picks, nothing tracked; re-added fresh.
        b.update(&spec_of(&["b"], 3));
        assert_eq!(b.len(), 1);
        assert!((0..3).all(|_| b.pick(now, &[]).map(|p| p.upstream) == Some(up("b"))));
        b.track(&up("a"), false);
        assert_eq!(b.active(&up("a")), 0);
        b.update(&spec_of(&[], 4));
        assert!(b.is_empty());
        assert_eq!(b.pick(now, &[]), None);
    }

    fn least(tasks: &[&str], generation: usize) -> RouteSpec {
        RouteSpec {
            balance: Balance::LeastConn,
            ..spec_of(tasks, generation)
        }
    }

    fn picked(b: &mut Balancer, now: Instant, tried: &[Upstream]) -> String {
        b.pick(now, tried)
            .map(|p| p.upstream.task_id)
            .unwrap_or_default()
    }

    #[test]
    fn the_balance_label_picks_the_balancer_per_service_port() {
        let t = table(vec![svc(
            "/web",
            vec![
                ep("w1", "127.0.0.2", 31000, 10000),
                ep("w1", "127.0.0.2", 31001, 10001),
                ep("w1", "127.0.0.2", 31002, 10002),
            ],
            &[
                ("HAPROXY_0_BALANCE", "leastconn"),
                ("HAPROXY_1_BALANCE", " RoundRobin "),
                ("HAPROXY_2_BALANCE", "source"),
            ],
        )]);
        let (r, _) = routes(&t);
        assert_eq!(r[&10000].balance, Balance::LeastConn);
        assert_eq!(r[&10001].balance, Balance::RoundRobin);
        assert_eq!(
            r[&10002].balance,
            Balance::RoundRobin,
            "unknown: the default"
        );
        assert_eq!(Balance::parse("LEASTCONN"), Some(Balance::LeastConn));
        assert_eq!(Balance::parse("static-rr"), None);
    }

    #[test]
    fn least_connections_picks_the_fewest_open_ties_in_turn() {
        let now = Instant::now();
        let mut b = Balancer::new(&least(&["a", "b", "c"], 1), Duration::from_secs(5));
        // All at 0: in turn, as round robin.
        let order: Vec<String> = (0..3)
            .map(|_| {
                let t = picked(&mut b, now, &[]);
                b.track(&up(&t), true);
                t
            })
            .collect();
        assert_eq!(order, ["a", "b", "c"]);
        // a keeps a long connection; b and c close theirs: new ones alternate b, c, never a.
        b.track(&up("b"), false);
        b.track(&up("c"), false);
        let order: Vec<String> = (0..4)
            .map(|_| {
                let t = picked(&mut b, now, &[]);
                b.track(&up(&t), true);
                b.track(&up(&t), false);
                t
            })
            .collect();
        assert_eq!(order, ["b", "c", "b", "c"]);
        // Held connections: a 1, b 2, c 0 → c; then a 1, b 2, c 1 → a (first in turn of the 1s).
        b.track(&up("b"), true);
        b.track(&up("b"), true);
        assert_eq!(picked(&mut b, now, &[]), "c");
        b.track(&up("c"), true);
        assert_eq!(picked(&mut b, now, &[]), "a");
        // The counts survive a new update; a changed label switches the balancer in place.
        b.update(&least(&["a", "b", "c"], 2));
        assert_eq!(b.active(&up("b")), 2);
        b.update(&spec_of(&["a", "b", "c"], 3));
        let order: Vec<String> = (0..3).map(|_| picked(&mut b, now, &[])).collect();
        assert_eq!(order, ["b", "c", "a"], "round robin again, counts ignored");
    }

    #[test]
    fn least_connections_skips_ejected_and_tried_endpoints() {
        let now = Instant::now();
        let mut b = Balancer::new(&least(&["a", "b", "c"], 1), Duration::from_secs(5));
        b.track(&up("b"), true);
        b.track(&up("c"), true);
        b.track(&up("c"), true);
        // a has the fewest but refused: ejected, so b (1) before c (2).
        assert!(b.eject(&up("a"), now));
        assert_eq!(picked(&mut b, now, &[]), "b");
        // A retry after b failed goes to c, not back to b nor to the ejected a.
        assert_eq!(picked(&mut b, now, &[up("b")]), "c");
        // Only the ejected a left untried: tried rather than nothing.
        let p = b.pick(now, &[up("b"), up("c")]).expect("pick");
        assert_eq!((p.upstream.task_id.as_str(), p.was_ejected), ("a", true));
        // The ejection over: a (0 open) is the one.
        let later = now + Duration::from_secs(6);
        assert_eq!(picked(&mut b, later, &[]), "a");
        // A fresh update listing a also ends its ejection.
        b.eject(&up("a"), later);
        b.update(&least(&["a", "b", "c"], 2));
        assert_eq!(picked(&mut b, later, &[]), "a");
        // Removed endpoints are never picked, however idle.
        b.update(&least(&["b", "c"], 3));
        assert_eq!(picked(&mut b, later, &[]), "b");
    }

    #[test]
    fn hosts_and_vhost_matching() {
        assert_eq!(
            host_of("Web.Example.com:8080").as_deref(),
            Some("web.example.com")
        );
        assert_eq!(
            host_of("web.example.com.").as_deref(),
            Some("web.example.com")
        );
        assert_eq!(host_of("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(host_of(""), None);
        let m = HashMap::from([
            ("web.example.com".to_string(), 1),
            ("*.example.com".to_string(), 2),
        ]);
        assert_eq!(match_vhost(&m, "web.example.com"), Some(&1));
        assert_eq!(match_vhost(&m, "a.b.example.com"), Some(&2));
        assert_eq!(match_vhost(&m, "example.org"), None);
        assert_eq!(parse_vhosts("*.Example.com,x y"), ["*.example.com"]);
    }
}
