//! Marathon groups, pure: ids relative to a group, a group body read into the apps and groups it
//! names (every field bounded, errors named by JSON pointer), and the dependency order a
//! deployment plan follows.
//!
//! ```text
//!  POST/PUT /v2/groups body ──read_group──▶ GroupTarget { groups (id, deps), apps (absolute ids) }
//!  every app + group deps ──order──▶ levels: [[db], [cache, api], [web]]   (a dependency first)
//!  a plan starts/scales/restarts level by level; stops go the other way round (dependents first).
//! ```
//!
//! Apps are kept where every app is (the core's app map, by absolute id); a group is a path with
//! a saved [`GroupRecord`] (its own dependencies and versions), so that an empty group and a
//! group-level dependency survive a restart. Every ancestor of an app is a group.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::{limits, normalize_id, App, FieldError};

/// Segments of a group id (`/a/b/c` is 3 deep); an app may be one deeper.
pub const MAX_DEPTH: usize = 16;
/// Apps directly in one group of a request.
pub const MAX_APPS_PER_GROUP: usize = 500;
/// Groups directly in one group of a request.
pub const MAX_GROUPS_PER_GROUP: usize = 500;
/// Apps in one group request, all levels together.
pub const MAX_APPS_PER_REQUEST: usize = 2000;
/// Groups kept in all (a request that would make more is refused).
pub const MAX_GROUPS: usize = 10_000;
/// `scaleBy` is above 0 and at most this.
pub const MAX_SCALE_BY: f64 = 1000.0;

/// What is saved of a group besides its apps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRecord {
    /// Absolute ids of the apps or groups every app in this group waits for.
    #[serde(default)]
    pub dependencies: Vec<String>,
    pub version: String,
    /// Newest last, at most [`crate::core::VERSIONS_KEPT`].
    #[serde(default)]
    pub versions: Vec<String>,
}

/// The parent group of an id (`/a/b` → `/a`, `/a` → `/`).
pub fn parent(id: &str) -> String {
    match id.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((p, _)) => p.to_string(),
    }
}

/// `/a/b/c` → `["/", "/a", "/a/b"]`: every group above an id.
pub fn ancestors(id: &str) -> Vec<String> {
    let mut out = vec!["/".to_string()];
    let segments: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).collect();
    for i in 1..segments.len() {
        out.push(format!("/{}", segments[..i].join("/")));
    }
    out
}

/// Whether `id` is `group` or inside it.
pub fn is_within(id: &str, group: &str) -> bool {
    group == "/" || id == group || id.strip_prefix(group).is_some_and(|r| r.starts_with('/'))
}

/// Marathon's canonical path: an absolute `rel` as is, a relative one appended to `base`, with
/// `.` and `..` segments resolved.
///
/// # Errors
/// A `..` above the root.
pub fn resolve(base: &str, rel: &str) -> Result<String, String> {
    let rel = rel.trim();
    let mut out: Vec<&str> = if rel.starts_with('/') {
        Vec::new()
    } else {
        base.split('/').filter(|s| !s.is_empty()).collect()
    };
    for s in rel.split('/').filter(|s| !s.is_empty()) {
        match s {
            "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(format!("'{rel}' goes above the root group"));
                }
            }
            s => out.push(s),
        }
    }
    Ok(format!("/{}", out.join("/")))
}

/// A group as a request names it (`POST /v2/groups`, `PUT /v2/groups/{id}`). Fields left out
/// stay as they are on a PUT.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupBody {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub apps: Option<Vec<Value>>,
    #[serde(default)]
    pub groups: Option<Vec<GroupBody>>,
    #[serde(default)]
    pub dependencies: Option<Vec<String>>,
    #[serde(default)]
    pub pods: Option<Vec<Value>>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub scale_by: Option<f64>,
    /// Marathon 1.9's flag: accepted, has no effect here (roles are the framework's).
    #[serde(default)]
    pub enforce_role: Option<bool>,
}

/// One group of a request, read.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupDef {
    pub id: String,
    /// `None`: left out (unchanged on a PUT).
    pub dependencies: Option<Vec<String>>,
    /// The request listed the group's apps: apps not listed are removed on a PUT.
    pub apps_given: bool,
    /// The request listed the group's groups: groups not listed are removed on a PUT.
    pub groups_given: bool,
}

/// A group request read into absolute ids: every group it names (parents first) and every app.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupTarget {
    pub groups: Vec<GroupDef>,
    pub apps: Vec<App>,
}

/// Reads a group body for group `id` (absolute; the body's own `id`, when it has one, must name
/// the same group). Apps are normalised and validated; their ids and dependencies are made
/// absolute.
///
/// # Errors
/// Every bad field, named by its JSON pointer in the body (`/groups/0/apps/1/cmd`).
pub fn read_group(id: &str, body: &GroupBody) -> Result<GroupTarget, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut target = GroupTarget::default();
    if let Some(own) = &body.id {
        match resolve(&parent(id), own) {
            Ok(resolved) if resolved == id || normalize_id(own) == id => {}
            _ => push(
                &mut errors,
                "/id",
                format!(
                    "'{own}' differs from the group id {id} in the URL: a group cannot be renamed"
                ),
            ),
        }
    }
    let mut apps_total = 0;
    read_into(id, body, "", 0, &mut target, &mut apps_total, &mut errors);
    if errors.is_empty() {
        Ok(target)
    } else {
        Err(errors)
    }
}

fn push(errors: &mut Vec<FieldError>, path: &str, e: String) {
    match errors.iter_mut().find(|f| f.path == path) {
        Some(f) => f.errors.push(e),
        None => errors.push(FieldError {
            path: path.to_string(),
            errors: vec![e],
        }),
    }
}

fn check_id(errors: &mut Vec<FieldError>, path: &str, id: &str, depth_limit: usize) {
    let segments: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).collect();
    if id.len() > limits::MAX_ID {
        push(
            errors,
            path,
            format!("'{id}' is longer than {} characters", limits::MAX_ID),
        );
    }
    if segments.len() > depth_limit {
        push(
            errors,
            path,
            format!("'{id}' is nested deeper than {depth_limit} levels"),
        );
    }
    if segments.iter().any(|s| s.len() > limits::MAX_ID_SEGMENT) {
        push(
            errors,
            path,
            format!(
                "a segment of '{id}' is longer than {} characters",
                limits::MAX_ID_SEGMENT
            ),
        );
    }
    if segments.iter().any(|s| !crate::app::valid_segment(s)) {
        push(
            errors,
            path,
            format!(
                "'{id}' must be a path of segments of lowercase letters, digits, '-' and '.', a \
                 segment not starting or ending with '-'"
            ),
        );
    }
}

fn read_dependencies(
    errors: &mut Vec<FieldError>,
    path: &str,
    base: &str,
    deps: &[String],
) -> Vec<String> {
    if deps.len() > limits::MAX_LIST {
        push(
            errors,
            path,
            format!("has more than {} entries", limits::MAX_LIST),
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, d) in deps.iter().enumerate() {
        let p = format!("{path}/{i}");
        if d.len() > limits::MAX_ID {
            push(
                errors,
                &p,
                format!("is longer than {} characters", limits::MAX_ID),
            );
            continue;
        }
        match resolve(base, d) {
            Ok(r) if r == "/" => push(errors, &p, "cannot name the root group".into()),
            Ok(r) => out.push(r),
            Err(e) => push(errors, &p, e),
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn read_into(
    id: &str,
    body: &GroupBody,
    at: &str,
    depth: usize,
    target: &mut GroupTarget,
    apps_total: &mut usize,
    errors: &mut Vec<FieldError>,
) {
    let here = if at.is_empty() { "" } else { at };
    check_id(errors, &format!("{here}/id"), id, MAX_DEPTH);
    if depth > MAX_DEPTH {
        return;
    }
    if body.pods.as_ref().is_some_and(|p| !p.is_empty()) {
        push(
            errors,
            &format!("{here}/pods"),
            "pods are not supported; use apps".into(),
        );
    }
    if depth > 0 && body.scale_by.is_some() {
        push(
            errors,
            &format!("{here}/scaleBy"),
            "only the group the URL names can be scaled".into(),
        );
    }
    if depth > 0 && body.version.is_some() {
        push(
            errors,
            &format!("{here}/version"),
            "only the group the URL names can carry a version".into(),
        );
    }
    let dependencies = body.dependencies.as_ref().map(|d| {
        let deps = read_dependencies(errors, &format!("{here}/dependencies"), &parent(id), d);
        for (i, d) in deps.iter().enumerate() {
            if is_within(d, id) || is_within(id, d) {
                push(
                    errors,
                    &format!("{here}/dependencies/{i}"),
                    format!(
                        "a group cannot depend on itself, a group inside it or one around it ({d})"
                    ),
                );
            }
        }
        deps
    });
    target.groups.push(GroupDef {
        id: id.to_string(),
        dependencies,
        apps_given: body.apps.is_some(),
        groups_given: body.groups.is_some(),
    });
    if let Some(apps) = &body.apps {
        if apps.len() > MAX_APPS_PER_GROUP {
            push(
                errors,
                &format!("{here}/apps"),
                format!("has more than {MAX_APPS_PER_GROUP} apps"),
            );
            return;
        }
        *apps_total += apps.len();
        if *apps_total > MAX_APPS_PER_REQUEST {
            push(
                errors,
                &format!("{here}/apps"),
                format!("the request has more than {MAX_APPS_PER_REQUEST} apps"),
            );
            return;
        }
        for (i, raw) in apps.iter().enumerate() {
            let p = format!("{here}/apps/{i}");
            read_app(id, raw, &p, target, errors);
        }
    }
    if let Some(groups) = &body.groups {
        if groups.len() > MAX_GROUPS_PER_GROUP {
            push(
                errors,
                &format!("{here}/groups"),
                format!("has more than {MAX_GROUPS_PER_GROUP} groups"),
            );
            return;
        }
        for (i, g) in groups.iter().enumerate() {
            let p = format!("{here}/groups/{i}");
            let Some(gid) = g.id.as_deref() else {
                push(errors, &format!("{p}/id"), "is required".into());
                continue;
            };
            if gid.len() > limits::MAX_ID {
                push(
                    errors,
                    &format!("{p}/id"),
                    format!("is longer than {} characters", limits::MAX_ID),
                );
                continue;
            }
            let child = match resolve(id, gid) {
                Ok(c) => c,
                Err(e) => {
                    push(errors, &format!("{p}/id"), e);
                    continue;
                }
            };
            if parent(&child) != id || child == "/" {
                push(
                    errors,
                    &format!("{p}/id"),
                    format!("'{child}' is not a group directly inside {id}"),
                );
                continue;
            }
            if depth + 1 > MAX_DEPTH {
                push(
                    errors,
                    &format!("{p}/id"),
                    format!("groups are nested deeper than {MAX_DEPTH} levels"),
                );
                continue;
            }
            read_into(&child, g, &p, depth + 1, target, apps_total, errors);
        }
    }
}

fn read_app(
    group: &str,
    raw: &Value,
    p: &str,
    target: &mut GroupTarget,
    errors: &mut Vec<FieldError>,
) {
    let Some(rel) = raw.get("id").and_then(Value::as_str) else {
        push(errors, &format!("{p}/id"), "is required".into());
        return;
    };
    if rel.len() > limits::MAX_ID {
        push(
            errors,
            &format!("{p}/id"),
            format!("is longer than {} characters", limits::MAX_ID),
        );
        return;
    }
    let app_id = match resolve(group, rel) {
        Ok(a) => a,
        Err(e) => {
            push(errors, &format!("{p}/id"), e);
            return;
        }
    };
    if parent(&app_id) != group || app_id == "/" {
        push(
            errors,
            &format!("{p}/id"),
            format!("'{app_id}' is not an app directly inside {group}"),
        );
        return;
    }
    let mut v = raw.clone();
    if let Value::Object(m) = &mut v {
        m.insert("id".into(), Value::String(app_id.clone()));
    }
    let mut app = match crate::app::from_value(v) {
        Ok(a) => a,
        Err(es) => {
            for e in es {
                for m in e.errors {
                    push(errors, &format!("{p}{}", e.path), m);
                }
            }
            return;
        }
    };
    let deps = read_dependencies(
        errors,
        &format!("{p}/dependencies"),
        group,
        &app.dependencies,
    );
    app.dependencies = deps;
    app.normalize();
    app.version = None;
    if let Err(es) = app.validate() {
        for e in es {
            for m in e.errors {
                push(errors, &format!("{p}{}", e.path), m);
            }
        }
        return;
    }
    if target.apps.iter().any(|a| a.id == app.id) {
        push(
            errors,
            &format!("{p}/id"),
            format!("'{}' is named twice", app.id),
        );
        return;
    }
    target.apps.push(app);
}

/// A dependency cycle: the apps on it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the dependencies form a cycle through {}", .0.join(", "))]
pub struct Cycle(pub Vec<String>);

/// The apps each app waits for: its own dependencies and those of every group around it, a
/// dependency naming a group standing for every app inside that group.
pub fn effective_dependencies(
    apps: &BTreeMap<String, Vec<String>>,
    groups: &BTreeMap<String, Vec<String>>,
) -> BTreeMap<String, BTreeSet<String>> {
    // The apps inside `dep` are `dep` itself and a contiguous range of ids (`dep/…`; '0' is the
    // character after '/'): a range query, not a scan of every app per dependency.
    let expand = |dep: &str, me: &str, out: &mut BTreeSet<String>| {
        let inside: Box<dyn Iterator<Item = &String>> = if dep == "/" {
            Box::new(apps.keys())
        } else {
            Box::new(
                apps.get_key_value(dep).map(|(k, _)| k).into_iter().chain(
                    apps.range(format!("{dep}/")..format!("{dep}0"))
                        .map(|(k, _)| k),
                ),
            )
        };
        for other in inside {
            if other != me {
                out.insert(other.clone());
            }
        }
    };
    let mut out = BTreeMap::new();
    for (id, deps) in apps {
        let mut set = BTreeSet::new();
        for d in deps {
            expand(d, id, &mut set);
        }
        for g in ancestors(id) {
            if let Some(gdeps) = groups.get(&g) {
                for d in gdeps {
                    expand(d, id, &mut set);
                }
            }
        }
        out.insert(id.clone(), set);
    }
    out
}

/// Orders apps into levels: an app comes after every app it depends on (directly or through a
/// group); apps of one level do not depend on each other (a plan's step).
///
/// # Errors
/// [`Cycle`] when the dependencies loop.
pub fn order(
    apps: &BTreeMap<String, Vec<String>>,
    groups: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<Vec<String>>, Cycle> {
    let deps = effective_dependencies(apps, groups);
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut levels = Vec::new();
    while placed.len() < deps.len() {
        let level: Vec<String> = deps
            .iter()
            .filter(|(id, d)| !placed.contains(*id) && d.iter().all(|x| placed.contains(x)))
            .map(|(id, _)| id.clone())
            .collect();
        if level.is_empty() {
            return Err(Cycle(
                deps.keys()
                    .filter(|id| !placed.contains(*id))
                    .cloned()
                    .collect(),
            ));
        }
        placed.extend(level.iter().cloned());
        levels.push(level);
    }
    Ok(levels)
}

/// The levels of [`order`] kept to the apps in `affected` (levels left empty dropped).
pub fn steps_for(levels: &[Vec<String>], affected: &BTreeSet<String>) -> Vec<Vec<String>> {
    levels
        .iter()
        .map(|l| {
            l.iter()
                .filter(|a| affected.contains(*a))
                .cloned()
                .collect::<Vec<_>>()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

#[cfg(test)]
mod tests;
