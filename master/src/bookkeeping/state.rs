//! The state view: `/state`, roles and gauges, read-only over the books.

use agora_proto::v1;
use agora_proto::Resources;

use super::{state_of, AgentStatus, Bookkeeping, Gauges};

impl Bookkeeping {
    /// The cluster as the operator API shows it.
    pub fn state(&self, leader: &str) -> v1::GetStateResponse {
        let mut agents: Vec<v1::AgentState> = self
            .agents
            .iter()
            .map(|(id, a)| {
                let mut used = Resources::new();
                for key in &a.tasks {
                    if let Some(t) = self.tasks.get(key) {
                        used.add(&t.resources);
                    }
                }
                let mut offered = Resources::new();
                for o in &a.offers {
                    if let Some(e) = self.offers.get(o) {
                        offered.add(&e.resources);
                    }
                }
                let mut info = a.info.clone();
                info.resources = a.total.to_proto();
                v1::AgentState {
                    id: id.clone(),
                    info: Some(info),
                    used_resources: used.to_proto(),
                    offered_resources: offered.to_proto(),
                    active: a.status == AgentStatus::Active,
                    draining: a.draining,
                    registered_time: a.registered_time,
                    usage: a.usage.clone(),
                }
            })
            .collect();
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        let mut frameworks: Vec<v1::FrameworkState> = self
            .frameworks
            .iter()
            .map(|(id, f)| {
                let mut used = Resources::new();
                for t in &f.tasks {
                    if let Some(e) = self.tasks.get(&(id.clone(), t.clone())) {
                        used.add(&e.resources);
                    }
                }
                let mut offered = Resources::new();
                for o in &f.offers {
                    if let Some(e) = self.offers.get(o) {
                        offered.add(&e.resources);
                    }
                }
                let share = f
                    .info
                    .roles
                    .iter()
                    .filter_map(|r| self.allocator.framework_share(id, r))
                    .fold(0.0, f64::max);
                let mut suppressed: Vec<String> = f.suppressed.iter().cloned().collect();
                suppressed.sort();
                v1::FrameworkState {
                    info: Some(f.info.clone()),
                    connected: f.connected,
                    dominant_share: share,
                    used_resources: used.to_proto(),
                    offered_resources: offered.to_proto(),
                    registered_time: f.registered_time,
                    suppressed_roles: suppressed,
                }
            })
            .collect();
        frameworks.sort_by(|a, b| {
            let ia = a.info.as_ref().map(|i| i.id.as_str()).unwrap_or("");
            let ib = b.info.as_ref().map(|i| i.id.as_str()).unwrap_or("");
            ia.cmp(ib)
        });
        let mut tasks: Vec<v1::Task> = self.tasks.values().map(|t| t.task.clone()).collect();
        tasks.sort_by(|a, b| (&a.framework_id, &a.task_id).cmp(&(&b.framework_id, &b.task_id)));
        let mut offers: Vec<v1::Offer> = self.offers.values().map(|o| o.offer.clone()).collect();
        offers.sort_by(|a, b| a.id.cmp(&b.id));
        v1::GetStateResponse {
            master_info: Some(self.settings.master_info.clone()),
            leader: leader.to_string(),
            agents,
            frameworks,
            tasks,
            offers,
            roles: self.roles(),
            completed_tasks: self.completed.iter().cloned().collect(),
        }
    }

    /// Every known role with its weight, quota, allocation and frameworks.
    pub fn roles(&self) -> Vec<v1::RoleState> {
        self.allocator
            .role_shares()
            .into_iter()
            .map(|r| {
                let mut frameworks: Vec<String> = self
                    .frameworks
                    .iter()
                    .filter(|(_, f)| f.info.roles.contains(&r.role))
                    .map(|(id, _)| id.clone())
                    .collect();
                frameworks.sort();
                v1::RoleState {
                    name: r.role.clone(),
                    weight: r.weight,
                    quota: quantities_to_proto(&r.quota),
                    allocated: quantities_to_proto(&r.allocated),
                    frameworks,
                    priority: r.priority,
                }
            })
            .collect()
    }

    /// Counts for gauges: (active agents, unreachable agents, connected frameworks, tasks by state,
    /// outstanding offers).
    pub fn gauges(&self) -> Gauges {
        let mut g = Gauges::default();
        for a in self.agents.values() {
            match a.status {
                AgentStatus::Active => g.agents_active += 1,
                AgentStatus::Unreachable { .. } => g.agents_unreachable += 1,
            }
        }
        g.frameworks_connected = self.frameworks.values().filter(|f| f.connected).count();
        g.frameworks_disconnected = self.frameworks.len() - g.frameworks_connected;
        for t in self.tasks.values() {
            *g.tasks.entry(state_of(&t.task).as_str_name()).or_default() += 1;
        }
        g.offers = self.offers.len();
        g.role_shares = self
            .allocator
            .role_shares()
            .into_iter()
            .map(|r| (r.role, r.share))
            .collect();
        g
    }
}

fn quantities_to_proto(q: &crate::allocator::Quantities) -> Vec<v1::Resource> {
    let mut r = Resources::new();
    for (i, name) in crate::allocator::SHARE_RESOURCES.iter().enumerate() {
        if q.0[i] > 0 {
            r.add_scalar(agora_proto::ResourceKey::unreserved(name), q.0[i]);
        }
    }
    r.to_proto()
}
