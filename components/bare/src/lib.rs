//! A component built against the `subscriber` world only: it exports `message-handler` and no
//! `wasi:http/incoming-handler`. The host must refuse it for a component that has a route; its
//! tests use it as code of the wrong world. Never deployed.

use service_guest::{HandleError, IncomingEvent, MessageHandler};

pub struct Handler;

impl MessageHandler for Handler {
    fn handle(event: IncomingEvent) -> Result<(), HandleError> {
        Err(HandleError::Reject(format!(
            "bare consumes nothing, not {}",
            event.topic
        )))
    }
}

/// The export; its generated glue is `unsafe`.
#[allow(unsafe_code)]
mod export {
    use crate::Handler;
    service_guest::export!(Handler);
}
