//! Who leads, as a process's API layers see it: [`Leadership<H>`] holds the core's handle once
//! this process leads and the leader's address otherwise; standbys answer with
//! [`standby_response`] (307 to the leader, or 503 while none is elected), through the
//! [`standby_redirect`] middleware, or forward the call with a [`LeaderProxy`] (Marathon's
//! behaviour, for clients that do not follow redirects).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, StatusCode};
use serde_json::json;

/// See the module documentation. `H` is the handle of the core's actor.
pub struct Leadership<H> {
    handle: OnceLock<H>,
    leader: RwLock<Option<String>>,
    me: String,
    /// Set on a planned stop: from then on this process answers as a standby.
    resigned: AtomicBool,
}

impl<H> Leadership<H> {
    /// Not leading yet; `me` is this process's advertised `host:port`.
    pub fn new(me: impl Into<String>) -> Self {
        Leadership {
            handle: OnceLock::new(),
            leader: RwLock::new(None),
            me: me.into(),
            resigned: AtomicBool::new(false),
        }
    }

    /// The actor's handle, when this process leads (and has not resigned).
    pub fn handle(&self) -> Option<&H> {
        if self.resigned.load(Ordering::SeqCst) {
            return None;
        }
        self.handle.get()
    }

    pub fn is_leading(&self) -> bool {
        self.handle().is_some()
    }

    /// A planned stop: from now on this process answers as a standby (307 to the next leader once
    /// it is known, 503 meanwhile), even while it still finishes its last writes and leaves the
    /// election. It never leads again.
    pub fn resign(&self) {
        self.resigned.store(true, Ordering::SeqCst);
    }

    /// Takes leadership: from now on calls reach the actor.
    pub fn lead(&self, handle: H) {
        let _ = self.handle.set(handle);
    }

    /// Records where the leader is (standby).
    pub fn set_leader(&self, leader: Option<String>) {
        if let Ok(mut l) = self.leader.write() {
            *l = leader;
        }
    }

    /// The leader's address: this process's when it leads.
    pub fn leader(&self) -> Option<String> {
        if self.is_leading() {
            return Some(self.me.clone());
        }
        // A resigned process may still be the one its election names: never send clients to it.
        self.leader
            .read()
            .ok()
            .and_then(|l| l.clone())
            .filter(|l| *l != self.me)
    }

    /// This process's advertised address.
    pub fn me(&self) -> &str {
        &self.me
    }
}

/// A standby's answer to a call for `target` (path and query): 307 to the same target on the
/// leader, or 503 saying `no_leader` when none is elected; the body says which, for people and
/// scripts that do not follow redirects. The location is scheme-relative (`//leader/path`):
/// every instance serves the scheme this one does (they share their TLS flags). `standby` is
/// false when a leader redirects to itself (a `/redirect` endpoint).
pub fn standby_response(
    leader: Option<String>,
    target: &str,
    standby: bool,
    no_leader: &str,
) -> Response {
    match leader {
        Some(leader) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, format!("//{leader}{target}"))],
            Json(json!({ "leader": leader, "standby": standby })),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "leader": null, "standby": true, "message": no_leader })),
        )
            .into_response(),
    }
}

/// Paths every instance answers itself, leader or not (load balancers' and supervisors' checks).
pub const ALWAYS_ANSWERED: &[&str] = &["/ping", "/health"];

/// Axum middleware: a standby sends every request but [`ALWAYS_ANSWERED`] to the leader (307
/// keeps the method and body), or answers 503 while none is elected.
pub async fn standby_redirect<H: Send + Sync + 'static>(
    State(leadership): State<Arc<Leadership<H>>>,
    req: Request,
    next: Next,
) -> Response {
    if leadership.is_leading() || ALWAYS_ANSWERED.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    standby_response(
        leadership.leader(),
        &target,
        true,
        "no leader is elected yet",
    )
}

/// How a standby reaches the leader: with the scheme every instance serves (they share their TLS
/// flags) and a client that trusts the cluster CA.
#[derive(Clone)]
pub struct LeaderProxy {
    client: reqwest::Client,
    scheme: &'static str,
    /// Header set on forwarded requests (`X-Marathon-Via`) and on answers, naming the leader
    /// (`X-Marathon-Leader`).
    via_header: &'static str,
    leader_header: &'static str,
}

impl LeaderProxy {
    /// Plain HTTP, or https verified against `ca_pem` when the API serves TLS.
    ///
    /// # Errors
    /// A CA that is not a PEM certificate.
    pub fn new(
        https: bool,
        ca_pem: Option<&[u8]>,
        via_header: &'static str,
        leader_header: &'static str,
    ) -> Result<LeaderProxy, String> {
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = ca_pem {
            let ca = reqwest::Certificate::from_pem(pem)
                .map_err(|e| format!("--tls-ca: not a PEM certificate: {e}"))?;
            builder = builder
                .add_root_certificate(ca)
                .tls_built_in_root_certs(false);
        }
        Ok(LeaderProxy {
            client: builder.build().map_err(|e| e.to_string())?,
            scheme: if https { "https" } else { "http" },
            via_header,
            leader_header,
        })
    }

    /// Forwards `req` to `leader` and streams its answer back.
    pub async fn forward(&self, leader: &str, req: Request) -> Response {
        let message =
            |status: StatusCode, m: String| (status, Json(json!({ "message": m }))).into_response();
        let target = format!(
            "{}://{leader}{}",
            self.scheme,
            req.uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
        );
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
            return message(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large to proxy".into(),
            );
        };
        let mut forward = self
            .client
            .request(parts.method.clone(), &target)
            .body(bytes);
        for (name, value) in parts.headers.iter() {
            if name != header::HOST && name != header::CONTENT_LENGTH {
                forward = forward.header(name, value);
            }
        }
        match forward.header(self.via_header, "standby").send().await {
            Ok(resp) => {
                let mut builder = Response::builder().status(resp.status());
                for (name, value) in resp.headers() {
                    if name != header::TRANSFER_ENCODING && name != header::CONTENT_LENGTH {
                        builder = builder.header(name, value);
                    }
                }
                builder
                    .header(self.leader_header, leader)
                    .body(axum::body::Body::from_stream(resp.bytes_stream()))
                    .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
            }
            Err(e) => message(
                StatusCode::BAD_GATEWAY,
                format!("the leader at {leader} did not answer: {e}"),
            ),
        }
    }
}

/// Axum middleware: a standby forwards every call but `/ping` to the leader through the proxy,
/// or answers 503 while none is elected.
pub async fn standby_proxy<H: Send + Sync + 'static>(
    State((leadership, proxy)): State<(Arc<Leadership<H>>, LeaderProxy)>,
    req: Request,
    next: Next,
) -> Response {
    if leadership.is_leading() || req.uri().path() == "/ping" {
        return next.run(req).await;
    }
    match leadership.leader() {
        Some(leader) => proxy.forward(&leader, req).await,
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "message": "no leader is elected yet" })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leader that resigns (a planned stop) answers as a standby at once: no handle, and it
    /// never names itself as the leader, even while its election node still does.
    #[test]
    fn a_resigned_leader_answers_as_a_standby() {
        let l = Leadership::new("m1:5050");
        l.lead(7u8);
        l.set_leader(Some("m1:5050".into()));
        assert_eq!(l.handle(), Some(&7));
        assert_eq!(l.leader().as_deref(), Some("m1:5050"));
        l.resign();
        assert!(!l.is_leading());
        assert_eq!(l.handle(), None);
        assert_eq!(l.leader(), None, "it must not send clients to itself");
        let r = standby_response(l.leader(), "/state", true, "no leader");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        l.set_leader(Some("m2:5050".into()));
        assert_eq!(l.leader().as_deref(), Some("m2:5050"));
        let r = standby_response(l.leader(), "/state", true, "no leader");
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(r.headers()[header::LOCATION], "//m2:5050/state");
        // Elected again in the same process (it never is after a stop): still a standby.
        l.lead(8);
        assert!(!l.is_leading());
    }
}
