//! The `message-handler` export: Invoices consumes `orders.created`.

use contracts::InvoiceId;
use contracts::events::{Event, InvoiceIssued, OrderCreated};
use service_guest::{HandleError, IncomingEvent, MessageHandler, events};

use crate::store::{self, Issued};

pub struct Handler;

impl MessageHandler for Handler {
    fn handle(event: IncomingEvent) -> Result<(), HandleError> {
        match event.topic.as_str() {
            OrderCreated::TOPIC => issue(&events::read(&event)?),
            other => Err(HandleError::Reject(format!(
                "invoices does not consume {other}"
            ))),
        }
    }
}

/// Issues the order's invoice and announces it. An order that already has one (the same event
/// under another id, or a replay) gets no second invoice and no second announcement.
fn issue(order: &OrderCreated) -> Result<(), HandleError> {
    let id = InvoiceId::from_uuid(uuid::Uuid::now_v7());
    let invoice = match store::issue(id, order) {
        Ok(Issued::New(invoice)) => invoice,
        Ok(Issued::Existing) => return Ok(()),
        Err(err) => return Err(HandleError::Retry(format!("{err:?}"))),
    };
    let issued = InvoiceIssued {
        invoice_id: invoice.id,
        order_id: invoice.order_id,
        amount: invoice.amount,
        issued_at: invoice.issued_at,
    };
    events::publish(&issued)
        .map_err(|err| HandleError::Retry(format!("cannot publish invoices.issued: {err:?}")))
}
