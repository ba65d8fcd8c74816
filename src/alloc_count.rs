//! Allocation counting for the benches: the process's allocator (see
//! `alloc.rs`) with every allocation counted, in number and in bytes.
//!
//! Built only with the `count-allocations` feature, which this crate's tests
//! and benches turn on: a binary has one global allocator and this crate
//! installs it, so a bench cannot install a counting one of its own. The
//! shipped binary is built without it and pays nothing.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::alloc::ReservingAllocator;

static COUNT: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// Allocations made by the process, every thread included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocations {
    /// Calls to `alloc`, `alloc_zeroed` and `realloc`.
    pub count: u64,
    /// Bytes those calls asked for (for `realloc`, the new size).
    pub bytes: u64,
}

impl Allocations {
    /// Everything allocated since the process started.
    pub fn so_far() -> Self {
        Allocations {
            count: COUNT.load(Relaxed),
            bytes: BYTES.load(Relaxed),
        }
    }

    /// What `work` allocated, with its result (returned, so that dropping it,
    /// which allocates nothing, happens outside the count). Other threads'
    /// allocations meanwhile are counted too: keep them idle.
    pub fn of<T>(work: impl FnOnce() -> T) -> (T, Self) {
        let before = Self::so_far();
        let out = work();
        let after = Self::so_far();
        let spent = Allocations {
            count: after.count - before.count,
            bytes: after.bytes - before.bytes,
        };
        (out, spent)
    }
}

/// [`ReservingAllocator`], counting each allocation.
#[derive(Debug)]
pub(crate) struct CountingAllocator;

fn note(bytes: usize) {
    COUNT.fetch_add(1, Relaxed);
    BYTES.fetch_add(bytes as u64, Relaxed);
}

// SAFETY: every method forwards its arguments unchanged to
// `ReservingAllocator`, whose implementation upholds the contract; counting
// touches only two atomics and never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { ReservingAllocator.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { ReservingAllocator.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `block` came from `ReservingAllocator`.
        unsafe { ReservingAllocator.dealloc(block, layout) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded unchanged; `block` came from `ReservingAllocator`.
        unsafe { ReservingAllocator.realloc(block, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_is_counted_with_its_size() {
        let (boxed, spent) = Allocations::of(|| Box::new([7u8; 1000]));
        assert_eq!(boxed[999], 7);
        // Other test threads may allocate at the same time: at least this one.
        assert!(spent.count >= 1);
        assert!(spent.bytes >= 1000);
    }
}
