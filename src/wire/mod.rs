//! The NNP wire format: frame header, payload layouts and the streaming codec.
//!
//! Nothing here touches a socket or a clock: bytes in, typed messages out, and back.

pub mod capabilities;
mod codec;
mod emit;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod header;
mod layout;
pub mod message;
mod reader;
#[cfg(test)]
mod test_vectors;

pub use codec::{
    check_frame, check_frame_resumed, check_payload, decode_frame, parse_payload, Frame,
    FrameCheck, PartialChecksum,
};
pub use emit::{
    encode_frame, encode_layer_frame, frame_len, payload_len, split_frame, FrameParts,
    MAX_FRAME_HEAD,
};
pub use error::{DisconnectReason, ErrorCode, ProtocolError, MAX_ERROR_TEXT};
pub use header::{Header, MsgType, DEFAULT_MAX_PAYLOAD, HEADER_LEN, MAGIC, VERSION};
pub use message::{F32s, Hello, Message, SyncMode, U32s, WeightSync};
pub use reader::{FrameDecoder, RawFrame};
