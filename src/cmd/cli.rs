//! The user CLI for the cluster: agents, frameworks, tasks and their logs, cluster status. It
//! talks to the leading master's HTTP API (found through `--master`, a `host:port` or `zk://` URL)
//! and to agents' sandbox file API. Tables for people, `--json` for scripts; exit code 1 with a
//! message that says what to do when something is wrong.
//!
//! APIs started with `--api-token-file` need `Authorization: Bearer <token>`: every API command
//! takes `--token-file FILE` (or the token in `AGORA_TOKEN`) and sends it to the master, services
//! and batch (never to agents, whose file API does not ask for it). A refusal (401) says which
//! component refused and how to pass the token.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde_json::Value;

/// `agora local`'s master, the default when neither `--master` nor a login names one.
pub const DEFAULT_MASTER: &str = "127.0.0.1:5050";

/// Where the master is: flag, `AGORA_MASTER`, the one `agora login` stored, or `agora local`'s
/// default.
#[derive(Args, Debug, Clone)]
pub struct MasterAddress {
    /// The master: `host:port` or `zk://h1:2181,h2:2181/agora` (default: the one `agora login`
    /// stored, else `agora local`'s, 127.0.0.1:5050).
    #[arg(long, env = "AGORA_MASTER", global = true)]
    pub master: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub token: TokenArgs,
    /// The cluster CA (PEM) when the cluster runs with TLS: the master and agents are then
    /// reached over https and verified against it (default: the CA and certificate `agora
    /// login` stored).
    #[arg(long, env = "AGORA_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
}

/// Trusts the cluster CA (and only it) and presents the certificate, when given.
///
/// # Errors
/// An invalid CA or certificate, named.
pub fn with_tls(
    builder: reqwest::ClientBuilder,
    tls: Option<&agora_net::tls::ClientTls>,
) -> anyhow::Result<reqwest::ClientBuilder> {
    let Some(tls) = tls else {
        return Ok(builder);
    };
    let ca = reqwest::Certificate::from_pem(&tls.ca_pem)
        .map_err(|e| anyhow!("the cluster CA is not a PEM certificate: {e}"))?;
    let builder = builder
        .add_root_certificate(ca)
        .tls_built_in_root_certs(false);
    Ok(match &tls.identity {
        None => builder,
        Some((cert, key)) => {
            let mut pem = cert.clone();
            pem.push(b'\n');
            pem.extend_from_slice(key);
            builder.identity(
                reqwest::Identity::from_pem(&pem)
                    .map_err(|e| anyhow!("the client certificate and key: {e}"))?,
            )
        }
    })
}

/// The CA of `--tls-ca` (verification only, no certificate presented).
///
/// # Errors
/// An unreadable file, named with the flag.
pub fn ca_file_tls(path: &std::path::Path) -> anyhow::Result<agora_net::tls::ClientTls> {
    let pem = std::fs::read(path).map_err(|e| anyhow!("--tls-ca {}: {e}", path.display()))?;
    reqwest::Certificate::from_pem(&pem)
        .map_err(|e| anyhow!("--tls-ca {}: not a PEM certificate: {e}", path.display()))?;
    Ok(agora_net::tls::ClientTls {
        ca_pem: pem,
        identity: None,
    })
}

/// How the CLI reaches the cluster: the master spec and the TLS of its clients. `--tls-ca` when
/// given; else the login `agora login` stored, when `master` is not given or is the logged-in
/// one (renewed first when past two thirds of its life); else clear.
///
/// # Errors
/// An unreadable CA file or login; an expired stored certificate.
pub async fn cluster_tls(
    master: Option<&str>,
    tls_ca: Option<&std::path::Path>,
) -> anyhow::Result<(String, Option<agora_net::tls::ClientTls>)> {
    if let Some(path) = tls_ca {
        let master = master.unwrap_or(DEFAULT_MASTER).to_string();
        return Ok((master, Some(ca_file_tls(path)?)));
    }
    let login = super::login::load()?.filter(|l| master.is_none_or(|m| m == l.master));
    match login {
        Some(l) => {
            let l = l.fresh().await?;
            Ok((l.master.clone(), Some(l.tls())))
        }
        None => Ok((master.unwrap_or(DEFAULT_MASTER).to_string(), None)),
    }
}

/// The leading master reached: its base URL, a client for its API (with the API token) and one
/// for agents' file API (without).
pub struct Reached {
    pub base: String,
    pub api: reqwest::Client,
    pub files: reqwest::Client,
    pub tls: Option<agora_net::tls::ClientTls>,
}

impl MasterAddress {
    /// Finds the leading master and builds the clients (see [`cluster_tls`]).
    ///
    /// # Errors
    /// No leader found; bad TLS material or token.
    pub async fn reach(&self) -> anyhow::Result<Reached> {
        let (master, tls) = cluster_tls(self.master.as_deref(), self.tls_ca.as_deref()).await?;
        Ok(Reached {
            base: leader_url(&master, tls.is_some()).await?,
            api: self.token.client(tls.as_ref())?,
            files: client(tls.as_ref())?,
            tls,
        })
    }
}

/// The API of the framework registered as `name` with the leading master (its `webui_url`), for
/// a logged-in CLI given no `--services`/`--batch` URL.
///
/// # Errors
/// No such framework connected; the master unreachable.
pub async fn framework_url(name: &str, flag: &str) -> anyhow::Result<String> {
    let m = MasterAddress {
        master: None,
        json: false,
        token: TokenArgs::default(),
        tls_ca: None,
    };
    let reached = m.reach().await?;
    let state = get_json(&reached.api, &format!("{}/state", reached.base)).await?;
    state["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["name"] == name && f["connected"] == true)
        .find_map(|f| f["webui_url"].as_str().filter(|u| !u.is_empty()))
        .map(|u| u.trim_end_matches('/').to_string())
        .ok_or_else(|| {
            anyhow!(
                "no framework named '{name}' is connected to the master at {}: pass {flag} URL",
                reached.base
            )
        })
}

/// A framework's API for the app/job/stack commands: `url` when given (`--services`,
/// `--batch`), else the `name` framework's registered URL when `agora login` stored a login,
/// else `default` (`agora local`'s); with the TLS of `--tls-ca` or of the login.
///
/// # Errors
/// See [`framework_url`] and [`cluster_tls`].
pub async fn framework_api(
    url: Option<&str>,
    name: &str,
    flag: &str,
    default: &str,
    token: &TokenArgs,
    tls_ca: Option<&std::path::Path>,
) -> anyhow::Result<(String, reqwest::Client)> {
    let clear = url.is_some_and(|u| u.starts_with("http://"));
    let tls = match (tls_ca, clear) {
        (Some(path), _) => Some(ca_file_tls(path)?),
        (None, true) => None,
        (None, false) => match super::login::load()? {
            Some(l) => Some(l.fresh().await?.tls()),
            None => None,
        },
    };
    let base = match url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None if tls.is_some() && tls_ca.is_none() => framework_url(name, flag).await?,
        None => default.to_string(),
    };
    Ok((base, token.client(tls.as_ref())?))
}

/// The API token the CLI sends, for components started with `--api-token-file`.
#[derive(Args, Debug, Clone, Default)]
pub struct TokenArgs {
    /// File holding the API token of a master, services or batch started with --api-token-file
    /// (or put the token itself in AGORA_TOKEN).
    #[arg(long, env = "AGORA_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// The API token itself (prefer --token-file or AGORA_TOKEN: a command line is visible to
    /// every user of the machine).
    #[arg(
        long = "token",
        env = "AGORA_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
}

impl TokenArgs {
    /// The token to send: from --token-file when given, else --token / AGORA_TOKEN.
    ///
    /// # Errors
    /// An unreadable or empty --token-file, named.
    pub fn resolve(&self) -> anyhow::Result<Option<String>> {
        if let Some(path) = &self.token_file {
            let token =
                agora_net::http_auth::read_token(path).map_err(|e| anyhow!("--token-file: {e}"))?;
            return Ok(Some(token));
        }
        Ok(self
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string))
    }

    /// A client that sends the token (if any) on every request.
    ///
    /// # Errors
    /// See [`TokenArgs::resolve`]; a token that is not a valid header value.
    pub fn client(
        &self,
        tls: Option<&agora_net::tls::ClientTls>,
    ) -> anyhow::Result<reqwest::Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = self.resolve()? {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| {
                    anyhow!("the API token holds characters an HTTP header cannot carry")
                })?;
            // Kept out of debug output.
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(with_tls(
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .default_headers(headers),
            tls,
        )?
        .build()?)
    }
}

/// The server side of the token: `--api-token-file` on `agora master`, `services` and `batch`.
///
/// # Errors
/// An unreadable or empty file, named with the flag.
pub fn api_token(file: Option<PathBuf>) -> anyhow::Result<Option<agora_net::http_auth::ApiToken>> {
    file.map(|f| {
        agora_net::http_auth::ApiToken::from_file(f).map_err(|e| anyhow!("--api-token-file: {e}"))
    })
    .transpose()
}

/// The error for a 401 from `component` at `url`: the server's reason (missing or wrong token)
/// and how to pass the right one.
pub fn refused(component: &str, url: &str, body: &Value) -> anyhow::Error {
    let reason = body["message"]
        .as_str()
        .unwrap_or("it requires an API token");
    let hint = match body["error"].as_str() {
        Some("wrong_token") => {
            "The token sent is not the current one: check that --token-file (or AGORA_TOKEN) \
             holds the token in the file the component was started with (--api-token-file)."
        }
        _ => {
            "No token was sent: pass --token-file FILE (or set AGORA_TOKEN) with the token in \
             the file the component was started with (--api-token-file)."
        }
    };
    anyhow!("the {component} at {url} refused the request (401 Unauthorized): {reason}\n{hint}")
}

#[derive(Subcommand, Debug)]
pub enum AgentAction {
    /// List agents with their resources and state.
    List,
    /// Maintenance: stop offers on an agent and kill its tasks (with their grace period).
    Drain {
        id: String,
        /// Seconds of grace for every task, overriding their kill policies.
        #[arg(long)]
        grace: Option<f64>,
    },
    /// End maintenance on an agent.
    Reactivate { id: String },
}

#[derive(Subcommand, Debug)]
pub enum FrameworkAction {
    /// List frameworks with their roles, connection and dominant share.
    List,
    /// Remove a framework and kill all its tasks.
    Teardown { id: String },
}

#[derive(Subcommand, Debug)]
pub enum TaskAction {
    /// List running (and with --all, recently finished) tasks.
    List {
        /// Only this framework's tasks.
        #[arg(long)]
        framework: Option<String>,
        /// Include finished tasks.
        #[arg(long)]
        all: bool,
    },
    /// Print a task's stdout (or stderr) from its sandbox.
    Logs {
        task: String,
        /// stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
        /// Keep printing as the task writes.
        #[arg(long, short)]
        follow: bool,
    },
    /// Kill a task through the framework that runs it (services: the app keeps its instance
    /// count unless --scale; batch: the job's run is killed).
    Kill {
        task: String,
        /// Services tasks: also lower the app's instances by one.
        #[arg(long)]
        scale: bool,
    },
}

/// The leading master's `host:port` through `master` (`host:port` or `zk://…`).
pub async fn leader_address(master: &str) -> anyhow::Result<String> {
    agora_ha::detector::Detector::new(master)?
        .wait_for_leader(Duration::from_secs(5))
        .await
        .with_context(|| format!("cannot find the leading master through '{master}'"))
}

/// Finds the leader's HTTP base URL.
pub async fn leader_url(master: &str, tls: bool) -> anyhow::Result<String> {
    let address = leader_address(master).await?;
    Ok(format!("{}://{address}", agora_net::tls::scheme(tls)))
}

/// A client for agents' sandbox file API (which takes no API token).
fn client(tls: Option<&agora_net::tls::ClientTls>) -> anyhow::Result<reqwest::Client> {
    Ok(with_tls(
        reqwest::Client::builder().timeout(Duration::from_secs(10)),
        tls,
    )?
    .build()?)
}

/// GET a JSON document with `client`, turning connection failures and error bodies into messages
/// that say what to do.
pub async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let resp = client.get(url).send().await.map_err(|e| {
        anyhow!("cannot reach {url}: {e}\nIs the master running? Start one with `agora local`, or pass --master HOST:PORT.")
    })?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .with_context(|| format!("{url} did not answer JSON"))?;
    if status == reqwest::StatusCode::UNAUTHORIZED {
        let component = body["component"].as_str().unwrap_or("master");
        return Err(refused(component, url, &body));
    }
    if !status.is_success() {
        bail!(
            "{url}: {status}: {}",
            body["message"].as_str().unwrap_or("no message")
        );
    }
    Ok(body)
}

async fn post(client: &reqwest::Client, url: &str, body: Option<Value>) -> anyhow::Result<()> {
    let mut req = client.post(url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| anyhow!("cannot reach {url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(refused("master", url, &body));
        }
        bail!(
            "{status}: {}",
            body["message"].as_str().unwrap_or("no message")
        );
    }
    Ok(())
}

/// Prints rows as aligned columns.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

pub async fn agent(action: AgentAction, m: MasterAddress) -> anyhow::Result<()> {
    let Reached { base, api, .. } = m.reach().await?;
    match action {
        AgentAction::List => {
            let state = get_json(&api, &format!("{base}/state")).await?;
            let agents = state["agents"].as_array().cloned().unwrap_or_default();
            if m.json {
                println!("{}", serde_json::to_string_pretty(&agents)?);
                return Ok(());
            }
            let rows = agents
                .iter()
                .map(|a| {
                    let status = if a["draining"] == true {
                        "draining"
                    } else if a["active"] == true {
                        "active"
                    } else {
                        "unreachable"
                    };
                    vec![
                        a["id"].as_str().unwrap_or("").to_string(),
                        a["hostname"].as_str().unwrap_or("").to_string(),
                        status.to_string(),
                        format!(
                            "{}/{}",
                            fmt_num(num(&a["used_resources"]["cpus"])),
                            fmt_num(num(&a["resources"]["cpus"]))
                        ),
                        format!(
                            "{}/{}",
                            fmt_num(num(&a["used_resources"]["mem"])),
                            fmt_num(num(&a["resources"]["mem"]))
                        ),
                    ]
                })
                .collect();
            table(
                &[
                    "ID",
                    "HOSTNAME",
                    "STATE",
                    "CPUS USED/TOTAL",
                    "MEM MiB USED/TOTAL",
                ],
                rows,
            );
        }
        AgentAction::Drain { id, grace } => {
            let body = grace.map(|g| serde_json::json!({ "grace_period_seconds": g }));
            post(&api, &format!("{base}/api/v1/agents/{id}/drain"), body)
                .await
                .with_context(|| format!("draining agent '{id}'"))?;
            println!("agent {id} is draining: no new tasks; its tasks are being killed");
        }
        AgentAction::Reactivate { id } => {
            post(&api, &format!("{base}/api/v1/agents/{id}/reactivate"), None)
                .await
                .with_context(|| format!("reactivating agent '{id}'"))?;
            println!("agent {id} is active again");
        }
    }
    Ok(())
}

pub async fn framework(action: FrameworkAction, m: MasterAddress) -> anyhow::Result<()> {
    let Reached { base, api, .. } = m.reach().await?;
    match action {
        FrameworkAction::List => {
            let state = get_json(&api, &format!("{base}/state")).await?;
            let fws = state["frameworks"].as_array().cloned().unwrap_or_default();
            if m.json {
                println!("{}", serde_json::to_string_pretty(&fws)?);
                return Ok(());
            }
            let tasks = state["tasks"].as_array().cloned().unwrap_or_default();
            let rows = fws
                .iter()
                .map(|f| {
                    let id = f["id"].as_str().unwrap_or("");
                    let n = tasks.iter().filter(|t| t["framework_id"] == id).count();
                    vec![
                        id.to_string(),
                        f["name"].as_str().unwrap_or("").to_string(),
                        f["roles"]
                            .as_array()
                            .map(|r| {
                                r.iter()
                                    .filter_map(|x| x.as_str())
                                    .collect::<Vec<_>>()
                                    .join(",")
                            })
                            .unwrap_or_default(),
                        if f["connected"] == true { "yes" } else { "no" }.to_string(),
                        n.to_string(),
                        format!("{:.3}", num(&f["dominant_share"])),
                    ]
                })
                .collect();
            table(
                &[
                    "ID",
                    "NAME",
                    "ROLES",
                    "CONNECTED",
                    "TASKS",
                    "DOMINANT SHARE",
                ],
                rows,
            );
        }
        FrameworkAction::Teardown { id } => {
            post(
                &api,
                &format!("{base}/api/v1/frameworks/{id}/teardown"),
                None,
            )
            .await
            .with_context(|| format!("tearing down framework '{id}'"))?;
            println!("framework {id} was torn down; its tasks are being killed");
        }
    }
    Ok(())
}

fn find_task(state: &Value, task: &str) -> Option<Value> {
    ["tasks", "completed_tasks"].iter().find_map(|k| {
        state[k]
            .as_array()?
            .iter()
            .find(|t| t["id"] == task)
            .cloned()
    })
}

pub async fn task(action: TaskAction, m: MasterAddress) -> anyhow::Result<()> {
    let Reached {
        base,
        api,
        files,
        tls,
    } = m.reach().await?;
    let state = get_json(&api, &format!("{base}/state")).await?;
    match action {
        TaskAction::List { framework, all } => {
            let mut tasks = state["tasks"].as_array().cloned().unwrap_or_default();
            if all {
                tasks.extend(
                    state["completed_tasks"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            if let Some(f) = &framework {
                tasks.retain(|t| t["framework_id"] == f.as_str());
            }
            if m.json {
                println!("{}", serde_json::to_string_pretty(&tasks)?);
                return Ok(());
            }
            let hosts: std::collections::HashMap<String, String> = state["agents"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|a| {
                            (
                                a["id"].as_str().unwrap_or("").to_string(),
                                a["hostname"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let rows = tasks
                .iter()
                .map(|t| {
                    let agent = t["agent_id"].as_str().unwrap_or("");
                    vec![
                        t["id"].as_str().unwrap_or("").to_string(),
                        t["state"].as_str().unwrap_or("").to_string(),
                        hosts
                            .get(agent)
                            .cloned()
                            .unwrap_or_else(|| agent.to_string()),
                        t["framework_id"].as_str().unwrap_or("").to_string(),
                        t["status"]["message"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect();
            table(&["ID", "STATE", "HOST", "FRAMEWORK", "MESSAGE"], rows);
        }
        TaskAction::Kill { task, scale } => {
            let t = find_task(&state, &task).ok_or_else(|| {
                anyhow!("the master knows no task '{task}'; `agora task list` lists them")
            })?;
            let fid = t["framework_id"].as_str().unwrap_or("");
            let fw = state["frameworks"]
                .as_array()
                .and_then(|f| f.iter().find(|f| f["id"] == fid))
                .ok_or_else(|| {
                    anyhow!("task '{task}' belongs to framework '{fid}', which is gone")
                })?;
            let name = fw["name"].as_str().unwrap_or("");
            let ui = fw["webui_url"].as_str().unwrap_or("").trim_end_matches('/');
            let client = &api;
            let (url, req) = match name {
                "services" if !ui.is_empty() => {
                    let url = format!("{ui}/v2/tasks/delete?scale={scale}");
                    let req = client.post(&url).json(&serde_json::json!({ "ids": [task] }));
                    (url, req)
                }
                "batch" if !ui.is_empty() => {
                    let job = task.split('.').next().unwrap_or("");
                    let url = format!("{ui}/v1/scheduler/task/kill/{job}");
                    (url.clone(), client.delete(&url))
                }
                other => bail!(
                    "task '{task}' belongs to framework '{other}': kill it through that framework (frameworks decide about their tasks)"
                ),
            };
            let resp = req
                .send()
                .await
                .map_err(|e| anyhow!("cannot reach {url}: {e}"))?;
            if !resp.status().is_success() {
                let status = resp.status();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                if status == reqwest::StatusCode::UNAUTHORIZED {
                    return Err(refused(name, &url, &body));
                }
                bail!("{url}: {}", body["message"].as_str().unwrap_or("refused"));
            }
            println!("task {task} is being killed by framework {name}");
        }
        TaskAction::Logs {
            task,
            stderr,
            follow,
        } => {
            let t = find_task(&state, &task).ok_or_else(|| {
                anyhow!("the master knows no task '{task}'; `agora task list --all` lists them")
            })?;
            let agent_id = t["agent_id"].as_str().unwrap_or("");
            let agent = state["agents"]
                .as_array()
                .and_then(|a| a.iter().find(|a| a["id"] == agent_id))
                .ok_or_else(|| anyhow!("task '{task}' ran on agent '{agent_id}', which is gone"))?;
            let agent_url = format!(
                "{}://{}:{}",
                agora_net::tls::scheme(tls.is_some()),
                agent["hostname"].as_str().unwrap_or("localhost"),
                agent["http_port"]
            );
            let framework = t["framework_id"].as_str().unwrap_or("");
            let executor = t["executor_id"]
                .as_str()
                .filter(|e| !e.is_empty())
                .unwrap_or(&task);
            let runs = format!(
                "{}/frameworks/{}/executors/{}/runs",
                escape(agent_id),
                escape(framework),
                escape(executor)
            );
            let listing = get_json(
                &files,
                &format!("{agent_url}/files/browse?path={}", url_escape(&runs)),
            )
            .await
            .with_context(|| format!("listing the sandboxes of task '{task}'"))?;
            let latest = listing
                .as_array()
                .and_then(|l| {
                    l.iter()
                        .max_by(|a, b| num(&a["mtime"]).total_cmp(&num(&b["mtime"])))
                })
                .and_then(|e| e["path"].as_str())
                .ok_or_else(|| anyhow!("task '{task}' has no sandbox yet"))?
                .to_string();
            let file = format!("{latest}/{}", if stderr { "stderr" } else { "stdout" });
            let mut offset: u64 = 0;
            loop {
                let chunk = get_json(
                    &files,
                    &format!(
                        "{agent_url}/files/read?path={}&offset={offset}&length=65536",
                        url_escape(&file)
                    ),
                )
                .await?;
                let data = chunk["data"].as_str().unwrap_or("");
                print!("{data}");
                offset += data.len() as u64;
                if data.is_empty() {
                    if !follow {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
    Ok(())
}

pub async fn cluster_status(m: MasterAddress) -> anyhow::Result<()> {
    let Reached { base, api, .. } = m.reach().await?;
    let state = get_json(&api, &format!("{base}/state")).await?;
    let agents = state["agents"].as_array().cloned().unwrap_or_default();
    let (mut cpus, mut mem, mut used_cpus, mut used_mem) = (0.0, 0.0, 0.0, 0.0);
    for a in agents.iter().filter(|a| a["active"] == true) {
        cpus += num(&a["resources"]["cpus"]);
        mem += num(&a["resources"]["mem"]);
        used_cpus += num(&a["used_resources"]["cpus"]);
        used_mem += num(&a["used_resources"]["mem"]);
    }
    let active = agents.iter().filter(|a| a["active"] == true).count();
    let tasks = state["tasks"].as_array().map_or(0, |t| t.len());
    let running = state["tasks"].as_array().map_or(0, |t| {
        t.iter().filter(|t| t["state"] == "TASK_RUNNING").count()
    });
    let frameworks = state["frameworks"].as_array().map_or(0, |f| f.len());
    if m.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "leader": state["leader"],
                "agents": {"total": agents.len(), "active": active},
                "frameworks": frameworks,
                "tasks": {"total": tasks, "running": running},
                "cpus": {"total": cpus, "used": used_cpus},
                "mem": {"total": mem, "used": used_mem},
            }))?
        );
        return Ok(());
    }
    println!("leader      {}", state["leader"].as_str().unwrap_or("?"));
    println!("agents      {active} active of {}", agents.len());
    println!("frameworks  {frameworks}");
    println!("tasks       {running} running of {tasks}");
    println!(
        "cpus        {} used of {}",
        fmt_num(used_cpus),
        fmt_num(cpus)
    );
    println!(
        "mem         {} MiB used of {} MiB",
        fmt_num(used_mem),
        fmt_num(mem)
    );
    Ok(())
}

/// The agent's escaping of ids into path components (see the agent's `paths::component`).
fn escape(id: &str) -> String {
    agora_agent::paths::component(id)
}

fn url_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_./~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_net::pki::{self, ClusterCa, Csr, Role};

    async fn role(
        axum::extract::ConnectInfo(p): axum::extract::ConnectInfo<agora_net::tls::Peer>,
    ) -> String {
        format!("{:?}", p.client_role)
    }

    /// The CLI's clients verify the server with the login's CA and present its certificate: a
    /// server of that CA sees the framework role on the connection (mutual TLS); with the CA
    /// only, none; a server of another CA is refused.
    #[tokio::test]
    async fn the_cli_presents_the_login_certificate_to_servers_of_the_cluster_ca() {
        let now = agora_master::pki::now();
        let ca = ClusterCa::generate(now).expect("ca");
        let serve = |ca: &ClusterCa| {
            let (chain, key) = ca
                .issue_own(
                    Role::Master,
                    &["127.0.0.1".into()],
                    now,
                    pki::DEFAULT_LIFETIME,
                )
                .expect("issue");
            let cert = agora_net::tls::SwappableCert::from_pem(chain.as_bytes(), key.as_bytes())
                .expect("cert");
            let roots = agora_net::tls::pem_roots(ca.cert_pem().as_bytes()).expect("roots");
            agora_net::tls::server_config_with(cert, Some(roots)).expect("config")
        };
        let start = |config| async move {
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let address = tcp.local_addr().expect("addr");
            let listener = agora_net::tls::Listener::new(tcp, Some(config)).expect("listener");
            let app = axum::Router::new().route("/role", axum::routing::get(role));
            tokio::spawn(agora_net::tls::serve(
                listener,
                app,
                std::future::pending::<()>(),
            ));
            format!("https://{address}/role")
        };
        let url = start(serve(&ca)).await;
        let csr = Csr::generate(&[]).expect("csr");
        let cert_pem = ca
            .sign_csr(
                Role::Framework,
                &csr.csr_pem,
                &[],
                now,
                pki::DEFAULT_LIFETIME,
            )
            .expect("sign");
        let joined = pki::Joined {
            ca_pem: ca.cert_pem().to_string(),
            cert_pem,
            key_pem: csr.key_pem,
            lifetime: pki::DEFAULT_LIFETIME,
        };
        let get = |tls: agora_net::tls::ClientTls, url: String| async move {
            let client = TokenArgs::default().client(Some(&tls)).expect("client");
            client.get(url).send().await?.text().await
        };
        assert_eq!(
            get(joined.client(), url.clone()).await.expect("mutual TLS"),
            "Some(Framework)"
        );
        let ca_only = agora_net::tls::ClientTls {
            ca_pem: joined.ca_pem.clone().into_bytes(),
            identity: None,
        };
        assert_eq!(get(ca_only, url).await.expect("TLS"), "None");
        let other = ClusterCa::generate(now).expect("another CA");
        let elsewhere = start(serve(&other)).await;
        assert!(get(joined.client(), elsewhere).await.is_err());
    }
}
