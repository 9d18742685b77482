//! The allocator: decides which framework is offered which agent's resources.
//!
//! A pure, synchronous type. It owns the *allocatable view* of the cluster — each agent's total and
//! free resources, the frameworks with their roles, role weights, priorities and quota guarantees,
//! decline filters and suppression — and turns it into [`Offer`]s. It does no I/O and never reads the
//! clock: `now` is a parameter, and agents are shuffled with a seeded RNG, so every run replays.
//!
//! ```text
//!  master actor ──add_agent / add_framework / recover / decline / suppress / revive──▶ Allocator
//!  master actor ◀──────────────── allocate(now) -> Vec<Offer> ─────────────────────── Allocator
//! ```
//!
//! # Algorithm (hierarchical DRF, as in Mesos)
//! For every agent, in a shuffled order: walk the roles in [`Sorter`] order (weighted dominant share,
//! or priority first under [`Policy::StrictPriority`]); in a role, walk its frameworks in their own
//! sorter's order; the first framework that is active, not suppressed in that role and not filtered
//! on that agent gets one offer with everything on the agent allocatable to the role (unreserved plus
//! reserved for the role). Other roles can still receive their own reservations on the same agent in
//! the same cycle. Offered resources count as allocated (shares move at once) until the caller
//! [`recover`](Allocator::recover)s them: a decline, a rescind, an accept's unused part, or a task that
//! ended.
//!
//! With quota guarantees the cycle has two stages: stage 1 offers roles below their guarantee up to
//! what they lack; stage 2 is fair sharing that leaves enough unreserved resources unoffered to cover
//! the unmet guarantees of other roles.
//!
//! Shares are kept incrementally in the sorters (integer quantities, one `BTreeSet` re-key per
//! offer), so a cycle costs `O(agents × log(frameworks))` when frameworks accept what they get.

mod sorter;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agora_proto::Resources;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

pub use sorter::{
    AnySorter, DrfSorter, Quantities, RandomSorter, Sorter, SorterKind, SHARE_RESOURCES,
};

/// An agent's id as the master assigns it.
pub type AgentId = String;
/// A framework's id as the master assigns it.
pub type FrameworkId = String;

/// How roles are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Weighted dominant resource fairness among all roles.
    #[default]
    Drf,
    /// Roles with a higher priority are offered first; DRF among roles of equal priority.
    StrictPriority,
}

/// Allocator settings.
#[derive(Debug, Clone)]
pub struct AllocatorConfig {
    pub policy: Policy,
    pub sorter: SorterKind,
    /// Seeds the agent shuffle (and the random sorter).
    pub seed: u64,
    /// Filter length of a decline that names none (Mesos `refuse_seconds`, 5 s).
    pub default_refuse: Duration,
    /// An offer must reach at least one of these quantities (Mesos `--min_allocatable_resources`);
    /// smaller agent remainders are not offered. Empty: anything non-empty is offered.
    pub min_allocatable: Vec<Quantities>,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        AllocatorConfig {
            policy: Policy::Drf,
            sorter: SorterKind::Drf,
            seed: 0,
            default_refuse: Duration::from_secs(5),
            min_allocatable: vec![
                Quantities([10, 0, 0, 0]),     // cpus:0.01
                Quantities([0, 32_000, 0, 0]), // mem:32
            ],
        }
    }
}

/// Resources offered to one framework, in one role, on one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub agent_id: AgentId,
    pub framework_id: FrameworkId,
    pub role: String,
    pub resources: Resources,
}

/// What the last allocation cycle did; the master turns it into metrics (and measures the cycle's
/// duration itself, since the allocator never reads the clock).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllocationStats {
    /// Cycles run since the allocator was created.
    pub cycle: u64,
    /// Agents looked at (not draining, something free).
    pub agents_considered: usize,
    /// Offers made.
    pub offers: usize,
    /// Of those, offers made in the quota stage.
    pub quota_offers: usize,
    /// (framework, agent) candidates skipped because of a decline filter.
    pub filtered: usize,
}

/// A role's standing, for metrics and the operator API.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleShare {
    pub role: String,
    pub weight: f64,
    pub priority: i64,
    /// Weighted dominant share.
    pub share: f64,
    pub allocated: Quantities,
    pub quota: Quantities,
    pub frameworks: usize,
}

/// Why an allocator call was refused. Each variant names the id at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AllocatorError {
    /// `add_agent` with an id already present.
    #[error("agent '{0}' is already known to the allocator")]
    DuplicateAgent(String),
    /// The agent id is not (or no longer) known.
    #[error("unknown agent '{0}'")]
    UnknownAgent(String),
    /// `add_framework` with an id already present.
    #[error("framework '{0}' is already known to the allocator")]
    DuplicateFramework(String),
    /// The framework id is not (or no longer) known.
    #[error("unknown framework '{0}'")]
    UnknownFramework(String),
    /// A framework must have at least one role.
    #[error("framework '{0}' has no roles: at least one is required")]
    NoRoles(String),
    /// The framework is not subscribed to that role.
    #[error("framework '{framework}' is not in role '{role}'")]
    NotInRole { framework: String, role: String },
    /// Weights must be positive and finite.
    #[error("weight of role '{role}' must be a positive finite number, got {weight}")]
    InvalidWeight { role: String, weight: f64 },
    /// `allocate_used` named resources that are not free on the agent.
    #[error("{resources} are not free on agent '{agent}'")]
    NotFree { agent: String, resources: String },
    /// Recovering these resources would give the agent more free resources than it has in total:
    /// they were not allocated (for example recovered twice).
    #[error("recovering {resources} on agent '{agent}' exceeds its total: they are not allocated")]
    RecoverExceedsTotal { agent: String, resources: String },
}

type Result<T> = std::result::Result<T, AllocatorError>;

/// Offered or used resources of one framework in one role on one agent.
#[derive(Debug, Clone)]
struct AgentAllocation {
    framework: u32,
    role: u32,
    quantities: Quantities,
}

#[derive(Debug, Clone)]
struct Agent {
    id: AgentId,
    total: Resources,
    free: Resources,
    /// Quantities of `free`, all roles.
    free_q: Quantities,
    /// Roles with a reservation in `total`; empty for the common all-unreserved agent.
    reserved_roles: Vec<u32>,
    draining: bool,
    allocations: Vec<AgentAllocation>,
}

#[derive(Debug, Clone)]
struct Filter {
    refused: Resources,
    until: Instant,
    /// Cycles run when the filter was made: it survives the next cycle whatever its length.
    made_at_cycle: u64,
}

#[derive(Debug, Clone)]
struct Framework {
    id: FrameworkId,
    roles: Vec<u32>,
    active: bool,
    suppressed: Vec<u32>,
    /// Decline filters by agent slot.
    filters: HashMap<u32, Vec<Filter>>,
}

#[derive(Debug, Clone)]
struct Role {
    name: String,
    weight: f64,
    priority: i64,
    quota: Quantities,
    frameworks: AnySorter,
    framework_count: usize,
}

/// Where a cycle stands with quota: what is still guaranteed but not allocated, and what unreserved
/// resources are left to cover it.
#[derive(Debug, Clone, Default)]
struct Headroom {
    unmet: HashMap<u32, Quantities>,
    required: Quantities,
    available: Quantities,
}

/// The allocator. See the module documentation.
#[derive(Debug, Clone)]
pub struct Allocator {
    config: AllocatorConfig,
    agents: Vec<Option<Agent>>,
    agent_index: HashMap<AgentId, u32>,
    free_agent_slots: Vec<u32>,
    frameworks: Vec<Option<Framework>>,
    framework_index: HashMap<FrameworkId, u32>,
    free_framework_slots: Vec<u32>,
    roles: Vec<Role>,
    role_index: HashMap<String, u32>,
    role_sorter: AnySorter,
    total: Quantities,
    totals_dirty: bool,
    rng: StdRng,
    cycle: u64,
    stats: AllocationStats,
    scratch_roles: Vec<u32>,
}

impl Allocator {
    /// An empty allocator.
    pub fn new(config: AllocatorConfig) -> Self {
        Allocator {
            rng: StdRng::seed_from_u64(config.seed),
            role_sorter: AnySorter::new(config.sorter, config.seed ^ 0x5eed),
            config,
            agents: Vec::new(),
            agent_index: HashMap::new(),
            free_agent_slots: Vec::new(),
            frameworks: Vec::new(),
            framework_index: HashMap::new(),
            free_framework_slots: Vec::new(),
            roles: Vec::new(),
            role_index: HashMap::new(),
            total: Quantities::default(),
            totals_dirty: false,
            cycle: 0,
            stats: AllocationStats::default(),
            scratch_roles: Vec::new(),
        }
    }

    /// An allocator with the default configuration and `policy`.
    pub fn with_policy(policy: Policy) -> Self {
        Self::new(AllocatorConfig {
            policy,
            ..AllocatorConfig::default()
        })
    }

    pub fn config(&self) -> &AllocatorConfig {
        &self.config
    }

    // ----- roles -----

    fn ensure_role(&mut self, name: &str) -> u32 {
        if let Some(r) = self.role_index.get(name) {
            return *r;
        }
        let r = self.roles.len() as u32;
        let seed = self
            .config
            .seed
            .wrapping_add(u64::from(r))
            .wrapping_mul(0x9e37_79b9);
        let mut frameworks = AnySorter::new(self.config.sorter, seed);
        frameworks.set_total(&self.total);
        self.roles.push(Role {
            name: name.to_string(),
            weight: 1.0,
            priority: 0,
            quota: Quantities::default(),
            frameworks,
            framework_count: 0,
        });
        self.role_index.insert(name.to_string(), r);
        self.role_sorter.add(r, name);
        self.role_sorter.set_total(&self.total);
        // A role is sorted only while it has frameworks.
        self.role_sorter.set_active(r, false);
        r
    }

    /// Sets a role's weight (default 1): weight 2 entitles it to twice the dominant share.
    ///
    /// # Errors
    /// [`AllocatorError::InvalidWeight`] unless `weight` is positive and finite.
    pub fn update_weight(&mut self, role: &str, weight: f64) -> Result<()> {
        if !(weight.is_finite() && weight > 0.0) {
            return Err(AllocatorError::InvalidWeight {
                role: role.to_string(),
                weight,
            });
        }
        let r = self.ensure_role(role);
        self.roles[r as usize].weight = weight;
        self.role_sorter.set_weight(r, weight);
        Ok(())
    }

    /// Sets a role's priority (default 0). It orders roles only under [`Policy::StrictPriority`].
    pub fn set_priority(&mut self, role: &str, priority: i64) {
        let r = self.ensure_role(role);
        self.roles[r as usize].priority = priority;
        if self.config.policy == Policy::StrictPriority {
            self.role_sorter.set_priority(r, priority);
        }
    }

    /// Sets a role's quota guarantee (scalars `cpus`, `mem`, `disk`, `gpus`; roles of the given
    /// resources are ignored). An empty set removes the guarantee.
    pub fn set_quota(&mut self, role: &str, guarantee: &Resources) {
        let r = self.ensure_role(role);
        self.roles[r as usize].quota = Quantities::of(guarantee);
    }

    /// Every known role's weight, priority, allocation and weighted dominant share, sorted by name.
    pub fn role_shares(&self) -> Vec<RoleShare> {
        let mut out: Vec<RoleShare> = self
            .roles
            .iter()
            .enumerate()
            .map(|(r, role)| {
                let allocated = self.role_sorter.allocation(r as u32);
                RoleShare {
                    role: role.name.clone(),
                    weight: role.weight,
                    priority: role.priority,
                    share: allocated.dominant_share(&self.total) / role.weight,
                    allocated,
                    quota: role.quota,
                    frameworks: role.framework_count,
                }
            })
            .collect();
        out.sort_by(|a, b| a.role.cmp(&b.role));
        out
    }

    /// A framework's dominant share inside one of its roles (unweighted).
    pub fn framework_share(&self, framework: &str, role: &str) -> Option<f64> {
        let f = *self.framework_index.get(framework)?;
        let r = *self.role_index.get(role)?;
        let allocated = self.roles[r as usize].frameworks.allocation(f);
        Some(allocated.dominant_share(&self.total))
    }

    /// What the last cycle did.
    pub fn last_stats(&self) -> &AllocationStats {
        &self.stats
    }

    // ----- agents -----

    fn agent_slot(&self, id: &str) -> Result<u32> {
        self.agent_index
            .get(id)
            .copied()
            .ok_or_else(|| AllocatorError::UnknownAgent(id.to_string()))
    }

    fn reserved_roles_of(&mut self, total: &Resources) -> Vec<u32> {
        let mut names: Vec<String> = total
            .by_role()
            .into_keys()
            .filter(|role| role != agora_proto::resources::ANY_ROLE)
            .collect();
        names.dedup();
        names.iter().map(|n| self.ensure_role(n)).collect()
    }

    /// Adds an agent with all of `total` free.
    ///
    /// # Errors
    /// [`AllocatorError::DuplicateAgent`] if the id is known.
    pub fn add_agent(&mut self, id: &str, total: Resources) -> Result<()> {
        if self.agent_index.contains_key(id) {
            return Err(AllocatorError::DuplicateAgent(id.to_string()));
        }
        let reserved_roles = self.reserved_roles_of(&total);
        let q = Quantities::of(&total);
        let agent = Agent {
            id: id.to_string(),
            free: total.clone(),
            free_q: q,
            total,
            reserved_roles,
            draining: false,
            allocations: Vec::new(),
        };
        let slot = match self.free_agent_slots.pop() {
            Some(s) => {
                self.agents[s as usize] = Some(agent);
                s
            }
            None => {
                self.agents.push(Some(agent));
                (self.agents.len() - 1) as u32
            }
        };
        self.agent_index.insert(id.to_string(), slot);
        self.total.add(&q);
        self.totals_dirty = true;
        Ok(())
    }

    /// Removes an agent; what it had allocated stops counting towards shares, and filters on it go.
    ///
    /// # Errors
    /// [`AllocatorError::UnknownAgent`].
    pub fn remove_agent(&mut self, id: &str) -> Result<()> {
        let a = self.agent_slot(id)?;
        let Some(agent) = self.agents[a as usize].take() else {
            return Err(AllocatorError::UnknownAgent(id.to_string()));
        };
        self.agent_index.remove(id);
        self.free_agent_slots.push(a);
        for alloc in &agent.allocations {
            self.untrack(alloc.framework, alloc.role, &alloc.quantities);
        }
        for fw in self.frameworks.iter_mut().flatten() {
            fw.filters.remove(&a);
        }
        self.total.subtract(&Quantities::of(&agent.total));
        self.totals_dirty = true;
        Ok(())
    }

    /// Replaces an agent's total (for example after an operator changed its resources). What is
    /// allocated stays allocated; free resources become `total` minus that.
    ///
    /// # Errors
    /// [`AllocatorError::UnknownAgent`].
    pub fn update_agent_total(&mut self, id: &str, total: Resources) -> Result<()> {
        let a = self.agent_slot(id)?;
        let reserved_roles = self.reserved_roles_of(&total);
        let Some(agent) = self.agents[a as usize].as_mut() else {
            return Err(AllocatorError::UnknownAgent(id.to_string()));
        };
        let mut allocated = agent.total.clone();
        allocated.subtract(&agent.free);
        let mut free = total.clone();
        free.subtract(&allocated);
        self.total.subtract(&Quantities::of(&agent.total));
        self.total.add(&Quantities::of(&total));
        agent.free_q = Quantities::of(&free);
        agent.free = free;
        agent.total = total;
        agent.reserved_roles = reserved_roles;
        self.totals_dirty = true;
        Ok(())
    }

    /// Marks an agent draining (maintenance): it gets no new offers until un-marked.
    ///
    /// # Errors
    /// [`AllocatorError::UnknownAgent`].
    pub fn set_draining(&mut self, id: &str, draining: bool) -> Result<()> {
        let a = self.agent_slot(id)?;
        if let Some(agent) = self.agents[a as usize].as_mut() {
            agent.draining = draining;
        }
        Ok(())
    }

    /// An agent's free (unoffered, unused) resources.
    pub fn free_resources(&self, id: &str) -> Option<&Resources> {
        let a = *self.agent_index.get(id)?;
        self.agents[a as usize].as_ref().map(|ag| &ag.free)
    }

    // ----- frameworks -----

    fn framework_slot(&self, id: &str) -> Result<u32> {
        self.framework_index
            .get(id)
            .copied()
            .ok_or_else(|| AllocatorError::UnknownFramework(id.to_string()))
    }

    fn framework(&self, f: u32) -> &Framework {
        // Slots in the index always hold a framework.
        self.frameworks[f as usize]
            .as_ref()
            .expect("indexed framework slot is occupied")
    }

    fn framework_mut(&mut self, f: u32) -> &mut Framework {
        self.frameworks[f as usize]
            .as_mut()
            .expect("indexed framework slot is occupied")
    }

    /// Adds an active framework subscribed to `roles`.
    ///
    /// # Errors
    /// [`AllocatorError::DuplicateFramework`], [`AllocatorError::NoRoles`].
    pub fn add_framework<S: AsRef<str>>(&mut self, id: &str, roles: &[S]) -> Result<()> {
        if self.framework_index.contains_key(id) {
            return Err(AllocatorError::DuplicateFramework(id.to_string()));
        }
        if roles.is_empty() {
            return Err(AllocatorError::NoRoles(id.to_string()));
        }
        let mut role_ids: Vec<u32> = roles.iter().map(|r| self.ensure_role(r.as_ref())).collect();
        role_ids.sort_unstable();
        role_ids.dedup();
        let slot = match self.free_framework_slots.pop() {
            Some(s) => s,
            None => {
                self.frameworks.push(None);
                (self.frameworks.len() - 1) as u32
            }
        };
        for &r in &role_ids {
            let role = &mut self.roles[r as usize];
            role.frameworks.add(slot, id);
            role.framework_count += 1;
            self.role_sorter.set_active(r, true);
        }
        self.frameworks[slot as usize] = Some(Framework {
            id: id.to_string(),
            roles: role_ids,
            active: true,
            suppressed: Vec::new(),
            filters: HashMap::new(),
        });
        self.framework_index.insert(id.to_string(), slot);
        Ok(())
    }

    /// Removes a framework: its allocations stop counting towards shares and its filters go.
    ///
    /// The resources it holds on agents stay allocated until the caller [`recover`](Self::recover)s
    /// them (the master knows its outstanding offers and tasks); recovering for a removed framework
    /// is allowed and just frees them.
    ///
    /// # Errors
    /// [`AllocatorError::UnknownFramework`].
    pub fn remove_framework(&mut self, id: &str) -> Result<()> {
        let f = self.framework_slot(id)?;
        for agent in self.agents.iter_mut().flatten() {
            for alloc in agent.allocations.iter().filter(|al| al.framework == f) {
                self.role_sorter.unallocated(alloc.role, &alloc.quantities);
            }
            agent.allocations.retain(|al| al.framework != f);
        }
        let Some(fw) = self.frameworks[f as usize].take() else {
            return Err(AllocatorError::UnknownFramework(id.to_string()));
        };
        for &r in &fw.roles {
            let role = &mut self.roles[r as usize];
            role.frameworks.remove(f);
            role.framework_count -= 1;
            if role.framework_count == 0 {
                self.role_sorter.set_active(r, false);
            }
        }
        self.framework_index.remove(id);
        self.free_framework_slots.push(f);
        Ok(())
    }

    fn refresh_framework_activity(&mut self, f: u32) {
        let (roles, active, suppressed) = {
            let fw = self.framework(f);
            (fw.roles.clone(), fw.active, fw.suppressed.clone())
        };
        for r in roles {
            let on = active && !suppressed.contains(&r);
            self.roles[r as usize].frameworks.set_active(f, on);
        }
    }

    /// A reconnected framework gets offers again.
    ///
    /// # Errors
    /// [`AllocatorError::UnknownFramework`].
    pub fn activate_framework(&mut self, id: &str) -> Result<()> {
        let f = self.framework_slot(id)?;
        self.framework_mut(f).active = true;
        self.refresh_framework_activity(f);
        Ok(())
    }

    /// A disconnected framework keeps its allocation but gets no offers.
    ///
    /// # Errors
    /// [`AllocatorError::UnknownFramework`].
    pub fn deactivate_framework(&mut self, id: &str) -> Result<()> {
        let f = self.framework_slot(id)?;
        self.framework_mut(f).active = false;
        self.refresh_framework_activity(f);
        Ok(())
    }

    fn role_slots_of(&self, f: u32, id: &str, roles: &[&str]) -> Result<Vec<u32>> {
        let fw = self.framework(f);
        if roles.is_empty() {
            return Ok(fw.roles.clone());
        }
        roles
            .iter()
            .map(|name| {
                self.role_index
                    .get(*name)
                    .copied()
                    .filter(|r| fw.roles.contains(r))
                    .ok_or_else(|| AllocatorError::NotInRole {
                        framework: id.to_string(),
                        role: name.to_string(),
                    })
            })
            .collect()
    }

    /// Stops offers to a framework in `roles` (all its roles if empty) until it revives.
    ///
    /// # Errors
    /// [`AllocatorError::UnknownFramework`], [`AllocatorError::NotInRole`].
    pub fn suppress(&mut self, id: &str, roles: &[&str]) -> Result<()> {
        let f = self.framework_slot(id)?;
        let slots = self.role_slots_of(f, id, roles)?;
        let fw = self.framework_mut(f);
        for r in slots {
            if !fw.suppressed.contains(&r) {
                fw.suppressed.push(r);
            }
        }
        self.refresh_framework_activity(f);
        Ok(())
    }

    /// Resumes offers to a framework in `roles` (all its roles if empty) and clears all its decline
    /// filters.
    ///
    /// # Errors
    /// [`AllocatorError::UnknownFramework`], [`AllocatorError::NotInRole`].
    pub fn revive(&mut self, id: &str, roles: &[&str]) -> Result<()> {
        let f = self.framework_slot(id)?;
        let slots = self.role_slots_of(f, id, roles)?;
        let fw = self.framework_mut(f);
        fw.suppressed.retain(|r| !slots.contains(r));
        fw.filters.clear();
        self.refresh_framework_activity(f);
        Ok(())
    }

    // ----- recovering resources -----

    /// Takes quantities off a framework's and its role's allocation.
    fn untrack(&mut self, f: u32, r: u32, q: &Quantities) {
        self.role_sorter.unallocated(r, q);
        self.roles[r as usize].frameworks.unallocated(f, q);
    }

    /// Gives resources back to an agent: an offer was declined or rescinded, an accept left part of
    /// it unused, or a task ended. `role` is the role the resources were offered in.
    ///
    /// # Errors
    /// [`AllocatorError::UnknownAgent`]; [`AllocatorError::RecoverExceedsTotal`] if they were not
    /// allocated (nothing changes then).
    pub fn recover(
        &mut self,
        agent_id: &str,
        framework_id: &str,
        role: &str,
        resources: &Resources,
    ) -> Result<()> {
        let a = self.agent_slot(agent_id)?;
        let Some(agent) = self.agents[a as usize].as_mut() else {
            return Err(AllocatorError::UnknownAgent(agent_id.to_string()));
        };
        let exceeds = || AllocatorError::RecoverExceedsTotal {
            agent: agent_id.to_string(),
            resources: resources.to_string(),
        };
        if agent.free.is_empty() {
            // The common case after a whole-agent offer: no copy of the free set needed.
            if !agent.total.contains(resources) {
                return Err(exceeds());
            }
            agent.free = resources.clone();
        } else {
            let mut free = agent.free.clone();
            free.add(resources);
            if !agent.total.contains(&free) {
                return Err(exceeds());
            }
            agent.free = free;
        }
        let q = Quantities::of(resources);
        agent.free_q.add(&q);
        let (Some(&f), Some(&r)) = (
            self.framework_index.get(framework_id),
            self.role_index.get(role),
        ) else {
            return Ok(());
        };
        let mut taken = None;
        if let Some(pos) = agent
            .allocations
            .iter()
            .position(|al| al.framework == f && al.role == r)
        {
            let al = &mut agent.allocations[pos];
            let mut amount = q;
            for i in 0..4 {
                amount.0[i] = amount.0[i].min(al.quantities.0[i]);
            }
            al.quantities.subtract(&amount);
            if al.quantities.is_zero() {
                agent.allocations.swap_remove(pos);
            }
            taken = Some(amount);
        }
        if let Some(amount) = taken {
            self.untrack(f, r, &amount);
        }
        Ok(())
    }

    /// Marks resources that are already in use on an agent as allocated to a framework in one of its
    /// roles, without making an offer: the tasks an agent reports when it re-registers (after an agent
    /// or master restart, or a partition) hold resources the allocator must not offer again.
    ///
    /// # Errors
    /// [`AllocatorError::UnknownAgent`], [`AllocatorError::UnknownFramework`],
    /// [`AllocatorError::NotInRole`]; [`AllocatorError::NotFree`] if the agent's free resources do not
    /// hold them (nothing changes then).
    pub fn allocate_used(
        &mut self,
        agent_id: &str,
        framework_id: &str,
        role: &str,
        resources: &Resources,
    ) -> Result<()> {
        let a = self.agent_slot(agent_id)?;
        let f = self.framework_slot(framework_id)?;
        let r = self.role_slots_of(f, framework_id, &[role])?[0];
        let Some(agent) = self.agents[a as usize].as_mut() else {
            return Err(AllocatorError::UnknownAgent(agent_id.to_string()));
        };
        if !agent.free.contains(resources) {
            return Err(AllocatorError::NotFree {
                agent: agent_id.to_string(),
                resources: resources.to_string(),
            });
        }
        agent.free.subtract(resources);
        let q = Quantities::of(resources);
        agent.free_q.subtract(&q);
        match agent
            .allocations
            .iter_mut()
            .find(|al| al.framework == f && al.role == r)
        {
            Some(al) => al.quantities.add(&q),
            None => agent.allocations.push(AgentAllocation {
                framework: f,
                role: r,
                quantities: q,
            }),
        }
        self.role_sorter.allocated(r, &q);
        self.roles[r as usize].frameworks.allocated(f, &q);
        Ok(())
    }

    /// Recovers a declined offer's resources and keeps them away from the framework on that agent
    /// for `refuse` (default [`AllocatorConfig::default_refuse`]; zero: no filter). A filter
    /// survives at least the next allocation cycle, however short.
    ///
    /// # Errors
    /// As [`recover`](Self::recover); [`AllocatorError::UnknownFramework`].
    pub fn decline(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        role: &str,
        resources: &Resources,
        refuse: Option<Duration>,
        now: Instant,
    ) -> Result<()> {
        let f = self.framework_slot(framework_id)?;
        let a = self.agent_slot(agent_id)?;
        self.recover(agent_id, framework_id, role, resources)?;
        let refuse = refuse.unwrap_or(self.config.default_refuse);
        if !refuse.is_zero() && !resources.is_empty() {
            let filter = Filter {
                refused: resources.clone(),
                until: now + refuse,
                made_at_cycle: self.cycle,
            };
            self.framework_mut(f)
                .filters
                .entry(a)
                .or_default()
                .push(filter);
        }
        Ok(())
    }

    // ----- allocation -----

    /// One allocation cycle over every agent, in a seeded shuffled order.
    pub fn allocate(&mut self, now: Instant) -> Vec<Offer> {
        let mut agents: Vec<u32> = self
            .agents
            .iter()
            .enumerate()
            .filter(|(_, a)| a.is_some())
            .map(|(i, _)| i as u32)
            .collect();
        agents.shuffle(&mut self.rng);
        self.run_cycle(&agents, now)
    }

    /// One allocation cycle over some agents only (event-triggered: an agent was added, resources
    /// were recovered). Unknown ids are skipped.
    pub fn allocate_agents<S: AsRef<str>>(&mut self, agent_ids: &[S], now: Instant) -> Vec<Offer> {
        let mut agents: Vec<u32> = agent_ids
            .iter()
            .filter_map(|id| self.agent_index.get(id.as_ref()).copied())
            .collect();
        agents.sort_unstable();
        agents.dedup();
        agents.shuffle(&mut self.rng);
        self.run_cycle(&agents, now)
    }

    fn sync_totals(&mut self) {
        if !self.totals_dirty {
            return;
        }
        self.role_sorter.set_total(&self.total);
        for role in &mut self.roles {
            role.frameworks.set_total(&self.total);
        }
        self.totals_dirty = false;
    }

    /// Drops filters that have expired and have lived through a cycle.
    fn expire_filters(&mut self, now: Instant) {
        let cycle = self.cycle;
        for fw in self.frameworks.iter_mut().flatten() {
            if fw.filters.is_empty() {
                continue;
            }
            fw.filters.retain(|_, list| {
                list.retain(|flt| now < flt.until || flt.made_at_cycle + 1 >= cycle);
                !list.is_empty()
            });
        }
    }

    fn run_cycle(&mut self, agents: &[u32], now: Instant) -> Vec<Offer> {
        self.cycle += 1;
        self.stats = AllocationStats {
            cycle: self.cycle,
            ..AllocationStats::default()
        };
        self.sync_totals();
        self.expire_filters(now);
        let mut offers = Vec::with_capacity(agents.len());
        let quota_roles: Vec<u32> = (0..self.roles.len() as u32)
            .filter(|r| !self.roles[*r as usize].quota.is_zero())
            .collect();
        if quota_roles.is_empty() {
            for &a in agents {
                self.allocate_agent(a, &mut offers, None);
            }
        } else {
            let mut headroom = self.headroom(&quota_roles);
            let mut merge: HashMap<(u32, u32, u32), usize> = HashMap::new();
            for &a in agents {
                self.allocate_quota_agent(a, &mut headroom, &mut offers, &mut merge);
            }
            self.stats.quota_offers = offers.len();
            let mut stage2 = Vec::new();
            for &a in agents {
                self.allocate_agent(a, &mut stage2, Some(&mut headroom));
            }
            // One offer per (agent, framework, role): fold stage-2 offers into stage-1 ones.
            for offer in stage2 {
                let key = (
                    self.agent_index[&offer.agent_id],
                    self.framework_index[&offer.framework_id],
                    self.role_index[&offer.role],
                );
                match merge.get(&key) {
                    Some(&i) => offers[i].resources.add(&offer.resources),
                    None => offers.push(offer),
                }
            }
        }
        self.stats.agents_considered = agents
            .iter()
            .filter(|a| {
                self.agents[**a as usize]
                    .as_ref()
                    .is_some_and(|ag| !ag.draining)
            })
            .count();
        self.stats.offers = offers.len();
        offers
    }

    fn headroom(&self, quota_roles: &[u32]) -> Headroom {
        let mut h = Headroom::default();
        for &r in quota_roles {
            let unmet = self.roles[r as usize]
                .quota
                .saturating_sub(&self.role_sorter.allocation(r));
            h.required.add(&unmet);
            h.unmet.insert(r, unmet);
        }
        for agent in self.agents.iter().flatten().filter(|a| !a.draining) {
            if agent.reserved_roles.is_empty() {
                h.available.add(&agent.free_q);
            } else {
                h.available.add(&Quantities::of(&agent.free.unreserved()));
            }
        }
        h
    }

    /// Records an offer: agent bookkeeping, both sorters, the offer itself.
    fn record_offer(
        &mut self,
        a: u32,
        f: u32,
        r: u32,
        resources: Resources,
        q: Quantities,
        offers: &mut Vec<Offer>,
    ) {
        let Some(agent) = self.agents[a as usize].as_mut() else {
            return;
        };
        match agent
            .allocations
            .iter_mut()
            .find(|al| al.framework == f && al.role == r)
        {
            Some(al) => al.quantities.add(&q),
            None => agent.allocations.push(AgentAllocation {
                framework: f,
                role: r,
                quantities: q,
            }),
        }
        let agent_id = agent.id.clone();
        self.role_sorter.allocated(r, &q);
        let role = &mut self.roles[r as usize];
        role.frameworks.allocated(f, &q);
        let framework_id = self.frameworks[f as usize].as_ref().map(|fw| fw.id.clone());
        offers.push(Offer {
            agent_id,
            framework_id: framework_id.unwrap_or_default(),
            role: role.name.clone(),
            resources,
        });
    }

    /// The first framework of role `r` that may be offered `candidate` on agent `a`.
    fn pick_framework(&mut self, a: u32, r: u32, candidate: &Resources) -> Option<u32> {
        let frameworks = &self.frameworks;
        let filtered = &mut self.stats.filtered;
        self.roles[r as usize].frameworks.first_where(&mut |f| {
            let Some(fw) = frameworks[f as usize].as_ref() else {
                return false;
            };
            if fw.filters.is_empty() {
                return true;
            }
            match fw.filters.get(&a) {
                Some(list) if list.iter().any(|flt| flt.refused.contains(candidate)) => {
                    *filtered += 1;
                    false
                }
                _ => true,
            }
        })
    }

    /// Fair-share stage for one agent; with `headroom`, unreserved scalars beyond what other roles'
    /// unmet quota needs are all that may be offered.
    fn allocate_agent(
        &mut self,
        a: u32,
        offers: &mut Vec<Offer>,
        mut headroom: Option<&mut Headroom>,
    ) {
        match self.agents[a as usize].as_ref() {
            Some(agent) if !agent.draining && !agent.free.is_empty() => {}
            _ => return,
        }
        let mut order = std::mem::take(&mut self.scratch_roles);
        self.role_sorter.sort(&mut order);
        for &r in &order {
            let Some(agent) = self.agents[a as usize].as_mut() else {
                break;
            };
            if agent.free.is_empty() {
                break;
            }
            // The common case (no reservations, no quota): the whole free set is the candidate and
            // is moved, not copied; it goes back if nobody takes it.
            let whole = agent.reserved_roles.is_empty() && headroom.is_none();
            let (candidate, q) = if whole {
                if !meets_minimum(&self.config.min_allocatable, &agent.free_q) {
                    break;
                }
                (std::mem::take(&mut agent.free), agent.free_q)
            } else {
                let mut candidate = agent.free.allocatable_to(&self.roles[r as usize].name);
                if let Some(h) = headroom.as_deref() {
                    // Leave what other roles' unmet quota needs; a role's own unmet quota is not
                    // held back from itself.
                    let own = h.unmet.get(&r).copied().unwrap_or_default();
                    let cap = h.available.saturating_sub(&h.required.saturating_sub(&own));
                    candidate = cap_unreserved(&candidate, &cap);
                }
                let q = Quantities::of(&candidate);
                if !meets_minimum(&self.config.min_allocatable, &q) {
                    continue;
                }
                (candidate, q)
            };
            let Some(f) = self.pick_framework(a, r, &candidate) else {
                if whole {
                    if let Some(agent) = self.agents[a as usize].as_mut() {
                        agent.free = candidate;
                    }
                }
                continue;
            };
            let Some(agent) = self.agents[a as usize].as_mut() else {
                break;
            };
            if whole {
                agent.free_q = Quantities::default();
            } else {
                agent.free.subtract(&candidate);
                agent.free_q.subtract(&q);
            }
            if let Some(h) = headroom.as_deref_mut() {
                h.available
                    .subtract(&Quantities::of(&candidate.unreserved()));
                if let Some(unmet) = h.unmet.get_mut(&r) {
                    let before = *unmet;
                    unmet.subtract(&q);
                    h.required.subtract(&before.saturating_sub(unmet));
                }
            }
            self.record_offer(a, f, r, candidate, q, offers);
        }
        self.scratch_roles = order;
    }

    /// Quota stage for one agent: roles below their guarantee get what they lack.
    fn allocate_quota_agent(
        &mut self,
        a: u32,
        headroom: &mut Headroom,
        offers: &mut Vec<Offer>,
        merge: &mut HashMap<(u32, u32, u32), usize>,
    ) {
        match self.agents[a as usize].as_ref() {
            Some(agent) if !agent.draining && !agent.free.is_empty() => {}
            _ => return,
        }
        let mut order = std::mem::take(&mut self.scratch_roles);
        self.role_sorter.sort(&mut order);
        for &r in &order {
            let Some(unmet) = headroom.unmet.get(&r).copied() else {
                continue;
            };
            if unmet.is_zero() {
                continue;
            }
            let Some(agent) = self.agents[a as usize].as_ref() else {
                break;
            };
            let role_name = &self.roles[r as usize].name;
            let reserved = agent.free.reserved_for(role_name);
            let cap = unmet.saturating_sub(&Quantities::of(&reserved));
            let mut candidate = cap_unreserved(&agent.free.unreserved(), &cap);
            candidate.add(&reserved);
            let q = Quantities::of(&candidate);
            if !meets_minimum(&self.config.min_allocatable, &q) {
                continue;
            }
            let Some(f) = self.pick_framework(a, r, &candidate) else {
                continue;
            };
            let Some(agent) = self.agents[a as usize].as_mut() else {
                break;
            };
            agent.free.subtract(&candidate);
            agent.free_q.subtract(&q);
            headroom
                .available
                .subtract(&Quantities::of(&candidate.unreserved()));
            if let Some(unmet) = headroom.unmet.get_mut(&r) {
                let before = *unmet;
                unmet.subtract(&q);
                headroom.required.subtract(&before.saturating_sub(unmet));
            }
            merge.insert((a, f, r), offers.len());
            self.record_offer(a, f, r, candidate, q, offers);
        }
        self.scratch_roles = order;
    }
}

/// Whether `q` reaches one of the minimum allocatable alternatives.
fn meets_minimum(minimum: &[Quantities], q: &Quantities) -> bool {
    !q.is_zero() && (minimum.is_empty() || minimum.iter().any(|m| q.contains(m)))
}

/// Unreserved `cpus`/`mem`/`disk`/`gpus` of `resources` cut down to `cap`; everything else as is.
fn cap_unreserved(resources: &Resources, cap: &Quantities) -> Resources {
    let mut left = *cap;
    let mut out = Resources::new();
    for (key, millis) in resources.scalars() {
        let idx = SHARE_RESOURCES.iter().position(|n| *n == key.name);
        match idx {
            Some(i) if !key.is_reserved() => {
                let take = millis.min(left.0[i]);
                left.0[i] -= take;
                out.add_scalar(key.clone(), take);
            }
            _ => out.add_scalar(key.clone(), millis),
        }
    }
    for (key, ranges) in resources.range_entries() {
        out.add_ranges(key.clone(), ranges);
    }
    out
}
