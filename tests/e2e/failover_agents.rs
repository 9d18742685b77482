//! Failover with a real agent and a real SDK framework (real ZooKeeper, `AGORA_TEST_ZK`): three
//! masters, the leader killed with SIGKILL; the agent and the framework watch the leader in
//! ZooKeeper and move to the new one as soon as it is listed, not after a backoff against the dead
//! one.
//!
//! `failover_with_real_agents_benchmark` (ignored) runs the same scenario repeatedly and prints
//! min/median/max: `AGORA_FAILOVER_RUNS` (default 10) runs with `--zk-session-timeout
//! AGORA_FAILOVER_SESSION` (default 10 s, the masters' default); BENCHMARKS.md records its figures.

use std::time::{Duration, Instant};

use agora_proto::v1::TaskState;
use agora_sdk::{carve_many, shell_task, Event, Framework, TaskNeeds};

use crate::ha::{leader_among, running_tasks, start_master_with, state_of, zk_servers, zk_url};
use crate::harness::{eventually, free_port, Agent};

/// What one failover took, each from the SIGKILL of the leader.
#[derive(Debug, Clone, Copy)]
struct Measured {
    /// A remaining master answers `/state` as the leader.
    elected: Duration,
    /// The new leader's `/state` shows the agent active and its task running.
    agent: Duration,
    /// The SDK framework is subscribed again (its `Subscribed` event after the kill).
    framework: Duration,
}

async fn next_matching<T>(
    fw: &mut Framework,
    what: &str,
    mut pick: impl FnMut(Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, fw.next_event()).await {
            Ok(Some(e)) => {
                if let Some(v) = pick(e) {
                    return v;
                }
            }
            Ok(None) => panic!("the framework stopped while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

/// Three masters, one agent, one SDK framework running one task; SIGKILL the leader and measure.
async fn fail_over_once(test: &str, session_timeout: f64) -> Measured {
    let dir = tempfile::tempdir().expect("tempdir");
    let zk = zk_url(&zk_servers(), test);
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut masters: Vec<_> = ports
        .iter()
        .map(|&p| (p, start_master_with(dir.path(), &zk, p, session_timeout)))
        .collect();
    let leader = eventually("a leader", Duration::from_secs(20), || leader_among(&ports)).await;
    let _agent = Agent::start(dir.path(), "agent-1", &zk, "cpus:1;mem:256");
    let mut fw = Framework::builder(&zk, "failover-agents")
        .failover_timeout(Duration::from_secs(600))
        .connect()
        .expect("connect");
    next_matching(&mut fw, "subscribed", |e| match e {
        Event::Subscribed { .. } => Some(()),
        _ => None,
    })
    .await;
    let offer = next_matching(&mut fw, "an offer", |e| match e {
        Event::Offers(o) => o.into_iter().next(),
        _ => None,
    })
    .await;
    let needs = TaskNeeds::parse("cpus:0.1;mem:32", 0).expect("needs");
    let carved = carve_many(&offer, &needs, 1);
    fw.launch(
        &offer.id,
        vec![shell_task("survivor", "sleep 120", &carved[0])],
    )
    .await
    .expect("launch");
    next_matching(&mut fw, "the task running", |e| match e {
        Event::Update(s) if s.task_id == "survivor" && s.state() == TaskState::TaskRunning => {
            Some(())
        }
        _ => None,
    })
    .await;
    // Events from here on: the instant of the re-subscription.
    let (resubscribed_tx, mut resubscribed) = tokio::sync::watch::channel(None::<Instant>);
    let pump = tokio::spawn(async move {
        while let Some(e) = fw.next_event().await {
            if let Event::Subscribed { .. } = e {
                resubscribed_tx.send_replace(Some(Instant::now()));
            }
        }
    });

    let (_, victim) = masters
        .iter_mut()
        .find(|(p, _)| *p == leader)
        .expect("leader process");
    let killed_at = Instant::now();
    victim.kill();
    let remaining: Vec<u16> = ports.iter().copied().filter(|p| *p != leader).collect();
    let within = Duration::from_secs_f64(session_timeout + 20.0);
    let new_leader = eventually("a new leader", within, || leader_among(&remaining)).await;
    let elected = killed_at.elapsed();
    eventually(
        "the agent and its task on the new leader",
        within,
        || async {
            let s = state_of(new_leader).await?;
            let agents = s["agents"].as_array()?;
            let active = agents.len() == 1 && agents[0]["active"] == true;
            (active && running_tasks(&s).contains("survivor")).then_some(())
        },
    )
    .await;
    let agent = killed_at.elapsed();
    let at = tokio::time::timeout(within, resubscribed.wait_for(|t| t.is_some()))
        .await
        .expect("the framework re-subscribes")
        .expect("the event pump runs")
        .expect("an instant");
    let framework = at.saturating_duration_since(killed_at);
    pump.abort();
    Measured {
        elected,
        agent,
        framework,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_and_the_sdk_follow_a_new_leader_without_backoff() {
    const SESSION: f64 = 4.0;
    let m = fail_over_once("failover-agents", SESSION).await;
    eprintln!("failover with a real agent: {m:?}");
    let budget = Duration::from_secs_f64(SESSION + 2.0);
    assert!(
        m.agent <= budget,
        "the agent and its task were on the new leader {:?} after the kill (elected after \
         {:?}); budget {budget:?}",
        m.agent,
        m.elected
    );
    assert!(
        m.framework <= budget,
        "the framework re-subscribed {:?} after the kill (elected after {:?}); budget {budget:?}",
        m.framework,
        m.elected
    );
}

fn min_median_max(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    let median = if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    };
    (xs[0], median, xs[n - 1])
}

/// The measurement behind BENCHMARKS.md ("Failover with a real agent"); not a timed test.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: runs the failover scenario AGORA_FAILOVER_RUNS times"]
async fn failover_with_real_agents_benchmark() {
    let env = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let runs = env("AGORA_FAILOVER_RUNS", 10.0) as usize;
    let session = env("AGORA_FAILOVER_SESSION", 10.0);
    let mut all = Vec::new();
    for run in 1..=runs {
        let m = fail_over_once("failover-bench", session).await;
        eprintln!(
            "run {run}: elected {:.2} s, agent+task {:.2} s, framework {:.2} s",
            m.elected.as_secs_f64(),
            m.agent.as_secs_f64(),
            m.framework.as_secs_f64()
        );
        all.push(m);
    }
    let budget = session + 2.0;
    for (name, pick) in [
        (
            "elected",
            (|m: &Measured| m.elected) as fn(&Measured) -> Duration,
        ),
        ("agent+task", |m: &Measured| m.agent),
        ("framework", |m: &Measured| m.framework),
    ] {
        let xs: Vec<f64> = all.iter().map(|m| pick(m).as_secs_f64()).collect();
        let within = xs.iter().filter(|x| **x <= budget).count();
        let (min, median, max) = min_median_max(xs);
        eprintln!(
            "session {session} s, {runs} runs: {name}: min {min:.2} s, median {median:.2} s, \
             max {max:.2} s; within {budget} s: {within} of {runs}"
        );
    }
}
