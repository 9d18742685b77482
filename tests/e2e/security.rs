//! Join tokens, as in Docker Swarm: agents without the cluster's token are refused with a message
//! that says so and never appear in `/state`; rotating the token locks out new agents with the old
//! one but not agents already admitted.

use std::process::Command;
use std::time::Duration;

use crate::harness::{eventually, free_port, Master, Process};

fn agent_args(master: &str, dir: &std::path::Path, name: &str, token: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = [
        "agent",
        "--master",
        master,
        "--ip",
        "127.0.0.1",
        "--port",
        &free_port().to_string(),
        "--work-dir",
        &dir.join(name).display().to_string(),
        "--resources",
        "cpus:1;mem:256",
        "--hostname",
        name,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
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
