//! Typed messages from checked bytes: [`parse_payload`] builds a [`Message`] from a payload,
//! and [`decode_frame`] checks a whole frame (`check.rs`) and parses it in one call. A message
//! borrows from the buffer it came from.
//!
//! f32 and u32 arrays are borrowed in place ([`Cow::Borrowed`], no copy, no allocation) when
//! the host is little-endian and the array is 4-byte aligned in memory, which it is whenever
//! the frame starts 4-byte aligned (layouts are aligned by construction, see docs/PROTOCOL.md).
//! Otherwise they are copied ([`Cow::Owned`]); that allocation is bounded by the frame, whose
//! length the cap already bounds.

use std::borrow::Cow;

use zerocopy::FromBytes;

use super::check::{
    check_frame, check_zero_padding, fixed, hebbian_data, layer_data, weight_sync_data, FrameCheck,
};
use super::error::{malformed, DisconnectReason, ErrorCode, ProtocolError};
use super::header::{Header, MsgType, HEADER_LEN};
use super::layout::*;
use super::message::{Auth, AuthScheme, AuthStep, F32s, Hello, Message, U32s, WeightSync};

/// One decoded frame: its sequence number and its message, borrowed from the input buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<'a> {
    /// The header's per-direction sequence number.
    pub sequence: u64,
    /// The payload, parsed.
    pub message: Message<'a>,
}

/// Decodes the frame at the front of `buf`: `Ok(None)` if more bytes are needed, otherwise the
/// frame (borrowing from `buf`) and the number of bytes it took.
///
/// ```
/// use std::borrow::Cow;
/// use nnp::wire::{decode_frame, encode_frame, Message, DEFAULT_MAX_PAYLOAD};
///
/// let message = Message::ForwardData { layer_id: 1, data: Cow::Borrowed(&[0.5, -1.0]) };
/// let mut buf = Vec::new();
/// let len = encode_frame(&message, 0, &mut buf)?;
/// assert_eq!(len, 32); // 22-byte header, 2-byte layer id, 2 f32
///
/// assert_eq!(decode_frame(&buf[..len - 1], DEFAULT_MAX_PAYLOAD)?, None); // need more bytes
/// let (frame, used) = decode_frame(&buf, DEFAULT_MAX_PAYLOAD)?.expect("a whole frame");
/// assert_eq!((frame.sequence, used), (0, len));
/// assert_eq!(frame.message, message);
/// # Ok::<(), nnp::wire::ProtocolError>(())
/// ```
pub fn decode_frame(
    buf: &[u8],
    max_payload: u32,
) -> Result<Option<(Frame<'_>, usize)>, ProtocolError> {
    match check_frame(buf, max_payload)? {
        FrameCheck::Incomplete { .. } => Ok(None),
        FrameCheck::Complete { len, msg_type } => {
            let sequence = Header::ref_from_buf(buf).map_or(0, Header::sequence);
            let message = parse_payload(msg_type, &buf[HEADER_LEN..len])?;
            Ok(Some((Frame { sequence, message }, len)))
        }
    }
}

/// Parses the payload of a message of type `msg_type` (no header, no CRC check).
///
/// `payload` is the whole payload, padding included. Arrays are borrowed from it when it is
/// suitably aligned (see the module docs).
pub fn parse_payload(msg_type: MsgType, payload: &[u8]) -> Result<Message<'_>, ProtocolError> {
    match msg_type {
        MsgType::Handshake => parse_hello(msg_type, payload).map(Message::Handshake),
        MsgType::HandshakeAck => parse_hello(msg_type, payload).map(Message::HandshakeAck),
        MsgType::ForwardData => {
            let (f, data) = layer_data(msg_type, payload)?;
            Ok(Message::ForwardData {
                layer_id: f.layer_id.get(),
                data: f32s(data),
            })
        }
        MsgType::BackwardData => {
            let (f, data) = layer_data(msg_type, payload)?;
            Ok(Message::BackwardData {
                layer_id: f.layer_id.get(),
                data: f32s(data),
            })
        }
        MsgType::HebbianData => parse_hebbian(payload),
        MsgType::WeightSync => parse_weight_sync(payload).map(Message::WeightSync),
        MsgType::Heartbeat => parse_heartbeat(payload),
        MsgType::Disconnect => {
            let (code, message) = parse_text(msg_type, payload)?;
            Ok(Message::Disconnect {
                reason: DisconnectReason(code),
                message,
            })
        }
        MsgType::Error => {
            let (code, message) = parse_text(msg_type, payload)?;
            Ok(Message::Error {
                code: ErrorCode(code),
                message,
            })
        }
        MsgType::Auth => parse_auth(payload),
    }
}

fn parse_auth(payload: &[u8]) -> Result<Message<'_>, ProtocolError> {
    let msg_type = MsgType::Auth;
    let f = AuthFixed::ref_from_bytes(payload)
        .map_err(|_| malformed(msg_type, "payload is not exactly 134 bytes"))?;
    let step = match f.step.get() {
        1 => AuthStep::Challenge,
        2 => AuthStep::Response,
        3 => AuthStep::Proof,
        _ => return Err(malformed(msg_type, "unknown step")),
    };
    let scheme = match f.scheme {
        1 => AuthScheme::Ed25519,
        2 => AuthScheme::PreSharedKey,
        _ => return Err(malformed(msg_type, "unknown scheme")),
    };
    if f.reserved != 0 || f.reserved_end.get() != 0 {
        return Err(malformed(msg_type, "reserved field not zero"));
    }
    Ok(Message::Auth(Box::new(Auth {
        step,
        scheme,
        key: f.key,
        nonce: f.nonce,
        proof: f.proof,
    })))
}

/// f32 values from little-endian bytes (`bytes.len()` a multiple of 4): borrowed when the
/// host is little-endian and `bytes` 4-byte aligned, copied otherwise.
pub(super) fn f32s(bytes: &[u8]) -> F32s<'_> {
    if cfg!(target_endian = "little") {
        if let Ok(values) = bytemuck::try_cast_slice::<u8, f32>(bytes) {
            return Cow::Borrowed(values);
        }
    }
    Cow::Owned(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// u32 values from little-endian bytes, like [`f32s`].
fn u32s(bytes: &[u8]) -> U32s<'_> {
    if cfg!(target_endian = "little") {
        if let Ok(values) = bytemuck::try_cast_slice::<u8, u32>(bytes) {
            return Cow::Borrowed(values);
        }
    }
    Cow::Owned(
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

fn parse_hello(msg_type: MsgType, payload: &[u8]) -> Result<Hello<'_>, ProtocolError> {
    let (f, rest) = fixed::<HelloFixed>(msg_type, payload)?;
    if f.reserved.get() != 0 {
        return Err(malformed(msg_type, "nonzero reserved field"));
    }
    let sizes_len = u64::from(f.layer_count.get()) * 4;
    let name_len = u64::from(f.name_len.get());
    let expected = padded(HelloFixed::SIZE + sizes_len + name_len);
    if payload.len() as u64 != expected {
        return Err(malformed(
            msg_type,
            "payload length does not match layer count and name length plus padding",
        ));
    }
    // Both fit: together with the padding they are exactly `rest`.
    let (sizes, rest) = rest.split_at(sizes_len as usize);
    let (name, padding) = rest.split_at(name_len as usize);
    check_zero_padding(msg_type, padding)?;
    let name = core::str::from_utf8(name).map_err(|_| ProtocolError::InvalidUtf8 { msg_type })?;
    Ok(Hello {
        node_id: f.node_id.get(),
        min_version: f.min_version,
        max_version: f.max_version,
        capabilities: f.capabilities.get(),
        layer_sizes: u32s(sizes),
        name: Cow::Borrowed(name),
    })
}

fn parse_hebbian(payload: &[u8]) -> Result<Message<'_>, ProtocolError> {
    let (f, data) = hebbian_data(payload)?;
    Ok(Message::HebbianData {
        layer_id: f.layer_id.get(),
        learning_rate: f32::from_bits(f.learning_rate.get()),
        rows: f.rows.get(),
        cols: f.cols.get(),
        correlations: f32s(data),
    })
}

fn parse_weight_sync(payload: &[u8]) -> Result<WeightSync<'_>, ProtocolError> {
    let (f, mode, data) = weight_sync_data(payload)?;
    Ok(WeightSync {
        layer_id: f.layer_id.get(),
        mode,
        rows: f.rows.get(),
        cols: f.cols.get(),
        offset: f.offset.get(),
        sample_count: f.sample_count.get(),
        values: f32s(data),
    })
}

fn parse_heartbeat(payload: &[u8]) -> Result<Message<'_>, ProtocolError> {
    let msg_type = MsgType::Heartbeat;
    let f = HeartbeatFixed::ref_from_bytes(payload)
        .map_err(|_| malformed(msg_type, "payload is not exactly 10 bytes"))?;
    let flags = f.flags.get();
    if flags & !HEARTBEAT_REPLY != 0 {
        return Err(malformed(msg_type, "reserved flag bits set"));
    }
    Ok(Message::Heartbeat {
        timestamp_ns: f.timestamp_ns.get(),
        reply: flags & HEARTBEAT_REPLY != 0,
    })
}

fn parse_text(msg_type: MsgType, payload: &[u8]) -> Result<(u16, Cow<'_, str>), ProtocolError> {
    let (f, rest) = fixed::<TextFixed>(msg_type, payload)?;
    let text_len = u64::from(f.text_len.get());
    if payload.len() as u64 != padded(TextFixed::SIZE + text_len) {
        return Err(malformed(
            msg_type,
            "payload length does not match text length plus padding",
        ));
    }
    let (text, padding) = rest.split_at(text_len as usize);
    check_zero_padding(msg_type, padding)?;
    let text = core::str::from_utf8(text).map_err(|_| ProtocolError::InvalidUtf8 { msg_type })?;
    Ok((f.code.get(), Cow::Borrowed(text)))
}

#[cfg(test)]
mod tests {
    use super::super::test_vectors::*;
    use super::super::DEFAULT_MAX_PAYLOAD;
    use super::*;

    #[test]
    fn test_deconstruct() {
        for (bytes, sequence, message) in expected() {
            let (frame, used) = decode_frame(bytes, DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(frame.sequence, sequence);
            assert_eq!(frame.message, message);
            assert_eq!(
                check_frame(bytes, DEFAULT_MAX_PAYLOAD).unwrap(),
                FrameCheck::Complete {
                    len: bytes.len(),
                    msg_type: message.msg_type()
                }
            );
        }
    }

    #[test]
    fn test_deconstruct_borrows_when_aligned() {
        let words = aligned(&WEIGHT_SYNC);
        let buf: &[u8] = bytemuck::cast_slice(&words);
        let range = buf.as_ptr_range();
        let (frame, _) = decode_frame(buf, DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
        let Message::WeightSync(w) = frame.message else {
            panic!("not a WeightSync")
        };
        let Cow::Borrowed(values) = w.values else {
            panic!("aligned WeightSync values were copied")
        };
        assert!(range.contains(&values.as_ptr().cast()));
        assert_eq!(values, &[0.25, -1.0, 8.0]);

        // The same frame one byte off: copied, same values.
        let mut off = vec![0u8; WEIGHT_SYNC.len() + 4];
        let start = if (off.as_ptr() as usize) % 4 == 0 {
            1
        } else {
            0
        };
        off[start..start + WEIGHT_SYNC.len()].copy_from_slice(&WEIGHT_SYNC);
        let (frame, _) = decode_frame(&off[start..], DEFAULT_MAX_PAYLOAD)
            .unwrap()
            .unwrap();
        let Message::WeightSync(w) = frame.message else {
            panic!("not a WeightSync")
        };
        assert!(matches!(w.values, Cow::Owned(_)));
        assert_eq!(&*w.values, &[0.25, -1.0, 8.0]);
    }

    #[test]
    fn test_parse_bad_reserved() {
        let mut b = HANDSHAKE.to_vec();
        b[22 + 16] = 1; // Hello reserved
        assert_eq!(
            malformed_reason(payload_err(MsgType::Handshake, &b)),
            "nonzero reserved field"
        );
        let mut b = WEIGHT_SYNC.to_vec();
        b[22 + 5] = 1; // WeightSync reserved
        assert_eq!(
            malformed_reason(payload_err(MsgType::WeightSync, &b)),
            "nonzero reserved field"
        );
        let mut b = HEARTBEAT.to_vec();
        b[22] = 3; // flag bit 1
        assert_eq!(
            malformed_reason(payload_err(MsgType::Heartbeat, &b)),
            "reserved flag bits set"
        );
    }

    #[test]
    fn test_parse_bad_padding() {
        let mut b = HANDSHAKE.to_vec();
        b[63] = 1;
        assert_eq!(
            malformed_reason(payload_err(MsgType::Handshake, &b)),
            "nonzero padding"
        );
        let mut b = DISCONNECT.to_vec();
        b[31] = b' ';
        assert_eq!(
            malformed_reason(payload_err(MsgType::Disconnect, &b)),
            "nonzero padding"
        );
        // The whole frame path reports the same once the CRC is right.
        let b = recrc(b);
        assert!(matches!(
            decode_frame(&b, DEFAULT_MAX_PAYLOAD),
            Err(ProtocolError::MalformedPayload { .. })
        ));
        // A length that does not add up to the payload is a mismatch.
        let mut b = ERROR.to_vec();
        b[24] = 0; // text length 0: 6 bytes, no padding, but the payload is 10
        assert_eq!(
            malformed_reason(payload_err(MsgType::Error, &b)),
            "payload length does not match text length plus padding"
        );
        let mut b = HANDSHAKE.to_vec();
        b[22] = 3; // name_len 3: the payload would be 38 bytes, it is 42
        assert_eq!(
            malformed_reason(payload_err(MsgType::Handshake, &b)),
            "payload length does not match layer count and name length plus padding"
        );
        let mut b = HANDSHAKE.to_vec();
        b[40..44].copy_from_slice(&u32::MAX.to_le_bytes()); // layer_count
        assert_eq!(
            malformed_reason(payload_err(MsgType::Handshake, &b)),
            "payload length does not match layer count and name length plus padding"
        );
    }

    #[test]
    fn test_parse_bad_utf8() {
        let mut b = HANDSHAKE.to_vec();
        b[56] = 0xff;
        assert_eq!(
            payload_err(MsgType::Handshake, &b),
            ProtocolError::InvalidUtf8 {
                msg_type: MsgType::Handshake
            }
        );
        let mut b = DISCONNECT.to_vec();
        b[29] = 0xc3; // a lead byte with no continuation
        assert_eq!(
            payload_err(MsgType::Disconnect, &b),
            ProtocolError::InvalidUtf8 {
                msg_type: MsgType::Disconnect
            }
        );
    }
}
