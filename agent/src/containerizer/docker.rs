//! The Docker containerizer, on the Docker Engine API through `bollard` (no `docker` CLI).
//!
//! A task's container is named `agora-<container_id>` and labelled with the agent, framework,
//! executor, task and container ids; recovery finds containers by the `agora.container_id` label.
//! Images are pulled only when absent (or with `force_pull_image`); a failed pull fails the task with
//! `REASON_IMAGE_PULL_FAILED`. Limits come from the task's resources: `cpus` → cpu shares (×1024) and
//! a cfs quota, `mem` → memory limit (no extra swap). The sandbox is mounted at
//! [`SANDBOX_MOUNT`], and the container's stdout/stderr are streamed into the sandbox files.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use agora_proto::v1;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptions, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StartContainerOptions, StatsOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptions,
};
use bollard::Docker;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tracing::{debug, warn};

use super::{Containerizer, ContainerizerKind, LaunchSpec, Recovered, Usage};
use crate::command::{argv, CheckCommand, CheckExit};
use crate::error::ContainerError;
use crate::lifecycle::Termination;

/// Why an absolute volume `host` would show the task the agent's work dir (other tasks' sandboxes,
/// checkpoints); `None` when it does not (or is inside the task's own sandbox). Links are resolved
/// where the path exists, `..` lexically elsewhere.
pub fn reaches_work_dir(host: &Path, work_dir: &Path, sandbox: &Path) -> Option<&'static str> {
    let norm = |p: &Path| -> PathBuf {
        if let Ok(c) = fs::canonicalize(p) {
            return c;
        }
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::CurDir => {}
                other => out.push(other),
            }
        }
        out
    };
    let (host, work, sandbox) = (norm(host), norm(work_dir), norm(sandbox));
    if host.starts_with(&sandbox) {
        None
    } else if host.starts_with(&work) {
        Some("lies in the agent's work dir")
    } else if work.starts_with(&host) {
        Some("contains the agent's work dir")
    } else {
        None
    }
}

/// Where a task's sandbox appears inside its container (also in `$AGORA_SANDBOX`).
pub const SANDBOX_MOUNT: &str = "/mnt/agora/sandbox";
pub const LABEL_AGENT: &str = "agora.agent_id";
pub const LABEL_FRAMEWORK: &str = "agora.framework_id";
pub const LABEL_EXECUTOR: &str = "agora.executor_id";
pub const LABEL_TASK: &str = "agora.task_id";
pub const LABEL_CONTAINER: &str = "agora.container_id";
/// The agent that launched it, by its own cgroup parent (`agora/<id>`): unique per agent work
/// dir, also on a host with several agents, and known before the agent registers.
pub const LABEL_OWNER: &str = "agora.owner";

/// Docker's name for a task's container.
pub fn container_name(container_id: &str) -> String {
    format!("agora-{container_id}")
}

/// Splits an image reference into repository and tag (`latest` when none is given), so that a pull
/// never fetches every tag of a repository. Digests (`repo@sha256:…`) are kept whole.
pub fn split_image(image: &str) -> (String, String) {
    if image.contains('@') {
        return (image.to_string(), String::new());
    }
    let last_slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[last_slash..].rfind(':') {
        Some(i) => (
            image[..last_slash + i].to_string(),
            image[last_slash + i + 1..].to_string(),
        ),
        None => (image.to_string(), "latest".to_string()),
    }
}

fn is_not_found(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Kills an abandoned `docker exec` (a health check whose timeout dropped it) when dropped while
/// armed: the engine reports the exec's pid in the host's PID namespace, and the agent kills it
/// and its descendants. Dropping cannot wait, so the kill runs as a detached task.
struct ExecReaper {
    docker: Docker,
    /// `None` once the exec has ended on its own.
    exec_id: Option<String>,
}

impl Drop for ExecReaper {
    fn drop(&mut self) {
        let Some(id) = self.exec_id.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let docker = self.docker.clone();
        rt.spawn(async move {
            let Ok(info) = docker.inspect_exec(&id).await else {
                return;
            };
            let pid = info
                .pid
                .and_then(|p| i32::try_from(p).ok())
                .filter(|p| *p > 1);
            if let (Some(true), Some(pid)) = (info.running, pid) {
                debug!(exec = %id, pid, "killing a health check that timed out");
                let victims = super::native::descendants(pid).into_iter().chain([pid]);
                for p in victims {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        });
    }
}

/// See the module documentation.
pub struct DockerContainerizer {
    docker: Docker,
    /// [`LABEL_OWNER`]'s value on this agent's containers; `None`: containers are not labelled
    /// with an owner and no orphan can be told apart.
    owner: Option<String>,
}

impl DockerContainerizer {
    /// Connects to the local engine (`DOCKER_HOST` or `/var/run/docker.sock`) and negotiates the API
    /// version, so that older engines (API 1.41) work.
    ///
    /// # Errors
    /// When the engine cannot be reached.
    pub async fn connect() -> Result<Self, ContainerError> {
        let docker = Docker::connect_with_local_defaults()?;
        let docker = docker.negotiate_version().await?;
        Ok(DockerContainerizer {
            docker,
            owner: None,
        })
    }

    /// The host's address on Docker's default `bridge` network (its IPv4 gateway, `172.17.0.1`
    /// by default): where a bridge-network container reaches the host. `None` when the network
    /// has no IPv4 gateway.
    ///
    /// # Errors
    /// When the engine cannot be asked.
    pub async fn bridge_gateway(&self) -> Result<Option<std::net::IpAddr>, ContainerError> {
        let net = self.docker.inspect_network("bridge", None).await?;
        Ok(net
            .ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.gateway)
            .filter_map(|g| g.parse::<std::net::IpAddr>().ok())
            .find(std::net::IpAddr::is_ipv4))
    }

    /// Labels this agent's containers with `owner` and lists the unknown ones among them as
    /// orphans.
    pub fn with_owner(mut self, owner: Option<String>) -> Self {
        self.owner = owner;
        self
    }

    async fn do_orphans(&self, known: &std::collections::HashSet<String>) -> Vec<String> {
        let Some(owner) = &self.owner else {
            return Vec::new();
        };
        let filters = HashMap::from([("label", vec![format!("{LABEL_OWNER}={owner}")])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        match self.docker.list_containers(Some(opts)).await {
            Ok(found) => found
                .into_iter()
                .filter_map(|c| c.labels.and_then(|l| l.get(LABEL_CONTAINER).cloned()))
                .filter(|id| !known.contains(id))
                .collect(),
            Err(e) => {
                warn!(error = %e, "cannot list this agent's Docker containers to find orphans");
                Vec::new()
            }
        }
    }

    /// The engine client, for callers that need more (tests cleaning up by label).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    async fn ensure_image(&self, image: &str, force_pull: bool) -> Result<(), ContainerError> {
        if !force_pull {
            match self.docker.inspect_image(image).await {
                Ok(_) => return Ok(()),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let (repo, tag) = split_image(image);
        let options = CreateImageOptions {
            from_image: Some(repo),
            tag: (!tag.is_empty()).then_some(tag),
            ..Default::default()
        };
        let mut pull = self.docker.create_image(Some(options), None, None);
        while let Some(progress) = pull.next().await {
            progress.map_err(|e| ContainerError::ImagePull {
                image: image.to_string(),
                message: e.to_string(),
            })?;
        }
        // Some engines end a failed pull without an error message: check the image is there.
        self.docker
            .inspect_image(image)
            .await
            .map_err(|e| ContainerError::ImagePull {
                image: image.to_string(),
                message: format!("not present after the pull: {e}"),
            })?;
        Ok(())
    }

    fn create_body(
        &self,
        spec: &LaunchSpec,
        docker: &v1::DockerInfo,
    ) -> Result<ContainerCreateBody, ContainerError> {
        let container = spec.task.container.clone().unwrap_or_default();
        let cmd = match &spec.task.command {
            Some(c) if c.shell || !c.value.is_empty() || !c.arguments.is_empty() => {
                Some(argv(Some(c))?)
            }
            _ => None,
        };
        let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.push(format!("AGORA_SANDBOX={SANDBOX_MOUNT}"));
        let labels: HashMap<String, String> = [
            (LABEL_AGENT, &spec.agent_id),
            (LABEL_FRAMEWORK, &spec.framework_id),
            (LABEL_EXECUTOR, &spec.executor_id),
            (LABEL_TASK, &spec.task.task_id),
            (LABEL_CONTAINER, &spec.container_id),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .chain(spec.task.labels.iter().map(|(k, v)| (k.clone(), v.clone())))
        .chain(
            self.owner
                .iter()
                .map(|o| (LABEL_OWNER.to_string(), o.clone())),
        )
        .collect();

        let network =
            v1::DockerNetwork::try_from(docker.network).unwrap_or(v1::DockerNetwork::Unspecified);
        let network_mode = match network {
            v1::DockerNetwork::Host => "host",
            v1::DockerNetwork::None => "none",
            v1::DockerNetwork::Bridge | v1::DockerNetwork::Unspecified => "bridge",
        };
        let mut exposed = Vec::new();
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for pm in &docker.port_mappings {
            if network != v1::DockerNetwork::Bridge && network != v1::DockerNetwork::Unspecified {
                return Err(ContainerError::InvalidTask(format!(
                    "port_mappings need BRIDGE networking, the task uses {}",
                    network.as_str_name()
                )));
            }
            if !spec.ports.contains(&(pm.host_port as u16)) || pm.host_port > u16::MAX as u32 {
                return Err(ContainerError::InvalidTask(format!(
                    "port mapping host_port {} is not among the task's ports resource {:?}",
                    pm.host_port, spec.ports
                )));
            }
            let proto = if pm.protocol.is_empty() {
                "tcp"
            } else {
                pm.protocol.as_str()
            };
            if proto != "tcp" && proto != "udp" {
                return Err(ContainerError::InvalidTask(format!(
                    "port mapping protocol '{proto}' (tcp or udp)"
                )));
            }
            let key = format!("{}/{proto}", pm.container_port);
            exposed.push(key.clone());
            bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: None,
                    host_port: Some(pm.host_port.to_string()),
                });
        }
        let mut binds = vec![format!("{}:{SANDBOX_MOUNT}:rw", spec.sandbox.display())];
        for v in &container.volumes {
            if !v.container_path.starts_with('/') {
                return Err(ContainerError::InvalidTask(format!(
                    "volume container_path '{}' must be absolute",
                    v.container_path
                )));
            }
            let host = if v.host_path.is_empty() {
                return Err(ContainerError::InvalidTask(format!(
                    "volume '{}' has no host_path",
                    v.container_path
                )));
            } else if v.host_path.starts_with('/') {
                if let Some(why) =
                    reaches_work_dir(Path::new(&v.host_path), &spec.work_dir, &spec.sandbox)
                {
                    return Err(ContainerError::InvalidTask(format!(
                        "volume host_path '{}' {why}: a task sees no sandbox but its own",
                        v.host_path
                    )));
                }
                v.host_path.clone()
            } else {
                if Path::new(&v.host_path)
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(ContainerError::InvalidTask(format!(
                        "relative volume host_path '{}' may not contain '..'",
                        v.host_path
                    )));
                }
                let p = spec.sandbox.join(&v.host_path);
                fs::create_dir_all(&p).map_err(|e| ContainerError::io(&p, e))?;
                p.display().to_string()
            };
            let mode = match v.mode.to_ascii_uppercase().as_str() {
                "" | "RW" => "rw",
                "RO" => "ro",
                other => {
                    return Err(ContainerError::InvalidTask(format!(
                        "volume mode '{other}' (RW or RO)"
                    )))
                }
            };
            binds.push(format!("{host}:{}:{mode}", v.container_path));
        }
        // Docker's `--workdir` (Marathon's `parameters: [{"key": "workdir", …}]`, Compose's
        // `working_dir`); other parameters are not supported.
        let mut working_dir = None;
        for p in &docker.parameters {
            match p.key.as_str() {
                "workdir" | "w" => {
                    if !p.value.starts_with('/') || p.value.len() > 4096 || p.value.contains('\0') {
                        return Err(ContainerError::InvalidTask(format!(
                            "docker parameter workdir '{}' must be an absolute path (at most 4096 bytes)",
                            p.value.chars().take(80).collect::<String>()
                        )));
                    }
                    working_dir = Some(p.value.clone());
                }
                other => {
                    warn!(task = %spec.task.task_id, parameter = %other, "docker parameter not supported: ignored");
                }
            }
        }
        let mem = spec
            .mem_mib
            .filter(|m| *m > 0.0)
            .map(|m| (m * 1024.0 * 1024.0) as i64);
        let cpus = spec.cpus.filter(|c| *c > 0.0);
        let host_config = HostConfig {
            memory: mem,
            memory_swap: mem,
            cpu_shares: cpus.map(|c| ((c * 1024.0).round() as i64).max(2)),
            cpu_period: cpus.map(|_| 100_000),
            cpu_quota: cpus.map(|c| ((c * 100_000.0).round() as i64).max(1000)),
            network_mode: Some(network_mode.to_string()),
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            binds: Some(binds),
            privileged: Some(docker.privileged),
            extra_hosts: spec
                .host_aliases
                .as_ref()
                .map(|a| extra_hosts(a, network_mode, &spec.container_id))
                .filter(|h| !h.is_empty()),
            ..Default::default()
        };
        Ok(ContainerCreateBody {
            image: Some(docker.image.clone()),
            cmd,
            env: Some(env),
            labels: Some(labels),
            hostname: (!container.hostname.is_empty() && network_mode != "host")
                .then(|| container.hostname.clone()),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            host_config: Some(host_config),
            // Numeric, so the image needs no passwd entry for it; it overrides the image's USER.
            // `None` (an agent that is not root) keeps the image's own user.
            user: spec.user.as_ref().map(|u| format!("{}:{}", u.uid, u.gid)),
            working_dir,
            ..Default::default()
        })
    }

    async fn do_launch(&self, spec: &LaunchSpec) -> Result<(), ContainerError> {
        let docker = spec
            .task
            .container
            .as_ref()
            .and_then(|c| c.docker.clone())
            .ok_or_else(|| {
                ContainerError::InvalidTask(
                    "container.docker is required for a DOCKER container".into(),
                )
            })?;
        if docker.image.trim().is_empty() {
            return Err(ContainerError::InvalidTask(
                "container.docker.image is empty".into(),
            ));
        }
        let body = self.create_body(spec, &docker)?;
        for f in ["stdout", "stderr"] {
            let p = spec.sandbox.join(f);
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(|e| ContainerError::io(&p, e))?;
        }
        self.ensure_image(&docker.image, docker.force_pull_image)
            .await?;
        let name = container_name(&spec.container_id);
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| ContainerError::Launch(format!("cannot create container {name}: {e}")))?;
        if let Err(e) = self
            .docker
            .start_container(&name, None::<StartContainerOptions>)
            .await
        {
            self.remove(&name).await;
            return Err(ContainerError::Launch(format!(
                "cannot start container {name}: {e}"
            )));
        }
        debug!(container = %name, image = %docker.image, "docker container started");
        Ok(())
    }

    async fn remove(&self, name: &str) {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(name, Some(opts)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => warn!(container = %name, error = %e, "cannot remove container"),
        }
    }

    /// Copies the container's output into the sandbox until the container stops. After a recovery,
    /// output is taken from the stdout file's last modification on, so a few lines may repeat.
    async fn stream_logs(&self, name: &str, sandbox: &Path) {
        let since = fs::metadata(sandbox.join("stdout"))
            .and_then(|m| m.modified())
            .ok()
            .filter(|_| {
                fs::metadata(sandbox.join("stdout"))
                    .map(|m| m.len() > 0)
                    .unwrap_or(false)
            })
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX))
            .unwrap_or(0);
        // Never through a link: the task's user owns the sandbox (it is mounted in the container)
        // and could put one there; the agent writing here is root.
        let open = |n: &str| {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(sandbox.join(n))
        };
        let (Ok(mut out), Ok(mut err)) = (open("stdout"), open("stderr")) else {
            warn!(sandbox = %sandbox.display(), "cannot open the sandbox's stdout/stderr");
            return;
        };
        let opts = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .since(since)
            .build();
        let mut logs = self.docker.logs(name, Some(opts));
        while let Some(chunk) = logs.next().await {
            let res = match chunk {
                Ok(bollard::container::LogOutput::StdErr { message }) => err.write_all(&message),
                Ok(output) => out.write_all(output.as_ref()),
                Err(e) => {
                    debug!(container = %name, error = %e, "log stream ended");
                    break;
                }
            };
            if let Err(e) = res {
                warn!(container = %name, error = %e, "cannot write container output to the sandbox");
                break;
            }
        }
    }

    async fn termination(&self, name: &str, fallback: Option<i32>) -> Termination {
        match self.docker.inspect_container(name, None).await {
            Ok(info) => {
                let state = info.state.unwrap_or_default();
                let message = state.error.filter(|e| !e.is_empty());
                Termination {
                    exit_code: state.exit_code.map(|c| c as i32).or(fallback),
                    oom_killed: state.oom_killed.unwrap_or(false),
                    message,
                }
            }
            Err(e) => Termination {
                exit_code: fallback,
                oom_killed: false,
                message: Some(format!("cannot inspect the container: {e}")),
            },
        }
    }

    async fn do_wait(
        &self,
        container_id: &str,
        sandbox: &Path,
    ) -> Result<Termination, ContainerError> {
        let name = container_name(container_id);
        let logs = self.stream_logs(&name, sandbox);
        let wait = async {
            let mut w = self
                .docker
                .wait_container(&name, None::<WaitContainerOptions>);
            match w.next().await {
                Some(Ok(r)) => Ok(Some(r.status_code as i32)),
                Some(Err(BollardError::DockerContainerWaitError { code, .. })) => {
                    Ok(Some(code as i32))
                }
                Some(Err(e)) if is_not_found(&e) => Ok(None),
                Some(Err(e)) => Err(ContainerError::from(e)),
                None => Ok(None),
            }
        };
        // The log stream ends when the container stops; once the container has ended, give it a
        // moment to drain rather than waiting on it forever.
        let mut logs = Box::pin(logs);
        let mut wait = Box::pin(wait);
        let code = tokio::select! {
            code = &mut wait => {
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut logs).await;
                code
            }
            () = &mut logs => wait.await,
        };
        let code = code?;
        Ok(self.termination(&name, code).await)
    }

    async fn do_kill(&self, container_id: &str, grace: Duration) -> Result<(), ContainerError> {
        let name = container_name(container_id);
        let secs = grace.as_secs_f64().ceil() as i32;
        let opts = StopContainerOptionsBuilder::default().t(secs).build();
        match self.docker.stop_container(&name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn do_recover(&self, container_id: &str) -> Result<Recovered, ContainerError> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_CONTAINER}={container_id}")])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let found = self.docker.list_containers(Some(opts)).await?;
        let Some(c) = found.into_iter().next() else {
            return Ok(Recovered::Missing);
        };
        let name = c.id.unwrap_or_else(|| container_name(container_id));
        let info = self.docker.inspect_container(&name, None).await?;
        let state = info.state.unwrap_or_default();
        if state.running.unwrap_or(false) {
            return Ok(Recovered::Running);
        }
        Ok(Recovered::Terminated(Termination {
            exit_code: state.exit_code.map(|c| c as i32),
            oom_killed: state.oom_killed.unwrap_or(false),
            message: Some("ended while the agent was down".into()),
        }))
    }

    /// A health-check command inside the container (`docker exec`), with the container's own
    /// environment plus the check's. The engine has no call to stop an exec: when the caller's
    /// timeout drops this future, [`ExecReaper`] kills the command's processes.
    async fn do_run_check(
        &self,
        container_id: &str,
        cmd: &CheckCommand,
    ) -> Result<CheckExit, ContainerError> {
        let name = container_name(container_id);
        let env: Vec<String> = cmd.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let exec = self
            .docker
            .create_exec(
                &name,
                CreateExecOptions {
                    cmd: Some(cmd.argv.clone()),
                    env: Some(env),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await?;
        let mut reaper = ExecReaper {
            docker: self.docker.clone(),
            exec_id: Some(exec.id.clone()),
        };
        let mut output = Vec::new();
        if let StartExecResults::Attached {
            output: mut out, ..
        } = self.docker.start_exec(&exec.id, None).await?
        {
            while let Some(chunk) = out.next().await {
                let bytes = chunk?.into_bytes();
                // Keep only the end: the message wants the last words, memory stays bounded.
                output.extend_from_slice(&bytes);
                if output.len() > 4096 {
                    output.drain(..output.len() - 4096);
                }
            }
        }
        let inspect = self.docker.inspect_exec(&exec.id).await?;
        reaper.exec_id = None;
        let code = inspect
            .exit_code
            .and_then(|c| i32::try_from(c).ok())
            .unwrap_or(-1);
        Ok(CheckExit {
            code,
            output: crate::command::tail(&output),
        })
    }

    async fn do_usage(&self, container_id: &str) -> Result<Usage, ContainerError> {
        let name = container_name(container_id);
        let opts = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let stats = self
            .docker
            .stats(&name, Some(opts))
            .next()
            .await
            .ok_or_else(|| ContainerError::Launch(format!("no statistics for {name}")))??;
        let cpu = stats
            .cpu_stats
            .and_then(|c| c.cpu_usage)
            .unwrap_or_default();
        let mem = stats.memory_stats.unwrap_or_default();
        let inspect = self.docker.inspect_container(&name, None).await.ok();
        let hc = inspect.and_then(|i| i.host_config).unwrap_or_default();
        Ok(Usage {
            cpus_user_time_secs: cpu.usage_in_usermode.unwrap_or(0) as f64 / 1e9,
            cpus_system_time_secs: cpu.usage_in_kernelmode.unwrap_or(0) as f64 / 1e9,
            cpus_limit: match (hc.cpu_quota, hc.cpu_period) {
                (Some(q), Some(p)) if q > 0 && p > 0 => Some(q as f64 / p as f64),
                _ => None,
            },
            mem_rss_bytes: mem
                .stats
                .as_ref()
                .and_then(|s| s.get("rss").or_else(|| s.get("anon")).copied())
                .or(mem.usage)
                .unwrap_or(0),
            mem_limit_bytes: hc.memory.filter(|m| *m > 0).map(|m| m as u64).or(mem.limit),
        })
    }
}

impl Containerizer for DockerContainerizer {
    fn kind(&self) -> ContainerizerKind {
        ContainerizerKind::Docker
    }

    fn launch<'a>(&'a self, spec: &'a LaunchSpec) -> BoxFuture<'a, Result<(), ContainerError>> {
        self.do_launch(spec).boxed()
    }

    fn wait<'a>(
        &'a self,
        container_id: &'a str,
        sandbox: &'a Path,
    ) -> BoxFuture<'a, Result<Termination, ContainerError>> {
        self.do_wait(container_id, sandbox).boxed()
    }

    fn kill<'a>(
        &'a self,
        container_id: &'a str,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), ContainerError>> {
        self.do_kill(container_id, grace).boxed()
    }

    fn recover<'a>(
        &'a self,
        container_id: &'a str,
    ) -> BoxFuture<'a, Result<Recovered, ContainerError>> {
        self.do_recover(container_id).boxed()
    }

    fn usage<'a>(&'a self, container_id: &'a str) -> BoxFuture<'a, Result<Usage, ContainerError>> {
        self.do_usage(container_id).boxed()
    }

    fn destroy<'a>(&'a self, container_id: &'a str) -> BoxFuture<'a, ()> {
        async move { self.remove(&container_name(container_id)).await }.boxed()
    }

    fn orphans<'a>(
        &'a self,
        known: &'a std::collections::HashSet<String>,
    ) -> BoxFuture<'a, Vec<String>> {
        self.do_orphans(known).boxed()
    }

    fn run_check<'a>(
        &'a self,
        container_id: &'a str,
        command: &'a CheckCommand,
    ) -> BoxFuture<'a, Result<CheckExit, ContainerError>> {
        self.do_run_check(container_id, command).boxed()
    }
}

/// The container's extra hosts (`name:address` lines of its `/etc/hosts`) for its host aliases:
/// the agent's mesh address as the container reaches it. Host network: the address itself
/// (loopback when the mesh listens on every address). Bridge: the address, or Docker's
/// `--mesh-bridge-ip` when the agent has one (the mesh listens there too), else the address, or
/// Docker's `host-gateway` (the host, seen from the bridge) when the mesh listens on every
/// address; a loopback mesh address is the container's own loopback there, which the mesh does
/// not listen on, so that is logged. No network: nothing to reach, none.
fn extra_hosts(aliases: &super::HostAliases, network_mode: &str, container: &str) -> Vec<String> {
    let target = match (network_mode, aliases.bridge_ip) {
        ("none", _) => {
            warn!(container, names = ?aliases.names, "the task has no network: its host aliases are not applied");
            return Vec::new();
        }
        ("host", _) => aliases.host_ip().to_string(),
        (_, Some(bridge)) => bridge.to_string(),
        _ if aliases.ip.is_unspecified() => "host-gateway".to_string(),
        _ => {
            if aliases.ip.is_loopback() {
                warn!(container, ip = %aliases.ip, "the routing mesh listens on a loopback address, which a bridge-network container cannot reach: its host aliases will not connect (give the agent a routable --ip, or run the task on the host network)");
            }
            aliases.ip.to_string()
        }
    };
    aliases
        .names
        .iter()
        .map(|n| format!("{n}:{target}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_hosts_point_at_the_mesh_as_the_container_reaches_it() {
        let at = |ip: &str| super::super::HostAliases {
            names: vec!["db".into(), "shop_db".into()],
            ip: ip.parse().expect("ip"),
            bridge_ip: None,
        };
        let bridged = super::super::HostAliases {
            bridge_ip: Some("172.17.0.1".parse().expect("ip")),
            ..at("127.0.0.2")
        };
        assert_eq!(
            extra_hosts(&bridged, "bridge", "c"),
            ["db:172.17.0.1", "shop_db:172.17.0.1"]
        );
        assert_eq!(
            extra_hosts(&bridged, "host", "c"),
            ["db:127.0.0.2", "shop_db:127.0.0.2"]
        );
        assert_eq!(
            extra_hosts(&at("10.0.0.5"), "bridge", "c"),
            ["db:10.0.0.5", "shop_db:10.0.0.5"]
        );
        assert_eq!(
            extra_hosts(&at("0.0.0.0"), "bridge", "c"),
            ["db:host-gateway", "shop_db:host-gateway"]
        );
        assert_eq!(
            extra_hosts(&at("127.0.0.2"), "host", "c"),
            ["db:127.0.0.2", "shop_db:127.0.0.2"]
        );
        assert_eq!(
            extra_hosts(&at("0.0.0.0"), "host", "c"),
            ["db:127.0.0.1", "shop_db:127.0.0.1"]
        );
        assert!(extra_hosts(&at("10.0.0.5"), "none", "c").is_empty());
    }

    #[test]
    fn image_references() {
        assert_eq!(split_image("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(
            split_image("busybox:1.36"),
            ("busybox".into(), "1.36".into())
        );
        assert_eq!(
            split_image("reg.local:5000/app"),
            ("reg.local:5000/app".into(), "latest".into())
        );
        assert_eq!(
            split_image("reg.local:5000/app:v2"),
            ("reg.local:5000/app".into(), "v2".into())
        );
        assert_eq!(
            split_image("app@sha256:abc"),
            ("app@sha256:abc".into(), String::new())
        );
    }

    #[test]
    fn volumes_cannot_reach_into_the_work_dir() {
        let w = Path::new("/nonexistent-agora/w");
        let sb = Path::new("/nonexistent-agora/w/slaves/a/frameworks/f/executors/e/runs/c");
        let r = |h: &str| reaches_work_dir(Path::new(h), w, sb);
        assert_eq!(r("/data"), None);
        assert_eq!(r("/nonexistent-agora/other"), None);
        assert_eq!(r(&format!("{}/cache", sb.display())), None);
        assert!(r("/").is_some());
        assert!(r("/nonexistent-agora").is_some());
        assert!(r("/nonexistent-agora/w").is_some());
        assert!(r("/nonexistent-agora/w/meta").is_some());
        assert!(r("/nonexistent-agora/w/slaves/a/frameworks/g").is_some());
        assert!(r("/data/../nonexistent-agora/w/slaves").is_some());
        assert!(r(&format!("{}/../../x", sb.display())).is_some());
    }
}
