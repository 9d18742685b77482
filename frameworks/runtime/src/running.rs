//! A running framework process's handle: its API address, how to stop it, and the fatal error
//! that ends it (for the binary to exit with, or for `agora local` to stop everything with).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::error;

use crate::lead::Fatal;

/// How long open API connections get to close when a framework stops.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// See the module documentation.
pub struct Running {
    pub address: SocketAddr,
    /// `services`, `batch`: named in the log line of a fatal error.
    what: &'static str,
    stop: watch::Sender<bool>,
    fatal: mpsc::UnboundedReceiver<Fatal>,
    actor: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Running {
    /// `stop` stops the API server and the actor; `fatal` yields what ends the framework.
    pub fn new(
        what: &'static str,
        address: SocketAddr,
        stop: watch::Sender<bool>,
        fatal: mpsc::UnboundedReceiver<Fatal>,
        actor: tokio::task::JoinHandle<()>,
        server: tokio::task::JoinHandle<()>,
    ) -> Running {
        Running {
            address,
            what,
            stop,
            fatal,
            actor,
            server,
        }
    }

    /// Stops the API and the actor (tasks keep running for the failover timeout). Open
    /// connections (`/v2/events` streams never end by themselves) get [`STOP_GRACE`] to close,
    /// then are cut; the actor's last save and the hand-over of leadership are bounded too.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let mut server = self.server;
        if tokio::time::timeout(STOP_GRACE, &mut server).await.is_err() {
            server.abort();
        }
        let mut actor = self.actor;
        if tokio::time::timeout(Duration::from_secs(15), &mut actor)
            .await
            .is_err()
        {
            actor.abort();
        }
    }

    /// Resolves with the error that stops this framework (lost leadership, another instance
    /// writing the state, a panic in the core), for a caller that runs it beside other
    /// components (`agora local`); call [`Running::stop`] afterwards.
    pub async fn failed(&mut self) -> Fatal {
        match self.fatal.recv().await {
            Some(e) => e,
            None => std::future::pending().await,
        }
    }

    /// Runs until `shutdown` resolves (then stops), or until the framework cannot go on, which
    /// is returned.
    ///
    /// # Errors
    /// The [`Fatal`] error that stopped it.
    pub async fn wait(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), Fatal> {
        tokio::select! {
            () = shutdown => {
                self.stop().await;
                Ok(())
            }
            Some(e) = self.fatal.recv() => {
                error!(error = %e, "the {} framework cannot go on", self.what);
                let _ = self.stop.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
                Err(e)
            }
        }
    }
}
