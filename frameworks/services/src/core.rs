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
//!
//! Every change (an app's, a group's) becomes one deployment plan of dependency-ordered steps
//! (`plan.rs`); groups are saved records beside the apps (`groups.rs`, pure rules in
//! [`crate::group`]).
//! Service ports are assigned when an app is put ([`crate::ports`]); every offer an app waiting
//! for tasks looks at is counted in its [`OfferStats`] ([`crate::offer_stats`], `/v2/queue`).

use std::collections::BTreeMap;

use agora_proto::v1;
use agora_sdk::{carve, TaskNeeds};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::app::{App, FieldError};
use crate::group::GroupRecord;
use crate::offer_stats::{OfferStats, Reason};
use crate::ports::PortRange;
use agora_framework::constraints::{field_value, Constraint};

mod groups;
mod plan;

pub use groups::GroupNode;
pub use plan::{Action, Changes, Deployment, Retiring};

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
    /// The app's service ports when it was launched (Marathon's `servicePorts`).
    #[serde(default)]
    pub service_ports: Vec<u64>,
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
    /// While `killing`: when this framework last sent the kill (first seen by a tick), so that
    /// a kill lost on the way (a master failing over while it held the kill for a drain) is sent
    /// again every 10 s (`KILL_AGAIN_SECS`).
    #[serde(default)]
    pub kill_sent: Option<DateTime<Utc>>,
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
    /// Offers looked at while the app waits, and why they did not fit (`/v2/queue`); in memory
    /// only, as Marathon keeps them.
    #[serde(skip)]
    pub offer_stats: OfferStats,
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
    #[error("Group '{0}' does not exist")]
    UnknownGroup(String),
    #[error("Group {0} is already created. Use PUT to change this group.")]
    GroupExists(String),
    #[error("App '{0}' does not exist in version {1}")]
    UnknownVersion(String, String),
}

/// See the module documentation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServicesCore {
    pub framework_id: Option<String>,
    apps: BTreeMap<String, AppState>,
    deployments: Vec<Deployment>,
    /// Every group that exists besides those only implied by an app's id (`/` included once
    /// anything changed): empty groups and group dependencies are saved state.
    #[serde(default)]
    groups: BTreeMap<String, GroupRecord>,
    /// Apps a plan stops, until their tasks are gone.
    #[serde(default)]
    retiring: BTreeMap<String, Retiring>,
    /// The agents seen in offers, for global apps (`AGORA_GLOBAL=true`, [`crate::global`]).
    #[serde(default)]
    agents: crate::global::Agents,
    /// Events for `/v2/events`, drained by the driver.
    #[serde(skip)]
    events: Vec<(String, Value)>,
    #[serde(skip)]
    deferred: Vec<Effect>,
    /// Where 0 service ports are assigned from (`--service-port-range`; not saved: the flag of
    /// each run decides).
    #[serde(skip)]
    service_ports: PortRange,
}

/// Keeps `(version, app)` in the app's history, the oldest dropped past [`VERSIONS_KEPT`].
pub(super) fn push_version(st: &mut AppState, version: &str) {
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

    /// The service port range (`--service-port-range`). Apps saved with a port still 0 (by a
    /// version that did not assign service ports) get theirs now; one that finds the range full
    /// keeps its 0 until its next update.
    pub fn set_service_port_range(&mut self, range: PortRange) {
        self.service_ports = range;
        let ids: Vec<String> = self
            .apps
            .iter()
            .filter(|(_, st)| crate::ports::unassigned(&st.app))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let Some(mut app) = self.apps.get(&id).map(|st| st.app.clone()) else {
                continue;
            };
            let assigned =
                crate::ports::assign(&mut app, None, self.apps.values().map(|st| &st.app), range);
            if assigned.is_ok() {
                if let Some(st) = self.apps.get_mut(&id) {
                    st.app = app;
                }
            }
        }
    }

    pub fn service_port_range(&self) -> PortRange {
        self.service_ports
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
        let group = crate::group::parent(&app.id);
        self.apply(
            Changes {
                puts: vec![app],
                always: true,
                ..Changes::default()
            },
            &group,
            force,
            now,
        )
    }

    /// Marathon's `api_post_event` for a request that changed app `id` (the API layer knows
    /// the client and the URI).
    pub fn api_post_event(
        &mut self,
        id: &str,
        client_ip: Option<String>,
        uri: &str,
        now: DateTime<Utc>,
    ) {
        let Some(st) = self.apps.get(id) else {
            return;
        };
        let mut def = serde_json::to_value(&st.app).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut def {
            m.insert("version".into(), json!(st.version));
        }
        let mut body = json!({ "uri": uri, "appDefinition": def });
        if let (Some(ip), Value::Object(m)) = (client_ip, &mut body) {
            m.insert("clientIp".into(), json!(ip));
        }
        self.emit("api_post_event", body, now);
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
        self.apply(
            Changes {
                restarts: vec![id.to_string()],
                ..Changes::default()
            },
            &crate::group::parent(id),
            force,
            now,
        )
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

    /// Deletes an app: a plan stops it (kills its tasks); it finishes when they are gone.
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
        self.apply(
            Changes {
                removes: vec![id.to_string()],
                ..Changes::default()
            },
            &crate::group::parent(id),
            force,
            now,
        )
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
        if by_app.is_empty() {
            return Ok(None);
        }
        let scales: Vec<(String, u32)> = by_app
            .iter()
            .filter_map(|(app_id, tasks)| {
                let st = self.apps.get(app_id)?;
                let counted = tasks
                    .iter()
                    .filter(|id| st.tasks.get(*id).is_some_and(TaskRecord::live))
                    .count();
                let counted = u32::try_from(counted).unwrap_or(u32::MAX);
                Some((app_id.clone(), st.app.instances.saturating_sub(counted)))
            })
            .collect();
        let group = match &scales[..] {
            [(one, _)] => crate::group::parent(one),
            _ => "/".to_string(),
        };
        // The plan first (it refuses a locked app before anything changes), then the kills of
        // exactly these tasks: marked as being killed, they no longer count, so the scale-down
        // kills nothing else.
        let planned = self.apply(
            Changes {
                scales,
                ..Changes::default()
            },
            &group,
            force,
            now,
        )?;
        for (app_id, tasks) in by_app {
            let Some(st) = self.apps.get_mut(&app_id) else {
                continue;
            };
            for id in &tasks {
                if let Some(t) = st.tasks.get_mut(id) {
                    t.killing = true;
                }
                self.deferred.push(Effect::Kill(id.clone()));
            }
        }
        Ok(Some(planned))
    }

    /// Cancels a deployment: `force` only stops it where it is (202; what it was stopping is
    /// killed at once); otherwise a new deployment rolls every app it touched back to how it was
    /// before (200).
    ///
    /// # Errors
    /// [`ServicesError::UnknownDeployment`].
    pub fn cancel_deployment(
        &mut self,
        id: &str,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<(String, String)>, ServicesError> {
        let Some(d) = self.deployments.iter().find(|d| d.id == id) else {
            return Err(ServicesError::UnknownDeployment(id.into()));
        };
        if force {
            self.force_out(id, &Default::default(), "cancelled", now);
            return Ok(None);
        }
        let mut changes = Changes::default();
        for (app, prev) in &d.previous_apps {
            match prev {
                Some(p) => changes.puts.push(p.clone()),
                None => changes.removes.push(app.clone()),
            }
        }
        let group = d.group.clone();
        // The rollback takes over what the cancelled plan was stopping.
        let keep = changes.puts.iter().map(|a| a.id.clone()).collect();
        self.force_out(id, &keep, "rolled back", now);
        self.apply(changes, &group, true, now).map(Some)
    }

    /// A task's new status.
    pub fn on_update(&mut self, status: &v1::TaskStatus, now: DateTime<Utc>) -> Vec<Effect> {
        let state = status.state().as_str_name().to_string();
        let Some(st) = self
            .apps
            .values_mut()
            .chain(self.retiring.values_mut().map(|r| &mut r.state))
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
            let host = status.ip_addresses.first().cloned().unwrap_or_default();
            self.emit(
                "status_update_event",
                status_event(&app_id, status, &state, &host, &[], ""),
                now,
            );
            return if agora_proto::is_terminal_name(&state) {
                Vec::new()
            } else {
                vec![Effect::Kill(status.task_id.clone())]
            };
        };
        let app_id = st.app.id.clone();
        let first_check = st.app.health_checks.first().cloned();
        let Some(t) = st.tasks.get_mut(&status.task_id) else {
            return Vec::new();
        };
        let was_healthy = t.healthy;
        let was_state = std::mem::replace(&mut t.state, state.clone());
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
        let slave_id = t.agent_id.clone();
        let healthy = t.healthy;
        let killed_by_us = t.killing;
        let (host, ports, task_version, agent) = (
            t.host.clone(),
            t.ports.clone(),
            t.version.clone(),
            t.agent_id.clone(),
        );
        let agent_lost = matches!(
            state.as_str(),
            "TASK_LOST" | "TASK_GONE" | "TASK_GONE_BY_OPERATOR" | "TASK_UNREACHABLE"
        );
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
            status_event(&app_id, status, &state, &host, &ports, &task_version),
            now,
        );
        if was_state != state {
            self.emit(
                "instance_changed_event",
                json!({ "instanceId": task_id, "condition": condition(&state), "runSpecId": app_id,
                        "agentId": agent, "host": host, "runSpecVersion": task_version }),
                now,
            );
        }
        let check = first_check
            .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
            .unwrap_or_else(|| json!({}));
        if status.healthy == Some(false) && !agora_proto::is_terminal_name(&state) {
            self.emit(
                "failed_health_check_event",
                json!({ "appId": app_id, "taskId": task_id, "instanceId": task_id, "healthCheck": check }),
                now,
            );
        }
        if healthy != was_healthy && healthy.is_some() {
            self.emit(
                "health_status_changed_event",
                json!({ "appId": app_id, "taskId": task_id, "instanceId": task_id,
                        "version": task_version, "alive": healthy }),
                now,
            );
        }
        if agora_proto::is_terminal_name(&state)
            && status.reason() == v1::Reason::TaskUnhealthy
            && !killed_by_us
        {
            self.emit(
                "unhealthy_instance_kill_event",
                json!({ "appId": app_id, "taskId": task_id, "instanceId": task_id,
                        "version": task_version, "reason": status.message, "host": host,
                        "slaveId": agent }),
                now,
            );
        }
        if agent_lost {
            // Global apps stop counting that agent until it offers again.
            self.agents.lost(&agent);
        }
        let mut effects = self.plan(now);
        // A task this framework is killing, reported running by a reconciliation: the kill was
        // lost (a master that held it for a drain failed over before sending it, say). Again.
        if killed_by_us
            && !agora_proto::is_terminal_name(&state)
            && status.reason() == v1::Reason::Reconciliation
        {
            effects.push(Effect::Kill(task_id));
        }
        effects
    }

    /// Kills again the tasks being killed that are still not ended `KILL_AGAIN_SECS` after the
    /// kill was sent (first seen here: counted from now). Unreachable ones wait for
    /// their agent.
    fn kill_again(&mut self, now: DateTime<Utc>) -> Vec<Effect> {
        let mut effects = Vec::new();
        for st in self.apps.values_mut() {
            for t in st.tasks.values_mut() {
                if !t.killing
                    || agora_proto::is_terminal_name(&t.state)
                    || t.state == "TASK_UNREACHABLE"
                {
                    continue;
                }
                match t.kill_sent {
                    None => t.kill_sent = Some(now),
                    Some(k) if (now - k).num_seconds() >= plan::KILL_AGAIN_SECS => {
                        t.kill_sent = Some(now);
                        effects.push(Effect::Kill(t.id.clone()));
                    }
                    Some(_) => {}
                }
            }
        }
        effects
    }

    fn is_stable(st: &AppState) -> bool {
        let live: Vec<&TaskRecord> = st.tasks.values().filter(|t| t.live()).collect();
        live.len() == instances(&st.app)
            && live
                .iter()
                .all(|t| t.version == st.config_version && t.healthy_for(&st.app))
    }

    /// Kills what must go (scale down, upgrade progress, surplus after a partition heals) and
    /// moves deployment plans on (a step done, the next begins). Launches are made from offers
    /// ([`ServicesCore::launches_for`]).
    pub fn plan(&mut self, now: DateTime<Utc>) -> Vec<Effect> {
        self.follow_agents(now);
        let mut effects = self.kill_again(now);
        let ids: Vec<String> = self.apps.keys().cloned().collect();
        let held: std::collections::BTreeSet<String> =
            ids.iter().filter(|id| self.held(id)).cloned().collect();
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
            if held.contains(&id) {
                // Its step has not begun: it keeps what it runs.
                continue;
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
        }
        effects.extend(self.advance(now));
        self.track_queued(now);
        effects
    }

    /// Starts an app's [`OfferStats`] when it begins to wait for tasks and forgets them once it
    /// waits no more (Marathon's launch attempt).
    fn track_queued(&mut self, now: DateTime<Utc>) {
        let changes: Vec<(String, bool)> = self
            .apps
            .iter()
            .filter_map(|(id, st)| {
                let waiting = self.queued(st, now) > 0;
                (waiting != st.offer_stats.since.is_some()).then(|| (id.clone(), waiting))
            })
            .collect();
        for (id, waiting) in changes {
            if let Some(st) = self.apps.get_mut(&id) {
                st.offer_stats = OfferStats::default();
                if waiting {
                    st.offer_stats.since = Some(now);
                }
            }
        }
    }

    /// Tasks an app still needs now (0 while its launch delay runs, its dependencies are not
    /// stable or its plan's step has not begun).
    pub fn wanted(&self, st: &AppState, now: DateTime<Utc>) -> usize {
        if st.next_launch_at.is_some_and(|t| t > now) || self.held(&st.app.id) {
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
        // A global app watches for agents that join: offers are how it sees them.
        self.apps
            .values()
            .any(|st| self.wanted(st, now) > 0 || crate::global::is_global(&st.app))
    }

    /// Sets every global app's `instances` to the present agents its constraints allow
    /// ([`crate::global`]): agents offered recently or running a task of ours that is not
    /// unreachable.
    fn follow_agents(&mut self, now: DateTime<Utc>) {
        if !self
            .apps
            .values()
            .any(|st| crate::global::is_global(&st.app))
        {
            return;
        }
        let running: std::collections::BTreeSet<String> = self
            .apps
            .values()
            .chain(self.retiring.values().map(|r| &r.state))
            .flat_map(|st| st.tasks.values())
            .filter(|t| !agora_proto::is_terminal_name(&t.state) && t.state != "TASK_UNREACHABLE")
            .map(|t| t.agent_id.clone())
            .collect();
        let present = self.agents.present(now, &running);
        for st in self.apps.values_mut() {
            if crate::global::is_global(&st.app) {
                st.app.instances = crate::global::target(&st.app, &present);
            }
        }
    }

    /// The launches an offer can take, recorded as STAGING tasks. Every app that waits for tasks
    /// counts the offer in its [`OfferStats`]: used, or unused with Marathon's reasons (the
    /// resource it lacks, the constraint it misses).
    pub fn launches_for(&mut self, offer: &v1::Offer, now: DateTime<Utc>) -> Vec<Launch> {
        if self
            .apps
            .values()
            .any(|st| crate::global::is_global(&st.app))
        {
            // Only global apps need the agents (no map of every agent otherwise).
            self.agents.offered(offer, now);
            self.follow_agents(now);
        }
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
            if want == 0 {
                continue;
            }
            let app = st.app.clone();
            let constraints: Vec<Constraint> = app
                .constraints
                .iter()
                .filter_map(|c| Constraint::parse(c).ok())
                .collect();
            let needs = task_needs(&app);
            let host_aliases =
                crate::compose::stack_aliases(&app, self.apps.values().map(|s| &s.app));
            let service_ports: Vec<u64> = crate::ports::service_ports(&app)
                .into_iter()
                .map(u64::from)
                .collect();
            let mut placed = 0usize;
            let mut reasons: Vec<Reason> = Vec::new();
            while want > 0 {
                let Some(st) = self.apps.get(&id) else { break };
                let placed_tasks: Vec<&TaskRecord> =
                    st.tasks.values().filter(|t| t.live()).collect();
                // A global app runs one instance per agent, whatever its constraints say.
                let twice = crate::global::is_global(&app)
                    && placed_tasks.iter().any(|t| t.agent_id == offer.agent_id);
                let blocked = twice
                    || constraints.iter().any(|c| {
                        let value = field_value(&c.field, &offer.hostname, &offer.attributes);
                        let placed: Vec<Option<String>> = placed_tasks
                            .iter()
                            .map(|t| t.fields.get(&c.field).cloned())
                            .collect();
                        !c.allows(value.as_deref(), &placed)
                    });
                if blocked {
                    reasons.push(Reason::UnfulfilledConstraint);
                    reasons.extend(missing(&left, &app, &needs));
                    break;
                }
                let Some(carved) = carve(&mut left, &needs) else {
                    reasons = missing(&left, &app, &needs);
                    break;
                };
                let task_id = task_id_for(&id);
                let task = crate::launch::task_info(
                    &app,
                    &task_id,
                    &st.config_version,
                    &carved,
                    offer,
                    &host_aliases,
                );
                let record = TaskRecord {
                    id: task_id.clone(),
                    app_id: id.clone(),
                    version: st.config_version.clone(),
                    agent_id: offer.agent_id.clone(),
                    host: offer.hostname.clone(),
                    ports: carved.ports.clone(),
                    service_ports: service_ports.clone(),
                    fields: fields.clone(),
                    state: "TASK_STAGING".into(),
                    healthy: None,
                    staged_at: now,
                    started_at: None,
                    message: String::new(),
                    killing: false,
                    unreachable_since: None,
                    inactive: false,
                    kill_sent: None,
                };
                if let Some(st) = self.apps.get_mut(&id) {
                    st.tasks.insert(task_id, record);
                }
                out.push(Launch {
                    offer_id: offer.id.clone(),
                    task,
                });
                placed += 1;
                want -= 1;
            }
            if let Some(st) = self.apps.get_mut(&id) {
                let stats = &mut st.offer_stats;
                stats.since.get_or_insert(now);
                if placed > 0 {
                    stats.used(now);
                } else {
                    stats.unused(offer, reasons, now);
                }
            }
        }
        out
    }

    /// How many instances an app waits for: the tasks still to launch now, or those missing
    /// while a launch delay runs or its dependencies start (Marathon's queue `count`).
    pub fn queued(&self, st: &AppState, now: DateTime<Utc>) -> usize {
        let live = st.tasks.values().filter(|t| t.live()).count();
        self.wanted(st, now)
            .max(instances(&st.app).saturating_sub(live))
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
            .chain(self.retiring.values().map(|r| &r.state))
            .flat_map(|a| a.tasks.values())
            .filter(|t| !agora_proto::is_terminal_name(&t.state))
            .map(|t| (t.id.clone(), t.agent_id.clone()))
            .collect()
    }
}

/// What one task of `app` takes from an offer. With `requirePorts` (host networking) the host
/// ports are the app's service ports; otherwise any ports, but a bridged mapping's non-zero
/// `hostPort` exactly.
fn task_needs(app: &App) -> TaskNeeds {
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
    TaskNeeds {
        scalars: agora_proto::Resources::parse(&format!(
            "cpus:{};mem:{};disk:{}",
            app.cpus, app.mem, app.disk
        ))
        .unwrap_or_default(),
        any_ports: app.host_ports().saturating_sub(fixed.len()),
        fixed_ports: fixed,
    }
}

/// Why `needs` does not fit in what is `left` of an offer: each resource it lacks.
fn missing(left: &agora_proto::Resources, app: &App, needs: &TaskNeeds) -> Vec<Reason> {
    let mut out = Vec::new();
    // Amounts are exact to three decimals in offers; an app's own figure may carry more.
    let short = |name: &str, want: f64| want > 0.0 && left.scalar_total(name) + 1e-9 < want;
    if short("cpus", app.cpus) {
        out.push(Reason::InsufficientCpus);
    }
    if short("mem", app.mem) {
        out.push(Reason::InsufficientMemory);
    }
    if short("disk", app.disk) {
        out.push(Reason::InsufficientDisk);
    }
    let ports_only = TaskNeeds {
        scalars: agora_proto::Resources::default(),
        any_ports: needs.any_ports,
        fixed_ports: needs.fixed_ports.clone(),
    };
    if carve(&mut left.clone(), &ports_only).is_none() {
        out.push(Reason::InsufficientPorts);
    }
    out
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

/// Marathon's `status_update_event` body.
fn status_event(
    app_id: &str,
    status: &v1::TaskStatus,
    state: &str,
    host: &str,
    ports: &[u64],
    version: &str,
) -> Value {
    let ips: Vec<Value> = status
        .ip_addresses
        .iter()
        .map(|ip| json!({ "ipAddress": ip, "protocol": "IPv4" }))
        .collect();
    json!({ "appId": app_id, "taskId": status.task_id, "taskStatus": state,
            "message": status.message, "slaveId": status.agent_id, "host": host,
            "ports": ports, "ipAddresses": ips, "version": version })
}

/// Marathon's instance condition for a task state (`instance_changed_event`).
fn condition(state: &str) -> &'static str {
    match state {
        "TASK_STAGING" => "Staging",
        "TASK_STARTING" => "Starting",
        "TASK_RUNNING" => "Running",
        "TASK_KILLING" => "Killing",
        "TASK_KILLED" => "Killed",
        "TASK_FINISHED" => "Finished",
        "TASK_FAILED" => "Failed",
        "TASK_ERROR" => "Error",
        "TASK_DROPPED" => "Dropped",
        "TASK_UNREACHABLE" => "Unreachable",
        "TASK_GONE_BY_OPERATOR" => "GoneByOperator",
        "TASK_LOST" | "TASK_GONE" => "Gone",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod tests;
