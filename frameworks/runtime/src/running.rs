//! A running framework process's handle: its API address, how to stop it, and the fatal error
//! that ends it (for the binary to exit with, or for `agora local` to stop everything with).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::error;

use crate::lead::Fatal;

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

    /// Stops the API and the actor (tasks keep running for the failover timeout).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        let _ = self.actor.await;
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
