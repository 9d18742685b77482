//! The status update manager: at-least-once delivery of task status updates, pure.
//!
//! Each task has a stream of updates, oldest first. Only the head of a stream is in flight: it is
//! sent, then resent with exponential backoff (10 s doubling to 10 min by default, as Mesos does)
//! until the master forwards the framework's acknowledgement for its uuid; then the next update of
//! that task goes out. Time is a parameter; the actor around it persists [`StatusUpdateManager::pending`]
//! after every change and sends what [`StatusUpdateManager::due`] returns.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use agora_proto::v1::StatusUpdate;

/// `(framework_id, task_id)`.
pub type TaskKey = (String, String);

#[derive(Debug)]
struct Stream {
    pending: VecDeque<StatusUpdate>,
    /// When the head must be (re)sent; `None` while nothing is pending.
    next_send: Option<Instant>,
    interval: Duration,
}

/// What an acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// It matched the head of the task's stream, which is now removed. `terminal` tells whether the
    /// acknowledged update was terminal, `drained` whether nothing remains pending for the task.
    Accepted { terminal: bool, drained: bool },
    /// No pending update of that task has this uuid (a duplicate or a stale acknowledgement).
    Ignored,
}

/// See the module documentation.
#[derive(Debug)]
pub struct StatusUpdateManager {
    streams: BTreeMap<TaskKey, Stream>,
    initial: Duration,
    max: Duration,
}

impl StatusUpdateManager {
    /// Retries start `initial` after a send and double up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        StatusUpdateManager {
            streams: BTreeMap::new(),
            initial,
            max: max.max(initial),
        }
    }

    fn key(update: &StatusUpdate) -> TaskKey {
        let task = update
            .status
            .as_ref()
            .map(|s| s.task_id.clone())
            .unwrap_or_default();
        (update.framework_id.clone(), task)
    }

    /// Queues an update. If nothing of that task was pending it is due at once.
    pub fn add(&mut self, update: StatusUpdate, now: Instant) {
        let initial = self.initial;
        let stream = self
            .streams
            .entry(Self::key(&update))
            .or_insert_with(|| Stream {
                pending: VecDeque::new(),
                next_send: None,
                interval: initial,
            });
        stream.pending.push_back(update);
        if stream.next_send.is_none() {
            stream.next_send = Some(now);
            stream.interval = initial;
        }
    }

    /// The updates to send now (heads of streams whose time has come); each one's next retry is
    /// scheduled with backoff.
    pub fn due(&mut self, now: Instant) -> Vec<StatusUpdate> {
        let mut out = Vec::new();
        for stream in self.streams.values_mut() {
            let (Some(at), Some(head)) = (stream.next_send, stream.pending.front()) else {
                continue;
            };
            if at <= now {
                out.push(head.clone());
                stream.next_send = Some(crate::limits::instant_after(now, stream.interval));
                stream.interval = stream.interval.saturating_mul(2).min(self.max);
            }
        }
        out
    }

    /// The earliest time something becomes due, for the caller's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.streams.values().filter_map(|s| s.next_send).min()
    }

    /// Applies the framework's acknowledgement of `uuid` for a task.
    pub fn acknowledge(
        &mut self,
        framework_id: &str,
        task_id: &str,
        uuid: &[u8],
        now: Instant,
    ) -> Ack {
        let key = (framework_id.to_string(), task_id.to_string());
        let Some(stream) = self.streams.get_mut(&key) else {
            return Ack::Ignored;
        };
        let matches = stream
            .pending
            .front()
            .and_then(|u| u.status.as_ref())
            .is_some_and(|s| s.uuid == uuid);
        if !matches {
            return Ack::Ignored;
        }
        let acked = stream.pending.pop_front();
        let terminal = acked
            .and_then(|u| u.status)
            .is_some_and(|s| agora_proto::is_terminal(s.state()));
        stream.interval = self.initial;
        stream.next_send = if stream.pending.is_empty() {
            None
        } else {
            Some(now)
        };
        let drained = stream.pending.is_empty();
        if drained {
            self.streams.remove(&key);
        }
        Ack::Accepted { terminal, drained }
    }

    /// Makes every pending head due now with a fresh backoff: after (re)connecting to a master.
    pub fn resend_all(&mut self, now: Instant) {
        for stream in self.streams.values_mut() {
            if !stream.pending.is_empty() {
                stream.next_send = Some(now);
                stream.interval = self.initial;
            }
        }
    }

    /// The pending updates of a task, oldest first (what the caller checkpoints).
    pub fn pending(&self, framework_id: &str, task_id: &str) -> Vec<StatusUpdate> {
        self.streams
            .get(&(framework_id.to_string(), task_id.to_string()))
            .map(|s| s.pending.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of unacknowledged updates across all tasks.
    pub fn len(&self) -> usize {
        self.streams.values().map(|s| s.pending.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets a task's stream (its framework was shut down).
    pub fn forget(&mut self, framework_id: &str, task_id: &str) {
        self.streams
            .remove(&(framework_id.to_string(), task_id.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::v1::{TaskState, TaskStatus};

    fn upd(task: &str, state: TaskState, uuid: u8) -> StatusUpdate {
        StatusUpdate {
            framework_id: "fw".into(),
            status: Some(TaskStatus {
                task_id: task.into(),
                state: state as i32,
                uuid: vec![uuid],
                ..Default::default()
            }),
        }
    }

    fn uuids(v: &[StatusUpdate]) -> Vec<u8> {
        v.iter()
            .map(|u| u.status.as_ref().expect("status").uuid[0])
            .collect()
    }

    #[test]
    fn head_is_sent_then_retried_with_backoff_until_acknowledged() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut m = StatusUpdateManager::new(s(10), s(40));
        m.add(upd("t1", TaskState::TaskRunning, 1), t0);
        m.add(upd("t1", TaskState::TaskFinished, 2), t0);
        assert_eq!(uuids(&m.due(t0)), [1]);
        assert_eq!(uuids(&m.due(t0 + s(9))), [] as [u8; 0]);
        assert_eq!(uuids(&m.due(t0 + s(10))), [1]);
        // Backoff doubles: 10, 20, 40, then capped at 40.
        assert_eq!(m.next_deadline(), Some(t0 + s(30)));
        assert_eq!(uuids(&m.due(t0 + s(30))), [1]);
        assert_eq!(m.next_deadline(), Some(t0 + s(70)));
        assert_eq!(uuids(&m.due(t0 + s(70))), [1]);
        assert_eq!(m.next_deadline(), Some(t0 + s(110)));
        // A stale or duplicate ack changes nothing.
        assert_eq!(m.acknowledge("fw", "t1", &[2], t0 + s(71)), Ack::Ignored);
        assert_eq!(
            m.acknowledge("fw", "t1", &[1], t0 + s(71)),
            Ack::Accepted {
                terminal: false,
                drained: false
            }
        );
        assert_eq!(m.acknowledge("fw", "t1", &[1], t0 + s(71)), Ack::Ignored);
        // The next update goes out at once, with a fresh backoff.
        assert_eq!(uuids(&m.due(t0 + s(71))), [2]);
        assert_eq!(m.next_deadline(), Some(t0 + s(81)));
        assert_eq!(m.pending("fw", "t1").len(), 1);
        assert_eq!(
            m.acknowledge("fw", "t1", &[2], t0 + s(72)),
            Ack::Accepted {
                terminal: true,
                drained: true
            }
        );
        assert!(m.is_empty());
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn streams_are_independent_and_resend_all_makes_heads_due() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut m = StatusUpdateManager::new(s(10), s(600));
        m.add(upd("a", TaskState::TaskRunning, 1), t0);
        m.add(upd("b", TaskState::TaskRunning, 2), t0 + s(1));
        assert_eq!(uuids(&m.due(t0)), [1]);
        assert_eq!(uuids(&m.due(t0 + s(1))), [2]);
        assert!(m.due(t0 + s(2)).is_empty());
        m.resend_all(t0 + s(3));
        assert_eq!(uuids(&m.due(t0 + s(3))), [1, 2]);
        assert_eq!(m.len(), 2);
        m.forget("fw", "a");
        assert_eq!(m.len(), 1);
    }
}
