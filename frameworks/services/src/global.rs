//! Global apps, pure: an app labelled `AGORA_GLOBAL=true` (what `agora stack deploy` writes for
//! Compose's `deploy.mode: global`) runs one instance on every agent its constraints allow,
//! following agents as they join and leave. A label, so Marathon clients parse the app unchanged.
//!
//! The framework learns the agents from what it sees, with the time passed in:
//! - an agent is *present* while an offer from it is at most [`AGENT_TTL_SECS`] old, or while it
//!   runs a task of this framework that is not unreachable (an agent whose resources are all in
//!   use is offered nothing, yet is there);
//! - a task of ours on it that is reported LOST, GONE or UNREACHABLE makes it absent at once
//!   (its offers are forgotten: a later offer brings it back).
//!
//! A global app's `instances` is then the number of present agents its constraints allow
//! ([`target`]); the core sets it on every plan, so `/v2/apps` reports the current target and
//! every count (scaling, deployments, the queue) uses it; tasks on absent agents do not count.

use std::collections::{BTreeMap, BTreeSet};

use agora_framework::constraints::Constraint;
use agora_proto::v1;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::app::App;

/// The label that makes an app global; its value is `true` or `false`.
pub const GLOBAL_LABEL: &str = "AGORA_GLOBAL";
/// How long an agent counts as present after its last offer (a declined offer comes back after
/// its 15 s filter, so a live agent with free resources is seen several times in this span).
pub const AGENT_TTL_SECS: i64 = 60;
/// Most agents remembered (the oldest offer is forgotten first).
pub const MAX_AGENTS: usize = 100_000;
/// Most attributes kept per agent.
pub const MAX_ATTRIBUTES: usize = 64;

/// Whether `app` runs one instance per agent.
pub fn is_global(app: &App) -> bool {
    app.labels.get(GLOBAL_LABEL).is_some_and(|v| v == "true")
}

/// Why the label's value is unusable, or `None`.
pub fn label_problem(app: &App) -> Option<String> {
    match app.labels.get(GLOBAL_LABEL).map(String::as_str) {
        None | Some("true" | "false") => None,
        Some(_) => Some(format!("{GLOBAL_LABEL} must be \"true\" or \"false\"")),
    }
}

/// An agent as seen in its offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeenAgent {
    pub hostname: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Its last offer; `None` once a task on it was reported lost (present only through its
    /// running tasks until it offers again).
    pub last_offer: Option<DateTime<Utc>>,
}

/// The agents the framework has seen, by agent id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Agents {
    seen: BTreeMap<String, SeenAgent>,
}

impl Agents {
    /// Records an offer's agent as seen at `now`.
    pub fn offered(&mut self, offer: &v1::Offer, now: DateTime<Utc>) {
        if offer.agent_id.is_empty() {
            return;
        }
        if !self.seen.contains_key(&offer.agent_id) && self.seen.len() >= MAX_AGENTS {
            let oldest = self
                .seen
                .iter()
                .min_by_key(|(_, a)| a.last_offer)
                .map(|(id, _)| id.clone());
            if let Some(id) = oldest {
                self.seen.remove(&id);
            }
        }
        let attributes = offer
            .attributes
            .iter()
            .take(MAX_ATTRIBUTES)
            .map(|a| (a.name.clone(), a.text.clone()))
            .collect();
        self.seen.insert(
            offer.agent_id.clone(),
            SeenAgent {
                hostname: offer.hostname.clone(),
                attributes,
                last_offer: Some(now),
            },
        );
    }

    /// A task of ours on `agent_id` was reported LOST, GONE or UNREACHABLE: the agent is absent
    /// until it offers again (or a task on it runs again).
    pub fn lost(&mut self, agent_id: &str) {
        if let Some(a) = self.seen.get_mut(agent_id) {
            a.last_offer = None;
        }
    }

    /// The present agents at `now`: offered within [`AGENT_TTL_SECS`], or in `running` (the agents
    /// of this framework's tasks that are not unreachable nor ended). Agents long gone are
    /// forgotten.
    pub fn present(
        &mut self,
        now: DateTime<Utc>,
        running: &BTreeSet<String>,
    ) -> BTreeMap<String, SeenAgent> {
        let fresh = |a: &SeenAgent| {
            a.last_offer
                .is_some_and(|t| (now - t).num_seconds() <= AGENT_TTL_SECS)
        };
        // Forgotten after 10 TTLs without an offer nor a running task: the map stays small.
        self.seen.retain(|id, a| {
            running.contains(id)
                || a.last_offer
                    .is_some_and(|t| (now - t).num_seconds() <= 10 * AGENT_TTL_SECS)
        });
        self.seen
            .iter()
            .filter(|(id, a)| fresh(a) || running.contains(*id))
            .map(|(id, a)| (id.clone(), a.clone()))
            .collect()
    }
}

/// How many instances global `app` should run: the present agents its constraints allow.
pub fn target(app: &App, present: &BTreeMap<String, SeenAgent>) -> u32 {
    let n = allowed_agents(
        &app.constraints,
        present
            .values()
            .map(|a| (a.hostname.as_str(), &a.attributes)),
    );
    u32::try_from(n)
        .unwrap_or(u32::MAX)
        .min(crate::app::limits::MAX_INSTANCES)
}

/// How many of `agents` (hostname, attributes) every one of `constraints` allows (constraints
/// that do not parse allow all: the app's reader refuses them first).
pub fn allowed_agents<'a>(
    constraints: &[Vec<String>],
    agents: impl Iterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
) -> usize {
    let constraints: Vec<Constraint> = constraints
        .iter()
        .filter_map(|c| Constraint::parse(c).ok())
        .collect();
    agents
        .filter(|(hostname, attributes)| {
            constraints.iter().all(|c| {
                let v = if c.field == "hostname" {
                    Some(*hostname)
                } else {
                    attributes.get(&c.field).map(String::as_str)
                };
                c.allows(v, &[])
            })
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0)
            .single()
            .expect("time")
    }

    fn offer(agent: &str, host: &str, rack: &str) -> v1::Offer {
        v1::Offer {
            agent_id: agent.into(),
            hostname: host.into(),
            attributes: vec![v1::Attribute {
                name: "rack".into(),
                text: rack.into(),
            }],
            ..Default::default()
        }
    }

    fn app(v: serde_json::Value) -> App {
        crate::app::from_value(v).expect("a valid app")
    }

    #[test]
    fn agents_join_by_offers_and_leave_by_lost_tasks_or_silence() {
        let global = app(serde_json::json!({
            "id": "/s/probe", "cmd": "x", "labels": {"AGORA_GLOBAL": "true"},
            "constraints": [["hostname", "UNIQUE"]]
        }));
        let on_a = app(serde_json::json!({
            "id": "/s/a", "cmd": "x", "labels": {"AGORA_GLOBAL": "true"},
            "constraints": [["rack", "LIKE", "a"]]
        }));
        assert!(is_global(&global));
        assert!(!is_global(&app(
            serde_json::json!({"id": "/x", "cmd": "x"})
        )));
        let mut agents = Agents::default();
        let none = BTreeSet::new();
        assert_eq!(target(&global, &agents.present(at(0), &none)), 0);
        agents.offered(&offer("a1", "h1", "a"), at(0));
        agents.offered(&offer("a2", "h2", "b"), at(1));
        assert_eq!(target(&global, &agents.present(at(2), &none)), 2);
        assert_eq!(target(&on_a, &agents.present(at(2), &none)), 1);
        // A third joins.
        agents.offered(&offer("a3", "h3", "a"), at(3));
        assert_eq!(target(&global, &agents.present(at(4), &none)), 3);
        assert_eq!(target(&on_a, &agents.present(at(4), &none)), 2);
        // a3's task is lost: absent at once, though its last offer is recent.
        agents.lost("a3");
        assert_eq!(target(&global, &agents.present(at(5), &none)), 2);
        // Silence past the TTL: absent, unless a task of ours runs there (a full agent).
        let running: BTreeSet<String> = ["a1".to_string()].into();
        let later = at(AGENT_TTL_SECS + 2);
        assert_eq!(target(&global, &agents.present(later, &none)), 0);
        assert_eq!(target(&global, &agents.present(later, &running)), 1);
        // It offers again: back.
        agents.offered(&offer("a3", "h3", "a"), later);
        assert_eq!(target(&global, &agents.present(later, &running)), 2);
        // Long gone agents are forgotten.
        let much_later = at(20 * AGENT_TTL_SECS);
        let _ = agents.present(much_later, &running);
        assert_eq!(agents.seen.len(), 1);
    }

    #[test]
    fn the_label_is_bounded() {
        let bad =
            app(serde_json::json!({"id": "/x", "cmd": "x", "labels": {"AGORA_GLOBAL": "yes"}}));
        assert!(label_problem(&bad).is_some_and(|p| p.contains("AGORA_GLOBAL")));
        let off =
            app(serde_json::json!({"id": "/x", "cmd": "x", "labels": {"AGORA_GLOBAL": "false"}}));
        assert!(label_problem(&off).is_none() && !is_global(&off));
    }

    #[test]
    fn the_agents_kept_are_bounded() {
        let mut agents = Agents::default();
        for i in 0..(MAX_AGENTS + 5) {
            agents.offered(&offer(&format!("a{i}"), "h", "r"), at(i as i64));
        }
        assert_eq!(agents.seen.len(), MAX_AGENTS);
        assert!(!agents.seen.contains_key("a0"));
    }
}
