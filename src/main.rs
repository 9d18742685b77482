//! The `agora` binary: every Agora process and the user CLI behind one command.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "agora",
    version,
    about = "Agora: a two-level resource-offer cluster scheduler"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written to stderr: `text` (colours only when stderr is a terminal) or
    /// `json` (one object per line, for log collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "AGORA_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole cluster in this process (master and agents, no ZooKeeper) for a first try.
    Local(cmd::local::LocalArgs),
    /// Run a master: agents register with it, frameworks subscribe to it for offers.
    Master(cmd::master::MasterArgs),
    /// Load drivers: `bench load` simulates agents and frameworks against a real master.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
    /// Run an agent (report this machine's resources, run its tasks), or `agent list|drain`.
    Agent(cmd::agent::AgentArgs),
    /// Run the services framework (Marathon-compatible /v2 API, default port 8080).
    Services(cmd::services::ServicesArgs),
    /// Long-running apps: `create -f FILE`, `list`, `show ID`, `scale ID N`, `restart ID`, `delete ID`.
    App {
        #[command(subcommand)]
        action: cmd::services::AppAction,
        #[command(flatten)]
        services: cmd::services::ServicesAddress,
    },
    /// Compose stacks: `deploy -c FILE NAME`, `ls`, `ps NAME`, `rm NAME`.
    Stack {
        #[command(subcommand)]
        action: cmd::stack::StackAction,
        #[command(flatten)]
        services: cmd::services::ServicesAddress,
    },
    /// Run the batch framework (Chronos-compatible jobs API, default port 8090).
    Batch(cmd::batch::BatchArgs),
    /// Batch jobs: `add -f FILE`, `list`, `run NAME`, `history NAME`, `delete NAME`.
    Job {
        #[command(subcommand)]
        action: cmd::batch::JobAction,
        #[command(flatten)]
        batch: cmd::batch::BatchAddress,
    },
    /// The cluster's frameworks: `list`, `teardown ID`.
    Framework {
        #[command(subcommand)]
        action: cmd::cli::FrameworkAction,
        #[command(flatten)]
        master: cmd::cli::MasterAddress,
    },
    /// Tasks: `list`, `logs TASK [--follow] [--stderr]`, `kill TASK`.
    Task {
        #[command(subcommand)]
        action: cmd::cli::TaskAction,
        #[command(flatten)]
        master: cmd::cli::MasterAddress,
    },
    /// The cluster as a whole: `status`.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
        #[command(flatten)]
        master: cmd::cli::MasterAddress,
    },
    /// Get a client certificate of a secure-by-default cluster with its framework token and keep
    /// it (and the cluster CA) in ~/.agora (AGORA_HOME): every command then reaches that master
    /// over mutual TLS without --master or --tls-ca.
    Login(cmd::login::LoginArgs),
    /// Remove what `agora login` stored.
    Logout,
    /// Print the version of this binary and of the wire contract it speaks.
    Version,
    /// Check an agent resource description (`cpus:4;mem:8192;ports:[31000-32000]`) and print it
    /// normalised, or say which token is wrong.
    Resources {
        /// The resource description, as given to `agora agent --resources`.
        spec: String,
    },
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Leader, agents, frameworks, tasks and resources in use.
    Status,
}

fn main() {
    // Errors are for people: the message and its causes, not a backtrace.
    if let Err(e) = run() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

/// Logs go to stderr; ANSI colour codes only when stderr is a terminal (never into a file or
/// journald), JSON lines with `--log-format json`.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    // hickory-server logs every DNS request at info (two lines per query on the agent's TCP DNS).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hickory_server=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Services(args) => runtime()?.block_on(cmd::services::run(args))?,
        Command::App { action, services } => {
            runtime()?.block_on(cmd::services::app(action, services))?
        }
        Command::Stack { action, services } => {
            runtime()?.block_on(cmd::stack::stack(action, services))?
        }
        Command::Batch(args) => runtime()?.block_on(cmd::batch::run(args))?,
        Command::Job { action, batch } => runtime()?.block_on(cmd::batch::job(action, batch))?,
        Command::Local(args) => runtime()?.block_on(cmd::local::run(args))?,
        Command::Master(args) => runtime()?.block_on(cmd::master::run(args))?,
        Command::Agent(args) => runtime()?.block_on(cmd::agent::run(args))?,
        Command::Bench(command) => runtime()?.block_on(cmd::bench::run(command))?,
        Command::Framework { action, master } => {
            runtime()?.block_on(cmd::cli::framework(action, master))?
        }
        Command::Task { action, master } => runtime()?.block_on(cmd::cli::task(action, master))?,
        Command::Cluster {
            action: ClusterAction::Status,
            master,
        } => runtime()?.block_on(cmd::cli::cluster_status(master))?,
        Command::Login(args) => runtime()?.block_on(cmd::login::login(args))?,
        Command::Logout => cmd::login::logout()?,
        Command::Version => {
            println!(
                "agora {} (wire contract agora.v1)",
                env!("CARGO_PKG_VERSION")
            );
        }
        Command::Resources { spec } => {
            let resources = agora_proto::Resources::parse(&spec)?;
            println!("{resources}");
        }
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
