//! docker/ checked without a Docker engine: the compose files are loaded by
//! compose-go (the loader of `docker compose`) and the Dockerfile by BuildKit's
//! parser and linter, both through `docker/check` (Go, from the module proxy).
//! Then what a reader of those files relies on is asserted: the image builds
//! the binary these tests run and runs it as a non-root user with the mounted
//! config; each topology's config loads and validates, and names clusters
//! that the compose file runs and waits for.

use std::collections::{BTreeMap, BTreeSet};
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

/// A metric as README.md's "### Metrics" table lists it.
#[derive(Debug)]
struct Metric {
    kind: String,
    labels: BTreeSet<String>,
}

/// README.md's "### Metrics" table: the backticked name in the first column,
/// then the type and the labels (comma-separated).
fn readme_metrics() -> BTreeMap<String, Metric> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let rows = readme
        .lines()
        .skip_while(|line| line.trim() != "### Metrics")
        .skip(1)
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2); // the header and its separator
    let mut metrics = BTreeMap::new();
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let [name, kind, labels, ..] = cells[..] else {
            panic!("README metrics row without name, type and labels: {row}");
        };
        let name = name
            .strip_prefix('`')
            .and_then(|n| n.strip_suffix('`'))
            .unwrap_or_else(|| panic!("README metrics row: the name in backticks: {row}"));
        let labels = labels
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        let metric = Metric {
            kind: kind.trim_matches('`').to_owned(),
            labels,
        };
        assert!(
            metrics.insert(name.to_owned(), metric).is_none(),
            "{name} twice"
        );
    }
    assert!(!metrics.is_empty(), "README.md has a ### Metrics table");
    metrics
}

/// Metrics of the README table the dashboard need not show (none yet: a new
/// metric gets a panel, or a line here saying why not).
const NOT_ON_THE_DASHBOARD: [&str; 0] = [];

/// Labels every scraped series carries besides its own (Prometheus adds them).
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// The README metric a PromQL name reads, and the labels it carries: the
/// metric itself, or a histogram's `_bucket` (with `le`), `_sum` or `_count`.
fn resolve<'a>(name: &str, metrics: &'a BTreeMap<String, Metric>) -> (&'a str, BTreeSet<String>) {
    let found = metrics.get_key_value(name).or_else(|| {
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            metrics
                .get_key_value(base)
                .filter(|(_, metric)| metric.kind == "histogram")
        })
    });
    let Some((base, metric)) = found else {
        panic!("the dashboard reads `{name}`, which README.md's ### Metrics table does not list");
    };
    if metric.kind == "histogram" {
        assert_ne!(
            name, base,
            "a histogram is read as {base}_bucket, _sum or _count"
        );
    }
    let mut labels = metric.labels.clone();
    labels.extend(TARGET_LABELS.map(str::to_owned));
    if name.ends_with("_bucket") {
        labels.insert("le".to_owned());
    }
    (base.as_str(), labels)
}

/// Checks one metric a query reads against the README table; returns the
/// README name and the labels the series carry.
fn check_use(
    context: &str,
    used: &Value,
    metrics: &BTreeMap<String, Metric>,
) -> (String, BTreeSet<String>) {
    let name = used["name"].as_str().expect("metric name");
    let (base, labels) = resolve(name, metrics);
    let kind = metrics[base].kind.as_str();
    let function = used["range_function"].as_str().unwrap_or_default();
    let per_second = matches!(function, "rate" | "irate" | "increase");
    match kind {
        "counter" | "histogram" => assert!(
            per_second,
            "{context}: {kind} {name} is read through rate() or increase(), not `{function}`"
        ),
        "gauge" => assert!(
            !per_second,
            "{context}: gauge {name} is read as it is, not through {function}()"
        ),
        other => panic!("README.md: `{base}` has type `{other}`"),
    }
    for label in strings(&used["labels"]) {
        assert!(
            labels.contains(label),
            "{context}: {name} has no label `{label}` (README: {labels:?})"
        );
    }
    (base.to_owned(), labels)
}

#[test]
fn the_dashboard_reads_only_metrics_the_readme_lists() {
    let metrics = readme_metrics();
    let file = repo().join("docker/grafana/dashboards/kafka-mirror.json");
    let dashboard = check(&["dashboard", file.to_str().expect("utf-8 path")]);
    let mut shown = BTreeSet::new();

    let variables = dashboard["variables"].as_array().expect("variables");
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
        "a data source variable, so the dashboard imports into any Grafana"
    );
    for variable in variables {
        let context = format!("variable {}", variable["name"]);
        for used in variable["metrics"].as_array().expect("metrics") {
            check_use(&context, used, &metrics);
        }
    }

    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    for panel in panels {
        let context = format!("panel {}", panel["title"]);
        assert_eq!(panel["datasource"], "${datasource}", "{context}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{context}: queries");
        for target in targets {
            let mut labels = BTreeSet::new();
            for used in target["metrics"].as_array().expect("metrics") {
                let (base, carried) = check_use(&context, used, &metrics);
                shown.insert(base);
                labels.extend(carried);
            }
            // {{label}} in the legend names a label the series carry.
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            for label in legend
                .split("{{")
                .skip(1)
                .filter_map(|s| s.split_once("}}"))
            {
                assert!(
                    labels.contains(label.0.trim()),
                    "{context}: legend `{legend}` names `{}`, which its series lack",
                    label.0
                );
            }
        }
    }

    let missing: Vec<&String> = metrics
        .keys()
        .filter(|name| !shown.contains(*name) && !NOT_ON_THE_DASHBOARD.contains(&name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "README metrics the dashboard does not show: {missing:?}"
    );
}
