//! The `invoices` table, through `platform:service/sql`, in the host's transaction.

use contracts::events::OrderCreated;
use contracts::{Amount, CustomerId, InvoiceId, OrderId, Timestamp};
use serde::Serialize;
use service_guest::page::Page;
pub use service_guest::rows::StoreError;
use service_guest::rows::{self, BadColumn};
use service_guest::sql::{self, Value};

/// An invoice as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Invoice {
    pub id: InvoiceId,
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub amount: Amount,
    pub status: InvoiceStatus,
    pub issued_at: Timestamp,
}

/// An invoice is `issued` when it is made; no other status exists yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InvoiceStatus {
    Issued,
}

impl std::str::FromStr for InvoiceStatus {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "issued" => Ok(Self::Issued),
            _ => Err("must be issued"),
        }
    }
}

/// `GET /invoices` filters and paging. No other query parameters are accepted, and none twice.
#[derive(Debug, Clone, utoipa::IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct Filter {
    /// Only the invoice of this order.
    #[param(nullable = false)]
    pub order_id: Option<OrderId>,
    /// Only this customer's invoices.
    #[param(nullable = false)]
    pub customer_id: Option<CustomerId>,
    /// Invoices per page.
    #[param(required = false, minimum = 1, maximum = 100, default = 20)]
    pub limit: u32,
    /// `nextCursor` of the previous page: this page holds older invoices.
    #[param(nullable = false)]
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
    let rows = sql::query(
        &format!("SELECT {COLUMNS} FROM invoices WHERE id = $1"),
        &[Value::Uuid(id.to_string())],
    )?;
    Ok(rows
        .rows
        .into_iter()
        .next()
        .map(Invoice::from_row)
        .transpose()?)
}

/// One page of invoices, newest first, and the cursor of the next page if there is one.
pub fn list(filter: &Filter) -> Result<(Vec<Invoice>, Option<InvoiceId>), StoreError> {
    Page::new(&format!("SELECT {COLUMNS} FROM invoices"))
        .filter(
            "order_id",
            filter.order_id.map(|id| Value::Uuid(id.to_string())),
        )
        .filter(
            "customer_id",
            filter.customer_id.map(|id| Value::Uuid(id.to_string())),
        )
        .fetch(filter.cursor, filter.limit, Invoice::from_row, |invoice| {
            invoice.id
        })
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
            status: rows::parsed(status, "status")?,
            issued_at: rows::timestamp(issued_at, "issued_at")?,
        })
    }
}
