//! Why an app waits: per queued app, how many offers were looked at and why the unused ones did
//! not fit, as Marathon's `/v2/queue` shows it (`processedOffersSummary`, `lastUnusedOffers`).
//! Kept in memory only (as Marathon does): a restart starts counting again.
//!
//! Each unused offer counts once in a summary, under its first reason in Marathon's funnel order
//! ([`Reason::FUNNEL`]); a summary lists every reason with how many offers it declined and how
//! many offers reached that step (`processed` falls by each step's `declined`).

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use agora_proto::v1;

/// How many unused offers (the latest per agent) an app keeps for `lastUnusedOffers`.
pub const MAX_LAST_UNUSED: usize = 16;

/// Marathon's reasons for not using an offer (`NoOfferMatchReason`), in funnel order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    UnfulfilledRole,
    UnfulfilledConstraint,
    NoCorrespondingReservationFound,
    AgentMaintenance,
    InsufficientCpus,
    InsufficientMemory,
    InsufficientDisk,
    InsufficientGpus,
    InsufficientPorts,
    DeclinedScarceResources,
}

impl Reason {
    /// Every reason, in the order an offer is judged by (its first failing one counts).
    pub const FUNNEL: [Reason; 10] = [
        Reason::UnfulfilledRole,
        Reason::UnfulfilledConstraint,
        Reason::NoCorrespondingReservationFound,
        Reason::AgentMaintenance,
        Reason::InsufficientCpus,
        Reason::InsufficientMemory,
        Reason::InsufficientDisk,
        Reason::InsufficientGpus,
        Reason::InsufficientPorts,
        Reason::DeclinedScarceResources,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::UnfulfilledRole => "UnfulfilledRole",
            Reason::UnfulfilledConstraint => "UnfulfilledConstraint",
            Reason::NoCorrespondingReservationFound => "NoCorrespondingReservationFound",
            Reason::AgentMaintenance => "AgentMaintenance",
            Reason::InsufficientCpus => "InsufficientCpus",
            Reason::InsufficientMemory => "InsufficientMemory",
            Reason::InsufficientDisk => "InsufficientDisk",
            Reason::InsufficientGpus => "InsufficientGpus",
            Reason::InsufficientPorts => "InsufficientPorts",
            Reason::DeclinedScarceResources => "DeclinedScarceResources",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// An offer an app could not use, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct UnusedOffer {
    pub offer: v1::Offer,
    /// Sorted in funnel order, never empty.
    pub reasons: Vec<Reason>,
    pub at: DateTime<Utc>,
}

/// One app's offer statistics since it was queued (its launch attempt).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OfferStats {
    /// When the app began waiting for tasks.
    pub since: Option<DateTime<Utc>>,
    pub processed: u64,
    pub unused: u64,
    pub last_used_at: Option<DateTime<Utc>>,
    pub last_unused_at: Option<DateTime<Utc>>,
    /// Unused offers of the launch attempt by first reason ([`Reason::FUNNEL`] order).
    pub declined: [u64; 10],
    /// The latest unused offer per agent, oldest first, at most [`MAX_LAST_UNUSED`].
    pub last_unused: Vec<UnusedOffer>,
}

impl OfferStats {
    /// An offer (part of) was used for one or more of the app's tasks.
    pub fn used(&mut self, now: DateTime<Utc>) {
        self.processed = self.processed.saturating_add(1);
        self.last_used_at = Some(now);
    }

    /// An offer the app could not use. `reasons` empty: nothing is counted (the offer fit).
    pub fn unused(&mut self, offer: &v1::Offer, mut reasons: Vec<Reason>, now: DateTime<Utc>) {
        reasons.sort();
        reasons.dedup();
        let Some(first) = reasons.first().copied() else {
            return;
        };
        self.processed = self.processed.saturating_add(1);
        self.unused = self.unused.saturating_add(1);
        self.last_unused_at = Some(now);
        self.declined[first.index()] = self.declined[first.index()].saturating_add(1);
        self.last_unused
            .retain(|u| u.offer.agent_id != offer.agent_id);
        if self.last_unused.len() >= MAX_LAST_UNUSED {
            self.last_unused.remove(0);
        }
        self.last_unused.push(UnusedOffer {
            offer: offer.clone(),
            reasons,
            at: now,
        });
    }

    /// `processedOffersSummary`.
    pub fn summary_json(&self) -> Value {
        let mut last = [0u64; 10];
        for u in &self.last_unused {
            if let Some(r) = u.reasons.first() {
                last[r.index()] += 1;
            }
        }
        let mut v = json!({
            "processedOffersCount": self.processed,
            "unusedOffersCount": self.unused,
            "rejectSummaryLastOffers": funnel(self.last_unused.len() as u64, &last),
            "rejectSummaryLaunchAttempt": funnel(self.processed, &self.declined),
        });
        if let Value::Object(m) = &mut v {
            if let Some(t) = self.last_unused_at {
                m.insert("lastUnusedOfferAt".into(), json!(timestamp(t)));
            }
            if let Some(t) = self.last_used_at {
                m.insert("lastUsedOfferAt".into(), json!(timestamp(t)));
            }
        }
        v
    }

    /// `lastUnusedOffers`, newest first.
    pub fn last_unused_json(&self) -> Value {
        Value::Array(
            self.last_unused
                .iter()
                .rev()
                .map(|u| {
                    json!({
                        "offer": offer_json(&u.offer),
                        "reason": u.reasons.iter().map(|r| r.name()).collect::<Vec<_>>(),
                        "timestamp": timestamp(u.at),
                    })
                })
                .collect(),
        )
    }
}

/// Marathon's `DeclinedOfferStep` list: per reason in funnel order, the offers it declined and
/// the offers that reached it.
fn funnel(processed: u64, declined: &[u64; 10]) -> Value {
    let mut left = processed;
    Value::Array(
        Reason::FUNNEL
            .iter()
            .map(|r| {
                let d = declined[r.index()];
                let step = json!({ "reason": r.name(), "declined": d, "processed": left });
                left = left.saturating_sub(d);
                step
            })
            .collect(),
    )
}

pub fn timestamp(t: DateTime<Utc>) -> String {
    crate::core::version_of(t)
}

/// An offer as Marathon's `Offer` type: `{id, hostname, agentId, resources, attributes}`.
fn offer_json(o: &v1::Offer) -> Value {
    let resources: Vec<Value> = o
        .resources
        .iter()
        .map(|r| {
            let role = if r.role.is_empty() { "*" } else { r.role.as_str() };
            match &r.value {
                Some(v1::resource::Value::Scalar(s)) => {
                    json!({ "name": r.name, "role": role, "scalar": s })
                }
                Some(v1::resource::Value::Ranges(rs)) => json!({
                    "name": r.name, "role": role,
                    "ranges": rs.range.iter().map(|x| json!({ "begin": x.begin, "end": x.end })).collect::<Vec<_>>(),
                }),
                None => json!({ "name": r.name, "role": role }),
            }
        })
        .collect();
    json!({
        "id": o.id,
        "hostname": o.hostname,
        "agentId": o.agent_id,
        "resources": resources,
        "attributes": o.attributes.iter().map(|a| json!({ "name": a.name, "text": a.text })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(id: &str, agent: &str) -> v1::Offer {
        v1::Offer {
            id: id.into(),
            agent_id: agent.into(),
            hostname: format!("{agent}.example"),
            resources: agora_proto::Resources::parse("cpus:1;mem:64;ports:[31000-31001]")
                .expect("res")
                .to_proto(),
            attributes: vec![v1::Attribute {
                name: "rack".into(),
                text: "r1".into(),
            }],
            ..Default::default()
        }
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + secs, 0).expect("t")
    }

    #[test]
    fn each_unused_offer_counts_once_under_its_first_reason_and_the_funnel_narrows() {
        let mut s = OfferStats::default();
        s.unused(
            &offer("o1", "a1"),
            vec![Reason::InsufficientMemory, Reason::UnfulfilledConstraint],
            t(1),
        );
        s.unused(&offer("o2", "a2"), vec![Reason::InsufficientMemory], t(2));
        s.used(t(3));
        s.unused(&offer("o3", "a3"), Vec::new(), t(4));
        let v = s.summary_json();
        assert_eq!(v["processedOffersCount"], 3);
        assert_eq!(v["unusedOffersCount"], 2);
        assert_eq!(v["lastUnusedOfferAt"], timestamp(t(2)));
        assert_eq!(v["lastUsedOfferAt"], timestamp(t(3)));
        let steps = v["rejectSummaryLaunchAttempt"].as_array().expect("steps");
        let names: Vec<&str> = steps.iter().filter_map(|s| s["reason"].as_str()).collect();
        assert_eq!(
            names,
            Reason::FUNNEL.iter().map(|r| r.name()).collect::<Vec<_>>()
        );
        let step = |name: &str| {
            steps
                .iter()
                .find(|s| s["reason"] == name)
                .map(|s| (s["declined"].as_u64(), s["processed"].as_u64()))
                .expect("step")
        };
        assert_eq!(step("UnfulfilledRole"), (Some(0), Some(3)));
        assert_eq!(step("UnfulfilledConstraint"), (Some(1), Some(3)));
        assert_eq!(step("InsufficientCpus"), (Some(0), Some(2)));
        assert_eq!(step("InsufficientMemory"), (Some(1), Some(2)));
        assert_eq!(step("InsufficientPorts"), (Some(0), Some(1)));
        let last = v["rejectSummaryLastOffers"].as_array().expect("last");
        assert_eq!(last[0]["processed"], 2);
    }

    #[test]
    fn the_last_unused_offers_keep_one_per_agent_and_are_bounded() {
        let mut s = OfferStats::default();
        for i in 0..(MAX_LAST_UNUSED as i64 + 5) {
            s.unused(
                &offer(&format!("o{i}"), &format!("a{i}")),
                vec![Reason::InsufficientCpus],
                t(i),
            );
        }
        s.unused(
            &offer("again", "a20"),
            vec![Reason::InsufficientDisk],
            t(100),
        );
        assert_eq!(s.last_unused.len(), MAX_LAST_UNUSED);
        let v = s.last_unused_json();
        assert_eq!(v[0]["offer"]["id"], "again");
        assert_eq!(v[0]["reason"], json!(["InsufficientDisk"]));
        assert_eq!(v[0]["offer"]["agentId"], "a20");
        assert_eq!(v[0]["offer"]["hostname"], "a20.example");
        assert_eq!(
            v[0]["offer"]["attributes"][0],
            json!({"name": "rack", "text": "r1"})
        );
        let res = v[0]["offer"]["resources"].as_array().expect("resources");
        assert!(
            res.contains(&json!({"name": "mem", "role": "*", "scalar": 64.0})),
            "{res:?}"
        );
        assert!(
            res.contains(
                &json!({"name": "ports", "role": "*", "ranges": [{"begin": 31000, "end": 31001}]})
            ),
            "{res:?}"
        );
        assert_eq!(s.unused, MAX_LAST_UNUSED as u64 + 6);
    }
}
