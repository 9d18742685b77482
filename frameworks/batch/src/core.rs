//! The batch scheduler's core: jobs, their schedules and dependencies, runs and the tasks of each
//! run, retries, deadlines and statistics. Pure and synchronous: the driver passes the time in,
//! claims launches (which are recorded — and persisted by the driver — *before* any task is
//! launched, so a failover can neither lose nor duplicate a run), feeds task updates back, and
//! carries out the kills this core asks for.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};

use crate::job::{FieldError, InvalidJob, Job};
use crate::schedule::{parse_duration, Schedule};

/// Runs kept per job in the history.
pub const HISTORY_PER_JOB: usize = 100;

/// Schedule occurrences one job may start or skip in one tick. Beyond that (a fine-grained period
/// far in the past), the rest is recorded as one skip and the schedule resumes from now: a tick
/// does bounded work whatever the saved schedule says.
pub const MAX_OCCURRENCES_PER_TICK: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Skipped,
}

/// One task of a run (one attempt of one slot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunTask {
    pub task_id: String,
    pub slot: u32,
    pub attempt: u32,
    /// `PENDING` (waiting for an offer or a retry delay), then the Agora task states.
    pub state: String,
    pub exit_code: Option<i32>,
    pub agent_id: String,
    pub message: String,
    pub launched_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// A pending retry waits until then.
    pub not_before: Option<DateTime<Utc>>,
}

impl RunTask {
    fn active(&self) -> bool {
        !agora_proto::is_terminal_name(&self.state)
    }
}

/// One execution of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: u64,
    pub job: String,
    /// The schedule occurrence it is for (none for manual and dependent runs).
    pub scheduled_for: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: RunStatus,
    /// Why it ended (or was skipped), for people.
    pub reason: String,
    pub trigger: String,
    pub tasks: Vec<RunTask>,
}

impl Run {
    fn successes(&self) -> u32 {
        self.tasks
            .iter()
            .filter(|t| t.state == "TASK_FINISHED")
            .count() as u32
    }
}

/// Read-only statistics Chronos returns with a job. Times are as Chronos writes them: UTC with
/// milliseconds, `2026-11-24T12:00:00.000Z` (empty: never).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub success_count: u64,
    pub error_count: u64,
    pub last_success: String,
    pub last_error: String,
    /// Failed runs since the last successful one (state saved before it existed reads 0).
    #[serde(default)]
    pub errors_since_last_success: u64,
}

/// A time as Chronos's job statistics carry it (`2026-11-24T12:00:00.000Z`).
pub fn chronos_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    pub job: Job,
    pub next_at: Option<DateTime<Utc>>,
    pub occurrences: u64,
    pub stats: Stats,
    #[serde(skip)]
    schedule: Option<Schedule>,
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Kill(String),
}

/// A task to launch, claimed from the core.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub task_id: String,
    pub job: Job,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Invalid(#[from] InvalidJob),
    #[error("job '{0}' does not exist")]
    UnknownJob(String),
    #[error("job '{0}' already exists; update it with PUT")]
    Exists(String),
    #[error("job '{job}' is a parent of {children:?}, which cannot take its place (too many parents): delete them first")]
    HasChildren { job: String, children: Vec<String> },
}

/// See the module documentation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BatchCore {
    /// The framework id the tasks run under (for sandbox paths).
    #[serde(default)]
    pub framework_id: Option<String>,
    jobs: BTreeMap<String, JobState>,
    runs: Vec<Run>,
    next_run: u64,
    /// Kills asked for by API calls, for the driver to carry out after the call.
    #[serde(skip)]
    deferred: Vec<Effect>,
}

fn backoff(attempt: u32) -> ChronoDuration {
    ChronoDuration::seconds(1i64 << attempt.saturating_sub(1).min(6))
}

impl BatchCore {
    /// Kills that API calls asked for since the last call.
    pub fn take_deferred(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.deferred)
    }

    /// Re-parses schedules after loading a saved core, and breaks any dependency cycle an older
    /// version stored (it accepted them; they ran forever and no job of them could be deleted):
    /// jobs are walked depth-first up their parents, by name, and each parent edge that closes a
    /// cycle is dropped (`a ⇄ b` keeps `b`'s parent `a`), in one pass over the graph. Returns the core and the dropped `(child, parent)` edges.
    pub fn restore_reporting(mut self, now: DateTime<Utc>) -> (Self, Vec<(String, String)>) {
        for st in self.jobs.values_mut() {
            st.schedule = if st.job.schedule.is_empty() {
                None
            } else {
                Schedule::parse(&st.job.schedule, now).ok()
            };
        }
        let dropped = self.back_edges();
        for (child, parent) in &dropped {
            if let Some(st) = self.jobs.get_mut(child) {
                st.job.parents.retain(|x| x != parent);
            }
        }
        (self, dropped)
    }

    /// [`BatchCore::restore_reporting`] without the report.
    pub fn restore(self, now: DateTime<Utc>) -> Self {
        self.restore_reporting(now).0
    }

    pub fn jobs(&self) -> impl Iterator<Item = &JobState> {
        self.jobs.values()
    }

    pub fn job(&self, name: &str) -> Option<&JobState> {
        self.jobs.get(name)
    }

    /// A job's runs, newest first.
    pub fn runs_of(&self, name: &str) -> Vec<&Run> {
        let mut r: Vec<&Run> = self.runs.iter().filter(|r| r.job == name).collect();
        r.reverse();
        r
    }

    /// Adds a job (`replace`: or updates it).
    ///
    /// # Errors
    /// [`BatchError::Invalid`] naming each bad field; [`BatchError::Exists`] / [`BatchError::UnknownJob`].
    pub fn put_job(
        &mut self,
        job: Job,
        replace: bool,
        now: DateTime<Utc>,
    ) -> Result<(), BatchError> {
        let exists = self.jobs.contains_key(&job.name);
        if exists && !replace {
            return Err(BatchError::Exists(job.name));
        }
        let schedule = job.validate(&|p| self.jobs.contains_key(p), now)?;
        if let Some(path) = self.cycle_through(&job.name, &job.parents) {
            return Err(BatchError::Invalid(InvalidJob(vec![FieldError {
                path: "/parents".into(),
                errors: vec![format!(
                    "would make a dependency cycle: {}",
                    path.join(" → ")
                )],
            }])));
        }
        // An occurrence missed by less than the epsilon still runs (as Chronos does): a job
        // posted with `R/<now>/…` runs at once, though `now` has moved on a little since.
        let epsilon = parse_duration(&job.epsilon)
            .map(|p| p.approx_seconds())
            .unwrap_or(60);
        let since = ChronoDuration::try_seconds(epsilon)
            .and_then(|e| now.checked_sub_signed(e))
            .unwrap_or(now);
        let next_at = schedule.as_ref().and_then(|s| s.first_at_or_after(since));
        let (occurrences, stats) = match self.jobs.get(&job.name) {
            Some(old) if old.job.schedule == job.schedule => (old.occurrences, old.stats.clone()),
            Some(old) => (0, old.stats.clone()),
            None => (0, Stats::default()),
        };
        let next_at = match self.jobs.get(&job.name) {
            Some(old) if old.job.schedule == job.schedule => old.next_at,
            _ => next_at,
        };
        self.jobs.insert(
            job.name.clone(),
            JobState {
                job,
                next_at,
                occurrences,
                stats,
                schedule,
            },
        );
        Ok(())
    }

    /// Deletes a job and kills its running tasks. Its children stay, as Chronos keeps them: each
    /// takes the deleted job's place — its parents instead (a dependent job deleted), or, when
    /// the deleted job was its only parent, its schedule (a scheduled job deleted).
    ///
    /// # Errors
    /// [`BatchError::UnknownJob`]; [`BatchError::HasChildren`] when a child could not take the
    /// job's place (it would have too many parents): nothing is changed then.
    pub fn delete_job(
        &mut self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Effect>, BatchError> {
        let Some(deleted) = self.jobs.get(name).map(|j| j.job.clone()) else {
            return Err(BatchError::UnknownJob(name.into()));
        };
        // A child that is also an ancestor is in a cycle with this job (stored by an older version
        // that accepted cycles): it only loses the edge, or no job of the cycle could ever go.
        let ancestors = self.ancestors(name);
        let (in_cycle, children): (Vec<String>, Vec<String>) = self
            .jobs
            .values()
            .filter(|j| j.job.parents.iter().any(|p| p == name))
            .map(|j| j.job.name.clone())
            .partition(|c| ancestors.contains(c.as_str()));
        let adopted = self.adopted_children(&deleted, &children, now)?;
        let effects = self.kill_job(name, "the job was deleted", now)?;
        for child in adopted {
            // Valid (checked above) and acyclic: the new parents are the child's ancestors.
            self.put_job(child, true, now)?;
        }
        self.jobs.remove(name);
        for c in in_cycle {
            if let Some(st) = self.jobs.get_mut(&c) {
                st.job.parents.retain(|p| p != name);
            }
        }
        Ok(effects)
    }

    /// The children of `deleted` as they become once it is gone, each checked as the API checks
    /// a job; all or nothing.
    fn adopted_children(
        &self,
        deleted: &Job,
        children: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<Job>, BatchError> {
        let mut adopted = Vec::new();
        for c in children {
            let Some(st) = self.jobs.get(c) else { continue };
            let mut job = st.job.clone();
            job.parents.retain(|p| p != &deleted.name);
            for p in &deleted.parents {
                if p != c && !job.parents.contains(p) {
                    job.parents.push(p.clone());
                }
            }
            if job.parents.is_empty() {
                job.schedule = deleted.schedule.clone();
                job.schedule_time_zone = deleted.schedule_time_zone.clone();
            }
            let known = |p: &str| p != deleted.name && self.jobs.contains_key(p);
            if job.validate(&known, now).is_err() {
                return Err(BatchError::HasChildren {
                    job: deleted.name.clone(),
                    children: children.to_vec(),
                });
            }
            adopted.push(job);
        }
        Ok(adopted)
    }

    /// Starts a run now (Chronos `PUT /job/{name}`).
    ///
    /// # Errors
    /// [`BatchError::UnknownJob`].
    pub fn run_now(&mut self, name: &str, now: DateTime<Utc>) -> Result<u64, BatchError> {
        if !self.jobs.contains_key(name) {
            return Err(BatchError::UnknownJob(name.into()));
        }
        Ok(self.start_run(name, None, "manual", now))
    }

    /// Records a success without running (Chronos `POST /job/success/{name}`); children follow.
    ///
    /// # Errors
    /// [`BatchError::UnknownJob`].
    pub fn mark_success(&mut self, name: &str, now: DateTime<Utc>) -> Result<(), BatchError> {
        let st = self
            .jobs
            .get_mut(name)
            .ok_or_else(|| BatchError::UnknownJob(name.into()))?;
        st.stats.success_count += 1;
        st.stats.last_success = chronos_time(now);
        st.stats.errors_since_last_success = 0;
        self.next_run += 1;
        self.runs.push(Run {
            id: self.next_run,
            job: name.into(),
            scheduled_for: None,
            started_at: now,
            finished_at: Some(now),
            status: RunStatus::Succeeded,
            reason: "marked successful by request".into(),
            trigger: "manual".into(),
            tasks: Vec::new(),
        });
        self.trigger_children(name, now);
        Ok(())
    }

    /// Kills the tasks of the job's running runs, which fail.
    ///
    /// # Errors
    /// [`BatchError::UnknownJob`].
    pub fn kill_job(
        &mut self,
        name: &str,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Effect>, BatchError> {
        if !self.jobs.contains_key(name) {
            return Err(BatchError::UnknownJob(name.into()));
        }
        let mut effects = Vec::new();
        let ids: Vec<usize> = (0..self.runs.len())
            .filter(|&i| self.runs[i].job == name && self.runs[i].status == RunStatus::Running)
            .collect();
        for i in ids {
            effects.extend(self.finish_run(i, RunStatus::Failed, why, now));
        }
        self.deferred.extend(effects.iter().cloned());
        Ok(effects)
    }

    fn start_run(
        &mut self,
        name: &str,
        scheduled_for: Option<DateTime<Utc>>,
        trigger: &str,
        now: DateTime<Utc>,
    ) -> u64 {
        self.next_run += 1;
        let id = self.next_run;
        self.runs.push(Run {
            id,
            job: name.into(),
            scheduled_for,
            started_at: now,
            finished_at: None,
            status: RunStatus::Running,
            reason: String::new(),
            trigger: trigger.into(),
            tasks: Vec::new(),
        });
        self.trim_history(name);
        id
    }

    fn skip(&mut self, name: &str, scheduled_for: DateTime<Utc>, why: String, now: DateTime<Utc>) {
        self.next_run += 1;
        self.runs.push(Run {
            id: self.next_run,
            job: name.into(),
            scheduled_for: Some(scheduled_for),
            started_at: now,
            finished_at: Some(now),
            status: RunStatus::Skipped,
            reason: why,
            trigger: "schedule".into(),
            tasks: Vec::new(),
        });
        self.trim_history(name);
    }

    fn trim_history(&mut self, name: &str) {
        let n = self.runs.iter().filter(|r| r.job == name).count();
        if n > HISTORY_PER_JOB {
            let mut extra = n - HISTORY_PER_JOB;
            self.runs.retain(|r| {
                if extra > 0 && r.job == name && r.status != RunStatus::Running {
                    extra -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }

    fn active_run(&self, name: &str) -> bool {
        self.runs
            .iter()
            .any(|r| r.job == name && r.status == RunStatus::Running)
    }

    /// The `(child, parent)` edges that close a cycle in an iterative depth-first walk up the
    /// parents, roots taken by name (no recursion: a cycle of thousands must not overflow).
    fn back_edges(&self) -> Vec<(String, String)> {
        // 1: on the walk's current path; 2: done.
        let mut color: HashMap<&str, u8> = HashMap::new();
        let mut dropped = Vec::new();
        for root in self.jobs.keys() {
            if color.contains_key(root.as_str()) {
                continue;
            }
            color.insert(root, 1);
            let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
            while let Some((node, i)) = stack.last_mut() {
                let node: &str = node;
                let parents = self.jobs.get(node).map_or(&[][..], |j| &j.job.parents[..]);
                if let Some(p) = parents.get(*i) {
                    *i += 1;
                    match color.get(p.as_str()) {
                        Some(1) => dropped.push((node.to_string(), p.clone())),
                        None if self.jobs.contains_key(p) => {
                            color.insert(p, 1);
                            stack.push((p, 0));
                        }
                        _ => {}
                    }
                } else {
                    color.insert(node, 2);
                    stack.pop();
                }
            }
        }
        dropped
    }

    /// Every job `name` depends on, directly or not (walked without recursion: a chain of
    /// thousands must not overflow the stack, a stored cycle must not loop).
    fn ancestors(&self, name: &str) -> HashSet<&str> {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut todo: Vec<&str> = vec![name];
        while let Some(j) = todo.pop() {
            let Some(st) = self.jobs.get(j) else { continue };
            for p in &st.job.parents {
                if seen.insert(p.as_str()) {
                    todo.push(p.as_str());
                }
            }
        }
        seen
    }

    /// The cycle `name` with `parents` would close, as job names from `name` back to it: some
    /// parent already depends (directly or not) on `name`.
    fn cycle_through(&self, name: &str, parents: &[String]) -> Option<Vec<String>> {
        // Breadth-first from the parents up their parents, remembering who led where.
        let mut via: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue: std::collections::VecDeque<&str> = std::collections::VecDeque::new();
        for p in parents {
            if p != name && !via.contains_key(p.as_str()) {
                via.insert(p.as_str(), name);
                queue.push_back(p.as_str());
            }
        }
        while let Some(j) = queue.pop_front() {
            let Some(st) = self.jobs.get(j) else { continue };
            for p in &st.job.parents {
                if p == name {
                    // name → j → … → name: walk `via` back from j.
                    let mut path = vec![name.to_string()];
                    let mut at = j;
                    let mut chain = vec![at.to_string()];
                    while let Some(&prev) = via.get(at) {
                        if prev == name {
                            break;
                        }
                        chain.push(prev.to_string());
                        at = prev;
                    }
                    chain.reverse();
                    path.extend(chain);
                    path.push(name.to_string());
                    if path.len() > 8 {
                        let n = path.len();
                        path.splice(3..n - 2, [format!("… {} more …", n - 5)]);
                    }
                    return Some(path);
                }
                if !via.contains_key(p.as_str()) {
                    via.insert(p.as_str(), j);
                    queue.push_back(p.as_str());
                }
            }
        }
        None
    }

    /// Timers: due schedule occurrences start (or are skipped and recorded), runs past their
    /// deadline are failed.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Effect> {
        let names: Vec<String> = self.jobs.keys().cloned().collect();
        for name in names {
            let mut handled = 0u32;
            while let Some(st) = self.jobs.get(&name) {
                let (Some(next), Some(schedule)) = (st.next_at, st.schedule.clone()) else {
                    break;
                };
                if next > now || st.job.disabled {
                    break;
                }
                if schedule.repeats().is_some_and(|n| st.occurrences >= n) {
                    if let Some(st) = self.jobs.get_mut(&name) {
                        st.next_at = None;
                    }
                    break;
                }
                let epsilon = parse_duration(&st.job.epsilon)
                    .map(|p| p.approx_seconds())
                    .unwrap_or(60);
                let late = (now - next).num_seconds();
                let concurrent = st.job.concurrent;
                handled += 1;
                if handled > MAX_OCCURRENCES_PER_TICK {
                    let resume = schedule.first_at_or_after(now);
                    self.skip(
                        &name,
                        next,
                        format!(
                            "more than {MAX_OCCURRENCES_PER_TICK} occurrences were due at once; \
                             resuming from now"
                        ),
                        now,
                    );
                    if let Some(st) = self.jobs.get_mut(&name) {
                        st.occurrences += 1;
                        st.next_at = resume.filter(|r| *r > next);
                    }
                    break;
                }
                if late > epsilon {
                    // Far behind (a long outage): record the gap once and resume from now.
                    let resume = schedule.first_at_or_after(now);
                    self.skip(
                        &name,
                        next,
                        format!("missed by {late} s, more than its epsilon of {epsilon} s"),
                        now,
                    );
                    if let Some(st) = self.jobs.get_mut(&name) {
                        st.occurrences += 1;
                        st.next_at = resume.filter(|r| *r > next);
                        if st.next_at.is_none() {
                            st.next_at = schedule.next_after(next).filter(|n| *n > next);
                        }
                    }
                    continue;
                }
                if !concurrent && self.active_run(&name) {
                    self.skip(
                        &name,
                        next,
                        "the previous run is still going and the job is not concurrent".into(),
                        now,
                    );
                } else {
                    self.start_run(&name, Some(next), "schedule", now);
                }
                if let Some(st) = self.jobs.get_mut(&name) {
                    st.occurrences += 1;
                    // Strictly later, or the loop would never end.
                    st.next_at = schedule.next_after(next).filter(|n| *n > next);
                }
            }
        }
        let mut effects = Vec::new();
        for i in 0..self.runs.len() {
            let r = &self.runs[i];
            if r.status != RunStatus::Running {
                continue;
            }
            let deadline = self
                .jobs
                .get(&r.job)
                .map(|j| j.job.active_deadline_seconds)
                .unwrap_or(0.0);
            if deadline > 0.0 && (now - r.started_at).num_milliseconds() as f64 > deadline * 1000.0
            {
                let why = format!("exceeded its activeDeadlineSeconds of {deadline} s");
                effects.extend(self.finish_run(i, RunStatus::Failed, &why, now));
            }
        }
        effects
    }

    /// Whether any task is waiting for an offer now (so the driver revives or suppresses).
    pub fn wants_offers(&self, now: DateTime<Utc>) -> bool {
        self.runs
            .iter()
            .any(|r| r.status == RunStatus::Running && self.slots_to_fill(r, now) > 0)
    }

    /// Launches a run can make now: its retries whose delay has passed, plus new slots up to
    /// `min(parallelism, completions still missing)` tasks in flight.
    fn slots_to_fill(&self, r: &Run, now: DateTime<Utc>) -> u32 {
        let Some(st) = self.jobs.get(&r.job) else {
            return 0;
        };
        let remaining = st.job.completions.saturating_sub(r.successes());
        let in_flight = r.tasks.iter().filter(|t| t.active()).count() as u32;
        let ready_retries = r
            .tasks
            .iter()
            .filter(|t| t.state == "PENDING" && t.not_before.is_none_or(|nb| nb <= now))
            .count() as u32;
        let new_slots = st.job.parallelism.min(remaining).saturating_sub(in_flight);
        ready_retries + new_slots
    }

    /// Claims up to `max` launches: they are recorded as STAGING tasks before the driver launches
    /// them (persist the core first).
    pub fn claim_launches(&mut self, max: usize, now: DateTime<Utc>) -> Vec<Launch> {
        let mut out = Vec::new();
        for i in 0..self.runs.len() {
            if out.len() >= max {
                break;
            }
            if self.runs[i].status != RunStatus::Running {
                continue;
            }
            let Some(job) = self.jobs.get(&self.runs[i].job).map(|j| j.job.clone()) else {
                continue;
            };
            let mut n = self.slots_to_fill(&self.runs[i], now) as usize;
            let run_id = self.runs[i].id;
            // Ready retries first.
            for t in self.runs[i].tasks.iter_mut() {
                if n == 0 || out.len() >= max {
                    break;
                }
                if t.state == "PENDING" && t.not_before.is_none_or(|nb| nb <= now) {
                    t.state = "TASK_STAGING".into();
                    t.launched_at = Some(now);
                    out.push(Launch {
                        task_id: t.task_id.clone(),
                        job: job.clone(),
                    });
                    n -= 1;
                }
            }
            while n > 0 && out.len() < max {
                let slot = self.runs[i]
                    .tasks
                    .iter()
                    .map(|t| t.slot + 1)
                    .max()
                    .unwrap_or(0);
                let task_id = format!("{}.{run_id}.{slot}.1", job.name);
                self.runs[i].tasks.push(RunTask {
                    task_id: task_id.clone(),
                    slot,
                    attempt: 1,
                    state: "TASK_STAGING".into(),
                    exit_code: None,
                    agent_id: String::new(),
                    message: String::new(),
                    launched_at: Some(now),
                    finished_at: None,
                    not_before: None,
                });
                out.push(Launch {
                    task_id,
                    job: job.clone(),
                });
                n -= 1;
            }
        }
        out
    }

    /// Gives a claimed launch back (no offer fitted after all).
    pub fn unclaim(&mut self, task_id: &str) {
        for r in self.runs.iter_mut() {
            if let Some(t) = r.tasks.iter_mut().find(|t| t.task_id == task_id) {
                if t.state == "TASK_STAGING" {
                    t.state = "PENDING".into();
                    t.launched_at = None;
                }
            }
        }
    }

    /// The tasks the core believes are launched and not ended (to reconcile after a failover).
    pub fn live_tasks(&self) -> Vec<(String, String)> {
        self.runs
            .iter()
            .filter(|r| r.status == RunStatus::Running)
            .flat_map(|r| r.tasks.iter())
            .filter(|t| t.active() && t.state != "PENDING")
            .map(|t| (t.task_id.clone(), t.agent_id.clone()))
            .collect()
    }

    /// A task's new state. Returns kills to carry out.
    pub fn on_update(
        &mut self,
        task_id: &str,
        state: &str,
        exit_code: Option<i32>,
        agent_id: &str,
        message: &str,
        now: DateTime<Utc>,
    ) -> Vec<Effect> {
        let Some(ri) = self
            .runs
            .iter()
            .position(|r| r.tasks.iter().any(|t| t.task_id == task_id))
        else {
            return Vec::new();
        };
        if self.runs[ri].status != RunStatus::Running {
            // A straggler of a finished run (killed with it, or ending late): record how it ended,
            // so that the run's tasks do not show it running forever, and make sure it is gone.
            let terminal = agora_proto::is_terminal_name(state);
            if let Some(t) = self.runs[ri]
                .tasks
                .iter_mut()
                .find(|t| t.task_id == task_id && t.active())
            {
                t.state = state.to_string();
                if !agent_id.is_empty() {
                    t.agent_id = agent_id.to_string();
                }
                if exit_code.is_some() {
                    t.exit_code = exit_code;
                }
                if !message.is_empty() {
                    t.message = message.to_string();
                }
                if terminal {
                    t.finished_at = Some(now);
                }
            }
            return if terminal {
                Vec::new()
            } else {
                vec![Effect::Kill(task_id.into())]
            };
        }
        let Some(ti) = self.runs[ri]
            .tasks
            .iter()
            .position(|t| t.task_id == task_id)
        else {
            return Vec::new();
        };
        let task = &mut self.runs[ri].tasks[ti];
        if agora_proto::is_terminal_name(&task.state) {
            return Vec::new();
        }
        task.state = state.to_string();
        if !agent_id.is_empty() {
            task.agent_id = agent_id.to_string();
        }
        if exit_code.is_some() {
            task.exit_code = exit_code;
        }
        if !message.is_empty() {
            task.message = message.to_string();
        }
        if !agora_proto::is_terminal_name(state) {
            return Vec::new();
        }
        task.finished_at = Some(now);
        let (slot, attempt) = (task.slot, task.attempt);
        let Some(job) = self.jobs.get(&self.runs[ri].job).map(|j| j.job.clone()) else {
            return Vec::new();
        };
        if state == "TASK_FINISHED" {
            if self.runs[ri].successes() >= job.completions {
                return self.finish_run(ri, RunStatus::Succeeded, "all completions succeeded", now);
            }
            return Vec::new();
        }
        if attempt <= job.retries {
            let run_id = self.runs[ri].id;
            self.runs[ri].tasks.push(RunTask {
                task_id: format!("{}.{run_id}.{slot}.{}", job.name, attempt + 1),
                slot,
                attempt: attempt + 1,
                state: "PENDING".into(),
                exit_code: None,
                agent_id: String::new(),
                message: format!("retry {} of {} after {state}", attempt, job.retries),
                launched_at: None,
                finished_at: None,
                not_before: Some(now.checked_add_signed(backoff(attempt)).unwrap_or(now)),
            });
            return Vec::new();
        }
        let why = format!(
            "task {task_id} ended {state} ({}) after {attempt} attempt(s)",
            if message.is_empty() {
                "no message"
            } else {
                message
            }
        );
        self.finish_run(ri, RunStatus::Failed, &why, now)
    }

    fn finish_run(
        &mut self,
        ri: usize,
        status: RunStatus,
        why: &str,
        now: DateTime<Utc>,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let run = &mut self.runs[ri];
        run.status = status;
        run.finished_at = Some(now);
        run.reason = why.to_string();
        for t in run.tasks.iter_mut() {
            if t.state == "PENDING" {
                t.state = "TASK_KILLED".into();
                t.message = "the run ended before it launched".into();
            } else if t.active() {
                effects.push(Effect::Kill(t.task_id.clone()));
            }
        }
        let name = run.job.clone();
        if let Some(st) = self.jobs.get_mut(&name) {
            match status {
                RunStatus::Succeeded => {
                    st.stats.success_count += 1;
                    st.stats.last_success = chronos_time(now);
                    st.stats.errors_since_last_success = 0;
                }
                RunStatus::Failed => {
                    st.stats.error_count += 1;
                    st.stats.last_error = chronos_time(now);
                    st.stats.errors_since_last_success += 1;
                }
                _ => {}
            }
        }
        if status == RunStatus::Succeeded {
            self.trigger_children(&name, now);
        }
        effects
    }

    fn last_finished(&self, name: &str) -> Option<&Run> {
        self.runs
            .iter()
            .rev()
            .find(|r| r.job == name && matches!(r.status, RunStatus::Succeeded | RunStatus::Failed))
    }

    /// Children of `parent` whose parents' latest runs all succeeded start a run. A child that is
    /// also an ancestor of `parent` (a cycle stored by an older version) is not started: a cycle
    /// would run forever.
    fn trigger_children(&mut self, parent: &str, now: DateTime<Utc>) {
        let ancestors = self.ancestors(parent);
        let children: Vec<String> = self
            .jobs
            .values()
            .filter(|j| !j.job.disabled && j.job.parents.iter().any(|p| p == parent))
            .filter(|j| !ancestors.contains(j.job.name.as_str()) && j.job.name != parent)
            .map(|j| j.job.name.clone())
            .collect();
        for child in children {
            let parents = self.jobs[&child].job.parents.clone();
            let ready = parents.iter().all(|p| {
                self.last_finished(p)
                    .is_some_and(|r| r.status == RunStatus::Succeeded)
            });
            let concurrent = self.jobs[&child].job.concurrent;
            if ready && (concurrent || !self.active_run(&child)) {
                self.start_run(&child, None, &format!("parent {parent} succeeded"), now);
            }
        }
    }

    /// Durations of successful runs, for `/job/stat` and `/stats`.
    pub fn durations(&self, name: &str) -> Vec<f64> {
        self.runs
            .iter()
            .filter(|r| r.job == name && r.status == RunStatus::Succeeded)
            .filter_map(|r| {
                r.finished_at
                    .map(|f| (f - r.started_at).num_milliseconds() as f64 / 1000.0)
            })
            .collect()
    }

    /// Parent → child edges.
    pub fn edges(&self) -> Vec<(String, String)> {
        self.jobs
            .values()
            .flat_map(|j| {
                j.job
                    .parents
                    .iter()
                    .map(|p| (p.clone(), j.job.name.clone()))
            })
            .collect()
    }

    /// Whether the job has a run going.
    pub fn is_running(&self, name: &str) -> bool {
        self.active_run(name)
    }
}

#[cfg(test)]
mod tests;
