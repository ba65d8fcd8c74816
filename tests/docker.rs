//! docker/ checked without a Docker engine, a Kubernetes cluster, Prometheus
//! or Grafana: `docker/check` (Go, from the module proxy) reads the compose
//! files with compose-go (the loader of `docker compose`), the Dockerfile
//! with BuildKit's parser and linter, the Kubernetes example into the
//! k8s.io/api types (strict: unknown fields and wrong types fail), the
//! Prometheus config strictly with its documented keys and the Grafana dashboard
//! with Grafana's schema (the Foundation SDK's strict decoder) and its
//! queries with Prometheus's PromQL parser. Then what a reader of those
//! files relies on is asserted: the image builds the binary these tests run
//! and runs it as a non-root user with the mounted config; each topology's
//! config loads and validates, and names clusters that the compose file runs
//! and waits for; Prometheus scrapes the mirror where it listens and Grafana
//! shows the dashboard; the dashboard reads only metrics README.md lists,
//! as their types allow; the Kubernetes example's probes, secrets, config
//! and replicas fit together; and the binary accepts every command line the
//! examples give it.

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

/// Runs `docker/check`.
fn run_check(args: &[&str]) -> std::process::Output {
    Command::new("go")
        .args(["run", "."])
        .args(args)
        .current_dir(repo().join("docker/check"))
        .output()
        .expect("run `go` (Go is needed to check docker/)")
}

/// Runs `docker/check` and parses its JSON.
fn check(args: &[&str]) -> Value {
    let output = run_check(args);
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

/// The label names of a README labels cell: comma-separated, each may be
/// followed by its values in parentheses, as in "kind (fetch, produce)".
fn label_names(cell: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in cell.chars().chain([',']) {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                let name = current.trim().trim_matches('`');
                if !name.is_empty() {
                    names.insert(name.to_owned());
                }
                current.clear();
            }
            _ if depth == 0 => current.push(c),
            _ => {}
        }
    }
    names
}

/// README.md's "### Metrics" table: the backticked name in the first column,
/// then the type and the labels (see [`label_names`]).
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
        let labels = label_names(labels);
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

/// The port of the mirror's `--http HOST:PORT` in a command line, which
/// must listen on every interface (other containers reach it).
fn http_port(args: &[&str]) -> u16 {
    let at = args
        .iter()
        .position(|a| *a == "--http")
        .unwrap_or_else(|| panic!("--http in {args:?}"));
    let (host, port) = args[at + 1].rsplit_once(':').expect("--http HOST:PORT");
    assert_eq!(host, "0.0.0.0", "the endpoint listens beyond the container");
    port.parse().expect("--http port")
}

/// The volume of a compose service mounted at `target`, read-only.
fn mount<'a>(service: &'a Value, target: &str) -> &'a Path {
    let volume = service["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["target"] == target)
        .unwrap_or_else(|| panic!("a volume at {target}"));
    assert_eq!(volume["read_only"], true, "{target} mounted read-only");
    Path::new(volume["source"].as_str().expect("volume source"))
}

/// The Prometheus release whose PromQL parser docker/check uses: module
/// v0.3XX.Y is release v3.XX.Y.
fn checked_prometheus_version() -> String {
    let go_mod = std::fs::read_to_string(repo().join("docker/check/go.mod")).expect("go.mod");
    let module = go_mod
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("github.com/prometheus/prometheus v0.3")
        })
        .expect("docker/check requires github.com/prometheus/prometheus");
    let (minor, patch) = module.split_once('.').expect("v0.3XX.Y");
    let minor: u32 = minor.parse().expect("v0.3XX.Y");
    format!("v3.{minor}.{patch}")
}

#[test]
fn each_topology_scrapes_the_mirror_and_shows_the_dashboard() {
    let files: Vec<String> = TOPOLOGIES
        .iter()
        .map(|f| repo().join("docker/compose").join(f).display().to_string())
        .collect();
    let mut args = vec!["compose"];
    args.extend(files.iter().map(String::as_str));
    let projects = check(&args);

    for file in TOPOLOGIES {
        let services = &projects[file]["services"];
        let mirror = &services["mirror"];
        let port = http_port(&strings(&mirror["command"]));
        assert!(
            mirror["ports"].is_null(),
            "{file}: the mirror's endpoint (no authentication) stays off the host"
        );

        // Prometheus scrapes the mirror service at that port; the image
        // runs the version whose loader checks the config.
        let prometheus = &services["prometheus"];
        assert_eq!(
            prometheus["image"],
            format!("prom/prometheus:{}", checked_prometheus_version()),
            "{file}"
        );
        let config = mount(prometheus, "/etc/prometheus/prometheus.yml");
        let loaded = check(&["prometheus", config.to_str().expect("utf-8 path")]);
        let jobs = loaded["jobs"].as_array().expect("jobs");
        let job = jobs
            .iter()
            .find(|job| job["name"] == "kafka-mirror")
            .expect("a kafka-mirror job");
        assert_eq!(
            strings(&job["targets"]),
            [format!("mirror:{port}")],
            "{file}"
        );
        assert_eq!(job["metrics_path"], "/metrics");

        // Grafana's data source is that Prometheus, and its dashboards
        // provider reads the directory the dashboard is mounted in.
        let grafana = &services["grafana"];
        let provisioning = mount(grafana, "/etc/grafana/provisioning");
        let datasources = check(&[
            "provisioning",
            provisioning
                .join("datasources/prometheus.yml")
                .to_str()
                .expect("utf-8 path"),
        ]);
        let source = &datasources["datasources"][0];
        assert_eq!(source["type"], "prometheus");
        let url = source["url"].as_str().expect("url");
        let host = url
            .trim_start_matches("http://")
            .split(':')
            .next()
            .expect("host");
        assert!(
            services[host].is_object(),
            "{file}: data source {url} is a service"
        );
        assert!(
            url.ends_with(&format!(":{}", prometheus["ports"][0]["target"])),
            "{file}: {url} is Prometheus's port"
        );
        let providers = check(&[
            "provisioning",
            provisioning
                .join("dashboards/kafka-mirror.yml")
                .to_str()
                .expect("utf-8 path"),
        ]);
        let dashboards = mount(grafana, "/etc/grafana/dashboards");
        assert_eq!(
            providers["providers"][0]["options"]["path"],
            "/etc/grafana/dashboards"
        );
        let home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
            .as_str()
            .expect("a home dashboard");
        let home = home
            .strip_prefix("/etc/grafana/dashboards/")
            .expect("home dashboard in the mounted directory");
        assert!(dashboards.join(home).is_file(), "{file}: {home}");

        // What a person opens is on the host's loopback only.
        for service in ["prometheus", "grafana"] {
            for published in services[service]["ports"].as_array().expect("ports") {
                assert_eq!(published["host_ip"], "127.0.0.1", "{file}: {service}");
            }
        }
    }
}

/// Bytes of a Kubernetes memory quantity in binary units (`512Mi`, `1Gi`).
fn memory_bytes(quantity: &str) -> u64 {
    let units = [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)];
    let (number, unit) = units
        .iter()
        .find_map(|(suffix, unit)| Some((quantity.strip_suffix(suffix)?, unit)))
        .unwrap_or_else(|| panic!("memory in Ki, Mi or Gi: {quantity}"));
    number.parse::<u64>().expect("whole number") * unit
}

#[test]
fn the_kubernetes_example_runs_replicas_of_one_name_with_probes_and_secrets() {
    let directory = repo().join("docker/kubernetes");
    let mut files: Vec<String> = std::fs::read_dir(&directory)
        .expect("docker/kubernetes")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .map(|path| path.display().to_string())
        .collect();
    files.sort();
    let mut args = vec!["kubernetes"];
    args.extend(files.iter().map(String::as_str));
    let manifests = check(&args);
    let object = |kind: &str| -> Value {
        let found: Vec<&Value> = manifests
            .as_array()
            .expect("manifests")
            .iter()
            .filter(|m| m["kind"] == kind)
            .collect();
        assert_eq!(found.len(), 1, "one {kind}");
        found[0]["object"].clone()
    };
    let deployment = object("Deployment");
    let config_map = object("ConfigMap");
    let secret = object("Secret");
    let budget = object("PodDisruptionBudget");

    // Several replicas, selected by the labels their pods carry, and a
    // disruption budget over the same pods that lets one go at a time.
    let spec = &deployment["spec"];
    let replicas = spec["replicas"].as_u64().expect("replicas");
    assert!(replicas > 1, "replicas that share the partitions");
    let selector = spec["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    let pod = &spec["template"];
    for (key, value) in selector {
        assert_eq!(&pod["metadata"]["labels"][key], value, "pods carry {key}");
    }
    assert_eq!(budget["spec"]["selector"], spec["selector"]);
    assert_eq!(budget["spec"]["maxUnavailable"], 1);

    let containers = pod["spec"]["containers"].as_array().expect("containers");
    let [container] = &containers[..] else {
        panic!("one container: {containers:?}");
    };
    let args = strings(&container["args"]);
    assert_eq!(args[0], "run");
    let value_of = |flag: &str| -> &str {
        let at = args
            .iter()
            .position(|a| *a == flag)
            .unwrap_or_else(|| panic!("{flag} in {args:?}"));
        args[at + 1]
    };
    let env = |name: &str| -> Value {
        container["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("env {name}"))
            .clone()
    };

    // The config is the ConfigMap's file, mounted read-only, and valid.
    let config_path = Path::new(value_of("--config"));
    let mounted = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| config_path.starts_with(m["mountPath"].as_str().expect("mountPath")))
        .expect("the config's directory is mounted");
    assert_eq!(mounted["readOnly"], true);
    let volume = pod["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mounted["name"])
        .expect("the mounted volume");
    assert_eq!(volume["configMap"]["name"], config_map["metadata"]["name"]);
    let key = config_path
        .strip_prefix(mounted["mountPath"].as_str().expect("mountPath"))
        .expect("inside the mount")
        .to_str()
        .expect("utf-8");
    let text = config_map["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("the ConfigMap holds {key}"));
    let config = MirrorConfig::from_toml(text).unwrap_or_else(|e| panic!("{key}: {e}"));
    assert!(!config.flows().expect("flows").is_empty());

    // Each replica has an id of its own (its pod name), and none is set in
    // the config they share.
    assert_eq!(value_of("--instance-id"), "$(POD_NAME)");
    assert_eq!(
        env("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(config.instances.instance_id, None);

    // Every SASL password comes from a key of the Secret, through the
    // variable the config names.
    let clusters: Vec<&kafka_mirror::config::ClusterConfig> = config
        .source
        .iter()
        .chain(config.target.iter())
        .chain(config.clusters.values())
        .collect();
    for cluster in clusters {
        let sasl = cluster.sasl.as_ref().expect("SASL in the example");
        assert!(sasl.password.is_none(), "no password in the ConfigMap");
        let variable = sasl.password_env.as_deref().expect("password_env");
        let from = &env(variable)["valueFrom"]["secretKeyRef"];
        assert_eq!(from["name"], secret["metadata"]["name"], "{variable}");
        let key = from["key"].as_str().expect("key");
        assert!(
            secret["stringData"][key].is_string() || secret["data"][key].is_string(),
            "the Secret holds {key}"
        );
    }

    // The probes and Prometheus's annotations name the port --http listens on.
    let port = http_port(&args);
    let named = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["containerPort"] == port)
        .expect("the --http port is declared");
    for (probe, path) in [("livenessProbe", "/health"), ("readinessProbe", "/ready")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert!(
            get["port"] == named["name"] || get["port"] == port,
            "{probe} on the --http port"
        );
    }
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    // Time to land what is in flight and leave the group before SIGKILL;
    // memory for the in-flight budget.
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(grace * 1000 > config.replication.shutdown_timeout_ms);
    let resources = &container["resources"];
    for bound in ["requests", "limits"] {
        let memory = memory_bytes(resources[bound]["memory"].as_str().expect("memory"));
        assert!(
            memory > config.replication.in_flight_bytes as u64,
            "{bound}.memory above in_flight_bytes"
        );
        assert!(resources[bound]["cpu"].is_string(), "{bound}.cpu");
    }

    // Not root, nothing written, no privileges.
    let pod_security = &pod["spec"]["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true);
    assert_ne!(pod_security["runAsUser"], 0);
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
}

/// The command lines the compose files and the Kubernetes example give the
/// mirror use flags this binary has: clap reads every flag before `--help`
/// stops it, so an unknown one fails here (status 2) without connecting.
#[test]
fn the_example_command_lines_are_ones_the_binary_accepts() {
    let compose = repo().join("docker/compose/kafka.yml");
    let projects = check(&["compose", compose.to_str().expect("utf-8 path")]);
    let mut commands = vec![
        strings(&projects["kafka.yml"]["services"]["kafka-mirror"]["command"])
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>(),
    ];
    let deployment = repo().join("docker/kubernetes/deployment.yaml");
    let manifests = check(&["kubernetes", deployment.to_str().expect("utf-8 path")]);
    let container = &manifests[0]["object"]["spec"]["template"]["spec"]["containers"][0];
    commands.push(
        strings(&container["args"])
            .into_iter()
            // Kubernetes expands $(VAR) from the container's environment.
            .map(|arg| arg.replace("$(POD_NAME)", "kafka-mirror-0"))
            .collect(),
    );
    for command in commands {
        let output = Command::new(env!("CARGO_BIN_EXE_kafka-mirror"))
            .args(&command)
            .arg("--help")
            .output()
            .expect("run kafka-mirror");
        assert!(
            output.status.success(),
            "kafka-mirror {command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The checks are strict: a misspelt field, in a copy of the dashboard and of
/// the Deployment, fails them (so the tests above see what the tools see).
#[test]
fn a_misspelt_field_fails_the_checks() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let cases = [
        (
            "dashboard",
            "docker/grafana/dashboards/kafka-mirror.json",
            "\"legendFormat\"",
            "\"legendFromat\"",
            "unexpected field 'legendFromat'",
        ),
        (
            "kubernetes",
            "docker/kubernetes/deployment.yaml",
            "readOnlyRootFilesystem",
            "readOnlyRootFileSystem",
            "unknown field",
        ),
        (
            "prometheus",
            "docker/prometheus/prometheus.yml",
            "metrics_path",
            "metric_path",
            "field metric_path not found",
        ),
    ];
    for (kind, file, field, misspelt, error) in cases {
        let text = std::fs::read_to_string(repo().join(file)).expect(file);
        assert!(text.contains(field), "{file} has {field}");
        let copy = directory
            .path()
            .join(Path::new(file).file_name().expect("name"));
        std::fs::write(&copy, text.replacen(field, misspelt, 1)).expect("write the copy");
        let output = run_check(&[kind, copy.to_str().expect("utf-8 path")]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{kind} accepted {misspelt}");
        assert!(stderr.contains(error), "{kind}: {stderr}");
    }
}
