//! Turning an app into a TaskInfo: command or Docker container, ports (`$PORT0…`, port mappings
//! onto the host ports from the offer), Marathon's environment variables, and the app's first
//! health check run by the agent next to the task.

use std::collections::HashMap;

use agora_proto::v1;
use agora_sdk::Carved;

use crate::app::limits::{clamp_seconds_to, MAX_HEALTH_SECONDS, MAX_KILL_GRACE_SECONDS};
use crate::app::App;

fn env_string(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The TaskInfo for one instance of `app` on `offer`, with the resources carved for it;
/// `host_aliases`: the names the task resolves to its agent's routing mesh
/// ([`crate::compose::stack_aliases`]; a task without a container then gets a NATIVE one to carry
/// them).
pub fn task_info(
    app: &App,
    task_id: &str,
    version: &str,
    carved: &Carved,
    offer: &v1::Offer,
    host_aliases: &[String],
) -> v1::TaskInfo {
    let mut env: HashMap<String, String> = app
        .env
        .iter()
        .map(|(k, v)| (k.clone(), env_string(v)))
        .collect();
    env.insert("MARATHON_APP_ID".into(), app.id.clone());
    env.insert("MARATHON_APP_VERSION".into(), version.to_string());
    env.insert("MARATHON_APP_RESOURCE_CPUS".into(), app.cpus.to_string());
    env.insert("MARATHON_APP_RESOURCE_MEM".into(), app.mem.to_string());
    env.insert("MESOS_TASK_ID".into(), task_id.to_string());
    env.insert("HOST".into(), offer.hostname.clone());
    for (k, v) in &app.labels {
        let key: String = k
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        env.insert(format!("MARATHON_APP_LABEL_{key}"), v.clone());
    }
    for (i, p) in carved.ports.iter().enumerate() {
        env.insert(format!("PORT{i}"), p.to_string());
    }
    if let Some(p) = carved.ports.first() {
        env.insert("PORT".into(), p.to_string());
    }
    if !carved.ports.is_empty() {
        env.insert(
            "PORTS".into(),
            carved
                .ports
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    let names: Vec<Option<String>> = if app.bridged() {
        app.container
            .as_ref()
            .map(|c| c.port_mappings.iter().map(|p| p.name.clone()).collect())
            .unwrap_or_default()
    } else {
        app.port_definitions
            .iter()
            .map(|p| p.name.clone())
            .collect()
    };
    if !app.bridged() {
        // Marathon's `PORT_<requested>`: a port the app declares (its service port) → the host
        // port the task got for it.
        for (declared, port) in app.port_definitions.iter().zip(carved.ports.iter()) {
            if declared.port != 0 {
                env.insert(format!("PORT_{}", declared.port), port.to_string());
            }
        }
    }
    for (name, port) in names.iter().zip(carved.ports.iter()) {
        if let Some(n) = name {
            env.insert(
                format!("PORT_{}", n.to_ascii_uppercase().replace('-', "_")),
                port.to_string(),
            );
        }
    }
    let uris: Vec<v1::Uri> = app
        .fetch
        .iter()
        .map(|f| v1::Uri {
            value: f.uri.clone(),
            executable: f.executable,
            extract: f.extract,
            output_file: f.output_file.clone().unwrap_or_default(),
        })
        .collect();
    let command = match (&app.cmd, &app.args) {
        (Some(cmd), _) => Some(v1::CommandInfo {
            shell: true,
            value: cmd.clone(),
            environment: env.clone(),
            user: app.user.clone().unwrap_or_default(),
            uris: uris.clone(),
            ..Default::default()
        }),
        (None, Some(args)) if !args.is_empty() => Some(v1::CommandInfo {
            shell: false,
            value: args[0].clone(),
            arguments: args.clone(),
            environment: env.clone(),
            user: app.user.clone().unwrap_or_default(),
            uris: uris.clone(),
        }),
        _ => Some(v1::CommandInfo {
            shell: false,
            environment: env.clone(),
            user: app.user.clone().unwrap_or_default(),
            uris: uris.clone(),
            ..Default::default()
        }),
    };
    let container = app.container.as_ref().map(|c| {
        let docker = c.kind == "DOCKER";
        let mappings = if app.bridged() {
            c.port_mappings
                .iter()
                .zip(carved.ports.iter())
                .map(|(pm, host)| v1::PortMapping {
                    host_port: *host as u32,
                    container_port: if pm.container_port == 0 {
                        *host as u32
                    } else {
                        pm.container_port
                    },
                    protocol: pm.protocol.clone(),
                    name: pm.name.clone().unwrap_or_default(),
                })
                .collect()
        } else {
            Vec::new()
        };
        v1::ContainerInfo {
            r#type: if docker {
                v1::ContainerType::Docker as i32
            } else {
                v1::ContainerType::Native as i32
            },
            docker: c
                .docker
                .as_ref()
                .filter(|_| docker)
                .map(|d| v1::DockerInfo {
                    image: d.image.clone(),
                    network: if app.bridged() {
                        v1::DockerNetwork::Bridge as i32
                    } else if app.networks.iter().any(|n| n.mode == "container") {
                        v1::DockerNetwork::None as i32
                    } else {
                        v1::DockerNetwork::Host as i32
                    },
                    port_mappings: mappings,
                    force_pull_image: d.force_pull_image,
                    privileged: d.privileged,
                    parameters: d
                        .parameters
                        .iter()
                        .map(|p| v1::Parameter {
                            key: p.key.clone(),
                            value: p.value.clone(),
                        })
                        .collect(),
                }),
            volumes: c
                .volumes
                .iter()
                .map(|v| v1::Volume {
                    container_path: v.container_path.clone(),
                    host_path: v.host_path.clone(),
                    mode: v.mode.clone(),
                })
                .collect(),
            hostname: String::new(),
            host_aliases: host_aliases.to_vec(),
        }
    });
    let container = match container {
        None if !host_aliases.is_empty() => Some(v1::ContainerInfo {
            r#type: v1::ContainerType::Native as i32,
            host_aliases: host_aliases.to_vec(),
            ..Default::default()
        }),
        c => c,
    };
    let health_check = app.health_checks.first().map(|h| {
        let port = h
            .port
            .map(u64::from)
            .or_else(|| {
                carved
                    .ports
                    .get(h.port_index.unwrap_or(0) as usize)
                    .copied()
            })
            .unwrap_or(0) as u32;
        // Clamped: an app saved by an older version may hold 1e300, which the agent refuses.
        let mut hc = v1::HealthCheck {
            grace_period_seconds: clamp_seconds_to(h.grace_period_seconds, MAX_HEALTH_SECONDS),
            interval_seconds: clamp_seconds_to(h.interval_seconds, MAX_HEALTH_SECONDS),
            timeout_seconds: clamp_seconds_to(h.timeout_seconds, MAX_HEALTH_SECONDS),
            consecutive_failures: h.max_consecutive_failures,
            delay_seconds: clamp_seconds_to(h.delay_seconds, MAX_HEALTH_SECONDS),
            ..Default::default()
        };
        match h.protocol.as_str() {
            "TCP" | "MESOS_TCP" => {
                hc.r#type = v1::health_check::Type::Tcp as i32;
                hc.tcp = Some(v1::health_check::Tcp { port });
            }
            "COMMAND" => {
                hc.r#type = v1::health_check::Type::Command as i32;
                let value = h
                    .command
                    .as_ref()
                    .and_then(|c| {
                        c.get("value")
                            .and_then(|v| v.as_str())
                            .map(str::to_string)
                            .or_else(|| c.as_str().map(str::to_string))
                    })
                    .unwrap_or_default();
                hc.command = Some(v1::CommandInfo {
                    shell: true,
                    value,
                    environment: env.clone(),
                    ..Default::default()
                });
            }
            _ => {
                hc.r#type = v1::health_check::Type::Http as i32;
                hc.http = Some(v1::health_check::Http {
                    port,
                    path: h.path.clone().unwrap_or_else(|| "/".into()),
                    scheme: if matches!(h.protocol.as_str(), "HTTPS" | "MESOS_HTTPS") {
                        "https".into()
                    } else {
                        "http".into()
                    },
                    statuses: Vec::new(),
                });
            }
        }
        hc
    });
    let discovery = discovery_info(app, carved);
    v1::TaskInfo {
        name: app.id.trim_start_matches('/').replace('/', "."),
        task_id: task_id.to_string(),
        agent_id: offer.agent_id.clone(),
        resources: carved.to_proto(),
        command,
        container,
        health_check,
        kill_policy: Some(v1::KillPolicy {
            grace_period_seconds: clamp_seconds_to(
                app.task_kill_grace_period_seconds,
                MAX_KILL_GRACE_SECONDS,
            ),
        }),
        labels: app
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        discovery: Some(discovery),
        ..Default::default()
    }
}

/// The task's discovery data: named after the app id, one port per host port with the app's
/// service port at the same index (assigned before any launch, so the indices line up), the app's
/// labels (marathon-lb's `HAPROXY_*`, `VHOST`) for load balancers.
fn discovery_info(app: &App, carved: &Carved) -> v1::DiscoveryInfo {
    let declared: Vec<(Option<String>, String)> = if app.bridged() {
        app.container
            .as_ref()
            .map(|c| {
                c.port_mappings
                    .iter()
                    .map(|p| (p.name.clone(), p.protocol.clone()))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        app.port_definitions
            .iter()
            .map(|p| (p.name.clone(), p.protocol.clone()))
            .collect()
    };
    let service = crate::ports::service_ports(app);
    let ports = carved
        .ports
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let (name, protocol) = declared.get(i).cloned().unwrap_or_default();
            v1::DiscoveryPort {
                number: u32::try_from(*host).unwrap_or(0),
                name: name.unwrap_or_default(),
                protocol: if protocol.is_empty() {
                    "tcp".into()
                } else {
                    protocol
                },
                service_port: service.get(i).copied().unwrap_or(0),
            }
        })
        .collect();
    v1::DiscoveryInfo {
        name: app.id.clone(),
        ports,
        labels: app
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_carries_the_app_id_ports_with_service_ports_and_labels() {
        let app = crate::app::from_value(serde_json::json!({
            "id": "/prod/web",
            "cmd": "serve",
            "portDefinitions": [{"port": 10001, "name": "http"}, {"port": 10002, "protocol": "udp"}],
            "labels": {"HAPROXY_0_VHOST": "web.example.com"}
        }))
        .expect("a valid app");
        let carved = Carved {
            resources: agora_proto::Resources::new(),
            ports: vec![31000, 31001],
        };
        let d = discovery_info(&app, &carved);
        assert_eq!(d.name, "/prod/web");
        let ports: Vec<(u32, &str, &str, u32)> = d
            .ports
            .iter()
            .map(|p| {
                (
                    p.number,
                    p.name.as_str(),
                    p.protocol.as_str(),
                    p.service_port,
                )
            })
            .collect();
        assert_eq!(
            ports,
            [(31000, "http", "tcp", 10001), (31001, "", "udp", 10002)]
        );
        assert_eq!(d.labels["HAPROXY_0_VHOST"], "web.example.com");
    }

    #[test]
    fn stack_tasks_carry_their_siblings_names_as_host_aliases() {
        let app = |v: serde_json::Value| crate::app::from_value(v).expect("a valid app");
        let web = app(serde_json::json!({
            "id": "/shop/web", "cmd": "serve",
            "portDefinitions": [{"port": 10080}],
            "labels": {"com.docker.stack.namespace": "shop"}
        }));
        let db = app(serde_json::json!({
            "id": "/shop/db",
            "container": {"type": "DOCKER", "docker": {"image": "busybox"},
                          "portMappings": [{"containerPort": 5432, "servicePort": 15432}]},
            "networks": [{"mode": "container/bridge"}],
            "labels": {"com.docker.stack.namespace": "shop"}
        }));
        // No service port: nothing to reach it on.
        let worker = app(serde_json::json!({
            "id": "/shop/worker", "cmd": "work", "portDefinitions": [],
            "labels": {"com.docker.stack.namespace": "shop"}
        }));
        // Not of the stack: another stack, no label, a nested group.
        let other = app(serde_json::json!({
            "id": "/other/db", "cmd": "x", "portDefinitions": [{"port": 10081}],
            "labels": {"com.docker.stack.namespace": "other"}
        }));
        let plain = app(serde_json::json!({
            "id": "/shop/cache", "cmd": "x", "portDefinitions": [{"port": 10082}]
        }));
        let nested = app(serde_json::json!({
            "id": "/shop/a/b", "cmd": "x", "portDefinitions": [{"port": 10083}],
            "labels": {"com.docker.stack.namespace": "shop"}
        }));
        let all = [&web, &db, &worker, &other, &plain, &nested];
        let aliases = crate::compose::stack_aliases(&worker, all);
        assert_eq!(aliases, ["db", "shop_db", "shop_web", "web"]);
        assert!(crate::compose::stack_aliases(&plain, all).is_empty());
        assert!(crate::compose::stack_aliases(&nested, all).is_empty());

        let offer = v1::Offer {
            agent_id: "a1".into(),
            hostname: "h1".into(),
            ..Default::default()
        };
        let carved = Carved {
            resources: agora_proto::Resources::new(),
            ports: vec![],
        };
        // A command app gets a NATIVE container to carry them; a Docker app keeps its own.
        let t = task_info(&worker, "t1", "v", &carved, &offer, &aliases);
        let c = t.container.expect("a container for the aliases");
        assert_eq!(c.r#type, v1::ContainerType::Native as i32);
        assert_eq!(c.host_aliases, aliases);
        assert!(agora_proto::host_aliases::check(&c.host_aliases).is_ok());
        let carved = Carved {
            resources: agora_proto::Resources::new(),
            ports: vec![31000],
        };
        let t = task_info(&db, "t2", "v", &carved, &offer, &aliases);
        let c = t.container.expect("docker");
        assert_eq!(c.r#type, v1::ContainerType::Docker as i32);
        assert_eq!(c.host_aliases, aliases);
        // Outside a stack nothing changes: no container for a command app.
        let t = task_info(&plain, "t3", "v", &carved, &offer, &[]);
        assert!(t.container.is_none());
    }
}
