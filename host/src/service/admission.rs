//! Admission of units of work into one component: at most `max_concurrency` run at once, at
//! most `max_queued` wait for a turn, and none waits longer than the queue timeout.
//!
//! Built once per component with its [`super::Service`]. A request that finds the queue full,
//! or waits too long, is refused at once with 503 and `Retry-After` by the caller, so a
//! component that is slow or stuck holds only its own permits and never an ever-growing queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The gate of one component: its permits and the count of units of work waiting for one.
pub struct Admission {
    /// One permit per unit of work running in the component.
    permits: Arc<Semaphore>,
    limit: usize,
    /// Units of work waiting for a permit now.
    waiting: AtomicUsize,
    max_queued: usize,
}

/// Why a unit of work was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// `max_queued` others are already waiting.
    QueueFull,
    /// No permit freed up within the queue timeout.
    Waited(Duration),
}

impl Admission {
    /// A gate letting `max_concurrency` units of work run at once and `max_queued` wait.
    pub fn new(max_concurrency: usize, max_queued: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrency)),
            limit: max_concurrency,
            waiting: AtomicUsize::new(0),
            max_queued,
        }
    }

    /// A permit to run one unit of work, held until it ends.
    pub async fn admit(&self, queue_timeout: Duration) -> Result<OwnedSemaphorePermit, Busy> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        // Counted out again when this future ends or is dropped (the client went away).
        let _waiting = Waiting::enter(&self.waiting);
        if _waiting.ahead >= self.max_queued {
            return Err(Busy::QueueFull);
        }
        let waited =
            tokio::time::timeout(queue_timeout, self.permits.clone().acquire_owned()).await;
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it as a full queue all the same.
            Ok(Err(_closed)) => Err(Busy::QueueFull),
            Err(_elapsed) => Err(Busy::Waited(queue_timeout)),
        }
    }

    /// Units of work running now.
    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits()
    }
}

/// One unit of work counted in `waiting` for as long as it lives.
struct Waiting<'a> {
    count: &'a AtomicUsize,
    /// How many were waiting before this one.
    ahead: usize,
}

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        let ahead = count.fetch_add(1, Ordering::AcqRel);
        Self { count, ahead }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_and_a_freed_permit_admits_the_next() {
        let admission = Arc::new(Admission::new(1, 1));
        let running = admission
            .admit(Duration::from_secs(5))
            .await
            .expect("first runs");
        assert_eq!(admission.in_flight(), 1);

        let queued = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit(Duration::from_secs(5)).await.map(drop) }
        });
        while admission.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            admission.admit(Duration::from_secs(5)).await.err(),
            Some(Busy::QueueFull)
        );

        drop(running);
        assert_eq!(queued.await.expect("joins"), Ok(()));
        assert_eq!(admission.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_wait_past_the_queue_timeout_is_refused() {
        let admission = Admission::new(1, 4);
        let _running = admission
            .admit(Duration::from_secs(5))
            .await
            .expect("first runs");
        let waited = admission.admit(Duration::from_millis(20)).await.err();
        assert_eq!(waited, Some(Busy::Waited(Duration::from_millis(20))));
        assert_eq!(admission.waiting.load(Ordering::Acquire), 0);
    }
}
