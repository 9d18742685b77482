//! Join tokens, as in Docker Swarm: agents without the cluster's token are refused with a message
//! that says so and never appear in `/state`; rotating the token locks out new agents with the old
//! one but not agents already admitted.

use std::process::Command;
use std::time::Duration;

use crate::harness::{eventually, free_port, Master, Process};

fn agent_args(master: &str, dir: &std::path::Path, name: &str, token: Option<&str>) -> Vec<String> {
    let mut args =
        crate::harness::agent_args(dir, name, master, free_port(), "cpus:1;mem:256", "native");
    if let Some(t) = token {
        args.extend(["--join-token".to_string(), t.to_string()]);
    }
    args
}

fn token_cmd(file: &std::path::Path, rotate: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agora"));
    cmd.args(["master", "token", "--join-token-file"]).arg(file);
    if rotate {
        cmd.arg("--rotate");
    }
    let out = cmd.output().expect("agora runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn hostnames(master: &Master) -> Vec<String> {
    master.state().await["agents"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|a| a["hostname"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_need_the_join_token_and_rotation_only_affects_new_agents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("join-token");
    let master = Master::start(
        dir.path(),
        &["--join-token-file", &token_file.display().to_string()],
    )
    .await;
    let token = token_cmd(&token_file, false);
    assert!(token.starts_with("agora-"), "{token}");

    // Without the token: refused, exits non-zero, never in /state.
    let mut stranger = Process::spawn(
        "stranger",
        &agent_args(&master.address(), dir.path(), "stranger", None),
        dir.path(),
    );
    let status = eventually(
        "the tokenless agent to give up",
        Duration::from_secs(15),
        || {
            let s = stranger.try_wait();
            async move { s }
        },
    )
    .await;
    assert!(!status.success());
    assert!(
        stranger.log_text().contains("join token rejected"),
        "{}",
        stranger.log_text()
    );
    let wrong = Process::spawn(
        "wrong",
        &agent_args(&master.address(), dir.path(), "wrong", Some("agora-guess")),
        dir.path(),
    );
    // With the token: admitted.
    let mut member = Process::spawn(
        "member",
        &agent_args(&master.address(), dir.path(), "member", Some(&token)),
        dir.path(),
    );
    eventually(
        "the member to register",
        Duration::from_secs(15),
        || async {
            hostnames(&master)
                .await
                .contains(&"member".to_string())
                .then_some(())
        },
    )
    .await;
    assert_eq!(hostnames(&master).await, ["member"]);
    drop(wrong);

    // Rotation: new agents with the old token are refused; the admitted one comes back after a
    // restart with its old token.
    let rotated = token_cmd(&token_file, true);
    assert_ne!(rotated, token);
    let mut late = Process::spawn(
        "late",
        &agent_args(&master.address(), dir.path(), "late", Some(&token)),
        dir.path(),
    );
    let refused = eventually(
        "the late agent to be refused",
        Duration::from_secs(15),
        || {
            let s = late.try_wait();
            async move { s }
        },
    )
    .await;
    assert!(!refused.success(), "{}", late.log_text());
    member.kill();
    let member_args = {
        let mut a = agent_args(&master.address(), dir.path(), "member", Some(&token));
        // Same work dir, so the same agent id.
        let i = a.iter().position(|x| x == "--port").expect("port") + 1;
        a[i] = free_port().to_string();
        a
    };
    let _member_again = Process::spawn("member-again", &member_args, dir.path());
    let state = master
        .state_where("the admitted agent back", Duration::from_secs(20), |s| {
            s["agents"].as_array().is_some_and(|a| {
                a.len() == 1 && a[0]["hostname"] == "member" && a[0]["active"] == true
            })
        })
        .await;
    assert!(!state.to_string().contains("\"late\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn frameworks_authenticate_and_acls_decide_roles_and_teardowns() {
    use agora_proto::v1;
    let dir = tempfile::tempdir().expect("tempdir");
    let creds = dir.path().join("credentials.json");
    std::fs::write(
        &creds,
        r#"{"credentials":[{"principal":"services","secret":"s3cret"},{"principal":"ops","secret":"0ps"}]}"#,
    )
    .expect("write");
    let acls = dir.path().join("acls.json");
    std::fs::write(
        &acls,
        r#"{"permissive": false,
            "register_frameworks": [{"principals": {"values": ["services"]}, "roles": {"values": ["web"]}}],
            "teardown_frameworks": [{"principals": {"values": ["ops"]}, "framework_principals": {"type": "ANY"}}]}"#,
    )
    .expect("write");
    let master = Master::start(
        dir.path(),
        &[
            "--credentials",
            &creds.display().to_string(),
            "--acls",
            &acls.display().to_string(),
        ],
    )
    .await;
    let subscribe = |auth: Option<&'static str>, role: &'static str| {
        let address = master.address();
        async move {
            let mut client =
                v1::scheduler_client::SchedulerClient::connect(format!("http://{address}"))
                    .await
                    .expect("connect");
            let mut req = tonic::Request::new(v1::SubscribeRequest {
                framework_info: Some(v1::FrameworkInfo {
                    name: "f".into(),
                    roles: vec![role.into()],
                    ..Default::default()
                }),
                suppressed_roles: vec![],
            });
            if let Some(a) = auth {
                req.metadata_mut()
                    .insert("authorization", a.parse().expect("ascii"));
            }
            client.subscribe(req).await.map(|_| ())
        }
    };
    // base64("services:s3cret") and base64("services:wrong")
    let err = subscribe(None, "web").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(
        err.message().contains("requires framework credentials"),
        "{}",
        err.message()
    );
    let err = subscribe(Some("Basic c2VydmljZXM6d3Jvbmc="), "web")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = subscribe(Some("Basic c2VydmljZXM6czNjcmV0"), "batch")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message()
            .contains("may not register frameworks in role 'batch'"),
        "{}",
        err.message()
    );

    // The SDK with the right credential subscribes; its principal is recorded.
    let mut fw = agora_sdk::Framework::builder(&master.address(), "authed")
        .role("web")
        .credential("services", "s3cret")
        .failover_timeout(Duration::from_secs(600))
        .connect()
        .expect("connect");
    let id = loop {
        match tokio::time::timeout(Duration::from_secs(10), fw.next_event()).await {
            Ok(Some(agora_sdk::Event::Subscribed { framework_id, .. })) => break framework_id,
            Ok(Some(_)) => continue,
            other => panic!("no SUBSCRIBED: {other:?}"),
        }
    };
    let state = master.state().await;
    assert_eq!(state["frameworks"][0]["principal"], "services");

    // Teardown over HTTP: without credentials 401, as `services` 403, as `ops` 204.
    let url = format!("{}/api/v1/frameworks/{id}/teardown", master.url());
    let client = reqwest::Client::new();
    assert_eq!(client.post(&url).send().await.expect("post").status(), 401);
    let r = client
        .post(&url)
        .basic_auth("services", Some("s3cret"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    let r = client
        .post(&url)
        .basic_auth("ops", Some("0ps"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 204);
    drop(fw);
}

/// A component's URL with `path`, asked with `token` (or none): status, `WWW-Authenticate`, body.
async fn ask(url: &str, token: Option<&str>) -> (u16, String, serde_json::Value) {
    try_ask(url, token).await.expect("the component answers")
}

async fn try_ask(url: &str, token: Option<&str>) -> Option<(u16, String, serde_json::Value)> {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.ok()?;
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    Some((status, challenge, body))
}

/// Without the header: 401 naming the problem and the component, with a Bearer challenge; with a
/// wrong token: 401 saying so.
async fn refuses(url: &str, component: &str) {
    let (status, challenge, body) = ask(url, None).await;
    assert_eq!(status, 401, "{url}: {body}");
    assert!(challenge.starts_with("Bearer realm="), "{url}: {challenge}");
    assert_eq!(body["error"], "missing_token", "{url}: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("missing bearer token") && message.contains(component),
        "{url}: {message}"
    );
    let (status, _, body) = ask(url, Some("agora-guess")).await;
    assert_eq!(status, 401, "{url}: {body}");
    assert_eq!(body["error"], "wrong_token", "{url}: {body}");
}

/// Waits until `url` answers 200 with the token, and returns the body.
async fn accepted(url: &str, token: &str) -> serde_json::Value {
    eventually(
        &format!("{url} to answer 200"),
        Duration::from_secs(30),
        || async {
            let (status, _, body) = try_ask(url, Some(token)).await?;
            (status == 200).then_some(body)
        },
    )
    .await
}

fn framework_args(
    kind: &str,
    master: &str,
    port: u16,
    dir: &std::path::Path,
    token_file: &std::path::Path,
) -> Vec<String> {
    [
        kind,
        "--master",
        master,
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--work-dir",
        &dir.join(kind).display().to_string(),
        "--api-token-file",
        &token_file.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `agora ARGS` with the token in `AGORA_TOKEN` (or none, with the caller's token variables
/// removed).
fn cli(args: &[&str], token: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agora"));
    cmd.args(args)
        .env_remove("AGORA_TOKEN")
        .env_remove("AGORA_TOKEN_FILE");
    if let Some(t) = token {
        cmd.env("AGORA_TOKEN", t);
    }
    cmd.output().expect("agora runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn http_apis_require_the_bearer_token_and_the_cli_sends_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("api-token");
    let token = "agora-e2e-api-token";
    std::fs::write(&token_file, format!("{token}\n")).expect("write token");
    let file_arg = token_file.display().to_string();
    let master = Master::start(dir.path(), &["--api-token-file", &file_arg]).await;

    // The master: operator endpoints, /state and /metrics protected; /health and the UI page open.
    for path in ["/state", "/metrics", "/api/v1/roles"] {
        refuses(&format!("{}{path}", master.url()), "master").await;
    }
    let state = accepted(&format!("{}/state", master.url()), token).await;
    assert!(state["agents"].is_array(), "{state}");
    let (status, _, _) = ask(&format!("{}/metrics", master.url()), Some(token)).await;
    assert_eq!(status, 200);
    assert_eq!(ask(&format!("{}/health", master.url()), None).await.0, 200);
    assert_eq!(ask(&format!("{}/", master.url()), None).await.0, 200);

    // Services and batch, started with the same token file.
    let services_port = free_port();
    let _services = Process::spawn(
        "services",
        &framework_args(
            "services",
            &master.address(),
            services_port,
            dir.path(),
            &token_file,
        ),
        dir.path(),
    );
    let batch_port = free_port();
    let _batch = Process::spawn(
        "batch",
        &framework_args(
            "batch",
            &master.address(),
            batch_port,
            dir.path(),
            &token_file,
        ),
        dir.path(),
    );
    let services = format!("http://127.0.0.1:{services_port}");
    let batch = format!("http://127.0.0.1:{batch_port}");
    eventually(
        "services and batch to answer /ping without a token",
        Duration::from_secs(30),
        || async {
            let s = try_ask(&format!("{services}/ping"), None).await?.0;
            let b = try_ask(&format!("{batch}/ping"), None).await?.0;
            (s == 200 && b == 200).then_some(())
        },
    )
    .await;
    for path in ["/v2/apps", "/v2/info", "/metrics"] {
        refuses(&format!("{services}{path}"), "services").await;
    }
    let apps = accepted(&format!("{services}/v2/apps"), token).await;
    assert!(apps["apps"].is_array(), "{apps}");
    for path in ["/v1/scheduler/jobs", "/scheduler/jobs", "/metrics"] {
        refuses(&format!("{batch}{path}"), "batch").await;
    }
    let jobs = accepted(&format!("{batch}/v1/scheduler/jobs"), token).await;
    assert!(jobs.is_array(), "{jobs}");

    // The CLI: with AGORA_TOKEN it works; without, it exits non-zero saying the token is missing
    // and how to pass it.
    let master_addr = master.address();
    let out = cli(
        &["cluster", "status", "--master", &master_addr],
        Some(token),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("leader"));
    let out = cli(&["cluster", "status", "--master", &master_addr], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the master at")
            && err.contains("missing bearer token")
            && err.contains("--token-file"),
        "{err}"
    );
    let out = cli(&["app", "list", "--services", &services], Some(token));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["app", "list", "--services", &services], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("services framework") && err.contains("missing bearer token"),
        "{err}"
    );
    let out = cli(
        &["job", "list", "--batch", &batch, "--token-file", &file_arg],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["job", "list", "--batch", &batch], Some("agora-guess"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("batch framework") && err.contains("wrong bearer token"),
        "{err}"
    );

    // Rotation without a restart: a new token in the file is accepted and the old one refused.
    let rotated = "agora-e2e-api-token-2";
    let tmp = dir.path().join("api-token.tmp");
    std::fs::write(&tmp, format!("{rotated}\n")).expect("write token");
    std::fs::rename(&tmp, &token_file).expect("rotate token");
    accepted(&format!("{}/state", master.url()), rotated).await;
    accepted(&format!("{services}/v2/apps"), rotated).await;
    let (status, _, body) = ask(&format!("{}/state", master.url()), Some(token)).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("wrong_token")));
}
