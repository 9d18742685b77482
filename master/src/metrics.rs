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

/// Records status-update round trips: an agent's update reaching the master → the framework's
/// acknowledgement of it reaching the master.
pub fn status_update_round_trips(round_trips: &[Duration]) {
    for took in round_trips {
        metrics::histogram!("agora_master_status_update_round_trip_seconds")
            .record(took.as_secs_f64());
    }
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
    // Drain before kill: kills held, and how they were let go.
    metrics::counter!("agora_master_drains_started_total").absolute(counters.drains_started);
    metrics::counter!("agora_master_drains_total", "outcome" => "acknowledged")
        .absolute(counters.drains_acknowledged);
    metrics::counter!("agora_master_drains_total", "outcome" => "deadline")
        .absolute(counters.drains_timed_out);
}

/// Records every API call's latency (`agora_master_api_request_seconds`), labelled by gRPC method
/// or HTTP route, and status class.
pub async fn time_request(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = req.uri().path();
    // gRPC methods and our HTTP routes are a bounded set; anything else is one label.
    let route = if path.starts_with("/agora.v1.")
        || matches!(path, "/" | "/state" | "/metrics" | "/health" | "/redirect")
        || path.starts_with("/api/v1/")
    {
        if path.starts_with("/api/v1/agents/") || path.starts_with("/api/v1/frameworks/") {
            // Drop the id: /api/v1/agents/{id}/drain → /api/v1/agents/drain.
            let mut parts: Vec<&str> = path.split('/').collect();
            if parts.len() > 4 {
                parts.remove(4);
            }
            parts.join("/")
        } else if path.starts_with("/api/v1/quota/") {
            "/api/v1/quota".to_string()
        } else {
            path.to_string()
        }
    } else {
        "other".to_string()
    };
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    let class = format!("{}xx", response.status().as_u16() / 100);
    // Streams (Subscribe, Session) are timed until their response headers, not their end.
    metrics::histogram!("agora_master_api_request_seconds", "route" => route, "status" => class)
        .record(started.elapsed().as_secs_f64());
    response
}
