//! The rustls configuration for each kind of check, with the certificate checks rustls does not
//! ship: the chain but not the name (`verify-ca`), or neither (`prefer`, `require` without a
//! CA), as libpq does.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// What a connection checks of the server's certificate.
pub enum Check {
    /// Nothing (the handshake's signatures still).
    None,
    /// Signed by one of these CAs; any name.
    Chain(RootCertStore),
    /// Signed by one of these CAs and made out to the host connected to.
    Full(RootCertStore),
}

pub fn client_config(check: Check) -> anyhow::Result<ClientConfig> {
    // ring, as lapin's TLS: one provider in the binary.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder =
        ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?;
    let roots = match check {
        Check::Full(store) => {
            return Ok(builder.with_root_certificates(store).with_no_client_auth());
        }
        Check::Chain(store) => Some(store),
        Check::None => None,
    };
    let verifier = Arc::new(Libpq { roots, algorithms });
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The checks libpq makes that rustls's own verifier does not: `verify-ca` (with `roots`), the
/// chain must lead to a trusted CA and the name is not looked at; `prefer` and `require` without
/// a CA (no `roots`), any certificate is taken. Either way the handshake's signatures are checked,
/// so the server holds the key of the certificate it sent.
#[derive(Debug)]
struct Libpq {
    roots: Option<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Libpq {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
