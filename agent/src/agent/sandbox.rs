//! A task's sandbox before its launch: the directory with empty `stdout` and `stderr`, the check
//! that a native task's user can reach it, and handing it to that user around the fetcher (which
//! downloads, copies and extracts the task's URIs into it).
#![forbid(unsafe_code)]

use std::fs;
use std::path::Path;

use crate::containerizer::{ContainerizerKind, LaunchSpec};
use crate::error::ContainerError;
use crate::user::TaskUser;

/// Creates a task's sandbox with its empty `stdout` and `stderr`. For a native task running as
/// another user, checks that the user can reach the sandbox by its absolute path (tasks, health
/// checks and executors use `$AGORA_SANDBOX`); Docker mounts it into the container instead.
///
/// # Errors
/// A message for the task's TASK_FAILED update.
pub(super) fn prepare(
    sandbox: &Path,
    user: Option<&TaskUser>,
    kind: ContainerizerKind,
) -> Result<(), String> {
    fs::create_dir_all(sandbox)
        .map_err(|e| format!("cannot create the sandbox {}: {e}", sandbox.display()))?;
    for name in ["stdout", "stderr"] {
        let p = sandbox.join(name);
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| format!("cannot create {}: {e}", p.display()))?;
    }
    if let Some(u) = user.filter(|_| kind == ContainerizerKind::Native) {
        if let Some((dir, mode, owner)) = crate::user::blocked_ancestor(sandbox, u) {
            return Err(format!(
                "user '{}' cannot reach the task's sandbox: {} (mode {mode:o}, owner uid {owner}) cannot be entered by it; make the agent's --work-dir and its parent directories searchable (chmod o+x)",
                u.name,
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Fetches the task's URIs into its sandbox. The sandbox is the task user's before the fetcher
/// runs (it copies and extracts as that user), and again after it (downloads are written by the
/// agent).
///
/// # Errors
/// [`ContainerError::Launch`] when the sandbox cannot be given to the user; the fetcher's errors.
pub(super) async fn fetch_into(spec: &LaunchSpec) -> Result<(), ContainerError> {
    let uris = spec
        .task
        .command
        .as_ref()
        .map(|c| c.uris.clone())
        .unwrap_or_default();
    hand_over(&spec.sandbox, spec.user.as_ref())?;
    crate::fetcher::fetch(&uris, &spec.sandbox, spec.user.as_ref()).await?;
    hand_over(&spec.sandbox, spec.user.as_ref())
}

fn hand_over(sandbox: &Path, user: Option<&TaskUser>) -> Result<(), ContainerError> {
    crate::user::hand_over(sandbox, user).map_err(|(p, e)| {
        ContainerError::Launch(format!(
            "cannot give the sandbox to user '{}': {}: {e}",
            user.map(|u| u.name.as_str()).unwrap_or("?"),
            p.display()
        ))
    })
}
