//! The `message-handler` export: Orders consumes `invoices.issued`.

use contracts::events::{Event, InvoiceIssued};
use service_guest::{HandleError, IncomingEvent, MessageHandler, events};

use crate::store::{self, Invoiced};

pub struct Handler;

impl MessageHandler for Handler {
    fn handle(event: IncomingEvent) -> Result<(), HandleError> {
        match event.topic.as_str() {
            InvoiceIssued::TOPIC => invoiced(&events::read(&event)?),
            other => Err(HandleError::Reject(format!(
                "orders does not consume {other}"
            ))),
        }
    }
}

/// Marks the order invoiced; a repeat of an event already applied changes nothing.
fn invoiced(issued: &InvoiceIssued) -> Result<(), HandleError> {
    match store::mark_invoiced(issued.order_id, issued.invoice_id) {
        Ok(Invoiced::Now | Invoiced::Already) => Ok(()),
        Ok(Invoiced::OtherInvoice(other)) => Err(HandleError::Reject(format!(
            "order {} is already invoiced by {other:?}, not by {}",
            issued.order_id, issued.invoice_id
        ))),
        Ok(Invoiced::NoSuchOrder) => Err(HandleError::Reject(format!(
            "invoice {} names unknown order {}",
            issued.invoice_id, issued.order_id
        ))),
        Err(err) => Err(HandleError::Retry(format!("{err:?}"))),
    }
}
