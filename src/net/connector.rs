//! Opens authenticated connections for one cluster: TCP with the socket
//! options, then TLS when configured, then the Kafka handshake (ApiVersions,
//! then SASL when configured), all of it after TCP within the connect timeout
//! so a security mismatch fails instead of hanging.

use std::fmt;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::connection::{Connection, ConnectionOptions};
use secrecy::zeroize::Zeroizing;
use secrecy::SecretString;

use super::sasl::{self, SaslOptions};
use super::socket::connect_tcp;
use super::tls::TlsConnector;
use super::NetError;

/// How one cluster's connections are opened. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Connector {
    options: ConnectionOptions,
    tls: Option<TlsConnector>,
    sasl: Option<SaslOptions>,
    token_command: Option<TokenCommand>,
}

/// A shell command whose trimmed standard output is the OAUTHBEARER token,
/// run before every connection so a refreshed token is picked up.
#[derive(Clone)]
pub struct TokenCommand {
    /// The config key, named in errors (`source.sasl.token_command`).
    pub key: String,
    /// Run with `sh -c`.
    pub command: String,
}

impl fmt::Debug for TokenCommand {
    // The command line may embed credentials of the token service.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCommand")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl TokenCommand {
    /// Runs the command (stdin empty, stderr passed through, killed after
    /// `timeout`) and returns its trimmed stdout. Errors give the exit
    /// status, never the output, which may hold the token.
    pub async fn run(&self, timeout: Duration) -> Result<SecretString, NetError> {
        let fail = |reason: String| NetError::TokenCommand {
            key: self.key.clone(),
            reason,
        };
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let output = match tokio::time::timeout(timeout, command.output()).await {
            Err(_) => {
                return Err(fail(format!(
                    "the command did not finish within {timeout:?}"
                )))
            }
            Ok(Err(e)) => return Err(fail(format!("could not run sh -c: {e}"))),
            Ok(Ok(output)) => output,
        };
        if !output.status.success() {
            return Err(fail(format!(
                "the command failed ({}); its output is not shown, as it may hold the token",
                output.status
            )));
        }
        // Wiped when dropped: only the trimmed copy in the secret remains.
        let stdout = Zeroizing::new(output.stdout);
        let token = std::str::from_utf8(&stdout)
            .map_err(|_| fail("the command printed something that is not UTF-8".into()))?
            .trim();
        if token.is_empty() {
            return Err(fail("the command printed no token".into()));
        }
        Ok(SecretString::from(token))
    }
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
            token_command: None,
        }
    }

    /// Adds TLS and SASL.
    pub fn secured(mut self, tls: Option<TlsConnector>, sasl: Option<SaslOptions>) -> Self {
        self.tls = tls;
        self.sasl = sasl;
        self
    }

    /// Takes the SASL token from `command`'s output, run before every
    /// connection, instead of the fixed one in the SASL options.
    pub fn with_token_command(mut self, command: Option<TokenCommand>) -> Self {
        self.token_command = command;
        self
    }

    /// The same connector, for connections whose requests may wait
    /// `timeout` for their answers.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.options.request_timeout = timeout;
        self
    }

    /// The connection settings.
    pub fn options(&self) -> &ConnectionOptions {
        &self.options
    }

    /// `error`, from the first request on a connection this connector just
    /// opened: a broker that hangs up on it when no SASL is configured has a
    /// SASL listener (it takes only ApiVersions before authentication), which
    /// is said plainly instead of as a dropped connection.
    pub fn explain_first_request_failure(&self, label: &str, error: NetError) -> NetError {
        let hung_up = |e: &NetError| matches!(e, NetError::PeerClosed { .. } | NetError::Io { .. });
        let closed = match &error {
            NetError::Closed { cause, .. } => cause.as_deref().is_some_and(hung_up),
            other => hung_up(other),
        };
        if self.sasl.is_some() || !closed {
            return error;
        }
        NetError::Sasl {
            label: label.to_owned(),
            failure: sasl::SaslFailure::ListenerExpectsSasl,
        }
    }

    /// Connects to `addr` (`host:port`), secures and authenticates the
    /// connection, and negotiates API versions.
    pub async fn connect(&self, addr: &str) -> Result<Connection, NetError> {
        let timeout = self.options.socket.connect_timeout;
        // A fresh token for every connection, fetched before the TCP connect.
        let fresh;
        let sasl = match (&self.sasl, &self.token_command) {
            (Some(sasl), Some(command)) => {
                fresh = SaslOptions {
                    password: command.run(timeout).await?,
                    ..sasl.clone()
                };
                Some(&fresh)
            }
            (sasl, _) => sasl.as_ref(),
        };
        let tcp = connect_tcp(addr, &self.options.socket).await?;
        let label = match tcp.peer_addr() {
            Ok(peer) if peer.to_string() != addr => format!("{addr} ({peer})"),
            _ => addr.to_owned(),
        };
        match &self.tls {
            Some(tls) => {
                let stream = tls.handshake(tcp, addr, timeout).await?;
                self.handshake(stream, sasl, addr, label, "")
                    .await
                    .map_err(|e| tls.refused_after_handshake(addr, &e).unwrap_or(e))
            }
            None => {
                self.handshake(
                    tcp,
                    sasl,
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
        sasl: Option<&SaslOptions>,
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
            if let Some(sasl) = sasl {
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

    use secrecy::ExposeSecret;
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
    async fn the_token_command_runs_before_every_connection_and_hides_its_output() {
        let command = |command: &str| TokenCommand {
            key: "source.sasl.token_command".into(),
            command: command.into(),
        };
        let token = command("printf '  eyJ.token  \\n'")
            .run(Duration::from_secs(5))
            .await
            .expect("token");
        assert_eq!(token.expose_secret(), "eyJ.token");

        let counter = std::env::temp_dir().join(format!("km-token-{}", std::process::id()));
        let _ = std::fs::remove_file(&counter);
        let failing = command(&format!(
            "echo run >> '{}'; echo leaked-s3cr3t; exit 3",
            counter.display()
        ));
        let connector = Connector::plain(options())
            .secured(
                None,
                Some(SaslOptions {
                    mechanism: sasl::Mechanism::OAuthBearer,
                    username: String::new(),
                    password: SecretString::from(""),
                }),
            )
            .with_token_command(Some(failing));
        for _ in 0..2 {
            let addr = peer(b"").await;
            let err = connector.connect(&addr).await.unwrap_err();
            assert!(matches!(err, NetError::TokenCommand { .. }), "{err:?}");
            assert!(err.is_security_failure() && err.is_retriable());
            let message = err.to_string();
            assert!(message.contains("source.sasl.token_command"), "{message}");
            assert!(message.contains("exit status: 3"), "{message}");
            assert!(!message.contains("leaked-s3cr3t"), "{message}");
        }
        let runs = std::fs::read_to_string(&counter).unwrap();
        assert_eq!(runs.lines().count(), 2, "run once per connection");
        let _ = std::fs::remove_file(counter);

        let err = command("sleep 5")
            .run(Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
        let err = command("true")
            .run(Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no token"), "{err}");
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
