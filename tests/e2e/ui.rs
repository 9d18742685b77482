//! The master's web UI in a real browser (Debian's headless Chromium, installed by `scripts/test`):
//! the page loads, shows the agents and a running task, and logs no console errors.

use agora_proto::v1::TaskState;
use std::process::Command;

use crate::harness::{shell_task, Agent, Master, TestFramework};

fn chromium() -> String {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new("which")
            .arg(c)
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_string();
        }
    }
    panic!("no headless Chromium found: `apt-get install chromium` (scripts/test does)");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_ui_shows_agents_and_running_tasks_without_console_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let _agent = Agent::start(dir.path(), "ui-agent", &master.address(), "cpus:1;mem:256");
    let mut fw =
        TestFramework::subscribe(&master.address(), TestFramework::info("ui-fw", "*", 0.0)).await;
    let offer = fw.next_offer().await;
    fw.launch(
        &offer,
        vec![shell_task("shown-task", "sleep 60", "cpus:0.1;mem:32")],
    )
    .await
    .expect("accept");
    fw.until_state("shown-task", TaskState::TaskRunning).await;

    let (dom, log) = dump_dom(
        format!("{}/", master.url()),
        dir.path().join("chromium-profile"),
    )
    .await;
    let dom = dom.as_str();
    assert!(
        dom.contains("ui-agent"),
        "the agent is not on the page:\n{dom}"
    );
    assert!(
        dom.contains("shown-task"),
        "the task is not on the page:\n{dom}"
    );
    assert!(
        dom.contains("pill TASK_RUNNING"),
        "the task is not shown running:\n{dom}"
    );
    assert!(
        dom.contains("ui-fw"),
        "the framework is not on the page:\n{dom}"
    );
    assert!(dom.contains(NO_ERROR), "the page shows an error:\n{dom}");
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("Error") || l.contains("Uncaught")))
        .collect();
    assert!(
        console_errors.is_empty(),
        "console errors: {console_errors:#?}"
    );
    drop(fw);
}

/// The page's error box, hidden: the state loaded.
const NO_ERROR: &str = r#"<div id="error" style="display: none;"></div>"#;

/// A master started with --api-token-file: the page itself loads without the token, says how to
/// give it when it has none, and shows the cluster when opened once with `?token=`.
#[tokio::test(flavor = "multi_thread")]
async fn the_web_ui_takes_the_api_token_from_the_address_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("api-token");
    std::fs::write(&token_file, "ui-secret-token\n").expect("write token");
    let master = Master::start(
        dir.path(),
        &["--api-token-file", &token_file.display().to_string()],
    )
    .await;

    let (dom, _) = dump_dom(format!("{}/", master.url()), dir.path().join("profile-a")).await;
    assert!(
        dom.contains("missing bearer token") && dom.contains("?token="),
        "the page does not say the token is missing:\n{dom}"
    );

    let (dom, log) = dump_dom(
        format!("{}/?token=ui-secret-token", master.url()),
        dir.path().join("profile-b"),
    )
    .await;
    assert!(dom.contains(NO_ERROR), "the page shows an error:\n{dom}");
    assert!(
        dom.contains("leader 127.0.0.1:"),
        "the page did not load the state:\n{dom}"
    );
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("Error") || l.contains("Uncaught")))
        .collect();
    assert!(
        console_errors.is_empty(),
        "console errors: {console_errors:#?}"
    );
}

/// Loads `url` in headless Chromium with a fresh profile; the DOM after scripts ran, and the
/// browser's log.
async fn dump_dom(url: String, profile: std::path::PathBuf) -> (String, String) {
    let browser = chromium();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--enable-logging=stderr",
                "--v=0",
                &format!("--user-data-dir={}", profile.display()),
                "--virtual-time-budget=5000",
                "--dump-dom",
                &url,
            ])
            .output()
    })
    .await
    .expect("join")
    .expect("chromium runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
