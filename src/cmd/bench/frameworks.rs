//! A simulated framework: subscribes, packs as many tasks as fit into every offer until the run's
//! task budget is handed out (then declines), and acknowledges every update. Accepts and
//! acknowledgements are sent from their own tokio tasks so the event stream is never held up.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use agora_proto::v1::{self, scheduler_client::SchedulerClient};
use tokio::sync::watch;
use tonic::transport::Channel;

use super::counters::Shared;

/// Seconds an offer declined after the budget is spent stays away from this framework.
const REFUSE_WHEN_DONE: f64 = 3600.0;

fn scalar(name: &str, value: f64) -> v1::Resource {
    v1::Resource {
        name: name.into(),
        value: Some(v1::resource::Value::Scalar(value)),
        ..Default::default()
    }
}

fn scalar_of(offer: &v1::Offer, name: &str) -> f64 {
    offer
        .resources
        .iter()
        .filter(|r| r.name == name)
        .filter_map(|r| match r.value {
            Some(v1::resource::Value::Scalar(x)) => Some(x),
            _ => None,
        })
        .sum()
}

/// Claims up to `want` task indices from the run's budget.
pub(super) fn claim(shared: &Shared, want: usize) -> std::ops::Range<usize> {
    let total = shared.args.tasks;
    let start = shared
        .claimed
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            (c < total).then(|| (c + want).min(total))
        })
        .unwrap_or(total);
    start..(start + want).min(total)
}

fn task_index(task_id: &str) -> Option<usize> {
    task_id.strip_prefix("bench-")?.parse().ok()
}

pub(crate) async fn run_framework(
    f: usize,
    channel: Channel,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut client = SchedulerClient::new(channel).max_decoding_message_size(256 << 20);
    let mut events = client
        .subscribe(v1::SubscribeRequest {
            framework_info: Some(v1::FrameworkInfo {
                name: format!("bench-{f}"),
                user: "bench".into(),
                roles: vec!["bench".into()],
                failover_timeout_seconds: 0.0,
                ..Default::default()
            }),
            suppressed_roles: vec![],
        })
        .await?
        .into_inner();
    let mut header = None::<v1::CallHeader>;
    let mut suppressed = false;
    let args = &shared.args;
    loop {
        let event = tokio::select! {
            e = events.message() => e?,
            _ = stop.changed() => return Ok(()),
        };
        let Some(event) = event else {
            anyhow::bail!("the master closed the event stream")
        };
        match event.event {
            Some(v1::event::Event::Subscribed(s)) => {
                header = Some(v1::CallHeader {
                    framework_id: s.framework_id,
                    stream_id: s.stream_id,
                });
            }
            Some(v1::event::Event::Offers(o)) => {
                let Some(h) = header.clone() else { continue };
                shared.offers.fetch_add(o.offers.len(), Ordering::Relaxed);
                let mut declined = Vec::new();
                for offer in o.offers {
                    let fit = ((scalar_of(&offer, "cpus") / args.task_cpus + 1e-9).floor())
                        .min((scalar_of(&offer, "mem") / args.task_mem + 1e-9).floor())
                        .max(0.0) as usize;
                    let fit = fit.min(args.tasks_per_offer.max(1));
                    let ids = claim(&shared, fit);
                    if ids.is_empty() {
                        declined.push(offer.id);
                        continue;
                    }
                    let tasks: Vec<v1::TaskInfo> = ids
                        .clone()
                        .map(|n| v1::TaskInfo {
                            name: format!("bench-{n}"),
                            task_id: format!("bench-{n}"),
                            agent_id: offer.agent_id.clone(),
                            resources: vec![
                                scalar("cpus", args.task_cpus),
                                scalar("mem", args.task_mem),
                            ],
                            command: Some(v1::CommandInfo {
                                shell: true,
                                value: "true".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .collect();
                    let req = v1::AcceptRequest {
                        header: Some(h.clone()),
                        offer_ids: vec![offer.id],
                        operations: vec![v1::Operation {
                            operation: Some(v1::operation::Operation::Launch(
                                v1::operation::Launch { tasks },
                            )),
                        }],
                        filters: None,
                    };
                    let mut c = client.clone();
                    let shared = shared.clone();
                    let stopped = stop.clone();
                    tokio::spawn(async move {
                        // --launch-rate: hold the offer until this batch's turn comes.
                        if let Some(rate) = shared.args.launch_rate.filter(|r| *r > 0.0) {
                            let t0 = *shared.pace_start.get_or_init(tokio::time::Instant::now);
                            let due =
                                t0 + std::time::Duration::from_secs_f64(ids.start as f64 / rate);
                            tokio::time::sleep_until(due).await;
                        }
                        let at = shared.since_start_ns();
                        for n in ids {
                            shared.accept_ns[n].store(at, Ordering::Relaxed);
                        }
                        if let Err(e) = c.accept(req).await {
                            if *stopped.borrow() || shared.killed() {
                                return;
                            }
                            shared.accept_errors.fetch_add(1, Ordering::Relaxed);
                            shared.error(format!("accept: {}", e.message()));
                        }
                    });
                }
                if !declined.is_empty() && !suppressed {
                    // Nothing left to launch: stop the offers, as a finished scheduler should.
                    suppressed = true;
                    let mut c = client.clone();
                    let req = v1::SuppressRequest {
                        header: Some(h.clone()),
                        roles: vec![],
                    };
                    let shared = shared.clone();
                    let stopped = stop.clone();
                    tokio::spawn(async move {
                        if let Err(e) = c.suppress(req).await {
                            if !*stopped.borrow() && !shared.killed() {
                                shared.error(format!("suppress: {}", e.message()));
                            }
                        }
                    });
                }
                if !declined.is_empty() {
                    let mut c = client.clone();
                    let req = v1::DeclineRequest {
                        header: Some(h),
                        offer_ids: declined,
                        filters: Some(v1::Filters {
                            refuse_seconds: Some(REFUSE_WHEN_DONE),
                        }),
                    };
                    let shared = shared.clone();
                    let stopped = stop.clone();
                    tokio::spawn(async move {
                        if let Err(e) = c.decline(req).await {
                            if *stopped.borrow() || shared.killed() {
                                return;
                            }
                            shared.error(format!("decline: {}", e.message()));
                        }
                    });
                }
            }
            Some(v1::event::Event::Update(u)) => {
                let Some(st) = u.status else { continue };
                let state = v1::TaskState::try_from(st.state).unwrap_or(v1::TaskState::TaskUnknown);
                record_update(&shared, &st.task_id, state, &st.message);
                if let (Some(h), false) = (header.clone(), st.uuid.is_empty()) {
                    shared.acks_wanted.fetch_add(1, Ordering::Relaxed);
                    let mut c = client.clone();
                    let shared = shared.clone();
                    let req = v1::AcknowledgeRequest {
                        header: Some(h),
                        agent_id: st.agent_id,
                        task_id: st.task_id,
                        uuid: st.uuid,
                    };
                    let stopped = stop.clone();
                    tokio::spawn(async move {
                        match c.acknowledge(req).await {
                            Ok(_) => {
                                shared.acks_sent.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) if *stopped.borrow() || shared.killed() => {}
                            Err(e) => shared.error(format!("acknowledge: {}", e.message())),
                        }
                    });
                }
            }
            Some(v1::event::Event::Error(e)) => {
                anyhow::bail!("the master sent ERROR: {}", e.message)
            }
            _ => {}
        }
    }
}

/// Counts a task's update: its first TASK_RUNNING (with the time) and its first terminal state.
pub(super) fn record_update(shared: &Shared, task_id: &str, state: v1::TaskState, message: &str) {
    let Some(n) = task_index(task_id).filter(|&n| n < shared.args.tasks) else {
        return;
    };
    match state {
        v1::TaskState::TaskRunning => {
            let was = shared.running_ns[n].compare_exchange(
                0,
                shared.since_start_ns(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            if was.is_ok() {
                shared.running.fetch_add(1, Ordering::Relaxed);
            }
        }
        s if agora_proto::is_terminal(s) && shared.ended[n].swap(true, Ordering::Relaxed) => {}
        v1::TaskState::TaskFinished => {
            shared.finished.fetch_add(1, Ordering::Relaxed);
        }
        s if agora_proto::is_terminal(s) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            shared.error(format!("task {task_id} ended {s:?}: {message}"));
        }
        _ => {}
    }
}
