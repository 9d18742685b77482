//! The master's web UI in a real browser (Debian's headless Chromium, installed by `scripts/test`):
//! the page loads, shows the agents and a running task, and logs no console errors.

use crate::browser::{console_errors, dump_dom};
use crate::harness::{shell_task, Agent, Master, TestFramework};
use agora_proto::v1::TaskState;

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
    let errors = console_errors(&log);
    assert!(errors.is_empty(), "console errors: {errors:#?}");
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
    let errors = console_errors(&log);
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}
