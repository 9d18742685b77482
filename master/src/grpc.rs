//! The gRPC services (`Scheduler`, `AgentControl`, `Operator`): each handler translates a call into
//! a request to the actor and its answer back into a response or a status. No state lives here.

use std::pin::Pin;
use std::time::Duration;

use agora_proto::v1::{
    self, agent_control_server::AgentControl, operator_server::Operator,
    scheduler_server::Scheduler,
};
use futures::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use std::sync::Arc;

use crate::actor::{MasterHandle, Request as ActorRequest};
use crate::error::MasterError;
use crate::node::Node;

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::Event, Status>> + Send>>;
type MasterMessageStream = Pin<Box<dyn Stream<Item = Result<v1::MasterMessage, Status>> + Send>>;

/// How long an agent may take to send `hello` after opening its session.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Implements the three services; a standby answers every call with `UNAVAILABLE` and the
/// leader's address.
#[derive(Clone)]
pub struct Services {
    node: Arc<Node>,
}

impl Services {
    pub fn new(node: Arc<Node>) -> Self {
        Services { node }
    }

    fn master(&self) -> Result<&MasterHandle, Status> {
        Ok(self.node.leading()?)
    }

    /// For a scheduler call when this master requires credentials: the principal its
    /// `authorization: Basic …` metadata authenticates. `None` when no credentials are required.
    fn scheduler_principal<T>(&self, request: &Request<T>) -> Result<Option<String>, Status> {
        if !self.node.requires_credentials() {
            return Ok(None);
        }
        Ok(self.node.authenticate(authorization(request).as_deref())?)
    }
}

fn authorization<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Authenticates a subscription (`authorization` is the caller's `Basic …` credentials) and
/// checks the ACLs: the framework's principal becomes the authenticated one (a different one
/// named in `info` is refused), and it must be allowed to register in its roles. The gRPC and
/// the Mesos HTTP scheduler APIs both admit subscriptions here.
///
/// # Errors
/// [`MasterError::Unauthenticated`], [`MasterError::PermissionDenied`].
pub(crate) fn admit(
    node: &Node,
    authorization: Option<&str>,
    info: &mut v1::FrameworkInfo,
) -> Result<(), MasterError> {
    if let Some(p) = node.authenticate(authorization)? {
        if !info.principal.is_empty() && info.principal != p {
            return Err(MasterError::PermissionDenied(format!(
                "framework_info.principal '{}' is not the authenticated principal '{p}'",
                info.principal
            )));
        }
        info.principal = p;
    }
    let roles = if info.roles.is_empty() {
        vec!["*".to_string()]
    } else {
        info.roles.clone()
    };
    node.acls().may_register(&info.principal, &roles)
}

/// A scheduler call's caller must be the principal the framework subscribed as: with
/// credentials, a stream id alone does not let another principal act for a framework.
pub(crate) fn check_caller(
    book: &crate::bookkeeping::Bookkeeping,
    header: Option<&v1::CallHeader>,
    principal: Option<&str>,
) -> Result<(), MasterError> {
    let (Some(principal), Some(header)) = (principal, header) else {
        return Ok(());
    };
    match book.framework_principal(&header.framework_id) {
        Some(p) if p != principal => Err(MasterError::PermissionDenied(format!(
            "principal '{principal}' may not call for framework '{}' (it subscribed as '{p}')",
            header.framework_id
        ))),
        _ => Ok(()),
    }
}

fn ok() -> Result<Response<v1::CallResponse>, Status> {
    Ok(Response::new(v1::CallResponse {}))
}

macro_rules! scheduler_call {
    ($self:ident, $req:ident, |$book:ident, $r:ident, $clock:ident| $body:expr) => {{
        let principal = $self.scheduler_principal(&$req)?;
        let $r = $req.into_inner();
        $self
            .master()?
            .call(move |$book, $clock| {
                let _ = &$clock;
                check_caller($book, $r.header.as_ref(), principal.as_deref())?;
                $body
            })
            .await?;
        ok()
    }};
}

#[tonic::async_trait]
impl Scheduler for Services {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let authorization = authorization(&request);
        let mut request = request.into_inner();
        let info = request.framework_info.get_or_insert_with(Default::default);
        admit(&self.node, authorization.as_deref(), info)?;
        let (events, rx) = mpsc::unbounded_channel();
        let (reply, answer) = oneshot::channel();
        self.master()?.send(ActorRequest::Subscribe {
            request,
            events,
            reply,
        })?;
        answer
            .await
            .map_err(|_| MasterError::Unavailable("the master is stopping".into()))??;
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    async fn accept(
        &self,
        request: Request<v1::AcceptRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        scheduler_call!(self, request, |book, r, clock| book.accept(r, clock))
    }

    async fn decline(
        &self,
        request: Request<v1::DeclineRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        scheduler_call!(self, request, |book, r, clock| book.decline(r, clock))
    }

    async fn revive(
        &self,
        request: Request<v1::ReviveRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        scheduler_call!(self, request, |book, r, clock| book.revive(r))
    }

    async fn suppress(
        &self,
        request: Request<v1::SuppressRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        scheduler_call!(self, request, |book, r, clock| book.suppress(r))
    }

    async fn kill(
        &self,
        request: Request<v1::KillRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        scheduler_call!(self, request, |book, r, clock| book.kill(r, clock))
    }

    async fn shutdown(
        &self,
        request: Request<v1::ShutdownRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        scheduler_call!(self, request, |book, r, clock| book.shutdown_executor(r))
    }

    async fn acknowledge(
        &self,
        request: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        scheduler_call!(self, request, |book, r, clock| book.acknowledge(r, clock))
    }

    async fn reconcile(
        &self,
        request: Request<v1::ReconcileRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        scheduler_call!(self, request, |book, r, clock| book.reconcile(r, clock))
    }

    async fn message(
        &self,
        request: Request<v1::MessageRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        scheduler_call!(self, request, |book, r, clock| book.message(r))
    }

    async fn teardown(
        &self,
        request: Request<v1::TeardownRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        scheduler_call!(self, request, |book, r, clock| book.teardown(r, clock))
    }

    async fn update_framework(
        &self,
        request: Request<v1::UpdateFrameworkRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let authorization = authorization(&request);
        let principal = self.scheduler_principal(&request)?;
        let (header, info, suppressed) =
            update_request(&self.node, authorization.as_deref(), request.into_inner())?;
        self.master()?
            .call(move |book, _| {
                check_caller(book, Some(&header), principal.as_deref())?;
                book.update_framework(Some(&header), info, suppressed)
            })
            .await?;
        ok()
    }
}

/// `UpdateFramework`'s own checks before the core's: a header and an info are present, the info
/// names the framework of the header, and it passes the same admission as `Subscribe` (the
/// authenticated principal, the ACLs for its new roles: PERMISSION_DENIED). The core's
/// [`crate::bookkeeping::Bookkeeping::update_framework`] checks the rest and applies all or nothing.
///
/// # Errors
/// [`MasterError::InvalidArgument`] naming the field, [`MasterError::Unauthenticated`],
/// [`MasterError::PermissionDenied`].
pub(crate) fn update_request(
    node: &Node,
    authorization: Option<&str>,
    r: v1::UpdateFrameworkRequest,
) -> Result<(v1::CallHeader, v1::FrameworkInfo, Vec<String>), MasterError> {
    let header = r
        .header
        .ok_or_else(|| MasterError::invalid("header", "is required"))?;
    let mut info = r
        .framework_info
        .ok_or_else(|| MasterError::invalid("framework_info", "is required"))?;
    if info.id != header.framework_id {
        return Err(MasterError::invalid(
            "framework_info.id",
            format!(
                "'{}' differs from header.framework_id '{}'",
                info.id, header.framework_id
            ),
        ));
    }
    admit(node, authorization, &mut info)?;
    Ok((header, info, r.suppressed_roles))
}

#[tonic::async_trait]
impl AgentControl for Services {
    type SessionStream = MasterMessageStream;

    async fn register(
        &self,
        request: Request<v1::RegisterAgentRequest>,
    ) -> Result<Response<v1::RegisterAgentResponse>, Status> {
        self.node.check_agent(&request)?;
        let r = request.into_inner();
        let token = self.node.join_token()?;
        let resp = self
            .master()?
            .call(move |book, clock| {
                book.set_join_token(token);
                book.register_agent(r, clock)
            })
            .await?;
        Ok(Response::new(resp))
    }

    async fn reregister(
        &self,
        request: Request<v1::ReregisterAgentRequest>,
    ) -> Result<Response<v1::RegisterAgentResponse>, Status> {
        self.node.check_agent(&request)?;
        let r = request.into_inner();
        let token = self.node.join_token()?;
        let resp = self
            .master()?
            .call(move |book, clock| {
                book.set_join_token(token);
                book.reregister_agent(r, clock)
            })
            .await?;
        Ok(Response::new(resp))
    }

    async fn session(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        self.node.check_agent(&request)?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("no hello within 10 s of opening the session")
            })??;
        let (agent_id, session_token) = match first.and_then(|m| m.message) {
            Some(v1::agent_message::Message::Hello(h)) if !h.agent_id.is_empty() => {
                (h.agent_id, h.session_token)
            }
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of a session must be hello with the agent_id",
                ))
            }
        };
        let (messages, rx) = mpsc::unbounded_channel();
        let (reply, answer) = oneshot::channel();
        self.master()?.send(ActorRequest::AgentSession {
            agent_id: agent_id.clone(),
            session_token,
            messages,
            reply,
        })?;
        let connection = answer
            .await
            .map_err(|_| MasterError::Unavailable("the master is stopping".into()))??;
        let master = self.master()?.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if let Some(message) = m.message {
                    let req = ActorRequest::AgentMessage {
                        agent_id: agent_id.clone(),
                        message,
                    };
                    if master.send(req).is_err() {
                        return;
                    }
                }
            }
            let _ = master.send(ActorRequest::AgentClosed {
                agent_id,
                connection,
            });
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl Operator for Services {
    async fn get_state(
        &self,
        request: Request<v1::GetStateRequest>,
    ) -> Result<Response<v1::GetStateResponse>, Status> {
        self.node.check_api_token(request.metadata())?;
        let leader = self.master()?.leader().to_string();
        let state = self
            .master()?
            .call(move |book, _| Ok(book.state(&leader)))
            .await?;
        Ok(Response::new(state))
    }

    async fn get_roles(
        &self,
        request: Request<v1::GetRolesRequest>,
    ) -> Result<Response<v1::GetRolesResponse>, Status> {
        self.node.check_api_token(request.metadata())?;
        let roles = self.master()?.call(|book, _| Ok(book.roles())).await?;
        Ok(Response::new(v1::GetRolesResponse { roles }))
    }

    async fn drain_agent(
        &self,
        request: Request<v1::DrainAgentRequest>,
    ) -> Result<Response<v1::OperatorResponse>, Status> {
        self.node.check_api_token(request.metadata())?;
        let r = request.into_inner();
        self.master()?
            .call(move |book, clock| book.drain_agent(&r.agent_id, r.grace_period_seconds, clock))
            .await?;
        Ok(Response::new(v1::OperatorResponse {}))
    }

    async fn reactivate_agent(
        &self,
        request: Request<v1::ReactivateAgentRequest>,
    ) -> Result<Response<v1::OperatorResponse>, Status> {
        self.node.check_api_token(request.metadata())?;
        let r = request.into_inner();
        self.master()?
            .call(move |book, _| book.reactivate_agent(&r.agent_id))
            .await?;
        Ok(Response::new(v1::OperatorResponse {}))
    }

    async fn mark_agent_gone(
        &self,
        request: Request<v1::MarkAgentGoneRequest>,
    ) -> Result<Response<v1::OperatorResponse>, Status> {
        self.node.check_api_token(request.metadata())?;
        let r = request.into_inner();
        self.master()?
            .call(move |book, clock| book.mark_agent_gone(&r.agent_id, clock))
            .await?;
        Ok(Response::new(v1::OperatorResponse {}))
    }

    async fn update_weights(
        &self,
        request: Request<v1::UpdateWeightsRequest>,
    ) -> Result<Response<v1::OperatorResponse>, Status> {
        self.node.check_api_token(request.metadata())?;
        let r = request.into_inner();
        self.master()?
            .call(move |book, _| book.update_weights(&r.weights))
            .await?;
        Ok(Response::new(v1::OperatorResponse {}))
    }

    async fn set_quota(
        &self,
        request: Request<v1::SetQuotaRequest>,
    ) -> Result<Response<v1::OperatorResponse>, Status> {
        self.node.check_api_token(request.metadata())?;
        let r = request.into_inner();
        self.master()?
            .call(move |book, _| book.set_quota(r))
            .await?;
        Ok(Response::new(v1::OperatorResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        let credentials: crate::auth::Credentials =
            serde_json::from_str(r#"{"credentials":[{"principal":"services","secret":"s3cret"}]}"#)
                .expect("credentials");
        let acls: crate::auth::Acls = serde_json::from_str(
            r#"{"permissive": false,
                "register_frameworks": [{"principals": {"values": ["services"]},
                                         "roles": {"values": ["web", "batch"]}}]}"#,
        )
        .expect("acls");
        Node::new("127.0.0.1:5050".into()).with_auth(Some(credentials), acls)
    }

    /// base64("services:s3cret")
    const SERVICES: &str = "Basic c2VydmljZXM6czNjcmV0";

    fn request(id: &str, roles: &[&str]) -> v1::UpdateFrameworkRequest {
        v1::UpdateFrameworkRequest {
            header: Some(v1::CallHeader {
                framework_id: "fw-1".into(),
                stream_id: "s-1".into(),
            }),
            framework_info: Some(v1::FrameworkInfo {
                id: id.into(),
                name: "renamed".into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                ..Default::default()
            }),
            suppressed_roles: vec!["batch".into()],
        }
    }

    fn field(e: MasterError) -> String {
        match e {
            MasterError::InvalidArgument { field, .. } => field,
            e => panic!("not an invalid argument: {e}"),
        }
    }

    #[test]
    fn update_framework_takes_the_authenticated_principal_and_passes_the_rest_on() {
        let (header, info, suppressed) =
            update_request(&node(), Some(SERVICES), request("fw-1", &["web", "batch"]))
                .expect("admitted");
        assert_eq!(header.framework_id, "fw-1");
        assert_eq!(header.stream_id, "s-1");
        assert_eq!(info.principal, "services");
        assert_eq!(info.name, "renamed");
        assert_eq!(info.roles, ["web", "batch"]);
        assert_eq!(suppressed, ["batch"]);
        // Without credentials on the master, the info goes on as sent.
        let open = Node::new("127.0.0.1:5050".into());
        let (_, info, _) =
            update_request(&open, None, request("fw-1", &["web"])).expect("admitted");
        assert_eq!(info.principal, "");
    }

    #[test]
    fn update_framework_refusals_name_the_field_or_the_principal() {
        let n = node();
        let mut r = request("fw-1", &["web"]);
        r.header = None;
        assert_eq!(
            field(update_request(&n, Some(SERVICES), r).unwrap_err()),
            "header"
        );
        let mut r = request("fw-1", &["web"]);
        r.framework_info = None;
        let e = update_request(&n, Some(SERVICES), r).unwrap_err();
        assert_eq!(field(e), "framework_info");
        let e = update_request(&n, Some(SERVICES), request("fw-2", &["web"])).unwrap_err();
        assert_eq!(e.to_status().code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("fw-2"), "{e}");
        assert_eq!(field(e), "framework_info.id");
        // Credentials as on every scheduler call.
        let e = update_request(&n, None, request("fw-1", &["web"])).unwrap_err();
        assert_eq!(e.to_status().code(), tonic::Code::Unauthenticated, "{e}");
        // base64("services:nope")
        let wrong = "Basic c2VydmljZXM6bm9wZQ==";
        let e = update_request(&n, Some(wrong), request("fw-1", &["web"])).unwrap_err();
        assert_eq!(e.to_status().code(), tonic::Code::Unauthenticated, "{e}");
        // A role the principal may not register in, and another principal named in the info.
        let e = update_request(&n, Some(SERVICES), request("fw-1", &["web", "ops"])).unwrap_err();
        assert_eq!(e.to_status().code(), tonic::Code::PermissionDenied, "{e}");
        assert!(e.to_string().contains("'ops'"), "{e}");
        let mut r = request("fw-1", &["web"]);
        if let Some(info) = r.framework_info.as_mut() {
            info.principal = "batch".into();
        }
        let e = update_request(&n, Some(SERVICES), r).unwrap_err();
        assert_eq!(e.to_status().code(), tonic::Code::PermissionDenied, "{e}");
        assert!(e.to_string().contains("framework_info.principal"), "{e}");
    }
}
