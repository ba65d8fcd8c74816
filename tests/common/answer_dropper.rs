//! A target cluster whose Produce answers get lost: the broker appended the
//! batches, the mirror never hears so.
//!
//! Each broker advertises, on an extra listener, a proxy in front of itself,
//! so every connection the mirror opens after bootstrapping goes through one.
//! The proxy reads the Kafka frames and cuts the connection in place of every
//! Nth Produce answer (counted over all the proxies). Test clients use the
//! brokers' PLAINTEXT listener and are never cut.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use kafka_testkit::{ClusterSpec, KafkaCluster};

/// The listener the brokers advertise the proxies on.
const LISTENER: &str = "MIRROR";

/// What the proxies share: how often to drop, what they passed and dropped.
#[derive(Default)]
struct Counts {
    every: u64,
    answers: AtomicU64,
    dropped: AtomicU64,
    /// Set when answers must all pass again.
    passing: AtomicBool,
}

/// The proxies in front of one cluster's brokers.
pub struct AnswerDroppers {
    counts: Arc<Counts>,
    /// The brokers' own addresses on the listener that advertises the proxies.
    bootstrap: String,
}

impl AnswerDroppers {
    /// Starts a cluster from `spec` behind proxies that lose one Produce
    /// answer in `every`.
    pub fn start(mut spec: ClusterSpec, every: u64) -> (KafkaCluster, AnswerDroppers) {
        let counts = Arc::new(Counts {
            every,
            ..Counts::default()
        });
        let upstreams: Vec<_> = (0..spec.nodes).map(|_| bind(counts.clone())).collect();
        spec.extra_listeners
            .push((LISTENER.into(), "PLAINTEXT".into()));
        for (addr, _) in &upstreams {
            spec.advertise.push((LISTENER.into(), addr.to_string()));
        }
        let cluster = KafkaCluster::start(spec).expect("start the target behind the proxies");
        for (i, (_, upstream)) in upstreams.iter().enumerate() {
            *upstream.lock().expect("lock") = Some(
                cluster
                    .listener_addr(i, LISTENER)
                    .expect("the proxied listener"),
            );
        }
        let bootstrap = cluster.listener_bootstrap(LISTENER);
        (cluster, AnswerDroppers { counts, bootstrap })
    }

    /// Points the `--target` of `kafka-mirror run` arguments at the proxied
    /// listener, so the mirror's connections go through the proxies.
    pub fn redirect_target(&self, args: &mut [String]) {
        let at = args.iter().position(|a| a == "--target").expect("--target") + 1;
        args[at].clone_from(&self.bootstrap);
    }

    /// Lets every answer pass from now on.
    pub fn stop_dropping(&self) {
        self.counts.passing.store(true, Ordering::Relaxed);
    }

    /// Produce answers seen so far, dropped ones included.
    pub fn answers(&self) -> u64 {
        self.counts.answers.load(Ordering::Relaxed)
    }

    /// Produce answers dropped so far.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }
}

/// Binds one proxy; it forwards once its upstream is set.
fn bind(counts: Arc<Counts>) -> (SocketAddr, Arc<Mutex<Option<SocketAddr>>>) {
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
            let counts = counts.clone();
            thread::spawn(move || forward_answers(s2, c2, &produces, &counts));
        }
    });
    (addr, upstream)
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
/// of every `every`-th Produce answer.
fn forward_answers(
    mut from: TcpStream,
    mut to: TcpStream,
    produces: &Mutex<HashSet<i32>>,
    counts: &Counts,
) {
    while let Some(frame) = read_frame(&mut from) {
        let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        if produces.lock().expect("lock").remove(&correlation) {
            let n = counts.answers.fetch_add(1, Ordering::Relaxed) + 1;
            if n % counts.every == 0 && !counts.passing.load(Ordering::Relaxed) {
                counts.dropped.fetch_add(1, Ordering::Relaxed);
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
