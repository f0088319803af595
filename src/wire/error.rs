//! Why a byte stream or a session was refused, and the Error message (code and text) the peer
//! is told.

use core::fmt;
use std::borrow::Cow;

use super::header::MsgType;
use super::message::Message;

/// A violation of the NNP protocol, by the peer or by a caller building a frame.
///
/// Every variant maps to the [`ErrorCode`] sent in an Error frame ([`ProtocolError::code`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The first four bytes of a frame were not `"NNP\0"`.
    BadMagic {
        /// The bytes found instead.
        found: [u8; 4],
    },
    /// The header's version byte is not one this crate speaks.
    UnsupportedVersion {
        /// The version byte received.
        version: u8,
    },
    /// The header's type byte names no message type.
    UnknownMessageType {
        /// The type byte received.
        msg_type: u8,
    },
    /// LENGTH is over the configured maximum; refused before any buffer grows.
    FrameTooLarge {
        /// The LENGTH field.
        length: u32,
        /// The configured cap.
        max: u32,
    },
    /// Header plus LENGTH is not a multiple of 4, which every NNP frame is.
    UnalignedFrameLength {
        /// The LENGTH field.
        length: u32,
    },
    /// The payload's CRC-32 does not match the header.
    ChecksumMismatch {
        /// The CHECKSUM field.
        expected: u32,
        /// The CRC-32 computed over the payload received.
        computed: u32,
    },
    /// The payload does not follow its type's layout.
    MalformedPayload {
        /// The message type being parsed.
        msg_type: MsgType,
        /// What was wrong, for a person.
        reason: &'static str,
    },
    /// A text field is not valid UTF-8.
    InvalidUtf8 {
        /// The message type being parsed.
        msg_type: MsgType,
    },
    /// The number of f32 values does not match the declared shape.
    F32CountMismatch {
        /// The message type being parsed.
        msg_type: MsgType,
        /// The count the declared shape implies.
        expected: u64,
        /// The count the payload holds.
        actual: u64,
    },
    /// A value is too large for the frame it must fit in (when encoding).
    PayloadTooLarge {
        /// The message type being built.
        msg_type: MsgType,
        /// The payload length it would need.
        length: u64,
    },
    /// A frame's sequence number is not the next one expected: a gap or a replay.
    UnexpectedSequence {
        /// The sequence number expected.
        expected: u64,
        /// The sequence number received.
        received: u64,
    },
    /// A message arrived that the session's state does not allow (data before the handshake,
    /// a second handshake, ...).
    UnexpectedMessage {
        /// The message type received.
        msg_type: MsgType,
        /// The session state at the time, for a person.
        state: &'static str,
    },
    /// The peers' version ranges do not overlap.
    NoCommonVersion {
        /// Our range, min and max.
        ours: (u8, u8),
        /// The peer's range, min and max.
        theirs: (u8, u8),
    },
    /// A message needs a capability the session did not agree on.
    CapabilityNotAgreed {
        /// The message type.
        msg_type: MsgType,
        /// The missing capability bit.
        capability: u32,
    },
    /// The peer sent nothing for longer than the idle timeout.
    IdleTimeout {
        /// The timeout, in milliseconds.
        after_ms: u64,
    },
    /// The buffer given to the encoder has less room than the frame needs.
    BufferTooSmall {
        /// The frame's length in bytes.
        needed: usize,
        /// The room the buffer had.
        available: usize,
    },
    /// Peer authentication failed: a missing or unknown key, a bad signature, or a peer
    /// that does not authenticate while this node requires it.
    AuthenticationFailed {
        /// What failed, for a person (never a key's secret).
        reason: &'static str,
    },
    /// The peer reported an error and closed.
    Remote {
        /// The code it sent.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
}

impl ProtocolError {
    /// The code to put in the Error frame that reports this error to the peer.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::BadMagic { .. } => ErrorCode::BAD_MAGIC,
            ProtocolError::UnsupportedVersion { .. } | ProtocolError::NoCommonVersion { .. } => {
                ErrorCode::UNSUPPORTED_VERSION
            }
            ProtocolError::UnknownMessageType { .. } => ErrorCode::UNKNOWN_MESSAGE_TYPE,
            ProtocolError::FrameTooLarge { .. } | ProtocolError::PayloadTooLarge { .. } => {
                ErrorCode::FRAME_TOO_LARGE
            }
            ProtocolError::ChecksumMismatch { .. } => ErrorCode::CHECKSUM_MISMATCH,
            ProtocolError::UnalignedFrameLength { .. }
            | ProtocolError::MalformedPayload { .. }
            | ProtocolError::InvalidUtf8 { .. }
            | ProtocolError::F32CountMismatch { .. } => ErrorCode::MALFORMED_PAYLOAD,
            ProtocolError::UnexpectedSequence { .. } => ErrorCode::SEQUENCE_ERROR,
            ProtocolError::UnexpectedMessage { .. } => ErrorCode::UNEXPECTED_MESSAGE,
            ProtocolError::CapabilityNotAgreed { .. } => ErrorCode::CAPABILITY_NOT_AGREED,
            ProtocolError::IdleTimeout { .. } => ErrorCode::TIMEOUT,
            ProtocolError::BufferTooSmall { .. } => ErrorCode::APPLICATION,
            ProtocolError::AuthenticationFailed { .. } => ErrorCode::AUTHENTICATION_FAILED,
            ProtocolError::Remote { code, .. } => *code,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::BadMagic { found } => write!(
                f,
                "bad magic {found:02x?}: expected \"NNP\\0\"; the peer does not speak NNP or the stream lost sync"
            ),
            ProtocolError::UnsupportedVersion { version } => {
                write!(f, "unsupported protocol version {version}; this node speaks version 1")
            }
            ProtocolError::UnknownMessageType { msg_type } => {
                write!(f, "unknown message type {msg_type:#04x}")
            }
            ProtocolError::FrameTooLarge { length, max } => write!(
                f,
                "frame payload of {length} bytes is over the limit of {max} bytes; raise the limit or send smaller frames (WeightSync can be sliced)"
            ),
            ProtocolError::UnalignedFrameLength { length } => write!(
                f,
                "payload length {length} makes the frame not a multiple of 4 bytes; NNP frames are padded to 4"
            ),
            ProtocolError::ChecksumMismatch { expected, computed } => write!(
                f,
                "checksum mismatch: header says {expected:#010x}, payload hashes to {computed:#010x}"
            ),
            ProtocolError::MalformedPayload { msg_type, reason } => {
                write!(f, "malformed {msg_type:?} payload: {reason}")
            }
            ProtocolError::InvalidUtf8 { msg_type } => {
                write!(f, "{msg_type:?} payload has a text field that is not UTF-8")
            }
            ProtocolError::F32CountMismatch {
                msg_type,
                expected,
                actual,
            } => write!(
                f,
                "{msg_type:?} payload holds {actual} f32 values where its shape declares {expected}"
            ),
            ProtocolError::PayloadTooLarge { msg_type, length } => write!(
                f,
                "{msg_type:?} payload would be {length} bytes, over what a frame can carry; split it"
            ),
            ProtocolError::UnexpectedSequence { expected, received } => write!(
                f,
                "sequence {received} received where {expected} was expected (a gap or a replay)"
            ),
            ProtocolError::UnexpectedMessage { msg_type, state } => {
                write!(f, "{msg_type:?} is not allowed while the session is {state}")
            }
            ProtocolError::NoCommonVersion { ours, theirs } => write!(
                f,
                "no common protocol version: we speak {}..={}, the peer {}..={}",
                ours.0, ours.1, theirs.0, theirs.1
            ),
            ProtocolError::CapabilityNotAgreed {
                msg_type,
                capability,
            } => write!(
                f,
                "{msg_type:?} needs capability {} which the session did not agree on",
                super::capabilities::names(*capability).next().unwrap_or("?")
            ),
            ProtocolError::IdleTimeout { after_ms } => {
                write!(f, "peer silent for more than {after_ms} ms")
            }
            ProtocolError::BufferTooSmall { needed, available } => write!(
                f,
                "frame of {needed} bytes does not fit in the {available} bytes left in the buffer"
            ),
            ProtocolError::AuthenticationFailed { reason } => {
                write!(f, "authentication failed: {reason}")
            }
            ProtocolError::Remote { code, message } => {
                write!(f, "peer reported error {}: {message}", code.0)
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

/// A [`ProtocolError::MalformedPayload`]: `msg_type`'s payload breaks its layout for `reason`.
pub(super) fn malformed(msg_type: MsgType, reason: &'static str) -> ProtocolError {
    ProtocolError::MalformedPayload { msg_type, reason }
}

/// Most bytes of text [`Message::error_from`] puts in an Error frame.
pub const MAX_ERROR_TEXT: usize = 1024;

impl Message<'static> {
    /// The Error message that reports `err` to the peer: its [`ErrorCode`] and its text, cut
    /// to at most [`MAX_ERROR_TEXT`] bytes on a character boundary.
    pub fn error_from(err: &ProtocolError) -> Message<'static> {
        let mut text = err.to_string();
        if text.len() > MAX_ERROR_TEXT {
            let mut end = MAX_ERROR_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        Message::Error {
            code: err.code(),
            message: Cow::Owned(text),
        }
    }
}

impl From<&ProtocolError> for Message<'static> {
    fn from(err: &ProtocolError) -> Self {
        Message::error_from(err)
    }
}

/// The code carried by an Error frame. Unknown codes from newer peers are kept as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// Bad magic bytes.
    pub const BAD_MAGIC: ErrorCode = ErrorCode(1);
    /// Unsupported or no common version.
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(2);
    /// Unknown message type.
    pub const UNKNOWN_MESSAGE_TYPE: ErrorCode = ErrorCode(3);
    /// LENGTH over the receiver's limit.
    pub const FRAME_TOO_LARGE: ErrorCode = ErrorCode(4);
    /// CRC mismatch.
    pub const CHECKSUM_MISMATCH: ErrorCode = ErrorCode(5);
    /// Payload does not follow its layout.
    pub const MALFORMED_PAYLOAD: ErrorCode = ErrorCode(6);
    /// Sequence gap or replay.
    pub const SEQUENCE_ERROR: ErrorCode = ErrorCode(7);
    /// Message not allowed in the session's state.
    pub const UNEXPECTED_MESSAGE: ErrorCode = ErrorCode(8);
    /// Message needs a capability not agreed.
    pub const CAPABILITY_NOT_AGREED: ErrorCode = ErrorCode(9);
    /// Idle timeout.
    pub const TIMEOUT: ErrorCode = ErrorCode(10);
    /// The application refused the data (wrong layer, wrong shape).
    pub const APPLICATION: ErrorCode = ErrorCode(11);
    /// Peer authentication failed (or is required and was not offered).
    pub const AUTHENTICATION_FAILED: ErrorCode = ErrorCode(12);
}

/// Why a peer closes a session, carried by a Disconnect frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DisconnectReason(pub u16);

impl DisconnectReason {
    /// The application closed the session.
    pub const NORMAL: DisconnectReason = DisconnectReason(0);
    /// The node is shutting down.
    pub const SHUTDOWN: DisconnectReason = DisconnectReason(1);
    /// The peer was silent for too long.
    pub const IDLE_TIMEOUT: DisconnectReason = DisconnectReason(2);
    /// A protocol error (an Error frame precedes it).
    pub const PROTOCOL_ERROR: DisconnectReason = DisconnectReason(3);
    /// The node is over a connection or rate limit.
    pub const OVERLOADED: DisconnectReason = DisconnectReason(4);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode_frame, encode_frame, DEFAULT_MAX_PAYLOAD};

    #[test]
    fn test_error_from() {
        let err = ProtocolError::ChecksumMismatch {
            expected: 1,
            computed: 2,
        };
        let Message::Error { code, message } = Message::from(&err) else {
            panic!()
        };
        assert_eq!(code, ErrorCode::CHECKSUM_MISMATCH);
        assert_eq!(message, err.to_string());

        let long = ProtocolError::Remote {
            code: ErrorCode(99),
            message: "é".repeat(1000),
        };
        let Message::Error { code, message } = Message::error_from(&long) else {
            panic!()
        };
        assert_eq!(code, ErrorCode(99));
        assert!(message.len() <= MAX_ERROR_TEXT && message.len() > MAX_ERROR_TEXT - 2);
        let mut out = Vec::new();
        encode_frame(&Message::error_from(&long), 0, &mut out).unwrap();
        assert!(decode_frame(&out, DEFAULT_MAX_PAYLOAD).unwrap().is_some());
    }
}
