//! Kafka client `.properties` files: read with the `java-properties` crate,
//! and the mapping of the client keys kafka-mirror understands onto a
//! [`ClusterConfig`].
//!
//! `kafka-mirror run --source-properties FILE` and `--target-properties FILE`
//! use it, so the files operators already give Kafka's Java clients (and
//! MirrorMaker) work unchanged. The mapping is strict where security is at
//! stake: a TLS or SASL key that cannot be honoured (a JKS trust store,
//! GSSAPI, turning hostname verification off) is an error naming the key,
//! never silently ignored; consumer and producer tuning keys that mean nothing
//! to a batch forwarder (`group.id`, `acks`, `linger.ms`, ...) are reported
//! once each at warn level and ignored. Secrets (the JAAS password) go into a
//! [`SecretString`] and never reach a log line, an error or `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use encoding_rs::UTF_8;
use java_properties::{LineContent, PropertiesIter};
use secrecy::{ExposeSecret, SecretString};

use super::{ClusterConfig, ConfigError, SaslConfig, TlsConfig};

/// The entries of a properties file; a later duplicate key wins, as in Java.
///
/// `Debug` prints the keys only: values may be passwords.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Properties {
    entries: BTreeMap<String, Entry>,
}

/// One key's value, and the line it starts on, for errors (which never
/// quote the value).
#[derive(Clone, PartialEq, Eq)]
struct Entry {
    value: String,
    line: usize,
}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.entries.keys()).finish()
    }
}

impl Properties {
    /// Parses Java properties text: `key=value`, `key: value` or `key value`;
    /// `#` and `!` comment lines; a line ending in an odd number of
    /// backslashes continues on the next (whose leading blanks are dropped);
    /// `\t`, `\n`, `\r`, `\f`, `\uXXXX` and `\` before any other character
    /// (which stands for itself) in keys and values. A malformed `\uXXXX` is
    /// an error giving the line, as in Java.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_named(text, "<text>")
    }

    /// Reads and parses a file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse_named(&text, &path.display().to_string())
    }

    /// [`Properties::parse`], naming the file `path` in errors.
    fn parse_named(text: &str, path: &str) -> Result<Self, ConfigError> {
        let mut entries = BTreeMap::new();
        // The text was read as UTF-8 (the crate's default is ISO-8859-1, as
        // Java's). The crate drops a last line that ends in a continuation
        // backslash when no newline follows it, where Java keeps it: hence
        // the newline added.
        for line in PropertiesIter::new_with_encoding(text.as_bytes().chain(&b"\n"[..]), UTF_8) {
            // The crate's messages name the fault and the line, never the text.
            let line = line.map_err(|e| ConfigError::PropertiesSyntax {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            let number = line.line_number();
            if let LineContent::KVPair(key, value) = line.consume_content() {
                entries.insert(
                    key,
                    Entry {
                        value,
                        line: number,
                    },
                );
            }
        }
        Ok(Properties { entries })
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|entry| entry.value.as_str())
    }

    /// The line `key` is set on, if it is.
    pub fn line(&self, key: &str) -> Option<usize> {
        self.entries.get(key).map(|entry| entry.line)
    }

    /// Every key, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The entries whose key starts with `prefix`, with the prefix removed:
    /// MirrorMaker 2's `<alias>.bootstrap.servers` becomes `bootstrap.servers`.
    pub fn with_prefix(&self, prefix: &str) -> Properties {
        let entries = self
            .entries
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_owned(), v.clone())))
            .collect();
        Properties { entries }
    }

    /// The entries for which `keep` holds.
    pub fn filtered(&self, keep: impl Fn(&str) -> bool) -> Properties {
        let entries = self
            .entries
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Properties { entries }
    }

    /// These entries with `other`'s laid over them.
    pub fn overlaid(&self, other: &Properties) -> Properties {
        let mut entries = self.entries.clone();
        entries.extend(other.entries.iter().map(|(k, v)| (k.clone(), v.clone())));
        Properties { entries }
    }
}

/// Whether [`apply`] reads `key` as a setting of the connection to a cluster
/// (its address, identity, TLS or SASL), as opposed to client tuning.
pub fn is_connection_key(key: &str) -> bool {
    MAPPED_KEYS.contains(&key)
        || key.starts_with("ssl.")
        || key.starts_with("sasl.")
        || key.starts_with("security.")
}

/// Keys a batch forwarder has no use for and can ignore without weakening
/// anything: consumer, producer and client tuning. Warned about once each.
const IGNORED_PREFIXES: &[&str] = &[
    "group.",
    "auto.",
    "enable.auto.commit",
    "fetch.",
    "max.poll.",
    "max.partition.fetch.bytes",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "isolation.level",
    "partition.assignment.strategy",
    "key.",
    "value.",
    "acks",
    "linger.ms",
    "batch.size",
    "buffer.memory",
    "compression.",
    "retries",
    "retry.backoff.",
    "reconnect.backoff.",
    "delivery.timeout.ms",
    "max.in.flight.requests.per.connection",
    "max.request.size",
    "max.block.ms",
    "enable.idempotence",
    "transactional.id",
    "transaction.timeout.ms",
    "metadata.",
    "metric.",
    "metrics.",
    "client.dns.lookup",
    "client.rack",
    "connections.max.idle.ms",
    "default.api.timeout.ms",
    "interceptor.classes",
    "socket.connection.setup.timeout.max.ms",
    "allow.auto.create.topics",
    "check.crcs",
    "exclude.internal.topics",
];

/// Security keys that change nothing kafka-mirror does (its TLS stack
/// already refuses anything older than TLS 1.2 and weak cipher suites), or
/// only matter for key store formats it refuses anyway; warned about.
const IGNORED_SECURITY_KEYS: &[&str] = &[
    "ssl.protocol",
    "ssl.enabled.protocols",
    "ssl.cipher.suites",
    "ssl.truststore.password",
    "ssl.keystore.password",
    "ssl.keymanager.algorithm",
    "ssl.trustmanager.algorithm",
    "ssl.secure.random.implementation",
    "sasl.login.refresh.window.factor",
    "sasl.login.refresh.window.jitter",
    "sasl.login.refresh.min.period.seconds",
    "sasl.login.refresh.buffer.seconds",
];

/// The keys [`apply`] maps.
const MAPPED_KEYS: &[&str] = &[
    "bootstrap.servers",
    "client.id",
    "security.protocol",
    "ssl.truststore.location",
    "ssl.truststore.type",
    "ssl.keystore.location",
    "ssl.keystore.type",
    "ssl.endpoint.identification.algorithm",
    "sasl.mechanism",
    "sasl.jaas.config",
    "send.buffer.bytes",
    "receive.buffer.bytes",
    "request.timeout.ms",
    "socket.connection.setup.timeout.ms",
];

/// A key of `props`, read from `path`, that cannot be used: names the
/// file, the key and the line it is set on (if it is), never its value.
pub(super) fn property_error(
    path: &str,
    props: &Properties,
    key: &str,
    reason: impl Into<String>,
) -> ConfigError {
    ConfigError::Property {
        path: path.to_owned(),
        line: props.line(key),
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// Lays the Kafka client properties over `cluster` (which holds the TOML
/// file's settings, or the defaults). `path` names the file in errors and
/// warnings. Returns the keys that were ignored, each also warned about once.
///
/// Mapped keys: `bootstrap.servers`, `client.id`, `security.protocol`,
/// `ssl.truststore.location`/`ssl.truststore.type` (PEM only),
/// `ssl.keystore.location`/`ssl.keystore.type` (PEM only: one file holding
/// the certificate chain and the private key), `ssl.endpoint.identification.algorithm`
/// (`https` only), `sasl.mechanism`, `sasl.jaas.config` (PLAIN and SCRAM
/// login modules), `send.buffer.bytes`, `receive.buffer.bytes`,
/// `request.timeout.ms`, `socket.connection.setup.timeout.ms`.
pub fn apply(
    cluster: &mut ClusterConfig,
    props: &Properties,
    path: &str,
) -> Result<Vec<String>, ConfigError> {
    let err = |key: &str, reason: &str| property_error(path, props, key, reason);

    let mut ignored = Vec::new();
    for key in props.keys() {
        if MAPPED_KEYS.contains(&key) {
            continue;
        }
        let security =
            key.starts_with("ssl.") || key.starts_with("sasl.") || key.starts_with("security.");
        if security && !IGNORED_SECURITY_KEYS.contains(&key) {
            let reason = match key {
                "ssl.keystore.certificate.chain" | "ssl.keystore.key" | "ssl.truststore.certificates" => {
                    "inline PEM is not supported: kafka-mirror reads certificates and keys from files; \
                     put the PEM in a file and use ssl.keystore.location / ssl.truststore.location"
                }
                "ssl.key.password" => "encrypted private keys are not supported: give an unencrypted PEM key",
                _ => "this security setting is not supported by kafka-mirror, and ignoring it could weaken or break the connection",
            };
            return Err(err(key, reason));
        }
        if !security && !IGNORED_PREFIXES.iter().any(|p| key.starts_with(p)) {
            // An unknown non-security key: likely a client tuning key we do not know.
            tracing::warn!(file = %path, key, "Kafka client property not used by kafka-mirror; ignored");
        } else {
            tracing::warn!(file = %path, key, "Kafka client property has no meaning for kafka-mirror; ignored");
        }
        ignored.push(key.to_owned());
    }

    if let Some(servers) = props.get("bootstrap.servers") {
        cluster.bootstrap_servers = servers.to_owned();
    }
    if let Some(id) = props.get("client.id") {
        cluster.client_id = id.to_owned();
    }
    let number = |key: &str| -> Result<Option<i64>, ConfigError> {
        props
            .get(key)
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| err(key, "not an integer"))
            })
            .transpose()
    };
    for (key, field) in [
        ("send.buffer.bytes", &mut cluster.send_buffer_bytes),
        ("receive.buffer.bytes", &mut cluster.receive_buffer_bytes),
    ] {
        match number(key)? {
            None => {}
            Some(-1) => *field = 0,
            Some(n) if n >= 0 => *field = n as usize,
            Some(_) => return Err(err(key, "must be -1 (the OS default) or a size in bytes")),
        }
    }
    for (key, field) in [
        ("request.timeout.ms", &mut cluster.request_timeout_ms),
        (
            "socket.connection.setup.timeout.ms",
            &mut cluster.connect_timeout_ms,
        ),
    ] {
        match number(key)? {
            None => {}
            Some(n) if n > 0 => *field = n as u64,
            Some(_) => return Err(err(key, "must be a positive number of ms")),
        }
    }

    let protocol = props.get("security.protocol");
    let (tls, sasl) = match protocol.map(|p| p.trim().to_ascii_uppercase()).as_deref() {
        None => (None, None),
        Some("PLAINTEXT") => (Some(false), Some(false)),
        Some("SSL") => (Some(true), Some(false)),
        Some("SASL_PLAINTEXT") => (Some(false), Some(true)),
        Some("SASL_SSL") => (Some(true), Some(true)),
        Some(_) => {
            return Err(err(
                "security.protocol",
                "must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
            ))
        }
    };
    let tls_keys = [
        "ssl.truststore.location",
        "ssl.truststore.type",
        "ssl.keystore.location",
        "ssl.keystore.type",
        "ssl.endpoint.identification.algorithm",
    ];
    let sasl_keys = ["sasl.mechanism", "sasl.jaas.config"];
    // TLS or SASL keys without the protocol that uses them would be silently
    // ignored by a Java client; here they are a mistake worth stopping for.
    if tls != Some(true) {
        if let Some(key) = tls_keys.iter().find(|k| props.get(k).is_some()) {
            return Err(err(
                key,
                "has no effect unless security.protocol is SSL or SASL_SSL",
            ));
        }
    }
    if sasl != Some(true) {
        if let Some(key) = sasl_keys.iter().find(|k| props.get(k).is_some()) {
            return Err(err(
                key,
                "has no effect unless security.protocol is SASL_PLAINTEXT or SASL_SSL",
            ));
        }
    }

    match tls {
        None => {}
        Some(false) => cluster.tls = None,
        Some(true) => {
            let tls = cluster.tls.get_or_insert_with(TlsConfig::default);
            tls.enabled = true;
            for (location, kind) in [
                ("ssl.truststore.location", "ssl.truststore.type"),
                ("ssl.keystore.location", "ssl.keystore.type"),
            ] {
                if let Some(t) = props.get(kind) {
                    if !t.trim().eq_ignore_ascii_case("PEM") {
                        return Err(err(
                            kind,
                            "only PEM is supported (JKS and PKCS12 are not): convert the store to PEM, \
                             e.g. with keytool -exportcert -rfc or openssl pkcs12",
                        ));
                    }
                }
                if props.get(kind).is_some() && props.get(location).is_none() {
                    return Err(err(location, &format!("must be set with {kind}")));
                }
            }
            if let Some(ca) = props.get("ssl.truststore.location") {
                tls.ca_file = Some(PathBuf::from(ca));
                tls.insecure_skip_verify = false;
            }
            if let Some(store) = props.get("ssl.keystore.location") {
                // One PEM file with the chain and the key: each loader takes its part.
                tls.cert_file = Some(PathBuf::from(store));
                tls.key_file = Some(PathBuf::from(store));
            }
            match props.get("ssl.endpoint.identification.algorithm").map(str::trim) {
                None => {}
                Some(a) if a.eq_ignore_ascii_case("https") => {}
                Some("") => {
                    return Err(err(
                        "ssl.endpoint.identification.algorithm",
                        "empty (no hostname verification) is not supported: kafka-mirror can only \
                         turn off certificate verification entirely, which it will not do on a \
                         properties file's behalf; give brokers certificates that name them, or set \
                         tls.server_name in the TOML file to the name their certificates carry",
                    ))
                }
                Some(_) => {
                    return Err(err(
                        "ssl.endpoint.identification.algorithm",
                        "only https is supported",
                    ))
                }
            }
        }
    }

    match sasl {
        None => {}
        Some(false) => cluster.sasl = None,
        Some(true) => {
            let mechanism = props
                .get("sasl.mechanism")
                .map(str::trim)
                .unwrap_or("GSSAPI");
            let mechanism = match mechanism.to_ascii_uppercase().as_str() {
                m @ ("PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512" | "OAUTHBEARER") => m.to_owned(),
                _ => {
                    return Err(err(
                        "sasl.mechanism",
                        "must be PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER \
                         (GSSAPI, Kafka's default when unset, is not supported)",
                    ))
                }
            };
            match props.get("sasl.jaas.config") {
                Some(jaas) => {
                    let login = parse_jaas(jaas).map_err(|reason| err("sasl.jaas.config", &reason))?;
                    cluster.sasl = Some(login.into_sasl(&mechanism).map_err(|r| err("sasl.jaas.config", &r))?);
                }
                None => match &mut cluster.sasl {
                    // Credentials may come from the TOML file (password_env, token_command...).
                    Some(existing) => existing.mechanism = mechanism,
                    None => {
                        return Err(err(
                            "sasl.jaas.config",
                            "must be set with SASL (or give the credentials in the TOML file's sasl section)",
                        ))
                    }
                },
            }
        }
    }
    Ok(ignored)
}

/// One JAAS login module entry: its class and options. `Debug` hides the values.
struct JaasLogin {
    module: String,
    options: BTreeMap<String, SecretString>,
}

impl JaasLogin {
    fn into_sasl(mut self, mechanism: &str) -> Result<SaslConfig, String> {
        let expected = match mechanism {
            "PLAIN" => "org.apache.kafka.common.security.plain.PlainLoginModule",
            "OAUTHBEARER" => {
                return Err(
                    "OAUTHBEARER login modules are not supported from a properties file \
                     (unsecured or callback-based tokens cannot be refreshed here); give the \
                     token in the TOML file's sasl section (token_command, token_file, token_env)"
                        .into(),
                )
            }
            _ => "org.apache.kafka.common.security.scram.ScramLoginModule",
        };
        if self.module != expected {
            return Err(format!(
                "{} does not go with sasl.mechanism={mechanism}: expected {expected}",
                module_name(&self.module)
            ));
        }
        let username = self
            .options
            .remove("username")
            .ok_or("the login module needs username=\"...\"")?;
        let password = self
            .options
            .remove("password")
            .ok_or("the login module needs password=\"...\"")?;
        if !self.options.is_empty() {
            return Err("the login module takes only the username and password options".into());
        }
        Ok(SaslConfig {
            mechanism: mechanism.to_owned(),
            username: username.expose_secret().to_owned(),
            password: Some(password),
            password_env: None,
            password_file: None,
            token: None,
            token_env: None,
            token_file: None,
            token_command: None,
        })
    }
}

/// Kafka's login modules, which errors may name: any other word of the
/// entry may be part of a secret (a password with a space, unquoted).
const KNOWN_LOGIN_MODULES: &[&str] = &[
    "org.apache.kafka.common.security.plain.PlainLoginModule",
    "org.apache.kafka.common.security.scram.ScramLoginModule",
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule",
    "com.sun.security.auth.module.Krb5LoginModule",
];

/// How an error names the entry's login module class.
fn module_name(module: &str) -> String {
    if KNOWN_LOGIN_MODULES.contains(&module) {
        format!("login module `{module}`")
    } else {
        "the login module class (not one of Kafka's)".to_owned()
    }
}

/// How an error names the option `key`, the `number`th of the entry.
fn option_name(key: &str, number: usize) -> String {
    if matches!(key, "username" | "password") {
        format!("option `{key}`")
    } else {
        format!("option {number}")
    }
}

/// Parses `module.Class required key="value" key2=value2;` (one entry).
/// Errors never quote the text: only the names of Kafka's login modules
/// and of the username and password options, else a position.
fn parse_jaas(text: &str) -> Result<JaasLogin, String> {
    let mut chars = text.trim().chars().peekable();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
    };
    let word = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        let mut w = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || c == '=' || c == ';' || c == '"' {
                break;
            }
            w.push(c);
            chars.next();
        }
        w
    };
    let module = word(&mut chars);
    if module.is_empty() {
        return Err("expected `LoginModuleClass required key=\"value\" ...;`".into());
    }
    skip_ws(&mut chars);
    let flag = word(&mut chars);
    if flag != "required" {
        return Err(format!(
            "expected the control flag `required` after {}",
            module_name(&module)
        ));
    }
    let mut options = BTreeMap::new();
    loop {
        skip_ws(&mut chars);
        match chars.peek() {
            None => return Err("missing the final `;`".into()),
            Some(';') => {
                chars.next();
                skip_ws(&mut chars);
                if chars.peek().is_some() {
                    return Err("only one login module entry is supported".into());
                }
                break;
            }
            Some(_) => {}
        }
        let key = word(&mut chars);
        let name = option_name(&key, options.len() + 1);
        skip_ws(&mut chars);
        if key.is_empty() || chars.next() != Some('=') {
            return Err(format!(
                "expected key=value as {name} (a value with spaces needs quotes)"
            ));
        }
        skip_ws(&mut chars);
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quoted value of {name}")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => v.push(c),
                        None => return Err(format!("unterminated quoted value of {name}")),
                    },
                    Some(c) => v.push(c),
                }
            }
            v
        } else {
            let v = word(&mut chars);
            if v.is_empty() {
                return Err(format!("{name} has no value"));
            }
            v
        };
        options.insert(key, SecretString::from(value));
    }
    Ok(JaasLogin { module, options })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn parser_handles_separators_comments_continuations_and_escapes() {
        let text = "# comment\n! also a comment\n\n  a=1\nb: 2\nc 3\nd = spaced value  \n\
                    long = one, \\\n     two, \\\r\n  three\n\
                    esc\\=key = tab\\there\\nnl \\u0041 \\\\ \\q\n\
                    empty=\n  # indented comment\nlast=x\\\n";
        let p = Properties::parse(text).expect("valid");
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), Some("2"));
        assert_eq!(p.get("c"), Some("3"));
        assert_eq!(p.get("d"), Some("spaced value  "));
        assert_eq!(p.get("long"), Some("one, two, three"));
        assert_eq!(p.get("esc=key"), Some("tab\there\nnl A \\ q"));
        assert_eq!(p.get("empty"), Some(""));
        assert_eq!(p.get("last"), Some("x"));
        assert_eq!(p.keys().count(), 8);
        // An even number of trailing backslashes is an escaped backslash, not a continuation.
        let p = Properties::parse("k=a\\\\\nnext=b\nk2:=v").expect("valid");
        assert_eq!(p.get("k"), Some("a\\"));
        assert_eq!(p.get("next"), Some("b"));
        assert_eq!(p.get("k2"), Some("=v"));
        // Later duplicates win.
        assert_eq!(
            Properties::parse("k=1\nk=2").expect("valid").get("k"),
            Some("2")
        );
    }

    #[test]
    fn parser_reads_utf8_keeps_a_last_continued_line_and_names_bad_escapes() {
        let p = Properties::parse("pw=päss-wörd\nname=M\\u00fcller\nlast=x\\").expect("valid");
        assert_eq!(p.get("pw"), Some("päss-wörd"));
        assert_eq!(p.get("name"), Some("Müller"));
        // No newline after the backslash: the entry is kept, as Java keeps it.
        assert_eq!(p.get("last"), Some("x"));
        let path = std::env::temp_dir().join(format!("km-props-{}", std::process::id()));
        std::fs::write(&path, "a=1\nsasl.password=s3cr3t\\u00zz\n").unwrap();
        let err = Properties::from_file(&path)
            .expect_err("malformed")
            .to_string();
        let _ = std::fs::remove_file(&path);
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("line_number = 2"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    const SCRAM: &str = "bootstrap.servers=b1:9093,b2:9093\nclient.id=mirror-1\n\
        security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n\
        sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n  \
        username=\"mirror\" password=\"pa\\\\\\\"ss-s3cr3t\";\n\
        ssl.truststore.location=/etc/kafka/ca.pem\nssl.truststore.type=PEM\n\
        ssl.keystore.location=/etc/kafka/client.pem\nssl.keystore.type=PEM\n\
        ssl.endpoint.identification.algorithm=https\n\
        send.buffer.bytes=1048576\nreceive.buffer.bytes=-1\nrequest.timeout.ms=40000\n\
        socket.connection.setup.timeout.ms=5000\ngroup.id=g\nacks=all\n";

    fn applied(text: &str) -> Result<(ClusterConfig, Vec<String>), ConfigError> {
        let mut cluster = ClusterConfig::new("toml:9092");
        cluster.receive_buffer_bytes = 7;
        let ignored = apply(&mut cluster, &Properties::parse(text)?, "client.properties")?;
        Ok((cluster, ignored))
    }

    #[test]
    fn every_mapped_key_lands_and_the_secret_stays_hidden() {
        let (c, ignored) = applied(SCRAM).expect("valid");
        assert_eq!(c.bootstrap_servers, "b1:9093,b2:9093");
        assert_eq!(c.client_id, "mirror-1");
        assert_eq!(
            (c.send_buffer_bytes, c.receive_buffer_bytes),
            (1_048_576, 0)
        );
        assert_eq!(
            (c.request_timeout_ms, c.connect_timeout_ms),
            (40_000, 5_000)
        );
        let tls = c.tls.as_ref().expect("tls");
        assert!(tls.enabled && !tls.insecure_skip_verify);
        assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/etc/kafka/ca.pem")));
        assert_eq!(
            tls.cert_file.as_deref(),
            Some(Path::new("/etc/kafka/client.pem"))
        );
        assert_eq!(tls.key_file, tls.cert_file);
        let sasl = c.sasl.as_ref().expect("sasl");
        assert_eq!(sasl.mechanism, "SCRAM-SHA-512");
        assert_eq!(sasl.username, "mirror");
        assert_eq!(
            sasl.password.as_ref().unwrap().expose_secret(),
            "pa\"ss-s3cr3t"
        );
        assert_eq!(ignored, ["acks", "group.id"]);
        let debug = format!("{c:?} {:?}", Properties::parse(SCRAM).expect("valid"));
        assert!(!debug.contains("s3cr3t"), "{debug}");

        let plain = "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.jaas.config=\
            org.apache.kafka.common.security.plain.PlainLoginModule required username=u password=p;";
        let (c, _) = applied(plain).expect("valid");
        assert!(c.tls.is_none());
        assert_eq!(c.sasl.as_ref().unwrap().mechanism, "PLAIN");
        assert_eq!(
            c.bootstrap_servers, "toml:9092",
            "unset keys keep the TOML value"
        );

        let (c, _) = applied("security.protocol=SSL").expect("valid");
        assert!(c.tls.is_some() && c.sasl.is_none());
        let (c, _) = applied("security.protocol=PLAINTEXT").expect("valid");
        assert!(c.tls.is_none() && c.sasl.is_none());
    }

    #[test]
    fn keys_that_cannot_be_honoured_are_errors_naming_the_key() {
        let ssl = "security.protocol=SSL\n";
        let sasl = "security.protocol=SASL_SSL\n";
        let scram = "org.apache.kafka.common.security.scram.ScramLoginModule";
        let cases = [
            (format!("{ssl}ssl.truststore.location=/x.jks\nssl.truststore.type=JKS"), "ssl.truststore.type", "JKS"),
            (format!("{ssl}ssl.keystore.location=/x.p12\nssl.keystore.type=PKCS12"), "ssl.keystore.type", "PEM"),
            (format!("{ssl}ssl.keystore.key=-----BEGIN"), "ssl.keystore.key", "inline PEM"),
            (format!("{ssl}ssl.keystore.certificate.chain=-----BEGIN"), "ssl.keystore.certificate.chain", "inline PEM"),
            (format!("{ssl}ssl.key.password=s3cr3t"), "ssl.key.password", "encrypted"),
            (format!("{ssl}ssl.endpoint.identification.algorithm="), "ssl.endpoint.identification.algorithm", "hostname"),
            ("ssl.truststore.location=/ca.pem".to_owned(), "ssl.truststore.location", "security.protocol"),
            ("security.protocol=TLS".to_owned(), "security.protocol", "SASL_SSL"),
            (format!("{sasl}sasl.mechanism=GSSAPI"), "sasl.mechanism", "GSSAPI"),
            (format!("{sasl}sasl.mechanism=PLAIN"), "sasl.jaas.config", "must be set"),
            (format!("{sasl}sasl.mechanism=PLAIN\nsasl.jaas.config={scram} required username=u password=\"s3cr3t\";"), "sasl.jaas.config", "PlainLoginModule"),
            (format!("{sasl}sasl.mechanism=SCRAM-SHA-256\nsasl.jaas.config={scram} required username=u password=\"s3cr3t;"), "sasl.jaas.config", "unterminated"),
            (format!("{sasl}sasl.mechanism=SCRAM-SHA-256\nsasl.jaas.config={scram} required username=u;"), "sasl.jaas.config", "password"),
            (format!("{sasl}sasl.mechanism=OAUTHBEARER\nsasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub=\"s3cr3t\";"), "sasl.jaas.config", "token_command"),
            (format!("{sasl}sasl.mechanism=PLAIN\nsasl.login.callback.handler.class=x"), "sasl.login.callback.handler.class", "not supported"),
            ("request.timeout.ms=soon".to_owned(), "request.timeout.ms", "integer"),
            ("send.buffer.bytes=-5".to_owned(), "send.buffer.bytes", "-1"),
        ];
        for (text, key, reason) in cases {
            let err = applied(&text).expect_err(&text).to_string();
            assert!(err.contains(&format!("key `{key}`")), "{text}: {err}");
            assert!(err.contains(reason), "{text}: {err}");
            assert!(err.contains("client.properties"), "{text}: {err}");
            assert!(!err.contains("s3cr3t"), "{text}: {err}");
        }
    }

    /// A recognisable secret, as a password and as a user name.
    const SECRET: &str = "Zq7-s3cr3t-Xv";

    /// Asserts that `err` names `path`, `line` and `key`, and shows no secret.
    pub(crate) fn assert_named_without_secret(
        err: &ConfigError,
        path: &str,
        line: usize,
        key: &str,
        what: &str,
    ) {
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(
                !shown.contains(SECRET),
                "the secret is shown:\n{what}\n{shown}"
            );
        }
        let shown = err.to_string();
        assert!(
            shown.contains(&format!("properties file {path}, line {line}: key `{key}`")),
            "not named ({path}, line {line}, {key}):\n{what}\n{shown}"
        );
    }

    #[test]
    fn broken_properties_name_file_line_and_key_never_the_secret() {
        let plain = "org.apache.kafka.common.security.plain.PlainLoginModule";
        let scram = "org.apache.kafka.common.security.scram.ScramLoginModule";
        let head = "bootstrap.servers=b:9093\nsecurity.protocol=SASL_SSL\nsasl.mechanism=PLAIN\n";
        let jaas = |body: &str| format!("{head}sasl.jaas.config={body}\n");
        let cases = [
            // Secrets under keys kafka-mirror refuses, or misspelled ones.
            (
                format!("{head}ssl.key.password={SECRET}\n"),
                "ssl.key.password",
                4,
            ),
            (
                format!("{head}ssl.keystore.pasword={SECRET}\n"),
                "ssl.keystore.pasword",
                4,
            ),
            (
                format!("{head}ssl.truststore.pasword={SECRET}\n"),
                "ssl.truststore.pasword",
                4,
            ),
            (
                format!(
                    "{head}sasl.jaas.confg={plain} required username=u password=\"{SECRET}\";\n"
                ),
                "sasl.jaas.confg",
                4,
            ),
            (
                format!("{head}ssl.keystore.key={SECRET}\n"),
                "ssl.keystore.key",
                4,
            ),
            // A JAAS entry broken around its secrets.
            (
                jaas(&format!(
                    "{plain} required username=u password=abc {SECRET};"
                )),
                "sasl.jaas.config",
                4,
            ),
            (
                jaas(&format!("{plain} required username=u password=\"{SECRET};")),
                "sasl.jaas.config",
                4,
            ),
            (
                jaas(&format!("{plain} required username=u password={SECRET}")),
                "sasl.jaas.config",
                4,
            ),
            (
                jaas(&format!(
                    "{plain} required username=u password=\"p\" {SECRET}=x;"
                )),
                "sasl.jaas.config",
                4,
            ),
            (
                jaas(&format!("{plain} {SECRET} username=u password=p;")),
                "sasl.jaas.config",
                4,
            ),
            (jaas(SECRET), "sasl.jaas.config", 4),
            (
                jaas(&format!("{plain} required username=\"{SECRET}\";")),
                "sasl.jaas.config",
                4,
            ),
            (
                jaas(&format!(
                    "{scram} required username=\"{SECRET}\" password=\"{SECRET}\";"
                )),
                "sasl.jaas.config",
                4,
            ),
            (
                jaas(&format!(
                    "{plain} required username=u password=\"{SECRET}\"; {plain} required;"
                )),
                "sasl.jaas.config",
                4,
            ),
            (
                format!(
                    "bootstrap.servers=b:1\nsecurity.protocol=SSL\n\
                         sasl.jaas.config={plain} required username=u password=\"{SECRET}\";\n"
                ),
                "sasl.jaas.config",
                3,
            ),
        ];
        for (text, key, line) in cases {
            let mut cluster = ClusterConfig::new("toml:9092");
            let props = Properties::parse(&text).expect("valid syntax");
            let err = apply(&mut cluster, &props, "client.properties").expect_err(&text);
            assert_named_without_secret(&err, "client.properties", line, key, &text);
        }
    }

    #[test]
    fn sasl_credentials_may_stay_in_the_toml_file() {
        let mut cluster = ClusterConfig::new("a:1");
        cluster.sasl = Some(SaslConfig {
            mechanism: "PLAIN".into(),
            username: "u".into(),
            password: None,
            password_env: Some("PW".into()),
            password_file: None,
            token: None,
            token_env: None,
            token_file: None,
            token_command: None,
        });
        let props = Properties::parse("security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-256")
            .expect("valid");
        apply(&mut cluster, &props, "p").expect("valid");
        let sasl = cluster.sasl.expect("kept");
        assert_eq!(sasl.mechanism, "SCRAM-SHA-256");
        assert_eq!(sasl.password_env.as_deref(), Some("PW"));
        assert!(cluster.tls.is_some());
    }
}
