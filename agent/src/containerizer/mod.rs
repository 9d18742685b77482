//! Containerizers: how a task's process is isolated, watched, killed and found again after an
//! agent restart. One trait, two implementations chosen per task:
//!
//! - [`native::NativeContainerizer`]: a supervised process in new PID/mount/UTS/IPC namespaces with
//!   cgroup cpu and memory limits (a plain process group when not root).
//! - [`docker::DockerContainerizer`]: the Docker Engine API through `bollard`.
//!
//! A container is named by the agent's `container_id` (a uuid) alone: everything a containerizer needs
//! to find it again (pid files, Docker labels) derives from that id and the sandbox, so recovery
//! needs nothing but the task checkpoint.
#![forbid(unsafe_code)]

pub mod cgroups;
pub mod docker;
pub mod native;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use agora_proto::v1;
use futures::future::BoxFuture;

pub use crate::command::argv;
use crate::command::{CheckCommand, CheckExit};
use crate::error::ContainerError;
use crate::lifecycle::Termination;

/// The containerizers an agent enables when `--containerizers` is not given: `docker,native` when
/// a Docker engine answers within 3 s, `native` otherwise (logged either way, with why).
pub async fn default_containerizers() -> &'static str {
    let answer = tokio::time::timeout(
        Duration::from_secs(3),
        docker::DockerContainerizer::connect(),
    )
    .await;
    default_for(
        answer
            .map_err(|_| "no answer within 3 s".to_string())
            .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string())),
    )
}

/// [`default_containerizers`] given whether the engine answered.
fn default_for(docker: Result<(), String>) -> &'static str {
    match docker {
        Ok(()) => {
            tracing::info!(
                "--containerizers not given and a Docker engine answers: enabling docker,native"
            );
            "docker,native"
        }
        Err(why) => {
            tracing::info!(docker = %why, "--containerizers not given and no Docker engine answers: enabling native only (Docker tasks will end TASK_ERROR)");
            "native"
        }
    }
}

/// Which containerizer runs a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContainerizerKind {
    Native,
    Docker,
}

impl ContainerizerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerizerKind::Native => "native",
            ContainerizerKind::Docker => "docker",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "native" | "mesos" => Some(ContainerizerKind::Native),
            "docker" => Some(ContainerizerKind::Docker),
            _ => None,
        }
    }

    /// The containerizer a task asks for: `container.type`, or DOCKER when `container.docker` is set,
    /// else NATIVE.
    pub fn for_task(task: &v1::TaskInfo) -> Self {
        match &task.container {
            Some(c) if c.r#type == v1::ContainerType::Docker as i32 => ContainerizerKind::Docker,
            Some(c) if c.r#type == v1::ContainerType::Native as i32 => ContainerizerKind::Native,
            Some(c) if c.docker.is_some() => ContainerizerKind::Docker,
            _ => ContainerizerKind::Native,
        }
    }
}

/// Everything a containerizer needs to launch one task's container.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub container_id: String,
    pub agent_id: String,
    pub framework_id: String,
    pub executor_id: String,
    pub task: v1::TaskInfo,
    /// Absolute sandbox directory (exists before launch); stdout/stderr go there.
    pub sandbox: PathBuf,
    /// The agent's work dir (every sandbox and checkpoint lives below it): a task sees none of it
    /// but its own sandbox (native: hidden in the task's mount namespace; docker: no volume may
    /// reach into it).
    pub work_dir: PathBuf,
    /// `cpus` of the task's resources, if any.
    pub cpus: Option<f64>,
    /// `mem` of the task's resources in MiB, if any.
    pub mem_mib: Option<f64>,
    /// Host ports the task was given (its `ports` resource), in order.
    pub ports: Vec<u16>,
    /// Environment for the task: the command's own plus `AGORA_*`, `PORT0…`.
    pub env: BTreeMap<String, String>,
    /// The Unix user the task runs as; `None`: the agent's own user (an agent that is not root).
    /// The sandbox already belongs to this user.
    pub user: Option<crate::user::TaskUser>,
    /// The task's `container.host_aliases` and the address they resolve to (the agent's routing
    /// mesh, where each service port reaches a healthy task of its service): `None` when the task
    /// asks for none or the agent runs no mesh. The address may be unspecified (the mesh listens
    /// on every address): each containerizer then picks one its containers reach.
    pub host_aliases: Option<HostAliases>,
}

/// Names a container resolves to the agent's mesh address (see [`LaunchSpec::host_aliases`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAliases {
    pub names: Vec<String>,
    pub ip: std::net::IpAddr,
    /// `--mesh-bridge-ip`: where a bridge-network container reaches the mesh instead of `ip`.
    pub bridge_ip: Option<std::net::IpAddr>,
}

impl HostAliases {
    /// The address for a process that shares the host's network: `ip`, or loopback when the mesh
    /// listens on every address.
    pub fn host_ip(&self) -> std::net::IpAddr {
        match self.ip {
            std::net::IpAddr::V4(a) if a.is_unspecified() => {
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
            }
            std::net::IpAddr::V6(a) if a.is_unspecified() => {
                std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
            }
            ip => ip,
        }
    }

    /// `hosts(5)` lines, one per name: `<address>\t<name>`.
    pub fn hosts_lines(&self) -> String {
        let ip = self.host_ip();
        self.names.iter().map(|n| format!("{ip}\t{n}\n")).collect()
    }
}

/// Resource usage of one container, from cgroups or `docker stats`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    pub cpus_user_time_secs: f64,
    pub cpus_system_time_secs: f64,
    pub cpus_limit: Option<f64>,
    pub mem_rss_bytes: u64,
    pub mem_limit_bytes: Option<u64>,
}

/// What recovery found for a checkpointed container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// Still running; [`Containerizer::wait`] watches it again.
    Running,
    /// Ended while the agent was away.
    Terminated(Termination),
    /// No trace of it (never started, or removed by someone else).
    Missing,
}

/// One way of running containers. Implementations are cheap to share (`Arc`), and every method can
/// be called on a container launched by an earlier run of the agent.
pub trait Containerizer: Send + Sync {
    fn kind(&self) -> ContainerizerKind;

    /// Starts the container; returns once its process runs (image pulled, container started).
    ///
    /// # Errors
    /// [`ContainerError::ImagePull`], [`ContainerError::InvalidTask`], [`ContainerError::Launch`], I/O.
    fn launch<'a>(&'a self, spec: &'a LaunchSpec) -> BoxFuture<'a, Result<(), ContainerError>>;

    /// Resolves when the container has ended, with how it ended. Works after recovery too.
    ///
    /// # Errors
    /// When the containerizer loses track of the container (engine unreachable).
    fn wait<'a>(
        &'a self,
        container_id: &'a str,
        sandbox: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<Termination, ContainerError>>;

    /// Asks the container to stop (SIGTERM / `docker stop`), and forces it (SIGKILL) after `grace`.
    /// Returns once the signals are sent; [`Containerizer::wait`] reports the end.
    ///
    /// # Errors
    /// When signals cannot be delivered.
    fn kill<'a>(
        &'a self,
        container_id: &'a str,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), ContainerError>>;

    /// Looks for a container launched before the agent restarted.
    ///
    /// # Errors
    /// When the state cannot be read (engine unreachable, unreadable files).
    fn recover<'a>(
        &'a self,
        container_id: &'a str,
    ) -> BoxFuture<'a, Result<Recovered, ContainerError>>;

    /// Current resource usage of a running container.
    ///
    /// # Errors
    /// When the container is unknown or its statistics cannot be read.
    fn usage<'a>(&'a self, container_id: &'a str) -> BoxFuture<'a, Result<Usage, ContainerError>>;

    /// Frees what is left of an ended container (cgroups, the Docker container). The sandbox stays.
    fn destroy<'a>(&'a self, container_id: &'a str) -> BoxFuture<'a, ()>;

    /// Containers of this agent (its own cgroup parent, its Docker owner label) that are not in
    /// `known`: left by a run of the agent that ended before it checkpointed them, or whose
    /// checkpoints were lost. Recovery destroys them, as Mesos destroys orphan containers. Empty
    /// when the containerizer cannot tell its containers from other agents' on the host.
    fn orphans<'a>(
        &'a self,
        known: &'a std::collections::HashSet<String>,
    ) -> BoxFuture<'a, Vec<String>> {
        let _ = known;
        Box::pin(async { Vec::new() })
    }

    /// Frees what the containerizer keeps for the whole agent (its own cgroup parent) once no
    /// container is left: `agora agent cleanup` leaves nothing behind.
    fn retire(&self) {}

    /// Runs a health-check command next to a running container and reports how it exited. The
    /// caller bounds it with the check's timeout (dropping the future must stop the command). By
    /// default the command runs on the host, in the sandbox, with the task's environment
    /// ([`crate::command::run_on_host`]); Docker runs it inside the container.
    ///
    /// # Errors
    /// When the command cannot be started (the container is gone, the engine is unreachable).
    fn run_check<'a>(
        &'a self,
        container_id: &'a str,
        command: &'a CheckCommand,
    ) -> BoxFuture<'a, Result<CheckExit, ContainerError>> {
        let _ = container_id;
        crate::command::run_on_host(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_per_task() {
        let mut t = v1::TaskInfo::default();
        assert_eq!(ContainerizerKind::for_task(&t), ContainerizerKind::Native);
        t.container = Some(v1::ContainerInfo {
            docker: Some(Default::default()),
            ..Default::default()
        });
        assert_eq!(ContainerizerKind::for_task(&t), ContainerizerKind::Docker);
        t.container = Some(v1::ContainerInfo {
            r#type: v1::ContainerType::Native as i32,
            ..Default::default()
        });
        assert_eq!(ContainerizerKind::for_task(&t), ContainerizerKind::Native);
    }

    #[test]
    fn default_containerizers_follow_the_engine() {
        assert_eq!(default_for(Ok(())), "docker,native");
        assert_eq!(default_for(Err("refused".into())), "native");
    }

    /// Docker runs on the machines these tests run on: the default must include it (it was
    /// `native`, so every Docker app ended TASK_ERROR on an agent started without the flag).
    #[tokio::test]
    async fn default_containerizers_include_docker_when_it_answers() {
        if docker::DockerContainerizer::connect().await.is_err() {
            eprintln!("no Docker engine here: skipped");
            return;
        }
        assert_eq!(default_containerizers().await, "docker,native");
    }
}
