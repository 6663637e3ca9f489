//! Events just committed, on their way from their unit of work to the relay: the relay publishes
//! them from memory at once, instead of reading back the outbox rows a moment after they were
//! written (see [`super::outbox`]). Their rows stay the record: an event that does not get out
//! this way (the broker away, the queue full, the host stopping) is left to the relay's pass
//! over the outbox.

use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};

use crate::capabilities::memory::Held;

/// Events waiting for the relay, at most; past it, more are left to its pass over the outbox.
const MAX_WAITING: usize = 4096;

/// One event as its outbox row holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The CloudEvents id (the row's `id`).
    pub id: String,
    /// Its topic, the routing key.
    pub topic: String,
    /// Its data's media type.
    pub content_type: String,
    /// Its data's schema, if the component named one.
    pub data_schema: Option<String>,
    /// Its data, JSON.
    pub data: Vec<u8>,
    /// The context of the span that published it.
    pub traceparent: Option<String>,
    /// When it was published.
    pub time: DateTime<Utc>,
}

/// An event a unit of work published, kept in memory for the relay.
pub struct FreshEvent {
    /// The event.
    pub event: Event,
    /// What it holds of the component's share of host memory, until it is sent.
    pub held: Held,
}

/// Committed events waiting for the component's relay.
#[derive(Default)]
pub struct Fresh {
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    events: Vec<FreshEvent>,
    /// Some committed event is in the outbox only: the relay's next pass must look at once.
    left_behind: bool,
}

impl Fresh {
    /// Hands over a unit of work's committed `events`; `left_behind` says that some other event
    /// of it was kept in the outbox only. Past [`MAX_WAITING`], the events are left behind too.
    pub fn push(&self, events: Vec<FreshEvent>, left_behind: bool) {
        let mut waiting = self.lock();
        waiting.left_behind |= left_behind;
        if waiting.events.len() + events.len() > MAX_WAITING {
            waiting.left_behind = true;
        } else {
            waiting.events.extend(events);
        }
    }

    /// Takes every waiting event, and whether some committed event was left in the outbox only.
    pub fn take(&self) -> (Vec<FreshEvent>, bool) {
        let mut waiting = self.lock();
        let left_behind = std::mem::take(&mut waiting.left_behind);
        (std::mem::take(&mut waiting.events), left_behind)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Fresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let waiting = self.lock();
        f.debug_struct("Fresh")
            .field("events", &waiting.events.len())
            .field("left_behind", &waiting.left_behind)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> FreshEvent {
        FreshEvent {
            event: Event {
                id: id.into(),
                topic: "orders.created".into(),
                content_type: "application/json".into(),
                data_schema: None,
                data: b"{}".to_vec(),
                traceparent: None,
                time: Utc::now(),
            },
            held: Held::default(),
        }
    }

    #[test]
    fn events_wait_in_order_and_past_the_bound_are_left_to_the_outbox() {
        let fresh = Fresh::default();
        fresh.push(vec![event("a"), event("b")], false);
        fresh.push(vec![event("c")], false);
        let (events, left_behind) = fresh.take();
        let ids: Vec<_> = events.iter().map(|fresh| fresh.event.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(!left_behind);
        assert!(fresh.take().0.is_empty(), "taken once");

        fresh.push(
            (0..MAX_WAITING).map(|n| event(&n.to_string())).collect(),
            false,
        );
        fresh.push(vec![event("over")], false);
        let (events, left_behind) = fresh.take();
        assert_eq!(events.len(), MAX_WAITING);
        assert!(left_behind, "the event over the bound is the pass's");
        assert!(!fresh.take().1, "said once");
    }
}
