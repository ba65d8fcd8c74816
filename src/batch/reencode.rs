//! Re-encoding the batches a target would refuse or misread: the exception
//! path where the mirror *inflates* a batch.
//!
//! Everywhere else a batch is forwarded deflated (see the module above): its
//! records stay compressed and opaque. Log compaction breaks that for one kind
//! of batch. The cleaner removes records but keeps the batch's offset range,
//! so a cleaned batch can hold fewer records than offsets
//! (`recordsCount != lastOffsetDelta + 1`). A broker refuses such a batch in a
//! Produce request ("Inconsistent batch offset range"), so it cannot be
//! forwarded as it is.
//!
//! LogAppendTime batches are the other kind. Consumers give every record of
//! such a batch its maxTimestamp (the source's append time), but a target
//! topic with CreateTime, which the mirror creates so as not to stamp its own
//! append time, turns the batch into CreateTime and its consumers would see
//! the producer's original timestamps instead. So each record's
//! timestampDelta is set to 0, the base timestamp to the append time, and the
//! batch marked CreateTime: the target's consumers see what the source's saw.
//!
//! A batch that starts before the position a Fetch asked for is the third
//! kind: [`trim`] drops the records below the position (data the source
//! purged, or that the user did not ask for) in the same pass, and reports
//! the source offsets of the records it kept as [`OffsetRun`]s, so the
//! pipeline knows where each copied record was on the source (the offset
//! map) without reading the records again.
//!
//! [`reencode`] does both. It decompresses the records section with the
//! batch's own codec, walks each record's varint fields (length, attributes,
//! timestampDelta, offsetDelta, then key, value and headers, only checked),
//! rewrites the offsetDelta to the record's index (and a LogAppendTime
//! record's timestampDelta to 0), copies every other byte as
//! it is, recompresses with the same codec and writes a header with
//! `lastOffsetDelta = count - 1` and a fresh CRC. Records are never decoded
//! into a map-based model: Kafka allows repeated header names, and they must
//! arrive as they left, byte for byte. Consumers see the same keys, values,
//! headers and timestamps, in the same order.
//!
//! This costs a decompression and a compression per batch, so it is counted
//! and only taken for batches that need it. Every length read from the input
//! is checked before it is used, and decompression stops at
//! [`MAX_INFLATED_BYTES`], so a corrupt batch or a decompression bomb is a
//! [`BatchError`], never a panic or an unbounded allocation. The codecs,
//! and how Kafka's clients frame each, are in `codec`.

use bytes::{BufMut, BytesMut};

use super::codec::{seal, Codec, MAX_INFLATED_BYTES};
use super::varint::{read_varint, read_varlong, varint_len, write_varint};
use super::view::{at, HEADER_LEN, TIMESTAMP_TYPE_BIT};
use super::{BatchError, RecordBatch, TimestampType};

/// Consecutive source offsets of records a re-encoding kept: `count`
/// records from `first` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRun {
    /// The source offset of the run's first record.
    pub first: i64,
    /// Records in the run.
    pub count: i32,
}

/// A re-encoded batch and where its records were on the source.
#[derive(Debug, Clone)]
pub struct Reencoded {
    /// The batch to produce.
    pub batch: RecordBatch,
    /// The source offsets of its records, in order, as runs of consecutive
    /// offsets: one run for a batch without gaps, one more per gap
    /// compaction left between kept records.
    pub source_runs: Vec<OffsetRun>,
}

/// Re-encodes `batch` as [`reencode_with_limit`] with [`MAX_INFLATED_BYTES`].
pub fn reencode(batch: &RecordBatch) -> Result<RecordBatch, BatchError> {
    reencode_with_limit(batch, MAX_INFLATED_BYTES)
}

/// Re-encodes `batch` as [`reencode`] does, keeping only its records at
/// source offset `from` or above; `Ok(None)` when it has none there.
///
/// A Fetch from inside a batch (the source's log start after DeleteRecords
/// or retention, a start position found by timestamp) returns the whole
/// batch: the records below the position are ones the source purged or the
/// user did not ask for, and must never reach the target. The result starts
/// at `from`, its kept records numbered from there; its source runs say
/// which source offsets they had.
pub fn trim(batch: &RecordBatch, from: i64) -> Result<Option<Reencoded>, BatchError> {
    rewrite(batch, from, MAX_INFLATED_BYTES)
}

/// Re-encodes `batch` with the same records renumbered `0..n-1`, and for a
/// LogAppendTime batch, each record's timestamp set to the append time.
///
/// The result has the same base offset, partition leader epoch, attributes
/// (so the same codec; the LogAppendTime flag cleared), max timestamp,
/// producer fields and record count as `batch`; `lastOffsetDelta` becomes
/// `count - 1`, a LogAppendTime batch's base timestamp becomes its max
/// timestamp, `batchLength` and the CRC are recomputed. Each record keeps
/// every byte but its offsetDelta and, for LogAppendTime, its timestampDelta
/// (and its length prefix, when those shrink it).
///
/// Verify the CRC of `batch` first: the new CRC would otherwise bless a batch
/// damaged in transit.
///
/// Fails with [`BatchError::InflatedTooLarge`] when the records decompress
/// to more than `max_inflated_bytes`, and with [`BatchError::Corrupt`] when
/// they do not decompress, or do not hold `records_count` well-formed records
/// with increasing offsets inside the batch's range.
pub fn reencode_with_limit(
    batch: &RecordBatch,
    max_inflated_bytes: usize,
) -> Result<RecordBatch, BatchError> {
    rewrite(batch, batch.base_offset(), max_inflated_bytes)?
        .map(|reencoded| reencoded.batch)
        .ok_or_else(|| BatchError::Corrupt {
            base_offset: batch.base_offset(),
            reason: "no record was kept".into(),
        })
}

/// The re-encoding of [`reencode_with_limit`] and [`trim`]: the records at
/// source offset `from` or above (`Ok(None)` if none), renumbered from the
/// larger of `from` and the batch's base offset, and their source offsets.
fn rewrite(
    batch: &RecordBatch,
    from: i64,
    max_inflated_bytes: usize,
) -> Result<Option<Reencoded>, BatchError> {
    let base_offset = batch.base_offset();
    let corrupt = |reason: String| BatchError::Corrupt {
        base_offset,
        reason,
    };
    let count = batch.records_count();
    if count <= 0 {
        return Err(corrupt(format!(
            "a batch of {count} records has nothing to renumber"
        )));
    }
    let source = batch.as_bytes();
    let body = &source[HEADER_LEN..];
    let codec = Codec::of(batch.compression(), body);
    let records = codec
        .inflate(body, max_inflated_bytes)
        .map_err(|e| e.at(base_offset, max_inflated_bytes))?;
    let append_time = batch.timestamp_type() == TimestampType::LogAppendTime;
    // Each new offsetDelta (and timestampDelta 0) is at most as long as the
    // old one, so the output never grows.
    let mut renumbered = Vec::with_capacity(records.len());
    // Records whose offsetDelta is below this are left out.
    let keep_from = from.saturating_sub(base_offset).max(0);
    let mut kept_deltas = Vec::new();
    let kept = renumber_records(
        &records,
        count,
        batch.last_offset_delta(),
        keep_from,
        append_time,
        &mut renumbered,
        &mut kept_deltas,
    )
    .map_err(corrupt)?;
    drop(records);
    if kept == 0 {
        return Ok(None);
    }

    let mut out = BytesMut::with_capacity(HEADER_LEN + renumbered.len());
    out.put_slice(&source[..HEADER_LEN]);
    codec
        .deflate(&renumbered, &mut out)
        .map_err(|e| corrupt(format!("recompressing the renumbered records failed: {e}")))?;
    // keep_from is at most lastOffsetDelta here (a record was kept), so the
    // sum stays inside the batch's range.
    let new_base = base_offset + keep_from;
    out[at::BASE_OFFSET..at::BASE_OFFSET + 8].copy_from_slice(&new_base.to_be_bytes());
    out[at::LAST_OFFSET_DELTA..at::LAST_OFFSET_DELTA + 4]
        .copy_from_slice(&(kept - 1).to_be_bytes());
    out[at::RECORDS_COUNT..at::RECORDS_COUNT + 4].copy_from_slice(&kept.to_be_bytes());
    if append_time {
        let attributes = batch.attributes() & !TIMESTAMP_TYPE_BIT;
        out[at::ATTRIBUTES..at::ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        out[at::BASE_TIMESTAMP..at::BASE_TIMESTAMP + 8]
            .copy_from_slice(&batch.max_timestamp().to_be_bytes());
    }
    let batch = seal(out, new_base)?;
    let source_runs = kept_deltas
        .into_iter()
        .map(|run| OffsetRun {
            first: base_offset + run.first,
            count: run.count,
        })
        .collect();
    Ok(Some(Reencoded { batch, source_runs }))
}

/// Writes those of the `count` records of `records` whose offsetDelta is at
/// least `keep_from` into `out`, with offsetDelta `i` for the i-th one
/// written (and timestampDelta 0 with `zero_timestamps`), everything else
/// copied; every record is checked. Returns the records written; `kept`
/// gets their original offsetDeltas as runs (`first` relative to the batch).
fn renumber_records(
    records: &[u8],
    count: i32,
    last_offset_delta: i32,
    keep_from: i64,
    zero_timestamps: bool,
    out: &mut Vec<u8>,
    kept_deltas: &mut Vec<OffsetRun>,
) -> Result<i32, String> {
    let mut previous_delta: Option<i32> = None;
    let mut kept = 0;
    walk_records(records, count, |record| {
        let offset_delta = record.offset_delta;
        let in_order = match previous_delta {
            None => offset_delta >= 0,
            Some(previous) => offset_delta > previous,
        };
        if !in_order || offset_delta > last_offset_delta {
            return Err(format!(
                "offsetDelta {offset_delta} is out of order or outside the batch's range 0..={last_offset_delta}"
            ));
        }
        previous_delta = Some(offset_delta);
        if i64::from(offset_delta) < keep_from {
            return Ok(());
        }
        let timestamp_delta: &[u8] = if zero_timestamps {
            &[0] // the zigzag varlong 0
        } else {
            record.timestamp_delta_bytes
        };
        // kept <= index <= offsetDelta: its varint is no longer than the old one.
        let new_length = 1 + timestamp_delta.len() + varint_len(kept) + record.tail.len();
        // new_length <= length, which came from an i32.
        write_varint(out, new_length as i32);
        out.push(record.attributes);
        out.extend_from_slice(timestamp_delta);
        write_varint(out, kept);
        out.extend_from_slice(record.tail);
        kept += 1;
        let delta = i64::from(offset_delta);
        match kept_deltas.last_mut() {
            Some(run) if run.first + i64::from(run.count) == delta => run.count += 1,
            _ => kept_deltas.push(OffsetRun {
                first: delta,
                count: 1,
            }),
        }
        Ok(())
    })?;
    Ok(kept)
}

/// One record of a batch as a consumer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Its offset.
    pub offset: i64,
    /// Its timestamp: the batch's append time in a LogAppendTime batch.
    pub timestamp: i64,
    /// Its key, value and headers as encoded: equal bytes mean equal
    /// contents, since every length is a canonical varint.
    pub contents: &'a [u8],
}

/// Hands each record of `batch` to `each`, in order: the records section
/// decompressed with the batch's codec (up to [`MAX_INFLATED_BYTES`]) and
/// every record checked as [`reencode`] checks them.
pub fn for_each_record(
    batch: &RecordBatch,
    mut each: impl FnMut(RecordView<'_>),
) -> Result<(), BatchError> {
    let base_offset = batch.base_offset();
    let corrupt = |reason: String| BatchError::Corrupt {
        base_offset,
        reason,
    };
    let body = &batch.as_bytes()[HEADER_LEN..];
    let records = Codec::of(batch.compression(), body)
        .inflate(body, MAX_INFLATED_BYTES)
        .map_err(|e| e.at(base_offset, MAX_INFLATED_BYTES))?;
    let append_time = batch.timestamp_type() == TimestampType::LogAppendTime;
    walk_records(&records, batch.records_count(), |record| {
        each(RecordView {
            offset: base_offset + i64::from(record.offset_delta),
            timestamp: if append_time {
                batch.max_timestamp()
            } else {
                batch.base_timestamp().wrapping_add(record.timestamp_delta)
            },
            contents: record.tail,
        });
        Ok(())
    })
    .map_err(corrupt)
}

/// One record of a records section, split where readers of it need it.
struct RawRecord<'a> {
    attributes: u8,
    /// The timestampDelta varlong, as encoded.
    timestamp_delta_bytes: &'a [u8],
    timestamp_delta: i64,
    offset_delta: i32,
    /// Key, value and headers, checked to fill the record exactly.
    tail: &'a [u8],
}

/// Hands each of the `count` records of a (decompressed) records section to
/// `visit`, in order, after checking its framing and fields; an error, its
/// own or `visit`'s, names the record. The section must end with the last
/// record.
fn walk_records<'a>(
    records: &'a [u8],
    count: i32,
    mut visit: impl FnMut(RawRecord<'a>) -> Result<(), String>,
) -> Result<(), String> {
    let mut rest = records;
    for index in 0..count {
        let fail = |reason: &str| format!("record {index} of {count}: {reason}");
        let length = read_varint(&mut rest).map_err(fail)?;
        let length = usize::try_from(length).map_err(|_| fail("negative record length"))?;
        let record = rest
            .get(..length)
            .ok_or_else(|| fail("record runs past the records section"))?;
        rest = &rest[length..];
        let (&attributes, mut fields) = record
            .split_first()
            .ok_or_else(|| fail("record ends before its attributes"))?;
        let timestamp_start = fields;
        let timestamp_delta = read_varlong(&mut fields).map_err(fail)?;
        let timestamp_delta_bytes = &timestamp_start[..timestamp_start.len() - fields.len()];
        let offset_delta = read_varint(&mut fields).map_err(fail)?;
        check_record_tail(fields).map_err(fail)?;
        visit(RawRecord {
            attributes,
            timestamp_delta_bytes,
            timestamp_delta,
            offset_delta,
            tail: fields,
        })
        .map_err(|reason| fail(&reason))?;
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} bytes follow the last of the batch's {count} records",
            rest.len()
        ))
    }
}

/// Checks that key, value and headers fill the rest of a record exactly.
fn check_record_tail(mut rest: &[u8]) -> Result<(), &'static str> {
    skip_nullable_bytes(&mut rest, "key runs past the record")?;
    skip_nullable_bytes(&mut rest, "value runs past the record")?;
    let headers = read_varint(&mut rest)?;
    if headers < 0 {
        return Err("negative header count");
    }
    for _ in 0..headers {
        let key_length = read_varint(&mut rest)?;
        let key_length = usize::try_from(key_length).map_err(|_| "null header key")?;
        rest = rest
            .get(key_length..)
            .ok_or("header key runs past the record")?;
        skip_nullable_bytes(&mut rest, "header value runs past the record")?;
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err("bytes follow the record's last header")
    }
}

/// Skips a varint length (-1 for null) and that many bytes.
fn skip_nullable_bytes(rest: &mut &[u8], past_end: &'static str) -> Result<(), &'static str> {
    let length = read_varint(rest)?;
    if length < -1 {
        return Err("length below -1");
    }
    if let Ok(length) = usize::try_from(length) {
        *rest = rest.get(length..).ok_or(past_end)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::records::{self as kp, RecordBatchDecoder};
    use proptest::prelude::*;

    use super::super::codec::XERIAL_MAGIC;
    use super::super::test_support::{data_records, encode, plain_records, BatchSpec, ALL_CODECS};
    use super::super::varint::write_varlong;
    use super::*;

    /// One record as raw fields; header names may repeat.
    #[derive(Debug, Clone)]
    struct RawRecord {
        attributes: u8,
        timestamp_delta: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    }

    /// Every codec as it appears in batches: snappy in both framings.
    const ALL_TEST_CODECS: [Codec; 6] = [
        Codec::None,
        Codec::Gzip,
        Codec::XerialSnappy,
        Codec::RawSnappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    fn codec_id(codec: Codec) -> i16 {
        match codec {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::XerialSnappy | Codec::RawSnappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }

    fn put_nullable(out: &mut Vec<u8>, bytes: &Option<Vec<u8>>) {
        match bytes {
            None => write_varlong(out, -1),
            Some(b) => {
                write_varlong(out, b.len() as i64);
                out.extend_from_slice(b);
            }
        }
    }

    /// The record's bytes after its length prefix (test-side encoder).
    fn record_body(record: &RawRecord, offset_delta: i32) -> Vec<u8> {
        let mut body = vec![record.attributes];
        write_varlong(&mut body, record.timestamp_delta);
        write_varlong(&mut body, i64::from(offset_delta));
        put_nullable(&mut body, &record.key);
        put_nullable(&mut body, &record.value);
        write_varlong(&mut body, record.headers.len() as i64);
        for (name, value) in &record.headers {
            write_varlong(&mut body, name.len() as i64);
            body.extend_from_slice(name);
            put_nullable(&mut body, value);
        }
        body
    }

    fn compress(codec: Codec, records: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        codec.deflate(records, &mut out).unwrap();
        if codec == Codec::RawSnappy {
            // The test's raw snappy comes from snap directly, like librdkafka's.
            assert!(!out.starts_with(XERIAL_MAGIC));
        }
        out.to_vec()
    }

    /// A batch of `records` with the given offsetDeltas, as a cleaner leaves it:
    /// `last_offset_delta` kept from before compaction.
    fn raw_batch(
        codec: Codec,
        records: &[(i32, RawRecord)],
        last_offset_delta: i32,
        attributes: i16,
    ) -> Bytes {
        let mut plain = Vec::new();
        for (delta, record) in records {
            let body = record_body(record, *delta);
            write_varlong(&mut plain, body.len() as i64);
            plain.extend_from_slice(&body);
        }
        let body = compress(codec, &plain);
        with_header(
            codec,
            &body,
            records.len() as i32,
            last_offset_delta,
            attributes,
        )
    }

    fn with_header(
        codec: Codec,
        body: &[u8],
        count: i32,
        last_offset_delta: i32,
        attributes: i16,
    ) -> Bytes {
        let mut b = Vec::new();
        b.extend_from_slice(&5_000i64.to_be_bytes());
        b.extend_from_slice(&((49 + body.len()) as i32).to_be_bytes());
        b.extend_from_slice(&3i32.to_be_bytes()); // partition leader epoch
        b.push(2);
        b.extend_from_slice(&[0; 4]); // CRC
        b.extend_from_slice(&(attributes | codec_id(codec)).to_be_bytes());
        b.extend_from_slice(&last_offset_delta.to_be_bytes());
        b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        b.extend_from_slice(&1_700_000_000_500i64.to_be_bytes());
        b.extend_from_slice(&99i64.to_be_bytes());
        b.extend_from_slice(&4i16.to_be_bytes());
        b.extend_from_slice(&10i32.to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b.extend_from_slice(body);
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b.into()
    }

    /// Each record as (offsetDelta, bytes before it, bytes after it).
    fn split_records(mut rest: &[u8]) -> Vec<(i32, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        while !rest.is_empty() {
            let length = read_varint(&mut rest).unwrap() as usize;
            let record = &rest[..length];
            rest = &rest[length..];
            let mut fields = &record[1..];
            read_varlong(&mut fields).unwrap();
            let before = record[..record.len() - fields.len()].to_vec();
            let delta = read_varint(&mut fields).unwrap();
            out.push((delta, before, fields.to_vec()));
        }
        out
    }

    fn decode(batch: &RecordBatch) -> Vec<kp::Record> {
        let mut bytes = batch.as_bytes().clone();
        let set = RecordBatchDecoder::decode(&mut bytes).expect("kafka-protocol decodes it");
        assert!(bytes.is_empty());
        set.records
    }

    /// Renumbers `input` and checks everything the target and consumers see.
    fn check_renumber(input: &RecordBatch) -> RecordBatch {
        input.verify_crc().unwrap();
        let output = reencode(input).unwrap();
        let output = RecordBatch::parse(output.as_bytes().clone()).unwrap();
        output.verify_crc().unwrap();
        let n = input.records_count();
        assert_eq!(output.records_count(), n);
        assert_eq!(output.last_offset_delta(), n - 1);
        assert!(!output.has_offset_gaps());
        let from = |b: &RecordBatch| {
            (
                b.base_offset(),
                b.partition_leader_epoch(),
                b.attributes(),
                b.compression(),
                b.base_timestamp(),
                b.max_timestamp(),
                b.producer_id(),
                b.producer_epoch(),
                b.base_sequence(),
            )
        };
        assert_eq!(from(&output), from(input));

        let (before, after) = (decode(input), decode(&output));
        assert_eq!(after.len(), before.len());
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            assert_eq!(a.offset, output.base_offset() + i as i64);
            assert_eq!(
                (&a.key, &a.value, a.timestamp),
                (&b.key, &b.value, b.timestamp)
            );
            assert_eq!(a.headers, b.headers);
        }

        let (raw_before, raw_after) = (
            split_records(&plain_records(input)),
            split_records(&plain_records(&output)),
        );
        assert_eq!(raw_after.len(), raw_before.len());
        for (i, (b, a)) in raw_before.iter().zip(&raw_after).enumerate() {
            assert_eq!(a.0, i as i32, "offsetDelta of record {i}");
            assert_eq!(a.1, b.1, "attributes and timestampDelta of record {i}");
            assert_eq!(a.2, b.2, "key, value and headers of record {i}");
        }
        // Same framing of snappy as the input.
        let framed = |b: &RecordBatch| b.as_bytes()[HEADER_LEN..].starts_with(XERIAL_MAGIC);
        assert_eq!(framed(&output), framed(input));
        output
    }

    fn record(i: usize) -> RawRecord {
        RawRecord {
            attributes: 0,
            timestamp_delta: (i as i64 * 37) % 500,
            key: Some(format!("key-{}", i % 3).into_bytes()),
            value: (i % 4 != 3).then(|| vec![b'v'; i * 50]),
            headers: vec![
                (b"dup".to_vec(), Some(b"one".to_vec())),
                (b"trace".to_vec(), None),
                (b"dup".to_vec(), Some(format!("two-{i}").into_bytes())),
            ],
        }
    }

    #[test]
    fn log_append_time_batches_get_the_append_time_in_every_record() {
        for codec in ALL_CODECS {
            let spec = BatchSpec {
                compression: codec,
                ..BatchSpec::default()
            };
            let records = data_records(&spec, &super::super::test_support::sample_contents());
            // The encoder never sets the LogAppendTime bit (bit 3 of byte 22);
            // a broker sets it, with the append time as max timestamp.
            let append_time: i64 = 1_800_000_000_000;
            let bytes =
                super::super::test_support::edit_and_fix_crc(&encode(&records, codec), |b| {
                    b[22] |= 1 << 3;
                    b[35..43].copy_from_slice(&append_time.to_be_bytes());
                });
            let input = RecordBatch::parse(bytes).expect("parse");
            assert_eq!(input.timestamp_type(), TimestampType::LogAppendTime);

            let output = reencode(&input).expect("reencode");
            output.verify_crc().expect("valid CRC");
            assert_eq!(output.timestamp_type(), TimestampType::CreateTime);
            assert_eq!(output.compression(), input.compression());
            assert_eq!(output.base_timestamp(), append_time);
            assert_eq!(output.max_timestamp(), append_time);
            assert_eq!(output.records_count(), input.records_count());
            let decoded = decode(&output);
            assert_eq!(decoded.len(), records.len());
            for (before, after) in records.iter().zip(&decoded) {
                assert_eq!((&before.key, &before.value), (&after.key, &after.value));
                assert_eq!(after.timestamp, append_time, "{codec:?}");
            }
        }
    }

    /// (offset, timestamp, contents) of each record, as `for_each_record` sees it.
    fn viewed(batch: &RecordBatch) -> Vec<(i64, i64, Vec<u8>)> {
        let mut seen = Vec::new();
        for_each_record(batch, |r| {
            seen.push((r.offset, r.timestamp, r.contents.to_vec()))
        })
        .expect("readable");
        seen
    }

    #[test]
    fn each_record_is_seen_with_its_offset_timestamp_and_contents() {
        let contents = super::super::test_support::sample_contents();
        for codec in ALL_CODECS {
            let spec = BatchSpec {
                compression: codec,
                ..BatchSpec::default()
            };
            let records = data_records(&spec, &contents);
            let batch = RecordBatch::parse(encode(&records, codec)).expect("parse");
            let seen = viewed(&batch);
            let expected: Vec<(i64, i64)> =
                records.iter().map(|r| (r.offset, r.timestamp)).collect();
            let got: Vec<(i64, i64)> = seen.iter().map(|(o, t, _)| (*o, *t)).collect();
            assert_eq!(got, expected, "{codec:?}");
            // The same contents elsewhere (other offsets, producer, codec,
            // timestamps) are the same bytes; any other content is not.
            let elsewhere = BatchSpec {
                base_offset: 5,
                producer_id: -1,
                base_timestamp: 1,
                ..BatchSpec::default()
            };
            let copy = RecordBatch::parse(encode(
                &data_records(&elsewhere, &contents),
                kp::Compression::None,
            ))
            .expect("parse");
            let same: Vec<Vec<u8>> = viewed(&copy).into_iter().map(|(_, _, c)| c).collect();
            let ours: Vec<Vec<u8>> = seen.into_iter().map(|(_, _, c)| c).collect();
            assert_eq!(ours, same, "{codec:?}");
            let mut changed = contents.clone();
            changed[0].2[0].1 = Some(Bytes::from_static(b"abd"));
            let other =
                RecordBatch::parse(encode(&data_records(&spec, &changed), codec)).expect("parse");
            let differs: Vec<bool> = viewed(&other)
                .into_iter()
                .zip(&ours)
                .map(|((_, _, c), o)| &c != o)
                .collect();
            assert_eq!(differs, [true, false, false, false], "{codec:?}");
        }
    }

    #[test]
    fn a_log_append_time_record_is_seen_at_the_append_time() {
        let records = data_records(
            &BatchSpec::default(),
            &super::super::test_support::sample_contents(),
        );
        let append_time: i64 = 1_800_000_000_000;
        let bytes = super::super::test_support::edit_and_fix_crc(
            &encode(&records, kp::Compression::Gzip),
            |b| {
                b[22] |= 1 << 3;
                b[35..43].copy_from_slice(&append_time.to_be_bytes());
            },
        );
        let batch = RecordBatch::parse(bytes).expect("parse");
        let timestamps: Vec<i64> = viewed(&batch).into_iter().map(|(_, t, _)| t).collect();
        assert_eq!(timestamps, vec![append_time; records.len()]);
    }

    #[test]
    fn gaps_anywhere_are_renumbered_for_every_codec_and_duplicate_headers_kept() {
        let all: Vec<RawRecord> = (0..10).map(record).collect();
        let subsets: &[&[usize]] = &[&[9], &[0, 9], &[3, 4, 8], &[1, 2, 3, 4, 5, 6, 7, 8], &[5]];
        for codec in ALL_TEST_CODECS {
            for keep in subsets {
                let kept: Vec<(i32, RawRecord)> =
                    keep.iter().map(|&i| (i as i32, all[i].clone())).collect();
                // Delete horizon set and transactional, as the cleaner may leave them.
                let bytes = raw_batch(codec, &kept, 9, (1 << 6) | (1 << 4));
                let input = RecordBatch::parse(bytes).unwrap();
                assert!(input.has_offset_gaps(), "{codec:?} {keep:?}");
                let output = check_renumber(&input);
                let (_, _, tail) = &split_records(&plain_records(&output))[0];
                let dups = tail.windows(3).filter(|w| w == b"dup").count();
                assert_eq!(dups, 2, "{codec:?}: both `dup` headers survive");
            }
        }
    }

    #[test]
    fn kafka_protocol_batches_with_records_dropped_are_renumbered() {
        let spec_contents: Vec<_> = (0..8)
            .map(|i| {
                (
                    Some(Bytes::from(format!("key-{i}"))),
                    (i % 3 != 2).then(|| Bytes::from(vec![b'x'; 40 * i])),
                    vec![(format!("h{i}"), Some(Bytes::from_static(b"v")))],
                )
            })
            .collect();
        for codec in ALL_CODECS {
            let spec = BatchSpec {
                compression: codec,
                ..BatchSpec::default()
            };
            let records = data_records(&spec, &spec_contents);
            for drop in [
                &[1usize][..],
                &[0, 7],
                &[2, 3, 4, 6],
                &[0, 1, 2, 3, 4, 5, 6],
            ] {
                let kept: Vec<kp::Record> = records
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !drop.contains(i))
                    .map(|(_, r)| r.clone())
                    .collect();
                let input = RecordBatch::parse(encode(&kept, codec)).unwrap();
                if input.has_offset_gaps() {
                    check_renumber(&input);
                } else {
                    // Only the ends were dropped: the encoder closed the range.
                    assert!(drop == [0, 7] || drop == [0, 1, 2, 3, 4, 5, 6]);
                }
            }
            // A gap after the last record, as when the cleaner drops the tail.
            let bytes = encode(&records[..5], codec);
            let bytes = super::super::test_support::edit_and_fix_crc(&bytes, |b| {
                b[23..27].copy_from_slice(&7i32.to_be_bytes())
            });
            check_renumber(&RecordBatch::parse(bytes).unwrap());
        }
    }

    fn corrupt_reason(result: Result<RecordBatch, BatchError>) -> String {
        match result {
            Err(BatchError::Corrupt {
                base_offset: 5_000,
                reason,
            }) => reason,
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let two = [(1, record(1)), (4, record(4))];
        for codec in ALL_TEST_CODECS {
            let batch = |records: &[(i32, RawRecord)], count: Option<i32>, lod: i32| {
                let bytes = raw_batch(codec, records, lod, 0);
                let bytes = super::super::test_support::edit_and_fix_crc(&bytes, |b| {
                    if let Some(count) = count {
                        b[57..61].copy_from_slice(&count.to_be_bytes());
                    }
                });
                RecordBatch::parse(bytes).unwrap()
            };
            let cases: Vec<(RecordBatch, &str)> = vec![
                (batch(&two, Some(3), 6), "varint runs past"),
                (batch(&two, Some(1), 6), "bytes follow the last"),
                (batch(&two, None, 3), "outside the batch's range"),
                (
                    batch(&[(4, record(4)), (1, record(1))], None, 6),
                    "out of order",
                ),
                (batch(&[(-1, record(1))], None, 6), "out of order"),
            ];
            for (input, expected) in cases {
                let reason = corrupt_reason(reencode(&input));
                assert!(reason.contains(expected), "{codec:?}: {reason}");
            }
            let empty = batch(&[], None, 3);
            assert!(corrupt_reason(reencode(&empty)).contains("nothing to renumber"));
        }
        // Record fields running past their record (uncompressed, so the bytes
        // are exactly what the walker sees).
        let bodies: &[(&[u8], &str)] = &[
            (&[1], "negative record length"),
            (&[20, 0], "record runs past"),
            (&[0], "before its attributes"),
            (&[2, 0], "varint runs past"),
            (&[8, 0, 0, 0, 20], "key runs past"),
            (&[10, 0, 0, 0, 1, 20], "value runs past"),
            (&[12, 0, 0, 0, 1, 1, 3], "negative header count"),
            (&[14, 0, 0, 0, 1, 1, 2, 1], "null header key"),
            (&[14, 0, 0, 0, 1, 1, 2, 8], "header key runs past"),
            (
                &[14, 0, 0, 0, 1, 1, 0, 0],
                "bytes follow the record's last header",
            ),
            (&[8, 0, 0, 0, 3], "length below -1"),
        ];
        for (body, expected) in bodies {
            let input = RecordBatch::parse(with_header(Codec::None, body, 1, 3, 0)).unwrap();
            let reason = corrupt_reason(reencode(&input));
            assert!(reason.contains(expected), "{body:?}: {reason}");
        }
    }

    #[test]
    fn garbage_that_does_not_decompress_is_corrupt() {
        for codec in ALL_TEST_CODECS.into_iter().filter(|&c| c != Codec::None) {
            let mut body = vec![0x5a; 40];
            if codec == Codec::XerialSnappy {
                body[..8].copy_from_slice(XERIAL_MAGIC);
            }
            let input = RecordBatch::parse(with_header(codec, &body, 1, 3, 0)).unwrap();
            let reason = corrupt_reason(reencode(&input));
            assert!(reason.contains("do not decompress"), "{codec:?}: {reason}");
        }
    }

    #[test]
    fn decompression_bombs_stop_at_the_limit() {
        // 1 MiB of one record's worth of zeros compresses to almost nothing.
        let zeros = vec![0u8; 1 << 20];
        for codec in ALL_TEST_CODECS.into_iter().filter(|&c| c != Codec::None) {
            let body = compress(codec, &zeros);
            assert!(body.len() < 1 << 16, "{codec:?}");
            let input = RecordBatch::parse(with_header(codec, &body, 1, 3, 0)).unwrap();
            match reencode_with_limit(&input, 64 << 10) {
                Err(BatchError::InflatedTooLarge {
                    base_offset: 5_000,
                    limit,
                }) => assert_eq!(limit, 64 << 10),
                other => panic!("{codec:?}: expected InflatedTooLarge, got {other:?}"),
            }
        }
        // Raw snappy declaring 4 GiB: refused from its length prefix, before
        // anything is allocated.
        let body = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        let input = RecordBatch::parse(with_header(Codec::RawSnappy, &body, 1, 3, 0)).unwrap();
        assert!(matches!(
            reencode(&input),
            Err(BatchError::InflatedTooLarge { .. })
        ));
    }

    #[test]
    fn a_trim_from_the_batch_start_is_a_plain_reencoding() {
        let kept: Vec<(i32, RawRecord)> =
            [1, 4, 6].iter().map(|&i| (i, record(i as usize))).collect();
        for codec in ALL_TEST_CODECS {
            let input = RecordBatch::parse(raw_batch(codec, &kept, 9, 0)).unwrap();
            let whole = reencode(&input).unwrap();
            for from in [0, 4_999, 5_000] {
                let trimmed = trim(&input, from).unwrap().expect("records kept").batch;
                assert_eq!(
                    trimmed.as_bytes(),
                    whole.as_bytes(),
                    "{codec:?} from {from}"
                );
            }
            // No record below 5_001 (the first is at 5_001): the same
            // records, the batch starting at the position.
            let trimmed = trim(&input, 5_001).unwrap().expect("records kept").batch;
            assert_eq!(trimmed.base_offset(), 5_001);
            assert_eq!(&trimmed.as_bytes()[8..], &whole.as_bytes()[8..]);
            let tail = trim(&input, 5_005).unwrap().expect("the record at 5006");
            assert_eq!(
                (tail.batch.base_offset(), tail.batch.records_count()),
                (5_005, 1)
            );
            let one = OffsetRun {
                first: 5_006,
                count: 1,
            };
            assert_eq!(
                tail.source_runs,
                [one],
                "{codec:?}: where it was on the source"
            );
            for past in [5_007, 5_010, i64::MAX] {
                assert!(
                    trim(&input, past).unwrap().is_none(),
                    "{codec:?} from {past}"
                );
            }
        }
    }

    fn raw_record() -> impl Strategy<Value = RawRecord> {
        let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..60));
        // Names from a tiny alphabet, so repeats are common.
        let header = ("[ab]{0,2}", bytes());
        (
            any::<i64>(),
            bytes(),
            bytes(),
            proptest::collection::vec(header, 0..4),
        )
            .prop_map(|(timestamp_delta, key, value, headers)| RawRecord {
                attributes: 0,
                timestamp_delta,
                key,
                value,
                headers: headers
                    .into_iter()
                    .map(|(n, v)| (n.into_bytes(), v))
                    .collect(),
            })
    }

    proptest! {
        #[test]
        fn any_records_with_any_subset_removed_round_trip(
            records in proptest::collection::vec((raw_record(), any::<bool>()), 1..12),
            codec in proptest::sample::select(ALL_TEST_CODECS.to_vec()),
            trailing_gap in 0i32..3,
        ) {
            let mut kept: Vec<(i32, RawRecord)> = records
                .iter()
                .enumerate()
                .filter(|(_, (_, keep))| *keep)
                .map(|(i, (r, _))| (i as i32, r.clone()))
                .collect();
            if kept.is_empty() {
                kept.push((0, records[0].0.clone()));
            }
            let last_offset_delta = records.len() as i32 - 1 + trailing_gap;
            let input = RecordBatch::parse(raw_batch(codec, &kept, last_offset_delta, 0)).unwrap();
            let output = check_renumber(&input);
            // The records as written, byte for byte, but the offsetDelta.
            let raw = split_records(&plain_records(&output));
            for (i, ((_, r), (delta, _, tail))) in kept.iter().zip(&raw).enumerate() {
                prop_assert_eq!(*delta, i as i32);
                let original = record_body(r, 0);
                prop_assert!(original.ends_with(tail));
            }
        }

        /// Trimming at any position keeps exactly the records at or above
        /// it, byte for byte but their offsetDelta, renumbered from the
        /// position, and names their source offsets in as few runs as
        /// their gaps allow; a batch with none there is gone.
        #[test]
        fn a_trim_keeps_exactly_the_records_at_or_above_the_position(
            records in proptest::collection::vec((raw_record(), any::<bool>()), 1..12),
            codec in proptest::sample::select(ALL_TEST_CODECS.to_vec()),
            append_time in any::<bool>(),
            from in 4_990i64..5_016,
        ) {
            let mut kept: Vec<(i32, RawRecord)> = records
                .iter()
                .enumerate()
                .filter(|(_, (_, keep))| *keep)
                .map(|(i, (r, _))| (i as i32, r.clone()))
                .collect();
            if kept.is_empty() {
                kept.push((0, records[0].0.clone()));
            }
            let last_offset_delta = records.len() as i32 - 1;
            let attributes = if append_time { TIMESTAMP_TYPE_BIT } else { 0 };
            let bytes = raw_batch(codec, &kept, last_offset_delta, attributes);
            let input = RecordBatch::parse(bytes).unwrap();
            let wanted: Vec<(i64, &RawRecord)> = kept
                .iter()
                .map(|(delta, r)| (5_000 + i64::from(*delta), r))
                .filter(|(offset, _)| *offset >= from)
                .collect();
            let Some(Reencoded { batch: output, source_runs }) = trim(&input, from).unwrap() else {
                prop_assert!(wanted.is_empty());
                return Ok(());
            };
            let offsets: Vec<i64> = source_runs
                .iter()
                .flat_map(|run| run.first..run.first + i64::from(run.count))
                .collect();
            let wanted_offsets: Vec<i64> = wanted.iter().map(|(offset, _)| *offset).collect();
            prop_assert_eq!(offsets, wanted_offsets);
            for pair in source_runs.windows(2) {
                prop_assert!(pair[0].first + i64::from(pair[0].count) < pair[1].first, "runs not merged: {:?}", source_runs);
            }
            let wanted: Vec<&RawRecord> = wanted.into_iter().map(|(_, r)| r).collect();
            output.verify_crc().unwrap();
            prop_assert_eq!(output.base_offset(), from.max(5_000));
            prop_assert_eq!(output.records_count(), wanted.len() as i32);
            prop_assert_eq!(output.last_offset_delta(), wanted.len() as i32 - 1);
            prop_assert_eq!(output.compression(), input.compression());
            prop_assert_eq!(output.timestamp_type(), TimestampType::CreateTime);
            prop_assert_eq!(output.producer_id(), input.producer_id());
            let raw = split_records(&plain_records(&output));
            prop_assert_eq!(raw.len(), wanted.len());
            for (i, (r, (delta, _, tail))) in wanted.iter().zip(&raw).enumerate() {
                prop_assert_eq!(*delta, i as i32);
                prop_assert!(record_body(r, 0).ends_with(tail));
            }
            let decoded = decode(&output);
            for (r, d) in wanted.iter().zip(&decoded) {
                let timestamp = if append_time {
                    input.max_timestamp()
                } else {
                    input.base_timestamp() + r.timestamp_delta
                };
                prop_assert_eq!(d.timestamp, timestamp);
            }
        }

        #[test]
        fn arbitrary_record_bytes_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..120),
            codec in proptest::sample::select(ALL_TEST_CODECS.to_vec()),
            count in 1i32..5,
            compress_first in any::<bool>(),
        ) {
            let body = if compress_first { compress(codec, &body) } else { body };
            let input = RecordBatch::parse(with_header(codec, &body, count, 6, 0)).unwrap();
            if let Ok(output) = reencode(&input) {
                output.verify_crc().unwrap();
                prop_assert_eq!(output.last_offset_delta(), count - 1);
            }
        }
    }
}
