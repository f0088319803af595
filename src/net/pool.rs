//! Reusable, 64-byte aligned byte blocks in a few size classes.
//!
//! Every frame the engine reads or writes lives in a [`Block`]. Blocks come from a
//! [`BufferPool`] and go back to it when dropped, so a steady stream of frames allocates
//! nothing. The alignment is what lets the codec reinterpret f32 payloads in place: NNP frames
//! are multiples of 4 bytes, so frames read back to back into an aligned block stay aligned.
//! A frame larger than the largest class gets a dedicated block.
//!
//! A dedicated block is 16-byte aligned (enough for f32 in place) and allocated zeroed by the
//! C allocator's `calloc`, which maps fresh pages for large sizes without touching them: the
//! memory a large frame costs is committed page by page as its bytes are written, not when a
//! header announces its length. The few most recently released dedicated blocks are kept
//! for the next large frame of about their size: a stream of weight syncs would otherwise
//! pay a fresh mapping and a page fault per 4 KiB of every frame. They are trimmed like the
//! classes' free blocks when they stay unused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};
use crossbeam_queue::ArrayQueue;

/// The unit of pooled block storage; its alignment is the block's alignment.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Align64([u8; 64]);

/// A block's bytes: a pooled class block, or a dedicated large one.
enum Storage {
    Pooled(Box<[Align64]>),
    /// Of 16-byte units: an alignment the system allocator serves with `calloc`, whose fresh
    /// pages are not written until used (a 64-byte alignment would be zeroed by hand).
    Large(Box<[u128]>),
}

impl Storage {
    fn capacity(&self) -> usize {
        match self {
            Storage::Pooled(units) => units.len() * 64,
            Storage::Large(units) => units.len() * 16,
        }
    }
}

/// Block sizes of the pool's classes, smallest first.
/// The largest is what a connection reads into: big enough for a 64 KiB slice of weights
/// with its headers in one read and one pooled block, on both sides.
pub(crate) const SIZE_CLASSES: [usize; 4] = [512, 4096, 64 * 1024, 128 * 1024];

/// How many free blocks each class keeps at most (about 2 + 4 + 16 + 16 MiB).
const FREE_LIMITS: [usize; 4] = [4096, 1024, 256, 128];
/// Released dedicated blocks kept for reuse: at most this many ...
const LARGE_FREE: usize = 16;
/// ... of at most this many bytes in all (a stream of 1 MiB weight syncs keeps its working
/// set: several frames read in one turn, in the consumer's hands together).
const LARGE_KEPT_MAX: usize = 16 << 20;

struct PoolInner {
    free: [ArrayQueue<Box<[Align64]>>; SIZE_CLASSES.len()],
    /// Per class, the fewest free blocks seen since the last [`BufferPool::trim`]: blocks
    /// that stayed free that whole time are surplus (a burst's leftovers, not a stream's
    /// working set). Updated without a read-modify-write; an occasional lost update only
    /// makes a trim keep a few blocks more.
    low_water: [AtomicUsize; SIZE_CLASSES.len()],
    /// Released dedicated blocks, and their low water mark as for the classes.
    large: ArrayQueue<Box<[u128]>>,
    large_low_water: AtomicUsize,
    /// Bytes in `large`, at most [`LARGE_KEPT_MAX`] (give or take a racing release).
    large_bytes: AtomicUsize,
    /// Bytes in blocks currently handed out (pooled or dedicated).
    in_use: AtomicUsize,
}

/// A thread-safe pool of aligned blocks. Cloning shares the pool.
#[derive(Clone)]
pub struct BufferPool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool")
            .field("bytes_in_use", &self.bytes_in_use())
            .finish()
    }
}

impl Default for BufferPool {
    fn default() -> Self {
        BufferPool::new()
    }
}

impl BufferPool {
    /// An empty pool; blocks are allocated on first use.
    pub fn new() -> BufferPool {
        BufferPool {
            inner: Arc::new(PoolInner {
                free: FREE_LIMITS.map(ArrayQueue::new),
                low_water: std::array::from_fn(|_| AtomicUsize::new(0)),
                large: ArrayQueue::new(LARGE_FREE),
                large_low_water: AtomicUsize::new(0),
                large_bytes: AtomicUsize::new(0),
                in_use: AtomicUsize::new(0),
            }),
        }
    }

    /// A block of at least `len` bytes: pooled if a class fits, dedicated otherwise.
    pub(crate) fn take(&self, len: usize) -> Block {
        let class = SIZE_CLASSES.iter().position(|&size| size >= len);
        let data = match class {
            Some(c) => {
                let free = &self.inner.free[c];
                let data = free.pop();
                let low_water = &self.inner.low_water[c];
                if free.len() < low_water.load(Ordering::Relaxed) {
                    low_water.store(free.len(), Ordering::Relaxed);
                }
                Storage::Pooled(data.unwrap_or_else(|| zeroed_units(SIZE_CLASSES[c])))
            }
            None => Storage::Large(self.take_large(len)),
        };
        self.inner
            .in_use
            .fetch_add(data.capacity(), Ordering::Relaxed);
        Block {
            data,
            class,
            pool: Arc::clone(&self.inner),
        }
    }

    /// Bytes in blocks handed out and not yet dropped.
    pub fn bytes_in_use(&self) -> usize {
        self.inner.in_use.load(Ordering::Relaxed)
    }

    /// A kept dedicated block of `len` to `len + len / 4` bytes, or a fresh one.
    fn take_large(&self, len: usize) -> Box<[u128]> {
        let units = len.div_ceil(16);
        let inner = &*self.inner;
        for _ in 0..LARGE_FREE {
            let Some(kept) = inner.large.pop() else { break };
            if (units..=units + units / 4).contains(&kept.len()) {
                inner
                    .large_bytes
                    .fetch_sub(kept.len() * 16, Ordering::Relaxed);
                if inner.large.len() < inner.large_low_water.load(Ordering::Relaxed) {
                    inner
                        .large_low_water
                        .store(inner.large.len(), Ordering::Relaxed);
                }
                return kept;
            }
            // Not this size: back to the queue (or freed, if it filled meanwhile).
            if let Err(other) = inner.large.push(kept) {
                inner
                    .large_bytes
                    .fetch_sub(other.len() * 16, Ordering::Relaxed);
            }
        }
        bytemuck::zeroed_slice_box(units)
    }

    /// Frees the blocks that stayed unused since the previous call (per class, the fewest
    /// free blocks seen meanwhile), so that memory a burst needed (thousands of handshakes,
    /// say) goes back to the allocator once the burst is over, while a stream's working set,
    /// taken and returned all the time, stays. Called by the event loops on their tick.
    pub(crate) fn trim(&self) {
        for (free, low_water) in self.inner.free.iter().zip(&self.inner.low_water) {
            for _ in 0..low_water.load(Ordering::Relaxed).min(free.len()) {
                drop(free.pop());
            }
            low_water.store(free.len(), Ordering::Relaxed);
        }
        let large = &self.inner.large;
        for _ in 0..self
            .inner
            .large_low_water
            .load(Ordering::Relaxed)
            .min(large.len())
        {
            if let Some(units) = large.pop() {
                self.inner
                    .large_bytes
                    .fetch_sub(units.len() * 16, Ordering::Relaxed);
            }
        }
        self.inner
            .large_low_water
            .store(large.len(), Ordering::Relaxed);
    }

    /// Free blocks held for reuse, per class.
    pub fn free_blocks(&self) -> [usize; SIZE_CLASSES.len()] {
        std::array::from_fn(|c| self.inner.free[c].len())
    }
}

fn zeroed_units(bytes: usize) -> Box<[Align64]> {
    bytemuck::zeroed_slice_box(bytes.div_ceil(64).max(1))
}

/// An aligned byte block from a [`BufferPool`]; returns to the pool when dropped.
pub(crate) struct Block {
    data: Storage,
    class: Option<usize>,
    pool: Arc<PoolInner>,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl Block {
    /// The whole block.
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.data {
            Storage::Pooled(units) => bytemuck::cast_slice(units),
            Storage::Large(units) => bytemuck::cast_slice(units),
        }
    }

    /// The whole block, writable.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.data {
            Storage::Pooled(units) => bytemuck::cast_slice_mut(units),
            Storage::Large(units) => bytemuck::cast_slice_mut(units),
        }
    }

    /// Size in bytes.
    pub(crate) fn capacity(&self) -> usize {
        self.data.capacity()
    }

    /// An empty block of the same pool (no storage, nothing to return): what is left in
    /// place of a block moved out of a structure that owns one.
    pub(crate) fn empty_sibling(&self) -> Block {
        Block {
            data: Storage::Pooled(Box::default()),
            class: None,
            pool: Arc::clone(&self.pool),
        }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let data = std::mem::replace(&mut self.data, Storage::Pooled(Box::default()));
        self.pool
            .in_use
            .fetch_sub(data.capacity(), Ordering::Relaxed);
        match (self.class, data) {
            // A full free list means the pool already holds its share: let this one go.
            (Some(c), Storage::Pooled(units)) => {
                let _ = self.pool.free[c].push(units);
            }
            (None, Storage::Large(units)) => {
                let bytes = units.len() * 16;
                let kept = &self.pool.large_bytes;
                if kept.load(Ordering::Relaxed) + bytes <= LARGE_KEPT_MAX
                    && self.pool.large.push(units).is_ok()
                {
                    kept.fetch_add(bytes, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_and_sized_by_class() {
        let pool = BufferPool::new();
        for (len, cap, align) in [
            (1, 512, 64),
            (512, 512, 64),
            (513, 4096, 64),
            (65536, 65536, 64),
            (70000, 131072, 64),
            (131073, 131088, 16),
        ] {
            let b = pool.take(len);
            assert_eq!(b.capacity(), cap, "len {len}");
            assert_eq!(b.bytes().len(), cap, "len {len}");
            assert_eq!(b.bytes().as_ptr() as usize % align, 0, "len {len}");
            assert!(b.bytes().iter().all(|&x| x == 0), "len {len}: zeroed");
        }
    }

    #[test]
    fn dropped_blocks_are_reused_and_accounted() {
        let pool = BufferPool::new();
        let mut b = pool.take(100);
        b.bytes_mut()[0] = 7;
        let addr = b.bytes().as_ptr();
        assert_eq!(pool.bytes_in_use(), 512);
        drop(b);
        assert_eq!(pool.bytes_in_use(), 0);
        assert_eq!(pool.free_blocks(), [1, 0, 0, 0]);
        let b = pool.take(200);
        assert_eq!(b.bytes().as_ptr(), addr, "the same block comes back");
        let big = pool.take(1 << 20);
        assert_eq!(pool.bytes_in_use(), 512 + (1 << 20));
        drop(big);
        assert_eq!(
            pool.free_blocks(),
            [0, 0, 0, 0],
            "dedicated blocks are freed"
        );
    }

    #[test]
    fn trim_frees_what_stayed_unused_between_calls_and_keeps_the_working_set() {
        let pool = BufferPool::new();
        // A burst: 100 small blocks out at once, then all back.
        let burst: Vec<Block> = (0..100).map(|_| pool.take(100)).collect();
        drop(burst);
        assert_eq!(pool.free_blocks()[0], 100);
        pool.trim(); // the burst's own interval: the free list was empty during it
        assert_eq!(pool.free_blocks()[0], 100);
        // A stream: 3 blocks in use at a time, the rest untouched for a whole interval.
        for _ in 0..50 {
            let working: Vec<Block> = (0..3).map(|_| pool.take(100)).collect();
            drop(working);
        }
        pool.trim();
        assert_eq!(pool.free_blocks()[0], 3, "only the working set is kept");
        // Nothing taken for a whole interval: everything goes.
        pool.trim();
        assert_eq!(pool.free_blocks()[0], 0);
    }

    #[test]
    fn a_released_large_block_serves_the_next_frame_of_its_size_until_trimmed() {
        let pool = BufferPool::new();
        let len = (1 << 20) + 44;
        let mut first = pool.take(len);
        first.bytes_mut()[len - 1] = 7;
        let at = first.bytes().as_ptr();
        drop(first);
        let again = pool.take(len);
        assert_eq!(again.bytes().as_ptr(), at, "the kept block is reused");
        assert!(again.capacity() >= len);
        assert_eq!(pool.bytes_in_use(), again.capacity());
        drop(again);
        // Much smaller or larger frames get their own blocks; the kept one stays.
        let small = pool.take(300_000);
        assert_ne!(small.bytes().as_ptr(), at);
        assert!(small.capacity() < len);
        let big = pool.take(2 * len);
        assert_ne!(big.bytes().as_ptr(), at);
        drop((small, big));
        assert_eq!(pool.inner.large.len(), 3);
        // Blocks past the bytes kept are freed at once.
        drop(pool.take(LARGE_KEPT_MAX));
        assert_eq!(pool.inner.large.len(), 3);
        // Unused through a whole trim period, they go.
        pool.trim();
        assert_eq!(pool.inner.large.len(), 3);
        pool.trim();
        assert_eq!(pool.inner.large.len(), 0);
        assert_eq!(pool.inner.large_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(pool.bytes_in_use(), 0);
    }
}
