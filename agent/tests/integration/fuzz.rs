//! Fuzzing what an agent receives from a master: `RunTask` (TaskInfo with kill policy, health
//! check, resources, command, container, executor) and `KillTask` (with a kill policy), as
//! structured values with hostile numbers (NaN, ±inf, 1e300, 1.8e19, negative, u32::MAX ports) and
//! as arbitrary bytes decoded into the message types.
//!
//! Properties:
//! - the agent's validation and conversion code never panics on any of them (health checks,
//!   kill grace periods, resources, argv, executor tasks, volume checks), and what it accepts is
//!   bounded: a health-check time ≤ 1 year, a kill grace ≤ 1 hour, so `Instant + Duration` is safe;
//! - the agent's actor, fed the same tasks and kills over a fake containerizer, never dies: it
//!   answers afterwards, every kill it issues has a bounded grace, and an agent restarted on the
//!   same work dir recovers those checkpoints and answers too.
//!
//! `PROPTEST_CASES` overrides the case counts; see docs/reliability.md.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_agent::agent::{start as start_actor, AgentSettings};
use agora_agent::containerizer::{Containerizer, ContainerizerKind, LaunchSpec, Recovered, Usage};
use agora_agent::health::HealthCheckSpec;
use agora_agent::lifecycle::Termination;
use agora_agent::limits::{kill_grace, MAX_HEALTH_SECONDS, MAX_KILL_GRACE};
use agora_agent::prober::{CheckCommand, CheckExit};
use agora_agent::ContainerError;
use agora_proto::v1::{self, health_check, master_message};
use agora_proto::Resources;
use futures::future::BoxFuture;
use futures::FutureExt;
use proptest::prelude::*;
use prost::Message;

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

/// Seconds as masters and frameworks might send them, hostile ones often.
fn seconds() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-1.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(1e300),
        Just(1.8e19),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        Just(31_536_000.0),
        Just(3600.0),
        0.0..10.0f64,
        any::<f64>(),
    ]
}

fn port() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(65_535),
        Just(65_536),
        Just(u32::MAX),
        1u32..70_000
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("..".to_string()),
        Just("/".to_string()),
        Just("a b\n\0".to_string()),
        "[a-z0-9/._-]{1,12}",
        any::<String>(),
    ]
}

fn command() -> impl Strategy<Value = Option<v1::CommandInfo>> {
    proptest::option::of(
        (
            any::<bool>(),
            text(),
            proptest::collection::vec(text(), 0..3),
            text(),
        )
            .prop_map(|(shell, value, arguments, user)| v1::CommandInfo {
                shell,
                value,
                arguments,
                user,
                ..Default::default()
            }),
    )
}

fn resources() -> impl Strategy<Value = Vec<v1::Resource>> {
    let scalar = (
        prop_oneof![
            Just("cpus"),
            Just("mem"),
            Just("disk"),
            Just("gpus"),
            Just("x")
        ],
        prop_oneof![
            Just(0.1),
            Just(-1.0),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(1e300),
            any::<f64>()
        ],
    )
        .prop_map(|(n, v)| v1::Resource {
            name: n.into(),
            value: Some(v1::resource::Value::Scalar(v)),
            ..Default::default()
        });
    let ranges = (any::<u64>(), any::<u64>()).prop_map(|(b, e)| v1::Resource {
        name: "ports".into(),
        value: Some(v1::resource::Value::Ranges(v1::Ranges {
            range: vec![v1::Range {
                begin: b % 70_000,
                end: e % 70_000,
            }],
        })),
        ..Default::default()
    });
    proptest::collection::vec(prop_oneof![scalar, ranges], 0..4)
}

fn health() -> impl Strategy<Value = Option<v1::HealthCheck>> {
    proptest::option::of(
        (
            0i32..5,
            port(),
            text(),
            proptest::collection::vec(any::<u32>(), 0..3),
            (seconds(), seconds(), seconds(), seconds()),
            any::<u32>(),
            command(),
        )
            .prop_map(|(t, p, path, statuses, (d, g, i, to), failures, cmd)| {
                v1::HealthCheck {
                    r#type: t,
                    http: Some(health_check::Http {
                        port: p,
                        path,
                        statuses,
                        ..Default::default()
                    }),
                    tcp: Some(health_check::Tcp { port: p }),
                    command: cmd,
                    delay_seconds: d,
                    grace_period_seconds: g,
                    interval_seconds: i,
                    timeout_seconds: to,
                    consecutive_failures: failures,
                }
            }),
    )
}

fn task_info() -> impl Strategy<Value = v1::TaskInfo> {
    (
        "[a-z]{1,6}",
        resources(),
        command(),
        health(),
        proptest::option::of(seconds()),
        any::<bool>(),
        proptest::collection::vec(text(), 0..2),
    )
        .prop_map(
            |(id, resources, command, health_check, grace, docker, volumes)| v1::TaskInfo {
                name: id.clone(),
                task_id: id,
                resources,
                command,
                health_check,
                kill_policy: grace.map(|g| v1::KillPolicy {
                    grace_period_seconds: g,
                }),
                container: docker.then(|| v1::ContainerInfo {
                    r#type: v1::ContainerType::Docker as i32,
                    docker: Some(v1::DockerInfo {
                        image: "busybox".into(),
                        ..Default::default()
                    }),
                    volumes: volumes
                        .into_iter()
                        .map(|h| v1::Volume {
                            host_path: h,
                            container_path: "/v".into(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
}

/// Everything the agent computes from a task before and while running it; panics are failures.
fn convert_everything(task: &v1::TaskInfo) {
    if let Some(hc) = &task.health_check {
        if let Ok(spec) = HealthCheckSpec::from_proto(hc) {
            let p = spec.policy;
            for d in [p.grace, p.delay, p.interval, p.timeout] {
                assert!(d.as_secs_f64() <= MAX_HEALTH_SECONDS, "{d:?} accepted");
                let _ = Instant::now() + d;
                let _ = tokio::time::Instant::now() + d;
            }
        }
    }
    if let Some(k) = &task.kill_policy {
        if let Some(g) = kill_grace("kill_policy.grace_period_seconds", k.grace_period_seconds) {
            assert!(g <= MAX_KILL_GRACE, "{g:?}");
            let _ = Instant::now() + g;
        }
    }
    if let Ok(r) = Resources::from_proto(&task.resources) {
        let _ = r.scalar_total("mem");
        let _ = r.scalar_total("cpus");
        let _ = r.ranges_total("ports");
    }
    let _ = agora_agent::containerizer::argv(task.command.as_ref());
    let _ = agora_agent::executor::as_executor_task(task);
    let _ = ContainerizerKind::for_task(task);
    if let Some(c) = &task.container {
        for v in &c.volumes {
            let _ = agora_agent::containerizer::docker::reaches_work_dir(
                std::path::Path::new(&v.host_path),
                std::path::Path::new("/var/lib/agora"),
                std::path::Path::new("/var/lib/agora/slaves/a/frameworks/f/executors/e/runs/c"),
            );
        }
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn conversions_never_panic_on_structured_tasks(task in task_info(), kill in seconds()) {
        convert_everything(&task);
        if let Some(g) = kill_grace("kill_policy.grace_period_seconds", kill) {
            prop_assert!(g <= MAX_KILL_GRACE);
        }
    }

    #[test]
    fn conversions_never_panic_on_decoded_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(task) = v1::TaskInfo::decode(bytes.as_slice()) {
            convert_everything(&task);
        }
        if let Ok(m) = v1::MasterMessage::decode(bytes.as_slice()) {
            match m.message {
                Some(master_message::Message::RunTask(r)) => {
                    if let Some(t) = r.task { convert_everything(&t) }
                }
                Some(master_message::Message::KillTask(k)) => {
                    if let Some(p) = k.kill_policy {
                        let _ = kill_grace("kill_policy.grace_period_seconds", p.grace_period_seconds);
                    }
                }
                _ => {}
            }
        }
    }
}

/// A containerizer that runs nothing: launches succeed, containers end 50 ms later or at a kill,
/// and every kill's grace is recorded.
struct Fake {
    kind: ContainerizerKind,
    graces: Arc<Mutex<Vec<Duration>>>,
}

impl Containerizer for Fake {
    fn kind(&self) -> ContainerizerKind {
        self.kind
    }
    fn launch<'a>(&'a self, _: &'a LaunchSpec) -> BoxFuture<'a, Result<(), ContainerError>> {
        async { Ok(()) }.boxed()
    }
    fn wait<'a>(
        &'a self,
        _: &'a str,
        _: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<Termination, ContainerError>> {
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(Termination {
                exit_code: Some(0),
                ..Default::default()
            })
        }
        .boxed()
    }
    fn kill<'a>(
        &'a self,
        _: &'a str,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), ContainerError>> {
        self.graces.lock().expect("lock").push(grace);
        async { Ok(()) }.boxed()
    }
    fn recover<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Recovered, ContainerError>> {
        async { Ok(Recovered::Running) }.boxed()
    }
    fn usage<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Usage, ContainerError>> {
        async { Ok(Usage::default()) }.boxed()
    }
    fn destroy<'a>(&'a self, _: &'a str) -> BoxFuture<'a, ()> {
        async {}.boxed()
    }
    fn run_check<'a>(
        &'a self,
        _: &'a str,
        _: &'a CheckCommand,
    ) -> BoxFuture<'a, Result<CheckExit, ContainerError>> {
        async {
            Ok(CheckExit {
                code: 0,
                output: String::new(),
            })
        }
        .boxed()
    }
}

async fn actor(
    dir: &std::path::Path,
    graces: &Arc<Mutex<Vec<Duration>>>,
) -> agora_agent::AgentHandle {
    let fakes: Vec<Arc<dyn Containerizer>> = [ContainerizerKind::Native, ContainerizerKind::Docker]
        .into_iter()
        .map(|kind| {
            Arc::new(Fake {
                kind,
                graces: graces.clone(),
            }) as Arc<dyn Containerizer>
        })
        .collect();
    let (handle, _outbox) = start_actor(AgentSettings {
        work_dir: dir.to_path_buf(),
        hostname: "h".into(),
        containerizers: fakes,
        status_retry_initial: Duration::from_secs(10),
        status_retry_max: Duration::from_secs(600),
        user_policy: Default::default(),
        mesh_ip: None,
        mesh_bridge_ip: None,
    })
    .await
    .expect("the actor starts");
    handle
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn the_actor_survives_hostile_tasks_and_kills(
        tasks in proptest::collection::vec((task_info(), proptest::option::of(seconds())), 1..5),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let graces = Arc::new(Mutex::new(Vec::new()));
            let fw = v1::FrameworkInfo { id: "fw".into(), ..Default::default() };
            let handle = actor(dir.path(), &graces).await;
            for (mut t, kill) in tasks.clone() {
                // No fetching from the network.
                if let Some(c) = t.command.as_mut() { c.uris.clear() }
                handle.run_task(fw.clone(), t.clone()).expect("run");
                // A kill with the message's kill policy converted as the master link does.
                let grace = kill.and_then(|g| kill_grace("kill_policy.grace_period_seconds", g));
                handle.kill_task("fw", &t.task_id, grace).expect("kill");
            }
            let known = handle.tasks().await.expect("the actor answers after the tasks");
            // Recovery of what was checkpointed (containers "still running"): kills resume with
            // the checkpointed kill policies, nothing panics.
            handle.abort();
            let again = actor(dir.path(), &graces).await;
            let _ = again.tasks().await.expect("a restarted actor answers");
            again.abort();
            for g in graces.lock().expect("lock").iter() {
                assert!(*g <= MAX_KILL_GRACE, "kill with grace {g:?}");
            }
            drop(known);
        });
    }
}
