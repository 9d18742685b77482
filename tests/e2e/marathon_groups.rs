//! Marathon groups, deployment plans and events as PyPI `marathon` 0.13 sees them, against
//! `agora local` with native command tasks (tests/python/marathon_groups.py does the client's
//! part: groups with nested groups and dependencies, the order of starts and stops checked on the
//! API and the event stream). Then a restart of `agora local`: an empty group and a group-level
//! dependency are still there.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::spawn_local as start_local;
use crate::harness::{eventually, free_port};

/// The Python with the ecosystem's clients: `AGORA_TEST_PYTHON` (scripts/test sets it), else the
/// venv scripts/test makes.
fn python() -> String {
    std::env::var("AGORA_TEST_PYTHON")
        .unwrap_or_else(|_| "/tmp/agora-test-services/venv/bin/python".to_string())
}

async fn get(url: &str) -> Option<Value> {
    let r = reqwest::get(url).await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn marathon_client_groups_plans_and_events() {
    let python = python();
    let has_client = Command::new(&python)
        .args(["-c", "import marathon"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        has_client,
        "{python} cannot import PyPI `marathon` (scripts/test makes the venv; set AGORA_TEST_PYTHON)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let services = free_port();
    let url = format!("http://127.0.0.1:{services}");
    let mut local = start_local(dir.path(), port, "local", services);
    eventually("the services API", Duration::from_secs(60), || {
        let u = format!("{url}/v2/groups");
        async move { get(&u).await }
    })
    .await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/marathon_groups.py");
    let run_url = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg("400")
            .arg(&python)
            .arg(script)
            .arg(run_url)
            .output()
    })
    .await
    .expect("join")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("OK"),
        "{stdout}\n{}\n--- agora local ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        local.log_text()
    );

    // The tree as Marathon shows it: `/keep` empty, with its dependency; `/shop` gone.
    let root = get(&format!("{url}/v2/groups")).await.expect("root");
    let keep = |root: &Value| -> Option<Value> {
        root["groups"]
            .as_array()?
            .iter()
            .find(|g| g["id"] == "/keep")
            .cloned()
    };
    let k = keep(&root).expect("/keep in the root");
    assert_eq!(k["dependencies"], serde_json::json!(["/elsewhere"]));
    assert_eq!(k["apps"], serde_json::json!([]));
    assert!(root["groups"]
        .as_array()
        .is_some_and(|g| g.iter().all(|g| g["id"] != "/shop")));
    // `embed` chooses what a group shows: by default groups and apps without counts.
    let made = reqwest::Client::new()
        .post(format!("{url}/v2/apps"))
        .json(&serde_json::json!({ "id": "/other/idle", "cmd": "sleep 1", "cpus": 0.01, "mem": 32, "instances": 0 }))
        .send()
        .await
        .expect("post");
    assert_eq!(made.status(), 201);
    let other = get(&format!("{url}/v2/groups/other"))
        .await
        .expect("/other");
    assert_eq!(other["apps"][0]["id"], "/other/idle");
    assert!(other["apps"][0].get("tasksRunning").is_none(), "{other}");
    let counted = get(&format!(
        "{url}/v2/groups/other?embed=group.apps&embed=group.apps.counts&embed=group.apps.tasks"
    ))
    .await
    .expect("/other with counts");
    assert_eq!(counted["apps"][0]["tasksRunning"], 0, "{counted}");
    assert_eq!(counted["apps"][0]["tasks"], serde_json::json!([]));
    let only_groups = get(&format!("{url}/v2/groups?embed=group.groups"))
        .await
        .expect("root");
    assert!(only_groups["groups"]
        .as_array()
        .is_some_and(|g| g.iter().all(|g| g["apps"] == serde_json::json!([]))));
    // Errors name the field.
    let bad = reqwest::Client::new()
        .post(format!("{url}/v2/groups"))
        .json(&serde_json::json!({ "id": "/bad", "apps": [{ "id": "x", "cmd": "true", "cpus": -1 }] }))
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status(), 422);
    let body: Value = bad.json().await.expect("json");
    assert_eq!(body["details"][0]["path"], "/apps/0/cpus", "{body}");
    // `POST /v2/groups/{id}` without a body id creates `{id}`: 201 with its Location.
    let made = reqwest::Client::new()
        .post(format!("{url}/v2/groups/made/here"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("post");
    assert_eq!(made.status(), 201);
    assert_eq!(made.headers()["location"], "/v2/groups/made/here");
    let again = reqwest::Client::new()
        .post(format!("{url}/v2/groups"))
        .json(&serde_json::json!({ "id": "made/here" }))
        .send()
        .await
        .expect("post");
    assert_eq!(again.status(), 409);
    let rollback = reqwest::Client::new()
        .put(format!(
            "{url}/v2/groups/keep/versions/2026-01-01T00:00:00.000Z"
        ))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("put");
    assert_eq!(rollback.status(), 422);
    let missing = reqwest::get(format!("{url}/v2/groups/nope"))
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);

    // A restart: saved state keeps the empty group and its dependency.
    local.signal("INT");
    let exited = eventually("local to stop", Duration::from_secs(30), || {
        let s = local.try_wait();
        async move { s }
    })
    .await;
    assert!(exited.success(), "{}", local.log_text());
    let _again = start_local(dir.path(), port, "local-again", services);
    let root = eventually(
        "the groups after a restart",
        Duration::from_secs(60),
        || {
            let u = format!("{url}/v2/groups");
            async move { get(&u).await }
        },
    )
    .await;
    let k = keep(&root).expect("/keep after the restart");
    assert_eq!(k["dependencies"], serde_json::json!(["/elsewhere"]));
}
