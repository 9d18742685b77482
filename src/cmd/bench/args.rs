//! Command-line arguments of `agora bench`: the subcommands, the options of `bench load` and of
//! `bench services`.

use std::time::Duration;

use clap::Args;

use crate::cmd::seconds;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Simulated agents and frameworks against a real master over gRPC on loopback.
    Load(LoadArgs),
    /// The services framework (a real `agora services`) on simulated agents: one app of many
    /// instances, many apps, or `/v2/apps?embed=apps.tasks` latency.
    Services(ServicesBenchArgs),
    /// Endpoint propagation: task healthy / unhealthy / killed → every simulated agent has the
    /// master's EndpointUpdate (p50/p99/max), and the drain before each kill.
    Propagation(PropagationArgs),
}

#[derive(Args, Debug, Clone)]
pub struct PropagationArgs {
    /// Simulated agents (each one session; every one must see every change).
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Tasks, each the one task of its own service; each is made healthy, unhealthy, healthy
    /// again and killed, and the first, second and last are timed.
    #[arg(long, default_value_t = 200)]
    pub services: usize,
    /// Tasks whose events are sent at the same time.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// `--drain-period` of the master.
    #[arg(long, default_value = "2", value_parser = seconds)]
    pub drain_period: Duration,
    /// Simulated agents sharing one HTTP/2 connection.
    #[arg(long, default_value_t = 100)]
    pub agents_per_connection: usize,
    /// `--allocation-interval` of the master.
    #[arg(long, default_value = "0.1", value_parser = seconds)]
    pub allocation_interval: Duration,
    /// Give up after this long.
    #[arg(long, default_value = "600", value_parser = seconds)]
    pub timeout: Duration,
    /// `RUST_LOG` of the master.
    #[arg(long, default_value = "warn")]
    pub master_log: String,
    /// Print one JSON object instead of lines of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Simulated frameworks (each accepts every fitting offer).
    #[arg(long, default_value_t = 10)]
    pub frameworks: usize,
    /// Tasks to launch in total, over all frameworks.
    #[arg(long, default_value_t = 10_000)]
    pub tasks: usize,
    /// A task finishes (TASK_FINISHED) this long after it started running.
    #[arg(long, default_value = "1", value_parser = seconds)]
    pub task_seconds: Duration,
    /// Use this running master (`host:port`) instead of starting one; no RSS figure then.
    #[arg(long)]
    pub master: Option<String>,
    /// `--allocation-interval` of the master started by the driver.
    #[arg(long, default_value = "0.1", value_parser = seconds)]
    pub allocation_interval: Duration,
    /// CPUs of each simulated agent.
    #[arg(long, default_value_t = 8.0)]
    pub agent_cpus: f64,
    /// Memory (MiB) of each simulated agent.
    #[arg(long, default_value_t = 16384.0)]
    pub agent_mem: f64,
    /// CPUs of each task.
    #[arg(long, default_value_t = 0.1)]
    pub task_cpus: f64,
    /// Memory (MiB) of each task.
    #[arg(long, default_value_t = 32.0)]
    pub task_mem: f64,
    /// At most this many tasks are launched on one offer (spreads tasks over agents).
    #[arg(long, default_value_t = 10)]
    pub tasks_per_offer: usize,
    /// Pace the accepts to this many tasks per second over all frameworks (offers are held until
    /// their turn); without it every fitting offer is accepted at once.
    #[arg(long)]
    pub launch_rate: Option<f64>,
    /// Simulated agents sharing one HTTP/2 connection (one stream each).
    #[arg(long, default_value_t = 100)]
    pub agents_per_connection: usize,
    /// Give up after this long (the figures gathered so far are still printed).
    #[arg(long, default_value = "600", value_parser = seconds)]
    pub timeout: Duration,
    /// `RUST_LOG` of the master started by the driver.
    #[arg(long, default_value = "warn")]
    pub master_log: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The API the simulated frameworks speak: Agora's gRPC `Scheduler` service, or Apache
    /// Mesos's v1 scheduler HTTP API (JSON calls, RecordIO event stream) on the same port.
    #[arg(long, default_value = "grpc", value_parser = ["grpc", "mesos"])]
    pub api: String,
    /// Start two masters (leader and standby) under ZooKeeper (`--zk`), launch the tasks, kill
    /// the leader with SIGKILL and measure how long until every agent has re-registered with its
    /// tasks on the new leader. Tasks keep running until the end (`--task-seconds` is not used).
    #[arg(long, requires = "zk")]
    pub failover: bool,
    /// How `--failover` stops the leader: `kill` (SIGKILL, a crash: the standby waits for the
    /// session to expire) or `term` (SIGTERM, a planned stop as systemd makes it: the leader
    /// leaves the election first).
    #[arg(long, default_value = "kill", value_parser = ["kill", "term"])]
    pub stop_signal: String,
    /// ZooKeeper for `--failover`, e.g. `zk://127.0.0.1:2181/agora-bench`; a random suffix is
    /// appended to the path so that every run starts from an empty registry.
    #[arg(long, env = "AGORA_BENCH_ZK")]
    pub zk: Option<String>,
    /// `--zk-session-timeout` of the masters. A leader killed with SIGKILL leaves its election
    /// znode until its session expires, so this bounds the failover from below; ZooKeeper
    /// raises it to at least 2 × its tickTime (4 s with the default tickTime of 2 s).
    #[arg(long, default_value = "4", value_parser = seconds)]
    pub zk_session_timeout: Duration,
    /// Secure by default: the master makes its cluster CA and serves TLS; the driver joins with
    /// the agent token (`Certificates/Issue`), and its simulated agents and frameworks connect
    /// over TLS presenting that agent certificate (mutual TLS).
    #[arg(long)]
    pub tls: bool,
    /// Run twice, in clear and then over TLS (as `--tls`), and print both reports.
    #[arg(long, conflicts_with = "tls")]
    pub compare_tls: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ServicesBenchArgs {
    /// `one-app`, `many-apps` or `embed` (see `agora bench services --help`).
    #[arg(long, value_parser = ["one-app", "many-apps", "embed"])]
    pub scenario: String,
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// `one-app`: instances of the app.
    #[arg(long, default_value_t = 1000)]
    pub instances: usize,
    /// `many-apps`: apps of one instance each.
    #[arg(long, default_value_t = 1000)]
    pub apps: usize,
    /// `many-apps`: clients posting apps at the same time.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// `embed`: tasks running when the requests are timed.
    #[arg(long, default_value_t = 10_000)]
    pub tasks: usize,
    /// `embed`: apps the tasks are spread over.
    #[arg(long, default_value_t = 10)]
    pub embed_apps: usize,
    /// `embed`: requests timed.
    #[arg(long, default_value_t = 50)]
    pub requests: usize,
    /// CPUs of each simulated agent.
    #[arg(long, default_value_t = 8.0)]
    pub agent_cpus: f64,
    /// Memory (MiB) of each simulated agent.
    #[arg(long, default_value_t = 16384.0)]
    pub agent_mem: f64,
    /// CPUs of each app instance.
    #[arg(long, default_value_t = 0.1)]
    pub task_cpus: f64,
    /// Memory (MiB) of each app instance.
    #[arg(long, default_value_t = 32.0)]
    pub task_mem: f64,
    /// `--allocation-interval` of the master.
    #[arg(long, default_value = "0.1", value_parser = seconds)]
    pub allocation_interval: Duration,
    /// Give up after this long.
    #[arg(long, default_value = "600", value_parser = seconds)]
    pub timeout: Duration,
    /// `RUST_LOG` of the master and the services framework.
    #[arg(long, default_value = "warn")]
    pub log: String,
    /// Print one JSON object instead of lines of text.
    #[arg(long)]
    pub json: bool,
}
