use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn group(yaml: &str) -> Value {
    parse("shop", yaml, &no_env)
        .expect("parses")
        .group(&[])
        .expect("group")
}

fn app<'a>(g: &'a Value, service: &str) -> &'a Value {
    g["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .find(|a| a["id"] == format!("/shop/{service}"))
        .expect("app")
}

fn errors(yaml: &str) -> Vec<String> {
    match parse("shop", yaml, &no_env) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_minimal_service_is_a_docker_app_in_the_stack_group() {
    let g = group("services:\n  web:\n    image: busybox:latest\n");
    assert_eq!(g["id"], "/shop");
    let a = app(&g, "web");
    assert_eq!(a["instances"], 1);
    assert_eq!(a["container"]["type"], "DOCKER");
    assert_eq!(a["container"]["docker"]["image"], "busybox:latest");
    assert_eq!(a["container"]["docker"]["forcePullImage"], false);
    assert_eq!(a["networks"], json!([{ "mode": "container/bridge" }]));
    assert_eq!(a["labels"][STACK_LABEL], "shop");
    assert_eq!(a["cpus"], DEFAULT_CPUS);
    assert_eq!(a["mem"], DEFAULT_MEM);
    assert!(a.get("args").is_none() && a.get("cmd").is_none());
    // Compose's default update: one at a time, stop first.
    assert_eq!(a["upgradeStrategy"]["maximumOverCapacity"], 0.0);
    assert_eq!(a["upgradeStrategy"]["minimumHealthCapacity"], 0.0);
}

#[test]
fn command_and_entrypoint_become_args_in_compose_order() {
    let g = group(
        r#"
services:
  a:
    image: i
    command: sh -c "httpd -f -p 80"
  b:
    image: i
    entrypoint: ["/bin/tini", "--"]
    command: ["run", "x y"]
  c:
    image: i
    entrypoint: /entry.sh --flag
"#,
    );
    assert_eq!(app(&g, "a")["args"], json!(["sh", "-c", "httpd -f -p 80"]));
    assert_eq!(
        app(&g, "b")["args"],
        json!(["/bin/tini", "--", "run", "x y"])
    );
    assert_eq!(app(&g, "c")["args"], json!(["/entry.sh", "--flag"]));
}

#[test]
fn environment_list_and_map_forms() {
    let env = |k: &str| (k == "FROM_SHELL").then(|| "yes".to_string());
    let s = parse(
        "shop",
        r#"
services:
  a:
    image: i
    environment:
      - A=1
      - B=x=y
      - FROM_SHELL
      - UNSET
  b:
    image: i
    environment:
      N: 5
      T: true
      S: "s"
      FROM_SHELL:
"#,
        &env,
    )
    .expect("parses");
    let g = s.group(&[]).expect("group");
    assert_eq!(
        app(&g, "a")["env"],
        json!({ "A": "1", "B": "x=y", "FROM_SHELL": "yes" })
    );
    assert_eq!(
        app(&g, "b")["env"],
        json!({ "N": "5", "T": "true", "S": "s", "FROM_SHELL": "yes" })
    );
}

#[test]
fn ports_short_and_long_syntax() {
    let g = group(
        r#"
services:
  web:
    image: i
    ports:
      - "8080:80"
      - "9000"
      - 53:53/udp
      - target: 443
        published: 8443
        protocol: tcp
      - target: 9100
        published: "9101"
        mode: host
"#,
    );
    assert_eq!(
        app(&g, "web")["container"]["portMappings"],
        json!([
            { "containerPort": 80, "hostPort": 0, "servicePort": 8080, "protocol": "tcp" },
            { "containerPort": 9000, "hostPort": 0, "servicePort": 0, "protocol": "tcp" },
            { "containerPort": 53, "hostPort": 0, "servicePort": 53, "protocol": "udp" },
            { "containerPort": 443, "hostPort": 0, "servicePort": 8443, "protocol": "tcp" },
            { "containerPort": 9100, "hostPort": 9101, "protocol": "tcp" },
        ])
    );
}

#[test]
fn bad_ports_name_the_entry() {
    let e = errors(
        r#"
services:
  web:
    image: i
    ports:
      - "127.0.0.1:8080:80"
      - "8000-8010:80-90"
      - "x:80"
      - "80/sctp"
      - { target: 80, mode: host }
      - { target: 81, host_ip: 0.0.0.0 }
      - "8080:81"
"#,
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("service web: ports[0]: ") && m.contains("host IP")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("service web: ports[1]: ") && m.contains("ranges")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("service web: ports[2]: ") && m.contains("'x' is not a port")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("service web: ports[3]: ") && m.contains("tcp or udp")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("service web: ports[4]: ") && m.contains("published")),
        "{e:?}"
    );
    assert!(
        e.contains(&"service web: unsupported key 'ports[5].host_ip'".to_string()),
        "{e:?}"
    );
}

#[test]
fn a_published_port_belongs_to_one_service() {
    let e = errors("services:\n  a:\n    image: i\n    ports: ['80:80']\n  b:\n    image: i\n    ports: ['80:8080']\n");
    assert_eq!(
        e,
        ["service b: ports[0]: published port 80 is published by service a too"]
    );
}

#[test]
fn replicas_resources_and_units() {
    let g = group(
        r#"
services:
  a:
    image: i
    deploy:
      replicas: 3
      resources:
        limits: { cpus: "0.5", memory: 512M }
        reservations: { cpus: 0.25, memory: 256m }
  b:
    image: i
    deploy:
      resources:
        reservations: { memory: 1.5g }
  c:
    image: i
    deploy:
      replicas: 0
      resources:
        limits: { memory: 67108864 }
"#,
    );
    let a = app(&g, "a");
    assert_eq!(
        (a["instances"].clone(), a["cpus"].clone(), a["mem"].clone()),
        (json!(3), json!(0.5), json!(512.0))
    );
    assert_eq!(app(&g, "b")["mem"], 1536.0);
    assert_eq!(app(&g, "b")["cpus"], DEFAULT_CPUS);
    assert_eq!(app(&g, "c")["mem"], 64.0);
    assert_eq!(app(&g, "c")["instances"], 0);
}

#[test]
fn bad_resources_and_replicas() {
    let e = errors(
        r#"
services:
  a:
    image: i
    deploy:
      replicas: -1
      resources:
        limits: { cpus: "lots", memory: 12X, pids: 5 }
  b:
    image: i
    deploy:
      replicas: 100000000
      resources:
        limits: { cpus: 1, memory: 100M }
        reservations: { cpus: 2, memory: 200M }
"#,
    );
    for want in [
        "service a: deploy.replicas: must be a whole number from 0 to 10000",
        "service a: deploy.resources.limits.cpus: 'lots' is not a positive number of CPUs",
        "service a: unsupported key 'deploy.resources.limits.pids'",
        "service b: deploy.replicas: must be a whole number from 0 to 10000",
        "service b: deploy.resources.reservations.cpus: 2 is more than the limit 1",
        "service b: deploy.resources.reservations.memory: 200 MiB is more than the limit 100 MiB",
    ] {
        assert!(e.contains(&want.to_string()), "missing {want:?} in {e:?}");
    }
    assert!(
        e.iter()
            .any(|m| m.starts_with("service a: deploy.resources.limits.memory: '12X'")),
        "{e:?}"
    );
}

#[test]
fn placement_constraints() {
    let g = group(
        r#"
services:
  a:
    image: i
    deploy:
      placement:
        constraints:
          - node.hostname == web-1.example.com
          - node.labels.zone!=eu
          - "node.labels.disk==ssd"
        max_replicas_per_node: 2
"#,
    );
    assert_eq!(
        app(&g, "a")["constraints"],
        json!([
            ["hostname", "LIKE", "web\\-1\\.example\\.com"],
            ["zone", "UNLIKE", "eu"],
            ["disk", "LIKE", "ssd"],
            ["hostname", "MAX_PER", "2"],
        ])
    );
    let e = errors("services:\n  a:\n    image: i\n    deploy:\n      placement:\n        constraints: ['node.role==manager', 'node.labels.x', 'node.labels.==y']\n        preferences: []\n");
    assert!(
        e.iter().any(
            |m| m.starts_with("service a: deploy.placement.constraints[0]: ")
                && m.contains("only node.hostname")
        ),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("service a: deploy.placement.constraints[1]: ")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("service a: deploy.placement.constraints[2]: ")),
        "{e:?}"
    );
    assert!(
        e.contains(&"service a: unsupported key 'deploy.placement.preferences'".to_string()),
        "{e:?}"
    );
}

#[test]
fn global_mode_runs_one_task_on_every_matching_agent() {
    let s = parse(
        "shop",
        "services:\n  agent:\n    image: i\n    deploy:\n      mode: global\n      placement:\n        constraints: ['node.labels.zone==eu']\n  web:\n    image: i\n",
        &no_env,
    )
    .expect("parses");
    assert!(s.needs_agents());
    let agent = |h: &str, zone: Option<&str>| Agent {
        hostname: h.into(),
        attributes: zone
            .map(|z| [("zone".to_string(), z.to_string())].into())
            .unwrap_or_default(),
    };
    let agents = [
        agent("a", Some("eu")),
        agent("b", Some("us")),
        agent("c", Some("eu")),
        agent("d", None),
    ];
    let g = s.group(&agents).expect("group");
    let a = app(&g, "agent");
    assert_eq!(a["instances"], 2);
    assert_eq!(
        a["constraints"],
        json!([["zone", "LIKE", "eu"], ["hostname", "UNIQUE"]])
    );
    // The framework follows the agents from there (crate::global): the label says so.
    assert_eq!(a["labels"][crate::global::GLOBAL_LABEL], "true");
    assert_eq!(app(&g, "web")["instances"], 1);
    assert_eq!(app(&g, "web").get("constraints"), None);
    assert_eq!(
        app(&g, "web")["labels"].get(crate::global::GLOBAL_LABEL),
        None
    );
    let e = errors("services:\n  c:\n    image: i\n    labels: { AGORA_GLOBAL: 'true' }\n");
    assert!(
        e.contains(
            &"service c: labels: 'AGORA_GLOBAL' is set by `agora stack deploy` from deploy.mode"
                .to_string()
        ),
        "{e:?}"
    );
    let e = errors("services:\n  a:\n    image: i\n    deploy: { mode: global, replicas: 2 }\n  b:\n    image: i\n    deploy: { mode: replicated-job }\n");
    assert!(
        e.contains(
            &"service a: deploy.replicas: cannot be given with mode: global (one task per agent)"
                .to_string()
        ),
        "{e:?}"
    );
    assert!(
        e.contains(&"service b: deploy.mode: must be replicated or global".to_string()),
        "{e:?}"
    );
}

#[test]
fn update_config_becomes_the_upgrade_strategy() {
    let strategy = |yaml: &str| app(&group(yaml), "a")["upgradeStrategy"].clone();
    assert_eq!(
        strategy("services:\n  a:\n    image: i\n    deploy:\n      replicas: 4\n      update_config: { parallelism: 2, order: start-first }\n"),
        json!({ "minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.5 })
    );
    assert_eq!(
        strategy("services:\n  a:\n    image: i\n    deploy:\n      replicas: 4\n      update_config: { parallelism: 1, order: stop-first }\n"),
        json!({ "minimumHealthCapacity": 0.75, "maximumOverCapacity": 0.0 })
    );
    assert_eq!(
        strategy("services:\n  a:\n    image: i\n    deploy:\n      replicas: 3\n      update_config: { parallelism: 0, order: start-first }\n"),
        json!({ "minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0 })
    );
    assert_eq!(
        strategy("services:\n  a:\n    image: i\n    deploy:\n      replicas: 3\n      update_config: { parallelism: 1 }\n"),
        json!({ "minimumHealthCapacity": 0.666, "maximumOverCapacity": 0.0 })
    );
    let e = errors("services:\n  a:\n    image: i\n    deploy:\n      update_config: { order: random, delay: 10s, parallelism: x }\n");
    assert!(
        e.contains(
            &"service a: deploy.update_config.order: must be start-first or stop-first".to_string()
        ),
        "{e:?}"
    );
    assert!(
        e.contains(&"service a: unsupported key 'deploy.update_config.delay'".to_string()),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("service a: deploy.update_config.parallelism: ")),
        "{e:?}"
    );
}

#[test]
fn depends_on_list_and_map_forms() {
    let g = group(
        r#"
services:
  db:
    image: i
  cache:
    image: i
  web:
    image: i
    depends_on: [db, cache]
  worker:
    image: i
    depends_on:
      web: { condition: service_healthy }
      db:
"#,
    );
    assert_eq!(
        app(&g, "web")["dependencies"],
        json!(["/shop/db", "/shop/cache"])
    );
    assert_eq!(
        app(&g, "worker")["dependencies"],
        json!(["/shop/db", "/shop/web"])
    );
    assert_eq!(app(&g, "db").get("dependencies"), None);
    let e = errors("services:\n  a:\n    image: i\n    depends_on: [a, nope]\n  b:\n    image: i\n    depends_on:\n      a: { condition: service_completed_successfully, restart: true }\n");
    assert!(
        e.contains(&"service a: depends_on[0]: a service cannot depend on itself".to_string()),
        "{e:?}"
    );
    assert!(
        e.contains(&"service a: depends_on[1]: 'nope' is not a service of this file".to_string()),
        "{e:?}"
    );
    assert!(
        e.contains(&"service b: unsupported key 'depends_on.a.restart'".to_string()),
        "{e:?}"
    );
    assert!(
        e.iter().any(|m| m.starts_with(
            "service b: depends_on.a.condition: 'service_completed_successfully' is not supported"
        )),
        "{e:?}"
    );
}

#[test]
fn healthcheck_forms_and_timings() {
    let g = group(
        r#"
services:
  a:
    image: i
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "-", "http://localhost/it's"]
      interval: 1m30s
      timeout: 500ms
      retries: 5
      start_period: 10s
  b:
    image: i
    healthcheck:
      test: ["CMD-SHELL", "curl -f http://localhost || exit 1"]
  c:
    image: i
    healthcheck:
      test: pidof httpd
  d:
    image: i
    healthcheck:
      test: ["NONE"]
  e:
    image: i
    healthcheck:
      test: pidof x
      disable: true
"#,
    );
    assert_eq!(
        app(&g, "a")["healthChecks"],
        json!([{
            "protocol": "COMMAND",
            "command": { "value": "wget -q -O - \"http://localhost/it's\"" },
            "intervalSeconds": 90.0,
            "timeoutSeconds": 1.0,
            "gracePeriodSeconds": 10.0,
            "maxConsecutiveFailures": 5,
        }])
    );
    let b = &app(&g, "b")["healthChecks"][0];
    assert_eq!(b["command"]["value"], "curl -f http://localhost || exit 1");
    assert_eq!(
        (
            b["intervalSeconds"].clone(),
            b["timeoutSeconds"].clone(),
            b["maxConsecutiveFailures"].clone(),
            b["gracePeriodSeconds"].clone()
        ),
        (json!(30.0), json!(30.0), json!(3), json!(0.0))
    );
    assert_eq!(
        app(&g, "c")["healthChecks"][0]["command"]["value"],
        "pidof httpd"
    );
    assert_eq!(app(&g, "d").get("healthChecks"), None);
    assert_eq!(app(&g, "e").get("healthChecks"), None);
    let e = errors("services:\n  a:\n    image: i\n    healthcheck:\n      test: [CMD]\n  b:\n    image: i\n    healthcheck:\n      test: pidof x\n      interval: 5 minutes\n      start_interval: 1s\n");
    assert!(
        e.iter()
            .any(|m| m.starts_with("service a: healthcheck.test: must be")),
        "{e:?}"
    );
    assert!(
        e.iter().any(
            |m| m.starts_with("service b: healthcheck.interval: '5 minutes' is not a duration")
        ),
        "{e:?}"
    );
    assert!(
        e.contains(&"service b: unsupported key 'healthcheck.start_interval'".to_string()),
        "{e:?}"
    );
}

#[test]
fn bind_volumes_labels_user_and_working_dir() {
    let g = group(
        r#"
services:
  a:
    image: i
    volumes:
      - /srv/data:/data
      - /etc/conf:/conf:ro
      - type: bind
        source: /logs
        target: /var/log
        read_only: true
    labels:
      - team=web
      - flag
    user: nobody
    working_dir: /app
    deploy:
      labels: { tier: front }
"#,
    );
    let a = app(&g, "a");
    assert_eq!(
        a["container"]["volumes"],
        json!([
            { "hostPath": "/srv/data", "containerPath": "/data", "mode": "RW" },
            { "hostPath": "/etc/conf", "containerPath": "/conf", "mode": "RO" },
            { "hostPath": "/logs", "containerPath": "/var/log", "mode": "RO" },
        ])
    );
    assert_eq!(
        a["labels"],
        json!({ "team": "web", "flag": "", "tier": "front", STACK_LABEL: "shop" })
    );
    assert_eq!(a["user"], "nobody");
    assert_eq!(
        a["container"]["docker"]["parameters"],
        json!([{ "key": "workdir", "value": "/app" }])
    );
    let e = errors(
        r#"
services:
  a:
    image: i
    volumes: [data:/data, ./rel:/rel, /x:/y:z, /only, {type: volume, source: v, target: /v}]
    user: "1000:1000"
    working_dir: rel
    labels: { com.docker.stack.namespace: other }
"#,
    );
    for prefix in [
        "service a: volumes[0]: source 'data' must be an absolute path",
        "service a: volumes[1]: source './rel' must be an absolute path",
        "service a: volumes[2]: mode 'z' is not supported",
        "service a: volumes[3]: '/only': anonymous volumes",
        "service a: volumes[4].type: only bind mounts",
        "service a: user: '1000:1000': a group is not supported",
        "service a: working_dir: must be an absolute path",
        "service a: labels: 'com.docker.stack.namespace' is set by",
    ] {
        assert!(
            e.iter().any(|m| m.starts_with(prefix)),
            "missing {prefix:?} in {e:?}"
        );
    }
}

#[test]
fn every_unsupported_key_is_listed_with_its_service() {
    let e = errors(
        r#"
version: "3.8"
x-common: &common
  image: busybox
services:
  web:
    <<: *common
    build: .
    cap_add: [NET_ADMIN]
    networks: [front]
    x-note: fine
    deploy:
      restart_policy: { condition: on-failure }
  db:
    image: postgres
    restart: always
    env_file: db.env
networks:
  front: {}
secrets:
  s: { file: s.txt }
configs: {}
volumes: {}
"#,
    );
    let mut want = vec![
        "unsupported top-level key 'configs'",
        "unsupported top-level key 'networks'",
        "unsupported top-level key 'secrets'",
        "unsupported top-level key 'volumes'",
        "service db: unsupported key 'env_file'",
        "service db: unsupported key 'restart'",
        "service web: unsupported key 'build'",
        "service web: unsupported key 'cap_add'",
        "service web: unsupported key 'networks'",
        "service web: unsupported key 'deploy.restart_policy'",
    ];
    let mut got: Vec<&str> = e.iter().map(String::as_str).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
}

#[test]
fn bad_files_names_and_bounds() {
    let bad = |name: &str, yaml: &str| match parse(name, yaml, &no_env) {
        Ok(_) => panic!("expected errors for {yaml:?}"),
        Err(e) => e.to_string(),
    };
    assert!(bad("shop", "services: [a").starts_with("file: is not valid YAML"));
    assert!(bad("shop", "- a\n- b\n").starts_with("file: must be a mapping"));
    assert_eq!(
        bad("shop", "version: '3'\n"),
        "services: the file defines no service"
    );
    assert!(bad("Shop", "services:\n  a:\n    image: i\n")
        .starts_with("NAME: stack name 'Shop' must be"));
    assert!(bad("shop", "services:\n  Web_1:\n    image: i\n")
        .starts_with("services.Web_1: a service name must be"));
    let long = "a".repeat(MAX_NAME + 1);
    assert!(
        bad("shop", &format!("services:\n  {long}:\n    image: i\n"))
            .contains("a service name must be")
    );
    assert!(bad("shop", "services:\n  a:\n    command: x\n")
        .starts_with("service a: image: is required"));
    assert_eq!(
        bad("shop", "services:\n  a:\n"),
        "service a: a service must be a mapping"
    );
    let huge = format!(
        "services:\n  a:\n    image: i\n# {}\n",
        "x".repeat(MAX_FILE)
    );
    assert!(bad("shop", &huge).starts_with("file: is "));
    let many: String = (0..=MAX_SERVICES)
        .map(|i| format!("  s{i}:\n    image: i\n"))
        .collect();
    assert!(bad("shop", &format!("services:\n{many}")).contains("at most 200 are allowed"));
    // Several problems of a file come back together.
    let all = bad(
        "shop",
        "services:\n  a:\n    image: i\n    ports: [x]\n    build: .\n",
    );
    assert_eq!(all.lines().count(), 2, "{all}");
}

#[test]
fn interpolation_is_refused_and_double_dollar_is_a_dollar() {
    let g = group("services:\n  a:\n    image: i\n    command: [sh, -c, 'echo $$HOME']\n");
    assert_eq!(app(&g, "a")["args"], json!(["sh", "-c", "echo $HOME"]));
    let e = errors("services:\n  a:\n    image: 'busybox:${TAG}'\n    environment: [X=$HOME]\n");
    assert!(
        e.iter().any(
            |m| m.starts_with("service a: image: 'busybox:${TAG}' uses variable interpolation")
        ),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("service a: environment[0]: ")),
        "{e:?}"
    );
}

#[test]
fn the_group_is_what_the_services_api_accepts() {
    let g = group(
        r#"
services:
  web:
    image: agora-busybox:local
    command: httpd -f -p 80
    ports: ["8080:80"]
    healthcheck: { test: "wget -q -O /dev/null http://127.0.0.1/", interval: 1s }
    deploy: { replicas: 2, resources: { limits: { cpus: 0.2, memory: 64M } } }
  worker:
    image: agora-busybox:local
    command: ["sleep", "3600"]
    depends_on: [web]
"#,
    );
    let body: crate::group::GroupBody = serde_json::from_value(g).expect("body");
    let target = crate::group::read_group("/shop", &body).expect("accepted");
    let web = target
        .apps
        .iter()
        .find(|a| a.id == "/shop/web")
        .expect("web");
    assert_eq!(web.instances, 2);
    assert_eq!(
        web.container.as_ref().expect("c").port_mappings[0].service_port,
        Some(8080)
    );
    let worker = target
        .apps
        .iter()
        .find(|a| a.id == "/shop/worker")
        .expect("worker");
    assert_eq!(worker.dependencies, ["/shop/web"]);
    assert_eq!(
        worker.args.as_deref(),
        Some(&["sleep".to_string(), "3600".to_string()][..])
    );
}

#[test]
fn what_only_the_api_bounds_is_named_by_service() {
    let s = parse(
        "shop",
        &format!(
            "services:\n  a:\n    image: '{}'\n",
            "i".repeat(limits::MAX_STRING + 1)
        ),
        &no_env,
    )
    .expect("parses");
    let e = s.group(&[]).expect_err("refused").to_string();
    assert!(
        e.starts_with("service a: (app field /container/docker/image): "),
        "{e}"
    );
}

#[test]
fn a_redeploy_that_only_changes_replicas_keeps_the_deployed_strategy() {
    let yaml = |replicas: u32, image: &str| {
        format!("services:\n  web:\n    image: {image}\n    ports: ['9000']\n    deploy:\n      replicas: {replicas}\n      update_config: {{ order: start-first }}\n")
    };
    let mut deployed = group(&yaml(1, "i"));
    // As the API shows it: the service port assigned, a version, the task counts.
    deployed["apps"][0]["container"]["portMappings"][0]["servicePort"] = json!(10004);
    deployed["apps"][0]["version"] = json!("2026-01-01T00:00:00.000Z");
    deployed["apps"][0]["tasksRunning"] = json!(1);
    let deployed_apps = deployed["apps"].as_array().expect("apps").clone();
    let mut scaled = group(&yaml(4, "i"));
    assert_eq!(
        scaled["apps"][0]["upgradeStrategy"]["maximumOverCapacity"],
        0.25
    );
    assert_eq!(
        keep_strategy_on_scale(&mut scaled, &deployed_apps),
        ["/shop/web"]
    );
    assert_eq!(
        scaled["apps"][0]["upgradeStrategy"],
        deployed_apps[0]["upgradeStrategy"]
    );
    assert_eq!(scaled["apps"][0]["instances"], 4);
    // Another change too: the strategy for the new count goes with it.
    let mut changed = group(&yaml(4, "j"));
    assert!(keep_strategy_on_scale(&mut changed, &deployed_apps).is_empty());
    assert_eq!(
        changed["apps"][0]["upgradeStrategy"]["maximumOverCapacity"],
        0.25
    );
}

#[test]
fn hostile_yaml_is_refused_not_expanded() {
    // Aliases nested ten deep would expand to 10^10 strings.
    let mut y = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        y.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    y.push_str("services:\n  web:\n    image: i\n    command: *a9\n");
    let started = std::time::Instant::now();
    let e = parse("shop", &y, &no_env).expect_err("refused");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(e.to_string().starts_with("file: "), "{e}");
    // Nesting past the parser's recursion limit.
    let deep = format!(
        "services:\n  web:\n    image: i\n    labels: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let e = parse("shop", &deep, &no_env).expect_err("refused");
    assert!(e.to_string().starts_with("file: is not valid YAML"), "{e}");
}
