//! TLS to PostgreSQL, asked for as libpq asks for it: the URL's `sslmode` and `sslrootcert`.
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (the default, as in libpq, but for a server on this machine) | when the server offers it | not checked |
//! | `require` | always | not checked; checked as `verify-ca` when `sslrootcert` names a CA (as libpq does) |
//! | `verify-ca` | always | signed by the CAs of `sslrootcert` (a file: it is required) |
//! | `verify-full` | always | signed by a trusted CA and naming the URL's host |
//!
//! Without an `sslmode`, a server reached only over loopback (`localhost`, `127.0.0.1`, `::1`) or
//! a Unix socket is `disable`: TLS there protects nothing a process on the same machine could
//! not read anyway, and costs every statement its encryption. `sslmode=prefer` said outright
//! keeps TLS.
//!
//! `sslrootcert` is a PEM file of trusted CAs (such as Amazon RDS's bundle), or `system` for the
//! operating system's roots. `verify-full` uses the system's roots when it is not given (libpq
//! would read `~/.postgresql/root.crt`, which a container does not have). The system's roots
//! never go with a weaker mode than `verify-full`: any public certificate, for any name, chains
//! to them. A key-value connection string (`host=… sslmode=require`) keeps tokio-postgres's own
//! reading of `disable`, `prefer` and `require`; the verifying modes need a URL.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, so both parameters are taken out
//! of the URL here; the rest of the URL goes to tokio-postgres, with its own `sslmode` set to
//! what the connection needs, and the certificate checks live in the rustls configuration.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, bail};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{CertificateError, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

mod verifiers;

use verifiers::{Check, client_config};

/// The TLS connector every connection to a component's database goes through (pools,
/// migrations, cancel requests).
pub type PgConnector = MakeRustlsConnect;

/// How a connection uses TLS and checks the server's certificate: libpq's `sslmode` (see the
/// module's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// `disable`: never TLS.
    Disable,
    /// `prefer`, the default: TLS when the server offers it, the certificate not checked.
    Prefer,
    /// `require`: always TLS; the certificate is checked only when `sslrootcert` names a CA file.
    Require,
    /// `verify-ca`: always TLS, the certificate signed by a CA of `sslrootcert`.
    VerifyCa,
    /// `verify-full`: always TLS, the certificate signed by a trusted CA and naming the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> anyhow::Result<Self> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            "allow" => {
                bail!("sslmode=allow is not supported; use prefer (TLS when offered) or disable")
            }
            other => bail!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            ),
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The CAs a verifying mode trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    System,
    File(PathBuf),
}

/// A database URL's TLS settings, and the connector made from them.
#[derive(Clone)]
pub struct PgTls {
    mode: SslMode,
    /// Whether the URL said `sslmode`; if not, tokio-postgres's reading of a key-value string's
    /// own `sslmode` stands (see [`PgTls::settle`]).
    explicit: bool,
    connector: PgConnector,
}

impl PgTls {
    /// The mode once tokio-postgres has read the rest of the connection string: a key-value
    /// string's `sslmode=disable` or `require`, which [`split`] leaves to it, is kept. The
    /// connector is the same for those modes (no certificate check), so only the mode changes.
    pub fn settle(mut self, parsed: tokio_postgres::config::SslMode) -> Self {
        if !self.explicit {
            self.mode = match parsed {
                tokio_postgres::config::SslMode::Disable => SslMode::Disable,
                tokio_postgres::config::SslMode::Require => SslMode::Require,
                _ => SslMode::Prefer,
            };
        }
        self
    }

    /// No TLS for a server reached only on this machine (`local`), unless `sslmode` was given.
    pub fn plain_when_local(mut self, local: bool) -> Self {
        if local && !self.explicit && self.mode == SslMode::Prefer {
            self.mode = SslMode::Disable;
        }
        self
    }

    /// The `sslmode` connections to this database use, as settled.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// The connector that does the TLS (and its certificate checks) for this database.
    pub fn connector(&self) -> &PgConnector {
        &self.connector
    }

    /// What tokio-postgres is told: it only negotiates; the checks are rustls's.
    pub fn driver_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL: the URL without them, and the
/// TLS settings they ask for (reading the CA file now, so a wrong path is a configuration error).
/// Key-value connection strings (`host=… dbname=…`) pass through as they are (see
/// [`PgTls::settle`]).
pub fn split(raw: &str) -> anyhow::Result<(String, PgTls)> {
    let Some(scheme_end) = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| raw.starts_with(scheme).then_some(scheme.len()))
    else {
        return Ok((raw.to_owned(), settings(None, None)?));
    };
    // The query starts after the credentials: tokio-postgres reads a password up to the first
    // `@`, so a `?` in it is not the query's.
    let after_credentials = raw[scheme_end..]
        .find('@')
        .map_or(scheme_end, |at| scheme_end + at + 1);
    let Some(question) = raw[after_credentials..]
        .find('?')
        .map(|at| after_credentials + at)
    else {
        return Ok((raw.to_owned(), settings(None, None)?));
    };
    let (base, query) = (&raw[..question], &raw[question + 1..]);
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let (mut mode, mut roots, mut kept) = (None, None, Vec::new());
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match decode(key).as_str() {
            "sslmode" => mode = Some(SslMode::parse(&decode(value))?),
            "sslrootcert" => roots = Some(decode(value)),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, settings(mode, roots)?))
}

fn settings(given: Option<SslMode>, roots: Option<String>) -> anyhow::Result<PgTls> {
    let roots = roots.map(|value| match value.as_str() {
        "system" => Roots::System,
        path => Roots::File(PathBuf::from(path)),
    });
    let mode = match (given, &roots) {
        // As libpq 16: `sslrootcert=system` alone means verify-full.
        (None, Some(Roots::System)) => SslMode::VerifyFull,
        (Some(mode), Some(Roots::System)) if mode != SslMode::VerifyFull => {
            bail!(
                "sslrootcert=system needs sslmode=verify-full, not {mode}: the system's CAs vouch \
                 for names, so the name must be checked"
            )
        }
        (None | Some(SslMode::Prefer | SslMode::Disable), Some(Roots::File(_))) => {
            bail!(
                "sslrootcert is given but sslmode does not check certificates; add \
                 sslmode=verify-full (or verify-ca)"
            )
        }
        (mode, _) => mode.unwrap_or(SslMode::Prefer),
    };
    let check = match (mode, roots) {
        // `require` with the system's roots was refused above.
        (SslMode::Disable | SslMode::Prefer, _)
        | (SslMode::Require, None | Some(Roots::System)) => Check::None,
        (SslMode::Require | SslMode::VerifyCa, Some(Roots::File(path))) => {
            Check::Chain(trusted(&Roots::File(path))?)
        }
        (SslMode::VerifyCa, _) => bail!(
            "sslmode=verify-ca needs sslrootcert=/path/ca.pem, the CA that signs the server's \
             certificate; with a public CA use sslmode=verify-full"
        ),
        (SslMode::VerifyFull, roots) => Check::Full(trusted(&roots.unwrap_or(Roots::System))?),
    };
    Ok(PgTls {
        mode,
        explicit: given.is_some(),
        connector: MakeRustlsConnect::new(client_config(check)?),
    })
}

fn trusted(roots: &Roots) -> anyhow::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| {
                    format!(
                        "sslrootcert: cannot read CA certificates from {}",
                        path.display()
                    )
                })?;
            for cert in certs {
                store.add(cert).with_context(|| {
                    format!(
                        "sslrootcert: {} holds a certificate that is not a CA",
                        path.display()
                    )
                })?;
            }
            if store.is_empty() {
                bail!(
                    "sslrootcert: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                );
            }
        }
        Roots::System => {
            store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if store.is_empty() {
                bail!(
                    "no CA certificates found on this system for sslmode verification; install the \
                     ca-certificates package or name a CA file with sslrootcert=/path/ca.pem"
                );
            }
        }
    }
    Ok(store)
}

/// Why a connection attempt failed at TLS, in words an operator can act on; `None` when the
/// error is not about TLS.
pub fn explain(err: &(dyn std::error::Error + 'static), mode: SslMode) -> Option<String> {
    let mut source = Some(err);
    while let Some(current) = source {
        let tls = current.downcast_ref::<rustls::Error>().or_else(|| {
            current
                .downcast_ref::<std::io::Error>()?
                .get_ref()?
                .downcast_ref::<rustls::Error>()
        });
        if let Some(tls) = tls {
            return Some(match tls {
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ) => {
                    format!(
                        "the server's certificate does not name the URL's host (sslmode={mode}: \
                         {tls}); connect by a name the certificate holds"
                    )
                }
                rustls::Error::InvalidCertificate(_) => format!(
                    "the server's certificate was refused (sslmode={mode}: {tls}); name the CA \
                     that signed it with sslrootcert=/path/ca.pem"
                ),
                _ => format!("the TLS handshake failed (sslmode={mode}: {tls})"),
            });
        }
        if current.to_string().contains("server does not support TLS") {
            return Some(format!(
                "the server does not offer TLS, which sslmode={mode} requires; turn ssl on in \
                 postgresql.conf"
            ));
        }
        source = current.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(raw: &str) -> SslMode {
        split(raw).expect(raw).1.mode()
    }

    #[test]
    fn the_ssl_parameters_leave_the_url_and_the_rest_stays_as_written() {
        let (url, tls) = split(
            "postgres://u:p%40ss@db:5432/orders?application_name=a%20b\
             &sslmode=require&connect_timeout=3",
        )
        .expect("valid");
        assert_eq!(
            url,
            "postgres://u:p%40ss@db:5432/orders?application_name=a%20b&connect_timeout=3"
        );
        assert_eq!(tls.mode(), SslMode::Require);
        assert_eq!(tls.driver_mode(), tokio_postgres::config::SslMode::Require);
        let (url, _) = split("postgres://db/orders?sslmode=disable").expect("valid");
        assert_eq!(url, "postgres://db/orders");
    }

    #[test]
    fn the_default_is_libpqs_prefer() {
        assert_eq!(mode_of("postgres://db/orders"), SslMode::Prefer);
        assert_eq!(mode_of("host=db dbname=orders"), SslMode::Prefer);
        assert_eq!(
            split("host=db dbname=orders sslmode=require")
                .expect("valid")
                .0,
            "host=db dbname=orders sslmode=require"
        );
        assert_eq!(
            split("postgres://db/orders")
                .expect("valid")
                .1
                .driver_mode(),
            tokio_postgres::config::SslMode::Prefer
        );
    }

    #[test]
    fn every_libpq_mode_is_read() {
        for mode in ["disable", "prefer", "require", "verify-full"] {
            assert_eq!(
                mode_of(&format!("postgresql://db/orders?sslmode={mode}")).as_str(),
                mode
            );
        }
        // A file of CAs, as verify-ca needs (the system's bundle stands in for a private CA).
        let bundle = "/etc/ssl/certs/ca-certificates.crt";
        assert_eq!(
            mode_of(&format!(
                "postgres://db/o?sslmode=verify-ca&sslrootcert={bundle}"
            )),
            SslMode::VerifyCa
        );
        assert_eq!(
            mode_of(&format!(
                "postgres://db/o?sslmode=require&sslrootcert={bundle}"
            )),
            SslMode::Require
        );
        assert_eq!(
            mode_of("postgres://db/orders?sslrootcert=system"),
            SslMode::VerifyFull
        );
    }

    #[test]
    fn a_question_mark_in_the_password_is_not_the_query_and_keys_may_be_encoded() {
        let (url, tls) = split("postgres://u:pa?ss@db/o?ssl%6Dode=disable").expect("valid");
        assert_eq!(
            (url.as_str(), tls.mode()),
            ("postgres://u:pa?ss@db/o", SslMode::Disable)
        );
        let (url, tls) = split("postgres://u:pa?ss@db/o").expect("valid");
        assert_eq!(
            (url.as_str(), tls.mode()),
            ("postgres://u:pa?ss@db/o", SslMode::Prefer)
        );
    }

    #[test]
    fn mistakes_are_named() {
        let error = |raw: &str| format!("{:#}", split(raw).err().expect(raw));
        assert!(
            error("postgres://db/o?sslmode=verify_full").contains("not one of disable"),
            "{}",
            error("postgres://db/o?sslmode=verify_full")
        );
        assert!(error("postgres://db/o?sslmode=allow").contains("prefer"));
        assert!(
            error("postgres://db/o?sslmode=require&sslrootcert=system").contains("verify-full")
        );
        assert!(
            error("postgres://db/o?sslmode=verify-ca&sslrootcert=system")
                .contains("needs sslmode=verify-full")
        );
        assert!(error("postgres://db/o?sslmode=verify-ca").contains("needs sslrootcert"));
        assert!(
            error("postgres://db/o?sslrootcert=/etc/ca.pem").contains("add sslmode=verify-full")
        );
        let missing = error("postgres://db/o?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
        assert!(missing.contains("/nonexistent/ca.pem"), "{missing}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("pg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("empty.pem");
        std::fs::write(&file, "not a certificate\n").expect("write");
        let raw = format!(
            "postgres://db/o?sslmode=verify-ca&sslrootcert={}",
            file.display()
        );
        let error = format!("{:#}", split(&raw).err().expect("refused"));
        assert!(error.contains("holds no PEM certificate"), "{error}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
