//! Every port, same rules: the gRPC services of a master ask for what its HTTP routes ask for
//! (API token, framework credentials), stream ids cannot be guessed, agents guard their files with
//! the cluster's API token, unknown paths say so, and idle or slow connections are closed.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora_proto::v1::{self, operator_client::OperatorClient, scheduler_client::SchedulerClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{agent_args, eventually, free_port, Master, Process, TestFramework};

fn token_file(dir: &std::path::Path, token: &str) -> String {
    let path = dir.join("api-token");
    std::fs::write(&path, format!("{token}\n")).expect("write the token");
    path.display().to_string()
}

fn with_auth<T>(message: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Some(a) = authorization {
        req.metadata_mut()
            .insert("authorization", a.parse().expect("ascii"));
    }
    req
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_grpc_requires_the_api_token_and_unknown_paths_get_a_json_404() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = token_file(dir.path(), "doors-token");
    let master = Master::start(dir.path(), &["--api-token-file", &file]).await;
    let mut op = OperatorClient::connect(master.url())
        .await
        .expect("connect");

    let err = op
        .get_state(with_auth(v1::GetStateRequest {}, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert!(err.message().contains("missing bearer token"), "{err}");
    let err = op
        .get_state(with_auth(v1::GetStateRequest {}, Some("Bearer guess")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    op.get_state(with_auth(
        v1::GetStateRequest {},
        Some("Bearer doors-token"),
    ))
    .await
    .expect("GetState with the token");
    let err = op
        .drain_agent(with_auth(
            v1::DrainAgentRequest {
                agent_id: "any".into(),
                ..Default::default()
            },
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    let err = op
        .update_weights(with_auth(v1::UpdateWeightsRequest::default(), None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");

    // A mistyped path: 404 with a reason, with or without the token.
    for token in [None, Some("doors-token")] {
        let mut req = reqwest::Client::new().get(format!("{}/stat", master.url()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("GET /stat");
        assert_eq!(resp.status(), 404);
        let body: serde_json::Value = resp.json().await.expect("JSON");
        assert_eq!(body["message"], "no such path: /stat");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduler_calls_need_credentials_and_stream_ids_cannot_be_guessed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let creds = dir.path().join("credentials.json");
    std::fs::write(
        &creds,
        r#"{"credentials":[{"principal":"services","secret":"s3cret"},{"principal":"batch","secret":"b4tch"}]}"#,
    )
    .expect("write");
    let master = Master::start(dir.path(), &["--credentials", &creds.display().to_string()]).await;
    // base64("services:s3cret"), base64("services:wrong"), base64("batch:b4tch")
    let good = "Basic c2VydmljZXM6czNjcmV0";
    let wrong = "Basic c2VydmljZXM6d3Jvbmc=";
    let other = "Basic YmF0Y2g6YjR0Y2g=";

    let mut client = SchedulerClient::connect(master.url())
        .await
        .expect("connect");
    let mut stream = client
        .subscribe(with_auth(
            v1::SubscribeRequest {
                framework_info: Some(TestFramework::info("doors", "*", 60.0)),
                suppressed_roles: vec![],
            },
            Some(good),
        ))
        .await
        .expect("subscribe")
        .into_inner();
    let first = stream.message().await.expect("event").expect("an event");
    let Some(v1::event::Event::Subscribed(s)) = first.event else {
        panic!("first event was {first:?}");
    };
    let random = s.stream_id.rsplit('-').next().unwrap_or_default();
    assert!(
        random.len() >= 32 && random.chars().all(|c| c.is_ascii_hexdigit()),
        "stream id {} has no 128-bit random part",
        s.stream_id
    );
    let header = v1::CallHeader {
        framework_id: s.framework_id.clone(),
        stream_id: s.stream_id.clone(),
    };
    let revive = |header: v1::CallHeader, auth: Option<&'static str>| {
        let mut client = client.clone();
        async move {
            client
                .revive(with_auth(
                    v1::ReviveRequest {
                        header: Some(header),
                        roles: vec![],
                    },
                    auth,
                ))
                .await
                .map(|_| ())
        }
    };
    // The right stream id is not enough without the framework's credentials.
    for auth in [None, Some(wrong)] {
        let err = revive(header.clone(), auth).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{auth:?}: {err}");
    }
    let err = revive(header.clone(), Some(other)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    revive(header.clone(), Some(good))
        .await
        .expect("revive with the credentials");
    // The old, counted form of stream id is refused.
    let master_id = s.stream_id.split("-stream-").next().unwrap_or_default();
    let guessed = v1::CallHeader {
        framework_id: s.framework_id.clone(),
        stream_id: format!("{master_id}-stream-1"),
    };
    let err = revive(guessed, Some(good)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    let err = client
        .kill(with_auth(
            v1::KillRequest {
                header: Some(header.clone()),
                task_id: "t".into(),
                ..Default::default()
            },
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_guard_their_files_with_the_api_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = token_file(dir.path(), "doors-token");
    let master = Master::start(dir.path(), &["--api-token-file", &file]).await;
    let port = free_port();
    let mut args = agent_args(
        dir.path(),
        "guarded",
        &master.address(),
        port,
        "cpus:1;mem:256",
        "native",
    );
    args.extend(["--api-token-file".to_string(), file.clone()]);
    let _agent = Process::spawn("guarded", &args, dir.path());
    let base = format!("http://127.0.0.1:{port}");
    eventually(
        "the agent to answer /health without a token",
        Duration::from_secs(20),
        || async {
            let r = reqwest::get(format!("{base}/health")).await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    let client = reqwest::Client::new();
    for path in ["/files/browse?path=", "/monitor/statistics"] {
        let r = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 401, "{path}");
        let body: serde_json::Value = r.json().await.expect("JSON");
        assert_eq!(body["error"], "missing_token", "{path}: {body}");
        let r = client
            .get(format!("{base}{path}"))
            .bearer_auth("guess")
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 401, "{path}");
        let r = client
            .get(format!("{base}{path}"))
            .bearer_auth("doors-token")
            .send()
            .await
            .expect("GET");
        // Past the token check (an empty path is then a 400 of the files API itself).
        assert_ne!(r.status(), 401, "{path}");
    }
    // The web UI's sandbox links carry the token as a query parameter.
    let r = client
        .get(format!("{base}/files/browse?path=&token=doors-token"))
        .send()
        .await
        .expect("GET");
    assert_ne!(r.status(), 401);
    let r = client
        .get(format!("{base}/monitor/statistics?token=doors-token"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!("{base}/files/browse?path=&token=guess"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 401);
    let ui = reqwest::get(master.url())
        .await
        .expect("GET /")
        .text()
        .await
        .expect("page");
    assert!(ui.contains("linkToken"), "the UI passes the token on links");
}

/// A master started with a short header-read timeout (the test-only environment variable).
struct ImpatientMaster {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Drop for ImpatientMaster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- impatient master log ----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

const HEADER_TIMEOUT: Duration = Duration::from_millis(500);

async fn impatient_master(dir: &std::path::Path) -> ImpatientMaster {
    let port = free_port();
    let log = dir.join("impatient-master.log");
    let out = std::fs::File::create(&log).expect("log");
    let err = out.try_clone().expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_agora"))
        .args([
            "master",
            "--insecure",
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .arg("--work-dir")
        .arg(dir.join("master"))
        .env("RUST_LOG", "info")
        .env(
            agora_net::tls::HEADER_TIMEOUT_ENV,
            HEADER_TIMEOUT.as_millis().to_string(),
        )
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("agora starts");
    let m = ImpatientMaster { child, port, log };
    eventually(
        "the master to answer /health",
        Duration::from_secs(20),
        || async {
            let r = reqwest::get(format!("http://127.0.0.1:{port}/health"))
                .await
                .ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await;
    m
}

/// Reads until the server closes the connection; how long that took.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Err(_) => panic!("the connection is still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            // A 408 or similar before closing is fine.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_slow_connections_are_closed_but_streams_are_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = impatient_master(dir.path()).await;
    let address = format!("127.0.0.1:{}", master.port);

    // A gRPC stream opened now must outlive the header timeout.
    let mut fw =
        TestFramework::subscribe(&address, TestFramework::info("patient", "*", 60.0)).await;

    // Sends nothing at all.
    let mut idle = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let took = closed_within(&mut idle, Duration::from_secs(5)).await;
    assert!(took >= HEADER_TIMEOUT / 2, "closed too early: {took:?}");

    // Slowloris: a header line trickled byte by byte, never finished.
    let mut slow = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let (mut reader, mut writer) = slow.split();
    let trickle = async {
        for b in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if writer.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::future::pending::<()>().await;
    };
    let closed = async {
        let mut buf = [0u8; 256];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::select! {
        () = closed => {}
        () = trickle => {}
        () = tokio::time::sleep(Duration::from_secs(5)) => panic!("the slowloris connection is still open"),
    }

    // A prompt request still works, and the gRPC stream is still open.
    let r = reqwest::get(format!("http://{address}/health"))
        .await
        .expect("GET /health");
    assert_eq!(r.status(), 200);
    assert_eq!(*fw.closed.borrow(), None, "the subscription was closed");
    fw.client
        .revive(v1::ReviveRequest {
            header: Some(fw.header.clone()),
            roles: vec![],
        })
        .await
        .expect("a call on the framework's connection after the timeout");
    assert_eq!(*fw.closed.borrow(), None, "the subscription was closed");
    let _ = fw.events.try_recv();
}
