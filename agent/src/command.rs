//! Commands, built and run: the argv of a task's or a health check's `CommandInfo` ([`argv`]), and
//! health-check commands run on the host ([`run_on_host`], with [`CheckCommand`] in and
//! [`CheckExit`] out). A leaf shared by [`crate::containerizer`] (launches, Docker exec checks),
//! [`crate::health`] (validating COMMAND checks) and [`crate::prober`] (running them): it imports
//! none of them, so they do not import each other in a circle.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use agora_proto::v1;
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::error::ContainerError;

/// The command line to run for a task, from its `CommandInfo` (shell → `/bin/sh -c value`; otherwise
/// `value` is the program, `arguments` its argv with argv\[0\] first).
///
/// # Errors
/// [`ContainerError::InvalidTask`] when there is nothing to run.
pub fn argv(command: Option<&v1::CommandInfo>) -> Result<Vec<String>, ContainerError> {
    let Some(cmd) = command else {
        return Err(ContainerError::InvalidTask(
            "the task has no command".into(),
        ));
    };
    if cmd.shell {
        if cmd.value.trim().is_empty() {
            return Err(ContainerError::InvalidTask(
                "command.value is empty (shell = true)".into(),
            ));
        }
        return Ok(vec!["/bin/sh".into(), "-c".into(), cmd.value.clone()]);
    }
    let mut out = Vec::new();
    match (cmd.value.is_empty(), cmd.arguments.is_empty()) {
        (true, true) => {
            return Err(ContainerError::InvalidTask(
                "command has neither value nor arguments".into(),
            ))
        }
        (true, false) => out.extend(cmd.arguments.iter().cloned()),
        (false, true) => out.push(cmd.value.clone()),
        (false, false) => {
            out.push(cmd.value.clone());
            out.extend(cmd.arguments.iter().skip(1).cloned());
        }
    }
    Ok(out)
}

/// The most of a check command's output kept for the failure message.
const OUTPUT_TAIL: usize = 200;

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn argv_from_command_info() {
        let shell = v1::CommandInfo {
            shell: true,
            value: "echo hi".into(),
            ..Default::default()
        };
        assert_eq!(
            argv(Some(&shell)).expect("argv"),
            ["/bin/sh", "-c", "echo hi"]
        );
        let args = v1::CommandInfo {
            value: "/bin/echo".into(),
            arguments: vec!["echo".into(), "a".into()],
            ..Default::default()
        };
        assert_eq!(argv(Some(&args)).expect("argv"), ["/bin/echo", "a"]);
        let only_args = v1::CommandInfo {
            arguments: vec!["sleep".into(), "1".into()],
            ..Default::default()
        };
        assert_eq!(argv(Some(&only_args)).expect("argv"), ["sleep", "1"]);
        assert!(argv(None).is_err());
        assert!(argv(Some(&v1::CommandInfo {
            shell: true,
            ..Default::default()
        }))
        .is_err());
    }

    #[test]
    fn output_tail_is_bounded_and_char_safe() {
        assert_eq!(tail(b"  short\n"), "short");
        let long = "é".repeat(300);
        let t = tail(long.as_bytes());
        assert!(t.len() <= OUTPUT_TAIL && t.chars().all(|c| c == 'é'), "{t}");
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
