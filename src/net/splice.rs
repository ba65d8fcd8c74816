//! Zero-copy request frames: the record batches of a Produce request go to
//! the socket as slices of the Fetch responses they came in, never copied into
//! the request.
//!
//! kafka-protocol encodes a request into one contiguous buffer, so encoding a
//! Produce request would copy every record into it. Instead, the request is
//! encoded through a `SplicingWriter`: when the codec writes a value that a
//! [`Splice`] names (the `records` of a partition, written with one
//! `put_slice`), the writer ends the current segment and takes the spliced
//! bytes by reference. The frame leaves as a list of segments in one vectored
//! write: the codec's own bytes (sizes, names, lengths), then for each batch
//! its rewritten 61-byte header and the untouched rest of the batch.
//!
//! A splice replaces the first bytes of the value with bytes of the same
//! length, so every length the codec computed stays right.
#![allow(unsafe_code)]

use std::io::IoSlice;
use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// A value of a request (a batch) sent with its first bytes replaced.
#[derive(Debug, Clone)]
pub struct Splice {
    value: Bytes,
    head: Bytes,
}

impl Splice {
    /// `value` on the wire with its first `head.len()` bytes replaced by
    /// `head`; `None` if `head` is longer than `value`.
    pub fn new(value: Bytes, head: Bytes) -> Option<Self> {
        (head.len() <= value.len()).then_some(Splice { value, head })
    }

    /// The value the request carries, which the codec writes and this replaces.
    pub fn value(&self) -> &Bytes {
        &self.value
    }

    /// The bytes that go on the wire, in order.
    pub fn parts(&self) -> [Bytes; 2] {
        [self.head.clone(), self.value.slice(self.head.len()..)]
    }
}

/// The splices of one request, in the order the codec writes their values
/// (the request's order: topic by topic, partition by partition).
#[derive(Debug, Default)]
pub struct Splices {
    in_order: Vec<Splice>,
}

impl Splices {
    /// Adds the splice of the next value; it must be put in the request as
    /// this `Bytes` (or a clone of it), whose address is what the writer
    /// recognises.
    pub fn push(&mut self, splice: Splice) {
        self.in_order.push(splice);
    }

    /// Bytes of the values replaced: what the writer takes by reference.
    fn value_bytes(&self) -> usize {
        self.in_order.iter().map(|splice| splice.value.len()).sum()
    }

    /// The splice at `index` if `slice` is its value.
    fn get_if(&self, index: usize, slice: &[u8]) -> Option<&Splice> {
        self.in_order.get(index).filter(|splice| {
            splice.value.as_ptr() == slice.as_ptr() && splice.value.len() == slice.len()
        })
    }

    fn len(&self) -> usize {
        self.in_order.len()
    }
}

/// Splices whose values the encoded request did not contain, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{unused} of {of} spliced values were not written in the order given")]
pub struct UnusedSplices {
    /// Splices not applied.
    pub unused: usize,
    /// Splices given.
    pub of: usize,
}

/// A request frame ready for the socket: its segments in order, read as one
/// [`Buf`] whose [`chunks_vectored`](Buf::chunks_vectored) feeds `writev`.
#[derive(Debug, Default)]
pub struct RequestFrame {
    segments: Vec<Bytes>,
    /// Index of the first segment not fully consumed.
    next: usize,
    /// Bytes left to write.
    remaining: usize,
}

impl RequestFrame {
    /// The frame's bytes copied into one buffer (for tests and fixtures).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.remaining());
        for segment in &self.segments[self.next..] {
            out.extend_from_slice(segment);
        }
        out.freeze()
    }

    /// How many separate segments the frame has left.
    pub fn segment_count(&self) -> usize {
        self.segments.len() - self.next
    }
}

impl Buf for RequestFrame {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.segments.get(self.next).map_or(&[], |s| &s[..])
    }

    fn advance(&mut self, mut count: usize) {
        while count > 0 {
            let Some(segment) = self.segments.get_mut(self.next) else {
                panic!("advanced {count} bytes past the end of a request frame");
            };
            let step = count.min(segment.len());
            segment.advance(step);
            count -= step;
            self.remaining -= step;
            if segment.is_empty() {
                self.next += 1;
            }
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, segment) in dst.iter_mut().zip(&self.segments[self.next..]) {
            *slot = IoSlice::new(segment);
            filled += 1;
        }
        filled
    }
}

/// The buffer a request is encoded into: the codec's bytes are copied into
/// the current segment, spliced values are taken by reference.
#[derive(Debug)]
pub(super) struct SplicingWriter<'a> {
    splices: &'a Splices,
    /// Splices applied so far: the index of the next one.
    spliced: usize,
    done: Vec<Bytes>,
    /// Bytes in `done`.
    done_len: usize,
    current: BytesMut,
}

impl<'a> SplicingWriter<'a> {
    /// A writer for a frame of `frame_len` bytes. Its buffer has room for
    /// the codec's bytes alone, the frame less the spliced values, which are
    /// taken by reference; every segment cut from it shares that one
    /// allocation.
    pub(super) fn new(splices: &'a Splices, frame_len: usize) -> Self {
        SplicingWriter {
            splices,
            spliced: 0,
            // Each splice ends a segment of the codec's bytes and adds its
            // two parts; one segment of the codec's bytes ends the frame.
            done: Vec::with_capacity(3 * splices.len() + 1),
            done_len: 0,
            current: BytesMut::with_capacity(frame_len.saturating_sub(splices.value_bytes())),
        }
    }

    /// Total bytes written so far.
    pub(super) fn len(&self) -> usize {
        self.done_len + self.current.len()
    }

    /// The finished frame, or how many splices were not applied: their
    /// values were not written, or not in the order given, and the frame
    /// would carry the values as they are.
    pub(super) fn finish(mut self) -> Result<RequestFrame, UnusedSplices> {
        if self.spliced != self.splices.len() {
            return Err(UnusedSplices {
                unused: self.splices.len() - self.spliced,
                of: self.splices.len(),
            });
        }
        self.end_segment();
        Ok(RequestFrame {
            segments: self.done,
            next: 0,
            remaining: self.done_len,
        })
    }

    fn push(&mut self, segment: Bytes) {
        if !segment.is_empty() {
            self.done_len += segment.len();
            self.done.push(segment);
        }
    }

    fn end_segment(&mut self) {
        let segment = self.current.split().freeze();
        self.push(segment);
    }

    fn local(&self, range: Range<usize>) -> Range<usize> {
        assert!(
            range.start >= self.done_len,
            "kafka-protocol reached back into a finished segment (bytes {range:?}, \
             {} already sent on)",
            self.done_len
        );
        range.start - self.done_len..range.end - self.done_len
    }
}

// SAFETY: every method delegates to `BytesMut`, whose implementation upholds
// the `BufMut` contract; `put_slice` only adds the spliced case on top.
unsafe impl BufMut for SplicingWriter<'_> {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, count: usize) {
        // SAFETY: the caller initialised `count` bytes of `chunk_mut`, which
        // is `current`'s.
        unsafe { self.current.advance_mut(count) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        match self.splices.get_if(self.spliced, src) {
            Some(splice) => {
                self.spliced += 1;
                self.end_segment();
                for part in splice.parts() {
                    self.push(part);
                }
            }
            None => self.current.put_slice(src),
        }
    }
}

impl ByteBufMut for SplicingWriter<'_> {
    fn offset(&self) -> usize {
        self.len()
    }

    fn seek(&mut self, offset: usize) {
        let local = self.local(offset..offset);
        self.current.resize(local.start, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        let local = self.local(r);
        &mut self.current[local]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(frame: &mut RequestFrame) -> Vec<u8> {
        let mut out = Vec::new();
        while frame.has_remaining() {
            let mut slices = [IoSlice::new(&[]); 3];
            let n = frame.chunks_vectored(&mut slices);
            // Take at most 5 bytes per "write", splitting segments.
            let mut budget = 5;
            for slice in &slices[..n] {
                let take = slice.len().min(budget);
                out.extend_from_slice(&slice[..take]);
                budget -= take;
            }
            frame.advance(5 - budget);
        }
        out
    }

    #[test]
    fn spliced_value_goes_out_by_reference_with_its_new_head() {
        let value = Bytes::from_static(b"OLDHEAD-the records");
        let mut splices = Splices::default();
        splices.push(Splice::new(value.clone(), Bytes::from_static(b"NEWHEAD")).unwrap());
        let mut writer = SplicingWriter::new(&splices, 16);
        writer.put_i32(value.len() as i32);
        writer.put_slice(&value);
        writer.put_slice(b"tail");
        assert_eq!(writer.len(), 4 + value.len() + 4);
        let mut frame = writer.finish().unwrap();
        assert_eq!(frame.segment_count(), 4);
        let mut expected = 19i32.to_be_bytes().to_vec();
        expected.extend_from_slice(b"NEWHEAD-the recordstail");
        assert_eq!(frame.to_bytes(), expected);
        assert_eq!(written(&mut frame), expected);
        assert_eq!(frame.remaining(), 0);
    }

    /// The buffer holds the codec's bytes alone, not the spliced value, and
    /// they fill it without growing it.
    #[test]
    fn the_buffer_is_sized_for_the_bytes_written_into_it() {
        let value = Bytes::from(vec![7u8; 1 << 20]);
        let mut splices = Splices::default();
        splices.push(Splice::new(value.clone(), Bytes::from_static(b"NEWHEAD")).unwrap());
        let mut writer = SplicingWriter::new(&splices, 4 + value.len() + 4);
        assert_eq!(writer.current.capacity(), 8);
        writer.put_i32(value.len() as i32);
        writer.put_slice(&value);
        writer.put_slice(b"tail");
        // What is left of the one allocation after the first segment was cut.
        assert_eq!(writer.current.capacity(), 4);
        assert_eq!(writer.finish().unwrap().remaining(), 4 + value.len() + 4);
    }

    #[test]
    fn equal_bytes_elsewhere_are_not_spliced() {
        let value = Bytes::from_static(b"OLDHEAD-x");
        let mut splices = Splices::default();
        splices.push(Splice::new(value, Bytes::from_static(b"NEWHEAD")).unwrap());
        let mut writer = SplicingWriter::new(&splices, 16);
        let copy = b"OLDHEAD-x".to_vec();
        writer.put_slice(&copy);
        assert_eq!(writer.len(), 9);
        assert_eq!(
            writer.finish().unwrap_err(),
            UnusedSplices { unused: 1, of: 1 }
        );
    }

    #[test]
    fn splices_out_of_request_order_are_refused() {
        let (a, b) = (Bytes::from_static(b"aaaa"), Bytes::from_static(b"bbbb"));
        let mut splices = Splices::default();
        splices.push(Splice::new(a.clone(), Bytes::from_static(b"A")).unwrap());
        splices.push(Splice::new(b.clone(), Bytes::from_static(b"B")).unwrap());
        let mut writer = SplicingWriter::new(&splices, 16);
        writer.put_slice(&b);
        writer.put_slice(&a);
        assert_eq!(
            writer.finish().unwrap_err(),
            UnusedSplices { unused: 1, of: 2 }
        );
    }

    #[test]
    fn a_head_longer_than_its_value_is_refused() {
        assert!(Splice::new(Bytes::from_static(b"ab"), Bytes::from_static(b"abc")).is_none());
    }

    #[test]
    fn gaps_are_filled_within_the_current_segment() {
        let value = Bytes::from_static(b"HHvalue");
        let mut splices = Splices::default();
        splices.push(Splice::new(value.clone(), Bytes::from_static(b"hh")).unwrap());
        let mut writer = SplicingWriter::new(&splices, 16);
        writer.put_slice(&value);
        let gap = writer.put_gap(4);
        writer.put_u8(9);
        writer.gap_buf(gap).copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            writer.finish().unwrap().to_bytes(),
            &b"hhvalue\x01\x02\x03\x04\x09"[..]
        );
    }
}
