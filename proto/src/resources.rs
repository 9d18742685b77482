//! Resource sets and their arithmetic.
//!
//! A [`Resources`] value maps a [`ResourceKey`] (name, role, dynamic-reservation principal) to an
//! amount: a scalar kept in exact thousandths (so `a + b - b == a` holds, unlike with `f64`), or a set
//! of merged integer [`Ranges`] (ports). Zero amounts and empty range sets are never stored, so two
//! equal sets compare equal structurally.
//!
//! Roles: `*` is unreserved. A key with another role and no principal is a *static* reservation (given
//! to the agent by `--resources "cpus(web):2"`); with a principal it is a *dynamic* reservation made
//! through the RESERVE operation.
//!
//! The text form is the agent flag syntax, and `Display` writes what `FromStr` reads:
//! `cpus:4;mem:8192;disk:10240;ports:[31000-32000,33000-33100];cpus(web):2;mem(web,alice):512`.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::str::FromStr;

use crate::v1;

/// A scalar amount in thousandths of a unit (0.001 cpu, 0.001 MiB): the precision of the contract.
pub type ScalarValue = i64;

const SCALE: f64 = 1000.0;
/// The largest scalar amount accepted from outside (10^12 cpus, MiB, …). In thousandths it is
/// 10^15, so thousands of them still add up inside an `i64`; larger values were silently clamped to
/// `i64::MAX` thousandths, and adding two of them overflowed.
pub const MAX_SCALAR: f64 = 1e12;
/// The unreserved role.
pub const ANY_ROLE: &str = "*";
/// Names that must be scalars.
const SCALAR_NAMES: [&str; 4] = ["cpus", "mem", "disk", "gpus"];
/// Names that must be ranges.
const RANGE_NAMES: [&str; 1] = ["ports"];

/// Why a resource description was refused. Each variant names the offending token or resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// A token of the flag syntax could not be read.
    #[error("invalid resource token '{token}': {problem}")]
    Parse { token: String, problem: String },
    /// A wire `Resource` is malformed.
    #[error("invalid resource '{name}': {problem}")]
    Invalid { name: String, problem: String },
}

/// Identifies one kind of resource in a set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    pub name: String,
    /// `*` for unreserved.
    pub role: String,
    /// Set for dynamic reservations: who reserved it.
    pub principal: Option<String>,
}

impl ResourceKey {
    pub fn unreserved(name: &str) -> Self {
        Self {
            name: name.to_string(),
            role: ANY_ROLE.to_string(),
            principal: None,
        }
    }

    pub fn reserved(name: &str, role: &str) -> Self {
        Self {
            name: name.to_string(),
            role: role.to_string(),
            principal: None,
        }
    }

    pub fn is_reserved(&self) -> bool {
        self.role != ANY_ROLE
    }
}

/// A set of non-negative integer ranges, kept sorted and merged (no overlaps, no adjacent ranges).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Builds a set from inclusive `(begin, end)` pairs in any order; reversed pairs are swapped.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut all: Vec<(u64, u64)> = pairs
            .into_iter()
            .map(|(a, b)| if a <= b { (a, b) } else { (b, a) })
            .collect();
        all.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(all.len());
        for (begin, end) in all {
            match merged.last_mut() {
                Some(last) if begin <= last.1.saturating_add(1) => last.1 = last.1.max(end),
                _ => merged.push((begin, end)),
            }
        }
        Self(merged)
    }

    pub fn pairs(&self) -> &[(u64, u64)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of integers in the set, saturating at `u64::MAX` (the set `[0-18446744073709551615]`
    /// has one more integer than a `u64` can count).
    pub fn count(&self) -> u64 {
        self.0.iter().fold(0u64, |n, (a, b)| {
            n.saturating_add((b - a).saturating_add(1))
        })
    }

    pub fn contains_value(&self, value: u64) -> bool {
        self.0.iter().any(|&(a, b)| a <= value && value <= b)
    }

    /// Whether every integer of `other` is in `self`.
    pub fn contains(&self, other: &Ranges) -> bool {
        other
            .0
            .iter()
            .all(|&(ob, oe)| self.0.iter().any(|&(b, e)| b <= ob && oe <= e))
    }

    pub fn union(&self, other: &Ranges) -> Ranges {
        Ranges::from_pairs(self.0.iter().chain(other.0.iter()).copied())
    }

    /// The integers of `self` that are not in `other`.
    pub fn difference(&self, other: &Ranges) -> Ranges {
        let mut out = Vec::new();
        for &(begin, end) in &self.0 {
            let mut start = begin;
            let mut open = true;
            for &(ob, oe) in &other.0 {
                if oe < start || ob > end {
                    continue;
                }
                if ob > start {
                    out.push((start, ob - 1));
                }
                if oe >= end {
                    open = false;
                    break;
                }
                start = oe + 1;
            }
            if open {
                out.push((start, end));
            }
        }
        Ranges(out)
    }

    /// The first `n` integers of the set (fewer if it is smaller), for picking ports.
    pub fn take(&self, n: u64) -> Ranges {
        let mut left = n;
        let mut out = Vec::new();
        for &(begin, end) in &self.0 {
            if left == 0 {
                break;
            }
            let len = (end - begin).saturating_add(1).min(left);
            out.push((begin, begin + (len - 1)));
            left -= len;
        }
        Ranges(out)
    }
}

impl fmt::Display for Ranges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, (begin, end)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{begin}-{end}")?;
        }
        f.write_str("]")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Amount {
    Scalar(ScalarValue),
    Ranges(Ranges),
}

/// A set of resources; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    entries: BTreeMap<ResourceKey, Amount>,
}

/// Converts a float amount to thousandths, rounding to the nearest.
pub fn to_millis(value: f64) -> ScalarValue {
    (value * SCALE).round() as ScalarValue
}

/// Converts thousandths back to a float amount.
pub fn from_millis(value: ScalarValue) -> f64 {
    value as f64 / SCALE
}

impl Resources {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the agent flag syntax. Shorthand for `s.parse()`.
    ///
    /// # Errors
    /// [`ResourceError::Parse`] naming the first bad token.
    pub fn parse(s: &str) -> Result<Self, ResourceError> {
        s.parse()
    }

    /// A set with one unreserved scalar.
    pub fn scalar(name: &str, value: f64) -> Self {
        let mut r = Self::new();
        r.add_scalar(ResourceKey::unreserved(name), to_millis(value));
        r
    }

    /// A set with one unreserved range resource.
    pub fn ranges(name: &str, ranges: Ranges) -> Self {
        let mut r = Self::new();
        r.add_ranges(ResourceKey::unreserved(name), &ranges);
        r
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds `millis` thousandths of a scalar. Negative amounts subtract, never below zero.
    pub fn add_scalar(&mut self, key: ResourceKey, millis: ScalarValue) {
        let current = match self.entries.get(&key) {
            Some(Amount::Scalar(v)) => *v,
            Some(Amount::Ranges(_)) => return,
            None => 0,
        };
        // Saturating: amounts are bounded by MAX_SCALAR on the way in, but a sum of many must
        // still not wrap around.
        let next = current.saturating_add(millis).max(0);
        if next == 0 {
            self.entries.remove(&key);
        } else {
            self.entries.insert(key, Amount::Scalar(next));
        }
    }

    /// Adds ranges to a range resource.
    pub fn add_ranges(&mut self, key: ResourceKey, ranges: &Ranges) {
        if ranges.is_empty() {
            return;
        }
        let merged = match self.entries.get(&key) {
            Some(Amount::Ranges(existing)) => existing.union(ranges),
            Some(Amount::Scalar(_)) => return,
            None => ranges.clone(),
        };
        self.entries.insert(key, Amount::Ranges(merged));
    }

    /// Total of a scalar across all roles, in units.
    pub fn scalar_total(&self, name: &str) -> f64 {
        from_millis(self.scalar_millis(name))
    }

    /// Total of a scalar across all roles, in thousandths.
    pub fn scalar_millis(&self, name: &str) -> ScalarValue {
        self.entries
            .iter()
            .filter(|(k, _)| k.name == name)
            .map(|(_, v)| match v {
                Amount::Scalar(s) => *s,
                Amount::Ranges(_) => 0,
            })
            .fold(0, ScalarValue::saturating_add)
    }

    /// Union of a range resource across all roles.
    pub fn ranges_total(&self, name: &str) -> Ranges {
        self.entries
            .iter()
            .filter(|(k, _)| k.name == name)
            .fold(Ranges::new(), |acc, (_, v)| match v {
                Amount::Ranges(r) => acc.union(r),
                Amount::Scalar(_) => acc,
            })
    }

    /// Names of the scalar resources in the set (across roles), sorted, without repeats.
    pub fn scalar_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .entries
            .iter()
            .filter(|(_, v)| matches!(v, Amount::Scalar(_)))
            .map(|(k, _)| k.name.as_str())
            .collect();
        names.dedup();
        names
    }

    /// Adds every resource of `other`.
    pub fn add(&mut self, other: &Resources) {
        for (key, amount) in &other.entries {
            match amount {
                Amount::Scalar(v) => self.add_scalar(key.clone(), *v),
                Amount::Ranges(r) => self.add_ranges(key.clone(), r),
            }
        }
    }

    /// Removes every resource of `other` that `self` has; amounts never go below zero and resources
    /// `self` lacks are ignored.
    pub fn subtract(&mut self, other: &Resources) {
        for (key, amount) in &other.entries {
            match (self.entries.get_mut(key), amount) {
                (Some(Amount::Scalar(mine)), Amount::Scalar(theirs)) => {
                    *mine = (*mine - theirs).max(0);
                    if *mine == 0 {
                        self.entries.remove(key);
                    }
                }
                (Some(Amount::Ranges(mine)), Amount::Ranges(theirs)) => {
                    *mine = mine.difference(theirs);
                    if mine.is_empty() {
                        self.entries.remove(key);
                    }
                }
                _ => {}
            }
        }
    }

    /// Whether `other` fits inside `self`, key by key (an unreserved resource does not contain a
    /// reserved one, nor the other way round).
    pub fn contains(&self, other: &Resources) -> bool {
        other
            .entries
            .iter()
            .all(|(key, amount)| match (self.entries.get(key), amount) {
                (Some(Amount::Scalar(mine)), Amount::Scalar(theirs)) => mine >= theirs,
                (Some(Amount::Ranges(mine)), Amount::Ranges(theirs)) => mine.contains(theirs),
                _ => false,
            })
    }

    /// Whether `other`, with its roles ignored, fits inside `self` with its roles ignored. This is the
    /// question "is there room" when a task asks for plain `cpus:1` on an agent with mixed roles.
    pub fn contains_flattened(&self, other: &Resources) -> bool {
        self.flatten().contains(&other.flatten())
    }

    /// Takes `wanted` (roles ignored) out of `self`, drawing each amount from reserved resources
    /// first and unreserved ones after, and returns exactly what was taken, with its roles. Returns
    /// `None` and leaves `self` unchanged when `wanted` does not fit. This is how a task asking for
    /// `cpus:1;ports:[31005-31005]` is carved out of an offer that mixes roles.
    pub fn take_flattened(&mut self, wanted: &Resources) -> Option<Resources> {
        if !self.contains_flattened(wanted) {
            return None;
        }
        let mut taken = Resources::new();
        for (want_key, amount) in &wanted.flatten().entries {
            // Reservations first: they can serve only this role, unreserved resources serve anyone.
            let mut keys: Vec<ResourceKey> = self
                .entries
                .keys()
                .filter(|k| k.name == want_key.name)
                .cloned()
                .collect();
            keys.sort_by_key(|k| !k.is_reserved());
            match amount {
                Amount::Scalar(mut left) => {
                    for key in keys {
                        if left == 0 {
                            break;
                        }
                        let have = match self.entries.get(&key) {
                            Some(Amount::Scalar(v)) => *v,
                            _ => 0,
                        };
                        let part = have.min(left);
                        self.add_scalar(key.clone(), -part);
                        taken.add_scalar(key, part);
                        left -= part;
                    }
                }
                Amount::Ranges(want) => {
                    for key in keys {
                        if let Some(Amount::Ranges(have)) = self.entries.get(&key) {
                            let part = Ranges::from_pairs(want.0.iter().flat_map(|&(b, e)| {
                                have.0.iter().filter_map(move |&(hb, he)| {
                                    let (lo, hi) = (b.max(hb), e.min(he));
                                    (lo <= hi).then_some((lo, hi))
                                })
                            }));
                            if !part.is_empty() {
                                let mut one = Resources::new();
                                one.add_ranges(key.clone(), &part);
                                self.subtract(&one);
                                taken.add_ranges(key, &part);
                            }
                        }
                    }
                }
            }
        }
        Some(taken)
    }

    /// The same amounts with every role and reservation removed (all unreserved).
    pub fn flatten(&self) -> Resources {
        let mut out = Resources::new();
        for (key, amount) in &self.entries {
            let key = ResourceKey::unreserved(&key.name);
            match amount {
                Amount::Scalar(v) => out.add_scalar(key, *v),
                Amount::Ranges(r) => out.add_ranges(key, r),
            }
        }
        out
    }

    /// The same amounts, all reserved for `role` (statically if `principal` is `None`).
    pub fn with_role(&self, role: &str, principal: Option<&str>) -> Resources {
        let mut out = Resources::new();
        for (key, amount) in &self.entries {
            let key = ResourceKey {
                name: key.name.clone(),
                role: role.to_string(),
                principal: principal.map(str::to_string),
            };
            match amount {
                Amount::Scalar(v) => out.add_scalar(key, *v),
                Amount::Ranges(r) => out.add_ranges(key, r),
            }
        }
        out
    }

    /// Keeps only the resources whose key passes `keep`.
    pub fn filter(&self, mut keep: impl FnMut(&ResourceKey) -> bool) -> Resources {
        Resources {
            entries: self
                .entries
                .iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Unreserved resources only.
    pub fn unreserved(&self) -> Resources {
        self.filter(|k| !k.is_reserved())
    }

    /// Resources reserved (statically or dynamically) for `role`.
    pub fn reserved_for(&self, role: &str) -> Resources {
        self.filter(|k| k.role == role && k.is_reserved())
    }

    /// What a framework in `role` may be offered: unreserved resources plus those reserved for it.
    pub fn allocatable_to(&self, role: &str) -> Resources {
        self.filter(|k| !k.is_reserved() || k.role == role)
    }

    /// Splits the set by role (`*` for unreserved).
    pub fn by_role(&self) -> BTreeMap<String, Resources> {
        let mut out: BTreeMap<String, Resources> = BTreeMap::new();
        for (key, amount) in &self.entries {
            out.entry(key.role.clone())
                .or_default()
                .entries
                .insert(key.clone(), amount.clone());
        }
        out
    }

    /// Iterates over `(key, scalar thousandths)` for scalars.
    pub fn scalars(&self) -> impl Iterator<Item = (&ResourceKey, ScalarValue)> {
        self.entries.iter().filter_map(|(k, v)| match v {
            Amount::Scalar(s) => Some((k, *s)),
            Amount::Ranges(_) => None,
        })
    }

    /// Iterates over `(key, ranges)` for range resources.
    pub fn range_entries(&self) -> impl Iterator<Item = (&ResourceKey, &Ranges)> {
        self.entries.iter().filter_map(|(k, v)| match v {
            Amount::Ranges(r) => Some((k, r)),
            Amount::Scalar(_) => None,
        })
    }

    /// The wire form.
    pub fn to_proto(&self) -> Vec<v1::Resource> {
        self.entries
            .iter()
            .map(|(key, amount)| v1::Resource {
                name: key.name.clone(),
                value: Some(match amount {
                    Amount::Scalar(v) => v1::resource::Value::Scalar(from_millis(*v)),
                    Amount::Ranges(r) => v1::resource::Value::Ranges(v1::Ranges {
                        range: r
                            .0
                            .iter()
                            .map(|&(begin, end)| v1::Range { begin, end })
                            .collect(),
                    }),
                }),
                role: key.role.clone(),
                reservation: key.principal.as_ref().map(|p| v1::ReservationInfo {
                    principal: p.clone(),
                    labels: Default::default(),
                }),
            })
            .collect()
    }

    /// Reads the wire form, checking names, roles and amounts.
    ///
    /// # Errors
    /// [`ResourceError::Invalid`] naming the resource and what is wrong with it.
    pub fn from_proto(resources: &[v1::Resource]) -> Result<Self, ResourceError> {
        let mut out = Resources::new();
        for resource in resources {
            let invalid = |problem: String| ResourceError::Invalid {
                name: resource.name.clone(),
                problem,
            };
            validate_name(&resource.name).map_err(invalid)?;
            let role = if resource.role.is_empty() {
                ANY_ROLE
            } else {
                resource.role.as_str()
            };
            validate_role(role).map_err(invalid)?;
            let principal = resource.reservation.as_ref().map(|r| r.principal.clone());
            if principal.is_some() && role == ANY_ROLE {
                return Err(invalid("a reservation needs a role other than '*'".into()));
            }
            let key = ResourceKey {
                name: resource.name.clone(),
                role: role.to_string(),
                principal,
            };
            match &resource.value {
                Some(v1::resource::Value::Scalar(v)) => {
                    check_kind(&resource.name, true).map_err(invalid)?;
                    if !v.is_finite() || *v < 0.0 || *v > MAX_SCALAR {
                        return Err(invalid(format!(
                            "amount {v} must be a finite number from 0 to {MAX_SCALAR}"
                        )));
                    }
                    out.check_no_kind_clash(&key, true).map_err(invalid)?;
                    out.check_total(&key, to_millis(*v)).map_err(invalid)?;
                    out.add_scalar(key, to_millis(*v));
                }
                Some(v1::resource::Value::Ranges(r)) => {
                    check_kind(&resource.name, false).map_err(invalid)?;
                    if let Some(bad) = r.range.iter().find(|x| x.begin > x.end) {
                        return Err(invalid(format!(
                            "range {}-{} has its begin after its end",
                            bad.begin, bad.end
                        )));
                    }
                    out.check_no_kind_clash(&key, false).map_err(invalid)?;
                    out.add_ranges(
                        key,
                        &Ranges::from_pairs(r.range.iter().map(|x| (x.begin, x.end))),
                    );
                }
                None => return Err(invalid("has neither a scalar nor ranges value".into())),
            }
        }
        Ok(out)
    }

    /// Refuses a scalar that would take its key's total past [`MAX_SCALAR`]: every accepted set
    /// must print as text that parses back (`cpus:1e12;cpus:1` would print as one amount the
    /// parser refuses).
    fn check_total(&self, key: &ResourceKey, millis: ScalarValue) -> Result<(), String> {
        let current = match self.entries.get(key) {
            Some(Amount::Scalar(v)) => *v,
            _ => 0,
        };
        if current.saturating_add(millis) > to_millis(MAX_SCALAR) {
            Err(format!(
                "brings the total of '{}' above {MAX_SCALAR}",
                key.name
            ))
        } else {
            Ok(())
        }
    }

    fn check_no_kind_clash(&self, key: &ResourceKey, scalar: bool) -> Result<(), String> {
        let clash = self
            .entries
            .iter()
            .any(|(k, v)| k.name == key.name && matches!(v, Amount::Scalar(_)) != scalar);
        if clash {
            Err("is given both as a scalar and as ranges".into())
        } else {
            Ok(())
        }
    }
}

fn check_kind(name: &str, scalar: bool) -> Result<(), String> {
    if scalar && RANGE_NAMES.contains(&name) {
        return Err("must be ranges like [31000-32000]".into());
    }
    if !scalar && SCALAR_NAMES.contains(&name) {
        return Err("must be a number".into());
    }
    Ok(())
}

fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err("name must start with a letter and contain only letters, digits, '_', '-', '.'".into())
    }
}

/// Checks a role name: `*`, or `[a-zA-Z0-9_.-]+` that is not `.`/`..` and does not start with `-`.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn validate_role(role: &str) -> Result<(), String> {
    if role == ANY_ROLE {
        return Ok(());
    }
    if role.is_empty() {
        return Err("role must not be empty".into());
    }
    if role == "." || role == ".." {
        return Err(format!("role '{role}' is not allowed"));
    }
    if role.starts_with('-') {
        return Err(format!("role '{role}' must not start with '-'"));
    }
    if let Some(c) = role
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "role '{role}' contains '{c}'; use letters, digits, '_', '-', '.'"
        ));
    }
    Ok(())
}

impl Add for Resources {
    type Output = Resources;
    fn add(mut self, rhs: Resources) -> Resources {
        Resources::add(&mut self, &rhs);
        self
    }
}

impl Sub for Resources {
    type Output = Resources;
    fn sub(mut self, rhs: Resources) -> Resources {
        self.subtract(&rhs);
        self
    }
}

impl AddAssign<&Resources> for Resources {
    fn add_assign(&mut self, rhs: &Resources) {
        Resources::add(self, rhs);
    }
}

impl SubAssign<&Resources> for Resources {
    fn sub_assign(&mut self, rhs: &Resources) {
        self.subtract(rhs);
    }
}

fn format_millis(value: ScalarValue) -> String {
    if value % 1000 == 0 {
        format!("{}", value / 1000)
    } else {
        let text = format!("{}.{:03}", value / 1000, value % 1000);
        text.trim_end_matches('0').to_string()
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (key, amount)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            f.write_str(&key.name)?;
            match (&key.principal, key.role.as_str()) {
                (Some(p), role) => write!(f, "({role},{p})")?,
                (None, ANY_ROLE) => {}
                (None, role) => write!(f, "({role})")?,
            }
            match amount {
                Amount::Scalar(v) => write!(f, ":{}", format_millis(*v))?,
                Amount::Ranges(r) => write!(f, ":{r}")?,
            }
        }
        Ok(())
    }
}

impl FromStr for Resources {
    type Err = ResourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Resources::new();
        for token in s.split(';').map(str::trim).filter(|t| !t.is_empty()) {
            let bad = |problem: &str| ResourceError::Parse {
                token: token.to_string(),
                problem: problem.to_string(),
            };
            let (head, value) = token
                .split_once(':')
                .ok_or_else(|| bad("expected NAME:VALUE or NAME(ROLE):VALUE"))?;
            let (head, value) = (head.trim(), value.trim());
            let (name, role, principal) = match head.split_once('(') {
                None => (head, ANY_ROLE.to_string(), None),
                Some((name, rest)) => {
                    let inner = rest
                        .strip_suffix(')')
                        .ok_or_else(|| bad("role is missing its ')'"))?;
                    match inner.split_once(',') {
                        Some((role, principal)) => {
                            let principal = principal.trim();
                            if principal.is_empty() {
                                return Err(bad("reservation principal is empty"));
                            }
                            (
                                name.trim(),
                                role.trim().to_string(),
                                Some(principal.to_string()),
                            )
                        }
                        None => (name.trim(), inner.trim().to_string(), None),
                    }
                }
            };
            validate_name(name).map_err(|p| bad(&p))?;
            validate_role(&role).map_err(|p| bad(&p))?;
            if principal.is_some() && role == ANY_ROLE {
                return Err(bad("a reservation needs a role other than '*'"));
            }
            let key = ResourceKey {
                name: name.to_string(),
                role,
                principal,
            };
            if let Some(inner) = value.strip_prefix('[') {
                check_kind(name, false).map_err(|p| bad(&p))?;
                let inner = inner
                    .strip_suffix(']')
                    .ok_or_else(|| bad("ranges are missing their ']'"))?;
                let ranges = parse_ranges(inner).map_err(|p| bad(&p))?;
                out.check_no_kind_clash(&key, false).map_err(|p| bad(&p))?;
                out.add_ranges(key, &ranges);
            } else {
                check_kind(name, true).map_err(|p| bad(&p))?;
                let amount: f64 = value
                    .parse()
                    .map_err(|_| bad(&format!("'{value}' is not a number")))?;
                if !amount.is_finite() || !(0.0..=MAX_SCALAR).contains(&amount) {
                    return Err(bad(&format!(
                        "amount '{value}' must be a finite number from 0 to {MAX_SCALAR}"
                    )));
                }
                out.check_no_kind_clash(&key, true).map_err(|p| bad(&p))?;
                out.check_total(&key, to_millis(amount))
                    .map_err(|p| bad(&p))?;
                out.add_scalar(key, to_millis(amount));
            }
        }
        Ok(out)
    }
}

fn parse_ranges(inner: &str) -> Result<Ranges, String> {
    let mut pairs = Vec::new();
    for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = |text: &str| -> Result<u64, String> {
            text.trim()
                .parse::<u64>()
                .map_err(|_| format!("'{}' in range '{part}' is not a whole number", text.trim()))
        };
        let (begin, end) = match part.split_once('-') {
            Some((b, e)) => (number(b)?, number(e)?),
            None => {
                let n = number(part)?;
                (n, n)
            }
        };
        if begin > end {
            return Err(format!("range '{part}' has its begin after its end"));
        }
        pairs.push((begin, end));
    }
    Ok(Ranges::from_pairs(pairs))
}

#[cfg(test)]
mod tests;
