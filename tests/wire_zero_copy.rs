//! Decoding ForwardData and WeightSync from an aligned buffer allocates nothing and borrows
//! the values in place, proven with a counting global allocator.
// This test crate needs unsafe for one thing: implementing GlobalAlloc (an unsafe trait) to
// count allocations. Each block forwards to the system allocator unchanged.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::cell::Cell;

use nnp::wire::{decode_frame, encode_frame, Message, SyncMode, WeightSync, DEFAULT_MAX_PAYLOAD};

thread_local! {
    /// Allocations made by this thread (const-initialised, no destructor: safe to touch from
    /// inside the allocator).
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

struct CountingAllocator;

// SAFETY: every method forwards to `System` with the same arguments, so `System`'s guarantees
// hold; the only addition is bumping a thread-local counter, which does not allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's: `layout` has a non-zero size.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through `alloc` above) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: `ptr` came from `System` with `layout`; `new_size` is non-zero per contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// `message` encoded into a 64-byte aligned buffer (u64 words padded to a cache line).
fn aligned_frame(message: &Message<'_>) -> (Vec<[u64; 8]>, usize) {
    let mut bytes = Vec::new();
    let len = encode_frame(message, 42, &mut bytes).unwrap();
    let mut lines = vec![[0u64; 8]; len.div_ceil(64)];
    bytemuck::cast_slice_mut::<[u64; 8], u8>(&mut lines)[..len].copy_from_slice(&bytes);
    (lines, len)
}

/// Decodes the frame in `buf` with the allocation counter watching, and returns the values'
/// pointer range and the allocations made.
fn decode_counting(buf: &[u8]) -> (*const f32, usize, usize) {
    let before = allocations();
    let (frame, used) = decode_frame(buf, DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
    let (ptr, len, borrowed) = match &frame.message {
        Message::ForwardData { data, .. } => {
            (data.as_ptr(), data.len(), matches!(data, Cow::Borrowed(_)))
        }
        Message::WeightSync(w) => (
            w.values.as_ptr(),
            w.values.len(),
            matches!(w.values, Cow::Borrowed(_)),
        ),
        other => panic!("unexpected {other:?}"),
    };
    let made = allocations() - before;
    assert_eq!(used, buf.len());
    assert!(borrowed, "values were copied");
    (ptr, len, made)
}

#[test]
fn decoding_aligned_frames_allocates_nothing_and_borrows() {
    let values: Vec<f32> = (0..100).map(|i| i as f32 * 0.5).collect();
    let forward = Message::ForwardData {
        layer_id: 1,
        data: Cow::Borrowed(&values),
    };
    let params: Vec<f32> = (0..64 * 1024).map(|i| (i as f32).sin()).collect();
    let sync = Message::WeightSync(WeightSync {
        layer_id: 2,
        mode: SyncMode::Replace,
        rows: 256,
        cols: 256,
        offset: 0,
        sample_count: 10,
        values: Cow::Borrowed(&params),
    });

    for (message, n) in [(&forward, values.len()), (&sync, params.len())] {
        let (lines, len) = aligned_frame(message);
        let buf = &bytemuck::cast_slice::<[u64; 8], u8>(&lines)[..len];
        let (ptr, got, made) = decode_counting(buf);
        assert_eq!(
            made,
            0,
            "{:?}: decode allocated {made} times",
            message.msg_type()
        );
        assert_eq!(got, n);
        let inside = buf.as_ptr_range();
        assert!(
            inside.contains(&ptr.cast()),
            "values not inside the input buffer"
        );
        // The whole array lies inside too.
        assert!(ptr.wrapping_add(got).cast::<u8>() <= inside.end);
    }

    // Sanity: the counter does count (a copy through the misaligned path allocates).
    let (lines, len) = aligned_frame(&forward);
    let shifted: Vec<u8> = [
        &[0u8][..],
        &bytemuck::cast_slice::<[u64; 8], u8>(&lines)[..len],
    ]
    .concat();
    let before = allocations();
    let (frame, _) = decode_frame(&shifted[1..], DEFAULT_MAX_PAYLOAD)
        .unwrap()
        .unwrap();
    assert!(allocations() > before);
    drop(frame);
}
