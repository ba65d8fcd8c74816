//! TLS for broker connections, with rustls (no OpenSSL).
//!
//! A [`TlsConnector`] is built once per cluster from PEM files and wraps each
//! TCP stream the cluster opens before the Kafka handshake runs on it, so the
//! connection layer above stays generic over the stream type.
//!
//! The server certificate is verified by default: against the CA file when
//! one is given, otherwise against the operating system's trust store (where
//! operators install their private CAs). `insecure_skip_verify` turns the
//! check off, and every connection made that way logs a warning.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore};

use super::NetError;

/// What a cluster's TLS needs, as configured (paths, not contents).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CA certificates to trust; `None` trusts the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to the broker (mutual TLS).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The name checked against the broker certificate, and sent as SNI,
    /// instead of each broker's host.
    pub server_name: Option<String>,
    /// Accept any server certificate. For tests only; logged on every connect.
    pub insecure_skip_verify: bool,
}

/// Why a TLS setup could not be built from its files.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {reason}")]
pub struct TlsSetupError {
    /// Which setting, e.g. "CA file".
    pub what: &'static str,
    /// The file (never its contents).
    pub path: String,
    /// What went wrong.
    pub reason: String,
}

/// Wraps TCP streams in TLS for one cluster. Cheap to clone.
#[derive(Clone)]
pub struct TlsConnector {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
    insecure: bool,
    client_auth: bool,
}

impl fmt::Debug for TlsConnector {
    // By hand: the client key inside the rustls config is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .field("insecure_skip_verify", &self.insecure)
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Loads the files and builds the rustls client configuration.
    pub fn new(options: &TlsOptions) -> Result<Self, TlsSetupError> {
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError {
                what: "TLS",
                path: String::new(),
                reason: e.to_string(),
            })?;
        let builder = if options.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            builder.with_root_certificates(root_store(options.ca_file.as_deref())?)
        };
        let config = match (&options.cert_file, &options.key_file) {
            (Some(cert), Some(key)) => {
                let chain = load_certs("client certificate file", cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsSetupError {
                    what: "client key file",
                    path: key.display().to_string(),
                    reason: key_reason(key, &e),
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsSetupError {
                        what: "client certificate file",
                        path: cert.display().to_string(),
                        reason: format!("does not go with the key: {e}"),
                    })?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(path), None) | (None, Some(path)) => {
                return Err(TlsSetupError {
                    what: "client certificate or key file",
                    path: path.display().to_string(),
                    reason: "cert_file and key_file must be set together".into(),
                })
            }
        };
        let server_name = options
            .server_name
            .as_deref()
            .map(|name| {
                ServerName::try_from(name.to_owned()).map_err(|e| TlsSetupError {
                    what: "server name",
                    path: name.to_owned(),
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        Ok(TlsConnector {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
            insecure: options.insecure_skip_verify,
            client_auth: options.cert_file.is_some(),
        })
    }

    /// Runs the TLS handshake on `tcp`, connected to `addr` (`host:port`),
    /// within `timeout`.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        addr: &str,
        timeout: Duration,
    ) -> Result<TlsStream<TcpStream>, NetError> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(host_of(addr).to_owned()).map_err(|e| NetError::Tls {
                addr: addr.to_owned(),
                reason: format!("`{}` is not a valid TLS server name: {e}", host_of(addr)),
                retriable: false,
            })?,
        };
        if self.insecure {
            tracing::warn!(
                addr,
                "TLS server certificate NOT verified (insecure_skip_verify = true): \
                 anyone on the path can read and change this connection"
            );
        }
        match tokio::time::timeout(timeout, self.connector.connect(name, tcp)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(self.tls_error(addr, e)),
            Err(_) => Err(NetError::Tls {
                addr: addr.to_owned(),
                reason: format!("no TLS handshake within {timeout:?} (is the listener plaintext?)"),
                retriable: true,
            }),
        }
    }

    /// A failed handshake: a rustls verdict (bad certificate, alert) is a
    /// configuration problem and not retriable; a dropped socket may be a broker
    /// restart, so it is, with a hint at the usual cause.
    fn tls_error(&self, addr: &str, e: io::Error) -> NetError {
        let rustls_error = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .cloned();
        match rustls_error {
            Some(error) => NetError::Tls {
                addr: addr.to_owned(),
                reason: format!("{error}{}", self.hint(&error)),
                retriable: false,
            },
            None => {
                let hint = if e.kind() == io::ErrorKind::UnexpectedEof {
                    " (the broker closed the connection: is the listener plaintext?)"
                } else {
                    ""
                };
                NetError::Tls {
                    addr: addr.to_owned(),
                    reason: format!("{e}{hint}"),
                    retriable: true,
                }
            }
        }
    }

    /// What to change for the usual rustls verdicts. The alerts a broker
    /// sends about client certificates depend on whether one was sent.
    fn hint(&self, error: &rustls::Error) -> &'static str {
        use rustls::{AlertDescription, CertificateError};
        match error {
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                " (set tls.ca_file to the CA that signed the broker certificates)"
            }
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => " (the certificate does not name this host; tls.server_name can set the name to check)",
            rustls::Error::AlertReceived(
                AlertDescription::CertificateUnknown
                | AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateRevoked
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::HandshakeFailure,
            ) if self.client_auth => {
                ": the broker refused the client certificate of tls.cert_file (expired, or not signed by a CA \
                 in the broker's ssl.truststore); renew it, or have it signed by a CA the broker trusts"
            }
            rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired
                | AlertDescription::CertificateUnknown
                | AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::HandshakeFailure,
            ) => " (does the listener require a client certificate it trusts? set tls.cert_file and tls.key_file)",
            _ => "",
        }
    }

    /// A TLS failure surfacing after the handshake, on the first read: with TLS
    /// 1.3 the broker refuses a client certificate (or its absence) only then.
    /// The request may see the read's failure itself, or the closed
    /// connection it left behind, depending on which task notices first.
    pub(super) fn refused_after_handshake(&self, addr: &str, error: &NetError) -> Option<NetError> {
        let source = match error {
            NetError::Io { source, .. } => source,
            NetError::Closed {
                cause: Some(cause), ..
            } => match cause.as_ref() {
                NetError::Io { source, .. } => source,
                _ => return None,
            },
            _ => return None,
        };
        let rustls_error = source.get_ref()?.downcast_ref::<rustls::Error>()?;
        Some(NetError::Tls {
            addr: addr.to_owned(),
            reason: format!(
                "the broker refused the connection: {rustls_error}{}",
                self.hint(rustls_error)
            ),
            retriable: false,
        })
    }
}

/// The host part of `host:port` (`[v6]:port` too).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _port)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_certs("CA file", path)? {
                roots.add(cert).map_err(|e| TlsSetupError {
                    what: "CA file",
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::warn!(%error, "could not load some system CA certificates");
            }
            let (added, ignored) = roots.add_parsable_certificates(native.certs);
            tracing::debug!(added, ignored, "system CA certificates loaded");
            if roots.is_empty() {
                return Err(TlsSetupError {
                    what: "system trust store",
                    path: String::new(),
                    reason: "holds no CA certificates; set tls.ca_file".into(),
                });
            }
        }
    }
    Ok(roots)
}

fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let error = |reason: String| TlsSetupError {
        what,
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(pem_reason(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(error("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// Why a private key could not be read. An encrypted key has no PEM item
/// rustls reads, so without a look at its labels the reason would be a
/// puzzling "no PEM item".
fn key_reason(path: &Path, e: &rustls_pki_types::pem::Error) -> String {
    let encrypted = std::fs::read_to_string(path).is_ok_and(|text| {
        text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
            || text.contains("Proc-Type: 4,ENCRYPTED")
    });
    if encrypted {
        format!(
            "the private key is encrypted (password-protected), and kafka-mirror reads only \
             unencrypted keys: decrypt it with `openssl pkey -in {0} -out {0}.plain`, set \
             tls.key_file to the new file and make it readable by kafka-mirror's user only (chmod 600)",
            path.display()
        )
    } else {
        pem_reason(e)
    }
}

fn pem_reason(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            "holds no PEM item of the expected kind".into()
        }
        other => other.to_string(),
    }
}

/// Accepts any certificate, still checking the handshake signatures (so the
/// peer holds the key of the certificate it sent, whatever that is).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_taken_from_the_address() {
        assert_eq!(host_of("kafka-1.example.com:9093"), "kafka-1.example.com");
        assert_eq!(host_of("127.0.0.1:9093"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9093"), "::1");
    }

    #[test]
    fn missing_files_are_named() {
        let err = TlsConnector::new(&TlsOptions {
            ca_file: Some("/no/such/ca.pem".into()),
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("CA file /no/such/ca.pem"), "{err}");
        let err = TlsConnector::new(&TlsOptions {
            cert_file: Some("/tmp/cert.pem".into()),
            insecure_skip_verify: true,
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("must be set together"), "{err}");
    }

    #[test]
    fn a_refusal_after_the_handshake_is_named_however_the_request_sees_it() {
        let connector = TlsConnector::new(&TlsOptions {
            insecure_skip_verify: true,
            ..TlsOptions::default()
        })
        .expect("no files");
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        let io = NetError::Io {
            label: "b:1".into(),
            source: Arc::new(io::Error::new(io::ErrorKind::InvalidData, alert)),
        };
        let closed = NetError::Closed {
            label: "b:1".into(),
            cause: Some(Arc::new(io.clone())),
        };
        for seen in [io, closed] {
            let err = connector
                .refused_after_handshake("b:1", &seen)
                .unwrap_or_else(|| panic!("not recognised: {seen:?}"));
            assert!(err.is_security_failure(), "{err:?}");
            assert!(err.to_string().contains("tls.cert_file"), "{err}");
        }
    }

    #[test]
    fn an_encrypted_key_is_named_with_the_command_that_decrypts_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let issued = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        std::fs::write(&cert, issued.cert.pem()).expect("write cert");
        let options = TlsOptions {
            cert_file: Some(cert),
            key_file: Some(key.clone()),
            insecure_skip_verify: true,
            ..TlsOptions::default()
        };
        for encrypted in [
            // PKCS#8, as `openssl pkcs8 -topk8` and most tools write it.
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0w\n-----END ENCRYPTED PRIVATE KEY-----\n",
            // The legacy OpenSSL form.
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nMIIE\n-----END RSA PRIVATE KEY-----\n",
        ] {
            std::fs::write(&key, encrypted).expect("write key");
            let err = TlsConnector::new(&options).unwrap_err().to_string();
            assert!(
                err.contains(&key.display().to_string())
                    && err.contains("encrypted")
                    && err.contains("openssl pkey"),
                "{err}"
            );
        }
        std::fs::write(&key, "not a key").expect("write key");
        let err = TlsConnector::new(&options).unwrap_err().to_string();
        assert!(
            err.contains("no PEM item") && !err.contains("encrypted"),
            "{err}"
        );
    }
}
