//! The master's metrics, recorded through the `metrics` facade from the core's outputs and
//! rendered in the Prometheus text format at `GET /metrics`. Every name starts with `agora_master_`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::allocator::AllocationStats;
use crate::bookkeeping::{Counters, Gauges};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. `None` when another recorder was
/// installed first (an embedding program's own), in which case `/metrics` says so.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .as_ref()
}

/// Records one allocation cycle.
pub fn allocation_cycle(took: Duration, stats: &AllocationStats) {
    metrics::histogram!("agora_master_allocation_cycle_seconds").record(took.as_secs_f64());
    metrics::counter!("agora_master_allocation_cycles_total").increment(1);
    metrics::counter!("agora_master_offers_filtered_total").increment(stats.filtered as u64);
}

/// Publishes the gauges and totals of the core (called when `/metrics` is scraped).
pub fn publish(gauges: &Gauges, counters: &Counters) {
    metrics::gauge!("agora_master_agents", "state" => "active").set(gauges.agents_active as f64);
    metrics::gauge!("agora_master_agents", "state" => "unreachable")
        .set(gauges.agents_unreachable as f64);
    metrics::gauge!("agora_master_frameworks", "state" => "connected")
        .set(gauges.frameworks_connected as f64);
    metrics::gauge!("agora_master_frameworks", "state" => "disconnected")
        .set(gauges.frameworks_disconnected as f64);
    for state in [
        "TASK_STAGING",
        "TASK_STARTING",
        "TASK_RUNNING",
        "TASK_KILLING",
        "TASK_UNREACHABLE",
    ] {
        let n = gauges.tasks.get(state).copied().unwrap_or(0);
        metrics::gauge!("agora_master_tasks", "state" => state).set(n as f64);
    }
    metrics::gauge!("agora_master_offers_outstanding").set(gauges.offers as f64);
    for (role, share) in &gauges.role_shares {
        metrics::gauge!("agora_master_role_dominant_share", "role" => role.clone()).set(*share);
    }
    metrics::counter!("agora_master_offers_made_total").absolute(counters.offers_made);
    metrics::counter!("agora_master_offers_declined_total").absolute(counters.offers_declined);
    metrics::counter!("agora_master_offers_rescinded_total").absolute(counters.offers_rescinded);
    metrics::counter!("agora_master_tasks_launched_total").absolute(counters.tasks_launched);
    metrics::counter!("agora_master_tasks_invalid_total").absolute(counters.tasks_invalid);
    metrics::counter!("agora_master_status_updates_total").absolute(counters.status_updates);
    metrics::counter!("agora_master_agents_registered_total").absolute(counters.agents_registered);
    metrics::counter!("agora_master_agents_unreachable_total")
        .absolute(counters.agents_unreachable);
}
