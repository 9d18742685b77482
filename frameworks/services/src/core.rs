//! The services framework's core: desired apps versus running tasks. Pure and synchronous — the
//! driver passes the time in, offers in, task updates in, and carries out the launches and kills
//! the core returns.
//!
//! Per app it keeps the desired count with Marathon's rules: scale up and down (`killSelection`),
//! replace failed, lost and unreachable tasks with a growing launch backoff (not for kills), and
//! roll a new config out honouring `upgradeStrategy`:
//! `minHealthy = ceil(instances × minimumHealthCapacity)`,
//! `maxCapacity = floor(instances × (1 + maximumOverCapacity))` (one more when they are equal);
//! old tasks are killed only while at least `minHealthy` tasks stay healthy.

use std::collections::BTreeMap;

use agora_proto::v1;
use agora_sdk::{carve, TaskNeeds};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::app::{App, FieldError};
use agora_framework::constraints::{field_value, Constraint};

/// How many versions of an app are kept.
pub const VERSIONS_KEPT: usize = 50;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    pub id: String,
    pub app_id: String,
    /// The config version it was launched with.
    pub version: String,
    pub agent_id: String,
    pub host: String,
    pub ports: Vec<u64>,
    /// Hostname and attributes of its agent, for constraints.
    pub fields: BTreeMap<String, String>,
    pub state: String,
    pub healthy: Option<bool>,
    pub staged_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub message: String,
    /// A kill was asked for (by a scale down, an upgrade, or a user).
    pub killing: bool,
    /// When its agent became unreachable.
    #[serde(default)]
    pub unreachable_since: Option<DateTime<Utc>>,
    /// Unreachable for longer than the app's `inactiveAfterSeconds`: replaced.
    #[serde(default)]
    pub inactive: bool,
}

impl TaskRecord {
    /// Counts towards the app's instances.
    pub fn live(&self) -> bool {
        !agora_proto::is_terminal_name(&self.state)
            && !(self.state == "TASK_UNREACHABLE" && self.inactive)
            && !self.killing
    }

    fn healthy_for(&self, app: &App) -> bool {
        self.state == "TASK_RUNNING" && (app.health_checks.is_empty() || self.healthy == Some(true))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppState {
    pub app: App,
    /// Changes on any change (scale included).
    pub version: String,
    /// Changes when the config changes (tasks of older config versions are replaced).
    pub config_version: String,
    pub versions: Vec<(String, App)>,
    pub tasks: BTreeMap<String, TaskRecord>,
    pub delay_seconds: f64,
    pub next_launch_at: Option<DateTime<Utc>>,
    pub last_task_failure: Option<Value>,
    /// Why the last offer did not fit (for `/v2/queue`).
    pub last_offer_problem: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: String,
    pub version: String,
    pub app_id: String,
    /// `StartApplication`, `ScaleApplication`, `RestartApplication`, `StopApplication`.
    pub action: String,
    pub started_at: DateTime<Utc>,
    /// The app before the deployment (to roll back to); `None` for a new app.
    pub previous: Option<App>,
}

/// A launch the driver must make: the task and the offer it goes on.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub offer_id: String,
    pub task: v1::TaskInfo,
}

/// Something the driver must do besides launching.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Kill(String),
}

/// Why a request was refused; maps onto Marathon's status codes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServicesError {
    #[error("Object is not valid")]
    Invalid(Vec<FieldError>),
    #[error("App '{0}' does not exist")]
    UnknownApp(String),
    #[error("An app with id [{0}] already exists.")]
    Exists(String),
    #[error("App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'.")]
    Locked(Vec<String>),
    #[error("DeploymentPlan {0} does not exist")]
    UnknownDeployment(String),
    #[error("Task '{0}' does not exist")]
    UnknownTask(String),
    #[error("App '{0}' does not exist in version {1}")]
    UnknownVersion(String, String),
}

/// See the module documentation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServicesCore {
    pub framework_id: Option<String>,
    apps: BTreeMap<String, AppState>,
    deployments: Vec<Deployment>,
    /// Events for `/v2/events`, drained by the driver.
    #[serde(skip)]
    events: Vec<(String, Value)>,
    #[serde(skip)]
    deferred: Vec<Effect>,
}

/// Keeps `(version, app)` in the app's history, the oldest dropped past [`VERSIONS_KEPT`].
fn push_version(st: &mut AppState, version: &str) {
    st.versions.push((version.to_string(), st.app.clone()));
    if st.versions.len() > VERSIONS_KEPT {
        st.versions.remove(0);
    }
}

/// A version as Marathon writes it: RFC 3339 in UTC with milliseconds and `Z`.
pub fn version_of(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Marathon task ids: the app id with `/` → `_`, a dot, and a unique suffix.
pub fn task_id_for(app_id: &str) -> String {
    format!(
        "{}.{}",
        app_id.trim_start_matches('/').replace('/', "_"),
        uuid::Uuid::new_v4()
    )
}

impl ServicesCore {
    pub fn apps(&self) -> impl Iterator<Item = &AppState> {
        self.apps.values()
    }

    pub fn app(&self, id: &str) -> Option<&AppState> {
        self.apps.get(id)
    }

    pub fn deployments(&self) -> &[Deployment] {
        &self.deployments
    }

    pub fn take_events(&mut self) -> Vec<(String, Value)> {
        std::mem::take(&mut self.events)
    }

    pub fn take_deferred(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.deferred)
    }

    fn emit(&mut self, kind: &str, mut body: Value, now: DateTime<Utc>) {
        if let Value::Object(m) = &mut body {
            m.insert("eventType".into(), json!(kind));
            m.insert("timestamp".into(), json!(version_of(now)));
        }
        self.events.push((kind.to_string(), body));
    }

    fn deployments_of(&self, app_id: &str) -> Vec<String> {
        self.deployments
            .iter()
            .filter(|d| d.app_id == app_id)
            .map(|d| d.id.clone())
            .collect()
    }

    fn lock(&mut self, app_id: &str, force: bool) -> Result<Option<App>, ServicesError> {
        let locked = self.deployments_of(app_id);
        if !locked.is_empty() {
            if !force {
                return Err(ServicesError::Locked(locked));
            }
            self.deployments.retain(|d| d.app_id != app_id);
        }
        Ok(self.apps.get(app_id).map(|a| a.app.clone()))
    }

    fn deploy(
        &mut self,
        app_id: &str,
        action: &str,
        previous: Option<App>,
        now: DateTime<Utc>,
    ) -> (String, String) {
        let id = uuid::Uuid::new_v4().to_string();
        let version = self
            .apps
            .get(app_id)
            .map(|a| a.version.clone())
            .unwrap_or_else(|| version_of(now));
        self.deployments.push(Deployment {
            id: id.clone(),
            version: version.clone(),
            app_id: app_id.to_string(),
            action: action.to_string(),
            started_at: now,
            previous,
        });
        self.emit(
            "deployment_info",
            json!({ "plan": { "id": id, "version": version }, "currentStep": { "actions": [{ "action": action, "app": app_id }] } }),
            now,
        );
        (id, version)
    }

    /// Creates or replaces an app (`create`: refuse an existing id). Returns (deployment id,
    /// version).
    ///
    /// # Errors
    /// [`ServicesError::Invalid`], [`ServicesError::Exists`], [`ServicesError::Locked`].
    pub fn put_app(
        &mut self,
        mut app: App,
        create: bool,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<(String, String), ServicesError> {
        app.normalize();
        app.version = None;
        app.validate().map_err(ServicesError::Invalid)?;
        if create && self.apps.contains_key(&app.id) {
            return Err(ServicesError::Exists(app.id));
        }
        let previous = self.lock(&app.id, force)?;
        let version = version_of(now);
        let id = app.id.clone();
        let action = match &previous {
            None => "StartApplication",
            Some(p) if only_instances_differ(p, &app) => "ScaleApplication",
            Some(_) => "RestartApplication",
        };
        match self.apps.get_mut(&id) {
            Some(st) => {
                if action != "ScaleApplication" {
                    st.config_version = version.clone();
                    // A new config starts with no launch delay (Marathon resets backoff).
                    st.delay_seconds = 0.0;
                    st.next_launch_at = None;
                }
                st.version = version.clone();
                st.app = app;
                push_version(st, &version);
            }
            None => {
                self.apps.insert(
                    id.clone(),
                    AppState {
                        app: app.clone(),
                        version: version.clone(),
                        config_version: version.clone(),
                        versions: vec![(version.clone(), app)],
                        tasks: BTreeMap::new(),
                        delay_seconds: 0.0,
                        next_launch_at: None,
                        last_task_failure: None,
                        last_offer_problem: String::new(),
                    },
                );
            }
        }
        self.emit(
            "api_post_event",
            json!({ "appDefinition": { "id": id } }),
            now,
        );
        Ok(self.deploy(&id, action, previous, now))
    }

    /// Restarts an app: a new config version replaces every task, rolling.
    ///
    /// # Errors
    /// [`ServicesError::UnknownApp`], [`ServicesError::Locked`].
    pub fn restart(
        &mut self,
        id: &str,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<(String, String), ServicesError> {
        if !self.apps.contains_key(id) {
            return Err(ServicesError::UnknownApp(id.into()));
        }
        let previous = self.lock(id, force)?;
        let version = version_of(now);
        if let Some(st) = self.apps.get_mut(id) {
            st.version = version.clone();
            st.config_version = version.clone();
            st.delay_seconds = 0.0;
            st.next_launch_at = None;
            // Marathon keeps every version, a restart's too: `GET …/versions/{v}` finds it.
            push_version(st, &version);
        }
        Ok(self.deploy(id, "RestartApplication", previous, now))
    }

    /// The app as it was at `version` (`GET /v2/apps/{id}/versions/{version}`).
    ///
    /// # Errors
    /// [`ServicesError::UnknownApp`], [`ServicesError::UnknownVersion`].
    pub fn app_version(&self, id: &str, version: &str) -> Result<&App, ServicesError> {
        let st = self
            .apps
            .get(id)
            .ok_or_else(|| ServicesError::UnknownApp(id.into()))?;
        st.versions
            .iter()
            .find(|(v, _)| v == version)
            .map(|(_, a)| a)
            .ok_or_else(|| ServicesError::UnknownVersion(id.into(), version.into()))
    }

    /// Rolls an app back to a stored version (`PUT /v2/apps/{id}` with `{"version": …}`): that
    /// definition becomes a new version, deployed like any change. Returns (deployment id,
    /// version).
    ///
    /// # Errors
    /// [`ServicesError::UnknownApp`], [`ServicesError::UnknownVersion`],
    /// [`ServicesError::Locked`].
    pub fn rollback(
        &mut self,
        id: &str,
        version: &str,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<(String, String), ServicesError> {
        let app = self.app_version(id, version)?.clone();
        self.put_app(app, false, force, now)
    }

    /// Deletes an app: all its tasks are killed.
    ///
    /// # Errors
    /// [`ServicesError::UnknownApp`], [`ServicesError::Locked`].
    pub fn delete_app(
        &mut self,
        id: &str,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<(String, String), ServicesError> {
        if !self.apps.contains_key(id) {
            return Err(ServicesError::UnknownApp(id.into()));
        }
        let previous = self.lock(id, force)?;
        let Some(st) = self.apps.remove(id) else {
            return Err(ServicesError::UnknownApp(id.into()));
        };
        for t in st
            .tasks
            .values()
            .filter(|t| !agora_proto::is_terminal_name(&t.state))
        {
            self.deferred.push(Effect::Kill(t.id.clone()));
        }
        self.emit("app_terminated_event", json!({ "appId": id }), now);
        let (dep, version) = self.deploy(id, "StopApplication", previous, now);
        // Nothing to wait for once the kills are sent.
        self.deployments.retain(|d| d.id != dep);
        Ok((dep, version))
    }

    /// Kills tasks (Marathon `DELETE /v2/apps/{id}/tasks[/{task}]`, `POST /v2/tasks/delete`
    /// without `scale`): the app keeps its instance count, so each is replaced. Returns the tasks
    /// found; unknown ids are skipped (the callers decide whether that is a 404).
    pub fn kill_tasks(&mut self, ids: &[String]) -> Vec<TaskRecord> {
        let mut found = Vec::new();
        for id in ids {
            let Some(t) = self.apps.values().find_map(|a| a.tasks.get(id)) else {
                continue;
            };
            found.push(t.clone());
            self.deferred.push(Effect::Kill(id.clone()));
        }
        found
    }

    /// Kills tasks and scales their apps down by as many (Marathon's `scale=true`): each app
    /// loses one instance per killed task that counted towards it (running or starting and not
    /// already being killed), never going below 0, as a new version deployed with a
    /// `ScaleApplication` deployment. All or nothing: a locked app (without `force`) refuses the
    /// whole call. Returns the (deployment id, version) of the first app changed, `None` when
    /// no id named a known task.
    ///
    /// # Errors
    /// [`ServicesError::Locked`].
    pub fn kill_and_scale(
        &mut self,
        ids: &[String],
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<(String, String)>, ServicesError> {
        let mut by_app: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for id in ids {
            if let Some(st) = self.apps.values().find(|a| a.tasks.contains_key(id)) {
                let list = by_app.entry(st.app.id.clone()).or_default();
                if !list.contains(id) {
                    list.push(id.clone());
                }
            }
        }
        if !force {
            let locked: Vec<String> = by_app
                .keys()
                .flat_map(|app| self.deployments_of(app))
                .collect();
            if !locked.is_empty() {
                return Err(ServicesError::Locked(locked));
            }
        }
        let version = version_of(now);
        let mut first = None;
        for (app_id, tasks) in by_app {
            let previous = self.lock(&app_id, force)?;
            let Some(st) = self.apps.get_mut(&app_id) else {
                continue;
            };
            let mut counted = 0u32;
            for id in &tasks {
                if let Some(t) = st.tasks.get_mut(id) {
                    if t.live() {
                        counted = counted.saturating_add(1);
                    }
                    t.killing = true;
                }
                self.deferred.push(Effect::Kill(id.clone()));
            }
            st.app.instances = st.app.instances.saturating_sub(counted);
            st.version = version.clone();
            push_version(st, &version);
            let d = self.deploy(&app_id, "ScaleApplication", previous, now);
            first.get_or_insert(d);
        }
        Ok(first)
    }

    /// Cancels a deployment: `force` only forgets it (202); otherwise rolls back to the app as it
    /// was before (a new deployment, 200).
    ///
    /// # Errors
    /// [`ServicesError::UnknownDeployment`].
    pub fn cancel_deployment(
        &mut self,
        id: &str,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<(String, String)>, ServicesError> {
        let Some(pos) = self.deployments.iter().position(|d| d.id == id) else {
            return Err(ServicesError::UnknownDeployment(id.into()));
        };
        let d = self.deployments.remove(pos);
        if force {
            return Ok(None);
        }
        match d.previous {
            Some(prev) => self.put_app(prev, false, true, now).map(Some),
            None => self.delete_app(&d.app_id, true, now).map(Some),
        }
    }

    /// A task's new status.
    pub fn on_update(&mut self, status: &v1::TaskStatus, now: DateTime<Utc>) -> Vec<Effect> {
        let state = status.state().as_str_name().to_string();
        let Some(st) = self
            .apps
            .values_mut()
            .find(|a| a.tasks.contains_key(&status.task_id))
        else {
            // Not ours any more (its app was deleted): report it, and make sure it is gone.
            let app_id = format!(
                "/{}",
                status
                    .task_id
                    .rsplit_once('.')
                    .map_or("", |(a, _)| a)
                    .replace('_', "/")
            );
            self.emit(
                "status_update_event",
                json!({ "appId": app_id, "taskId": status.task_id, "taskStatus": state,
                        "message": status.message, "slaveId": status.agent_id }),
                now,
            );
            return if agora_proto::is_terminal_name(&state) {
                Vec::new()
            } else {
                vec![Effect::Kill(status.task_id.clone())]
            };
        };
        let app_id = st.app.id.clone();
        let Some(t) = st.tasks.get_mut(&status.task_id) else {
            return Vec::new();
        };
        let was_healthy = t.healthy;
        t.state = state.clone();
        if status.healthy.is_some() {
            t.healthy = status.healthy;
        }
        if !status.message.is_empty() {
            t.message = status.message.clone();
        }
        if state == "TASK_RUNNING" && t.started_at.is_none() {
            t.started_at = Some(now);
        }
        if state == "TASK_UNREACHABLE" {
            t.unreachable_since.get_or_insert(now);
        } else {
            t.unreachable_since = None;
            t.inactive = false;
        }
        let task_id = t.id.clone();
        let (host, slave_id) = (t.host.clone(), t.agent_id.clone());
        let healthy = t.healthy;
        let killed_by_us = t.killing;
        if agora_proto::is_terminal_name(&state) {
            st.tasks.remove(&status.task_id);
            let failure = matches!(
                state.as_str(),
                "TASK_FAILED" | "TASK_FINISHED" | "TASK_ERROR"
            );
            if failure {
                // Marathon's backoff: grows on failures, not on kills.
                st.delay_seconds = next_delay(st.delay_seconds, &st.app);
                st.next_launch_at = Some(after_seconds(now, st.delay_seconds));
                st.last_task_failure = Some(json!({
                    "appId": app_id, "taskId": task_id, "state": state, "message": status.message,
                    "host": host, "slaveId": slave_id, "timestamp": version_of(now), "version": st.version,
                }));
            } else if !killed_by_us && state != "TASK_KILLED" {
                st.last_task_failure = Some(json!({
                    "appId": app_id, "taskId": task_id, "state": state, "message": status.message,
                    "host": host, "slaveId": slave_id, "timestamp": version_of(now), "version": st.version,
                }));
            }
        }
        self.emit(
            "status_update_event",
            json!({ "appId": app_id, "taskId": task_id, "taskStatus": state, "message": status.message, "slaveId": status.agent_id }),
            now,
        );
        if healthy != was_healthy && healthy.is_some() {
            self.emit(
                "health_status_changed_event",
                json!({ "appId": app_id, "taskId": task_id, "alive": healthy }),
                now,
            );
        }
        self.plan(now)
    }

    fn is_stable(st: &AppState) -> bool {
        let live: Vec<&TaskRecord> = st.tasks.values().filter(|t| t.live()).collect();
        live.len() == instances(&st.app)
            && live
                .iter()
                .all(|t| t.version == st.config_version && t.healthy_for(&st.app))
    }

    /// Kills what must go (scale down, upgrade progress, surplus after a partition heals) and
    /// finishes deployments that reached their goal. Launches are made from offers
    /// ([`ServicesCore::launches_for`]).
    pub fn plan(&mut self, now: DateTime<Utc>) -> Vec<Effect> {
        let mut effects = Vec::new();
        let ids: Vec<String> = self.apps.keys().cloned().collect();
        for id in ids {
            let Some(st) = self.apps.get_mut(&id) else {
                continue;
            };
            let app = st.app.clone();
            if let crate::app::UnreachableStrategy::Enabled {
                inactive_after_seconds,
                expunge_after_seconds,
            } = app.unreachable_strategy
            {
                let mut expunged = Vec::new();
                for t in st.tasks.values_mut() {
                    let Some(since) = t.unreachable_since else {
                        continue;
                    };
                    let gone = (now - since).num_milliseconds() as f64 / 1000.0;
                    t.inactive = gone >= inactive_after_seconds;
                    if gone >= expunge_after_seconds && gone > 0.0 {
                        expunged.push(t.id.clone());
                    }
                }
                for id in expunged {
                    // Forgotten: if its agent comes back, the update for an unknown task kills it.
                    st.tasks.remove(&id);
                }
            }
            let n = instances(&app);
            let cv = st.config_version.clone();
            // References, not copies: plan runs on every API call and tick, over every task.
            let mut live: Vec<&TaskRecord> = st.tasks.values().filter(|t| t.live()).collect();
            live.sort_by_key(|t| t.staged_at);
            let (old, new): (Vec<&TaskRecord>, Vec<&TaskRecord>) =
                live.into_iter().partition(|t| t.version != cv);
            let mut kill: Vec<String> = Vec::new();
            if old.is_empty() {
                if new.len() > n {
                    let surplus = new.len() - n;
                    let victims: Vec<&&TaskRecord> = if app.kill_selection == "OLDEST_FIRST" {
                        new.iter().take(surplus).collect()
                    } else {
                        new.iter().rev().take(surplus).collect()
                    };
                    kill.extend(victims.iter().map(|t| t.id.clone()));
                }
            } else {
                let healthy = old
                    .iter()
                    .chain(new.iter())
                    .filter(|t| t.healthy_for(&app))
                    .count();
                let (min_healthy, _) = upgrade_bounds(n, &app);
                let killable = healthy.saturating_sub(min_healthy).min(old.len());
                // Kill the oldest old tasks first; unhealthy old ones never count as capacity.
                let mut candidates = old.clone();
                candidates.sort_by_key(|t| (t.healthy_for(&app), t.staged_at));
                let unhealthy_old = candidates.iter().filter(|t| !t.healthy_for(&app)).count();
                let count = (killable + unhealthy_old).min(old.len());
                // Never go below min healthy counting unhealthy old ones as free to kill.
                kill.extend(candidates.iter().take(count).map(|t| t.id.clone()));
            }
            for k in &kill {
                if let Some(t) = st.tasks.get_mut(k) {
                    t.killing = true;
                }
                effects.push(Effect::Kill(k.clone()));
            }
            if Self::is_stable(st) {
                let done: Vec<Deployment> = self
                    .deployments
                    .iter()
                    .filter(|d| d.app_id == id)
                    .cloned()
                    .collect();
                self.deployments.retain(|d| d.app_id != id);
                for d in done {
                    self.emit(
                        "deployment_success",
                        json!({ "id": d.id, "plan": { "id": d.id, "version": d.version } }),
                        now,
                    );
                }
            }
        }
        effects
    }

    /// Tasks an app still needs now (0 while its launch delay runs or its dependencies are not
    /// stable).
    pub fn wanted(&self, st: &AppState, now: DateTime<Utc>) -> usize {
        if st.next_launch_at.is_some_and(|t| t > now) {
            return 0;
        }
        let deps_ready = st.app.dependencies.iter().all(|d| {
            let d = crate::app::normalize_id(d);
            self.apps.get(&d).is_none_or(Self::is_stable)
        });
        if !deps_ready {
            return 0;
        }
        let app = &st.app;
        let n = instances(app);
        let live: Vec<&TaskRecord> = st.tasks.values().filter(|t| t.live()).collect();
        let new = live
            .iter()
            .filter(|t| t.version == st.config_version)
            .count();
        let old = live.len() - new;
        if old == 0 {
            return n.saturating_sub(new);
        }
        let (_, max_capacity) = upgrade_bounds(n, app);
        n.saturating_sub(new)
            .min(max_capacity.saturating_sub(live.len()))
    }

    /// Whether any app needs offers now.
    pub fn wants_offers(&self, now: DateTime<Utc>) -> bool {
        self.apps.values().any(|st| self.wanted(st, now) > 0)
    }

    /// The launches an offer can take, recorded as STAGING tasks.
    pub fn launches_for(&mut self, offer: &v1::Offer, now: DateTime<Utc>) -> Vec<Launch> {
        let Ok(mut left) = agora_proto::Resources::from_proto(&offer.resources) else {
            return Vec::new();
        };
        let mut fields: BTreeMap<String, String> = offer
            .attributes
            .iter()
            .map(|a| (a.name.clone(), a.text.clone()))
            .collect();
        fields.insert("hostname".into(), offer.hostname.clone());
        let mut out = Vec::new();
        let ids: Vec<String> = self.apps.keys().cloned().collect();
        for id in ids {
            let Some(st) = self.apps.get(&id) else {
                continue;
            };
            let mut want = self.wanted(st, now);
            let app = st.app.clone();
            let constraints: Vec<Constraint> = app
                .constraints
                .iter()
                .filter_map(|c| Constraint::parse(c).ok())
                .collect();
            let mut problem = String::new();
            while want > 0 {
                let Some(st) = self.apps.get(&id) else { break };
                let placed_tasks: Vec<&TaskRecord> =
                    st.tasks.values().filter(|t| t.live()).collect();
                let blocked = constraints.iter().find(|c| {
                    let value = field_value(&c.field, &offer.hostname, &offer.attributes);
                    let placed: Vec<Option<String>> = placed_tasks
                        .iter()
                        .map(|t| t.fields.get(&c.field).cloned())
                        .collect();
                    !c.allows(value.as_deref(), &placed)
                });
                if let Some(c) = blocked {
                    problem = format!(
                        "constraint [{}, {:?}] is not met by agent {}",
                        c.field, c.op, offer.hostname
                    );
                    break;
                }
                let fixed: Vec<u64> = if app.require_ports && !app.bridged() {
                    app.port_definitions
                        .iter()
                        .filter(|p| p.port != 0)
                        .map(|p| u64::from(p.port))
                        .collect()
                } else {
                    app.container
                        .as_ref()
                        .map(|c| {
                            c.port_mappings
                                .iter()
                                .filter(|p| app.bridged() && p.host_port != 0)
                                .map(|p| u64::from(p.host_port))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let needs = TaskNeeds {
                    scalars: agora_proto::Resources::parse(&format!(
                        "cpus:{};mem:{};disk:{}",
                        app.cpus, app.mem, app.disk
                    ))
                    .unwrap_or_default(),
                    any_ports: app.host_ports().saturating_sub(fixed.len()),
                    fixed_ports: fixed,
                };
                let Some(carved) = carve(&mut left, &needs) else {
                    problem = format!(
                        "offer from {} is too small: the app needs cpus {}, mem {}, disk {} and {} port(s)",
                        offer.hostname, app.cpus, app.mem, app.disk, app.host_ports()
                    );
                    break;
                };
                let task_id = task_id_for(&id);
                let task =
                    crate::launch::task_info(&app, &task_id, &st.config_version, &carved, offer);
                let record = TaskRecord {
                    id: task_id.clone(),
                    app_id: id.clone(),
                    version: st.config_version.clone(),
                    agent_id: offer.agent_id.clone(),
                    host: offer.hostname.clone(),
                    ports: carved.ports.clone(),
                    fields: fields.clone(),
                    state: "TASK_STAGING".into(),
                    healthy: None,
                    staged_at: now,
                    started_at: None,
                    message: String::new(),
                    killing: false,
                    unreachable_since: None,
                    inactive: false,
                };
                if let Some(st) = self.apps.get_mut(&id) {
                    st.tasks.insert(task_id, record);
                }
                out.push(Launch {
                    offer_id: offer.id.clone(),
                    task,
                });
                want -= 1;
            }
            if let Some(st) = self.apps.get_mut(&id) {
                st.last_offer_problem = problem;
            }
        }
        out
    }

    /// A launch the master refused: the task is forgotten (and relaunched on a later offer).
    pub fn launch_failed(&mut self, task_id: &str) {
        for st in self.apps.values_mut() {
            st.tasks.remove(task_id);
        }
    }

    /// Tasks to reconcile after a (re-)subscription.
    pub fn live_tasks(&self) -> Vec<(String, String)> {
        self.apps
            .values()
            .flat_map(|a| a.tasks.values())
            .filter(|t| !agora_proto::is_terminal_name(&t.state))
            .map(|t| (t.id.clone(), t.agent_id.clone()))
            .collect()
    }
}

/// The launch delay after one more failure: `backoffSeconds` first, then `× backoffFactor` up to
/// `maxLaunchDelaySeconds`. Every input is clamped (to at most a year; NaN is 0 or 1) so that an app
/// saved by an older version with `backoffSeconds: 1e300` cannot overflow the time arithmetic.
pub fn next_delay(current: f64, app: &App) -> f64 {
    use crate::app::limits::clamp_seconds;
    let current = clamp_seconds(current);
    let factor = if app.backoff_factor.is_finite() {
        app.backoff_factor
            .clamp(1.0, crate::app::limits::MAX_BACKOFF_FACTOR)
    } else {
        1.0
    };
    let next = if current == 0.0 {
        clamp_seconds(app.backoff_seconds)
    } else {
        (current * factor).min(clamp_seconds(app.max_launch_delay_seconds))
    };
    clamp_seconds(next)
}

/// `now + secs`, saturating: a delay that cannot be added (NaN, beyond chrono's range) gives the
/// latest representable time rather than a panic.
pub fn after_seconds(now: DateTime<Utc>, secs: f64) -> DateTime<Utc> {
    let ms = crate::app::limits::clamp_seconds(secs) * 1000.0;
    ChronoDuration::try_milliseconds(ms as i64)
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `ceil(instances × minimumHealthCapacity)` and `floor(instances × (1 + maximumOverCapacity))`
/// with both fractions clamped into 0..=1 (state saved by an older version may hold anything), and
/// the capacity one above the minimum when they meet.
fn upgrade_bounds(n: usize, app: &App) -> (usize, usize) {
    use crate::app::limits::clamp_fraction;
    let us = app.upgrade_strategy;
    let min_healthy = (n as f64 * clamp_fraction(us.minimum_health_capacity, 1.0)).ceil() as usize;
    let mut max_capacity =
        (n as f64 * (1.0 + clamp_fraction(us.maximum_over_capacity, 1.0))).floor() as usize;
    if max_capacity <= min_healthy {
        max_capacity = min_healthy.saturating_add(1);
    }
    (min_healthy, max_capacity)
}

/// An app's instance count, capped at what the API accepts.
fn instances(app: &App) -> usize {
    app.instances.min(crate::app::limits::MAX_INSTANCES) as usize
}

/// Whether `b` is `a` scaled (nothing but `instances` differs).
pub fn only_instances_differ(a: &App, b: &App) -> bool {
    let mut a = a.clone();
    a.instances = b.instances;
    a.version = None;
    let mut b = b.clone();
    b.version = None;
    a == b
}

#[cfg(test)]
mod tests;
