use super::*;

fn body(json: &str) -> GroupBody {
    serde_json::from_str(json).expect("group json")
}

fn map(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
        .collect()
}

#[test]
fn ids_resolve_against_their_group() {
    let table = [
        ("/prod", "web", Ok("/prod/web")),
        ("/prod", "/other/web", Ok("/other/web")),
        ("/prod/a", "../b", Ok("/prod/b")),
        ("/prod/a", "./c/../d", Ok("/prod/a/d")),
        ("/", "x", Ok("/x")),
        ("/a", "../..", Err(())),
    ];
    for (base, rel, want) in table {
        assert_eq!(
            resolve(base, rel).map_err(|_| ()),
            want.map(str::to_string),
            "{base} + {rel}"
        );
    }
    assert_eq!(parent("/a/b/c"), "/a/b");
    assert_eq!(parent("/a"), "/");
    assert_eq!(ancestors("/a/b/c"), ["/", "/a", "/a/b"]);
    assert!(is_within("/a/b", "/a") && is_within("/a", "/a") && is_within("/x", "/"));
    assert!(!is_within("/ab", "/a"));
}

#[test]
fn a_group_body_becomes_absolute_apps_and_groups() {
    let b = body(
        r#"{"id":"/prod","dependencies":["/infra"],"apps":[{"id":"front","cmd":"sleep 1","dependencies":["back/api"]}],
            "groups":[{"id":"back","apps":[{"id":"api","cmd":"sleep 1","dependencies":["../db/pg"]}]},
                      {"id":"/prod/db","apps":[{"id":"/prod/db/pg","cmd":"sleep 1"}]}]}"#,
    );
    let t = read_group("/prod", &b).expect("valid");
    let ids: Vec<&str> = t.apps.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["/prod/front", "/prod/back/api", "/prod/db/pg"]);
    assert_eq!(t.apps[0].dependencies, ["/prod/back/api"]);
    assert_eq!(t.apps[1].dependencies, ["/prod/db/pg"]);
    let groups: Vec<&str> = t.groups.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(groups, ["/prod", "/prod/back", "/prod/db"]);
    assert_eq!(t.groups[0].dependencies, Some(vec!["/infra".to_string()]));
    assert!(t.groups[0].apps_given && t.groups[0].groups_given);
    assert_eq!(t.groups[1].dependencies, None);
    assert!(!t.groups[1].groups_given);
}

#[test]
fn bad_group_fields_are_named_by_pointer() {
    let deep = (0..MAX_DEPTH + 1).fold(String::from("{\"id\":\"x\"}"), |inner, _| {
        format!("{{\"id\":\"x\",\"groups\":[{inner}]}}")
    });
    let table: Vec<(String, &str, &str)> = vec![
        (r#"{"id":"/other"}"#.into(), "/id", "cannot be renamed"),
        (
            r#"{"apps":[{"id":"/elsewhere/web","cmd":"x"}]}"#.into(),
            "/apps/0/id",
            "not an app directly inside /g",
        ),
        (
            r#"{"apps":[{"cmd":"x"}]}"#.into(),
            "/apps/0/id",
            "is required",
        ),
        (
            r#"{"groups":[{"id":"a","apps":[{"id":"w","cmd":"x","cpus":-1}]}]}"#.into(),
            "/groups/0/apps/0/cpus",
            "",
        ),
        (
            r#"{"groups":[{"id":"Bad_Id"}]}"#.into(),
            "/groups/0/id",
            "lowercase",
        ),
        (
            r#"{"groups":[{"id":"../up"}]}"#.into(),
            "/groups/0/id",
            "not a group directly inside",
        ),
        (
            r#"{"dependencies":["/g/inner"]}"#.into(),
            "/dependencies/0",
            "cannot depend on itself",
        ),
        (
            r#"{"apps":[{"id":"a","cmd":"x"},{"id":"a","cmd":"y"}]}"#.into(),
            "/apps/1/id",
            "named twice",
        ),
        (r#"{"pods":[{}]}"#.into(), "/pods", "not supported"),
        (
            r#"{"groups":[{"id":"a","scaleBy":2}]}"#.into(),
            "/groups/0/scaleBy",
            "",
        ),
        (
            format!(r#"{{"dependencies":[{}]}}"#, vec!["\"/x\""; 65].join(",")),
            "/dependencies",
            "more than 64",
        ),
        (
            format!(r#"{{"groups":[{{"id":"{}"}}]}}"#, "a".repeat(64)),
            "/groups/0/id",
            "longer than 63",
        ),
        (format!(r#"{{"groups":[{deep}]}}"#), "/id", "deeper"),
    ];
    for (json, path, words) in table {
        let errs = read_group("/g", &body(&json)).expect_err(&json);
        let hit = errs
            .iter()
            .find(|e| e.path == path || (path == "/id" && e.path.ends_with("/id")))
            .unwrap_or_else(|| panic!("{json}: no error at {path}: {errs:?}"));
        assert!(
            hit.errors.iter().any(|e| e.contains(words)),
            "{json}: {hit:?} lacks '{words}'"
        );
    }
    let many = format!(
        r#"{{"apps":[{}]}}"#,
        (0..=MAX_APPS_PER_GROUP)
            .map(|i| format!(r#"{{"id":"a{i}","cmd":"x"}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    let errs = read_group("/g", &body(&many)).expect_err("too many apps");
    assert_eq!(errs[0].path, "/apps");
}

#[test]
fn dependencies_order_apps_into_steps_through_groups() {
    // web → api (app), api → /data (a group: db and cache), /data/cache → /data/db.
    let apps = map(&[
        ("/p/web", &["/p/api"]),
        ("/p/api", &["/data"]),
        ("/data/db", &[]),
        ("/data/cache", &["/data/db"]),
        ("/other", &[]),
    ]);
    let levels = order(&apps, &BTreeMap::new()).expect("acyclic");
    assert_eq!(
        levels,
        vec![
            vec!["/data/db".to_string(), "/other".into()],
            vec!["/data/cache".into()],
            vec!["/p/api".into()],
            vec!["/p/web".into()],
        ]
    );
    // A group-level dependency holds every app inside the group.
    let apps = map(&[("/front/a", &[]), ("/front/b", &[]), ("/back/db", &[])]);
    let groups = map(&[("/front", &["/back"])]);
    let levels = order(&apps, &groups).expect("acyclic");
    assert_eq!(levels[0], ["/back/db"]);
    assert_eq!(levels[1], ["/front/a", "/front/b"]);
    let affected: BTreeSet<String> = ["/front/b".to_string(), "/back/db".to_string()].into();
    assert_eq!(
        steps_for(&levels, &affected),
        vec![vec!["/back/db".to_string()], vec!["/front/b".into()]]
    );
    // Inside a group means under its path, not a name that starts the same.
    let apps = map(&[
        ("/data", &[]),
        ("/data-old", &[]),
        ("/data.x", &[]),
        ("/databases/x", &[]),
        ("/data/x/y", &[]),
        ("/user", &["/data"]),
    ]);
    let deps = effective_dependencies(&apps, &BTreeMap::new());
    assert_eq!(
        deps["/user"].iter().collect::<Vec<_>>(),
        ["/data", "/data/x/y"]
    );
    // A dependency on nothing that exists holds nothing.
    let apps = map(&[("/a", &["/nowhere"])]);
    assert_eq!(
        order(&apps, &BTreeMap::new()).expect("ok"),
        vec![vec!["/a".to_string()]]
    );
}

#[test]
fn a_dependency_cycle_is_refused_naming_its_apps() {
    let apps = map(&[
        ("/a", &["/b"]),
        ("/b", &["/g"]),
        ("/g/c", &["/a"]),
        ("/free", &[]),
    ]);
    let err = order(&apps, &BTreeMap::new()).expect_err("cycle");
    assert_eq!(err.0, ["/a", "/b", "/g/c"]);
    // Through group dependencies too.
    let apps = map(&[("/x/a", &[]), ("/y/b", &[])]);
    let groups = map(&[("/x", &["/y"]), ("/y", &["/x"])]);
    assert!(order(&apps, &groups).is_err());
}
