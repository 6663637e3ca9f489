//! Connection URLs that may hold a password: parsed once, printed with the password masked.

use std::fmt;
use std::str::FromStr;

use anyhow::bail;

/// An AMQP URL; prints with the password masked.
#[derive(Clone)]
pub struct AmqpUrl(String);

impl AmqpUrl {
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let uri: lapin::uri::AMQPUri = raw.parse().map_err(|err: String| {
            anyhow::anyhow!("{err}; expected a URL such as amqp://guest:guest@localhost:5672/%2f")
        })?;
        drop(uri);
        Ok(Self(raw.to_owned()))
    }

    /// The URL as given, password included: only for handing to the AMQP client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.split_once("://").and_then(|(scheme, rest)| Some((scheme, rest.split_once('@')?))) {
            Some((scheme, (credentials, host))) => {
                let user = credentials.split(':').next().unwrap_or_default();
                write!(f, "{scheme}://{user}:***@{host}")
            }
            None => f.write_str(&self.0),
        }
    }
}

impl fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}


/// A PostgreSQL URL. It may hold a password, so it prints with the password masked.
#[derive(Clone)]
pub struct DatabaseUrl {
    raw: String,
    parsed: tokio_postgres::Config,
}

impl DatabaseUrl {
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let parsed = tokio_postgres::Config::from_str(raw).map_err(|err| {
            anyhow::anyhow!("{err}; expected a URL such as postgres://user@localhost:5432/orders")
        })?;
        if parsed.get_dbname().is_none() {
            bail!("names no database; add it after the host, as in postgres://localhost:5432/orders");
        }
        Ok(Self { raw: raw.to_owned(), parsed })
    }

    pub fn pg_config(&self) -> &tokio_postgres::Config {
        &self.parsed
    }

    pub fn database_name(&self) -> &str {
        self.parsed.get_dbname().unwrap_or_default()
    }

    /// The URL as given, password included: only for handing to a database driver.
    pub fn expose(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for DatabaseUrl {
    /// `postgres://user:***@host:port/db`, built from the parsed parts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = self.parsed.get_user().unwrap_or("");
        let password = if self.parsed.get_password().is_some() { ":***" } else { "" };
        let at = if user.is_empty() && password.is_empty() { "" } else { "@" };
        let host = match self.parsed.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "localhost".to_owned(),
        };
        let port = self.parsed.get_ports().first().copied().unwrap_or(5432);
        write!(f, "postgres://{user}{password}{at}{host}:{port}/{}", self.database_name())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
