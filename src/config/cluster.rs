//! One cluster's settings checked, and turned into the [`Connector`] that
//! opens its connections: socket options and timeouts, TLS files, the SASL
//! mechanism and where its secret comes from (the config file itself, an
//! environment variable, a file of its own, or a command run before every
//! connection).
//! Errors name the key, the variable or the file, never the secret.

use std::collections::BTreeSet;
use std::env::VarError;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use secrecy::zeroize::Zeroizing;
use secrecy::SecretString;

use super::schema::{
    default_client_id, default_connect_timeout_ms, default_max_frame_bytes,
    default_request_timeout_ms,
};
use super::{invalid, ClusterConfig, ConfigError, SaslConfig};
use crate::net::sasl::{Mechanism, SaslOptions};
use crate::net::tls::{TlsConnector, TlsOptions};
use crate::net::{ConnectionOptions, Connector, FrameMemory, SocketOptions, TokenCommand};

impl ClusterConfig {
    /// A cluster reached through these bootstrap servers, every other setting at its default.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        ClusterConfig {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: default_client_id(),
            send_buffer_bytes: 0,
            receive_buffer_bytes: 0,
            connect_timeout_ms: default_connect_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            max_frame_bytes: default_max_frame_bytes(),
            tls: None,
            sasl: None,
        }
    }

    /// The bootstrap servers as a list, in the order given.
    pub fn bootstrap_list(&self) -> Vec<String> {
        self.bootstrap_servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The connection settings the network layer takes.
    pub fn connection_options(&self) -> ConnectionOptions {
        ConnectionOptions {
            client_id: self.client_id.clone(),
            socket: SocketOptions {
                send_buffer_bytes: (self.send_buffer_bytes > 0).then_some(self.send_buffer_bytes),
                recv_buffer_bytes: (self.receive_buffer_bytes > 0)
                    .then_some(self.receive_buffer_bytes),
                connect_timeout: Duration::from_millis(self.connect_timeout_ms),
                ..SocketOptions::default()
            },
            max_frame_bytes: self.max_frame_bytes,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            frame_memory: FrameMemory::default(),
        }
    }

    /// How this cluster's connections are opened: reads the TLS files and
    /// the password. `side` is `source` or `target`, for error messages.
    pub fn connector(&self, side: &str) -> Result<Connector, ConfigError> {
        for warning in self.security_warnings(side) {
            warn_once(warning);
        }
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: format!("{side}.{key}"),
            reason,
        };
        let tls = match &self.tls {
            Some(tls) if tls.enabled => Some(
                TlsConnector::new(&TlsOptions {
                    ca_file: tls.ca_file.clone(),
                    cert_file: tls.cert_file.clone(),
                    key_file: tls.key_file.clone(),
                    server_name: tls.server_name.clone(),
                    insecure_skip_verify: tls.insecure_skip_verify,
                })
                .map_err(|e| invalid("tls", e.to_string()))?,
            ),
            _ => None,
        };
        let sasl = match &self.sasl {
            None => None,
            Some(sasl) => Some(SaslOptions {
                mechanism: sasl_mechanism(sasl).map_err(|r| invalid("sasl.mechanism", r))?,
                username: sasl.username.clone(),
                password: match sasl.token_command {
                    // Run before every connection, by the connector.
                    Some(_) => SecretString::default(),
                    None => sasl.resolve_secret(side)?,
                },
            }),
        };
        let token_command = self
            .sasl
            .as_ref()
            .and_then(|sasl| sasl.token_command.clone())
            .map(|command| TokenCommand {
                key: format!("{side}.sasl.token_command"),
                command,
            });
        Ok(Connector::plain(self.connection_options())
            .secured(tls, sasl)
            .with_token_command(token_command))
    }

    /// What is weak in this cluster's security, as ssh warns about it: a
    /// password sent in clear (SASL PLAIN without TLS), and a key or
    /// secret file other users may read. Warned about, not refused: a lab
    /// cluster may run so on purpose.
    pub fn security_warnings(&self, side: &str) -> Vec<String> {
        let mut warnings = Vec::new();
        let tls = self.tls.as_ref().is_some_and(|tls| tls.enabled);
        if let Some(sasl) = &self.sasl {
            if !tls && Mechanism::from_name(&sasl.mechanism) == Some(Mechanism::Plain) {
                warnings.push(format!(
                    "{side}: SASL PLAIN over a plaintext connection sends the password in clear \
                     to anyone on the network path; enable TLS ({side}.tls) or use SCRAM"
                ));
            }
        }
        let files = [
            (
                "tls.key_file",
                self.tls.as_ref().and_then(|t| t.key_file.as_ref()),
            ),
            (
                "sasl.password_file",
                self.sasl.as_ref().and_then(|s| s.password_file.as_ref()),
            ),
            (
                "sasl.token_file",
                self.sasl.as_ref().and_then(|s| s.token_file.as_ref()),
            ),
        ];
        for (key, path) in files {
            if let Some(path) = path.filter(|path| readable_by_others(path)) {
                warnings.push(format!(
                    "{side}.{key}: {} can be read by other users; make it readable by \
                     kafka-mirror's user only (chmod 600)",
                    path.display()
                ));
            }
        }
        warnings
    }

    /// Checks what needs no network or file access; `side` (`source`,
    /// `target` or `clusters.<alias>`) prefixes the keys in errors.
    pub fn validate(&self, side: &str) -> Result<(), ConfigError> {
        let key = format!("{side}.bootstrap_servers");
        let servers = self.bootstrap_list();
        if servers.is_empty() {
            return invalid(&key, "needs at least one host:port".into());
        }
        for server in servers {
            let port_ok = server
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return invalid(&key, format!("`{server}` is not host:port"));
            }
        }
        if self.max_frame_bytes < 1024 * 1024 {
            return invalid(
                &format!("{side}.max_frame_bytes"),
                "must be at least 1 MiB".into(),
            );
        }
        self.validate_security(side)
    }

    /// Checks the TLS and SASL keys that need no file access.
    fn validate_security(&self, side: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| {
            Err(ConfigError::Invalid {
                key: format!("{side}.{key}"),
                reason: reason.to_owned(),
            })
        };
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return invalid(
                    "tls.cert_file",
                    "cert_file and key_file must be set together",
                );
            }
            if tls.insecure_skip_verify && tls.ca_file.is_some() {
                return invalid(
                    "tls.insecure_skip_verify",
                    "contradicts tls.ca_file: a CA file is only used to verify",
                );
            }
        }
        if let Some(sasl) = &self.sasl {
            let mechanism = match sasl_mechanism(sasl) {
                Ok(mechanism) => mechanism,
                Err(reason) => return invalid("sasl.mechanism", &reason),
            };
            let passwords = [
                sasl.password.is_some(),
                sasl.password_env.is_some(),
                sasl.password_file.is_some(),
            ];
            let tokens = [
                sasl.token.is_some(),
                sasl.token_env.is_some(),
                sasl.token_file.is_some(),
                sasl.token_command.is_some(),
            ];
            let count = |set: &[bool]| set.iter().filter(|set| **set).count();
            if mechanism == Mechanism::OAuthBearer {
                if !sasl.username.is_empty() || count(&passwords) != 0 {
                    return invalid(
                        "sasl.username",
                        "OAUTHBEARER takes a token (token, token_env, token_file or token_command), no username or password",
                    );
                }
                if sasl
                    .token_command
                    .as_ref()
                    .is_some_and(|c| c.trim().is_empty())
                {
                    return invalid("sasl.token_command", "must be a non-empty command");
                }
                if count(&tokens) != 1 {
                    return invalid(
                        "sasl.token",
                        "set exactly one of token, token_env, token_file, token_command",
                    );
                }
            } else {
                if sasl.username.is_empty() {
                    return invalid("sasl.username", "must be non-empty");
                }
                if count(&tokens) != 0 {
                    return invalid("sasl.token", "only OAUTHBEARER takes a token");
                }
                if count(&passwords) != 1 {
                    return invalid(
                        "sasl.password",
                        "set exactly one of password, password_env, password_file",
                    );
                }
            }
        }
        Ok(())
    }
}

/// Logs `warning` at warn level the first time it is seen in this process:
/// a cluster's connector is built once per flow it is part of.
fn warn_once(warning: String) {
    static WARNED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let first = WARNED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(warning.clone());
    if first {
        tracing::warn!("{warning}");
    }
}

/// Whether a group or other bit is set on `path`'s mode, as ssh checks a
/// private key (`mode & 0o077 != 0`). False when it cannot be read (the
/// read itself reports that) and on systems without Unix modes.
fn readable_by_others(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & 0o077 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

fn sasl_mechanism(sasl: &SaslConfig) -> Result<Mechanism, String> {
    Mechanism::from_name(&sasl.mechanism).ok_or_else(|| {
        format!(
            "`{}` is not PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER",
            sasl.mechanism
        )
    })
}

impl SaslConfig {
    /// The password, or the OAUTHBEARER token, from wherever it is
    /// configured. Errors name the key, the variable or the file, never the value.
    fn resolve_secret(&self, side: &str) -> Result<SecretString, ConfigError> {
        let (kind, value, env, file) =
            if self.token.is_some() || self.token_env.is_some() || self.token_file.is_some() {
                ("token", &self.token, &self.token_env, &self.token_file)
            } else {
                (
                    "password",
                    &self.password,
                    &self.password_env,
                    &self.password_file,
                )
            };
        let invalid = |key: String, reason: String| ConfigError::Invalid {
            key: format!("{side}.sasl.{key}"),
            reason,
        };
        if let Some(secret) = value {
            return Ok(secret.clone());
        }
        if let Some(var) = env {
            // Wiped when dropped, as the file's text below; the secret keeps a copy.
            let value = std::env::var(var).map(Zeroizing::new).map_err(|e| {
                let reason = match e {
                    VarError::NotPresent => e.to_string(),
                    // Its `Display` would quote the value.
                    VarError::NotUnicode(_) => "not valid unicode".to_owned(),
                };
                invalid(
                    format!("{kind}_env"),
                    format!("environment variable {var}: {reason}"),
                )
            })?;
            return Ok(SecretString::from(value.as_str()));
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map(Zeroizing::new)
                .map_err(|e| {
                    invalid(
                        format!("{kind}_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
            let secret = text.strip_suffix('\n').unwrap_or(&text);
            let secret = secret.strip_suffix('\r').unwrap_or(secret);
            return Ok(SecretString::from(secret));
        }
        Err(invalid(
            kind.to_owned(),
            format!("set one of {kind}, {kind}_env, {kind}_file"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use crate::config::tests::MINIMAL;
    use crate::config::MirrorConfig;

    #[test]
    fn security_sections_parse_and_never_show_the_password() {
        let text = format!(
            "{MINIMAL}\n[source.tls]\nca_file = \"/etc/ca.pem\"\n\
             [source.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"mirror\"\npassword = \"s3cr3t-pw-123\"\n"
        );
        let config = MirrorConfig::from_toml(&text).expect("valid");
        let tls = config.source.as_ref().unwrap().tls.as_ref().expect("tls");
        assert!(tls.enabled && !tls.insecure_skip_verify);
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cr3t-pw-123"), "{debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
        // The CA file is read when connecting; its absence names the key and the file.
        let err = config
            .source
            .as_ref()
            .unwrap()
            .connector("source")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("source.tls") && err.contains("/etc/ca.pem"),
            "{err}"
        );
        assert!(!err.contains("s3cr3t-pw-123"), "{err}");
    }

    #[test]
    fn password_sources_are_exclusive_and_named() {
        let sasl = |extra: &str| {
            format!("{MINIMAL}\n[target.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\n{extra}\n")
        };
        let err = MirrorConfig::from_toml(&sasl("password = \"a\"\npassword_env = \"B\""))
            .expect_err("two sources");
        assert!(err.to_string().contains("target.sasl.password"), "{err}");
        let err = MirrorConfig::from_toml(&sasl("")).expect_err("none");
        assert!(err.to_string().contains("exactly one"), "{err}");
        let err = MirrorConfig::from_toml(&format!(
            "{MINIMAL}\n[target.sasl]\nmechanism = \"GSSAPI\"\nusername = \"u\"\npassword = \"p\"\n"
        ))
        .expect_err("mechanism");
        assert!(err.to_string().contains("target.sasl.mechanism"), "{err}");
        let config =
            MirrorConfig::from_toml(&sasl("password_env = \"KAFKA_MIRROR_TEST_UNSET_VARIABLE\""))
                .expect("valid");
        let err = config
            .target
            .as_ref()
            .unwrap()
            .connector("target")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("target.sasl.password_env")
                && err.contains("KAFKA_MIRROR_TEST_UNSET_VARIABLE"),
            "{err}"
        );
        let file = std::env::temp_dir().join(format!("km-pw-{}", std::process::id()));
        std::fs::write(&file, "from-file\n").unwrap();
        let config =
            MirrorConfig::from_toml(&sasl(&format!("password_file = \"{}\"", file.display())))
                .expect("valid");
        let password = config
            .target
            .as_ref()
            .unwrap()
            .sasl
            .as_ref()
            .unwrap()
            .resolve_secret("target");
        assert_eq!(password.unwrap().expose_secret(), "from-file");
        let _ = std::fs::remove_file(file);
        let err = MirrorConfig::from_toml(&format!("{MINIMAL}\n[source.tls]\ncafile = \"x\"\n"))
            .expect_err("unknown");
        assert!(err.to_string().contains("unknown field `cafile`"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn weak_security_is_warned_about() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let file = |name: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, "x").expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            path.display().to_string()
        };
        let (open_key, private_key) = (file("open.key", 0o644), file("private.key", 0o600));
        let (group_pw, private_pw) = (file("group.pw", 0o640), file("private.pw", 0o400));
        let warnings = |tls: &str, sasl: &str| {
            let config =
                MirrorConfig::from_toml(&format!("{MINIMAL}\n{tls}\n{sasl}\n")).expect("valid");
            config.source.as_ref().unwrap().security_warnings("source")
        };
        let plain = |password: &str| {
            format!("[source.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\n{password}")
        };
        let tls = |key: &str| {
            format!("[source.tls]\ncert_file = \"{key}\"\nkey_file = \"{key}\"\ninsecure_skip_verify = true")
        };

        let w = warnings("", &plain("password = \"p\""));
        assert!(
            w.len() == 1 && w[0].contains("SASL PLAIN over a plaintext connection"),
            "{w:?}"
        );
        assert!(warnings(&tls(&private_key), &plain("password = \"p\"")).is_empty());
        let scram = plain("password = \"p\"").replace("PLAIN", "SCRAM-SHA-256");
        assert!(warnings("", &scram).is_empty());

        let w = warnings(
            &tls(&open_key),
            &plain(&format!("password_file = \"{group_pw}\"")),
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("source.tls.key_file") && w[0].contains(&open_key),
            "{w:?}"
        );
        assert!(
            w[1].starts_with("source.sasl.password_file") && w[1].contains("chmod 600"),
            "{w:?}"
        );
        let w = warnings(
            &tls(&private_key),
            &plain(&format!("password_file = \"{private_pw}\"")),
        );
        assert!(w.is_empty(), "{w:?}");
        let token =
            format!("[source.sasl]\nmechanism = \"OAUTHBEARER\"\ntoken_file = \"{group_pw}\"");
        let w = warnings("", &token);
        assert!(
            w.len() == 1 && w[0].starts_with("source.sasl.token_file"),
            "{w:?}"
        );
    }

    #[test]
    fn skipping_verification_with_a_ca_file_is_refused() {
        let err = MirrorConfig::from_toml(&format!(
            "{MINIMAL}\n[source.tls]\nca_file = \"/etc/ca.pem\"\ninsecure_skip_verify = true\n"
        ))
        .expect_err("contradiction");
        assert!(
            err.to_string()
                .contains("config key `source.tls.insecure_skip_verify`: contradicts tls.ca_file"),
            "{err}"
        );
    }

    #[test]
    fn oauthbearer_takes_a_token_and_nothing_else() {
        let sasl = |body: &str| {
            MirrorConfig::from_toml(&format!(
                "{MINIMAL}\n[source.sasl]\nmechanism = \"OAUTHBEARER\"\n{body}\n"
            ))
        };
        let config = sasl("token = \"eyJhbGciOiJub25lIn0.e30.\"").expect("valid");
        assert!(!format!("{config:?}").contains("eyJhbGci"));
        let password = config
            .source
            .as_ref()
            .unwrap()
            .sasl
            .as_ref()
            .unwrap()
            .resolve_secret("source");
        assert_eq!(
            password.unwrap().expose_secret(),
            "eyJhbGciOiJub25lIn0.e30."
        );
        for (body, key) in [
            ("", "source.sasl.token"),
            ("token = \"t\"\nusername = \"u\"", "source.sasl.username"),
            ("password = \"p\"", "source.sasl.username"),
        ] {
            let err = sasl(body).expect_err(body).to_string();
            assert!(err.contains(key), "{body}: {err}");
        }
        let err = MirrorConfig::from_toml(&format!(
            "{MINIMAL}\n[source.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"p\"\ntoken = \"t\"\n"
        ))
        .expect_err("token with PLAIN")
        .to_string();
        assert!(err.contains("only OAUTHBEARER takes a token"), "{err}");
    }

    #[test]
    fn a_token_command_is_one_of_the_token_sources() {
        let sasl = |body: &str| {
            MirrorConfig::from_toml(&format!(
                "{MINIMAL}\n[source.sasl]\nmechanism = \"OAUTHBEARER\"\n{body}\n"
            ))
        };
        let config = sasl("token_command = \"get-token --secret=hunter2\"").expect("valid");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        let connector = config
            .source
            .as_ref()
            .unwrap()
            .connector("source")
            .expect("no file to read");
        assert!(!format!("{connector:?}").contains("hunter2"));
        for body in [
            "token_command = \"a\"\ntoken = \"t\"",
            "token_command = \"a\"\ntoken_file = \"/t\"",
        ] {
            let err = sasl(body).expect_err(body).to_string();
            assert!(
                err.contains("source.sasl.token") && err.contains("exactly one"),
                "{err}"
            );
        }
        let err = sasl("token_command = \" \"")
            .expect_err("empty")
            .to_string();
        assert!(err.contains("source.sasl.token_command"), "{err}");
        let err = MirrorConfig::from_toml(&format!(
            "{MINIMAL}\n[source.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"p\"\ntoken_command = \"t\"\n"
        ))
        .expect_err("token command with PLAIN")
        .to_string();
        assert!(err.contains("only OAUTHBEARER takes a token"), "{err}");
    }
}
