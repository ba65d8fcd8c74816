//! A scripted broker for in-process tests: it reads request frames off one
//! end of an in-memory duplex stream (or an accepted socket, for tests of a
//! whole cluster client) and writes whatever the test tells it to,
//! including broken frames.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

use super::frame::try_split_frame;

/// One request as the broker sees it.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) header: RequestHeader,
    /// The request body, still encoded.
    pub(crate) body: Bytes,
}

#[derive(Debug)]
pub(crate) struct Peer<S = DuplexStream> {
    stream: S,
    buf: BytesMut,
}

impl Peer {
    /// A connected pair: the client's end and the scripted broker.
    pub(crate) fn pair() -> (DuplexStream, Peer) {
        let (client, broker) = tokio::io::duplex(64 * 1024);
        (client, Peer::over(broker))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Peer<S> {
    /// The broker's end of `stream`.
    pub(crate) fn over(stream: S) -> Self {
        Peer {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Reads the next request frame; panics if the client hangs up first.
    pub(crate) async fn read_request(&mut self) -> Received {
        loop {
            if let Some(mut frame) = try_split_frame(&mut self.buf, 1 << 20).unwrap() {
                let header = decode_request_header_from_buffer(&mut frame).unwrap();
                return Received {
                    header,
                    body: frame,
                };
            }
            let n = self.stream.read_buf(&mut self.buf).await.unwrap();
            assert_ne!(n, 0, "client closed the connection");
        }
    }

    /// Answers with a real response message, header and all.
    pub(crate) async fn respond<M: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        correlation_id: i32,
        body: &M,
    ) {
        let frame = response_frame(api, version, correlation_id, body);
        self.write(&frame).await;
    }

    pub(crate) async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Waits for the client to close its end of the stream.
    pub(crate) async fn expect_eof(&mut self) {
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if self.stream.read_buf(&mut self.buf).await.unwrap() == 0 {
                    return;
                }
            }
        });
        read.await.expect("the client did not close the connection");
    }
}

/// A complete response frame: size prefix, header at the version `api` and
/// `version` call for, body.
pub(crate) fn response_frame<M: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &M,
) -> Vec<u8> {
    let mut message = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut message, api.response_header_version(version))
        .unwrap();
    body.encode(&mut message, version).unwrap();
    let mut frame = Vec::with_capacity(4 + message.len());
    frame.put_u32(u32::try_from(message.len()).unwrap());
    frame.extend_from_slice(&message);
    frame
}
