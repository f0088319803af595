//! Writing frames: the exact length a message will take ([`payload_len`], [`frame_len`]) and
//! its bytes, header with CRC, payload and padding, without allocating: [`encode_frame`] into
//! any `BufMut`, [`encode_layer_frame`] into a plain slice (the batching sender's path), and
//! [`split_frame`] as pieces for a vectored write that copies no value.
//!
//! A message that a receiver's checks would refuse (a HebbianData whose data is not
//! `rows * cols`, a WeightSync past its layer's end, a name over 65535 bytes) is refused here
//! first, so every frame written decodes, and decodes to the same message.

use bytes::BufMut;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use super::error::{malformed, DisconnectReason, ErrorCode, ProtocolError};
use super::header::{Header, MsgType, HEADER_LEN};
use super::layout::*;
use super::message::Message;

/// The payload length of `msg` before padding, after checking that it can be encoded into a
/// frame that decodes (every check [`parse_payload`](super::parse_payload) makes that a value
/// could fail).
fn unpadded_len(msg: &Message<'_>) -> Result<u64, ProtocolError> {
    let msg_type = msg.msg_type();
    let too_large = |length: u64| ProtocolError::PayloadTooLarge { msg_type, length };
    let len = match msg {
        Message::Handshake(h) | Message::HandshakeAck(h) => {
            let len = HelloFixed::SIZE + h.layer_sizes.len() as u64 * 4 + h.name.len() as u64;
            if h.name.len() > usize::from(u16::MAX) || h.layer_sizes.len() as u64 > u32::MAX.into()
            {
                return Err(too_large(len));
            }
            len
        }
        Message::ForwardData { data, .. } | Message::BackwardData { data, .. } => {
            LayerFixed::SIZE + data.len() as u64 * 4
        }
        Message::HebbianData {
            rows,
            cols,
            correlations,
            ..
        } => {
            let expected = u64::from(*rows) * u64::from(*cols);
            if expected != correlations.len() as u64 {
                return Err(ProtocolError::F32CountMismatch {
                    msg_type,
                    expected,
                    actual: correlations.len() as u64,
                });
            }
            HebbianFixed::SIZE + correlations.len() as u64 * 4
        }
        Message::WeightSync(w) => {
            if u64::from(w.offset) + w.values.len() as u64 > layer_params(w.rows, w.cols) {
                return Err(malformed(
                    msg_type,
                    "offset + value count is past the layer's rows * cols + rows parameters",
                ));
            }
            WeightSyncFixed::SIZE + w.values.len() as u64 * 4
        }
        Message::Heartbeat { .. } => HeartbeatFixed::SIZE,
        Message::Auth(_) => AuthFixed::SIZE,
        Message::Disconnect { message, .. } | Message::Error { message, .. } => {
            TextFixed::SIZE + message.len() as u64
        }
    };
    Ok(len)
}

/// The exact payload length of `msg`, padding included.
///
/// Fails if `msg` cannot be encoded: [`ProtocolError::PayloadTooLarge`] over `u32::MAX` bytes
/// (or a name over 65535 bytes), [`ProtocolError::F32CountMismatch`] for a HebbianData whose
/// data is not `rows * cols`, [`ProtocolError::MalformedPayload`] for a WeightSync past its
/// layer's end.
pub fn payload_len(msg: &Message<'_>) -> Result<u32, ProtocolError> {
    let len = padded(unpadded_len(msg)?);
    u32::try_from(len).map_err(|_| ProtocolError::PayloadTooLarge {
        msg_type: msg.msg_type(),
        length: len,
    })
}

/// The whole frame length of `msg`: header, payload and padding.
pub fn frame_len(msg: &Message<'_>) -> Result<usize, ProtocolError> {
    frame_len_of(msg.msg_type(), payload_len(msg)?)
}

/// The whole frame length for a payload of `payload` bytes (padding included).
fn frame_len_of(msg_type: MsgType, payload: u32) -> Result<usize, ProtocolError> {
    usize::try_from(payload)
        .ok()
        .and_then(|p| p.checked_add(HEADER_LEN))
        .ok_or(ProtocolError::PayloadTooLarge {
            msg_type,
            length: payload.into(),
        })
}

/// Writes one whole frame (header with CRC, payload, padding) for `msg` into `dst`, and
/// returns the number of bytes written.
///
/// Nothing is allocated: the CRC is computed over the payload's pieces in place, then the
/// header and the pieces are put into `dst`. Fails, writing nothing, if `msg` cannot be
/// encoded ([`payload_len`]) or `dst` has less room than the frame
/// ([`ProtocolError::BufferTooSmall`]).
pub fn encode_frame<B: BufMut>(
    msg: &Message<'_>,
    sequence: u64,
    dst: &mut B,
) -> Result<usize, ProtocolError> {
    let payload_len = payload_len(msg)?;
    let total = frame_len_of(msg.msg_type(), payload_len)?;
    if dst.remaining_mut() < total {
        return Err(ProtocolError::BufferTooSmall {
            needed: total,
            available: dst.remaining_mut(),
        });
    }
    // The data frames' path: header and two pieces, no dispatch per piece; ForwardData and
    // BackwardData first.
    if let Some((fixed, values)) = layer_pieces(msg) {
        debug_assert_eq!(
            fixed.len() + values.len(),
            payload_len as usize,
            "no padding"
        );
        put_data_frame(dst, msg.msg_type(), &fixed, values, sequence);
        return Ok(total);
    }
    let data = with_data_pieces(msg, |fixed, values| {
        debug_assert_eq!(
            fixed.len() + values.len(),
            payload_len as usize,
            "no padding"
        );
        put_data_frame(dst, msg.msg_type(), fixed, values, sequence);
    });
    if data.is_some() {
        return Ok(total);
    }
    let mut hasher = crc32fast::Hasher::new();
    emit_payload(msg, payload_len, &mut |piece| hasher.update(piece));
    let header = Header::new(msg.msg_type(), payload_len, sequence, hasher.finalize());
    dst.put_slice(header.as_bytes());
    emit_payload(msg, payload_len, &mut |piece| dst.put_slice(piece));
    Ok(total)
}

/// Calls `f` with a data message's (ForwardData, BackwardData, HebbianData, WeightSync) fixed
/// fields, encoded here, and its values; `None` for any other message. `f` is inlined into
/// each type's arm, where the fixed fields sit in registers. Data layouts need no padding
/// (their fixed fields end 4-byte aligned after the header, as every f32 array does), so the
/// two are the whole payload.
#[inline(always)]
fn with_data_fields<'m, R>(
    msg: &'m Message<'_>,
    f: impl FnOnce(&[u8], &'m [f32]) -> R,
) -> Option<R> {
    Some(match msg {
        Message::ForwardData { layer_id, data } | Message::BackwardData { layer_id, data } => {
            f(&layer_id.to_le_bytes(), data)
        }
        Message::HebbianData {
            layer_id,
            learning_rate,
            rows,
            cols,
            correlations,
        } => f(
            HebbianFixed::new(*layer_id, *learning_rate, *rows, *cols).as_bytes(),
            correlations,
        ),
        Message::WeightSync(w) => f(WeightSyncFixed::of(w).as_bytes(), &w.values),
        _ => return None,
    })
}

/// [`with_data_fields`] with the values as their wire bytes, in place: only on a
/// little-endian host (`None` on a big-endian one, whose values must be swapped into a buffer).
#[inline(always)]
fn with_data_pieces<'m, R>(
    msg: &'m Message<'_>,
    f: impl FnOnce(&[u8], &'m [u8]) -> R,
) -> Option<R> {
    if cfg!(target_endian = "big") {
        return None;
    }
    with_data_fields(msg, |fixed, values| f(fixed, bytemuck::cast_slice(values)))
}

/// A ForwardData or BackwardData message's fixed field (the layer id) and values as wire
/// bytes, in place: `None` for any other message and on a big-endian host. The streaming small
/// frames' pieces, kept out of [`with_data_pieces`]'s four-way match (measured 3.5-4 ns a
/// 424-byte frame faster).
#[inline(always)]
fn layer_pieces<'m>(msg: &'m Message<'_>) -> Option<([u8; 2], &'m [u8])> {
    match msg {
        Message::ForwardData { layer_id, data } | Message::BackwardData { layer_id, data }
            if cfg!(target_endian = "little") =>
        {
            Some((layer_id.to_le_bytes(), bytemuck::cast_slice(data)))
        }
        _ => None,
    }
}

/// Puts a data frame whose payload is `fixed` then `values` (no padding) into `dst`.
#[inline(always)]
fn put_data_frame<B: BufMut>(
    dst: &mut B,
    msg_type: MsgType,
    fixed: &[u8],
    values: &[u8],
    sequence: u64,
) {
    dst.put_slice(data_header(msg_type, fixed, values, sequence).as_bytes());
    dst.put_slice(fixed);
    dst.put_slice(values);
}

/// The header of a data frame whose payload is `fixed` then `values`.
#[inline(always)]
fn data_header(msg_type: MsgType, fixed: &[u8], values: &[u8], sequence: u64) -> Header {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(fixed);
    hasher.update(values);
    let payload_len = (fixed.len() + values.len()) as u32;
    Header::new(msg_type, payload_len, sequence, hasher.finalize())
}

/// Writes a ForwardData or BackwardData frame at the front of `dst`, exactly as
/// [`encode_frame`] does, and returns its length; `None`, writing nothing, for any other
/// message, when `dst` is shorter than the frame, when the payload would exceed `u32::MAX`
/// bytes, or on a big-endian host.
///
/// The streaming small frame's path into a plain slice (a batching sender's block): one
/// bounds check, lengths from the array alone, no `BufMut` cursor (PERF.md measures it against
/// [`encode_frame`] into the same slice).
#[inline]
pub fn encode_layer_frame(msg: &Message<'_>, sequence: u64, dst: &mut [u8]) -> Option<usize> {
    let (fixed, values) = layer_pieces(msg)?;
    u32::try_from(fixed.len() + values.len()).ok()?;
    let frame = dst.get_mut(..HEADER_LEN + fixed.len() + values.len())?;
    let total = frame.len();
    let header = data_header(msg.msg_type(), &fixed, values, sequence);
    let (head, payload) = frame.split_at_mut(HEADER_LEN);
    let (fixed_dst, values_dst) = payload.split_at_mut(fixed.len());
    head.copy_from_slice(header.as_bytes());
    fixed_dst.copy_from_slice(&fixed);
    values_dst.copy_from_slice(values);
    Some(total)
}

/// The longest head a frame with an f32 array has: header and fixed fields.
pub const MAX_FRAME_HEAD: usize = HEADER_LEN + 32;

/// One frame as three pieces for a vectored write that copies no value: the head (header and
/// fixed fields, encoded), the f32 array (the message's own memory), and the padding.
#[derive(Debug, Clone)]
pub struct FrameParts<'m> {
    head: [u8; MAX_FRAME_HEAD],
    head_len: usize,
    body: &'m [u8],
    padding: usize,
}

impl<'m> FrameParts<'m> {
    /// The pieces in wire order; concatenated they are exactly [`encode_frame`]'s bytes.
    pub fn pieces(&self) -> [&[u8]; 3] {
        [
            &self.head[..self.head_len],
            self.body,
            &[0u8; 3][..self.padding],
        ]
    }

    /// The whole frame's length.
    pub fn len(&self) -> usize {
        self.head_len + self.body.len() + self.padding
    }

    /// Never true: a frame has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Copies the frame's bytes from `offset` on into `dst`, which must be exactly as long as
    /// what is left.
    pub fn copy_into(&self, offset: usize, dst: &mut [u8]) {
        assert_eq!(
            dst.len() + offset,
            self.len(),
            "dst must hold the rest of the frame"
        );
        let (mut skip, mut at) = (offset, 0);
        for piece in self.pieces() {
            let from = skip.min(piece.len());
            skip -= from;
            let rest = &piece[from..];
            dst[at..at + rest.len()].copy_from_slice(rest);
            at += rest.len();
        }
    }

    /// Sets the header's sequence number (the checksum covers only the payload).
    pub fn set_sequence(&mut self, sequence: u64) {
        let (header, _) =
            Header::mut_from_prefix(&mut self.head).expect("a head starts with a header");
        header.sequence.set(sequence);
    }
}

/// Splits the frame for `msg` into [`FrameParts`]: the head is encoded (checksum included,
/// computed over the values in place), the values stay where they are. Fails like
/// [`encode_frame`] if `msg` cannot be encoded; otherwise `None` for a message without an f32
/// array (control frames, small by nature) and on a big-endian host, whose values must be
/// swapped into a buffer anyway.
pub fn split_frame<'m>(
    msg: &'m Message<'_>,
    sequence: u64,
) -> Result<Option<FrameParts<'m>>, ProtocolError> {
    let payload_len = payload_len(msg)?;
    let parts = with_data_pieces(msg, |fixed, values| {
        let header = data_header(msg.msg_type(), fixed, values, sequence);
        let mut head = [0u8; MAX_FRAME_HEAD];
        head[..HEADER_LEN].copy_from_slice(header.as_bytes());
        head[HEADER_LEN..HEADER_LEN + fixed.len()].copy_from_slice(fixed);
        FrameParts {
            head,
            head_len: HEADER_LEN + fixed.len(),
            body: values,
            padding: 0,
        }
    });
    debug_assert!(parts
        .as_ref()
        .is_none_or(|p| p.len() == HEADER_LEN + payload_len as usize));
    Ok(parts)
}

/// Hands the payload of `msg` to `out` piece by piece, in wire order, padding it to
/// `payload_len` bytes. `msg` must have passed [`payload_len`].
fn emit_payload(msg: &Message<'_>, payload_len: u32, out: &mut dyn FnMut(&[u8])) {
    let mut written = 0usize;
    let mut put = |piece: &[u8]| {
        written += piece.len();
        out(piece);
    };
    match msg {
        Message::Handshake(h) | Message::HandshakeAck(h) => {
            let f = HelloFixed {
                name_len: U16::new(h.name.len() as u16),
                node_id: U64::new(h.node_id),
                capabilities: U32::new(h.capabilities),
                min_version: h.min_version,
                max_version: h.max_version,
                reserved: U16::ZERO,
                layer_count: U32::new(h.layer_sizes.len() as u32),
            };
            put(f.as_bytes());
            emit_u32s(&h.layer_sizes, &mut put);
            put(h.name.as_bytes());
        }
        Message::ForwardData { .. }
        | Message::BackwardData { .. }
        | Message::HebbianData { .. }
        | Message::WeightSync(_) => {
            with_data_fields(msg, |fixed, values| {
                put(fixed);
                emit_f32s(values, &mut put);
            });
        }
        Message::Heartbeat {
            timestamp_ns,
            reply,
        } => {
            let f = HeartbeatFixed {
                flags: U16::new(if *reply { HEARTBEAT_REPLY } else { 0 }),
                timestamp_ns: U64::new(*timestamp_ns),
            };
            put(f.as_bytes());
        }
        Message::Disconnect {
            reason: DisconnectReason(code),
            message,
        }
        | Message::Error {
            code: ErrorCode(code),
            message,
        } => {
            let f = TextFixed {
                code: U16::new(*code),
                text_len: U32::new(message.len() as u32),
            };
            put(f.as_bytes());
            put(message.as_bytes());
        }
        Message::Auth(a) => {
            let f = AuthFixed {
                step: U16::new(a.step as u16),
                scheme: a.scheme as u8,
                reserved: 0,
                key: a.key,
                nonce: a.nonce,
                proof: a.proof,
                reserved_end: U16::ZERO,
            };
            put(f.as_bytes());
        }
    }
    let padding = payload_len as usize - written;
    out(&[0u8; 3][..padding]);
}

/// f32 values as their little-endian bytes: the values' own memory on a little-endian host,
/// a small stack buffer of swapped bytes at a time otherwise.
fn emit_f32s(values: &[f32], put: &mut dyn FnMut(&[u8])) {
    if cfg!(target_endian = "little") {
        put(bytemuck::cast_slice(values));
    } else {
        let mut buf = [0u8; 256];
        for chunk in values.chunks(buf.len() / 4) {
            for (dst, v) in buf.chunks_exact_mut(4).zip(chunk) {
                dst.copy_from_slice(&v.to_le_bytes());
            }
            put(&buf[..chunk.len() * 4]);
        }
    }
}

/// u32 values as their little-endian bytes, like [`emit_f32s`].
fn emit_u32s(values: &[u32], put: &mut dyn FnMut(&[u8])) {
    if cfg!(target_endian = "little") {
        put(bytemuck::cast_slice(values));
    } else {
        let mut buf = [0u8; 256];
        for chunk in values.chunks(buf.len() / 4) {
            for (dst, v) in buf.chunks_exact_mut(4).zip(chunk) {
                dst.copy_from_slice(&v.to_le_bytes());
            }
            put(&buf[..chunk.len() * 4]);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::super::test_vectors::*;
    use super::super::{Hello, SyncMode, WeightSync};
    use super::*;

    #[test]
    fn a_data_frame_in_two_pieces_is_the_generic_payload() {
        let values = [1.5f32, -2.0, 0.25];
        let messages = [
            Message::ForwardData {
                layer_id: 3,
                data: Cow::Borrowed(&values),
            },
            Message::BackwardData {
                layer_id: 4,
                data: Cow::Borrowed(&values),
            },
            Message::HebbianData {
                layer_id: 5,
                learning_rate: 0.5,
                rows: 1,
                cols: 3,
                correlations: Cow::Borrowed(&values),
            },
            Message::WeightSync(WeightSync {
                layer_id: 6,
                mode: SyncMode::Average,
                rows: 1,
                cols: 2,
                offset: 0,
                sample_count: 9,
                values: Cow::Borrowed(&values),
            }),
        ];
        for m in &messages {
            let n = payload_len(m).unwrap();
            let mut generic = Vec::new();
            emit_payload(m, n, &mut |p| generic.extend_from_slice(p));
            let pieces = with_data_pieces(m, |fixed, values| [fixed, values].concat());
            assert_eq!(pieces.as_ref(), Some(&generic), "{:?}", m.msg_type());
        }
        let heartbeat = Message::Heartbeat {
            timestamp_ns: 1,
            reply: false,
        };
        assert!(with_data_pieces(&heartbeat, |_, _| ()).is_none());
    }

    #[test]
    fn test_construct() {
        for (bytes, sequence, message) in expected() {
            let mut out = Vec::new();
            let n = encode_frame(&message, sequence, &mut out).unwrap();
            assert_eq!(n, bytes.len());
            assert_eq!(out, bytes, "{:?}", message.msg_type());
            assert_eq!(frame_len(&message).unwrap(), bytes.len());
            assert_eq!(
                payload_len(&message).unwrap() as usize,
                bytes.len() - HEADER_LEN
            );
        }
    }

    #[test]
    fn test_construct_into_slice() {
        let mut buf = [0u8; 64];
        let mut dst = &mut buf[..];
        let message = &expected()[2].2;
        assert_eq!(encode_frame(message, 1, &mut dst).unwrap(), 32);
        assert_eq!(&buf[..32], &FORWARD_DATA);

        let mut small = [0u8; 31];
        let err = encode_frame(message, 1, &mut &mut small[..]).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::BufferTooSmall {
                needed: 32,
                available: 31
            }
        );
        assert_eq!(small, [0u8; 31]);
    }

    #[test]
    fn test_construct_refuses_what_decode_refuses() {
        let hebbian = Message::HebbianData {
            layer_id: 0,
            learning_rate: 0.1,
            rows: 2,
            cols: 2,
            correlations: Cow::Owned(vec![0.0; 3]),
        };
        assert!(matches!(
            encode_frame(&hebbian, 0, &mut Vec::new()),
            Err(ProtocolError::F32CountMismatch {
                expected: 4,
                actual: 3,
                ..
            })
        ));
        let sync = Message::WeightSync(WeightSync {
            layer_id: 0,
            mode: SyncMode::Replace,
            rows: 1,
            cols: 1,
            offset: 1,
            sample_count: 0,
            values: Cow::Owned(vec![0.0; 2]),
        });
        assert!(matches!(
            payload_len(&sync),
            Err(ProtocolError::MalformedPayload { .. })
        ));
        let name = "x".repeat(65_536);
        let hello = Message::Handshake(Hello {
            node_id: 0,
            min_version: 1,
            max_version: 1,
            capabilities: 0,
            layer_sizes: Cow::Owned(vec![]),
            name: Cow::Owned(name),
        });
        assert!(matches!(
            frame_len(&hello),
            Err(ProtocolError::PayloadTooLarge { .. })
        ));
    }
}
