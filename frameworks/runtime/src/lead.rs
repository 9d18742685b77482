//! Leading among a framework's instances: the [`Contender`] for a process's flags (standalone
//! with its state file in `--work-dir`, or a ZooKeeper election at `--zk` with its state there),
//! and the campaign that runs in the background, leads when elected and reports the end of its
//! term as a [`Fatal`] error — the binary decides to exit, no library does.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use agora_ha::detector::MasterInfoJson;
use agora_ha::election::{self, Contender, ElectionError};
use agora_ha::leadership::Leadership;
use agora_ha::store::{LocalFileStore, LocalFormat, StateStore, StoreError};
use tokio::sync::{mpsc, watch};
use tracing::info;

use crate::config::FrameworkConfig;

/// The file a one-instance framework keeps its state in, under `--work-dir`.
pub const STATE_FILE: &str = "state.json";

/// Why a framework process must stop. It reports it; the binary exits non-zero, so that a
/// supervisor restarts it.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    /// The ZooKeeper election could not go on, or this instance's term ended.
    #[error("lost leadership: {0}")]
    LostLeadership(#[from] ElectionError),
    /// Elected, but the state could not be loaded or the core not started.
    #[error("cannot lead: {0}")]
    CannotLead(String),
    /// The state could not be saved because another instance wrote it (a compare-and-set
    /// conflict): this one no longer leads. Other failed saves are retried, not fatal.
    #[error("cannot save the state: {0}")]
    Save(#[from] StoreError),
    /// The master refused the subscription for good (wrong credentials, a role the ACLs do not
    /// allow) or ended it (the framework was torn down): retrying cannot help, and a process
    /// that goes on running would look healthy to its supervisor while it does nothing.
    #[error("the master refused or ended this framework's subscription: {0}")]
    Refused(String),
    /// The core's actor panicked: the process must not go on answering "healthy" while every
    /// call fails.
    #[error("the core stopped: {0}")]
    Panicked(String),
}

/// Spawns a core's actor and reports it panicking as [`Fatal::Panicked`] on `fatal` (a supervisor
/// restarts the process), instead of leaving an API that answers health checks but no call.
pub fn spawn_actor<F>(actor: F, fatal: mpsc::UnboundedSender<Fatal>) -> tokio::task::JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let inner = tokio::spawn(actor);
    tokio::spawn(async move {
        if let Err(e) = inner.await {
            if e.is_panic() {
                let payload = e.into_panic();
                let why = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                let _ = fatal.send(Fatal::Panicked(why));
            }
        }
    })
}

/// The contender for `config`: [`election::Standalone`] with `--work-dir/state.json`, or
/// [`election::ZooKeeper`] at `--zk`, published as `advertised`.
///
/// # Errors
/// A malformed `--zk` URL.
pub fn contender(
    config: &FrameworkConfig,
    advertised: &str,
) -> Result<Box<dyn Contender>, ElectionError> {
    match &config.zk {
        None => Ok(Box::new(election::Standalone {
            store: Box::new(LocalFileStore::at(
                config.work_dir.join(STATE_FILE),
                LocalFormat::Plain,
            )),
        })),
        Some(zk) => {
            let me = MasterInfoJson {
                id: uuid::Uuid::new_v4().simple().to_string(),
                hostname: advertised.to_string(),
                address: advertised.to_string(),
                version: env!("CARGO_PKG_VERSION").into(),
                start_time: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
                kind: Some(format!("framework:{}", config.framework_name)),
            };
            Ok(Box::new(election::ZooKeeper::new(
                zk,
                me,
                config.zk_session_timeout,
            )?))
        }
    }
}

/// Campaigns with `contender`, telling `leadership` who leads meanwhile; when elected, calls
/// `lead` with the term's store (it starts the actor and returns its join handle), then waits
/// for the term to end. Stops when `stop` turns true (after the actor finished, so that its last
/// save happens while the term holds). A failed campaign, a failed `lead` or the end of the term
/// is sent on `fatal`.
pub fn spawn_campaign<H, F, Fut>(
    contender: Box<dyn Contender>,
    leadership: Arc<Leadership<H>>,
    stop: watch::Receiver<bool>,
    fatal: mpsc::UnboundedSender<Fatal>,
    lead: F,
) -> tokio::task::JoinHandle<()>
where
    H: Send + Sync + 'static,
    F: FnOnce(Box<dyn StateStore>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<tokio::task::JoinHandle<()>, String>> + Send,
{
    tokio::spawn(async move {
        let mut stop2 = stop.clone();
        let stopped = async move {
            let _ = stop2.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        let l = leadership.clone();
        let campaign = contender.campaign(Arc::new(move |addr| l.set_leader(addr)));
        let term = tokio::select! {
            t = campaign => t,
            () = &mut stopped => return,
        };
        let term = match term {
            Ok(t) => t,
            Err(e) => {
                let _ = fatal.send(Fatal::LostLeadership(e));
                return;
            }
        };
        info!("this instance leads");
        let actor = match lead(term.store).await {
            Ok(a) => a,
            Err(e) => {
                let _ = fatal.send(Fatal::CannotLead(e));
                return;
            }
        };
        let mut lost = term.lost;
        tokio::select! {
            e = &mut lost => {
                let _ = fatal.send(Fatal::LostLeadership(e));
            }
            () = &mut stopped => {
                // Bounded: the actor's last save must not hold the process past a stop.
                let _ = tokio::time::timeout(Duration::from_secs(10), actor).await;
                // Then hand over at once: a standby leads without waiting for this session's
                // timeout.
                (term.resign)().await;
                leadership.set_leader(None);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_actor_is_reported_as_fatal_and_a_finished_one_is_not() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        spawn_actor(async { panic!("boom") }, tx.clone())
            .await
            .expect("supervisor");
        assert!(matches!(rx.try_recv(), Ok(Fatal::Panicked(m)) if m == "boom"));
        spawn_actor(async {}, tx).await.expect("supervisor");
        assert!(rx.try_recv().is_err());
    }
}
