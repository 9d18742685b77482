//! The group requests (`/v2/groups`): a body read by [`crate::group::read_group`] becomes one
//! [`Changes`] and so one plan; the tree the API shows is built from the saved group records and
//! the apps' ids.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::plan::Changes;
use super::{ServicesCore, ServicesError};
use crate::app::FieldError;
use crate::group::{self, GroupBody};

/// A group of the tree, for the API to render.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupNode {
    pub id: String,
    pub version: String,
    pub dependencies: Vec<String>,
    /// Ids of the apps directly inside.
    pub apps: Vec<String>,
    pub groups: Vec<GroupNode>,
}

fn invalid(path: &str, e: String) -> ServicesError {
    ServicesError::Invalid(vec![FieldError {
        path: path.to_string(),
        errors: vec![e],
    }])
}

impl ServicesCore {
    /// Whether `id` is a group: the root, a saved group, or a group around an app.
    pub fn group_exists(&self, id: &str) -> bool {
        id == "/"
            || self.groups.contains_key(id)
            || self
                .apps
                .range(format!("{id}/")..format!("{id}0"))
                .next()
                .is_some()
    }

    fn group_ids(&self) -> BTreeSet<String> {
        let mut ids: BTreeSet<String> = self.groups.keys().cloned().collect();
        for a in self.apps.keys() {
            ids.extend(group::ancestors(a));
        }
        ids.insert("/".into());
        ids
    }

    /// The group `id` with everything inside it; `None` when there is no such group.
    pub fn group_tree(&self, id: &str) -> Option<GroupNode> {
        if !self.group_exists(id) {
            return None;
        }
        // Children by parent, built once (not a scan of every group and app per group).
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for g in self.group_ids().into_iter().filter(|g| g != "/") {
            groups.entry(group::parent(&g)).or_default().push(g);
        }
        let mut apps: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for a in self.apps.keys() {
            apps.entry(group::parent(a)).or_default().push(a.clone());
        }
        Some(self.node(id, &groups, &apps))
    }

    fn node(
        &self,
        id: &str,
        groups: &BTreeMap<String, Vec<String>>,
        apps: &BTreeMap<String, Vec<String>>,
    ) -> GroupNode {
        let record = self.groups.get(id);
        let mine = apps.get(id).cloned().unwrap_or_default();
        // A group only implied by an app (saved by a version before groups): its newest app's.
        let version = record.map(|r| r.version.clone()).unwrap_or_else(|| {
            mine.iter()
                .filter_map(|a| self.apps.get(a))
                .map(|st| st.version.clone())
                .max()
                .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".into())
        });
        GroupNode {
            id: id.to_string(),
            version,
            dependencies: record.map(|r| r.dependencies.clone()).unwrap_or_default(),
            apps: mine,
            groups: groups
                .get(id)
                .map(|gs| gs.iter().map(|g| self.node(g, groups, apps)).collect())
                .unwrap_or_default(),
        }
    }

    /// A group's versions, newest first.
    pub fn group_versions(&self, id: &str) -> Option<Vec<String>> {
        let node = self.group_tree(id)?;
        Some(match self.groups.get(id) {
            Some(r) if !r.versions.is_empty() => r.versions.iter().rev().cloned().collect(),
            _ => vec![node.version],
        })
    }

    /// `POST /v2/groups` (`create`: an existing group is refused) and `PUT /v2/groups/{id}`:
    /// apps the body lists are created or replaced; where it lists a group's apps (or groups),
    /// the ones it leaves out are stopped (removed). `{"scaleBy": f}` scales every app inside
    /// instead. Returns (deployment id, version, whether the group is new).
    ///
    /// # Errors
    /// [`ServicesError::Invalid`] naming each bad field, [`ServicesError::GroupExists`],
    /// [`ServicesError::Locked`].
    pub fn put_group(
        &mut self,
        id: &str,
        body: &GroupBody,
        create: bool,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<(String, String, bool), ServicesError> {
        if let Some(by) = body.scale_by {
            if body.apps.is_some() || body.groups.is_some() || body.dependencies.is_some() {
                return Err(invalid(
                    "/scaleBy",
                    "cannot be combined with apps, groups or dependencies".into(),
                ));
            }
            if create {
                return Err(invalid(
                    "/scaleBy",
                    "scales an existing group: use PUT /v2/groups/{id}".into(),
                ));
            }
            let (dep, version) = self.scale_group(id, by, force, now)?;
            return Ok((dep, version, false));
        }
        if let Some(v) = &body.version {
            return Err(invalid(
                "/version",
                format!(
                    "rolling a group back to version {v} is not supported; PUT the group as it was"
                ),
            ));
        }
        let target = group::read_group(id, body).map_err(ServicesError::Invalid)?;
        let exists = self.group_exists(id);
        if create && exists {
            return Err(ServicesError::GroupExists(id.to_string()));
        }
        if self.apps.contains_key(id) {
            return Err(invalid("/id", format!("{id} is an app, not a group")));
        }
        let listed: BTreeSet<&str> = target.apps.iter().map(|a| a.id.as_str()).collect();
        let listed_groups: BTreeSet<&str> = target.groups.iter().map(|g| g.id.as_str()).collect();
        let mut changes = Changes::default();
        let ids = self.group_ids();
        for g in &target.groups {
            if g.apps_given {
                changes.removes.extend(
                    self.apps
                        .keys()
                        .filter(|a| group::parent(a) == g.id && !listed.contains(a.as_str()))
                        .cloned(),
                );
            }
            if g.groups_given {
                for child in ids
                    .iter()
                    .filter(|c| c.as_str() != "/" && group::parent(c) == g.id)
                    .filter(|c| !listed_groups.contains(c.as_str()))
                {
                    changes.groups_removed.push(child.clone());
                    changes.removes.extend(
                        self.apps
                            .keys()
                            .filter(|a| group::is_within(a, child))
                            .cloned(),
                    );
                }
            }
            changes.groups.push((g.id.clone(), g.dependencies.clone()));
        }
        changes.removes.sort();
        changes.removes.dedup();
        changes.puts = target.apps;
        let (dep, version) = self.apply(changes, id, force, now)?;
        Ok((dep, version, !exists))
    }

    /// `DELETE /v2/groups/{id}`: every app inside is stopped, dependents first; the group and
    /// the groups inside it are removed (the root stays, empty).
    ///
    /// # Errors
    /// [`ServicesError::UnknownGroup`], [`ServicesError::Locked`].
    pub fn delete_group(
        &mut self,
        id: &str,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<(String, String), ServicesError> {
        if !self.group_exists(id) {
            return Err(ServicesError::UnknownGroup(id.to_string()));
        }
        let changes = Changes {
            removes: self
                .apps
                .keys()
                .filter(|a| group::is_within(a, id))
                .cloned()
                .collect(),
            groups_removed: vec![id.to_string()],
            ..Changes::default()
        };
        let at = if id == "/" {
            "/".to_string()
        } else {
            group::parent(id)
        };
        self.apply(changes, &at, force, now)
    }

    /// `PUT /v2/groups/{id}` with `{"scaleBy": f}`: every app inside to `ceil(instances × f)`.
    ///
    /// # Errors
    /// [`ServicesError::UnknownGroup`], [`ServicesError::Invalid`] (a factor out of bounds, an
    /// app that would have too many instances), [`ServicesError::Locked`].
    pub fn scale_group(
        &mut self,
        id: &str,
        by: f64,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<(String, String), ServicesError> {
        if !by.is_finite() || by <= 0.0 || by > group::MAX_SCALE_BY {
            return Err(invalid(
                "/scaleBy",
                format!("must be above 0 and at most {}", group::MAX_SCALE_BY),
            ));
        }
        if !self.group_exists(id) {
            return Err(ServicesError::UnknownGroup(id.to_string()));
        }
        let max = crate::app::limits::MAX_INSTANCES;
        let mut scales = Vec::new();
        for (app, st) in self.apps.iter().filter(|(a, _)| group::is_within(a, id)) {
            let n = (f64::from(st.app.instances) * by).ceil();
            if n > f64::from(max) {
                return Err(invalid(
                    "/scaleBy",
                    format!("{app} would have more than {max} instances"),
                ));
            }
            // In 0..=max (checked above): the cast is exact.
            scales.push((app.clone(), n as u32));
        }
        self.apply(
            Changes {
                scales,
                ..Changes::default()
            },
            id,
            force,
            now,
        )
    }
}
