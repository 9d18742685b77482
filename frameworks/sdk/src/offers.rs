//! Offer helpers: does a task fit an offer, and carving several tasks (with concrete ports) out of
//! one offer. Pure functions over the resource algebra.

use agora_proto::{v1, Ranges, Resources};

/// What one task needs: scalar resources plus a number of host ports (any free ones) and/or
/// specific ports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskNeeds {
    /// Scalars (`cpus:0.5;mem:128`), roles ignored.
    pub scalars: Resources,
    /// How many ports of any number.
    pub any_ports: usize,
    /// Ports the task needs exactly (for example `hostPort: 8080`).
    pub fixed_ports: Vec<u64>,
}

impl TaskNeeds {
    /// Parses `cpus:0.5;mem:128`, with `any_ports` ports of any number.
    ///
    /// # Errors
    /// The resource parser's error naming the bad token.
    pub fn parse(scalars: &str, any_ports: usize) -> Result<Self, agora_proto::ResourceError> {
        Ok(TaskNeeds {
            scalars: Resources::parse(scalars)?,
            any_ports,
            fixed_ports: Vec::new(),
        })
    }
}

/// Resources given to one task, and the ports among them in order (fixed ports first).
#[derive(Debug, Clone, PartialEq)]
pub struct Carved {
    pub resources: Resources,
    pub ports: Vec<u64>,
}

impl Carved {
    pub fn to_proto(&self) -> Vec<v1::Resource> {
        self.resources.to_proto()
    }
}

/// The lowest `n` ports of `ranges` that are not in `taken`.
fn lowest_ports(ranges: &Ranges, n: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    for &(b, e) in ranges.pairs() {
        let mut p = b;
        while p <= e && out.len() < n {
            out.push(p);
            p += 1;
        }
        if out.len() == n {
            break;
        }
    }
    out
}

/// Takes one task's needs out of `left` (what remains of an offer), choosing concrete ports.
/// Returns `None` and leaves `left` unchanged when it does not fit.
pub fn carve(left: &mut Resources, needs: &TaskNeeds) -> Option<Carved> {
    let free_ports = left.ranges_total("ports");
    if needs
        .fixed_ports
        .iter()
        .any(|p| !free_ports.contains_value(*p))
    {
        return None;
    }
    let fixed = Ranges::from_pairs(needs.fixed_ports.iter().map(|&p| (p, p)));
    let after_fixed = free_ports.difference(&fixed);
    let any = lowest_ports(&after_fixed, needs.any_ports);
    if any.len() < needs.any_ports {
        return None;
    }
    let mut wanted = needs.scalars.flatten();
    let mut ports: Vec<u64> = needs.fixed_ports.clone();
    ports.extend(&any);
    if !ports.is_empty() {
        wanted.add(&Resources::ranges(
            "ports",
            Ranges::from_pairs(ports.iter().map(|&p| (p, p))),
        ));
    }
    let resources = left.take_flattened(&wanted)?;
    Some(Carved { resources, ports })
}

/// Carves as many copies of `needs` as fit into an offer, up to `max`.
pub fn carve_many(offer: &v1::Offer, needs: &TaskNeeds, max: usize) -> Vec<Carved> {
    let Ok(mut left) = Resources::from_proto(&offer.resources) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while out.len() < max {
        match carve(&mut left, needs) {
            Some(c) => out.push(c),
            None => break,
        }
    }
    out
}

/// Whether one task with these needs fits in the offer.
pub fn fits(offer: &v1::Offer, needs: &TaskNeeds) -> bool {
    !carve_many(offer, needs, 1).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(res: &str) -> v1::Offer {
        v1::Offer {
            id: "o1".into(),
            resources: Resources::parse(res).expect("res").to_proto(),
            ..Default::default()
        }
    }

    #[test]
    fn several_tasks_are_carved_with_distinct_ports_until_the_offer_is_used_up() {
        let o = offer("cpus:1;mem:1024;ports:[31000-31002,31010-31010]");
        let needs = TaskNeeds::parse("cpus:0.25;mem:128", 1).expect("needs");
        let got = carve_many(&o, &needs, 10);
        let ports: Vec<u64> = got.iter().flat_map(|c| c.ports.clone()).collect();
        assert_eq!(ports, [31000, 31001, 31002, 31010]);
        let two_ports = TaskNeeds::parse("cpus:0.1;mem:32", 2).expect("needs");
        assert_eq!(carve_many(&o, &two_ports, 10).len(), 2);
    }

    #[test]
    fn fixed_ports_must_be_in_the_offer() {
        let o = offer("cpus:1;mem:1024;ports:[31000-31005]");
        let mut needs = TaskNeeds::parse("cpus:0.1;mem:32", 1).expect("needs");
        needs.fixed_ports = vec![31003];
        let c = carve_many(&o, &needs, 1);
        assert_eq!(c[0].ports, [31003, 31000]);
        needs.fixed_ports = vec![8080];
        assert!(!fits(&o, &needs));
    }

    #[test]
    fn too_big_a_task_does_not_fit_and_changes_nothing() {
        let mut left = Resources::parse("cpus:1;mem:128").expect("res");
        let before = left.clone();
        assert!(carve(&mut left, &TaskNeeds::parse("cpus:2;mem:64", 0).expect("n")).is_none());
        assert_eq!(left, before);
    }

    #[test]
    fn reserved_resources_of_the_offer_are_used_first() {
        let mut left = Resources::parse("cpus(web):1;cpus:1;mem:256").expect("res");
        let c = carve(
            &mut left,
            &TaskNeeds::parse("cpus:1.5;mem:64", 0).expect("n"),
        )
        .expect("fits");
        assert_eq!(
            c.resources,
            Resources::parse("cpus(web):1;cpus:0.5;mem:64").expect("res")
        );
    }
}
