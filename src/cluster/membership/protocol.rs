//! kafka-mirror's group protocol bytes: the metadata a member joins with
//! ([`Holdings`]) and the assignment its leader sends it ([`Assignment`]).
//! The coordinator stores and forwards them without reading them.
//!
//! Big-endian, strings as an int16 length and UTF-8, as in Kafka's own
//! consumer protocol. Both start with an int16 version, and a newer version
//! only appends fields: a reader takes the fields it knows from any version
//! and ignores the rest, so instances of two releases share a group during
//! a rolling upgrade.
//!
//! ```text
//! metadata v1:   version int16, generation int32,
//!                topics: count int32, each { name string,
//!                  entries: count int32, each { partition int32,
//!                    owned int8 (0 or 1), recent bytes int64 } },
//!                slot int32 (-1: none)               [v1]
//! assignment v1: version int16, partitions: topic list, revoke: topic list,
//!                slot int32 (-1: none)               [v1]
//! topic list:    count int32, each { name string,
//!                  partitions: count int32, each partition int32 }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::assignment::{Assignment, Holdings, TopicPartition};

/// The version this release writes.
const VERSION: i16 = 1;
/// The first version with the writer slot.
const SLOT_VERSION: i16 = 1;

/// Bytes that are not kafka-mirror group protocol data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes end inside a field.
    #[error("the data ends inside {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// A negative version or count.
    #[error("{field} is negative ({value})")]
    Negative {
        /// The field read.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// A topic name that is not UTF-8.
    #[error("a topic name is not UTF-8")]
    NotUtf8,
}

/// The metadata a member joins with.
pub(crate) fn encode_metadata(holdings: &Holdings) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(VERSION);
    buf.put_i32(holdings.generation);
    // Every partition the member owns or has bytes for, once.
    let mut entries: BTreeMap<&TopicPartition, (bool, u64)> = BTreeMap::new();
    for p in &holdings.owned {
        entries.entry(p).or_default().0 = true;
    }
    for (p, bytes) in &holdings.recent_bytes {
        entries.entry(p).or_default().1 = *bytes;
    }
    put_by_topic(&mut buf, entries, |buf, (owned, bytes)| {
        buf.put_i8(i8::from(owned));
        buf.put_i64(i64::try_from(bytes).unwrap_or(i64::MAX));
    });
    buf.put_i32(holdings.slot.unwrap_or(-1));
    buf.freeze()
}

/// A member's metadata, as the leader reads it.
pub(crate) fn decode_metadata(bytes: &[u8]) -> Result<Holdings, CodecError> {
    let mut reader = Reader(bytes);
    let version = reader.version()?;
    let mut holdings = Holdings {
        generation: reader.i32("the generation")?,
        ..Holdings::default()
    };
    reader.by_topic(|reader, p| {
        let owned = reader.i8("an owned flag")? != 0;
        let bytes = reader.count("recent bytes", Reader::i64)?;
        if owned {
            holdings.owned.insert(p.clone());
        }
        if bytes > 0 {
            holdings.recent_bytes.insert(p, bytes);
        }
        Ok(())
    })?;
    holdings.slot = reader.slot(version)?;
    Ok(holdings)
}

/// The assignment the leader sends a member.
pub(crate) fn encode_assignment(assignment: &Assignment) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(VERSION);
    for list in [&assignment.partitions, &assignment.revoke] {
        put_by_topic(&mut buf, list.iter().map(|p| (p, ())), |_, ()| {});
    }
    buf.put_i32(assignment.slot.unwrap_or(-1));
    buf.freeze()
}

/// A member's assignment, as the member reads it.
pub(crate) fn decode_assignment(bytes: &[u8]) -> Result<Assignment, CodecError> {
    let mut reader = Reader(bytes);
    let version = reader.version()?;
    let mut lists = [BTreeSet::new(), BTreeSet::new()];
    for list in &mut lists {
        reader.by_topic(|_, p| {
            list.insert(p);
            Ok(())
        })?;
    }
    let [partitions, revoke] = lists;
    let slot = reader.slot(version)?;
    Ok(Assignment {
        partitions,
        revoke,
        slot,
    })
}

/// Writes `entries` (sorted by topic) as a topic list whose partitions each
/// carry what `put` writes.
fn put_by_topic<'a, T>(
    buf: &mut BytesMut,
    entries: impl IntoIterator<Item = (&'a TopicPartition, T)>,
    mut put: impl FnMut(&mut BytesMut, T),
) {
    let mut topics: Vec<(&str, Vec<(i32, T)>)> = Vec::new();
    for ((topic, partition), value) in entries {
        match topics.last_mut() {
            Some((last, partitions)) if last == topic => partitions.push((*partition, value)),
            _ => topics.push((topic, vec![(*partition, value)])),
        }
    }
    buf.put_i32(length(topics.len()));
    for (topic, partitions) in topics {
        // Topic names are at most 249 bytes.
        buf.put_i16(i16::try_from(topic.len()).unwrap_or(i16::MAX));
        buf.put_slice(topic.as_bytes());
        buf.put_i32(length(partitions.len()));
        for (partition, value) in partitions {
            buf.put_i32(partition);
            put(buf, value);
        }
    }
}

fn length(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

/// Reads fields off the front of the bytes.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CodecError> {
        let mut bytes = [0; N];
        if self.0.remaining() < N {
            return Err(CodecError::Truncated { field });
        }
        self.0.copy_to_slice(&mut bytes);
        Ok(bytes)
    }

    fn i8(&mut self, field: &'static str) -> Result<i8, CodecError> {
        self.take::<1>(field).map(i8::from_be_bytes)
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, CodecError> {
        self.take::<2>(field).map(i16::from_be_bytes)
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, CodecError> {
        self.take::<4>(field).map(i32::from_be_bytes)
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, CodecError> {
        self.take::<8>(field).map(i64::from_be_bytes)
    }

    /// A non-negative number read by `read`, as a `usize` or `u64`.
    fn count<N, T>(
        &mut self,
        field: &'static str,
        read: impl FnOnce(&mut Self, &'static str) -> Result<N, CodecError>,
    ) -> Result<T, CodecError>
    where
        N: Into<i64> + Copy,
        T: TryFrom<i64>,
    {
        let value: i64 = read(self, field)?.into();
        T::try_from(value).map_err(|_| CodecError::Negative { field, value })
    }

    /// The version; any is read, a newer one for the fields this one knows.
    fn version(&mut self) -> Result<i16, CodecError> {
        let version = self.i16("the version")?;
        if version < 0 {
            return Err(CodecError::Negative {
                field: "the version",
                value: version.into(),
            });
        }
        Ok(version)
    }

    /// The writer slot, from a version that has it; -1 is none.
    fn slot(&mut self, version: i16) -> Result<Option<i32>, CodecError> {
        if version < SLOT_VERSION {
            return Ok(None);
        }
        let slot = self.i32("the slot")?;
        Ok((slot >= 0).then_some(slot))
    }

    /// A topic list, calling `entry` for each partition to read what follows it.
    fn by_topic(
        &mut self,
        mut entry: impl FnMut(&mut Self, TopicPartition) -> Result<(), CodecError>,
    ) -> Result<(), CodecError> {
        // No allocation by the counts read: a bogus count ends in Truncated.
        let topics: usize = self.count("a topic count", Reader::i32)?;
        for _ in 0..topics {
            let len: usize = self.count("a topic name length", Reader::i16)?;
            if self.0.remaining() < len {
                return Err(CodecError::Truncated {
                    field: "a topic name",
                });
            }
            let name = std::str::from_utf8(&self.0[..len]).map_err(|_| CodecError::NotUtf8)?;
            let topic = name.to_owned();
            self.0.advance(len);
            let partitions: usize = self.count("a partition count", Reader::i32)?;
            for _ in 0..partitions {
                let partition = self.i32("a partition")?;
                entry(self, (topic.clone(), partition))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        (topic.to_owned(), partition)
    }

    fn holdings() -> Holdings {
        Holdings {
            generation: 7,
            owned: [tp("orders", 0), tp("orders", 3), tp("logs", 1)].into(),
            // Bytes for an owned partition and for one given up.
            recent_bytes: [(tp("orders", 3), 5_000_000), (tp("clicks", 2), 12)].into(),
            slot: Some(2),
        }
    }

    #[test]
    fn metadata_reads_back_as_written() {
        let bytes = encode_metadata(&holdings());
        assert_eq!(decode_metadata(&bytes), Ok(holdings()));
        // The layout, byte for byte, for the first topic in name order.
        assert_eq!(&bytes[..6], [0, 1, 0, 0, 0, 7]);
        assert_eq!(&bytes[6..10], 3i32.to_be_bytes());
        assert_eq!(&bytes[10..18], b"\x00\x06clicks");
        assert_eq!(&bytes[18..22], 1i32.to_be_bytes());
        assert_eq!(&bytes[22..26], 2i32.to_be_bytes());
        assert_eq!(bytes[26], 0, "not owned");
        assert_eq!(&bytes[27..35], 12i64.to_be_bytes());
        assert_eq!(
            bytes[bytes.len() - 4..],
            2i32.to_be_bytes(),
            "the slot, last"
        );
        let empty = Holdings {
            generation: -1,
            ..Holdings::default()
        };
        assert_eq!(decode_metadata(&encode_metadata(&empty)), Ok(empty));
    }

    #[test]
    fn assignments_read_back_as_written() {
        let assignment = Assignment {
            partitions: [tp("orders", 0), tp("orders", 1), tp("logs", 4)].into(),
            revoke: [tp("orders", 2)].into(),
            slot: Some(0),
        };
        let bytes = encode_assignment(&assignment);
        assert_eq!(decode_assignment(&bytes), Ok(assignment));
        assert_eq!(
            decode_assignment(&encode_assignment(&Assignment::default())),
            Ok(Assignment::default())
        );
    }

    #[test]
    fn a_newer_version_is_read_for_the_fields_this_one_knows() {
        let mut newer = BytesMut::from(&encode_metadata(&holdings())[..]);
        newer[..2].copy_from_slice(&3i16.to_be_bytes());
        newer.put_slice(b"fields of version 3");
        assert_eq!(decode_metadata(&newer), Ok(holdings()));

        let assignment = Assignment {
            partitions: [tp("a", 1)].into(),
            revoke: BTreeSet::new(),
            slot: Some(4),
        };
        let mut newer = BytesMut::from(&encode_assignment(&assignment)[..]);
        newer[..2].copy_from_slice(&2i16.to_be_bytes());
        newer.put_i64(99);
        assert_eq!(decode_assignment(&newer), Ok(assignment));

        // Version 0, before slots: none.
        let mut old = BytesMut::new();
        old.put_i16(0);
        old.put_i32(0);
        old.put_i32(0);
        let read = decode_assignment(&old).expect("v0");
        assert_eq!(read.slot, None);
    }

    #[test]
    fn damaged_bytes_are_refused_without_allocating_by_their_counts() {
        let bytes = encode_metadata(&holdings());
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    decode_metadata(&bytes[..cut]),
                    Err(CodecError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
        let mut huge = BytesMut::new();
        huge.put_i16(0);
        huge.put_i32(i32::MAX);
        assert_eq!(
            decode_assignment(&huge),
            Err(CodecError::Truncated {
                field: "a topic name length"
            })
        );
        let mut negative = BytesMut::new();
        negative.put_i16(-1);
        assert!(matches!(
            decode_assignment(&negative),
            Err(CodecError::Negative { value: -1, .. })
        ));
        let mut bad_name = BytesMut::new();
        bad_name.put_i16(0);
        bad_name.put_i32(1);
        bad_name.put_i16(2);
        bad_name.put_slice(&[0xff, 0xfe]);
        assert_eq!(decode_assignment(&bad_name), Err(CodecError::NotUtf8));
    }
}
