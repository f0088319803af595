//! The NNP wire format: frame header, payload layouts and the streaming codec.
//!
//! Nothing here touches a socket or a clock: bytes in, typed messages out, and back.

pub mod capabilities;
pub(crate) mod checked;
mod codec;
mod error;
#[cfg(any(test, fuzzing, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod header;
pub mod message;

pub use codec::{
    check_frame, check_frame_resumed, check_payload, decode_frame, encode_frame,
    encode_layer_frame, frame_len, parse_payload, payload_len, split_frame, Frame, FrameCheck,
    FrameDecoder, FrameParts, PartialChecksum, RawFrame, MAX_ERROR_TEXT, MAX_FRAME_HEAD,
};
pub use error::{DisconnectReason, ErrorCode, ProtocolError};
pub use header::{Header, MsgType, DEFAULT_MAX_PAYLOAD, HEADER_LEN, MAGIC, VERSION};
pub use message::{F32s, Hello, Message, SyncMode, U32s, WeightSync};
