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
        core.delete_job("p", t(0)),
        Err(BatchError::HasChildren { .. })
    ));
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
