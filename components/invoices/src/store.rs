//! The `invoices` table, through `platform:service/sql`, in the host's transaction.

use contracts::events::OrderCreated;
use contracts::{Amount, CustomerId, InvoiceId, OrderId, Timestamp};
use serde::Serialize;
pub use service_guest::rows::StoreError;
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
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    if let Some(order_id) = filter.order_id {
        params.push(Value::Uuid(order_id.to_string()));
        conditions.push(format!("order_id = ${}", params.len()));
    }
    if let Some(customer_id) = filter.customer_id {
        params.push(Value::Uuid(customer_id.to_string()));
        conditions.push(format!("customer_id = ${}", params.len()));
    }
    if let Some(cursor) = filter.cursor {
        params.push(Value::Uuid(cursor.to_string()));
        conditions.push(format!("id < ${}", params.len()));
    }
    params.push(Value::Int64(i64::from(filter.limit) + 1));
    let filter_sql = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
    let statement = format!("SELECT {COLUMNS} FROM invoices {filter_sql} ORDER BY id DESC LIMIT ${}", params.len());
    let rows = sql::query(&statement, &params)?;
    let mut invoices = rows.rows.into_iter().map(Invoice::from_row).collect::<Result<Vec<_>, _>>()?;
    let next = if invoices.len() > filter.limit as usize {
        invoices.truncate(filter.limit as usize);
        invoices.last().map(|invoice| invoice.id)
    } else {
        None
    };
    Ok((invoices, next))
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
