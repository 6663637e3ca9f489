//! The host's background tasks and the order they stop in.
//!
//! Every long-running task (listeners, consumers, relays, retention, watchers, the broker
//! connection) joins the [`Supervisor`] in a [`Phase`]. Stopping cancels the phases in order and
//! waits for each to finish (at most a grace period, after which its tasks are aborted) before
//! cancelling the next, so work taken in is drained before what it depends on goes away:
//!
//! 1. [`Phase::Intake`]: the HTTP listener and the consumers stop taking work and finish what
//!    they took (acknowledging it).
//! 2. [`Phase::Background`]: relays publish what was committed, retention and file watchers stop.
//! 3. [`Phase::Connections`]: the broker connection closes; the admin listener, which answers
//!    readiness 503 while the phases before drain, stops last.
//!
//! A new task picks its phase; nothing else needs to change. Dropping the supervisor aborts
//! every task still running, so nothing outlives a host that is dropped.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// In stopping order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Intake,
    Background,
    Connections,
}

pub struct Supervisor {
    /// Per phase, in stopping order: its cancellation and its tasks.
    phases: [(CancellationToken, JoinSet<()>); 3],
}

impl Supervisor {
    pub fn new() -> Self {
        Self { phases: std::array::from_fn(|_| (CancellationToken::new(), JoinSet::new())) }
    }

    /// Runs `task` until it returns; it should return soon after its token is cancelled.
    pub fn spawn<F, Fut>(&mut self, phase: Phase, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, tasks) = &mut self.phases[phase as usize];
        tasks.spawn(task(stop.clone()));
    }

    /// Stops the phases in order, each once the one before has finished or `grace` has passed.
    pub async fn stop(&mut self, grace: Duration) {
        for (index, (stop, tasks)) in self.phases.iter_mut().enumerate() {
            stop.cancel();
            let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
            if drained.is_err() {
                tracing::warn!(phase = index, ?grace, left = tasks.len(), "tasks still running after the grace period; aborting them");
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn phases_stop_in_order_each_after_the_one_before_has_finished() {
        let mut supervisor = Supervisor::new();
        let stopped = Arc::new(Mutex::new(Vec::new()));
        for (phase, name) in [(Phase::Connections, "broker"), (Phase::Intake, "http"), (Phase::Background, "relay")] {
            let stopped = stopped.clone();
            supervisor.spawn(phase, move |stop| async move {
                stop.cancelled().await;
                // Draining takes a while; later phases must wait for it.
                tokio::time::sleep(Duration::from_millis(20)).await;
                stopped.lock().expect("lock").push(name);
            });
        }
        supervisor.stop(Duration::from_secs(5)).await;
        assert_eq!(*stopped.lock().expect("lock"), ["http", "relay", "broker"]);
    }

    #[tokio::test]
    async fn a_task_that_will_not_stop_is_aborted_after_the_grace_period() {
        let mut supervisor = Supervisor::new();
        supervisor.spawn(Phase::Intake, |_ignored| std::future::pending::<()>());
        let later = Arc::new(Mutex::new(false));
        let flag = later.clone();
        supervisor.spawn(Phase::Connections, move |stop| async move {
            stop.cancelled().await;
            *flag.lock().expect("lock") = true;
        });
        tokio::time::timeout(Duration::from_secs(5), supervisor.stop(Duration::from_millis(50))).await.expect("stops");
        assert!(*later.lock().expect("lock"), "the later phase still stopped");
    }
}
