//! Recovery at start, from the checkpoint: the agent's id (`meta/agent_id`, created on the first
//! start) and the task table. Each checkpointed task is reconciled with its containerizer: a
//! container still running is watched again, one that ended while the agent was down or that
//! vanished gets its terminal update, and unacknowledged updates are queued to be resent.
#![forbid(unsafe_code)]

use std::fs;
use std::path::PathBuf;

use agora_proto::v1::{Reason, TaskState};
use agora_proto::Resources;
use tracing::{info, warn};

use super::{now, Actor, TaskEntry};
use crate::checkpoint::{read_message, write_atomic, PendingUpdates, TaskCheckpoint};
use crate::containerizer::{ContainerizerKind, Recovered};
use crate::error::AgentError;
use crate::lifecycle::{terminal_status, Termination};
use crate::paths::Layout;
use crate::status_update::TaskKey;

/// The agent's id from `meta/agent_id`; a new one (checkpointed) on the first start.
///
/// # Errors
/// [`AgentError::CorruptCheckpoint`] for an empty file, I/O errors reading or writing it.
pub(super) fn load_agent_id(layout: &Layout) -> Result<String, AgentError> {
    let id_file = layout.agent_id_file();
    match fs::read_to_string(&id_file) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Ok(_) => Err(AgentError::CorruptCheckpoint {
            path: id_file,
            message: "empty agent id".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().to_string();
            write_atomic(&id_file, id.as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(AgentError::io(id_file, e)),
    }
}

impl Actor {
    /// Rebuilds the task table from the checkpoint and reconciles it with the containerizers.
    pub(super) async fn recover(&mut self) -> Result<(), AgentError> {
        let root = self.layout.frameworks_meta();
        let mut found = Vec::new();
        for fw in read_dirs(&root)? {
            for task_dir in read_dirs(&fw.join("tasks"))? {
                found.push(task_dir);
            }
        }
        let now = now();
        for dir in found {
            let Some(cp) = read_message::<TaskCheckpoint>(&dir.join("task.pb"))? else {
                let _ = fs::remove_dir_all(&dir);
                continue;
            };
            let pending =
                read_message::<PendingUpdates>(&dir.join("updates.pb"))?.unwrap_or_default();
            let fw_id = cp
                .framework
                .as_ref()
                .map(|f| f.id.clone())
                .unwrap_or_default();
            let task_id = cp
                .task
                .as_ref()
                .map(|t| t.task_id.clone())
                .unwrap_or_default();
            let key: TaskKey = (fw_id, task_id);
            let kind = ContainerizerKind::parse(&cp.containerizer);
            let mem_mib = cp
                .task
                .as_ref()
                .and_then(|t| Resources::from_proto(&t.resources).ok())
                .map(|r| r.scalar_total("mem"))
                .filter(|m| *m > 0.0);
            let last_status = pending.updates.last().and_then(|u| u.status.clone());
            for u in pending.updates {
                self.sum.add(u, now);
            }
            let entry = TaskEntry {
                cp,
                kind,
                mem_mib,
                last_status,
                health: None,
            };
            let state = entry.state();
            let launched = entry.cp.launched;
            let kill_requested = entry.cp.kill_requested;
            let grace = entry.grace(None);
            self.tasks.insert(key.clone(), entry);
            if agora_proto::is_terminal(state) {
                if self.sum.pending(&key.0, &key.1).is_empty() {
                    self.tasks.remove(&key);
                    let _ = fs::remove_dir_all(&dir);
                }
                continue;
            }
            let Some(c) = self.containerizer(kind) else {
                self.update(
                    &key,
                    TaskState::TaskFailed,
                    Reason::AgentRestarted,
                    format!(
                        "the agent restarted without the '{}' containerizer the task ran in",
                        kind.map(|k| k.as_str()).unwrap_or("?")
                    ),
                    None,
                );
                continue;
            };
            let cid = self
                .tasks
                .get(&key)
                .map(|e| e.cp.container_id.clone())
                .unwrap_or_default();
            let found = match c.recover(&cid).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(task = %key.1, error = %e, "cannot recover container");
                    Recovered::Terminated(Termination {
                        exit_code: None,
                        oom_killed: false,
                        message: Some(format!("cannot recover the container: {e}")),
                    })
                }
            };
            info!(task = %key.1, container = %cid, ?found, "recovered task");
            match found {
                Recovered::Running => {
                    if let Some(e) = self.tasks.get_mut(&key) {
                        e.cp.launched = true;
                    }
                    if !launched || state != TaskState::TaskRunning {
                        self.update(
                            &key,
                            TaskState::TaskRunning,
                            Reason::AgentRestarted,
                            "the task is running (recovered after an agent restart)".into(),
                            None,
                        );
                    }
                    self.watch(key.clone());
                    if kill_requested {
                        self.start_kill(&key, grace);
                    } else {
                        self.start_health(&key);
                    }
                }
                Recovered::Terminated(t) => {
                    let (s, r, m) = {
                        let e = self.tasks.get(&key);
                        terminal_status(
                            &t,
                            e.and_then(TaskEntry::kill_cause),
                            e.and_then(|e| e.mem_mib),
                        )
                    };
                    self.update(
                        &key,
                        s,
                        r,
                        format!("{m} (while the agent was down)"),
                        t.exit_code,
                    );
                    self.destroy(&key);
                }
                Recovered::Missing => {
                    let (s, r, m) = if launched {
                        (
                            TaskState::TaskFailed,
                            Reason::ExecutorTerminated,
                            "the task's container disappeared while the agent was down",
                        )
                    } else {
                        (
                            TaskState::TaskFailed,
                            Reason::AgentRestarted,
                            "the agent restarted while launching the task; it never started",
                        )
                    };
                    self.update(&key, s, r, m.into(), None);
                    self.destroy(&key);
                }
            }
        }
        self.pump();
        Ok(())
    }
}

fn read_dirs(dir: &std::path::Path) -> Result<Vec<PathBuf>, AgentError> {
    match fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            v.sort();
            Ok(v)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(AgentError::io(dir, e)),
    }
}
