//! The global allocator ([`Allocator`]): mimalloc for everyday blocks, the system's malloc for
//! the rare very large ones.

use std::alloc::{GlobalAlloc, Layout, System};

use mimalloc::MiMalloc;

/// Blocks of this size or more come from the system's malloc.
pub const LARGE: usize = 1024 * 1024;

/// mimalloc for blocks under [`LARGE`], the system's malloc (glibc) for larger ones.
///
/// - **Why mimalloc:** glibc's malloc spent about a tenth of the machine during a sale's
///   opening seconds (perf: `_int_malloc`, `malloc_consolidate`, `unlink_chunk` in the
///   services' threads), sorting and merging the free chunks that thousands of connections'
///   buffers leave behind. mimalloc keeps small blocks in per-thread pages. docs/BENCHMARKS.md
///   has the figures.
/// - **Why not for large blocks:** mimalloc keeps what it freed for reuse, and an argon2 hash
///   (users-api's log-in and sign-up) takes 19 MiB: after a storm of log-ins users-api stayed
///   at 142 MiB resident instead of going back to 31. glibc gives each such block a mapping
///   of its own, unmapped when freed (users-api fixes its threshold at start:
///   `return_hash_memory_at_once`).
///
/// - **Without transparent huge pages** (the crate's `no_thp` feature): with them, mimalloc's
///   memory came in 2 MiB pages; in a sale the services' peak RSS grew by half (concert-api
///   69–74 MiB against 46–51) and the join's p99 doubled (711 and 757 ms against 421 and 415),
///   for no CPU saved.
///
/// A block is freed by the allocator that made it: `dealloc` and `realloc` are given the
/// layout it was allocated (or last reallocated) with, so its size says which one. A
/// `realloc` across [`LARGE`] moves the block from one to the other.
pub struct Allocator;

fn large(size: usize) -> bool {
    size >= LARGE
}

// SAFETY: every call is forwarded, with the caller's own guarantees, to the allocator that
// owns the block (chosen by size, as above); a move between them allocates with the new
// layout, copies the smaller of the two sizes and frees the old block with its own layout.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see the impl).
        unsafe {
            if large(layout.size()) {
                System.alloc(layout)
            } else {
                MiMalloc.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see the impl).
        unsafe {
            if large(layout.size()) {
                System.alloc_zeroed(layout)
            } else {
                MiMalloc.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `layout` is the block's own, so its size names the allocator that made it.
        unsafe {
            if large(layout.size()) {
                System.dealloc(ptr, layout)
            } else {
                MiMalloc.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: within one allocator, forwarded as is; across them, a new block of the new
        // layout (same alignment), the old contents copied up to the smaller size, the old
        // block freed by its own allocator, as `GlobalAlloc::realloc`'s default does.
        unsafe {
            match (large(layout.size()), large(new_size)) {
                (false, false) => MiMalloc.realloc(ptr, layout, new_size),
                (true, true) => System.realloc(ptr, layout, new_size),
                _ => {
                    let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks grow and shrink across the threshold (each `realloc` moving the block between
    /// the allocators) and keep their contents; every block is freed by the allocator that
    /// made it (freeing with the other one corrupts its heap or aborts).
    #[test]
    fn blocks_keep_their_contents_across_the_threshold_both_ways() {
        let mut v: Vec<u8> = (0..=255).cycle().take(LARGE - 1).collect();
        v.extend_from_slice(&[7; 2]);
        assert!(v.capacity() >= LARGE);
        assert_eq!(&v[..256], &(0..=255).collect::<Vec<u8>>()[..]);
        assert_eq!(v[LARGE], 7);
        v.truncate(1000);
        v.shrink_to_fit();
        assert!(v.capacity() < LARGE);
        assert_eq!(&v[..256], &(0..=255).collect::<Vec<u8>>()[..]);
        let big = vec![1u64; LARGE];
        assert_eq!(big.iter().sum::<u64>(), LARGE as u64);
        let zeroed = vec![0u8; 4 * LARGE];
        assert!(zeroed.iter().all(|b| *b == 0));
        let aligned = Layout::from_size_align(LARGE + 1, 4096).unwrap();
        // SAFETY: a non-zero layout, freed below with the same layout.
        unsafe {
            let p = ALLOCATOR_FOR_TEST.alloc(aligned);
            assert!(!p.is_null());
            assert_eq!(p as usize % 4096, 0);
            let q = ALLOCATOR_FOR_TEST.realloc(p, aligned, 100);
            assert!(!q.is_null());
            assert_eq!(q as usize % 4096, 0, "the alignment is kept across a move");
            ALLOCATOR_FOR_TEST.dealloc(q, Layout::from_size_align(100, 4096).unwrap());
        }
    }

    static ALLOCATOR_FOR_TEST: Allocator = Allocator;
}
