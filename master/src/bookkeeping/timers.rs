//! Timers: the recovery wait after a take-over and the housekeeping tick (silent agents,
//! expired frameworks, old offers).

use super::{AgentStatus, Bookkeeping, Clock};

impl Bookkeeping {
    /// Whether a new leader is still waiting for the registry's agents to re-register (it makes
    /// no offers meanwhile, so that frameworks do not launch on a half-known cluster). Agents that
    /// miss the deadline are recorded unreachable.
    pub fn still_recovering(&mut self, clock: &Clock) -> bool {
        let Some((expected, deadline)) = self.recovering.as_mut() else {
            return false;
        };
        let deadline = *deadline.get_or_insert(clock.now + self.settings.agent_reregister_timeout);
        if !expected.is_empty() && clock.now < deadline {
            return true;
        }
        let missing: Vec<String> = expected.drain().collect();
        self.recovering = None;
        for id in missing {
            if let Some(r) = self.registry.agents.get_mut(&id) {
                r.unreachable_since = Some(clock.wall);
                self.registry_dirty = true;
            }
        }
        false
    }

    /// Housekeeping: silent agents become unreachable and then gone, disconnected frameworks past
    /// their failover timeout are removed, old offers are rescinded.
    pub fn tick(&mut self, clock: &Clock) {
        self.still_recovering(clock);
        // The actor wakes at each drain deadline; this is the backstop.
        self.drains.tick(clock.now);
        let mut silent = Vec::new();
        let mut gone = Vec::new();
        for (id, a) in &self.agents {
            match a.status {
                AgentStatus::Active => {
                    if clock.now.saturating_duration_since(a.last_seen)
                        > self.settings.agent_timeout
                    {
                        silent.push(id.clone());
                    }
                }
                AgentStatus::Unreachable { since } => {
                    if clock.now.saturating_duration_since(since) > self.settings.agent_gone_timeout
                    {
                        gone.push(id.clone());
                    }
                }
            }
        }
        silent.sort();
        for id in silent {
            self.mark_agent_unreachable(&id, clock);
        }
        gone.sort();
        for id in gone {
            let _ = self.mark_agent_gone(&id, clock);
        }
        let mut expired: Vec<String> = self
            .frameworks
            .iter()
            .filter(|(_, f)| !f.connected && f.failover_deadline.is_some_and(|d| clock.now >= d))
            .map(|(id, _)| id.clone())
            .collect();
        expired.sort();
        for id in expired {
            self.remove_framework(
                &id,
                "it did not re-subscribe within its failover timeout",
                clock,
            );
        }
        if self.settings.offer_timeout.is_some() {
            let mut old: Vec<String> = self
                .offers
                .iter()
                .filter(|(_, o)| o.expires.is_some_and(|e| clock.now >= e))
                .map(|(id, _)| id.clone())
                .collect();
            old.sort();
            for id in old {
                self.rescind(&id, true);
            }
        }
    }

    /// Connected frameworks, for heartbeats.
    pub fn connected_frameworks(&self) -> Vec<String> {
        self.frameworks
            .iter()
            .filter(|(_, f)| f.connected)
            .map(|(id, _)| id.clone())
            .collect()
    }
}
