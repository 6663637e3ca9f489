//! The host's background tasks and the order they stop in.
//!
//! Every long-running task (listeners, consumers, relays, retention, watchers, the broker
//! connection) joins the [`Supervisor`] in a [`Phase`]. Stopping cancels the phases in order and
//! waits for each to finish before cancelling the next, so work taken in is drained before what
//! it depends on goes away:
//!
//! 1. [`Phase::Intake`]: the HTTP listener and the consumers stop taking work and finish what
//!    they took (acknowledging it).
//! 2. [`Phase::Background`]: relays publish what was committed, retention and file watchers stop.
//! 3. [`Phase::Connections`]: the broker connection closes; the admin listener, which answers
//!    readiness 503 while the phases before drain, stops last.
//!
//! A new task picks its phase; nothing else needs to change.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// In stopping order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Intake,
    Background,
    Connections,
}

pub struct Supervisor {
    /// Per phase, in stopping order: its cancellation and its tasks.
    phases: [(CancellationToken, TaskTracker); 3],
}

impl Supervisor {
    pub fn new() -> Self {
        Self { phases: std::array::from_fn(|_| (CancellationToken::new(), TaskTracker::new())) }
    }

    /// Runs `task` until it returns; it must return soon after its token is cancelled.
    pub fn spawn<F, Fut>(&self, phase: Phase, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, tracker) = &self.phases[phase as usize];
        tracker.spawn(task(stop.clone()));
    }

    /// The token that stops `phase`, for a task that hands it on.
    pub fn token(&self, phase: Phase) -> CancellationToken {
        self.phases[phase as usize].0.clone()
    }

    /// Stops the phases in order, each once the one before has finished.
    pub async fn stop(&self) {
        for (stop, tracker) in &self.phases {
            stop.cancel();
            tracker.close();
            tracker.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn phases_stop_in_order_each_after_the_one_before_has_finished() {
        let supervisor = Supervisor::new();
        let stopped = Arc::new(Mutex::new(Vec::new()));
        for (phase, name) in [(Phase::Connections, "broker"), (Phase::Intake, "http"), (Phase::Background, "relay")] {
            let stopped = stopped.clone();
            supervisor.spawn(phase, move |stop| async move {
                stop.cancelled().await;
                // Draining takes a while; later phases must wait for it.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                stopped.lock().expect("lock").push(name);
            });
        }
        supervisor.stop().await;
        assert_eq!(*stopped.lock().expect("lock"), ["http", "relay", "broker"]);
    }
}
