//! The `orders` table, through `platform:service/sql`. All statements of a request or event
//! share the host's transaction; this module never begins or commits.

use contracts::{InvoiceId, OrderId};
use service_guest::page::Page;
pub use service_guest::rows::StoreError;
use service_guest::rows::{self, BadColumn};
use service_guest::sql::{self, Value};

use crate::domain::{ListQuery, NewOrder, Order};

/// What creating an order with an idempotency key found.
pub enum Created {
    New(Order),
    /// An order made earlier with the same key.
    Existing(Order),
}

const COLUMNS: &str = "id, customer_id, amount, status, created_at, invoice_id";

/// Inserts the order, unless `idempotency_key` already names one: then returns that order.
pub fn create(
    id: OrderId,
    order: &NewOrder,
    idempotency_key: Option<&str>,
) -> Result<Created, StoreError> {
    let key = idempotency_key.map_or(Value::Null, |key| Value::Text(key.to_owned()));
    let inserted = sql::query(
        &format!(
            "INSERT INTO orders (id, customer_id, amount, idempotency_key) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING {COLUMNS}"
        ),
        &[
            Value::Uuid(id.to_string()),
            Value::Uuid(order.customer_id.to_string()),
            Value::Int64(order.amount.minor_units()),
            key.clone(),
        ],
    )?;
    if let Some(row) = inserted.rows.into_iter().next() {
        return Ok(Created::New(Order::from_row(row)?));
    }
    // The key was taken. `ON CONFLICT` waited for the other transaction to commit, so the
    // order it made is visible now.
    let existing = sql::query(
        &format!("SELECT {COLUMNS} FROM orders WHERE idempotency_key = $1"),
        &[key],
    )?;
    let row = existing.rows.into_iter().next().ok_or_else(|| {
        StoreError::Failed("an idempotency key conflicted but its order is gone".into())
    })?;
    Ok(Created::Existing(Order::from_row(row)?))
}

pub fn get(id: OrderId) -> Result<Option<Order>, StoreError> {
    let rows = sql::query(
        &format!("SELECT {COLUMNS} FROM orders WHERE id = $1"),
        &[Value::Uuid(id.to_string())],
    )?;
    Ok(rows
        .rows
        .into_iter()
        .next()
        .map(Order::from_row)
        .transpose()?)
}

/// One page of orders, newest first, and the cursor of the next page if there is one.
pub fn list(query: &ListQuery) -> Result<(Vec<Order>, Option<OrderId>), StoreError> {
    Page::new(&format!("SELECT {COLUMNS} FROM orders"))
        .filter(
            "customer_id",
            query.customer_id.map(|id| Value::Uuid(id.to_string())),
        )
        .filter(
            "status",
            query
                .status
                .map(|status| Value::Text(status.as_str().to_owned())),
        )
        .fetch(query.cursor, query.limit, Order::from_row, |order| order.id)
}

/// What `mark_invoiced` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Invoiced {
    Now,
    /// Already invoiced by this same invoice.
    Already,
    /// Already invoiced by another invoice.
    OtherInvoice(Option<InvoiceId>),
    NoSuchOrder,
}

/// Moves a pending order to `invoiced`; idempotent.
pub fn mark_invoiced(order: OrderId, invoice: InvoiceId) -> Result<Invoiced, StoreError> {
    let changed = sql::execute(
        "UPDATE orders SET status = 'invoiced', invoice_id = $2 \
         WHERE id = $1 AND status = 'pending'",
        &[
            Value::Uuid(order.to_string()),
            Value::Uuid(invoice.to_string()),
        ],
    )?;
    if changed > 0 {
        return Ok(Invoiced::Now);
    }
    Ok(match get(order)? {
        Some(existing) if existing.invoice_id == Some(invoice) => Invoiced::Already,
        Some(existing) => Invoiced::OtherInvoice(existing.invoice_id),
        None => Invoiced::NoSuchOrder,
    })
}

/// Checks the database answers.
pub fn ping() -> Result<(), StoreError> {
    sql::query("SELECT 1", &[])?;
    Ok(())
}

impl Order {
    /// Reads a row of [`COLUMNS`].
    fn from_row(row: Vec<Value>) -> Result<Self, BadColumn> {
        let [id, customer_id, amount, status, created_at, invoice_id] = rows::columns(row)?;
        Ok(Self {
            id: rows::id(id, "id")?,
            customer_id: rows::id(customer_id, "customer_id")?,
            amount: rows::amount(amount, "amount")?,
            status: rows::parsed(status, "status")?,
            created_at: rows::timestamp(created_at, "created_at")?,
            invoice_id: rows::optional_id(invoice_id, "invoice_id")?,
        })
    }
}
