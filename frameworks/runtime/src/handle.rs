//! The core handle: API handlers run a closure on the framework's core inside its actor (one
//! task owns the core; no locks) and await the result.

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

/// A call on the core: it gets the core and the actor's clock.
pub type Job<C> = Box<dyn FnOnce(&mut C, DateTime<Utc>) + Send>;

/// The actor's end: the calls, in order.
pub type Jobs<C> = mpsc::UnboundedReceiver<Job<C>>;

/// The API's end. Cloning it is cheap.
pub struct Handle<C> {
    tx: mpsc::UnboundedSender<Job<C>>,
}

impl<C> Clone for Handle<C> {
    fn clone(&self) -> Self {
        Handle {
            tx: self.tx.clone(),
        }
    }
}

impl<C: 'static> Handle<C> {
    /// A handle and the receiver its actor reads.
    pub fn channel() -> (Handle<C>, Jobs<C>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Handle { tx }, rx)
    }

    /// Runs `f` on the core (the actor persists and acts on the result afterwards); `None` when
    /// the actor has stopped.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut C, DateTime<Utc>) -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        let job: Job<C> = Box::new(move |core, now| {
            let _ = reply.send(f(core, now));
        });
        self.tx.send(job).ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_runs_on_the_actors_core_and_a_stopped_actor_answers_none() {
        let (handle, mut jobs) = Handle::<Vec<u32>>::channel();
        let actor = tokio::spawn(async move {
            let mut core = vec![1];
            while let Some(job) = jobs.recv().await {
                job(&mut core, Utc::now());
            }
            core
        });
        assert_eq!(
            handle
                .call(|c, _| {
                    c.push(2);
                    c.len()
                })
                .await,
            Some(2)
        );
        let h2 = handle.clone();
        drop(handle);
        drop(h2);
        assert_eq!(actor.await.expect("actor"), vec![1, 2]);
        let (handle, jobs) = Handle::<u8>::channel();
        drop(jobs);
        assert_eq!(handle.call(|_, _| 1).await, None);
    }
}
