//! What watching the mirror costs at 5,000 partitions (50 topics of 100):
//! the engine publishing its flow's view to the board (its per-tick work,
//! at most every 250 ms, whatever the metrics show), and one `/metrics`
//! scrape rendering the board, with the per-partition series on and off
//! (`[http] partition_metrics`). Before the timings it prints each
//! scrape's size.
//!
//! `cargo bench --bench observe`.

use criterion::{criterion_group, criterion_main, Criterion};
use kafka_mirror::observe::metrics::{Metrics, MetricsOptions};
use kafka_mirror::observe::Board;
use kafka_mirror::pipeline::SyntheticFlow;

const TOPICS: usize = 50;
const PARTITIONS_PER_TOPIC: i32 = 100;

fn observe(c: &mut Criterion) {
    let board = Board::new();
    let mut flow = SyntheticFlow::new(&board, "bench", TOPICS, PARTITIONS_PER_TOPIC);
    flow.publish();
    let partitions = TOPICS * PARTITIONS_PER_TOPIC as usize;
    let mut group = c.benchmark_group(format!("observe/{partitions}_partitions"));
    group.bench_function("publish_view", |b| b.iter(|| flow.publish()));
    for partition_metrics in [true, false] {
        let metrics = Metrics::new(board.clone(), MetricsOptions { partition_metrics });
        let text = metrics.render().expect("render");
        let samples = text.lines().filter(|line| !line.starts_with('#')).count();
        let name = if partition_metrics {
            "render_metrics/partition_metrics_on"
        } else {
            "render_metrics/partition_metrics_off"
        };
        println!("size/{name}: {} bytes, {samples} samples", text.len());
        group.bench_function(name, |b| b.iter(|| metrics.render().expect("render").len()));
    }
    group.finish();
}

criterion_group!(benches, observe);
criterion_main!(benches);
