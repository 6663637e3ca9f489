//! TLS to PostgreSQL, asked for as libpq asks for it: the URL's `sslmode` and `sslrootcert`.
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (the default, as in libpq) | when the server offers it | not checked |
//! | `require` | always | not checked; checked as `verify-ca` when `sslrootcert` names a CA (as libpq does) |
//! | `verify-ca` | always | signed by a trusted CA |
//! | `verify-full` | always | signed by a trusted CA and naming the URL's host |
//!
//! `sslrootcert` is a PEM file of trusted CAs (such as Amazon RDS's bundle), or `system` for the
//! operating system's roots. The verifying modes use the system's roots when it is not given
//! (libpq would read `~/.postgresql/root.crt`, which a container does not have).
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, so both parameters are taken out
//! of the URL here; the rest of the URL goes to tokio-postgres, with its own `sslmode` set to
//! what the connection needs, and the certificate checks live in the rustls configuration.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The TLS connector every connection to a component's database goes through (pools,
/// migrations, cancel requests).
pub type PgConnector = MakeRustlsConnect;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
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
            "allow" => bail!("sslmode=allow is not supported; use prefer (TLS when offered) or disable"),
            other => bail!("sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"),
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
    connector: PgConnector,
}

impl PgTls {
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    pub fn connector(&self) -> &PgConnector {
        &self.connector
    }

    /// What tokio-postgres is told: it only negotiates; the checks are rustls's.
    pub fn driver_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL: the URL without them, and the
/// TLS settings they ask for (reading the CA file now, so a wrong path is a configuration error).
/// Key-value connection strings (`host=… dbname=…`) pass through as they are, with the default
/// settings: tokio-postgres reads their `sslmode` itself, `disable`, `prefer` or `require`.
pub fn split(raw: &str) -> anyhow::Result<(String, PgTls)> {
    let is_url = raw.starts_with("postgres://") || raw.starts_with("postgresql://");
    let (base, query) = match raw.split_once('?') {
        Some((base, query)) if is_url => (base, query),
        _ => return Ok((raw.to_owned(), settings(None, None)?)),
    };
    let (mut mode, mut roots, mut kept) = (None, None, Vec::new());
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned();
        match key {
            "sslmode" => mode = Some(SslMode::parse(&decoded())?),
            "sslrootcert" => roots = Some(decoded()),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, settings(mode, roots)?))
}

fn settings(mode: Option<SslMode>, roots: Option<String>) -> anyhow::Result<PgTls> {
    let roots = roots.map(|value| match value.as_str() {
        "system" => Roots::System,
        path => Roots::File(PathBuf::from(path)),
    });
    let mode = match (mode, &roots) {
        // As libpq 16: `sslrootcert=system` alone means verify-full, and a weaker mode with it is
        // a mistake (the system's roots vouch for names, not for a private CA).
        (None, Some(Roots::System)) => SslMode::VerifyFull,
        (Some(mode @ (SslMode::Disable | SslMode::Prefer | SslMode::Require)), Some(Roots::System)) => {
            bail!("sslrootcert=system needs sslmode=verify-full (or verify-ca), not {mode}")
        }
        (mode, _) => mode.unwrap_or(SslMode::Prefer),
    };
    let check = match (mode, roots) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None | Some(Roots::System)) => Check::None,
        (SslMode::Require | SslMode::VerifyCa, Some(roots)) => Check::Chain(trusted(&roots)?),
        (SslMode::VerifyCa, None) => Check::Chain(trusted(&Roots::System)?),
        (SslMode::VerifyFull, roots) => Check::Full(trusted(&roots.unwrap_or(Roots::System))?),
    };
    Ok(PgTls { mode, connector: MakeRustlsConnect::new(client_config(check)?) })
}

enum Check {
    None,
    Chain(RootCertStore),
    Full(RootCertStore),
}

fn trusted(roots: &Roots) -> anyhow::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("sslrootcert: cannot read CA certificates from {}", path.display()))?;
            for cert in certs {
                store.add(cert).with_context(|| format!("sslrootcert: {} holds a certificate that is not a CA", path.display()))?;
            }
            if store.is_empty() {
                bail!("sslrootcert: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display());
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

fn client_config(check: Check) -> anyhow::Result<ClientConfig> {
    // ring, as lapin's TLS: one provider in the binary.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let config = match check {
        Check::Full(store) => builder.with_root_certificates(store).with_no_client_auth(),
        Check::Chain(store) => {
            let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider).build()?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(ChainOnly(verifier))).with_no_client_auth()
        }
        Check::None => {
            let algorithms = provider.signature_verification_algorithms;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(Unchecked(algorithms))).with_no_client_auth()
        }
    };
    Ok(config)
}

/// `verify-ca`: the chain must lead to a trusted CA; the name in the certificate is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain first and the name last, so a wrong name means the chain held.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a CA: encrypted, but any certificate is taken, as libpq does.
/// The handshake's signatures are still checked, so the server holds the certificate's key.
#[derive(Debug)]
struct Unchecked(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Why a connection attempt failed at TLS, in words an operator can act on; `None` when the
/// error is not about TLS.
pub fn explain(err: &(dyn std::error::Error + 'static), mode: SslMode) -> Option<String> {
    let mut source = Some(err);
    while let Some(current) = source {
        let tls = current.downcast_ref::<rustls::Error>().or_else(|| {
            current.downcast_ref::<std::io::Error>()?.get_ref()?.downcast_ref::<rustls::Error>()
        });
        if let Some(tls) = tls {
            return Some(match tls {
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) => {
                    format!("the server's certificate does not name the URL's host (sslmode={mode}); connect by the name in the certificate, or use sslmode=verify-ca")
                }
                rustls::Error::InvalidCertificate(_) => format!(
                    "the server's certificate was refused (sslmode={mode}); name the CA that signed it with sslrootcert=/path/ca.pem"
                ),
                _ => format!("the TLS handshake failed (sslmode={mode})"),
            });
        }
        source = current.source();
    }
    let text = err.to_string();
    (text.contains("server does not support TLS"))
        .then(|| format!("the server does not offer TLS, which sslmode={mode} requires; turn ssl on in postgresql.conf"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(raw: &str) -> SslMode {
        split(raw).expect(raw).1.mode()
    }

    #[test]
    fn the_ssl_parameters_leave_the_url_and_the_rest_stays_as_written() {
        let (url, tls) = split("postgres://u:p%40ss@db:5432/orders?application_name=a%20b&sslmode=require&connect_timeout=3")
            .expect("valid");
        assert_eq!(url, "postgres://u:p%40ss@db:5432/orders?application_name=a%20b&connect_timeout=3");
        assert_eq!(tls.mode(), SslMode::Require);
        assert_eq!(tls.driver_mode(), tokio_postgres::config::SslMode::Require);
        let (url, _) = split("postgres://db/orders?sslmode=disable").expect("valid");
        assert_eq!(url, "postgres://db/orders");
    }

    #[test]
    fn the_default_is_libpqs_prefer() {
        assert_eq!(mode_of("postgres://db/orders"), SslMode::Prefer);
        assert_eq!(mode_of("host=db dbname=orders"), SslMode::Prefer);
        assert_eq!(split("postgres://db/orders").expect("valid").1.driver_mode(), tokio_postgres::config::SslMode::Prefer);
    }

    #[test]
    fn every_libpq_mode_is_read() {
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(mode_of(&format!("postgresql://db/orders?sslmode={mode}")).as_str(), mode);
        }
        assert_eq!(mode_of("postgres://db/orders?sslrootcert=system"), SslMode::VerifyFull);
    }

    #[test]
    fn mistakes_are_named() {
        let error = |raw: &str| format!("{:#}", split(raw).err().expect(raw));
        assert!(error("postgres://db/o?sslmode=verify_full").contains("not one of disable"), "{}", error("postgres://db/o?sslmode=verify_full"));
        assert!(error("postgres://db/o?sslmode=allow").contains("prefer"));
        assert!(error("postgres://db/o?sslmode=require&sslrootcert=system").contains("verify-full"));
        let missing = error("postgres://db/o?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
        assert!(missing.contains("/nonexistent/ca.pem"), "{missing}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("pg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("empty.pem");
        std::fs::write(&file, "not a certificate\n").expect("write");
        let raw = format!("postgres://db/o?sslmode=verify-ca&sslrootcert={}", file.display());
        let error = format!("{:#}", split(&raw).err().expect("refused"));
        assert!(error.contains("holds no PEM certificate"), "{error}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
