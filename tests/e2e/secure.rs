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
use crate::harness::{agent_args, eventually, free_port, run_python_script, Process};

/// Lifetime of the agents' certificates: renewed every 4 s.
const LIFETIME_SECS: u64 = 6;

fn master(dir: &Path, zk: &str, port: u16) -> Process {
    master_lived(dir, zk, port, LIFETIME_SECS)
}

/// A master of `zk` whose issued certificates last `lifetime` seconds.
fn master_lived(dir: &Path, zk: &str, port: u16, lifetime: u64) -> Process {
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
        &lifetime.to_string(),
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
    master_token(&["--zk".as_ref(), zk.as_ref()], framework)
}

/// `agora master token STORE [--framework]`, STORE being `--zk URL` or `--work-dir DIR`.
fn master_token(store: &[&std::ffi::OsStr], framework: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agora"));
    cmd.args(["master", "token"]).args(store);
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
    let mut builder = reqwest::Client::builder();
    for ca in reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).expect("CA") {
        builder = builder.add_root_certificate(ca);
    }
    builder
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
    master_token(&["--work-dir".as_ref(), master_dir.as_os_str()], framework)
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

/// Lifetime of the certificates in the CA rotation test: long enough that a renewal within
/// seconds of `ca rotate` is the rotation's doing (they check the CA every 6 s), short as a test.
const ROTATE_LIFETIME_SECS: u64 = 60;

/// `agora master ca rotate` with the cluster's ZooKeeper URL (`--finish` with `finish`).
fn ca_rotate(zk: &str, finish: bool) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agora"));
    cmd.args(["master", "ca", "rotate", "--zk", zk]);
    if finish {
        cmd.arg("--finish");
    }
    cmd.output().expect("agora master ca rotate runs")
}

/// The certificates of a PEM file (DER).
fn ders(pem: &str) -> Vec<Vec<u8>> {
    agora_net::pki::rotation::check_roots("pem", pem).unwrap_or_default()
}

/// The first certificate of a PEM file (DER), empty when there is none.
fn leaf(path: &Path) -> Vec<u8> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|p| agora_net::pki::first_der("cert", &p).ok())
        .unwrap_or_default()
}

/// Whether a fresh client trusting only `ca_pem` gets `/health` from `address` (a new handshake).
async fn healthy_with(ca_pem: &str, address: &str) -> bool {
    https(ca_pem)
        .get(format!("https://{address}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// The CA rotation without an outage: two masters of one ZooKeeper, two agents running a task
/// of the services framework (joined with the framework token). `agora master ca rotate`: both
/// masters serve a certificate of the new CA whose chain clients trusting only the old CA still
/// verify (rustls here, OpenSSL through the community Marathon client); the agents keep their
/// sessions and the task, and renew from the new CA within seconds (not at two thirds of their
/// life); services too; new tokens pin the new CA; agents join with the new token and, until
/// `--finish`, with the old one. After `--finish` the old CA is refused by the masters, an old
/// token is refused with the reason, and the agents still run.
#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_ca_rotates_without_an_outage() {
    use agora_net::pki::rotation::issued_by;
    let dir = tempfile::tempdir().expect("tempdir");
    let zk = zk_url(&zk_servers(), "secure-rotate");
    let ports = [free_port(), free_port()];
    let mut masters: Vec<Option<Process>> = ports
        .iter()
        .map(|p| Some(master_lived(dir.path(), &zk, *p, ROTATE_LIFETIME_SECS)))
        .collect();
    let ca_file = |p: u16| dir.path().join(format!("master-{p}/ca.pem"));
    let old_ca = eventually("both masters' ca.pem", Duration::from_secs(30), || {
        let read: Option<Vec<String>> = ports
            .iter()
            .map(|p| std::fs::read_to_string(ca_file(*p)).ok())
            .collect();
        async move { read.filter(|r| r[0] == r[1]).map(|r| r[0].clone()) }
    })
    .await;
    let old_der = agora_net::pki::first_der("ca", &old_ca).expect("the CA");
    let old_digest = agora_net::pki::digest_hex(&old_der);
    let client = https(&old_ca);
    eventually("a leader", Duration::from_secs(30), || {
        let (c, p) = (client.clone(), ports);
        async move { leader_state(&c, &p).await }
    })
    .await;
    let old_token = token(&zk, false);
    let framework_token = token(&zk, true);

    let names = ["agent-a", "agent-b"];
    let agent_ports = [free_port(), free_port()];
    let agents: Vec<Process> = names
        .iter()
        .zip(agent_ports)
        .map(|(n, port)| agent(dir.path(), n, &zk, port, &old_token))
        .collect();
    let services_port = free_port();
    let services_process = framework(
        "services",
        dir.path(),
        &zk,
        services_port,
        &["--join-token", &framework_token],
    );
    let services = format!("https://127.0.0.1:{services_port}");
    let app = serde_json::json!({
        "id": "/rotate/sleeper", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 1
    });
    eventually("the app deployed", Duration::from_secs(60), || {
        let (c, s, a) = (client.clone(), services.clone(), app.clone());
        async move {
            let r = c.post(format!("{s}/v2/apps")).json(&a).send().await.ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await;
    let running_task = || {
        let (c, s) = (https(&old_ca), services.clone());
        async move {
            let v: serde_json::Value = c
                .get(format!("{s}/v2/apps/rotate/sleeper?embed=apps.tasks"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (v["app"]["tasksRunning"] == 1)
                .then(|| v["app"]["tasks"][0]["id"].as_str().map(str::to_string))
                .flatten()
        }
    };
    let task_id = eventually("the task running", Duration::from_secs(60), running_task).await;
    eventually("both agents active", Duration::from_secs(30), || {
        let (c, p) = (client.clone(), ports);
        async move {
            let s = leader_state(&c, &p).await?;
            (active_agents(&s) == names).then_some(())
        }
    })
    .await;

    // Rotate.
    let out = ca_rotate(&zk, false);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_token = token(&zk, false);
    let new_digest = agora_net::pki::JoinToken::parse(&new_token)
        .expect("token")
        .ca_digest;
    assert_ne!(new_digest, old_digest, "new tokens pin the new CA");
    assert!(stdout.contains(&format!("new CA {new_digest}")), "{stdout}");
    assert!(stdout.contains(&format!("old CA {old_digest}")), "{stdout}");

    // Both masters pick it up: ca.pem holds the new CA then the old; they serve a certificate of
    // the new CA that a client trusting only the old one still verifies.
    let bundle = eventually(
        "both masters on the new CA",
        Duration::from_secs(40),
        || {
            let read: Vec<String> = ports
                .iter()
                .map(|p| std::fs::read_to_string(ca_file(*p)).unwrap_or_default())
                .collect();
            let d = ders(&read[0]);
            let ok = read[0] == read[1]
                && d.len() == 2
                && agora_net::pki::digest_hex(&d[0]) == new_digest
                && d[1] == old_der;
            async move { ok.then(|| read[0].clone()) }
        },
    )
    .await;
    let new_ca = agora_net::pki::pem_of(&ders(&bundle)[0]);
    let new_der = ders(&bundle)[0].clone();
    for p in ports {
        let address = format!("127.0.0.1:{p}");
        eventually(
            "the master's certificate of the new CA",
            Duration::from_secs(40),
            || {
                let (n, a) = (new_ca.clone(), address.clone());
                async move { healthy_with(&n, &a).await.then_some(()) }
            },
        )
        .await;
        assert!(
            healthy_with(&old_ca, &address).await,
            "{address}: a client trusting only the old CA verifies the cross-signed chain"
        );
    }

    // The agents renew from the new CA promptly, on their sessions; the task keeps running.
    let agent_cert = |n: &str| dir.path().join(format!("{n}/tls/agent.pem"));
    eventually(
        "both agents' certificates of the new CA",
        Duration::from_secs(40),
        || {
            let ok = names
                .iter()
                .all(|n| issued_by(&leaf(&agent_cert(n)), &new_der));
            async move { ok.then_some(()) }
        },
    )
    .await;
    for (p, n) in agents.iter().zip(names) {
        let log = p.log_text();
        assert!(
            log.contains("no longer the cluster's CA (rotated): renewing it now"),
            "{n} renewed because of the rotation:\n{log}"
        );
        assert_eq!(
            log.matches("registered with the master").count(),
            1,
            "{n} kept its one session:\n{log}"
        );
        let roots = std::fs::read_to_string(dir.path().join(format!("{n}/tls/ca.pem")))
            .expect("the agent's ca.pem");
        assert_eq!(ders(&roots), [new_der.clone(), old_der.clone()], "{n}");
    }
    let s = leader_state(&client, &ports).await.expect("the leader");
    assert_eq!(active_agents(&s), names);
    assert_eq!(
        running_task().await,
        Some(task_id.clone()),
        "the same task runs"
    );
    // The agents' own ports serve the renewed certificate: verified with the new CA alone, and
    // through the cross-signed CA with the old one.
    for port in agent_ports {
        let address = format!("127.0.0.1:{port}");
        assert!(healthy_with(&new_ca, &address).await, "{address}");
        assert!(healthy_with(&old_ca, &address).await, "{address}");
    }
    let fw_cert = dir
        .path()
        .join(format!("services-{services_port}/tls/framework.pem"));
    eventually(
        "the services framework's certificate of the new CA",
        Duration::from_secs(40),
        || {
            let ok = issued_by(&leaf(&fw_cert), &new_der);
            async move { ok.then_some(()) }
        },
    )
    .await;
    let log = services_process.log_text();
    assert!(
        log.contains("no longer the cluster's CA (rotated): renewing it now"),
        "services renewed because of the rotation:\n{log}"
    );

    // The community Marathon client (OpenSSL) with only the old CA file: the services API and
    // the masters answer through the cross-signed chain; and with the services' re-fetched CAs.
    let old_file = dir.path().join("old-ca.pem");
    std::fs::write(&old_file, &old_ca).expect("write");
    let refetched = dir
        .path()
        .join(format!("services-{services_port}/tls/ca.pem"));
    assert_eq!(
        ders(&std::fs::read_to_string(&refetched).expect("services' ca.pem")),
        [new_der.clone(), old_der.clone()]
    );
    for ca in [&old_file, &refetched] {
        let mut args = vec![
            services.clone(),
            ca.display().to_string(),
            "/rotate/sleeper".to_string(),
        ];
        args.extend(ports.iter().map(|p| format!("https://127.0.0.1:{p}")));
        let out = run_python_script("marathon_tls.py", args, Duration::from_secs(60)).await;
        assert!(
            out.contains(&format!("tasks_running=1 task_ids={task_id}")),
            "{out}"
        );
        assert_eq!(out.matches(" 200").count(), 2, "{out}");
    }

    // New joins: with the new token, and until --finish with the old one.
    let joiners: Vec<Process> = [("agent-new", &new_token), ("agent-old-token", &old_token)]
        .iter()
        .map(|(n, t)| agent(dir.path(), n, &zk, free_port(), t))
        .collect();
    let all = ["agent-a", "agent-b", "agent-new", "agent-old-token"];
    eventually("four agents active", Duration::from_secs(40), || {
        let (c, p) = (client.clone(), ports);
        async move {
            let s = leader_state(&c, &p).await?;
            (active_agents(&s) == all).then_some(())
        }
    })
    .await;
    for n in ["agent-new", "agent-old-token"] {
        assert!(issued_by(&leaf(&agent_cert(n)), &new_der), "{n}");
    }

    // One rotation at a time.
    let again = ca_rotate(&zk, false);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("in progress") && err.contains("--finish"),
        "{err}"
    );

    // Finish: the old CA is dropped by both masters.
    let out = ca_rotate(&zk, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in ports {
        let address = format!("127.0.0.1:{p}");
        eventually("the old CA dropped", Duration::from_secs(40), || {
            let (o, a, f) = (old_ca.clone(), address.clone(), ca_file(p));
            let new_der = new_der.clone();
            async move {
                let only_new = ders(&std::fs::read_to_string(f).unwrap_or_default()) == [new_der];
                (only_new && !healthy_with(&o, &a).await).then_some(())
            }
        })
        .await;
        assert!(healthy_with(&new_ca, &address).await, "{address}");
    }
    // The agents learn it (their ca.pem is the new CA alone) and keep running.
    eventually(
        "the agents' ca.pem the new CA alone",
        Duration::from_secs(40),
        || {
            let ok = all.iter().all(|n| {
                ders(
                    &std::fs::read_to_string(dir.path().join(format!("{n}/tls/ca.pem")))
                        .unwrap_or_default(),
                ) == [new_der.clone()]
            });
            async move { ok.then_some(()) }
        },
    )
    .await;
    let client = https(&new_ca);
    let s = leader_state(&client, &ports).await.expect("the leader");
    assert_eq!(active_agents(&s), all);
    for (p, n) in agents.iter().zip(names) {
        let log = p.log_text();
        assert_eq!(
            log.matches("registered with the master").count(),
            1,
            "{n} kept its one session:\n{log}"
        );
    }
    let r = client
        .get(format!("{services}/v2/apps/rotate/sleeper"))
        .send()
        .await
        .expect("services with the new CA");
    assert!(r.status().is_success());
    // New connections present the renewed certificates: the leader gone, every agent registers
    // with the other master, which trusts the new CA only.
    let leading = leader_state(&client, &ports).await.expect("the leader");
    let leader = leading["leader"].as_str().expect("leader").to_string();
    let i = ports
        .iter()
        .position(|p| leader.ends_with(&format!(":{p}")))
        .expect("one of ours");
    if let Some(mut m) = masters[i].take() {
        m.kill();
    }
    let other = [ports[1 - i]];
    eventually(
        "the four agents active on the other master",
        Duration::from_secs(60),
        || {
            let c = client.clone();
            async move {
                let s = leader_state(&c, &other).await?;
                (active_agents(&s) == all).then_some(())
            }
        },
    )
    .await;
    // A token pinning the old CA is refused now, saying why.
    let mut late = agent(dir.path(), "agent-late", &zk, free_port(), &old_token);
    let log = exits_with(&mut late, Duration::from_secs(30)).await;
    assert!(
        log.contains(&format!(
            "the master's CA digest {new_digest} does not match"
        )) && log.contains("rotated"),
        "{log}"
    );
    drop(joiners);
}
