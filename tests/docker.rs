//! docker/ checked without a Docker engine: the compose files are loaded by
//! compose-go (the loader of `docker compose`) and the Dockerfile by BuildKit's
//! parser and linter, both through `docker/check` (Go, from the module proxy).
//! Then what a reader of those files relies on is asserted: the image builds
//! the binary these tests run and runs it as a non-root user with the mounted
//! config; each topology's config loads and validates, and names clusters
//! that the compose file runs and waits for.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use kafka_mirror::config::MirrorConfig;
use serde_json::Value;

const TOPOLOGIES: [&str; 3] = [
    "active-passive.yml",
    "active-active.yml",
    "hub-and-spokes.yml",
];
/// Where the image's default command reads its config.
const CONFIG_IN_IMAGE: &str = "/etc/kafka-mirror/kafka-mirror.toml";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `docker/check` and parses its JSON.
fn check(args: &[&str]) -> Value {
    let output = Command::new("go")
        .args(["run", "."])
        .args(args)
        .current_dir(repo().join("docker/check"))
        .output()
        .expect("run `go` (Go is needed to check docker/)");
    assert!(
        output.status.success(),
        "docker/check {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("docker/check prints JSON")
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn the_image_builds_and_runs_the_tested_binary_as_non_root() {
    let dockerfile = repo().join("docker/Dockerfile");
    let parsed = check(&["dockerfile", dockerfile.to_str().expect("utf-8 path")]);
    assert_eq!(
        strings(&parsed["warnings"]),
        Vec::<&str>::new(),
        "BuildKit's linter"
    );
    let stages = parsed["stages"].as_array().expect("stages");
    let [build, runtime] = &stages[..] else {
        panic!("a build stage and a runtime stage: {stages:?}");
    };
    let instructions = |stage: &Value, keyword: &str| -> Vec<Value> {
        stage["instructions"]
            .as_array()
            .expect("instructions")
            .iter()
            .filter(|i| i["keyword"] == keyword)
            .cloned()
            .collect()
    };

    // The build stage compiles the binary target these tests run.
    let tested = Path::new(env!("CARGO_BIN_EXE_kafka-mirror"))
        .file_name()
        .and_then(|n| n.to_str())
        .expect("binary name");
    let builds: Vec<String> = instructions(build, "RUN")
        .iter()
        .flat_map(|i| strings(&i["args"]).into_iter().map(str::to_owned))
        .filter(|command| command.contains("cargo build"))
        .collect();
    assert_eq!(builds.len(), 1, "{builds:?}");
    for part in ["--release", "--locked", &format!("--bin {tested}")] {
        assert!(builds[0].contains(part), "`{part}` in {}", builds[0]);
    }
    assert!(builds[0].contains(&format!("cp \"target/$target/release/{tested}\" /{tested}")));

    // The runtime stage copies exactly that file and runs it.
    let build_name = build["name"].as_str().expect("named build stage");
    let copies = instructions(runtime, "COPY");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(
        strings(&copies[0]["flags"]),
        [format!("--from={build_name}")]
    );
    let [from, to] = strings(&copies[0]["args"])[..] else {
        panic!("COPY source and destination: {:?}", copies[0]);
    };
    assert_eq!(from, format!("/{tested}"));
    let entrypoint = instructions(runtime, "ENTRYPOINT");
    assert_eq!(
        strings(&entrypoint[0]["args"]),
        [to],
        "ENTRYPOINT runs the copied binary"
    );
    assert_eq!(
        entrypoint[0]["json"], true,
        "exec form: signals reach the mirror"
    );
    let cmd = instructions(runtime, "CMD");
    assert_eq!(
        strings(&cmd[0]["args"]),
        ["run", "--config", CONFIG_IN_IMAGE]
    );

    let user = instructions(runtime, "USER");
    let user = strings(&user.last().expect("a USER line")["args"])[0];
    assert!(
        !matches!(user.split(':').next(), Some("root" | "0")),
        "runs as {user}"
    );
    let base = runtime["base"].as_str().expect("base image");
    assert!(
        base.contains("distroless/static"),
        "static runtime base: {base}"
    );

    // The binary itself answers like the image's smoke test expects.
    let version = Command::new(env!("CARGO_BIN_EXE_kafka-mirror"))
        .arg("--version")
        .output()
        .expect("run kafka-mirror --version");
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("kafka-mirror "));
}

#[test]
fn each_topology_runs_its_clusters_and_a_valid_mirror_config() {
    let files: Vec<String> = TOPOLOGIES
        .iter()
        .map(|f| repo().join("docker/compose").join(f).display().to_string())
        .collect();
    let mut args = vec!["compose"];
    args.extend(files.iter().map(String::as_str));
    let projects = check(&args);
    let mut cluster_ids = BTreeSet::new();

    for file in TOPOLOGIES {
        let services = projects[file]["services"]
            .as_object()
            .unwrap_or_else(|| panic!("{file}: services"));
        let mirror = &services["mirror"];
        assert_eq!(
            Path::new(mirror["build"]["context"].as_str().expect("build context")),
            repo(),
            "{file}: builds from the repository root"
        );
        assert_eq!(mirror["build"]["dockerfile"], "docker/Dockerfile", "{file}");
        assert_eq!(mirror["read_only"], true, "{file}");

        // The mounted config is the image's default config path, and valid.
        let volumes = mirror["volumes"].as_array().expect("volumes");
        let config = volumes
            .iter()
            .find(|v| v["target"] == CONFIG_IN_IMAGE)
            .unwrap_or_else(|| panic!("{file}: a volume at {CONFIG_IN_IMAGE}"));
        assert_eq!(
            config["read_only"], true,
            "{file}: config mounted read-only"
        );
        let path = Path::new(config["source"].as_str().expect("volume source"));
        let loaded =
            MirrorConfig::from_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        loaded
            .validate()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let flows = loaded
            .flows()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!flows.is_empty(), "{}: flows", path.display());

        // Every cluster the config names is a Kafka service of this file that
        // advertises that address and that the mirror waits for.
        for (alias, cluster) in &loaded.clusters {
            let (host, port) = cluster
                .bootstrap_servers
                .split_once(':')
                .unwrap_or_else(|| panic!("{file}: {alias} has host:port"));
            let kafka = services
                .get(host)
                .unwrap_or_else(|| panic!("{file}: no service `{host}` for cluster {alias}"));
            let environment = &kafka["environment"];
            assert_eq!(
                environment["KAFKA_ADVERTISED_LISTENERS"],
                format!("PLAINTEXT://{host}:{port}"),
                "{file}: {host} advertises the address the mirror uses"
            );
            assert!(
                cluster_ids.insert(
                    environment["CLUSTER_ID"]
                        .as_str()
                        .expect("CLUSTER_ID")
                        .to_owned()
                ),
                "{file}: {host} has a cluster id of its own"
            );
            assert_eq!(
                mirror["depends_on"][host]["condition"], "service_healthy",
                "{file}: the mirror waits for {host}"
            );
            assert!(
                kafka["healthcheck"]["test"].is_array(),
                "{file}: {host} has a health check"
            );
        }
    }
}
