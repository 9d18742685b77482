//! Deterministic tests of the master's rules: time is a parameter, outputs are inspected directly.

use super::*;

fn settings() -> Settings {
    Settings {
        master_info: v1::MasterInfo {
            id: "m1".into(),
            address: "127.0.0.1:5050".into(),
            ..Default::default()
        },
        agent_timeout: Duration::from_secs(10),
        agent_gone_timeout: Duration::from_secs(100),
        offer_timeout: Some(Duration::from_secs(30)),
        framework_recovery_timeout: Duration::from_secs(60),
        framework_heartbeat: Duration::from_secs(15),
        completed_tasks_kept: 100,
        agent_reregister_timeout: Duration::from_secs(20),
        drain_period: Duration::from_secs(2),
    }
}

struct World {
    book: Bookkeeping,
    t0: Instant,
}

fn res(s: &str) -> Vec<v1::Resource> {
    Resources::parse(s).expect("resources").to_proto()
}

impl World {
    fn new() -> Self {
        World {
            book: Bookkeeping::new(settings(), AllocatorConfig::default(), Registry::default()),
            t0: Instant::now(),
        }
    }

    fn at(&self, secs: f64) -> Clock {
        Clock {
            now: self.t0 + Duration::from_secs_f64(secs),
            wall: 1_000.0 + secs,
        }
    }

    fn agent(&mut self, hostname: &str, resources: &str) -> String {
        let c = self.at(0.0);
        let resp = self
            .book
            .register_agent(
                v1::RegisterAgentRequest {
                    agent_info: Some(v1::AgentInfo {
                        hostname: hostname.into(),
                        resources: res(resources),
                        ..Default::default()
                    }),
                    join_token: String::new(),
                },
                &c,
            )
            .expect("register");
        self.book
            .agent_connected(&resp.agent_id, &c)
            .expect("hello");
        resp.agent_id
    }

    fn framework(&mut self, name: &str, role: &str, failover: f64) -> v1::CallHeader {
        let c = self.at(0.0);
        let (framework_id, stream_id) = self
            .book
            .subscribe(
                v1::SubscribeRequest {
                    framework_info: Some(v1::FrameworkInfo {
                        name: name.into(),
                        roles: vec![role.into()],
                        failover_timeout_seconds: failover,
                        capabilities: vec![v1::FrameworkCapability::PartitionAware as i32],
                        ..Default::default()
                    }),
                    suppressed_roles: vec![],
                },
                &c,
            )
            .expect("subscribe");
        v1::CallHeader {
            framework_id,
            stream_id,
        }
    }

    fn update(&mut self, agent: &str, fw: &str, task: &str, state: TaskState, secs: f64) {
        let c = self.at(secs);
        agent_update(&mut self.book, agent, fw, task, state, &c);
    }

    /// The agent heartbeats, then housekeeping runs, at `secs`.
    fn tick_alive(&mut self, agent: &str, secs: f64) {
        let c = self.at(secs);
        self.book.agent_message(
            agent,
            agent_message::Message::Heartbeat(agent_message::Heartbeat { usage: vec![] }),
            &c,
        );
        self.book.tick(&c);
    }

    fn offers(&mut self, secs: f64) -> Vec<v1::Offer> {
        self.book.allocate(&self.at(secs));
        self.book
            .take_outbound()
            .into_iter()
            .flat_map(|o| match o {
                Outbound::Framework {
                    event:
                        v1::Event {
                            event: Some(event::Event::Offers(o)),
                        },
                    ..
                } => o.offers,
                _ => vec![],
            })
            .collect()
    }
}

fn task(id: &str, resources: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        name: id.into(),
        task_id: id.into(),
        resources: res(resources),
        command: Some(v1::CommandInfo {
            shell: true,
            value: "sleep 100".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn launch(header: &v1::CallHeader, offers: &[&str], tasks: Vec<v1::TaskInfo>) -> v1::AcceptRequest {
    v1::AcceptRequest {
        header: Some(header.clone()),
        offer_ids: offers.iter().map(|s| s.to_string()).collect(),
        operations: vec![v1::Operation {
            operation: Some(operation::Operation::Launch(operation::Launch { tasks })),
        }],
        filters: None,
    }
}

/// Updates sent to frameworks, as (task id, state, message).
fn updates(out: &[Outbound]) -> Vec<(String, TaskState, String)> {
    out.iter()
        .filter_map(|o| match o {
            Outbound::Framework {
                event:
                    v1::Event {
                        event: Some(event::Event::Update(u)),
                    },
                ..
            } => u.status.as_ref().map(|s| {
                (
                    s.task_id.clone(),
                    TaskState::try_from(s.state).unwrap_or(TaskState::Unspecified),
                    s.message.clone(),
                )
            }),
            _ => None,
        })
        .collect()
}

fn run_tasks(out: &[Outbound]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Outbound::Agent {
                message:
                    v1::MasterMessage {
                        message: Some(master_message::Message::RunTask(r)),
                    },
                ..
            } => r.task.as_ref().map(|t| t.task_id.clone()),
            _ => None,
        })
        .collect()
}

/// Agent `h1` (cpus:2;mem:1024, as `World::agent` registers it in these tests) re-registering with
/// `tasks`.
fn h1_reregistering(agent_id: &str, tasks: Vec<v1::Task>) -> v1::ReregisterAgentRequest {
    v1::ReregisterAgentRequest {
        agent_id: agent_id.into(),
        agent_info: Some(v1::AgentInfo {
            hostname: "h1".into(),
            resources: res("cpus:2;mem:1024"),
            ..Default::default()
        }),
        tasks,
        ..Default::default()
    }
}

fn agent_update(
    book: &mut Bookkeeping,
    agent: &str,
    fw: &str,
    task: &str,
    state: TaskState,
    c: &Clock,
) {
    book.agent_message(
        agent,
        agent_message::Message::StatusUpdate(v1::StatusUpdate {
            framework_id: fw.into(),
            status: Some(v1::TaskStatus {
                task_id: task.into(),
                state: state as i32,
                uuid: vec![1, 2, 3],
                source: v1::StatusSource::SourceExecutor as i32,
                ..Default::default()
            }),
        }),
        c,
    );
}

#[test]
fn subscribe_sends_subscribed_first_with_the_stream_id() {
    let mut w = World::new();
    let h = w.framework("f", "web", 0.0);
    let out = w.book.take_outbound();
    match &out[0] {
        Outbound::Framework {
            event:
                v1::Event {
                    event: Some(event::Event::Subscribed(s)),
                },
            ..
        } => {
            assert_eq!(s.framework_id, h.framework_id);
            assert_eq!(s.stream_id, h.stream_id);
        }
        other => panic!("first event is {other:?}"),
    }
}

#[test]
fn offer_accept_launch_reaches_the_agent_and_finishing_frees_resources() {
    let mut w = World::new();
    let a = w.agent("h1", "cpus:4;mem:4096");
    let h = w.framework("f", "web", 0.0);
    w.book.take_outbound();
    let offers = w.offers(1.0);
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].agent_id, a);
    let req = launch(&h, &[&offers[0].id], vec![task("t1", "cpus:1;mem:512")]);
    w.book.accept(req, &w.at(1.5)).expect("accept");
    let out = w.book.take_outbound();
    assert_eq!(run_tasks(&out), ["t1"]);
    // The rest (3 cpus) was declined with the default 5 s filter: nothing offered at once.
    assert!(w.offers(2.0).is_empty());
    w.update(&a, &h.framework_id, "t1", TaskState::TaskRunning, 2.0);
    let out = w.book.take_outbound();
    assert_eq!(updates(&out)[0].1, TaskState::TaskRunning);
    w.update(&a, &h.framework_id, "t1", TaskState::TaskFinished, 3.0);
    w.book.take_outbound();
    let offers = w.offers(7.0);
    assert_eq!(offers.len(), 1);
    assert_eq!(
        Resources::from_proto(&offers[0].resources).expect("res"),
        Resources::parse("cpus:4;mem:4096").expect("res")
    );
    let state = w.book.state("x");
    assert!(state.tasks.is_empty());
    assert_eq!(state.completed_tasks[0].task_id, "t1");
}

#[test]
fn over_committed_task_gets_task_error_and_the_others_launch() {
    let mut w = World::new();
    w.agent("h1", "cpus:2;mem:1024");
    let h = w.framework("f", "web", 0.0);
    w.book.take_outbound();
    let offers = w.offers(1.0);
    let req = launch(
        &h,
        &[&offers[0].id],
        vec![task("ok", "cpus:1;mem:512"), task("big", "cpus:2;mem:512")],
    );
    w.book.accept(req, &w.at(1.0)).expect("accept");
    let out = w.book.take_outbound();
    assert_eq!(run_tasks(&out), ["ok"]);
    let ups = updates(&out);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].0, "big");
    assert_eq!(ups[0].1, TaskState::TaskError);
    assert!(ups[0].2.contains("over-commits"), "{}", ups[0].2);
    assert!(ups[0].2.contains("tasks[1].resources"), "{}", ups[0].2);
}

#[test]
fn duplicate_task_ids_are_refused_within_a_call_and_against_live_tasks() {
    let mut w = World::new();
    w.agent("h1", "cpus:8;mem:8192");
    let h = w.framework("f", "web", 0.0);
    w.book.take_outbound();
    let offers = w.offers(1.0);
    let req = launch(
        &h,
        &[&offers[0].id],
        vec![task("t", "cpus:1;mem:128"), task("t", "cpus:1;mem:128")],
    );
    w.book.accept(req, &w.at(1.0)).expect("accept");
    let out = w.book.take_outbound();
    assert_eq!(run_tasks(&out), ["t"]);
    let ups = updates(&out);
    assert_eq!(ups.len(), 1);
    assert!(ups[0].2.contains("already used"), "{}", ups[0].2);
    // Later, with a new offer, the same id is still taken. (A filter outlives one more cycle.)
    w.offers(6.5);
    let offers = w.offers(7.0);
    let req = launch(&h, &[&offers[0].id], vec![task("t", "cpus:1;mem:128")]);
    w.book.accept(req, &w.at(7.0)).expect("accept");
    let ups = updates(&w.book.take_outbound());
    assert_eq!(ups[0].1, TaskState::TaskError);
}

#[test]
fn unknown_and_foreign_offers_fail_the_call_drop_the_tasks_and_recover_good_offers() {
    let mut w = World::new();
    w.agent("h1", "cpus:2;mem:1024");
    w.agent("h2", "cpus:2;mem:1024");
    let f = w.framework("f", "a", 0.0);
    let g = w.framework("g", "b", 0.0);
    w.book.take_outbound();
    let offers = w.offers(1.0);
    assert_eq!(offers.len(), 2);
    let mine = offers
        .iter()
        .find(|o| o.framework_id == f.framework_id)
        .expect("f's offer");
    let theirs = offers
        .iter()
        .find(|o| o.framework_id == g.framework_id)
        .expect("g's offer");
    let err = w
        .book
        .accept(
            launch(&f, &[&theirs.id], vec![task("t", "cpus:1;mem:128")]),
            &w.at(1.0),
        )
        .unwrap_err();
    assert!(err.to_string().contains("another framework"), "{err}");
    let ups = updates(&w.book.take_outbound());
    assert_eq!(ups[0].1, TaskState::TaskDropped);
    let err = w
        .book
        .accept(
            launch(&f, &[&mine.id, "nope"], vec![task("t", "cpus:1;mem:128")]),
            &w.at(1.0),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("offer 'nope' is not outstanding"),
        "{err}"
    );
    // f's good offer was recovered (no filter), g's is still g's.
    let state = w.book.state("x");
    assert_eq!(state.offers.len(), 1);
    assert_eq!(state.offers[0].id, theirs.id);
    let again = w.offers(2.0);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].framework_id, f.framework_id);
}

#[test]
fn a_stale_stream_id_is_refused() {
    let mut w = World::new();
    let mut h = w.framework("f", "web", 0.0);
    h.stream_id = "old".into();
    let err = w
        .book
        .revive(v1::ReviveRequest {
            header: Some(h),
            roles: vec![],
        })
        .unwrap_err();
    assert!(matches!(err, MasterError::FailedPrecondition(_)), "{err}");
}

#[test]
fn decline_with_filter_keeps_the_agent_away_until_it_expires() {
    let mut w = World::new();
    w.agent("h1", "cpus:2;mem:1024");
    let h = w.framework("f", "web", 0.0);
    w.book.take_outbound();
    let offers = w.offers(1.0);
    w.book
        .decline(
            v1::DeclineRequest {
                header: Some(h.clone()),
                offer_ids: vec![offers[0].id.clone()],
                filters: Some(v1::Filters {
                    refuse_seconds: Some(10.0),
                }),
            },
            &w.at(1.0),
        )
        .expect("decline");
    assert!(w.offers(5.0).is_empty());
    assert_eq!(w.offers(11.5).len(), 1);
}

#[test]
fn unanswered_offers_are_rescinded_after_the_offer_timeout() {
    let mut w = World::new();
    let a = w.agent("h1", "cpus:2;mem:1024");
    w.framework("f", "web", 0.0);
    w.book.take_outbound();
    let offers = w.offers(1.0);
    w.tick_alive(&a, 20.0);
    assert!(w.book.take_outbound().is_empty());
    w.tick_alive(&a, 31.5);
    let out = w.book.take_outbound();
    assert!(out.iter().any(|o| matches!(o, Outbound::Framework { event: v1::Event { event: Some(event::Event::Rescind(r)) }, .. } if r.offer_id == offers[0].id)));
    assert_eq!(w.offers(32.0).len(), 1);
}

#[test]
fn a_silent_agent_becomes_unreachable_then_comes_back_with_its_tasks() {
    let mut w = World::new();
    let a = w.agent("h1", "cpus:2;mem:1024");
    let h = w.framework("f", "web", 3600.0);
    w.book.take_outbound();
    let offers = w.offers(1.0);
    w.book
        .accept(
            launch(&h, &[&offers[0].id], vec![task("t", "cpus:1;mem:128")]),
            &w.at(1.0),
        )
        .expect("accept");
    w.update(&a, &h.framework_id, "t", TaskState::TaskRunning, 2.0);
    w.book.take_outbound();
    w.book.tick(&w.at(11.0));
    assert!(
        w.book.take_outbound().is_empty(),
        "not silent long enough yet"
    );
    w.book.tick(&w.at(12.5));
    let ups = updates(&w.book.take_outbound());
    assert_eq!(
        ups,
        [("t".into(), TaskState::TaskUnreachable, ups[0].2.clone())]
    );
    assert!(!w.book.state("x").agents[0].active);
    // It re-registers reporting the task: the framework hears it is running again.
    let mut running = w.book.state("x").tasks[0].clone();
    running.state = TaskState::TaskRunning as i32;
    running.status = Some(v1::TaskStatus {
        task_id: "t".into(),
        state: TaskState::TaskRunning as i32,
        ..Default::default()
    });
    w.book
        .reregister_agent(h1_reregistering(&a, vec![running]), &w.at(20.0))
        .expect("reregister");
    let ups = updates(&w.book.take_outbound());
    assert_eq!(ups[0].1, TaskState::TaskRunning);
    let state = w.book.state("x");
    assert!(state.agents[0].active);
    // The task's resources are in use: only the rest is offered.
    w.book.agent_connected(&a, &w.at(20.0)).expect("hello");
    let offers = w.offers(21.0);
    assert_eq!(
        Resources::from_proto(&offers[0].resources).expect("res"),
        Resources::parse("cpus:1;mem:896").expect("res")
    );
}

#[test]
fn an_unreachable_agent_is_gone_after_the_gone_timeout() {
    let mut w = World::new();
    let a = w.agent("h1", "cpus:2;mem:1024");
    w.book.tick(&w.at(11.0));
    w.book.tick(&w.at(112.0));
    assert!(w.book.state("x").agents.is_empty());
    let err = w
        .book
        .reregister_agent(h1_reregistering(&a, vec![]), &w.at(120.0))
        .unwrap_err();
    assert!(err.to_string().contains("marked gone"), "{err}");
    assert!(w.book.take_registry().expect("dirty").gone_agents.len() == 1);
}

#[test]
fn framework_failover_within_the_timeout_keeps_tasks_and_past_it_kills_them() {
    let mut w = World::new();
    let a = w.agent("h1", "cpus:2;mem:1024");
    let h = w.framework("f", "web", 60.0);
    w.book.take_outbound();
    let offers = w.offers(1.0);
    w.book
        .accept(
            launch(&h, &[&offers[0].id], vec![task("t", "cpus:1;mem:128")]),
            &w.at(1.0),
        )
        .expect("accept");
    w.update(&a, &h.framework_id, "t", TaskState::TaskRunning, 2.0);
    w.book.take_outbound();
    w.book
        .framework_disconnected(&h.framework_id, &h.stream_id, &w.at(3.0));
    for t in [10.0, 20.0, 30.0, 40.0, 50.0] {
        w.tick_alive(&a, t);
    }
    assert_eq!(w.book.state("x").tasks.len(), 1);
    // Re-subscribing with the id takes the task back.
    let (id, stream) = w
        .book
        .subscribe(
            v1::SubscribeRequest {
                framework_info: Some(v1::FrameworkInfo {
                    id: h.framework_id.clone(),
                    name: "f".into(),
                    roles: vec!["web".into()],
                    failover_timeout_seconds: 60.0,
                    ..Default::default()
                }),
                suppressed_roles: vec![],
            },
            &w.at(51.0),
        )
        .expect("failover");
    assert_eq!(id, h.framework_id);
    for t in [60.0, 70.0, 80.0, 90.0, 100.0, 110.0, 120.0] {
        w.tick_alive(&a, t);
    }
    assert_eq!(w.book.state("x").tasks.len(), 1);
    // Disconnected again, past the timeout: the tasks are killed on the agent.
    w.book.framework_disconnected(&id, &stream, &w.at(121.0));
    w.book.take_outbound();
    w.tick_alive(&a, 130.0);
    assert_eq!(w.book.state("x").tasks.len(), 1);
    w.tick_alive(&a, 182.0);
    let out = w.book.take_outbound();
    assert!(out.iter().any(|o| matches!(
        o,
        Outbound::Agent {
            message: v1::MasterMessage {
                message: Some(master_message::Message::ShutdownFramework(_))
            },
            ..
        }
    )));
    assert!(w.book.state("x").tasks.is_empty());
    assert!(w.book.state("x").frameworks.is_empty());
}

#[test]
fn reconciliation_answers_known_tasks_and_unknown_ids() {
    let mut w = World::new();
    let a = w.agent("h1", "cpus:2;mem:1024");
    let h = w.framework("f", "web", 0.0);
    w.book.take_outbound();
    let offers = w.offers(1.0);
    w.book
        .accept(
            launch(&h, &[&offers[0].id], vec![task("t", "cpus:1;mem:128")]),
            &w.at(1.0),
        )
        .expect("accept");
    w.update(&a, &h.framework_id, "t", TaskState::TaskRunning, 2.0);
    w.book.take_outbound();
    w.book
        .reconcile(
            v1::ReconcileRequest {
                header: Some(h.clone()),
                tasks: vec![],
            },
            &w.at(3.0),
        )
        .expect("implicit");
    let ups = updates(&w.book.take_outbound());
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].1, TaskState::TaskRunning);
    w.book
        .reconcile(
            v1::ReconcileRequest {
                header: Some(h.clone()),
                tasks: vec![
                    v1::reconcile_request::TaskRef {
                        task_id: "t".into(),
                        agent_id: a.clone(),
                    },
                    v1::reconcile_request::TaskRef {
                        task_id: "ghost".into(),
                        agent_id: String::new(),
                    },
                ],
            },
            &w.at(3.0),
        )
        .expect("explicit");
    let ups = updates(&w.book.take_outbound());
    assert_eq!(ups[0].1, TaskState::TaskRunning);
    assert_eq!(ups[1].0, "ghost");
    assert_eq!(ups[1].1, TaskState::TaskUnknown);
}

#[test]
fn two_frameworks_in_two_roles_get_drf_fair_shares() {
    // The DRF paper's example, through offers and accepts: 9 cpus, 18 GiB; A's tasks <1 cpu, 4 GiB>,
    // B's <3 cpus, 1 GiB> → A runs 3 tasks, B runs 2.
    let mut w = World::new();
    w.agent("h1", "cpus:9;mem:18432");
    let a = w.framework("a", "ra", 0.0);
    let b = w.framework("b", "rb", 0.0);
    w.book.take_outbound();
    let mut launched: HashMap<String, usize> = HashMap::new();
    for step in 0..40 {
        let now = 1.0 + step as f64;
        for offer in w.offers(now) {
            let (h, want) = if offer.framework_id == a.framework_id {
                (&a, "cpus:1;mem:4096")
            } else {
                (&b, "cpus:3;mem:1024")
            };
            let n = launched.entry(h.framework_id.clone()).or_default();
            let fits = Resources::from_proto(&offer.resources)
                .expect("res")
                .contains_flattened(&Resources::parse(want).expect("res"));
            let tasks = if fits {
                *n += 1;
                vec![task(&format!("t{n}"), want)]
            } else {
                vec![]
            };
            let mut req = launch(h, &[&offer.id], tasks);
            req.filters = Some(v1::Filters {
                refuse_seconds: Some(0.0),
            });
            w.book.accept(req, &w.at(now)).expect("accept");
            w.book.take_outbound();
        }
    }
    assert_eq!(launched.get(&a.framework_id), Some(&3));
    assert_eq!(launched.get(&b.framework_id), Some(&2));
}

#[test]
fn teardown_kills_tasks_and_the_id_cannot_subscribe_again() {
    let mut w = World::new();
    w.agent("h1", "cpus:2;mem:1024");
    let h = w.framework("f", "web", 100.0);
    w.book.take_outbound();
    let offers = w.offers(1.0);
    w.book
        .accept(
            launch(&h, &[&offers[0].id], vec![task("t", "cpus:1;mem:128")]),
            &w.at(1.0),
        )
        .expect("accept");
    w.book.take_outbound();
    w.book
        .teardown(
            v1::TeardownRequest {
                header: Some(h.clone()),
            },
            &w.at(2.0),
        )
        .expect("teardown");
    let out = w.book.take_outbound();
    assert!(out
        .iter()
        .any(|o| matches!(o, Outbound::CloseFramework { .. })));
    let err = w
        .book
        .subscribe(
            v1::SubscribeRequest {
                framework_info: Some(v1::FrameworkInfo {
                    id: h.framework_id.clone(),
                    ..Default::default()
                }),
                suppressed_roles: vec![],
            },
            &w.at(3.0),
        )
        .unwrap_err();
    assert!(matches!(err, MasterError::FailedPrecondition(_)));
}

#[test]
fn bad_inputs_name_the_field() {
    let mut w = World::new();
    let err = w
        .book
        .register_agent(
            v1::RegisterAgentRequest {
                agent_info: Some(v1::AgentInfo {
                    hostname: "h".into(),
                    resources: vec![v1::Resource {
                        name: "cpus".into(),
                        value: Some(v1::resource::Value::Scalar(-1.0)),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                join_token: String::new(),
            },
            &w.at(0.0),
        )
        .unwrap_err();
    assert!(err.to_string().starts_with("agent_info.resources"), "{err}");
    let err = w
        .book
        .subscribe(
            v1::SubscribeRequest {
                framework_info: Some(v1::FrameworkInfo {
                    roles: vec!["bad role".into()],
                    ..Default::default()
                }),
                suppressed_roles: vec![],
            },
            &w.at(0.0),
        )
        .unwrap_err();
    assert!(
        err.to_string().starts_with("framework_info.roles[0]"),
        "{err}"
    );
    let err = w
        .book
        .update_weights(&[v1::WeightInfo {
            role: "web".into(),
            weight: 0.0,
        }])
        .unwrap_err();
    assert!(err.to_string().starts_with("weights[0].weight"), "{err}");
}

#[test]
fn reserve_then_launch_on_the_reservation_and_unreserve() {
    let mut w = World::new();
    let a = w.agent("h1", "cpus:4;mem:4096");
    let c = w.at(0.0);
    let (fid, sid) = w
        .book
        .subscribe(
            v1::SubscribeRequest {
                framework_info: Some(v1::FrameworkInfo {
                    name: "f".into(),
                    roles: vec!["web".into()],
                    principal: "alice".into(),
                    ..Default::default()
                }),
                suppressed_roles: vec![],
            },
            &c,
        )
        .expect("subscribe");
    let h = v1::CallHeader {
        framework_id: fid,
        stream_id: sid,
    };
    w.book.take_outbound();
    let offers = w.offers(1.0);
    let reserved = Resources::parse("cpus(web,alice):2;mem(web,alice):1024").expect("res");
    let req = v1::AcceptRequest {
        header: Some(h.clone()),
        offer_ids: vec![offers[0].id.clone()],
        operations: vec![
            v1::Operation {
                operation: Some(operation::Operation::Reserve(operation::Reserve {
                    resources: reserved.to_proto(),
                })),
            },
            v1::Operation {
                operation: Some(operation::Operation::Launch(operation::Launch {
                    tasks: vec![task("t", "cpus:1;mem:512")],
                })),
            },
        ],
        filters: Some(v1::Filters {
            refuse_seconds: Some(0.0),
        }),
    };
    w.book.accept(req, &w.at(1.0)).expect("reserve + launch");
    assert_eq!(run_tasks(&w.book.take_outbound()), ["t"]);
    let state = w.book.state("x");
    let total = Resources::from_proto(&state.agents[0].info.as_ref().expect("info").resources)
        .expect("res");
    assert!(total.contains(&reserved), "{total}");
    let reg = w.book.take_registry().expect("dirty");
    assert_eq!(reg.agents[&a].reservations, reserved.to_string());
    // The task took the reserved cpus first.
    let used = Resources::from_proto(&state.tasks[0].resources).expect("res");
    assert_eq!(
        used,
        Resources::parse("cpus(web,alice):1;mem(web,alice):512").expect("res")
    );
}

#[test]
fn a_new_leader_offers_only_after_the_registry_agents_reregister_or_a_timeout() {
    let t0 = Instant::now();
    let at = |secs: f64| Clock {
        now: t0 + Duration::from_secs_f64(secs),
        wall: 1_000.0 + secs,
    };
    let mut registry = Registry::default();
    for id in ["a1", "a2"] {
        registry.agents.insert(
            id.into(),
            AgentRecord {
                hostname: id.into(),
                ..Default::default()
            },
        );
    }
    let mut book = Bookkeeping::new(settings(), AllocatorConfig::default(), registry);
    let info = |h: &str| v1::AgentInfo {
        hostname: h.into(),
        resources: res("cpus:1;mem:512"),
        ..Default::default()
    };
    book.reregister_agent(
        v1::ReregisterAgentRequest {
            agent_id: "a1".into(),
            agent_info: Some(info("a1")),
            ..Default::default()
        },
        &at(1.0),
    )
    .expect("reregister");
    book.agent_connected("a1", &at(1.0)).expect("hello");
    book.subscribe(
        v1::SubscribeRequest {
            framework_info: Some(v1::FrameworkInfo {
                name: "f".into(),
                ..Default::default()
            }),
            suppressed_roles: vec![],
        },
        &at(1.0),
    )
    .expect("subscribe");
    assert_eq!(
        book.allocate(&at(2.0)).offers,
        0,
        "a2 has not come back yet"
    );
    assert_eq!(
        book.allocate(&at(22.0)).offers,
        1,
        "the wait is over after 20 s"
    );
    let reg = book.take_registry().expect("dirty");
    assert!(reg.agents["a2"].unreachable_since.is_some());
    assert!(reg.agents["a1"].unreachable_since.is_none());
}

#[test]
fn with_a_join_token_only_agents_that_present_it_register_and_admitted_ones_come_back() {
    let mut w = World::new();
    let a = w.agent("h1", "cpus:1;mem:512");
    w.book.set_join_token(Some("s3cret".into()));
    let req = |token: &str| v1::RegisterAgentRequest {
        agent_info: Some(v1::AgentInfo {
            hostname: "h2".into(),
            resources: res("cpus:1;mem:512"),
            ..Default::default()
        }),
        join_token: token.into(),
    };
    let err = w.book.register_agent(req(""), &w.at(1.0)).unwrap_err();
    assert!(matches!(err, MasterError::PermissionDenied(_)));
    assert!(err.to_string().contains("join token rejected"), "{err}");
    let err = w.book.register_agent(req("wrong"), &w.at(1.0)).unwrap_err();
    assert!(
        err.to_string().contains("not this cluster's current token"),
        "{err}"
    );
    w.book
        .register_agent(req("s3cret"), &w.at(1.0))
        .expect("the right token");
    assert_eq!(w.book.state("x").agents.len(), 2);
    // An admitted agent re-registers without the (possibly rotated) token; a stranger cannot.
    let rereg = |id: &str| v1::ReregisterAgentRequest {
        agent_id: id.into(),
        agent_info: Some(v1::AgentInfo {
            hostname: "h".into(),
            resources: res("cpus:1;mem:512"),
            ..Default::default()
        }),
        ..Default::default()
    };
    w.book
        .reregister_agent(rereg(&a), &w.at(2.0))
        .expect("admitted");
    let err = w
        .book
        .reregister_agent(rereg("stranger"), &w.at(2.0))
        .unwrap_err();
    assert!(matches!(err, MasterError::PermissionDenied(_)));
    assert!(!w.book.state("x").agents.iter().any(|a| a.id == "stranger"));
}

#[test]
fn status_update_round_trip_is_timed_from_the_agent_update_to_the_framework_ack() {
    let mut w = World::new();
    let a = w.agent("h1", "cpus:4;mem:4096");
    let h = w.framework("f", "web", 0.0);
    w.book.take_outbound();
    let offers = w.offers(1.0);
    let req = launch(&h, &[&offers[0].id], vec![task("t1", "cpus:1;mem:512")]);
    w.book.accept(req, &w.at(1.5)).expect("accept");
    w.update(&a, &h.framework_id, "t1", TaskState::TaskRunning, 2.0);
    w.book.take_outbound();
    assert!(w.book.take_round_trips().is_empty(), "not acknowledged yet");
    let ack = v1::AcknowledgeRequest {
        header: Some(h.clone()),
        agent_id: a.clone(),
        task_id: "t1".into(),
        uuid: vec![1, 2, 3],
    };
    w.book.acknowledge(ack.clone(), &w.at(2.25)).expect("ack");
    assert_eq!(w.book.take_round_trips(), [Duration::from_millis(250)]);
    // A repeated acknowledgement is relayed but not timed twice.
    w.book.acknowledge(ack, &w.at(3.0)).expect("ack again");
    assert!(w.book.take_round_trips().is_empty());
}

#[test]
fn a_new_leader_does_not_call_tasks_unknown_on_agents_it_still_waits_for() {
    let t0 = Instant::now();
    let at = |secs: f64| Clock {
        now: t0 + Duration::from_secs_f64(secs),
        wall: 1_000.0 + secs,
    };
    let mut registry = Registry::default();
    registry.agents.insert(
        "a1".into(),
        AgentRecord {
            hostname: "a1".into(),
            ..Default::default()
        },
    );
    let mut book = Bookkeeping::new(settings(), AllocatorConfig::default(), registry);
    let (framework_id, stream_id) = book
        .subscribe(
            v1::SubscribeRequest {
                framework_info: Some(v1::FrameworkInfo {
                    name: "f".into(),
                    ..Default::default()
                }),
                suppressed_roles: vec![],
            },
            &at(1.0),
        )
        .expect("subscribe");
    let header = v1::CallHeader {
        framework_id,
        stream_id,
    };
    book.take_outbound();
    let ask = |book: &mut Bookkeeping, secs: f64| {
        book.reconcile(
            v1::ReconcileRequest {
                header: Some(header.clone()),
                tasks: vec![
                    v1::reconcile_request::TaskRef {
                        task_id: "t".into(),
                        agent_id: "a1".into(),
                    },
                    v1::reconcile_request::TaskRef {
                        task_id: "ghost".into(),
                        agent_id: String::new(),
                    },
                ],
            },
            &at(secs),
        )
        .expect("reconcile");
        updates(&book.take_outbound())
    };
    // a1 may still re-register with `t` running: no answer yet, for either task.
    book.tick(&at(2.0));
    assert_eq!(ask(&mut book, 2.0), vec![]);
    // Past the re-registration timeout a1 is unreachable, and the agent-less ghost unknown.
    book.tick(&at(22.0));
    let ups = ask(&mut book, 22.0);
    let states: Vec<(&str, TaskState)> = ups.iter().map(|u| (u.0.as_str(), u.1)).collect();
    assert_eq!(
        states,
        vec![
            ("t", TaskState::TaskUnreachable),
            ("ghost", TaskState::TaskUnknown)
        ]
    );
}

#[test]
fn a_task_that_ended_while_its_agent_was_away_is_ended_not_lost() {
    let mut w = World::new();
    let a = w.agent("h1", "cpus:2;mem:1024");
    let h = w.framework("f", "web", 3600.0);
    let offers = w.offers(1.0);
    w.book
        .accept(
            launch(&h, &[&offers[0].id], vec![task("t", "cpus:1;mem:128")]),
            &w.at(1.0),
        )
        .expect("accept");
    w.update(&a, &h.framework_id, "t", TaskState::TaskRunning, 2.0);
    w.book.take_outbound();
    // The agent comes back reporting `t` finished, its update not yet acknowledged.
    let mut finished = w.book.state("x").tasks[0].clone();
    finished.state = TaskState::TaskFinished as i32;
    finished.status = Some(v1::TaskStatus {
        task_id: "t".into(),
        state: TaskState::TaskFinished as i32,
        uuid: b"u1".to_vec(),
        ..Default::default()
    });
    w.book
        .reregister_agent(h1_reregistering(&a, vec![finished]), &w.at(5.0))
        .expect("reregister");
    let ups = updates(&w.book.take_outbound());
    assert!(
        ups.iter().all(|u| u.1 != TaskState::TaskLost),
        "a finished task is not lost: {ups:?}"
    );
    w.book
        .reconcile(
            v1::ReconcileRequest {
                header: Some(h.clone()),
                tasks: vec![v1::reconcile_request::TaskRef {
                    task_id: "t".into(),
                    agent_id: a.clone(),
                }],
            },
            &w.at(6.0),
        )
        .expect("reconcile");
    let ups = updates(&w.book.take_outbound());
    assert_eq!(ups.len(), 1, "{ups:?}");
    assert_eq!(ups[0].1, TaskState::TaskFinished);
    assert!(w.book.state("x").tasks.is_empty());
}

// ----- hostile inputs: every bound names its field -----

/// One agent, one framework and one outstanding offer.
fn world_with_offer() -> (World, String, v1::CallHeader, String) {
    let mut w = World::new();
    let a = w.agent("h1", "cpus:8;mem:8192;ports:[31000-32000]");
    let h = w.framework("f", "web", 0.0);
    w.book.take_outbound();
    let offers = w.offers(1.0);
    let offer = offers[0].id.clone();
    (w, a, h, offer)
}

/// Launches `t` alone and returns the TASK_ERROR message (panics if it launched).
fn task_error_of(t: v1::TaskInfo) -> String {
    let (mut w, _, h, offer) = world_with_offer();
    w.book
        .accept(launch(&h, &[&offer], vec![t]), &w.at(1.0))
        .expect("the call itself succeeds; the task is refused");
    let out = w.book.take_outbound();
    assert!(run_tasks(&out).is_empty(), "a hostile task was launched");
    let ups = updates(&out);
    assert_eq!(ups.len(), 1, "{ups:?}");
    assert_eq!(ups[0].1, TaskState::TaskError);
    ups[0].2.clone()
}

#[test]
fn hostile_task_infos_get_task_error_naming_the_field() {
    type Mutation = Box<dyn Fn(&mut v1::TaskInfo)>;
    let kill = |g: f64| -> Mutation {
        Box::new(move |t| {
            t.kill_policy = Some(v1::KillPolicy {
                grace_period_seconds: g,
            })
        })
    };
    let health = |f: fn(&mut v1::HealthCheck)| -> Mutation {
        Box::new(move |t| {
            let mut h = v1::HealthCheck::default();
            f(&mut h);
            t.health_check = Some(h);
        })
    };
    let grace = "task 't1': kill_policy.grace_period_seconds: must be between 0 and 3600";
    let cases: Vec<(&str, Mutation, &str)> = vec![
        ("kill 1e300", kill(1e300), grace),
        ("kill NaN", kill(f64::NAN), grace),
        ("kill inf", kill(f64::INFINITY), grace),
        ("kill -inf", kill(f64::NEG_INFINITY), grace),
        ("kill -1", kill(-1.0), grace),
        ("kill 3601", kill(3601.0), grace),
        (
            "health interval NaN",
            health(|h| h.interval_seconds = f64::NAN),
            "health_check.interval_seconds: must be between 0 and 86400",
        ),
        (
            "health timeout -1",
            health(|h| h.timeout_seconds = -1.0),
            "health_check.timeout_seconds: must be between 0",
        ),
        (
            "health grace inf",
            health(|h| h.grace_period_seconds = f64::INFINITY),
            "health_check.grace_period_seconds: must be between 0",
        ),
        (
            "health delay 1e12",
            health(|h| h.delay_seconds = 1e12),
            "health_check.delay_seconds: must be between 0",
        ),
        (
            "health failures max",
            health(|h| h.consecutive_failures = u32::MAX),
            "health_check.consecutive_failures: must be between 0 and 1000",
        ),
        (
            "health http port",
            health(|h| {
                h.http = Some(v1::health_check::Http {
                    port: 70_000,
                    ..Default::default()
                })
            }),
            "health_check.http.port: must be at most 65535",
        ),
        (
            "health tcp port",
            health(|h| h.tcp = Some(v1::health_check::Tcp { port: u32::MAX })),
            "health_check.tcp.port: must be at most 65535",
        ),
        (
            "ports past 65535",
            Box::new(|t| {
                t.resources.push(v1::Resource {
                    name: "ports".into(),
                    value: Some(v1::resource::Value::Ranges(v1::Ranges {
                        range: vec![v1::Range {
                            begin: 31000,
                            end: u64::MAX,
                        }],
                    })),
                    ..Default::default()
                })
            }),
            "resources[2].ranges: ports 31000-18446744073709551615 go past 65535",
        ),
        (
            "cpus NaN",
            Box::new(|t| t.resources[0].value = Some(v1::resource::Value::Scalar(f64::NAN))),
            "resources: invalid resource 'cpus'",
        ),
        (
            "mem -1",
            Box::new(|t| t.resources[1].value = Some(v1::resource::Value::Scalar(-1.0))),
            "resources: invalid resource 'mem'",
        ),
        (
            "name 1 MiB",
            Box::new(|t| t.name = "n".repeat(1 << 20)),
            "name: must be at most 4096 bytes (got 1048576)",
        ),
        (
            "command 1 MiB",
            Box::new(|t| {
                if let Some(c) = t.command.as_mut() {
                    c.value = "x".repeat(1 << 20)
                }
            }),
            "command.value: must be at most 65536 bytes",
        ),
        (
            "arguments 70 KiB",
            Box::new(|t| {
                if let Some(c) = t.command.as_mut() {
                    c.arguments = vec!["a".repeat(1024); 70]
                }
            }),
            "command.value: must be at most 65536 bytes",
        ),
        (
            "env 1001 vars",
            Box::new(|t| {
                if let Some(c) = t.command.as_mut() {
                    c.environment = (0..1001).map(|i| (format!("V{i}"), "x".into())).collect()
                }
            }),
            "command.environment: must have at most 1000 entries (got 1001)",
        ),
        (
            "labels 101",
            Box::new(|t| t.labels = (0..101).map(|i| (format!("k{i}"), "v".into())).collect()),
            "labels: must have at most 100 entries",
        ),
        (
            "label value 1 MiB",
            Box::new(|t| {
                t.labels.insert("k".into(), "v".repeat(1 << 20));
            }),
            "labels[k]: must be at most 4096 bytes",
        ),
        (
            "data 1 MiB",
            Box::new(|t| t.data = vec![0; 1 << 20]),
            "data: must be at most 65536 bytes",
        ),
    ];
    for (name, mutate, expected) in cases {
        let mut t = task("t1", "cpus:1;mem:128");
        mutate(&mut t);
        let message = task_error_of(t);
        assert!(
            message.contains("operations[0].launch.tasks[0]") && message.contains(expected),
            "{name}: {message}"
        );
        assert!(message.len() < 1024, "{name}: the error echoes the value");
    }
    // An id too long is named without being echoed whole.
    let message = task_error_of(task(&"i".repeat(300), "cpus:1;mem:128"));
    assert!(
        message.contains("task_id: must be at most 255 bytes (got 300)"),
        "{message}"
    );
    assert!(message.len() < 512, "{message}");
}

#[test]
fn a_kill_with_a_hostile_kill_policy_is_refused_and_not_forwarded() {
    let (mut w, _, h, offer) = world_with_offer();
    w.book
        .accept(
            launch(&h, &[&offer], vec![task("t1", "cpus:1;mem:128")]),
            &w.at(1.0),
        )
        .expect("accept");
    w.book.take_outbound();
    for g in [1e300, f64::NAN, f64::INFINITY, -1.0, 3600.5] {
        let err = w
            .book
            .kill(
                v1::KillRequest {
                    header: Some(h.clone()),
                    task_id: "t1".into(),
                    agent_id: String::new(),
                    kill_policy: Some(v1::KillPolicy {
                        grace_period_seconds: g,
                    }),
                },
                &w.at(2.0),
            )
            .unwrap_err();
        assert!(matches!(err, MasterError::InvalidArgument { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("kill_policy.grace_period_seconds: must be between 0 and 3600"),
            "{g}: {err}"
        );
        assert!(w.book.take_outbound().is_empty(), "{g}: sent to the agent");
    }
    w.book
        .kill(
            v1::KillRequest {
                header: Some(h.clone()),
                task_id: "t1".into(),
                agent_id: String::new(),
                kill_policy: Some(v1::KillPolicy {
                    grace_period_seconds: 3600.0,
                }),
            },
            &w.at(2.0),
        )
        .expect("an hour is allowed");
}

#[test]
fn hostile_refuse_seconds_are_refused_on_decline_and_accept() {
    for s in [1e300, f64::NAN, f64::INFINITY, -1.0, 31_536_001.0] {
        let (mut w, _, h, offer) = world_with_offer();
        let filters = Some(v1::Filters {
            refuse_seconds: Some(s),
        });
        let err = w
            .book
            .decline(
                v1::DeclineRequest {
                    header: Some(h.clone()),
                    offer_ids: vec![offer.clone()],
                    filters,
                },
                &w.at(1.0),
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("filters.refuse_seconds: must be between 0 and 31536000"),
            "{s}: {err}"
        );
        let mut req = launch(&h, &[&offer], vec![task("t1", "cpus:1;mem:128")]);
        req.filters = filters;
        let err = w.book.accept(req, &w.at(1.0)).unwrap_err();
        assert!(
            err.to_string().starts_with("filters.refuse_seconds"),
            "{s}: {err}"
        );
    }
    // A year is allowed.
    let (mut w, _, h, offer) = world_with_offer();
    w.book
        .decline(
            v1::DeclineRequest {
                header: Some(h),
                offer_ids: vec![offer],
                filters: Some(v1::Filters {
                    refuse_seconds: Some(31_536_000.0),
                }),
            },
            &w.at(1.0),
        )
        .expect("a year");
}

#[test]
fn hostile_operator_values_name_the_field_and_change_nothing() {
    let (mut w, a, _, _) = world_with_offer();
    w.book.take_registry();
    for g in [1e300, f64::NAN, f64::INFINITY, -1.0] {
        let err = w.book.drain_agent(&a, Some(g), &w.at(0.0)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("grace_period_seconds: must be between 0 and 3600"),
            "{g}: {err}"
        );
    }
    assert!(
        !w.book.registry_pending(),
        "a refused drain changed the registry"
    );
    for x in [1e300, f64::NAN, f64::INFINITY, -1.0, 0.0, 1e7] {
        let err = w
            .book
            .update_weights(&[v1::WeightInfo {
                role: "web".into(),
                weight: x,
            }])
            .unwrap_err();
        assert!(
            err.to_string().starts_with("weights[0].weight"),
            "{x}: {err}"
        );
    }
    let many: Vec<v1::WeightInfo> = (0..1001)
        .map(|i| v1::WeightInfo {
            role: format!("r{i}"),
            weight: 1.0,
        })
        .collect();
    let err = w.book.update_weights(&many).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("weights: must have at most 1000"),
        "{err}"
    );
    for x in [1e300, f64::NAN, f64::INFINITY, -1.0] {
        let err = w
            .book
            .set_quota(v1::SetQuotaRequest {
                role: "web".into(),
                guarantee: vec![v1::Resource {
                    name: "cpus".into(),
                    value: Some(v1::resource::Value::Scalar(x)),
                    ..Default::default()
                }],
            })
            .unwrap_err();
        assert!(err.to_string().starts_with("guarantee"), "{x}: {err}");
    }
    let err = w
        .book
        .set_quota(v1::SetQuotaRequest {
            role: "web".into(),
            guarantee: (0..65).flat_map(|_| res("cpus:1;mem:1")).collect(),
        })
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("guarantee: must have at most 128"),
        "{err}"
    );
    assert!(
        !w.book.registry_pending(),
        "a refused call changed the registry"
    );
}

#[test]
fn agent_status_messages_are_cut_to_a_few_kib_on_a_char_boundary() {
    let (mut w, a, h, offer) = world_with_offer();
    w.book
        .accept(
            launch(&h, &[&offer], vec![task("t1", "cpus:1;mem:128")]),
            &w.at(1.0),
        )
        .expect("accept");
    w.book.take_outbound();
    // Multi-byte characters, so that a cut at a fixed byte would split one.
    let huge = "é".repeat(600_000);
    for retry in 0..5 {
        w.book.agent_message(
            &a,
            agent_message::Message::StatusUpdate(v1::StatusUpdate {
                framework_id: h.framework_id.clone(),
                status: Some(v1::TaskStatus {
                    task_id: "t1".into(),
                    state: TaskState::TaskRunning as i32,
                    message: huge.clone(),
                    uuid: vec![retry],
                    ..Default::default()
                }),
            }),
            &w.at(2.0),
        );
    }
    let out = w.book.take_outbound();
    for (_, _, m) in updates(&out) {
        assert!(m.len() <= limits::MAX_MESSAGE_BYTES, "{}", m.len());
        assert!(m.contains("truncated by the master: 1200000 bytes"), "{m}");
    }
    let state = w.book.state("x");
    let st = state.tasks[0].status.as_ref().expect("status");
    assert!(st.message.len() <= limits::MAX_MESSAGE_BYTES);
    assert!(st.message.starts_with("éé"));
    // A re-registering agent's reported statuses are cut too; a NaN failover timeout of a
    // framework it reports does not panic the master.
    let mut reported = state.tasks[0].clone();
    if let Some(s) = reported.status.as_mut() {
        s.message = "x".repeat(1 << 20);
    }
    let mut req = h1_reregistering(&a, vec![reported]);
    req.agent_info = Some(v1::AgentInfo {
        hostname: "h1".into(),
        resources: res("cpus:8;mem:8192;ports:[31000-32000]"),
        ..Default::default()
    });
    req.frameworks = vec![v1::FrameworkInfo {
        id: "from-agent".into(),
        failover_timeout_seconds: f64::NAN,
        ..Default::default()
    }];
    w.book
        .reregister_agent(req, &w.at(3.0))
        .expect("reregister");
    let state = w.book.state("x");
    let st = state.tasks[0].status.as_ref().expect("status");
    assert!(st.message.len() <= limits::MAX_MESSAGE_BYTES);
}

#[test]
fn limits_conversions_never_panic() {
    for v in [
        f64::NAN,
        f64::INFINITY,
        -f64::INFINITY,
        -0.0,
        1e300,
        f64::MAX,
        f64::MIN_POSITIVE,
    ] {
        let _ = limits::seconds("f", v, f64::MAX);
        let d = limits::clamped_duration(v, Duration::from_secs(10));
        assert!(d <= Duration::from_secs(10));
    }
    let now = Instant::now();
    assert!(limits::later(now, Duration::MAX) >= now);
    let mut s = "ab".repeat(10);
    limits::bound_message(&mut s);
    assert_eq!(s, "ab".repeat(10));
}

#[test]
fn a_session_needs_the_token_of_the_agents_latest_registration() {
    let mut w = World::new();
    let c = w.at(0.0);
    let first = w
        .book
        .register_agent(
            v1::RegisterAgentRequest {
                agent_info: Some(v1::AgentInfo {
                    hostname: "h1".into(),
                    resources: res("cpus:1;mem:128"),
                    ..Default::default()
                }),
                join_token: String::new(),
            },
            &c,
        )
        .expect("register");
    let id = first.agent_id.clone();
    assert_eq!(first.session_token.len(), 32, "128 bits in hex");
    // Knowing the agent id is not enough.
    for wrong in [
        "",
        "0123456789abcdef0123456789abcdef",
        &first.session_token[..31],
    ] {
        let err = w.book.check_session_token(&id, wrong).unwrap_err();
        assert!(matches!(err, MasterError::PermissionDenied(_)), "{err}");
    }
    assert!(w.book.check_session_token("no-such-agent", "").is_err());
    w.book
        .check_session_token(&id, &first.session_token)
        .expect("its own token");
    // A re-registration issues a new token; the old one stops working.
    let again = w
        .book
        .reregister_agent(
            v1::ReregisterAgentRequest {
                agent_id: id.clone(),
                agent_info: Some(v1::AgentInfo {
                    hostname: "h1".into(),
                    resources: res("cpus:1;mem:128"),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &c,
        )
        .expect("reregister");
    assert_ne!(again.session_token, first.session_token);
    assert!(w
        .book
        .check_session_token(&id, &first.session_token)
        .is_err());
    w.book
        .check_session_token(&id, &again.session_token)
        .expect("the new token");
}

#[test]
fn a_caller_is_told_apart_as_mesos_answers_it() {
    let mut w = World::new();
    let h = w.framework("f", "web", 60.0);
    assert_eq!(w.book.caller("nope", &h.stream_id), Caller::Unknown);
    assert_eq!(w.book.caller(&h.framework_id, "old"), Caller::WrongStream);
    assert_eq!(
        w.book.caller(&h.framework_id, &h.stream_id),
        Caller::Current
    );
    w.book
        .framework_disconnected(&h.framework_id, &h.stream_id, &w.at(1.0));
    assert_eq!(
        w.book.caller(&h.framework_id, &h.stream_id),
        Caller::NotSubscribed
    );
    let h2 = w.framework("g", "web", 0.0);
    w.book
        .teardown(
            v1::TeardownRequest {
                header: Some(h2.clone()),
            },
            &w.at(2.0),
        )
        .expect("teardown");
    assert_eq!(
        w.book.caller(&h2.framework_id, &h2.stream_id),
        Caller::Removed
    );
}

fn endpoint_updates(out: &[Outbound], agent: &str) -> Vec<v1::master_message::EndpointUpdate> {
    out.iter()
        .filter_map(|o| match o {
            Outbound::Agent {
                agent_id,
                message:
                    v1::MasterMessage {
                        message: Some(master_message::Message::EndpointUpdate(u)),
                    },
            } if agent_id == agent => Some(u.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn endpoints_of_running_healthy_tasks_are_pushed_to_every_agent_and_in_full_on_connect() {
    let mut w = World::new();
    let a = w.agent("h1", "cpus:4;mem:4096;ports:[31000-31010]");
    let b = w.agent("h2", "cpus:1;mem:128");
    let h = w.framework("services", "web", 0.0);
    w.book.take_outbound();
    let offers = w.offers(1.0);
    let on_a = offers
        .iter()
        .find(|o| o.agent_id == a)
        .expect("offer of h1");
    let mut t = task("t1", "cpus:1;mem:512;ports:[31000-31000]");
    t.health_check = Some(v1::HealthCheck {
        r#type: v1::health_check::Type::Tcp as i32,
        tcp: Some(v1::health_check::Tcp { port: 31000 }),
        ..Default::default()
    });
    t.discovery = Some(v1::DiscoveryInfo {
        name: "/prod/web".into(),
        ports: vec![v1::DiscoveryPort {
            number: 31000,
            service_port: 10000,
            ..Default::default()
        }],
        ..Default::default()
    });
    w.book
        .accept(launch(&h, &[&on_a.id], vec![t]), &w.at(1.5))
        .expect("accept");
    w.book.take_outbound();
    // RUNNING but not yet healthy: no endpoint.
    w.update(&a, &h.framework_id, "t1", TaskState::TaskRunning, 2.0);
    assert!(endpoint_updates(&w.book.take_outbound(), &b).is_empty());
    // Healthy: both agents hear of it.
    let c = w.at(2.5);
    let mut st = v1::TaskStatus {
        task_id: "t1".into(),
        state: TaskState::TaskRunning as i32,
        healthy: Some(true),
        uuid: vec![1],
        ..Default::default()
    };
    w.book.agent_message(
        &a,
        agent_message::Message::StatusUpdate(v1::StatusUpdate {
            framework_id: h.framework_id.clone(),
            status: Some(st.clone()),
        }),
        &c,
    );
    let out = w.book.take_outbound();
    for agent in [&a, &b] {
        let u = endpoint_updates(&out, agent);
        assert_eq!(u.len(), 1, "one update for {agent}");
        assert!(!u[0].full);
        assert_eq!(
            (
                u[0].services[0].framework.as_str(),
                u[0].services[0].name.as_str()
            ),
            ("services", "/prod/web")
        );
        let e = &u[0].services[0].endpoints;
        assert_eq!((e.len(), e[0].host.as_str(), e[0].port), (1, "h1", 31000));
    }
    // A reconnecting agent gets the whole table first.
    w.book.agent_connected(&b, &c).expect("hello");
    let u = endpoint_updates(&w.book.take_outbound(), &b);
    assert!(u[0].full && u[0].services.len() == 1);
    // Unhealthy: the service leaves (an empty list).
    st.healthy = Some(false);
    st.uuid = vec![2];
    w.book.agent_message(
        &a,
        agent_message::Message::StatusUpdate(v1::StatusUpdate {
            framework_id: h.framework_id.clone(),
            status: Some(st),
        }),
        &w.at(3.0),
    );
    let u = endpoint_updates(&w.book.take_outbound(), &b);
    assert!(u[0].services[0].endpoints.is_empty());
    assert_eq!(w.book.endpoint_services(), 0);
}

#[test]
fn hostile_discovery_info_names_the_field() {
    let mut t = task("t1", "cpus:1;mem:512");
    t.discovery = Some(v1::DiscoveryInfo {
        name: "x".repeat(300),
        ..Default::default()
    });
    assert!(task_error_of(t.clone()).contains("discovery.name"));
    t.discovery = Some(v1::DiscoveryInfo {
        name: "/web".into(),
        ports: vec![v1::DiscoveryPort {
            number: 70_000,
            ..Default::default()
        }],
        ..Default::default()
    });
    assert!(task_error_of(t.clone()).contains("discovery.ports[0].number"));
    t.discovery = Some(v1::DiscoveryInfo {
        name: "/web".into(),
        labels: (0..200).map(|i| (i.to_string(), String::new())).collect(),
        ..Default::default()
    });
    assert!(task_error_of(t).contains("discovery.labels"));
}

/// Task ids of the kills sent to `agent`.
fn kills_to(out: &[Outbound], agent: &str) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Outbound::Agent {
                agent_id,
                message:
                    v1::MasterMessage {
                        message: Some(master_message::Message::KillTask(k)),
                    },
            } if agent_id == agent => Some(k.task_id.clone()),
            _ => None,
        })
        .collect()
}

/// Two connected agents, a framework, and on the first agent running tasks `with` (discovery
/// info, no health check: in the endpoint table once RUNNING) and `without` (no discovery info).
fn world_with_endpoints(
    with: &[&str],
    without: &[&str],
) -> (World, String, String, v1::CallHeader) {
    let mut w = World::new();
    let a = w.agent("h1", "cpus:8;mem:8192;ports:[31000-31010]");
    let b = w.agent("h2", "cpus:1;mem:128");
    let h = w.framework("services", "web", 0.0);
    w.book.take_outbound();
    let offers = w.offers(1.0);
    let on_a = offers
        .iter()
        .find(|o| o.agent_id == a)
        .expect("offer of h1");
    let mut tasks = Vec::new();
    for (i, id) in with.iter().enumerate() {
        let mut t = task(id, "cpus:1;mem:128");
        t.discovery = Some(v1::DiscoveryInfo {
            name: format!("/web{i}"),
            ports: vec![v1::DiscoveryPort {
                number: 31000 + i as u32,
                service_port: 10000 + i as u32,
                ..Default::default()
            }],
            ..Default::default()
        });
        tasks.push(t);
    }
    for id in without {
        tasks.push(task(id, "cpus:1;mem:128"));
    }
    w.book
        .accept(launch(&h, &[&on_a.id], tasks), &w.at(1.5))
        .expect("accept");
    for id in with.iter().chain(without) {
        w.update(&a, &h.framework_id, id, TaskState::TaskRunning, 2.0);
    }
    w.book.take_outbound();
    assert_eq!(w.book.endpoint_services(), with.len());
    (w, a, b, h)
}

fn kill_req(h: &v1::CallHeader, task: &str) -> v1::KillRequest {
    v1::KillRequest {
        header: Some(h.clone()),
        task_id: task.into(),
        agent_id: String::new(),
        kill_policy: None,
    }
}

fn ack(w: &mut World, agent: &str, seq: u64, secs: f64) {
    let c = w.at(secs);
    w.book.agent_message(
        agent,
        agent_message::Message::EndpointAck(agent_message::EndpointAck { seq }),
        &c,
    );
}

#[test]
fn a_task_with_endpoints_leaves_every_agent_table_before_its_kill_is_sent() {
    let (mut w, a, b, h) = world_with_endpoints(&["t1"], &["t2"]);
    w.book.kill(kill_req(&h, "t1"), &w.at(3.0)).expect("kill");
    let out = w.book.take_outbound();
    // Both agents are told, with a number to acknowledge; the kill waits.
    let mut seq = 0;
    for agent in [&a, &b] {
        let u = endpoint_updates(&out, agent);
        assert_eq!(u.len(), 1, "{agent}");
        assert!(u[0].ack_seq > 0);
        assert!(u[0].services[0].endpoints.is_empty());
        seq = u[0].ack_seq;
    }
    assert!(kills_to(&out, &a).is_empty(), "killed before the drain");
    assert_eq!(w.book.draining_tasks(), 1);
    // The framework retries the kill: held once, not sent twice.
    w.book
        .kill(kill_req(&h, "t1"), &w.at(3.1))
        .expect("kill again");
    assert!(w.book.take_outbound().is_empty());
    // A task without endpoints is killed at once, draining or not.
    w.book
        .kill(kill_req(&h, "t2"), &w.at(3.1))
        .expect("kill t2");
    let out = w.book.take_outbound();
    assert_eq!(kills_to(&out, &a), ["t2"]);
    assert!(endpoint_updates(&out, &a).is_empty());
    // One agent acknowledges: still held. The last one: the kill goes to the task's agent.
    ack(&mut w, &a, seq, 3.2);
    assert!(kills_to(&w.book.take_outbound(), &a).is_empty());
    ack(&mut w, &b, seq, 3.3);
    assert_eq!(kills_to(&w.book.take_outbound(), &a), ["t1"]);
    assert_eq!(w.book.draining_tasks(), 0);
    assert_eq!(
        (
            w.book.counters().drains_started,
            w.book.counters().drains_acknowledged,
            w.book.counters().drains_timed_out
        ),
        (1, 1, 0)
    );
    // Once forwarded, a further kill is forwarded as before drains existed (the agent ignores a
    // repeat).
    w.book.kill(kill_req(&h, "t1"), &w.at(4.0)).expect("kill");
    assert_eq!(kills_to(&w.book.take_outbound(), &a), ["t1"]);
}

#[test]
fn a_silent_agent_holds_the_kill_for_the_drain_period_at_most() {
    let (mut w, a, b, h) = world_with_endpoints(&["t1"], &[]);
    w.book.kill(kill_req(&h, "t1"), &w.at(3.0)).expect("kill");
    let seq = endpoint_updates(&w.book.take_outbound(), &a)[0].ack_seq;
    ack(&mut w, &a, seq, 3.1);
    assert_eq!(w.book.next_drain_deadline(), Some(w.at(5.0).now));
    w.book.drain_tick(&w.at(4.9));
    assert!(kills_to(&w.book.take_outbound(), &a).is_empty());
    w.book.drain_tick(&w.at(5.0));
    assert_eq!(kills_to(&w.book.take_outbound(), &a), ["t1"]);
    assert_eq!(w.book.counters().drains_timed_out, 1);
    assert!(w.book.next_drain_deadline().is_none());
    // An agent whose session ends is waited for no more.
    let (mut w, a, b2, h) = world_with_endpoints(&["t1"], &[]);
    let _ = b;
    w.book.kill(kill_req(&h, "t1"), &w.at(3.0)).expect("kill");
    let seq = endpoint_updates(&w.book.take_outbound(), &a)[0].ack_seq;
    ack(&mut w, &a, seq, 3.1);
    w.book.agent_disconnected(&b2, &w.at(3.2));
    assert_eq!(kills_to(&w.book.take_outbound(), &a), ["t1"]);
    assert_eq!(w.book.counters().drains_acknowledged, 1);
}

#[test]
fn a_task_that_ends_while_draining_is_reported_and_not_killed() {
    let (mut w, a, b, h) = world_with_endpoints(&["t1"], &[]);
    w.book.kill(kill_req(&h, "t1"), &w.at(3.0)).expect("kill");
    let seq = endpoint_updates(&w.book.take_outbound(), &a)[0].ack_seq;
    w.update(&a, &h.framework_id, "t1", TaskState::TaskFailed, 3.1);
    let out = w.book.take_outbound();
    assert_eq!(
        updates(&out)
            .into_iter()
            .map(|(t, s, _)| (t, s))
            .collect::<Vec<_>>(),
        [("t1".to_string(), TaskState::TaskFailed)]
    );
    assert_eq!(w.book.draining_tasks(), 0);
    ack(&mut w, &a, seq, 3.2);
    ack(&mut w, &b, seq, 3.2);
    w.book.drain_tick(&w.at(10.0));
    assert!(kills_to(&w.book.take_outbound(), &a).is_empty());
}

#[test]
fn a_zero_drain_period_kills_at_once_and_maintenance_drains_too() {
    let (mut w, a, _, h) = world_with_endpoints(&["t1"], &[]);
    w.book.settings.drain_period = Duration::ZERO;
    w.book.kill(kill_req(&h, "t1"), &w.at(3.0)).expect("kill");
    assert_eq!(kills_to(&w.book.take_outbound(), &a), ["t1"]);
    // Maintenance (DrainAgent) kills through the same path: the endpoints leave first.
    let (mut w, a, b, _) = world_with_endpoints(&["t1", "t2"], &["t3"]);
    w.book
        .drain_agent(&a, None, &w.at(3.0))
        .expect("drain agent");
    let out = w.book.take_outbound();
    assert_eq!(kills_to(&out, &a), ["t3"]);
    let u = endpoint_updates(&out, &b);
    assert_eq!(u.len(), 1, "one update, one number, for the batch");
    assert_eq!(u[0].services.len(), 2);
    ack(&mut w, &a, u[0].ack_seq, 3.1);
    ack(&mut w, &b, u[0].ack_seq, 3.1);
    let mut k = kills_to(&w.book.take_outbound(), &a);
    k.sort();
    assert_eq!(k, ["t1", "t2"]);
}

fn rescinded(out: &[Outbound]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Outbound::Framework {
                event:
                    v1::Event {
                        event: Some(event::Event::Rescind(r)),
                    },
                ..
            } => Some(r.offer_id.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn update_framework_changes_the_info_and_new_roles_are_offered_at_once() {
    let mut w = World::new();
    w.agent("h1", "cpus:2;mem:1024");
    let h = w.framework("before", "*", 0.0);
    let held = w.offers(1.0);
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].allocation_role, "*");
    w.book.take_outbound();
    let mut info = w.book.frameworks[&h.framework_id].info.clone();
    info.name = "after".into();
    info.roles = vec!["web".into(), "batch".into()];
    info.failover_timeout_seconds = 3600.0;
    info.capabilities
        .push(v1::FrameworkCapability::MultiRole as i32);
    info.labels.insert("team".into(), "data".into());
    w.book
        .update_framework(Some(&h), info, vec!["batch".into()])
        .expect("update");
    // The offer made under the old role is taken back and told.
    assert_eq!(rescinded(&w.book.take_outbound()), vec![held[0].id.clone()]);
    let fw = &w.book.frameworks[&h.framework_id];
    assert_eq!(fw.info.name, "after");
    assert_eq!(fw.info.roles, ["web", "batch"]);
    assert_eq!(fw.info.failover_timeout_seconds, 3600.0);
    assert_eq!(fw.info.labels["team"], "data");
    assert!(fw.connected);
    assert_eq!(fw.suppressed, HashSet::from(["batch".to_string()]));
    // The same subscription goes on: offered again at once, under the unsuppressed new role.
    let again = w.offers(1.1);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].allocation_role, "web");
    // A longer failover timeout is in force when it disconnects.
    w.book
        .framework_disconnected(&h.framework_id, &h.stream_id, &w.at(2.0));
    assert!(w.book.frameworks.contains_key(&h.framework_id));
}

#[test]
fn update_framework_replaces_the_suppressed_roles_and_keeps_its_tasks() {
    let mut w = World::new();
    let a = w.agent("h1", "cpus:2;mem:1024");
    let h = w.framework("f", "web", 60.0);
    let offers = w.offers(1.0);
    w.book
        .accept(
            launch(&h, &[&offers[0].id], vec![task("t1", "cpus:1;mem:128")]),
            &w.at(1.0),
        )
        .expect("accept");
    w.update(&a, &h.framework_id, "t1", TaskState::TaskRunning, 1.1);
    w.book.take_outbound();
    let info = w.book.frameworks[&h.framework_id].info.clone();
    // Suppressed: no offers, with the roles unchanged (nothing rescinded, nothing re-added).
    w.book
        .update_framework(Some(&h), info.clone(), vec!["web".into()])
        .expect("suppress by update");
    assert!(rescinded(&w.book.take_outbound()).is_empty());
    assert!(w.offers(2.0).is_empty());
    // Out of the suppressed set: offered again what the running task leaves.
    w.book
        .update_framework(Some(&h), info, vec![])
        .expect("revive by update");
    let again = w.offers(3.0);
    assert_eq!(again.len(), 1);
    let left = Resources::from_proto(&again[0].resources).expect("resources");
    assert_eq!(left.scalar_total("cpus"), 1.0);
    assert!(w
        .book
        .tasks
        .contains_key(&(h.framework_id.clone(), "t1".into())));
}

#[test]
fn update_framework_refuses_fixed_fields_and_bad_values_and_changes_nothing() {
    let mut w = World::new();
    w.agent("h1", "cpus:2;mem:1024");
    let h = w.framework("f", "web", 60.0);
    let base = w.book.frameworks[&h.framework_id].info.clone();
    let change = |f: &dyn Fn(&mut v1::FrameworkInfo)| {
        let mut i = base.clone();
        i.name = "renamed".into();
        f(&mut i);
        i
    };
    let cases: Vec<(v1::FrameworkInfo, Vec<String>, &str)> = vec![
        (
            change(&|i| i.user = "other".into()),
            vec![],
            "framework_info.user",
        ),
        (
            change(&|i| i.principal = "p2".into()),
            vec![],
            "framework_info.principal",
        ),
        (
            change(&|i| i.checkpoint = !i.checkpoint),
            vec![],
            "framework_info.checkpoint",
        ),
        (
            change(&|i| i.id = "someone-else".into()),
            vec![],
            "framework_info.id",
        ),
        (change(&|i| i.id.clear()), vec![], "framework_info.id"),
        (
            change(&|i| i.roles = vec!["bad role".into()]),
            vec![],
            "framework_info.roles[0]",
        ),
        (
            change(&|i| i.failover_timeout_seconds = f64::NAN),
            vec![],
            "framework_info.failover_timeout_seconds",
        ),
        (change(&|_| {}), vec!["batch".into()], "suppressed_roles[0]"),
    ];
    for (info, suppressed, field) in cases {
        let err = w
            .book
            .update_framework(Some(&h), info, suppressed)
            .expect_err(field);
        assert!(
            matches!(&err, MasterError::InvalidArgument { field: f, .. } if f == field),
            "{field}: {err}"
        );
    }
    // Another stream (a replaced scheduler instance) may not update it.
    let stale = v1::CallHeader {
        framework_id: h.framework_id.clone(),
        stream_id: "not-the-stream".into(),
    };
    assert!(w
        .book
        .update_framework(Some(&stale), change(&|_| {}), vec![])
        .is_err());
    assert_eq!(w.book.frameworks[&h.framework_id].info, base);
    assert_eq!(w.offers(1.0).len(), 1);
}

#[test]
fn refused_tasks_get_task_error_on_the_offers_agent_and_the_offers_stay_usable() {
    let mut w = World::new();
    let a = w.agent("h1", "cpus:2;mem:1024");
    let h = w.framework("f", "*", 0.0);
    let offers = w.offers(1.0);
    w.book.take_outbound();
    w.book
        .refuse_tasks(
            Some(&h),
            std::slice::from_ref(&offers[0].id),
            vec![("gpu".into(), "uses a SET resource".into())],
            &w.at(1.0),
        )
        .expect("refused");
    let out = w.book.take_outbound();
    assert_eq!(
        updates(&out),
        vec![(
            "gpu".to_string(),
            TaskState::TaskError,
            "uses a SET resource".to_string()
        )]
    );
    let agent_of_update = out.iter().find_map(|o| match o {
        Outbound::Framework {
            event: v1::Event {
                event: Some(event::Event::Update(u)),
            },
            ..
        } => u.status.as_ref().map(|s| s.agent_id.clone()),
        _ => None,
    });
    assert_eq!(agent_of_update.as_deref(), Some(a.as_str()));
    // The offer was not touched: the rest of the call launches from it.
    w.book
        .accept(
            launch(&h, &[&offers[0].id], vec![task("plain", "cpus:1;mem:128")]),
            &w.at(1.1),
        )
        .expect("accept");
    assert_eq!(run_tasks(&w.book.take_outbound()), ["plain"]);
    // A task id out of bounds, or another stream, is refused as a call.
    assert!(w
        .book
        .refuse_tasks(
            Some(&h),
            &[],
            vec![("x".repeat(300), "why".into())],
            &w.at(1.2)
        )
        .is_err());
    let stale = v1::CallHeader {
        framework_id: h.framework_id.clone(),
        stream_id: "other".into(),
    };
    assert!(w
        .book
        .refuse_tasks(
            Some(&stale),
            &[],
            vec![("t".into(), "why".into())],
            &w.at(1.2)
        )
        .is_err());
}

#[test]
fn update_framework_to_other_roles_keeps_counting_its_running_tasks_once() {
    let mut w = World::new();
    let a = w.agent("h1", "cpus:2;mem:1024");
    let h = w.framework("f", "web", 60.0);
    let offers = w.offers(1.0);
    w.book
        .accept(
            launch(&h, &[&offers[0].id], vec![task("t1", "cpus:1;mem:128")]),
            &w.at(1.0),
        )
        .expect("accept");
    w.update(&a, &h.framework_id, "t1", TaskState::TaskRunning, 1.1);
    let mut info = w.book.frameworks[&h.framework_id].info.clone();
    info.roles = vec!["batch".into()];
    w.book
        .update_framework(Some(&h), info, vec![])
        .expect("update");
    // Offered under the new role what the running task leaves, no more and no less.
    let again = w.offers(2.0);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].allocation_role, "batch");
    let left = Resources::from_proto(&again[0].resources).expect("resources");
    assert_eq!(left.scalar_total("cpus"), 1.0);
    assert_eq!(left.scalar_total("mem"), 896.0);
    let t = &w.book.tasks[&(h.framework_id.clone(), "t1".to_string())];
    assert_eq!(t.role, "batch");
    // When it ends, all of the agent comes back.
    w.update(&a, &h.framework_id, "t1", TaskState::TaskFinished, 3.0);
    w.book
        .decline(
            v1::DeclineRequest {
                header: Some(h.clone()),
                offer_ids: vec![again[0].id.clone()],
                filters: Some(v1::Filters {
                    refuse_seconds: Some(0.0),
                }),
            },
            &w.at(3.0),
        )
        .expect("decline");
    let all: f64 = w
        .offers(4.0)
        .iter()
        .map(|o| {
            Resources::from_proto(&o.resources)
                .expect("resources")
                .scalar_total("cpus")
        })
        .sum();
    assert_eq!(all, 2.0);
}
