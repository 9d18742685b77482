//! Where the agent keeps things under `--work-dir`.
//!
//! ```text
//! <work_dir>/
//!   meta/agent_id                                     agent id (checkpointed)
//!   meta/frameworks/<fw>/tasks/<task>/task.pb         TaskCheckpoint (what was launched, where)
//!   meta/frameworks/<fw>/tasks/<task>/updates.pb      status updates not yet acknowledged
//!   meta/containers/<container>/                      native supervisor pid, exit status
//!   meta/quarantine/<what>.corrupt-<unix secs>/       checkpoints set aside at recovery (see REASON)
//!   slaves/<agent>/frameworks/<fw>/executors/<ex>/runs/<container>/   sandbox (stdout, stderr)
//! ```
//! Ids chosen by frameworks are escaped ([`component`]) so that no id can climb out of its directory.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

/// Escapes an id into one safe path component: bytes outside `[A-Za-z0-9_.-]` become `%XX`, and
/// ids made only of dots (`.`, `..`) or empty ids are escaped entirely.
pub fn component(id: &str) -> String {
    let all_dots = id.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && !all_dots);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

/// The id a [`component`] was escaped from; `None` when `name` is not such an escape.
pub fn uncomponent(name: &str) -> Option<String> {
    if name == "%00" {
        return Some(String::new());
    }
    let b = name.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = name.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Directory layout of one agent's work dir.
#[derive(Debug, Clone)]
pub struct Layout {
    work_dir: PathBuf,
}

impl Layout {
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        Layout {
            work_dir: work_dir.into(),
        }
    }

    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    pub fn meta(&self) -> PathBuf {
        self.work_dir.join("meta")
    }

    pub fn agent_id_file(&self) -> PathBuf {
        self.meta().join("agent_id")
    }

    pub fn frameworks_meta(&self) -> PathBuf {
        self.meta().join("frameworks")
    }

    pub fn task_meta(&self, framework_id: &str, task_id: &str) -> PathBuf {
        self.frameworks_meta()
            .join(component(framework_id))
            .join("tasks")
            .join(component(task_id))
    }

    /// Where checkpoints that cannot be recovered are set aside (`meta/quarantine`), each under a
    /// name that says what it was and when it was moved.
    pub fn quarantine(&self) -> PathBuf {
        self.meta().join("quarantine")
    }

    pub fn container_meta(&self, container_id: &str) -> PathBuf {
        self.meta().join("containers").join(component(container_id))
    }

    /// Root of every sandbox: the only tree the files API serves.
    pub fn sandboxes_root(&self) -> PathBuf {
        self.work_dir.join("slaves")
    }

    pub fn sandbox(
        &self,
        agent_id: &str,
        framework_id: &str,
        executor_id: &str,
        container_id: &str,
    ) -> PathBuf {
        self.sandboxes_root()
            .join(component(agent_id))
            .join("frameworks")
            .join(component(framework_id))
            .join("executors")
            .join(component(executor_id))
            .join("runs")
            .join(component(container_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_escape_their_directory() {
        assert_eq!(component("web-1.a_b"), "web-1.a_b");
        assert_eq!(component(".."), "%2E%2E");
        assert_eq!(component("."), "%2E");
        assert_eq!(component("a/../b"), "a%2F..%2Fb");
        assert_eq!(component(""), "%00");
        for id in ["web-1.a_b", "..", ".", "a/../b", "", "ü 100%"] {
            assert_eq!(uncomponent(&component(id)).as_deref(), Some(id));
        }
        assert_eq!(uncomponent("%Z"), None);
        let l = Layout::new("/w");
        assert_eq!(
            l.sandbox("a1", "f/1", "..", "c"),
            PathBuf::from("/w/slaves/a1/frameworks/f%2F1/executors/%2E%2E/runs/c")
        );
    }
}
