//! Fair turns on the CPU for guests, decided at epoch ticks (see [`crate::engine`]).
//!
//! A guest is judged on its own compute: its epoch deadline is set two ticks ahead when it starts
//! and again whenever it comes back from a host call that took a tick or more (a statement, say),
//! so it reaches the deadline only after running for more than a tick without waiting on
//! anything, far longer than a request's work usually takes. Quick host calls (the clock) do
//! not reset it, or a guest calling the host all the time would never yield. It is then a *long
//! runner* until its unit of work ends:
//!
//! 1. At that tick and at every later one it hands back its worker thread with
//!    `tokio::task::yield_now` (which lets the runtime poll for I/O first, so requests waiting on
//!    the network or the database go ahead of it), then queues for one of its component's
//!    [`Turns`] before it runs on.
//! 2. It holds the turn until the next tick, or until it calls the platform's `sql` or
//!    `messaging` (a statement waiting on a lock must not keep a turn that the lock's holder
//!    needs) or returns. Quick host calls such as reading the clock keep it, so a guest cannot
//!    slip past its turn by calling the host all the time.
//!
//! A component has turns for half the machine's cores (at least one): however many of its
//! guests loop or compute, at most that many of them run at once and the rest wait off the run
//! queue, so one such component leaves the other half of the cores to everything else. (Several
//! such components together can fill every core; each still yields at every tick, and requests
//! waiting on I/O go first.) Once its deadline has passed, a guest traps instead of yielding.
//!
//! Built once per component; [`Turns::install`] gives each store its epoch callback and call
//! hook, and [`TurnSlot`] (in the store's state) is where the store's turn is kept.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{CallHook, Store, Trap, UpdateDeadline};

/// How often the epoch advances: the longest a guest runs before it yields its worker thread,
/// and the granularity of its deadline.
pub const EPOCH_TICK: std::time::Duration = std::time::Duration::from_millis(1);

/// Ticks of its own compute after which a guest counts as a long runner: between one and two.
const FIRST_SLICE: u64 = 2;

/// One component's turns for its long runners: built once with its service and shared by every
/// store of it.
pub struct Turns {
    /// One permit per long runner of the component that may run at once: half the cores,
    /// rounded up.
    long_runners: Arc<Semaphore>,
}

/// Whether one store is a long runner, and the turn it holds: created with the store.
#[derive(Clone, Default)]
pub struct TurnSlot(Arc<Mutex<Runner>>);

#[derive(Default)]
struct Runner {
    long: bool,
    turn: Option<OwnedSemaphorePermit>,
    /// When the guest's current host call began.
    host_since: Option<Instant>,
}

impl TurnSlot {
    /// Hands back the turn, if the store holds one.
    pub fn release(&self) {
        lock(&self.0).turn = None;
    }
}

impl Default for Turns {
    fn default() -> Self {
        Self::new()
    }
}

impl Turns {
    /// Turns for half the machine's cores, rounded up (at least one).
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            long_runners: Arc::new(Semaphore::new(cores.div_ceil(2))),
        }
    }

    /// The turns themselves, for host work done on the component's behalf that should share
    /// them (reading a large result).
    pub fn permits(&self) -> Arc<Semaphore> {
        self.long_runners.clone()
    }

    /// Sets `store`'s epoch deadline, callback and call hook, for a unit of work that must end
    /// by `deadline`; `slot_of` finds the store's [`TurnSlot`] in its data.
    pub fn install<T: 'static>(
        &self,
        store: &mut Store<T>,
        deadline: Instant,
        slot_of: fn(&T) -> &TurnSlot,
    ) {
        let slot = slot_of(store.data()).clone();
        store.set_epoch_deadline(FIRST_SLICE);

        let long_runners = self.long_runners.clone();
        store.epoch_deadline_callback(move |store| {
            if Instant::now() >= deadline {
                return Err(Trap::Interrupt.into());
            }
            let slot = slot_of(store.data()).clone();
            {
                let mut runner = lock(&slot.0);
                runner.long = true;
                runner.turn = None;
            }
            let long_runners = long_runners.clone();
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move {
                    tokio::task::yield_now().await;
                    // The semaphore is never closed; without a permit the guest simply runs.
                    if let Ok(turn) = long_runners.acquire_owned().await {
                        lock(&slot.0).turn = Some(turn);
                    }
                }),
            ))
        });

        store.call_hook(move |mut store, hook| {
            let mut runner = lock(&slot.0);
            match hook {
                CallHook::CallingHost => runner.host_since = Some(Instant::now()),
                CallHook::ReturningFromHost => {
                    let waited = runner
                        .host_since
                        .take()
                        .is_some_and(|since| since.elapsed() >= EPOCH_TICK);
                    if waited && !runner.long {
                        store.set_epoch_deadline(FIRST_SLICE);
                    }
                }
                CallHook::ReturningFromWasm => runner.turn = None,
                CallHook::CallingWasm => {}
            }
            Ok(())
        });
    }
}

fn lock(runner: &Mutex<Runner>) -> MutexGuard<'_, Runner> {
    runner.lock().unwrap_or_else(PoisonError::into_inner)
}
