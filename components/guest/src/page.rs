//! One page of a keyset-paginated list: newest first by `id` (UUIDv7, so by creation time),
//! filtered by equality on columns, with the cursor of the next page.

use crate::rows::{BadColumn, StoreError};
use crate::sql::{self, Value};

/// A list query being built: `SELECT … FROM …`, then `WHERE` filters, then the page.
pub struct Page<'a> {
    select: &'a str,
    conditions: Vec<String>,
    params: Vec<Value>,
}

impl<'a> Page<'a> {
    /// `select` is `SELECT <columns> FROM <table>`, with no `WHERE`.
    pub fn new(select: &'a str) -> Self {
        Self {
            select,
            conditions: Vec::new(),
            params: Vec::new(),
        }
    }

    /// Keeps rows whose `column` equals `value`, when there is a value.
    pub fn filter(mut self, column: &str, value: Option<Value>) -> Self {
        if let Some(value) = value {
            self.params.push(value);
            self.conditions
                .push(format!("{column} = ${}", self.params.len()));
        }
        self
    }

    /// Runs the query: up to `limit` rows older than `cursor`, read with `read`, and the cursor
    /// of the next page (the last id) when more rows follow.
    pub fn fetch<T, Id: Copy + ToString>(
        mut self,
        cursor: Option<Id>,
        limit: u32,
        read: fn(Vec<Value>) -> Result<T, BadColumn>,
        id: fn(&T) -> Id,
    ) -> Result<(Vec<T>, Option<Id>), StoreError> {
        if let Some(cursor) = cursor {
            self.params.push(Value::Uuid(cursor.to_string()));
            self.conditions.push(format!("id < ${}", self.params.len()));
        }
        // One more row than asked tells whether another page follows.
        self.params.push(Value::Int64(i64::from(limit) + 1));
        let filter = if self.conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conditions.join(" AND "))
        };
        let statement = format!(
            "{}{filter} ORDER BY id DESC LIMIT ${}",
            self.select,
            self.params.len()
        );
        let rows = sql::query(&statement, &self.params)?;
        let mut items = rows
            .rows
            .into_iter()
            .map(read)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(id)
        } else {
            None
        };
        Ok((items, next))
    }
}
