//! Fuzzing the Chronos job reader, validator and schedule parser at scale: the path a
//! `POST /v1/scheduler/iso8601` body takes (`job::parse`, `Job::validate`, `Schedule::parse`).
//!
//! - arbitrary bytes, and arbitrary schedule strings: no panic, and an accepted schedule can be
//!   stepped (first occurrence, next occurrence) without panicking;
//! - valid jobs with one field deleted or replaced by a random JSON value: a refusal names the
//!   mutated field (or a field the validator ties to it);
//! - cron expressions with one field mutated: a refusal names that cron field;
//! - accepted jobs round-trip: serialize → parse → validate gives the same job and schedule.
//!
//! `PROPTEST_CASES` overrides the case counts; see docs/reliability.md.

use agora_batch::core::BatchCore;
use agora_batch::job::{self, FieldError, InvalidJob, Job};
use agora_batch::schedule::{parse_duration, Schedule};
use chrono::{DateTime, Utc};
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

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// What the API does with a body before it stores a job (`parent` is the one existing job).
fn read(body: &[u8]) -> Result<(Job, Option<Schedule>), InvalidJob> {
    let j = job::parse(body)?;
    let s = j.validate(&|p| p == "parent", now())?;
    Ok((j, s))
}

/// Steps an accepted ISO schedule; cron is stepped only in the cron property, whose fields are
/// kept satisfiable (a cron that never matches scans four years of minutes, slow in debug).
fn step_iso(s: &Schedule) {
    if let Schedule::Iso { .. } = s {
        if let Some(first) = s.first_at_or_after(now()) {
            let _ = s.next_after(first);
        }
    }
}

fn accepted(j: &Job, s: &Option<Schedule>) -> Result<(), TestCaseError> {
    if let Some(s) = s {
        step_iso(s);
    }
    let text = serde_json::to_vec(j).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back = read(&text);
    prop_assert_eq!(back.as_ref().map(|(j, _)| j), Ok(j));
    prop_assert_eq!(back.as_ref().map(|(_, s)| s), Ok(s));
    Ok(())
}

fn templates() -> Vec<Value> {
    vec![
        json!({"name": "backup", "command": "tar cf /tmp/x /etc", "schedule": "R/2026-11-24T12:00:00Z/PT1H",
               "epsilon": "PT30M", "owner": "ops@example.com", "cpus": 0.5, "mem": 64, "retries": 3,
               "uris": ["http://example.com/x.tgz"], "constraints": [["rack", "EQUALS", "a"]],
               "environmentVariables": [{"name": "A", "value": "1"}]}),
        json!({"name": "report", "schedule": "*/15 9-17 * * 1-5", "container": {"type": "DOCKER",
               "image": "busybox", "network": "BRIDGE"}, "arguments": ["echo", "hi"],
               "parallelism": 2, "completions": 4, "activeDeadlineSeconds": 60}),
        json!({"name": "child", "command": "true", "parents": ["parent"], "shell": false,
               "container": {"type": "MESOS"}}),
        json!({"name": "r5", "command": "date", "schedule": "R5/2026-01-31T00:00:00+01:00/P1M",
               "scheduleTimeZone": "UTC"}),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u32>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        Just(json!(1e308)),
        ".{0,8}".prop_map(Value::String),
        prop_oneof![
            Just("R/2026-11-24T12:00:00Z/PT0S"),
            Just("R//P99999Y"),
            Just("R-1//PT1S"),
            Just("1/4294967295 * * * *"),
            Just("* * * *"),
            Just("PT1S"),
            Just("P1.5D"),
            Just("DOCKER"),
            Just("rkt"),
            Just("parent"),
            Just("ghost"),
            Just("EQUALS"),
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

fn pointer(path: &[String]) -> String {
    path.iter().map(|p| format!("/{p}")).collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete,
    Replace(Value),
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

/// Fields whose value decides whether another is valid.
fn related(mutated: &str) -> &'static [&'static str] {
    match mutated.split('/').nth(1).unwrap_or("") {
        // What the job runs: without them, the command (or the image) is what is missing.
        "command" | "arguments" | "container" => &["/command", "/container"],
        // A job has a schedule or parents: changing one is reported at /schedule.
        "schedule" | "parents" => &["/schedule", "/parents"],
        // A parent that is the job itself.
        "name" => &["/parents", "/name"],
        _ => &[],
    }
}

fn names_the_field(errors: &[FieldError], mutated: &str) -> bool {
    let names = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|s| !s.is_empty() && s.parse::<usize>().is_err())
            .map(str::to_string)
            .collect()
    };
    let m = names(mutated);
    errors.iter().any(|e| {
        let p = names(&e.path);
        p.iter().zip(&m).all(|(a, b)| a == b)
            || related(mutated).iter().any(|r| e.path.starts_with(r))
    })
}

const CRON_FIELDS: [&str; 5] = ["minute", "hour", "day of month", "month", "weekday"];

fn cron_part() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        Just("*/4294967295".to_string()),
        Just("1/4294967295".to_string()),
        Just("5-1".to_string()),
        Just("-".to_string()),
        Just("/".to_string()),
        Just(",".to_string()),
        Just("99999999999".to_string()),
        (0u32..70).prop_map(|v| v.to_string()),
        (0u32..70, 0u32..70).prop_map(|(a, b)| format!("{a}-{b}")),
        (0u32..70, 0u32..10).prop_map(|(a, s)| format!("{a}/{s}")),
        "[0-9*/,-]{1,6}",
    ]
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
            Just(json!(u32::MAX)),
            Just(json!(31_536_001)),
            Just(json!(0)),
        ],
    ]
}

fn numeric_paths(v: &Value) -> Vec<String> {
    let mut all = Vec::new();
    paths(v, &mut Vec::new(), &mut all);
    all.iter()
        .map(|p| pointer(p))
        .filter(|p| v.pointer(p).is_some_and(Value::is_number))
        .collect()
}

/// Ticks, claims and fails (then finishes) the core's tasks for a while, then deletes every job:
/// no panic, and bounded work (the claims are capped).
fn drive(core: &mut BatchCore) {
    let at = |s: i64| now() + chrono::Duration::seconds(s);
    for s in 0..20 {
        core.tick(at(s * 30));
        let claimed = core.claim_launches(20, at(s * 30));
        for (i, l) in claimed.iter().enumerate() {
            core.on_update(&l.task_id, "TASK_RUNNING", None, "a1", "", at(s * 30 + 1));
            let end = if i % 2 == 0 {
                "TASK_FAILED"
            } else {
                "TASK_FINISHED"
            };
            core.on_update(&l.task_id, end, Some(1), "a1", "", at(s * 30 + 2));
        }
        let _ = core.wants_offers(at(s * 30 + 3));
    }
    let names: Vec<String> = core.jobs().map(|j| j.job.name.clone()).collect();
    for n in names.iter().rev() {
        let _ = core.durations(n);
        let _ = core.delete_job(n, at(1000));
    }
}

proptest! {
    #![proptest_config(config(2000))]

    /// Any number in any numeric field, through the API: refused naming the field, or accepted and
    /// then run by the core without a panic.
    #[test]
    fn fuzz_job_numbers_through_the_api_never_panic_the_core(
        which in 0..4usize,
        pick in any::<prop::sample::Index>(),
        n in arb_number(),
    ) {
        // The job as stored: every default is present, so every numeric field can be picked.
        let j = job::parse(templates()[which].to_string().as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut v = serde_json::to_value(&j).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let numeric = numeric_paths(&v);
        let field = &numeric[pick.index(numeric.len())];
        if let Some(slot) = v.pointer_mut(field) {
            *slot = n.clone();
        }
        match read(v.to_string().as_bytes()) {
            Ok((j, _)) => {
                let mut core = BatchCore::default();
                let parent = json!({"name": "parent", "command": "true", "schedule": "R//PT1M"});
                let p = job::parse(parent.to_string().as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(core.put_job(p, false, now()).is_ok());
                prop_assert!(core.put_job(j, false, now()).is_ok());
                drive(&mut core);
            }
            Err(InvalidJob(errors)) => prop_assert!(
                names_the_field(&errors, field),
                "{} = {} refused as {:?}", field, n, errors
            ),
        }
    }

    /// Any number in numeric fields of a job saved by an older version (no validation on the way
    /// in), and any saved occurrence count: the restored core never panics.
    #[test]
    fn fuzz_job_numbers_in_saved_state_never_panic_the_core(
        which in 0..4usize,
        picks in prop::collection::vec((any::<prop::sample::Index>(), arb_number()), 1..4),
        occurrences in any::<u64>(),
    ) {
        let mut core = BatchCore::default();
        let parent = json!({"name": "parent", "command": "true", "schedule": "R//PT1M"});
        let p = job::parse(parent.to_string().as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(core.put_job(p, false, now()).is_ok());
        let (j, _) = read(templates()[which].to_string().as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let name = j.name.clone();
        prop_assert!(core.put_job(j, false, now()).is_ok());
        let mut saved = serde_json::to_value(&core).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let stored = saved["jobs"][&name]["job"].clone();
        let numeric = numeric_paths(&stored);
        for (pick, n) in &picks {
            let field = &numeric[pick.index(numeric.len())];
            if let Some(slot) = saved["jobs"][&name]["job"].pointer_mut(field) {
                *slot = n.clone();
            }
        }
        saved["jobs"][&name]["occurrences"] = json!(occurrences);
        if let Ok(core) = serde_json::from_value::<BatchCore>(saved) {
            let mut core = core.restore(now());
            drive(&mut core);
        }
    }

    #[test]
    fn fuzz_job_arbitrary_bytes(body in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        ".{0,200}".prop_map(String::into_bytes),
        arb_json().prop_map(|v| v.to_string().into_bytes()),
    ]) {
        if let Ok((j, s)) = read(&body) {
            accepted(&j, &s)?;
        }
    }

    #[test]
    fn fuzz_job_mutated_names_the_field(
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
            Ok((j, s)) => accepted(&j, &s)?,
            Err(InvalidJob(errors)) => {
                prop_assert!(!errors.is_empty());
                prop_assert!(
                    names_the_field(&errors, &mutated),
                    "mutated {} ({:?}) in {} but the errors are {:?}", mutated, m, v, errors
                );
            }
        }
    }

    /// `R[n]/<start>/<period>` built from random parts, and arbitrary text.
    #[test]
    fn fuzz_schedule_iso(
        n in prop_oneof![Just(String::new()), any::<u64>().prop_map(|n| n.to_string()), "[-x0-9]{0,4}"],
        start in prop_oneof![
            Just(String::new()),
            Just("2026-11-24T12:00:00Z".to_string()),
            Just("9999-12-31T23:59:59Z".to_string()),
            Just("0000-01-01T00:00:00Z".to_string()),
            Just("2026-11-24T12:00Z".to_string()),
            "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?(Z|[+-][0-9]{2}:[0-9]{2})?",
        ],
        period in prop_oneof![
            "P([0-9]{1,10}Y)?([0-9]{1,10}M)?([0-9]{1,10}W)?([0-9]{1,10}D)?(T([0-9]{1,20}H)?([0-9]{1,10}M)?([0-9.,]{1,25}S)?)?",
            ".{0,12}",
        ],
        text in ".{0,40}",
    ) {
        let iso = format!("R{n}/{start}/{period}");
        for s in [iso.as_str(), text.as_str()] {
            match Schedule::parse(s, now()) {
                Ok(schedule) => step_iso(&schedule),
                Err(e) => prop_assert!(!e.is_empty()),
            }
        }
        if let Ok(p) = parse_duration(&period) {
            prop_assert!(p.approx_seconds() >= 0);
        }
    }

    /// Five cron fields, one of them random: a refusal names that field.
    #[test]
    fn fuzz_schedule_cron_names_the_field(
        which in 0..5usize,
        part in cron_part(),
    ) {
        let mut fields = ["*"; 5];
        fields[which] = &part;
        let text = fields.join(" ");
        match Schedule::parse(&text, now()) {
            Ok(s) => {
                // Only one field is restricted, so some minute of the next four years matches.
                let next = s.first_at_or_after(now());
                prop_assert!(next.is_some(), "{} never matches", text);
            }
            Err(e) => prop_assert!(
                e.contains(CRON_FIELDS[which]) || e.contains("expected 5 fields"),
                "'{}' refused without naming the {}: {}", text, CRON_FIELDS[which], e
            ),
        }
    }
}

/// Inputs the fuzzers found panicking (debug overflow checks) before the fixes.
#[test]
fn regression_overflows_are_refusals() {
    // The cron step loop added a huge step past u32::MAX.
    let e = Schedule::parse("1/4294967295 * * * *", now()).map(|_| ());
    assert_eq!(e, Ok(()), "a huge step selects just the start value");
    // Year and month counts overflowed u32; a period in seconds overflowed the date arithmetic.
    for d in [
        "P4294967295Y",
        "P4294967295M4294967295M",
        "PT99999999999999999999H",
    ] {
        let e = parse_duration(d).expect_err(d);
        assert!(e.contains("longer than"), "{d}: {e}");
        let job = format!(r#"{{"name":"j","command":"x","schedule":"R//{d}"}}"#);
        let InvalidJob(errors) = read(job.as_bytes()).expect_err(&job);
        assert_eq!(errors[0].path, "/schedule", "{errors:?}");
    }
    // A field of the wrong type was reported at '/' with only a line and column.
    let InvalidJob(errors) =
        read(br#"{"name":"j","command":"x","schedule":"* * * * *","cpus":"1"}"#).expect_err("cpus");
    assert_eq!(errors[0].path, "/cpus");
    // Found by the long run: cpus 1015527676453719232 was accepted (no upper bound) and did not
    // round-trip through JSON; such a job could never be offered its resources.
    let InvalidJob(errors) =
        read(br#"{"name":"j","command":"x","schedule":"* * * * *","cpus":1015527676453719232}"#)
            .expect_err("huge cpus");
    assert_eq!(errors[0].path, "/cpus");
    let InvalidJob(errors) = read(br#"{"command":"x"}"#).expect_err("name");
    assert_eq!(errors[0].path, "/name");
}
