//! Fuzzing the Marathon app reader and validator at scale: the path a `POST /v2/apps` body takes
//! (`app::parse`, `App::normalize`, `App::validate`).
//!
//! - arbitrary bytes and JSON-ish text: no panic;
//! - valid apps with one field deleted or replaced by a random JSON value: no panic, and a
//!   refusal names the mutated field (or a field the validator ties to it, listed in `related`);
//! - every accepted app round-trips: serialize → parse → normalize gives the same app.
//!
//! `PROPTEST_CASES` overrides the case counts; see docs/reliability.md.

use agora_proto::v1;
use agora_services::app::{self, App, FieldError};
use agora_services::core::ServicesCore;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};

fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        // Failing inputs are kept as named regression tests, not as files in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// What the API does with a body before it stores an app.
fn read(body: &[u8]) -> Result<App, Vec<FieldError>> {
    let mut a = app::parse(body)?;
    a.normalize();
    a.validate()?;
    Ok(a)
}

fn round_trips(a: &App) -> Result<(), TestCaseError> {
    let text = serde_json::to_vec(a).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back = read(&text);
    prop_assert_eq!(back.as_ref(), Ok(a), "{}", String::from_utf8_lossy(&text));
    Ok(())
}

/// Valid apps covering both networking forms, health checks, constraints, fetch and strategies.
fn templates() -> Vec<Value> {
    vec![
        json!({"id": "/web", "cmd": "python3 -m http.server $PORT0", "cpus": 0.5, "mem": 64,
               "instances": 3, "portDefinitions": [{"port": 0, "name": "http"}],
               "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0}],
               "constraints": [["hostname", "UNIQUE"]], "env": {"A": "1"}, "labels": {"team": "a"}}),
        json!({"id": "prod/api", "container": {"type": "DOCKER", "docker": {"image": "busybox",
               "network": "BRIDGE", "portMappings": [{"containerPort": 80, "hostPort": 0}]}},
               "healthChecks": [{"protocol": "TCP", "portIndex": 0, "intervalSeconds": 5}],
               "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.2}}),
        json!({"id": "/batchy", "args": ["sleep", "100"], "disk": 10, "ports": [10001, 0],
               "uris": ["http://example.com/a.tgz"], "backoffSeconds": 2, "backoffFactor": 1.5,
               "killSelection": "oldest_first", "dependencies": ["/web"],
               "unreachableStrategy": {"inactiveAfterSeconds": 10, "expungeAfterSeconds": 20}}),
        json!({"id": "/g/n", "cmd": "true", "container": {"type": "MESOS"},
               "networks": [{"mode": "container/bridge"}],
               "fetch": [{"uri": "/opt/x", "executable": true}],
               "healthChecks": [{"protocol": "COMMAND", "command": {"value": "true"}}],
               "unreachableStrategy": "disabled", "taskKillGracePeriodSeconds": 5}),
    ]
}

/// Every path in a JSON value, as pointer segments.
fn paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                prefix.push(k.clone());
                out.push(prefix.clone());
                paths(c, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                prefix.push(i.to_string());
                out.push(prefix.clone());
                paths(c, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u32>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        Just(json!(1e308)),
        Just(json!(-0.0)),
        ".{0,8}".prop_map(Value::String),
        prop_oneof![
            Just("DOCKER"),
            Just("MESOS"),
            Just("HTTP"),
            Just("HTTPS"),
            Just("COMMAND"),
            Just("container/bridge"),
            Just("host"),
            Just("tcp"),
            Just("UNIQUE"),
            Just("disabled"),
            Just("/web"),
            Just(""),
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete,
    Replace(Value),
}

fn pointer(path: &[String]) -> String {
    path.iter().map(|p| format!("/{p}")).collect()
}

fn mutate(v: &mut Value, path: &[String], m: &Mutation) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let Some(parent) = v.pointer_mut(&pointer(parent)) else {
        return;
    };
    match (parent, m) {
        (Value::Object(o), Mutation::Delete) => {
            o.remove(last);
        }
        (Value::Array(a), Mutation::Delete) => {
            if let Ok(i) = last.parse::<usize>() {
                if i < a.len() {
                    a.remove(i);
                }
            }
        }
        (p, Mutation::Replace(new)) => {
            if let Some(slot) = p.pointer_mut(&format!("/{last}")) {
                *slot = new.clone();
            }
        }
        _ => {}
    }
}

/// Fields whose value decides whether another field is valid: a mutation of the key may be
/// reported at any of the values.
fn related(mutated: &str) -> &'static [&'static str] {
    let top = mutated.split('/').nth(1).unwrap_or("");
    match top {
        // What the app runs: without them, `cmd` (or the image) is what is missing.
        "cmd" | "args" | "container" => &["/cmd", "/container", "/healthChecks"],
        // Ports and networks decide which health check port indices exist and whether port
        // mappings are allowed; normalisation moves the old forms into the new ones.
        "networks" | "portDefinitions" | "ports" => &[
            "/healthChecks",
            "/container/portMappings",
            "/portDefinitions",
        ],
        "id" => &["/dependencies", "/id"],
        "dependencies" => &["/dependencies"],
        "uris" => &["/fetch"],
        "unreachableStrategy" => &["/unreachableStrategy"],
        // A check's protocol decides whether it needs a port or a command.
        "healthChecks" => &["/healthChecks"],
        _ => &[],
    }
}

/// Whether some error names the mutated field, one of its parents or children, or a related field.
fn names_the_field(errors: &[FieldError], mutated: &str) -> bool {
    // Array indices shift after a deletion and arrays are renumbered by normalisation: compare
    // the path up to the first index, and only the names after it.
    let names = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|s| !s.is_empty() && s.parse::<usize>().is_err())
            .map(str::to_string)
            .collect()
    };
    let m = names(mutated);
    errors.iter().any(|e| {
        let p = names(&e.path);
        let prefix = p.iter().zip(&m).all(|(a, b)| a == b);
        prefix
            || related(mutated).iter().any(|r| e.path.starts_with(r))
            || e.errors
                .iter()
                .any(|msg| m.iter().any(|n| msg.contains(n.as_str())))
    })
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
        + ChronoDuration::seconds(secs)
}

/// Every numeric field of an app template, as a JSON pointer.
fn numeric_paths(v: &Value) -> Vec<String> {
    let mut all = Vec::new();
    paths(v, &mut Vec::new(), &mut all);
    all.iter()
        .filter(|p| v.pointer(&pointer(p)).is_some_and(Value::is_number))
        .map(|p| pointer(p))
        .collect()
}

/// Numbers of every size and sign (JSON holds no NaN or infinity).
fn arb_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just(json!(1e300)),
            Just(json!(-1e300)),
            Just(json!(1.8e19)),
            Just(json!(31_536_001)),
            Just(json!(u32::MAX)),
            Just(json!(0)),
            Just(json!(-0.0)),
            Just(json!(f64::MIN_POSITIVE)),
        ],
    ]
}

/// Runs a core through offers, task updates (failures grow the backoff), plans and a restart.
/// Returns what a caller can check: the kill grace periods and launch delays it produced.
fn drive(core: &mut ServicesCore) -> Vec<f64> {
    let offer = v1::Offer {
        id: "o".into(),
        agent_id: "a1".into(),
        hostname: "h1".into(),
        resources: agora_proto::Resources::parse("cpus:4;mem:4096;disk:4096;ports:[31000-31100]")
            .map(|r| r.to_proto())
            .unwrap_or_default(),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let ids: Vec<String> = core.apps().map(|a| a.app.id.clone()).collect();
    for round in 0..3i64 {
        let launches = core.launches_for(&offer, t(round * 100));
        for l in &launches {
            if let Some(k) = &l.task.kill_policy {
                seen.push(k.grace_period_seconds);
            }
            if let Some(h) = &l.task.health_check {
                seen.extend([
                    h.grace_period_seconds,
                    h.interval_seconds,
                    h.timeout_seconds,
                    h.delay_seconds,
                ]);
            }
            for (state, dt) in [
                (v1::TaskState::TaskRunning, 1),
                (v1::TaskState::TaskUnreachable, 2),
                (v1::TaskState::TaskFailed, 3),
            ] {
                let st = v1::TaskStatus {
                    task_id: l.task.task_id.clone(),
                    state: state as i32,
                    healthy: Some(true),
                    ..Default::default()
                };
                core.on_update(&st, t(round * 100 + dt));
            }
        }
        core.plan(t(round * 100 + 50));
        let _ = core.wants_offers(t(round * 100 + 50));
        // The delay the core computed after this round's failures (a saved one is only
        // recomputed, clamped, at the next failure).
        if !launches.is_empty() {
            for id in &ids {
                if let Some(st) = core.app(id) {
                    seen.push(st.delay_seconds);
                }
            }
        }
    }
    for id in &ids {
        let _ = core.restart(id, true, t(1000));
    }
    core.plan(t(1001));
    let _ = core.launches_for(&offer, t(1002));
    seen
}

fn bounded(seen: &[f64]) -> Result<(), TestCaseError> {
    for v in seen {
        prop_assert!(
            (0.0..=app::limits::MAX_SECONDS).contains(v),
            "{} escaped its bound",
            v
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2000))]

    /// Any number in any numeric field, through the API: refused naming the field, or accepted and
    /// then the core runs it without panicking and with every duration bounded.
    #[test]
    fn fuzz_app_numbers_through_the_api_never_panic_the_core(
        which in 0..4usize,
        pick in any::<prop::sample::Index>(),
        n in arb_number(),
    ) {
        // The app as stored: every default is present, so every numeric field can be picked.
        let a = read(templates()[which].to_string().as_bytes()).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let mut v = serde_json::to_value(&a).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let numeric = numeric_paths(&v);
        let field = &numeric[pick.index(numeric.len())];
        if let Some(slot) = v.pointer_mut(field) {
            *slot = n.clone();
        }
        match read(v.to_string().as_bytes()) {
            Ok(a) => {
                let mut core = ServicesCore::default();
                let mut dep = templates()[0].clone();
                dep["id"] = json!("/web");
                if a.id != "/web" {
                    if let Ok(d) = read(dep.to_string().as_bytes()) {
                        let _ = core.put_app(d, true, false, t(0));
                    }
                }
                prop_assert!(core.put_app(a, false, false, t(0)).is_ok());
                bounded(&drive(&mut core))?;
            }
            Err(errors) => prop_assert!(
                names_the_field(&errors, field),
                "{} = {} refused as {:?}", field, n, errors
            ),
        }
    }

    /// Any number in any numeric field of an app saved by an older version (no validation on the
    /// way in): the core never panics and every duration it hands an agent is bounded.
    #[test]
    fn fuzz_app_numbers_in_saved_state_never_panic_the_core(
        which in 0..4usize,
        picks in prop::collection::vec((any::<prop::sample::Index>(), arb_number()), 1..4),
    ) {
        let template = templates()[which].clone();
        let a = read(template.to_string().as_bytes()).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let id = a.id.clone();
        let mut core = ServicesCore::default();
        prop_assert!(core.put_app(a, true, false, t(0)).is_ok());
        let mut saved = serde_json::to_value(&core).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let stored = saved["apps"][&id]["app"].clone();
        let numeric = numeric_paths(&stored);
        for (pick, n) in &picks {
            let field = &numeric[pick.index(numeric.len())];
            if let Some(slot) = saved["apps"][&id]["app"].pointer_mut(field) {
                *slot = n.clone();
            }
        }
        saved["apps"][&id]["delaySeconds"] = picks[0].1.clone();
        // Instance counts have their own bound (planned at most 100,000): here a huge one would
        // only make each case plan a hundred thousand tasks, so it is kept small.
        if let Some(n) = saved["apps"][&id]["app"]["instances"].as_f64() {
            if n > 8.0 {
                saved["apps"][&id]["app"]["instances"] = json!(8);
            }
        }
        // A number out of a field's type range (a negative instance count) is unreadable, as it
        // was for the version that saved it.
        if let Ok(mut core) = serde_json::from_value::<ServicesCore>(saved) {
            bounded(&drive(&mut core))?;
        }
    }

    #[test]
    fn fuzz_app_arbitrary_bytes(body in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        ".{0,200}".prop_map(String::into_bytes),
        arb_json().prop_map(|v| v.to_string().into_bytes()),
    ]) {
        if let Ok(a) = read(&body) {
            round_trips(&a)?;
        }
    }

    #[test]
    fn fuzz_app_mutated_names_the_field(
        which in 0..4usize,
        pick in any::<prop::sample::Index>(),
        m in prop_oneof![1 => Just(Mutation::Delete), 3 => arb_json().prop_map(Mutation::Replace)],
    ) {
        let mut v = templates()[which].clone();
        let original = read(v.to_string().as_bytes());
        prop_assert!(original.is_ok(), "template {} is invalid: {:?}", which, original);
        let mut all = Vec::new();
        paths(&v, &mut Vec::new(), &mut all);
        let path = &all[pick.index(all.len())];
        mutate(&mut v, path, &m);
        let mutated = pointer(path);
        match read(v.to_string().as_bytes()) {
            Ok(a) => round_trips(&a)?,
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                prop_assert!(
                    names_the_field(&errors, &mutated),
                    "mutated {} ({:?}) in {} but the errors are {:?}", mutated, m, v, errors
                );
            }
        }
    }
}

/// Before `app::parse`, a field of the wrong type was reported at `/` with only a line and column.
#[test]
fn regression_type_errors_name_the_field() {
    for (body, path) in [
        (
            r#"{"id":"/a","cmd":"x","container":{"docker":{"image":5}}}"#,
            "/container/docker/image",
        ),
        (
            r#"{"id":"/a","cmd":"x","healthChecks":[{"portIndex":"0"}]}"#,
            "/healthChecks/0/portIndex",
        ),
        (r#"{"cmd":"x"}"#, "/id"),
        // No upper bound: such an app could never be offered its resources, and the value did
        // not survive a JSON round trip.
        (r#"{"id":"/a","cmd":"x","mem":1015527676453719232}"#, "/mem"),
        (r#"{"id":"/a","cmd":"x","instances":-1}"#, "/instances"),
        (
            r#"{"id":"/a","cmd":"x","unreachableStrategy":"off"}"#,
            "/unreachableStrategy",
        ),
    ] {
        let errors = read(body.as_bytes()).expect_err(body);
        assert_eq!(errors[0].path, path, "{body}: {errors:?}");
    }
}

/// Found by the 200,000-case release run: serde_json's default float parsing could be one unit in
/// the last place off, so a stored app (JSON in ZooKeeper) came back with a different
/// `backoffFactor`. Fixed by serde_json's `float_roundtrip` feature (workspace Cargo.toml).
#[test]
fn regression_floats_survive_a_json_round_trip() {
    let body = br#"{"id":"/a","cmd":"x","backoffFactor":909148015727280064,"backoffSeconds":0.30000000000000004}"#;
    // The factor is beyond today's bound (1..=100), so the round trip is checked on the reader.
    let mut a = app::parse(body).expect("readable");
    a.normalize();
    let text = serde_json::to_vec(&a).expect("json");
    let mut back = app::parse(&text).expect("readable again");
    back.normalize();
    assert_eq!(back, a);
    let errors = read(body).expect_err("out of bounds");
    assert_eq!(errors[0].path, "/backoffFactor", "{errors:?}");
    let body = br#"{"id":"/a","cmd":"x","backoffFactor":1.0000000000000002,"backoffSeconds":0.30000000000000004}"#;
    let a = read(body).expect("valid");
    let text = serde_json::to_vec(&a).expect("json");
    assert_eq!(read(&text).expect("valid again"), a);
}
