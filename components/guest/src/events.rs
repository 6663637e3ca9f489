//! Typed events over `platform:service/messaging`: publishing a `contracts` event in the current
//! unit of work, and reading one that was delivered.

use contracts::events::{self, Event};

use crate::HandleError;
use crate::messaging::{self, OutgoingEvent, PublishError};

/// Publishes `event` in the current unit of work: it leaves only if the work commits.
pub fn publish<E: Event>(event: &E) -> Result<(), PublishError> {
    let data = serde_json::to_vec(event).map_err(|err| PublishError::Invalid(err.to_string()))?;
    messaging::publish(&OutgoingEvent {
        id: uuid::Uuid::now_v7().to_string(),
        topic: E::TOPIC.to_owned(),
        content_type: events::JSON.to_owned(),
        data_schema: Some(E::DATA_SCHEMA.to_owned()),
        data,
    })
}

/// Reads a delivered event's data as `E`; data that is not an `E` is rejected for good, since
/// retrying cannot fix it.
pub fn read<E: Event>(event: &crate::IncomingEvent) -> Result<E, HandleError> {
    events::decode(event.data_schema.as_deref(), &event.data)
        .map_err(|err| HandleError::Reject(err.to_string()))
}
