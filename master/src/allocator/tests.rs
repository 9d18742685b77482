//! Allocator tests: Mesos-style tables and scenarios, then properties.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agora_proto::Resources;
use proptest::prelude::*;

use super::*;

fn res(s: &str) -> Resources {
    Resources::parse(s).expect("test resources parse")
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Offers per framework id.
fn count_by_framework(offers: &[Offer]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for o in offers {
        *out.entry(o.framework_id.clone()).or_insert(0) += 1;
    }
    out
}

/// Each framework launches one task per offer while its task fits and gives back the rest; an
/// offer its task does not fit is declined for an hour. Returns tasks launched per framework.
fn drf_until_full(alloc: &mut Allocator, tasks: &[(&str, &str)], t0: Instant) -> Vec<usize> {
    let mut launched = vec![0; tasks.len()];
    for step in 0..100u64 {
        let now = t0 + secs(step);
        let offers = alloc.allocate(now);
        if offers.is_empty() {
            return launched;
        }
        for offer in offers {
            let i = tasks
                .iter()
                .position(|(f, _)| *f == offer.framework_id)
                .expect("known fw");
            let task = res(tasks[i].1);
            if offer.resources.contains(&task) {
                launched[i] += 1;
                let mut rest = offer.resources.clone();
                rest.subtract(&task);
                alloc
                    .recover(&offer.agent_id, &offer.framework_id, &offer.role, &rest)
                    .expect("rest");
            } else {
                alloc
                    .decline(
                        &offer.framework_id,
                        &offer.agent_id,
                        &offer.role,
                        &offer.resources,
                        Some(secs(3600)),
                        now,
                    )
                    .expect("decline");
            }
        }
    }
    panic!("the cluster never filled up: {launched:?}");
}

#[test]
fn used_resources_reported_at_reregistration_are_not_offered_and_count_in_shares() {
    let t0 = Instant::now();
    let mut alloc = Allocator::with_policy(Policy::Drf);
    alloc.add_agent("a", res("cpus:4;mem:4096")).unwrap();
    alloc.add_framework("f", &["r"]).unwrap();
    alloc.add_framework("g", &["s"]).unwrap();
    alloc
        .allocate_used("a", "f", "r", &res("cpus:3;mem:1024"))
        .unwrap();
    assert_eq!(alloc.framework_share("f", "r"), Some(0.75));
    let offers = alloc.allocate(t0);
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].framework_id, "g");
    assert_eq!(offers[0].resources, res("cpus:1;mem:3072"));
    // More than is free is refused and changes nothing.
    let err = alloc
        .allocate_used("a", "g", "s", &res("cpus:1"))
        .unwrap_err();
    assert!(matches!(err, AllocatorError::NotFree { .. }), "{err}");
    assert!(matches!(
        alloc.allocate_used("a", "f", "s", &res("cpus:0")),
        Err(AllocatorError::NotInRole { .. })
    ));
    // The task ends: its resources come back and are offered again.
    alloc
        .recover("a", "f", "r", &res("cpus:3;mem:1024"))
        .unwrap();
    assert_eq!(alloc.framework_share("f", "r"), Some(0.0));
}

#[test]
fn drf_paper_example() {
    let t0 = Instant::now();
    let mut alloc = Allocator::with_policy(Policy::Drf);
    alloc.add_agent("a1", res("cpus:9;mem:18432")).unwrap();
    alloc.add_framework("fa", &["role-a"]).unwrap();
    alloc.add_framework("fb", &["role-b"]).unwrap();
    // A needs <1 cpu, 4 GiB>, B needs <3 cpu, 1 GiB>  →  A runs 3 tasks, B runs 2
    let launched = drf_until_full(
        &mut alloc,
        &[("fa", "cpus:1;mem:4096"), ("fb", "cpus:3;mem:1024")],
        t0,
    );
    assert_eq!(launched, [3, 2]);
    let shares = alloc.role_shares();
    // Both dominant shares are 2/3 (A: 12/18 GiB, B: 6/9 cpus).
    assert_eq!(shares[0].share, 2.0 / 3.0);
    assert_eq!(shares[1].share, 2.0 / 3.0);
}

#[test]
fn drf_paper_example_with_both_frameworks_in_one_role() {
    let t0 = Instant::now();
    let mut alloc = Allocator::with_policy(Policy::Drf);
    alloc.add_agent("a1", res("cpus:9;mem:18432")).unwrap();
    alloc.add_framework("fa", &["shared"]).unwrap();
    alloc.add_framework("fb", &["shared"]).unwrap();
    let launched = drf_until_full(
        &mut alloc,
        &[("fa", "cpus:1;mem:4096"), ("fb", "cpus:3;mem:1024")],
        t0,
    );
    assert_eq!(launched, [3, 2]);
    assert_eq!(alloc.framework_share("fa", "shared"), Some(2.0 / 3.0));
    assert_eq!(alloc.framework_share("fb", "shared"), Some(2.0 / 3.0));
}

/// `n` agents of 1 cpu / 1 GiB named a0..
fn small_agents(alloc: &mut Allocator, n: usize) {
    for i in 0..n {
        alloc
            .add_agent(&format!("a{i}"), res("cpus:1;mem:1024"))
            .unwrap();
    }
}

#[test]
fn weights_two_to_one_give_twice_the_share() {
    let mut alloc = Allocator::with_policy(Policy::Drf);
    small_agents(&mut alloc, 30);
    alloc.update_weight("heavy", 2.0).unwrap();
    alloc.add_framework("fh", &["heavy"]).unwrap();
    alloc.add_framework("fl", &["light"]).unwrap();
    let offers = alloc.allocate(Instant::now());
    let counts = count_by_framework(&offers);
    assert_eq!(counts["fh"], 20);
    assert_eq!(counts["fl"], 10);
    let shares = alloc.role_shares();
    let raw = |name: &str| {
        let s = shares.iter().find(|s| s.role == name).unwrap();
        s.allocated
            .dominant_share(&Quantities::parse("cpus:30;mem:30720").unwrap())
    };
    assert_eq!(raw("heavy"), 2.0 * raw("light"));
    // Weighted shares are equal.
    assert_eq!(shares[0].share, shares[1].share);
}

#[test]
fn strict_priority_starves_the_low_role_while_the_high_one_wants_resources() {
    let t0 = Instant::now();
    let mut alloc = Allocator::with_policy(Policy::StrictPriority);
    small_agents(&mut alloc, 10);
    alloc.set_priority("high", 10);
    alloc.set_priority("low", 0);
    alloc.add_framework("fh", &["high"]).unwrap();
    alloc.add_framework("fl", &["low"]).unwrap();
    let offers = alloc.allocate(t0);
    assert_eq!(count_by_framework(&offers).get("fh"), Some(&10));
    assert_eq!(count_by_framework(&offers).get("fl"), None);
    // The high role gives everything back and still wants: the low role still gets nothing.
    for o in &offers {
        alloc
            .recover(&o.agent_id, &o.framework_id, &o.role, &o.resources)
            .unwrap();
    }
    let offers = alloc.allocate(t0 + secs(1));
    assert_eq!(count_by_framework(&offers).get("fh"), Some(&10));
    for o in &offers {
        alloc
            .recover(&o.agent_id, &o.framework_id, &o.role, &o.resources)
            .unwrap();
    }
    // Once it stops wanting, the low role is served.
    alloc.suppress("fh", &[]).unwrap();
    let offers = alloc.allocate(t0 + secs(2));
    assert_eq!(count_by_framework(&offers).get("fl"), Some(&10));
}

#[test]
fn same_agents_under_drf_are_shared() {
    let mut alloc = Allocator::with_policy(Policy::Drf);
    small_agents(&mut alloc, 10);
    alloc.set_priority("high", 10);
    alloc.add_framework("fh", &["high"]).unwrap();
    alloc.add_framework("fl", &["low"]).unwrap();
    let counts = count_by_framework(&alloc.allocate(Instant::now()));
    assert_eq!(
        (counts["fh"], counts["fl"]),
        (5, 5),
        "priorities are ignored under DRF"
    );
}

#[test]
fn reservations_go_only_to_their_role() {
    let t0 = Instant::now();
    let mut alloc = Allocator::with_policy(Policy::Drf);
    alloc
        .add_agent("a1", res("cpus:4;mem:4096;cpus(web):2;mem(web):1024"))
        .unwrap();
    alloc.add_framework("batch", &["batch"]).unwrap();
    alloc.add_framework("web", &["web"]).unwrap();
    alloc.suppress("web", &[]).unwrap();
    let offers = alloc.allocate(t0);
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].framework_id, "batch");
    assert_eq!(offers[0].resources, res("cpus:4;mem:4096"));
    // Nothing else is offered to batch, even though web's reservation is idle.
    assert!(alloc.allocate(t0 + secs(1)).is_empty());
    alloc.revive("web", &[]).unwrap();
    let offers = alloc.allocate(t0 + secs(2));
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].framework_id, "web");
    assert_eq!(offers[0].resources, res("cpus(web):2;mem(web):1024"));
}

#[test]
fn a_role_gets_unreserved_and_its_reservation_together_and_others_their_own_in_the_same_cycle() {
    let mut alloc = Allocator::with_policy(Policy::Drf);
    alloc
        .add_agent("a1", res("cpus:4;mem:4096;cpus(web):2;mem(web):1024"))
        .unwrap();
    alloc.add_framework("batch", &["batch"]).unwrap();
    alloc.add_framework("web", &["web"]).unwrap();
    let mut offers = alloc.allocate(Instant::now());
    offers.sort_by(|a, b| a.framework_id.cmp(&b.framework_id));
    // "batch" sorts first (name tie-break): unreserved; "web" then gets its reservation.
    assert_eq!(offers.len(), 2);
    assert_eq!(offers[0].resources, res("cpus:4;mem:4096"));
    assert_eq!(offers[1].resources, res("cpus(web):2;mem(web):1024"));
}

#[test]
fn multi_role_framework_gets_one_offer_per_role() {
    let mut alloc = Allocator::with_policy(Policy::Drf);
    alloc
        .add_agent("a1", res("cpus:4;mem:4096;cpus(b):1;mem(b):512"))
        .unwrap();
    alloc.add_framework("f", &["a", "b"]).unwrap();
    let mut offers = alloc.allocate(Instant::now());
    offers.sort_by(|x, y| x.role.cmp(&y.role));
    assert_eq!(offers.len(), 2);
    assert_eq!(
        (offers[0].role.as_str(), &offers[0].resources),
        ("a", &res("cpus:4;mem:4096"))
    );
    assert_eq!(
        (offers[1].role.as_str(), &offers[1].resources),
        ("b", &res("cpus(b):1;mem(b):512"))
    );
}

#[test]
fn quota_stage_one_serves_a_role_below_its_guarantee_before_fair_share() {
    let t0 = Instant::now();
    let mut alloc = Allocator::with_policy(Policy::Drf);
    small_agents(&mut alloc, 4);
    alloc.add_framework("fq", &["q"]).unwrap();
    alloc.add_framework("fb", &["b"]).unwrap();
    alloc.set_quota("q", &res("cpus:3;mem:3072"));
    alloc.suppress("fb", &[]).unwrap();
    // q takes one agent: its share (0.25) is now above b's (0).
    let first = alloc.allocate_agents(&["a0"], t0);
    assert_eq!(first.len(), 1);
    alloc.revive("fb", &[]).unwrap();
    // Without quota b would get the next agent (lower share); with quota q gets two more first.
    let offers = alloc.allocate_agents(&["a1", "a2"], t0 + secs(1));
    assert_eq!(count_by_framework(&offers).get("fq"), Some(&2));
    let offers = alloc.allocate_agents(&["a3"], t0 + secs(2));
    assert_eq!(
        count_by_framework(&offers).get("fb"),
        Some(&1),
        "guarantee met: fair share again"
    );
    assert_eq!(alloc.last_stats().quota_offers, 0);
}

#[test]
fn quota_headroom_is_held_back_from_other_roles() {
    let t0 = Instant::now();
    let mut alloc = Allocator::with_policy(Policy::Drf);
    small_agents(&mut alloc, 4);
    alloc.add_framework("fq", &["q"]).unwrap();
    alloc.add_framework("fb", &["big"]).unwrap();
    alloc.set_quota("q", &res("cpus:2;mem:2048"));
    // q is not asking right now; big may only take what q's guarantee does not need.
    alloc.suppress("fq", &[]).unwrap();
    let offers = alloc.allocate(t0);
    let total: Resources = offers.iter().fold(Resources::new(), |mut acc, o| {
        acc.add(&o.resources);
        acc
    });
    assert_eq!(total, res("cpus:2;mem:2048"));
    assert!(offers.iter().all(|o| o.framework_id == "fb"));
    alloc.revive("fq", &[]).unwrap();
    let offers = alloc.allocate(t0 + secs(1));
    let got: Resources =
        offers
            .iter()
            .filter(|o| o.framework_id == "fq")
            .fold(Resources::new(), |mut acc, o| {
                acc.add(&o.resources);
                acc
            });
    assert_eq!(got, res("cpus:2;mem:2048"));
    assert!(alloc.last_stats().quota_offers >= 1);
}

#[test]
fn without_quota_the_big_role_takes_everything() {
    let mut alloc = Allocator::with_policy(Policy::Drf);
    small_agents(&mut alloc, 4);
    alloc.add_framework("fq", &["q"]).unwrap();
    alloc.add_framework("fb", &["big"]).unwrap();
    alloc.suppress("fq", &[]).unwrap();
    assert_eq!(alloc.allocate(Instant::now()).len(), 4);
}

#[test]
fn decline_filter_holds_until_it_expires_and_revive_clears_it() {
    let t0 = Instant::now();
    let mut alloc = Allocator::with_policy(Policy::Drf);
    alloc.add_agent("a1", res("cpus:2;mem:2048")).unwrap();
    alloc.add_framework("f", &["r"]).unwrap();
    let o = alloc.allocate(t0).pop().unwrap();
    alloc
        .decline("f", "a1", "r", &o.resources, None, t0)
        .unwrap();
    assert!(alloc.allocate(t0 + secs(1)).is_empty());
    assert_eq!(alloc.last_stats().filtered, 1);
    assert!(alloc.allocate(t0 + Duration::from_millis(4999)).is_empty());
    let o = alloc
        .allocate(t0 + secs(5))
        .pop()
        .expect("filter expired at 5 s");
    alloc
        .decline("f", "a1", "r", &o.resources, Some(secs(60)), t0 + secs(5))
        .unwrap();
    assert!(alloc.allocate(t0 + secs(6)).is_empty());
    alloc.revive("f", &[]).unwrap();
    assert_eq!(alloc.allocate(t0 + secs(7)).len(), 1);
}

#[test]
fn a_short_filter_survives_one_cycle() {
    let t0 = Instant::now();
    let mut alloc = Allocator::with_policy(Policy::Drf);
    alloc.add_agent("a1", res("cpus:2;mem:2048")).unwrap();
    alloc.add_framework("f", &["r"]).unwrap();
    let o = alloc.allocate(t0).pop().unwrap();
    alloc
        .decline(
            "f",
            "a1",
            "r",
            &o.resources,
            Some(Duration::from_millis(1)),
            t0,
        )
        .unwrap();
    assert!(
        alloc.allocate(t0 + secs(1)).is_empty(),
        "expired, but no cycle has seen it yet"
    );
    assert_eq!(alloc.allocate(t0 + secs(2)).len(), 1);
}

#[test]
fn a_filter_does_not_cover_more_than_was_refused() {
    let t0 = Instant::now();
    let mut alloc = Allocator::with_policy(Policy::Drf);
    alloc.add_agent("a1", res("cpus:2;mem:2048")).unwrap();
    alloc.add_framework("f", &["r"]).unwrap();
    let o = alloc.allocate(t0).pop().unwrap();
    // The framework launches a 1-cpu task and declines the rest.
    let task = res("cpus:1;mem:1024");
    let mut rest = o.resources.clone();
    rest.subtract(&task);
    alloc
        .decline("f", "a1", "r", &rest, Some(secs(60)), t0)
        .unwrap();
    assert!(alloc.allocate(t0 + secs(1)).is_empty());
    // The task ends: the agent now has more than was refused, so it is offered again.
    alloc.recover("a1", "f", "r", &task).unwrap();
    let o = alloc
        .allocate(t0 + secs(2))
        .pop()
        .expect("more than the filter covers");
    assert_eq!(o.resources, res("cpus:2;mem:2048"));
}

#[test]
fn decline_filters_pass_the_agent_to_the_next_framework() {
    let t0 = Instant::now();
    let mut alloc = Allocator::with_policy(Policy::Drf);
    alloc.add_agent("a1", res("cpus:2;mem:2048")).unwrap();
    alloc.add_framework("f1", &["r"]).unwrap();
    alloc.add_framework("f2", &["r"]).unwrap();
    let o = alloc.allocate(t0).pop().unwrap();
    assert_eq!(o.framework_id, "f1");
    alloc
        .decline("f1", "a1", "r", &o.resources, None, t0)
        .unwrap();
    let o = alloc.allocate(t0 + secs(1)).pop().unwrap();
    assert_eq!(o.framework_id, "f2");
}

#[test]
fn suppress_and_revive_per_role() {
    let mut alloc = Allocator::with_policy(Policy::Drf);
    alloc
        .add_agent("a1", res("cpus:2;mem:2048;cpus(b):1;mem(b):512"))
        .unwrap();
    alloc.add_framework("f", &["a", "b"]).unwrap();
    alloc.suppress("f", &["a"]).unwrap();
    let offers = alloc.allocate(Instant::now());
    // Suppressed in a: the unreserved part can only go to role b now, with b's reservation.
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].role, "b");
    assert_eq!(
        offers[0].resources,
        res("cpus:2;mem:2048;cpus(b):1;mem(b):512")
    );
    assert!(matches!(
        alloc.suppress("f", &["zzz"]),
        Err(AllocatorError::NotInRole { .. })
    ));
}

#[test]
fn minimum_allocatable_resources_keep_crumbs_back() {
    let t0 = Instant::now();
    let mut alloc = Allocator::with_policy(Policy::Drf);
    alloc.add_agent("crumbs", res("cpus:0.005;mem:16")).unwrap();
    alloc.add_agent("cpu-only", res("cpus:0.01")).unwrap();
    alloc.add_agent("mem-only", res("mem:32")).unwrap();
    alloc.add_framework("f", &["r"]).unwrap();
    let mut offered: Vec<String> = alloc.allocate(t0).into_iter().map(|o| o.agent_id).collect();
    offered.sort();
    assert_eq!(offered, ["cpu-only", "mem-only"]);
}

#[test]
fn draining_agents_get_no_offers() {
    let t0 = Instant::now();
    let mut alloc = Allocator::with_policy(Policy::Drf);
    small_agents(&mut alloc, 3);
    alloc.add_framework("f", &["r"]).unwrap();
    alloc.set_draining("a1", true).unwrap();
    let offers = alloc.allocate(t0);
    assert_eq!(offers.len(), 2);
    assert!(offers.iter().all(|o| o.agent_id != "a1"));
    alloc.set_draining("a1", false).unwrap();
    assert_eq!(alloc.allocate(t0 + secs(1)).len(), 1);
}

#[test]
fn agents_come_and_go() {
    let t0 = Instant::now();
    let mut alloc = Allocator::with_policy(Policy::Drf);
    small_agents(&mut alloc, 2);
    alloc.add_framework("f", &["r"]).unwrap();
    assert_eq!(alloc.allocate(t0).len(), 2);
    assert_eq!(alloc.role_shares()[0].share, 1.0);
    alloc.remove_agent("a0").unwrap();
    assert_eq!(
        alloc.role_shares()[0].allocated,
        Quantities::parse("cpus:1;mem:1024").unwrap()
    );
    assert_eq!(alloc.role_shares()[0].share, 1.0);
    assert!(matches!(
        alloc.remove_agent("a0"),
        Err(AllocatorError::UnknownAgent(_))
    ));
    assert!(matches!(
        alloc.add_agent("a1", res("cpus:1")),
        Err(AllocatorError::DuplicateAgent(_))
    ));
    // Growing an agent that is fully offered: only the growth is free.
    alloc
        .update_agent_total("a1", res("cpus:3;mem:1024"))
        .unwrap();
    assert_eq!(alloc.free_resources("a1"), Some(&res("cpus:2")));
    let o = alloc.allocate(t0 + secs(1)).pop().unwrap();
    assert_eq!(o.resources, res("cpus:2"));
}

#[test]
fn recover_refuses_what_was_not_allocated() {
    let mut alloc = Allocator::with_policy(Policy::Drf);
    small_agents(&mut alloc, 1);
    alloc.add_framework("f", &["r"]).unwrap();
    let err = alloc.recover("a0", "f", "r", &res("cpus:1")).unwrap_err();
    assert!(matches!(err, AllocatorError::RecoverExceedsTotal { .. }));
    let o = alloc.allocate(Instant::now()).pop().unwrap();
    alloc.recover("a0", "f", "r", &o.resources).unwrap();
    assert!(
        alloc.recover("a0", "f", "r", &o.resources).is_err(),
        "twice is refused"
    );
    assert_eq!(alloc.role_shares()[0].share, 0.0);
}

#[test]
fn removed_and_deactivated_frameworks_get_nothing() {
    let t0 = Instant::now();
    let mut alloc = Allocator::with_policy(Policy::Drf);
    small_agents(&mut alloc, 2);
    alloc.add_framework("f1", &["r"]).unwrap();
    alloc.add_framework("f2", &["r"]).unwrap();
    alloc.deactivate_framework("f1").unwrap();
    let offers = alloc.allocate(t0);
    assert!(offers.iter().all(|o| o.framework_id == "f2"));
    for o in &offers {
        alloc
            .recover(&o.agent_id, &o.framework_id, &o.role, &o.resources)
            .unwrap();
    }
    alloc.remove_framework("f2").unwrap();
    assert!(alloc.allocate(t0 + secs(1)).is_empty());
    alloc.activate_framework("f1").unwrap();
    assert_eq!(alloc.allocate(t0 + secs(2)).len(), 2);
    assert!(matches!(
        alloc.add_framework("f1", &["r"]),
        Err(AllocatorError::DuplicateFramework(_))
    ));
    assert!(matches!(
        alloc.add_framework::<&str>("f9", &[]),
        Err(AllocatorError::NoRoles(_))
    ));
    assert!(matches!(
        alloc.update_weight("r", 0.0),
        Err(AllocatorError::InvalidWeight { .. })
    ));
}

#[test]
fn allocate_agents_touches_only_those_agents() {
    let mut alloc = Allocator::with_policy(Policy::Drf);
    small_agents(&mut alloc, 5);
    alloc.add_framework("f", &["r"]).unwrap();
    let mut ids: Vec<String> = alloc
        .allocate_agents(&["a3", "a1", "nope"], Instant::now())
        .into_iter()
        .map(|o| o.agent_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["a1", "a3"]);
}

#[test]
fn the_shuffle_is_reproducible_from_the_seed() {
    let run = |seed| {
        let mut alloc = Allocator::new(AllocatorConfig {
            seed,
            ..AllocatorConfig::default()
        });
        small_agents(&mut alloc, 20);
        alloc.add_framework("f1", &["r1"]).unwrap();
        alloc.add_framework("f2", &["r2"]).unwrap();
        alloc.allocate(Instant::now())
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn the_random_sorter_still_offers_everything_once() {
    let mut alloc = Allocator::new(AllocatorConfig {
        sorter: SorterKind::Random,
        seed: 3,
        ..AllocatorConfig::default()
    });
    small_agents(&mut alloc, 12);
    for i in 0..4 {
        alloc
            .add_framework(&format!("f{i}"), &[format!("r{i}")])
            .unwrap();
    }
    let offers = alloc.allocate(Instant::now());
    assert_eq!(offers.len(), 12);
    assert!(count_by_framework(&offers).len() > 1);
}

// ----- properties -----

#[derive(Debug, Clone)]
enum Op {
    Allocate {
        advance_ms: u64,
    },
    Decline {
        offer: usize,
        refuse_ms: u64,
    },
    /// Launch "half" of an offer (first scalar halves), give back the rest.
    Accept {
        offer: usize,
    },
    /// A task ends.
    Finish {
        task: usize,
    },
    Suppress {
        framework: usize,
    },
    Revive {
        framework: usize,
    },
    Drain {
        agent: usize,
        on: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..3000).prop_map(|advance_ms| Op::Allocate { advance_ms }),
        2 => (0usize..8, 0u64..8000).prop_map(|(offer, refuse_ms)| Op::Decline { offer, refuse_ms }),
        2 => (0usize..8).prop_map(|offer| Op::Accept { offer }),
        1 => (0usize..8).prop_map(|task| Op::Finish { task }),
        1 => (0usize..3).prop_map(|framework| Op::Suppress { framework }),
        1 => (0usize..3).prop_map(|framework| Op::Revive { framework }),
        1 => (0usize..3, any::<bool>()).prop_map(|(agent, on)| Op::Drain { agent, on }),
    ]
}

const AGENTS: [(&str, &str); 3] = [
    ("a0", "cpus:4;mem:4096;ports:[31000-31009]"),
    (
        "a1",
        "cpus:2;mem:8192;cpus(web):1;mem(web):1024;ports:[31000-31004]",
    ),
    ("a2", "cpus:8;mem:2048;disk:100"),
];
const FRAMEWORKS: [(&str, &[&str]); 3] = [
    ("f0", &["web"]),
    ("f1", &["batch"]),
    ("f2", &["web", "batch"]),
];

/// Held resources (outstanding offers and running tasks) on one agent never overlap and never
/// exceed its total; the allocator's free view is exactly total minus held.
fn check_agent(alloc: &Allocator, agent: &str, total: &Resources, held: &[&Resources]) {
    let mut sum = Resources::new();
    let mut ports = 0u64;
    for r in held {
        sum.add(r);
        ports += r.ranges_total("ports").count();
    }
    assert_eq!(
        sum.ranges_total("ports").count(),
        ports,
        "a port is held twice on {agent}"
    );
    assert!(
        total.contains(&sum),
        "held {sum} exceeds total {total} on {agent}"
    );
    let mut free = total.clone();
    free.subtract(&sum);
    assert_eq!(
        alloc.free_resources(agent),
        Some(&free),
        "free view of {agent}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn offers_never_overlap_nor_exceed_free_resources(
        seed in any::<u64>(),
        quota in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut alloc = Allocator::new(AllocatorConfig { seed, ..AllocatorConfig::default() });
        for (id, r) in AGENTS {
            alloc.add_agent(id, res(r)).unwrap();
        }
        for (id, roles) in FRAMEWORKS {
            alloc.add_framework(id, roles).unwrap();
        }
        if quota {
            alloc.set_quota("batch", &res("cpus:3;mem:2048"));
        }
        let mut offers: Vec<Offer> = Vec::new();
        let mut tasks: Vec<Offer> = Vec::new();
        for op in ops {
            match op {
                Op::Allocate { advance_ms } => {
                    now += Duration::from_millis(advance_ms);
                    let free_before: HashMap<&str, Resources> = AGENTS
                        .iter()
                        .map(|(id, _)| (*id, alloc.free_resources(id).unwrap().clone()))
                        .collect();
                    let new = alloc.allocate(now);
                    let mut per_agent: HashMap<&str, Resources> = HashMap::new();
                    for o in &new {
                        prop_assert!(!o.resources.is_empty());
                        let acc = per_agent.entry(AGENTS.iter().find(|(id, _)| *id == o.agent_id).unwrap().0).or_default();
                        acc.add(&o.resources);
                        // Reservations never leak to another role.
                        for (key, _) in o.resources.scalars() {
                            prop_assert!(!key.is_reserved() || key.role == o.role, "{:?} in {}", key, o.role);
                        }
                    }
                    for (agent, sum) in per_agent {
                        prop_assert!(free_before[agent].contains(&sum), "offers {} exceed free {}", sum, free_before[agent]);
                    }
                    offers.extend(new);
                }
                Op::Decline { offer, refuse_ms } => {
                    if offer < offers.len() {
                        let o = offers.swap_remove(offer);
                        alloc.decline(&o.framework_id, &o.agent_id, &o.role, &o.resources, Some(Duration::from_millis(refuse_ms)), now).unwrap();
                    }
                }
                Op::Accept { offer } => {
                    if offer < offers.len() {
                        let o = offers.swap_remove(offer);
                        let mut used = Resources::new();
                        for (key, millis) in o.resources.scalars() {
                            used.add_scalar(key.clone(), millis / 2);
                        }
                        let mut rest = o.resources.clone();
                        rest.subtract(&used);
                        alloc.recover(&o.agent_id, &o.framework_id, &o.role, &rest).unwrap();
                        tasks.push(Offer { resources: used, ..o });
                    }
                }
                Op::Finish { task } => {
                    if task < tasks.len() {
                        let t = tasks.swap_remove(task);
                        alloc.recover(&t.agent_id, &t.framework_id, &t.role, &t.resources).unwrap();
                    }
                }
                Op::Suppress { framework } => alloc.suppress(FRAMEWORKS[framework].0, &[]).unwrap(),
                Op::Revive { framework } => alloc.revive(FRAMEWORKS[framework].0, &[]).unwrap(),
                Op::Drain { agent, on } => alloc.set_draining(AGENTS[agent].0, on).unwrap(),
            }
            for (id, total) in AGENTS {
                let held: Vec<&Resources> = offers.iter().chain(tasks.iter())
                    .filter(|o| o.agent_id == id).map(|o| &o.resources).collect();
                check_agent(&alloc, id, &res(total), &held);
            }
        }
        // Everything given back: shares return to zero.
        for o in offers.iter().chain(tasks.iter()) {
            alloc.recover(&o.agent_id, &o.framework_id, &o.role, &o.resources).unwrap();
        }
        for share in alloc.role_shares() {
            prop_assert_eq!(share.allocated, Quantities::default(), "role {}", share.role);
        }
    }

    #[test]
    fn declined_resources_come_back_exactly_when_the_filter_expires(
        refuse_quarters in 2u64..80,
        cpus in 1u32..16,
    ) {
        let t0 = Instant::now();
        let mut alloc = Allocator::with_policy(Policy::Drf);
        let agent = res(&format!("cpus:{cpus};mem:2048"));
        alloc.add_agent("a", agent.clone()).unwrap();
        alloc.add_agent("b", res("cpus:1;mem:512")).unwrap();
        alloc.add_framework("f", &["r"]).unwrap();
        let step = Duration::from_millis(250);
        let refuse = step * refuse_quarters as u32;
        let offers = alloc.allocate(t0);
        prop_assert_eq!(offers.len(), 2);
        let o = offers.into_iter().find(|o| o.agent_id == "a").unwrap();
        // The offer on "b" stays outstanding; "a" is declined with a filter.
        alloc.decline("f", "a", "r", &o.resources, Some(refuse), t0).unwrap();
        for k in 1..=100u32 {
            let now = t0 + step * k;
            let offers = alloc.allocate(now);
            let back = offers.iter().any(|o| o.agent_id == "a" && o.resources == agent);
            prop_assert_eq!(back, now >= t0 + refuse, "at {:?} (refuse {:?})", step * k, refuse);
            prop_assert!(offers.len() <= 1);
            if back {
                break;
            }
        }
    }
}
