//! Durable records under `<work_dir>/meta`: atomic writes (temp file + fsync + rename) of protobuf
//! messages, so a crash leaves either the old or the new version of a file, never half of one.
#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::path::Path;

use agora_proto::v1;
use prost::Message;

use crate::error::AgentError;

/// What the agent writes about a task before acting on it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskCheckpoint {
    #[prost(message, optional, tag = "1")]
    pub framework: Option<v1::FrameworkInfo>,
    #[prost(message, optional, tag = "2")]
    pub task: Option<v1::TaskInfo>,
    #[prost(string, tag = "3")]
    pub executor_id: String,
    #[prost(string, tag = "4")]
    pub container_id: String,
    /// `native` or `docker`.
    #[prost(string, tag = "5")]
    pub containerizer: String,
    #[prost(string, tag = "6")]
    pub sandbox: String,
    /// The latest state the agent reported for the task.
    #[prost(enumeration = "v1::TaskState", tag = "7")]
    pub state: i32,
    #[prost(bool, tag = "8")]
    pub kill_requested: bool,
    /// True once the containerizer reported the container as launched.
    #[prost(bool, tag = "9")]
    pub launched: bool,
    #[prost(double, tag = "10")]
    pub started_at: f64,
    /// Why the kill was requested (REASON_KILL_REQUESTED or REASON_TASK_UNHEALTHY), for the
    /// terminal update; unset in checkpoints of older agents (read as KILL_REQUESTED).
    #[prost(enumeration = "v1::Reason", tag = "11")]
    pub kill_reason: i32,
    /// Words for the terminal update of a killed task (empty: "killed on request").
    #[prost(string, tag = "12")]
    pub kill_message: String,
    /// The latest health the agent reported, so that a restarted agent does not report it again.
    #[prost(bool, optional, tag = "13")]
    pub healthy: Option<bool>,
    /// The Unix user the task runs as, as resolved at launch (see [`crate::user`]), so that a
    /// restarted agent runs its health checks as that user. `user_uid` unset: the task runs as
    /// the agent's own user (an agent that is not root, or a checkpoint of an older agent).
    #[prost(string, tag = "14")]
    pub user_name: String,
    #[prost(uint32, optional, tag = "15")]
    pub user_uid: Option<u32>,
    #[prost(uint32, tag = "16")]
    pub user_gid: u32,
    #[prost(uint32, repeated, tag = "17")]
    pub user_groups: Vec<u32>,
}

impl TaskCheckpoint {
    /// The task's user, from the checkpoint.
    pub fn user(&self) -> Option<crate::user::TaskUser> {
        self.user_uid.map(|uid| crate::user::TaskUser {
            name: self.user_name.clone(),
            uid,
            gid: self.user_gid,
            groups: self.user_groups.clone(),
        })
    }

    /// Records the task's user.
    pub fn set_user(&mut self, user: Option<&crate::user::TaskUser>) {
        self.user_name = user.map(|u| u.name.clone()).unwrap_or_default();
        self.user_uid = user.map(|u| u.uid);
        self.user_gid = user.map(|u| u.gid).unwrap_or_default();
        self.user_groups = user.map(|u| u.groups.clone()).unwrap_or_default();
    }
}

/// The status updates of one task that were not acknowledged yet, oldest first.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PendingUpdates {
    #[prost(message, repeated, tag = "1")]
    pub updates: Vec<v1::StatusUpdate>,
}

/// Writes `bytes` to `path` atomically ([`agora_ha::store::write_atomic`]: a temp file in the same
/// directory, fsync, rename).
///
/// # Errors
/// Any I/O error, with the path it happened on.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    agora_ha::store::write_atomic(path, bytes).map_err(|e| AgentError::io(path, e))
}

/// Writes a protobuf message atomically.
///
/// # Errors
/// See [`write_atomic`].
pub fn write_message<M: Message>(path: &Path, msg: &M) -> Result<(), AgentError> {
    write_atomic(path, &msg.encode_to_vec())
}

/// Reads a protobuf message; `Ok(None)` if the file does not exist.
///
/// # Errors
/// I/O errors, or [`AgentError::CorruptCheckpoint`] when the bytes do not decode.
pub fn read_message<M: Message + Default>(path: &Path) -> Result<Option<M>, AgentError> {
    match fs::read(path) {
        Ok(bytes) => {
            M::decode(bytes.as_slice())
                .map(Some)
                .map_err(|e| AgentError::CorruptCheckpoint {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AgentError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_and_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/task.pb");
        assert_eq!(read_message::<TaskCheckpoint>(&path).expect("read"), None);
        let cp = TaskCheckpoint {
            container_id: "c1".into(),
            launched: true,
            ..Default::default()
        };
        write_message(&path, &cp).expect("write");
        assert_eq!(
            read_message::<TaskCheckpoint>(&path).expect("read"),
            Some(cp)
        );
        // No temp files are left behind.
        let names: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("task.pb")]);
        fs::write(&path, b"\xff\xff\xff").expect("corrupt");
        assert!(matches!(
            read_message::<TaskCheckpoint>(&path),
            Err(AgentError::CorruptCheckpoint { .. })
        ));
    }
}
