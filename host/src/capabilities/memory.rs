//! Host memory a component's units of work hold on its behalf: what their statements and
//! parameters take while they are sent, the results on their way to the guest, the events they
//! published until the commit, their response bodies while they are collected.
//!
//! Each component has a [`HostMemory`] of `host_memory_mib` (built once, with its service), and
//! every such byte is reserved from it before the host keeps it: a [`Held`] reservation gives
//! the bytes back when it is dropped. A reservation that does not fit is refused at once, never
//! waited for, and the refusal is the guest's error (a `54000` SQL error, an `invalid` publish,
//! a 500): so however many units of work a component runs, and whatever they ask, the host
//! keeps at most that much memory for them, and another component's share is untouched.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One component's share of the host's memory.
#[derive(Debug)]
pub struct HostMemory {
    /// One permit per byte.
    bytes: Arc<Semaphore>,
    total: usize,
}

/// Bytes reserved from a [`HostMemory`], given back when dropped.
#[derive(Debug, Default)]
pub struct Held(Option<OwnedSemaphorePermit>);

/// A reservation that did not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the component's units of work hold its whole share of the host's memory ({total} bytes, \
     host_memory_mib) already; {wanted} more bytes were refused"
)]
pub struct Spent {
    /// The component's whole share, in bytes (its `host_memory_mib`).
    pub total: usize,
    /// The bytes the refused reservation asked for.
    pub wanted: usize,
}

impl HostMemory {
    /// A share of `total` bytes, none reserved; built once per component and shared by `Arc`
    /// with what reserves from it.
    pub fn new(total: usize) -> Arc<Self> {
        let total = total.min(Semaphore::MAX_PERMITS);
        Arc::new(Self {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        })
    }

    /// Reserves `bytes`, or refuses at once when they do not fit.
    pub fn reserve(&self, bytes: usize) -> Result<Held, Spent> {
        if bytes == 0 {
            return Ok(Held::default());
        }
        let spent = || Spent {
            total: self.total,
            wanted: bytes,
        };
        let count = u32::try_from(bytes).map_err(|_| spent())?;
        self.bytes
            .clone()
            .try_acquire_many_owned(count)
            .map(|permit| Held(Some(permit)))
            .map_err(|_| spent())
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

impl Held {
    /// Adds `other`'s bytes to this reservation.
    pub fn merge(&mut self, other: Held) {
        match (&mut self.0, other.0) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (_, None) => {}
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |permit| permit.num_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_that_does_not_fit_is_refused_and_dropped_ones_are_given_back() {
        let memory = HostMemory::new(1000);
        let mut first = memory.reserve(600).expect("fits");
        assert_eq!(
            memory.reserve(500).err(),
            Some(Spent {
                total: 1000,
                wanted: 500
            })
        );
        first.merge(memory.reserve(400).expect("fits"));
        assert_eq!(first.bytes(), 1000);
        assert_eq!(memory.available(), 0);
        drop(first);
        assert_eq!(memory.available(), 1000);
        assert!(
            memory.reserve(usize::MAX).is_err(),
            "more than there is, never a panic"
        );
    }
}
