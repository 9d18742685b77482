//! The agent's HTTP API over a real socket: sandbox files (with path traversal refused), health,
//! statistics; and `run` serving until shutdown.

use std::future::IntoFuture;
use std::time::Duration;

use agora_proto::v1::TaskState;
use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn files_api_serves_sandboxes_and_refuses_traversal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start(dir.path(), "native").await;
    let fw = framework();
    agent
        .handle
        .run_task(
            fw.clone(),
            shell_task(
                "files",
                "echo line-one; echo line-two; exec sleep 60",
                "cpus:0.1;mem:40",
            ),
        )
        .expect("run");
    wait_for(&mut agent, "files", TaskState::TaskRunning).await;
    let sb = sandbox(&agent, &fw.id, "files");
    eventually("output", || read(&sb.join("stdout")).contains("line-two")).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(
        axum::serve(listener, agora_agent::http::router(agent.handle.clone())).into_future(),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let get = |path: &str, query: Vec<(&str, String)>| {
        let req = client.get(format!("{base}{path}")).query(&query);
        async move {
            let r = req.send().await.expect("request");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("json body"))
        }
    };

    let (status, health) = get("/health", vec![]).await;
    assert_eq!(status, 200);
    assert_eq!(health["agent_id"], agent.handle.agent_id());

    let stdout = sb.join("stdout").display().to_string();
    let (status, body) = get(
        "/files/read",
        vec![("path", stdout.clone()), ("offset", "0".into())],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"data": "line-one\nline-two\n", "offset": 0})
    );
    let (_, body) = get(
        "/files/read",
        vec![
            ("path", stdout.clone()),
            ("offset", "9".into()),
            ("length", "4".into()),
        ],
    )
    .await;
    assert_eq!(body["data"], "line");
    let (_, body) = get(
        "/files/read",
        vec![("path", stdout.clone()), ("offset", "-1".into())],
    )
    .await;
    assert_eq!(body["offset"], 18);

    let (status, listing) = get("/files/browse", vec![("path", sb.display().to_string())]).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = listing
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("/stdout"))
            && names.iter().any(|n| n.ends_with("/stderr")),
        "{names:?}"
    );

    for bad in [
        "../../etc/passwd".to_string(),
        format!("{}/../../../../../../../../etc/passwd", sb.display()),
        "/etc/passwd".to_string(),
    ] {
        let (status, body) = get("/files/read", vec![("path", bad.clone())]).await;
        assert_eq!(status, 403, "{bad}: {body}");
        let msg = body["message"].as_str().unwrap_or_default();
        assert!(msg.contains("sandboxes"), "{bad}: {msg}");
        assert!(!msg.contains("root:"), "no file content leaks");
    }
    let (status, body) = get(
        "/files/read",
        vec![("path", stdout.clone()), ("offset", "x".into())],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = get(
        "/files/read",
        vec![("path", format!("{}/nope", sb.display()))],
    )
    .await;
    assert_eq!(status, 404);

    let (status, stats) = get("/monitor/statistics", vec![]).await;
    assert_eq!(status, 200);
    let s = stats
        .as_array()
        .and_then(|a| a.iter().find(|s| s["task_id"] == "files"))
        .expect("files statistics");
    assert_eq!(s["statistics"]["mem_limit_bytes"], 40u64 << 20);
    assert!(s["statistics"]["mem_rss_bytes"].as_u64().is_some());

    agent.handle.kill_task(&fw.id, "files", None).expect("kill");
    wait_for(&mut agent, "files", TaskState::TaskKilled).await;
    server.abort();
}

#[tokio::test]
async fn run_serves_http_until_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), "native");
    cfg.port = free_port();
    cfg.bind = "127.0.0.1".parse().expect("ip");
    let port = cfg.port;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(agora_agent::run(cfg, async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{port}/health");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(r) = client.get(&url).send().await {
            assert_eq!(r.status().as_u16(), 200);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent never served {url}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = tx.send(());
    let res = tokio::time::timeout(WAIT, agent)
        .await
        .expect("run returns after shutdown")
        .expect("join");
    assert!(res.is_ok(), "{res:?}");
    assert!(dir.path().join("meta/agent_id").exists());
}
