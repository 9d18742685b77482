//! Whether this master process leads. Handlers ask the [`Node`] for the actor's handle; a standby
//! has none and answers with where the leader is (gRPC `UNAVAILABLE` with `agora-leader` metadata,
//! HTTP redirects).

use std::path::PathBuf;

use agora_ha::leadership::Leadership;

use crate::actor::MasterHandle;
use crate::error::MasterError;

/// See the module documentation.
pub struct Node {
    leadership: Leadership<MasterHandle>,
    join_token_file: Option<PathBuf>,
    credentials: Option<crate::auth::Credentials>,
    acls: crate::auth::Acls,
    agent_certificates_required: bool,
    /// The certificate must be one the cluster CA issued to an agent (secure by default).
    agent_role_required: bool,
    api_token: Option<agora_net::http_auth::ApiToken>,
}

impl Node {
    /// A node advertised at `me` (`host:port`), not leading yet.
    pub fn new(me: String) -> Self {
        Node {
            leadership: Leadership::new(me),
            join_token_file: None,
            credentials: None,
            acls: crate::auth::Acls::default(),
            agent_certificates_required: false,
            agent_role_required: false,
            api_token: None,
        }
    }

    /// `--api-token-file`: the Operator gRPC service requires it as HTTP does.
    pub fn with_api_token(mut self, token: Option<agora_net::http_auth::ApiToken>) -> Self {
        self.api_token = token;
        self
    }

    /// Checks an Operator call's `authorization: Bearer <token>` metadata when this master has an
    /// API token.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` (missing or wrong token) or `UNAVAILABLE` (unreadable token file).
    pub fn check_api_token(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<(), tonic::Status> {
        match &self.api_token {
            None => Ok(()),
            Some(token) => token.check_metadata(metadata).map_err(|refusal| {
                tracing::debug!(error = refusal.code(), "Operator gRPC call refused");
                refusal.status("master")
            }),
        }
    }

    /// True when frameworks must authenticate (`--credentials`).
    pub fn requires_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// Framework credentials (`None`: frameworks need not authenticate) and ACLs.
    pub fn with_auth(
        mut self,
        credentials: Option<crate::auth::Credentials>,
        acls: crate::auth::Acls,
    ) -> Self {
        self.credentials = credentials;
        self.acls = acls;
        self
    }

    /// Who the caller is, from its `authorization: Basic …` header; `Ok(None)` when this master
    /// does not require credentials.
    ///
    /// # Errors
    /// [`MasterError::Unauthenticated`].
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Option<String>, MasterError> {
        let given = authorization.and_then(crate::auth::basic);
        match &self.credentials {
            Some(c) => c.authenticate(given).map(Some),
            None => Ok(given.map(|(p, _)| p)),
        }
    }

    pub fn acls(&self) -> &crate::auth::Acls {
        &self.acls
    }

    /// Agents must present a TLS client certificate signed by the master's CA (mutual TLS).
    pub fn with_agent_certificates_required(mut self, required: bool) -> Self {
        self.agent_certificates_required = required;
        self
    }

    /// Agents' certificates must be agent certificates of the cluster CA (not a framework's).
    pub fn with_agent_role_required(mut self, required: bool) -> Self {
        self.agent_role_required = required;
        self
    }

    /// [`Node::check_agent_certificate`] for the connection of `request`, and in secure-by-default
    /// mode its certificate must be an agent's.
    ///
    /// # Errors
    /// [`MasterError::Unauthenticated`] saying what the agent must do.
    pub fn check_agent<T>(&self, request: &tonic::Request<T>) -> Result<(), MasterError> {
        if self.agent_role_required
            && agora_net::tls::client_role(request) != Some(agora_net::pki::Role::Agent)
        {
            return Err(MasterError::Unauthenticated(
                "this master requires agents to present an agent certificate of the cluster CA \
                 (start the agent with --join-token AGORA-1-…, printed by `agora master token`)"
                    .into(),
            ));
        }
        self.check_agent_certificate(agora_net::tls::has_client_certificate(request))
    }

    /// Refuses an agent call made without a verified client certificate when this master requires
    /// one.
    ///
    /// # Errors
    /// [`MasterError::Unauthenticated`] saying what the agent must do.
    pub fn check_agent_certificate(&self, presented: bool) -> Result<(), MasterError> {
        if self.agent_certificates_required && !presented {
            return Err(MasterError::Unauthenticated(
                "this master requires agents to present a TLS client certificate signed by its CA \
                 (start the agent with --tls-cert, --tls-key and --tls-ca)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Agents must present the token in this file to register.
    pub fn with_join_token_file(mut self, path: Option<PathBuf>) -> Self {
        self.join_token_file = path;
        self
    }

    /// The current join token (read from its file at each call, so rotation is immediate).
    ///
    /// # Errors
    /// [`MasterError::Unavailable`] if the file cannot be read: refusing is safer than admitting.
    pub fn join_token(&self) -> Result<Option<String>, MasterError> {
        let Some(path) = &self.join_token_file else {
            return Ok(None);
        };
        match crate::join_token::read(path) {
            Ok(Some(t)) => Ok(Some(t)),
            Ok(None) => Err(MasterError::Unavailable(format!(
                "the join token file {} is missing or empty",
                path.display()
            ))),
            Err(e) => Err(MasterError::Unavailable(e.to_string())),
        }
    }

    /// The actor's handle when this master leads.
    ///
    /// # Errors
    /// [`MasterError::NotLeader`] naming the leader, when known.
    pub fn leading(&self) -> Result<&MasterHandle, MasterError> {
        self.leadership
            .handle()
            .ok_or_else(|| MasterError::NotLeader {
                leader: self.leader(),
            })
    }

    pub fn is_leading(&self) -> bool {
        self.leadership.is_leading()
    }

    /// Takes leadership: from now on calls reach the actor.
    pub fn become_leader(&self, handle: MasterHandle) {
        self.leadership.lead(handle);
    }

    /// A planned stop: answer as a standby from now on (see [`Leadership::resign`]).
    pub fn resign(&self) {
        self.leadership.resign();
    }

    /// Records where the leader is (standby).
    pub fn set_leader(&self, leader: Option<String>) {
        self.leadership.set_leader(leader);
    }

    /// The leading master's address: this one when leading.
    pub fn leader(&self) -> Option<String> {
        self.leadership.leader()
    }

    pub fn me(&self) -> &str {
        self.leadership.me()
    }
}
