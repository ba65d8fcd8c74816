//! Lost Produce answers while the target's partition leaders move.
//!
//! The target has three brokers (replication 3, acks=all), each behind a
//! proxy that it advertises, so every connection the mirror opens goes
//! through one. The proxy reads the Kafka frames and, now and then, cuts the
//! connection instead of passing on a Produce answer: the broker appended the
//! batches, the mirror does not know. Meanwhile the leaders move (the replica
//! order is rotated, then a preferred leader election), so resends meet
//! NOT_LEADER_OR_FOLLOWER and new connections: a lost answer stacked with a
//! later error on the same partition, which is what once let a batch of
//! unknown fate be resent under a new producer id. Every record must be on the
//! target once, in order, as the source has it.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use kafka_testkit::{ClusterSpec, KafkaCluster, ProduceOpts};

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 4;
/// Enough lost answers that the mirror's warnings outgrow a pipe's buffer,
/// so its output must be read while it runs.
const ROUNDS: u64 = 8;
const PER_ROUND: u64 = 5_000;
/// One Produce answer in this many is lost.
const DROP_EVERY: u64 = 25;

/// What the proxies share: where each forwards, and what they dropped.
#[derive(Default)]
struct Dropping {
    answers: AtomicU64,
    dropped: AtomicU64,
    /// Set once the copy is checked: answers pass, so the mirror can stop.
    passing: AtomicBool,
}

/// A proxy in front of one broker that cuts the connection in place of
/// every `DROP_EVERY`-th Produce answer.
struct AnswerDropper {
    addr: SocketAddr,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
}

impl AnswerDropper {
    fn bind(shared: Arc<Dropping>) -> AnswerDropper {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let upstream = Arc::new(Mutex::new(None::<SocketAddr>));
        let target = upstream.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Some(to) = *target.lock().expect("lock") else {
                    continue;
                };
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                let produces = Arc::new(Mutex::new(HashSet::new()));
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let requests = produces.clone();
                thread::spawn(move || forward_requests(client, server, &requests));
                let shared = shared.clone();
                thread::spawn(move || forward_answers(s2, c2, &produces, &shared));
            }
        });
        AnswerDropper { addr, upstream }
    }

    fn forward_to(&self, upstream: SocketAddr) {
        *self.upstream.lock().expect("lock") = Some(upstream);
    }
}

/// Reads one length-prefixed Kafka frame.
fn read_frame(from: &mut TcpStream) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    from.read_exact(&mut size).ok()?;
    let len = usize::try_from(i32::from_be_bytes(size)).ok()?;
    let mut frame = vec![0u8; 4 + len];
    frame[..4].copy_from_slice(&size);
    from.read_exact(&mut frame[4..]).ok()?;
    Some(frame)
}

/// Client to broker: notes the correlation id of every Produce request.
fn forward_requests(mut from: TcpStream, mut to: TcpStream, produces: &Mutex<HashSet<i32>>) {
    while let Some(frame) = read_frame(&mut from) {
        if frame.len() >= 12 && i16::from_be_bytes([frame[4], frame[5]]) == 0 {
            let correlation = i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
            produces.lock().expect("lock").insert(correlation);
        }
        if to.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Broker to client: passes answers on, but cuts both connections in place
/// of every `DROP_EVERY`-th Produce answer.
fn forward_answers(
    mut from: TcpStream,
    mut to: TcpStream,
    produces: &Mutex<HashSet<i32>>,
    shared: &Dropping,
) {
    while let Some(frame) = read_frame(&mut from) {
        let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        if produces.lock().expect("lock").remove(&correlation) {
            let n = shared.answers.fetch_add(1, Ordering::Relaxed) + 1;
            if n % DROP_EVERY == 0 && !shared.passing.load(Ordering::Relaxed) {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        if to.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Moves every partition's leader to the next broker: rotates the replica
/// order, then a preferred leader election. Whether both tools succeeded.
fn move_leaders(target: &KafkaCluster, round: usize) -> bool {
    let nodes = target.node_count();
    let partitions: Vec<String> = (0..PARTITIONS as usize)
        .map(|p| {
            let replicas: Vec<String> = (0..nodes)
                .map(|i| ((p + round + i) % nodes).to_string())
                .collect();
            format!(
                r#"{{"topic":"{TOPIC}","partition":{p},"replicas":[{}]}}"#,
                replicas.join(",")
            )
        })
        .collect();
    let plan = config_file(
        &format!("reassign-{round}.json"),
        &format!(r#"{{"version":1,"partitions":[{}]}}"#, partitions.join(",")),
    );
    let bootstrap = target.bootstrap();
    let reassigned = target.run_tool(
        "org.apache.kafka.tools.reassign.ReassignPartitionsCommand",
        [
            "--bootstrap-server",
            &bootstrap,
            "--reassignment-json-file",
            &plan,
            "--execute",
        ],
    );
    if reassigned.is_err() {
        return false;
    }
    target
        .run_tool(
            "org.apache.kafka.tools.LeaderElectionCommand",
            [
                "--bootstrap-server",
                &bootstrap,
                "--election-type",
                "PREFERRED",
                "--all-topic-partitions",
            ],
        )
        .is_ok()
}

#[test]
fn lost_answers_while_leaders_move_leave_every_record_once_in_order() {
    let shared = Arc::new(Dropping::default());
    let proxies: Vec<AnswerDropper> = (0..3)
        .map(|_| AnswerDropper::bind(shared.clone()))
        .collect();
    let mut spec = ClusterSpec::new(KAFKA, 3);
    spec.extra_listeners
        .push(("MIRROR".into(), "PLAINTEXT".into()));
    for proxy in &proxies {
        spec.advertise
            .push(("MIRROR".into(), proxy.addr.to_string()));
    }
    let target = KafkaCluster::start(spec).expect("start the 3-node target");
    for (i, proxy) in proxies.iter().enumerate() {
        proxy.forward_to(target.listener_addr(i, "MIRROR").expect("MIRROR listener"));
    }
    let source = start_cluster(KAFKA, 1, &[]);
    source
        .create_topic(TOPIC, PARTITIONS, 1, &[])
        .expect("create the source topic");
    target
        .create_topic(TOPIC, PARTITIONS, 3, &[("min.insync.replicas", "2")])
        .expect("create the target topic");

    let mut args = run_args(&source, &target, "lost-answers");
    let mirror_bootstrap = target.listener_bootstrap("MIRROR");
    let at = args.iter().position(|a| a == "--target").expect("--target") + 1;
    args[at] = mirror_bootstrap;
    args.extend(["--topics".into(), TOPIC.into()]);
    let mirror = RunningMirror::spawn(mirror_command().args(&args));

    // Leaders move all along, on a thread of their own.
    let moving = Arc::new(AtomicBool::new(true));
    let moves = Arc::new(AtomicU64::new(0));
    {
        let (still_moving, moves) = (moving.clone(), moves.clone());
        let target = &target;
        thread::scope(|scope| {
            let mover = scope.spawn(move || {
                let mut round = 1;
                while still_moving.load(Ordering::Relaxed) {
                    if move_leaders(target, round) {
                        moves.fetch_add(u64::from(PARTITIONS), Ordering::Relaxed);
                    }
                    round += 1;
                    thread::sleep(Duration::from_millis(500));
                }
            });
            // Small source batches: many Produce requests, many answers to lose.
            for round in 0..ROUNDS {
                kafka_testkit::produce_with_librdkafka(
                    &source.bootstrap(),
                    TOPIC,
                    &ProduceOpts {
                        count: PER_ROUND,
                        partitions: Some(PARTITIONS),
                        key_prefix: format!("r{round}"),
                        config: vec![("batch.num.messages".into(), "20".into())],
                        ..ProduceOpts::default()
                    },
                )
                .expect("produce into the source");
            }
            let total = i64::try_from(ROUNDS * PER_ROUND).expect("count");
            let started = Instant::now();
            let copied = || -> i64 {
                (0..PARTITIONS as i32)
                    .map(|p| offset_of(target, TOPIC, p, -1))
                    .sum()
            };
            loop {
                let now = copied();
                eprintln!(
                    "{now} of {total} records on the target after {:?}",
                    started.elapsed()
                );
                if now >= total || started.elapsed() > Duration::from_secs(400) {
                    break;
                }
                thread::sleep(Duration::from_secs(2));
            }
            // A little longer, for duplicates still on their way.
            thread::sleep(Duration::from_secs(3));
            moving.store(false, Ordering::Relaxed);
            mover.join().expect("leader mover");
        });
    }
    shared.passing.store(true, Ordering::Relaxed);
    let output = terminate(mirror);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let dropped = shared.dropped.load(Ordering::Relaxed);
    let answers = shared.answers.load(Ordering::Relaxed);
    eprintln!(
        "{} records; {dropped} of {answers} Produce answers dropped; {} leader moves",
        ROUNDS * PER_ROUND,
        moves.load(Ordering::Relaxed)
    );
    assert!(
        dropped >= 10,
        "too few answers lost to mean anything: {dropped}"
    );
    assert!(moves.load(Ordering::Relaxed) > 0, "no leader moved");

    let expected = records_by_partition(&source.bootstrap(), TOPIC);
    let actual = records_by_partition(&target.bootstrap(), TOPIC);
    let duplicates: usize = actual
        .values()
        .map(|records| {
            let mut seen = HashSet::new();
            records.iter().filter(|r| !seen.insert(&r.key)).count()
        })
        .sum();
    eprintln!("duplicates on the target: {duplicates}");
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("lost_answers-mirror.log");
    if std::fs::write(&log, stderr.as_bytes()).is_ok() {
        eprintln!("the mirror's log: {}", log.display());
    }
    // Shown only when the test fails: what the mirror warned of.
    for line in stderr
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
    {
        eprintln!("mirror: {line}");
    }
    let count = assert_same_content(&expected, &actual, TOPIC);
    assert_eq!(
        count as u64,
        ROUNDS * PER_ROUND,
        "{stdout}\n{}",
        tail(&stderr, 30)
    );
}
