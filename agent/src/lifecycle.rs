//! The task state machine, pure: which transitions are allowed and what terminal update a
//! container's end turns into. No I/O, no clock; unit-tested below.
//!
//! ```text
//! STAGING ─▶ STARTING ─▶ RUNNING ─▶ FINISHED | FAILED | KILLED
//!    │           │          └─▶ KILLING ─▶ KILLED | FINISHED | FAILED
//!    └───────────┴─▶ FAILED | KILLED | ERROR   (launch failed, killed during launch, invalid task)
//! ```
#![forbid(unsafe_code)]

use agora_proto::v1::{Reason, TaskState};

/// How a container ended, as seen by a containerizer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Termination {
    /// Exit status of the task's process in shell convention (128 + n when killed by signal n);
    /// `None` when it is not known (the process vanished while the agent was down).
    pub exit_code: Option<i32>,
    /// The kernel's OOM killer acted in the container because of its memory limit.
    pub oom_killed: bool,
    /// Extra words from the containerizer (for example the Docker engine's error).
    pub message: Option<String>,
}

/// Whether `from → to` is a legal transition for an update the agent sends.
pub fn can_transition(from: TaskState, to: TaskState) -> bool {
    use TaskState::*;
    if agora_proto::is_terminal(from) {
        return false;
    }
    match to {
        TaskStarting => matches!(from, TaskStaging),
        TaskRunning => matches!(from, TaskStaging | TaskStarting),
        TaskKilling => matches!(from, TaskStaging | TaskStarting | TaskRunning),
        TaskFinished | TaskFailed | TaskKilled | TaskError | TaskLost => true,
        _ => false,
    }
}

/// Turns how a container ended into the terminal update: state, reason and a message a person can act
/// on. `kill` is why a kill was requested (`(REASON_KILL_REQUESTED, "killed on request")`, or
/// `REASON_TASK_UNHEALTHY` with the health check's words), `None` when none was. `mem_limit_mib` is
/// only used for the message.
pub fn terminal_status(
    t: &Termination,
    kill: Option<(Reason, String)>,
    mem_limit_mib: Option<f64>,
) -> (TaskState, Reason, String) {
    let status = match t.exit_code {
        Some(code) if code > 128 && code < 160 => format!(
            "exited with status {code} (killed by signal {})",
            code - 128
        ),
        Some(code) => format!("exited with status {code}"),
        None => "exit status unknown".to_string(),
    };
    let extra = t
        .message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    if t.oom_killed && kill.is_none() {
        let limit = mem_limit_mib
            .map(|m| format!(" of {m} MiB"))
            .unwrap_or_default();
        return (
            TaskState::TaskFailed,
            Reason::ContainerLimitationMemory,
            format!("memory limit{limit} exceeded, the task was killed by the OOM killer; {status}{extra}"),
        );
    }
    if let Some((reason, why)) = kill {
        return (
            TaskState::TaskKilled,
            reason,
            format!("{why}; {status}{extra}"),
        );
    }
    match t.exit_code {
        Some(0) => (
            TaskState::TaskFinished,
            Reason::CommandExited,
            format!("{status}{extra}"),
        ),
        Some(_) => (
            TaskState::TaskFailed,
            Reason::CommandExited,
            format!("{status}{extra}"),
        ),
        None => (
            TaskState::TaskFailed,
            Reason::ExecutorTerminated,
            format!("the task's process vanished; {status}{extra}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    fn t(code: Option<i32>, oom: bool) -> Termination {
        Termination {
            exit_code: code,
            oom_killed: oom,
            message: None,
        }
    }

    #[test]
    fn terminal_status_table() {
        let cases: &[(Termination, bool, TaskState, Reason, &str)] = &[
            (
                t(Some(0), false),
                false,
                TaskFinished,
                Reason::CommandExited,
                "exited with status 0",
            ),
            (
                t(Some(3), false),
                false,
                TaskFailed,
                Reason::CommandExited,
                "exited with status 3",
            ),
            (
                t(Some(137), false),
                false,
                TaskFailed,
                Reason::CommandExited,
                "killed by signal 9",
            ),
            (
                t(Some(137), true),
                false,
                TaskFailed,
                Reason::ContainerLimitationMemory,
                "memory limit of 32 MiB exceeded",
            ),
            (
                t(Some(143), false),
                true,
                TaskKilled,
                Reason::KillRequested,
                "killed on request; exited with status 143",
            ),
            (
                t(Some(137), true),
                true,
                TaskKilled,
                Reason::KillRequested,
                "killed on request",
            ),
            (
                t(None, false),
                false,
                TaskFailed,
                Reason::ExecutorTerminated,
                "vanished",
            ),
        ];
        for (term, kill, state, reason, msg) in cases.iter() {
            let cause = kill.then(|| (Reason::KillRequested, "killed on request".to_string()));
            let (s, r, m) = terminal_status(term, cause, Some(32.0));
            assert_eq!((s, r), (*state, *reason), "{term:?} kill={kill}");
            assert!(m.contains(msg), "{m:?} should contain {msg:?}");
        }
        let (s, r, m) = terminal_status(
            &t(Some(143), false),
            Some((Reason::TaskUnhealthy, "failed 3 health checks".into())),
            None,
        );
        assert_eq!((s, r), (TaskKilled, Reason::TaskUnhealthy));
        assert_eq!(
            m,
            "failed 3 health checks; exited with status 143 (killed by signal 15)"
        );
    }

    #[test]
    fn transitions() {
        assert!(can_transition(TaskStaging, TaskStarting));
        assert!(can_transition(TaskStarting, TaskRunning));
        assert!(can_transition(TaskRunning, TaskFinished));
        assert!(can_transition(TaskRunning, TaskKilling));
        assert!(can_transition(TaskKilling, TaskKilled));
        assert!(can_transition(TaskStaging, TaskError));
        assert!(!can_transition(TaskRunning, TaskStarting));
        assert!(!can_transition(TaskFinished, TaskRunning));
        assert!(!can_transition(TaskKilled, TaskFailed));
    }
}
