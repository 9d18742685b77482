//! `agora services` (the Marathon-compatible services framework) and `agora app …` (its CLI).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde_json::Value;

use super::cli::table;

#[derive(Args, Debug)]
pub struct ServicesArgs {
    #[command(flatten)]
    common: super::FrameworkArgs,
    /// Port of the Marathon-compatible REST API.
    #[arg(long, default_value_t = agora_services::DEFAULT_PORT)]
    port: u16,
    /// Where apps, deployments and task records are kept (without --zk).
    #[arg(long, default_value = "/var/lib/agora/services")]
    work_dir: PathBuf,
    /// ZooKeeper URL for the state and leader election among instances, e.g.
    /// `zk://z1:2181,z2:2181/agora-services` (a path of its own).
    #[arg(long, env = "AGORA_SERVICES_ZK")]
    zk: Option<String>,
    /// The framework's name at the master.
    #[arg(long, default_value = "services")]
    framework_name: String,
    /// The REST API (all but /ping) requires `Authorization: Bearer <token>` with the token in
    /// this file, re-read every second (rotate by replacing the file). Without it the API is open.
    #[arg(long, env = "AGORA_SERVICES_API_TOKEN_FILE")]
    api_token_file: Option<PathBuf>,
    /// Service ports (`portDefinitions[].port` / `portMappings[].servicePort` of 0) are assigned
    /// from this range, MIN-MAX, unique across the framework's apps (Marathon's
    /// `--local_port_min`/`--local_port_max`).
    #[arg(long, default_value = "10000-20000")]
    pub service_port_range: agora_services::PortRange,
}

pub fn config(args: ServicesArgs) -> anyhow::Result<agora_services::ServicesConfig> {
    args.common.config(
        args.port,
        args.work_dir,
        args.zk,
        args.framework_name,
        args.api_token_file,
    )
}

pub async fn run(args: ServicesArgs) -> anyhow::Result<()> {
    let range = args.service_port_range;
    let config = config(args)?;
    super::refuse_clear_to_tls(&config).await?;
    let running = agora_services::start_with(config, range).await?;
    eprintln!("agora services API listening on {}", running.address);
    running.wait(super::shutdown_signal()).await?;
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum AppAction {
    /// Create an app from a Marathon app JSON file.
    Create {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Wait until the deployment finished.
        #[arg(long)]
        wait: bool,
    },
    /// List apps with their instance counts.
    List,
    /// Show one app with its tasks.
    Show { id: String },
    /// Change the number of instances.
    Scale {
        id: String,
        instances: u32,
        #[arg(long)]
        wait: bool,
    },
    /// Replace every task, rolling, honouring the app's upgrade strategy.
    Restart {
        id: String,
        #[arg(long)]
        wait: bool,
    },
    /// Delete an app and kill its tasks.
    Delete { id: String },
}

#[derive(Args, Debug)]
pub struct ServicesAddress {
    /// The services framework's API (default: the one registered with the master `agora login`
    /// stored, else `agora local`'s, http://127.0.0.1:8080).
    #[arg(long, env = "AGORA_SERVICES", global = true)]
    pub services: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub token: super::cli::TokenArgs,
    /// The cluster CA (PEM) when the framework's API serves https (default: the one `agora
    /// login` stored).
    #[arg(long, env = "AGORA_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
}

impl ServicesAddress {
    /// The API's base URL and a client for it (see [`super::cli::framework_api`]).
    ///
    /// # Errors
    /// As [`super::cli::framework_api`].
    pub async fn api(&self) -> anyhow::Result<(String, reqwest::Client)> {
        super::cli::framework_api(
            self.services.as_deref(),
            "services",
            "--services",
            "http://127.0.0.1:8080",
            &self.token,
            self.tls_ca.as_deref(),
        )
        .await
    }
}

pub(super) async fn send(req: reqwest::RequestBuilder, url: &str) -> anyhow::Result<Value> {
    let resp = req.send().await.map_err(|e| {
        anyhow!("cannot reach the services framework at {url}: {e}\nIs it running? `agora local` starts one, or pass --services URL.")
    })?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(super::cli::refused("services framework", url, &body));
    }
    let mut msg = format!(
        "{status}: {}",
        body["message"].as_str().unwrap_or("no message")
    );
    for d in body["details"].as_array().cloned().unwrap_or_default() {
        msg.push_str(&format!(
            "\n  {}: {}",
            d["path"].as_str().unwrap_or(""),
            d["errors"]
                .as_array()
                .map(|e| e
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ));
    }
    for d in body["deployments"].as_array().cloned().unwrap_or_default() {
        msg.push_str(&format!(
            "\n  blocked by deployment {} (use `agora app …` again when it finished)",
            d["id"].as_str().unwrap_or("")
        ));
    }
    bail!(msg)
}

/// Waits for a deployment to finish, showing the app's running/healthy counts as it goes (with
/// `app`; else the deployment's current actions).
pub(super) async fn wait_deployment(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    app: Option<&str>,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    loop {
        let url = format!("{base}/v2/deployments");
        let deps = send(client.get(&url), &url).await?;
        if let Some(app) = app {
            let app_url = format!("{base}/v2/apps/{}", app.trim_start_matches('/'));
            if let Ok(a) = send(client.get(&app_url), &app_url).await {
                let a = &a["app"];
                bar.set_message(format!(
                    "deployment {id}: {} running, {} healthy of {} instances",
                    a["tasksRunning"], a["tasksHealthy"], a["instances"]
                ));
            }
        } else if let Some(d) = deps
            .as_array()
            .and_then(|d| d.iter().find(|x| x["id"] == id))
        {
            let actions: Vec<String> = d["currentActions"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| {
                            format!(
                                "{} {}",
                                x["action"].as_str().unwrap_or(""),
                                x["app"].as_str().unwrap_or("")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            bar.set_message(format!(
                "deployment {id}: step {} of {}: {}",
                d["currentStep"],
                d["totalSteps"],
                actions.join(", ")
            ));
        }
        if !deps
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x["id"] == id))
        {
            bar.finish_with_message(format!("deployment {id} finished"));
            if bar.is_hidden() {
                // Not a terminal (a script, a pipe): say it plainly.
                eprintln!("deployment {id} finished");
            }
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bar.abandon();
            bail!("deployment {id} is still running after 10 minutes; `GET /v2/queue` says what it waits for");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn app(action: AppAction, a: ServicesAddress) -> anyhow::Result<()> {
    let (base, client) = a.api().await?;
    let path = |id: &str| format!("{base}/v2/apps/{}", id.trim_start_matches('/'));
    match action {
        AppAction::Create { file, wait } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let app: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            let url = format!("{base}/v2/apps");
            let created = send(client.post(&url).json(&app), &url).await?;
            println!("app {} created", created["id"].as_str().unwrap_or("?"));
            if wait {
                if let Some(dep) = created["deployments"]
                    .as_array()
                    .and_then(|d| d.first())
                    .and_then(|d| d["id"].as_str())
                {
                    let app_id = created["id"].as_str().unwrap_or("").to_string();
                    wait_deployment(&client, &base, dep, Some(&app_id)).await?;
                }
            }
        }
        AppAction::List => {
            let url = format!("{base}/v2/apps");
            let apps = send(client.get(&url), &url).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&apps["apps"])?);
                return Ok(());
            }
            let rows = apps["apps"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|x| {
                    vec![
                        x["id"].as_str().unwrap_or("").to_string(),
                        x["instances"].to_string(),
                        x["tasksRunning"].to_string(),
                        x["tasksHealthy"].to_string(),
                        x["cpus"].to_string(),
                        x["mem"].to_string(),
                        if x["deployments"].as_array().is_some_and(|d| !d.is_empty()) {
                            "deploying"
                        } else {
                            "stable"
                        }
                        .to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "ID",
                    "INSTANCES",
                    "RUNNING",
                    "HEALTHY",
                    "CPUS",
                    "MEM",
                    "STATE",
                ],
                rows,
            );
        }
        AppAction::Show { id } => {
            let url = path(&id);
            let app = send(client.get(&url), &url).await?;
            println!("{}", serde_json::to_string_pretty(&app["app"])?);
        }
        AppAction::Scale {
            id,
            instances,
            wait,
        } => {
            let url = path(&id);
            let r = send(
                client
                    .patch(&url)
                    .json(&serde_json::json!({ "instances": instances })),
                &url,
            )
            .await?;
            println!("scaling {id} to {instances}");
            if wait {
                wait_deployment(
                    &client,
                    &base,
                    r["deploymentId"].as_str().unwrap_or(""),
                    Some(&id),
                )
                .await?;
            }
        }
        AppAction::Restart { id, wait } => {
            let url = format!("{}/restart", path(&id));
            let r = send(client.post(&url), &url).await?;
            println!("restarting {id}");
            if wait {
                wait_deployment(
                    &client,
                    &base,
                    r["deploymentId"].as_str().unwrap_or(""),
                    Some(&id),
                )
                .await?;
            }
        }
        AppAction::Delete { id } => {
            let url = path(&id);
            send(client.delete(&url), &url).await?;
            println!("app {id} deleted");
        }
    }
    Ok(())
}
