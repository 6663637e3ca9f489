//! The Orders domain: what an order is, what creating one takes, and what a listing asks for.
//! Parsing requests into these is [`crate::input`]'s; storing them is [`crate::store`]'s.

use contracts::{Amount, CustomerId, InvoiceId, OrderId, Timestamp};
use serde::Serialize;

/// An order as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: OrderId,
    pub customer_id: CustomerId,
    pub amount: Amount,
    pub status: OrderStatus,
    pub created_at: Timestamp,
    /// The order's invoice, once issued.
    pub invoice_id: Option<InvoiceId>,
}

/// `pending`, then `invoiced` once Invoices has issued the order's invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Invoiced,
}

impl OrderStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Invoiced => "invoiced",
        }
    }
}

impl std::str::FromStr for OrderStatus {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "pending" => Ok(Self::Pending),
            "invoiced" => Ok(Self::Invoiced),
            _ => Err("must be pending or invoiced"),
        }
    }
}

/// A valid `POST /orders` body. The derive documents it (`serde` attributes included); parsing
/// is [`NewOrder::from_json`], which names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewOrder {
    /// Who orders.
    pub customer_id: CustomerId,
    /// What the order costs, in minor units.
    pub amount: Amount,
}

/// `GET /orders` query parameters. No others are accepted, and none twice.
#[derive(Debug, Clone, PartialEq, Eq, utoipa::IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct ListQuery {
    /// Only this customer's orders.
    #[param(nullable = false)]
    pub customer_id: Option<CustomerId>,
    /// Only orders in this status.
    #[param(nullable = false)]
    pub status: Option<OrderStatus>,
    /// Orders per page.
    #[param(required = false, minimum = 1, maximum = 100, default = 20)]
    pub limit: u32,
    /// `nextCursor` of the previous page: this page holds older orders.
    #[param(nullable = false)]
    pub cursor: Option<OrderId>,
}
