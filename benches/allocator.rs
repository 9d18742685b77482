//! Allocator benchmarks (criterion): one full allocation cycle over a free cluster, and Mesos's
//! DeclineOffers scenario (every framework declines every offer with a 5 s filter, then the cycle is
//! re-run). Agents have 16 cpus / 64 GiB; frameworks are spread over 10 roles.
//!
//! `cargo bench --bench allocator -- --warm-up-time 1 --measurement-time 3`

use std::time::{Duration, Instant};

use agora_master::{Allocator, Offer, Policy};
use agora_proto::Resources;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};

const SIZES: [(usize, usize); 5] = [
    (1000, 100),
    (5000, 500),
    (10000, 1000),
    (20000, 2000),
    (50000, 1000),
];
const ROLES: usize = 10;

fn cluster(agents: usize, frameworks: usize) -> Allocator {
    let mut alloc = Allocator::with_policy(Policy::Drf);
    let agent = Resources::parse("cpus:16;mem:65536;disk:102400;ports:[31000-32000]")
        .expect("agent resources parse");
    for a in 0..agents {
        alloc
            .add_agent(&format!("agent-{a}"), agent.clone())
            .expect("unique agent id");
    }
    for f in 0..frameworks {
        let role = format!("role-{}", f % ROLES);
        alloc
            .add_framework(&format!("framework-{f}"), &[role])
            .expect("unique framework id");
    }
    alloc
}

fn decline_all(alloc: &mut Allocator, offers: &[Offer], now: Instant) {
    for o in offers {
        alloc
            .decline(
                &o.framework_id,
                &o.agent_id,
                &o.role,
                &o.resources,
                Some(Duration::from_secs(5)),
                now,
            )
            .expect("declining an outstanding offer");
    }
}

fn allocation_cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("allocation_cycle");
    group.sample_size(10);
    let now = Instant::now();
    for (agents, frameworks) in SIZES {
        let base = cluster(agents, frameworks);
        group.bench_function(
            BenchmarkId::from_parameter(format!("{agents}x{frameworks}")),
            |b| {
                b.iter_batched(
                    || base.clone(),
                    |mut alloc| {
                        let offers = alloc.allocate(now);
                        assert_eq!(offers.len(), agents);
                        (alloc, offers)
                    },
                    BatchSize::PerIteration,
                )
            },
        );
    }
    group.finish();
}

fn decline_cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("decline_cycle");
    group.sample_size(10);
    let t0 = Instant::now();
    for (agents, frameworks) in SIZES {
        // State after one cycle: every agent offered, offers outstanding.
        let mut base = cluster(agents, frameworks);
        let offers = base.allocate(t0);
        group.bench_function(
            BenchmarkId::from_parameter(format!("{agents}x{frameworks}")),
            |b| {
                b.iter_batched(
                    || base.clone(),
                    |mut alloc| {
                        // One measured cycle: all offers declined with a 5 s filter, then re-allocated.
                        decline_all(&mut alloc, &offers, t0);
                        let again = alloc.allocate(t0 + Duration::from_secs(1));
                        assert_eq!(again.len(), agents, "each agent goes to another framework");
                        (alloc, again)
                    },
                    BatchSize::PerIteration,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(benches, allocation_cycle, decline_cycle);
criterion_main!(benches);
