use std::collections::HashMap;

use chrono::{Duration as ChronoDuration, TimeZone};

use super::*;
use crate::job::Job;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0)
        .single()
        .expect("t")
        + ChronoDuration::seconds(secs)
}

fn add(core: &mut BatchCore, json: &str) {
    let job: Job = serde_json::from_str(json).expect("job json");
    core.put_job(job, true, t(0)).expect("add");
}

/// Runs `name` now and ends its one task in `state` after `secs` seconds.
fn run(core: &mut BatchCore, name: &str, state: &str, start: i64, secs: i64) {
    core.run_now(name, t(start)).expect("run");
    let launches = core.claim_launches(10, t(start));
    assert_eq!(launches.len(), 1);
    let id = &launches[0].task_id;
    core.on_update(id, "TASK_RUNNING", None, "agent-1", "", t(start));
    core.on_update(id, state, Some(0), "agent-1", "", t(start + secs));
}

fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_listed_job_has_either_a_schedule_or_parents_and_no_null_container() {
    let mut core = BatchCore::default();
    add(
        &mut core,
        r#"{"name":"p","command":"true","schedule":"R/2026-11-24T12:00:00Z/PT1M","owner":"o"}"#,
    );
    add(
        &mut core,
        r#"{"name":"c","command":"true","parents":["p"]}"#,
    );
    run(&mut core, "p", "TASK_FINISHED", 1, 2);
    let p = job_json(core.job("p").expect("p"), false);
    assert_eq!(p["schedule"], "R/2026-11-24T12:00:00Z/PT1M");
    assert_eq!(p["scheduleTimeZone"], "");
    assert!(p.get("parents").is_none(), "{p}");
    assert!(p.get("container").is_none(), "{p}");
    assert_eq!(p["successCount"], 1);
    assert_eq!(p["lastSuccess"], "2026-11-24T12:00:03.000Z");
    assert_eq!(p["errorsSinceLastSuccess"], 0);
    assert_eq!(p["ownerName"], "");
    let c = job_json(core.job("c").expect("c"), true);
    assert_eq!(c["parents"], json!(["p"]));
    assert!(c.get("schedule").is_none() && c.get("scheduleTimeZone").is_none());
    assert_eq!(c["running"], true);
    // What a client posts back reads as the same job.
    let again: Job = serde_json::from_value(c).expect("round trip");
    assert_eq!(&again, &core.job("c").expect("c").job);
    let with_container = {
        add(
            &mut core,
            r#"{"name":"d","command":"true","schedule":"R//PT1H","container":{"type":"DOCKER","image":"busybox"}}"#,
        );
        job_json(core.job("d").expect("d"), false)
    };
    assert_eq!(with_container["container"]["image"], "busybox");
    assert_eq!(with_container["container"]["type"], "DOCKER");
}

#[test]
fn errors_since_last_success_count_up_and_reset() {
    let mut core = BatchCore::default();
    add(
        &mut core,
        r#"{"name":"j","command":"true","schedule":"R//PT1H","retries":0}"#,
    );
    run(&mut core, "j", "TASK_FAILED", 10, 1);
    run(&mut core, "j", "TASK_FAILED", 20, 1);
    let j = job_json(core.job("j").expect("j"), false);
    assert_eq!(
        (j["errorCount"].clone(), j["errorsSinceLastSuccess"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(j["lastError"], "2026-11-24T12:00:21.000Z");
    run(&mut core, "j", "TASK_FINISHED", 30, 1);
    let j = job_json(core.job("j").expect("j"), false);
    assert_eq!(j["errorsSinceLastSuccess"], 0);
}

#[test]
fn search_matches_like_chronos_with_bounded_parameters() {
    let mut core = BatchCore::default();
    for i in 0..15 {
        add(
            &mut core,
            &format!(r#"{{"name":"job-{i:02}","command":"echo {i}","schedule":"R//PT1H"}}"#),
        );
    }
    add(
        &mut core,
        r#"{"name":"Backup","command":"tar cf /x /etc","schedule":"R//PT1H"}"#,
    );
    let names = |q: &[(&str, &str)]| -> Vec<String> {
        Search::parse(&params(q))
            .expect("valid")
            .run(&core)
            .iter()
            .map(|j| j.job.name.clone())
            .collect()
    };
    // Chronos returns 10 unless asked for more.
    assert_eq!(names(&[]).len(), 10);
    assert_eq!(names(&[("limit", "100")]).len(), 16);
    assert_eq!(names(&[("name", "BACK")]), vec!["Backup"]);
    assert_eq!(names(&[("command", "TAR ")]), vec!["Backup"]);
    assert_eq!(
        names(&[("name", "job"), ("command", "tar")]),
        Vec::<String>::new()
    );
    assert_eq!(
        names(&[("name", "nothing"), ("any", "/etc")]),
        vec!["Backup"]
    );
    assert_eq!(
        names(&[("name", "job-"), ("offset", "12"), ("limit", "2")]),
        vec!["job-12", "job-13"]
    );
    assert_eq!(names(&[("limit", "0")]), Vec::<String>::new());
    for (key, bad) in [
        ("limit", "-1".to_string()),
        ("limit", "10001".to_string()),
        ("limit", "ten".to_string()),
        ("offset", "1000001".to_string()),
        ("name", "x".repeat(limits::MAX_STRING + 1)),
        ("command", "x".repeat(limits::MAX_STRING + 1)),
        ("any", "x".repeat(limits::MAX_STRING + 1)),
    ] {
        let errors = Search::parse(&params(&[(key, &bad)])).expect_err(key);
        assert_eq!(errors.len(), 1, "{key}");
        assert_eq!(errors[0].path, key);
    }
    assert!(Search::parse(&params(&[("limit", "10000"), ("offset", "1000000")])).is_ok());
}

#[test]
fn task_stat_history_is_chronos_shaped_newest_first() {
    let mut core = BatchCore::default();
    add(
        &mut core,
        r#"{"name":"j","command":"true","schedule":"R//PT1H","retries":0}"#,
    );
    run(&mut core, "j", "TASK_FAILED", 10, 5);
    run(&mut core, "j", "TASK_FINISHED", 100, 3725);
    core.run_now("j", t(5000)).expect("run");
    let l = core.claim_launches(10, t(5000));
    core.on_update(&l[0].task_id, "TASK_RUNNING", None, "agent-2", "", t(5000));
    let h = task_stat_history(&core, "j");
    assert_eq!(h.len(), 3);
    assert_eq!(h[0]["status"], "Running");
    assert_eq!(h[0]["endTime"], "N/A");
    assert!(h[0].get("duration").is_none());
    assert_eq!(h[0]["slaveId"], "agent-2");
    assert_eq!(h[1]["status"], "Success");
    assert_eq!(h[1]["startTime"], "11/24/26 12:01:40");
    assert_eq!(h[1]["endTime"], "11/24/26 13:03:45");
    assert_eq!(h[1]["duration"], "1h2m5s");
    assert_eq!(h[2]["status"], "Fail");
    assert_eq!(h[2]["duration"], "5s");
    assert_eq!(h[2]["jobName"], "j");
    let keys: Vec<&String> = h[1].as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        [
            "duration",
            "endTime",
            "jobName",
            "slaveId",
            "startTime",
            "status",
            "taskId"
        ]
    );
    assert_eq!(stat_duration(0), "0s");
    assert_eq!(stat_duration(60), "1m0s");
    assert_eq!(stat_duration(-3), "0s");
}

#[test]
fn the_graph_says_last_state_and_current_state() {
    let mut core = BatchCore::default();
    add(
        &mut core,
        r#"{"name":"a","command":"true","schedule":"R//PT1H","retries":0}"#,
    );
    add(
        &mut core,
        r#"{"name":"b","command":"true","parents":["a"]}"#,
    );
    add(
        &mut core,
        r#"{"name":"c","command":"true","schedule":"R//PT1H","retries":0}"#,
    );
    run(&mut core, "a", "TASK_FAILED", 1, 1);
    run(&mut core, "a", "TASK_FINISHED", 3, 1);
    // a succeeded, so b has a run waiting for an offer; c is running.
    core.run_now("c", t(10)).expect("run");
    let l = core.claim_launches(10, t(10));
    assert!(l.iter().any(|l| l.job.name == "c"));
    for l in &l {
        if l.job.name == "b" {
            core.unclaim(&l.task_id);
        }
    }
    let csv = graph_csv(&core);
    assert_eq!(
        csv,
        "node,a,success,idle\nnode,b,fresh,queued\nnode,c,fresh,running\nlink,a,b\n"
    );
    let c = l.iter().find(|l| l.job.name == "c").expect("c");
    core.on_update(&c.task_id, "TASK_FAILED", Some(1), "agent-1", "", t(20));
    assert!(graph_csv(&core).contains("node,c,failure,"));
}

#[test]
fn metrics_come_as_chronos_json_unless_prometheus_asks() {
    let mut core = BatchCore::default();
    add(
        &mut core,
        r#"{"name":"a","command":"true","schedule":"R//PT1H"}"#,
    );
    run(&mut core, "a", "TASK_FINISHED", 1, 1);
    let totals = Totals::of(&core, 7);
    let j = totals.dropwizard();
    assert_eq!(j["version"], "3.0.0");
    assert_eq!(j["gauges"]["agora.batch.jobs"]["value"], 1);
    assert_eq!(j["counters"]["agora.batch.runs.succeeded"]["count"], 1);
    assert_eq!(j["counters"]["agora.batch.tasks.launched"]["count"], 7);
    for k in ["histograms", "meters", "timers"] {
        assert_eq!(j[k], json!({}));
    }
    let text = totals.prometheus();
    assert!(
        text.contains("agora_batch_tasks_launched_total 7\n"),
        "{text}"
    );
    assert!(text.contains("agora_batch_runs_in_history{status=\"success\"} 1\n"));
    let prometheus =
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert!(wants_prometheus(Some(prometheus)));
    assert!(wants_prometheus(Some("text/plain")));
    for other in [
        None,
        Some("*/*"),
        Some("application/json"),
        Some("text/plainish"),
    ] {
        assert!(!wants_prometheus(other), "{other:?}");
    }
}

#[test]
fn percentiles_stay_in_bounds() {
    assert_eq!(percentile(&[], 99.0), 0.0);
    let d = [1.0, 2.0, 3.0, 4.0];
    assert_eq!(percentile(&d, 0.0), 1.0);
    assert_eq!(percentile(&d, 50.0), 3.0);
    assert_eq!(percentile(&d, 100.0), 4.0);
    assert_eq!(percentile(&d, 1e9), 4.0);
    assert_eq!(percentile(&d, f64::NAN), 1.0);
}
