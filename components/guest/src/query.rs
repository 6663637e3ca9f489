//! Query strings of list endpoints: known parameters only, each at most once, and the paging
//! parameters every list has (`limit`, `cursor`).

use std::collections::BTreeMap;

use contracts::{Location, Problem};

/// Page size when `limit` is not given, and the largest allowed.
pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// Parameters by name, after checking each is known and given once.
pub struct Query(BTreeMap<String, String>);

impl Query {
    /// Parses `query`; `known` lists the endpoint's own parameters besides `limit` and `cursor`.
    pub fn parse(query: &str, known: &[&str]) -> Result<Self, Problem> {
        let mut parameters = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if !known.contains(&name.as_ref()) && name != "limit" && name != "cursor" {
                let expected = [known, &["limit", "cursor"]].concat().join(", ");
                return Err(invalid(
                    &name,
                    &format!("is not a known parameter; expected {expected}"),
                ));
            }
            if parameters
                .insert(name.to_string(), value.to_string())
                .is_some()
            {
                return Err(invalid(&name, "is given more than once"));
            }
        }
        Ok(Self(parameters))
    }

    /// A parameter parsed with `parse`, whose error becomes the problem's detail.
    pub fn get<T, E: std::fmt::Display>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, Problem> {
        self.0
            .get(name)
            .map(|value| parse(value).map_err(|err| invalid(name, &err.to_string())))
            .transpose()
    }

    /// `limit`: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
    pub fn limit(&self) -> Result<u32, Problem> {
        let limit = self.get("limit", |value| {
            value
                .parse::<u32>()
                .ok()
                .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                .ok_or(format!("must be a whole number from 1 to {MAX_LIMIT}"))
        })?;
        Ok(limit.unwrap_or(DEFAULT_LIMIT))
    }

    /// `cursor`: the last id of the previous page, as `nextCursor` gave it.
    pub fn cursor<T: std::str::FromStr>(&self) -> Result<Option<T>, Problem> {
        self.get("cursor", |value| {
            value.parse::<T>().map_err(
                |_| "is not a cursor this service gave out (use nextCursor from a previous page)",
            )
        })
    }
}

fn invalid(name: &str, detail: &str) -> Problem {
    Problem::invalid(Location::Query, name, detail)
}
