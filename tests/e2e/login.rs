//! `agora login` and `agora local` on the cluster CA. A master started with no TLS flag; `agora
//! login` with the framework token stores a client certificate and the CA in `AGORA_HOME`, after
//! which CLI commands given neither `--master` nor `--tls-ca` reach the master (and the services
//! framework, found through the master) over mutual TLS, renew the certificate past two thirds of
//! its life, and refuse an expired one; a token of another CA, a wrong secret and the agent token
//! are refused with the reason and store nothing. `agora local` without `--insecure` speaks TLS
//! only on every port, names its CA file in the banner, and logs the CLI in.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::harness::{eventually, free_port, local_ready, spawn_local_secure};
use crate::secure::{agent, framework, https, standalone_master, token_in};

/// Lifetime of the certificates the master issues: the CLI renews from 8 s on.
const LIFETIME_SECS: u64 = 12;

/// `agora ARGS` with `AGORA_HOME=home` and no master, CA or token from the environment.
fn cli(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(args)
        .env("AGORA_HOME", home)
        .env_remove("AGORA_MASTER")
        .env_remove("AGORA_TLS_CA")
        .env_remove("AGORA_SERVICES")
        .env_remove("AGORA_BATCH")
        .env_remove("AGORA_TOKEN")
        .output()
        .expect("the agora binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `agora ARGS --json` succeeding, its output parsed.
fn cli_json(home: &Path, args: &[&str]) -> Option<serde_json::Value> {
    let mut all = args.to_vec();
    all.push("--json");
    let out = cli(home, &all);
    if !out.status.success() {
        eprintln!("agora {args:?}: {}", text(&out));
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The `notAfter` of the certificate `agora login` stored, Unix seconds.
fn stored_not_after(home: &Path) -> i64 {
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("login.json")).expect("login.json"))
            .expect("JSON");
    let pem = doc["certificate_pem"].as_str().expect("certificate_pem");
    let der = agora_net::pki::first_der("cert", pem).expect("a certificate");
    agora_net::pki::not_after(&der).expect("notAfter")
}

/// The certificate in a PEM file (the same certificate may be encoded with other line ends).
fn der_of(file: &Path) -> Vec<u8> {
    let pem = std::fs::read_to_string(file).expect("a PEM file");
    agora_net::pki::first_der("cert", &pem).expect("a certificate")
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

async fn sleep_until(unix: i64) {
    let wait = unix - unix_now();
    if wait > 0 {
        tokio::time::sleep(Duration::from_secs(wait as u64)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agora_login_gives_the_cli_a_certificate_every_command_uses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("agora-home");
    let port = free_port();
    let master_dir = dir.path().join("master");
    let address = format!("127.0.0.1:{port}");
    let (master_process, _) = standalone_master(dir.path(), port, &master_dir, LIFETIME_SECS).await;
    let (agent_token, framework_token) =
        (token_in(&master_dir, false), token_in(&master_dir, true));
    let parsed = agora_net::pki::JoinToken::parse(&framework_token).expect("token");

    // Refused, saying why, and nothing stored: another cluster's CA digest, a wrong secret, the
    // agents' token.
    let other_ca = agora_net::pki::JoinToken {
        ca_digest: "0".repeat(64),
        secret: parsed.secret.clone(),
    };
    let wrong_secret = agora_net::pki::JoinToken {
        ca_digest: parsed.ca_digest.clone(),
        secret: "f".repeat(64),
    };
    for (token, says) in [
        (
            other_ca.to_string(),
            format!(
                "the master's CA digest {} does not match the join token's {}",
                parsed.ca_digest,
                "0".repeat(64)
            ),
        ),
        (
            wrong_secret.to_string(),
            "the join token's secret is not this cluster's".to_string(),
        ),
        (
            agent_token.clone(),
            "this is not the framework token".to_string(),
        ),
    ] {
        let out = cli(&home, &["login", "--master", &address, "--token", &token]);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains(&says),
            "expected '{says}': {}",
            text(&out)
        );
        assert!(!home.join("login.json").exists(), "nothing stored");
    }
    // Without a login, a command given only the address speaks clear HTTP to a TLS master: it
    // fails.
    let out = cli(&home, &["cluster", "status", "--master", &address]);
    assert!(!out.status.success(), "{}", text(&out));

    // The framework token, from a file: the CA and a certificate of the framework role, 0600.
    let token_file = dir.path().join("framework-token");
    std::fs::write(&token_file, format!("{framework_token}\n")).expect("write");
    let out = cli(
        &home,
        &[
            "login",
            "--master",
            &address,
            "--token-file",
            &token_file.display().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("logged in to {address}")),
        "{}",
        text(&out)
    );
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).expect("meta").permissions())
            & 0o777
    };
    assert_eq!(mode(&home.join("login.json")), 0o600);
    assert_eq!(mode(&home), 0o700);
    assert_eq!(
        der_of(&home.join("ca.pem")),
        der_of(&master_dir.join("ca.pem"))
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("login.json")).expect("read"))
            .expect("json");
    assert_eq!(doc["master"], address.as_str());
    let der = agora_net::pki::first_der("cert", doc["certificate_pem"].as_str().expect("pem"))
        .expect("der");
    assert_eq!(
        agora_net::pki::role_of(&der),
        Some(agora_net::pki::Role::Framework)
    );

    // An agent and the services framework join; the CLI, given no --master, no --tls-ca and no
    // --services, sees them through the login.
    let _agent = agent(dir.path(), "agent-a", &address, free_port(), &agent_token);
    let services_port = free_port();
    let _services = framework(
        "services",
        dir.path(),
        &address,
        services_port,
        &["--join-token", &framework_token],
    );
    let status = eventually(
        "`agora cluster status` with one agent and the services framework",
        Duration::from_secs(60),
        || {
            let s = cli_json(&home, &["cluster", "status"]);
            async move {
                let s = s?;
                (s["agents"]["active"] == 1 && s["frameworks"] == 1).then_some(s)
            }
        },
    )
    .await;
    assert_eq!(status["leader"], address.as_str(), "{status}");
    let agents = cli_json(&home, &["agent", "list"]).expect("agora agent list");
    assert_eq!(agents[0]["hostname"], "agent-a", "{agents}");
    let app = dir.path().join("app.json");
    std::fs::write(
        &app,
        r#"{"id": "/login/sleeper", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 1}"#,
    )
    .expect("write");
    let out = cli(&home, &["app", "create", "-f", &app.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    eventually(
        "`agora app list`: the app running",
        Duration::from_secs(60),
        || {
            let apps = cli_json(&home, &["app", "list"]);
            async move {
                let apps = apps?;
                let one = apps
                    .as_array()?
                    .iter()
                    .find(|a| a["id"] == "/login/sleeper")?;
                (one["tasksRunning"] == 1).then_some(())
            }
        },
    )
    .await;
    let tasks = cli_json(&home, &["task", "list"]).expect("agora task list");
    assert_eq!(tasks.as_array().map(Vec::len), Some(1), "{tasks}");

    // Past two thirds of its life the certificate is renewed by the next command, which works.
    let before = std::fs::read_to_string(home.join("login.json")).expect("read");
    let end = stored_not_after(&home);
    sleep_until(end - (LIFETIME_SECS as i64) / 3 + 1).await;
    let out = cli(&home, &["cluster", "status"]);
    assert!(out.status.success(), "{}", text(&out));
    let after = std::fs::read_to_string(home.join("login.json")).expect("read");
    assert_ne!(before, after, "the stored certificate was renewed");
    assert!(stored_not_after(&home) > end);
    assert!(
        master_process.log_text().contains("renewed a certificate"),
        "the master renewed it"
    );

    // Once it has ended, commands refuse it and say to log in again.
    sleep_until(stored_not_after(&home) + 1).await;
    let out = cli(&home, &["cluster", "status"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("expired") && text(&out).contains("agora login --master"),
        "{}",
        text(&out)
    );

    // `agora logout` removes it.
    let out = cli(&home, &["logout"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("logged out of {address}")),
        "{}",
        text(&out)
    );
    assert!(!home.join("login.json").exists() && !home.join("ca.pem").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn agora_local_runs_on_the_cluster_ca_and_logs_the_cli_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("agora-home");
    let (port, services, batch) = (free_port(), free_port(), free_port());
    let local = spawn_local_secure(dir.path(), port, "local", (services, batch), &home);
    local_ready(&local).await;
    let banner = eventually("the whole banner", Duration::from_secs(30), || {
        let log = local.log_text();
        async move { log.contains("Ctrl-C stops everything").then_some(log) }
    })
    .await;
    let ca_file = dir.path().join("state/master/ca.pem");
    for line in [
        format!("https://127.0.0.1:{port}/"),
        format!("https://127.0.0.1:{services}/v2/apps"),
        format!("https://127.0.0.1:{batch}/v1/scheduler/jobs"),
        format!("cluster CA              {}", ca_file.display()),
        format!("curl --cacert {}", ca_file.display()),
        format!("logged in ({})", home.display()),
    ] {
        assert!(banner.contains(&line), "the banner has '{line}':\n{banner}");
    }
    assert!(!banner.contains("http://127.0.0.1:"), "{banner}");
    let ca_pem = std::fs::read_to_string(&ca_file).expect("the CA file");
    let client = https(&ca_pem);
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    let agent_port = crate::harness::local_agent_port(dir.path());
    for (address, path) in [
        (format!("127.0.0.1:{port}"), "/health"),
        (format!("127.0.0.1:{services}"), "/v2/info"),
        (format!("127.0.0.1:{batch}"), "/v1/scheduler/jobs"),
        (format!("127.0.0.2:{agent_port}"), "/health"),
    ] {
        let clear = plain.get(format!("http://{address}{path}")).send().await;
        assert!(
            clear.as_ref().map_or(true, |r| !r.status().is_success()),
            "{address} served plain HTTP: {clear:?}"
        );
        assert!(
            agora_net::tls::speaks_tls(&address, Duration::from_secs(3)).await,
            "{address} speaks TLS"
        );
        let r = client
            .get(format!("https://{address}{path}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("https://{address}{path} with the CA: {e:?}"));
        assert!(r.status().is_success(), "{address}{path}: {}", r.status());
    }
    // The CLI works with the login `agora local` made, with no flag at all.
    let status = cli_json(&home, &["cluster", "status"]).expect("agora cluster status");
    assert_eq!(status["agents"]["active"], 2, "{status}");
    assert_eq!(status["frameworks"], 2, "{status}");
    assert_eq!(status["leader"], format!("127.0.0.1:{port}").as_str());
    let apps = cli_json(&home, &["app", "list"]).expect("agora app list");
    assert_eq!(apps, serde_json::json!([]));
    let jobs = cli_json(&home, &["job", "list"]).expect("agora job list");
    assert_eq!(jobs, serde_json::json!([]));
    assert_eq!(der_of(&home.join("ca.pem")), der_of(&ca_file));
}
