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
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::containerizer::Containerizer;
use crate::error::ContainerError;
use crate::health::{http_status_healthy, parse_status_line, Probe};

/// The most of a check command's output kept for the failure message.
const OUTPUT_TAIL: usize = 200;
/// An HTTP server that sends this much without a status line is not healthy.
const MAX_HEAD: usize = 8192;

/// A health-check command to run next to a task's container.
#[derive(Debug, Clone)]
pub struct CheckCommand {
    pub argv: Vec<String>,
    /// The check's own environment (its `CommandInfo.environment`).
    pub env: BTreeMap<String, String>,
    /// The task's environment (`PORT0`, `AGORA_*`, its command's variables), for checks that do not
    /// run inside the container and so do not inherit it.
    pub task_env: BTreeMap<String, String>,
    /// The task's sandbox on the host.
    pub sandbox: PathBuf,
    /// The task's user: checks on the host run as it, never with the agent's privileges.
    pub user: Option<crate::user::TaskUser>,
}

/// How a check command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckExit {
    /// Exit status in shell convention (128 + n when killed by signal n).
    pub code: i32,
    /// The end of what it printed (stdout then stderr), for the failure message.
    pub output: String,
}

pub(crate) fn tail(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    let cut = s.len().saturating_sub(OUTPUT_TAIL);
    // Cut on a char boundary so a multi-byte character is never split.
    let start = (cut..=s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].to_string()
}

/// Kills a check's whole process group when dropped: a check that timed out (its future dropped)
/// must not leave `sleep`s or `curl`s behind, and neither must a shell that backgrounded something.
struct GroupKiller(Option<i32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Runs a check command on the host: `argv` in its own process group, in the sandbox, with the task's
/// environment and then the check's. The caller bounds it with a timeout; dropping the future kills
/// the process group.
///
/// # Errors
/// [`ContainerError::Launch`] when the command cannot be started.
pub fn run_on_host(cmd: &CheckCommand) -> BoxFuture<'_, Result<CheckExit, ContainerError>> {
    async move {
        if cmd.argv.is_empty() {
            return Err(ContainerError::InvalidTask(
                "empty health check command".into(),
            ));
        }
        // As the task's user: a check must not do what the task itself may not.
        let mut full =
            crate::user::drop_privileges_argv(cmd.user.as_ref()).map_err(ContainerError::Launch)?;
        full.extend(cmd.argv.iter().cloned());
        let (prog, args) = full
            .split_first()
            .ok_or_else(|| ContainerError::InvalidTask("empty health check command".into()))?;
        let mut c = tokio::process::Command::new(prog);
        c.args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(&cmd.task_env)
            .envs(&cmd.env)
            .current_dir(&cmd.sandbox)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let child = c.spawn().map_err(|e| {
            ContainerError::Launch(format!(
                "cannot run health check '{}': {e}",
                cmd.argv.join(" ")
            ))
        })?;
        let _killer = GroupKiller(child.id().and_then(|p| i32::try_from(p).ok()));
        let out = child.wait_with_output().await.map_err(|e| {
            ContainerError::Launch(format!("health check '{}': {e}", cmd.argv.join(" ")))
        })?;
        use std::os::unix::process::ExitStatusExt;
        let code = out
            .status
            .code()
            .or_else(|| out.status.signal().map(|s| 128 + s))
            .unwrap_or(-1);
        let mut all = out.stdout;
        all.extend_from_slice(&out.stderr);
        Ok(CheckExit {
            code,
            output: tail(&all),
        })
    }
    .boxed()
}

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

    #[test]
    fn output_tail_is_bounded_and_char_safe() {
        assert_eq!(tail(b"  short\n"), "short");
        let long = "é".repeat(300);
        let t = tail(long.as_bytes());
        assert!(t.len() <= OUTPUT_TAIL && t.chars().all(|c| c == 'é'), "{t}");
    }

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

    #[tokio::test]
    async fn host_command_exit_codes_and_timeout_kills_the_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cmd = |script: &str| CheckCommand {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: [("B".to_string(), "check".to_string())].into(),
            task_env: [
                ("A".to_string(), "task".to_string()),
                ("B".to_string(), "task".to_string()),
            ]
            .into(),
            sandbox: dir.path().to_path_buf(),
            user: None,
        };
        let ok = run_on_host(&cmd("test \"$A$B\" = taskcheck && pwd"))
            .await
            .expect("runs");
        assert_eq!(ok.code, 0, "{}", ok.output);
        assert!(
            ok.output.ends_with(&dir.path().display().to_string()),
            "{}",
            ok.output
        );
        let bad = run_on_host(&cmd("echo nope >&2; exit 7"))
            .await
            .expect("runs");
        assert_eq!(
            bad,
            CheckExit {
                code: 7,
                output: "nope".into()
            }
        );

        let marker = dir.path().join("survived");
        let slow = cmd(&format!("(sleep 1; touch {}) & sleep 5", marker.display()));
        let r = tokio::time::timeout(Duration::from_millis(200), run_on_host(&slow)).await;
        assert!(r.is_err(), "should time out");
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert!(
            !marker.exists(),
            "the check's background process outlived its timeout"
        );
    }
}
