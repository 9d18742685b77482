use super::*;
use proptest::prelude::*;

fn res(s: &str) -> Resources {
    Resources::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn parse_err(s: &str) -> String {
    match Resources::parse(s) {
        Ok(r) => panic!("{s} parsed as {r}"),
        Err(e) => e.to_string(),
    }
}

// ---- parsing and formatting -------------------------------------------------------------------

#[test]
fn parses_the_agent_flag_example() {
    let r = res("cpus:4;mem:8192;disk:10240;ports:[31000-32000,33000-33100]");
    assert_eq!(r.scalar_total("cpus"), 4.0);
    assert_eq!(r.scalar_total("mem"), 8192.0);
    assert_eq!(r.scalar_total("disk"), 10240.0);
    assert_eq!(
        r.ranges_total("ports").pairs(),
        &[(31000, 32000), (33000, 33100)]
    );
    assert_eq!(
        r.to_string(),
        "cpus:4;disk:10240;mem:8192;ports:[31000-32000,33000-33100]"
    );
}

#[test]
fn parses_roles_and_reservations() {
    let r = res("cpus:2;cpus(web):1.5;mem(web,alice):512");
    assert_eq!(r.scalar_total("cpus"), 3.5);
    assert_eq!(r.unreserved().to_string(), "cpus:2");
    assert_eq!(
        r.reserved_for("web").to_string(),
        "cpus(web):1.5;mem(web,alice):512"
    );
    let key = ResourceKey {
        name: "mem".into(),
        role: "web".into(),
        principal: Some("alice".into()),
    };
    assert_eq!(
        r.scalars().find(|(k, _)| **k == key).map(|(_, v)| v),
        Some(512_000)
    );
}

#[test]
fn whitespace_empty_tokens_and_repeats_are_tolerated() {
    let r = res(" cpus : 1 ; ; cpus:2;ports:[1-2, 3-4]; ");
    assert_eq!(r.to_string(), "cpus:3;ports:[1-4]");
}

#[test]
fn fractional_scalars_keep_three_decimals() {
    assert_eq!(res("cpus:0.5").to_string(), "cpus:0.5");
    assert_eq!(res("cpus:0.125").to_string(), "cpus:0.125");
    assert_eq!(
        res("cpus:0.0004").to_string(),
        "",
        "below the precision rounds to nothing"
    );
    assert_eq!(res("cpus:1.0005").scalar_millis("cpus"), 1001);
}

#[test]
fn single_port_is_a_range_of_one() {
    let r = res("ports:[8080]");
    assert_eq!(r.ranges_total("ports").count(), 1);
    assert_eq!(r.to_string(), "ports:[8080-8080]");
}

#[test]
fn error_names_a_bad_number() {
    let e = parse_err("cpus:4;mem:lots");
    assert!(
        e.contains("'mem:lots'") && e.contains("'lots' is not a number"),
        "{e}"
    );
}

#[test]
fn error_names_a_missing_colon() {
    let e = parse_err("cpus=4");
    assert!(e.contains("'cpus=4'") && e.contains("NAME:VALUE"), "{e}");
}

#[test]
fn error_names_a_negative_amount() {
    let e = parse_err("mem:-5");
    assert!(e.contains("'mem:-5'") && e.contains("from 0 to"), "{e}");
}

#[test]
fn error_names_a_reversed_range() {
    let e = parse_err("ports:[32000-31000]");
    assert!(e.contains("begin after its end"), "{e}");
}

#[test]
fn error_names_an_unclosed_range() {
    assert!(parse_err("ports:[1-2").contains("missing their ']'"));
    assert!(parse_err("ports:[1-x]").contains("'x' in range '1-x'"));
}

#[test]
fn error_when_kinds_are_wrong() {
    assert!(parse_err("ports:5").contains("must be ranges"));
    assert!(parse_err("cpus:[1-2]").contains("must be a number"));
    assert!(parse_err("foo:1;foo:[1-2]").contains("both as a scalar and as ranges"));
}

#[test]
fn error_names_a_bad_role() {
    assert!(parse_err("cpus(-web):1").contains("must not start with '-'"));
    assert!(parse_err("cpus(..):1").contains("not allowed"));
    assert!(parse_err("cpus(a/b):1").contains("contains '/'"));
    assert!(parse_err("cpus(web:1").contains("missing its ')'"));
    assert!(parse_err("cpus(*,bob):1").contains("role other than '*'"));
}

#[test]
fn error_names_a_bad_name() {
    assert!(parse_err("9cpus:1").contains("must start with a letter"));
}

// ---- arithmetic -------------------------------------------------------------------------------

#[test]
fn add_and_subtract_scalars_and_ranges() {
    let total = res("cpus:4;mem:1024;ports:[100-200]");
    let used = res("cpus:1.5;mem:1024;ports:[150-160]");
    let free = total.clone() - used.clone();
    assert_eq!(free.to_string(), "cpus:2.5;ports:[100-149,161-200]");
    assert_eq!(free + used, total);
}

#[test]
fn subtraction_saturates_at_zero_and_ignores_absent() {
    let r = res("cpus:1") - res("cpus:3;mem:10;ports:[1-5]");
    assert!(r.is_empty(), "{r}");
}

#[test]
fn contains_respects_amounts_ranges_and_roles() {
    let agent = res("cpus:4;mem:4096;ports:[31000-32000];cpus(web):2");
    assert!(agent.contains(&res("cpus:4;ports:[31000-31010]")));
    assert!(!agent.contains(&res("cpus:4.001")));
    assert!(!agent.contains(&res("ports:[30999-31000]")));
    assert!(!agent.contains(&res("gpus:1")));
    assert!(agent.contains(&res("cpus(web):2")));
    assert!(
        !agent.contains(&res("cpus(db):1")),
        "a reservation for another role is not there"
    );
    assert!(agent.contains_flattened(&res("cpus:6")));
    assert!(agent.contains(&Resources::new()));
}

#[test]
fn split_by_role_and_allocatable_view() {
    let r = res("cpus:4;cpus(web):2;mem(db):100;ports:[1-10]");
    let split = r.by_role();
    assert_eq!(split.keys().collect::<Vec<_>>(), ["*", "db", "web"]);
    assert_eq!(split["*"].to_string(), "cpus:4;ports:[1-10]");
    assert_eq!(
        r.allocatable_to("web").to_string(),
        "cpus:4;cpus(web):2;ports:[1-10]"
    );
    let rejoined = split
        .values()
        .fold(Resources::new(), |acc, x| acc + x.clone());
    assert_eq!(rejoined, r);
}

#[test]
fn flatten_and_with_role_move_amounts_between_roles() {
    let r = res("cpus:1;cpus(web):2;ports(web):[5-6]");
    assert_eq!(r.flatten().to_string(), "cpus:3;ports:[5-6]");
    assert_eq!(
        res("cpus:1").with_role("web", Some("ops")).to_string(),
        "cpus(web,ops):1"
    );
}

#[test]
fn ranges_merge_adjacent_and_overlapping() {
    let r = Ranges::from_pairs([(10, 20), (1, 5), (6, 9), (15, 30), (40, 40)]);
    assert_eq!(r.pairs(), &[(1, 30), (40, 40)]);
    assert_eq!(r.count(), 31);
    assert!(r.contains_value(40) && !r.contains_value(35));
}

#[test]
fn range_difference_splits_and_trims() {
    let r = Ranges::from_pairs([(1, 100)]);
    let d = r.difference(&Ranges::from_pairs([(0, 10), (50, 60), (95, 200)]));
    assert_eq!(d.pairs(), &[(11, 49), (61, 94)]);
    assert!(r.difference(&r).is_empty());
}

#[test]
fn take_picks_the_lowest_values() {
    let r = Ranges::from_pairs([(1, 2), (10, 20)]);
    assert_eq!(r.take(4).pairs(), &[(1, 2), (10, 11)]);
    assert_eq!(r.take(100), r);
    assert!(r.take(0).is_empty());
}

// ---- wire form --------------------------------------------------------------------------------

#[test]
fn proto_round_trip_keeps_roles_and_reservations() {
    let r = res("cpus:1.5;mem(web,alice):64;ports(web):[10-20,30-30];gpus:1");
    assert_eq!(Resources::from_proto(&r.to_proto()), Ok(r));
}

#[test]
fn proto_empty_role_means_unreserved() {
    let wire = v1::Resource {
        name: "cpus".into(),
        value: Some(v1::resource::Value::Scalar(2.0)),
        role: String::new(),
        reservation: None,
    };
    assert_eq!(Resources::from_proto(&[wire]), Ok(res("cpus:2")));
}

#[test]
fn proto_errors_name_the_resource() {
    let bad = |value, role: &str| v1::Resource {
        name: "mem".into(),
        value,
        role: role.into(),
        reservation: None,
    };
    let e = Resources::from_proto(&[bad(Some(v1::resource::Value::Scalar(-1.0)), "")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid resource 'mem': amount -1 must be a finite number from 0 to 1000000000000"
    );
    let e =
        Resources::from_proto(&[bad(Some(v1::resource::Value::Scalar(f64::NAN)), "")]).unwrap_err();
    assert!(e.to_string().contains("finite"));
    let e = Resources::from_proto(&[bad(None, "")]).unwrap_err();
    assert!(e.to_string().contains("neither a scalar nor ranges"));
    let e =
        Resources::from_proto(&[bad(Some(v1::resource::Value::Scalar(1.0)), "a b")]).unwrap_err();
    assert!(e.to_string().contains("contains ' '"));
    let ranges = v1::resource::Value::Ranges(v1::Ranges {
        range: vec![v1::Range { begin: 5, end: 1 }],
    });
    let e = Resources::from_proto(&[v1::Resource {
        name: "ports".into(),
        value: Some(ranges),
        role: String::new(),
        reservation: None,
    }])
    .unwrap_err();
    assert!(
        e.to_string().contains("'ports'") && e.to_string().contains("5-1"),
        "{e}"
    );
}

// ---- properties -------------------------------------------------------------------------------

fn arb_ranges() -> impl Strategy<Value = Ranges> {
    prop::collection::vec((0u64..2000, 0u64..50), 0..5)
        .prop_map(|v| Ranges::from_pairs(v.into_iter().map(|(b, len)| (b, b + len))))
}

fn arb_resources() -> impl Strategy<Value = Resources> {
    let role = prop_oneof![Just("*"), Just("web"), Just("db")];
    let scalar = (
        prop_oneof![Just("cpus"), Just("mem"), Just("disk"), Just("gpus")],
        role.clone(),
        0i64..100_000,
    );
    (
        prop::collection::vec(scalar, 0..6),
        prop::collection::vec((role, arb_ranges()), 0..3),
    )
        .prop_map(|(scalars, ranges)| {
            let mut r = Resources::new();
            for (name, role, millis) in scalars {
                r.add_scalar(ResourceKey::reserved(name, role), millis);
            }
            for (role, rs) in ranges {
                r.add_ranges(ResourceKey::reserved("ports", role), &rs);
            }
            r
        })
}

proptest! {
    #[test]
    fn add_then_subtract_is_identity(a in arb_resources(), b in arb_resources()) {
        // For ranges, b may overlap a; subtracting b then removes shared ports. The identity holds
        // for the disjoint part, which is what the algebra promises: (a + b) - b == a - b for ranges.
        let disjoint_b = b.clone() - a.clone();
        let sum = a.clone() + disjoint_b.clone();
        prop_assert_eq!(sum - disjoint_b, a);
    }

    #[test]
    fn scalar_add_then_subtract_is_exact(a in arb_resources(), b in arb_resources()) {
        let scalars_only = |r: &Resources| r.filter(|k| k.name != "ports");
        let (a, b) = (scalars_only(&a), scalars_only(&b));
        prop_assert_eq!(a.clone() + b.clone() - b, a);
    }

    #[test]
    fn sum_contains_each_part(a in arb_resources(), b in arb_resources()) {
        let sum = a.clone() + b.clone();
        prop_assert!(sum.contains(&a));
        prop_assert!(sum.contains(&b));
    }

    #[test]
    fn subtraction_is_never_negative(a in arb_resources(), b in arb_resources()) {
        let d = a.clone() - b;
        prop_assert!(d.scalars().all(|(_, v)| v > 0));
        prop_assert!(a.contains(&d));
    }

    #[test]
    fn ranges_are_always_merged(v in prop::collection::vec((0u64..500, 0u64..20), 0..10)) {
        let r = Ranges::from_pairs(v.iter().map(|&(b, len)| (b, b + len)));
        for w in r.pairs().windows(2) {
            prop_assert!(w[0].1 + 1 < w[1].0, "not merged: {:?}", r);
        }
        for &(b, len) in &v {
            for x in b..=b + len {
                prop_assert!(r.contains_value(x));
            }
        }
        let expected: std::collections::BTreeSet<u64> = v.iter().flat_map(|&(b, len)| b..=b + len).collect();
        prop_assert_eq!(r.count(), expected.len() as u64);
    }

    #[test]
    fn parse_of_format_is_identity(a in arb_resources()) {
        prop_assert_eq!(Resources::parse(&a.to_string()), Ok(a));
    }

    #[test]
    fn proto_round_trip_is_identity(a in arb_resources()) {
        prop_assert_eq!(Resources::from_proto(&a.to_proto()), Ok(a));
    }

    #[test]
    fn range_difference_then_union_restores(a in arb_ranges(), b in arb_ranges()) {
        let d = a.difference(&b);
        prop_assert!(a.contains(&d));
        prop_assert!(d.pairs().iter().all(|&(x, y)| (x..=y).all(|p| !b.contains_value(p))));
        prop_assert_eq!(d.union(&a.difference(&d)), a);
    }
}

#[test]
fn take_flattened_draws_reservations_first() {
    let mut offer = res("cpus:2;cpus(web):1;mem:100;ports:[31000-31010]");
    let taken = offer
        .take_flattened(&res("cpus:2;ports:[31005-31005]"))
        .expect("fits");
    assert_eq!(taken.to_string(), "cpus:1;cpus(web):1;ports:[31005-31005]");
    assert_eq!(
        offer.to_string(),
        "cpus:1;mem:100;ports:[31000-31004,31006-31010]"
    );
}

#[test]
fn take_flattened_refuses_what_does_not_fit_and_changes_nothing() {
    let mut offer = res("cpus:1;ports:[31000-31001]");
    assert_eq!(offer.take_flattened(&res("cpus:1.5")), None);
    assert_eq!(offer.take_flattened(&res("ports:[31002-31002]")), None);
    assert_eq!(offer.to_string(), "cpus:1;ports:[31000-31001]");
}

proptest! {
    #[test]
    fn take_flattened_conserves_resources(a in arb_resources(), b in arb_resources()) {
        let mut rest = a.clone();
        match rest.take_flattened(&b) {
            Some(taken) => {
                prop_assert_eq!(taken.flatten(), b.flatten());
                prop_assert_eq!(rest + taken, a);
            }
            None => prop_assert!(!a.contains_flattened(&b)),
        }
    }
}
