//! `agora bench load`: a load driver. It starts a real master as a child process (or uses
//! `--master ADDR`), then simulates many agents and frameworks in this one process, talking to the
//! master over real gRPC on loopback:
//!
//! ```text
//!  sim agents (100 per HTTP/2 connection)        sim frameworks (one connection each)
//!  Register → Session(Hello, Heartbeat,           Subscribe → Offers → Accept (pack tasks)
//!            StatusUpdate RUNNING/FINISHED)                 → Update → Acknowledge
//!             ▲ RunTask / KillTask / AcknowledgeUpdate        │
//!             └──────────────── agora master ◄────────────────┘
//! ```
//!
//! It measures registration time, launch throughput and latency (accept sent → `TASK_RUNNING`
//! received by the framework), offers per second and the master's peak RSS (sampled from
//! `/proc/<pid>/status` every 100 ms), and prints a table or one JSON object (`--json`).
//!
//! `--failover --zk zk://…/path` starts two masters electing a leader through ZooKeeper (under a
//! path of their own, `<path>-<random>`); agents and frameworks find the leader with
//! `agora_ha::detector`. Once every task runs (and its update is acknowledged), the driver
//! kills the leader with SIGKILL and measures `failover_seconds`: leader killed → every simulated
//! agent re-registered, with its running tasks, on the new leader.
//!
//! `--api mesos` has the simulated frameworks speak Apache Mesos's v1 scheduler HTTP API
//! (`mesos_framework`) instead of gRPC, to compare the two paths.
//!
//! Modules: `args` (the command line), `load` (the run, phase by phase), `cluster` (finding the
//! leader, shared connections), `counters` (what agents and frameworks count), `agents` and
//! `frameworks` (the simulated ones), `processes` (masters started by the driver), `failover`
//! (`--failover`), `report` (the figures printed); `services` is `bench services`; `propagation` is
//! `bench propagation` (endpoint table → every agent, drain before kill).

mod agents;
mod args;
mod cluster;
mod counters;
mod failover;
mod frameworks;
mod load;
mod mesos_framework;
mod processes;
mod propagation;
mod report;
mod services;

pub use args::BenchCommand;

/// Runs a `bench` subcommand.
///
/// # Errors
/// The master cannot be started or reached, or the run did not complete within `--timeout`.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Load(args) if args.compare_tls => {
            let mut a = args.clone();
            a.compare_tls = false;
            println!("== in clear (--insecure)");
            load::load(a.clone()).await?;
            a.tls = true;
            println!("== over TLS (cluster CA; agents with mutual TLS)");
            load::load(a).await
        }
        BenchCommand::Load(args) => load::load(args).await,
        BenchCommand::Services(args) => services::run(args).await,
        BenchCommand::Propagation(args) => propagation::run(args).await,
    }
}
