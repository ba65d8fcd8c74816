//! The HTTP endpoint against real brokers: lag per partition scraped with
//! the official Prometheus client's parser, readiness while the source is
//! down, a stopped partition in /ready, /status and its metric, pause and
//! resume, and the lag of a throttled mirror rising and falling.

mod common;

use std::time::Duration;

use common::*;
use kafka_testkit::{free_ports, http_request, HttpAnswer, MetricSample};

fn clusters() -> &'static Clusters {
    shared_clusters(&[], &[])
}

/// A mirror of `topic` serving its endpoint on a free port; `control`
/// allows pause and resume.
fn start_mirror(name: &str, topic: &str, control: bool) -> (RunningMirror, String) {
    let Clusters { source, target } = clusters();
    let port = free_ports(1).expect("a free port")[0];
    let address = format!("127.0.0.1:{port}");
    let mut args = run_args(source, target, name);
    args.extend([
        "--topics".into(),
        topic.into(),
        "--http".into(),
        address.clone(),
    ]);
    if control {
        let file = config_file(name, "[http]\ncontrol = true\n");
        args.extend(["--config".into(), file]);
    }
    let mirror = RunningMirror::spawn(mirror_command().args(&args));
    (mirror, format!("http://{address}"))
}

fn get(url: &str) -> HttpAnswer {
    http_request(url, false, false).unwrap_or_else(|e| panic!("GET {url}: {e:#}"))
}

/// Whether the endpoint answers at all yet.
fn answers(url: &str) -> bool {
    http_request(url, false, false).is_ok()
}

fn scrape(base: &str) -> Vec<MetricSample> {
    let answer = http_request(&format!("{base}/metrics"), false, true)
        .unwrap_or_else(|e| panic!("scrape {base}/metrics: {e:#}"));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer
            .content_type
            .starts_with("application/openmetrics-text"),
        "{}",
        answer.content_type
    );
    answer.samples
}

/// The value of sample `name` with these labels, if exposed.
fn value(samples: &[MetricSample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// Per partition: the lag in records, as scraped.
fn lags(samples: &[MetricSample], topic: &str) -> Vec<(String, f64)> {
    let mut lags: Vec<(String, f64)> = samples
        .iter()
        .filter(|s| s.name == "kafka_mirror_partition_lag_records")
        .filter(|s| s.labels.get("topic").map(String::as_str) == Some(topic))
        .map(|s| (s.labels["partition"].clone(), s.value))
        .collect();
    lags.sort_by(|a, b| a.0.cmp(&b.0));
    lags
}

/// Waits until every partition of `topic` (three) scrapes a lag of 0
/// records, checks each one's lag in seconds is 0 too, and returns that scrape.
fn wait_until_caught_up(
    mirror: &mut RunningMirror,
    base: &str,
    topic: &str,
    limit: Duration,
) -> Vec<MetricSample> {
    mirror.wait_until("lag 0 on every partition", limit, || {
        let lags = lags(&scrape(base), topic);
        lags.len() == 3 && lags.iter().all(|(_, lag)| *lag == 0.0)
    });
    let samples = scrape(base);
    for partition in ["0", "1", "2"] {
        let at = [("topic", topic), ("partition", partition)];
        assert_eq!(
            value(&samples, "kafka_mirror_partition_lag_seconds", &at),
            Some(0.0)
        );
    }
    samples
}

fn status_json(base: &str) -> serde_json::Value {
    let answer = get(&format!("{base}/status"));
    assert_eq!(answer.status, 200);
    serde_json::from_str(&answer.body).expect("status is JSON")
}

/// Lag per partition drops to 0 once everything is copied, and the copied
/// counts are exactly what librdkafka reads back; paused, nothing is
/// fetched, resumed, the rest is copied.
#[test]
fn lag_per_partition_falls_to_zero_and_pause_holds_the_copy() {
    let Clusters { source, target } = clusters();
    let topic = "observe-lag";
    source.create_topic(topic, 3, 1, &[]).expect("create topic");
    let written = produce_keyed(source, topic, 300, 3, "a", None);
    let (mut mirror, base) = start_mirror("observe-lag", topic, true);
    mirror.wait_until("the endpoint answers", Duration::from_secs(30), || {
        answers(&format!("{base}/health"))
    });
    let samples = wait_until_caught_up(&mut mirror, &base, topic, Duration::from_secs(30));
    for partition in ["0", "1", "2"] {
        let at = [("topic", topic), ("partition", partition)];
        assert_eq!(
            value(&samples, "kafka_mirror_partition_stopped", &at),
            Some(0.0)
        );
    }
    let copied = records_by_partition(&target.bootstrap(), topic);
    assert_eq!(copied.values().map(Vec::len).sum::<usize>(), written.len());
    assert_eq!(
        value(
            &samples,
            "kafka_mirror_records_copied_total",
            &[("topic", topic)]
        ),
        Some(written.len() as f64)
    );
    assert_eq!(
        value(
            &samples,
            "kafka_mirror_topic_lag_records",
            &[("topic", topic)]
        ),
        Some(0.0)
    );
    assert_eq!(value(&samples, "kafka_mirror_flow_ready", &[]), Some(1.0));
    let fetches = [("cluster", "source"), ("api", "fetch")];
    assert!(
        value(
            &samples,
            "kafka_mirror_request_duration_seconds_count",
            &fetches
        ) > Some(0.0)
    );
    assert_eq!(get(&format!("{base}/ready")).status, 200);

    let pause =
        http_request(&format!("{base}/flows/observe-lag/pause"), true, false).expect("POST pause");
    assert_eq!(
        (pause.status, pause.body.as_str()),
        (200, "flow `observe-lag` paused\n")
    );
    mirror.wait_until("the flow shows paused", Duration::from_secs(5), || {
        status_json(&base)["flows"][0]["phase"] == "paused"
    });
    // A Fetch sent before the pause still lands (at most fetch_max_wait_ms,
    // 500 ms, if the source has nothing new); none goes after it.
    std::thread::sleep(Duration::from_secs(1));
    let more = produce_keyed(source, topic, 60, 3, "b", None);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        copied_so_far(target, topic),
        written.len() as i64,
        "nothing is copied while paused"
    );
    let samples = scrape(&base);
    assert_eq!(value(&samples, "kafka_mirror_flow_paused", &[]), Some(1.0));
    // Paused is still ready: both clusters answer, nothing stopped.
    assert_eq!(get(&format!("{base}/ready")).status, 200);

    let resume = http_request(&format!("{base}/flows/observe-lag/resume"), true, false)
        .expect("POST resume");
    assert_eq!(resume.status, 200);
    mirror.wait_until("the rest copied", Duration::from_secs(30), || {
        let samples = scrape(&base);
        value(
            &samples,
            "kafka_mirror_records_copied_total",
            &[("topic", topic)],
        ) == Some((written.len() + more.len()) as f64)
            && lags(&samples, topic).iter().all(|(_, lag)| *lag == 0.0)
    });
    let copied = records_by_partition(&target.bootstrap(), topic);
    assert_eq!(
        copied.values().map(Vec::len).sum::<usize>(),
        written.len() + more.len()
    );
    terminate(mirror);
}

/// /ready says the source is down while it is, and is 200 again once it
/// is back.
#[test]
fn ready_is_503_while_the_source_cluster_is_down() {
    let Clusters { source, .. } = clusters();
    let topic = "observe-ready";
    source.create_topic(topic, 1, 1, &[]).expect("create topic");
    produce_keyed(source, topic, 10, 1, "a", None);
    let (mut mirror, base) = start_mirror("observe-ready", topic, false);
    let ready = format!("{base}/ready");
    mirror.wait_until("ready", Duration::from_secs(30), || {
        answers(&ready) && get(&ready).status == 200
    });
    source.kill_node(0).expect("stop the source");
    mirror.wait_until("not ready", Duration::from_secs(30), || {
        get(&ready).status == 503
    });
    let answer = get(&ready);
    assert!(
        answer
            .body
            .contains("flow `observe-ready`: the source cluster does not answer"),
        "{}",
        answer.body
    );
    assert_eq!(get(&format!("{base}/health")).status, 200);
    source.start_node(0).expect("start the source again");
    mirror.wait_until("ready again", Duration::from_secs(60), || {
        get(&ready).status == 200
    });
    terminate(mirror);
}

/// Records deleted on the source before they were copied stop the
/// partition; /ready, /status and the partition's metric say so.
#[test]
fn a_stopped_partition_shows_in_ready_status_and_its_metric() {
    let Clusters { source, .. } = clusters();
    let topic = "observe-loss";
    source.create_topic(topic, 2, 1, &[]).expect("create topic");
    produce_keyed(source, topic, 40, 2, "a", None);
    let Clusters { target, .. } = clusters();
    let mut args = run_args(source, target, "observe-loss");
    args.extend(["--topics".into(), topic.into()]);
    mirror_until_caught_up(&args);
    // Partition 0 gets 30 more records, deleted before they were copied.
    produce_keyed(source, topic, 30, 1, "b", None);
    source.delete_records(topic, 0, 50).expect("delete records");

    let (mut mirror, base) = start_mirror("observe-loss", topic, false);
    let ready = format!("{base}/ready");
    // Not ready while starting too: wait for the stopped partition itself.
    mirror.wait_until("partition 0 stopped", Duration::from_secs(30), || {
        answers(&ready) && get(&ready).body.contains("observe-loss-0 stopped")
    });
    assert_eq!(get(&ready).status, 503);
    let reasons = get(&ready).body;
    assert!(
        reasons.contains("flow `observe-loss`: partition observe-loss-0 stopped: source offsets 20..49 (30 offsets) of observe-loss-0 were deleted by the source before they were copied"),
        "{reasons}"
    );
    let status = status_json(&base);
    assert_eq!(status["ready"], false);
    let partitions = status["flows"][0]["partitions"]
        .as_array()
        .expect("partitions");
    let stopped = partitions
        .iter()
        .find(|p| p["partition"] == 0)
        .expect("partition 0");
    assert_eq!(stopped["state"]["kind"], "stopped", "{stopped}");
    assert!(
        stopped["state"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("deleted by the source")),
        "{stopped}"
    );
    let other = partitions
        .iter()
        .find(|p| p["partition"] == 1)
        .expect("partition 1");
    assert_eq!(other["state"]["kind"], "caught_up", "{other}");

    let samples = scrape(&base);
    let at = |partition| [("topic", topic), ("partition", partition)];
    assert_eq!(
        value(&samples, "kafka_mirror_partition_stopped", &at("0")),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "kafka_mirror_partition_stopped", &at("1")),
        Some(0.0)
    );
    assert_eq!(
        value(
            &samples,
            "kafka_mirror_topic_partitions_stopped",
            &[("topic", topic)]
        ),
        Some(1.0)
    );
    assert_eq!(value(&samples, "kafka_mirror_flow_ready", &[]), Some(0.0));
    terminate(mirror);
}

/// The rate the lag test's mirror is held to, in bytes per second.
const THROTTLE: u64 = 300_000;

/// Written faster than the throttle lets the mirror copy, the lag grows on
/// every partition; once writing stops, the throttled mirror catches up,
/// the lag falls to 0 and every record is on the target. Run as an
/// operator would: `kafka-mirror run --source S --target D --topics RE
/// --http HOST:PORT --max-bytes-per-sec BYTES`.
#[test]
fn lag_rises_while_written_faster_than_the_throttle_and_falls_to_zero_after() {
    let Clusters { source, target } = clusters();
    let topic = "observe-throttled";
    source.create_topic(topic, 3, 1, &[]).expect("create topic");
    let port = free_ports(1).expect("a free port")[0];
    let address = format!("127.0.0.1:{port}");
    let base = format!("http://{address}");
    let args = [
        "run",
        "--source",
        &source.bootstrap(),
        "--target",
        &target.bootstrap(),
        "--topics",
        topic,
        "--http",
        &address,
        "--max-bytes-per-sec",
        &THROTTLE.to_string(),
    ]
    .map(String::from);
    let mut mirror = RunningMirror::spawn(mirror_command().args(&args));
    mirror.wait_until("every partition fetched", Duration::from_secs(30), || {
        answers(&format!("{base}/health")) && lags(&scrape(&base), topic).len() == 3
    });

    // Caught up on an empty topic, the lag is 0. Then 2.4 MB are written as
    // fast as librdkafka goes (a second or two), eight seconds' worth of
    // the throttle: the lag rises on every partition, and so does the age
    // of the oldest record not copied. (The new end of each partition shows
    // with the mirror's next Fetch answer, about a second apart at this
    // rate.) A producer held to a rate instead wrote too slowly on a busy
    // machine to get ahead of the mirror at all.
    let before: Vec<f64> = lags(&scrape(&base), topic)
        .into_iter()
        .map(|(_, lag)| lag)
        .collect();
    assert_eq!(before, [0.0, 0.0, 0.0], "an empty topic, caught up");
    let written = kafka_testkit::generate_with_librdkafka(
        &source.bootstrap(),
        topic,
        kafka_testkit::Compression::None,
        kafka_testkit::Generate::Bytes(2_400_000),
        7,
    )
    .expect("write 2.4 MB");
    let mut behind = Vec::new();
    mirror.wait_until("lag on every partition", Duration::from_secs(10), || {
        behind = scrape(&base);
        ["0", "1", "2"].iter().all(|partition| {
            let at = [("topic", topic), ("partition", *partition)];
            value(&behind, "kafka_mirror_partition_lag_records", &at) > Some(0.0)
                && value(&behind, "kafka_mirror_partition_lag_seconds", &at) > Some(0.0)
        })
    });
    println!(
        "wrote {written:?}; lag per partition then: {:?}",
        lags(&behind, topic)
    );
    assert_eq!(
        value(&behind, "kafka_mirror_throttle_bytes_per_second", &[]),
        Some(THROTTLE as f64)
    );
    let status = status_json(&base);
    assert_eq!(status["flows"][0]["throttle_bytes_per_sec"], THROTTLE);

    // Nothing written any more: the throttled mirror catches up.
    let samples = wait_until_caught_up(&mut mirror, &base, topic, Duration::from_secs(60));
    assert_eq!(
        value(
            &samples,
            "kafka_mirror_records_copied_total",
            &[("topic", topic)]
        ),
        Some(written.records as f64)
    );
    assert_eq!(
        assert_same_records(source, target, topic),
        written.records as usize
    );
    terminate(mirror);
}
