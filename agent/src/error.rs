//! Error types of the agent, one enum per concern.
#![forbid(unsafe_code)]

use std::io;
use std::path::PathBuf;

/// Why a containerizer could not launch, watch, kill or recover a container.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The task cannot be run as described (missing command, bad volume, …).
    #[error("invalid task: {0}")]
    InvalidTask(String),
    /// The Docker image was absent and could not be pulled.
    #[error("failed to pull image '{image}': {message}")]
    ImagePull { image: String, message: String },
    /// The container or its supervising process could not be started.
    #[error("failed to launch container: {0}")]
    Launch(String),
    /// The Docker Engine answered with an error.
    #[error("docker engine: {0}")]
    Docker(#[from] bollard::errors::Error),
    /// A file of the sandbox, the checkpoint or a cgroup could not be read or written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// A URI of the task could not be fetched into its sandbox.
    #[error("fetching '{uri}' failed: {message}")]
    Fetch { uri: String, message: String },
    /// The task asks for a containerizer this agent was not started with.
    #[error("containerizer '{0}' is not enabled on this agent (see --containerizers)")]
    NotEnabled(String),
}

impl ContainerError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        ContainerError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Fatal errors of the agent as a whole (start-up, recovery, serving).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A checkpoint file exists but cannot be decoded: recovery refuses to guess.
    #[error("corrupt checkpoint {path}: {message}")]
    CorruptCheckpoint { path: PathBuf, message: String },
    /// The work directory or a checkpoint file could not be read or written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// `--resources` could not be parsed.
    #[error("invalid --resources: {0}")]
    Resources(String),
    /// `--attributes` could not be parsed.
    #[error("invalid --attributes '{0}': expected name:value pairs separated by ';'")]
    Attributes(String),
    /// `--containerizers` names an unknown containerizer.
    #[error("unknown containerizer '{0}' in --containerizers (known: docker, native)")]
    UnknownContainerizer(String),
    /// The Docker containerizer is enabled but the engine cannot be reached.
    #[error("docker containerizer enabled but the engine is unreachable: {0}")]
    DockerUnavailable(String),
    /// The HTTP port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    /// The agent's actor stopped (it panicked or was shut down).
    #[error("the agent has stopped")]
    Stopped,
    /// The master told the agent to shut down (it was removed from the cluster).
    #[error("shut down by the master: {0}")]
    ShutdownByMaster(String),
    /// The master refused to admit the agent (its join token was rejected).
    #[error("the master refused this agent: {0}")]
    JoinRefused(String),
    /// The master speaks TLS and this agent was started without TLS settings.
    #[error("the master at {0} speaks TLS: start the agent with --tls-ca FILE (the CA that signed the master's certificate; add --tls-cert and --tls-key if the master requires agent certificates)")]
    TlsRequired(String),
    /// `--master` is neither `host:port` nor a `zk://` URL.
    #[error("{0}")]
    BadMaster(String),
    /// A flag's value is unusable (TLS files, ...); the message names the flag.
    #[error("{0}")]
    Config(String),
}

impl AgentError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        AgentError::Io {
            path: path.into(),
            source,
        }
    }
}
