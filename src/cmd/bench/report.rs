//! The figures of a `bench load` run, computed from the counters once it is over, and printed
//! as a table or as one JSON object (`--json`).

use std::sync::atomic::Ordering;

use super::args::LoadArgs;
use super::counters::Shared;
use super::failover::Failover;

pub(super) struct Report {
    api: String,
    agents: usize,
    frameworks: usize,
    tasks: usize,
    running: usize,
    finished: usize,
    failed: usize,
    register_seconds: f64,
    launch_seconds: f64,
    launches_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    offers: usize,
    offers_per_second: f64,
    master_rss_mib: Option<f64>,
    master_cpu_seconds: Option<f64>,
    driver_cpu_seconds: Option<f64>,
    accept_errors: usize,
    updates_resent: usize,
    /// `--failover` figures, already as JSON fields.
    failover: Option<serde_json::Map<String, serde_json::Value>>,
    errors: Vec<String>,
}

impl Report {
    pub(super) fn new(
        args: &LoadArgs,
        s: &Shared,
        p: &Phases,
        peak_rss_kib: Option<u64>,
        master_cpu_seconds: Option<f64>,
        driver_cpu_seconds: Option<f64>,
    ) -> Report {
        let mut lat: Vec<f64> = s
            .accept_ns
            .iter()
            .zip(&s.running_ns)
            .filter_map(|(a, r)| {
                let (a, r) = (a.load(Ordering::Relaxed), r.load(Ordering::Relaxed));
                (a > 0 && r >= a).then(|| (r - a) as f64 / 1e6)
            })
            .collect();
        lat.sort_by(f64::total_cmp);
        let pct = |q: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
            lat[i]
        };
        let running = s.running.load(Ordering::Relaxed);
        let launch_seconds = (p.launch_end - p.launch_start).max(1e-9);
        let offers = s.offers.load(Ordering::Relaxed);
        Report {
            api: args.api.clone(),
            agents: args.agents,
            frameworks: args.frameworks,
            tasks: args.tasks,
            running,
            finished: s.finished.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            register_seconds: p.register_seconds,
            launch_seconds,
            launches_per_second: running as f64 / launch_seconds,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            max_ms: lat.last().copied().unwrap_or(0.0),
            offers,
            offers_per_second: offers as f64 / launch_seconds,
            master_rss_mib: peak_rss_kib.map(|k| k as f64 / 1024.0),
            master_cpu_seconds,
            driver_cpu_seconds,
            accept_errors: s.accept_errors.load(Ordering::Relaxed),
            updates_resent: s.updates_resent.load(Ordering::Relaxed),
            failover: p.failover.as_ref().map(|f| {
                let r2 = |x: f64| (x * 100.0).round() / 100.0;
                let mut m = serde_json::Map::new();
                m.insert("failover_seconds".into(), r2(f.seconds).into());
                m.insert(
                    "failover_leader_seen_seconds".into(),
                    f.leader_seen_seconds.map(r2).into(),
                );
                m.insert("failover_agents_reregistered".into(), f.reregistered.into());
                m.insert("failover_tasks_reported".into(), f.tasks_reported.into());
                m.insert(
                    "failover_new_leader_agents_active".into(),
                    f.agents_active.into(),
                );
                m.insert(
                    "failover_new_leader_tasks_running".into(),
                    f.tasks_running.into(),
                );
                m.insert(
                    "failover_new_leader_cpu_seconds".into(),
                    f.new_leader_cpu_seconds.map(r2).into(),
                );
                m.insert(
                    "failover_new_leader_rss_mib".into(),
                    f.new_leader_rss_mib.map(r2).into(),
                );
                m
            }),
            errors: s.errors.lock().map(|v| v.clone()).unwrap_or_default(),
        }
    }

    pub(super) fn json(&self) -> serde_json::Value {
        let r2 = |x: f64| (x * 100.0).round() / 100.0;
        let mut v = serde_json::json!({
            "api": self.api,
            "agents": self.agents,
            "frameworks": self.frameworks,
            "tasks": self.tasks,
            "tasks_running": self.running,
            "tasks_finished": self.finished,
            "tasks_failed": self.failed,
            "register_seconds": r2(self.register_seconds),
            "launch_seconds": r2(self.launch_seconds),
            "launches_per_second": r2(self.launches_per_second),
            "launch_latency_ms": {"p50": r2(self.p50_ms), "p99": r2(self.p99_ms), "max": r2(self.max_ms)},
            "offers": self.offers,
            "offers_per_second": r2(self.offers_per_second),
            "master_rss_mib": self.master_rss_mib.map(r2),
            "master_cpu_seconds": self.master_cpu_seconds.map(r2),
            "driver_cpu_seconds": self.driver_cpu_seconds.map(r2),
            "accept_errors": self.accept_errors,
            "updates_resent": self.updates_resent,
            "errors": self.errors,
        });
        if let (Some(f), Some(obj)) = (&self.failover, v.as_object_mut()) {
            obj.extend(f.clone());
        }
        v
    }

    pub(super) fn print_table(&self) {
        let opt = |x: Option<f64>| x.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
        println!("api                   {}", self.api);
        println!("agents                {}", self.agents);
        println!("frameworks            {}", self.frameworks);
        println!(
            "tasks                 {} (running {}, finished {}, failed {})",
            self.tasks, self.running, self.finished, self.failed
        );
        println!("register_seconds      {:.2}", self.register_seconds);
        println!("launch_seconds        {:.2}", self.launch_seconds);
        println!("launches_per_second   {:.0}", self.launches_per_second);
        println!(
            "launch_latency_ms     p50 {:.1}  p99 {:.1}  max {:.1}",
            self.p50_ms, self.p99_ms, self.max_ms
        );
        println!(
            "offers_per_second     {:.0} ({} offers)",
            self.offers_per_second, self.offers
        );
        println!("master_rss_mib (peak) {}", opt(self.master_rss_mib));
        println!("master_cpu_seconds    {}", opt(self.master_cpu_seconds));
        println!("driver_cpu_seconds    {}", opt(self.driver_cpu_seconds));
        println!("accept_errors         {}", self.accept_errors);
        for (k, v) in self.failover.iter().flatten() {
            println!("{k:<21} {v}");
        }
        for e in &self.errors {
            println!("error                 {e}");
        }
    }
}

/// When each phase ended, in seconds since the driver started counting.
pub(super) struct Phases {
    pub(super) register_seconds: f64,
    /// First accept sent.
    pub(super) launch_start: f64,
    /// Last TASK_RUNNING received (or the deadline).
    pub(super) launch_end: f64,
    pub(super) failover: Option<Failover>,
    pub(super) incomplete: Option<String>,
}
