//! Sorters: the order in which the allocator visits roles, and frameworks inside a role.
//!
//! A sorter holds *clients* (a role, or a framework inside one role) identified by a small integer the
//! allocator chooses, with the scalar quantities allocated to each and the cluster total. It answers
//! "who comes first?". Two implementations share the [`Sorter`] trait and one table-driven suite:
//!
//! - [`DrfSorter`]: dominant resource fairness. A client's share is the largest fraction of the total
//!   it holds over `cpus`, `mem`, `disk`, `gpus`, divided by its weight; ties go to the client with
//!   fewer allocations, then to the smaller name. Clients with a higher priority (strict-priority
//!   policy) come before all clients with a lower one. Keys are kept in a `BTreeSet` and updated
//!   incrementally when an allocation changes, so finding the neediest client costs `O(log n)` and the
//!   allocator never re-sorts everyone per agent.
//! - [`RandomSorter`]: a seeded random order on every call (Mesos's random sorter), for comparison.
//!
//! Only active clients are sorted; inactive ones keep their allocation (a suppressed framework still
//! holds what it was given).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use agora_proto::Resources;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Names of the scalars that count towards shares, in the order of [`Quantities`].
pub const SHARE_RESOURCES: [&str; 4] = ["cpus", "mem", "disk", "gpus"];

/// Scalar quantities (thousandths) of `cpus`, `mem`, `disk`, `gpus`, roles ignored: what shares,
/// quota and minimum-allocatable checks are computed on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Quantities(pub [i64; 4]);

impl Quantities {
    /// The share-relevant scalar quantities of a resource set, all roles together.
    pub fn of(resources: &Resources) -> Self {
        let mut q = Quantities::default();
        for (key, millis) in resources.scalars() {
            if let Some(i) = SHARE_RESOURCES.iter().position(|n| *n == key.name) {
                q.0[i] += millis;
            }
        }
        q
    }

    /// Parses scalar quantities from the flag syntax (`cpus:1;mem:32`); roles are ignored.
    ///
    /// # Errors
    /// The resource parse error.
    pub fn parse(s: &str) -> Result<Self, agora_proto::ResourceError> {
        Ok(Self::of(&Resources::parse(s)?))
    }

    pub fn add(&mut self, other: &Quantities) {
        for i in 0..4 {
            self.0[i] += other.0[i];
        }
    }

    /// Subtracts, never going below zero.
    pub fn subtract(&mut self, other: &Quantities) {
        for i in 0..4 {
            self.0[i] = (self.0[i] - other.0[i]).max(0);
        }
    }

    /// Whether every quantity is at least `other`'s.
    pub fn contains(&self, other: &Quantities) -> bool {
        (0..4).all(|i| self.0[i] >= other.0[i])
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|v| *v == 0)
    }

    /// `self - other` per quantity, clamped at zero.
    pub fn saturating_sub(&self, other: &Quantities) -> Quantities {
        let mut out = *self;
        out.subtract(other);
        out
    }

    /// Dominant share against `total` (resources with a zero total are ignored).
    pub fn dominant_share(&self, total: &Quantities) -> f64 {
        let mut share = 0.0f64;
        for i in 0..4 {
            if total.0[i] > 0 {
                // Exact integers divided once: equal fractions give bit-identical floats, so ties
                // between clients are real ties.
                let s = self.0[i] as f64 / total.0[i] as f64;
                if s > share {
                    share = s;
                }
            }
        }
        share
    }
}

/// Decides the order in which clients are offered resources. See the module documentation.
///
/// Client ids are chosen by the caller and must be unique within one sorter.
pub trait Sorter {
    /// Adds an active client with weight 1, priority 0 and nothing allocated. Re-adding an existing
    /// id is a no-op.
    fn add(&mut self, id: u32, name: &str);
    /// Removes a client and forgets its allocation.
    fn remove(&mut self, id: u32);
    /// Whether a client exists.
    fn contains(&self, id: u32) -> bool;
    /// Only active clients are returned by [`Sorter::sort`] and [`Sorter::first_where`].
    fn set_active(&mut self, id: u32, active: bool);
    /// Weights divide the share (weight 2 = entitled to twice as much). Must be positive.
    fn set_weight(&mut self, id: u32, weight: f64);
    /// Clients with a higher priority are sorted before all clients with a lower one.
    fn set_priority(&mut self, id: u32, priority: i64);
    /// Records resources given to a client (counts one allocation for tie-breaking).
    fn allocated(&mut self, id: u32, quantities: &Quantities);
    /// Records resources taken back from a client.
    fn unallocated(&mut self, id: u32, quantities: &Quantities);
    /// What a client currently holds.
    fn allocation(&self, id: u32) -> Quantities;
    /// The cluster total that shares are computed against.
    fn set_total(&mut self, total: &Quantities);
    /// A client's (weighted) dominant share.
    fn share(&self, id: u32) -> f64;
    /// Writes the active clients, first to be offered first, into `out` (cleared first).
    fn sort(&mut self, out: &mut Vec<u32>);
    /// The first active client in sort order for which `pred` holds.
    fn first_where(&mut self, pred: &mut dyn FnMut(u32) -> bool) -> Option<u32>;
}

/// Which [`Sorter`] implementation the allocator uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SorterKind {
    /// Dominant resource fairness.
    #[default]
    Drf,
    /// A seeded random order.
    Random,
}

/// Per-client bookkeeping shared by both sorters.
#[derive(Debug, Clone)]
struct Client {
    name: Arc<str>,
    weight: f64,
    priority: i64,
    allocated: Quantities,
    allocations: u64,
    active: bool,
}

impl Client {
    fn new(name: &str) -> Self {
        Client {
            name: Arc::from(name),
            weight: 1.0,
            priority: 0,
            allocated: Quantities::default(),
            allocations: 0,
            active: true,
        }
    }

    fn share(&self, total: &Quantities) -> f64 {
        self.allocated.dominant_share(total) / self.weight
    }
}

/// Sort key: higher priority first, then smaller share, fewer allocations, smaller name, id.
/// The share is a non-negative `f64` whose bit pattern orders like the number.
type Key = (i64, u64, u64, Arc<str>, u32);

/// Dominant resource fairness. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct DrfSorter {
    clients: HashMap<u32, (Client, Option<Key>)>,
    order: BTreeSet<Key>,
    total: Quantities,
}

impl DrfSorter {
    pub fn new() -> Self {
        Self::default()
    }

    fn key(client: &Client, id: u32, total: &Quantities) -> Key {
        (
            -client.priority,
            client.share(total).to_bits(),
            client.allocations,
            client.name.clone(),
            id,
        )
    }

    /// Recomputes one client's key after a change.
    fn rekey(&mut self, id: u32) {
        let total = self.total;
        if let Some((client, key)) = self.clients.get_mut(&id) {
            if let Some(old) = key.take() {
                self.order.remove(&old);
            }
            if client.active {
                let new = Self::key(client, id, &total);
                self.order.insert(new.clone());
                *key = Some(new);
            }
        }
    }
}

impl Sorter for DrfSorter {
    fn add(&mut self, id: u32, name: &str) {
        if self.clients.contains_key(&id) {
            return;
        }
        self.clients.insert(id, (Client::new(name), None));
        self.rekey(id);
    }

    fn remove(&mut self, id: u32) {
        if let Some((_, Some(key))) = self.clients.remove(&id) {
            self.order.remove(&key);
        }
    }

    fn contains(&self, id: u32) -> bool {
        self.clients.contains_key(&id)
    }

    fn set_active(&mut self, id: u32, active: bool) {
        if let Some((client, _)) = self.clients.get_mut(&id) {
            if client.active != active {
                client.active = active;
                self.rekey(id);
            }
        }
    }

    fn set_weight(&mut self, id: u32, weight: f64) {
        if let Some((client, _)) = self.clients.get_mut(&id) {
            client.weight = weight;
            self.rekey(id);
        }
    }

    fn set_priority(&mut self, id: u32, priority: i64) {
        if let Some((client, _)) = self.clients.get_mut(&id) {
            client.priority = priority;
            self.rekey(id);
        }
    }

    fn allocated(&mut self, id: u32, quantities: &Quantities) {
        if let Some((client, _)) = self.clients.get_mut(&id) {
            client.allocated.add(quantities);
            client.allocations += 1;
            self.rekey(id);
        }
    }

    fn unallocated(&mut self, id: u32, quantities: &Quantities) {
        if let Some((client, _)) = self.clients.get_mut(&id) {
            client.allocated.subtract(quantities);
            self.rekey(id);
        }
    }

    fn allocation(&self, id: u32) -> Quantities {
        self.clients
            .get(&id)
            .map(|(c, _)| c.allocated)
            .unwrap_or_default()
    }

    fn set_total(&mut self, total: &Quantities) {
        if self.total == *total {
            return;
        }
        self.total = *total;
        self.order.clear();
        let total = self.total;
        for (id, (client, key)) in self.clients.iter_mut() {
            *key = None;
            if client.active {
                let k = Self::key(client, *id, &total);
                self.order.insert(k.clone());
                *key = Some(k);
            }
        }
    }

    fn share(&self, id: u32) -> f64 {
        self.clients
            .get(&id)
            .map(|(c, _)| c.share(&self.total))
            .unwrap_or(0.0)
    }

    fn sort(&mut self, out: &mut Vec<u32>) {
        out.clear();
        out.extend(self.order.iter().map(|k| k.4));
    }

    fn first_where(&mut self, pred: &mut dyn FnMut(u32) -> bool) -> Option<u32> {
        self.order.iter().map(|k| k.4).find(|id| pred(*id))
    }
}

/// A seeded random order on every call; priorities still come first.
#[derive(Debug, Clone)]
pub struct RandomSorter {
    clients: HashMap<u32, Client>,
    total: Quantities,
    rng: StdRng,
    scratch: Vec<(i64, u32)>,
}

impl RandomSorter {
    pub fn new(seed: u64) -> Self {
        RandomSorter {
            clients: HashMap::new(),
            total: Quantities::default(),
            rng: StdRng::seed_from_u64(seed),
            scratch: Vec::new(),
        }
    }

    fn shuffled(&mut self) {
        self.scratch.clear();
        self.scratch.extend(
            self.clients
                .iter()
                .filter(|(_, c)| c.active)
                .map(|(id, c)| (-c.priority, *id)),
        );
        // HashMap order is not deterministic; sort first so the seed alone decides the order.
        self.scratch.sort_unstable();
        self.scratch.shuffle(&mut self.rng);
        self.scratch.sort_by_key(|(p, _)| *p);
    }
}

impl Sorter for RandomSorter {
    fn add(&mut self, id: u32, name: &str) {
        self.clients.entry(id).or_insert_with(|| Client::new(name));
    }

    fn remove(&mut self, id: u32) {
        self.clients.remove(&id);
    }

    fn contains(&self, id: u32) -> bool {
        self.clients.contains_key(&id)
    }

    fn set_active(&mut self, id: u32, active: bool) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.active = active;
        }
    }

    fn set_weight(&mut self, id: u32, weight: f64) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.weight = weight;
        }
    }

    fn set_priority(&mut self, id: u32, priority: i64) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.priority = priority;
        }
    }

    fn allocated(&mut self, id: u32, quantities: &Quantities) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.allocated.add(quantities);
            c.allocations += 1;
        }
    }

    fn unallocated(&mut self, id: u32, quantities: &Quantities) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.allocated.subtract(quantities);
        }
    }

    fn allocation(&self, id: u32) -> Quantities {
        self.clients
            .get(&id)
            .map(|c| c.allocated)
            .unwrap_or_default()
    }

    fn set_total(&mut self, total: &Quantities) {
        self.total = *total;
    }

    fn share(&self, id: u32) -> f64 {
        self.clients
            .get(&id)
            .map(|c| c.share(&self.total))
            .unwrap_or(0.0)
    }

    fn sort(&mut self, out: &mut Vec<u32>) {
        self.shuffled();
        out.clear();
        out.extend(self.scratch.iter().map(|(_, id)| *id));
    }

    fn first_where(&mut self, pred: &mut dyn FnMut(u32) -> bool) -> Option<u32> {
        self.shuffled();
        self.scratch.iter().map(|(_, id)| *id).find(|id| pred(*id))
    }
}

/// Either sorter, chosen at run time; lets the allocator stay `Clone` without boxing.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per role; boxing buys nothing here
pub enum AnySorter {
    Drf(DrfSorter),
    Random(RandomSorter),
}

impl AnySorter {
    pub fn new(kind: SorterKind, seed: u64) -> Self {
        match kind {
            SorterKind::Drf => AnySorter::Drf(DrfSorter::new()),
            SorterKind::Random => AnySorter::Random(RandomSorter::new(seed)),
        }
    }

    fn inner(&mut self) -> &mut dyn Sorter {
        match self {
            AnySorter::Drf(s) => s,
            AnySorter::Random(s) => s,
        }
    }

    fn inner_ref(&self) -> &dyn Sorter {
        match self {
            AnySorter::Drf(s) => s,
            AnySorter::Random(s) => s,
        }
    }
}

impl Sorter for AnySorter {
    fn add(&mut self, id: u32, name: &str) {
        self.inner().add(id, name)
    }
    fn remove(&mut self, id: u32) {
        self.inner().remove(id)
    }
    fn contains(&self, id: u32) -> bool {
        self.inner_ref().contains(id)
    }
    fn set_active(&mut self, id: u32, active: bool) {
        self.inner().set_active(id, active)
    }
    fn set_weight(&mut self, id: u32, weight: f64) {
        self.inner().set_weight(id, weight)
    }
    fn set_priority(&mut self, id: u32, priority: i64) {
        self.inner().set_priority(id, priority)
    }
    fn allocated(&mut self, id: u32, quantities: &Quantities) {
        self.inner().allocated(id, quantities)
    }
    fn unallocated(&mut self, id: u32, quantities: &Quantities) {
        self.inner().unallocated(id, quantities)
    }
    fn allocation(&self, id: u32) -> Quantities {
        self.inner_ref().allocation(id)
    }
    fn set_total(&mut self, total: &Quantities) {
        self.inner().set_total(total)
    }
    fn share(&self, id: u32) -> f64 {
        self.inner_ref().share(id)
    }
    fn sort(&mut self, out: &mut Vec<u32>) {
        self.inner().sort(out)
    }
    fn first_where(&mut self, pred: &mut dyn FnMut(u32) -> bool) -> Option<u32> {
        self.inner().first_where(pred)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantities {
        Quantities::parse(s).expect("test quantities parse")
    }

    fn names(sorter: &mut dyn Sorter) -> Vec<u32> {
        let mut out = Vec::new();
        sorter.sort(&mut out);
        out
    }

    /// Mesos-style table: allocate, then expect an order and shares.
    #[test]
    fn drf_table() {
        // (step, client, allocation added, expected order after the step)
        let mut s = DrfSorter::new();
        s.set_total(&q("cpus:100;mem:100"));
        s.add(0, "a");
        s.add(1, "b");
        let table: &[(u32, &str, &[u32], [f64; 2])] = &[
            // a: 0.05 dominant (cpus 5/100), b: 0
            (0, "cpus:5;mem:2", &[1, 0], [0.05, 0.0]),
            // b: 0.03 (mem)
            (1, "cpus:1;mem:3", &[1, 0], [0.05, 0.03]),
            // b: 0.10 (mem)
            (1, "mem:7", &[0, 1], [0.05, 0.10]),
            // a: 0.10 (cpus) — tie with b, both have 2 allocations → the name decides, a first
            (0, "cpus:5", &[0, 1], [0.10, 0.10]),
        ];
        for (i, (client, alloc, order, shares)) in table.iter().enumerate() {
            s.allocated(*client, &q(alloc));
            assert_eq!(names(&mut s), *order, "order after step {i}");
            assert_eq!(s.share(0), shares[0], "share of a after step {i}");
            assert_eq!(s.share(1), shares[1], "share of b after step {i}");
        }
        // Equal shares and equal counts: the name decides.
        let mut t = DrfSorter::new();
        t.set_total(&q("cpus:10"));
        t.add(7, "zeta");
        t.add(3, "alpha");
        assert_eq!(names(&mut t), [3, 7]);
    }

    #[test]
    fn drf_weights_priorities_and_activity() {
        let mut s = DrfSorter::new();
        s.set_total(&q("cpus:10;mem:10"));
        s.add(0, "a");
        s.add(1, "b");
        s.set_weight(0, 2.0);
        s.allocated(0, &q("cpus:4")); // 0.4 / 2 = 0.2
        s.allocated(1, &q("cpus:3")); // 0.3
        assert_eq!(names(&mut s), [0, 1]);
        assert_eq!(s.share(0), 0.2);
        s.set_priority(1, 5);
        assert_eq!(names(&mut s), [1, 0]);
        s.set_active(1, false);
        assert_eq!(names(&mut s), [0]);
        assert_eq!(s.allocation(1), q("cpus:3"));
        s.unallocated(0, &q("cpus:4"));
        s.set_active(1, true);
        assert_eq!(names(&mut s), [1, 0]);
        // The total changes every share.
        s.set_total(&q("cpus:30;mem:10"));
        assert_eq!(s.share(1), 0.1);
        s.remove(1);
        assert_eq!(names(&mut s), [0]);
        assert!(!s.contains(1));
    }

    /// Behaviour every sorter must have, whatever its order.
    fn common_suite(s: &mut dyn Sorter) {
        s.set_total(&q("cpus:10"));
        for id in 0..5 {
            s.add(id, &format!("c{id}"));
        }
        let mut all = names(s);
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2, 3, 4]);
        s.set_active(2, false);
        assert!(!names(s).contains(&2));
        s.set_priority(4, 1);
        assert_eq!(names(s)[0], 4, "a higher priority always comes first");
        assert_eq!(s.first_where(&mut |id| id == 3), Some(3));
        assert_eq!(
            s.first_where(&mut |id| id == 2),
            None,
            "inactive clients are never chosen"
        );
        s.allocated(1, &q("cpus:5"));
        assert_eq!(s.share(1), 0.5);
        s.remove(1);
        assert_eq!(s.allocation(1), Quantities::default());
    }

    #[test]
    fn drf_sorter_passes_the_common_suite() {
        common_suite(&mut DrfSorter::new());
    }

    #[test]
    fn random_sorter_passes_the_common_suite() {
        common_suite(&mut RandomSorter::new(7));
    }

    #[test]
    fn random_sorter_is_reproducible_from_its_seed() {
        let run = || {
            let mut s = RandomSorter::new(42);
            for id in 0..20 {
                s.add(id, &format!("c{id}"));
            }
            (0..3).map(|_| names(&mut s)).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        assert_ne!(a[0], a[1], "the order changes between calls");
    }
}
