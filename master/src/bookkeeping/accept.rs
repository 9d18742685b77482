//! Accepting offers. The named offers leave the books first (they either launch or go back to
//! the allocator); `plan_accept` then checks the whole call without changing anything and returns
//! a `Plan` or one `Refusal`; `apply_accept` carries a plan out, a refusal drops every task.

use std::collections::HashSet;
use std::time::Duration;

use agora_proto::v1::{self, master_message, operation, TaskState};
use agora_proto::Resources;

use super::{
    limits, refuse_of, status, update_event, AgentStatus, Bookkeeping, Clock, OfferEntry, TaskEntry,
};
use crate::error::MasterError;

/// What a valid accept does, worked out on copies before anything changes.
struct Plan {
    /// The agent of the offers.
    agent_id: String,
    /// The role the offers were allocated to.
    role: String,
    /// What is left of the offers after the operations so far (declined when the plan is applied).
    available: Resources,
    /// The agent's total after the RESERVE/UNRESERVE operations so far.
    total: Resources,
    /// Whether a RESERVE/UNRESERVE changed `total`.
    total_changed: bool,
    /// Messages for the agent, each with the tasks it starts and their resources.
    launches: Vec<(master_message::Message, Vec<(v1::TaskInfo, Resources)>)>,
    /// Tasks refused one at a time (TASK_ERROR), with why.
    errors: Vec<(String, String)>,
    /// Task ids checked so far in this call.
    ids_in_call: HashSet<String>,
}

/// Why a whole accept is refused: every task it names is reported TASK_DROPPED with `why`, and the
/// call fails with `error`.
struct Refusal {
    why: String,
    error: MasterError,
}

impl From<MasterError> for Refusal {
    fn from(error: MasterError) -> Self {
        Refusal {
            why: error.to_string(),
            error,
        }
    }
}

impl Plan {
    /// RESERVE: unreserved resources of the offers become reserved for one of the framework's
    /// roles, in what is left of the offers and in the agent's total.
    fn reserve(
        &mut self,
        resources: &[v1::Resource],
        fw: &v1::FrameworkInfo,
        i: usize,
    ) -> Result<(), MasterError> {
        let field = format!("operations[{i}].reserve.resources");
        let res = check_reservation(resources, fw, &field)?;
        let flat = res.flatten();
        if !self.available.unreserved().contains(&flat) {
            return Err(MasterError::invalid(
                field,
                format!(
                    "{flat} is more than the unreserved part of the offers ({})",
                    self.available.unreserved()
                ),
            ));
        }
        self.available.subtract(&flat);
        self.available.add(&res);
        self.total.subtract(&flat);
        self.total.add(&res);
        self.total_changed = true;
        Ok(())
    }

    /// UNRESERVE: reserved resources of the offers return to the unreserved pool.
    fn unreserve(&mut self, resources: &[v1::Resource], i: usize) -> Result<(), MasterError> {
        let field = format!("operations[{i}].unreserve.resources");
        let res = Resources::from_proto(resources)
            .map_err(|e| MasterError::invalid(field.clone(), e.to_string()))?;
        if !(self.available.contains(&res) && res.unreserved().is_empty()) {
            return Err(MasterError::invalid(
                field,
                format!(
                    "{res} is not among the offers' reserved resources ({})",
                    self.available
                ),
            ));
        }
        let flat = res.flatten();
        self.available.subtract(&res);
        self.available.add(&flat);
        self.total.subtract(&res);
        self.total.add(&flat);
        self.total_changed = true;
        Ok(())
    }
}

impl Bookkeeping {
    /// Uses offers: runs the operations in order on the offers' agent. See the module docs of
    /// [`crate`] for the validation rules.
    ///
    /// # Errors
    /// Header errors; unusable offers (every task is then reported TASK_DROPPED and the good offers
    /// are recovered); an invalid RESERVE/UNRESERVE (nothing is applied). Problems with single
    /// tasks are not call errors: those tasks get TASK_ERROR updates and the others launch.
    pub fn accept(&mut self, req: v1::AcceptRequest, clock: &Clock) -> Result<(), MasterError> {
        let framework_id = self.check_header(req.header.as_ref())?;
        let refuse = refuse_of(req.filters.as_ref())?;
        let (taken, problems) = self.take_offers(&framework_id, &req.offer_ids);
        match self.plan_accept(&framework_id, &req, &taken, problems) {
            Ok(plan) => {
                self.apply_accept(&framework_id, &taken, plan, refuse, clock);
                Ok(())
            }
            Err(refusal) => {
                self.recover_offers(&framework_id, &taken);
                self.drop_tasks(&framework_id, &task_ids(&req), &refusal.why, clock);
                Err(refusal.error)
            }
        }
    }

    /// Tasks of an accept that an adapter could not hand to [`Bookkeeping::accept`] (a Mesos
    /// task using a SET resource, which no agent has): each gets TASK_ERROR with
    /// REASON_TASK_INVALID and `why`, as a task its offers cannot hold does, naming the agent of
    /// the first of `offer_ids` the framework holds. Nothing else changes: the offers are left to
    /// the accept that follows.
    ///
    /// # Errors
    /// Header errors.
    pub fn refuse_tasks(
        &mut self,
        header: Option<&v1::CallHeader>,
        offer_ids: &[String],
        tasks: Vec<(String, String)>,
        clock: &Clock,
    ) -> Result<(), MasterError> {
        let framework_id = self.check_header(header)?;
        let agent_id = offer_ids
            .iter()
            .filter_map(|o| self.offers.get(o))
            .find(|e| e.offer.framework_id == framework_id)
            .map(|e| e.offer.agent_id.clone())
            .unwrap_or_default();
        for (i, (task_id, _)) in tasks.iter().enumerate() {
            if task_id.is_empty() || task_id.len() > limits::MAX_ID_BYTES {
                return Err(MasterError::invalid(
                    format!("tasks[{i}].task_id"),
                    format!("must be 1 to {} bytes", limits::MAX_ID_BYTES),
                ));
            }
        }
        self.tasks_invalid(&framework_id, &agent_id, tasks, clock.wall);
        Ok(())
    }

    /// A TASK_ERROR (REASON_TASK_INVALID) to the framework for each task and why it is refused.
    fn tasks_invalid(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        tasks: Vec<(String, String)>,
        wall: f64,
    ) {
        for (task_id, why) in tasks {
            self.counters.tasks_invalid += 1;
            let mut st = status(
                &task_id,
                agent_id,
                TaskState::TaskError,
                v1::Reason::TaskInvalid,
                why,
                wall,
            );
            limits::bound_status(&mut st);
            self.to_framework(framework_id, update_event(st));
        }
    }

    /// Checks a whole accept against the books, changing nothing. `taken` and `problems` are what
    /// [`Bookkeeping::take_offers`] made of the named offers.
    fn plan_accept(
        &self,
        framework_id: &str,
        req: &v1::AcceptRequest,
        taken: &[OfferEntry],
        mut problems: Vec<String>,
    ) -> Result<Plan, Refusal> {
        if req.offer_ids.is_empty() {
            return Err(Refusal {
                why: "the accept names no offers".into(),
                error: MasterError::invalid("offer_ids", "must name at least one offer"),
            });
        }
        let agent_id = taken
            .first()
            .map(|e| e.offer.agent_id.clone())
            .unwrap_or_default();
        let role = taken.first().map(|e| e.role.clone()).unwrap_or_default();
        if taken.iter().any(|e| e.offer.agent_id != agent_id) {
            problems.push(
                "the offers are on different agents; accept offers of one agent at a time".into(),
            );
        }
        if taken.iter().any(|e| e.role != role) {
            problems.push("the offers were allocated to different roles".into());
        }
        let agent_ok = self
            .agents
            .get(&agent_id)
            .is_some_and(|a| a.status == AgentStatus::Active && a.connected);
        if !taken.is_empty() && !agent_ok {
            problems.push(format!("agent '{agent_id}' is not connected to the master"));
        }
        if !problems.is_empty() {
            let why = problems.join("; ");
            return Err(Refusal {
                error: MasterError::invalid("offer_ids", why.clone()),
                why,
            });
        }
        let mut available = Resources::new();
        for e in taken {
            available.add(&e.resources);
        }
        let mut plan = Plan {
            total: self.agents[&agent_id].total.clone(),
            agent_id,
            role,
            available,
            total_changed: false,
            launches: Vec::new(),
            errors: Vec::new(),
            ids_in_call: HashSet::new(),
        };
        let fw = &self.frameworks[framework_id].info;
        for (i, op) in req.operations.iter().enumerate() {
            match &op.operation {
                None => {
                    return Err(Refusal {
                        why: "an operation is empty".into(),
                        error: MasterError::invalid(format!("operations[{i}]"), "is empty"),
                    })
                }
                Some(operation::Operation::Launch(l)) => {
                    self.plan_launch(framework_id, fw, i, l, &mut plan)
                }
                Some(operation::Operation::LaunchGroup(g)) => {
                    self.plan_launch_group(framework_id, fw, i, g, &mut plan)
                }
                Some(operation::Operation::Reserve(r)) => plan.reserve(&r.resources, fw, i)?,
                Some(operation::Operation::Unreserve(u)) => plan.unreserve(&u.resources, i)?,
            }
        }
        Ok(plan)
    }

    /// LAUNCH: each task that passes [`Bookkeeping::check_task`] starts on its own; the others are
    /// refused one by one.
    fn plan_launch(
        &self,
        framework_id: &str,
        fw: &v1::FrameworkInfo,
        i: usize,
        launch: &operation::Launch,
        plan: &mut Plan,
    ) {
        for (j, task) in launch.tasks.iter().enumerate() {
            let field = format!("operations[{i}].launch.tasks[{j}]");
            match self.check_task(
                framework_id,
                &plan.agent_id,
                task,
                &mut plan.available,
                &mut plan.ids_in_call,
                &field,
            ) {
                Ok(res) => {
                    let mut t = task.clone();
                    t.agent_id = plan.agent_id.clone();
                    let msg = master_message::Message::RunTask(master_message::RunTask {
                        framework: Some(fw.clone()),
                        task: Some(t),
                    });
                    plan.launches.push((msg, vec![(task.clone(), res)]));
                }
                Err(why) => plan.errors.push((task.task_id.clone(), why)),
            }
        }
    }

    /// LAUNCH_GROUP: a group starts together or not at all; one bad task refuses all of them.
    fn plan_launch_group(
        &self,
        framework_id: &str,
        fw: &v1::FrameworkInfo,
        i: usize,
        launch: &operation::LaunchGroup,
        plan: &mut Plan,
    ) {
        let tasks = launch
            .task_group
            .as_ref()
            .map_or(&[][..], |t| t.tasks.as_slice());
        let mut group = Vec::new();
        let mut failed = None;
        for (j, task) in tasks.iter().enumerate() {
            let field = format!("operations[{i}].launch_group.task_group.tasks[{j}]");
            match self.check_task(
                framework_id,
                &plan.agent_id,
                task,
                &mut plan.available,
                &mut plan.ids_in_call,
                &field,
            ) {
                Ok(res) => group.push((task.clone(), res)),
                Err(why) => {
                    failed = Some(why);
                    break;
                }
            }
        }
        if let Some(why) = failed {
            // Give back what the group's checked tasks took.
            for (_, res) in &group {
                plan.available.add(res);
            }
            for t in tasks {
                plan.errors
                    .push((t.task_id.clone(), format!("task group refused: {why}")));
            }
        } else if !group.is_empty() {
            let mut tg = v1::TaskGroupInfo::default();
            for (t, _) in &group {
                let mut t = t.clone();
                t.agent_id = plan.agent_id.clone();
                tg.tasks.push(t);
            }
            let msg = master_message::Message::RunTaskGroup(master_message::RunTaskGroup {
                framework: Some(fw.clone()),
                executor: launch.executor.clone(),
                task_group: Some(tg),
            });
            plan.launches.push((msg, group));
        }
    }

    /// Carries out a plan: the new total (if a reservation changed it), the unused rest declined,
    /// TASK_ERROR for the refused tasks, then the tasks into the books and their messages out.
    fn apply_accept(
        &mut self,
        framework_id: &str,
        taken: &[OfferEntry],
        plan: Plan,
        refuse: Option<Duration>,
        clock: &Clock,
    ) {
        let Plan {
            agent_id,
            role,
            available,
            total,
            total_changed,
            launches,
            errors,
            ids_in_call: _,
        } = plan;
        if total_changed {
            let mut held = Resources::new();
            for (_, group) in &launches {
                for (_, res) in group {
                    held.add(res);
                }
            }
            held.add(&available);
            self.recover_offers(framework_id, taken);
            let _ = self.allocator.update_agent_total(&agent_id, total.clone());
            let _ = self
                .allocator
                .allocate_used(&agent_id, framework_id, &role, &held);
            if let Some(a) = self.agents.get_mut(&agent_id) {
                a.total = total.clone();
            }
            let reserved = total.filter(|k| k.principal.is_some());
            if let Some(r) = self.registry.agents.get_mut(&agent_id) {
                r.reservations = reserved.to_string();
                self.registry_dirty = true;
            }
        }
        let _ = self.allocator.decline(
            framework_id,
            &agent_id,
            &role,
            &available,
            refuse,
            clock.now,
        );
        self.tasks_invalid(framework_id, &agent_id, errors, clock.wall);
        for (msg, group) in launches {
            for (info, res) in group {
                let key = (framework_id.to_string(), info.task_id.clone());
                let mut info = info;
                info.agent_id = agent_id.clone();
                let task = v1::Task {
                    name: info.name.clone(),
                    task_id: info.task_id.clone(),
                    framework_id: framework_id.to_string(),
                    executor_id: info
                        .executor
                        .as_ref()
                        .map(|e| e.executor_id.clone())
                        .unwrap_or_default(),
                    agent_id: agent_id.clone(),
                    state: TaskState::TaskStaging as i32,
                    resources: res.to_proto(),
                    status: None,
                    labels: info.labels.clone(),
                    container: info.container.clone(),
                    health_check: info.health_check.clone(),
                    kill_policy: info.kill_policy,
                    started_at: 0.0,
                    info: Some(info),
                };
                if let Some(a) = self.agents.get_mut(&agent_id) {
                    a.tasks.insert(key.clone());
                }
                if let Some(f) = self.frameworks.get_mut(framework_id) {
                    f.tasks.insert(key.1.clone());
                }
                self.tasks.insert(
                    key,
                    TaskEntry {
                        task,
                        role: role.clone(),
                        resources: res,
                        allocated: true,
                    },
                );
                self.counters.tasks_launched += 1;
            }
            self.to_agent(&agent_id, msg);
        }
    }

    /// Gives taken offers back to the allocator.
    fn recover_offers(&mut self, framework_id: &str, taken: &[OfferEntry]) {
        for e in taken {
            let _ = self
                .allocator
                .recover(&e.offer.agent_id, framework_id, &e.role, &e.resources);
        }
    }

    /// Validates one task of a launch and takes its resources out of `available`.
    fn check_task(
        &self,
        framework_id: &str,
        agent_id: &str,
        task: &v1::TaskInfo,
        available: &mut Resources,
        ids_in_call: &mut HashSet<String>,
        field: &str,
    ) -> Result<Resources, String> {
        if task.task_id.is_empty() {
            return Err(format!("{field}.task_id must not be empty"));
        }
        // Sizes and durations first: nothing below (nor the agent) sees an unbounded value.
        limits::task_info(task)
            .map_err(|e| format!("{field}: task '{}': {e}", limits::short(&task.task_id)))?;
        if let Some(bad) = task.task_id.chars().find(|c| c.is_control() || *c == '/') {
            return Err(format!(
                "{field}.task_id contains {bad:?}, which is not allowed"
            ));
        }
        let key = (framework_id.to_string(), task.task_id.clone());
        if self.tasks.contains_key(&key) || !ids_in_call.insert(task.task_id.clone()) {
            return Err(format!(
                "{field}.task_id '{}' is already used by a task of this framework that has not ended",
                task.task_id
            ));
        }
        if !task.agent_id.is_empty() && task.agent_id != agent_id {
            return Err(format!(
                "{field}.agent_id '{}' is not the agent of the accepted offers ('{agent_id}')",
                task.agent_id
            ));
        }
        if task.command.is_none() && task.executor.is_none() {
            return Err(format!(
                "{field}.command is required (or a custom executor)"
            ));
        }
        if let Some(c) = &task.command {
            if task.executor.is_none() && c.value.is_empty() && c.arguments.is_empty() {
                let docker = task
                    .container
                    .as_ref()
                    .and_then(|c| c.docker.as_ref())
                    .is_some();
                if !docker {
                    return Err(format!("{field}.command has neither a value nor arguments"));
                }
            }
        }
        if let Some(c) = &task.container {
            if c.r#type == v1::ContainerType::Docker as i32
                && c.docker.as_ref().is_none_or(|d| d.image.trim().is_empty())
            {
                return Err(format!(
                    "{field}.container.docker.image is required for a DOCKER container"
                ));
            }
        }
        let mut wanted = Resources::from_proto(&task.resources)
            .map_err(|e| format!("{field}.resources: {e}"))?;
        if let Some(ex) = &task.executor {
            let ex_res = Resources::from_proto(&ex.resources)
                .map_err(|e| format!("{field}.executor.resources: {e}"))?;
            wanted.add(&ex_res);
        }
        if wanted.scalar_total("cpus") <= 0.0 && wanted.scalar_total("mem") <= 0.0 {
            return Err(format!("{field}.resources must include cpus or mem"));
        }
        available.take_flattened(&wanted).ok_or_else(|| {
            format!(
                "{field}.resources {wanted} do not fit in what is left of the offers ({available}): \
                 the accept over-commits them"
            )
        })
    }

    /// Reports every task of a refused accept as TASK_DROPPED.
    fn drop_tasks(
        &mut self,
        framework_id: &str,
        tasks: &[(String, String)],
        why: &str,
        clock: &Clock,
    ) {
        for (task_id, agent_id) in tasks {
            self.counters.tasks_invalid += 1;
            let st = status(
                task_id,
                agent_id,
                TaskState::TaskDropped,
                v1::Reason::InvalidOffers,
                format!("the accept was refused: {why}"),
                clock.wall,
            );
            self.to_framework(framework_id, update_event(st));
        }
    }
}

fn check_reservation(
    resources: &[v1::Resource],
    fw: &v1::FrameworkInfo,
    field: &str,
) -> Result<Resources, MasterError> {
    let res =
        Resources::from_proto(resources).map_err(|e| MasterError::invalid(field, e.to_string()))?;
    if res.is_empty() {
        return Err(MasterError::invalid(field, "must not be empty"));
    }
    for (i, r) in resources.iter().enumerate() {
        if r.role.is_empty() || r.role == "*" || !fw.roles.contains(&r.role) {
            return Err(MasterError::invalid(
                format!("{field}[{i}].role"),
                format!(
                    "'{}' must be one of the framework's roles {:?}",
                    r.role, fw.roles
                ),
            ));
        }
        let Some(resv) = &r.reservation else {
            return Err(MasterError::invalid(
                format!("{field}[{i}].reservation"),
                "is required for a dynamic reservation",
            ));
        };
        if !fw.principal.is_empty() && resv.principal != fw.principal {
            return Err(MasterError::invalid(
                format!("{field}[{i}].reservation.principal"),
                format!(
                    "'{}' is not the framework's principal '{}'",
                    resv.principal, fw.principal
                ),
            ));
        }
    }
    Ok(res)
}

/// The (task id, agent id) of every task an accept names. Only the ids: they are all a refused
/// accept needs to report (copying whole TaskInfos was a measurable part of the launch path).
fn task_ids(req: &v1::AcceptRequest) -> Vec<(String, String)> {
    req.operations
        .iter()
        .flat_map(|op| {
            let tasks: &[v1::TaskInfo] = match &op.operation {
                Some(operation::Operation::Launch(l)) => &l.tasks,
                Some(operation::Operation::LaunchGroup(g)) => {
                    g.task_group.as_ref().map_or(&[], |t| t.tasks.as_slice())
                }
                _ => &[],
            };
            tasks
                .iter()
                .map(|t| (t.task_id.clone(), t.agent_id.clone()))
        })
        .collect()
}
