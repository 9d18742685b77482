use std::collections::BTreeSet;

use agora_proto::v1;

use super::*;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
        .expect("t")
        .with_timezone(&Utc)
        + chrono::Duration::seconds(secs)
}

fn app(json: &str) -> App {
    serde_json::from_str(json).expect("app json")
}

fn offer(id: &str, host: &str) -> v1::Offer {
    v1::Offer {
        id: id.into(),
        agent_id: format!("agent-{host}"),
        hostname: host.into(),
        resources: agora_proto::Resources::parse("cpus:0.15;mem:4096;ports:[31000-31009]")
            .expect("res")
            .to_proto(),
        ..Default::default()
    }
}

fn status(id: &str, state: v1::TaskState, healthy: Option<bool>) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: id.into(),
        state: state as i32,
        healthy,
        ..Default::default()
    }
}

/// `/w` with `json`'s fields, one task running (health `healthy`) on h1, one staging on h2.
fn core_with(json: &str, healthy: Option<bool>) -> (ServicesCore, String, String) {
    let mut core = ServicesCore::default();
    core.put_app(app(json), true, false, t(0)).expect("create");
    let a = core.launches_for(&offer("o1", "h1"), t(0));
    let b = core.launches_for(&offer("o2", "h2"), t(0));
    let (a, b) = (a[0].task.task_id.clone(), b[0].task.task_id.clone());
    core.on_update(&status(&a, v1::TaskState::TaskRunning, healthy), t(2));
    (core, a, b)
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Every keyword `MarathonApp.__init__` of PyPI `marathon` 0.13 takes, camelCased as the client
/// maps JSON keys: any other key makes it raise.
const CLIENT_APP_KEYS: &[&str] = &[
    "acceptedResourceRoles",
    "args",
    "backoffFactor",
    "backoffSeconds",
    "cmd",
    "constraints",
    "container",
    "cpus",
    "dependencies",
    "deployments",
    "disk",
    "env",
    "executor",
    "healthChecks",
    "id",
    "role",
    "instances",
    "killSelection",
    "labels",
    "lastTaskFailure",
    "maxLaunchDelaySeconds",
    "mem",
    "ports",
    "requirePorts",
    "storeUrls",
    "taskRateLimit",
    "tasks",
    "tasksRunning",
    "tasksStaged",
    "tasksHealthy",
    "taskKillGracePeriodSeconds",
    "tasksUnhealthy",
    "upgradeStrategy",
    "unreachableStrategy",
    "uris",
    "user",
    "version",
    "versionInfo",
    "ipAddress",
    "fetch",
    "taskStats",
    "readinessChecks",
    "readinessCheckResults",
    "secrets",
    "portDefinitions",
    "residency",
    "gpus",
    "networks",
];

/// `MarathonTask.__init__`'s keywords.
const CLIENT_TASK_KEYS: &[&str] = &[
    "appId",
    "healthCheckResults",
    "host",
    "id",
    "ports",
    "servicePorts",
    "slaveId",
    "stagedAt",
    "startedAt",
    "version",
    "ipAddresses",
    "state",
    "localVolumes",
    "region",
    "zone",
    "role",
];

fn is_marathon_time(s: &str) -> bool {
    regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        .expect("regex")
        .is_match(s)
}

#[test]
fn a_task_has_exactly_marathons_keys_and_times_the_clients_parse() {
    let (core, running, staging) = core_with(
        r#"{"id":"/w","cmd":"x","cpus":0.1,"mem":32,"instances":2,"portDefinitions":[{"port":10001}],"requirePorts":false,
            "healthChecks":[{"protocol":"COMMAND","command":{"value":"true"}}]}"#,
        Some(true),
    );
    let st = core.app("/w").expect("app");
    let tasks: Vec<Value> = tasks_of(st)
        .iter()
        .map(|t| serde_json::to_value(t).expect("json"))
        .collect();
    let run = tasks
        .iter()
        .find(|t| t["id"] == running.as_str())
        .expect("running");
    assert_eq!(
        keys(run),
        set(&[
            "id",
            "appId",
            "host",
            "ports",
            "servicePorts",
            "slaveId",
            "stagedAt",
            "startedAt",
            "version",
            "state",
            "ipAddresses",
            "healthCheckResults"
        ])
    );
    assert!(keys(run).is_subset(&set(CLIENT_TASK_KEYS)));
    assert_eq!(run["appId"], "/w");
    assert_eq!(run["slaveId"], "agent-h1");
    assert_eq!(run["host"], "h1");
    assert_eq!(run["state"], "TASK_RUNNING");
    assert_eq!(run["servicePorts"], json!([10001]));
    assert_eq!(run["ports"].as_array().map(Vec::len), Some(1));
    assert_eq!(run["version"], st.config_version.as_str());
    for k in ["stagedAt", "startedAt"] {
        assert!(
            is_marathon_time(run[k].as_str().unwrap_or("")),
            "{k}: {}",
            run[k]
        );
    }
    assert_eq!(
        run["ipAddresses"],
        json!([{ "ipAddress": "h1", "protocol": "IPv4" }])
    );
    let health = &run["healthCheckResults"][0];
    assert_eq!(
        keys(health),
        set(&["alive", "consecutiveFailures", "taskId", "instanceId"])
    );
    assert_eq!(health["alive"], true);
    // A staging task has no start time yet and no health result.
    let stg = tasks
        .iter()
        .find(|t| t["id"] == staging.as_str())
        .expect("staging");
    assert!(stg.get("startedAt").is_none());
    assert_eq!(stg["healthCheckResults"], json!([]));
    assert!(stg.get("agentId").is_none() && stg.get("message").is_none());
}

#[test]
fn service_ports_are_the_assigned_ones_in_port_order() {
    let bridged = app(
        r#"{"id":"/b","container":{"type":"DOCKER","docker":{"image":"x"},"portMappings":[{"containerPort":80,"servicePort":10005},{"containerPort":81,"servicePort":10006}]},
            "networks":[{"mode":"container/bridge"}]}"#,
    );
    assert_eq!(service_ports(&bridged), [10005, 10006]);
    let unassigned = app(r#"{"id":"/h","cmd":"x","portDefinitions":[{"port":10001},{"port":0}]}"#);
    assert_eq!(service_ports(&unassigned), [10001]);
    assert!(service_ports(&app(r#"{"id":"/n","cmd":"x"}"#)).is_empty());
}

#[test]
fn an_app_with_every_embed_has_only_keys_the_client_knows() {
    let (mut core, running, _) = core_with(
        r#"{"id":"/w","cmd":"x","cpus":0.1,"mem":32,"instances":2,"labels":{"a":"b"},
            "container":{"type":"MESOS","volumes":[{"containerPath":"/d","hostPath":"/tmp","mode":""}]},
            "healthChecks":[{"protocol":"COMMAND","command":"true"}]}"#,
        Some(false),
    );
    core.on_update(
        &v1::TaskStatus {
            message: "boom".into(),
            ..status(&running, v1::TaskState::TaskFailed, None)
        },
        t(3),
    );
    let all = Embed::parse([
        "apps.tasks",
        "apps.counts",
        "apps.deployments",
        "apps.lastTaskFailure",
        "apps.taskStats",
        "apps.readiness",
    ]);
    let st = core.app("/w").expect("app");
    let v = app_info_value(st, &core, all, t(10));
    let k = keys(&v);
    let known = set(CLIENT_APP_KEYS);
    let unknown: Vec<&String> = k.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "keys the client would reject: {unknown:?}"
    );
    for expected in [
        "id",
        "cmd",
        "instances",
        "version",
        "versionInfo",
        "tasksRunning",
        "tasksStaged",
        "tasksHealthy",
        "tasksUnhealthy",
        "deployments",
        "tasks",
        "lastTaskFailure",
        "taskStats",
        "readinessCheckResults",
        "readinessChecks",
        "portDefinitions",
        "networks",
        "upgradeStrategy",
        "unreachableStrategy",
        "killSelection",
        "gpus",
        "secrets",
        "executor",
    ] {
        assert!(k.contains(expected), "{expected} missing from {k:?}");
    }
    assert!(
        v.get("container")
            .and_then(|c| c.get("portMappings"))
            .is_none(),
        "host networking shows portDefinitions"
    );
    assert_eq!(v["container"]["volumes"][0]["mode"], "RW");
    assert_eq!(v["healthChecks"][0]["command"], json!({ "value": "true" }));
    assert_eq!(v["networks"], json!([{ "mode": "host" }]));
    assert_eq!(
        keys(&v["versionInfo"]),
        set(&["lastScalingAt", "lastConfigChangeAt"])
    );
    assert!(is_marathon_time(
        v["versionInfo"]["lastConfigChangeAt"]
            .as_str()
            .unwrap_or("")
    ));
    let f = &v["lastTaskFailure"];
    assert!(
        keys(f).is_subset(&set(&[
            "appId",
            "host",
            "message",
            "taskId",
            "instanceId",
            "slaveId",
            "state",
            "timestamp",
            "version"
        ])),
        "{f}"
    );
    assert_eq!(f["host"], "h1");
    assert_eq!(f["slaveId"], "agent-h1");
    assert_eq!(f["message"], "boom");
    // The failed task is gone; a replacement is wanted, the staging one is still there.
    assert_eq!(v["tasksStaged"], 1);
    assert_eq!(v["tasksRunning"], 0);
    let stats = &v["taskStats"];
    assert_eq!(
        keys(stats),
        set(&[
            "startedAfterLastScaling",
            "withLatestConfig",
            "totalSummary"
        ])
    );
    assert_eq!(
        stats["totalSummary"]["stats"]["counts"],
        json!({"staged": 1, "running": 0, "healthy": 0, "unhealthy": 0})
    );
}

#[test]
fn embeds_resolve_as_marathon_resolves_them() {
    let none = Embed::default();
    let tasks = Embed {
        tasks: true,
        deployments: true,
        ..none
    };
    let table: &[(&[&str], Embed)] = &[
        (&["bogus"], none),
        (&["apps.tasks"], tasks),
        (&["app.tasks"], tasks),
        (&["tasks"], tasks),
        (&["group.apps.tasks"], tasks),
        (
            &["apps.failures"],
            Embed {
                last_task_failure: true,
                ..tasks
            },
        ),
        (
            &["app.counts"],
            Embed {
                counts: true,
                ..none
            },
        ),
        (
            &["apps.taskStats"],
            Embed {
                task_stats: true,
                ..none
            },
        ),
        (
            &["apps.readiness"],
            Embed {
                readiness: true,
                ..none
            },
        ),
        (
            &["apps.lastTaskFailure"],
            Embed {
                last_task_failure: true,
                ..none
            },
        ),
        (
            &["apps.deployments"],
            Embed {
                deployments: true,
                ..none
            },
        ),
        (
            &["app.counts", "app.taskStats"],
            Embed {
                counts: true,
                task_stats: true,
                ..none
            },
        ),
    ];
    for (values, want) in table {
        assert_eq!(Embed::parse(values.iter().copied()), *want, "{values:?}");
    }
    assert_eq!(
        Embed::for_list([]),
        Embed {
            counts: true,
            deployments: true,
            ..none
        }
    );
    assert_eq!(
        Embed::for_app([]),
        Embed {
            counts: true,
            deployments: true,
            tasks: true,
            last_task_failure: true,
            ..none
        }
    );
}

#[test]
fn a_list_without_embeds_has_counts_and_deployments_but_no_tasks() {
    let (core, _, _) = core_with(
        r#"{"id":"/w","cmd":"x","cpus":0.1,"mem":32,"instances":2}"#,
        None,
    );
    let st = core.app("/w").expect("app");
    let v = app_info_value(st, &core, Embed::for_list([]), t(5));
    assert!(
        v.get("tasks").is_none()
            && v.get("taskStats").is_none()
            && v.get("lastTaskFailure").is_none()
    );
    assert_eq!(v["tasksRunning"], 1);
    assert_eq!(v["tasksStaged"], 1);
    assert_eq!(
        v["deployments"].as_array().map(Vec::len),
        Some(1),
        "the start is still deploying"
    );
}

#[test]
fn the_text_task_list_is_marathons() {
    let (mut core, running, _) = core_with(
        r#"{"id":"/prod/web","cmd":"x","cpus":0.1,"mem":32,"instances":2,"portDefinitions":[{"port":10001},{"port":10002}]}"#,
        None,
    );
    core.put_app(
        app(r#"{"id":"/plain","cmd":"x","cpus":0.1,"mem":32,"instances":1}"#),
        true,
        false,
        t(4),
    )
    .expect("second");
    let plain = core.launches_for(&offer("o3", "h3"), t(4));
    let plain = plain
        .iter()
        .find(|l| l.task.task_id.starts_with("plain."))
        .expect("plain")
        .task
        .task_id
        .clone();
    core.on_update(&status(&plain, v1::TaskState::TaskRunning, None), t(5));
    let st = core.app("/prod/web").expect("app");
    let ports = &st.tasks[&running].ports;
    let text = endpoints_text(core.apps());
    // Only the running task of /prod/web is listed, with its host port of each index.
    assert_eq!(
        text,
        format!(
            "plain\t \th3 \nprod_web\t10001\th1:{}\t\nprod_web\t10002\th1:{}\t\n",
            ports[0], ports[1]
        )
    );
}

#[test]
fn a_stored_version_has_the_version_info_it_had() {
    let mut core = ServicesCore::default();
    core.put_app(
        app(r#"{"id":"/v","cmd":"a","instances":1}"#),
        true,
        true,
        t(0),
    )
    .expect("v0");
    core.put_app(
        app(r#"{"id":"/v","cmd":"a","instances":3}"#),
        false,
        true,
        t(1),
    )
    .expect("scale");
    core.put_app(
        app(r#"{"id":"/v","cmd":"b","instances":3}"#),
        false,
        true,
        t(2),
    )
    .expect("change");
    let st = core.app("/v").expect("app");
    let at = |secs| app_at_version(st, &version_of(t(secs))).expect("stored");
    let scaled = at(1);
    assert_eq!(scaled["instances"], 3);
    assert_eq!(scaled["version"], version_of(t(1)));
    assert_eq!(
        scaled["versionInfo"],
        json!({ "lastScalingAt": version_of(t(1)), "lastConfigChangeAt": version_of(t(0)) })
    );
    assert_eq!(at(2)["versionInfo"]["lastConfigChangeAt"], version_of(t(2)));
    assert!(keys(&Value::Object(at(2))).is_subset(&set(CLIENT_APP_KEYS)));
    assert!(app_at_version(st, "2001-01-01T00:00:00.000Z").is_none());
}

#[test]
fn label_selectors_are_marathons() {
    let labels: std::collections::BTreeMap<String, String> = [
        ("env".to_string(), "prod".to_string()),
        ("tier".into(), "web".into()),
    ]
    .into();
    for (sel, want) in [
        ("env", true),
        ("nope", false),
        ("env==prod", true),
        ("env == prod", true),
        ("env==qa", false),
        ("env!=qa", true),
        ("nope!=qa", false),
        ("env in (qa, prod)", true),
        ("env in (qa)", false),
        ("env notin (qa)", true),
        ("nope notin (qa)", false),
        ("env==prod, tier in (web,db)", true),
        ("env==prod,tier==db", false),
    ] {
        assert_eq!(
            LabelSelector::parse(sel).expect(sel).matches(&labels),
            want,
            "{sel}"
        );
    }
    for bad in ["", "env==prod,", "env in qa", "a b"] {
        assert!(LabelSelector::parse(bad).is_err(), "{bad}");
    }
    assert!(LabelSelector::parse(&"a".repeat(MAX_SELECTOR + 1)).is_err());
}

/// `MarathonConfig.__init__`'s keywords.
const CLIENT_MARATHON_CONFIG: &[&str] = &[
    "checkpoint",
    "executor",
    "failover_timeout",
    "framework_name",
    "ha",
    "hostname",
    "leader_proxy_connection_timeout_ms",
    "leader_proxy_read_timeout_ms",
    "local_port_min",
    "local_port_max",
    "maintenance_mode",
    "master",
    "mesos_leader_ui_url",
    "mesos_role",
    "mesos_user",
    "new_group_enforce_role",
    "webui_url",
    "reconciliation_initial_delay",
    "reconciliation_interval",
    "task_launch_timeout",
    "marathon_store_timeout",
    "task_reservation_timeout",
    "features",
    "access_control_allow_origin",
    "decline_offer_duration",
    "default_network_name",
    "env_vars_prefix",
    "launch_token",
    "launch_token_refresh_interval",
    "max_instances_per_offer",
    "mesos_bridge_name",
    "mesos_heartbeat_failure_threshold",
    "mesos_heartbeat_interval",
    "min_revive_offers_interval",
    "offer_matching_timeout",
    "on_elected_prepare_timeout",
    "revive_offers_for_new_apps",
    "revive_offers_repetitions",
    "scale_apps_initial_delay",
    "scale_apps_interval",
    "store_cache",
    "task_launch_confirm_timeout",
    "task_lost_expunge_initial_delay",
    "task_lost_expunge_interval",
];

#[test]
fn info_has_marathons_objects_with_keys_the_client_knows() {
    let config = crate::ServicesConfig {
        master: "zk://u:p@127.0.0.1:2181/agora".into(),
        bind: "127.0.0.1:8080".parse().expect("addr"),
        work_dir: "/tmp/x".into(),
        role: "*".into(),
        framework_name: "services".into(),
        failover_timeout: std::time::Duration::from_secs(604_800),
        zk: Some("zk://127.0.0.1:2181/agora-services".into()),
        zk_session_timeout: std::time::Duration::from_secs(10),
        credential: None,
        advertise: None,
        api_token: None,
        tls: Default::default(),
        join_token: None,
        issued: None,
    };
    let v = info(&InfoInputs {
        config: &config,
        me: "10.0.0.5:8080",
        framework_id: Some("fw-1".into()),
        https: false,
    });
    assert_eq!(
        keys(&v),
        set(&[
            "name",
            "version",
            "buildref",
            "elected",
            "leader",
            "frameworkId",
            "marathon_config",
            "zookeeper_config",
            "http_config",
            "event_subscriber"
        ])
    );
    assert!(keys(&v["marathon_config"]).is_subset(&set(CLIENT_MARATHON_CONFIG)));
    assert!(keys(&v["zookeeper_config"]).is_subset(&set(&[
        "zk",
        "zk_future_timeout",
        "zk_hosts",
        "zk_max_versions",
        "zk_path",
        "zk_session_timeout",
        "zk_state",
        "zk_timeout",
        "zk_connection_timeout",
        "zk_compression",
        "zk_compression_threshold",
        "zk_max_node_size"
    ])));
    assert_eq!(v["http_config"], json!({ "http_port": 8080 }));
    assert_eq!(v["leader"], "10.0.0.5:8080");
    assert_eq!(v["frameworkId"], "fw-1");
    assert_eq!(
        v["marathon_config"]["master"],
        "zk://xxxxxxxx:xxxxxxxx@127.0.0.1:2181/agora"
    );
    assert_eq!(v["marathon_config"]["ha"], true);
    assert_eq!(v["marathon_config"]["failover_timeout"], 604_800);
    assert_eq!(v["marathon_config"]["webui_url"], "http://10.0.0.5:8080");
    assert_eq!(v["zookeeper_config"]["zk_session_timeout"], 10_000);
    assert_eq!(
        v["zookeeper_config"]["zk_max_versions"],
        crate::core::VERSIONS_KEPT
    );
    assert_eq!(v["event_subscriber"], Value::Null);
    let tls = info(&InfoInputs {
        config: &config,
        me: "h:8443",
        framework_id: None,
        https: true,
    });
    assert_eq!(tls["http_config"], json!({ "https_port": 8443 }));
}

#[test]
fn credentials_are_redacted_from_urls() {
    assert_eq!(
        redact("zk://a:b@h1:2181,h2:2181/p"),
        "zk://xxxxxxxx:xxxxxxxx@h1:2181,h2:2181/p"
    );
    assert_eq!(redact("zk://h1:2181/p"), "zk://h1:2181/p");
    assert_eq!(redact("127.0.0.1:5050"), "127.0.0.1:5050");
    assert_eq!(redact("zk://h/p@q"), "zk://h/p@q");
}
