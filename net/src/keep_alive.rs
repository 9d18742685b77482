//! A longer idle keep-alive for the HTTP/1 connections a handler vouches for.
//!
//! hyper's HTTP/1 header-read timeout ([`crate::tls::Limits::header_read_timeout`]) also bounds
//! how long a kept-alive connection may stay idle between requests. That is right for anonymous
//! clients, and wrong for one kind: a Mesos scheduler keeps one connection for all its calls and
//! may leave it idle for hours (a task's next status update), and some of those clients (pymesos)
//! do not retry a call on a connection the server closed meanwhile. A handler that has checked
//! its caller (a subscribed framework's call) marks the connection with [`KeepAlive::extend`];
//! from then on the connection's wait for the next request's headers is [`KeepAlive`]'s longer
//! timeout instead.
//!
//! ```text
//!  request ─▶ handler: caller checked ─▶ KeepAlive::extend()   (per connection, in the request's extensions)
//!  idle / next headers: header_read_timeout ──(extended?)──▶ + (idle − header_read_timeout)
//! ```
//!
//! The connection limit still bounds how many such connections are held.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// How long a vouched-for HTTP/1 connection may wait for its next request.
pub const EXTENDED_IDLE: Duration = Duration::from_secs(24 * 3600);

/// One connection's mark, in each of its requests' extensions.
#[derive(Debug, Clone, Default)]
pub struct KeepAlive(Arc<AtomicBool>);

impl KeepAlive {
    /// Lets this connection wait [`EXTENDED_IDLE`] for its next request from now on.
    pub fn extend(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`KeepAlive::extend`] was called.
    pub fn is_extended(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The timer of one connection's HTTP/1 server: tokio's, with deadlines that move out by
/// `extra` once the connection is extended (hyper uses it for the header-read timeout only).
#[derive(Debug, Clone)]
pub(crate) struct ConnectionTimer {
    mark: KeepAlive,
    extra: Duration,
}

impl ConnectionTimer {
    /// A timer for a connection whose header-read timeout is `header_read_timeout`.
    pub(crate) fn new(mark: KeepAlive, header_read_timeout: Duration) -> ConnectionTimer {
        ConnectionTimer {
            mark,
            extra: EXTENDED_IDLE.saturating_sub(header_read_timeout),
        }
    }
}

impl Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(Extendable {
            sleep: Box::pin(tokio::time::sleep_until(deadline.into())),
            deadline,
            mark: self.mark.clone(),
            extra: self.extra,
            extended: false,
        })
    }
}

/// A sleep that, when it ends on a connection extended meanwhile, sleeps `extra` longer once.
struct Extendable {
    sleep: Pin<Box<tokio::time::Sleep>>,
    deadline: Instant,
    mark: KeepAlive,
    extra: Duration,
    extended: bool,
}

impl Future for Extendable {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.extended || !self.mark.is_extended() {
                return Poll::Ready(());
            }
            self.extended = true;
            let later = self.deadline + self.extra;
            self.sleep.as_mut().reset(later.into());
        }
    }
}

impl Sleep for Extendable {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sleep_ends_on_time_unless_its_connection_was_extended() {
        let mark = KeepAlive::default();
        let header = Duration::from_millis(50);
        let timer = ConnectionTimer {
            mark: mark.clone(),
            extra: Duration::from_millis(400),
        };
        let start = Instant::now();
        timer.sleep(header).await;
        let plain = start.elapsed();
        assert!(
            plain >= header && plain < Duration::from_millis(300),
            "{plain:?}"
        );

        let start = Instant::now();
        let sleep = timer.sleep(header);
        mark.extend();
        sleep.await;
        let extended = start.elapsed();
        assert!(extended >= Duration::from_millis(450), "{extended:?}");
        assert!(
            ConnectionTimer::new(mark, Duration::from_secs(10)).extra
                == EXTENDED_IDLE - Duration::from_secs(10)
        );
    }

    /// Over a real listener: a connection whose handler extended it is still served after idling
    /// past the header-read timeout; one that was not is closed.
    #[tokio::test]
    async fn an_extended_connection_outlives_the_header_timeout_and_another_does_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let limits = crate::tls::Limits {
            header_read_timeout: Duration::from_millis(200),
            ..crate::tls::Limits::default()
        };
        let listener = crate::tls::Listener::with_limits(tcp, None, limits).expect("listener");
        let addr = axum::serve::Listener::local_addr(&listener).expect("addr");
        let router = axum::Router::new()
            .route("/plain", axum::routing::get(|| async { "plain" }))
            .route(
                "/vouch",
                axum::routing::get(|k: axum::Extension<KeepAlive>| async move {
                    k.extend();
                    "vouched"
                }),
            );
        tokio::spawn(crate::tls::serve(listener, router, std::future::pending()));

        async fn get(s: &mut tokio::net::TcpStream, path: &str) -> String {
            s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
                .await
                .expect("write");
            let mut buf = vec![0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
                .await
                .expect("an answer in time")
                .expect("read");
            String::from_utf8_lossy(&buf[..n]).to_string()
        }

        let mut vouched = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
        assert!(get(&mut vouched, "/vouch").await.contains("vouched"));
        assert!(get(&mut plain, "/plain").await.contains("plain"));
        tokio::time::sleep(Duration::from_millis(600)).await;
        // The plain one was closed after 200 ms idle: EOF.
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(3), plain.read(&mut buf))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0, "the plain connection is still open");
        // The vouched one still answers.
        assert!(get(&mut vouched, "/plain").await.contains("plain"));
    }
}
