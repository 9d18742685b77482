use super::*;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
        .expect("t")
        .with_timezone(&Utc)
        + ChronoDuration::seconds(secs)
}

fn job(json: &str) -> Job {
    serde_json::from_str(json).expect("job json")
}

fn finish_all(
    core: &mut BatchCore,
    launches: &[Launch],
    state: &str,
    at: DateTime<Utc>,
) -> Vec<Effect> {
    let mut effects = Vec::new();
    for l in launches {
        core.on_update(&l.task_id, "TASK_RUNNING", None, "a1", "", at);
        let code = if state == "TASK_FINISHED" { 0 } else { 1 };
        effects.extend(core.on_update(&l.task_id, state, Some(code), "a1", "", at));
    }
    effects
}

#[test]
fn a_repeating_job_runs_its_number_of_times_on_schedule() {
    let mut core = BatchCore::default();
    core.put_job(
        job(r#"{"name":"tick","command":"true","schedule":"R3/2026-11-24T12:00:00Z/PT10S"}"#),
        false,
        t(0),
    )
    .expect("add");
    let mut launched = 0;
    for s in 0..60 {
        core.tick(t(s));
        let l = core.claim_launches(10, t(s));
        launched += l.len();
        finish_all(&mut core, &l, "TASK_FINISHED", t(s));
    }
    assert_eq!(launched, 3);
    let st = core.job("tick").expect("job");
    assert_eq!(st.stats.success_count, 3);
    assert_eq!(st.next_at, None);
}

#[test]
fn a_failing_job_retries_with_backoff_then_records_the_error() {
    let mut core = BatchCore::default();
    core.put_job(
        job(r#"{"name":"flaky","command":"false","schedule":"R1//PT1H","retries":2}"#),
        false,
        t(0),
    )
    .expect("add");
    core.tick(t(0));
    let mut attempts = Vec::new();
    for s in 0..30 {
        let l = core.claim_launches(10, t(s));
        for x in &l {
            attempts.push((s, x.task_id.clone()));
        }
        finish_all(&mut core, &l, "TASK_FAILED", t(s));
    }
    let ids: Vec<&str> = attempts.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids, ["flaky.1.0.1", "flaky.1.0.2", "flaky.1.0.3"]);
    // Backoff: 1 s after the first failure, 2 s after the second.
    assert_eq!(attempts[1].0 - attempts[0].0, 1);
    assert_eq!(attempts[2].0 - attempts[1].0, 2);
    let st = core.job("flaky").expect("job");
    assert_eq!((st.stats.success_count, st.stats.error_count), (0, 1));
    let run = &core.runs_of("flaky")[0];
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.reason.contains("after 3 attempt(s)"), "{}", run.reason);
}

#[test]
fn a_dependency_chain_runs_in_order() {
    let mut core = BatchCore::default();
    core.put_job(
        job(r#"{"name":"a","command":"true","schedule":"R1//PT1H"}"#),
        false,
        t(0),
    )
    .expect("a");
    core.put_job(
        job(r#"{"name":"b","command":"true","parents":["a"]}"#),
        false,
        t(0),
    )
    .expect("b");
    core.put_job(
        job(r#"{"name":"c","command":"true","parents":["b"]}"#),
        false,
        t(0),
    )
    .expect("c");
    core.tick(t(0));
    let mut order = Vec::new();
    for s in 0..5 {
        let l = core.claim_launches(10, t(s));
        order.extend(l.iter().map(|x| x.job.name.clone()));
        finish_all(&mut core, &l, "TASK_FINISHED", t(s));
    }
    assert_eq!(order, ["a", "b", "c"]);
    // A failed parent stops the chain.
    core.run_now("a", t(10)).expect("run");
    let l = core.claim_launches(10, t(10));
    core.put_job(
        job(r#"{"name":"a","command":"true","schedule":"R1//PT1H","retries":0}"#),
        true,
        t(10),
    )
    .expect("a");
    finish_all(&mut core, &l, "TASK_FAILED", t(10));
    assert!(core.claim_launches(10, t(11)).is_empty());
    assert_eq!(core.runs_of("b").len(), 1);
}

#[test]
fn a_parallel_run_of_ten_completions_finishes() {
    let mut core = BatchCore::default();
    core.put_job(job(r#"{"name":"par","command":"true","parents":[],"schedule":"R1//PT1H","parallelism":4,"completions":10}"#), false, t(0))
        .expect("add");
    core.tick(t(0));
    let mut peak = 0;
    let mut total = 0;
    for s in 0..10 {
        let l = core.claim_launches(100, t(s));
        peak = peak.max(l.len());
        total += l.len();
        finish_all(&mut core, &l, "TASK_FINISHED", t(s));
    }
    assert_eq!((peak, total), (4, 10));
    assert_eq!(core.runs_of("par")[0].status, RunStatus::Succeeded);
}

#[test]
fn missed_runs_beyond_epsilon_are_skipped_and_recorded() {
    let mut core = BatchCore::default();
    core.put_job(job(r#"{"name":"late","command":"true","schedule":"R/2026-11-24T12:00:00Z/PT1M","epsilon":"PT30S"}"#), false, t(0))
        .expect("add");
    // The scheduler was away for ten minutes (a failover): the missed occurrence is skipped.
    core.tick(t(600));
    let runs = core.runs_of("late");
    assert!(runs
        .iter()
        .any(|r| r.status == RunStatus::Skipped && r.reason.contains("epsilon")));
    assert!(
        core.claim_launches(10, t(600)).is_empty()
            || core
                .runs_of("late")
                .iter()
                .any(|r| r.status == RunStatus::Running)
    );
    assert!(core.job("late").expect("job").next_at.expect("next") >= t(600));
}

#[test]
fn a_non_concurrent_job_never_overlaps_its_runs() {
    let mut core = BatchCore::default();
    core.put_job(
        job(r#"{"name":"slow","command":"sleep 100","schedule":"R/2026-11-24T12:00:00Z/PT10S"}"#),
        false,
        t(0),
    )
    .expect("add");
    core.tick(t(0));
    let l = core.claim_launches(10, t(0));
    assert_eq!(l.len(), 1);
    core.tick(t(10));
    assert!(core.claim_launches(10, t(10)).is_empty());
    assert!(core
        .runs_of("slow")
        .iter()
        .any(|r| r.status == RunStatus::Skipped));
}

#[test]
fn claimed_launches_survive_a_save_and_restore_without_duplicates() {
    let mut core = BatchCore::default();
    core.put_job(
        job(r#"{"name":"once","command":"true","schedule":"R1//PT1H"}"#),
        false,
        t(0),
    )
    .expect("add");
    core.tick(t(0));
    let l = core.claim_launches(10, t(0));
    assert_eq!(l.len(), 1);
    let saved = serde_json::to_string(&core).expect("save");
    let mut back: BatchCore = serde_json::from_str::<BatchCore>(&saved)
        .expect("load")
        .restore(t(1));
    back.tick(t(1));
    assert!(
        back.claim_launches(10, t(1)).is_empty(),
        "the claimed task must not be launched twice"
    );
    assert_eq!(back.live_tasks(), [(l[0].task_id.clone(), String::new())]);
    // Reconciliation says the master never heard of it: it is retried, once.
    back.on_update(
        &l[0].task_id,
        "TASK_UNKNOWN",
        None,
        "",
        "unknown to the master",
        t(2),
    );
    assert_eq!(back.claim_launches(10, t(5)).len(), 1);
}

#[test]
fn bad_jobs_and_unknown_names_are_refused_without_changes() {
    let mut core = BatchCore::default();
    let err = core
        .put_job(
            job(r#"{"name":"x","command":"true","parents":["nobody"]}"#),
            false,
            t(0),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown parent job 'nobody'"),
        "{err}"
    );
    assert_eq!(core.jobs().count(), 0);
    assert!(matches!(
        core.run_now("nope", t(0)),
        Err(BatchError::UnknownJob(_))
    ));
    core.put_job(
        job(r#"{"name":"p","command":"true","schedule":"R1//PT1H"}"#),
        false,
        t(0),
    )
    .expect("p");
    core.put_job(
        job(r#"{"name":"c","command":"true","parents":["p"]}"#),
        false,
        t(0),
    )
    .expect("c");
    assert!(matches!(
        core.put_job(
            job(r#"{"name":"p","command":"true","schedule":"R1//PT1H"}"#),
            false,
            t(0)
        ),
        Err(BatchError::Exists(_))
    ));
}

#[test]
fn a_run_past_its_active_deadline_is_killed_and_failed() {
    let mut core = BatchCore::default();
    core.put_job(job(r#"{"name":"slow","command":"sleep 100","schedule":"R1//PT1H","activeDeadlineSeconds":30}"#), false, t(0))
        .expect("add");
    core.tick(t(0));
    let l = core.claim_launches(10, t(0));
    core.on_update(&l[0].task_id, "TASK_RUNNING", None, "a1", "", t(1));
    assert!(core.tick(t(20)).is_empty());
    assert_eq!(core.tick(t(31)), [Effect::Kill(l[0].task_id.clone())]);
    let run = &core.runs_of("slow")[0];
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        run.reason.contains("activeDeadlineSeconds"),
        "{}",
        run.reason
    );
    assert_eq!(core.job("slow").expect("job").stats.error_count, 1);
}

#[test]
fn a_parent_that_closes_a_cycle_is_refused_naming_parents() {
    let mut core = BatchCore::default();
    core.put_job(
        job(r#"{"name":"a","command":"true","schedule":"R//PT1H"}"#),
        false,
        t(0),
    )
    .expect("a");
    core.put_job(
        job(r#"{"name":"b","command":"true","parents":["a"]}"#),
        false,
        t(0),
    )
    .expect("b");
    // a → b → a
    let err = core
        .put_job(
            job(r#"{"name":"a","command":"true","parents":["b"]}"#),
            true,
            t(1),
        )
        .unwrap_err();
    let BatchError::Invalid(InvalidJob(errors)) = err else {
        panic!("{err:?}")
    };
    assert_eq!(errors[0].path, "/parents");
    assert!(errors[0].errors[0].contains("a → b → a"), "{errors:?}");
    assert!(
        core.job("a").is_some_and(|a| a.job.parents.is_empty()),
        "nothing changed"
    );
    // A 3,000-long chain closed at its end: refused without recursion.
    for i in 1..3000 {
        let parent = if i == 1 {
            "a".to_string()
        } else {
            format!("j{}", i - 1)
        };
        core.put_job(
            job(&format!(
                r#"{{"name":"j{i}","command":"true","parents":["{parent}"]}}"#
            )),
            false,
            t(2),
        )
        .expect("chain");
    }
    let err = core
        .put_job(
            job(r#"{"name":"a","command":"true","parents":["j2999"]}"#),
            true,
            t(3),
        )
        .unwrap_err();
    assert!(
        matches!(&err, BatchError::Invalid(InvalidJob(e)) if e[0].path == "/parents" && e[0].errors[0].contains("more")),
        "{err:?}"
    );
    // A diamond is no cycle.
    core.put_job(
        job(r#"{"name":"d","command":"true","parents":["b","j5"]}"#),
        false,
        t(4),
    )
    .expect("a diamond is fine");
}

/// Cycles stored by an older version (which accepted them: `a` scheduled, `b` child of `a`, then
/// `a` updated to be a child of `b`): read back from saved JSON, they must not run forever and
/// every job of them must stay deletable.
#[test]
fn a_stored_cycle_neither_loops_nor_blocks_deletes() {
    let stored_cycle = |len: usize| -> BatchCore {
        let mut core = BatchCore::default();
        core.put_job(
            job(r#"{"name":"j0","command":"true","schedule":"R1//PT1H"}"#),
            false,
            t(0),
        )
        .expect("j0");
        for i in 1..len {
            core.put_job(
                job(&format!(
                    r#"{{"name":"j{i}","command":"true","parents":["j{}"]}}"#,
                    i - 1
                )),
                false,
                t(0),
            )
            .expect("chain");
        }
        let mut saved = serde_json::to_value(&core).expect("save");
        saved["jobs"]["j0"]["job"]["parents"] = serde_json::json!([format!("j{}", len - 1)]);
        saved["jobs"]["j0"]["job"]["schedule"] = serde_json::json!("");
        saved["jobs"]["j0"]["next_at"] = serde_json::Value::Null;
        serde_json::from_value(saved).expect("read")
    };
    // Runs until nothing more launches; the names in launch order.
    let drive = |core: &mut BatchCore, from: i64| -> Vec<String> {
        let mut launched = Vec::new();
        for s in from..from + 4000 {
            let l = core.claim_launches(100, t(s));
            launched.extend(l.iter().map(|x| x.job.name.clone()));
            finish_all(core, &l, "TASK_FINISHED", t(s));
            if l.is_empty() {
                break;
            }
        }
        launched
    };
    for len in [2usize, 3, 300, 3000] {
        // Read back as stored (not yet restored): running a job of the cycle does not start its
        // ancestors again, and any job of the cycle deletes.
        let mut core = stored_cycle(len);
        core.run_now("j0", t(0)).expect("run");
        assert_eq!(
            drive(&mut core, 0),
            ["j0"],
            "len {len}: the cycle is not followed"
        );
        core.delete_job("j0", t(10))
            .expect("j0 of the cycle deletes");
        assert!(core.job("j1").is_some_and(|j| j.job.parents.is_empty()));
        for i in (1..len).rev() {
            core.delete_job(&format!("j{i}"), t(10))
                .expect("the rest deletes");
        }
        assert_eq!(core.jobs().count(), 0);

        // Restored (what the service does on start): the cycle is broken at one edge, so a run of
        // the job that lost its parent runs the whole chain once, and then it stops.
        let (mut core, dropped) = stored_cycle(len).restore_reporting(t(0));
        assert_eq!(dropped, [("j1".to_string(), "j0".to_string())], "len {len}");
        assert_eq!(core.edges().len(), len - 1);
        if len > 300 {
            // Running 3,000 jobs one after the other is slow in debug builds; the short cycles
            // cover the run, this one the walk without recursion.
            continue;
        }
        core.run_now("j1", t(0)).expect("run");
        let order = drive(&mut core, 0);
        assert_eq!(order.len(), len, "len {len}");
        assert!(core.claim_launches(100, t(5000)).is_empty());
        for name in order.iter().rev() {
            core.delete_job(name, t(5001))
                .expect("deletes from the leaf");
        }
        assert_eq!(core.jobs().count(), 0);
    }
}

/// Numbers no API accepts any more, read back from saved state, must not panic or hang a tick.
#[test]
fn hostile_values_in_saved_state_never_panic_or_hang_the_core() {
    let mut core = BatchCore::default();
    core.put_job(
        job(r#"{"name":"fine","command":"false","schedule":"R//PT1S","epsilon":"PT1S"}"#),
        false,
        t(0),
    )
    .expect("add");
    let mut saved = serde_json::to_value(&core).expect("save");
    let j = &mut saved["jobs"]["fine"]["job"];
    j["retries"] = serde_json::json!(u32::MAX);
    j["parallelism"] = serde_json::json!(u32::MAX);
    j["completions"] = serde_json::json!(u32::MAX);
    j["activeDeadlineSeconds"] = serde_json::json!(1e300);
    // A one-second period started 900 years ago, with an epsilon of 999 years: billions of
    // occurrences would be "due".
    j["schedule"] = serde_json::json!("R/1126-01-01T00:00:00Z/PT1S");
    j["epsilon"] = serde_json::json!("P999Y");
    saved["jobs"]["fine"]["next_at"] = serde_json::json!("1126-01-01T00:00:00Z");
    let core: BatchCore = serde_json::from_value(saved).expect("read");
    let mut core = core.restore(t(0));
    let started = std::time::Instant::now();
    for s in 0..5 {
        core.tick(t(s));
        let l = core.claim_launches(50, t(s));
        assert!(l.len() <= 50);
        finish_all(&mut core, &l, "TASK_FAILED", t(s));
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "a tick does bounded work"
    );
    let next = core
        .job("fine")
        .and_then(|j| j.next_at)
        .expect("still scheduled");
    assert!(next >= t(0) && next <= t(10), "resumed from now: {next}");
    // A period that cannot be added any more ends the schedule instead of repeating a time.
    let far = Schedule::parse("R/+262000-01-01T00:00:00Z/P1000Y", t(0));
    if let Ok(s) = far {
        let _ = s.next_after(t(0));
    }
    let p = crate::schedule::Period {
        months: 12_000,
        seconds: 0,
    };
    assert_eq!(p.after(DateTime::<Utc>::MAX_UTC), None);
}

#[test]
fn an_occurrence_missed_by_less_than_the_epsilon_still_runs_when_the_job_is_added() {
    let mut core = BatchCore::default();
    // Posted half a second after its start (the client's "now" is whole seconds).
    let now = t(0) + ChronoDuration::milliseconds(500);
    core.put_job(
        job(r#"{"name":"now","command":"true","schedule":"R/2026-11-24T12:00:00Z/PT10M","epsilon":"PT30S"}"#),
        false,
        now,
    )
    .expect("add");
    assert_eq!(core.job("now").expect("job").next_at, Some(t(0)));
    core.tick(now);
    assert_eq!(core.claim_launches(10, now).len(), 1, "the due run starts");
    assert_eq!(core.job("now").expect("job").next_at, Some(t(600)));
    // Missed by more than the epsilon: the next occurrence is the first.
    core.put_job(
        job(r#"{"name":"late","command":"true","schedule":"R/2026-11-24T12:00:00Z/PT10M","epsilon":"PT30S"}"#),
        false,
        t(31),
    )
    .expect("add");
    assert_eq!(core.job("late").expect("job").next_at, Some(t(600)));
    core.tick(t(31));
    assert!(core
        .claim_launches(10, t(31))
        .iter()
        .all(|l| l.job.name != "late"));
    assert!(core.runs_of("late").is_empty(), "nothing skipped either");
}

#[test]
fn a_killed_runs_task_records_how_it_ended_without_changing_the_run() {
    let mut core = BatchCore::default();
    core.put_job(
        job(r#"{"name":"long","command":"sleep 60","schedule":"R//PT1H","retries":0}"#),
        false,
        t(0),
    )
    .expect("add");
    core.run_now("long", t(0)).expect("run");
    let l = core.claim_launches(10, t(0));
    let id = l[0].task_id.clone();
    core.on_update(&id, "TASK_RUNNING", None, "a1", "", t(1));
    let kills = core
        .kill_job("long", "killed on request", t(2))
        .expect("kill");
    assert_eq!(kills, vec![Effect::Kill(id.clone())]);
    // A late RUNNING is killed again; the KILLED that follows is recorded.
    assert_eq!(
        core.on_update(&id, "TASK_RUNNING", None, "a1", "", t(3)),
        vec![Effect::Kill(id.clone())]
    );
    assert!(core
        .on_update(&id, "TASK_KILLED", None, "a1", "killed", t(4))
        .is_empty());
    let run = core.runs_of("long")[0].clone();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.reason, "killed on request");
    assert_eq!(run.tasks[0].state, "TASK_KILLED");
    assert_eq!(run.tasks[0].finished_at, Some(t(4)));
    // A terminal task stays as it ended.
    assert_eq!(
        core.on_update(&id, "TASK_RUNNING", None, "a1", "", t(5)),
        vec![Effect::Kill(id.clone())]
    );
    assert_eq!(core.runs_of("long")[0].tasks[0].state, "TASK_KILLED");
    let st = core.job("long").expect("job");
    assert_eq!((st.stats.error_count, st.stats.success_count), (1, 0));
    assert!(core.live_tasks().is_empty());
}

#[test]
fn a_deleted_jobs_children_take_its_place_as_in_chronos() {
    let mut core = BatchCore::default();
    for j in [
        r#"{"name":"root","command":"true","schedule":"R/2026-11-24T13:00:00Z/PT1H","scheduleTimeZone":"UTC"}"#,
        r#"{"name":"other","command":"true","schedule":"R//PT1H"}"#,
        r#"{"name":"mid","command":"true","parents":["root"]}"#,
        r#"{"name":"leaf","command":"true","parents":["mid","other"]}"#,
        r#"{"name":"only","command":"true","parents":["mid"]}"#,
    ] {
        core.put_job(job(j), false, t(0)).expect("add");
    }
    // A dependent job goes: its children get its parents instead.
    core.delete_job("mid", t(1)).expect("delete mid");
    assert_eq!(
        core.job("leaf").expect("leaf").job.parents,
        ["other", "root"]
    );
    assert_eq!(core.job("only").expect("only").job.parents, ["root"]);
    // A scheduled job goes: a child it was the only parent of runs on its schedule; one with
    // other parents only loses it.
    core.delete_job("root", t(2)).expect("delete root");
    let only = core.job("only").expect("only");
    assert!(only.job.parents.is_empty());
    assert_eq!(only.job.schedule, "R/2026-11-24T13:00:00Z/PT1H");
    assert_eq!(only.job.schedule_time_zone, "UTC");
    assert_eq!(only.next_at, Some(t(3600)));
    assert_eq!(core.job("leaf").expect("leaf").job.parents, ["other"]);
    assert_eq!(core.edges(), [("other".to_string(), "leaf".to_string())]);
    // It runs on that schedule.
    core.tick(t(3600));
    assert!(core
        .claim_launches(10, t(3600))
        .iter()
        .any(|l| l.job.name == "only"));
}

#[test]
fn a_delete_whose_children_cannot_take_its_place_changes_nothing() {
    let mut core = BatchCore::default();
    let parents: Vec<String> = (0..65).map(|i| format!("p{i}")).collect();
    for p in &parents {
        core.put_job(
            job(&format!(
                r#"{{"name":"{p}","command":"true","schedule":"R//PT1H"}}"#
            )),
            false,
            t(0),
        )
        .expect("parent");
    }
    core.put_job(
        job(r#"{"name":"mid","command":"true","parents":["p63","p64"]}"#),
        false,
        t(0),
    )
    .expect("mid");
    // 64 parents (p0…p62 and mid), the most a job may have: taking mid's place would need 65.
    let mut child_parents: Vec<String> = parents[..63].to_vec();
    child_parents.push("mid".into());
    let child = format!(
        r#"{{"name":"child","command":"true","parents":{}}}"#,
        serde_json::to_string(&child_parents).expect("json")
    );
    core.put_job(job(&child), false, t(0))
        .expect("child with 64 parents");
    core.run_now("mid", t(0)).expect("run");
    let before = core.runs_of("mid").len();
    assert!(matches!(
        core.delete_job("mid", t(1)),
        Err(BatchError::HasChildren { .. })
    ));
    assert!(core.job("mid").is_some());
    assert_eq!(core.job("child").expect("child").job.parents, child_parents);
    assert_eq!(core.runs_of("mid").len(), before);
    assert!(core.is_running("mid"), "its run was not killed");
}
