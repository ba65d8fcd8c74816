//! kafka-mirror: Kafka cluster-to-cluster replication by forwarding raw record batches.
//!
//! It fetches record batches from the source partition leaders and produces
//! them, as the same bytes, to the target partition leaders. Only what Kafka
//! requires is changed: the 61-byte batch header gets a zero base offset,
//! kafka-mirror's own producer id and sequence, and a fresh CRC; records are
//! never decompressed.
//!
//! The modules follow the data path:
//!
//! - [`net`]: sockets, framing, correlation ids, ApiVersions negotiation.
//! - [`cluster`]: one cluster's metadata, leader routing, per-broker
//!   connections with reconnect backoff, Fetch and ListOffsets helpers.
//! - [`batch`]: record batches viewed in place: split, CRC check, header rewrite,
//!   READ_COMMITTED filtering.
//! - [`pipeline`]: the fetch-to-produce engine, its ordering and memory rules.
//! - [`topics`]: target topic creation, partitions and config updates.
//! - [`policy`]: target topic names, and the loops they reveal.
//! - [`checkpoint`]: progress stored in a compacted topic on the target.
//! - [`offset_map`]: where copied source offsets landed on the target, for
//!   translating consumer group offsets.
//! - [`groups`]: consumer group offsets translated and committed on the target.
//! - [`acls`]: which source ACLs a flow copies onto its target, renamed, never broader.
//! - [`assignment`]: which member of a group of instances copies which
//!   partition (balanced, sticky, cooperative).
//! - [`config`]: the TOML configuration, its flows and their validation.
//! - [`observe`]: what the process shows of itself while it runs: each
//!   flow's snapshot, metrics, the HTTP endpoint.
//! - `backoff`: the one exponential backoff every retry loop uses.
//!
//! The binary (`src/main.rs`, `src/cli.rs`) turns flags and a file into a
//! [`config::MirrorConfig`] and calls [`pipeline::run`].

pub mod acls;
#[cfg(target_os = "linux")]
mod alloc;
#[cfg(all(target_os = "linux", feature = "count-allocations"))]
pub mod alloc_count;
pub mod assignment;
mod backoff;
pub mod batch;
pub mod checkpoint;
pub mod cluster;
pub mod config;
pub mod groups;
pub mod net;
pub mod observe;
pub mod offset_map;
pub mod pipeline;
pub mod policy;
mod sync;
pub mod topics;

/// Every binary built on this crate (the mirror, its tests, benches and fuzz
/// targets) decodes frames from the network, so they all get the allocator
/// that keeps a bogus array length from aborting the process.
#[cfg(all(target_os = "linux", not(feature = "count-allocations")))]
#[global_allocator]
static ALLOCATOR: alloc::ReservingAllocator = alloc::ReservingAllocator;

/// The same allocator, counted, for the benches' allocation figures.
#[cfg(all(target_os = "linux", feature = "count-allocations"))]
#[global_allocator]
static ALLOCATOR: alloc_count::CountingAllocator = alloc_count::CountingAllocator;
