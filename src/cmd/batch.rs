//! `agora batch` (the batch framework process) and `agora job …` (its CLI).

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde_json::Value;

use super::cli::table;

#[derive(Args, Debug)]
pub struct BatchArgs {
    #[command(flatten)]
    common: super::FrameworkArgs,
    /// Port of the Chronos-compatible REST API.
    #[arg(long, default_value_t = agora_batch::DEFAULT_PORT)]
    port: u16,
    /// Where jobs, runs and the framework id are kept.
    #[arg(long, default_value = "/var/lib/agora/batch")]
    work_dir: PathBuf,
    /// The framework's name at the master.
    #[arg(long, default_value = "batch")]
    framework_name: String,
    /// ZooKeeper URL for the state and leader election among several instances, e.g.
    /// `zk://z1:2181,z2:2181/agora-batch` (a path of its own). Without it: state in --work-dir.
    #[arg(long, env = "AGORA_BATCH_ZK")]
    zk: Option<String>,
    /// The REST API (all but /ping and /health) requires `Authorization: Bearer <token>` with the token in
    /// this file, re-read every second (rotate by replacing the file). Without it the API is open.
    #[arg(long, env = "AGORA_BATCH_API_TOKEN_FILE")]
    api_token_file: Option<PathBuf>,
}

pub fn config(args: BatchArgs) -> anyhow::Result<agora_batch::BatchConfig> {
    args.common.config(
        args.port,
        args.work_dir,
        args.zk,
        args.framework_name,
        args.api_token_file,
    )
}

pub async fn run(args: BatchArgs) -> anyhow::Result<()> {
    let config = config(args)?;
    super::refuse_clear_to_tls(&config).await?;
    let running = agora_batch::start(config).await?;
    eprintln!("agora batch API listening on {}", running.address);
    running.wait(super::shutdown_signal()).await?;
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum JobAction {
    /// Add (or replace) a job from a Chronos job JSON file.
    Add {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// List jobs with their schedule and statistics.
    List,
    /// Run a job now.
    Run { name: String },
    /// A job's runs, newest first, with each task's state and exit code.
    History { name: String },
    /// Delete a job (its running tasks are killed).
    Delete { name: String },
}

#[derive(Args, Debug)]
pub struct BatchAddress {
    /// The batch framework's API (default: the one registered with the master `agora login`
    /// stored, else `agora local`'s, http://127.0.0.1:8090).
    #[arg(long, env = "AGORA_BATCH", global = true)]
    batch: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    token: super::cli::TokenArgs,
    /// The cluster CA (PEM) when the framework's API serves https (default: the one `agora
    /// login` stored).
    #[arg(long, env = "AGORA_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
}

async fn send(req: reqwest::RequestBuilder, url: &str) -> anyhow::Result<reqwest::Response> {
    let resp = req.send().await.map_err(|e| {
        anyhow!("cannot reach the batch framework at {url}: {e}\nIs it running? `agora local` starts one, or pass --batch URL.")
    })?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(super::cli::refused("batch framework", url, &body));
    }
    let mut msg = format!(
        "{status}: {}",
        body["message"].as_str().unwrap_or("no message")
    );
    if let Some(details) = body["details"].as_array() {
        for d in details {
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
    }
    bail!(msg)
}

pub async fn job(action: JobAction, a: BatchAddress) -> anyhow::Result<()> {
    let (base, client) = super::cli::framework_api(
        a.batch.as_deref(),
        "batch",
        "--batch",
        "http://127.0.0.1:8090",
        &a.token,
        a.tls_ca.as_deref(),
    )
    .await?;
    let base = format!("{base}/v1/scheduler");
    match action {
        JobAction::Add { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let job: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            let kind = if job["parents"].as_array().is_some_and(|p| !p.is_empty()) {
                "dependency"
            } else {
                "iso8601"
            };
            let url = format!("{base}/{kind}");
            send(client.post(&url).json(&job), &url).await?;
            println!("job {} saved", job["name"].as_str().unwrap_or("?"));
        }
        JobAction::List => {
            let url = format!("{base}/jobs");
            let jobs: Value = send(client.get(&url), &url).await?.json().await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
                return Ok(());
            }
            let rows = jobs
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|j| {
                    let when = if j["schedule"].as_str().is_some_and(|s| !s.is_empty()) {
                        j["schedule"].as_str().unwrap_or("").to_string()
                    } else {
                        format!(
                            "after {}",
                            j["parents"]
                                .as_array()
                                .map(|p| p
                                    .iter()
                                    .filter_map(|x| x.as_str())
                                    .collect::<Vec<_>>()
                                    .join(","))
                                .unwrap_or_default()
                        )
                    };
                    vec![
                        j["name"].as_str().unwrap_or("").to_string(),
                        when,
                        if j["running"] == true {
                            "running"
                        } else {
                            "idle"
                        }
                        .to_string(),
                        j["successCount"].to_string(),
                        j["errorCount"].to_string(),
                        j["lastSuccess"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "NAME",
                    "SCHEDULE",
                    "STATE",
                    "SUCCESSES",
                    "ERRORS",
                    "LAST SUCCESS",
                ],
                rows,
            );
        }
        JobAction::Run { name } => {
            let url = format!("{base}/job/{name}");
            send(client.put(&url), &url).await?;
            println!("job {name} started");
        }
        JobAction::History { name } => {
            let url = format!("{base}/job/{name}/runs");
            let runs: Value = send(client.get(&url), &url).await?.json().await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
                return Ok(());
            }
            let mut rows = Vec::new();
            for r in runs.as_array().cloned().unwrap_or_default() {
                rows.push(vec![
                    r["id"].to_string(),
                    r["status"].as_str().unwrap_or("").to_string(),
                    r["startedAt"].as_str().unwrap_or("").to_string(),
                    r["tasks"].as_array().map_or(0, |t| t.len()).to_string(),
                    r["reason"].as_str().unwrap_or("").to_string(),
                ]);
            }
            table(&["RUN", "STATUS", "STARTED", "TASKS", "REASON"], rows);
        }
        JobAction::Delete { name } => {
            let url = format!("{base}/job/{name}");
            send(client.delete(&url), &url).await?;
            println!("job {name} deleted");
        }
    }
    Ok(())
}
