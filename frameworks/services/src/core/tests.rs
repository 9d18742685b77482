use super::*;
use crate::offer_stats::OfferStats;

pub(super) fn t(secs: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
        .expect("t")
        .with_timezone(&Utc)
        + ChronoDuration::seconds(secs)
}

fn app(json: &str) -> App {
    serde_json::from_str(json).expect("app json")
}

pub(super) fn offer(id: &str, host: &str, res: &str) -> v1::Offer {
    v1::Offer {
        id: id.into(),
        agent_id: format!("agent-{host}"),
        hostname: host.into(),
        resources: agora_proto::Resources::parse(res).expect("res").to_proto(),
        ..Default::default()
    }
}

pub(super) fn update(
    core: &mut ServicesCore,
    id: &str,
    state: v1::TaskState,
    healthy: Option<bool>,
    at: DateTime<Utc>,
) -> Vec<Effect> {
    let st = v1::TaskStatus {
        task_id: id.into(),
        state: state as i32,
        healthy,
        ..Default::default()
    };
    core.on_update(&st, at)
}

fn run_all(core: &mut ServicesCore, launches: &[Launch], healthy: Option<bool>, at: DateTime<Utc>) {
    for l in launches {
        update(
            core,
            &l.task.task_id,
            v1::TaskState::TaskRunning,
            healthy,
            at,
        );
    }
}

#[test]
fn an_app_is_launched_scaled_up_and_down_youngest_first() {
    let mut core = ServicesCore::default();
    core.put_app(
        app(r#"{"id":"/web","cmd":"sleep 100","cpus":0.5,"mem":64,"instances":2}"#),
        true,
        false,
        t(0),
    )
    .expect("create");
    let l = core.launches_for(&offer("o1", "h1", "cpus:4;mem:1024"), t(0));
    assert_eq!(l.len(), 2);
    run_all(&mut core, &l, None, t(1));
    assert!(
        core.deployments().is_empty(),
        "the start deployment finished"
    );
    assert!(core
        .launches_for(&offer("o2", "h1", "cpus:4;mem:1024"), t(2))
        .is_empty());
    core.put_app(
        app(r#"{"id":"/web","cmd":"sleep 100","cpus":0.5,"mem":64,"instances":3}"#),
        false,
        false,
        t(3),
    )
    .expect("scale");
    assert_eq!(core.deployments()[0].steps[0][0].action, "ScaleApplication");
    let more = core.launches_for(&offer("o3", "h1", "cpus:4;mem:1024"), t(4));
    assert_eq!(more.len(), 1);
    run_all(&mut core, &more, None, t(5));
    core.put_app(
        app(r#"{"id":"/web","cmd":"sleep 100","cpus":0.5,"mem":64,"instances":1}"#),
        false,
        false,
        t(6),
    )
    .expect("scale down");
    let kills = core.plan(t(6));
    assert_eq!(kills.len(), 2);
    // The youngest go first: the one launched at t(4), then one of t(0).
    assert!(kills.contains(&Effect::Kill(more[0].task.task_id.clone())));
}

#[test]
fn failed_tasks_are_replaced_with_a_growing_backoff_but_kills_are_not_delayed() {
    let mut core = ServicesCore::default();
    core.put_app(app(r#"{"id":"/crashy","cmd":"exit 1","cpus":0.1,"mem":32,"backoffSeconds":2,"backoffFactor":2}"#), true, false, t(0)).expect("create");
    let l = core.launches_for(&offer("o", "h1", "cpus:1;mem:256"), t(0));
    update(
        &mut core,
        &l[0].task.task_id,
        v1::TaskState::TaskFailed,
        None,
        t(1),
    );
    assert!(
        core.launches_for(&offer("o", "h1", "cpus:1;mem:256"), t(2))
            .is_empty(),
        "delayed 2 s"
    );
    let l = core.launches_for(&offer("o", "h1", "cpus:1;mem:256"), t(3));
    assert_eq!(l.len(), 1);
    update(
        &mut core,
        &l[0].task.task_id,
        v1::TaskState::TaskFailed,
        None,
        t(3),
    );
    assert!(
        core.launches_for(&offer("o", "h1", "cpus:1;mem:256"), t(6))
            .is_empty(),
        "delayed 4 s now"
    );
    assert_eq!(
        core.launches_for(&offer("o", "h1", "cpus:1;mem:256"), t(7))
            .len(),
        1
    );
    assert!(core
        .app("/crashy")
        .and_then(|a| a.last_task_failure.clone())
        .is_some());
}

#[test]
fn a_rolling_restart_never_drops_below_minimum_health_capacity() {
    let mut core = ServicesCore::default();
    core.put_app(
        app(r#"{"id":"/api","cmd":"serve","cpus":0.1,"mem":32,"instances":4,"upgradeStrategy":{"minimumHealthCapacity":0.5,"maximumOverCapacity":0.25},"healthChecks":[{"protocol":"COMMAND","command":{"value":"true"}}]}"#),
        true,
        false,
        t(0),
    )
    .expect("create");
    let l = core.launches_for(&offer("o", "h1", "cpus:10;mem:4096"), t(0));
    run_all(&mut core, &l, Some(true), t(1));
    core.restart("/api", false, t(2)).expect("restart");
    let min_healthy = 2;
    let max_capacity = 5;
    let mut now = 2;
    for _ in 0..20 {
        now += 1;
        // The driver carries out every kill (a kill's update can ask for more).
        let mut kills = core.plan(t(now));
        while let Some(Effect::Kill(id)) = kills.pop() {
            kills.extend(update(
                &mut core,
                &id,
                v1::TaskState::TaskKilled,
                None,
                t(now),
            ));
        }
        let st = core.app("/api").expect("app");
        let live: Vec<&TaskRecord> = st.tasks.values().filter(|t| t.live()).collect();
        let healthy = live.iter().filter(|t| t.healthy_for(&st.app)).count();
        assert!(healthy >= min_healthy, "{healthy} healthy at step {now}");
        let launches = core.launches_for(&offer("o", "h1", "cpus:10;mem:4096"), t(now));
        let st = core.app("/api").expect("app");
        assert!(st.tasks.values().filter(|t| t.live()).count() <= max_capacity);
        for l in &launches {
            let mut kills = update(
                &mut core,
                &l.task.task_id,
                v1::TaskState::TaskRunning,
                Some(true),
                t(now),
            );
            while let Some(Effect::Kill(id)) = kills.pop() {
                kills.extend(update(
                    &mut core,
                    &id,
                    v1::TaskState::TaskKilled,
                    None,
                    t(now),
                ));
            }
        }
        if core.deployments().is_empty() {
            break;
        }
    }
    assert!(core.deployments().is_empty(), "the restart finished");
    let st = core.app("/api").expect("app");
    assert!(st.tasks.values().all(|t| t.version == st.config_version));
    assert_eq!(st.tasks.len(), 4);
}

#[test]
fn hostname_unique_spreads_instances_and_says_why_an_offer_does_not_fit() {
    let mut core = ServicesCore::default();
    core.put_app(app(r#"{"id":"/spread","cmd":"x","cpus":0.1,"mem":32,"instances":2,"constraints":[["hostname","UNIQUE"]]}"#), true, false, t(0)).expect("create");
    assert_eq!(
        core.launches_for(&offer("o1", "h1", "cpus:4;mem:1024"), t(0))
            .len(),
        1
    );
    assert!(core
        .launches_for(&offer("o2", "h1", "cpus:4;mem:1024"), t(0))
        .is_empty());
    let stats = &core.app("/spread").expect("app").offer_stats;
    assert_eq!(
        stats.last_unused[0].reasons,
        [Reason::UnfulfilledConstraint]
    );
    assert_eq!(
        core.launches_for(&offer("o3", "h2", "cpus:4;mem:1024"), t(0))
            .len(),
        1
    );
}

#[test]
fn ports_are_assigned_from_the_offer_and_exported() {
    let mut core = ServicesCore::default();
    core.put_app(app(r#"{"id":"/p","cmd":"serve","cpus":0.1,"mem":32,"portDefinitions":[{"port":0,"name":"http"},{"port":0}]}"#), true, false, t(0)).expect("create");
    let l = core.launches_for(
        &offer("o", "h1", "cpus:1;mem:256;ports:[31000-31001]"),
        t(0),
    );
    let env = &l[0].task.command.as_ref().expect("command").environment;
    assert_eq!(env["PORT0"], "31000");
    assert_eq!(env["PORT1"], "31001");
    assert_eq!(env["PORT_HTTP"], "31000");
    assert_eq!(env["MARATHON_APP_ID"], "/p");
    assert!(core
        .launches_for(
            &offer("o", "h1", "cpus:1;mem:256;ports:[31000-31000]"),
            t(0)
        )
        .is_empty());
}

#[test]
fn a_returning_unreachable_task_makes_a_surplus_that_is_killed() {
    let mut core = ServicesCore::default();
    core.put_app(
        app(r#"{"id":"/s","cmd":"x","cpus":0.1,"mem":32,"instances":1,"unreachableStrategy":{"inactiveAfterSeconds":0,"expungeAfterSeconds":3600}}"#),
        true,
        false,
        t(0),
    )
    .expect("create");
    let l = core.launches_for(&offer("o", "h1", "cpus:1;mem:256"), t(0));
    let first = l[0].task.task_id.clone();
    run_all(&mut core, &l, None, t(1));
    update(
        &mut core,
        &first,
        v1::TaskState::TaskUnreachable,
        None,
        t(2),
    );
    let replacement = core.launches_for(&offer("o", "h2", "cpus:1;mem:256"), t(3));
    assert_eq!(replacement.len(), 1, "replaced elsewhere");
    run_all(&mut core, &replacement, None, t(4));
    let kills = update(&mut core, &first, v1::TaskState::TaskRunning, None, t(5));
    assert_eq!(
        kills,
        [Effect::Kill(replacement[0].task.task_id.clone())],
        "youngest first"
    );
}

#[test]
fn locked_apps_and_rollback() {
    let mut core = ServicesCore::default();
    core.put_app(
        app(r#"{"id":"/l","cmd":"x","cpus":0.1,"mem":32,"instances":1}"#),
        true,
        false,
        t(0),
    )
    .expect("create");
    let err = core
        .put_app(
            app(r#"{"id":"/l","cmd":"y","cpus":0.1,"mem":32}"#),
            false,
            false,
            t(1),
        )
        .unwrap_err();
    assert!(matches!(err, ServicesError::Locked(_)));
    assert!(matches!(
        core.put_app(app(r#"{"id":"/l","cmd":"x"}"#), true, false, t(1)),
        Err(ServicesError::Exists(_))
    ));
    let (dep, _) = core
        .put_app(
            app(r#"{"id":"/l","cmd":"y","cpus":0.1,"mem":32}"#),
            false,
            true,
            t(2),
        )
        .expect("forced");
    core.cancel_deployment(&dep, false, t(3)).expect("rollback");
    assert_eq!(core.app("/l").expect("app").app.cmd.as_deref(), Some("x"));
    assert!(matches!(
        core.cancel_deployment("nope", false, t(3)),
        Err(ServicesError::UnknownDeployment(_))
    ));
}

#[test]
fn unreachable_tasks_count_until_inactive_after_seconds_and_disabled_never_replaces() {
    let mut core = ServicesCore::default();
    core.put_app(
        app(r#"{"id":"/u","cmd":"x","cpus":0.1,"mem":32,"instances":1,"unreachableStrategy":{"inactiveAfterSeconds":60,"expungeAfterSeconds":120}}"#),
        true,
        false,
        t(0),
    )
    .expect("create");
    let l = core.launches_for(&offer("o", "h1", "cpus:1;mem:256"), t(0));
    run_all(&mut core, &l, None, t(1));
    update(
        &mut core,
        &l[0].task.task_id,
        v1::TaskState::TaskUnreachable,
        None,
        t(10),
    );
    assert!(
        core.launches_for(&offer("o", "h2", "cpus:1;mem:256"), t(30))
            .is_empty(),
        "still counted"
    );
    core.plan(t(71));
    assert_eq!(
        core.launches_for(&offer("o", "h2", "cpus:1;mem:256"), t(71))
            .len(),
        1,
        "replaced after 60 s"
    );
    core.plan(t(131));
    assert!(
        !core
            .app("/u")
            .expect("app")
            .tasks
            .contains_key(&l[0].task.task_id),
        "expunged"
    );
    // Back after being expunged: killed.
    let kills = update(
        &mut core,
        &l[0].task.task_id,
        v1::TaskState::TaskRunning,
        None,
        t(140),
    );
    assert_eq!(kills, [Effect::Kill(l[0].task.task_id.clone())]);

    let mut core = ServicesCore::default();
    core.put_app(
        app(r#"{"id":"/d","cmd":"x","cpus":0.1,"mem":32,"unreachableStrategy":"disabled"}"#),
        true,
        false,
        t(0),
    )
    .expect("create");
    let l = core.launches_for(&offer("o", "h1", "cpus:1;mem:256"), t(0));
    run_all(&mut core, &l, None, t(1));
    update(
        &mut core,
        &l[0].task.task_id,
        v1::TaskState::TaskUnreachable,
        None,
        t(2),
    );
    core.plan(t(10_000));
    assert!(core
        .launches_for(&offer("o", "h2", "cpus:1;mem:256"), t(10_000))
        .is_empty());
}

/// A core saved by an older version that accepted anything: every numeric field of the app is
/// replaced in the saved JSON, the core is read back, and a failing task, offers, plans and a
/// rolling restart must neither panic nor produce an unbounded time or count.
#[test]
fn hostile_values_in_saved_state_never_panic_the_core() {
    let hostile: &[(&str, serde_json::Value)] = &[
        ("backoffSeconds", serde_json::json!(1e300)),
        ("backoffFactor", serde_json::json!(1e300)),
        ("maxLaunchDelaySeconds", serde_json::json!(1e300)),
        ("taskKillGracePeriodSeconds", serde_json::json!(1.8e19)),
        ("instances", serde_json::json!(u32::MAX)),
        (
            "upgradeStrategy",
            serde_json::json!({"minimumHealthCapacity": 1e300, "maximumOverCapacity": 1e300}),
        ),
        (
            "unreachableStrategy",
            serde_json::json!({"inactiveAfterSeconds": 1e300, "expungeAfterSeconds": -1e300}),
        ),
        (
            "healthChecks",
            serde_json::json!([{"protocol": "TCP", "portIndex": 0, "gracePeriodSeconds": 1e300,
                                "intervalSeconds": 1e300, "timeoutSeconds": -1e300,
                                "delaySeconds": 1e300}]),
        ),
    ];
    for (field, value) in hostile {
        let mut core = ServicesCore::default();
        core.put_app(
            app(r#"{"id":"/crashy","cmd":"exit 1","cpus":0.1,"mem":32,"portDefinitions":[{"port":0}]}"#),
            true,
            false,
            t(0),
        )
        .expect("create");
        let mut saved = serde_json::to_value(&core).expect("save");
        saved["apps"]["/crashy"]["app"][field] = value.clone();
        saved["apps"]["/crashy"]["delaySeconds"] = serde_json::json!(1e300);
        let mut core: ServicesCore = serde_json::from_value(saved).expect("a saved core reads");
        for round in 0..3 {
            let l = core.launches_for(
                &offer("o", "h1", "cpus:1;mem:256;ports:[31000-31010]"),
                t(round * 10),
            );
            assert!(l.len() <= 10, "{field}: bounded by the offer");
            for launch in &l {
                let kp = launch
                    .task
                    .kill_policy
                    .as_ref()
                    .map_or(0.0, |k| k.grace_period_seconds);
                assert!(
                    (0.0..=31_536_000.0).contains(&kp),
                    "{field}: kill grace {kp}"
                );
                if let Some(hc) = &launch.task.health_check {
                    for v in [
                        hc.grace_period_seconds,
                        hc.interval_seconds,
                        hc.timeout_seconds,
                        hc.delay_seconds,
                    ] {
                        assert!(
                            (0.0..=31_536_000.0).contains(&v),
                            "{field}: health check {v}"
                        );
                    }
                }
                update(
                    &mut core,
                    &launch.task.task_id,
                    v1::TaskState::TaskRunning,
                    Some(true),
                    t(round * 10 + 1),
                );
                update(
                    &mut core,
                    &launch.task.task_id,
                    v1::TaskState::TaskFailed,
                    None,
                    t(round * 10 + 2),
                );
            }
            let st = core.app("/crashy").expect("app");
            assert!(
                st.delay_seconds <= 31_536_000.0,
                "{field}: delay {}",
                st.delay_seconds
            );
            if let Some(at) = st.next_launch_at {
                assert!(
                    at <= t(round * 10 + 2) + ChronoDuration::days(366),
                    "{field}: {at}"
                );
            }
            core.plan(t(round * 10 + 3));
            let _ = core.wants_offers(t(round * 10 + 3));
        }
        core.restart("/crashy", true, t(100)).expect("restart");
        core.plan(t(101));
        let _ = core.launches_for(
            &offer("o", "h1", "cpus:1;mem:256;ports:[31000-31010]"),
            t(102),
        );
    }
}

#[test]
fn launch_delay_arithmetic_saturates() {
    let mut a = app(r#"{"id":"/a","cmd":"x"}"#);
    for (backoff, factor, max) in [
        (1e300, 1e300, 1e300),
        (f64::NAN, f64::NAN, f64::NAN),
        (f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY),
        (-5.0, -5.0, -5.0),
    ] {
        a.backoff_seconds = backoff;
        a.backoff_factor = factor;
        a.max_launch_delay_seconds = max;
        let mut d = 0.0;
        for _ in 0..5 {
            d = next_delay(d, &a);
            assert!(
                (0.0..=31_536_000.0).contains(&d),
                "{backoff} {factor} {max}: {d}"
            );
            let _ = after_seconds(t(0), d);
        }
    }
    assert_eq!(
        after_seconds(DateTime::<Utc>::MAX_UTC, 10.0),
        DateTime::<Utc>::MAX_UTC
    );
    assert_eq!(after_seconds(t(0), f64::NAN), t(0));
    assert_eq!(
        after_seconds(t(0), 2.5),
        t(0) + ChronoDuration::milliseconds(2500)
    );
}

fn reason_count(core: &ServicesCore, id: &str, reason: &str) -> (u64, u64) {
    let summary = core.app(id).expect("app").offer_stats.summary_json();
    let step = summary["rejectSummaryLaunchAttempt"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["reason"] == reason)
        .cloned()
        .expect("every reason is listed");
    (
        step["declined"].as_u64().expect("declined"),
        summary["processedOffersCount"].as_u64().expect("processed"),
    )
}

#[test]
fn launches_for_counts_each_offer_an_app_could_not_use_under_marathons_reason() {
    let mut core = ServicesCore::default();
    core.put_app(
        app(r#"{"id":"/big","cmd":"x","cpus":0.5,"mem":4096,"disk":10}"#),
        true,
        false,
        t(0),
    )
    .expect("create");
    core.put_app(
        app(r#"{"id":"/picky","cmd":"x","cpus":0.1,"mem":32,"constraints":[["rack","IS","r9"]]}"#),
        true,
        false,
        t(0),
    )
    .expect("create");
    core.put_app(
        app(r#"{"id":"/cpu","cmd":"x","cpus":8,"mem":32,"portDefinitions":[{"port":0}]}"#),
        true,
        false,
        t(0),
    )
    .expect("create");
    core.plan(t(0));
    assert!(core
        .launches_for(&offer("o1", "h1", "cpus:4;mem:1024;disk:100"), t(1))
        .is_empty());
    // Too little mem: InsufficientMemory, and nothing else.
    assert_eq!(reason_count(&core, "/big", "InsufficientMemory"), (1, 1));
    assert_eq!(reason_count(&core, "/big", "InsufficientCpus"), (0, 1));
    assert_eq!(reason_count(&core, "/big", "InsufficientDisk"), (0, 1));
    // The agent has no rack r9: UnfulfilledConstraint.
    assert_eq!(
        reason_count(&core, "/picky", "UnfulfilledConstraint"),
        (1, 1)
    );
    // Too few cpus and no ports: counted once, under the first reason of the funnel.
    assert_eq!(reason_count(&core, "/cpu", "InsufficientCpus"), (1, 1));
    assert_eq!(reason_count(&core, "/cpu", "InsufficientPorts"), (0, 1));
    let cpu = &core.app("/cpu").expect("app").offer_stats;
    assert_eq!(
        cpu.last_unused[0].reasons,
        [Reason::InsufficientCpus, Reason::InsufficientPorts]
    );
    assert_eq!(cpu.since, Some(t(0)));
    let mut on_rack = offer("o2", "h2", "cpus:4;mem:8192;disk:100");
    on_rack.attributes.push(v1::Attribute {
        name: "rack".into(),
        text: "r9".into(),
    });
    let l = core.launches_for(&on_rack, t(2));
    assert_eq!(l.len(), 2, "/big and /picky fit on h2");
    let big = &core.app("/big").expect("app").offer_stats;
    assert_eq!((big.processed, big.unused), (2, 1));
    assert_eq!(big.last_used_at, Some(t(2)));
    // Once an app waits for nothing its statistics are forgotten (the launch attempt ended).
    run_all(&mut core, &l, None, t(3));
    core.plan(t(3));
    assert_eq!(
        core.app("/big").expect("app").offer_stats,
        OfferStats::default()
    );
    assert_eq!(core.queued(core.app("/cpu").expect("app"), t(3)), 1);
    assert_eq!(core.queued(core.app("/big").expect("app"), t(3)), 0);
}

#[test]
fn service_ports_are_assigned_unique_kept_on_update_and_freed_on_delete() {
    let mut core = ServicesCore::default();
    core.set_service_port_range("10000-10002".parse().expect("range"));
    let ports = |core: &ServicesCore, id: &str| {
        crate::ports::service_ports(&core.app(id).expect("app").app)
    };
    core.put_app(
        app(r#"{"id":"/a","cmd":"x","cpus":0.1,"mem":32,"portDefinitions":[{"port":0,"name":"http"},{"port":0}]}"#),
        true,
        false,
        t(0),
    )
    .expect("a");
    assert_eq!(ports(&core, "/a"), [10000, 10001]);
    core.put_app(
        app(r#"{"id":"/b","cmd":"x","cpus":0.1,"mem":32,"portDefinitions":[{"port":0}]}"#),
        true,
        false,
        t(1),
    )
    .expect("b");
    assert_eq!(ports(&core, "/b"), [10002]);
    // The range is used up: the next app is refused at its field, and nothing changes.
    let e = core
        .put_app(
            app(r#"{"id":"/c","cmd":"x","portDefinitions":[{"port":0}]}"#),
            true,
            false,
            t(2),
        )
        .expect_err("exhausted");
    let ServicesError::Invalid(details) = e else {
        panic!("422 expected: {e:?}")
    };
    assert_eq!(details[0].path, "/portDefinitions/0/port");
    assert!(core.app("/c").is_none());
    // Another app's port is refused, naming the field and the app.
    let e = core
        .put_app(
            app(r#"{"id":"/c","cmd":"x","portDefinitions":[{"port":10002}]}"#),
            true,
            false,
            t(2),
        )
        .expect_err("conflict");
    assert_eq!(
        e,
        ServicesError::Invalid(vec![FieldError {
            path: "/portDefinitions/0/port".into(),
            errors: vec![
                "Requested service port 10002 conflicts with a service port in app /b".into()
            ],
        }])
    );
    // An update (ports 0 again, a new command) keeps the ports; the same definition again is a
    // scale, not a restart.
    core.put_app(
        app(r#"{"id":"/a","cmd":"y","cpus":0.1,"mem":32,"portDefinitions":[{"port":0,"name":"http"},{"port":0}]}"#),
        false,
        true,
        t(3),
    )
    .expect("update");
    assert_eq!(ports(&core, "/a"), [10000, 10001]);
    core.put_app(
        app(r#"{"id":"/a","cmd":"y","cpus":0.1,"mem":32,"instances":2,"portDefinitions":[{"port":0,"name":"http"},{"port":0}]}"#),
        false,
        true,
        t(4),
    )
    .expect("scale");
    assert!(core.deployments().iter().any(|d| d
        .current_actions()
        .iter()
        .any(|a| a.app == "/a" && a.action == "ScaleApplication")));
    // Tasks carry the service ports; the env maps them and the names onto the host ports.
    let l = core.launches_for(
        &offer("o", "h1", "cpus:1;mem:256;ports:[31000-31001]"),
        t(5),
    );
    assert_eq!(l.len(), 1);
    let task = core
        .app("/a")
        .expect("app")
        .tasks
        .values()
        .next()
        .expect("task")
        .clone();
    assert_eq!(task.service_ports, [10000, 10001]);
    let env = &l[0].task.command.as_ref().expect("command").environment;
    assert_eq!(env["PORT0"], "31000");
    assert_eq!(env["PORT_HTTP"], "31000");
    assert_eq!(env["PORT_10001"], "31001");
    assert_eq!(env["PORTS"], "31000,31001");
    // Saved and loaded (a restart, a failover): the same ports.
    let saved = serde_json::to_vec(&core).expect("save");
    let mut loaded: ServicesCore = serde_json::from_slice(&saved).expect("load");
    loaded.set_service_port_range("10000-10002".parse().expect("range"));
    assert_eq!(ports(&loaded, "/a"), [10000, 10001]);
    assert_eq!(
        loaded
            .app("/a")
            .expect("app")
            .tasks
            .values()
            .next()
            .expect("task")
            .service_ports,
        [10000, 10001]
    );
    // Deleted: its ports go to the next app.
    core.delete_app("/a", true, t(6)).expect("delete");
    core.put_app(
        app(r#"{"id":"/c","cmd":"x","portDefinitions":[{"port":0},{"port":0}]}"#),
        true,
        false,
        t(7),
    )
    .expect("c");
    assert_eq!(ports(&core, "/c"), [10000, 10001]);
}

#[test]
fn require_ports_launches_only_on_offers_with_the_service_ports() {
    let mut core = ServicesCore::default();
    core.set_service_port_range("31005-31010".parse().expect("range"));
    core.put_app(
        app(r#"{"id":"/r","cmd":"x","cpus":0.1,"mem":32,"requirePorts":true,"portDefinitions":[{"port":0}]}"#),
        true,
        false,
        t(0),
    )
    .expect("r");
    assert!(core
        .launches_for(
            &offer("o1", "h1", "cpus:1;mem:256;ports:[31000-31004]"),
            t(1)
        )
        .is_empty());
    assert_eq!(reason_count(&core, "/r", "InsufficientPorts"), (1, 1));
    let l = core.launches_for(
        &offer("o2", "h2", "cpus:1;mem:256;ports:[31000-31009]"),
        t(2),
    );
    assert_eq!(l.len(), 1);
    let env = &l[0].task.command.as_ref().expect("command").environment;
    assert_eq!(env["PORT0"], "31005");
}

#[test]
fn apps_saved_before_service_ports_get_theirs_when_loaded() {
    let mut core = ServicesCore::default();
    core.put_app(
        app(r#"{"id":"/old","cmd":"x","portDefinitions":[{"port":0}]}"#),
        true,
        false,
        t(0),
    )
    .expect("old");
    let mut saved = serde_json::to_value(&core).expect("save");
    saved["apps"]["/old"]["app"]["portDefinitions"][0]["port"] = serde_json::json!(0);
    let mut loaded: ServicesCore = serde_json::from_value(saved).expect("load");
    loaded.set_service_port_range(crate::ports::PortRange::default());
    assert_eq!(
        crate::ports::service_ports(&loaded.app("/old").expect("app").app),
        [10000]
    );
}

/// Two running tasks of `/k` (one per host) at t(1), the deployment done.
fn two_running() -> (ServicesCore, Vec<String>) {
    let mut core = ServicesCore::default();
    core.put_app(
        app(r#"{"id":"/k","cmd":"sleep 100","cpus":0.1,"mem":32,"instances":2}"#),
        true,
        false,
        t(0),
    )
    .expect("create");
    let mut launches = core.launches_for(&offer("o1", "h1", "cpus:1;mem:256"), t(0));
    launches.extend(core.launches_for(&offer("o2", "h2", "cpus:1;mem:256"), t(0)));
    assert_eq!(launches.len(), 2);
    run_all(&mut core, &launches, None, t(1));
    assert!(core.deployments().is_empty());
    let ids = launches.iter().map(|l| l.task.task_id.clone()).collect();
    (core, ids)
}

#[test]
fn a_kill_without_scale_keeps_the_instance_count_and_skips_unknown_ids() {
    let (mut core, ids) = two_running();
    let killed = core.kill_tasks(&[ids[0].clone(), "k.nope".into()]);
    assert_eq!(killed.len(), 1);
    assert_eq!(killed[0].id, ids[0]);
    assert_eq!(core.take_deferred(), vec![Effect::Kill(ids[0].clone())]);
    assert_eq!(core.app("/k").expect("app").app.instances, 2);
    assert!(core.deployments().is_empty());
}

#[test]
fn a_kill_with_scale_lowers_instances_by_the_live_tasks_as_a_new_version_and_deployment() {
    let (mut core, ids) = two_running();
    let before = core.app("/k").expect("app").version.clone();
    // The same id twice and an unknown one count once and not at all.
    let (dep, version) = core
        .kill_and_scale(
            &[ids[0].clone(), ids[0].clone(), "k.nope".into()],
            false,
            t(5),
        )
        .expect("kill")
        .expect("an app changed");
    let st = core.app("/k").expect("app");
    assert_eq!(st.app.instances, 1);
    assert_eq!(version, version_of(t(5)));
    assert_ne!(st.version, before);
    assert_eq!(
        st.versions.last().map(|(v, a)| (v.as_str(), a.instances)),
        Some((version.as_str(), 1))
    );
    assert!(st.tasks[&ids[0]].killing);
    assert_eq!(core.deployments()[0].id, dep);
    assert_eq!(
        core.deployments()[0].current_actions()[0].action,
        "ScaleApplication"
    );
    assert_eq!(core.take_deferred(), vec![Effect::Kill(ids[0].clone())]);
    // A task already being killed does not count again; the count never goes below 0.
    let _ = core
        .kill_and_scale(&ids, true, t(6))
        .expect("forced")
        .expect("changed");
    assert_eq!(core.app("/k").expect("app").app.instances, 0);
    // No known task: nothing changes.
    assert_eq!(core.kill_and_scale(&["x.y".into()], false, t(7)), Ok(None));
}

#[test]
fn a_kill_with_scale_of_a_locked_app_is_refused_whole() {
    let (mut core, ids) = two_running();
    core.put_app(
        app(r#"{"id":"/k","cmd":"sleep 100","cpus":0.1,"mem":32,"instances":5}"#),
        false,
        false,
        t(2),
    )
    .expect("scale up");
    let err = core.kill_and_scale(&ids[..1], false, t(3)).unwrap_err();
    assert!(matches!(err, ServicesError::Locked(_)));
    let st = core.app("/k").expect("app");
    assert_eq!(st.app.instances, 5);
    assert!(!st.tasks[&ids[0]].killing);
    assert!(core.take_deferred().is_empty());
}

#[test]
fn versions_are_kept_for_changes_and_restarts_and_a_rollback_redeploys_one() {
    let (mut core, _) = two_running();
    let first = core.app("/k").expect("app").version.clone();
    core.put_app(
        app(r#"{"id":"/k","cmd":"sleep 200","cpus":0.1,"mem":32,"instances":2}"#),
        false,
        true,
        t(2),
    )
    .expect("update");
    let (_, restarted) = core.restart("/k", true, t(3)).expect("restart");
    let st = core.app("/k").expect("app");
    let versions: Vec<&str> = st.versions.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(versions, [first.as_str(), &version_of(t(2)), &restarted]);
    assert_eq!(
        core.app_version("/k", &first)
            .expect("first")
            .cmd
            .as_deref(),
        Some("sleep 100")
    );
    assert_eq!(
        core.app_version("/k", "2001-01-01T00:00:00.000Z"),
        Err(ServicesError::UnknownVersion(
            "/k".into(),
            "2001-01-01T00:00:00.000Z".into()
        ))
    );
    assert!(matches!(
        core.app_version("/nope", &first),
        Err(ServicesError::UnknownApp(_))
    ));
    let (_, version) = core.rollback("/k", &first, true, t(4)).expect("rollback");
    let st = core.app("/k").expect("app");
    assert_eq!(st.app.cmd.as_deref(), Some("sleep 100"));
    assert_eq!(st.version, version);
    assert_eq!(st.config_version, version, "a rollback replaces the tasks");
    assert!(matches!(
        core.rollback("/k", "2001-01-01T00:00:00.000Z", true, t(5)),
        Err(ServicesError::UnknownVersion(..))
    ));
}

#[test]
fn a_task_failure_names_the_host_and_the_agent() {
    let (mut core, ids) = two_running();
    let st = v1::TaskStatus {
        task_id: ids[0].clone(),
        state: v1::TaskState::TaskFailed as i32,
        message: "boom".into(),
        ..Default::default()
    };
    core.on_update(&st, t(3));
    let f = core
        .app("/k")
        .and_then(|a| a.last_task_failure.clone())
        .expect("failure");
    assert!(f["host"] == "h1" || f["host"] == "h2", "{f}");
    assert_eq!(
        f["slaveId"],
        format!("agent-{}", f["host"].as_str().unwrap_or(""))
    );
    assert_eq!(f["taskId"], ids[0].as_str());
}

#[test]
fn a_task_being_killed_that_a_reconciliation_reports_running_is_killed_again() {
    let (mut core, ids) = two_running();
    core.kill_and_scale(&[ids[0].clone()], false, t(5))
        .expect("kill")
        .expect("an app changed");
    assert_eq!(core.take_deferred(), vec![Effect::Kill(ids[0].clone())]);
    let running = |reason: v1::Reason| v1::TaskStatus {
        task_id: ids[0].clone(),
        state: v1::TaskState::TaskRunning as i32,
        reason: reason as i32,
        ..Default::default()
    };
    // A health or other update while the kill is under way (the master drains it): no repeat.
    let effects = core.on_update(&running(v1::Reason::Unspecified), t(6));
    assert!(
        !effects.contains(&Effect::Kill(ids[0].clone())),
        "{effects:?}"
    );
    // A new leader that never sent the kill answers the reconciliation with RUNNING: again.
    let effects = core.on_update(&running(v1::Reason::Reconciliation), t(7));
    assert!(
        effects.contains(&Effect::Kill(ids[0].clone())),
        "{effects:?}"
    );
    // The other task, not being killed, is left alone.
    let other = v1::TaskStatus {
        task_id: ids[1].clone(),
        state: v1::TaskState::TaskRunning as i32,
        reason: v1::Reason::Reconciliation as i32,
        ..Default::default()
    };
    assert!(!core
        .on_update(&other, t(8))
        .contains(&Effect::Kill(ids[1].clone())));
}

#[test]
fn a_kill_that_brings_no_end_is_sent_again_every_ten_seconds() {
    let (mut core, ids) = two_running();
    core.kill_and_scale(&[ids[0].clone()], false, t(5))
        .expect("kill")
        .expect("an app changed");
    assert_eq!(core.take_deferred(), vec![Effect::Kill(ids[0].clone())]);
    let kills = |effects: Vec<Effect>| {
        effects
            .iter()
            .filter(|e| **e == Effect::Kill(ids[0].clone()))
            .count()
    };
    // The first tick notes the kill; no repeat within 10 s (the master drains meanwhile).
    assert_eq!(kills(core.plan(t(5))), 0);
    assert_eq!(kills(core.plan(t(14))), 0);
    assert_eq!(kills(core.plan(t(15))), 1);
    assert_eq!(kills(core.plan(t(16))), 0);
    assert_eq!(kills(core.plan(t(25))), 1);
    // Once it ended, never again.
    core.on_update(
        &v1::TaskStatus {
            task_id: ids[0].clone(),
            state: v1::TaskState::TaskKilled as i32,
            ..Default::default()
        },
        t(26),
    );
    assert_eq!(kills(core.plan(t(40))), 0);
}

/// A global app (`AGORA_GLOBAL=true`) follows the agents: one instance per agent seen, a new
/// agent gets one without an API call, an agent whose task is lost stops counting (its task is
/// not replaced elsewhere, no other task is killed), and it counts again when it offers again.
#[test]
fn a_global_app_follows_agents_as_they_join_and_leave() {
    let mut core = ServicesCore::default();
    core.put_app(
        app(
            r#"{"id":"/s/probe","cmd":"sleep 100","cpus":0.1,"mem":16,"instances":1,
                "labels":{"AGORA_GLOBAL":"true"}}"#,
        ),
        true,
        false,
        t(0),
    )
    .expect("create");
    assert!(core.wants_offers(t(0)));
    let instances = |core: &ServicesCore| core.apps.get("/s/probe").map(|s| s.app.instances);
    let res = "cpus:4;mem:1024";
    // One per agent, never two on one agent.
    let l1 = core.launches_for(&offer("o1", "h1", res), t(1));
    assert_eq!(l1.len(), 1);
    let l2 = core.launches_for(&offer("o2", "h2", res), t(1));
    assert_eq!(l2.len(), 1);
    run_all(&mut core, &l1, None, t(2));
    run_all(&mut core, &l2, None, t(2));
    assert_eq!(instances(&core), Some(2));
    assert!(core.launches_for(&offer("o3", "h1", res), t(3)).is_empty());
    // Still wanting offers with nothing to launch: that is how a new agent is seen.
    assert!(core.wants_offers(t(3)));
    // A third agent joins.
    let l3 = core.launches_for(&offer("o4", "h3", res), t(4));
    assert_eq!(l3.len(), 1);
    assert_eq!(instances(&core), Some(3));
    run_all(&mut core, &l3, None, t(5));
    assert!(core.plan(t(5)).is_empty());
    // Agents that offer nothing (all resources in use) still count while our tasks run there.
    assert_eq!(
        core.plan(t(5 + crate::global::AGENT_TTL_SECS * 2)),
        Vec::new()
    );
    assert_eq!(instances(&core), Some(3));
    // h3 is lost: 2 again, nothing killed, nothing to launch on the others.
    let later = t(10 + crate::global::AGENT_TTL_SECS * 2);
    let effects = update(
        &mut core,
        &l3[0].task.task_id,
        v1::TaskState::TaskLost,
        None,
        later,
    );
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(instances(&core), Some(2));
    assert!(core.launches_for(&offer("o5", "h1", res), later).is_empty());
    // h3 offers again: it gets a task again.
    let back = core.launches_for(&offer("o6", "h3", res), later);
    assert_eq!(back.len(), 1);
    assert_eq!(instances(&core), Some(3));
}
