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
//!
//! A task that must run for as long as the host does (a relay, a consumer, a broker connection)
//! joins with [`Supervisor::spawn_restarting`]: should it panic or return before it is told to
//! stop, the panic is logged and the task started afresh, after a pause that grows while it
//! keeps failing (and starts small again once it has run a minute), so one bad row or message
//! stops no component's events for good.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// The first pause before a failed task starts again, and the longest.
const FIRST_RESTART: Duration = Duration::from_millis(100);
const MAX_RESTART: Duration = Duration::from_secs(30);
/// A task that ran this long before failing starts again after the first pause, not the last.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// In stopping order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Stops first: the HTTP listener and the consumers, which take work in.
    Intake,
    /// Stops once intake has drained: relays, retention, file watchers.
    Background,
    /// Stops last: the broker connections and the admin listener.
    Connections,
}

/// The host's background tasks, by phase: built with the host, dropped with it (which aborts
/// what still runs).
pub struct Supervisor {
    /// Per phase, in stopping order: its cancellation and its tasks.
    phases: [(CancellationToken, JoinSet<()>); 3],
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    /// A supervisor with no tasks yet.
    pub fn new() -> Self {
        Self {
            phases: std::array::from_fn(|_| (CancellationToken::new(), JoinSet::new())),
        }
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

    /// Runs `task` until it is told to stop, starting it again whenever it panics or returns
    /// before that; `name` says which task in the log.
    pub fn spawn_restarting<F, Fut>(&mut self, phase: Phase, name: String, task: F)
    where
        F: Fn(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, tasks) = &mut self.phases[phase as usize];
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut pause = FIRST_RESTART;
            loop {
                let started = tokio::time::Instant::now();
                // A task of its own, so a panic ends it and not this loop; aborted with the loop.
                let ran = AbortOnDropHandle::new(tokio::spawn(task(stop.clone()))).await;
                if stop.is_cancelled() {
                    return;
                }
                if started.elapsed() >= HEALTHY_RUN {
                    pause = FIRST_RESTART;
                }
                match ran {
                    Ok(()) => tracing::error!(
                        task = %name,
                        ?pause,
                        "a background task returned while the host runs; starting it again"
                    ),
                    Err(err) if err.is_panic() => {
                        let panic = err.into_panic();
                        let message = panic
                            .downcast_ref::<&str>()
                            .map(|text| (*text).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        tracing::error!(
                            task = %name,
                            panic = %message,
                            ?pause,
                            "a background task panicked; starting it again"
                        );
                    }
                    Err(_) => return,
                }
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => return,
                }
                pause = (pause * 2).min(MAX_RESTART);
            }
        });
    }

    /// Stops the phases in order, each once the one before has finished or `grace` has passed.
    pub async fn stop(&mut self, grace: Duration) {
        for (index, (stop, tasks)) in self.phases.iter_mut().enumerate() {
            stop.cancel();
            let drained =
                tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
                    .await;
            if drained.is_err() {
                tracing::warn!(
                    phase = index,
                    ?grace,
                    left = tasks.len(),
                    "tasks still running after the grace period; aborting them"
                );
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
        for (phase, name) in [
            (Phase::Connections, "broker"),
            (Phase::Intake, "http"),
            (Phase::Background, "relay"),
        ] {
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
    async fn a_task_that_panics_or_returns_early_is_started_again_until_the_host_stops() {
        let mut supervisor = Supervisor::new();
        let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = runs.clone();
        supervisor.spawn_restarting(Phase::Background, "flaky".into(), move |stop| {
            let run = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                match run {
                    0 => panic!("a bad row"),
                    1 => {}
                    _ => stop.cancelled().await,
                }
            }
        });
        let started = std::time::Instant::now();
        while runs.load(std::sync::atomic::Ordering::SeqCst) < 3 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "not started again"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::timeout(
            Duration::from_secs(5),
            supervisor.stop(Duration::from_secs(1)),
        )
        .await
        .expect("stops");
        assert_eq!(
            runs.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "not started again once stopping"
        );
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
        tokio::time::timeout(
            Duration::from_secs(5),
            supervisor.stop(Duration::from_millis(50)),
        )
        .await
        .expect("stops");
        assert!(
            *later.lock().expect("lock"),
            "the later phase still stopped"
        );
    }
}
