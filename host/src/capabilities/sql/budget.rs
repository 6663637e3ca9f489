//! What a component's statements may take of the host: its [`SqlLimits`], and, for one query's
//! rows, a [`ResultBudget`] that counts them against the query's limit and the component's
//! share of host memory as they arrive, and reads a large result in the component's turns.
//!
//! Refusals are the guest's own errors with PostgreSQL's codes: `54000` (program_limit_exceeded)
//! for a limit of the component's, `53200` (out_of_memory) when its share of host memory is held
//! by its other units of work, which may pass (see [`super::Fault`]).

use std::sync::Arc;

use super::{DatabaseError, Error, Value, convert};
use crate::capabilities::memory::{Held, HostMemory, Spent};

/// How much of the host one unit of work's statements may use (from the component's limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlLimits {
    /// A statement's text, in bytes.
    pub max_statement_bytes: usize,
    /// Parameters of one statement.
    pub max_parameters: usize,
    /// The bytes of one statement's parameters together.
    pub max_parameter_bytes: usize,
    /// One query's result, in bytes as the host holds it.
    pub max_result_bytes: usize,
}

/// What one query's rows may take of the host: at most `max_result_bytes`, reserved from the
/// component's [`HostMemory`] as they arrive (ahead, in steps, so most rows reserve nothing).
/// Past [`ResultBudget::HEAVY`] bytes, the rest is read in one of the component's turns (see
/// [`crate::turns`]): reading, decrypting and converting a large result is the host's
/// work on the component's behalf, and a component's large results together take no more of the
/// machine than its looping guests may.
pub struct ResultBudget {
    max_bytes: usize,
    memory: Arc<HostMemory>,
    held: Held,
    /// Bytes of the rows counted so far.
    used: usize,
    /// The component's turns, and the one this result holds once it is large.
    turns: Arc<tokio::sync::Semaphore>,
    turn: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl ResultBudget {
    /// Bytes reserved ahead at a time.
    const STEP: usize = 64 * 1024;

    /// Bytes of a result read before the rest waits for a turn.
    pub const HEAVY: usize = 256 * 1024;

    /// A budget for one query's rows: at most `max_bytes`, reserved from `memory`, and a turn
    /// from `turns` once the result is past [`Self::HEAVY`]. It lives as long as the query.
    pub fn new(
        max_bytes: usize,
        memory: Arc<HostMemory>,
        turns: Arc<tokio::sync::Semaphore>,
    ) -> Self {
        Self {
            max_bytes,
            memory,
            held: Held::default(),
            used: 0,
            turns,
            turn: None,
        }
    }

    /// A budget for one of the host's own queries: at most `max_bytes`, from memory of its own,
    /// with a turn of its own.
    pub fn for_host(max_bytes: usize) -> Self {
        Self::new(
            max_bytes,
            HostMemory::new(max_bytes),
            Arc::new(tokio::sync::Semaphore::new(1)),
        )
    }

    /// Counts `bytes` more of the result, refusing them past the query's limit or the
    /// component's share of memory (a `54000` error for the guest); once the result is large,
    /// waits for a turn of the component's before going on.
    pub async fn take(&mut self, bytes: usize) -> Result<(), Error> {
        self.count(bytes)?;
        if self.used > Self::HEAVY && self.turn.is_none() {
            // The semaphore is never closed; without a permit the result simply goes on.
            self.turn = self.turns.clone().acquire_owned().await.ok();
        }
        Ok(())
    }

    fn count(&mut self, bytes: usize) -> Result<(), Error> {
        let used = self.used.saturating_add(bytes);
        if used > self.max_bytes {
            return Err(limit_exceeded(format!(
                "the result is over {} bytes (max_result_bytes); select fewer rows or columns \
                 (LIMIT, paging)",
                self.max_bytes
            )));
        }
        let held = self.held.bytes();
        if used > held {
            let step = (used - held).max(Self::STEP).min(self.max_bytes - held);
            let more = self
                .memory
                .reserve(step)
                .map_err(|spent| memory_spent(&spent))?;
            self.held.merge(more);
        }
        self.used = used;
        Ok(())
    }

    /// The reservation, to keep while the rows are on their way to the guest.
    pub fn into_held(self) -> Held {
        self.held
    }
}

/// A statement, its parameters or its result over one of the host's limits: PostgreSQL's own
/// code for a limit, `54000` (program_limit_exceeded), so a component matches it as it would
/// the server's.
pub fn limit_exceeded(message: String) -> Error {
    Error::Database(DatabaseError {
        code: "54000".into(),
        message,
        constraint: None,
        column: None,
        detail: None,
    })
}

/// The component's share of host memory is held by its other units of work: `53200`
/// (out_of_memory), which may pass, as PostgreSQL's own does.
pub fn memory_spent(spent: &Spent) -> Error {
    Error::Database(DatabaseError {
        code: "53200".into(),
        message: spent.to_string(),
        constraint: None,
        column: None,
        detail: None,
    })
}

/// About how many bytes `params` take in the host.
pub fn params_size(params: &[Value]) -> usize {
    params.iter().map(convert::size).sum()
}
