//! The one error type of the batch layer.

/// Why a record batch could not be viewed, verified or classified.
///
/// Every variant names the batch by its base offset where the input had one,
/// so a caller can log it and decide where to fetch again from.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The buffer cannot even hold the fixed part of a batch header.
    #[error("record batch of {len} bytes is shorter than the {min} bytes of a v2 batch header")]
    TooShort {
        /// Bytes the buffer held.
        len: usize,
        /// Bytes needed for the header.
        min: usize,
    },

    /// A magic byte this module cannot read: not 2, and (for the splitter)
    /// not 0 or 1 either, the old formats it hands over for up-conversion.
    #[error("record batch at offset {base_offset} has magic {magic}; only magic 2 is supported")]
    UnsupportedMagic {
        /// Offset of the first entry with that magic.
        base_offset: i64,
        /// The magic byte found.
        magic: i8,
    },

    /// The stored CRC-32C does not match the bytes: the batch was damaged
    /// somewhere between the source log and here.
    #[error(
        "record batch at offset {base_offset} fails its CRC: stored {stored:#010x}, computed {computed:#010x}"
    )]
    CrcMismatch {
        /// Base offset of the damaged batch.
        base_offset: i64,
        /// CRC from the batch header.
        stored: u32,
        /// CRC of the bytes as received.
        computed: u32,
    },

    /// Attribute bits 0-2 name a codec Kafka does not define.
    #[error("record batch at offset {base_offset} uses unknown compression codec {codec}")]
    UnknownCompression {
        /// Base offset of the batch.
        base_offset: i64,
        /// The codec id from the attributes (5 to 7).
        codec: u8,
    },

    /// The batch's own structure is inconsistent (lengths, control records).
    #[error("record batch at offset {base_offset} is corrupt: {reason}")]
    Corrupt {
        /// Base offset of the batch.
        base_offset: i64,
        /// What was wrong, in words.
        reason: String,
    },

    /// Inflating the batch's records (to renumber them) would exceed the
    /// memory bound: a decompression bomb, or a batch far larger than any a
    /// broker accepts. Nothing beyond the bound was allocated.
    #[error(
        "record batch at offset {base_offset} decompresses to more than {limit} bytes, the most kafka-mirror inflates"
    )]
    InflatedTooLarge {
        /// Base offset of the batch.
        base_offset: i64,
        /// The bound, in decompressed bytes.
        limit: usize,
    },
}
