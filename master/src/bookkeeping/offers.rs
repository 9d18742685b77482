//! Offers: allocation cycles turned into OFFERS events, rescinding, and declining.

use std::collections::{BTreeMap, HashSet};

use agora_proto::v1::{self, event};

use super::{limits, refuse_of, AgentStatus, Bookkeeping, Clock, OfferEntry};
use crate::allocator::AllocationStats;
use crate::error::MasterError;

impl Bookkeeping {
    /// One allocation cycle: turns the allocator's decisions into OFFERS events.
    pub fn allocate(&mut self, clock: &Clock) -> AllocationStats {
        if self.still_recovering(clock) {
            return AllocationStats::default();
        }
        let offers = self.allocator.allocate(clock.now);
        self.make_offers(offers, clock);
        self.allocator.last_stats().clone()
    }

    fn make_offers(&mut self, offers: Vec<crate::allocator::Offer>, clock: &Clock) {
        let mut by_framework: BTreeMap<String, Vec<v1::Offer>> = BTreeMap::new();
        for o in offers {
            let usable = self
                .frameworks
                .get(&o.framework_id)
                .is_some_and(|f| f.connected)
                && self
                    .agents
                    .get(&o.agent_id)
                    .is_some_and(|a| a.status == AgentStatus::Active && a.connected);
            if !usable {
                let _ = self
                    .allocator
                    .recover(&o.agent_id, &o.framework_id, &o.role, &o.resources);
                continue;
            }
            self.next_offer += 1;
            let id = format!("{}-O{}", self.master_id(), self.next_offer);
            let Some(agent) = self.agents.get_mut(&o.agent_id) else {
                continue;
            };
            agent.offers.insert(id.clone());
            let offer = v1::Offer {
                id: id.clone(),
                framework_id: o.framework_id.clone(),
                agent_id: o.agent_id.clone(),
                hostname: agent.info.hostname.clone(),
                resources: o.resources.to_proto(),
                attributes: agent.info.attributes.clone(),
                allocation_role: o.role.clone(),
                master_id: self.settings.master_info.id.clone(),
                agent_url: if agent.info.http_port > 0 {
                    format!("http://{}:{}", agent.info.hostname, agent.info.http_port)
                } else {
                    String::new()
                },
            };
            if let Some(f) = self.frameworks.get_mut(&o.framework_id) {
                f.offers.insert(id.clone());
            }
            by_framework
                .entry(o.framework_id.clone())
                .or_default()
                .push(offer.clone());
            self.offers.insert(
                id,
                OfferEntry {
                    offer,
                    role: o.role,
                    resources: o.resources,
                    expires: self
                        .settings
                        .offer_timeout
                        .map(|t| limits::later(clock.now, t)),
                },
            );
            self.counters.offers_made += 1;
        }
        for (framework_id, offers) in by_framework {
            self.to_framework(
                &framework_id,
                v1::Event {
                    event: Some(event::Event::Offers(event::Offers { offers })),
                },
            );
        }
    }

    /// Takes an offer back: its resources return to the allocator and, when `notify`, the
    /// framework gets a RESCIND event.
    pub(super) fn rescind(&mut self, offer_id: &str, notify: bool) {
        let Some(entry) = self.offers.remove(offer_id) else {
            return;
        };
        let framework_id = entry.offer.framework_id.clone();
        if let Some(a) = self.agents.get_mut(&entry.offer.agent_id) {
            a.offers.remove(offer_id);
        }
        if let Some(f) = self.frameworks.get_mut(&framework_id) {
            f.offers.remove(offer_id);
        }
        let _ = self.allocator.recover(
            &entry.offer.agent_id,
            &framework_id,
            &entry.role,
            &entry.resources,
        );
        self.counters.offers_rescinded += 1;
        if notify {
            self.to_framework(
                &framework_id,
                v1::Event {
                    event: Some(event::Event::Rescind(event::Rescind {
                        offer_id: offer_id.to_string(),
                    })),
                },
            );
        }
    }

    /// Takes the framework's outstanding offers out of the books. Unknown or foreign offers are
    /// reported, and the others stay taken (the caller recovers them).
    pub(super) fn take_offers(
        &mut self,
        framework_id: &str,
        offer_ids: &[String],
    ) -> (Vec<OfferEntry>, Vec<String>) {
        let mut taken = Vec::new();
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        for id in offer_ids {
            if !seen.insert(id.clone()) {
                problems.push(format!("offer '{id}' is named twice"));
                continue;
            }
            match self.offers.get(id) {
                None => problems.push(format!(
                    "offer '{id}' is not outstanding (already used, declined, rescinded, or never made)"
                )),
                Some(e) if e.offer.framework_id != framework_id => {
                    problems.push(format!("offer '{id}' was made to another framework"))
                }
                Some(_) => {
                    if let Some(e) = self.offers.remove(id) {
                        if let Some(a) = self.agents.get_mut(&e.offer.agent_id) {
                            a.offers.remove(id);
                        }
                        if let Some(f) = self.frameworks.get_mut(framework_id) {
                            f.offers.remove(id);
                        }
                        taken.push(e);
                    }
                }
            }
        }
        (taken, problems)
    }

    /// Returns offers unused, with a filter.
    ///
    /// # Errors
    /// Header errors; offers that are unknown or not this framework's are named (the others are
    /// declined all the same).
    pub fn decline(&mut self, req: v1::DeclineRequest, clock: &Clock) -> Result<(), MasterError> {
        let id = self.check_header(req.header.as_ref())?;
        let refuse = refuse_of(req.filters.as_ref())?;
        let (taken, problems) = self.take_offers(&id, &req.offer_ids);
        for e in taken {
            let _ = self.allocator.decline(
                &id,
                &e.offer.agent_id,
                &e.role,
                &e.resources,
                refuse,
                clock.now,
            );
            self.counters.offers_declined += 1;
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(MasterError::invalid("offer_ids", problems.join("; ")))
        }
    }
}
