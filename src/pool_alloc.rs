//! A size-class allocator in front of the system one, for the filter on wasm32 (installed in
//! `filter`). A request allocates and frees about ten small blocks (the host's copies of a
//! header map and of a tenant's state, the tenant id, the admission...), and wasi-libc's
//! dlmalloc with Rust's wrappers costs about 250 instructions per malloc and free pair.
//! Here a block of at most [`MAX_POOLED`] bytes (alignment at most 8) is rounded up to a
//! power of two and, once freed, kept on that size's free list for the next allocation:
//! a pop or a push, a few instructions each.
//!
//! Memory kept on the free lists is never given back to the system allocator; it is bounded
//! by the peak number of live blocks of each size (wasm memory never shrinks anyway).
//! Single-threaded: wasm32 without threads has one thread per VM, which is what makes the
//! `Sync` below sound. Larger or more aligned blocks go to the system allocator as they are.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr::null_mut;

/// The largest block kept on a free list.
pub const MAX_POOLED: usize = 4096;
/// Size classes: 8, 16, 32, ..., 4096 bytes.
const CLASSES: usize = 10;
const MIN_SHIFT: u32 = 3;

/// A free block: the next free block of the same size is written in its first bytes.
struct Free {
    next: *mut Free,
}

pub struct Pool<A> {
    inner: A,
    free: UnsafeCell<[*mut Free; CLASSES]>,
}

// SAFETY: used as the global allocator only on wasm32 without threads (one thread); the
// native tests use their own instance from one thread.
unsafe impl<A: Sync> Sync for Pool<A> {}

impl<A> Pool<A> {
    pub const fn new(inner: A) -> Pool<A> {
        Pool { inner, free: UnsafeCell::new([null_mut(); CLASSES]) }
    }
}

/// The size class of a layout, if it is pooled.
#[inline]
fn class(l: Layout) -> Option<usize> {
    if l.size() > MAX_POOLED || l.align() > 8 {
        return None;
    }
    let size = l.size().max(1 << MIN_SHIFT).next_power_of_two();
    Some((size.trailing_zeros() - MIN_SHIFT) as usize)
}

#[inline]
fn class_layout(c: usize) -> Layout {
    // SAFETY: a power of two from 8 to 4096 with alignment 8 is a valid layout.
    unsafe { Layout::from_size_align_unchecked(1 << (c as u32 + MIN_SHIFT), 8) }
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for Pool<A> {
    #[inline(never)]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let Some(c) = class(l) else {
            // SAFETY: forwarded as received.
            return unsafe { self.inner.alloc(l) };
        };
        // SAFETY: one thread (see `Sync`); no reference to the lists outlives this call.
        let free = unsafe { &mut *self.free.get() };
        let head = free[c];
        if head.is_null() {
            // SAFETY: a valid non-zero layout.
            return unsafe { self.inner.alloc(class_layout(c)) };
        }
        // SAFETY: `head` is a block of this class that was freed, holding the next one.
        free[c] = unsafe { (*head).next };
        head.cast()
    }

    #[inline(never)]
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        let Some(c) = class(l) else {
            // SAFETY: forwarded as received.
            return unsafe { self.inner.dealloc(p, l) };
        };
        // SAFETY: one thread; `p` is a block of class `c` (allocated with this layout's
        // class), at least 8 bytes and 8-aligned, no longer used by its owner.
        unsafe {
            let free = &mut *self.free.get();
            let b = p.cast::<Free>();
            (*b).next = free[c];
            free[c] = b;
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's layout with the new size is valid (GlobalAlloc's contract).
        let nl = unsafe { Layout::from_size_align_unchecked(new_size, l.align()) };
        match (class(l), class(nl)) {
            (Some(a), Some(b)) if a == b => p,
            (None, None) => unsafe { self.inner.realloc(p, l, new_size) },
            _ => {
                // SAFETY: as in `alloc` and `dealloc`; the copy stays within both blocks.
                unsafe {
                    let q = self.alloc(nl);
                    if !q.is_null() {
                        std::ptr::copy_nonoverlapping(p, q, l.size().min(new_size));
                        self.dealloc(p, l);
                    }
                    q
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use std::alloc::System;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts what reaches the system allocator.
    struct Counted(AtomicUsize, AtomicUsize);
    unsafe impl GlobalAlloc for Counted {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            self.0.fetch_add(1, Ordering::Relaxed);
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            self.1.fetch_add(1, Ordering::Relaxed);
            unsafe { System.dealloc(p, l) }
        }
    }

    #[test]
    fn classes_round_up_to_powers_of_two_and_leave_big_or_aligned_blocks_alone() {
        let c = |size, align| class(Layout::from_size_align(size, align).unwrap());
        assert_eq!((c(0, 1), c(1, 1), c(8, 8), c(9, 4), c(16, 8), c(17, 1)), (Some(0), Some(0), Some(0), Some(1), Some(1), Some(2)));
        assert_eq!((c(4096, 8), c(4097, 1), c(64, 16)), (Some(9), None, None));
        for k in 0..CLASSES {
            assert_eq!(class(class_layout(k)), Some(k));
        }
    }

    #[test]
    fn freed_blocks_are_reused_and_contents_survive_a_realloc() {
        let pool = Pool::new(Counted(AtomicUsize::new(0), AtomicUsize::new(0)));
        unsafe {
            let l = Layout::from_size_align(24, 8).unwrap();
            let a = pool.alloc(l);
            let b = pool.alloc(l);
            assert_ne!(a, b);
            a.write_bytes(0xaa, 24);
            b.write_bytes(0xbb, 24);
            pool.dealloc(a, l);
            let a2 = pool.alloc(Layout::from_size_align(20, 4).unwrap());
            assert_eq!(a2, a, "the freed block of the same class comes back");
            assert_eq!(pool.inner.0.load(Ordering::Relaxed), 2);
            // Growing within the class keeps the block; past it moves and copies.
            assert_eq!(pool.realloc(b, l, 30), b);
            let moved = pool.realloc(b, Layout::from_size_align(30, 8).unwrap(), 100);
            assert_ne!(moved, b);
            assert!((0..24).all(|i| *moved.add(i) == 0xbb));
            // A big block goes through untouched.
            let big = Layout::from_size_align(10_000, 8).unwrap();
            let p = pool.alloc(big);
            pool.dealloc(p, big);
            assert_eq!(pool.inner.1.load(Ordering::Relaxed), 1, "only the big block was given back");
            pool.dealloc(a2, Layout::from_size_align(20, 4).unwrap());
            pool.dealloc(moved, Layout::from_size_align(100, 8).unwrap());
        }
    }
}
