//! Planned stops as systemd makes them (SIGTERM): `agora services` and `agora batch` exit within
//! seconds — an open `/v2/events` stream does not hold them — and hand leadership over at once, so
//! the standby instance leads without waiting for the ZooKeeper session timeout.

use std::time::{Duration, Instant};

use crate::ha::zk_servers;
use crate::harness::{eventually, free_port, Master, Process};

/// Longer than the hand-over the test allows: without resigning, a standby would wait for it.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

fn instance(kind: &str, dir: &std::path::Path, port: u16, master: &str, zk: &str) -> Process {
    let args = crate::harness::framework_args(kind, dir, port, master, zk, SESSION_TIMEOUT);
    Process::spawn(&format!("{kind}-{port}"), &args, dir)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client")
}

async fn answers(port: u16, path: &str) -> Option<()> {
    let r = client()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .ok()?;
    (r.status() == 200).then_some(())
}

async fn stop_the_leader_and_see_the_standby_lead(kind: &str, path: &str, stream: Option<&str>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let zk = format!("zk://{}/agora-test-stop-{kind}-{unique}", zk_servers());
    let (p1, p2) = (free_port(), free_port());
    let mut first = instance(kind, dir.path(), p1, &master.address(), &zk);
    eventually(
        "the first instance to lead",
        Duration::from_secs(30),
        || answers(p1, path),
    )
    .await;
    let second = instance(kind, dir.path(), p2, &master.address(), &zk);
    eventually("the standby to be up", Duration::from_secs(30), || {
        answers(p2, "/ping")
    })
    .await;
    // A client holding a stream open (marathon-lb holds /v2/events for ever).
    let _held = match stream {
        Some(s) => {
            let r = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{p1}{s}"))
                .header("accept", "text/event-stream")
                .send()
                .await
                .expect("the event stream opens");
            assert_eq!(r.status(), 200);
            Some(r)
        }
        None => None,
    };

    let stopped_at = Instant::now();
    first.signal("TERM");
    let status = eventually("the leader to exit", Duration::from_secs(30), || {
        let s = first.try_wait();
        async move { s }
    })
    .await;
    let exited = stopped_at.elapsed();
    eventually("the standby to lead", Duration::from_secs(30), || {
        answers(p2, path)
    })
    .await;
    let handover = stopped_at.elapsed();
    assert!(
        status.success(),
        "SIGTERM is a clean stop: {status:?}\n{}",
        first.log_text()
    );
    assert!(
        exited < Duration::from_secs(8),
        "{kind} took {exited:?} to exit after SIGTERM\n{}",
        first.log_text()
    );
    assert!(
        handover < Duration::from_secs(9),
        "the standby {kind} led {handover:?} after the leader's SIGTERM (session timeout {SESSION_TIMEOUT:?})\n{}",
        second.log_text()
    );
    println!("{kind}: exited after {exited:?}, standby led after {handover:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn services_stopped_with_sigterm_exits_and_hands_over_at_once() {
    stop_the_leader_and_see_the_standby_lead("services", "/v2/apps", Some("/v2/events")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_stopped_with_sigterm_exits_and_hands_over_at_once() {
    stop_the_leader_and_see_the_standby_lead("batch", "/v1/scheduler/jobs", None).await;
}

/// A permanent refusal ends the process non-zero with the reason, so that its unit shows
/// "failed" instead of "active" while it does nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_framework_whose_credentials_are_refused_exits_non_zero_saying_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let creds = dir.path().join("credentials.json");
    std::fs::write(
        &creds,
        r#"{"credentials":[{"principal":"services","secret":"s3cret"},{"principal":"batch","secret":"b4tch"}]}"#,
    )
    .expect("write");
    let master = Master::start(dir.path(), &["--credentials", &creds.display().to_string()]).await;
    let wrong = dir.path().join("wrong-secret");
    std::fs::write(&wrong, "not-the-secret").expect("write");
    for kind in ["services", "batch"] {
        let args: Vec<String> = [
            kind,
            "--master",
            &master.address(),
            "--ip",
            "127.0.0.1",
            "--port",
            &free_port().to_string(),
            "--work-dir",
            &dir.path().join(kind).display().to_string(),
            "--principal",
            kind,
            "--secret-file",
            &wrong.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut p = Process::spawn(kind, &args, dir.path());
        let status = eventually(
            "the refused framework to exit",
            Duration::from_secs(30),
            || {
                let s = p.try_wait();
                async move { s }
            },
        )
        .await;
        assert!(
            !status.success(),
            "{kind} exited 0 after a refusal:\n{}",
            p.log_text()
        );
        let log = p.log_text();
        assert!(
            log.contains("refused") && log.to_lowercase().contains("credential"),
            "{kind}'s log does not say why:\n{log}"
        );
    }
}
