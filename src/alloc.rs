//! The process's global allocator: the system allocator, except that a large
//! request (64 MiB or more) only reserves address space.
//!
//! Why: kafka-protocol 0.18 decodes an ARRAY by reserving room for the element
//! count read off the wire before reading any element (`Vec::with_capacity(n)`
//! in `Array::decode`, `IndexMap::with_capacity` for record headers). A corrupt
//! or hostile frame with a count of 2^31 asks for hundreds of gigabytes; the
//! system allocator refuses, and Rust aborts the whole process on a refused
//! allocation, so one bad frame from anything answering on a broker's address
//! would stop every partition.
//!
//! Such a reservation is never filled: the frame is bounded in size (see
//! [`crate::net::frame::try_split_frame`]) and ends long before, so the decode
//! fails with a clean "not enough bytes" error and the vector is dropped. Here
//! it is backed by an anonymous `MAP_NORESERVE` mapping, which commits no memory
//! until a page is touched: the bogus reservation costs one `mmap`/`munmap`
//! pair, and the memory the mirror really uses stays bounded by its budget and
//! shows in its RSS. Legitimate large buffers (a Fetch response near the
//! frame limit) work the same way glibc serves them, from a fresh mapping.
//!
//! Remove this module once kafka-protocol bounds the capacity by the bytes left
//! in the frame (upstream pull requests #152, #161 and #200 do).
//!
//! The crate denies `unsafe` code but in the modules that allow it: this one,
//! `net/splice.rs` and, with the `count-allocations` feature, `alloc_count.rs`.
//! Here it is the `GlobalAlloc` contract and the `mmap`/`munmap` calls.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// Requests from this size up are served by a reserving mapping.
const RESERVE_FROM: usize = 64 * 1024 * 1024;
/// `mmap` returns page-aligned memory; a stricter alignment goes to the system.
const PAGE_ALIGN: usize = 4096;

/// The system allocator, with large requests served by [`reserve`].
#[derive(Debug)]
pub(crate) struct ReservingAllocator;

/// Whether `layout` is served by a reserving mapping. Decided by the layout
/// alone, so `dealloc`, which gets the same layout, undoes the right thing.
fn is_reserved(layout: &Layout) -> bool {
    layout.size() >= RESERVE_FROM && layout.align() <= PAGE_ALIGN
}

/// Maps `size` bytes of zeroed, uncommitted memory; null if the kernel refuses
/// (which `GlobalAlloc` callers treat like any refused allocation).
fn reserve(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address the kernel picks
    // touches no existing memory.
    let address = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if address == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        address.cast()
    }
}

// SAFETY: every method either forwards to `System` with the caller's arguments
// or, for layouts `is_reserved` accepts, maps and unmaps whole anonymous
// mappings of exactly `layout.size()` bytes, page-aligned (so aligned for any
// `align() <= PAGE_ALIGN`) and zeroed by the kernel.
unsafe impl GlobalAlloc for ReservingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_reserved(&layout) {
            reserve(layout.size())
        } else {
            // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_reserved(&layout) {
            reserve(layout.size())
        } else {
            // SAFETY: forwarded unchanged.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if is_reserved(&layout) {
            // SAFETY: `block` came from `reserve(layout.size())` (same layout,
            // same decision) and is not used after this call. A failed munmap
            // leaves the mapping in place: a leak, never a double use.
            unsafe { libc::munmap(block.cast(), layout.size()) };
        } else {
            // SAFETY: forwarded unchanged; `block` came from `System`.
            unsafe { System.dealloc(block, layout) }
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to `align`, does
        // not overflow `isize`, which is all `Layout` requires.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_reserved(&layout) && !is_reserved(&new_layout) {
            // SAFETY: forwarded unchanged; both sides belong to `System`.
            return unsafe { System.realloc(block, layout, new_size) };
        }
        // Into, out of or within the reserved range: move the contents.
        // SAFETY: `new_layout` has a non-zero size (the caller's contract).
        let moved = unsafe { self.alloc(new_layout) };
        if !moved.is_null() {
            // SAFETY: both blocks are valid for the smaller size and distinct;
            // `block` is freed with the layout it was allocated with.
            unsafe {
                ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                self.dealloc(block, layout);
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_reservation_succeeds_without_committing_memory() {
        // 1 TiB: more than any machine's RAM and swap, so the system allocator
        // would refuse it and the process would abort.
        let mut huge: Vec<u64> = Vec::with_capacity(1 << 37);
        huge.push(7);
        assert_eq!(huge[0], 7);
        assert!(huge.capacity() >= 1 << 37);
    }

    #[test]
    fn growing_across_the_threshold_keeps_the_contents() {
        let mut bytes: Vec<u8> = (0..=255u8).cycle().take(RESERVE_FROM - 1).collect();
        bytes.extend_from_slice(&[1, 2, 3]);
        bytes.reserve(RESERVE_FROM);
        assert_eq!(bytes.len(), RESERVE_FROM + 2);
        assert!(bytes[..RESERVE_FROM - 1]
            .iter()
            .zip((0..=255u8).cycle())
            .all(|(a, b)| *a == b));
        assert_eq!(&bytes[RESERVE_FROM - 1..], &[1, 2, 3]);
        bytes.truncate(10);
        bytes.shrink_to_fit();
        assert_eq!(bytes, (0..10u8).collect::<Vec<_>>());
    }

    #[test]
    fn zeroed_reservations_read_as_zero() {
        let zeros = vec![0u8; RESERVE_FROM];
        assert!(zeros.iter().step_by(4096).all(|&b| b == 0));
    }
}
