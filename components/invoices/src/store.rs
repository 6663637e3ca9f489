//! The `invoices` table, through `platform:service/sql`, in the host's transaction.

use contracts::events::OrderCreated;
use contracts::{Amount, CustomerId, InvoiceId, OrderId, Timestamp};
use serde::Serialize;
pub use service_guest::rows::StoreError;
use service_guest::page::Page;
use service_guest::rows::{self, BadColumn};
use service_guest::sql::{self, Value};

/// An invoice as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Invoice {
    pub id: InvoiceId,
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub amount: Amount,
    pub status: String,
    pub issued_at: Timestamp,
}

/// `GET /invoices` filters and paging.
#[derive(Debug, Clone)]
pub struct Filter {
    pub order_id: Option<OrderId>,
    pub customer_id: Option<CustomerId>,
    pub limit: u32,
    /// The last id of the previous page; this page holds older invoices.
    pub cursor: Option<InvoiceId>,
}

/// What issuing found.
pub enum Issued {
    New(Invoice),
    /// The order already has its invoice.
    Existing,
}

const COLUMNS: &str = "id, order_id, customer_id, amount, status, issued_at";

/// Issues the invoice of `order`, unless it already has one.
pub fn issue(id: InvoiceId, order: &OrderCreated) -> Result<Issued, StoreError> {
    let inserted = sql::query(
        &format!(
            "INSERT INTO invoices (id, order_id, customer_id, amount) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (order_id) DO NOTHING RETURNING {COLUMNS}"
        ),
        &[
            Value::Uuid(id.to_string()),
            Value::Uuid(order.order_id.to_string()),
            Value::Uuid(order.customer_id.to_string()),
            Value::Int64(order.amount.minor_units()),
        ],
    )?;
    Ok(match inserted.rows.into_iter().next() {
        Some(row) => Issued::New(Invoice::from_row(row)?),
        None => Issued::Existing,
    })
}

pub fn get(id: InvoiceId) -> Result<Option<Invoice>, StoreError> {
    let rows = sql::query(&format!("SELECT {COLUMNS} FROM invoices WHERE id = $1"), &[Value::Uuid(id.to_string())])?;
    Ok(rows.rows.into_iter().next().map(Invoice::from_row).transpose()?)
}

/// One page of invoices, newest first, and the cursor of the next page if there is one.
pub fn list(filter: &Filter) -> Result<(Vec<Invoice>, Option<InvoiceId>), StoreError> {
    Page::new(&format!("SELECT {COLUMNS} FROM invoices"))
        .filter("order_id", filter.order_id.map(|id| Value::Uuid(id.to_string())))
        .filter("customer_id", filter.customer_id.map(|id| Value::Uuid(id.to_string())))
        .fetch(filter.cursor, filter.limit, Invoice::from_row, |invoice| invoice.id)
}

pub fn ping() -> Result<(), StoreError> {
    sql::query("SELECT 1", &[])?;
    Ok(())
}

impl Invoice {
    fn from_row(row: Vec<Value>) -> Result<Self, BadColumn> {
        let [id, order_id, customer_id, amount, status, issued_at] = rows::columns(row)?;
        Ok(Self {
            id: rows::id(id, "id")?,
            order_id: rows::id(order_id, "order_id")?,
            customer_id: rows::id(customer_id, "customer_id")?,
            amount: rows::amount(amount, "amount")?,
            status: rows::text(status, "status")?,
            issued_at: rows::timestamp(issued_at, "issued_at")?,
        })
    }
}
