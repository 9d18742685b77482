//! The counters and per-task timestamps that simulated agents and frameworks update as they go
//! (atomics in one [`Shared`]), and from which the driver decides when a phase is over and the
//! report is computed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use super::args::LoadArgs;

/// Counters and per-task timestamps shared by all simulated agents and frameworks.
pub(crate) struct Shared {
    pub args: LoadArgs,
    pub start: Instant,
    /// Agents registered with an open session.
    pub registered: AtomicUsize,
    /// Task indices handed out to frameworks so far (≤ `args.tasks`).
    pub claimed: AtomicUsize,
    /// When the first paced accept was due (`--launch-rate`).
    pub pace_start: std::sync::OnceLock<tokio::time::Instant>,
    /// Per task: nanoseconds since `start` at which its accept was sent (0: not yet).
    pub accept_ns: Vec<AtomicU64>,
    /// Per task: nanoseconds since `start` at which TASK_RUNNING reached its framework (0: not yet).
    pub running_ns: Vec<AtomicU64>,
    /// Per task: a terminal update has been counted (updates may be resent).
    pub ended: Vec<std::sync::atomic::AtomicBool>,
    pub running: AtomicUsize,
    pub finished: AtomicUsize,
    /// Tasks that ended in a state other than FINISHED.
    pub failed: AtomicUsize,
    pub offers: AtomicUsize,
    pub accept_errors: AtomicUsize,
    pub acks_sent: AtomicUsize,
    /// Updates received with a uuid (each needs an acknowledgement).
    pub acks_wanted: AtomicUsize,
    /// Updates the simulated agents resent because no acknowledgement came in time.
    pub updates_resent: AtomicUsize,
    /// Agents or frameworks whose stream ended early, with the first reason.
    pub errors: std::sync::Mutex<Vec<String>>,
    /// `--failover`: when the leader was killed (0: not yet).
    pub killed_ns: AtomicU64,
    /// `--failover`: agents re-registered (session open) since the kill, and the tasks they
    /// reported.
    pub reregistered: AtomicUsize,
    pub reregistered_tasks: AtomicUsize,
    /// `--failover`: when the last of them did.
    pub reregistered_last_ns: AtomicU64,
}

impl Shared {
    pub fn new(args: LoadArgs) -> Shared {
        Shared {
            accept_ns: (0..args.tasks).map(|_| AtomicU64::new(0)).collect(),
            running_ns: (0..args.tasks).map(|_| AtomicU64::new(0)).collect(),
            ended: (0..args.tasks)
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            args,
            start: Instant::now(),
            registered: AtomicUsize::new(0),
            claimed: AtomicUsize::new(0),
            pace_start: std::sync::OnceLock::new(),
            running: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            offers: AtomicUsize::new(0),
            accept_errors: AtomicUsize::new(0),
            acks_sent: AtomicUsize::new(0),
            acks_wanted: AtomicUsize::new(0),
            updates_resent: AtomicUsize::new(0),
            errors: std::sync::Mutex::new(Vec::new()),
            killed_ns: AtomicU64::new(0),
            reregistered: AtomicUsize::new(0),
            reregistered_tasks: AtomicUsize::new(0),
            reregistered_last_ns: AtomicU64::new(0),
        }
    }

    pub fn since_start_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The leader has been killed on purpose: broken streams are expected from now on.
    pub fn killed(&self) -> bool {
        self.killed_ns.load(Ordering::Relaxed) > 0
    }

    pub fn error(&self, e: String) {
        if let Ok(mut v) = self.errors.lock() {
            if v.len() < 20 {
                v.push(e);
            }
        }
    }
}
