//! Secure by default (real ZooKeeper, `AGORA_TEST_ZK`): three masters and two agents started with
//! no TLS flag at all. The first master makes the cluster CA, the others use it; every port speaks
//! TLS only and serves a certificate of that CA; agents join with `agora master token`'s token, a
//! token whose CA digest or secret is wrong is refused with the reason, and with certificates of a
//! few seconds agents renew on their session and keep it — and reach a new leader after their
//! first certificate has long expired.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::ha::{zk_servers, zk_url};
use crate::harness::{agent_args, eventually, free_port, Process};

/// Lifetime of the agents' certificates: renewed every 4 s.
const LIFETIME_SECS: u64 = 6;

fn master(dir: &Path, zk: &str, port: u16) -> Process {
    let args: Vec<String> = [
        "master",
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--work-dir",
        &dir.join(format!("master-{port}")).display().to_string(),
        "--allocation-interval",
        "0.1",
        "--zk",
        zk,
        "--zk-session-timeout",
        "4",
        "--agent-reregister-timeout",
        "10",
        "--test-certificate-lifetime",
        &LIFETIME_SECS.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Process::spawn(&format!("master-{port}"), &args, dir)
}

pub fn agent(dir: &Path, name: &str, zk: &str, port: u16, token: &str) -> Process {
    let mut args = agent_args(dir, name, zk, port, "cpus:1;mem:256", "native");
    args.retain(|a| a != "--insecure");
    args.extend(["--join-token".to_string(), token.to_string()]);
    Process::spawn(name, &args, dir)
}

fn token(zk: &str, framework: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agora"));
    cmd.args(["master", "token", "--zk", zk]);
    if framework {
        cmd.arg("--framework");
    }
    let out = cmd.output().expect("agora master token runs");
    assert!(
        out.status.success(),
        "agora master token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn https(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA"))
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

async fn leader_state(client: &reqwest::Client, ports: &[u16]) -> Option<serde_json::Value> {
    for p in ports {
        let Ok(r) = client
            .get(format!("https://127.0.0.1:{p}/state"))
            .send()
            .await
        else {
            continue;
        };
        if let Ok(s) = r.json::<serde_json::Value>().await {
            if s["leader"].as_str() == Some(&format!("127.0.0.1:{p}")) {
                return Some(s);
            }
        }
    }
    None
}

fn active_agents(state: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = state["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["active"] == true)
        .filter_map(|a| a["hostname"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

async fn exits_with(p: &mut Process, within: Duration) -> String {
    eventually("the refused agent to exit", within, || {
        let status = p.try_wait();
        async move { status }
    })
    .await;
    let status = p.try_wait().expect("exited");
    assert!(!status.success(), "a refused agent exits non-zero");
    p.log_text()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_started_without_tls_flags_is_tls_only_and_agents_join_with_pinned_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zk = zk_url(&zk_servers(), "secure");
    let ports = [free_port(), free_port(), free_port()];
    let mut masters: Vec<Option<Process>> = ports
        .iter()
        .map(|p| Some(master(dir.path(), &zk, *p)))
        .collect();

    // One CA for the whole cluster, written by every master to its work dir.
    let ca_files: Vec<_> = ports
        .iter()
        .map(|p| dir.path().join(format!("master-{p}/ca.pem")))
        .collect();
    let cas: Vec<String> = eventually("every master's ca.pem", Duration::from_secs(30), || {
        let read: Option<Vec<String>> = ca_files
            .iter()
            .map(|f| std::fs::read_to_string(f).ok())
            .collect();
        async move { read }
    })
    .await;
    assert!(cas.iter().all(|c| c == &cas[0]), "the masters use one CA");
    let ca_pem = cas[0].clone();
    let digest = agora_net::pki::digest_hex(
        &agora_net::pki::first_der("ca", &ca_pem).expect("a certificate"),
    );
    let client = https(&ca_pem);
    eventually("a leader", Duration::from_secs(30), || {
        let (c, p) = (client.clone(), ports);
        async move { leader_state(&c, &p).await }
    })
    .await;

    // The tokens pin that CA; the agent and framework tokens differ in their secrets only.
    let agent_token = token(&zk, false);
    let framework_token = token(&zk, true);
    let parsed = agora_net::pki::JoinToken::parse(&agent_token).expect("AGORA-1 token");
    assert_eq!(parsed.ca_digest, digest, "{agent_token}");
    let framework = agora_net::pki::JoinToken::parse(&framework_token).expect("token");
    assert_eq!(framework.ca_digest, digest);
    assert_ne!(framework.secret, parsed.secret);

    // A token of another cluster (another digest) is refused before anything is sent.
    let other = agora_net::pki::JoinToken {
        ca_digest: "0".repeat(64),
        secret: parsed.secret.clone(),
    };
    let mut foreign = agent(dir.path(), "foreign", &zk, free_port(), &other.to_string());
    let log = exits_with(&mut foreign, Duration::from_secs(30)).await;
    assert!(
        log.contains(&format!(
            "the master's CA digest {digest} does not match the join token's {}",
            "0".repeat(64)
        )),
        "{log}"
    );
    // A wrong secret is refused by the master.
    let guessed = agora_net::pki::JoinToken {
        ca_digest: digest.clone(),
        secret: "f".repeat(64),
    };
    let mut guesser = agent(
        dir.path(),
        "guesser",
        &zk,
        free_port(),
        &guessed.to_string(),
    );
    let log = exits_with(&mut guesser, Duration::from_secs(30)).await;
    assert!(log.contains("secret is not this cluster's"), "{log}");
    assert!(!dir.path().join("guesser/tls/agent.pem").exists());

    // Two agents join with the token.
    let agent_ports = [free_port(), free_port()];
    let agents: Vec<Process> = ["agent-a", "agent-b"]
        .iter()
        .zip(agent_ports)
        .map(|(name, port)| agent(dir.path(), name, &zk, port, &agent_token))
        .collect();
    let leading = eventually("both agents active", Duration::from_secs(40), || {
        let (c, p) = (client.clone(), ports);
        async move {
            let s = leader_state(&c, &p).await?;
            (active_agents(&s) == ["agent-a", "agent-b"]).then_some(s)
        }
    })
    .await;
    for name in ["agent-a", "agent-b"] {
        let key = dir.path().join(format!("{name}/tls/agent-key.pem"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key)
                .expect("the agent's key")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    }

    // Every port speaks TLS only, with certificates of the cluster CA.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    for port in ports.iter().chain(agent_ports.iter()) {
        let address = format!("127.0.0.1:{port}");
        assert!(
            agora_net::tls::speaks_tls(&address, Duration::from_secs(3)).await,
            "{address} answers a plain HTTP/2 client with TLS"
        );
        let clear = plain.get(format!("http://{address}/health")).send().await;
        assert!(
            clear.as_ref().map_or(true, |r| !r.status().is_success()),
            "{address} served plain HTTP: {clear:?}"
        );
        let r = client
            .get(format!("https://{address}/health"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("https://{address} with the cluster CA: {e:?}"));
        assert!(r.status().is_success(), "{address}: {}", r.status());
    }
    // A client that does not trust the cluster CA is refused by the handshake.
    let stranger = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    assert!(stranger
        .get(format!("https://127.0.0.1:{}/health", ports[0]))
        .send()
        .await
        .is_err());

    // Certificates of 6 s: the agents renew every 4 s on their session and keep it.
    let cert = |name: &str| {
        std::fs::read_to_string(dir.path().join(format!("{name}/tls/agent.pem")))
            .unwrap_or_default()
    };
    let first = cert("agent-a");
    tokio::time::sleep(Duration::from_secs(3 * LIFETIME_SECS)).await;
    for (agent, name) in agents.iter().zip(["agent-a", "agent-b"]) {
        let log = agent.log_text();
        let renewals = log.matches("renewed the agent certificate").count();
        assert!(renewals >= 2, "{name} renewed {renewals} times:\n{log}");
        let sessions = log.matches("registered with the master").count();
        assert_eq!(sessions, 1, "{name} kept its one session:\n{log}");
    }
    assert_ne!(
        cert("agent-a"),
        first,
        "the stored certificate is the renewed one"
    );
    let now = leader_state(&client, &ports).await.expect("the leader");
    assert_eq!(active_agents(&now), ["agent-a", "agent-b"]);

    // The first certificate has long expired: a new connection (to a new leader) needs a renewed
    // one, or — for an agent whose certificate ended during the failover — joining again with the
    // token, which the agent does by itself.
    let old = leading["leader"].as_str().expect("leader").to_string();
    let old_port: u16 = old
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let i = ports
        .iter()
        .position(|p| *p == old_port)
        .expect("one of ours");
    if let Some(mut m) = masters[i].take() {
        m.kill();
    }
    let others: Vec<u16> = ports.iter().copied().filter(|p| *p != old_port).collect();
    eventually(
        "both agents active on the new leader",
        Duration::from_secs(60),
        || {
            let (c, p) = (client.clone(), others.clone());
            async move {
                let s = leader_state(&c, &p).await?;
                (active_agents(&s) == ["agent-a", "agent-b"]).then_some(())
            }
        },
    )
    .await;
    drop(agents);
}

/// With `--zk-auth-file` the cluster CA's znode has a digest ACL: `agora master token` reads it
/// with the same credential, and is refused without it.
#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_ca_znode_is_readable_only_with_the_masters_zk_credential() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zk = zk_url(&zk_servers(), "secure-acl");
    let auth = dir.path().join("zk-auth");
    std::fs::write(&auth, "agora:test-password\n").expect("write");
    let port = free_port();
    let args: Vec<String> = [
        "master",
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--work-dir",
        &dir.path().join("master").display().to_string(),
        "--zk",
        &zk,
        "--zk-auth-file",
        &auth.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _master = Process::spawn("master-acl", &args, dir.path());
    let ca_file = dir.path().join("master/ca.pem");
    let ca_pem = eventually("the master's ca.pem", Duration::from_secs(30), || {
        let read = std::fs::read_to_string(&ca_file).ok();
        async move { read }
    })
    .await;
    let digest =
        agora_net::pki::digest_hex(&agora_net::pki::first_der("ca", &ca_pem).expect("pem"));
    let run = |with_auth: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agora"));
        cmd.args(["master", "token", "--zk", &zk]);
        if with_auth {
            cmd.arg("--zk-auth-file").arg(&auth);
        }
        cmd.output().expect("agora master token runs")
    };
    let ok = run(true);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let token = String::from_utf8_lossy(&ok.stdout).trim().to_string();
    assert_eq!(
        agora_net::pki::JoinToken::parse(&token)
            .expect("token")
            .ca_digest,
        digest
    );
    let refused = run(false);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("not authorized"), "{err}");
}

/// `agora services` / `agora batch` (or any framework process) on `127.0.0.1:port`, standalone,
/// with `extra` flags (no --insecure).
pub fn framework(kind: &str, dir: &Path, master: &str, port: u16, extra: &[&str]) -> Process {
    let mut args: Vec<String> = [
        kind,
        "--master",
        master,
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--work-dir",
        &dir.join(format!("{kind}-{port}")).display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Process::spawn(&format!("{kind}-{port}"), &args, dir)
}

/// A master on 127.0.0.1:`port` with no TLS flag, its CA in `master_dir` (its work dir), issuing
/// certificates of `lifetime_secs`; returned once it answers over https, with its CA (PEM).
pub async fn standalone_master(
    dir: &Path,
    port: u16,
    master_dir: &Path,
    lifetime_secs: u64,
) -> (Process, String) {
    let args: Vec<String> = [
        "master",
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--work-dir",
        &master_dir.display().to_string(),
        "--allocation-interval",
        "0.1",
        "--test-certificate-lifetime",
        &lifetime_secs.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let master = Process::spawn("master", &args, dir);
    let ca_pem = eventually("the master's ca.pem", Duration::from_secs(30), || {
        let read = std::fs::read_to_string(master_dir.join("ca.pem")).ok();
        async move { read }
    })
    .await;
    let client = https(&ca_pem);
    let address = format!("127.0.0.1:{port}");
    eventually("the master over https", Duration::from_secs(30), || {
        let (c, a) = (client.clone(), address.clone());
        async move {
            let r = c.get(format!("https://{a}/health")).send().await.ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await;
    (master, ca_pem)
}

/// `agora master token --work-dir master_dir [--framework]`.
pub fn token_in(master_dir: &Path, framework: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agora"));
    cmd.args(["master", "token", "--work-dir"]).arg(master_dir);
    if framework {
        cmd.arg("--framework");
    }
    let out = cmd.output().expect("agora master token runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A master with no TLS flag (its CA in its work dir); services and batch started with the
/// framework token get certificates of that CA: the master sees them over mutual TLS, their APIs
/// answer over https only (verified against the cluster CA alone, by the address clients use),
/// and an app deploys on an agent that joined with the agent token. Without a token against
/// that master a framework exits non-zero saying what it needs; an agent token is refused.
#[tokio::test(flavor = "multi_thread")]
async fn frameworks_join_with_the_framework_token_and_serve_https_with_its_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let master_dir = dir.path().join("master");
    let (_master, ca_pem) = standalone_master(dir.path(), port, &master_dir, LIFETIME_SECS).await;
    let client = https(&ca_pem);
    let address = format!("127.0.0.1:{port}");
    let (agent_token, framework_token) =
        (token_in(&master_dir, false), token_in(&master_dir, true));

    // Without a token (nor TLS files) against this master: a non-zero exit that says what to do.
    let mut clear = framework("services", dir.path(), &address, free_port(), &[]);
    let log = exits_with(&mut clear, Duration::from_secs(30)).await;
    assert!(
        log.contains("speaks TLS") && log.contains("agora master token --framework"),
        "{log}"
    );
    // The agent token is not a framework's: the master refuses it.
    let mut wrong = framework(
        "services",
        dir.path(),
        &address,
        free_port(),
        &["--join-token", &agent_token],
    );
    let log = exits_with(&mut wrong, Duration::from_secs(30)).await;
    assert!(log.contains("--join-token"), "{log}");

    let _agent = agent(dir.path(), "agent-a", &address, free_port(), &agent_token);
    let token_file = dir.path().join("framework-token");
    std::fs::write(&token_file, format!("{framework_token}\n")).expect("write");
    let services_port = free_port();
    let services_process = framework(
        "services",
        dir.path(),
        &address,
        services_port,
        &["--join-token", &framework_token],
    );
    let batch_port = free_port();
    let batch_process = framework(
        "batch",
        dir.path(),
        &address,
        batch_port,
        &["--join-token-file", &token_file.display().to_string()],
    );
    let services = format!("https://127.0.0.1:{services_port}");
    let batch = format!("https://127.0.0.1:{batch_port}");
    for (what, url) in [
        ("services", format!("{services}/v2/info")),
        ("batch", format!("{batch}/v1/scheduler/jobs")),
    ] {
        eventually(
            &format!("{what}'s API over https"),
            Duration::from_secs(40),
            || {
                let (c, u) = (client.clone(), url.clone());
                async move {
                    let r = c.get(u).send().await.ok()?;
                    r.status().is_success().then_some(())
                }
            },
        )
        .await;
    }
    // Both registered with the master (over mutual TLS: their certificates are the CA's).
    eventually(
        "both frameworks at the master",
        Duration::from_secs(30),
        || {
            let (c, a) = (client.clone(), address.clone());
            async move {
                let s: serde_json::Value = c
                    .get(format!("https://{a}/state"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let mut names: Vec<String> = s["frameworks"]
                    .as_array()?
                    .iter()
                    .filter_map(|f| f["name"].as_str().map(str::to_string))
                    .collect();
                names.sort();
                (names == ["batch", "services"]).then_some(())
            }
        },
    )
    .await;
    // An SDK framework joins with the same token (and one with another cluster's is told so).
    let first_event = |token: agora_net::pki::JoinToken, name: &str| {
        let address = address.clone();
        let name = name.to_string();
        async move {
            let mut fw = agora_sdk::Framework::builder(&address, &name)
                .join_token(token)
                .connect()
                .expect("connect");
            let e = tokio::time::timeout(Duration::from_secs(20), fw.next_event())
                .await
                .expect("an event within 20 s");
            (fw, e)
        }
    };
    let parsed = agora_net::pki::JoinToken::parse(&framework_token).expect("token");
    let (sdk_fw, event) = first_event(parsed.clone(), "sdk-secure").await;
    assert!(
        matches!(event, Some(agora_sdk::Event::Subscribed { .. })),
        "{event:?}"
    );
    let foreign = agora_net::pki::JoinToken {
        ca_digest: "0".repeat(64),
        secret: parsed.secret.clone(),
    };
    let (_refused, event) = first_event(foreign, "sdk-foreign").await;
    match event {
        Some(agora_sdk::Event::Error(m)) => assert!(m.contains("does not match"), "{m}"),
        other => panic!("expected the driver to stop with the reason: {other:?}"),
    }
    drop(sdk_fw);

    for port in [services_port, batch_port] {
        let address = format!("127.0.0.1:{port}");
        let plain = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .expect("client");
        let r = plain.get(format!("http://{address}/ping")).send().await;
        assert!(
            r.as_ref().map_or(true, |r| !r.status().is_success()),
            "{address} served plain HTTP: {r:?}"
        );
        assert!(
            agora_net::tls::speaks_tls(&address, Duration::from_secs(3)).await,
            "{address}"
        );
        let dir = dir.path().join(if port == services_port {
            format!("services-{port}/tls")
        } else {
            format!("batch-{port}/tls")
        });
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join("framework-key.pem"))
                .expect("the framework's key")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let cert = std::fs::read_to_string(dir.join("framework.pem")).expect("cert");
        let der = agora_net::pki::first_der("cert", &cert).expect("pem");
        assert_eq!(
            agora_net::pki::role_of(&der),
            Some(agora_net::pki::Role::Framework)
        );
    }

    // An app deploys on the agent that joined with its token.
    let app = serde_json::json!({
        "id": "/secure/sleeper",
        "cmd": "sleep 600",
        "cpus": 0.1,
        "mem": 16,
        "instances": 1
    });
    let r = client
        .post(format!("{services}/v2/apps"))
        .json(&app)
        .send()
        .await
        .expect("POST /v2/apps over https");
    assert!(r.status().is_success(), "{}", r.status());
    eventually("the app's task running", Duration::from_secs(60), || {
        let (c, s) = (client.clone(), services.clone());
        async move {
            let v: serde_json::Value = c
                .get(format!("{s}/v2/apps/secure/sleeper"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (v["app"]["tasksRunning"] == 1).then_some(())
        }
    })
    .await;
    let log = services_process.log_text();
    assert!(
        log.contains("joined the cluster: framework certificate issued"),
        "{log}"
    );

    // Certificates of 6 s: both renew every 4 s while running; the stored certificate is the
    // renewed one, their APIs keep answering over https (new handshakes, the renewed
    // certificate) and they stay registered.
    let cert_of = |kind: &str, port: u16| {
        std::fs::read_to_string(dir.path().join(format!("{kind}-{port}/tls/framework.pem")))
            .unwrap_or_default()
    };
    let first = cert_of("services", services_port);
    tokio::time::sleep(Duration::from_secs(3 * LIFETIME_SECS)).await;
    for (p, what) in [(&services_process, "services"), (&batch_process, "batch")] {
        let log = p.log_text();
        let renewals = log.matches("renewed the framework certificate").count();
        assert!(renewals >= 2, "{what} renewed {renewals} times:\n{log}");
    }
    assert_ne!(cert_of("services", services_port), first);
    let fresh = https(&ca_pem);
    for url in [
        format!("{services}/v2/apps/secure/sleeper"),
        format!("{batch}/v1/scheduler/jobs"),
    ] {
        let r = fresh.get(&url).send().await.expect(&url);
        assert!(r.status().is_success(), "{url}: {}", r.status());
    }
    let s: serde_json::Value = client
        .get(format!("https://{address}/state"))
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    let active = s["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["connected"] == true)
        .count();
    assert_eq!(active, 2, "{s}");
}
