//! The core handle: API handlers run a closure on the framework's core inside its actor (one
//! task owns the core; no locks) and await the result — which arrives only once what the closure
//! changed is durable.
//!
//! A call is a [`Job`]: the actor runs it on the core and gets back a [`Delivery`], the reply held
//! until the actor knows whether the state was saved. The actor applies every call already
//! queued ([`apply_queued`], group commit), saves once ([`crate::Persisted::commit`]), then
//! delivers: the value on success, [`CallError::NotSaved`] when the save failed (and the actor
//! rolled its core back), so that a reply always means "durable".

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

/// Why a call has no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The actor has stopped (the framework is stopping or lost its leadership).
    #[error("the framework is stopping")]
    Stopped,
    /// The call was applied, but the state holding it could not be saved: it was undone.
    #[error("the state could not be saved: {0}")]
    NotSaved(String),
}

/// A call's reply, held by the actor until the save that makes it durable has succeeded (`Ok`)
/// or failed (`Err`).
pub type Delivery = Box<dyn FnOnce(Result<(), CallError>) + Send>;

/// A call on the core: it gets the core and the actor's clock and returns its held reply.
pub type Job<C> = Box<dyn FnOnce(&mut C, DateTime<Utc>) -> Delivery + Send>;

/// The actor's end: the calls, in order.
pub type Jobs<C> = mpsc::UnboundedReceiver<Job<C>>;

/// The held replies of a batch of calls applied to the core, to deliver after its save.
#[must_use = "replies not delivered leave their callers waiting until the actor stops"]
pub struct Replies(Vec<Delivery>);

impl Replies {
    /// How many calls the batch held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Answers every call: its value when `outcome` is `Ok`, the error otherwise.
    pub fn deliver(self, outcome: &Result<(), CallError>) {
        for d in self.0 {
            d(outcome.clone());
        }
    }
}

/// Runs `first` and every call already queued behind it on `core` (group commit: one save for
/// all of them), each with the time it runs at; returns their held replies.
pub fn apply_queued<C>(core: &mut C, first: Job<C>, jobs: &mut Jobs<C>) -> Replies {
    let mut replies = vec![first(core, Utc::now())];
    while let Ok(job) = jobs.try_recv() {
        replies.push(job(core, Utc::now()));
    }
    Replies(replies)
}

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

    /// Runs `f` on the core and answers its value once the state after it is durable.
    ///
    /// # Errors
    /// [`CallError::Stopped`] when the actor has stopped (or stops before saving);
    /// [`CallError::NotSaved`] when the save failed and the call was undone.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut C, DateTime<Utc>) -> T + Send + 'static,
    ) -> Result<T, CallError> {
        let (reply, rx) = oneshot::channel();
        let job: Job<C> = Box::new(move |core, now| {
            let value = f(core, now);
            Box::new(move |outcome: Result<(), CallError>| {
                let _ = reply.send(outcome.map(|()| value));
            })
        });
        self.tx.send(job).map_err(|_| CallError::Stopped)?;
        rx.await.map_err(|_| CallError::Stopped)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_runs_on_the_actors_core_and_a_stopped_actor_answers_stopped() {
        let (handle, mut jobs) = Handle::<Vec<u32>>::channel();
        let actor = tokio::spawn(async move {
            let mut core = vec![1];
            while let Some(job) = jobs.recv().await {
                apply_queued(&mut core, job, &mut jobs).deliver(&Ok(()));
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
            Ok(2)
        );
        let h2 = handle.clone();
        drop(handle);
        drop(h2);
        assert_eq!(actor.await.expect("actor"), vec![1, 2]);
        let (handle, jobs) = Handle::<u8>::channel();
        drop(jobs);
        assert_eq!(handle.call(|_, _| 1).await, Err(CallError::Stopped));
    }

    #[tokio::test]
    async fn replies_wait_for_delivery_and_a_refused_save_answers_not_saved() {
        let (handle, mut jobs) = Handle::<Vec<u32>>::channel();
        let h = handle.clone();
        let first = tokio::spawn(async move { h.call(|c, _| c.push(1)).await });
        let h = handle.clone();
        let second = tokio::spawn(async move { h.call(|c, _| c.len()).await });
        // Both are queued before the actor looks: one batch.
        while jobs.len() < 2 {
            tokio::task::yield_now().await;
        }
        let mut core = Vec::new();
        let job = jobs.recv().await.expect("a job");
        let replies = apply_queued(&mut core, job, &mut jobs);
        assert_eq!(replies.len(), 2);
        assert_eq!(core, vec![1]);
        tokio::task::yield_now().await;
        assert!(
            !first.is_finished() && !second.is_finished(),
            "held until saved"
        );
        replies.deliver(&Err(CallError::NotSaved("disk full".into())));
        let e = CallError::NotSaved("disk full".into());
        assert_eq!(first.await.expect("task"), Err(e.clone()));
        assert_eq!(second.await.expect("task"), Err(e));
        assert_eq!(
            CallError::NotSaved("disk full".into()).to_string(),
            "the state could not be saved: disk full"
        );
    }

    #[tokio::test]
    async fn a_batch_dropped_without_delivery_answers_stopped() {
        let (handle, mut jobs) = Handle::<u8>::channel();
        let call = tokio::spawn(async move { handle.call(|c, _| *c).await });
        let job = jobs.recv().await.expect("a job");
        let mut core = 0;
        drop(apply_queued(&mut core, job, &mut jobs));
        assert_eq!(call.await.expect("task"), Err(CallError::Stopped));
    }
}
