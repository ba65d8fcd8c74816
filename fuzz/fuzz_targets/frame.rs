//! Arbitrary bytes as a response stream: split into frames with a small
//! maximum, then each frame decoded as a Fetch, Produce, Metadata and
//! ApiVersions response at a version taken from the first input byte.
#![no_main]

use bytes::BytesMut;
use kafka_mirror::net::frame::{decode_response, try_split_frame};
use kafka_protocol::messages::{
    ApiVersionsRequest, FetchRequest, MetadataRequest, ProduceRequest,
};
use kafka_protocol::protocol::{Message, Request};
use libfuzzer_sys::fuzz_target;

/// Small, so the target explores the refusal path too.
const MAX_FRAME_BYTES: usize = 64 << 10;

/// A version in the range kafka-protocol supports for `R`'s response.
fn version<R: Request>(byte: u8) -> i16 {
    let range = <R::Response as Message>::VERSIONS;
    let span = (range.max - range.min + 1) as i16;
    range.min + (byte as i16) % span
}

fn decode_all(frame: &bytes::Bytes, byte: u8) {
    let _ = decode_response::<FetchRequest>(frame.clone(), version::<FetchRequest>(byte));
    let _ = decode_response::<ProduceRequest>(frame.clone(), version::<ProduceRequest>(byte));
    let _ = decode_response::<MetadataRequest>(frame.clone(), version::<MetadataRequest>(byte));
    let _ = decode_response::<ApiVersionsRequest>(
        frame.clone(),
        version::<ApiVersionsRequest>(byte),
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&byte, wire)) = data.split_first() else {
        return;
    };
    let mut buf = BytesMut::from(wire);
    while let Ok(Some(frame)) = try_split_frame(&mut buf, MAX_FRAME_BYTES) {
        decode_all(&frame, byte);
    }
});
