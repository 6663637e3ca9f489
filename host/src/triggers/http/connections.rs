//! The HTTP listener's client connections, kept so that idle and slow clients cannot keep new
//! ones out.
//!
//! - At most `max_connections` are open, and at most `max_connections_per_client` from one
//!   address.
//! - When a limit is reached, the connection idle longest (a keep-alive connection between
//!   requests, or one that has not sent a request yet) is closed to make room for the new one:
//!   a client holding idle connections loses them to clients that have something to ask. Only
//!   when every connection under the limit is busy does the new one wait (in the listen backlog,
//!   or, over its address's limit, is closed at once).
//! - A connection that sends no request within `first_request_timeout` is closed.
//!
//! Built once with the [`super::HttpTrigger`]; each connection holds a [`Connection`] for as
//! long as it is open, and each request a [`Busy`] (from [`Requests::begin`]) for as long as it
//! runs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The open connections.
pub struct Connections {
    max: usize,
    per_client: usize,
    /// What `idle_since` is counted from.
    epoch: Instant,
    open: Mutex<Open>,
    /// Woken when a connection closes or goes idle: there may be room now.
    room: Notify,
}

#[derive(Default)]
struct Open {
    next: u64,
    by_id: HashMap<u64, Arc<State>>,
    per_address: HashMap<IpAddr, usize>,
}

/// One connection's state, shared by its task, its requests and the table.
struct State {
    address: IpAddr,
    /// Requests running on it now.
    busy: AtomicU32,
    /// When it last went idle, in nanoseconds from `Connections::epoch`.
    idle_since: AtomicU64,
    /// Whether it has begun a request.
    asked: AtomicBool,
    /// Cancelled when it is to close.
    close: CancellationToken,
}

/// An open connection, counted until dropped.
pub struct Connection {
    id: u64,
    state: Arc<State>,
    connections: Arc<Connections>,
}

/// One request running on a connection, until dropped.
pub struct Busy {
    state: Arc<State>,
    connections: Arc<Connections>,
}

impl Connections {
    pub fn new(max: usize, per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_client,
            epoch: Instant::now(),
            open: Mutex::default(),
            room: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Waits until a new connection could be admitted: the table has room, or an idle
    /// connection to close for it.
    pub async fn room(&self) {
        loop {
            let notified = self.room.notified();
            {
                let open = self.lock();
                if open.by_id.len() < self.max || open.by_id.values().any(|state| state.is_idle()) {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Admits a connection from `address`, closing the idle one that makes room for it if a
    /// limit is reached; `None` when none can: the caller closes the new connection.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Option<Connection> {
        let mut open = self.lock();
        let from_address = open.per_address.get(&address).copied().unwrap_or(0);
        if from_address >= self.per_client {
            let oldest = oldest_idle(&open, Some(address))?;
            shed(&mut open, oldest);
        }
        if open.by_id.len() >= self.max {
            let oldest = oldest_idle(&open, None)?;
            shed(&mut open, oldest);
        }
        let id = open.next;
        open.next += 1;
        let state = Arc::new(State {
            address,
            busy: AtomicU32::new(0),
            idle_since: AtomicU64::new(self.now()),
            asked: AtomicBool::new(false),
            close: CancellationToken::new(),
        });
        open.by_id.insert(id, state.clone());
        *open.per_address.entry(address).or_default() += 1;
        Some(Connection {
            id,
            state,
            connections: self.clone(),
        })
    }

    /// Connections open now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }
}

/// The idle connection that went idle first, of `address` or of anyone.
fn oldest_idle(open: &Open, address: Option<IpAddr>) -> Option<u64> {
    open.by_id
        .iter()
        .filter(|(_, state)| {
            state.is_idle() && address.is_none_or(|address| state.address == address)
        })
        .min_by_key(|(_, state)| state.idle_since.load(Ordering::Relaxed))
        .map(|(id, _)| *id)
}

/// Takes `id` out of the table and tells it to close (an idle connection closes at once).
fn shed(open: &mut Open, id: u64) {
    if let Some(state) = open.by_id.remove(&id) {
        forget_address(open, state.address);
        state.close.cancel();
    }
}

fn forget_address(open: &mut Open, address: IpAddr) {
    if let Some(count) = open.per_address.get_mut(&address) {
        *count -= 1;
        if *count == 0 {
            open.per_address.remove(&address);
        }
    }
}

impl State {
    fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }
}

impl Connection {
    /// Cancelled when the connection is to close: it was shed to make room.
    pub fn closing(&self) -> &CancellationToken {
        &self.state.close
    }

    /// Whether it has begun a request yet.
    pub fn has_asked(&self) -> bool {
        self.state.asked.load(Ordering::Acquire)
    }

    /// What counts its requests, for the request handler to hold.
    pub fn requests(&self) -> Requests {
        Requests {
            state: self.state.clone(),
            connections: self.connections.clone(),
        }
    }
}

/// Makes a [`Busy`] per request; held by a connection's request handler.
#[derive(Clone)]
pub struct Requests {
    state: Arc<State>,
    connections: Arc<Connections>,
}

impl Requests {
    pub fn begin(&self) -> Busy {
        self.state.asked.store(true, Ordering::Release);
        self.state.busy.fetch_add(1, Ordering::AcqRel);
        Busy {
            state: self.state.clone(),
            connections: self.connections.clone(),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.state
            .idle_since
            .store(self.connections.now(), Ordering::Relaxed);
        if self.state.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.connections.room.notify_one();
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut open = self.connections.lock();
        if open.by_id.remove(&self.id).is_some() {
            forget_address(&mut open, self.state.address);
        }
        drop(open);
        self.connections.room.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn at_the_limit_the_connection_idle_longest_makes_room() {
        let connections = Connections::new(3, 3);
        let first = connections.admit(address(1)).expect("room");
        let second = connections.admit(address(1)).expect("room");
        let third = connections.admit(address(2)).expect("room");
        let _asking = second.requests().begin();
        let fourth = connections.admit(address(3)).expect("an idle one is shed");
        assert!(
            first.closing().is_cancelled(),
            "the oldest idle connection closes"
        );
        assert!(!second.closing().is_cancelled() && !third.closing().is_cancelled());
        assert_eq!(connections.len(), 3);
        drop((first, fourth));
        assert_eq!(connections.len(), 2);
    }

    #[test]
    fn when_every_connection_is_busy_there_is_no_room() {
        let connections = Connections::new(2, 2);
        let (a, b) = (
            connections.admit(address(1)).expect("room"),
            connections.admit(address(2)).expect("room"),
        );
        let (_a_busy, _b_busy) = (a.requests().begin(), b.requests().begin());
        assert!(connections.admit(address(3)).is_none());
    }

    #[test]
    fn one_address_over_its_share_loses_its_own_idle_connections_not_others() {
        let connections = Connections::new(10, 2);
        let other = connections.admit(address(9)).expect("room");
        let (a, b) = (
            connections.admit(address(1)).expect("room"),
            connections.admit(address(1)).expect("room"),
        );
        let _c = connections
            .admit(address(1))
            .expect("its own oldest idle one is shed");
        assert!(
            a.closing().is_cancelled()
                && !b.closing().is_cancelled()
                && !other.closing().is_cancelled()
        );
        let _b_busy = b.requests().begin();
        let _d = connections.admit(address(1));
        assert!(
            !other.closing().is_cancelled(),
            "never another address's connection"
        );
    }

    #[tokio::test]
    async fn a_request_that_ends_makes_room_for_a_waiting_connection() {
        let connections = Connections::new(1, 1);
        let only = connections.admit(address(1)).expect("room");
        let busy = only.requests().begin();
        let waiting = tokio::spawn({
            let connections = connections.clone();
            async move { connections.room().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(busy);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("room")
            .expect("task");
    }
}
