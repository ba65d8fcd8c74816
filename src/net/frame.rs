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

use super::{CodecError, NetError};

/// Length of the size prefix in front of every frame.
const SIZE_PREFIX: usize = 4;

/// The [`ApiKey`] of a request type.
pub fn api_key<R: Request>() -> ApiKey {
    // `R::KEY` comes from kafka-protocol's generated code, which defines an
    // `ApiKey` variant for every request type it generates.
    ApiKey::try_from(R::KEY).expect("kafka-protocol request types have known API keys")
}

/// Encodes `request` as a complete frame: size prefix, header (at the header
/// version this API and version call for), body.
///
/// The frame is built in one buffer of exactly the right size so the writer can
/// send it with a single `write_all`.
pub fn encode_request<R: Request>(
    correlation_id: i32,
    client_id: Option<&StrBytes>,
    version: i16,
    request: &R,
) -> Result<Bytes, NetError> {
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

    let mut buf = BytesMut::with_capacity(SIZE_PREFIX + size);
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
    Ok(buf.freeze())
}

/// Splits one complete frame (without its size prefix) off the front of `buf`.
///
/// Returns `Ok(None)` until the whole frame is buffered; once the size is known
/// it reserves room for the rest, so a large fetch response is read into one
/// allocation. The size is checked against `max_frame_bytes` (which excludes
/// the 4-byte prefix) before anything is reserved, so a corrupt or hostile
/// length cannot make us allocate.
pub fn try_split_frame(
    buf: &mut BytesMut,
    max_frame_bytes: usize,
) -> Result<Option<Bytes>, NetError> {
    let Some(prefix) = buf.first_chunk::<SIZE_PREFIX>() else {
        return Ok(None);
    };
    let size = i32::from_be_bytes(*prefix);
    let len = usize::try_from(size)
        .ok()
        .filter(|&len| len <= max_frame_bytes)
        .ok_or(NetError::FrameTooLarge {
            size,
            max: max_frame_bytes,
        })?;
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
