//! TLS end to end: a master serving gRPC and HTTP over TLS and requiring agents' client
//! certificates; agents, the SDK, the services framework and plain HTTPS clients verifying it
//! against the cluster CA.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_sdk::{carve_many, shell_task, Event, Framework, TaskNeeds};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use serde_json::{json, Value};

use crate::harness::{self, eventually, free_port, Process};

/// A cluster CA and the certificates it signs, as PEM files.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    key: KeyPair,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("pki dir");
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).expect("CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
        Pki { dir, ca, key }
    }

    fn ca(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }

    /// (certificate file, key file) for `names`.
    fn issue(&self, file: &str, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        let cert = params.signed_by(&key, &self.ca, &self.key).expect("sign");
        let (c, k) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}-key.pem")),
        );
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        (c.display().to_string(), k.display().to_string())
    }

    /// An HTTPS client trusting only this CA.
    fn https(&self) -> reqwest::Client {
        let pem = std::fs::read(self.dir.join("ca.pem")).expect("ca");
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
            .tls_built_in_root_certs(false)
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client")
    }
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}

fn agent_args(dir: &Path, name: &str, master: &str, tls: &[&str]) -> Vec<String> {
    let mut a = harness::agent_args(dir, name, master, free_port(), "cpus:2;mem:512", "native");
    if !tls.is_empty() {
        // Its own PKI instead of the harness's clear default.
        a.retain(|x| x != "--insecure");
    }
    a.extend(args(tls));
    a
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_cluster_verifies_the_master_and_requires_agent_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "pki");
    let (master_cert, master_key) = pki.issue("master", &["127.0.0.1", "localhost"]);
    let (agent_cert, agent_key) = pki.issue("agent", &["agent-tls"]);
    let (services_cert, services_key) = pki.issue("services", &["127.0.0.1"]);
    let ca = pki.ca();
    let https = pki.https();

    let port = free_port();
    let master_address = format!("127.0.0.1:{port}");
    let _master = Process::spawn(
        "master-tls",
        &args(&[
            "master",
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--work-dir",
            &dir.path().join("master").display().to_string(),
            "--allocation-interval",
            "0.1",
            "--tls-cert",
            &master_cert,
            "--tls-key",
            &master_key,
            "--tls-ca",
            &ca,
            "--tls-require-agent-cert",
        ]),
        dir.path(),
    );
    let state_url = format!("https://{master_address}/state");
    eventually(
        "the master to answer over HTTPS",
        Duration::from_secs(20),
        || get_json(&https, &state_url),
    )
    .await;

    // Plain HTTP to a TLS port gets no answer, and a client that does not trust the cluster CA
    // refuses the master's certificate.
    let plain = reqwest::get(format!("http://{master_address}/state")).await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "plain HTTP must not be served on a TLS port: {plain:?}"
    );
    let untrusting = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
        .get(&state_url)
        .send()
        .await;
    assert!(
        untrusting.is_err(),
        "a client without the cluster CA must refuse the master's certificate"
    );

    // An agent with its certificate joins; one without is refused with a message saying why and
    // exits; one speaking plain gRPC never gets in.
    let _agent = Process::spawn(
        "agent-tls",
        &agent_args(
            dir.path(),
            "agent-tls",
            &master_address,
            &[
                "--tls-ca",
                &ca,
                "--tls-cert",
                &agent_cert,
                "--tls-key",
                &agent_key,
            ],
        ),
        dir.path(),
    );
    let mut no_cert = Process::spawn(
        "agent-no-cert",
        &agent_args(
            dir.path(),
            "agent-no-cert",
            &master_address,
            &["--tls-ca", &ca],
        ),
        dir.path(),
    );
    let mut plain_agent = Process::spawn(
        "agent-plain",
        &agent_args(dir.path(), "agent-plain", &master_address, &[]),
        dir.path(),
    );
    eventually(
        "the agent without a certificate to exit",
        Duration::from_secs(20),
        || {
            let status = no_cert.try_wait();
            async move { status }
        },
    )
    .await;
    let log = no_cert.log_text();
    assert!(
        log.contains("requires agents to present a TLS client certificate"),
        "the refused agent must say why: {log}"
    );
    eventually(
        "the agent with a certificate to register",
        Duration::from_secs(20),
        || {
            let (https, url) = (https.clone(), state_url.clone());
            async move {
                let s = get_json(&https, &url).await?;
                let agents = s["agents"].as_array()?;
                agents
                    .iter()
                    .any(|a| a["hostname"] == "agent-tls")
                    .then_some(())
            }
        },
    )
    .await;
    // An agent started without TLS flags stops (non-zero) and says what to do, instead of
    // looping on "h2 protocol error: frame with invalid size".
    let plain_status = eventually("the plain agent to exit", Duration::from_secs(20), || {
        let status = plain_agent.try_wait();
        async move { status }
    })
    .await;
    assert!(!plain_status.success());
    let log = plain_agent.log_text();
    assert!(
        log.contains(&format!(
            "the master at {master_address} speaks TLS: start the agent with --tls-ca"
        )),
        "the plain agent must say TLS is needed: {log}"
    );
    let state = get_json(&https, &state_url).await.expect("state");
    let hosts: Vec<&str> = state["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["hostname"].as_str())
        .collect();
    assert_eq!(
        hosts,
        ["agent-tls"],
        "only the agent with a certificate is in /state"
    );

    // A framework through the SDK over TLS gets offers and runs a task.
    let client_tls = agora_net::tls::TlsFiles {
        ca: Some(ca.clone().into()),
        ..Default::default()
    }
    .client()
    .expect("client tls");
    let mut fw = Framework::builder(&master_address, "tls-framework")
        .tls(client_tls)
        .connect()
        .expect("connect");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let offer = loop {
        match tokio::time::timeout_at(deadline, fw.next_event()).await {
            Ok(Some(Event::Offers(o))) if !o.is_empty() => break o[0].clone(),
            Ok(Some(_)) => {}
            other => panic!("no offer over TLS: {other:?}"),
        }
    };
    let needs = TaskNeeds::parse("cpus:0.1;mem:32", 0).expect("needs");
    let carved = carve_many(&offer, &needs, 1);
    fw.launch(
        &offer.id,
        vec![shell_task("over-tls", "sleep 60", &carved[0])],
    )
    .await
    .expect("launch");
    loop {
        match tokio::time::timeout_at(deadline, fw.next_event()).await {
            Ok(Some(Event::Update(s))) if s.task_id == "over-tls" => {
                if s.state() == agora_proto::v1::TaskState::TaskRunning {
                    break;
                }
            }
            Ok(Some(_)) => {}
            other => panic!("the task did not run: {other:?}"),
        }
    }

    // The services framework serves its API over TLS and reaches the master over TLS.
    let services_port = free_port();
    let _services = Process::spawn(
        "services-tls",
        &args(&[
            "services",
            "--master",
            &master_address,
            "--ip",
            "127.0.0.1",
            "--port",
            &services_port.to_string(),
            "--work-dir",
            &dir.path().join("services").display().to_string(),
            "--tls-ca",
            &ca,
            "--tls-cert",
            &services_cert,
            "--tls-key",
            &services_key,
        ]),
        dir.path(),
    );
    let apps = format!("https://127.0.0.1:{services_port}/v2/apps");
    eventually(
        "the services API over HTTPS",
        Duration::from_secs(20),
        || get_json(&https, &apps),
    )
    .await;
    let created = https
        .post(&apps)
        .json(&json!({"id": "/tls-app", "cmd": "sleep 60", "cpus": 0.1, "mem": 32, "instances": 1}))
        .send()
        .await
        .expect("POST /v2/apps");
    assert!(created.status().is_success(), "{:?}", created.text().await);
    let app = format!("{apps}/tls-app");
    eventually(
        "the app's task to run through a TLS master",
        Duration::from_secs(30),
        || {
            let (https, app) = (https.clone(), app.clone());
            async move {
                let a = get_json(&https, &app).await?;
                (a["app"]["tasksRunning"] == 1).then_some(())
            }
        },
    )
    .await;

    // The CLI reaches a TLS cluster with the CA, and says what failed without it.
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_agora"))
            .args(args)
            .env_remove("AGORA_TLS_CA")
            .output()
            .expect("the CLI runs")
    };
    let services_url = format!("https://127.0.0.1:{services_port}");
    let ok = cli(&[
        "cluster",
        "status",
        "--master",
        &master_address,
        "--tls-ca",
        &ca,
    ]);
    let out = String::from_utf8_lossy(&ok.stdout).to_string();
    assert!(
        ok.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(out.contains("agent-tls") || out.contains("1"), "{out}");
    let apps_out = cli(&["app", "list", "--services", &services_url, "--tls-ca", &ca]);
    assert!(apps_out.status.success(), "{apps_out:?}");
    assert!(String::from_utf8_lossy(&apps_out.stdout).contains("tls-app"));
    let no_ca = cli(&["app", "list", "--services", &services_url]);
    assert!(!no_ca.status.success(), "without the CA the CLI must fail");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tls_flags_stop_the_master_with_the_flag_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "pki");
    let (cert, _key) = pki.issue("master", &["127.0.0.1"]);
    let missing_key = dir.path().join("absent-key.pem").display().to_string();
    for (case, flags, expected) in [
        (
            "a missing key file",
            vec![
                "--tls-cert",
                cert.as_str(),
                "--tls-key",
                missing_key.as_str(),
            ],
            "--tls-key",
        ),
        (
            "a certificate without a key",
            vec!["--tls-cert", cert.as_str()],
            "--tls-cert needs --tls-key",
        ),
        (
            "mutual TLS without a CA",
            vec!["--tls-require-agent-cert"],
            "--tls-require-agent-cert needs",
        ),
    ] {
        let mut a = args(&[
            "master",
            "--ip",
            "127.0.0.1",
            "--port",
            &free_port().to_string(),
            "--work-dir",
            &dir.path().join("master").display().to_string(),
        ]);
        a.extend(args(&flags));
        let mut master = Process::spawn("master-bad-tls", &a, dir.path());
        let status = eventually(
            &format!("the master to exit on {case}"),
            Duration::from_secs(20),
            || {
                let s = master.try_wait();
                async move { s }
            },
        )
        .await;
        assert!(!status.success(), "{case}: the master must fail");
        let log = master.log_text();
        assert!(
            log.contains(expected),
            "{case}: the error must name {expected}: {log}"
        );
    }
}
