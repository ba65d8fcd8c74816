//! Sans-io framing: bytes in, bytes out, no sockets.
//!
//! Every Kafka request and response is a frame: a 4-byte big-endian size, then
//! a header, then the body ([protocol guide], "Common Request and Response
//! Structure"). The header's own version depends on the API and its version
//! (flexible versions, [KIP-482], add tagged fields), which `kafka-protocol`
//! knows through [`ApiKey::request_header_version`] and
//! [`ApiKey::response_header_version`].
//!
//! Response frames are split off the read buffer as frozen [`Bytes`], and
//! decoded from `Bytes`, so that record batches in a fetch response are slices
//! of the read buffer rather than copies.
//!
//! [protocol guide]: https://kafka.apache.org/protocol.html#protocol_messages
//! [KIP-482]: https://cwiki.apache.org/confluence/display/KAFKA/KIP-482%3A+The+Kafka+Protocol+should+Support+Optional+Tagged+Fields

use std::error::Error as StdError;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use super::splice::{RequestFrame, Splices, SplicingWriter};
use super::{CodecError, NetError};

/// Length of the size prefix in front of every frame.
pub const SIZE_PREFIX: usize = 4;

/// The [`ApiKey`] of a request type.
pub fn api_key<R: Request>() -> ApiKey {
    // `R::KEY` comes from kafka-protocol's generated code, which defines an
    // `ApiKey` variant for every request type it generates.
    ApiKey::try_from(R::KEY).expect("kafka-protocol request types have known API keys")
}

/// Encodes `request` as a complete frame: size prefix, header (at the header
/// version this API and version call for), body.
///
/// The codec's bytes go into one buffer sized for them; values named in
/// `splices` (record batches) are taken by reference instead, so the frame
/// leaves in one vectored write without copying them.
pub fn encode_request<R: Request>(
    correlation_id: i32,
    client_id: Option<&StrBytes>,
    version: i16,
    request: &R,
    splices: &Splices,
) -> Result<RequestFrame, NetError> {
    let api = api_key::<R>();
    let encode_error = |source| NetError::Encode {
        api,
        version,
        source: codec_error(source),
    };
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(client_id.cloned());
    let header_version = api.request_header_version(version);
    let size = header
        .compute_size(header_version)
        .and_then(|h| Ok(h + request.compute_size(version)?))
        .map_err(encode_error)?;
    let size_prefix = i32::try_from(size).map_err(|_| NetError::Encode {
        api,
        version,
        source: codec_error(format!(
            "frame of {size} bytes does not fit a 32-bit size prefix"
        )),
    })?;

    let mut buf = SplicingWriter::new(splices, SIZE_PREFIX + size);
    buf.put_i32(size_prefix);
    header
        .encode(&mut buf, header_version)
        .and_then(|()| request.encode(&mut buf, version))
        .map_err(encode_error)?;
    debug_assert_eq!(
        buf.len(),
        SIZE_PREFIX + size,
        "compute_size disagrees with encode"
    );
    buf.finish().map_err(|unused| NetError::Encode {
        api,
        version,
        source: codec_error(unused),
    })
}

/// The length of the frame at the front of `buf` (without its size prefix),
/// once the prefix is there, checked against `max_frame_bytes` (which
/// excludes the 4-byte prefix): a corrupt or hostile length is refused
/// before anything is allocated for it.
pub fn frame_len(buf: &[u8], max_frame_bytes: usize) -> Result<Option<usize>, NetError> {
    let Some(prefix) = buf.first_chunk::<SIZE_PREFIX>() else {
        return Ok(None);
    };
    let size = i32::from_be_bytes(*prefix);
    usize::try_from(size)
        .ok()
        .filter(|&len| len <= max_frame_bytes)
        .map(Some)
        .ok_or(NetError::FrameTooLarge {
            size,
            max: max_frame_bytes,
        })
}

/// Splits one complete frame (without its size prefix) off the front of `buf`.
///
/// Returns `Ok(None)` until the whole frame is buffered; once the size is
/// known (and checked, see [`frame_len`]) it reserves room for the rest, so
/// the frame is read into one allocation.
pub fn try_split_frame(
    buf: &mut BytesMut,
    max_frame_bytes: usize,
) -> Result<Option<Bytes>, NetError> {
    let Some(len) = frame_len(buf, max_frame_bytes)? else {
        return Ok(None);
    };
    let needed = SIZE_PREFIX + len;
    if buf.len() < needed {
        buf.reserve(needed - buf.len());
        return Ok(None);
    }
    buf.advance(SIZE_PREFIX);
    Ok(Some(buf.split_to(len).freeze()))
}

/// Reads the correlation id of a response frame without decoding the header.
///
/// It is the first field of every response header version, which is what lets
/// the reader route a frame before it knows which API it answers.
pub fn peek_correlation_id(frame: &[u8]) -> Option<i32> {
    frame.first_chunk::<4>().map(|id| i32::from_be_bytes(*id))
}

/// Decodes a response frame (as split by [`try_split_frame`]) to the response
/// type of `R` at `version`: header first, then body, decoded from `Bytes` so
/// record data stays a slice of the frame.
///
/// Returns the header's correlation id with the body. Fails if the frame is
/// longer than the message: leftover bytes mean we decoded at a different
/// version than the broker encoded.
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
) -> Result<(i32, R::Response), NetError> {
    let api = api_key::<R>();
    let decode_error = |source| NetError::Decode {
        api,
        version,
        source: codec_error(source),
    };
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
        .map_err(decode_error)?;
    let body = R::Response::decode(&mut frame, version).map_err(decode_error)?;
    if !frame.is_empty() {
        return Err(NetError::TrailingBytes {
            api,
            version,
            remaining: frame.len(),
        });
    }
    Ok((header.correlation_id, body))
}

/// Converts a `kafka-protocol` codec error (an `anyhow::Error`, which is not a
/// `std::error::Error`) into a shareable error source, keeping its chain.
fn codec_error(err: impl Into<Box<dyn StdError + Send + Sync>>) -> CodecError {
    Arc::from(err.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, MetadataRequest};

    #[test]
    fn api_versions_v3_request_golden_bytes() {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("kafka-mirror"))
            .with_client_software_version(StrBytes::from_static_str("0.1.0"));
        let client_id = StrBytes::from_static_str("km");
        let frame = encode_request(7, Some(&client_id), 3, &request, &Splices::default())
            .unwrap()
            .to_bytes();

        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x00, 0x00, 0x00, 0x21,             // size: 33
            // Request header v2 (flexible): client_id stays a nullable
            // STRING (int16 length), then an empty tagged-field section.
            0x00, 0x12,                         // api_key 18 (ApiVersions)
            0x00, 0x03,                         // api_version 3
            0x00, 0x00, 0x00, 0x07,             // correlation_id 7
            0x00, 0x02, b'k', b'm',             // client_id "km"
            0x00,                               // no tagged fields
            // Body v3: COMPACT_STRINGs carry length + 1 as an unsigned varint.
            0x0d, b'k', b'a', b'f', b'k', b'a', b'-', b'm', b'i', b'r', b'r', b'o', b'r',
            0x06, b'0', b'.', b'1', b'.', b'0',
            0x00,                               // no tagged fields
        ];
        assert_eq!(&frame[..], expected);
    }

    #[test]
    fn metadata_v1_request_golden_bytes() {
        let request = MetadataRequest::default().with_topics(None);
        let frame = encode_request(1, None, 1, &request, &Splices::default())
            .unwrap()
            .to_bytes();

        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x00, 0x00, 0x00, 0x0e,             // size: 14
            // Request header v1.
            0x00, 0x03,                         // api_key 3 (Metadata)
            0x00, 0x01,                         // api_version 1
            0x00, 0x00, 0x00, 0x01,             // correlation_id 1
            0xff, 0xff,                         // client_id null
            // Body v1: topics is a nullable ARRAY; null means all topics.
            0xff, 0xff, 0xff, 0xff,
        ];
        assert_eq!(&frame[..], expected);
    }

    /// A spliced Produce frame is byte for byte the frame kafka-protocol
    /// writes when the replaced bytes are copied into the request, at every
    /// version (non-flexible and flexible length prefixes alike).
    #[test]
    fn spliced_produce_frame_equals_the_copied_encoding() {
        use super::super::splice::Splice;
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::{ProduceRequest, TopicName};

        let batches: Vec<Bytes> = (0..3u8)
            .map(|p| Bytes::from(vec![p; 100 + usize::from(p) * 150]))
            .collect();
        let heads: Vec<Bytes> = (0..3u8).map(|p| Bytes::from(vec![0xa0 + p; 61])).collect();
        let request = |records: &[Bytes]| {
            let partitions = records
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    PartitionProduceData::default()
                        .with_index(i as i32)
                        .with_records(Some(r.clone()))
                })
                .collect();
            ProduceRequest::default()
                .with_acks(-1)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partition_data(partitions)])
        };
        let mut splices = Splices::default();
        let mut copied = Vec::new();
        for (batch, head) in batches.iter().zip(&heads) {
            splices.push(Splice::new(batch.clone(), head.clone()).unwrap());
            let mut whole = head.to_vec();
            whole.extend_from_slice(&batch[head.len()..]);
            copied.push(Bytes::from(whole));
        }
        for version in 3..=12 {
            let spliced = encode_request(5, None, version, &request(&batches), &splices).unwrap();
            assert!(spliced.segment_count() > 2 * batches.len());
            let plain =
                encode_request(5, None, version, &request(&copied), &Splices::default()).unwrap();
            assert_eq!(plain.segment_count(), 1);
            assert_eq!(spliced.to_bytes(), plain.to_bytes(), "Produce v{version}");
        }
    }

    #[test]
    fn encoding_an_unsupported_version_names_the_api() {
        let err = encode_request(
            1,
            None,
            99,
            &MetadataRequest::default(),
            &Splices::default(),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            NetError::Encode {
                api: ApiKey::Metadata,
                version: 99,
                ..
            }
        ));
        assert!(!err.is_retriable());
    }

    /// An `ApiVersions` v0 response refusing the version we asked for, as a
    /// broker sends it, without the size prefix.
    #[rustfmt::skip]
    const API_VERSIONS_V0_REFUSAL: &[u8] = &[
        0x00, 0x00, 0x00, 0x07,                 // correlation_id 7 (header v0)
        0x00, 0x23,                             // error_code 35 UNSUPPORTED_VERSION
        0x00, 0x00, 0x00, 0x01,                 // api_keys: ARRAY of 1
        0x00, 0x12, 0x00, 0x00, 0x00, 0x02,     // ApiVersions 0..2
    ];

    #[test]
    fn api_versions_v0_response_golden_bytes() {
        let frame = Bytes::from_static(API_VERSIONS_V0_REFUSAL);
        let (correlation_id, response) = decode_response::<ApiVersionsRequest>(frame, 0).unwrap();
        assert_eq!(correlation_id, 7);
        assert_eq!(response.error_code, 35);
        assert_eq!(response.api_keys.len(), 1);
        assert_eq!(
            (
                response.api_keys[0].api_key,
                response.api_keys[0].min_version,
                response.api_keys[0].max_version
            ),
            (18, 0, 2)
        );
    }

    #[test]
    fn leftover_bytes_are_an_error() {
        let mut frame = API_VERSIONS_V0_REFUSAL.to_vec();
        frame.push(0);
        let err = decode_response::<ApiVersionsRequest>(Bytes::from(frame), 0).unwrap_err();
        assert!(
            matches!(
                err,
                NetError::TrailingBytes {
                    api: ApiKey::ApiVersions,
                    version: 0,
                    remaining: 1
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn truncated_response_is_a_decode_error() {
        let frame = Bytes::from_static(&API_VERSIONS_V0_REFUSAL[..9]);
        let err = decode_response::<ApiVersionsRequest>(frame, 0).unwrap_err();
        assert!(matches!(err, NetError::Decode { .. }), "{err:?}");
    }

    #[test]
    fn a_huge_array_count_is_a_decode_error_not_an_abort() {
        // Fetch v4 response: correlation id, throttle time, then `responses`
        // claiming 2^31-1 topics. kafka-protocol reserves ~206 GB for them
        // before reading one; src/alloc.rs makes that a reservation, not an
        // abort, and the decode fails at the end of the frame.
        #[rustfmt::skip]
        let frame = Bytes::from_static(&[
            0x00, 0x00, 0x00, 0x01,
            0x00, 0x00, 0x00, 0x00,
            0x7f, 0xff, 0xff, 0xff,
        ]);
        let err = decode_response::<kafka_protocol::messages::FetchRequest>(frame, 4).unwrap_err();
        assert!(
            matches!(err, NetError::Decode { version: 4, .. }),
            "{err:?}"
        );

        // The same through a flexible version: a COMPACT_ARRAY of 2^32-2.
        #[rustfmt::skip]
        let frame = Bytes::from_static(&[
            0x00, 0x00, 0x00, 0x01, 0x00,       // correlation id, header tags
            0x00, 0x00, 0x00, 0x00,             // throttle time
            0x00, 0x00,                         // error code
            0x00, 0x00, 0x00, 0x00,             // session id
            0xff, 0xff, 0xff, 0xff, 0x0f,       // responses: varint 2^32-1
        ]);
        let err = decode_response::<kafka_protocol::messages::FetchRequest>(frame, 12).unwrap_err();
        assert!(
            matches!(err, NetError::Decode { version: 12, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn decoding_from_bytes_does_not_copy() {
        // A response's `Bytes` fields must point into the frame, which is what
        // keeps fetched record batches zero-copy.
        let response = ApiVersionsResponse::default()
            .with_unknown_tagged_field(9, Bytes::from_static(b"payload"));
        let mut frame = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(1)
            .encode(&mut frame, 0)
            .unwrap();
        response.encode(&mut frame, 3).unwrap();
        let frame = frame.freeze();
        let range = frame.as_ptr_range();
        let (_, decoded) = decode_response::<ApiVersionsRequest>(frame.clone(), 3).unwrap();
        let field = &decoded.unknown_tagged_fields[&9];
        assert_eq!(&field[..], b"payload");
        assert!(
            range.contains(&field.as_ptr()),
            "field was copied out of the frame"
        );
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut frame = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        frame
    }

    #[test]
    fn split_waits_for_a_whole_frame_at_every_cut_point() {
        let first = framed(b"first frame");
        let second = framed(b"second");
        let wire = [first.as_slice(), second.as_slice()].concat();
        for cut in 0..=wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut frames = Vec::new();
            while let Some(frame) = try_split_frame(&mut buf, 64).unwrap() {
                frames.push(frame);
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(frame) = try_split_frame(&mut buf, 64).unwrap() {
                frames.push(frame);
            }
            assert_eq!(
                frames,
                [&b"first frame"[..], &b"second"[..]],
                "cut at {cut}"
            );
            assert!(buf.is_empty(), "cut at {cut}");
        }
    }

    #[test]
    fn split_accepts_a_frame_of_exactly_the_limit() {
        let mut buf = BytesMut::from(&framed(&[7; 16])[..]);
        assert_eq!(
            try_split_frame(&mut buf, 16).unwrap().unwrap(),
            &[7; 16][..]
        );
    }

    #[test]
    fn oversize_or_negative_length_is_refused_before_allocating() {
        for (prefix, size) in [
            ([0x7f, 0xff, 0xff, 0xff], i32::MAX),
            ([0x00, 0x00, 0x00, 0x11], 17),
            ([0xff, 0xff, 0xff, 0xff], -1),
            ([0x80, 0x00, 0x00, 0x00], i32::MIN),
        ] {
            let mut buf = BytesMut::with_capacity(8);
            buf.extend_from_slice(&prefix);
            let capacity = buf.capacity();
            let err = try_split_frame(&mut buf, 16).unwrap_err();
            assert!(
                matches!(err, NetError::FrameTooLarge { size: s, max: 16 } if s == size),
                "{err:?}"
            );
            assert_eq!(buf.capacity(), capacity, "reserved for a refused frame");
            assert!(!err.is_retriable());
        }
    }

    #[test]
    fn split_reserves_the_rest_of_a_known_frame() {
        let mut buf = BytesMut::from(&framed(&[0; 1000])[..10]);
        assert!(try_split_frame(&mut buf, 4096).unwrap().is_none());
        assert!(buf.capacity() >= 1004);
    }
}
