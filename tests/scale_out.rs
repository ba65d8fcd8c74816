//! Several instances of one mirror name (`kafka-mirror run`, the same name,
//! started side by side) sharing its partitions through the target's group
//! coordinator, against real brokers, while a librdkafka producer writes:
//! one killed with SIGKILL and replaced, all restarted one by one, one
//! stalled with SIGSTOP while another joins. The checkers are clients
//! nobody here wrote: a `read_committed` librdkafka reader of the target
//! (exactly-once: every source record once, in order per partition, with
//! key, value, headers and timestamp; idempotent: every record, and only
//! what a lost instance had not checkpointed twice) and the brokers' own
//! segment files (which producer wrote each batch, and when). Who owns what
//! is read with `kafka-mirror status`, itself checked against a known
//! layout.
//!
//! One source node and one target node, shared by the tests of this file;
//! each instance has a client id of its own (`<name>-<who>`), which `status`
//! shows, and a 6 s session timeout, so that a killed one's partitions move
//! within seconds.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn clusters() -> &'static Clusters {
    shared_clusters(&[], &[])
}

/// Partitions of every topic here: six, so three instances get two each.
const PARTITIONS: i32 = 6;

/// How a test's instances copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    ExactlyOnce,
    Idempotent,
}

/// In idempotent mode, a small memory budget: what a killed instance had
/// copied past its stored checkpoints (copied again by its successor) is
/// then small enough to bound.
const BUDGET: usize = 256 * 1024;
const PARTITION_FETCH: usize = 32 * 1024;

/// The `kafka-mirror run` arguments of instance `who` of mirror `name`,
/// copying topic `name`.
fn instance(name: &str, who: &str, mode: Mode) -> Vec<String> {
    let Clusters { source, target } = clusters();
    let mut config = format!(
        "name = \"{name}\"\n\
         [source]\nbootstrap_servers = \"{}\"\n\
         [target]\nbootstrap_servers = \"{}\"\nclient_id = \"{name}-{who}\"\n\
         [topics]\ninclude = \"{name}\"\n\
         [instances]\nsession_timeout_ms = 6000\n",
        source.bootstrap(),
        target.bootstrap()
    );
    if mode == Mode::Idempotent {
        config.push_str(&format!(
            "[replication]\nin_flight_bytes = {BUDGET}\n\
             partition_fetch_bytes = {PARTITION_FETCH}\nfetch_max_bytes = {BUDGET}\n"
        ));
    }
    let path = config_file(&format!("{name}-{who}.toml"), &config);
    let mut args = vec!["run".to_owned(), "--config".to_owned(), path];
    if mode == Mode::ExactlyOnce {
        args.push("--exactly-once".to_owned());
    }
    args
}

/// Starts instance `who`.
fn start(name: &str, who: &str, mode: Mode) -> RunningMirror {
    RunningMirror::spawn(mirror_command().args(instance(name, who, mode)))
}

/// What `kafka-mirror status --format json` says of mirror `name`'s only flow.
fn status(name: &str) -> Value {
    let mut args = instance(name, "status", Mode::Idempotent);
    args[0] = "status".to_owned();
    args.extend(["--format".to_owned(), "json".to_owned()]);
    let output = run_mirror(&args, Duration::from_secs(60));
    assert!(
        output.status.success(),
        "status failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let listing: Value = serde_json::from_slice(&output.stdout).expect("status prints JSON");
    listing["flows"][0].clone()
}

/// The partitions each instance owns, by its `who`, once the group is
/// stable and every partition is someone's; `None` until then.
fn layout(name: &str) -> Option<BTreeMap<String, BTreeSet<i64>>> {
    let flow = status(name);
    let settled = flow["state"] == "Stable" && flow["unassigned"].as_array()?.is_empty();
    if !settled {
        return None;
    }
    let prefix = format!("{name}-");
    flow["members"]
        .as_array()?
        .iter()
        .map(|member| {
            let who = member["client_id"].as_str()?.strip_prefix(&prefix)?;
            let partitions = member["partitions"]
                .as_array()?
                .iter()
                .map(|p| p["partition"].as_i64())
                .collect::<Option<BTreeSet<i64>>>()?;
            Some((who.to_owned(), partitions))
        })
        .collect()
}

/// Waits until `who` (and no one else) share the partitions, each within
/// one of an even share; returns who owns which.
fn wait_for_layout(name: &str, who: &[&str]) -> BTreeMap<String, BTreeSet<i64>> {
    let started = Instant::now();
    let wanted: BTreeSet<&str> = who.iter().copied().collect();
    loop {
        if let Some(layout) = layout(name) {
            let members: BTreeSet<&str> = layout.keys().map(String::as_str).collect();
            if members == wanted {
                let total: usize = layout.values().map(BTreeSet::len).sum();
                assert_eq!(total, PARTITIONS as usize, "{layout:?}");
                let (fewest, most) = (
                    layout.values().map(BTreeSet::len).min(),
                    layout.values().map(BTreeSet::len).max(),
                );
                assert!(
                    most.zip(fewest)
                        .is_some_and(|(most, fewest)| most - fewest <= 1),
                    "partitions spread more than one apart: {layout:?}"
                );
                return layout;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{name}: {who:?} did not come to share the partitions within 120 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The target's end offset of each of `partitions` of topic `name`.
fn target_ends(name: &str, partitions: &BTreeSet<i64>) -> BTreeMap<i64, i64> {
    let ends = offsets(&clusters().target, name, -1);
    partitions
        .iter()
        .map(|p| (*p, ends.get(&(*p as i32)).copied().unwrap_or(0)))
        .collect()
}

/// Waits until every one of `partitions` of topic `name` holds more on the
/// target than `before` and the abort markers a handover may add; returns
/// how long that took.
fn wait_until_written(name: &str, before: &BTreeMap<i64, i64>) -> Duration {
    let started = Instant::now();
    let partitions: BTreeSet<i64> = before.keys().copied().collect();
    eventually(
        "the partitions are written again",
        Duration::from_secs(120),
        || {
            let now = target_ends(name, &partitions);
            before.iter().all(|(p, end)| now[p] > *end + 10)
        },
    );
    started.elapsed()
}

/// Stops an instance the way a service manager does; it must exit 0.
fn stop(name: &str, who: &str, mirror: RunningMirror) {
    let output = terminate(mirror);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{name}-{who} exited {} on SIGTERM:\n{}",
        output.status,
        tail(&stderr, 30)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("owned "),
        "{name}-{who}'s summary does not say what it owned:\n{stdout}"
    );
}

/// Creates topic `name` and starts writing it.
fn live_topic(name: &str) -> LiveProducer {
    let source = &clusters().source;
    source
        .create_topic(name, PARTITIONS as u32, 1, &[])
        .expect("create topic");
    LiveProducer::start(source, name, PARTITIONS as u32)
}

/// After the instances stopped and one more ran until caught up: exactly
/// once; or in idempotent mode, every record, and twice only what the
/// killed instance held past its checkpoints.
fn check_copy(name: &str, mode: Mode, produced: usize) {
    mirror_until_caught_up(&instance(name, "last", mode));
    let Clusters { source, target } = clusters();
    match mode {
        Mode::ExactlyOnce => assert_exactly_once(source, target, name, produced),
        Mode::Idempotent => {
            let twice = assert_at_least_once(source, target, name);
            let bound = BUDGET
                + PARTITIONS as usize
                    * largest_batch(source, name, PARTITIONS).max(PARTITION_FETCH);
            eprintln!("{name}: {twice} bytes of source batches copied twice");
            assert!(
                twice <= bound,
                "{twice} bytes of batches were copied twice, more than a killed instance's window ({bound})"
            );
        }
    }
}

/// Three instances at once; one killed with SIGKILL mid-stream and
/// replaced; its partitions move to the others and the new one within the
/// session timeout and a few seconds. SIGTERM to each (exit 0), then one
/// `--until-caught-up`.
fn kill_and_replace(name: &str, mode: Mode) {
    let producer = live_topic(name);
    let mut a = start(name, "a", mode);
    let b = start(name, "b", mode);
    let c = start(name, "c", mode);
    let layout = wait_for_layout(name, &["a", "b", "c"]);
    a.wait_until("copy", Duration::from_secs(60), || {
        copied_so_far(&clusters().target, name) > 0
    });
    std::thread::sleep(Duration::from_secs(2));

    let lost = &layout["b"];
    let before = target_ends(name, lost);
    let output = kill_hard(b);
    assert!(!output.status.success(), "b ended before the kill");
    let killed = Instant::now();
    let b2 = start(name, "b2", mode);
    let handover = wait_until_written(name, &before);
    eprintln!(
        "{name}: b's partitions {lost:?} were written again {:.1} s after its kill",
        handover.as_secs_f64()
    );
    wait_for_layout(name, &["a", "b2", "c"]);
    eprintln!(
        "{name}: three instances share again {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );

    let produced = producer.stop();
    for (who, mirror) in [("a", a), ("b2", b2), ("c", c)] {
        stop(name, who, mirror);
    }
    check_copy(name, mode, produced);
}

#[test]
fn three_instances_share_and_a_killed_one_is_replaced_exactly_once() {
    kill_and_replace("share-eos", Mode::ExactlyOnce);
}

#[test]
fn three_idempotent_instances_repeat_only_what_the_killed_one_had_not_stored() {
    kill_and_replace("share-idem", Mode::Idempotent);
}

/// Three instances restarted one after the other during a copy (SIGTERM,
/// exit 0, start again): each hands its partitions over and takes a share
/// back, and exactly-once holds.
#[test]
fn a_rolling_restart_of_three_instances_keeps_each_record_once() {
    let name = "share-roll";
    let mode = Mode::ExactlyOnce;
    let producer = live_topic(name);
    let mut running: BTreeMap<&str, RunningMirror> = ["a", "b", "c"]
        .into_iter()
        .map(|who| (who, start(name, who, mode)))
        .collect();
    wait_for_layout(name, &["a", "b", "c"]);
    for who in ["a", "b", "c"] {
        let before = copied_so_far(&clusters().target, name);
        if let Some(mirror) = running.remove(who) {
            stop(name, who, mirror);
        }
        running.insert(who, start(name, who, mode));
        wait_for_layout(name, &["a", "b", "c"]);
        eventually("the copy goes on", Duration::from_secs(60), || {
            copied_so_far(&clusters().target, name) > before
        });
    }
    let produced = producer.stop();
    for (who, mirror) in running {
        stop(name, who, mirror);
    }
    check_copy(name, mode, produced);
}

/// The producer id and epoch that wrote each data batch of `topic`'s
/// partition on the target, in log order.
fn writers(topic: &str, partition: i32) -> Vec<(i64, i16)> {
    stored_batches(&clusters().target, topic, partition + 1)[&partition]
        .iter()
        .filter(|b| !b.is_control())
        .map(|b| {
            let bytes = &b.bytes;
            let id = i64::from_be_bytes(bytes[43..51].try_into().expect("8 bytes"));
            let epoch = i16::from_be_bytes(bytes[51..53].try_into().expect("2 bytes"));
            (id, epoch)
        })
        .collect()
}

/// Instance `a` copies everything and is stalled (SIGSTOP); `b` starts,
/// gets everything once the coordinator has given up on `a`, and copies.
/// Resumed, `a` finds its lease ended: it writes nothing more under the
/// producer it had (it renews it, exactly-once: it is fenced on its writer
/// slot), joins again and gets a share back.
fn stalled_while_another_joins(name: &str, mode: Mode) {
    let producer = live_topic(name);
    let mut a = start(name, "a", mode);
    wait_for_layout(name, &["a"]);
    a.wait_until("copy", Duration::from_secs(60), || {
        copied_so_far(&clusters().target, name) > 0
    });
    let stalled_as = *writers(name, 0).last().expect("a wrote partition 0");
    signal(&a, "-STOP");
    let b = start(name, "b", mode);
    wait_for_layout(name, &["b"]);
    let all: BTreeSet<i64> = (0..i64::from(PARTITIONS)).collect();
    wait_until_written(name, &target_ends(name, &all));

    signal(&a, "-CONT");
    let resumed = Instant::now();
    wait_for_layout(name, &["a", "b"]);
    eprintln!(
        "{name}: a shares again {:.1} s after SIGCONT",
        resumed.elapsed().as_secs_f64()
    );

    let produced = producer.stop();
    stop(name, "a", a);
    stop(name, "b", b);
    for partition in 0..PARTITIONS {
        let writers = writers(name, partition);
        let handed_over = writers.iter().position(|w| *w != stalled_as);
        let after = handed_over.map_or(&[][..], |at| &writers[at..]);
        assert!(
            !after.contains(&stalled_as),
            "{name}-{partition}: the stalled instance ({stalled_as:?}) wrote after another \
             took its partitions: {writers:?}"
        );
    }
    check_copy(name, mode, produced);
}

#[test]
fn a_stalled_instance_writes_nothing_once_another_took_over_exactly_once() {
    stalled_while_another_joins("stall-eos", Mode::ExactlyOnce);
}

#[test]
fn a_stalled_idempotent_instance_writes_nothing_once_another_took_over() {
    stalled_while_another_joins("stall-idem", Mode::Idempotent);
}

/// Two instances of a caught-up copy of a known topic: `status` lists
/// both, their writer slots 0 and 1, three partitions each, no lag; with
/// both stopped, an empty group and every partition unassigned.
#[test]
fn status_lists_each_instance_its_slot_partitions_and_lag() {
    let name = "share-status";
    let source = &clusters().source;
    source
        .create_topic(name, PARTITIONS as u32, 1, &[])
        .expect("create topic");
    produce_keyed(source, name, 600, PARTITIONS as u32, "k", None);
    let a = start(name, "a", Mode::ExactlyOnce);
    let b = start(name, "b", Mode::ExactlyOnce);
    let layout = wait_for_layout(name, &["a", "b"]);
    assert!(layout.values().all(|p| p.len() == 3), "{layout:?}");
    let caught_up = |flow: &Value| {
        flow["members"].as_array().is_some_and(|members| {
            members.iter().all(|m| {
                m["partitions"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .all(|p| p["lag"] == 0 && p["checkpoint"] == 100 && p["end"] == 100)
                })
            })
        })
    };
    eventually("both caught up", Duration::from_secs(60), || {
        caught_up(&status(name))
    });
    let flow = status(name);
    let slots: BTreeSet<i64> = flow["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["slot"].as_i64())
        .collect();
    assert_eq!(slots, BTreeSet::from([0, 1]), "{flow}");
    assert_eq!(flow["group"], format!("kafka-mirror.{name}"));

    let mut text_args = instance(name, "status", Mode::ExactlyOnce);
    text_args[0] = "status".to_owned();
    let text = String::from_utf8_lossy(&run_mirror(&text_args, Duration::from_secs(60)).stdout)
        .to_string();
    assert!(
        text.contains(&format!(
            "flow {name}: group kafka-mirror.{name} (Stable), 2 instances"
        )),
        "{text}"
    );
    assert!(text.contains(": 3 partitions, lag 0"), "{text}");

    stop(name, "a", a);
    stop(name, "b", b);
    let flow = status(name);
    assert_eq!(flow["state"], "Empty", "{flow}");
    assert_eq!(flow["members"].as_array().map(Vec::len), Some(0));
    let unassigned = flow["unassigned"].as_array().expect("unassigned");
    assert_eq!(unassigned.len(), PARTITIONS as usize, "{flow}");
    assert!(unassigned.iter().all(|p| p["lag"] == 0), "{flow}");
}
