//! The command line as a user meets it: help, config errors that name the
//! key, and clusters that cannot be reached. No broker is started here.

mod common;

use std::time::Duration;

use common::*;

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = run_mirror(&args, Duration::from_secs(60));
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_explains_every_option() {
    let (code, stdout, _) = run(&["run", "--help"]);
    assert_eq!(code, Some(0));
    for option in [
        "--config",
        "--source",
        "--target",
        "--topics",
        "--exclude",
        "--groups",
        "--name",
        "--until-caught-up",
        "--start-position",
        "--on-data-loss",
        "--isolation-level",
        "--replication-factor",
        "--in-flight-bytes",
        "--max-bytes-per-sec",
        "--source-properties",
        "--target-properties",
        "--exactly-once",
        "--instance-id",
        "--quiet",
        "--log-format",
    ] {
        assert!(stdout.contains(option), "--help lacks {option}:\n{stdout}");
    }
    // Secrets are configured in the file only, never as flags.
    for secret in ["password", "token"] {
        assert!(
            !stdout.to_lowercase().contains(secret),
            "--help offers a {secret} flag:\n{stdout}"
        );
    }
}

#[test]
fn status_takes_the_options_of_run_and_a_format() {
    let (code, stdout, _) = run(&["status", "--help"]);
    assert_eq!(code, Some(0));
    for option in ["--config", "--source", "--target", "--name", "--format"] {
        assert!(
            stdout.contains(option),
            "status --help lacks {option}:\n{stdout}"
        );
    }
}

#[test]
fn verify_takes_the_options_of_run_a_format_and_a_sample() {
    let (code, stdout, _) = run(&["verify", "--help"]);
    assert_eq!(code, Some(0));
    for option in [
        "--config", "--source", "--target", "--topics", "--format", "--sample",
    ] {
        assert!(
            stdout.contains(option),
            "verify --help lacks {option}:\n{stdout}"
        );
    }
    let (code, _, stderr) = run(&[
        "verify", "--source", "a:9092", "--target", "b:9092", "--sample", "0",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--sample"), "{stderr}");
}

#[test]
fn an_unknown_config_key_is_named() {
    let path = config_file(
        "unknown",
        "[source]\nbootstrap_servers = \"127.0.0.1:9092\"\n[target]\nbootstrap_servers = \"127.0.0.1:9093\"\n\
         [replication]\nfetch_max_byte = 1024\n",
    );
    let (code, _, stderr) = run(&["run", "--config", &path]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("unknown field `fetch_max_byte`"),
        "{stderr}"
    );
    assert!(stderr.contains(&path), "the error names the file: {stderr}");
}

#[test]
fn a_broken_config_never_shows_the_password() {
    let head = "[source]\nbootstrap_servers = \"127.0.0.1:9092\"\n[target]\n\
                bootstrap_servers = \"127.0.0.1:9093\"\n[source.sasl]\nmechanism = \"PLAIN\"\n\
                username = \"mirror\"\n";
    for (name, line, key) in [
        (
            "misspelled",
            "pasword = \"cli-s3cr3t-pw\"",
            "source.sasl.pasword",
        ),
        (
            "syntax",
            "password = \"cli-s3cr3t-pw",
            "source.sasl.password",
        ),
    ] {
        let path = config_file(name, &format!("{head}{line}\n"));
        let (code, _, stderr) = run(&["run", "--config", &path]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(!stderr.contains("cli-s3cr3t-pw"), "{stderr}");
        assert!(
            stderr.contains(&format!("config file {path}, line 8, column "))
                && stderr.contains(&format!("key `{key}`")),
            "{stderr}"
        );
    }
}

#[test]
fn plain_over_plaintext_is_warned_about_once() {
    let path = config_file(
        "plain-over-plaintext",
        "[source]\nbootstrap_servers = \"127.0.0.1:1\"\n[target]\nbootstrap_servers = \"127.0.0.1:2\"\n\
         [source.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"cli-pl41n-pw\"\n",
    );
    let (code, _, stderr) = run(&["run", "--config", &path, "--until-caught-up"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr
            .matches("SASL PLAIN over a plaintext connection")
            .count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("cli-pl41n-pw"), "{stderr}");
}

#[test]
fn invalid_values_name_their_key() {
    let path = config_file(
        "invalid",
        "[source]\nbootstrap_servers = \"127.0.0.1:9092\"\n[target]\nbootstrap_servers = \"127.0.0.1:9093\"\n\
         [topics]\ninclude = \"orders(\"\n",
    );
    let (code, _, stderr) = run(&["run", "--config", &path]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("config key `topics.include`: not a valid regex"),
        "{stderr}"
    );

    // --groups is groups.include, checked as the file's key would be.
    let (code, _, stderr) = run(&[
        "run",
        "--source",
        "127.0.0.1:1",
        "--target",
        "127.0.0.1:2",
        "--groups",
        "app-(",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("config key `groups.include`: not a valid regex"),
        "{stderr}"
    );

    // Only a transactional id fences the instance a non-sharing one takes over from.
    let path = config_file("unshared", "[instances]\nshare = false\n");
    let (code, _, stderr) = run(&[
        "run", "--config", &path, "--source", "a:1", "--target", "b:2",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("config key `instances.share`: false needs replication.exactly_once"),
        "{stderr}"
    );

    let (code, _, stderr) = run(&["run", "--source", "127.0.0.1:9092"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("target.bootstrap_servers"), "{stderr}");

    let (code, _, stderr) = run(&[
        "run",
        "--source",
        "a:1",
        "--target",
        "b:2",
        "--on-data-loss",
        "maybe",
    ]);
    assert_eq!(code, Some(2), "clap usage error");
    assert!(
        stderr.contains("`maybe` is not stop or continue"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_cluster_is_a_clear_error() {
    // Nothing listens on port 1 of the loopback address.
    let (code, _, stderr) = run(&[
        "run",
        "--source",
        "127.0.0.1:1",
        "--target",
        "127.0.0.1:2",
        "--until-caught-up",
    ]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("source cluster unreachable"), "{stderr}");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
}

#[test]
fn a_jks_trust_store_in_a_properties_file_is_refused_by_key() {
    let path = config_file(
        "jks.properties",
        "bootstrap.servers=127.0.0.1:9093\nsecurity.protocol=SSL\n\
         ssl.truststore.location=/etc/kafka/truststore.jks\nssl.truststore.type=JKS\n\
         ssl.truststore.password=changeit-s3cr3t\n",
    );
    let (code, _, stderr) = run(&[
        "run",
        "--source-properties",
        &path,
        "--target",
        "127.0.0.1:9094",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("ssl.truststore.type"), "{stderr}");
    assert!(stderr.contains("PEM"), "{stderr}");
    assert!(stderr.contains(&path), "the error names the file: {stderr}");
    assert!(!stderr.contains("changeit-s3cr3t"), "{stderr}");
}

#[test]
fn one_flow_flags_are_refused_with_a_flows_config() {
    let path = config_file(
        "flows",
        "[clusters.a]\nbootstrap_servers = \"127.0.0.1:1\"\n\
         [clusters.b]\nbootstrap_servers = \"127.0.0.1:2\"\n\
         [[flows]]\nsource = \"a\"\ntarget = \"b\"\n",
    );
    for flag in ["--source", "--topics", "--groups"] {
        let (code, _, stderr) = run(&["run", "--config", &path, flag, "x:1"]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("config key `{flag}`")) && stderr.contains("[[flows]]"),
            "{stderr}"
        );
    }
    let (code, _, stderr) = run(&["run", "--config", &path, "--in-flight-bytes", "10"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("replication.in_flight_bytes"),
        "flags common to all flows apply: {stderr}"
    );
}

#[test]
fn a_rate_it_cannot_read_is_refused_naming_it() {
    let (code, _, stderr) = run(&[
        "run",
        "--source",
        "127.0.0.1:1",
        "--target",
        "127.0.0.1:2",
        "--max-bytes-per-sec",
        "12XB",
    ]);
    assert_eq!(code, Some(2), "a usage error: {stderr}");
    assert!(
        stderr.contains("cannot read '12XB': unknown unit `XB`") && stderr.contains("40MiB"),
        "{stderr}"
    );
    let path = config_file("rate.toml", "[process]\nmax_bytes_per_sec = \"0MB\"\n");
    let (code, _, stderr) = run(&[
        "run",
        "--config",
        &path,
        "--source",
        "127.0.0.1:1",
        "--target",
        "127.0.0.1:2",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("process.max_bytes_per_sec")
            && stderr.contains("at least 1 byte per second"),
        "{stderr}"
    );
}

#[test]
fn a_tuning_file_takes_its_clusters_from_the_flags() {
    let path = config_file(
        "tuning.toml",
        "[replication]\nin_flight_bytes = 5\npartition_fetch_bytes = 4\n",
    );
    let run_with = |extra: &str| {
        let mut args = vec![
            "run",
            "--config",
            &path,
            "--source",
            "127.0.0.1:1",
            "--target",
            "127.0.0.1:2",
        ];
        args.extend(extra.split_whitespace());
        run(&args)
    };
    // The file's values are checked with the flags laid over them...
    let (code, _, stderr) = run_with("--in-flight-bytes 3");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("replication.in_flight_bytes"), "{stderr}");
    // ...and a valid combination gets as far as the (unreachable) source.
    let (code, _, stderr) = run_with("--until-caught-up");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("source cluster unreachable"), "{stderr}");
}
