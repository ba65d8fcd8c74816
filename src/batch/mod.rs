//! Record batches viewed in place: the hot path of the mirror.
//!
//! A fetched batch is forwarded *deflated*: its header fields are read
//! straight from the `Bytes` the Fetch response arrived in, its records stay
//! opaque (and compressed), and only the few header fields the destination
//! broker insists on are rewritten before the batch is produced. Inflating
//! (decompressing records) is the exception: [`reencode`] does it for
//! compacted batches with offset gaps, which no broker accepts as they are,
//! and for LogAppendTime batches, whose timestamps a CreateTime target would
//! otherwise replace with the producer's.
//!
//! - [`split_batches`] cuts a partition's `records` into [`RecordBatch`]es
//!   without copying, treating a cut-off last batch as the end of the data.
//!   Entries in the old message formats (magic 0 and 1) come out as
//!   [`LegacyMessages`], which [`LegacyMessages::up_convert`] rebuilds as v2
//!   batches: the other inflating path, since Kafka 4 takes magic 2 only.
//! - [`RecordBatch`] reads the v2 header, checks the CRC, reads control
//!   markers and writes the header a Produce request carries in front of the
//!   untouched records, its CRC patched rather than recomputed (`crc.rs`).
//! - [`reencode`] re-encodes such a batch: records numbered `0..n-1`, a
//!   LogAppendTime batch's append time written into every record, same
//!   codec, every other record byte kept; [`trim`] also drops the records
//!   below a fetch position that fell inside the batch.
//! - [`AbortedTransactions`] drops aborted transactional data and control
//!   batches for READ_COMMITTED mirroring.
//!
//! The layout is the one in the protocol guide's
//! [record batch section](https://kafka.apache.org/documentation/#recordbatch);
//! producer ids, transactions and control batches come from
//! [KIP-98](https://cwiki.apache.org/confluence/display/KAFKA/KIP-98+-+Exactly+Once+Delivery+and+Transactional+Messaging).

mod aborted;
mod codec;
mod crc;
mod error;
mod legacy;
mod reencode;
mod split;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
mod varint;
mod view;

pub use aborted::{AbortedTransactions, BatchFate};
pub use codec::MAX_INFLATED_BYTES;
pub use error::BatchError;
pub use legacy::{LegacyMessages, MAX_RUN_SOURCE_BYTES, NO_TIMESTAMP};
pub use reencode::{
    for_each_record, reencode, reencode_with_limit, trim, OffsetRun, RecordView, Reencoded,
};
pub use split::{split_batches, Batches, Fetched};
pub(crate) use varint::varint_len;
pub(crate) use view::increment_sequence;
pub use view::{Compression, ControlType, ProducerStamp, RecordBatch, TimestampType};
