//! The NNP wire format: frame header, payload layouts and the streaming codec.
//!
//! Nothing here touches a socket or a clock: bytes in, typed messages out, and back.
//!
//! ```text
//!  bytes ──check_frame──▶ FrameCheck::Complete ──parse_payload──▶ Message<'_> (borrowed)
//!        └──────────────────────── decode_frame ──────────────────────────┘
//!  BytesMut ──FrameDecoder::decode──▶ RawFrame (owns Bytes) ──message()──▶ Message<'_>
//!  Message ──encode_frame──▶ BufMut (header with CRC, payload, padding; no allocation)
//! ```
//!
//! One idea a file, so that the file names say where a byte is checked, parsed or written:
//! - `header.rs`: the 22-byte frame header and the message types;
//! - `layout.rs`: the payloads' fixed fields as they are on the wire, and their padding;
//! - `check.rs`: checking a frame in place (header, CRC, a data payload's fields);
//! - `parse.rs`: checked bytes to a typed [`Message`], its arrays borrowed in place when the
//!   frame starts 4-byte aligned on a little-endian host (copied otherwise);
//! - `emit.rs`: a message's exact length, and its bytes;
//! - `reader.rs`: the resumable decoder for a byte stream;
//! - `message.rs`, `error.rs`, `capabilities.rs`: the types all of them speak;
//! - `fuzzing.rs` (hidden): the fuzz targets' logic; `test_vectors.rs` (tests only): the whole
//!   frames every file's tests share.

pub mod capabilities;
mod check;
pub(crate) mod checked;
mod emit;
mod error;
#[cfg(any(test, fuzzing, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod header;
mod layout;
pub mod message;
mod parse;
mod reader;
#[cfg(test)]
mod test_vectors;

pub use check::{check_frame, check_frame_resumed, check_payload, FrameCheck, PartialChecksum};
pub use emit::{
    encode_frame, encode_layer_frame, frame_len, payload_len, split_frame, FrameParts,
    MAX_FRAME_HEAD,
};
pub use error::{DisconnectReason, ErrorCode, ProtocolError, MAX_ERROR_TEXT};
pub use header::{Header, MsgType, DEFAULT_MAX_PAYLOAD, HEADER_LEN, MAGIC, VERSION};
pub use message::{Auth, AuthScheme, AuthStep, F32s, Hello, Message, SyncMode, U32s, WeightSync};
pub use parse::{decode_frame, parse_payload, Frame};
pub use reader::{FrameDecoder, RawFrame};
