//! Drain before kill: a task with endpoints that a framework kills first leaves the endpoint table
//! on every agent (their DNS and routing mesh stop sending it new work), and the kill goes to its
//! agent only once every connected agent has acknowledged that update, or when the drain period
//! ends, whichever comes first.
//!
//! Pure and synchronous, time passed in. The bookkeeping calls [`Drains::start`] for the kill
//! (the task then contributes no endpoints), [`Drains::sequence`] when it pushes the batch's
//! endpoint update (one acknowledgement number for all the drains of the batch, and the agents the
//! update goes to), [`Drains::ack`] for each agent's `EndpointAck`, [`Drains::agent_left`] when an
//! agent's session ends, [`Drains::tick`] for the deadlines and [`Drains::finished`] when a task
//! ended by itself meanwhile; [`Drains::take_released`] hands back the kills to forward.
//!
//! ```text
//!  kill(task with endpoints) ─▶ start ─▶ (batch end) sequence(agents) ─▶ EndpointUpdate{ack_seq: n}
//!  EndpointAck{n} from each agent ─▶ ack ──┐                              ─▶ every agent
//!  session ended ─▶ agent_left ────────────┼─▶ last one in: released ─▶ KillTask ─▶ task's agent
//!  drain period over ─▶ tick ──────────────┘
//! ```
//!
//! Acknowledgements are cumulative: an agent acknowledging `n` has applied every update up to the
//! one numbered `n` (one ordered stream per agent). The count of agents a number still waits for
//! is kept per number, so the state is O(agents + drains), not their product.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use agora_proto::v1::master_message;

/// (framework id, task id).
pub type TaskKey = (String, String);

/// Longest `--drain-period`.
pub const MAX_DRAIN_PERIOD: Duration = Duration::from_secs(60);
/// Default `--drain-period`.
pub const DEFAULT_DRAIN_PERIOD: Duration = Duration::from_secs(2);
/// Most tasks draining at once; a kill past it is forwarded at once (logged).
pub const MAX_DRAINING: usize = 100_000;

/// A kill held back while its task drains.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldKill {
    /// The task's agent, where the kill goes.
    pub agent_id: String,
    pub kill: master_message::KillTask,
}

/// Why a held kill was let go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Every agent the update went to acknowledged it (or left).
    Acknowledged,
    /// The drain period ended first.
    Deadline,
}

/// A kill let go, with how long it was held.
#[derive(Debug, Clone, PartialEq)]
pub struct Released {
    pub task: TaskKey,
    pub held: HeldKill,
    pub why: Why,
    pub drained_for: Duration,
    /// Agents that had not acknowledged when the deadline came (0 when acknowledged).
    pub missing: usize,
}

#[derive(Debug)]
struct Drain {
    held: HeldKill,
    started: Instant,
    deadline: Instant,
    /// The acknowledgement number of the update that took it out; `None` until the batch's
    /// update is sequenced.
    seq: Option<u64>,
}

#[derive(Debug, Default)]
struct Wave {
    /// Agents the update numbered by this wave went to that have neither acknowledged nor left.
    remaining: usize,
    tasks: HashSet<TaskKey>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Drains {
    drains: HashMap<TaskKey, Drain>,
    /// Drains started since the last [`Drains::sequence`].
    unsequenced: Vec<TaskKey>,
    /// Acknowledgement number → the drains it releases.
    waves: BTreeMap<u64, Wave>,
    /// Agents updates with acknowledgement numbers went to → the highest number they
    /// acknowledged (or that did not concern them: they joined later).
    agents: HashMap<String, u64>,
    last_seq: u64,
    released: Vec<Released>,
}

impl Drains {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the task is draining (its kill is held).
    pub fn is_draining(&self, task: &TaskKey) -> bool {
        self.drains.contains_key(task)
    }

    /// How many tasks are draining.
    pub fn len(&self) -> usize {
        self.drains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.drains.is_empty()
    }

    /// Holds `held` until the task's removal is acknowledged, at the latest `period` after `now`.
    /// Returns false (and holds nothing) when the task is already draining or too many are.
    pub fn start(&mut self, task: TaskKey, held: HeldKill, now: Instant, period: Duration) -> bool {
        if self.drains.contains_key(&task) || self.drains.len() >= MAX_DRAINING {
            return false;
        }
        let period = period.min(MAX_DRAIN_PERIOD);
        self.drains.insert(
            task.clone(),
            Drain {
                held,
                started: now,
                deadline: now + period,
                seq: None,
            },
        );
        self.unsequenced.push(task);
        true
    }

    /// Whether an update now must carry an acknowledgement number (drains started since the last
    /// [`Drains::sequence`]).
    pub fn wants_sequence(&self) -> bool {
        !self.unsequenced.is_empty()
    }

    /// The update about to go to `agents` takes the newly draining tasks out: returns its
    /// acknowledgement number (`None`: no drain needs one). With no agent to wait for, the
    /// drains are released at once.
    pub fn sequence(&mut self, agents: &[String]) -> Option<u64> {
        let Some(now) = self.newest_unsequenced() else {
            self.unsequenced.clear();
            return None;
        };
        // The agents the update goes to are exactly those waited for: one no longer sent updates
        // has left (its waves stop counting it), a new one owes nothing for earlier numbers.
        let current: HashSet<&String> = agents.iter().collect();
        let gone: Vec<String> = self
            .agents
            .keys()
            .filter(|a| !current.contains(a))
            .cloned()
            .collect();
        for a in gone {
            self.agent_left(&a, now);
        }
        for a in agents {
            self.agents.entry(a.clone()).or_insert(self.last_seq);
        }
        self.last_seq += 1;
        let seq = self.last_seq;
        let mut wave = Wave {
            remaining: agents.len(),
            tasks: HashSet::new(),
        };
        for t in std::mem::take(&mut self.unsequenced) {
            if let Some(d) = self.drains.get_mut(&t) {
                d.seq = Some(seq);
                wave.tasks.insert(t);
            }
        }
        self.waves.insert(seq, wave);
        self.release_done(now);
        Some(seq)
    }

    /// No update goes out for the newly draining tasks (none of them was in the table after
    /// all): their kills are released at once.
    pub fn release_unsequenced(&mut self) {
        let Some(now) = self.newest_unsequenced() else {
            self.unsequenced.clear();
            return;
        };
        for task in std::mem::take(&mut self.unsequenced) {
            if let Some(d) = self.drains.remove(&task) {
                self.released.push(Released {
                    task,
                    held: d.held,
                    why: Why::Acknowledged,
                    drained_for: now.saturating_duration_since(d.started),
                    missing: 0,
                });
            }
        }
        self.prune();
    }

    /// When the latest of the unsequenced drains started (the time of the batch they came in,
    /// passed in to [`Drains::start`]); `None` when there are none.
    fn newest_unsequenced(&self) -> Option<Instant> {
        self.unsequenced
            .iter()
            .filter_map(|t| self.drains.get(t).map(|d| d.started))
            .max()
    }

    /// `agent` acknowledged every update up to the one numbered `seq`.
    pub fn ack(&mut self, agent: &str, seq: u64, now: Instant) {
        let Some(acked) = self.agents.get_mut(agent) else {
            return;
        };
        // A number this master never sent (hostile or stale) counts for nothing.
        if seq <= *acked || seq > self.last_seq {
            return;
        }
        let from = *acked;
        *acked = seq;
        for (_, w) in self.waves.range_mut(from + 1..=seq) {
            w.remaining = w.remaining.saturating_sub(1);
        }
        self.release_done(now);
    }

    /// `agent`'s session ended (or it became unreachable): it is waited for no more. A new
    /// session gets the whole table, without the draining tasks.
    pub fn agent_left(&mut self, agent: &str, now: Instant) {
        let Some(acked) = self.agents.remove(agent) else {
            return;
        };
        for (_, w) in self.waves.range_mut(acked + 1..) {
            w.remaining = w.remaining.saturating_sub(1);
        }
        self.release_done(now);
    }

    /// The task ended (or was removed) by itself while draining: nothing to kill.
    pub fn finished(&mut self, task: &TaskKey) {
        if let Some(d) = self.drains.remove(task) {
            match d.seq {
                Some(s) => {
                    if let Some(w) = self.waves.get_mut(&s) {
                        w.tasks.remove(task);
                    }
                }
                None => self.unsequenced.retain(|t| t != task),
            }
        }
    }

    /// Releases the drains whose period is over.
    pub fn tick(&mut self, now: Instant) {
        let due: Vec<TaskKey> = self
            .drains
            .iter()
            .filter(|(_, d)| d.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for task in due {
            let Some(d) = self.drains.remove(&task) else {
                continue;
            };
            let missing = match d.seq {
                Some(s) => self.waves.get_mut(&s).map_or(0, |w| {
                    w.tasks.remove(&task);
                    w.remaining
                }),
                None => {
                    self.unsequenced.retain(|t| *t != task);
                    0
                }
            };
            self.released.push(Released {
                task,
                held: d.held,
                why: Why::Deadline,
                drained_for: now.saturating_duration_since(d.started),
                missing,
            });
        }
        self.prune();
    }

    /// The earliest drain deadline, for the actor's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.drains.values().map(|d| d.deadline).min()
    }

    /// The kills let go since the last call, in order.
    pub fn take_released(&mut self) -> Vec<Released> {
        std::mem::take(&mut self.released)
    }

    fn release_done(&mut self, now: Instant) {
        let done: Vec<u64> = self
            .waves
            .iter()
            .filter(|(_, w)| w.remaining == 0)
            .map(|(s, _)| *s)
            .collect();
        for s in done {
            let Some(w) = self.waves.remove(&s) else {
                continue;
            };
            let mut tasks: Vec<TaskKey> = w.tasks.into_iter().collect();
            tasks.sort();
            for task in tasks {
                if let Some(d) = self.drains.remove(&task) {
                    self.released.push(Released {
                        task,
                        held: d.held,
                        why: Why::Acknowledged,
                        drained_for: now.saturating_duration_since(d.started),
                        missing: 0,
                    });
                }
            }
        }
        self.prune();
    }

    /// Drops waves no drain waits on any more; with no drain at all, the agents' numbers too
    /// (the next wave counts every agent it goes to afresh).
    fn prune(&mut self) {
        self.waves.retain(|_, w| !w.tasks.is_empty());
        if self.drains.is_empty() {
            self.agents.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str) -> TaskKey {
        ("f1".to_string(), t.to_string())
    }

    fn held(t: &str) -> HeldKill {
        HeldKill {
            agent_id: "a1".into(),
            kill: master_message::KillTask {
                framework_id: "f1".into(),
                task_id: t.into(),
                kill_policy: None,
            },
        }
    }

    fn agents(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("a{i}")).collect()
    }

    fn released_ids(d: &mut Drains) -> Vec<(String, Why)> {
        d.take_released()
            .into_iter()
            .map(|r| (r.task.1, r.why))
            .collect()
    }

    const PERIOD: Duration = Duration::from_secs(2);

    #[test]
    fn a_kill_is_released_when_the_last_agent_acknowledges() {
        let t0 = Instant::now();
        let mut d = Drains::new();
        assert!(d.start(key("t1"), held("t1"), t0, PERIOD));
        assert!(d.is_draining(&key("t1")));
        // A second kill of a draining task is not held twice.
        assert!(!d.start(key("t1"), held("t1"), t0, PERIOD));
        assert!(d.wants_sequence());
        let seq = d.sequence(&agents(3)).expect("a number");
        assert!(!d.wants_sequence());
        d.ack("a0", seq, t0);
        d.ack("a1", seq, t0);
        // Acknowledging again, an unknown agent, or a number never sent count for nothing.
        d.ack("a1", seq, t0);
        d.ack("zz", seq, t0);
        d.ack("a2", seq + 1, t0);
        assert!(d.take_released().is_empty());
        let t1 = t0 + Duration::from_millis(7);
        d.ack("a2", seq, t1);
        let r = d.take_released();
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].why, r[0].drained_for),
            (Why::Acknowledged, Duration::from_millis(7))
        );
        assert_eq!(r[0].held, held("t1"));
        assert!(d.is_empty() && d.next_deadline().is_none());
    }

    #[test]
    fn acknowledgements_are_cumulative_and_one_number_serves_a_batch() {
        let t0 = Instant::now();
        let mut d = Drains::new();
        d.start(key("t1"), held("t1"), t0, PERIOD);
        d.start(key("t2"), held("t2"), t0, PERIOD);
        let s1 = d.sequence(&agents(2)).expect("s1");
        d.start(key("t3"), held("t3"), t0, PERIOD);
        let s2 = d.sequence(&agents(2)).expect("s2");
        assert!(s2 > s1);
        // a0 acknowledges the later number only: that covers the earlier one too.
        d.ack("a0", s2, t0);
        assert!(d.take_released().is_empty());
        d.ack("a1", s1, t0);
        assert_eq!(
            released_ids(&mut d),
            [
                ("t1".to_string(), Why::Acknowledged),
                ("t2".to_string(), Why::Acknowledged)
            ]
        );
        d.ack("a1", s2, t0);
        assert_eq!(
            released_ids(&mut d),
            [("t3".to_string(), Why::Acknowledged)]
        );
    }

    #[test]
    fn the_deadline_releases_what_an_agent_never_acknowledged() {
        let t0 = Instant::now();
        let mut d = Drains::new();
        d.start(key("t1"), held("t1"), t0, PERIOD);
        let seq = d.sequence(&agents(2)).expect("seq");
        d.ack("a0", seq, t0);
        assert_eq!(d.next_deadline(), Some(t0 + PERIOD));
        d.tick(t0 + PERIOD - Duration::from_millis(1));
        assert!(d.take_released().is_empty());
        d.tick(t0 + PERIOD);
        let r = d.take_released();
        assert_eq!((r.len(), r[0].why, r[0].missing), (1, Why::Deadline, 1));
        // The late acknowledgement finds nothing to release.
        d.ack("a1", seq, t0 + PERIOD);
        assert!(d.take_released().is_empty() && d.is_empty());
    }

    #[test]
    fn the_period_is_bounded() {
        let t0 = Instant::now();
        let mut d = Drains::new();
        d.start(key("t1"), held("t1"), t0, Duration::from_secs(1_000_000));
        assert_eq!(d.next_deadline(), Some(t0 + MAX_DRAIN_PERIOD));
    }

    #[test]
    fn an_agent_that_leaves_is_waited_for_no_more() {
        let t0 = Instant::now();
        let mut d = Drains::new();
        d.start(key("t1"), held("t1"), t0, PERIOD);
        let seq = d.sequence(&agents(2)).expect("seq");
        d.ack("a0", seq, t0);
        d.agent_left("a1", t0);
        assert_eq!(
            released_ids(&mut d),
            [("t1".to_string(), Why::Acknowledged)]
        );
        // An agent missing from the next update's list has left too.
        d.start(key("t2"), held("t2"), t0, PERIOD);
        let s = d.sequence(&agents(2)).expect("s");
        d.start(key("t3"), held("t3"), t0, PERIOD);
        d.sequence(&["a0".to_string()]);
        d.ack("a0", s + 1, t0);
        assert_eq!(
            released_ids(&mut d),
            [
                ("t2".to_string(), Why::Acknowledged),
                ("t3".to_string(), Why::Acknowledged)
            ]
        );
    }

    #[test]
    fn an_agent_joining_later_owes_nothing_for_earlier_numbers() {
        let t0 = Instant::now();
        let mut d = Drains::new();
        d.start(key("t1"), held("t1"), t0, PERIOD);
        let s1 = d.sequence(&agents(1)).expect("s1");
        d.start(key("t2"), held("t2"), t0, PERIOD);
        // a1 connected in between: the update numbered s2 goes to both.
        let s2 = d.sequence(&agents(2)).expect("s2");
        d.ack("a0", s1, t0);
        assert_eq!(
            released_ids(&mut d),
            [("t1".to_string(), Why::Acknowledged)]
        );
        d.ack("a0", s2, t0);
        assert!(d.take_released().is_empty());
        d.ack("a1", s2, t0);
        assert_eq!(
            released_ids(&mut d),
            [("t2".to_string(), Why::Acknowledged)]
        );
    }

    #[test]
    fn no_agent_to_wait_for_releases_at_once_and_a_task_that_ends_is_not_killed() {
        let t0 = Instant::now();
        let mut d = Drains::new();
        d.start(key("t1"), held("t1"), t0, PERIOD);
        d.sequence(&[]);
        assert_eq!(
            released_ids(&mut d),
            [("t1".to_string(), Why::Acknowledged)]
        );
        // An update that turned out to change nothing waits for no one either, and leaves the
        // agents' numbers as they were.
        d.start(key("t0"), held("t0"), t0, PERIOD);
        let s = d.sequence(&agents(1)).expect("s");
        d.start(key("t9"), held("t9"), t0, PERIOD);
        d.release_unsequenced();
        assert_eq!(
            released_ids(&mut d),
            [("t9".to_string(), Why::Acknowledged)]
        );
        d.ack("a0", s, t0);
        assert_eq!(
            released_ids(&mut d),
            [("t0".to_string(), Why::Acknowledged)]
        );
        d.start(key("t2"), held("t2"), t0, PERIOD);
        d.sequence(&agents(1));
        d.finished(&key("t2"));
        d.start(key("t3"), held("t3"), t0, PERIOD);
        d.finished(&key("t3"));
        assert!(!d.wants_sequence());
        d.tick(t0 + PERIOD);
        assert!(d.take_released().is_empty() && d.is_empty());
        assert!(d.sequence(&agents(1)).is_none());
    }

    #[test]
    fn released_at_once_a_batch_is_timed_by_its_own_clock() {
        // Drains started in the future of the machine's clock: only the times passed in count.
        let t0 = Instant::now() + Duration::from_secs(3600);
        let mut d = Drains::new();
        d.start(key("t1"), held("t1"), t0, PERIOD);
        d.start(key("t2"), held("t2"), t0 + Duration::from_millis(5), PERIOD);
        d.release_unsequenced();
        let mut r: Vec<(String, Duration)> = d
            .take_released()
            .into_iter()
            .map(|r| (r.task.1, r.drained_for))
            .collect();
        r.sort();
        assert_eq!(
            r,
            [
                ("t1".to_string(), Duration::from_millis(5)),
                ("t2".to_string(), Duration::ZERO)
            ]
        );
        // Nothing unsequenced: no number, nothing released.
        d.release_unsequenced();
        assert!(d.sequence(&agents(1)).is_none() && d.take_released().is_empty());
    }

    #[test]
    fn the_number_of_drains_is_bounded() {
        let t0 = Instant::now();
        let mut d = Drains::new();
        for i in 0..MAX_DRAINING {
            assert!(d.start(key(&i.to_string()), held("x"), t0, PERIOD));
        }
        assert!(!d.start(key("one-more"), held("x"), t0, PERIOD));
    }
}
