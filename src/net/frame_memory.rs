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
//! mirror's CPU in profiles; a few spare buffers make that cost disappear.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// Spare buffers kept for the next frames. One Fetch is in flight per broker
/// and responses are released in roughly the order they arrived, so one spare
/// serves a steady stream; each more would stay resident for little gain.
const SPARE_BUFFERS: usize = 1;

/// One cluster's large-frame memory. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct FrameMemory {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Bytes of the frames being read or still referenced.
    live: AtomicUsize,
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

    /// An empty buffer with room for a frame of `len` bytes: the smallest
    /// spare that fits, else the largest spare grown to fit, else a new one.
    /// Reusing the spares' capacity, even a large one for a small frame, is
    /// the point: their pages are already mapped.
    pub(super) fn buffer(&self, len: usize) -> FrameBuffer {
        let spare = {
            let mut spare = self.shared.lock_spare();
            let fitting = spare
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())
                .or_else(|| spare.iter().enumerate().max_by_key(|(_, b)| b.capacity()))
                .map(|(i, _)| i);
            fitting.map(|i| spare.swap_remove(i))
        };
        let mut bytes = spare.unwrap_or_default();
        bytes.reserve_exact(len);
        self.shared.live.fetch_add(len, Ordering::Relaxed);
        FrameBuffer {
            bytes,
            len,
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Shared {
    fn lock_spare(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // The list holds plain buffers; a panic elsewhere cannot leave it inconsistent.
        self.spare.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A frame's buffer: counted in [`FrameMemory::live_bytes`] until dropped,
/// then kept as a spare (or freed when there are enough).
#[derive(Debug)]
pub(super) struct FrameBuffer {
    bytes: Vec<u8>,
    /// The frame's length: what it adds to the live bytes.
    len: usize,
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
        self.shared.live.fetch_sub(self.len, Ordering::Relaxed);
        let mut spare = self.shared.lock_spare();
        if spare.len() < SPARE_BUFFERS {
            spare.push(bytes);
        } else if let Some(smallest) = spare.iter_mut().min_by_key(|b| b.capacity()) {
            // Keep the larger buffers: they fit any frame.
            if smallest.capacity() < bytes.capacity() {
                *smallest = bytes;
            }
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
        first.bytes_mut().extend_from_slice(&[1; 1000]);
        let address = first.bytes_mut().as_ptr();
        drop(first.freeze());

        let mut again = memory.buffer(400);
        assert_eq!(again.bytes_mut().as_ptr(), address, "the spare is reused");
        assert!(again.bytes_mut().is_empty());
        assert_eq!(memory.live_bytes(), 400);
        drop(again);
        let mut bigger = memory.buffer(4000);
        assert!(
            bigger.bytes_mut().capacity() >= 4000,
            "a spare too small grows"
        );
        assert_eq!(memory.live_bytes(), 4000);
    }

    #[test]
    fn only_a_few_spares_are_kept_the_largest() {
        let memory = FrameMemory::default();
        let buffers: Vec<FrameBuffer> = (1..=5).map(|i| memory.buffer(100 * i)).collect();
        drop(buffers);
        let mut kept: Vec<usize> = memory
            .shared
            .lock_spare()
            .iter()
            .map(Vec::capacity)
            .collect();
        kept.sort_unstable();
        assert_eq!(kept.len(), SPARE_BUFFERS);
        assert_eq!(kept.last(), Some(&500));
        assert_eq!(memory.live_bytes(), 0);
    }
}
