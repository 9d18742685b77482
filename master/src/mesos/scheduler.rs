//! `POST /api/v1/scheduler`: Mesos's v1 scheduler API.
//!
//! SUBSCRIBE answers 200 with a chunked RecordIO stream of events (one record per chunk) and the
//! `Mesos-Stream-Id` header (the subscription's unguessable stream id, the same one gRPC
//! frameworks put in their call headers); SUBSCRIBED comes first, then HEARTBEAT at once and
//! every heartbeat interval. Every other call names its framework and carries the stream id, and
//! is answered 202 with an empty body once the core took it. As Mesos, a call the core could
//! not apply after the caller was checked (a stale offer, a task that has ended, an agent that
//! is gone) is still 202: the framework learns of it by UPDATE events (TASK_LOST / TASK_DROPPED
//! with REASON_INVALID_OFFERS, or the task's last state), since some clients abort on any
//! non-2xx answer.

use std::sync::Arc;

use agora_proto::v1;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::wire::{self, Call};
use super::{error_response, text};
use super::{protobuf, Format};
use crate::actor::Request as ActorRequest;
use crate::bookkeeping::{Bookkeeping, Caller, Clock};
use crate::error::MasterError;
use crate::node::Node;

/// The header carrying the subscription's stream id.
pub const STREAM_ID_HEADER: &str = "mesos-stream-id";

/// Serves one scheduler call.
pub async fn call(State(node): State<Arc<Node>>, request: Request) -> Response {
    let (parts, call): (_, Call) =
        match super::read_call(&node, request, "Call", protobuf::SCHEDULER_CALL).await {
            Ok(c) => c,
            Err(r) => return r,
        };
    let authorization = basic_authorization(&parts.headers);
    match call.kind.as_str() {
        "SUBSCRIBE" => subscribe(&node, &parts.headers, authorization.as_deref(), call).await,
        "" => text(StatusCode::BAD_REQUEST, "Expecting 'type' to be present"),
        _ => {
            let response = other(&node, &parts.headers, authorization.as_deref(), call)
                .await
                .unwrap_or_else(|r| r);
            // Schedulers keep one connection for their calls and may leave it idle for hours;
            // pymesos does not retry a call on a connection the server closed meanwhile, and its
            // driver then dies. A call of a subscribed framework (202, or 200 for
            // UPDATE_FRAMEWORK: its stream id and credentials checked) lets its connection stay
            // idle as long as Mesos's would.
            if response.status().is_success() {
                if let Some(k) = parts.extensions.get::<agora_net::keep_alive::KeepAlive>() {
                    k.extend();
                }
            }
            response
        }
    }
}

/// The `Basic` credentials among the `Authorization` headers (a `Bearer` API token may be sent
/// beside them).
fn basic_authorization(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.trim_start().to_ascii_lowercase().starts_with("basic "))
        .map(str::to_string)
}

async fn subscribe(
    node: &Node,
    headers: &HeaderMap,
    authorization: Option<&str>,
    call: Call,
) -> Response {
    let Some(format) = super::answer_format(headers) else {
        return text(
            StatusCode::NOT_ACCEPTABLE,
            "Expecting 'Accept' to allow application/json or application/x-protobuf",
        );
    };
    let Some(subscribe) = call.subscribe else {
        return text(
            StatusCode::BAD_REQUEST,
            "Expecting 'subscribe' to be present",
        );
    };
    let Some(framework_info) = subscribe.framework_info else {
        return text(
            StatusCode::BAD_REQUEST,
            "Expecting 'subscribe.framework_info' to be present",
        );
    };
    let mut info = wire::framework_info(framework_info);
    if !call.framework_id.is_empty() {
        if info.id.is_empty() {
            info.id = call.framework_id.clone();
        } else if info.id != call.framework_id {
            return text(
                StatusCode::BAD_REQUEST,
                "'framework_id' differs from 'subscribe.framework_info.id'",
            );
        }
    }
    if let Err(e) = crate::grpc::admit(node, authorization, &mut info) {
        return error_response(&e);
    }
    let partition_aware = info
        .capabilities
        .contains(&(v1::FrameworkCapability::PartitionAware as i32));
    let request = v1::SubscribeRequest {
        framework_info: Some(info),
        suppressed_roles: subscribe.suppressed_roles,
    };
    let master = match node.leading() {
        Ok(m) => m,
        Err(e) => return error_response(&e),
    };
    let (events, mut rx) = mpsc::unbounded_channel();
    let (reply, answer) = oneshot::channel();
    if let Err(e) = master.send(ActorRequest::Subscribe {
        request,
        events,
        reply,
    }) {
        return error_response(&e);
    }
    match answer.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return error_response(&e),
        Err(_) => {
            return error_response(&MasterError::Unavailable("the master is stopping".into()))
        }
    }
    // The core queued SUBSCRIBED first: it names the stream id for the header.
    let first = match rx.recv().await {
        Some(Ok(e)) => e,
        Some(Err(status)) => return text(StatusCode::SERVICE_UNAVAILABLE, status.message()),
        None => return error_response(&MasterError::Unavailable("the master is stopping".into())),
    };
    let Some(v1::event::Event::Subscribed(subscribed)) = &first.event else {
        return error_response(&MasterError::Unavailable(
            "the subscription did not start with SUBSCRIBED".into(),
        ));
    };
    let Ok(stream_id) = HeaderValue::from_str(&subscribed.stream_id) else {
        return error_response(&MasterError::Unavailable(
            "the stream id is not a header value".into(),
        ));
    };
    let mut opening = Vec::new();
    if let Some(v) = wire::event_json(&first, partition_aware) {
        opening.push(Ok::<Bytes, std::convert::Infallible>(frame(format, &v)));
    }
    opening.push(Ok(frame(format, &wire::heartbeat_event())));
    let rest = futures::stream::unfold(Some(rx), move |rx| async move {
        let mut rx = rx?;
        loop {
            match rx.recv().await {
                None => return None,
                Some(Ok(event)) => {
                    if let Some(v) = wire::event_json(&event, partition_aware) {
                        return Some((Ok(frame(format, &v)), Some(rx)));
                    }
                }
                // The core closed the subscription (failover by another instance, teardown,
                // removal): Mesos says why in an ERROR event, then ends the stream.
                Some(Err(status)) => {
                    return Some((
                        Ok(frame(format, &wire::error_event(status.message()))),
                        None,
                    ))
                }
            }
        }
    });
    let stream = futures::StreamExt::chain(futures::stream::iter(opening), rest);
    let body = Body::from_stream(stream);
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.media_type()),
            ),
            (header::HeaderName::from_static(STREAM_ID_HEADER), stream_id),
        ],
        body,
    )
        .into_response()
}

/// One event as one RecordIO record, in the subscription's format. An event the protobuf
/// encoding refuses (a bug of the adapter) is logged and replaced by an ERROR saying so.
fn frame(format: Format, v: &serde_json::Value) -> Bytes {
    match format {
        Format::Json => Bytes::from(wire::record(wire::ascii_json(v).as_bytes())),
        Format::Protobuf => Bytes::from(protobuf::event_record(v).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not encode a Mesos event as protobuf");
            let error = wire::error_event(&format!("Agora could not encode an event: {e}"));
            protobuf::event_record(&error).unwrap_or_default()
        })),
    }
}

/// What the core made of a call, as Mesos answers it.
enum Answer {
    /// 202, or 200 for UPDATE_FRAMEWORK (Mesos answers it once applied).
    Done,
    BadRequest(String),
    Forbidden(String),
    /// 409: UPDATE_FRAMEWORK of a framework that went away meanwhile.
    Conflict(String),
}

type Op = Box<dyn FnOnce(&mut Bookkeeping, &Clock) -> Result<(), MasterError> + Send>;

/// A call after SUBSCRIBE: framework id and stream id first, then the call's own fields.
async fn other(
    node: &Node,
    headers: &HeaderMap,
    authorization: Option<&str>,
    call: Call,
) -> Result<Response, Response> {
    if call.framework_id.is_empty() {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "Expecting 'framework_id' to be present",
        ));
    }
    let Some(stream_id) = headers
        .get(STREAM_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
        ));
    };
    let principal = if node.requires_credentials() {
        node.authenticate(authorization)
            .map_err(|e| error_response(&e))?
    } else {
        None
    };
    let header = v1::CallHeader {
        framework_id: call.framework_id.clone(),
        stream_id,
    };
    let update = call.kind == "UPDATE_FRAMEWORK";
    let op = if update {
        update_framework(node, authorization, header.clone(), call)?
    } else {
        operation(header.clone(), call)?
    };
    let master = node.leading().map_err(|e| error_response(&e))?;
    let answer = master
        .call(move |book, clock| {
            match book.caller(&header.framework_id, &header.stream_id) {
                Caller::Unknown => {
                    return Ok(Answer::BadRequest(format!(
                        "Framework '{}' is not known to this master",
                        header.framework_id
                    )))
                }
                Caller::Removed => {
                    return Ok(Answer::BadRequest(format!(
                        "Framework '{}' was removed (torn down or timed out)",
                        header.framework_id
                    )))
                }
                Caller::NotSubscribed => {
                    return Ok(Answer::Forbidden(format!(
                        "Framework '{}' is not subscribed",
                        header.framework_id
                    )))
                }
                Caller::WrongStream => {
                    return Ok(Answer::BadRequest(format!(
                        "The stream ID '{}' included in this request didn't match the stream ID \
                         currently associated with framework ID '{}'",
                        header.stream_id, header.framework_id
                    )))
                }
                Caller::Current => {}
            }
            if let Err(e) = crate::grpc::check_caller(book, Some(&header), principal.as_deref()) {
                return Ok(Answer::Forbidden(e.to_string()));
            }
            Ok(match op(book, clock) {
                Ok(()) => Answer::Done,
                Err(e @ MasterError::InvalidArgument { .. }) => Answer::BadRequest(e.to_string()),
                Err(e @ MasterError::PermissionDenied(_)) => Answer::Forbidden(e.to_string()),
                Err(e) if update => Answer::Conflict(e.to_string()),
                // Checked and taken, but nothing to apply it to now: Mesos answers 202 and the
                // framework learns the outcome from its events.
                Err(e) => {
                    debug!(error = %e, "Mesos scheduler call accepted with nothing to do");
                    Answer::Done
                }
            })
        })
        .await
        .map_err(|e| error_response(&e))?;
    Ok(match answer {
        Answer::Done if update => StatusCode::OK.into_response(),
        Answer::Done => StatusCode::ACCEPTED.into_response(),
        Answer::BadRequest(m) => text(StatusCode::BAD_REQUEST, m),
        Answer::Forbidden(m) => text(StatusCode::FORBIDDEN, m),
        Answer::Conflict(m) => text(StatusCode::CONFLICT, m),
    })
}

/// UPDATE_FRAMEWORK: Mesos's checks of the call (the body field, the framework id it names), the
/// same admission as SUBSCRIBE (the authenticated principal, the ACLs for the new roles: 403),
/// then the core's [`Bookkeeping::update_framework`], which applies all of it or nothing.
fn update_framework(
    node: &Node,
    authorization: Option<&str>,
    header: v1::CallHeader,
    call: Call,
) -> Result<Op, Response> {
    let u = call
        .update_framework
        .ok_or_else(|| missing("update_framework"))?;
    let info = u
        .framework_info
        .ok_or_else(|| missing("update_framework.framework_info"))?;
    let mut info = wire::framework_info(info);
    if info.id != call.framework_id {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "'framework_id' differs from 'update_framework.framework_info.id'",
        ));
    }
    if u.offer_constraints.is_some() {
        debug!("UPDATE_FRAMEWORK's offer_constraints are not applied: Agora offers every agent");
    }
    crate::grpc::admit(node, authorization, &mut info).map_err(|e| error_response(&e))?;
    let suppressed = u.suppressed_roles;
    Ok(Box::new(move |book, _| {
        book.update_framework(Some(&header), info, suppressed)
            .map_err(|e| match e {
                MasterError::InvalidArgument { field, problem } => MasterError::InvalidArgument {
                    field: format!("update_framework.{field}"),
                    problem,
                },
                e => e,
            })
    }))
}

fn missing(what: &str) -> Response {
    text(
        StatusCode::BAD_REQUEST,
        format!("Expecting '{what}' to be present"),
    )
}

fn invalid(e: MasterError) -> Response {
    text(StatusCode::BAD_REQUEST, e.to_string())
}

/// Translates a call into the core's request, checking its shape first (400 naming the field).
fn operation(header: v1::CallHeader, call: Call) -> Result<Op, Response> {
    let h = Some(header.clone());
    Ok(match call.kind.as_str() {
        "TEARDOWN" => {
            Box::new(move |book, clock| book.teardown(v1::TeardownRequest { header: h }, clock))
        }
        "ACCEPT" => {
            let a = call.accept.ok_or_else(|| missing("accept"))?;
            let mut operations = Vec::new();
            let mut refused = Vec::new();
            for (i, op) in a.operations.into_iter().enumerate() {
                let t = wire::operation(&format!("accept.operations[{i}]"), op).map_err(invalid)?;
                if let Some(why) = t.dropped {
                    debug!(%why, "Mesos ACCEPT: an operation was dropped");
                }
                operations.extend(t.operation);
                refused.extend(t.refused);
            }
            let req = v1::AcceptRequest {
                header: h,
                offer_ids: a.offer_ids,
                operations,
                filters: wire::filters(a.filters),
            };
            Box::new(move |book, clock| {
                // Tasks the core cannot be given (SET resources): TASK_ERROR, as Mesos reports a
                // task its offers cannot hold; then the rest of the call as usual.
                if !refused.is_empty() {
                    crate::bookkeeping::limits::refuse_seconds(req.filters.as_ref())?;
                    book.refuse_tasks(req.header.as_ref(), &req.offer_ids, refused, clock)?;
                }
                match book.accept(req, clock) {
                    // Bad filters: nothing was taken, the call itself is wrong.
                    Err(e @ MasterError::InvalidArgument { .. }) if matches!(&e, MasterError::InvalidArgument { field, .. } if field.starts_with("filters")) => {
                        Err(e)
                    }
                    // Unusable offers: the tasks were reported dropped (TASK_LOST to frameworks
                    // that are not partition-aware) with REASON_INVALID_OFFERS.
                    Err(e) => {
                        debug!(error = %e, "Mesos ACCEPT refused; its tasks were reported");
                        Ok(())
                    }
                    Ok(()) => Ok(()),
                }
            })
        }
        "DECLINE" => {
            let d = call.decline.ok_or_else(|| missing("decline"))?;
            let req = v1::DeclineRequest {
                header: h,
                offer_ids: d.offer_ids,
                filters: wire::filters(d.filters),
            };
            Box::new(move |book, clock| book.decline(req, clock))
        }
        "REVIVE" => {
            let roles = call.revive.map(|r| r.roles).unwrap_or_default();
            Box::new(move |book, _| book.revive(v1::ReviveRequest { header: h, roles }))
        }
        "SUPPRESS" => {
            let roles = call.suppress.map(|r| r.roles).unwrap_or_default();
            Box::new(move |book, _| book.suppress(v1::SuppressRequest { header: h, roles }))
        }
        "KILL" => {
            let k = call.kill.ok_or_else(|| missing("kill"))?;
            if k.task_id.is_empty() {
                return Err(missing("kill.task_id"));
            }
            let req = v1::KillRequest {
                header: h.clone(),
                task_id: k.task_id.clone(),
                agent_id: k.agent_id.clone(),
                kill_policy: k.kill_policy.map(wire::kill_policy),
            };
            Box::new(move |book, clock| match book.kill(req, clock) {
                // A task the master does not know: as Mesos, the framework is told its state
                // (its last one, or unknown/lost) instead of an error.
                Err(MasterError::NotFound { kind: "task", .. }) => book.reconcile(
                    v1::ReconcileRequest {
                        header: h,
                        tasks: vec![v1::reconcile_request::TaskRef {
                            task_id: k.task_id,
                            agent_id: k.agent_id,
                        }],
                    },
                    clock,
                ),
                r => r,
            })
        }
        "SHUTDOWN" => {
            let s = call.shutdown.ok_or_else(|| missing("shutdown"))?;
            let req = v1::ShutdownRequest {
                header: h,
                executor_id: s.executor_id,
                agent_id: s.agent_id,
            };
            Box::new(move |book, _| book.shutdown_executor(req))
        }
        "ACKNOWLEDGE" => {
            let a = call.acknowledge.ok_or_else(|| missing("acknowledge"))?;
            let uuid = wire::bytes("acknowledge.uuid", &a.uuid).map_err(invalid)?;
            let req = v1::AcknowledgeRequest {
                header: h,
                agent_id: a.agent_id,
                task_id: a.task_id,
                uuid,
            };
            Box::new(move |book, clock| book.acknowledge(req, clock))
        }
        "RECONCILE" => {
            let r = call.reconcile.unwrap_or_default();
            let req = v1::ReconcileRequest {
                header: h,
                tasks: r
                    .tasks
                    .into_iter()
                    .map(|t| v1::reconcile_request::TaskRef {
                        task_id: t.task_id,
                        agent_id: t.agent_id,
                    })
                    .collect(),
            };
            Box::new(move |book, clock| book.reconcile(req, clock))
        }
        "MESSAGE" => {
            let m = call.message.ok_or_else(|| missing("message"))?;
            let data = wire::bytes("message.data", &m.data).map_err(invalid)?;
            let req = v1::MessageRequest {
                header: h,
                agent_id: m.agent_id,
                executor_id: m.executor_id,
                data,
            };
            Box::new(move |book, _| book.message(req))
        }
        // Calls about what Agora never sends (inverse offers, operation feedback) and REQUEST,
        // which Mesos's allocator ignores too: checked, then nothing to do.
        "REQUEST"
        | "ACCEPT_INVERSE_OFFERS"
        | "DECLINE_INVERSE_OFFERS"
        | "ACKNOWLEDGE_OPERATION_STATUS"
        | "RECONCILE_OPERATIONS" => Box::new(|_, _| Ok(())),
        other => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                format!("Unknown call type '{other}'"),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_format_follows_accept_as_mesos_picks_it() {
        let mut h = HeaderMap::new();
        assert_eq!(super::super::answer_format(&h), Some(Format::Json));
        for (accept, format) in [
            ("application/json", Some(Format::Json)),
            ("text/html, */*;q=0.1", Some(Format::Json)),
            ("application/x-protobuf", Some(Format::Protobuf)),
            (
                "application/x-protobuf, application/json",
                Some(Format::Json),
            ),
            ("text/html", None),
        ] {
            h.insert(header::ACCEPT, HeaderValue::from_static(accept));
            assert_eq!(super::super::answer_format(&h), format, "{accept}");
        }
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/recordio"),
        );
        assert_eq!(super::super::answer_format(&h), Some(Format::Json));
        h.insert(
            "message-accept",
            HeaderValue::from_static("application/x-protobuf"),
        );
        assert_eq!(super::super::answer_format(&h), Some(Format::Protobuf));
    }

    #[test]
    fn a_call_missing_its_body_field_is_refused_naming_it() {
        let header = v1::CallHeader::default();
        for (kind, field) in [
            ("ACCEPT", "accept"),
            ("DECLINE", "decline"),
            ("KILL", "kill"),
            ("ACKNOWLEDGE", "acknowledge"),
            ("MESSAGE", "message"),
            ("SHUTDOWN", "shutdown"),
        ] {
            let call = Call {
                kind: kind.into(),
                framework_id: "f".into(),
                ..Default::default()
            };
            let Err(r) = operation(header.clone(), call) else {
                panic!("{kind} without '{field}' was taken");
            };
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{kind}");
        }
        let bad_uuid: Call = serde_json::from_str(
            r#"{"type":"ACKNOWLEDGE","framework_id":{"value":"f"},
                "acknowledge":{"agent_id":{"value":"a"},"task_id":{"value":"t"},"uuid":"%%%"}}"#,
        )
        .expect("parses");
        assert!(operation(header.clone(), bad_uuid).is_err());
        let unknown = Call {
            kind: "FLY".into(),
            ..Default::default()
        };
        assert!(operation(header, unknown).is_err());
    }
}
