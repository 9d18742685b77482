//! Fuzzing the master's accept validation at scale, on the pure `Bookkeeping` core with real
//! offers: two agents (one with a static reservation), two frameworks in two roles, and a few
//! accepts each naming real, foreign, unknown or repeated offers with random operations
//! (LAUNCH, LAUNCH_GROUP, RESERVE, UNRESERVE, empty) and random TaskInfos (ids, agent ids,
//! commands, containers, executors, resources valid or not).
//!
//! After every accept:
//! - nothing panicked;
//! - no agent is over-committed: its tasks plus its outstanding offers fit in its total, and
//!   what one accept launched fits in the offers it named;
//! - a refused accept (an `Err`) leaves tasks, agents and other frameworks' offers as they were
//!   (its own named offers go back to the allocator, as in Mesos) and sends nothing to agents;
//! - task ids are unique per framework, offer ids are unique, each launched task is sent to its
//!   agent exactly once;
//! - every error names a field (`offer_ids`, `operations[i]…`, `filters.refuse_seconds`, …), and
//!   every TASK_ERROR names the task's field.
//!
//! Hostile inputs (see `fuzz_hostile_*`): tasks also carry arbitrary kill policies, health checks
//! (any f64 timing, any u32 count and port) and huge names, commands, environments and labels;
//! Kill carries arbitrary kill policies, Decline arbitrary filters, agents arbitrary status
//! messages. Nothing panics, and nothing the master keeps or forwards is outside its bounds.
//!
//! `PROPTEST_CASES` overrides the case count; see docs/reliability.md.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agora_master::bookkeeping::{Bookkeeping, Clock, Outbound, Settings};
use agora_master::registry::Registry;
use agora_master::AllocatorConfig;
use agora_proto::v1::{self, event, master_message, operation, TaskState};
use agora_proto::Resources;
use proptest::prelude::*;

/// How often the generated accepts reach each outcome, so a generator that stops reaching
/// launches or refusals fails `generators_reach_every_outcome`.
static LAUNCHED: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicUsize = AtomicUsize::new(0);
static TASK_ERRORS: AtomicUsize = AtomicUsize::new(0);

fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn settings() -> Settings {
    Settings {
        master_info: v1::MasterInfo {
            id: "m1".into(),
            address: "127.0.0.1:5050".into(),
            ..Default::default()
        },
        agent_timeout: Duration::from_secs(1000),
        agent_gone_timeout: Duration::from_secs(10_000),
        offer_timeout: None,
        framework_recovery_timeout: Duration::from_secs(60),
        framework_heartbeat: Duration::from_secs(15),
        completed_tasks_kept: 100,
        agent_reregister_timeout: Duration::from_secs(20),
        drain_period: Duration::from_secs(2),
    }
}

fn res(s: &str) -> Vec<v1::Resource> {
    Resources::parse(s)
        .map(|r| r.to_proto())
        .unwrap_or_default()
}

fn sum(resources: &[v1::Resource]) -> Resources {
    Resources::from_proto(resources).unwrap_or_default()
}

/// The generated parts of one accept; offers are chosen by index among the live ones.
#[derive(Debug, Clone)]
struct AcceptSpec {
    framework: usize,
    offers: Vec<OfferRef>,
    operations: Vec<Op>,
    refuse: Option<f64>,
    stale_stream: bool,
}

#[derive(Debug, Clone)]
enum OfferRef {
    Mine(usize),
    Foreign(usize),
    Unknown(String),
}

#[derive(Debug, Clone)]
enum Op {
    Empty,
    Launch(Vec<TaskSpec>),
    Group(Vec<TaskSpec>),
    Reserve(String),
    Unreserve(String),
}

#[derive(Debug, Clone)]
struct TaskSpec {
    id: String,
    agent_id: Option<String>,
    command: Option<String>,
    docker_image: Option<String>,
    executor: Option<String>,
    resources: Vec<v1::Resource>,
    hostile: Hostile,
}

/// The hostile parts of a task; mostly absent so that the other outcomes stay reachable.
#[derive(Debug, Clone, Default)]
struct Hostile {
    kill_grace: Option<f64>,
    health: Option<(f64, f64, f64, f64, u32, u32)>,
    name_len: usize,
    command_len: usize,
    env_vars: usize,
    labels: usize,
    multibyte: bool,
}

/// Any f64, weighted towards the edges.
fn arb_seconds() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-1.0),
        Just(1e300),
        Just(f64::MAX),
        Just(3600.0),
        Just(3_600.000_001),
        0.0f64..100_000.0,
    ]
}

fn arb_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(255),
        Just(256),
        Just(4096),
        Just(4097),
        Just(65_536),
        Just(65_537),
        Just(1 << 20),
    ]
}

fn arb_hostile() -> impl Strategy<Value = Hostile> {
    let h = (
        prop::option::of(arb_seconds()),
        prop::option::of((
            arb_seconds(),
            arb_seconds(),
            arb_seconds(),
            arb_seconds(),
            prop_oneof![Just(0u32), Just(3), Just(1000), Just(1001), any::<u32>()],
            prop_oneof![
                Just(0u32),
                Just(8080),
                Just(65_535),
                Just(65_536),
                any::<u32>()
            ],
        )),
        arb_size(),
        arb_size(),
        prop_oneof![Just(0usize), Just(1000), Just(1001), Just(5000)],
        prop_oneof![Just(0usize), Just(100), Just(101)],
        any::<bool>(),
    )
        .prop_map(
            |(kill_grace, health, name_len, command_len, env_vars, labels, multibyte)| Hostile {
                kill_grace,
                health,
                name_len,
                command_len,
                env_vars,
                labels,
                multibyte,
            },
        );
    prop_oneof![6 => Just(Hostile::default()), 1 => h]
}

fn arb_resource_list() -> impl Strategy<Value = Vec<v1::Resource>> {
    let text = prop_oneof![
        Just("cpus:1;mem:128"),
        Just("cpus:0.5"),
        Just("mem:64"),
        Just("cpus:4;mem:4096"),
        Just("cpus:1;ports:[31000-31001]"),
        Just("cpus:1;ports:[40000-40000]"),
        Just("cpus:2;mem:1024;disk:10"),
        Just("gpus:1;cpus:1"),
        Just("cpus(web):1;mem:32"),
        Just("cpus(web,alice):1"),
        Just("disk:5"),
        Just(""),
    ]
    .prop_map(res);
    let raw = prop::collection::vec(
        (
            prop_oneof![
                Just("cpus"),
                Just("mem"),
                Just("ports"),
                Just(""),
                Just("9x")
            ],
            prop_oneof![Just(""), Just("*"), Just("web"), Just("-bad")],
            prop_oneof![
                (-2.0f64..10.0).prop_map(v1::resource::Value::Scalar),
                Just(v1::resource::Value::Scalar(f64::NAN)),
                Just(v1::resource::Value::Scalar(1e300)),
                (0u64..70_000, 0u64..70_000).prop_map(|(a, b)| {
                    v1::resource::Value::Ranges(v1::Ranges {
                        range: vec![v1::Range { begin: a, end: b }],
                    })
                }),
            ],
        )
            .prop_map(|(name, role, value)| v1::Resource {
                name: name.into(),
                role: role.into(),
                value: Some(value),
                reservation: None,
            }),
        0..3,
    );
    prop_oneof![8 => text, 1 => raw]
}

fn arb_task() -> impl Strategy<Value = TaskSpec> {
    (
        prop_oneof![
            12 => "[a-l]".prop_map(|s| s),
            1 => Just(String::new()),
            1 => Just("x/y".to_string()),
            1 => Just("t\n".to_string()),
        ],
        prop_oneof![
            6 => Just(None),
            1 => Just(Some("agent-other".to_string())),
        ],
        prop_oneof![
            8 => Just(Some("sleep 10".to_string())),
            1 => Just(Some(String::new())),
            1 => Just(None)
        ],
        prop_oneof![4 => Just(None), 1 => Just(Some("busybox".to_string())), 1 => Just(Some(" ".to_string()))],
        prop_oneof![4 => Just(None), 1 => Just(Some("ex".to_string()))],
        arb_resource_list(),
        arb_hostile(),
    )
        .prop_map(
            |(id, agent_id, command, docker_image, executor, resources, hostile)| TaskSpec {
                id,
                agent_id,
                command,
                docker_image,
                executor,
                resources,
                hostile,
            },
        )
}

fn arb_op() -> impl Strategy<Value = Op> {
    let role = prop_oneof![Just("web"), Just("batch"), Just("*"), Just("")];
    let principal = prop_oneof![Just("alice"), Just("")];
    let amount = prop_oneof![Just("cpus:1"), Just("mem:256"), Just("cpus:100"), Just("")];
    prop_oneof![
        1 => Just(Op::Empty),
        40 => prop::collection::vec(arb_task(), 0..4).prop_map(Op::Launch),
        10 => prop::collection::vec(arb_task(), 0..3).prop_map(Op::Group),
        3 => (role.clone(), principal.clone(), amount.clone()).prop_map(|(r, p, a)| {
            Op::Reserve(reserved_text(a, r, p))
        }),
        3 => (role, principal, amount).prop_map(|(r, p, a)| Op::Unreserve(reserved_text(a, r, p))),
    ]
}

/// `cpus:1` with role `web` and principal `alice` → `cpus(web,alice):1`.
fn reserved_text(amount: &str, role: &str, principal: &str) -> String {
    let Some((name, value)) = amount.split_once(':') else {
        return String::new();
    };
    match (role, principal) {
        ("", _) => amount.to_string(),
        (r, "") => format!("{name}({r}):{value}"),
        (r, p) => format!("{name}({r},{p}):{value}"),
    }
}

fn arb_accept() -> impl Strategy<Value = AcceptSpec> {
    let offer = prop_oneof![
        20 => (0..4usize).prop_map(OfferRef::Mine),
        1 => (0..4usize).prop_map(OfferRef::Foreign),
        1 => prop_oneof![Just("nope".to_string()), Just(String::new())].prop_map(OfferRef::Unknown),
    ];
    (
        0..2usize,
        // Mostly one offer: naming two of a framework's few offers often names one twice.
        prop_oneof![
            6 => prop::collection::vec(offer.clone(), 1..2),
            1 => prop::collection::vec(offer, 0..4),
        ],
        prop::collection::vec(arb_op(), 0..3),
        prop_oneof![
            20 => Just(None),
            4 => Just(Some(0.0)),
            1 => Just(Some(-1.0)),
            1 => Just(Some(f64::NAN)),
            1 => Just(Some(1e300)),
        ],
        prop::bool::weighted(0.05),
    )
        .prop_map(
            |(framework, offers, operations, refuse, stale_stream)| AcceptSpec {
                framework,
                offers,
                operations,
                refuse,
                stale_stream,
            },
        )
}

fn filler(len: usize, multibyte: bool) -> String {
    if multibyte {
        "é".repeat(len / 2 + 1)
    } else {
        "x".repeat(len)
    }
}

fn task_info(t: &TaskSpec) -> v1::TaskInfo {
    let mut info = plain_task_info(t);
    let h = &t.hostile;
    if let Some(g) = h.kill_grace {
        info.kill_policy = Some(v1::KillPolicy {
            grace_period_seconds: g,
        });
    }
    if let Some((grace, interval, timeout, delay, failures, port)) = h.health {
        info.health_check = Some(v1::HealthCheck {
            r#type: v1::health_check::Type::Http as i32,
            http: Some(v1::health_check::Http {
                port,
                path: "/health".into(),
                ..Default::default()
            }),
            grace_period_seconds: grace,
            interval_seconds: interval,
            timeout_seconds: timeout,
            delay_seconds: delay,
            consecutive_failures: failures,
            ..Default::default()
        });
    }
    if h.name_len > 0 {
        info.name = filler(h.name_len, h.multibyte);
    }
    if let Some(c) = info.command.as_mut() {
        if h.command_len > 0 {
            c.value = filler(h.command_len, h.multibyte);
        }
        c.environment = (0..h.env_vars)
            .map(|i| (format!("V{i}"), "v".into()))
            .collect();
    }
    info.labels = (0..h.labels)
        .map(|i| (format!("k{i}"), "v".into()))
        .collect();
    info
}

fn plain_task_info(t: &TaskSpec) -> v1::TaskInfo {
    v1::TaskInfo {
        name: t.id.clone(),
        task_id: t.id.clone(),
        agent_id: t.agent_id.clone().unwrap_or_default(),
        resources: t.resources.clone(),
        command: t.command.as_ref().map(|c| v1::CommandInfo {
            shell: true,
            value: c.clone(),
            ..Default::default()
        }),
        container: t.docker_image.as_ref().map(|image| v1::ContainerInfo {
            r#type: v1::ContainerType::Docker as i32,
            docker: Some(v1::DockerInfo {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        executor: t.executor.as_ref().map(|id| v1::ExecutorInfo {
            executor_id: id.clone(),
            resources: res("cpus:0.1;mem:32"),
            command: Some(v1::CommandInfo {
                shell: true,
                value: "executor".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

struct World {
    book: Bookkeeping,
    t0: Instant,
    secs: f64,
    headers: Vec<v1::CallHeader>,
}

impl World {
    fn new() -> Self {
        let mut w = World {
            book: Bookkeeping::new(settings(), AllocatorConfig::default(), Registry::default()),
            t0: Instant::now(),
            secs: 0.0,
            headers: Vec::new(),
        };
        let c = w.clock();
        for (host, resources) in [
            (
                "h1",
                "cpus:4;mem:4096;disk:100;ports:[31000-31009];cpus(web):1",
            ),
            ("h2", "cpus:2;mem:2048;gpus:1;ports:[31000-31001]"),
        ] {
            let resp = w
                .book
                .register_agent(
                    v1::RegisterAgentRequest {
                        agent_info: Some(v1::AgentInfo {
                            hostname: host.into(),
                            resources: res(resources),
                            ..Default::default()
                        }),
                        join_token: String::new(),
                    },
                    &c,
                )
                .expect("register");
            w.book
                .agent_connected(&resp.agent_id, &c)
                .expect("connected");
        }
        for (name, role) in [("web", "web"), ("batch", "batch")] {
            let (framework_id, stream_id) = w
                .book
                .subscribe(
                    v1::SubscribeRequest {
                        framework_info: Some(v1::FrameworkInfo {
                            name: name.into(),
                            roles: vec![role.into()],
                            principal: "alice".into(),
                            failover_timeout_seconds: 60.0,
                            ..Default::default()
                        }),
                        suppressed_roles: vec![],
                    },
                    &c,
                )
                .expect("subscribe");
            w.headers.push(v1::CallHeader {
                framework_id,
                stream_id,
            });
        }
        w.book.take_outbound();
        w
    }

    fn clock(&self) -> Clock {
        Clock {
            now: self.t0 + Duration::from_secs_f64(self.secs),
            wall: 1_000.0 + self.secs,
        }
    }
}

/// The parts of the state a refused accept must not change.
fn durable(
    state: &v1::GetStateResponse,
) -> (
    Vec<v1::Task>,
    Vec<(String, Vec<v1::Resource>, Vec<v1::Resource>, bool)>,
) {
    (
        state.tasks.clone(),
        state
            .agents
            .iter()
            .map(|a| {
                (
                    a.id.clone(),
                    a.info
                        .as_ref()
                        .map(|i| i.resources.clone())
                        .unwrap_or_default(),
                    a.used_resources.clone(),
                    a.active,
                )
            })
            .collect(),
    )
}

fn check_invariants(state: &v1::GetStateResponse) -> Result<(), TestCaseError> {
    let mut ids = HashSet::new();
    for t in &state.tasks {
        prop_assert!(
            ids.insert((t.framework_id.clone(), t.task_id.clone())),
            "task {} of {} twice",
            t.task_id,
            t.framework_id
        );
    }
    let mut offer_ids = HashSet::new();
    for o in &state.offers {
        prop_assert!(offer_ids.insert(o.id.clone()), "offer {} twice", o.id);
    }
    for a in &state.agents {
        let total = sum(&a
            .info
            .as_ref()
            .map(|i| i.resources.clone())
            .unwrap_or_default());
        let mut held = sum(&a.used_resources);
        held.add(&sum(&a.offered_resources));
        prop_assert!(
            total.contains(&held),
            "agent {} over-committed: total {} but tasks + offers {}",
            a.id,
            total,
            held
        );
    }
    Ok(())
}

fn run_messages(out: &[Outbound]) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for o in out {
        if let Outbound::Agent { agent_id, message } = o {
            match &message.message {
                Some(master_message::Message::RunTask(r)) => {
                    if let Some(t) = &r.task {
                        v.push((agent_id.clone(), t.task_id.clone()));
                    }
                }
                Some(master_message::Message::RunTaskGroup(g)) => {
                    for t in g.task_group.iter().flat_map(|g| g.tasks.iter()) {
                        v.push((agent_id.clone(), t.task_id.clone()));
                    }
                }
                _ => {}
            }
        }
    }
    v
}

fn updates(out: &[Outbound]) -> Vec<(TaskState, String)> {
    out.iter()
        .filter_map(|o| match o {
            Outbound::Framework {
                event:
                    v1::Event {
                        event: Some(event::Event::Update(u)),
                    },
                ..
            } => u.status.as_ref().map(|s| {
                (
                    TaskState::try_from(s.state).unwrap_or(TaskState::Unspecified),
                    s.message.clone(),
                )
            }),
            _ => None,
        })
        .collect()
}

fn run_accept(w: &mut World, spec: &AcceptSpec) -> Result<(), TestCaseError> {
    w.secs += 10.0;
    let c = w.clock();
    w.book.allocate(&c);
    w.book.take_outbound();
    let before = w.book.state("");
    check_invariants(&before)?;
    let me = w.headers[spec.framework].framework_id.clone();
    let mine: Vec<&v1::Offer> = before
        .offers
        .iter()
        .filter(|o| o.framework_id == me)
        .collect();
    let foreign: Vec<&v1::Offer> = before
        .offers
        .iter()
        .filter(|o| o.framework_id != me)
        .collect();
    let offer_ids: Vec<String> = spec
        .offers
        .iter()
        .filter_map(|r| match r {
            OfferRef::Mine(i) if !mine.is_empty() => Some(mine[i % mine.len()].id.clone()),
            OfferRef::Foreign(i) if !foreign.is_empty() => {
                Some(foreign[i % foreign.len()].id.clone())
            }
            OfferRef::Unknown(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let operations = spec
        .operations
        .iter()
        .map(|op| v1::Operation {
            operation: match op {
                Op::Empty => None,
                Op::Launch(ts) => Some(operation::Operation::Launch(operation::Launch {
                    tasks: ts.iter().map(task_info).collect(),
                })),
                Op::Group(ts) => Some(operation::Operation::LaunchGroup(operation::LaunchGroup {
                    executor: Some(v1::ExecutorInfo {
                        executor_id: "group".into(),
                        resources: res("cpus:0.1;mem:32"),
                        ..Default::default()
                    }),
                    task_group: Some(v1::TaskGroupInfo {
                        tasks: ts.iter().map(task_info).collect(),
                    }),
                })),
                Op::Reserve(text) => Some(operation::Operation::Reserve(operation::Reserve {
                    resources: res(text),
                })),
                Op::Unreserve(text) => {
                    Some(operation::Operation::Unreserve(operation::Unreserve {
                        resources: res(text),
                    }))
                }
            },
        })
        .collect();
    let mut header = w.headers[spec.framework].clone();
    if spec.stale_stream {
        header.stream_id.push_str("-old");
    }
    let req = v1::AcceptRequest {
        header: Some(header),
        offer_ids: offer_ids.clone(),
        operations,
        filters: spec.refuse.map(|s| v1::Filters {
            refuse_seconds: Some(s),
        }),
    };
    let result = w.book.accept(req, &c);
    let out = w.book.take_outbound();
    let after = w.book.state("");
    check_invariants(&after)?;
    let runs = run_messages(&out);
    let named: HashSet<&String> = offer_ids.iter().collect();
    // Offers may only disappear if this framework named them.
    for o in &before.offers {
        if !after.offers.iter().any(|a| a.id == o.id) {
            prop_assert!(
                named.contains(&o.id) && o.framework_id == me,
                "offer {} vanished without being used by its framework",
                o.id
            );
        }
    }
    match result {
        Err(e) => {
            let text = e.to_string();
            prop_assert!(
                [
                    "header",
                    "offer_ids",
                    "operations[",
                    "filters.refuse_seconds",
                    "stream_id"
                ]
                .iter()
                .any(|f| text.contains(f)),
                "the error names no field: {}",
                text
            );
            prop_assert_eq!(
                durable(&before),
                durable(&after),
                "a refused accept changed the state: {}",
                text
            );
            prop_assert!(runs.is_empty(), "a refused accept launched {:?}", runs);
            REFUSED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(()) => {
            // What was launched fits in what was offered (roles aside: RESERVE changes them).
            let mut offered = Resources::new();
            for o in before.offers.iter().filter(|o| named.contains(&o.id)) {
                offered.add(&sum(&o.resources));
            }
            let old: HashSet<(String, String)> = before
                .tasks
                .iter()
                .map(|t| (t.framework_id.clone(), t.task_id.clone()))
                .collect();
            let mut launched = Resources::new();
            let mut new_ids = Vec::new();
            for t in &after.tasks {
                if !old.contains(&(t.framework_id.clone(), t.task_id.clone())) {
                    launched.add(&sum(&t.resources));
                    new_ids.push(t.task_id.clone());
                }
            }
            prop_assert!(
                offered.flatten().contains(&launched.flatten()),
                "launched {} from offers of only {}",
                launched,
                offered
            );
            let mut sent: Vec<String> = runs.iter().map(|(_, t)| t.clone()).collect();
            sent.sort();
            new_ids.sort();
            LAUNCHED.fetch_add(new_ids.len(), Ordering::Relaxed);
            prop_assert_eq!(
                sent,
                new_ids,
                "tasks sent to agents differ from tasks recorded"
            );
            for t in &after.tasks {
                check_task_bounds(t)?;
            }
            for (state, message) in updates(&out) {
                prop_assert!(
                    message.len() <= 4096,
                    "an update message of {} bytes",
                    message.len()
                );
                if state == TaskState::TaskError {
                    TASK_ERRORS.fetch_add(1, Ordering::Relaxed);
                    prop_assert!(
                        message.contains("operations["),
                        "TASK_ERROR names no field: {}",
                        message
                    );
                }
            }
        }
    }
    Ok(())
}

/// Everything the master keeps of a task is inside the bounds of `bookkeeping::limits`.
fn check_task_bounds(t: &v1::Task) -> Result<(), TestCaseError> {
    use agora_master::bookkeeping::limits;
    let in_range = |v: f64, max: f64| v.is_finite() && (0.0..=max).contains(&v);
    prop_assert!(t.task_id.len() <= limits::MAX_ID_BYTES);
    prop_assert!(t.name.len() <= limits::MAX_NAME_BYTES);
    prop_assert!(t.labels.len() <= limits::MAX_LABELS);
    if let Some(k) = &t.kill_policy {
        prop_assert!(
            in_range(k.grace_period_seconds, limits::MAX_KILL_GRACE_SECONDS),
            "kept a kill grace of {}",
            k.grace_period_seconds
        );
    }
    if let Some(h) = &t.health_check {
        for v in [
            h.grace_period_seconds,
            h.interval_seconds,
            h.timeout_seconds,
            h.delay_seconds,
        ] {
            prop_assert!(
                in_range(v, limits::MAX_HEALTH_SECONDS),
                "kept a health timing of {v}"
            );
        }
        prop_assert!(h.consecutive_failures <= limits::MAX_HEALTH_FAILURES);
        prop_assert!(h.http.as_ref().is_none_or(|x| x.port <= 65_535));
    }
    if let Some(c) = t.info.as_ref().and_then(|i| i.command.as_ref()) {
        prop_assert!(c.value.len() <= limits::MAX_COMMAND_BYTES);
        prop_assert!(c.environment.len() <= limits::MAX_ENV_VARS);
    }
    if let Some(st) = &t.status {
        prop_assert!(st.message.len() <= limits::MAX_MESSAGE_BYTES);
    }
    Ok(())
}

/// One task running on h1 for the `web` framework; returns its agent id.
fn running_task(w: &mut World) -> Option<String> {
    w.secs += 10.0;
    let c = w.clock();
    w.book.allocate(&c);
    w.book.take_outbound();
    let me = w.headers[0].framework_id.clone();
    let offer = w
        .book
        .state("")
        .offers
        .into_iter()
        .find(|o| o.framework_id == me)?;
    let spec = TaskSpec {
        id: "t".into(),
        agent_id: None,
        command: Some("sleep 10".into()),
        docker_image: None,
        executor: None,
        resources: res("cpus:0.5;mem:64"),
        hostile: Hostile::default(),
    };
    let req = v1::AcceptRequest {
        header: Some(w.headers[0].clone()),
        offer_ids: vec![offer.id.clone()],
        operations: vec![v1::Operation {
            operation: Some(operation::Operation::Launch(operation::Launch {
                tasks: vec![task_info(&spec)],
            })),
        }],
        filters: None,
    };
    w.book.accept(req, &c).ok()?;
    w.book.take_outbound();
    Some(offer.agent_id)
}

proptest! {
    #![proptest_config(config(300))]

    /// Kill with any kill policy: refused naming the field, or forwarded within the bounds.
    #[test]
    fn fuzz_hostile_kill_policies(graces in prop::collection::vec(arb_seconds(), 1..8)) {
        let mut w = World::new();
        let agent = running_task(&mut w);
        prop_assert!(agent.is_some(), "no task to kill");
        for g in graces {
            let c = w.clock();
            let result = w.book.kill(
                v1::KillRequest {
                    header: Some(w.headers[0].clone()),
                    task_id: "t".into(),
                    agent_id: String::new(),
                    kill_policy: Some(v1::KillPolicy { grace_period_seconds: g }),
                },
                &c,
            );
            let out = w.book.take_outbound();
            match result {
                Err(e) => {
                    prop_assert!(
                        e.to_string().starts_with("kill_policy.grace_period_seconds"),
                        "{}", e
                    );
                    prop_assert!(out.is_empty());
                }
                Ok(()) => {
                    for o in out {
                        if let Outbound::Agent { message: v1::MasterMessage {
                            message: Some(master_message::Message::KillTask(k)) }, .. } = o {
                            let g = k.kill_policy.map_or(0.0, |p| p.grace_period_seconds);
                            prop_assert!(g.is_finite() && (0.0..=3600.0).contains(&g), "{}", g);
                            // What the agent does with it must not panic either.
                            prop_assert!(Duration::try_from_secs_f64(g).is_ok());
                        }
                    }
                }
            }
        }
    }

    /// Decline with any filter: refused naming the field, or taken (and allocation goes on).
    #[test]
    fn fuzz_hostile_filters(refuse in prop::collection::vec(arb_seconds(), 1..6)) {
        let mut w = World::new();
        for s in refuse {
            w.secs += 10.0;
            let c = w.clock();
            w.book.allocate(&c);
            w.book.take_outbound();
            let me = w.headers[0].framework_id.clone();
            let offer_ids: Vec<String> = w.book.state("").offers.into_iter()
                .filter(|o| o.framework_id == me).map(|o| o.id).collect();
            let result = w.book.decline(
                v1::DeclineRequest {
                    header: Some(w.headers[0].clone()),
                    offer_ids,
                    filters: Some(v1::Filters { refuse_seconds: Some(s) }),
                },
                &c,
            );
            let ok = s.is_finite() && (0.0..=31_536_000.0).contains(&s);
            match result {
                Err(e) if e.to_string().starts_with("filters.refuse_seconds") => prop_assert!(!ok, "{} refused", s),
                Err(e) => prop_assert!(e.to_string().starts_with("offer_ids"), "{}", e),
                Ok(()) => prop_assert!(ok, "{} accepted", s),
            }
        }
    }

    /// Status updates with messages of any size (multi-byte too): `/state` keeps a few KiB.
    #[test]
    fn fuzz_hostile_status_messages(
        sizes in prop::collection::vec((arb_size(), any::<bool>()), 1..6),
    ) {
        let mut w = World::new();
        let Some(agent) = running_task(&mut w) else {
            return Err(TestCaseError::fail("no task"));
        };
        for (i, (len, multibyte)) in sizes.into_iter().enumerate() {
            let c = w.clock();
            w.book.agent_message(
                &agent,
                v1::agent_message::Message::StatusUpdate(v1::StatusUpdate {
                    framework_id: w.headers[0].framework_id.clone(),
                    status: Some(v1::TaskStatus {
                        task_id: "t".into(),
                        state: TaskState::TaskRunning as i32,
                        message: filler(len, multibyte),
                        uuid: vec![i as u8],
                        ..Default::default()
                    }),
                }),
                &c,
            );
            for (_, message) in updates(&w.book.take_outbound()) {
                prop_assert!(message.len() <= 4096, "{}", message.len());
            }
            for t in &w.book.state("").tasks {
                check_task_bounds(t)?;
            }
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn fuzz_accept(accepts in prop::collection::vec(arb_accept(), 1..5)) {
        let mut w = World::new();
        for spec in &accepts {
            run_accept(&mut w, spec)?;
        }
    }
}

#[test]
fn generators_reach_every_outcome() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&prop::collection::vec(arb_accept(), 1..5), |accepts| {
        let mut w = World::new();
        for spec in &accepts {
            run_accept(&mut w, spec)?;
        }
        Ok(())
    });
    assert!(result.is_ok(), "{result:?}");
    let (l, r, e) = (
        LAUNCHED.load(Ordering::Relaxed),
        REFUSED.load(Ordering::Relaxed),
        TASK_ERRORS.load(Ordering::Relaxed),
    );
    eprintln!("launched {l} tasks, refused {r} accepts, {e} TASK_ERRORs");
    assert!(
        l > 50 && r > 50 && e > 50,
        "launched {l}, refused {r}, task errors {e}"
    );
}
