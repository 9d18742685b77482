//! Groups and deployment plans in the core: dependency-ordered steps, stops in reverse, group
//! records as saved state, scaleBy, locks, rollback, events.

use super::tests::{offer, t, update};
use super::*;
use crate::group::GroupBody;

fn body(json: &str) -> GroupBody {
    serde_json::from_str(json).expect("group json")
}

/// `/shop/web` → `/shop/api` → the group `/shop/data` (`/shop/data/db`).
const SHOP: &str = r#"{"id":"/shop","apps":[
    {"id":"web","cmd":"sleep 100","cpus":0.1,"mem":32,"instances":1,"dependencies":["api"]},
    {"id":"api","cmd":"sleep 100","cpus":0.1,"mem":32,"instances":2,"dependencies":["/shop/data"]}],
  "groups":[{"id":"data","apps":[{"id":"db","cmd":"sleep 100","cpus":0.1,"mem":32,"instances":1}]}]}"#;

fn kinds(core: &mut ServicesCore) -> Vec<String> {
    core.take_events().into_iter().map(|(k, _)| k).collect()
}

fn launched_apps(core: &mut ServicesCore, o: &str, at: DateTime<Utc>) -> Vec<(String, String)> {
    core.launches_for(&offer(o, "h1", "cpus:8;mem:8192"), at)
        .into_iter()
        .map(|l| {
            let app = core
                .apps()
                .find(|a| a.tasks.contains_key(&l.task.task_id))
                .map(|a| a.app.id.clone())
                .unwrap_or_default();
            (app, l.task.task_id)
        })
        .collect()
}

fn run(core: &mut ServicesCore, tasks: &[(String, String)], at: DateTime<Utc>) {
    for (_, id) in tasks {
        update(core, id, v1::TaskState::TaskRunning, None, at);
    }
}

fn actions(d: &Deployment) -> Vec<Vec<String>> {
    d.steps
        .iter()
        .map(|s| {
            s.iter()
                .map(|a| format!("{} {}", a.action, a.app))
                .collect()
        })
        .collect()
}

#[test]
fn a_group_starts_dependencies_first_step_by_step() {
    let mut core = ServicesCore::default();
    let (dep, _, created) = core
        .put_group("/shop", &body(SHOP), true, false, t(0))
        .expect("create");
    assert!(created);
    let d = core.deployments()[0].clone();
    assert_eq!(d.id, dep);
    assert_eq!(
        actions(&d),
        vec![
            vec!["StartApplication /shop/data/db".to_string()],
            vec!["StartApplication /shop/api".into()],
            vec!["StartApplication /shop/web".into()],
        ]
    );
    assert_eq!(
        kinds(&mut core),
        ["group_change_success", "deployment_info"]
    );
    // Only the dependency launches.
    let first = launched_apps(&mut core, "o1", t(1));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, "/shop/data/db");
    assert!(
        launched_apps(&mut core, "o2", t(1)).is_empty(),
        "api waits for db"
    );
    update(
        &mut core,
        &first[0].1,
        v1::TaskState::TaskStaging,
        None,
        t(2),
    );
    assert!(
        launched_apps(&mut core, "o3", t(2)).is_empty(),
        "staging is not running"
    );
    run(&mut core, &first, t(3));
    assert_eq!(core.deployments()[0].current, 1);
    let second = launched_apps(&mut core, "o4", t(4));
    assert_eq!(
        second.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>(),
        ["/shop/api", "/shop/api"]
    );
    run(&mut core, &second[..1], t(5));
    assert!(
        launched_apps(&mut core, "o5", t(5)).is_empty(),
        "web waits for both api tasks"
    );
    run(&mut core, &second[1..], t(6));
    let third = launched_apps(&mut core, "o6", t(7));
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].0, "/shop/web");
    run(&mut core, &third, t(8));
    assert!(core.deployments().is_empty(), "the plan finished");
    let events = kinds(&mut core);
    let plan_events: Vec<&String> = events
        .iter()
        .filter(|k| k.starts_with("deployment"))
        .collect();
    assert_eq!(
        plan_events,
        [
            "deployment_step_success",
            "deployment_info",
            "deployment_step_success",
            "deployment_info",
            "deployment_step_success",
            "deployment_success"
        ]
    );
    assert!(events.iter().any(|k| k == "instance_changed_event"));
}

#[test]
fn health_checked_dependencies_must_be_healthy_first() {
    let mut core = ServicesCore::default();
    core.put_group(
        "/g",
        &body(
            r#"{"apps":[{"id":"db","cmd":"x","cpus":0.1,"mem":32,"healthChecks":[{"protocol":"COMMAND","command":{"value":"true"}}]},
                        {"id":"web","cmd":"x","cpus":0.1,"mem":32,"dependencies":["db"]}]}"#,
        ),
        false,
        false,
        t(0),
    )
    .expect("put");
    let db = launched_apps(&mut core, "o1", t(1));
    update(&mut core, &db[0].1, v1::TaskState::TaskRunning, None, t(2));
    assert!(
        launched_apps(&mut core, "o2", t(2)).is_empty(),
        "running, not yet healthy"
    );
    update(
        &mut core,
        &db[0].1,
        v1::TaskState::TaskRunning,
        Some(false),
        t(3),
    );
    assert!(kinds(&mut core)
        .iter()
        .any(|k| k == "failed_health_check_event"));
    assert!(launched_apps(&mut core, "o3", t(3)).is_empty());
    update(
        &mut core,
        &db[0].1,
        v1::TaskState::TaskRunning,
        Some(true),
        t(4),
    );
    assert_eq!(launched_apps(&mut core, "o4", t(4))[0].0, "/g/web");
}

#[test]
fn a_group_delete_stops_dependents_first() {
    let mut core = ServicesCore::default();
    core.put_group("/shop", &body(SHOP), true, false, t(0))
        .expect("create");
    let mut all = Vec::new();
    for i in 0..3 {
        let l = launched_apps(&mut core, &format!("o{i}"), t(i + 1));
        run(&mut core, &l, t(i + 1));
        all.extend(l);
    }
    assert!(core.deployments().is_empty());
    core.take_events();
    core.delete_group("/shop", false, t(10)).expect("delete");
    assert!(
        core.app("/shop/web").is_none(),
        "the target state is saved at once"
    );
    assert!(core.group_tree("/shop").is_none());
    assert_eq!(
        actions(&core.deployments()[0]),
        vec![
            vec!["StopApplication /shop/web".to_string()],
            vec!["StopApplication /shop/api".into()],
            vec!["StopApplication /shop/data/db".into()],
        ]
    );
    let task_of = |app: &str| -> Vec<String> {
        let mut ids: Vec<String> = all
            .iter()
            .filter(|(a, _)| a == app)
            .map(|(_, t)| t.clone())
            .collect();
        ids.sort();
        ids
    };
    let kills = |effects: Vec<Effect>| -> Vec<String> {
        let mut ids: Vec<String> = effects.into_iter().map(|Effect::Kill(id)| id).collect();
        ids.sort();
        ids
    };
    assert_eq!(kills(core.take_deferred()), task_of("/shop/web"));
    assert!(
        kills(core.plan(t(11))).is_empty(),
        "api waits for web to be gone"
    );
    let mut next = Vec::new();
    for id in task_of("/shop/web") {
        next.extend(kills(update(
            &mut core,
            &id,
            v1::TaskState::TaskKilled,
            None,
            t(12),
        )));
    }
    next.sort();
    assert_eq!(next, task_of("/shop/api"));
    let mut last = Vec::new();
    for id in task_of("/shop/api") {
        last.extend(kills(update(
            &mut core,
            &id,
            v1::TaskState::TaskKilled,
            None,
            t(13),
        )));
    }
    last.sort();
    assert_eq!(last, task_of("/shop/data/db"));
    for id in task_of("/shop/data/db") {
        update(&mut core, &id, v1::TaskState::TaskKilled, None, t(14));
    }
    assert!(core.deployments().is_empty());
    let events = kinds(&mut core);
    let terminated: Vec<&String> = events
        .iter()
        .filter(|k| *k == "app_terminated_event")
        .collect();
    assert_eq!(terminated.len(), 3);
    assert!(events.iter().any(|k| k == "deployment_success"));
    assert!(core.live_tasks().is_empty());
}

#[test]
fn groups_and_their_dependencies_are_saved_state() {
    let mut core = ServicesCore::default();
    core.put_group("/empty", &body("{}"), true, false, t(0))
        .expect("empty");
    core.put_group(
        "/front",
        &body(r#"{"dependencies":["/back"],"groups":[{"id":"inner"}]}"#),
        true,
        false,
        t(1),
    )
    .expect("front");
    core.put_app(
        serde_json::from_str(r#"{"id":"/x/y/z","cmd":"x","cpus":0.1,"mem":32}"#).expect("app"),
        true,
        false,
        t(2),
    )
    .expect("nested app");
    let saved = serde_json::to_vec(&core).expect("save");
    let back: ServicesCore = serde_json::from_slice(&saved).expect("load");
    let root = back.group_tree("/").expect("root");
    let ids: Vec<&str> = root.groups.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, ["/empty", "/front", "/x"]);
    assert_eq!(root.groups[1].dependencies, ["/back"]);
    assert_eq!(root.groups[1].groups[0].id, "/front/inner");
    assert_eq!(root.groups[2].groups[0].apps, ["/x/y/z"]);
    assert!(back.group_exists("/x/y"));
    assert_eq!(
        back.put_group_err("/empty"),
        ServicesError::GroupExists("/empty".into())
    );
    let versions = back.group_versions("/").expect("versions");
    assert_eq!(versions.len(), 3, "{versions:?}");
    assert_eq!(versions[0], version_of(t(2)), "newest first");
}

impl ServicesCore {
    fn put_group_err(&self, id: &str) -> ServicesError {
        self.clone()
            .put_group(id, &GroupBody::default(), true, false, t(100))
            .expect_err("refused")
    }
}

#[test]
fn scale_by_scales_every_app_inside_in_one_plan() {
    let mut core = ServicesCore::default();
    core.put_group("/shop", &body(SHOP), true, false, t(0))
        .expect("create");
    for i in 0..3 {
        let l = launched_apps(&mut core, &format!("o{i}"), t(i + 1));
        run(&mut core, &l, t(i + 1));
    }
    let (_, _, created) = core
        .put_group("/shop", &body(r#"{"scaleBy":1.5}"#), false, false, t(10))
        .expect("scale");
    assert!(!created);
    let counts: Vec<u32> = ["/shop/web", "/shop/api", "/shop/data/db"]
        .iter()
        .map(|id| core.app(id).expect("app").app.instances)
        .collect();
    assert_eq!(counts, [2, 3, 2], "ceil(n × 1.5)");
    assert_eq!(core.deployments().len(), 1);
    assert_eq!(core.deployments()[0].steps.len(), 3);
    for bad in ["0", "-1", "1001"] {
        let e = core
            .put_group(
                "/shop",
                &body(&format!(r#"{{"scaleBy":{bad}}}"#)),
                false,
                true,
                t(11),
            )
            .expect_err(bad);
        assert!(
            matches!(&e, ServicesError::Invalid(d) if d[0].path == "/scaleBy"),
            "{e:?}"
        );
    }
    assert_eq!(
        core.scale_group("/nope", 2.0, false, t(12)),
        Err(ServicesError::UnknownGroup("/nope".into()))
    );
}

#[test]
fn one_plan_per_app_forced_changes_and_rollback() {
    let mut core = ServicesCore::default();
    core.put_group("/shop", &body(SHOP), true, false, t(0))
        .expect("create");
    let first = core.deployments()[0].id.clone();
    let e = core
        .put_group(
            "/shop",
            &body(r#"{"apps":[{"id":"web","cmd":"sleep 5","cpus":0.1,"mem":32}]}"#),
            false,
            false,
            t(1),
        )
        .expect_err("locked");
    assert_eq!(e, ServicesError::Locked(vec![first.clone()]));
    assert!(kinds(&mut core).iter().any(|k| k == "group_change_failed"));
    // The app API is locked by the group's plan too.
    assert!(matches!(
        core.restart("/shop/api", false, t(1)),
        Err(ServicesError::Locked(_))
    ));
    // A rollback of the creation removes what it created.
    let (rollback, _) = core
        .cancel_deployment(&first, false, t(2))
        .expect("cancel")
        .expect("a rollback plan");
    assert!(core.app("/shop/web").is_none() && core.app("/shop/data/db").is_none());
    assert_eq!(core.deployments().len(), 1);
    assert_eq!(core.deployments()[0].id, rollback);
    let events = kinds(&mut core);
    assert!(events.iter().any(|k| k == "deployment_failed"));
    // A forced change replaces a plan in progress.
    core.put_group(
        "/two",
        &body(r#"{"apps":[{"id":"a","cmd":"x","cpus":0.1,"mem":32}]}"#),
        true,
        false,
        t(3),
    )
    .expect("two");
    let two = core.deployments().last().expect("plan").id.clone();
    core.put_group(
        "/two",
        &body(r#"{"apps":[{"id":"a","cmd":"y","cpus":0.1,"mem":32}]}"#),
        false,
        true,
        t(4),
    )
    .expect("forced");
    assert!(core.deployments().iter().all(|d| d.id != two));
    // Removing an app from a group's list stops it; leaving `apps` out keeps them.
    core.put_group("/two", &body(r#"{"dependencies":[]}"#), false, true, t(5))
        .expect("deps only");
    assert!(core.app("/two/a").is_some());
    core.put_group("/two", &body(r#"{"apps":[]}"#), false, true, t(6))
        .expect("no apps");
    assert!(core.app("/two/a").is_none());
    assert!(core.group_exists("/two"), "the group stays, empty");
}

#[test]
fn cycles_and_app_group_clashes_are_refused_whole() {
    let mut core = ServicesCore::default();
    let e = core
        .put_group(
            "/c",
            &body(r#"{"apps":[{"id":"a","cmd":"x","dependencies":["b"]},{"id":"b","cmd":"x","dependencies":["a"]}]}"#),
            true,
            false,
            t(0),
        )
        .expect_err("cycle");
    assert!(
        matches!(&e, ServicesError::Invalid(d) if d[0].path == "/dependencies" && d[0].errors[0].contains("/c/a")),
        "{e:?}"
    );
    assert!(!core.group_exists("/c"), "nothing was saved");
    assert!(core.deployments().is_empty());
    core.put_app(
        serde_json::from_str(r#"{"id":"/solo","cmd":"x"}"#).expect("app"),
        true,
        false,
        t(1),
    )
    .expect("app");
    let e = core
        .put_group("/solo/sub", &body("{}"), true, false, t(2))
        .expect_err("an app is not a group");
    assert!(matches!(e, ServicesError::Invalid(_)), "{e:?}");
}

#[test]
fn a_deployment_saved_before_plans_loads_as_one_step() {
    let old = r#"{"id":"d1","version":"2026-01-01T00:00:00.000Z","appId":"/web","action":"ScaleApplication",
                  "startedAt":"2026-01-01T00:00:00Z","previous":null}"#;
    let d: Deployment = serde_json::from_str(old).expect("old deployment");
    assert_eq!(actions(&d), vec![vec!["ScaleApplication /web".to_string()]]);
    assert_eq!(d.previous_apps.get("/web"), Some(&None));
    assert_eq!(d.group, "/");
    let again: Deployment =
        serde_json::from_slice(&serde_json::to_vec(&d).expect("save")).expect("load");
    assert_eq!(again, d);
}

#[test]
fn state_saved_before_the_rules_does_not_block_unrelated_changes() {
    // Saved by an older version: an app that is also a group, and a dependency cycle.
    let mut core = ServicesCore::default();
    core.put_app(
        serde_json::from_str(r#"{"id":"/a/b","cmd":"x","cpus":0.1,"mem":32}"#).expect("app"),
        true,
        false,
        t(0),
    )
    .expect("app");
    let mut v = serde_json::to_value(&core).expect("json");
    let mut a = v["apps"]["/a/b"].clone();
    a["app"]["id"] = json!("/a");
    a["app"]["dependencies"] = json!(["/a/b"]);
    v["apps"]["/a"] = a;
    v["apps"]["/a/b"]["app"]["dependencies"] = json!(["/a"]);
    v["deployments"] = json!([]);
    let mut core: ServicesCore = serde_json::from_value(v).expect("old state");
    core.put_app(
        serde_json::from_str(r#"{"id":"/fresh","cmd":"x","cpus":0.1,"mem":32}"#).expect("app"),
        true,
        false,
        t(1),
    )
    .expect("an unrelated app");
    let e = core
        .put_app(
            serde_json::from_str(r#"{"id":"/a/c","cmd":"x","cpus":0.1,"mem":32}"#).expect("app"),
            true,
            false,
            t(2),
        )
        .expect_err("inside an app");
    assert!(
        matches!(&e, ServicesError::Invalid(d) if d[0].path == "/id"),
        "{e:?}"
    );
    assert!(core.group_tree("/").is_some());
}
