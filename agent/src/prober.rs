//! The thin async shell around [`crate::health`]: one checker task per running task that has a
//! health check. It waits `delay`, then probes every `interval` (measured from the end of the previous
//! probe, so slow probes never pile up), each probe bounded by `timeout`, and hands every result to
//! the agent actor, which owns the [`crate::health::HealthTracker`] and decides what to report.
//!
//! Where the probes run:
//! - HTTP and TCP: from the agent, to `127.0.0.1:<port>`. The port is a host port of the task
//!   (native tasks share the host's network; Docker tasks publish it through a port mapping or use
//!   host networking). HTTP is a plain HTTP/1.1 `GET` on a tokio `TcpStream`; only the status line is
//!   read.
//! - COMMAND: through [`Containerizer::run_check`]: native tasks run it on the host with the task's
//!   environment in its sandbox; Docker tasks run it inside the container with the engine's exec API.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use crate::command::{run_on_host, CheckCommand, CheckExit};
use crate::containerizer::Containerizer;
use crate::health::{http_status_healthy, parse_status_line, Probe};

/// An HTTP server that sends this much without a status line is not healthy.
const MAX_HEAD: usize = 8192;

/// Everything one task's checker needs.
pub struct Target {
    pub probe: Probe,
    pub timeout: Duration,
    pub containerizer: Arc<dyn Containerizer>,
    pub container_id: String,
    pub task_env: BTreeMap<String, String>,
    pub sandbox: PathBuf,
    pub user: Option<crate::user::TaskUser>,
}

async fn http(port: u16, path: &str, statuses: &[u16]) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: agora-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(code) = parse_status_line(&head) {
            return if http_status_healthy(code, statuses) {
                Ok(())
            } else {
                Err(format!("GET {url} answered {code}"))
            };
        }
        if head.len() > MAX_HEAD {
            return Err(format!("GET {url}: no HTTP status line in the answer"));
        }
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if n == 0 {
            return Err(format!(
                "GET {url}: the connection closed before an HTTP status line"
            ));
        }
        head.extend_from_slice(&chunk[..n]);
    }
}

async fn https(port: u16, path: &str, statuses: &[u16], timeout: Duration) -> Result<(), String> {
    let url = format!("https://127.0.0.1:{port}{path}");
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .user_agent("agora-health-check")
        .build()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", agora_net::tls::error_chain(&e)))?;
    let code = resp.status().as_u16();
    if http_status_healthy(code, statuses) {
        Ok(())
    } else {
        Err(format!("GET {url} answered {code}"))
    }
}

async fn probe_once(t: &Target) -> Result<(), String> {
    match &t.probe {
        Probe::Http {
            port,
            path,
            statuses,
            tls: false,
        } => http(*port, path, statuses).await,
        Probe::Http {
            port,
            path,
            statuses,
            tls: true,
        } => https(*port, path, statuses, t.timeout).await,
        Probe::Tcp { port } => TcpStream::connect((Ipv4Addr::LOCALHOST, *port))
            .await
            .map(drop)
            .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}")),
        Probe::Command { argv, env } => {
            let cmd = CheckCommand {
                argv: argv.clone(),
                env: env.iter().cloned().collect(),
                task_env: t.task_env.clone(),
                sandbox: t.sandbox.clone(),
                user: t.user.clone(),
            };
            match t.containerizer.run_check(&t.container_id, &cmd).await {
                Ok(CheckExit { code: 0, .. }) => Ok(()),
                Ok(CheckExit { code, output }) if output.is_empty() => {
                    Err(format!("command exited with status {code}"))
                }
                Ok(CheckExit { code, output }) => {
                    Err(format!("command exited with status {code}: {output}"))
                }
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

/// One check, bounded by the target's timeout: `Ok` when healthy, else why not.
pub async fn probe(t: &Target) -> Result<(), String> {
    match tokio::time::timeout(t.timeout, probe_once(t)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {:?}", t.timeout)),
    }
}

/// The checker loop of one task: `delay`, then a probe every `interval` until `report` returns
/// false (the actor is gone) or the task is aborted by the actor (the task ended or is being killed).
pub async fn run(
    target: Target,
    delay: Duration,
    interval: Duration,
    mut report: impl FnMut(Result<(), String>) -> bool + Send,
) {
    tokio::time::sleep(delay).await;
    loop {
        let result = probe(&target).await;
        if !report(result) {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn https_checks_accept_the_task_s_own_certificate_and_judge_the_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = crate::test_tls::self_signed_server(dir.path()).await;
        let timeout = Duration::from_secs(5);
        https(addr.port(), "/ok", &[], timeout)
            .await
            .expect("a self-signed task certificate is accepted");
        let err = https(addr.port(), "/unavailable", &[], timeout)
            .await
            .expect_err("503 is unhealthy");
        assert!(err.contains("answered 503"), "{err}");
        https(addr.port(), "/unavailable", &[503], timeout)
            .await
            .expect("503 is listed as healthy");
        let plain = http(addr.port(), "/ok", &[]).await;
        assert!(plain.is_err(), "plain HTTP to a TLS port fails: {plain:?}");
    }
}
