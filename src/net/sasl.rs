//! SASL authentication on a fresh connection: `SaslHandshake` (v1) names the
//! mechanism, then `SaslAuthenticate` requests carry its tokens ([KIP-152]).
//!
//! Mechanisms: PLAIN ([RFC 4616]), SCRAM-SHA-256/512 ([RFC 5802],
//! [RFC 7677]), whose server signature is verified so a fake broker that
//! does not know the credentials is caught, and OAUTHBEARER ([RFC 7628])
//! with a static token from the configuration (no token refresh). Kafka does not SASLprep
//! usernames or passwords, so neither do we.
//!
//! The password lives in a [`SecretString`], which has no `Display`, is
//! redacted in `Debug` and is wiped from memory when dropped; no error built
//! here quotes it.
//!
//! [KIP-152]: https://cwiki.apache.org/confluence/display/KAFKA/KIP-152+-+Improve+diagnostics+for+SASL+authentication+failures
//! [RFC 4616]: https://www.rfc-editor.org/rfc/rfc4616
//! [RFC 5802]: https://www.rfc-editor.org/rfc/rfc5802
//! [RFC 7677]: https://www.rfc-editor.org/rfc/rfc7677
//! [RFC 7628]: https://www.rfc-editor.org/rfc/rfc7628

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{ApiKey, SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256, Sha512};

use super::{Connection, NetError};

/// A SASL mechanism kafka-mirror speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// Username and password in the clear (use it over TLS only).
    Plain,
    /// SCRAM with SHA-256.
    ScramSha256,
    /// SCRAM with SHA-512.
    ScramSha512,
    /// A bearer token (RFC 7628), here a static one from the configuration.
    OAuthBearer,
}

impl Mechanism {
    /// The IANA name the broker knows it by.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// Parses an IANA name (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Mechanism::Plain,
            Mechanism::ScramSha256,
            Mechanism::ScramSha512,
            Mechanism::OAuthBearer,
        ]
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Credentials for one cluster.
#[derive(Clone)]
pub struct SaslOptions {
    /// The mechanism to use.
    pub mechanism: Mechanism,
    /// The user to authenticate as (empty for OAUTHBEARER).
    pub username: String,
    /// The password, or the OAUTHBEARER token; redacted in `Debug`.
    pub password: SecretString,
}

impl fmt::Debug for SaslOptions {
    // By hand, to print the password as the config's `Debug` does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslOptions")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// Why SASL authentication did not succeed. Never holds the password.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SaslFailure {
    /// The broker refused the credentials.
    #[error("authentication failed ({}): {message}", who(*.mechanism, .username))]
    AuthenticationFailed {
        /// The mechanism used.
        mechanism: Mechanism,
        /// The user.
        username: String,
        /// The broker's message, or the error name when it sent none.
        message: String,
    },
    /// The listener does not enable the configured mechanism.
    #[error("SASL mechanism {mechanism} is not enabled on this listener; it offers: {}", fmt_list(.enabled))]
    MechanismNotEnabled {
        /// The mechanism configured.
        mechanism: Mechanism,
        /// What the broker's SaslHandshake response lists.
        enabled: Vec<String>,
    },
    /// The listener is not a SASL one: the broker answers SaslHandshake
    /// with ILLEGAL_SASL_STATE.
    #[error("the listener does not use SASL (it is a PLAINTEXT or SSL listener) and refused {mechanism} authentication: \
             remove this cluster's `sasl` section, or connect to the broker's SASL_PLAINTEXT or SASL_SSL listener")]
    ListenerWithoutSasl {
        /// The mechanism configured.
        mechanism: Mechanism,
    },
    /// The broker closed a new connection at its first request after
    /// ApiVersions, and no SASL is configured: the listener expects SASL.
    #[error(
        "the broker closed the connection before authentication: its listener expects SASL \
             (SASL_PLAINTEXT or SASL_SSL); add this cluster's `sasl` section, or connect to the \
             broker's PLAINTEXT or SSL listener"
    )]
    ListenerExpectsSasl,
    /// The exchange broke down: an unexpected error code, a malformed
    /// server message, or a server signature that does not verify.
    #[error("SASL {mechanism} exchange failed: {reason}")]
    Protocol {
        /// The mechanism used.
        mechanism: Mechanism,
        /// What went wrong.
        reason: String,
    },
}

fn who(mechanism: Mechanism, username: &str) -> String {
    if username.is_empty() {
        mechanism.to_string()
    } else {
        format!("{mechanism} as user `{username}`")
    }
}

fn fmt_list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// Authenticates `connection`; run it after `ApiVersions` and before any
/// other request. Returns the session lifetime the broker set ([KIP-368]),
/// after which it closes the connection unless it is re-authenticated.
///
/// [KIP-368]: https://cwiki.apache.org/confluence/display/KAFKA/KIP-368%3A+Allow+SASL+Connections+to+Periodically+Re-Authenticate
pub async fn authenticate(
    connection: &Connection,
    options: &SaslOptions,
) -> Result<Option<Duration>, NetError> {
    let mechanism = options.mechanism;
    let fail = |failure: SaslFailure| NetError::Sasl {
        label: connection.label().to_owned(),
        failure,
    };
    let protocol = |reason: String| fail(SaslFailure::Protocol { mechanism, reason });

    // v0 sends raw tokens outside Kafka framing; only v1 wraps them in
    // SaslAuthenticate, which is what we speak.
    match connection.api_version(ApiKey::SaslHandshake) {
        Some(version) if version >= 1 => {}
        _ => {
            return Err(protocol(
                "the broker does not support SaslHandshake v1 (Kafka 1.0 or later is needed)"
                    .into(),
            ))
        }
    }
    let handshake = connection
        .send(
            SaslHandshakeRequest::default()
                .with_mechanism(StrBytes::from_static_str(mechanism.name())),
        )
        .await?;
    match handshake.error_code.err() {
        None => {}
        Some(ResponseError::UnsupportedSaslMechanism) => {
            return Err(fail(SaslFailure::MechanismNotEnabled {
                mechanism,
                enabled: handshake.mechanisms.iter().map(|m| m.to_string()).collect(),
            }))
        }
        Some(ResponseError::IllegalSaslState) => {
            return Err(fail(SaslFailure::ListenerWithoutSasl { mechanism }))
        }
        Some(error) => return Err(protocol(format!("SaslHandshake returned {error:?}"))),
    }

    let mut exchange = Exchange {
        connection,
        options,
        lifetime: None,
    };
    match mechanism {
        Mechanism::Plain => {
            let mut token = Vec::new();
            token.push(0);
            token.extend_from_slice(options.username.as_bytes());
            token.push(0);
            token.extend_from_slice(options.password.expose_secret().as_bytes());
            exchange.step(token).await?;
        }
        Mechanism::OAuthBearer => {
            // RFC 7628 section 3.1: gs2 header, then key=value pairs
            // separated by ^A.
            let token = format!(
                "n,,\x01auth=Bearer {}\x01\x01",
                options.password.expose_secret()
            );
            let challenge = exchange.step(token.into_bytes()).await?;
            if !challenge.is_empty() {
                // An error challenge (JSON with the status); the RFC has the
                // client answer ^A, and the broker then fails the exchange
                // with its message.
                let status = String::from_utf8_lossy(&challenge).into_owned();
                if let Err(mut error) = exchange.step(vec![0x01]).await {
                    if let NetError::Sasl {
                        failure: SaslFailure::AuthenticationFailed { message, .. },
                        ..
                    } = &mut error
                    {
                        if !message.contains(status.as_str()) {
                            message.push_str(&format!(" (token status: {status})"));
                        }
                    }
                    return Err(error);
                }
                return Err(protocol(format!(
                    "the broker sent an error challenge and then accepted: {status}"
                )));
            }
        }
        Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
            let mut scram = Scram::new(options, client_nonce().map_err(protocol)?);
            let server_first = exchange.step(scram.client_first().into_bytes()).await?;
            let client_final = scram
                .client_final(&String::from_utf8_lossy(&server_first))
                .map_err(protocol)?;
            let server_final = exchange.step(client_final.into_bytes()).await?;
            scram
                .verify_server_final(&String::from_utf8_lossy(&server_final))
                .map_err(protocol)?;
        }
    }
    Ok(exchange.lifetime)
}

struct Exchange<'a> {
    connection: &'a Connection,
    options: &'a SaslOptions,
    lifetime: Option<Duration>,
}

impl Exchange<'_> {
    /// Sends one token and returns the server's.
    async fn step(&mut self, token: Vec<u8>) -> Result<Bytes, NetError> {
        let response = self
            .connection
            .send(SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)))
            .await?;
        if let Some(error) = response.error_code.err() {
            let message = response
                .error_message
                .as_ref()
                .map(|m| m.to_string())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| format!("{error:?}"));
            let mechanism = self.options.mechanism;
            let failure = if error == ResponseError::SaslAuthenticationFailed {
                SaslFailure::AuthenticationFailed {
                    mechanism,
                    username: self.options.username.clone(),
                    message,
                }
            } else {
                SaslFailure::Protocol {
                    mechanism,
                    reason: format!("SaslAuthenticate returned {error:?}: {message}"),
                }
            };
            return Err(NetError::Sasl {
                label: self.connection.label().to_owned(),
                failure,
            });
        }
        if response.session_lifetime_ms > 0 {
            self.lifetime = Some(Duration::from_millis(response.session_lifetime_ms as u64));
        }
        Ok(response.auth_bytes)
    }
}

/// 24 bytes from the operating system's CSPRNG, base64 (never a comma).
fn client_nonce() -> Result<String, String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random nonce: {e}"))?;
    Ok(BASE64.encode(bytes))
}

/// Iterations below RFC 7677's minimum are refused (a downgrade), and a
/// ceiling keeps a hostile server from making us spin.
const MIN_ITERATIONS: u32 = 4096;
const MAX_ITERATIONS: u32 = 1_000_000;

/// The client side of one SCRAM exchange.
struct Scram<'a> {
    options: &'a SaslOptions,
    nonce: String,
    client_first_bare: String,
    /// The signature the server must send back, once computed.
    server_signature: Option<Vec<u8>>,
}

impl<'a> Scram<'a> {
    fn new(options: &'a SaslOptions, nonce: String) -> Self {
        let name = options.username.replace('=', "=3D").replace(',', "=2C");
        let client_first_bare = format!("n={name},r={nonce}");
        Scram {
            options,
            nonce,
            client_first_bare,
            server_signature: None,
        }
    }

    fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    fn client_final(&mut self, server_first: &str) -> Result<String, String> {
        let attr = |key: &str| {
            server_first
                .split(',')
                .find_map(|part| part.strip_prefix(key)?.strip_prefix('='))
        };
        if let Some(error) = attr("e") {
            return Err(format!("the server refused: {error}"));
        }
        let nonce = attr("r").ok_or("server-first message has no nonce")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("the server nonce does not extend ours".into());
        }
        let salt = BASE64
            .decode(attr("s").ok_or("server-first message has no salt")?)
            .map_err(|e| format!("server salt is not base64: {e}"))?;
        let iterations: u32 = attr("i")
            .and_then(|i| i.parse().ok())
            .ok_or("server-first message has no valid iteration count")?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(format!(
                "iteration count {iterations} is outside {MIN_ITERATIONS}..={MAX_ITERATIONS}"
            ));
        }
        let hash = Hash::of(self.options.mechanism);
        let salted = hash.pbkdf2(
            self.options.password.expose_secret().as_bytes(),
            &salt,
            iterations,
        );
        let client_key = hash.hmac(&salted, b"Client Key");
        let stored_key = hash.digest(&client_key);
        // "biws" is base64("n,,"): no channel binding, no authzid.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hash.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hash.hmac(&salted, b"Server Key");
        self.server_signature = Some(hash.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)))
    }

    fn verify_server_final(&self, server_final: &str) -> Result<(), String> {
        if let Some(error) = server_final.strip_prefix("e=") {
            return Err(format!("the server refused: {error}"));
        }
        let expected = self
            .server_signature
            .as_ref()
            .ok_or("server-final message before client-final")?;
        let verifier = server_final
            .split(',')
            .find_map(|part| part.strip_prefix("v="))
            .ok_or("server-final message has no verifier")?;
        let received = BASE64
            .decode(verifier)
            .map_err(|e| format!("server verifier is not base64: {e}"))?;
        // Constant time is not needed for a value the server sends us, but
        // the comparison is exact: any difference means a server that does
        // not know the credentials.
        if received != *expected {
            return Err("the server signature does not verify: the broker does not hold these credentials (a spoofed broker?)".into());
        }
        Ok(())
    }
}

/// The hash of a SCRAM mechanism.
#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    fn of(mechanism: Mechanism) -> Self {
        match mechanism {
            Mechanism::ScramSha512 => Hash::Sha512,
            Mechanism::Plain | Mechanism::ScramSha256 | Mechanism::OAuthBearer => Hash::Sha256,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length, so `new_from_slice` cannot fail.
        match self {
            Hash::Sha256 => Hmac::<Sha256>::new_from_slice(key)
                .map(|mac| mac.chain_update(data).finalize().into_bytes().to_vec())
                .unwrap_or_default(),
            Hash::Sha512 => Hmac::<Sha512>::new_from_slice(key)
                .map(|mac| mac.chain_update(data).finalize().into_bytes().to_vec())
                .unwrap_or_default(),
        }
    }

    fn pbkdf2(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Hash::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations).to_vec()
            }
            Hash::Sha512 => {
                pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password, salt, iterations).to_vec()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(mechanism: Mechanism, username: &str, password: &str) -> SaslOptions {
        SaslOptions {
            mechanism,
            username: username.into(),
            password: SecretString::from(password),
        }
    }

    /// The SCRAM-SHA-256 example of RFC 7677, section 3.
    #[test]
    fn scram_sha256_matches_rfc_7677() {
        let options = options(Mechanism::ScramSha256, "user", "pencil");
        let mut scram = Scram::new(&options, "rOprNGfwEbeRWgbNEkqO".into());
        assert_eq!(scram.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let client_final = scram
            .client_final(
                "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            )
            .unwrap();
        assert_eq!(
            client_final,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        scram
            .verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        let err = scram
            .verify_server_final("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
    }

    #[test]
    fn scram_refuses_bad_server_first_messages() {
        let options = options(Mechanism::ScramSha512, "a=b,c", "pw");
        let mut scram = Scram::new(&options, "abc".into());
        assert_eq!(scram.client_first(), "n,,n=a=3Db=2Cc,r=abc");
        for (server_first, expected) in [
            ("r=xyz,s=AAAA,i=4096", "does not extend"),
            ("r=abc,s=AAAA,i=4096", "does not extend"),
            ("r=abcd,s=AAAA,i=10", "iteration count 10"),
            ("r=abcd,s=!!,i=4096", "not base64"),
            ("r=abcd,s=AAAA", "iteration"),
            ("e=unknown-user", "refused"),
        ] {
            let err = scram.client_final(server_first).unwrap_err();
            assert!(err.contains(expected), "{server_first}: {err}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let options = options(Mechanism::Plain, "mirror", "hunter2-very-secret");
        let debug = format!("{options:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(client_nonce().unwrap(), client_nonce().unwrap());
    }
}
