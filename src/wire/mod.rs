//! The NNP wire format: frame header, payload layouts and the streaming codec.
//!
//! Nothing here touches a socket or a clock: bytes in, typed messages out, and back.

pub mod capabilities;
mod error;
pub mod header;
pub mod message;

pub use error::{DisconnectReason, ErrorCode, ProtocolError};
pub use header::{Header, MsgType, DEFAULT_MAX_PAYLOAD, HEADER_LEN, MAGIC, VERSION};
pub use message::{F32s, Hello, Message, SyncMode, U32s, WeightSync};
