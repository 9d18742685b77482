//! Placement constraints on `hostname` or an agent attribute:
//! - Marathon's `[field, OPERATOR, value?]` ([`Constraint`]), evaluated against an offer and the
//!   app's tasks already placed;
//! - Chronos's `[field, EQUALS|LIKE|UNLIKE, value]` ([`chronos_satisfied`]), against an offer.

/// A parsed constraint.
#[derive(Debug, Clone)]
pub struct Constraint {
    pub field: String,
    pub op: Op,
}

#[derive(Debug, Clone)]
pub enum Op {
    /// At most one task per value of the field.
    Unique,
    /// All tasks on the same value (the given one, or the first task's).
    Cluster(Option<String>),
    /// Spread evenly over the values (at most `n` distinct values considered).
    GroupBy(Option<u32>),
    /// The value matches the regex (whole value).
    Like(regex::Regex),
    Unlike(regex::Regex),
    /// At most `n` tasks per value.
    MaxPer(u32),
    /// The value equals.
    Is(String),
}

/// LIKE/UNLIKE match the whole value, as Marathon's do.
fn whole(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| format!("'{pattern}' is not a valid regex: {e}"))
}

impl Constraint {
    /// # Errors
    /// A sentence saying what is wrong.
    pub fn parse(c: &[String]) -> Result<Self, String> {
        let field = c
            .first()
            .ok_or("a constraint needs a field")?
            .trim_start_matches('@')
            .to_string();
        let op = c
            .get(1)
            .ok_or("a constraint needs an operator")?
            .to_ascii_uppercase();
        let value = c.get(2).cloned();
        let need = |v: Option<String>| v.ok_or(format!("{op} needs a value"));
        let op = match op.as_str() {
            "UNIQUE" => Op::Unique,
            "CLUSTER" => Op::Cluster(value),
            "GROUP_BY" => Op::GroupBy(
                value
                    .map(|v| v.parse::<u32>().map_err(|_| format!("GROUP_BY value '{v}' must be a number")))
                    .transpose()?,
            ),
            "LIKE" => Op::Like(whole(&need(value)?)?),
            "UNLIKE" => Op::Unlike(whole(&need(value)?)?),
            "MAX_PER" => {
                let v = need(value)?;
                Op::MaxPer(v.parse().map_err(|_| format!("MAX_PER value '{v}' must be a number"))?)
            }
            "IS" => Op::Is(need(value)?),
            other => {
                return Err(format!(
                    "operator '{other}' must be one of UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER, IS"
                ))
            }
        };
        Ok(Constraint { field, op })
    }

    /// Whether a new task may go on an agent whose field value is `value`, given the values of
    /// the agents the app's other live tasks are on (`placed`).
    pub fn allows(&self, value: Option<&str>, placed: &[Option<String>]) -> bool {
        let same = |v: &str| placed.iter().filter(|p| p.as_deref() == Some(v)).count();
        match (&self.op, value) {
            (Op::Unique, Some(v)) => same(v) == 0,
            (Op::Cluster(Some(want)), Some(v)) => v == want,
            (Op::Cluster(None), Some(v)) => placed.iter().flatten().all(|p| p == v),
            (Op::GroupBy(groups), Some(v)) => {
                let mut counts: std::collections::HashMap<&str, usize> = Default::default();
                for p in placed.iter().flatten() {
                    *counts.entry(p.as_str()).or_default() += 1;
                }
                let mine = counts.get(v).copied().unwrap_or(0);
                let min = counts.values().copied().min().unwrap_or(0);
                // A value not used yet is always fine. With the number of groups given, a used
                // value waits until every group has a task; then none may get ahead of the others.
                let all_groups_seen = groups.is_none_or(|n| counts.len() as u32 >= n);
                mine == 0 || (all_groups_seen && mine <= min)
            }
            (Op::Like(p), Some(v)) => p.is_match(v),
            (Op::Unlike(p), Some(v)) => !p.is_match(v),
            (Op::Unlike(_), None) => true,
            (Op::MaxPer(n), Some(v)) => (same(v) as u32) < *n,
            (Op::Is(want), Some(v)) => v == want,
            (_, None) => false,
        }
    }
}

/// The value of `field` on an offer's agent.
pub fn field_value(
    field: &str,
    hostname: &str,
    attributes: &[agora_proto::v1::Attribute],
) -> Option<String> {
    if field == "hostname" {
        return Some(hostname.to_string());
    }
    attributes
        .iter()
        .find(|a| a.name == field)
        .map(|a| a.text.clone())
}

/// Chronos constraints against an offer: `[field, EQUALS|LIKE|UNLIKE, value]`, field `hostname`
/// or an attribute. LIKE and UNLIKE compare whole values with `*` as a wildcard. An incomplete
/// constraint (fewer than three elements) does not restrict.
pub fn chronos_satisfied(constraints: &[Vec<String>], offer: &agora_proto::v1::Offer) -> bool {
    constraints.iter().all(|c| {
        let (Some(field), Some(op), Some(value)) = (c.first(), c.get(1), c.get(2)) else {
            return true;
        };
        let actual = field_value(field, &offer.hostname, &offer.attributes);
        match (op.to_ascii_uppercase().as_str(), actual) {
            ("EQUALS", Some(a)) => &a == value,
            ("LIKE", Some(a)) => wildcard(value, &a),
            ("UNLIKE", Some(a)) => !wildcard(value, &a),
            ("UNLIKE", None) => true,
            _ => false,
        }
    })
}

/// Whether `s` matches `pattern`, where `*` matches any run of characters.
fn wildcard(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            s.starts_with(head)
                && (0..=s.len().saturating_sub(head.len())).any(|i| {
                    s.is_char_boundary(head.len() + i) && wildcard(tail, &s[head.len() + i..])
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(v: &[&str]) -> Constraint {
        Constraint::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("constraint")
    }

    fn placed(v: &[&str]) -> Vec<Option<String>> {
        v.iter().map(|s| Some(s.to_string())).collect()
    }

    #[test]
    fn marathon_operators() {
        assert!(c(&["hostname", "UNIQUE"]).allows(Some("a"), &placed(&["b"])));
        assert!(!c(&["hostname", "UNIQUE"]).allows(Some("a"), &placed(&["a"])));
        assert!(c(&["rack", "CLUSTER", "r1"]).allows(Some("r1"), &[]));
        assert!(!c(&["rack", "CLUSTER", "r1"]).allows(Some("r2"), &[]));
        assert!(!c(&["rack", "CLUSTER"]).allows(Some("r2"), &placed(&["r1"])));
        assert!(c(&["rack", "GROUP_BY"]).allows(Some("r2"), &placed(&["r1"])));
        assert!(!c(&["rack", "GROUP_BY"]).allows(Some("r1"), &placed(&["r1", "r1", "r2"])));
        // Two groups expected: the second task waits for the other rack.
        assert!(!c(&["rack", "GROUP_BY", "2"]).allows(Some("r1"), &placed(&["r1"])));
        assert!(c(&["rack", "GROUP_BY", "2"]).allows(Some("r1"), &placed(&["r1", "r2"])));
        assert!(c(&["rack", "MAX_PER", "2"]).allows(Some("r1"), &placed(&["r1"])));
        assert!(!c(&["rack", "MAX_PER", "2"]).allows(Some("r1"), &placed(&["r1", "r1"])));
        assert!(c(&["zone", "IS", "eu"]).allows(Some("eu"), &[]));
        assert!(!c(&["zone", "IS", "eu"]).allows(None, &[]));
        assert!(c(&["@hostname", "UNIQUE"]).field == "hostname");
    }

    #[test]
    fn like_and_unlike_match_whole_values() {
        let like = c(&["hostname", "LIKE", "web-[0-9]+\\.example\\.com|db.*"]);
        assert!(like.allows(Some("web-12.example.com"), &[]));
        assert!(like.allows(Some("db7"), &[]));
        assert!(!like.allows(Some("web-x.example.com"), &[]));
        assert!(!like.allows(Some("aweb-1.example.com"), &[]));
        let unlike = c(&["rack", "UNLIKE", "rack-(1|2)"]);
        assert!(!unlike.allows(Some("rack-2"), &[]));
        assert!(unlike.allows(Some("rack-3"), &[]));
        assert!(Constraint::parse(&["hostname".into(), "LIKE".into(), "a(".into()]).is_err());
        assert!(Constraint::parse(&["hostname".into(), "NEAR".into()]).is_err());
        assert!(Constraint::parse(&["rack".into(), "MAX_PER".into(), "x".into()]).is_err());
    }
}
