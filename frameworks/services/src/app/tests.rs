use super::*;

fn app(json: &str) -> App {
    let mut a: App = serde_json::from_str(json).expect("app json");
    a.normalize();
    a
}

#[test]
fn marathon_defaults_and_the_old_network_form_are_normalised() {
    let a = app(
        r#"{"id":"prod/web/","container":{"type":"DOCKER","docker":{"image":"nginx","network":"BRIDGE","portMappings":[{"containerPort":80,"hostPort":0}]}},"extra":"ignored"}"#,
    );
    assert_eq!(a.id, "/prod/web");
    assert_eq!((a.cpus, a.mem, a.disk, a.instances), (1.0, 128.0, 0.0, 1));
    assert_eq!(
        (
            a.backoff_seconds,
            a.backoff_factor,
            a.max_launch_delay_seconds
        ),
        (1.0, 1.15, 300.0)
    );
    assert_eq!(a.upgrade_strategy, UpgradeStrategy::default());
    assert_eq!(a.networks[0].mode, "container/bridge");
    assert_eq!(a.container.as_ref().map(|c| c.port_mappings.len()), Some(1));
    assert_eq!(a.host_ports(), 1);
    assert!(a.validate().is_ok());
    let reply = serde_json::to_value(&a).expect("json");
    assert!(
        reply["container"]["docker"].get("network").is_none(),
        "{reply}"
    );
}

#[test]
fn a_list_of_apps_locates_a_type_error_by_index() {
    let errors = parse_list(br#"[{"id":"/a","cmd":"x"},{"id":"/b","cmd":"x","cpus":"lots"}]"#)
        .expect_err("a string for cpus");
    assert_eq!(errors[0].path, "/1/cpus", "{errors:?}");
    assert_eq!(
        parse_list(br#"[{"id":"/a","cmd":"x"}]"#).map(|l| l.len()),
        Ok(1)
    );
}

#[test]
fn every_bad_field_is_named_as_marathon_does() {
    let a = app(
        r#"{"id":"/Bad_Id","cmd":"x","args":["y"],"cpus":0,"mem":-1,"upgradeStrategy":{"minimumHealthCapacity":1.5},"constraints":[["hostname","NEAR"]],"healthChecks":[{"protocol":"TCP","portIndex":2}],"killSelection":"RANDOM"}"#,
    );
    let errors = a.validate().unwrap_err();
    let find = |p: &str| {
        errors
            .iter()
            .find(|e| e.path == p)
            .map(|e| e.errors.join(" "))
    };
    assert!(find("/id").is_some());
    assert!(find("/cmd").expect("cmd").contains("exclusive"));
    assert!(find("/cpus").is_some());
    assert!(find("/mem").is_some());
    assert_eq!(
        find("/upgradeStrategy/minimumHealthCapacity").as_deref(),
        Some("is greater than 1")
    );
    assert!(find("/constraints/0").is_some());
    assert!(find("/healthChecks/0/portIndex").is_some());
    assert!(find("/killSelection").is_some());
}

/// The first error at `path` for `base` with `field` (a JSON pointer) set to `value`.
fn refusal(base: &Value, field: &str, value: Value) -> Option<String> {
    let mut v = base.clone();
    let mut parts: Vec<&str> = field.trim_start_matches('/').split('/').collect();
    let last = parts.pop().expect("a field");
    let mut at = &mut v;
    for p in parts {
        at = match at {
            Value::Array(a) => &mut a[p.parse::<usize>().expect("index")],
            other => other
                .as_object_mut()
                .expect("object")
                .entry(p)
                .or_insert(serde_json::json!({})),
        };
    }
    at.as_object_mut()
        .expect("object")
        .insert(last.into(), value);
    let mut a: App = match serde_json::from_value(v) {
        Ok(a) => a,
        Err(e) => return Some(format!("unreadable: {e}")),
    };
    a.normalize();
    let errors = a.validate().err()?;
    errors
        .iter()
        .find(|e| e.path == field)
        .map(|e| e.errors.join(" "))
        .or_else(|| Some(format!("refused, but not at {field}: {errors:?}")))
}

fn base() -> Value {
    serde_json::json!({
        "id": "/web", "cmd": "sleep 1", "portDefinitions": [{"port": 0}],
        "healthChecks": [{"protocol": "TCP", "portIndex": 0}],
        "container": {"type": "DOCKER", "docker": {"image": "busybox"},
                      "volumes": [{"containerPath": "/data", "hostPath": "/tmp", "mode": "RW"}]},
        "unreachableStrategy": {"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0}
    })
}

#[test]
fn every_duration_and_count_is_bounded_and_named() {
    use serde_json::json;
    let year = limits::MAX_SECONDS;
    // (field, a value just inside the bound, values beyond it)
    let table: &[(&str, Value, &[Value])] = &[
        (
            "/taskKillGracePeriodSeconds",
            json!(3600),
            &[json!(1e300), json!(1.8e19), json!(-1), json!(3600.5)],
        ),
        ("/backoffSeconds", json!(year), &[json!(1e300), json!(-0.5)]),
        (
            "/maxLaunchDelaySeconds",
            json!(year),
            &[json!(1e300), json!(-1)],
        ),
        (
            "/backoffFactor",
            json!(100),
            &[json!(1e300), json!(0.5), json!(101)],
        ),
        (
            "/healthChecks/0/gracePeriodSeconds",
            json!(86_400),
            &[json!(1e300), json!(-1), json!(86_401)],
        ),
        (
            "/healthChecks/0/intervalSeconds",
            json!(86_400),
            &[json!(1e300), json!(-1), json!(86_401)],
        ),
        (
            "/healthChecks/0/timeoutSeconds",
            json!(86_400),
            &[json!(1e300), json!(-1), json!(86_401)],
        ),
        (
            "/healthChecks/0/delaySeconds",
            json!(86_400),
            &[json!(1e300), json!(-1), json!(86_401)],
        ),
        (
            "/healthChecks/0/maxConsecutiveFailures",
            json!(1000),
            &[json!(1001), json!(u32::MAX)],
        ),
        ("/healthChecks/0/port", json!(65_535), &[json!(65_536)]),
        (
            "/upgradeStrategy/minimumHealthCapacity",
            json!(1),
            &[json!(1e300), json!(-1)],
        ),
        (
            "/upgradeStrategy/maximumOverCapacity",
            json!(0),
            &[json!(1.5), json!(-1e300)],
        ),
        (
            "/instances",
            json!(100_000),
            &[json!(100_001), json!(u32::MAX)],
        ),
        (
            "/unreachableStrategy/inactiveAfterSeconds",
            json!(0),
            &[json!(1e300), json!(-1)],
        ),
        (
            "/unreachableStrategy/expungeAfterSeconds",
            json!(year),
            &[json!(1e300)],
        ),
        (
            "/portDefinitions/0/port",
            json!(65_535),
            &[json!(65_536), json!(u32::MAX)],
        ),
        ("/cpus", json!(1), &[json!(1e300), json!(-1)]),
        ("/mem", json!(1), &[json!(1e300), json!(-1)]),
    ];
    let b = base();
    for (field, ok, bad) in table {
        assert_eq!(refusal(&b, field, ok.clone()), None, "{field} = {ok}");
        for v in *bad {
            let r = refusal(&b, field, v.clone());
            assert!(
                r.as_deref().is_some_and(|e| !e.starts_with("refused, but")),
                "{field} = {v}: {r:?}"
            );
        }
    }
    assert_eq!(
        refusal(&b, "/taskKillGracePeriodSeconds", json!(1e300)).as_deref(),
        Some("must be between 0 and 3600")
    );
}

#[test]
fn sizes_and_lists_are_bounded_and_named() {
    use serde_json::json;
    let big = |n: usize| json!("x".repeat(n));
    let many = |n: usize, v: Value| Value::Array(vec![v; n]);
    let env = |n: usize| Value::Object((0..n).map(|i| (format!("K{i}"), json!("v"))).collect());
    let b = base();
    let table: &[(&str, Value, Value)] = &[
        ("/cmd", big(limits::MAX_CMD), big(limits::MAX_CMD + 1)),
        ("/env", env(limits::MAX_ENV), env(limits::MAX_ENV + 1)),
        (
            "/labels",
            env(limits::MAX_LABELS),
            env(limits::MAX_LABELS + 1),
        ),
        (
            "/constraints",
            many(64, json!(["hostname", "UNIQUE"])),
            many(65, json!(["hostname", "UNIQUE"])),
        ),
        (
            "/fetch",
            many(64, json!({"uri": "/x"})),
            many(65, json!({"uri": "/x"})),
        ),
        (
            "/dependencies",
            many(64, json!("/db")),
            many(65, json!("/db")),
        ),
        (
            "/container/volumes",
            many(64, json!({"containerPath": "/d", "hostPath": "/h"})),
            many(65, json!({"containerPath": "/d", "hostPath": "/h"})),
        ),
        (
            "/container/docker/image",
            big(100),
            big(limits::MAX_STRING + 1),
        ),
        ("/user", json!("nobody"), big(256)),
    ];
    for (field, ok, bad) in table {
        assert_eq!(
            refusal(&b, field, ok.clone()),
            None,
            "{field} inside its bound"
        );
        let r = refusal(&b, field, bad.clone());
        assert!(
            r.as_deref().is_some_and(|e| !e.starts_with("refused, but")),
            "{field}: {r:?}"
        );
    }
    // args: count and total size; args and cmd are exclusive, so start from an args app.
    let mut a = b.clone();
    a.as_object_mut().expect("o").remove("cmd");
    assert!(refusal(&a, "/args", many(limits::MAX_ARGS + 1, json!("a"))).is_some());
    assert!(refusal(&a, "/args", many(2, big(limits::MAX_CMD / 2 + 1))).is_some());
    assert_eq!(
        refusal(&a, "/args", many(limits::MAX_ARGS, json!("a"))),
        None
    );
    // The agent's own refusals, caught here instead of relaunching forever.
    for (field, v) in [
        ("/container/volumes/0/containerPath", json!("data")),
        ("/container/volumes/0/hostPath", json!("../../etc")),
        ("/container/volumes/0/hostPath", json!("")),
        ("/container/volumes/0/mode", json!("rwx")),
    ] {
        assert!(
            refusal(&b, field, v.clone()).is_some_and(|e| !e.starts_with("refused, but")),
            "{field} = {v}"
        );
    }
    // An env value must be a scalar; a huge key is refused under its own (shortened) name.
    let r = refusal(&b, "/env", json!({"A": {"nested": 1}}));
    assert!(r.is_some(), "{r:?}");
}

#[test]
fn app_ids_are_normalised_and_bounded() {
    use serde_json::json;
    for (given, stored) in [
        ("//orphan", "/orphan"),
        ("/prod//web/", "/prod/web"),
        ("web", "/web"),
        ("///a///b///", "/a/b"),
    ] {
        assert_eq!(normalize_id(given), stored);
        assert_eq!(refusal(&base(), "/id", json!(given)), None, "{given}");
    }
    let seg63 = "a".repeat(63);
    assert_eq!(refusal(&base(), "/id", json!(format!("/{seg63}"))), None);
    let long_ok = format!("/{seg63}/{seg63}/{seg63}/{}", "b".repeat(62));
    assert_eq!(long_ok.len(), 255);
    assert_eq!(refusal(&base(), "/id", json!(long_ok)), None);
    for bad in [
        format!("/{}", "a".repeat(64)),
        format!("/{}", "a".repeat(300)),
        format!("{long_ok}/c"),
        "/".into(),
        "//".into(),
        "/a/../b".into(),
        "/a b".into(),
        "/é".into(),
    ] {
        assert!(
            refusal(&base(), "/id", json!(bad)).is_some_and(|e| !e.starts_with("refused, but")),
            "{bad}"
        );
    }
}

#[test]
fn a_body_id_that_differs_from_the_url_is_refused() {
    use serde_json::json;
    assert_eq!(check_body_id("/base", &json!({"instances": 2})), Ok(()));
    assert_eq!(check_body_id("/base", &json!({"id": "base/"})), Ok(()));
    assert_eq!(check_body_id("/base", &json!({"id": "/base"})), Ok(()));
    for body in [
        json!({"id": "/other"}),
        json!({"id": 7}),
        json!({"id": "/base/x"}),
    ] {
        let e = check_body_id("/base", &body).unwrap_err();
        assert_eq!(e[0].path, "/id", "{body}");
    }
}

#[test]
fn patch_merges_objects_and_replaces_the_rest() {
    let mut base = serde_json::json!({"id": "/a", "instances": 1, "env": {"A": "1", "B": "2"}});
    merge(
        &mut base,
        &serde_json::json!({"instances": 3, "env": {"B": "x"}}),
    );
    assert_eq!(
        base,
        serde_json::json!({"id": "/a", "instances": 3, "env": {"A": "1", "B": "x"}})
    );
}

#[test]
fn the_balance_label_is_one_the_mesh_implements() {
    for ok in ["leastconn", "roundrobin", " LeastConn "] {
        let a = app(&format!(
            r#"{{"id":"/a","cmd":"x","labels":{{"HAPROXY_0_BALANCE":"{ok}","HAPROXY_1_BALANCE":"roundrobin"}}}}"#
        ));
        assert!(a.validate().is_ok(), "{ok}");
    }
    let a = app(r#"{"id":"/a","cmd":"x","labels":{"HAPROXY_1_BALANCE":"source"}}"#);
    let errors = a.validate().unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "/labels/HAPROXY_1_BALANCE");
    let text = format!("{errors:?}");
    assert!(
        text.contains("HAPROXY_1_BALANCE must be one of roundrobin, leastconn"),
        "{text}"
    );
}
