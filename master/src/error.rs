//! Errors of the master, kept apart by who must act on them: a caller that sent a bad request
//! ([`MasterError`]) or the operator of a master whose durable state failed ([`StoreError`]).

/// gRPC metadata key naming the leading master on `UNAVAILABLE` from a standby.
pub const LEADER_METADATA: &str = "agora-leader";

/// A request the master refused. Each variant names the field or id at fault; it maps onto one gRPC
/// status ([`MasterError::to_status`]) and one HTTP status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MasterError {
    /// A field of the request is malformed or breaks a rule.
    #[error("{field}: {problem}")]
    InvalidArgument { field: String, problem: String },
    /// The request names an agent, framework, task or offer the master does not know.
    #[error("{kind} '{id}' is not known to this master{hint}")]
    NotFound {
        kind: &'static str,
        id: String,
        hint: String,
    },
    /// Valid, but not now: a stale stream id, a removed framework, a gone agent.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller did not prove who it is (missing or wrong credentials).
    #[error("{0}")]
    Unauthenticated(String),
    /// This master is a standby: call the leader.
    #[error("this master is not the leader{}", match leader { Some(l) => format!("; the leading master is at {l}"), None => "; no leading master is elected yet".to_string() })]
    NotLeader { leader: Option<String> },
    /// The master is shutting down or its actor is gone.
    #[error("the master is not available: {0}")]
    Unavailable(String),
}

impl MasterError {
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        MasterError::InvalidArgument {
            field: field.into(),
            problem: problem.into(),
        }
    }

    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        MasterError::NotFound {
            kind,
            id: id.into(),
            hint: String::new(),
        }
    }

    pub fn not_found_hint(kind: &'static str, id: impl Into<String>, hint: &str) -> Self {
        MasterError::NotFound {
            kind,
            id: id.into(),
            hint: format!(": {hint}"),
        }
    }

    /// The gRPC status a client sees.
    pub fn to_status(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            MasterError::InvalidArgument { .. } => tonic::Status::invalid_argument(message),
            MasterError::NotFound { .. } => tonic::Status::not_found(message),
            MasterError::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            MasterError::PermissionDenied(_) => tonic::Status::permission_denied(message),
            MasterError::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            MasterError::Unavailable(_) => tonic::Status::unavailable(message),
            MasterError::NotLeader { leader } => {
                let mut status = tonic::Status::unavailable(message);
                if let Some(value) = leader
                    .as_deref()
                    .and_then(|l| tonic::metadata::MetadataValue::try_from(l).ok())
                {
                    status.metadata_mut().insert(LEADER_METADATA, value);
                }
                status
            }
        }
    }

    /// The HTTP status of the same error on the JSON API.
    pub fn http_status(&self) -> http::StatusCode {
        match self {
            MasterError::InvalidArgument { .. } => http::StatusCode::BAD_REQUEST,
            MasterError::NotFound { .. } => http::StatusCode::NOT_FOUND,
            MasterError::FailedPrecondition(_) => http::StatusCode::CONFLICT,
            MasterError::PermissionDenied(_) => http::StatusCode::FORBIDDEN,
            MasterError::Unauthenticated(_) => http::StatusCode::UNAUTHORIZED,
            MasterError::Unavailable(_) | MasterError::NotLeader { .. } => {
                http::StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

impl From<MasterError> for tonic::Status {
    fn from(e: MasterError) -> Self {
        e.to_status()
    }
}

/// The durable registry could not be read or written (`agora-ha`'s store error).
pub use agora_ha::store::StoreError;

/// Why the master process stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("server failed: {0}")]
    Serve(String),
    /// A configuration file (credentials, ACLs) is missing or malformed.
    #[error("{0}")]
    Config(String),
    /// This master lost (or could not take part in) the ZooKeeper election; it must stop and be
    /// restarted by its supervisor.
    #[error("leadership lost: {0}")]
    LostLeadership(String),
}
