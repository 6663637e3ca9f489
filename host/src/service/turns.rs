//! Fair turns on the CPU for guests, decided at each epoch tick (see [`crate::engine`]).
//!
//! A guest that is still running when the epoch ticks has computed for a whole tick: far longer
//! than a request's work usually takes. At that tick it hands back its worker thread with
//! `tokio::task::yield_now` (which lets the runtime poll for I/O first, so requests waiting on
//! the network or the database go ahead of it), then queues for one of its component's
//! [`Turns`] before it runs on. A component has turns for half the machine's cores (at least
//! one): however many of its guests loop or compute for long, at most that many run at once and
//! the rest wait off the run queue, so the other half of the cores stays free for every other
//! request. Once its deadline has passed, the guest traps instead of yielding.
//!
//! A turn is held only while the guest runs its own code: it is handed back as soon as the guest
//! calls the host (a statement that waits on a lock must not keep a turn that the lock's holder
//! needs to finish), and taken again only at a later tick.
//!
//! Built once per component; each store holds its turn in the hooks [`Turns::install`] sets.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{CallHook, Store, Trap, UpdateDeadline};

use crate::state::StoreState;

pub struct Turns {
    /// One permit per guest of the component that may run past its first tick at once: half
    /// the cores, rounded up.
    long_runners: Arc<Semaphore>,
}

impl Turns {
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self { long_runners: Arc::new(Semaphore::new(cores.div_ceil(2))) }
    }

    /// Sets `store`'s epoch callback and call hook, for a unit of work that must end by
    /// `deadline`.
    pub fn install(&self, store: &mut Store<StoreState>, deadline: Instant) {
        // The turn this guest holds, if any; released when the store drops.
        let turn: Arc<Mutex<Option<OwnedSemaphorePermit>>> = Arc::default();
        let long_runners = self.long_runners.clone();
        let at_tick = turn.clone();
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                return Err(Trap::Interrupt.into());
            }
            release(&at_tick);
            let (turn, long_runners) = (at_tick.clone(), long_runners.clone());
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move {
                    tokio::task::yield_now().await;
                    // The semaphore is never closed; without a permit the guest simply runs.
                    if let Ok(permit) = long_runners.acquire_owned().await {
                        *turn.lock().unwrap_or_else(PoisonError::into_inner) = Some(permit);
                    }
                }),
            ))
        });
        store.call_hook(move |_, hook| {
            if matches!(hook, CallHook::CallingHost) {
                release(&turn);
            }
            Ok(())
        });
    }
}

fn release(turn: &Mutex<Option<OwnedSemaphorePermit>>) {
    drop(turn.lock().unwrap_or_else(PoisonError::into_inner).take());
}
