//! Fuzzing the Marathon app reader and validator at scale: the path a `POST /v2/apps` body takes
//! (`app::parse`, `App::normalize`, `App::validate`).
//!
//! - arbitrary bytes and JSON-ish text: no panic;
//! - valid apps with one field deleted or replaced by a random JSON value: no panic, and a
//!   refusal names the mutated field (or a field the validator ties to it, listed in `related`);
//! - every accepted app round-trips: serialize → parse → normalize gives the same app.
//!
//! `PROPTEST_CASES` overrides the case counts; see docs/reliability.md.

use agora_services::app::{self, App, FieldError};
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

proptest! {
    #![proptest_config(config(2000))]

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
    let a = read(body).expect("valid");
    let text = serde_json::to_vec(&a).expect("json");
    assert_eq!(read(&text).expect("valid again"), a);
}
