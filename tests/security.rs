//! TLS and SASL against real brokers: certificates made at run time with
//! rcgen, brokers with SASL_SSL, SASL_PLAINTEXT and SSL (client auth
//! required) listeners, SCRAM users created when the storage is formatted.
//!
//! Test data is written and read through each broker's PLAINTEXT listener
//! (librdkafka), so only kafka-mirror speaks TLS and SASL here. Every run
//! checks that no password appears in what the mirror printed.
//!
//! The tests share two clusters:
//! - `secure_source`: SASL_SSL with SCRAM-SHA-512 and SCRAM-SHA-256, and an
//!   SSL listener that requires a client certificate;
//! - `secure_target`: SASL_SSL with PLAIN, and SASL_PLAINTEXT with SCRAM-SHA-256.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use kafka_testkit::{ClusterSpec, KafkaCluster};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

const SCRAM512_PASSWORD: &str = "scram512-Secret-Xy7";
const SCRAM256_PASSWORD: &str = "scram256-Secret-Z9k";
const PLAIN_PASSWORD: &str = "plain-Secret-Q3v";
const WRONG_PASSWORD: &str = "wrong-Secret-W1x";
const ALL_SECRETS: [&str; 4] = [
    SCRAM512_PASSWORD,
    SCRAM256_PASSWORD,
    PLAIN_PASSWORD,
    WRONG_PASSWORD,
];

/// PEM files written for one test run.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// A CA, a broker certificate for 127.0.0.1/localhost (key and chain in one
/// PEM file, as Kafka's PEM keystore reads it), a client certificate for
/// mTLS, and a second CA that signed nothing here (an untrusted one).
fn make_certs() -> Certs {
    let dir = std::env::temp_dir().join(format!("kafka-mirror-security-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("cert dir");
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key")).expect("ca")
    };
    let trusted = ca("kafka-mirror test CA");
    let untrusted = ca("some other CA");
    let signed = |names: Vec<String>,
                  usage: ExtendedKeyUsagePurpose,
                  cn: &str,
                  issuer: &CertifiedIssuer<'_, KeyPair>,
                  expired: bool| {
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, issuer).expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    };
    let leaf = |names, usage, cn: &str| signed(names, usage, cn, &trusted, false);
    let (broker_cert, broker_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
        "broker",
    );
    let (client_cert, client_key) = leaf(
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
        "kafka-mirror",
    );
    // Client certificates the brokers refuse: signed by a CA they do not
    // trust, and expired.
    let client = ExtendedKeyUsagePurpose::ClientAuth;
    let (untrusted_cert, untrusted_key) = signed(
        Vec::new(),
        client.clone(),
        "kafka-mirror",
        &untrusted,
        false,
    );
    let (expired_cert, expired_key) = signed(Vec::new(), client, "kafka-mirror", &trusted, true);
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).expect(name);
    write("ca.pem", trusted.pem());
    write("other-ca.pem", untrusted.pem());
    write(
        "broker-keystore.pem",
        format!("{broker_key}{broker_cert}{}", trusted.pem()),
    );
    write("client.pem", format!("{client_cert}{}", trusted.pem()));
    write("client-key.pem", client_key);
    write("untrusted-client.pem", untrusted_cert);
    write("untrusted-client-key.pem", untrusted_key);
    write("expired-client.pem", expired_cert);
    write("expired-client-key.pem", expired_key);
    // A password-protected key, as `openssl pkcs8 -topk8` writes it (the
    // body is never decoded: the label is what kafka-mirror recognises).
    write(
        "encrypted-key.pem",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI\n\
         -----END ENCRYPTED PRIVATE KEY-----\n"
            .to_owned(),
    );
    Certs { dir }
}

struct Clusters {
    certs: Certs,
    source: KafkaCluster,
    target: KafkaCluster,
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn clusters() -> &'static Clusters {
    static CLUSTERS: OnceLock<Clusters> = OnceLock::new();
    CLUSTERS.get_or_init(|| {
        let certs = make_certs();
        let keystore = certs.path("broker-keystore.pem");
        let truststore = certs.path("ca.pem");
        let ssl = [
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.location", keystore.as_str()),
            ("ssl.truststore.type", "PEM"),
            ("ssl.truststore.location", truststore.as_str()),
        ];

        let mut source = ClusterSpec::new(KAFKA, 1);
        source.extra_listeners = owned(&[("SASL_SSL", "SASL_SSL"), ("MTLS", "SSL")]);
        source.broker_props = owned(&ssl);
        source.broker_props.extend(owned(&[
            (
                "listener.name.sasl_ssl.sasl.enabled.mechanisms",
                "SCRAM-SHA-512,SCRAM-SHA-256",
            ),
            (
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config",
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            ),
            (
                "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config",
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            ),
            ("listener.name.mtls.ssl.client.auth", "required"),
        ]));
        // KIP-368: SASL sessions on the source end after 6 s unless renewed.
        source
            .broker_props
            .push(("connections.max.reauth.ms".into(), "6000".into()));
        source.format_args = vec![
            "--add-scram".into(),
            format!("SCRAM-SHA-512=[name=mirror,password={SCRAM512_PASSWORD}]"),
            "--add-scram".into(),
            format!("SCRAM-SHA-256=[name=mirror,password={SCRAM256_PASSWORD}]"),
        ];

        let mut target = ClusterSpec::new(KAFKA, 1);
        target.extra_listeners = owned(&[
            ("SASL_SSL", "SASL_SSL"),
            ("SASL_PLAINTEXT", "SASL_PLAINTEXT"),
            ("OAUTH", "SASL_PLAINTEXT"),
        ]);
        target.broker_props = owned(&ssl);
        let plain_jaas = format!(
            "org.apache.kafka.common.security.plain.PlainLoginModule required user_mirror=\"{PLAIN_PASSWORD}\";"
        );
        target.broker_props.extend(owned(&[
            ("listener.name.sasl_ssl.sasl.enabled.mechanisms", "PLAIN"),
            (
                "listener.name.sasl_ssl.plain.sasl.jaas.config",
                plain_jaas.as_str(),
            ),
            (
                "listener.name.sasl_plaintext.sasl.enabled.mechanisms",
                "SCRAM-SHA-256",
            ),
            (
                "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config",
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            ),
            // Kafka's unsecured JWT validator: unsigned tokens with a `sub` and an `exp`.
            ("listener.name.oauth.sasl.enabled.mechanisms", "OAUTHBEARER"),
            (
                "listener.name.oauth.oauthbearer.sasl.jaas.config",
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub=\"broker\";",
            ),
        ]));
        target.format_args = vec![
            "--add-scram".into(),
            format!("SCRAM-SHA-256=[name=mirror,password={SCRAM256_PASSWORD}]"),
        ];

        let start = |spec: ClusterSpec| {
            KafkaCluster::start(spec).unwrap_or_else(|e| panic!("cannot start Kafka: {e:#}"))
        };
        Clusters {
            source: start(source),
            target: start(target),
            certs,
        }
    })
}

/// The `[source]` or `[target]` section of a config file.
fn section(side: &str, bootstrap: &str, extra: &str) -> String {
    format!("[{side}]\nbootstrap_servers = \"{bootstrap}\"\nconnect_timeout_ms = 5000\n{extra}\n")
}

fn tls(certs: &Certs, side: &str, extra: &str) -> String {
    format!(
        "[{side}.tls]\nca_file = \"{}\"\n{extra}\n",
        certs.path("ca.pem")
    )
}

fn sasl(side: &str, mechanism: &str, password_line: &str) -> String {
    format!("[{side}.sasl]\nmechanism = \"{mechanism}\"\nusername = \"mirror\"\n{password_line}\n")
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `kafka-mirror run --config` with everything logged, and checks that
/// no password reached its output.
fn run_config(name: &str, text: &str, extra_args: &[&str], env: &[(&str, &str)]) -> Run {
    let dir = &clusters().certs.dir;
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write config");
    let mut command = mirror_command();
    command
        .env("RUST_LOG", "debug")
        .args([
            "run",
            "--config",
            &path.display().to_string(),
            "--name",
            name,
        ])
        .args(extra_args);
    for (key, value) in env {
        command.env(key, value);
    }
    let started = Instant::now();
    let output = wait_with_limit(RunningMirror::spawn(&mut command), Duration::from_secs(180));
    let run = Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        took: started.elapsed(),
    };
    for secret in ALL_SECRETS {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "{name}: a password appears in the output"
        );
    }
    run
}

fn assert_fails_with(run: &Run, expected: &[&str]) {
    assert_eq!(run.code, Some(1), "stderr:\n{}", tail(&run.stderr, 30));
    let last = run
        .stderr
        .lines()
        .rfind(|line| line.starts_with("kafka-mirror: "))
        .unwrap_or_else(|| panic!("no final error line:\n{}", tail(&run.stderr, 30)));
    eprintln!("{last} (after {:?})", run.took);
    for text in expected {
        assert!(last.contains(text), "`{text}` missing from: {last}");
    }
    // A clear failure is quick: no retry loop, no hang past the timeouts.
    assert!(run.took < Duration::from_secs(60), "took {:?}", run.took);
}

fn copy_and_check(topic: &str, name: &str, config: &str, env: &[(&str, &str)]) -> Run {
    let Clusters { source, target, .. } = clusters();
    source.create_topic(topic, 3, 1, &[]).expect("create topic");
    produce_keyed(source, topic, 3000, 3, topic, None);
    let run = run_config(name, config, &["--until-caught-up"], env);
    assert_eq!(
        run.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        tail(&run.stderr, 40)
    );
    assert_eq!(assert_same_records(source, target, topic), 3000);
    run
}

#[test]
fn scram_sha512_over_tls_into_plain_over_tls() {
    let Clusters {
        certs,
        source,
        target,
    } = clusters();
    let password_file = certs.dir.join("plain-password");
    std::fs::write(&password_file, format!("{PLAIN_PASSWORD}\n")).expect("password file");
    let config = [
        section("source", &source.listener_bootstrap("SASL_SSL"), ""),
        tls(certs, "source", ""),
        sasl(
            "source",
            "SCRAM-SHA-512",
            &format!("password = \"{SCRAM512_PASSWORD}\""),
        ),
        section("target", &target.listener_bootstrap("SASL_SSL"), ""),
        tls(certs, "target", "server_name = \"localhost\""),
        sasl(
            "target",
            "PLAIN",
            &format!("password_file = \"{}\"", password_file.display()),
        ),
        "[topics]\ninclude = \"scram-to-plain\"\n".into(),
    ]
    .concat();
    copy_and_check("scram-to-plain", "scram-to-plain", &config, &[]);
}

#[test]
fn mtls_into_scram_sha256_over_plaintext() {
    let Clusters {
        certs,
        source,
        target,
    } = clusters();
    let client = format!(
        "cert_file = \"{}\"\nkey_file = \"{}\"",
        certs.path("client.pem"),
        certs.path("client-key.pem")
    );
    let config = [
        section("source", &source.listener_bootstrap("MTLS"), ""),
        tls(certs, "source", &client),
        section("target", &target.listener_bootstrap("SASL_PLAINTEXT"), ""),
        sasl(
            "target",
            "SCRAM-SHA-256",
            "password_env = \"KAFKA_MIRROR_TARGET_PASSWORD\"",
        ),
        "[topics]\ninclude = \"mtls-to-scram\"\n".into(),
    ]
    .concat();
    copy_and_check(
        "mtls-to-scram",
        "mtls-to-scram",
        &config,
        &[("KAFKA_MIRROR_TARGET_PASSWORD", SCRAM256_PASSWORD)],
    );
}

#[test]
fn sasl_sessions_are_renewed_before_the_broker_ends_them() {
    let Clusters {
        certs,
        source,
        target,
    } = clusters();
    let topic = "reauth";
    source.create_topic(topic, 2, 1, &[]).expect("create topic");
    let config = [
        section("source", &source.listener_bootstrap("SASL_SSL"), ""),
        tls(certs, "source", ""),
        sasl(
            "source",
            "SCRAM-SHA-256",
            &format!("password = \"{SCRAM256_PASSWORD}\""),
        ),
        section("target", &target.bootstrap(), ""),
        format!("[topics]\ninclude = \"{topic}\"\n"),
    ]
    .concat();
    let path = certs.dir.join("reauth.toml");
    std::fs::write(&path, config).expect("write config");
    let mirror = RunningMirror::spawn(mirror_command().env("RUST_LOG", "kafka_mirror=debug").args(
        [
            "run",
            "--config",
            &path.display().to_string(),
            "--name",
            "reauth",
        ],
    ));
    // The mirror creates the target topic; until then the dump fails.
    let copied = |count: usize| {
        kafka_testkit::dump_topic(&target.bootstrap(), topic)
            .is_ok_and(|records| records.len() >= count)
    };
    let mut produced = 0;
    // Three rounds 4 s apart span several 6 s sessions.
    for round in 0..3 {
        produce_keyed(source, topic, 200, 2, &format!("round{round}"), None);
        produced += 200;
        eventually("the round is copied", Duration::from_secs(60), || {
            copied(produced)
        });
        std::thread::sleep(Duration::from_secs(4));
    }
    let output = terminate(mirror);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{}", tail(&stderr, 40));
    assert!(
        stderr.contains("SASL session lifetime reached; reconnecting"),
        "no renewal logged:\n{}",
        tail(&stderr, 40)
    );
    assert!(!stderr.contains(SCRAM256_PASSWORD));
    assert_eq!(assert_same_records(source, target, topic), produced);
}

/// An unsigned JWT (`alg: none`) for Kafka's unsecured validator, expiring
/// `expires_in_s` seconds from now (negative: already expired).
fn unsigned_jwt(expires_in_s: i64) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
    let claims = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"sub":"mirror","iat":{},"exp":{}}}"#,
        now - 60,
        now + expires_in_s
    ));
    format!("{header}.{claims}.")
}

#[test]
fn oauthbearer_with_a_static_token() {
    let Clusters { source, target, .. } = clusters();
    let token = unsigned_jwt(3600);
    let config = [
        section("source", &source.bootstrap(), ""),
        section("target", &target.listener_bootstrap("OAUTH"), ""),
        "[target.sasl]\nmechanism = \"OAUTHBEARER\"\ntoken_env = \"KAFKA_MIRROR_TOKEN\"\n".into(),
        "[topics]\ninclude = \"oauth\"\n".into(),
    ]
    .concat();
    let run = copy_and_check("oauth", "oauth", &config, &[("KAFKA_MIRROR_TOKEN", &token)]);
    assert!(!run.stderr.contains(&token) && !run.stdout.contains(&token));

    let expired = unsigned_jwt(-600);
    let run = run_config(
        "oauth-expired",
        &config,
        &["--until-caught-up"],
        &[("KAFKA_MIRROR_TOKEN", &expired)],
    );
    assert!(!run.stderr.contains(&expired) && !run.stderr.contains(&token));
    assert_fails_with(
        &run,
        &["target cluster", "authentication failed", "OAUTHBEARER"],
    );
}

#[test]
fn oauthbearer_with_a_token_command() {
    let Clusters {
        certs,
        source,
        target,
    } = clusters();
    let token_file = certs.dir.join("oauth-token");
    std::fs::write(&token_file, unsigned_jwt(3600)).expect("token file");
    let config = [
        section("source", &source.bootstrap(), ""),
        section("target", &target.listener_bootstrap("OAUTH"), ""),
        format!(
            "[target.sasl]\nmechanism = \"OAUTHBEARER\"\ntoken_command = \"cat '{}'\"\n",
            token_file.display()
        ),
        "[topics]\ninclude = \"oauth-command\"\n".into(),
    ]
    .concat();
    copy_and_check("oauth-command", "oauth-command", &config, &[]);

    let failing = config.replace(
        &format!("cat '{}'", token_file.display()),
        "cat /nonexistent/token; exit 7",
    );
    let run = run_config("oauth-command-fails", &failing, &["--until-caught-up"], &[]);
    assert_fails_with(&run, &["target.sasl.token_command", "exit status: 7"]);
}

#[test]
fn scram_sha512_over_tls_from_a_properties_file() {
    let Clusters {
        certs,
        source,
        target,
    } = clusters();
    let properties = certs.dir.join("source.properties");
    std::fs::write(
        &properties,
        format!(
            "# as a Java client would have it\n\
             bootstrap.servers={}\n\
             security.protocol=SASL_SSL\n\
             ssl.truststore.location={}\n\
             ssl.truststore.type=PEM\n\
             ssl.endpoint.identification.algorithm=https\n\
             sasl.mechanism=SCRAM-SHA-512\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n\
             \x20   username=\"mirror\" \\\n\
             \x20   password=\"{SCRAM512_PASSWORD}\";\n\
             group.id=ignored-group\n",
            source.listener_bootstrap("SASL_SSL"),
            certs.path("ca.pem"),
        ),
    )
    .expect("properties file");
    // The TOML's source is unreachable: only the properties file makes this work.
    let config = [
        section("source", "127.0.0.1:1", ""),
        section("target", &target.bootstrap(), ""),
        "[topics]\ninclude = \"from-properties\"\n".into(),
    ]
    .concat();
    let topic = "from-properties";
    source.create_topic(topic, 3, 1, &[]).expect("create topic");
    produce_keyed(source, topic, 3000, 3, topic, None);
    let run = run_config(
        topic,
        &config,
        &[
            "--until-caught-up",
            "--source-properties",
            &properties.display().to_string(),
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "stderr:\n{}", tail(&run.stderr, 40));
    assert_eq!(assert_same_records(source, target, topic), 3000);
    assert!(run.stderr.contains("group.id"), "the ignored key is named");
}

/// A config whose target is fine (the failures are all on the source side).
fn with_good_target(source: &str) -> String {
    let target = &clusters().target;
    format!("{source}{}", section("target", &target.bootstrap(), ""))
}

#[test]
fn a_wrong_password_fails_once_with_the_brokers_message() {
    let Clusters { certs, source, .. } = clusters();
    let config = with_good_target(
        &[
            section("source", &source.listener_bootstrap("SASL_SSL"), ""),
            tls(certs, "source", ""),
            sasl(
                "source",
                "SCRAM-SHA-512",
                &format!("password = \"{WRONG_PASSWORD}\""),
            ),
        ]
        .concat(),
    );
    let run = run_config("wrong-password", &config, &["--until-caught-up"], &[]);
    assert_fails_with(
        &run,
        &[
            "source cluster",
            "authentication failed",
            "SCRAM-SHA-512",
            "Authentication failed during authentication due to invalid credentials",
        ],
    );
}

#[test]
fn an_untrusted_certificate_names_the_tls_cause() {
    let Clusters { certs, source, .. } = clusters();
    let config = with_good_target(
        &[
            section("source", &source.listener_bootstrap("SASL_SSL"), ""),
            format!(
                "[source.tls]\nca_file = \"{}\"\n",
                certs.path("other-ca.pem")
            ),
            sasl(
                "source",
                "SCRAM-SHA-512",
                &format!("password = \"{SCRAM512_PASSWORD}\""),
            ),
        ]
        .concat(),
    );
    let run = run_config("untrusted", &config, &["--until-caught-up"], &[]);
    assert_fails_with(
        &run,
        &[
            "source cluster",
            "TLS handshake",
            "invalid peer certificate",
            "tls.ca_file",
        ],
    );
}

#[test]
fn a_missing_client_certificate_is_named() {
    let Clusters { certs, source, .. } = clusters();
    let config = with_good_target(
        &[
            section("source", &source.listener_bootstrap("MTLS"), ""),
            tls(certs, "source", ""),
        ]
        .concat(),
    );
    let run = run_config("no-client-cert", &config, &["--until-caught-up"], &[]);
    assert_fails_with(&run, &["source cluster", "TLS", "tls.cert_file"]);
}

#[test]
fn tls_to_a_plaintext_listener_is_a_clear_error() {
    let Clusters { certs, source, .. } = clusters();
    let config = with_good_target(
        &[
            section("source", &source.bootstrap(), ""),
            tls(certs, "source", ""),
        ]
        .concat(),
    );
    let run = run_config("tls-to-plaintext", &config, &["--until-caught-up"], &[]);
    assert_fails_with(&run, &["source cluster", "TLS handshake", "plaintext"]);
}

#[test]
fn plaintext_to_a_tls_listener_is_a_clear_error() {
    let source = &clusters().source;
    let config = with_good_target(&section("source", &source.listener_bootstrap("MTLS"), ""));
    let run = run_config("plaintext-to-tls", &config, &["--until-caught-up"], &[]);
    assert_fails_with(&run, &["source cluster", "is the listener TLS?"]);
}

#[test]
fn a_mechanism_the_listener_does_not_offer_lists_the_enabled_ones() {
    let Clusters { certs, source, .. } = clusters();
    let config = with_good_target(
        &[
            section("source", &source.listener_bootstrap("SASL_SSL"), ""),
            tls(certs, "source", ""),
            sasl(
                "source",
                "PLAIN",
                &format!("password = \"{PLAIN_PASSWORD}\""),
            ),
        ]
        .concat(),
    );
    let run = run_config("no-plain", &config, &["--until-caught-up"], &[]);
    assert_fails_with(
        &run,
        &[
            "source cluster",
            "SASL mechanism PLAIN is not enabled",
            "SCRAM-SHA-512",
            "SCRAM-SHA-256",
        ],
    );
}

#[test]
fn a_client_certificate_the_broker_refuses_is_named() {
    let Clusters { certs, source, .. } = clusters();
    for refused in ["untrusted-client", "expired-client"] {
        let config = with_good_target(
            &[
                section("source", &source.listener_bootstrap("MTLS"), ""),
                tls(
                    certs,
                    "source",
                    &format!(
                        "cert_file = \"{}\"\nkey_file = \"{}\"",
                        certs.path(&format!("{refused}.pem")),
                        certs.path(&format!("{refused}-key.pem"))
                    ),
                ),
            ]
            .concat(),
        );
        let run = run_config(refused, &config, &["--until-caught-up"], &[]);
        assert_fails_with(
            &run,
            &[
                "source cluster",
                &source.listener_bootstrap("MTLS"),
                "refused the client certificate",
                "expired, or not signed by a CA",
                "tls.cert_file",
            ],
        );
    }
}

#[test]
fn tls_without_sasl_to_a_sasl_listener_is_named() {
    let Clusters { certs, source, .. } = clusters();
    let config = with_good_target(
        &[
            section("source", &source.listener_bootstrap("SASL_SSL"), ""),
            tls(certs, "source", ""),
        ]
        .concat(),
    );
    let run = run_config("tls-without-sasl", &config, &["--until-caught-up"], &[]);
    assert_fails_with(
        &run,
        &[
            "source cluster",
            &source.listener_bootstrap("SASL_SSL"),
            "closed the connection before authentication",
            "expects SASL",
            "`sasl` section",
        ],
    );
}

#[test]
fn sasl_to_a_plaintext_listener_is_named() {
    let source = &clusters().source;
    let config = with_good_target(
        &[
            section("source", &source.bootstrap(), ""),
            sasl(
                "source",
                "SCRAM-SHA-512",
                &format!("password = \"{SCRAM512_PASSWORD}\""),
            ),
        ]
        .concat(),
    );
    let run = run_config("sasl-to-plaintext", &config, &["--until-caught-up"], &[]);
    assert_fails_with(
        &run,
        &[
            "source cluster",
            &source.bootstrap(),
            "does not use SASL",
            "`sasl` section",
        ],
    );
}

#[test]
fn an_encrypted_private_key_is_named() {
    let Clusters { certs, source, .. } = clusters();
    let key = certs.path("encrypted-key.pem");
    let config = with_good_target(
        &[
            section("source", &source.listener_bootstrap("MTLS"), ""),
            tls(
                certs,
                "source",
                &format!(
                    "cert_file = \"{}\"\nkey_file = \"{key}\"",
                    certs.path("client.pem")
                ),
            ),
        ]
        .concat(),
    );
    let run = run_config("encrypted-key", &config, &["--until-caught-up"], &[]);
    assert_fails_with(&run, &["source.tls", &key, "encrypted", "openssl pkey"]);
}
