//! Fuzzing the resource parsers at scale: the agent flag syntax (`cpus:2;mem(web,alice):512;
//! ports:[31000-32000]`) and the wire form (`Vec<v1::Resource>`).
//!
//! Properties, each over arbitrary strings and over valid inputs with one part mutated:
//! - parsing never panics, and neither does the algebra on what was accepted (totals, counts,
//!   taking ports, subtracting): an accepted value must be safe for every component to use;
//! - a rejection names the offending token (text) or resource name (wire);
//! - what is accepted round-trips: `parse(display(r)) == r` and `from_proto(to_proto(r)) == r`.
//!
//! Case counts default to a few thousand per property (a few seconds in debug); set
//! `PROPTEST_CASES` for a longer run. See docs/reliability.md.

use agora_proto::v1;
use agora_proto::{Ranges, ResourceError, Resources};
use proptest::prelude::*;

/// `PROPTEST_CASES` when set, else `default`.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        // Failing inputs are kept as named regression tests below, not as files in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Exercises everything a component might do with an accepted set; panics are the failure.
fn use_everything(r: &Resources) {
    for name in ["cpus", "mem", "disk", "gpus", "ports"] {
        let _ = r.scalar_total(name);
        let ports = r.ranges_total(name);
        let n = ports.count();
        let _ = ports.take(n);
        let _ = ports.take(3);
        let _ = ports.difference(&ports.take(1));
    }
    let twice = r.clone() + r.clone();
    assert!(twice.contains(r), "{r} + itself does not contain {r}");
    let mut rest = twice.clone();
    let taken = rest.take_flattened(r);
    assert!(taken.is_some(), "{r} does not fit in twice itself");
    let _ = r.by_role();
    let _ = r.flatten();
    let _ = r.clone() - twice;
}

/// Tokens the syntax is made of, so random strings often get deep into the parser.
fn syntax_soup() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("cpus".to_string()),
        Just("mem".to_string()),
        Just("ports".to_string()),
        Just("disk".to_string()),
        Just("gpus".to_string()),
        Just("foo".to_string()),
        Just(":".to_string()),
        Just(";".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just(",".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("-".to_string()),
        Just("*".to_string()),
        Just(" ".to_string()),
        Just("web".to_string()),
        Just("1e308".to_string()),
        Just("NaN".to_string()),
        Just("inf".to_string()),
        Just("18446744073709551615".to_string()),
        Just("9223372036854775807".to_string()),
        "[0-9]{1,20}",
        "[0-9]{1,6}\\.[0-9]{0,6}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

#[derive(Debug, Clone)]
enum Value {
    Scalar(String),
    Ranges(Vec<(u64, u64)>),
}

#[derive(Debug, Clone)]
struct Token {
    name: String,
    role: Option<String>,
    principal: Option<String>,
    value: Value,
}

impl Token {
    fn render(&self) -> String {
        let head = match (&self.role, &self.principal) {
            (Some(r), Some(p)) => format!("{}({r},{p})", self.name),
            (Some(r), None) => format!("{}({r})", self.name),
            _ => self.name.clone(),
        };
        let value = match &self.value {
            Value::Scalar(s) => s.clone(),
            Value::Ranges(rs) => format!(
                "[{}]",
                rs.iter()
                    .map(|(b, e)| format!("{b}-{e}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        format!("{head}:{value}")
    }
}

fn role() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some("*".to_string())),
        2 => "[a-z][a-z0-9_.-]{0,8}".prop_map(Some),
    ]
}

fn amount() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..100_000).prop_map(|v| v.to_string()),
        (0u32..100_000, 0u32..1000).prop_map(|(a, b)| format!("{a}.{b:03}")),
        // Large amounts, up to an eighth of the largest accepted total so that eight tokens of
        // one key stay valid: sums of them must not overflow.
        (0.0f64..=1.25e11).prop_map(|v| v.to_string()),
        Just("125000000000".to_string()),
    ]
}

fn ranges() -> impl Strategy<Value = Vec<(u64, u64)>> {
    let pair = prop_oneof![
        (0u64..70_000, 0u64..1000).prop_map(|(b, l)| (b, b + l)),
        // The ends of u64: counting or taking them must not overflow.
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| (a.min(b), a.max(b))),
        Just((0, u64::MAX)),
        Just((u64::MAX, u64::MAX)),
    ];
    prop::collection::vec(pair, 1..4)
}

/// A valid token: names and kinds that agree, valid roles, reservations only with a role.
fn token() -> impl Strategy<Value = Token> {
    let scalar = (
        prop_oneof![
            Just("cpus"),
            Just("mem"),
            Just("disk"),
            Just("gpus"),
            Just("licenses")
        ],
        role(),
        prop::option::of("[a-z][a-z0-9]{0,6}"),
        amount(),
    )
        .prop_map(|(name, role, principal, a)| {
            let principal = principal.filter(|_| role.as_deref().is_some_and(|r| r != "*"));
            Token {
                name: name.into(),
                role,
                principal,
                value: Value::Scalar(a),
            }
        });
    let range = (
        prop_oneof![Just("ports"), Just("vlans")],
        role(),
        prop::option::of("[a-z][a-z0-9]{0,6}"),
        ranges(),
    )
        .prop_map(|(name, role, principal, rs)| {
            let principal = principal.filter(|_| role.as_deref().is_some_and(|r| r != "*"));
            Token {
                name: name.into(),
                role,
                principal,
                value: Value::Ranges(rs),
            }
        });
    prop_oneof![3 => scalar, 1 => range]
}

/// Text with no `;` (which would split the token in two) and no `:` in heads.
fn junk() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("*".to_string()),
        Just("-x".to_string()),
        Just("..".to_string()),
        Just("[1-2]".to_string()),
        Just("[5-1]".to_string()),
        Just("-1".to_string()),
        Just("NaN".to_string()),
        Just("inf".to_string()),
        Just("1e400".to_string()),
        Just("1e18".to_string()),
        Just("1000000000000.001".to_string()),
        Just(f64::MAX.to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        "[^;:]{0,12}",
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Name(String),
    Role(String),
    Principal(String),
    Value(String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        junk().prop_map(Mutation::Name),
        junk().prop_map(Mutation::Role),
        junk().prop_map(Mutation::Principal),
        prop_oneof![junk(), "[^;]{0,12}"].prop_map(Mutation::Value),
    ]
}

fn apply(t: &Token, m: &Mutation) -> String {
    let mut t = t.clone();
    match m {
        Mutation::Name(n) => t.name = n.clone(),
        Mutation::Role(r) => t.role = Some(r.clone()),
        Mutation::Principal(p) => {
            t.principal = Some(p.clone());
            if t.role.is_none() {
                t.role = Some("*".into());
            }
        }
        Mutation::Value(v) => t.value = Value::Scalar(v.clone()),
    }
    t.render()
}

fn wire(t: &Token) -> v1::Resource {
    v1::Resource {
        name: t.name.clone(),
        value: Some(match &t.value {
            Value::Scalar(s) => v1::resource::Value::Scalar(s.parse().unwrap_or(1.0)),
            Value::Ranges(rs) => v1::resource::Value::Ranges(v1::Ranges {
                range: rs
                    .iter()
                    .map(|&(begin, end)| v1::Range { begin, end })
                    .collect(),
            }),
        }),
        role: t.role.clone().unwrap_or_default(),
        reservation: t.principal.as_ref().map(|p| v1::ReservationInfo {
            principal: p.clone(),
            labels: Default::default(),
        }),
    }
}

fn check_accepted_text(text: &str, r: &Resources) -> Result<(), TestCaseError> {
    use_everything(r);
    let shown = r.to_string();
    let back = Resources::parse(&shown);
    prop_assert_eq!(
        back.as_ref(),
        Ok(r),
        "'{}' was accepted as '{}', which does not parse back",
        text,
        shown
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(3000))]

    /// Arbitrary text: no panic; a refusal names a token of the input; an acceptance round-trips.
    #[test]
    fn fuzz_text_arbitrary(text in prop_oneof![syntax_soup(), any::<String>()]) {
        match Resources::parse(&text) {
            Ok(r) => check_accepted_text(&text, &r)?,
            Err(ResourceError::Parse { token, problem }) => {
                prop_assert!(!token.is_empty() && text.contains(&token), "token '{}' is not in '{}'", token, text);
                prop_assert!(!problem.is_empty());
            }
            Err(e) => prop_assert!(false, "text parse gave a wire error: {}", e),
        }
    }

    /// Valid sets: always accepted, and parse(display) is the identity.
    #[test]
    fn fuzz_text_valid_round_trips(tokens in prop::collection::vec(token(), 0..8)) {
        let text = tokens.iter().map(Token::render).collect::<Vec<_>>().join(";");
        // Two tokens with one name but different kinds would be a legitimate refusal.
        match Resources::parse(&text) {
            Ok(r) => check_accepted_text(&text, &r)?,
            Err(e) => prop_assert!(false, "valid '{}' refused: {}", text, e),
        }
    }

    /// One token of a valid set mutated: a refusal names exactly that token (or, for a name
    /// changed into another token's name with the other kind, the clash).
    #[test]
    fn fuzz_text_mutated_names_the_token(
        tokens in prop::collection::vec(token(), 1..6),
        pick in any::<prop::sample::Index>(),
        m in mutation(),
    ) {
        let i = pick.index(tokens.len());
        let mutated = apply(&tokens[i], &m);
        let mut parts: Vec<String> = tokens.iter().map(Token::render).collect();
        parts[i] = mutated.clone();
        let text = parts.join(";");
        match Resources::parse(&text) {
            Ok(r) => check_accepted_text(&text, &r)?,
            Err(ResourceError::Parse { token, problem }) => {
                let clash = problem.contains("both as a scalar and as ranges");
                prop_assert!(
                    token == mutated.trim() || clash,
                    "mutated '{}' but the error names '{}': {}", mutated, token, problem
                );
            }
            Err(e) => prop_assert!(false, "text parse gave a wire error: {}", e),
        }
    }

    /// The wire form: arbitrary names, roles, principals and amounts. No panic; a refusal names
    /// the resource; an acceptance round-trips through `to_proto`.
    #[test]
    fn fuzz_wire(
        resources in prop::collection::vec(
            (
                prop_oneof![Just("cpus".to_string()), Just("ports".to_string()), Just("mem".to_string()), ".{0,6}"],
                prop_oneof![Just(String::new()), Just("*".to_string()), ".{0,6}"],
                prop::option::of(".{0,6}"),
                prop_oneof![
                    any::<f64>().prop_map(v1::resource::Value::Scalar),
                    prop::collection::vec((any::<u64>(), any::<u64>()), 0..4).prop_map(|v| {
                        v1::resource::Value::Ranges(v1::Ranges {
                            range: v.into_iter().map(|(begin, end)| v1::Range { begin, end }).collect(),
                        })
                    }),
                ],
                any::<bool>(),
            ).prop_map(|(name, role, principal, value, has_value)| v1::Resource {
                name,
                role,
                reservation: principal.map(|principal| v1::ReservationInfo { principal, labels: Default::default() }),
                value: has_value.then_some(value),
            }),
            0..6,
        ),
        valid in prop::collection::vec(token(), 0..4),
    ) {
        let mut all: Vec<v1::Resource> = valid.iter().map(wire).collect();
        all.extend(resources);
        match Resources::from_proto(&all) {
            Ok(r) => {
                use_everything(&r);
                let back = Resources::from_proto(&r.to_proto());
                prop_assert_eq!(back.as_ref(), Ok(&r));
            }
            Err(ResourceError::Invalid { name, problem }) => {
                prop_assert!(all.iter().any(|x| x.name == name), "'{}' names no resource of the input", name);
                prop_assert!(!problem.is_empty());
            }
            Err(e) => prop_assert!(false, "wire parse gave a text error: {}", e),
        }
    }
}

/// Ranges at the ends of u64, however they are built.
#[test]
fn ranges_at_the_top_of_u64_count_and_take_without_overflow() {
    let all = Ranges::from_pairs([(0, u64::MAX)]);
    assert_eq!(all.count(), u64::MAX, "the count saturates");
    assert_eq!(all.take(2).pairs(), &[(0, 1)]);
    assert_eq!(all.take(u64::MAX).count(), u64::MAX);
}

/// Found by `fuzz_text_arbitrary`: `NaN` is a valid resource name and 1.8e19 was clamped to
/// `i64::MAX` thousandths; adding the set to itself then overflowed. Amounts above 10^12 are now
/// refused, naming the token.
#[test]
fn regression_huge_amounts_are_refused_naming_the_token() {
    for text in ["NaN:18446744073709551615", "cpus:1e300", "mem:1.0000001e12"] {
        match Resources::parse(text) {
            Err(ResourceError::Parse { token, problem }) => {
                assert_eq!(token, text);
                assert!(problem.contains("from 0 to"), "{problem}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    // Found by `fuzz_text_valid_round_trips`: the bound applies to each key's total, or
    // `gpus:1e12;gpus:1` would be accepted and print as an amount the parser refuses.
    match Resources::parse("gpus:1e12;gpus:1") {
        Err(ResourceError::Parse { token, problem }) => {
            assert_eq!(token, "gpus:1");
            assert!(problem.contains("total of 'gpus'"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    let max = Resources::parse("cpus:1000000000000").expect("the maximum is accepted");
    use_everything(&max);
    let wire = vec![v1::Resource {
        name: "mem".into(),
        value: Some(v1::resource::Value::Scalar(7.4e305)),
        role: String::new(),
        reservation: None,
    }];
    match Resources::from_proto(&wire) {
        Err(ResourceError::Invalid { name, .. }) => assert_eq!(name, "mem"),
        other => panic!("{other:?}"),
    }
}
