//! The memory large response frames (Fetch responses) are read into: counted
//! from the first byte read until the last slice of the frame is dropped, and
//! kept for the next frame rather than given back to the allocator.
//!
//! Why count: the record batches of a Fetch response are slices of its frame,
//! so the frame lives until its last batch is acknowledged by the target. The
//! pipeline's memory budget compares [`FrameMemory::live_bytes`], which is
//! what the process really holds, rather than the sum of the batches it queues.
//!
//! Why keep: memory fresh from the kernel is zeroed page by page as it is
//! first touched. Reading every Fetch response into new memory cost 16% of the
//! mirror's CPU in profiles. Several responses live at once (each until a
//! checkpoint covers its last batch), so one spare was not enough either: page
//! faults were still 8% of the CPU. Spares are now kept while the frames and
//! spares together stay within the most the frames ever held at once, so
//! keeping them never raises the peak. The pipeline gives them back when no
//! large response came for a while ([`FrameMemory::release_unused_spares`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::sync::lock;

/// New buffers are a whole number of these: Fetch responses of one stream are
/// of about the same size, and a buffer rounded up fits the next ones. Pages
/// beyond a frame's end are never touched, so they cost no memory.
const ROUNDING: usize = 1024 * 1024;

/// One cluster's large-frame memory. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct FrameMemory {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Bytes of the frames being read or still referenced.
    live: AtomicUsize,
    /// The capacity of their buffers.
    resident: AtomicUsize,
    /// The most `resident` has been: what spares and frames together may hold.
    peak: AtomicUsize,
    /// Where each live frame is: its first byte's address and its length,
    /// to tell which frame a slice keeps alive.
    frames: Mutex<BTreeMap<usize, usize>>,
    /// Buffers handed out so far, and the count at the last
    /// [`FrameMemory::release_unused_spares`].
    handed_out: AtomicUsize,
    handed_out_at_release: AtomicUsize,
    /// Buffers no frame uses any more, empty, ready for the next.
    spare: Mutex<Vec<Vec<u8>>>,
}

impl PartialEq for FrameMemory {
    /// The same memory: clones of one `FrameMemory`.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Eq for FrameMemory {}

impl FrameMemory {
    /// Bytes of frames being read or still referenced.
    pub fn live_bytes(&self) -> usize {
        self.shared.live.load(Ordering::Relaxed)
    }

    /// The live frame `slice` lies in, as its first byte's address and its
    /// length; `None` for memory that is not a live frame's.
    pub fn frame_of(&self, slice: &[u8]) -> Option<(usize, usize)> {
        let address = slice.as_ptr() as usize;
        let frames = lock(&self.shared.frames);
        let (&start, &len) = frames.range(..=address).next_back()?;
        (address + slice.len() <= start + len).then_some((start, len))
    }

    /// Frees the spares if no buffer was handed out since the last call: the
    /// large responses have stopped (caught up, or only small ones), and the
    /// spares would stay resident for nothing. Called every few seconds.
    pub fn release_unused_spares(&self) {
        let handed_out = self.shared.handed_out.load(Ordering::Relaxed);
        let before = self
            .shared
            .handed_out_at_release
            .swap(handed_out, Ordering::Relaxed);
        if before == handed_out {
            lock(&self.shared.spare).clear();
        }
    }

    /// An empty buffer with room for a frame of `len` bytes: the smallest
    /// spare that fits, else a new one of `len` rounded up to whole
    /// [`ROUNDING`]s, so that the next frames, of about the same size, fit
    /// it too. Reusing a spare, even a large one for a small frame, is the
    /// point: its pages are already mapped. When none fits, the largest is
    /// freed rather than grown: growing would copy its whole capacity.
    pub(super) fn buffer(&self, len: usize) -> FrameBuffer {
        let bytes = {
            let mut spare = lock(&self.shared.spare);
            let smallest_fitting = spare
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            match smallest_fitting {
                Some(i) => spare.swap_remove(i),
                None => {
                    let largest = spare.iter().enumerate().max_by_key(|(_, b)| b.capacity());
                    if let Some((i, _)) = largest {
                        spare.swap_remove(i);
                    }
                    Vec::with_capacity(len.next_multiple_of(ROUNDING))
                }
            }
        };
        let capacity = bytes.capacity();
        lock(&self.shared.frames).insert(bytes.as_ptr() as usize, len);
        self.shared.handed_out.fetch_add(1, Ordering::Relaxed);
        self.shared.live.fetch_add(len, Ordering::Relaxed);
        let resident = self.shared.resident.fetch_add(capacity, Ordering::Relaxed) + capacity;
        self.shared.peak.fetch_max(resident, Ordering::Relaxed);
        FrameBuffer {
            bytes,
            len,
            capacity,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// A frame's buffer: counted in [`FrameMemory::live_bytes`] until dropped,
/// then kept as a spare (or freed, see the module docs).
#[derive(Debug)]
pub(super) struct FrameBuffer {
    bytes: Vec<u8>,
    /// The frame's length: what it adds to the live bytes.
    len: usize,
    /// The buffer's capacity when handed out: what it adds to the resident bytes.
    capacity: usize,
    shared: Arc<Shared>,
}

impl FrameBuffer {
    /// The buffer to read into; its capacity is already reserved.
    pub(super) fn bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// The frame as `Bytes` whose slices keep this buffer alive.
    pub(super) fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for FrameBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for FrameBuffer {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.clear();
        lock(&self.shared.frames).remove(&(bytes.as_ptr() as usize));
        self.shared.live.fetch_sub(self.len, Ordering::Relaxed);
        let resident = self
            .shared
            .resident
            .fetch_sub(self.capacity, Ordering::Relaxed)
            - self.capacity;
        let mut spare = lock(&self.shared.spare);
        let spare_bytes: usize = spare.iter().map(Vec::capacity).sum();
        let peak = self.shared.peak.load(Ordering::Relaxed);
        if spare.is_empty() || resident + spare_bytes + bytes.capacity() <= peak {
            spare.push(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_counts_until_its_last_slice_is_dropped() {
        let memory = FrameMemory::default();
        let mut buffer = memory.buffer(1000);
        assert_eq!(memory.live_bytes(), 1000);
        buffer.bytes_mut().extend_from_slice(&[7; 1000]);
        let frame = buffer.freeze();
        let batch = frame.slice(100..200);
        drop(frame);
        assert_eq!(memory.live_bytes(), 1000);
        assert_eq!(&batch[..], &[7; 100][..]);
        drop(batch);
        assert_eq!(memory.live_bytes(), 0);
    }

    #[test]
    fn released_buffers_are_reused() {
        let memory = FrameMemory::default();
        let mut first = memory.buffer(1000);
        assert_eq!(first.bytes_mut().capacity(), ROUNDING, "rounded up");
        first.bytes_mut().extend_from_slice(&[1; 1000]);
        let address = first.bytes_mut().as_ptr();
        drop(first.freeze());

        let mut again = memory.buffer(400_000);
        assert_eq!(again.bytes_mut().as_ptr(), address, "the spare is reused");
        assert!(again.bytes_mut().is_empty());
        assert_eq!(memory.live_bytes(), 400_000);
        drop(again);
        let mut bigger = memory.buffer(ROUNDING + 1);
        assert_eq!(bigger.bytes_mut().capacity(), 2 * ROUNDING);
        assert!(
            spare_capacities(&memory).is_empty(),
            "the spare too small is freed"
        );
        assert_eq!(memory.live_bytes(), ROUNDING + 1);
    }

    #[test]
    fn a_slice_is_traced_to_its_live_frame() {
        let memory = FrameMemory::default();
        let mut buffers: Vec<FrameBuffer> = (0..3).map(|_| memory.buffer(1000)).collect();
        for buffer in &mut buffers {
            buffer.bytes_mut().extend_from_slice(&[0; 1000]);
        }
        let frames: Vec<Bytes> = buffers.into_iter().map(FrameBuffer::freeze).collect();
        for frame in &frames {
            let start = frame.as_ptr() as usize;
            assert_eq!(memory.frame_of(&frame[..]), Some((start, 1000)));
            assert_eq!(memory.frame_of(&frame[999..]), Some((start, 1000)));
        }
        assert_eq!(memory.frame_of(&[0u8; 10]), None, "not a frame");
        let middle = frames[1].slice(10..20);
        let start = frames[1].as_ptr() as usize;
        drop(frames);
        assert_eq!(memory.frame_of(&middle), Some((start, 1000)), "kept alive");
        drop(middle);
        assert!(lock(&memory.shared.frames).is_empty());
    }

    fn spare_capacities(memory: &FrameMemory) -> Vec<usize> {
        let mut kept: Vec<usize> = lock(&memory.shared.spare)
            .iter()
            .map(|b| b.capacity() / ROUNDING)
            .collect();
        kept.sort_unstable();
        kept
    }

    /// Sizes in [`ROUNDING`]s.
    #[test]
    fn spares_and_frames_together_stay_within_the_peak() {
        let memory = FrameMemory::default();
        let mut frames: Vec<FrameBuffer> = (1..=5).map(|i| memory.buffer(i * ROUNDING)).collect();
        // Peak 15. Released while others live: kept, since frames and
        // spares still hold no more than the frames did at their peak.
        let last = frames.pop().expect("five frames");
        drop(frames.drain(..3));
        assert_eq!(spare_capacities(&memory), [1, 2, 3]);
        // None fits a larger frame: the largest is freed for it.
        let large = memory.buffer(10 * ROUNDING);
        assert_eq!(spare_capacities(&memory), [1, 2]);
        // Peak 19: 9 resident, 3 spare, and 10 more would pass it.
        drop(large);
        assert_eq!(spare_capacities(&memory), [1, 2]);
        drop(frames);
        assert_eq!(spare_capacities(&memory), [1, 2, 4]);
        drop(last);
        assert_eq!(spare_capacities(&memory), [1, 2, 4, 5]);
        assert_eq!(memory.live_bytes(), 0);
    }

    #[test]
    fn spares_are_released_once_no_frame_came_since_the_last_call() {
        let memory = FrameMemory::default();
        drop(memory.buffer(ROUNDING));
        memory.release_unused_spares();
        assert_eq!(spare_capacities(&memory), [1], "a frame came since");
        drop(memory.buffer(ROUNDING));
        memory.release_unused_spares();
        assert_eq!(spare_capacities(&memory), [1], "and another");
        memory.release_unused_spares();
        assert!(spare_capacities(&memory).is_empty());
    }
}
