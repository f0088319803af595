//! What the bytes of each payload look like: the fixed fields at the front of every payload,
//! exactly as on the wire (little-endian, unaligned zerocopy views), and the length arithmetic
//! around them (padding, a layer's parameter count, a fixed part's size).
//!
//! One definition serves every direction: `check.rs` and `parse.rs` read these structs in place
//! from received bytes, `emit.rs` writes them. docs/PROTOCOL.md gives the same layouts byte by
//! byte.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::header::HEADER_LEN;
use super::message::WeightSync;

/// Handshake and HandshakeAck, followed by `u32[layer_count]`, the name and padding.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct HelloFixed {
    pub(super) name_len: U16,
    pub(super) node_id: U64,
    pub(super) capabilities: U32,
    pub(super) min_version: u8,
    pub(super) max_version: u8,
    pub(super) reserved: U16,
    pub(super) layer_count: U32,
}
const _: () = assert!(core::mem::size_of::<HelloFixed>() == 22);

/// ForwardData and BackwardData, followed by `f32[n]`.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct LayerFixed {
    pub(super) layer_id: U16,
}
const _: () = assert!(core::mem::size_of::<LayerFixed>() == 2);

/// HebbianData, followed by `f32[rows * cols]`.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct HebbianFixed {
    pub(super) layer_id: U16,
    /// f32 bits.
    pub(super) learning_rate: U32,
    pub(super) rows: U32,
    pub(super) cols: U32,
}
const _: () = assert!(core::mem::size_of::<HebbianFixed>() == 14);

/// WeightSync, followed by `f32[n]`.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct WeightSyncFixed {
    pub(super) layer_id: U16,
    pub(super) encoding: u8,
    pub(super) mode: u8,
    pub(super) reserved: U16,
    pub(super) rows: U32,
    pub(super) cols: U32,
    pub(super) offset: U32,
    pub(super) sample_count: U32,
}
const _: () = assert!(core::mem::size_of::<WeightSyncFixed>() == 22);

/// Heartbeat, the whole payload.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct HeartbeatFixed {
    pub(super) flags: U16,
    pub(super) timestamp_ns: U64,
}
const _: () = assert!(core::mem::size_of::<HeartbeatFixed>() == 10);

/// Disconnect and Error, followed by the text and padding.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct TextFixed {
    pub(super) code: U16,
    pub(super) text_len: U32,
}
const _: () = assert!(core::mem::size_of::<TextFixed>() == 6);

/// Auth, the whole payload (134 bytes: the frame is 156, a multiple of 4).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct AuthFixed {
    pub(super) step: U16,
    pub(super) scheme: u8,
    pub(super) reserved: u8,
    pub(super) key: [u8; 32],
    pub(super) nonce: [u8; 32],
    pub(super) proof: [u8; 64],
    pub(super) reserved_end: U16,
}
const _: () = assert!(core::mem::size_of::<AuthFixed>() == 134);

/// The only value encoding of protocol version 1: f32 little-endian.
pub(super) const ENCODING_F32_LE: u8 = 0;
/// Heartbeat flag: this heartbeat answers one.
pub(super) const HEARTBEAT_REPLY: u16 = 1;

impl HebbianFixed {
    pub(super) fn new(layer_id: u16, learning_rate: f32, rows: u32, cols: u32) -> Self {
        HebbianFixed {
            layer_id: U16::new(layer_id),
            learning_rate: U32::new(learning_rate.to_bits()),
            rows: U32::new(rows),
            cols: U32::new(cols),
        }
    }
}

impl WeightSyncFixed {
    pub(super) fn of(w: &WeightSync<'_>) -> Self {
        WeightSyncFixed {
            layer_id: U16::new(w.layer_id),
            encoding: ENCODING_F32_LE,
            mode: w.mode as u8,
            reserved: U16::ZERO,
            rows: U32::new(w.rows),
            cols: U32::new(w.cols),
            offset: U32::new(w.offset),
            sample_count: U32::new(w.sample_count),
        }
    }
}

/// The payload length, padding included, that makes a frame with `unpadded` payload bytes a
/// multiple of 4 long.
pub(super) fn padded(unpadded: u64) -> u64 {
    (HEADER_LEN as u64 + unpadded).next_multiple_of(4) - HEADER_LEN as u64
}

/// Parameters in a layer of `rows` outputs and `cols` inputs: weights plus biases.
/// At most (2^32 - 1) * 2^32, so never overflows u64.
pub(super) fn layer_params(rows: u32, cols: u32) -> u64 {
    u64::from(rows) * u64::from(cols) + u64::from(rows)
}

/// Byte size of a fixed part, as u64 for length arithmetic.
pub(super) trait FixedSize {
    const SIZE: u64;
}
impl<T: Sized> FixedSize for T {
    const SIZE: u64 = core::mem::size_of::<T>() as u64;
}
