//! `agora stack …`: Compose files deployed as Marathon groups on the services framework.
//! The translation is `agora_services::compose` (pure, unit-tested); this module reads the file,
//! asks the master for its agents when a service runs in `deploy.mode: global` (the first
//! `instances`; the services framework then follows the agents itself, see
//! `agora_services::global`), and talks to the
//! services API: `PUT /v2/groups/NAME` (deploy and update), `GET /v2/groups`, `GET /v2/tasks`,
//! `DELETE /v2/groups/NAME`. A stack is a top-level group whose apps carry the label
//! `com.docker.stack.namespace=NAME`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use serde_json::Value;

use agora_services::compose::{self, Agent, STACK_LABEL};

use super::cli::table;
use super::services::{send, wait_deployment, ServicesAddress};

#[derive(Subcommand, Debug)]
pub enum StackAction {
    /// Create or update stack NAME from a Compose file (group /NAME, one app per service).
    Deploy {
        /// The Compose file.
        #[arg(short = 'c', long = "compose-file")]
        file: PathBuf,
        name: String,
        /// Wait until the deployment finished.
        #[arg(long)]
        wait: bool,
        /// Print the Marathon group JSON instead of deploying it.
        #[arg(long)]
        dry_run: bool,
        /// The master (`host:port` or `zk://…`), asked for its agents when a service runs in
        /// `deploy.mode: global` (the first instance count; the services framework follows the
        /// agents from there) (default: the one `agora login` stored, else 127.0.0.1:5050).
        #[arg(long, env = "AGORA_MASTER")]
        master: Option<String>,
    },
    /// List stacks with their services.
    Ls,
    /// The tasks of a stack's services.
    Ps { name: String },
    /// Remove a stack: its group, its apps and their tasks.
    Rm {
        name: String,
        /// Wait until the tasks are gone.
        #[arg(long)]
        wait: bool,
    },
}

/// Whether an app (JSON) belongs to stack `name`.
fn in_stack(app: &Value, name: &str) -> bool {
    app["labels"][STACK_LABEL].as_str() == Some(name)
}

/// The group of stack `name`, or an error saying there is none (or that it is not a stack).
async fn stack_group(
    client: &reqwest::Client,
    base: &str,
    name: &str,
) -> anyhow::Result<Option<Value>> {
    let url = format!("{base}/v2/groups/{name}");
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| anyhow!("cannot reach the services framework at {url}: {e}\nIs it running? `agora local` starts one, or pass --services URL."))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let group = send(client.get(&url), &url).await?;
    let apps = group["apps"].as_array().cloned().unwrap_or_default();
    let groups = group["groups"].as_array().map_or(0, Vec::len);
    if groups > 0 || apps.iter().any(|a| !in_stack(a, name)) {
        bail!(
            "group /{name} exists and is not a stack deployed by `agora stack deploy` (it holds \
             apps without the label {STACK_LABEL}={name}, or groups); manage it with the groups API"
        );
    }
    Ok(Some(group))
}

/// The active agents, as global services count them.
async fn agents(master: Option<String>, a: &ServicesAddress) -> anyhow::Result<Vec<Agent>> {
    let m = super::cli::MasterAddress {
        master,
        json: false,
        token: a.token.clone(),
        tls_ca: a.tls_ca.clone(),
    };
    let super::cli::Reached {
        base, api: client, ..
    } = m.reach().await?;
    let state = super::cli::get_json(&client, &format!("{base}/state")).await?;
    Ok(state["agents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|x| x["active"] == true && x["draining"] != true)
        .map(|x| Agent {
            hostname: x["hostname"].as_str().unwrap_or("").to_string(),
            attributes: x["attributes"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect())
}

fn read_file(file: &std::path::Path) -> anyhow::Result<String> {
    let f = std::fs::File::open(file).with_context(|| format!("reading {}", file.display()))?;
    let mut text = String::new();
    f.take(compose::MAX_FILE as u64 + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {} (UTF-8 text)", file.display()))?;
    Ok(text)
}

pub async fn stack(action: StackAction, a: ServicesAddress) -> anyhow::Result<()> {
    // A dry run talks to no framework.
    let dry = matches!(action, StackAction::Deploy { dry_run: true, .. });
    let (base, client) = if dry {
        (String::new(), reqwest::Client::new())
    } else {
        a.api().await?
    };
    match action {
        StackAction::Deploy {
            file,
            name,
            wait,
            dry_run,
            master,
        } => {
            let text = read_file(&file)?;
            let env = |k: &str| std::env::var(k).ok();
            let stack = compose::parse(&name, &text, &env)
                .map_err(|e| anyhow!("{} cannot be deployed:\n{e}", file.display()))?;
            let agents = if stack.needs_agents() {
                agents(master, &a)
                    .await
                    .context("a service runs in deploy.mode: global, which needs the master's agents (--master)")?
            } else {
                Vec::new()
            };
            let group = stack
                .group(&agents)
                .map_err(|e| anyhow!("{} cannot be deployed:\n{e}", file.display()))?;
            if dry_run {
                println!("{}", serde_json::to_string_pretty(&group)?);
                return Ok(());
            }
            let mut group = group;
            let existing = stack_group(&client, &base, &name).await?;
            let existed = existing.is_some();
            if let Some(old) = existing {
                let deployed = old["apps"].as_array().cloned().unwrap_or_default();
                compose::keep_strategy_on_scale(&mut group, &deployed);
            }
            let url = format!("{base}/v2/groups/{name}");
            let r = send(client.put(&url).json(&group), &url).await?;
            let dep = r["deploymentId"].as_str().unwrap_or("").to_string();
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{} stack {name} ({} services: {}): deployment {dep}",
                    if existed { "updating" } else { "creating" },
                    stack.services().len(),
                    stack.services().join(", ")
                );
            }
            if wait && !dep.is_empty() {
                wait_deployment(&client, &base, &dep, None).await?;
            }
        }
        StackAction::Ls => {
            let url = format!("{base}/v2/groups");
            let root = send(client.get(&url), &url).await?;
            let mut stacks = Vec::new();
            for g in root["groups"].as_array().cloned().unwrap_or_default() {
                let name = g["id"].as_str().unwrap_or("").trim_start_matches('/');
                let apps = g["apps"].as_array().cloned().unwrap_or_default();
                let services: Vec<&Value> = apps.iter().filter(|x| in_stack(x, name)).collect();
                if services.is_empty() {
                    continue;
                }
                let mut names: Vec<String> = services
                    .iter()
                    .filter_map(|x| x["id"].as_str())
                    .map(|id| id.rsplit('/').next().unwrap_or(id).to_string())
                    .collect();
                names.sort();
                stacks.push(serde_json::json!({
                    "name": name,
                    "services": names.len(),
                    "serviceNames": names,
                }));
            }
            if a.json {
                println!("{}", serde_json::to_string_pretty(&stacks)?);
                return Ok(());
            }
            table(
                &["NAME", "SERVICES"],
                stacks
                    .iter()
                    .map(|s| {
                        vec![
                            s["name"].as_str().unwrap_or("").to_string(),
                            s["services"].to_string(),
                        ]
                    })
                    .collect(),
            );
        }
        StackAction::Ps { name } => {
            let group = stack_group(&client, &base, &name)
                .await?
                .ok_or_else(|| anyhow!("no stack '{name}'; `agora stack ls` lists them"))?;
            let checked: BTreeMap<String, bool> = group["apps"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|x| {
                    (
                        x["id"].as_str().unwrap_or("").to_string(),
                        x["healthChecks"].as_array().is_some_and(|h| !h.is_empty()),
                    )
                })
                .collect();
            let url = format!("{base}/v2/tasks");
            let tasks = send(client.get(&url), &url).await?;
            let mut rows: Vec<Value> = tasks["tasks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|t| {
                    t["appId"]
                        .as_str()
                        .is_some_and(|id| checked.contains_key(id))
                })
                .map(|t| {
                    let app = t["appId"].as_str().unwrap_or("");
                    let results = t["healthCheckResults"].as_array().cloned().unwrap_or_default();
                    let health = if !checked.get(app).copied().unwrap_or(false) {
                        "-"
                    } else if results.is_empty() {
                        "starting"
                    } else if results.iter().all(|r| r["alive"] == true) {
                        "healthy"
                    } else {
                        "unhealthy"
                    };
                    let ports: Vec<String> = t["ports"]
                        .as_array()
                        .map(|p| p.iter().map(ToString::to_string).collect())
                        .unwrap_or_default();
                    serde_json::json!({
                        "service": app.rsplit('/').next().unwrap_or(app),
                        "app": app,
                        "task": t["id"],
                        "host": t["host"],
                        "ports": t["ports"],
                        "endpoint": format!("{}:{}", t["host"].as_str().unwrap_or(""), ports.join(",")),
                        "state": t["state"],
                        "health": health,
                    })
                })
                .collect();
            rows.sort_by(|x, y| {
                (x["service"].as_str(), x["task"].as_str())
                    .cmp(&(y["service"].as_str(), y["task"].as_str()))
            });
            if a.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            table(
                &["SERVICE", "TASK", "HOST:PORTS", "STATE", "HEALTH"],
                rows.iter()
                    .map(|r| {
                        ["service", "task", "endpoint", "state", "health"]
                            .iter()
                            .map(|k| r[*k].as_str().unwrap_or("").to_string())
                            .collect()
                    })
                    .collect(),
            );
        }
        StackAction::Rm { name, wait } => {
            if stack_group(&client, &base, &name).await?.is_none() {
                bail!("no stack '{name}'; `agora stack ls` lists them");
            }
            let url = format!("{base}/v2/groups/{name}");
            let r = send(client.delete(&url), &url).await?;
            let dep = r["deploymentId"].as_str().unwrap_or("").to_string();
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("removing stack {name}: deployment {dep}");
            }
            if wait && !dep.is_empty() {
                wait_deployment(&client, &base, &dep, None).await?;
            }
        }
    }
    Ok(())
}
