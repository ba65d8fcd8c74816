//! The Prometheus metrics: a `prometheus-client` registry whose flow,
//! topic and partition series are rendered from the board at each scrape
//! (a collector, so partitions that moved to another instance simply
//! disappear), and whose request histograms and reconnect counters are
//! observed where requests complete (the process-wide [`requests`]).
//!
//! Names follow OpenMetrics: the `kafka_mirror_` prefix, base units
//! (seconds, bytes), `_total` counters. The README's "### Metrics" table
//! lists them; a test keeps the two equal.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::board::{Board, FlowPhase, FlowView, PartitionState, PartitionView};
use crate::cluster::Role;

/// The content type of [`Metrics::render`]'s text (OpenMetrics).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the metrics show.
#[derive(Debug, Clone, Copy)]
pub struct MetricsOptions {
    /// Series per partition; off for very many partitions (the per-topic
    /// aggregates stay).
    pub partition_metrics: bool,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions {
            partition_metrics: true,
        }
    }
}

/// The process's metrics, rendered on each scrape.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// The metrics of the flows on `board`, and of every request.
    pub fn new(board: Board, options: MetricsOptions) -> Self {
        let mut registry = Registry::with_prefix("kafka_mirror");
        let requests = requests();
        registry.register(
            "request_duration_seconds",
            "Time from sending a Fetch or Produce request to its answer, per broker",
            requests.duration.clone(),
        );
        registry.register(
            "reconnects",
            "Connections to a broker opened again after one was lost",
            requests.reconnects.clone(),
        );
        registry.register_collector(Box::new(BoardCollector { board, options }));
        Metrics { registry }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Which requests [`RequestMetrics::completed`] times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    Fetch,
    Produce,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BrokerLabels {
    cluster: Role,
    broker: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RequestLabels {
    broker: BrokerLabels,
    api: Api,
}

impl EncodeLabelSet for BrokerLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), fmt::Error> {
        let cluster = self.cluster.to_string();
        let broker = self.broker.to_string();
        [("cluster", cluster.as_str()), ("broker", broker.as_str())].encode(encoder)
    }
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), fmt::Error> {
        self.broker.encode(encoder)?;
        let api = match self.api {
            Api::Fetch => "fetch",
            Api::Produce => "produce",
        };
        [("api", api)].encode(encoder)
    }
}

type Durations = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// Request latencies and reconnects, observed where they happen: one set
/// per process, whatever flow or cluster the request was for.
#[derive(Debug)]
pub struct RequestMetrics {
    duration: Durations,
    reconnects: Family<BrokerLabels, Counter>,
}

impl RequestMetrics {
    /// A Fetch or Produce request to `broker` of the `cluster` side was
    /// answered (or failed) `elapsed` after it was sent.
    pub fn completed(&self, cluster: Role, broker: i32, api: Api, elapsed: Duration) {
        let labels = RequestLabels {
            broker: BrokerLabels { cluster, broker },
            api,
        };
        self.duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// A lost connection to `broker` was opened again.
    pub fn reconnected(&self, cluster: Role, broker: i32) {
        self.reconnects
            .get_or_create(&BrokerLabels { cluster, broker })
            .inc();
    }
}

/// The process's request metrics.
pub fn requests() -> &'static RequestMetrics {
    static REQUESTS: LazyLock<RequestMetrics> = LazyLock::new(|| RequestMetrics {
        // 1 ms to about 33 s.
        duration: Durations::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        }),
        reconnects: Family::default(),
    });
    &REQUESTS
}

/// Renders the board's flows at each scrape.
#[derive(Debug)]
struct BoardCollector {
    board: Board,
    options: MetricsOptions,
}

/// One metric family: its name (without the prefix, nor `_total`), help
/// and samples.
struct Series<'a> {
    name: &'a str,
    help: &'a str,
    kind: MetricType,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl<'a> Series<'a> {
    fn new(name: &'a str, kind: MetricType, help: &'a str) -> Self {
        Series {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push((labels, value));
    }

    fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let mut family = encoder.encode_descriptor(self.name, self.help, None, self.kind)?;
        for (labels, value) in &self.samples {
            let sample = family.encode_family(labels)?;
            match self.kind {
                MetricType::Counter => ConstCounter::new(*value).encode(sample)?,
                _ => ConstGauge::new(*value).encode(sample)?,
            }
        }
        Ok(())
    }
}

fn labels(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs
        .iter()
        .map(|(key, value)| (*key, (*value).to_owned()))
        .collect()
}

impl Collector for BoardCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        use MetricType::{Counter as C, Gauge as G};
        let flows = self.board.flows();
        let mut lag_records = Series::new(
            "partition_lag_records",
            G,
            "Records between the source's end (high watermark, or last stable offset under read_committed) and the next offset to copy",
        );
        let mut lag_seconds = Series::new(
            "partition_lag_seconds",
            G,
            "Age of the oldest record not yet copied (0 when caught up)",
        );
        let mut stopped = Series::new(
            "partition_stopped",
            G,
            "1 when the partition stopped with an error an operator must act on",
        );
        let mut topic_lag_records = Series::new(
            "topic_lag_records",
            G,
            "Records left to copy, summed over the topic's partitions",
        );
        let mut topic_lag_seconds = Series::new(
            "topic_lag_seconds",
            G,
            "Age of the oldest record not yet copied of the topic's partitions",
        );
        let mut topic_stopped = Series::new(
            "topic_partitions_stopped",
            G,
            "Partitions of the topic stopped with an error",
        );
        let mut records = Series::new("records_copied", C, "Records the target acknowledged");
        let mut bytes = Series::new(
            "bytes_copied",
            C,
            "Record batch bytes the target acknowledged",
        );
        let mut reencoded = Series::new(
            "batches_reencoded",
            C,
            "Batches re-encoded before forwarding, by reason",
        );
        let mut skipped = Series::new("batches_skipped", C, "Batches not forwarded, by kind");
        let mut ready = Series::new(
            "flow_ready",
            G,
            "1 when the flow reached both clusters, loaded its checkpoints and has no stopped partition",
        );
        let mut paused = Series::new("flow_paused", G, "1 while the flow is paused");
        let mut throttle = Series::new(
            "throttle_bytes_per_second",
            G,
            "The flow's bandwidth limit (0 when unthrottled)",
        );
        let mut in_flight = Series::new(
            "in_flight_bytes",
            G,
            "Bytes fetched and not yet checkpointed, held against the memory budget",
        );
        let mut budget = Series::new("in_flight_budget_bytes", G, "The flow's memory budget");
        let mut checkpoint_age = Series::new(
            "checkpoint_age_seconds",
            G,
            "Time since the flow's checkpoints were last stored",
        );
        let mut group_sync_age = Series::new(
            "group_sync_age_seconds",
            G,
            "Time since the flow's consumer group offsets were last synced",
        );
        let mut retries = Series::new(
            "retries",
            C,
            "Requests and batches sent again after a failure, by kind",
        );
        let mut errors = Series::new(
            "errors",
            C,
            "Failed requests and stopped partitions, by kind",
        );
        let mut transactions =
            Series::new("transactions", C, "Exactly-once transactions, by outcome");
        for flow in &flows {
            let f = flow.name.as_str();
            let by_topic = topic_lags(flow);
            for partition in flow.partitions.iter().filter(|p| is_ours(p)) {
                if !self.options.partition_metrics {
                    break;
                }
                let number = partition.partition.to_string();
                let at = labels(&[
                    ("flow", f),
                    ("topic", &partition.topic),
                    ("partition", &number),
                ]);
                if let Some(lag) = partition.lag_records {
                    lag_records.add(at.clone(), lag as f64);
                }
                if let Some(lag) = partition.lag_seconds {
                    lag_seconds.add(at.clone(), lag);
                }
                stopped.add(at, f64::from(u8::from(is_stopped(partition))));
            }
            for (topic, lag) in &by_topic {
                let at = labels(&[("flow", f), ("topic", topic)]);
                topic_lag_records.add(at.clone(), lag.records as f64);
                topic_lag_seconds.add(at.clone(), lag.seconds);
                topic_stopped.add(at, lag.stopped as f64);
            }
            for totals in &flow.topics {
                let t = totals.topic.as_str();
                let at = labels(&[("flow", f), ("topic", t)]);
                records.add(at.clone(), totals.records as f64);
                bytes.add(at, totals.bytes as f64);
                for (reason, count) in [
                    ("compacted", totals.reencoded),
                    ("up_converted", totals.up_converted),
                ] {
                    reencoded.add(
                        labels(&[("flow", f), ("topic", t), ("reason", reason)]),
                        count as f64,
                    );
                }
                for (kind, count) in [
                    ("control", totals.skipped_control),
                    ("aborted", totals.skipped_aborted),
                    ("empty", totals.skipped_empty),
                    ("refused", totals.skipped_refused),
                ] {
                    skipped.add(
                        labels(&[("flow", f), ("topic", t), ("kind", kind)]),
                        count as f64,
                    );
                }
            }
            let at = labels(&[("flow", f)]);
            ready.add(
                at.clone(),
                f64::from(u8::from(flow.ready_reasons.is_empty())),
            );
            paused.add(
                at.clone(),
                f64::from(u8::from(flow.phase == FlowPhase::Paused)),
            );
            throttle.add(at.clone(), flow.throttle_bytes_per_sec.unwrap_or(0) as f64);
            in_flight.add(at.clone(), flow.in_flight_bytes as f64);
            budget.add(at.clone(), flow.budget_bytes as f64);
            if let Some(age) = flow.checkpoint_age {
                checkpoint_age.add(at.clone(), age.as_secs_f64());
            }
            if let Some(age) = flow.group_sync_age {
                group_sync_age.add(at.clone(), age.as_secs_f64());
            }
            for (kind, count) in &flow.retries {
                retries.add(labels(&[("flow", f), ("kind", kind)]), *count as f64);
            }
            for (kind, count) in &flow.errors {
                errors.add(labels(&[("flow", f), ("kind", kind)]), *count as f64);
            }
            let t = flow.transactions;
            for (outcome, count) in [("committed", t.committed), ("aborted", t.aborted)] {
                transactions.add(labels(&[("flow", f), ("outcome", outcome)]), count as f64);
            }
        }
        for series in [
            lag_records,
            lag_seconds,
            stopped,
            topic_lag_records,
            topic_lag_seconds,
            topic_stopped,
            records,
            bytes,
            reencoded,
            skipped,
            ready,
            paused,
            throttle,
            in_flight,
            budget,
            checkpoint_age,
            group_sync_age,
            retries,
            errors,
            transactions,
        ] {
            series.encode(&mut encoder)?;
        }
        Ok(())
    }
}

/// A topic's lag: records summed, seconds the most of its partitions.
#[derive(Debug, Default)]
struct TopicLag {
    records: u64,
    seconds: f64,
    stopped: u64,
}

/// Partitions another instance copies are not this process's to report.
fn is_ours(partition: &PartitionView) -> bool {
    partition.state != PartitionState::Unowned
}

fn is_stopped(partition: &PartitionView) -> bool {
    matches!(partition.state, PartitionState::Stopped { .. })
}

fn topic_lags(flow: &FlowView) -> std::collections::BTreeMap<&str, TopicLag> {
    let mut topics: std::collections::BTreeMap<&str, TopicLag> = Default::default();
    for partition in flow.partitions.iter().filter(|p| is_ours(p)) {
        let lag = topics.entry(&partition.topic).or_default();
        lag.records += partition.lag_records.unwrap_or(0);
        lag.seconds = lag.seconds.max(partition.lag_seconds.unwrap_or(0.0));
        lag.stopped += u64::from(is_stopped(partition));
    }
    topics
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::board::{FlowView, PartitionView, TopicTotals};

    fn partition(number: i32, state: PartitionState, lag: u64) -> PartitionView {
        PartitionView {
            topic: "orders".into(),
            partition: number,
            state,
            next_offset: 0,
            end_offset: Some(lag as i64),
            lag_records: Some(lag),
            lag_seconds: Some(lag as f64 / 10.0),
            owner: None,
        }
    }

    /// A board with one running flow: two of its partitions copied here,
    /// one stopped, one another instance's.
    fn board() -> Board {
        let board = Board::new();
        let handle = board.register("dr");
        let mut view = FlowView::starting("dr");
        view.phase = FlowPhase::Running;
        view.ready_reasons = vec!["partition orders-2 stopped: gone".into()];
        view.partitions = vec![
            partition(0, PartitionState::Copying, 30),
            partition(1, PartitionState::CaughtUp, 0),
            partition(
                2,
                PartitionState::Stopped {
                    error: "gone".into(),
                },
                5,
            ),
            partition(3, PartitionState::Unowned, 99),
        ];
        view.topics = vec![TopicTotals {
            topic: "orders".into(),
            records: 70,
            reencoded: 2,
            ..TopicTotals::default()
        }];
        view.checkpoint_age = Some(Duration::from_secs(2));
        view.group_sync_age = Some(Duration::from_secs(3));
        view.retries.insert("fetch".into(), 1);
        view.errors.insert("fetch".into(), 1);
        handle.publish(view);
        requests().completed(Role::Source, 1, Api::Fetch, Duration::from_millis(3));
        requests().reconnected(Role::Target, 2);
        board
    }

    /// Each sample line of `text` whose name and labels contain every one
    /// of `parts`: its value.
    fn sample(text: &str, parts: &[&str]) -> Vec<f64> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| parts.iter().all(|part| line.contains(part)))
            .map(|line| line.rsplit(' ').next().unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn partitions_and_topics_are_rendered_from_the_board_at_each_scrape() {
        let board = board();
        let text = Metrics::new(board.clone(), MetricsOptions::default())
            .render()
            .unwrap();
        let lag = "kafka_mirror_partition_lag_records{";
        assert_eq!(sample(&text, &[lag, "partition=\"0\""]), [30.0]);
        assert_eq!(sample(&text, &[lag, "partition=\"1\""]), [0.0]);
        // Another instance's partition is not this one's to report.
        assert!(sample(&text, &[lag, "partition=\"3\""]).is_empty());
        assert_eq!(
            sample(
                &text,
                &["kafka_mirror_partition_stopped{", "partition=\"2\""]
            ),
            [1.0]
        );
        assert_eq!(
            sample(
                &text,
                &["kafka_mirror_topic_lag_records{", "topic=\"orders\""]
            ),
            [35.0]
        );
        assert_eq!(sample(&text, &["kafka_mirror_topic_lag_seconds{"]), [3.0]);
        assert_eq!(
            sample(&text, &["kafka_mirror_records_copied_total{"]),
            [70.0]
        );
        assert_eq!(
            sample(
                &text,
                &["kafka_mirror_batches_reencoded_total{", "compacted"]
            ),
            [2.0]
        );
        assert_eq!(sample(&text, &["kafka_mirror_flow_ready{"]), [0.0]);
        let fetches = sample(
            &text,
            &[
                "kafka_mirror_request_duration_seconds_count{",
                "cluster=\"source\",broker=\"1\",api=\"fetch\"",
            ],
        );
        assert!(fetches[0] >= 1.0, "{text}");
        assert!(!sample(
            &text,
            &["kafka_mirror_reconnects_total{cluster=\"target\",broker=\"2\"}"]
        )
        .is_empty());
        assert!(text.ends_with("# EOF\n"));

        // The partition moves away: its series go with it.
        let mut view = (*board.flow("dr").unwrap()).clone();
        view.partitions.remove(0);
        board.register("dr").publish(view);
        let text = Metrics::new(board, MetricsOptions::default())
            .render()
            .unwrap();
        assert!(sample(&text, &[lag, "partition=\"0\""]).is_empty());
    }

    #[test]
    fn partition_series_can_be_turned_off_keeping_the_topics() {
        let options = MetricsOptions {
            partition_metrics: false,
        };
        let text = Metrics::new(board(), options).render().unwrap();
        assert!(!text.contains("partition=\""), "{text}");
        assert_eq!(sample(&text, &["kafka_mirror_topic_lag_records{"]), [35.0]);
        assert_eq!(
            sample(&text, &["kafka_mirror_topic_partitions_stopped{"]),
            [1.0]
        );
    }

    /// The metric names and types in `text`, as its `# TYPE` lines give
    /// them (counters with their `_total`).
    fn exposed(text: &str) -> Vec<(String, String)> {
        let mut metrics: Vec<(String, String)> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split_once(' '))
            .map(|(name, kind)| match kind {
                "counter" => (format!("{name}_total"), kind.to_owned()),
                _ => (name.to_owned(), kind.to_owned()),
            })
            .collect();
        metrics.sort();
        metrics
    }

    /// The README's "### Metrics" table: each row's backticked name and type.
    fn readme_table() -> Vec<(String, String)> {
        let readme = include_str!("../../README.md");
        let section = readme
            .split_once("\n### Metrics\n")
            .expect("README has a ### Metrics section")
            .1;
        let section = section.split("\n#").next().unwrap_or(section);
        let mut rows: Vec<(String, String)> = section
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .map(|row| {
                let (name, rest) = row.split_once('`').expect("a backticked name");
                let kind = rest.split('|').nth(1).expect("a type column").trim();
                (name.to_owned(), kind.to_owned())
            })
            .collect();
        rows.sort();
        rows
    }

    #[test]
    fn the_readme_lists_exactly_the_metrics_the_registry_renders() {
        let text = Metrics::new(board(), MetricsOptions::default())
            .render()
            .unwrap();
        let table = readme_table();
        assert_eq!(table.len(), 22, "{table:?}");
        assert_eq!(table, exposed(&text));
    }
}
