//! Recovery at start, from the checkpoint: the agent's id (`meta/agent_id`, created on the first
//! start) and the task table. Each checkpointed task is reconciled with its containerizer: a
//! container still running is watched again, one that ended while the agent was down or that
//! vanished gets its terminal update, and unacknowledged updates are queued to be resent.
#![forbid(unsafe_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use agora_proto::v1::{self, Reason, TaskState};
use agora_proto::Resources;
use tracing::{error, info, warn};

use super::{now, Actor, TaskEntry};
use crate::checkpoint::{read_message, write_atomic, PendingUpdates, TaskCheckpoint};
use crate::containerizer::{ContainerizerKind, Recovered};
use crate::error::AgentError;
use crate::lifecycle::{terminal_status, Termination};
use crate::paths::{uncomponent, Layout};
use crate::status_update::TaskKey;

/// The agent's id from `meta/agent_id`; a new one (checkpointed) on the first start, or when the
/// file cannot be used (empty, not text, unreadable): then it is set aside (see [`set_aside`]) and
/// the agent starts under a new id, as after a reboot.
///
/// # Errors
/// I/O errors writing a new id.
pub(super) fn load_agent_id(layout: &Layout) -> Result<String, AgentError> {
    let id_file = layout.agent_id_file();
    let why = match fs::read_to_string(&id_file) {
        Ok(s) if valid_agent_id(s.trim()) => return Ok(s.trim().to_string()),
        Ok(s) if s.trim().is_empty() => "empty agent id".to_string(),
        Ok(_) => "the agent id is not a single printable word".to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => e.to_string(),
    };
    if !why.is_empty() {
        set_aside(layout, &id_file, &why);
        warn!("starting under a new agent id: the old one could not be read ({why})");
    }
    let id = uuid::Uuid::new_v4().to_string();
    write_atomic(&id_file, id.as_bytes())?;
    Ok(id)
}

fn valid_agent_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.chars().all(|c| c.is_ascii_graphic())
}

impl Actor {
    /// Rebuilds the task table from the checkpoint and reconciles it with the containerizers. A
    /// checkpoint that cannot be recovered (unreadable, undecodable, impossible values) is set
    /// aside in `meta/quarantine` and its task reported TASK_LOST: never a failed start.
    pub(super) async fn recover(&mut self) -> Result<(), AgentError> {
        let root = self.layout.frameworks_meta();
        let mut found = Vec::new();
        match read_dirs(&root) {
            Ok(fws) => {
                for fw in fws {
                    match read_dirs(&fw.join("tasks")) {
                        Ok(tasks) => found.extend(tasks),
                        // Its tasks cannot even be listed: nothing to report them by.
                        Err(e) => {
                            set_aside(&self.layout, &fw, &e.to_string());
                        }
                    }
                }
            }
            Err(e) => {
                set_aside(&self.layout, &root, &e.to_string());
            }
        }
        let now = now();
        for dir in found {
            let cp = match read_task(&dir) {
                Ok(Some(cp)) => cp,
                Ok(None) => {
                    let _ = fs::remove_dir_all(&dir);
                    continue;
                }
                Err(why) => {
                    self.lose(&dir, why);
                    continue;
                }
            };
            let updates = dir.join("updates.pb");
            let pending = match read_message::<PendingUpdates>(&updates) {
                Ok(p) => p.unwrap_or_default(),
                // The task itself is known: recover it, without the updates it had not delivered
                // (the state recovered below is reported again if it differs).
                Err(e) => {
                    set_aside(&self.layout, &updates, &e.to_string());
                    PendingUpdates::default()
                }
            };
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
                running_since: None,
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
        self.reap_orphans().await;
        self.pump();
        Ok(())
    }

    /// Destroys the containers of this agent that no checkpoint knows (an agent killed between
    /// creating a container and checkpointing it, checkpoints lost or set aside): nothing may
    /// outlive its tasks by accident.
    async fn reap_orphans(&mut self) {
        let known: std::collections::HashSet<String> = self
            .tasks
            .values()
            .map(|e| e.cp.container_id.clone())
            .filter(|c| !c.is_empty())
            .collect();
        let containerizers: Vec<_> = self.containerizers.values().cloned().collect();
        for c in containerizers {
            for id in c.orphans(&known).await {
                warn!(container = %id, containerizer = c.kind().as_str(), "destroying an orphan container: no checkpoint of this agent knows it");
                c.destroy(&id).await;
            }
        }
    }
}

impl Actor {
    /// Sets aside the checkpoint directory `dir` of a task that cannot be recovered (`why`), stops
    /// its container when the checkpoint still says which, and reports the task TASK_LOST.
    fn lose(&mut self, dir: &Path, why: String) {
        let decoded = read_message::<TaskCheckpoint>(&dir.join("task.pb"))
            .ok()
            .flatten();
        let moved = set_aside(&self.layout, dir, &why);
        let Some(key) = key_of(dir) else {
            warn!(path = %dir.display(), "the directory names no task: nothing to report");
            return;
        };
        if let Some(old) = &decoded {
            let kind = ContainerizerKind::parse(&old.containerizer);
            if let (Some(c), false) = (self.containerizer(kind), old.container_id.is_empty()) {
                let cid = old.container_id.clone();
                self.jobs.spawn(async move { c.destroy(&cid).await });
            }
        }
        let framework = decoded
            .as_ref()
            .and_then(|c| c.framework.clone())
            .filter(|f| f.id == key.0)
            .unwrap_or_else(|| v1::FrameworkInfo {
                id: key.0.clone(),
                ..Default::default()
            });
        let cp = TaskCheckpoint {
            framework: Some(framework),
            task: Some(v1::TaskInfo {
                task_id: key.1.clone(),
                ..Default::default()
            }),
            executor_id: decoded
                .map(|c| c.executor_id)
                .unwrap_or_else(|| key.1.clone()),
            ..Default::default()
        };
        self.tasks.insert(
            key.clone(),
            TaskEntry {
                cp,
                kind: None,
                mem_mib: None,
                last_status: None,
                health: None,
                running_since: None,
            },
        );
        let whereto = moved
            .map(|p| format!("set aside as {}", p.display()))
            .unwrap_or_else(|| "removed".into());
        self.update(
            &key,
            TaskState::TaskLost,
            Reason::AgentRestarted,
            format!(
                "the agent restarted and could not recover its checkpoint of this task ({why}; {whereto}); \
                 its container, if any, was stopped"
            ),
            None,
        );
    }
}

/// A task's checkpoint, checked for values no agent writes; `Err` says what is wrong.
fn read_task(dir: &Path) -> Result<Option<TaskCheckpoint>, String> {
    let Some(mut cp) =
        read_message::<TaskCheckpoint>(&dir.join("task.pb")).map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let Some((fw, task)) = key_of(dir) else {
        return Err("the checkpoint's directory is not named after a framework and a task".into());
    };
    let cp_fw = cp.framework.as_ref().map(|f| f.id.as_str()).unwrap_or("");
    let cp_task = cp.task.as_ref().map(|t| t.task_id.as_str()).unwrap_or("");
    if cp_fw != fw || cp_task != task {
        return Err(format!(
            "the checkpoint names task '{cp_task}' of framework '{cp_fw}' but lies in the directory of task '{task}' of framework '{fw}'"
        ));
    }
    if TaskState::try_from(cp.state).is_err() {
        return Err(format!("state {} is not a task state", cp.state));
    }
    if cp.launched && cp.container_id.is_empty() {
        return Err("a launched task without a container id".into());
    }
    if !(cp.started_at.is_finite() && cp.started_at >= 0.0) {
        // Only informative (uptime, health grace): forget it rather than lose the task.
        warn!(task = %task, started_at = cp.started_at, "impossible start time in the checkpoint: ignored");
        cp.started_at = 0.0;
    }
    Ok(Some(cp))
}

/// The (framework, task) a checkpoint directory `meta/frameworks/<fw>/tasks/<task>` belongs to.
fn key_of(dir: &Path) -> Option<TaskKey> {
    let task = dir.file_name()?.to_str()?;
    let fw = dir.parent()?.parent()?.file_name()?.to_str()?;
    let (fw, task) = (uncomponent(fw)?, uncomponent(task)?);
    (!fw.is_empty() && !task.is_empty()).then_some((fw, task))
}

/// Moves `path` (a file or directory under `meta/`) to `meta/quarantine/<path under meta, '/' as
/// '+'>.corrupt-<unix secs>` with a `.reason` file beside it, and logs why; removes it when it
/// cannot be moved. Returns where it went.
pub(crate) fn set_aside(layout: &Layout, path: &Path, why: &str) -> Option<PathBuf> {
    let meta = layout.meta();
    let rel = path.strip_prefix(&meta).unwrap_or(path);
    let name: String = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("+");
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let q = layout.quarantine();
    let moved = fs::create_dir_all(&q).ok().and_then(|()| {
        let mut dest = q.join(format!("{name}.corrupt-{secs}"));
        let mut n = 1;
        while dest.exists() {
            dest = q.join(format!("{name}.corrupt-{secs}-{n}"));
            n += 1;
        }
        match fs::rename(path, &dest) {
            Ok(()) => Some(dest),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot move an unrecoverable checkpoint aside");
                None
            }
        }
    });
    match &moved {
        Some(dest) => {
            let mut reason = dest.clone().into_os_string();
            reason.push(".reason");
            let _ = fs::write(
                PathBuf::from(reason),
                format!("{}: {why}\n", path.display()),
            );
            error!(path = %path.display(), quarantined = %dest.display(), reason = %why, "unrecoverable checkpoint set aside");
        }
        None => {
            let gone = if path.is_dir() {
                fs::remove_dir_all(path)
            } else {
                fs::remove_file(path)
            };
            error!(path = %path.display(), reason = %why, removed = gone.is_ok(), "unrecoverable checkpoint removed");
        }
    }
    moved
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
