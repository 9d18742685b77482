//! `agora local` and the cluster CLI, as a new user meets them: start it, look at the cluster, run
//! a task, read its output, stop with Ctrl-C, start again and find the same agents.

use std::process::Command;
use std::time::Duration;

use agora_proto::v1::TaskState;
use serde_json::Value;

use crate::harness::{eventually, free_port, shell_task, Process, TestFramework};

fn cli(args: &[&str], master: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(args)
        .env("AGORA_MASTER", master)
        .output()
        .expect("the agora binary runs")
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// `agora local` with 2 native agents on `port`, its services API on `services` (the services
/// web UI test starts it too).
pub(crate) fn start_local(dir: &std::path::Path, port: u16, name: &str, services: u16) -> Process {
    let args: Vec<String> = [
        "local",
        "--port",
        &port.to_string(),
        "--work-dir",
        &dir.join("state").display().to_string(),
        "--agents",
        "2",
        "--containerizers",
        "native",
        "--batch-port",
        &free_port().to_string(),
        "--services-port",
        &services.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Process::spawn(name, &args, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn local_cluster_runs_tasks_shows_them_in_the_cli_and_recovers_after_a_restart() {
    let _alone = crate::harness::one_local_cluster_at_a_time().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let master = format!("127.0.0.1:{port}");
    let services = free_port();
    let mut local = start_local(dir.path(), port, "local", services);
    eventually("the ready banner", Duration::from_secs(40), || {
        let log = local.log_text();
        async move {
            log.contains("Agora is running locally with 2 agents")
                .then_some(())
        }
    })
    .await;
    assert!(local.log_text().contains(&format!("http://{master}/")));
    // The banner names every API the README shows, the services one included.
    assert!(
        local.log_text().contains(&format!(
            "services (Marathon)     http://127.0.0.1:{services}/v2/apps"
        )),
        "{}",
        local.log_text()
    );

    let status = json_of(&cli(&["cluster", "status", "--json"], &master));
    assert_eq!(status["agents"]["active"], 2);
    let agents = json_of(&cli(&["agent", "list", "--json"], &master));
    let mut ids: Vec<String> = agents
        .as_array()
        .expect("array")
        .iter()
        .map(|a| a["id"].as_str().expect("id").to_string())
        .collect();
    ids.sort();
    let table = cli(&["agent", "list"], &master);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("ID"), "{text}");
    assert!(
        text.contains("127.0.0.2") && text.contains("127.0.0.3"),
        "{text}"
    );

    let mut fw = TestFramework::subscribe(&master, TestFramework::info("cli-test", "*", 0.0)).await;
    let offer = fw.next_offer().await;
    fw.launch(
        &offer,
        vec![shell_task(
            "greeter",
            "echo hello from a local task; echo oops >&2",
            "cpus:0.1;mem:32",
        )],
    )
    .await
    .expect("accept");
    fw.until_state("greeter", TaskState::TaskFinished).await;
    let logs = cli(&["task", "logs", "greeter"], &master);
    assert!(
        logs.status.success(),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout),
        "hello from a local task\n"
    );
    let err = cli(&["task", "logs", "greeter", "--stderr"], &master);
    assert_eq!(String::from_utf8_lossy(&err.stdout), "oops\n");
    let tasks = json_of(&cli(&["task", "list", "--all", "--json"], &master));
    assert!(tasks
        .as_array()
        .expect("array")
        .iter()
        .any(|t| t["id"] == "greeter" && t["state"] == "TASK_FINISHED"));
    let frameworks =
        String::from_utf8_lossy(&cli(&["framework", "list"], &master).stdout).to_string();
    assert!(frameworks.contains("cli-test"), "{frameworks}");
    // Done with the test framework: its failover timeout is 0, so leaving gives its outstanding
    // offers back. Kept, they could hold every agent (it never declines) and starve the services
    // framework below, depending on which allocation cycle the app's revive lands in.
    drop(fw);

    // The README's first app, with --wait, through the services framework agora local runs.
    let app_file = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/apps/hello.json");
    let created = std::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(["app", "create", "-f", app_file, "--wait", "--services"])
        .arg(format!("http://127.0.0.1:{services}"))
        .output()
        .expect("agora runs");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert!(String::from_utf8_lossy(&created.stderr).contains("finished"));
    let apps = std::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(["app", "list", "--services"])
        .arg(format!("http://127.0.0.1:{services}"))
        .output()
        .expect("agora runs");
    let text = String::from_utf8_lossy(&apps.stdout).to_string();
    assert!(text.contains("/hello") && text.contains("stable"), "{text}");

    // `task kill` goes through the framework that owns the task: services replaces it.
    let hello: Value = reqwest::get(format!("http://127.0.0.1:{services}/v2/apps/hello"))
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    let victim = hello["app"]["tasks"][0]["id"]
        .as_str()
        .expect("a task")
        .to_string();
    let killed = cli(&["task", "kill", &victim], &master);
    assert!(
        killed.status.success(),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    eventually(
        "the killed task replaced",
        Duration::from_secs(30),
        || async {
            let v: Value = reqwest::get(format!("http://127.0.0.1:{services}/v2/apps/hello"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let tasks = v["app"]["tasks"].as_array()?.clone();
            let running = tasks
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .count();
            (running == 2 && tasks.iter().all(|t| t["id"] != victim.as_str())).then_some(())
        },
    )
    .await;

    // Errors say what is wrong and exit non-zero.
    let missing = cli(&["task", "logs", "no-such-task"], &master);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no task 'no-such-task'"));
    let unreachable = cli(&["cluster", "status"], "127.0.0.1:1");
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("Is the master running?"));

    // Ctrl-C stops everything cleanly; a second start finds the same agents.
    local.signal("INT");
    let exited = eventually("local to stop", Duration::from_secs(20), || {
        let s = local.try_wait();
        async move { s }
    })
    .await;
    assert!(exited.success(), "{}", local.log_text());
    let _again = start_local(dir.path(), port, "local-again", free_port());
    let again = eventually(
        "the same agents after a restart",
        Duration::from_secs(40),
        || {
            let out = cli(&["agent", "list", "--json"], &master);
            async move {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                let mut ids: Vec<String> = v
                    .as_array()?
                    .iter()
                    .filter_map(|a| a["id"].as_str().map(str::to_string))
                    .collect();
                ids.sort();
                (ids.len() == 2).then_some(ids)
            }
        },
    )
    .await;
    assert_eq!(again, ids);
}
