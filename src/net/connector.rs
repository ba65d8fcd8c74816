//! Opens authenticated connections for one cluster: TCP with the socket
//! options, then TLS when configured, then the Kafka handshake (ApiVersions,
//! then SASL when configured), all of it after TCP within the connect timeout
//! so a security mismatch fails instead of hanging.

use tokio::io::{AsyncRead, AsyncWrite};

use super::connection::{Connection, ConnectionOptions};
use super::sasl::{self, SaslOptions};
use super::socket::connect_tcp;
use super::tls::{self, TlsConnector};
use super::NetError;

/// How one cluster's connections are opened. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Connector {
    options: ConnectionOptions,
    tls: Option<TlsConnector>,
    sasl: Option<SaslOptions>,
}

/// Sessions are renewed at this share of the broker's lifetime, as Kafka's
/// own clients do (they pick 85 to 95 %), so a new connection is ready well
/// before the broker ends the old session.
const REAUTH_AT: f64 = 0.85;

impl Connector {
    /// A connector for plaintext connections without authentication.
    pub fn plain(options: ConnectionOptions) -> Self {
        Connector {
            options,
            tls: None,
            sasl: None,
        }
    }

    /// Adds TLS and SASL.
    pub fn secured(mut self, tls: Option<TlsConnector>, sasl: Option<SaslOptions>) -> Self {
        self.tls = tls;
        self.sasl = sasl;
        self
    }

    /// The connection settings.
    pub fn options(&self) -> &ConnectionOptions {
        &self.options
    }

    /// Connects to `addr` (`host:port`), secures and authenticates the
    /// connection, and negotiates API versions.
    pub async fn connect(&self, addr: &str) -> Result<Connection, NetError> {
        let tcp = connect_tcp(addr, &self.options.socket).await?;
        let label = match tcp.peer_addr() {
            Ok(peer) if peer.to_string() != addr => format!("{addr} ({peer})"),
            _ => addr.to_owned(),
        };
        let timeout = self.options.socket.connect_timeout;
        match &self.tls {
            Some(tls) => {
                let stream = tls.handshake(tcp, addr, timeout).await?;
                self.handshake(stream, addr, label, "")
                    .await
                    .map_err(|e| tls::refused_after_handshake(addr, &e).unwrap_or(e))
            }
            None => {
                self.handshake(
                    tcp,
                    addr,
                    label,
                    " (is the listener TLS? then set tls.enabled = true)",
                )
                .await
            }
        }
    }

    /// ApiVersions then SASL, bounded by the connect timeout.
    async fn handshake<S>(
        &self,
        stream: S,
        addr: &str,
        label: String,
        plaintext_hint: &'static str,
    ) -> Result<Connection, NetError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let timeout = self.options.socket.connect_timeout;
        let handshake = async {
            let connection = Connection::from_stream(stream, &self.options, label)
                .await
                .map_err(|e| with_hint(e, addr, plaintext_hint))?;
            if let Some(sasl) = &self.sasl {
                if let Some(lifetime) = sasl::authenticate(&connection, sasl).await? {
                    tracing::debug!(%addr, ?lifetime, "SASL session lifetime set by the broker");
                    connection.expire_after(lifetime.mul_f64(REAUTH_AT));
                }
            }
            Ok(connection)
        };
        match tokio::time::timeout(timeout, handshake).await {
            Ok(result) => result,
            Err(_) => Err(NetError::HandshakeTimeout {
                addr: addr.to_owned(),
                timeout,
                hint: plaintext_hint,
            }),
        }
    }
}

/// A plaintext client talking to a TLS listener reads a TLS alert as a frame
/// size (refused before allocating) or sees the connection dropped; either
/// way, say what the likely cause is.
fn with_hint(error: NetError, addr: &str, hint: &'static str) -> NetError {
    match &error {
        NetError::FrameTooLarge { .. } | NetError::PeerClosed { .. } if !hint.is_empty() => {
            NetError::NotKafka {
                addr: addr.to_owned(),
                detail: error.to_string(),
                hint,
            }
        }
        _ => error,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::net::tls::TlsOptions;

    fn options() -> ConnectionOptions {
        let mut options = ConnectionOptions::default();
        options.socket.connect_timeout = Duration::from_millis(300);
        options
    }

    /// A listener that accepts, reads what it is sent, and answers `reply`
    /// (or nothing) without ever closing.
    async fn peer(reply: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            socket.write_all(reply).await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        addr
    }

    #[tokio::test]
    async fn a_silent_broker_fails_the_handshake_within_the_connect_timeout() {
        let addr = peer(b"").await;
        let err = Connector::plain(options())
            .connect(&addr)
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::HandshakeTimeout { .. }), "{err:?}");
        assert!(err.to_string().contains("is the listener TLS?"), "{err}");

        let addr = peer(b"").await;
        let tls = TlsConnector::new(&TlsOptions {
            insecure_skip_verify: true,
            ..TlsOptions::default()
        })
        .unwrap();
        let err = Connector::plain(options())
            .secured(Some(tls), None)
            .connect(&addr)
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::Tls { .. }), "{err:?}");
        assert!(err.to_string().contains("no TLS handshake within"), "{err}");
    }

    #[tokio::test]
    async fn tls_bytes_to_a_plaintext_client_are_not_allocated_and_explained() {
        // A TLS alert record: its first 4 bytes read as a 352 MB frame size.
        let addr = peer(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50]).await;
        let err = Connector::plain(options())
            .connect(&addr)
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::NotKafka { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("over the limit"), "{message}");
        assert!(message.contains("is the listener TLS?"), "{message}");
    }
}
