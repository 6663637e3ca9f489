//! Connection URLs that may hold a password: parsed once, printed with the password masked.

use std::fmt;
use std::str::FromStr;

use anyhow::bail;
use rustls::pki_types::pem::PemObject;

use super::postgres_tls::{self, PgTls, SslMode};

/// An AMQP URL; prints with the password masked. `amqps://` connects over TLS, trusting the
/// Mozilla roots built into the binary (Amazon MQ's certificates chain to one) and, when the
/// URL's `cacertfile` query parameter (as in RabbitMQ's URI spec) names a PEM file, its CAs too.
#[derive(Clone)]
pub struct AmqpUrl {
    raw: String,
    /// The CAs `cacertfile` named, in PEM.
    ca: Option<String>,
    /// The user it logs in as (`guest` when it names none, as RabbitMQ's clients default).
    user: String,
}

impl AmqpUrl {
    /// Reads an `amqp://` or `amqps://` URL, and the CA file its `cacertfile` names (a
    /// missing or unreadable one is an error now rather than a failed connection later).
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let uri: lapin::uri::AMQPUri = raw.parse().map_err(|err: String| {
            anyhow::anyhow!("{err}; expected a URL such as amqp://guest:guest@localhost:5672/%2f")
        })?;
        let ca_file = url::Url::parse(raw).ok().and_then(|parsed| {
            parsed
                .query_pairs()
                .find(|(key, _)| key == "cacertfile")
                .map(|(_, path)| path.into_owned())
        });
        let ca = match ca_file {
            None => None,
            Some(_) if uri.scheme != lapin::uri::AMQPScheme::AMQPS => {
                bail!("cacertfile is for TLS: use an amqps:// URL (port 5671) with it")
            }
            Some(path) => {
                let pem = std::fs::read_to_string(&path)
                    .map_err(|err| anyhow::anyhow!("cacertfile: cannot read {path}: {err}"))?;
                // Parsed now: the AMQP client would drop a certificate it cannot read, silently.
                let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|err| anyhow::anyhow!("cacertfile: {path} is not valid PEM: {err}"))?;
                if certs.is_empty() {
                    bail!(
                        "cacertfile: {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                    );
                }
                Some(pem)
            }
        };
        Ok(Self {
            raw: raw.to_owned(),
            ca,
            user: uri.authority.userinfo.username.clone(),
        })
    }

    /// The CAs `cacertfile` named, in PEM, trusted beside the built-in roots.
    pub fn extra_ca(&self) -> Option<&str> {
        self.ca.as_deref()
    }

    /// The user the URL logs in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The URL as given, password included: only for handing to the AMQP client.
    pub fn expose(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self
            .raw
            .split_once("://")
            .and_then(|(scheme, rest)| Some((scheme, rest.split_once('@')?)))
        {
            Some((scheme, (credentials, host))) => {
                let user = credentials.split(':').next().unwrap_or_default();
                write!(f, "{scheme}://{user}:***@{host}")
            }
            None => f.write_str(&self.raw),
        }
    }
}

impl fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A PostgreSQL URL, with the TLS its `sslmode` and `sslrootcert` ask for (see
/// [`postgres_tls`]). It may hold a password, so it prints with the password masked.
#[derive(Clone)]
pub struct DatabaseUrl {
    raw: String,
    parsed: tokio_postgres::Config,
    tls: PgTls,
}

impl DatabaseUrl {
    /// Reads a `postgres://` URL (or a key-value connection string), which must name a
    /// database, with its TLS settings and the CA file they name.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let (rest, tls) = postgres_tls::split(raw)?;
        let mut parsed = tokio_postgres::Config::from_str(&rest).map_err(|err| {
            anyhow::anyhow!(
                "{err}; expected a URL such as \
                 postgres://user@localhost:5432/orders?sslmode=verify-full"
            )
        })?;
        if parsed.get_dbname().is_none() {
            bail!(
                "names no database; add it after the host, as in postgres://localhost:5432/orders"
            );
        }
        let tls = tls
            .settle(parsed.get_ssl_mode())
            .plain_when_local(only_this_machine(&parsed));
        parsed.ssl_mode(tls.driver_mode());
        Ok(Self {
            raw: raw.to_owned(),
            parsed,
            tls,
        })
    }

    /// The connection settings, TLS negotiation included; connect with [`Self::tls`].
    pub fn pg_config(&self) -> &tokio_postgres::Config {
        &self.parsed
    }

    /// The TLS its `sslmode` and `sslrootcert` ask for, with the connector to use.
    pub fn tls(&self) -> &PgTls {
        &self.tls
    }

    /// The name of the database the URL connects to: the component's own.
    pub fn database_name(&self) -> &str {
        self.parsed.get_dbname().unwrap_or_default()
    }

    /// The URL as given, password included: only for handing to a database driver.
    pub fn expose(&self) -> &str {
        &self.raw
    }
}

/// Whether every host a connection may go to is this machine: a loopback name or address, or a
/// Unix socket.
fn only_this_machine(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    let loopback = |name: &str| {
        name.eq_ignore_ascii_case("localhost")
            || name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    let hosts = config.get_hosts();
    !hosts.is_empty()
        && hosts.iter().all(|host| match host {
            Host::Tcp(name) => loopback(name),
            #[cfg(unix)]
            Host::Unix(_) => true,
        })
        && config.get_hostaddrs().iter().all(|ip| ip.is_loopback())
}

impl fmt::Display for DatabaseUrl {
    /// `postgres://user:***@host:port/db`, built from the parsed parts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = self.parsed.get_user().unwrap_or("");
        let password = if self.parsed.get_password().is_some() {
            ":***"
        } else {
            ""
        };
        let at = if user.is_empty() && password.is_empty() {
            ""
        } else {
            "@"
        };
        let host = match self.parsed.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "localhost".to_owned(),
        };
        let port = self.parsed.get_ports().first().copied().unwrap_or(5432);
        write!(
            f,
            "postgres://{user}{password}{at}{host}:{port}/{}",
            self.database_name()
        )?;
        match self.tls.mode() {
            SslMode::Prefer => Ok(()),
            mode => write!(f, "?sslmode={mode}"),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
