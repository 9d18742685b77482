//! Deployment plans, Marathon's: a change (an app's, a group's) becomes one plan of ordered
//! steps, each a set of actions on apps carried out together. Stops come first, dependents before
//! what they depend on; then starts, scales and restarts, dependencies first. A step is done when
//! each of its apps is stable (every instance running, healthy, of the new config) or, for a
//! stop, when every task of the app is gone; the next step begins then. An app of a later step
//! launches nothing (and kills nothing) until its step begins.
//!
//! ```text
//!  apply(Changes) ─▶ check (cycle, bounds, locks) ─▶ target state saved ─▶ plan: [stop…] [start db] [start web]
//!  plan()/advance ─▶ step done? ─▶ deployment_step_success, next step: deployment_info (stops: kills)
//!                 └▶ last step done ─▶ deployment_success
//! ```

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{only_instances_differ, version_of, AppState, Effect, ServicesCore, ServicesError};
use crate::app::{normalize_id, App, FieldError};
use crate::group;

/// How long a stop waits for a kill before sending it again.
pub(super) const KILL_AGAIN_SECS: i64 = 10;

/// One action of a step: `StartApplication`, `ScaleApplication`, `RestartApplication`,
/// `StopApplication`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub action: String,
    pub app: String,
}

/// A deployment plan in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", from = "SavedDeployment")]
pub struct Deployment {
    pub id: String,
    pub version: String,
    pub steps: Vec<Vec<Action>>,
    /// The step in progress (0-based; `steps.len()` when all are done).
    pub current: usize,
    pub started_at: DateTime<Utc>,
    /// Every affected app as it was before (`None`: it did not exist), to roll back to.
    pub previous_apps: BTreeMap<String, Option<App>>,
    /// The group the change named (the app's group for an app change).
    pub group: String,
}

/// A deployment as saved, by this version or by one before plans (one app, one action).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedDeployment {
    id: String,
    version: String,
    #[serde(default)]
    steps: Option<Vec<Vec<Action>>>,
    #[serde(default)]
    current: usize,
    started_at: DateTime<Utc>,
    #[serde(default)]
    previous_apps: BTreeMap<String, Option<App>>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    app_id: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    previous: Option<App>,
}

impl From<SavedDeployment> for Deployment {
    fn from(s: SavedDeployment) -> Self {
        let mut previous_apps = s.previous_apps;
        let steps = match (s.steps, s.app_id) {
            (Some(steps), _) => steps,
            (None, Some(app)) => {
                previous_apps.insert(app.clone(), s.previous);
                vec![vec![Action {
                    action: s.action.unwrap_or_else(|| "RestartApplication".into()),
                    app,
                }]]
            }
            (None, None) => Vec::new(),
        };
        let group = s.group.unwrap_or_else(|| {
            steps
                .first()
                .and_then(|st| st.first())
                .map_or_else(|| "/".to_string(), |a| group::parent(&a.app))
        });
        Deployment {
            id: s.id,
            version: s.version,
            current: s.current.min(steps.len()),
            steps,
            started_at: s.started_at,
            previous_apps,
            group,
        }
    }
}

impl Deployment {
    /// Every app a step of the plan acts on.
    pub fn affected_apps(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self.steps.iter().flatten().map(|a| &a.app).collect();
        set.into_iter().cloned().collect()
    }

    pub fn affects(&self, app: &str) -> bool {
        self.steps.iter().flatten().any(|a| a.app == app)
    }

    /// The actions of the step in progress (none once all are done).
    pub fn current_actions(&self) -> &[Action] {
        self.steps.get(self.current).map_or(&[], Vec::as_slice)
    }

    /// Whether `app` waits for a later step to start, scale or restart.
    pub fn holds(&self, app: &str) -> bool {
        self.steps
            .iter()
            .skip(self.current + 1)
            .flatten()
            .any(|a| a.app == app && a.action != "StopApplication")
    }

    /// Marathon's plan JSON (what `deployment_*` events carry): `id`, `version`, `steps`,
    /// `original` and `target` (the affected apps before and after).
    pub fn plan_json(&self, core: &ServicesCore) -> Value {
        let original: Vec<Value> = self
            .previous_apps
            .values()
            .flatten()
            .map(|a| serde_json::to_value(a).unwrap_or(Value::Null))
            .collect();
        let target: Vec<Value> = self
            .affected_apps()
            .iter()
            .filter_map(|id| core.app(id))
            .map(|st| serde_json::to_value(&st.app).unwrap_or(Value::Null))
            .collect();
        let state = |apps: Vec<Value>, version: &str| json!({ "id": "/", "apps": apps, "groups": [], "pods": [], "dependencies": [], "version": version });
        json!({
            "id": self.id,
            "version": self.version,
            "steps": self.steps.iter().map(|s| json!({ "actions": s })).collect::<Vec<_>>(),
            "original": state(original, &self.version),
            "target": state(target, &self.version),
        })
    }
}

/// An app a plan stops: gone from the apps, its tasks still being killed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retiring {
    pub state: AppState,
    /// When its kills were last sent.
    #[serde(default)]
    pub killed_at: Option<DateTime<Utc>>,
}

/// What one request changes; [`ServicesCore::apply`] checks it whole, then saves it and plans it.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// Apps created or replaced.
    pub puts: Vec<App>,
    /// With `puts`: an unchanged app still gets an action (`PUT /v2/apps` does; a group does not).
    pub always: bool,
    pub removes: Vec<String>,
    pub scales: Vec<(String, u32)>,
    pub restarts: Vec<String>,
    /// Groups created, with their dependencies set (`None`: kept).
    pub groups: Vec<(String, Option<Vec<String>>)>,
    /// Groups removed with everything inside them (the root keeps itself).
    pub groups_removed: Vec<String>,
}

fn app_dependencies(app: &App) -> Vec<String> {
    app.dependencies.iter().map(|d| normalize_id(d)).collect()
}

fn invalid(path: &str, e: String) -> ServicesError {
    ServicesError::Invalid(vec![FieldError {
        path: path.to_string(),
        errors: vec![e],
    }])
}

impl ServicesCore {
    /// Whether a plan keeps `app` waiting for a later step.
    pub(super) fn held(&self, app: &str) -> bool {
        self.deployments.iter().any(|d| d.holds(app))
    }

    fn world(&self) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, Vec<String>>) {
        let apps = self
            .apps
            .iter()
            .map(|(id, st)| (id.clone(), app_dependencies(&st.app)))
            .collect();
        let groups = self
            .groups
            .iter()
            .map(|(id, g)| (id.clone(), g.dependencies.clone()))
            .collect();
        (apps, groups)
    }

    /// Checks `changes` whole (dependency cycles, app and group ids apart, the number of groups,
    /// locks), then saves the target state and starts its plan. `group` names the group the
    /// request changed (events). Returns (deployment id, version).
    ///
    /// # Errors
    /// [`ServicesError::Invalid`] (a cycle, an id both app and group, too many groups),
    /// [`ServicesError::Locked`] (without `force`); nothing is changed then.
    pub fn apply(
        &mut self,
        mut changes: Changes,
        group: &str,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<(String, String), ServicesError> {
        let version = version_of(now);
        let (before_apps, before_groups) = self.world();
        let mut apps = before_apps.clone();
        let mut groups = before_groups.clone();
        for r in &changes.removes {
            apps.remove(r);
        }
        for g in &changes.groups_removed {
            groups.retain(|k, _| k == "/" || !group::is_within(k, g));
        }
        for a in &changes.puts {
            apps.insert(a.id.clone(), app_dependencies(a));
        }
        for (g, deps) in &changes.groups {
            let e = groups.entry(g.clone()).or_default();
            if let Some(d) = deps {
                e.clone_from(d);
            }
        }
        let before_levels = group::order(&before_apps, &before_groups);
        let levels = match (group::order(&apps, &groups), &before_levels) {
            (Ok(l), _) => l,
            // State saved before cycles were refused: this change is not to blame; no order.
            (Err(_), Err(_)) => vec![apps.keys().cloned().collect()],
            (Err(c), Ok(_)) => return Err(invalid("/dependencies", c.to_string())),
        };
        let count_groups = |apps: &BTreeMap<String, Vec<String>>,
                            groups: &BTreeMap<String, Vec<String>>| {
            let mut all: BTreeSet<String> = groups.keys().cloned().collect();
            for id in apps.keys().chain(groups.keys()) {
                all.extend(group::ancestors(id));
            }
            all
        };
        let all_groups = count_groups(&apps, &groups);
        if all_groups.len() > group::MAX_GROUPS
            && all_groups.len() > count_groups(&before_apps, &before_groups).len()
        {
            return Err(invalid(
                "/groups",
                format!("there would be more than {} groups", group::MAX_GROUPS),
            ));
        }
        // An id is an app or a group, not both (checked for what this change names).
        for a in &changes.puts {
            if all_groups.contains(&a.id) {
                return Err(invalid("/id", format!("{} is a group, not an app", a.id)));
            }
            if let Some(up) = group::ancestors(&a.id)
                .into_iter()
                .find(|g| apps.contains_key(g))
            {
                return Err(invalid(
                    "/id",
                    format!("{up} is an app: {} cannot be inside it", a.id),
                ));
            }
        }
        for (g, _) in &changes.groups {
            if let Some(clash) = std::iter::once(g.clone())
                .chain(group::ancestors(g))
                .find(|x| apps.contains_key(x))
            {
                return Err(invalid("/id", format!("{clash} is an app, not a group")));
            }
        }
        let mut affected: BTreeSet<String> = changes.puts.iter().map(|a| a.id.clone()).collect();
        affected.extend(changes.removes.iter().cloned());
        affected.extend(changes.scales.iter().map(|(a, _)| a.clone()));
        affected.extend(changes.restarts.iter().cloned());
        let locked: Vec<String> = self
            .deployments
            .iter()
            .filter(|d| affected.iter().any(|a| d.affects(a)))
            .map(|d| d.id.clone())
            .collect();
        if !locked.is_empty() {
            if !force {
                self.emit(
                    "group_change_failed",
                    json!({ "groupId": group, "version": version, "reason": ServicesError::Locked(locked.clone()).to_string() }),
                    now,
                );
                return Err(ServicesError::Locked(locked));
            }
            for id in locked {
                self.force_out(&id, &affected, "overridden by a forced change", now);
            }
        }

        // Service ports: each put keeps the ports its app had, new ones come from the range,
        // none is another app's.
        crate::ports::assign_all(
            &mut changes.puts,
            self.apps.values().map(|st| &st.app),
            &changes.removes,
            self.service_ports,
        )
        .map_err(|(_, e)| ServicesError::Invalid(e))?;

        // Checked: from here on nothing fails.
        for g in &changes.groups_removed {
            self.groups
                .retain(|k, _| k == "/" || !group::is_within(k, g));
        }
        let mut touched: Vec<String> = vec![group.to_string()];
        for (g, deps) in &changes.groups {
            let e = self.groups.entry(g.clone()).or_default();
            if let Some(d) = deps {
                e.dependencies.clone_from(d);
            }
            touched.push(g.clone());
        }
        for a in &changes.puts {
            touched.push(group::parent(&a.id));
        }
        self.touch_groups(&touched, &version);

        let mut actions: BTreeMap<String, &'static str> = BTreeMap::new();
        let mut previous_apps = BTreeMap::new();
        for a in changes.puts {
            let id = a.id.clone();
            let before = self
                .apps
                .get(&id)
                .or_else(|| self.retiring.get(&id).map(|r| &r.state))
                .map(|st| st.app.clone());
            previous_apps.insert(id.clone(), before);
            if let Some(action) = self.upsert(a, changes.always, &version) {
                actions.insert(id, action);
            }
        }
        for (id, n) in changes.scales {
            let Some(st) = self.apps.get_mut(&id) else {
                continue;
            };
            previous_apps.insert(id.clone(), Some(st.app.clone()));
            if st.app.instances != n {
                st.app.instances = n;
                st.version.clone_from(&version);
                super::push_version(st, &version);
                actions.insert(id, "ScaleApplication");
            }
        }
        for id in changes.restarts {
            let Some(st) = self.apps.get_mut(&id) else {
                continue;
            };
            previous_apps.insert(id.clone(), Some(st.app.clone()));
            st.version.clone_from(&version);
            st.config_version.clone_from(&version);
            st.delay_seconds = 0.0;
            st.next_launch_at = None;
            // Marathon keeps every version, a restart's too: `GET …/versions/{v}` finds it.
            super::push_version(st, &version);
            actions.insert(id, "RestartApplication");
        }
        let mut stops = BTreeSet::new();
        for id in changes.removes {
            if let Some(st) = self.apps.remove(&id) {
                previous_apps.insert(id.clone(), Some(st.app.clone()));
                self.retiring.insert(
                    id.clone(),
                    Retiring {
                        state: st,
                        killed_at: None,
                    },
                );
                stops.insert(id);
            }
        }

        // Stops: dependents first (the order of the state before); then the rest, dependencies
        // first (the order of the state after).
        let before_levels =
            before_levels.unwrap_or_else(|_| vec![before_apps.keys().cloned().collect()]);
        let mut steps: Vec<Vec<Action>> = group::steps_for(&before_levels, &stops)
            .into_iter()
            .rev()
            .map(|l| {
                l.into_iter()
                    .map(|app| Action {
                        action: "StopApplication".into(),
                        app,
                    })
                    .collect()
            })
            .collect();
        let changed: BTreeSet<String> = actions.keys().cloned().collect();
        for l in group::steps_for(&levels, &changed) {
            steps.push(
                l.into_iter()
                    .map(|app| Action {
                        action: actions
                            .get(&app)
                            .copied()
                            .unwrap_or("ScaleApplication")
                            .into(),
                        app,
                    })
                    .collect(),
            );
        }
        let id = uuid::Uuid::new_v4().to_string();
        self.deployments.push(Deployment {
            id: id.clone(),
            version: version.clone(),
            steps,
            current: 0,
            started_at: now,
            previous_apps,
            group: group.to_string(),
        });
        self.emit(
            "group_change_success",
            json!({ "groupId": group, "version": version }),
            now,
        );
        let idx = self.deployments.len() - 1;
        let effects = self.begin_step(idx, now);
        self.deferred.extend(effects);
        Ok((id, version))
    }

    /// Creates or replaces an app's config; the action its plan takes (`None`: unchanged and not
    /// `always`). An app being stopped comes back with its tasks.
    fn upsert(&mut self, app: App, always: bool, version: &str) -> Option<&'static str> {
        let id = app.id.clone();
        let revived = match self.retiring.remove(&id) {
            Some(r) => {
                self.apps.insert(id.clone(), r.state);
                true
            }
            None => false,
        };
        match self.apps.get_mut(&id) {
            Some(st) => {
                let action = if only_instances_differ(&st.app, &app) {
                    if st.app.instances == app.instances && !always && !revived {
                        return None;
                    }
                    "ScaleApplication"
                } else {
                    "RestartApplication"
                };
                if action != "ScaleApplication" {
                    st.config_version = version.to_string();
                    // A new config starts with no launch delay (Marathon resets backoff).
                    st.delay_seconds = 0.0;
                    st.next_launch_at = None;
                }
                st.version = version.to_string();
                st.app = app;
                super::push_version(st, version);
                Some(action)
            }
            None => {
                self.apps.insert(
                    id,
                    AppState {
                        app: app.clone(),
                        version: version.to_string(),
                        config_version: version.to_string(),
                        versions: vec![(version.to_string(), app)],
                        tasks: BTreeMap::new(),
                        delay_seconds: 0.0,
                        next_launch_at: None,
                        last_task_failure: None,
                        offer_stats: crate::offer_stats::OfferStats::default(),
                    },
                );
                Some("StartApplication")
            }
        }
    }

    /// A new version for each group in `ids` and every group around it (Marathon versions the
    /// whole tree on a change).
    fn touch_groups(&mut self, ids: &[String], version: &str) {
        let mut all: BTreeSet<String> = BTreeSet::new();
        for id in ids {
            all.extend(group::ancestors(id));
            all.insert(id.clone());
        }
        for g in all {
            let r = self.groups.entry(g).or_default();
            if r.version != version {
                r.version = version.to_string();
                r.versions.push(version.to_string());
                if r.versions.len() > super::VERSIONS_KEPT {
                    r.versions.remove(0);
                }
            }
        }
    }

    /// The step `idx`'s plan is now at begins: `deployment_info`; its stops kill.
    fn begin_step(&mut self, idx: usize, now: DateTime<Utc>) -> Vec<Effect> {
        let Some(d) = self.deployments.get(idx) else {
            return Vec::new();
        };
        let actions = d.current_actions().to_vec();
        if actions.is_empty() {
            return Vec::new();
        }
        let plan = d.plan_json(self);
        self.emit(
            "deployment_info",
            json!({ "plan": plan, "currentStep": { "actions": actions } }),
            now,
        );
        let mut effects = Vec::new();
        for a in actions.iter().filter(|a| a.action == "StopApplication") {
            effects.extend(self.kill_retiring(&a.app, now));
        }
        effects
    }

    fn kill_retiring(&mut self, app: &str, now: DateTime<Utc>) -> Vec<Effect> {
        let Some(r) = self.retiring.get_mut(app) else {
            return Vec::new();
        };
        r.killed_at = Some(now);
        let mut effects = Vec::new();
        for t in r.state.tasks.values_mut() {
            if !agora_proto::is_terminal_name(&t.state) {
                t.killing = true;
                effects.push(Effect::Kill(t.id.clone()));
            }
        }
        effects
    }

    /// Whether an action of a step in progress is done (a stop that is: its app forgotten,
    /// `app_terminated_event`; one that waits long: its kills sent again).
    fn action_done(&mut self, a: &Action, now: DateTime<Utc>, effects: &mut Vec<Effect>) -> bool {
        if a.action == "StopApplication" {
            let Some(r) = self.retiring.get(&a.app) else {
                return true;
            };
            let running =
                r.state.tasks.values().any(|t| {
                    !agora_proto::is_terminal_name(&t.state) && t.state != "TASK_UNREACHABLE"
                });
            if running {
                if r.killed_at
                    .is_none_or(|k| (now - k).num_seconds() >= KILL_AGAIN_SECS)
                {
                    effects.extend(self.kill_retiring(&a.app, now));
                }
                return false;
            }
            self.retiring.remove(&a.app);
            self.emit("app_terminated_event", json!({ "appId": a.app }), now);
            return true;
        }
        self.apps.get(&a.app).is_none_or(Self::is_stable)
    }

    /// Moves every plan on as far as its steps are done.
    pub(super) fn advance(&mut self, now: DateTime<Utc>) -> Vec<Effect> {
        let mut effects = Vec::new();
        let mut i = 0;
        'plans: while i < self.deployments.len() {
            loop {
                let d = &self.deployments[i];
                if d.current >= d.steps.len() {
                    let d = self.deployments.remove(i);
                    let plan = d.plan_json(self);
                    self.emit(
                        "deployment_success",
                        json!({ "id": d.id, "plan": plan }),
                        now,
                    );
                    continue 'plans;
                }
                let step = d.steps[d.current].clone();
                let mut done = true;
                for a in &step {
                    done &= self.action_done(a, now, &mut effects);
                }
                if !done {
                    break;
                }
                let plan = self.deployments[i].plan_json(self);
                self.emit(
                    "deployment_step_success",
                    json!({ "plan": plan, "currentStep": { "actions": step } }),
                    now,
                );
                self.deployments[i].current += 1;
                effects.extend(self.begin_step(i, now));
            }
            i += 1;
        }
        effects
    }

    /// Ends a plan without rolling back (`deployment_failed`): what it was stopping is killed at
    /// once and forgotten, except the apps in `keep` (a forced change takes them over).
    pub(super) fn force_out(
        &mut self,
        id: &str,
        keep: &BTreeSet<String>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Option<Deployment> {
        let pos = self.deployments.iter().position(|d| d.id == id)?;
        let d = self.deployments.remove(pos);
        let plan = d.plan_json(self);
        let step = d.current_actions().to_vec();
        self.emit(
            "deployment_step_failure",
            json!({ "plan": plan, "currentStep": { "actions": step } }),
            now,
        );
        self.emit(
            "deployment_failed",
            json!({ "id": d.id, "plan": plan, "reason": reason }),
            now,
        );
        for a in d.steps.iter().flatten() {
            if a.action == "StopApplication" && !keep.contains(&a.app) {
                let kills = self.kill_retiring(&a.app, now);
                self.deferred.extend(kills);
                if self.retiring.remove(&a.app).is_some() {
                    self.emit("app_terminated_event", json!({ "appId": a.app }), now);
                }
            }
        }
        Some(d)
    }
}
