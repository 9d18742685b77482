//! A whole Agora framework in under 150 lines: launch N shell tasks, print every status update,
//! exit 0 when all finished, non-zero with the reason if one fails.
//!
//!     cargo run --example hello_framework -- --master 127.0.0.1:5050 --tasks 3 --cmd "echo hi"
//!
//! Against a secure-by-default cluster (`agora local` without `--insecure`), give it the
//! framework token: `--join-token "$(agora master token --framework --work-dir agora-local/master)"`.

use std::collections::HashSet;
use std::process::ExitCode;

use agora_proto::v1::TaskState;
use agora_sdk::{carve_many, shell_task, task_id, Event, Framework, TaskNeeds};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The master: host:port or zk://h1:2181,h2:2181/agora.
    #[arg(long, default_value = "127.0.0.1:5050")]
    master: String,
    /// How many tasks to run.
    #[arg(long, default_value_t = 3)]
    tasks: usize,
    /// The shell command each task runs.
    #[arg(long, default_value = "echo hello from $AGORA_TASK_ID")]
    cmd: String,
    /// What each task needs.
    #[arg(long, default_value = "cpus:0.1;mem:32")]
    resources: String,
    /// The cluster's framework token (`agora master token --framework`), for a master on the
    /// cluster CA: the SDK gets a certificate with it and talks mutual TLS.
    #[arg(long, env = "AGORA_FRAMEWORK_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let needs = match TaskNeeds::parse(&args.resources, 0) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("--resources: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = Framework::builder(&args.master, "hello-framework");
    if let Some(token) = &args.join_token {
        match agora_net::pki::JoinToken::parse(token) {
            Ok(t) => builder = builder.join_token(t),
            Err(e) => {
                eprintln!("--join-token: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let mut fw = match builder.connect() {
        Ok(fw) => fw,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut launched = 0;
    let mut finished = HashSet::new();
    while let Some(event) = fw.next_event().await {
        match event {
            Event::Subscribed { framework_id, .. } => println!("subscribed as {framework_id}"),
            Event::Offers(offers) => {
                for offer in offers {
                    let wanted = args.tasks - launched;
                    let tasks: Vec<_> = carve_many(&offer, &needs, wanted)
                        .iter()
                        .map(|r| shell_task(&task_id("hello"), &args.cmd, r))
                        .collect();
                    if tasks.is_empty() {
                        // Nothing (more) to run here: keep these resources away for a while.
                        let _ = fw.decline(std::slice::from_ref(&offer.id), 30.0).await;
                        continue;
                    }
                    launched += tasks.len();
                    for t in &tasks {
                        println!("launching {} on {}", t.task_id, offer.hostname);
                    }
                    if let Err(e) = fw.launch(&offer.id, tasks).await {
                        eprintln!("launch refused: {e}");
                        return ExitCode::FAILURE;
                    }
                    if launched == args.tasks {
                        // Everything is launched: ask for no more offers (good offer etiquette).
                        let _ = fw.suppress(&[]).await;
                    }
                }
            }
            Event::Update(status) => {
                let state = status.state();
                println!(
                    "{} {} {}",
                    status.task_id,
                    state.as_str_name(),
                    status.message
                );
                match state {
                    TaskState::TaskFinished => {
                        finished.insert(status.task_id);
                        if finished.len() == args.tasks {
                            println!("all {} tasks finished", args.tasks);
                            let _ = fw.teardown().await;
                            return ExitCode::SUCCESS;
                        }
                    }
                    s if agora_proto::is_terminal(s) => {
                        eprintln!(
                            "task {} ended {}: {}",
                            status.task_id,
                            s.as_str_name(),
                            status.message
                        );
                        let _ = fw.teardown().await;
                        return ExitCode::FAILURE;
                    }
                    _ => {}
                }
            }
            Event::Disconnected(why) => eprintln!("disconnected ({why}); reconnecting"),
            Event::Error(e) => {
                eprintln!("the master closed the subscription: {e}");
                return ExitCode::FAILURE;
            }
            _ => {}
        }
    }
    ExitCode::FAILURE
}
