//! Frames in and out: checking a frame at the front of a buffer, parsing payloads in place,
//! encoding into any `BufMut`, and a streaming decoder.
//!
//! Decoding never allocates on the fast path: f32 arrays are reinterpreted in the caller's
//! bytes ([`F32s`] is `Cow::Borrowed`) when they are 4-byte aligned and the host is
//! little-endian; otherwise they are copied once. LENGTH is checked against the caller's cap
//! as soon as the 22 header bytes are there, before anything is reserved.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::error::{DisconnectReason, ErrorCode, ProtocolError};
use super::header::{Header, MsgType, DEFAULT_MAX_PAYLOAD, HEADER_LEN};
use super::message::{F32s, Hello, Message, SyncMode, U32s, WeightSync};

/// A decoded frame: its sequence number and its message.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<'a> {
    /// The sender's sequence number.
    pub sequence: u64,
    /// The message, borrowing from the decoded bytes.
    pub message: Message<'a>,
}

/// What is at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCheck {
    /// Not a whole frame yet: `needed` bytes in all are needed so far (22 until the header is
    /// there, then the whole frame's length).
    Incomplete {
        /// Total bytes needed, counted from the frame's first byte.
        needed: usize,
    },
    /// A whole frame of `len` bytes whose header is valid and whose checksum matched.
    Complete {
        /// Frame length, header included.
        len: usize,
        /// Its type.
        msg_type: MsgType,
    },
}

/// Looks at the frame at the front of `buf`: validates the header as soon as it is there,
/// and the checksum once the whole frame is.
pub fn check_frame(buf: &[u8], max_payload: u32) -> Result<FrameCheck, ProtocolError> {
    let Some(header) = Header::ref_from_buf(buf) else {
        // Refuse garbage early: the magic is checkable before the header is whole.
        let n = buf.len().min(4);
        if buf[..n] != super::header::MAGIC[..n] {
            let mut found = [0u8; 4];
            found[..n].copy_from_slice(&buf[..n]);
            return Err(ProtocolError::BadMagic { found });
        }
        return Ok(FrameCheck::Incomplete { needed: HEADER_LEN });
    };
    let msg_type = header.validate(max_payload)?;
    let len = HEADER_LEN + header.payload_len() as usize;
    if buf.len() < len {
        return Ok(FrameCheck::Incomplete { needed: len });
    }
    let computed = crc32fast::hash(&buf[HEADER_LEN..len]);
    if computed != header.checksum() {
        return Err(ProtocolError::ChecksumMismatch {
            expected: header.checksum(),
            computed,
        });
    }
    Ok(FrameCheck::Complete { len, msg_type })
}

/// [`check_frame`] then [`parse_payload`]: `Ok(None)` means more bytes are needed.
pub fn decode_frame(
    buf: &[u8],
    max_payload: u32,
) -> Result<Option<(Frame<'_>, usize)>, ProtocolError> {
    match check_frame(buf, max_payload)? {
        FrameCheck::Incomplete { .. } => Ok(None),
        FrameCheck::Complete { len, msg_type } => {
            let header = Header::ref_from_buf(buf).expect("checked");
            let message = parse_payload(msg_type, &buf[HEADER_LEN..len])?;
            Ok(Some((
                Frame {
                    sequence: header.sequence(),
                    message,
                },
                len,
            )))
        }
    }
}

// Fixed parts of the payloads (little-endian, unaligned views).

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct HelloHead {
    name_len: U16,
    node_id: U64,
    capabilities: U32,
    min_version: u8,
    max_version: u8,
    reserved: U16,
    layer_count: U32,
}
const _: () = assert!(core::mem::size_of::<HelloHead>() == 22);

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct HebbianHead {
    layer_id: U16,
    learning_rate: [u8; 4],
    rows: U32,
    cols: U32,
}
const _: () = assert!(core::mem::size_of::<HebbianHead>() == 14);

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct WeightSyncHead {
    layer_id: U16,
    encoding: u8,
    mode: u8,
    reserved: U16,
    rows: U32,
    cols: U32,
    offset: U32,
    sample_count: U32,
}
const _: () = assert!(core::mem::size_of::<WeightSyncHead>() == 22);

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct HeartbeatBody {
    flags: U16,
    timestamp_ns: U64,
}
const _: () = assert!(core::mem::size_of::<HeartbeatBody>() == 10);

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct TextHead {
    code: U16,
    text_len: U32,
}
const _: () = assert!(core::mem::size_of::<TextHead>() == 6);

const HEARTBEAT_REPLY: u16 = 1;
const ENCODING_F32_LE: u8 = 0;

/// Zero bytes that bring a payload of `unpadded` bytes to a 4-byte frame boundary.
fn padding(unpadded: usize) -> usize {
    (4 - (HEADER_LEN + unpadded) % 4) % 4
}

fn malformed(msg_type: MsgType, reason: &'static str) -> ProtocolError {
    ProtocolError::MalformedPayload { msg_type, reason }
}

fn head<T: FromBytes + KnownLayout + Immutable + Unaligned>(
    msg_type: MsgType,
    payload: &[u8],
) -> Result<(&T, &[u8]), ProtocolError> {
    T::ref_from_prefix(payload)
        .map_err(|_| malformed(msg_type, "payload shorter than its fixed fields"))
}

/// f32 values from little-endian bytes: in place when possible, else copied.
fn f32s(bytes: &[u8]) -> F32s<'_> {
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

/// Checks that `rest` is `len` bytes of content followed by exactly the zero padding.
fn content_then_padding(
    msg_type: MsgType,
    rest: &[u8],
    fixed: usize,
    len: usize,
) -> Result<&[u8], ProtocolError> {
    let pad = padding(fixed + len);
    if rest.len() != len + pad {
        return Err(malformed(
            msg_type,
            "payload length does not match its declared contents",
        ));
    }
    if rest[len..].iter().any(|&b| b != 0) {
        return Err(malformed(msg_type, "padding bytes are not zero"));
    }
    Ok(&rest[..len])
}

fn text(msg_type: MsgType, bytes: &[u8]) -> Result<Cow<'_, str>, ProtocolError> {
    std::str::from_utf8(bytes)
        .map(Cow::Borrowed)
        .map_err(|_| ProtocolError::InvalidUtf8 { msg_type })
}

fn data_array(msg_type: MsgType, payload: &[u8]) -> Result<(u16, F32s<'_>), ProtocolError> {
    let (layer_id, rest) = head::<U16>(msg_type, payload)?;
    if rest.len() % 4 != 0 {
        return Err(malformed(
            msg_type,
            "data is not a whole number of f32 values",
        ));
    }
    Ok((layer_id.get(), f32s(rest)))
}

/// Parses a payload of type `msg_type` (no header, no checksum check).
pub fn parse_payload(msg_type: MsgType, payload: &[u8]) -> Result<Message<'_>, ProtocolError> {
    match msg_type {
        MsgType::Handshake | MsgType::HandshakeAck => {
            let (h, rest) = head::<HelloHead>(msg_type, payload)?;
            if h.reserved.get() != 0 {
                return Err(malformed(msg_type, "reserved field is not zero"));
            }
            let layers_len = h.layer_count.get() as usize * 4;
            let name_len = h.name_len.get() as usize;
            let fixed = core::mem::size_of::<HelloHead>();
            if rest.len() < layers_len {
                return Err(malformed(msg_type, "layer count runs past the payload"));
            }
            let (layers, rest) = rest.split_at(layers_len);
            let name = content_then_padding(msg_type, rest, fixed + layers_len, name_len)?;
            let hello = Hello {
                node_id: h.node_id.get(),
                min_version: h.min_version,
                max_version: h.max_version,
                capabilities: h.capabilities.get(),
                layer_sizes: u32s(layers),
                name: text(msg_type, name)?,
            };
            if hello.min_version > hello.max_version {
                return Err(malformed(msg_type, "min_version is above max_version"));
            }
            Ok(if msg_type == MsgType::Handshake {
                Message::Handshake(hello)
            } else {
                Message::HandshakeAck(hello)
            })
        }
        MsgType::ForwardData => {
            let (layer_id, data) = data_array(msg_type, payload)?;
            Ok(Message::ForwardData { layer_id, data })
        }
        MsgType::BackwardData => {
            let (layer_id, data) = data_array(msg_type, payload)?;
            Ok(Message::BackwardData { layer_id, data })
        }
        MsgType::HebbianData => {
            let (h, rest) = head::<HebbianHead>(msg_type, payload)?;
            let (rows, cols) = (h.rows.get(), h.cols.get());
            let expected = u64::from(rows) * u64::from(cols);
            if rest.len() % 4 != 0 || rest.len() as u64 / 4 != expected {
                return Err(ProtocolError::F32CountMismatch {
                    msg_type,
                    expected,
                    actual: rest.len() as u64 / 4,
                });
            }
            Ok(Message::HebbianData {
                layer_id: h.layer_id.get(),
                learning_rate: f32::from_le_bytes(h.learning_rate),
                rows,
                cols,
                correlations: f32s(rest),
            })
        }
        MsgType::WeightSync => {
            let (h, rest) = head::<WeightSyncHead>(msg_type, payload)?;
            if h.encoding != ENCODING_F32_LE {
                return Err(malformed(
                    msg_type,
                    "unknown value encoding (v1 knows only f32 LE = 0)",
                ));
            }
            let mode = match h.mode {
                0 => SyncMode::Replace,
                1 => SyncMode::Average,
                _ => return Err(malformed(msg_type, "unknown sync mode")),
            };
            if h.reserved.get() != 0 {
                return Err(malformed(msg_type, "reserved field is not zero"));
            }
            if rest.len() % 4 != 0 {
                return Err(malformed(msg_type, "values are not a whole number of f32"));
            }
            let (rows, cols, offset) = (h.rows.get(), h.cols.get(), h.offset.get());
            let params = u64::from(rows) * u64::from(cols) + u64::from(rows);
            let count = rest.len() as u64 / 4;
            if u64::from(offset) + count > params {
                return Err(ProtocolError::F32CountMismatch {
                    msg_type,
                    expected: params.saturating_sub(u64::from(offset)),
                    actual: count,
                });
            }
            Ok(Message::WeightSync(WeightSync {
                layer_id: h.layer_id.get(),
                mode,
                rows,
                cols,
                offset,
                sample_count: h.sample_count.get(),
                values: f32s(rest),
            }))
        }
        MsgType::Heartbeat => {
            let body = HeartbeatBody::ref_from_bytes(payload)
                .map_err(|_| malformed(msg_type, "a heartbeat payload is exactly 10 bytes"))?;
            let flags = body.flags.get();
            if flags & !HEARTBEAT_REPLY != 0 {
                return Err(malformed(msg_type, "unknown heartbeat flags"));
            }
            Ok(Message::Heartbeat {
                timestamp_ns: body.timestamp_ns.get(),
                reply: flags & HEARTBEAT_REPLY != 0,
            })
        }
        MsgType::Disconnect | MsgType::Error => {
            let (h, rest) = head::<TextHead>(msg_type, payload)?;
            let len = h.text_len.get() as usize;
            let body = content_then_padding(msg_type, rest, core::mem::size_of::<TextHead>(), len)?;
            let message = text(msg_type, body)?;
            let code = h.code.get();
            Ok(if msg_type == MsgType::Error {
                Message::Error {
                    code: ErrorCode(code),
                    message,
                }
            } else {
                Message::Disconnect {
                    reason: DisconnectReason(code),
                    message,
                }
            })
        }
    }
}

/// The payload length of `msg`, padding included.
pub fn payload_len(msg: &Message<'_>) -> Result<u32, ProtocolError> {
    let len: u64 = match msg {
        Message::Handshake(h) | Message::HandshakeAck(h) => {
            let unpadded = 22 + 4 * h.layer_sizes.len() as u64 + h.name.len() as u64;
            if h.name.len() > u16::MAX as usize {
                return Err(ProtocolError::PayloadTooLarge {
                    msg_type: msg.msg_type(),
                    length: unpadded,
                });
            }
            unpadded + padding(unpadded as usize) as u64
        }
        Message::ForwardData { data, .. } | Message::BackwardData { data, .. } => {
            2 + 4 * data.len() as u64
        }
        Message::HebbianData { correlations, .. } => 14 + 4 * correlations.len() as u64,
        Message::WeightSync(ws) => 22 + 4 * ws.values.len() as u64,
        Message::Heartbeat { .. } => 10,
        Message::Disconnect { message, .. } | Message::Error { message, .. } => {
            let unpadded = 6 + message.len() as u64;
            unpadded + padding(unpadded as usize) as u64
        }
    };
    u32::try_from(len).map_err(|_| ProtocolError::PayloadTooLarge {
        msg_type: msg.msg_type(),
        length: len,
    })
}

/// The whole frame length of `msg`, header included.
pub fn frame_len(msg: &Message<'_>) -> Result<usize, ProtocolError> {
    Ok(HEADER_LEN + payload_len(msg)? as usize)
}

/// Checks what the encoder cannot express or the decoder would refuse.
fn check_encodable(msg: &Message<'_>) -> Result<(), ProtocolError> {
    let msg_type = msg.msg_type();
    match msg {
        Message::HebbianData {
            rows,
            cols,
            correlations,
            ..
        } => {
            let expected = u64::from(*rows) * u64::from(*cols);
            if correlations.len() as u64 != expected {
                return Err(ProtocolError::F32CountMismatch {
                    msg_type,
                    expected,
                    actual: correlations.len() as u64,
                });
            }
        }
        Message::WeightSync(ws) => {
            let params = u64::from(ws.rows) * u64::from(ws.cols) + u64::from(ws.rows);
            if u64::from(ws.offset) + ws.values.len() as u64 > params {
                return Err(ProtocolError::F32CountMismatch {
                    msg_type,
                    expected: params.saturating_sub(u64::from(ws.offset)),
                    actual: ws.values.len() as u64,
                });
            }
        }
        Message::Handshake(h) | Message::HandshakeAck(h) if h.min_version > h.max_version => {
            return Err(malformed(msg_type, "min_version is above max_version"));
        }
        _ => {}
    }
    Ok(())
}

/// Feeds the payload's bytes, in order, to `sink`; the f32/u32 arrays go as whole slices.
fn for_each_payload_piece(msg: &Message<'_>, sink: &mut dyn FnMut(&[u8])) {
    match msg {
        Message::Handshake(h) | Message::HandshakeAck(h) => {
            let head = HelloHead {
                name_len: U16::new(h.name.len() as u16),
                node_id: U64::new(h.node_id),
                capabilities: U32::new(h.capabilities),
                min_version: h.min_version,
                max_version: h.max_version,
                reserved: U16::new(0),
                layer_count: U32::new(h.layer_sizes.len() as u32),
            };
            sink(head.as_bytes());
            le_words(&h.layer_sizes, sink);
            sink(h.name.as_bytes());
            let unpadded = 22 + 4 * h.layer_sizes.len() + h.name.len();
            sink(&[0u8; 3][..padding(unpadded)]);
        }
        Message::ForwardData { layer_id, data } | Message::BackwardData { layer_id, data } => {
            sink(&layer_id.to_le_bytes());
            le_floats(data, sink);
        }
        Message::HebbianData {
            layer_id,
            learning_rate,
            rows,
            cols,
            correlations,
        } => {
            let head = HebbianHead {
                layer_id: U16::new(*layer_id),
                learning_rate: learning_rate.to_le_bytes(),
                rows: U32::new(*rows),
                cols: U32::new(*cols),
            };
            sink(head.as_bytes());
            le_floats(correlations, sink);
        }
        Message::WeightSync(ws) => {
            let head = WeightSyncHead {
                layer_id: U16::new(ws.layer_id),
                encoding: ENCODING_F32_LE,
                mode: ws.mode as u8,
                reserved: U16::new(0),
                rows: U32::new(ws.rows),
                cols: U32::new(ws.cols),
                offset: U32::new(ws.offset),
                sample_count: U32::new(ws.sample_count),
            };
            sink(head.as_bytes());
            le_floats(&ws.values, sink);
        }
        Message::Heartbeat {
            timestamp_ns,
            reply,
        } => {
            let body = HeartbeatBody {
                flags: U16::new(if *reply { HEARTBEAT_REPLY } else { 0 }),
                timestamp_ns: U64::new(*timestamp_ns),
            };
            sink(body.as_bytes());
        }
        Message::Disconnect {
            reason: DisconnectReason(code),
            message,
        }
        | Message::Error {
            code: ErrorCode(code),
            message,
        } => {
            let head = TextHead {
                code: U16::new(*code),
                text_len: U32::new(message.len() as u32),
            };
            sink(head.as_bytes());
            sink(message.as_bytes());
            sink(&[0u8; 3][..padding(6 + message.len())]);
        }
    }
}

/// f32 values as little-endian bytes: the values' own memory on a little-endian host.
fn le_floats(values: &[f32], sink: &mut dyn FnMut(&[u8])) {
    if cfg!(target_endian = "little") {
        sink(bytemuck::cast_slice(values));
    } else {
        let mut buf = [0u8; 256];
        for chunk in values.chunks(64) {
            for (i, v) in chunk.iter().enumerate() {
                buf[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
            }
            sink(&buf[..chunk.len() * 4]);
        }
    }
}

fn le_words(values: &[u32], sink: &mut dyn FnMut(&[u8])) {
    if cfg!(target_endian = "little") {
        sink(bytemuck::cast_slice(values));
    } else {
        for v in values {
            sink(&v.to_le_bytes());
        }
    }
}

/// Writes one whole frame of `msg` with `sequence` into `dst`; returns the bytes written.
///
/// Nothing is allocated: the checksum is computed over the payload's pieces, then the header
/// and the pieces are put into `dst`. Fails before writing anything if `dst` lacks room.
pub fn encode_frame<B: BufMut>(
    msg: &Message<'_>,
    sequence: u64,
    dst: &mut B,
) -> Result<usize, ProtocolError> {
    check_encodable(msg)?;
    let payload = payload_len(msg)?;
    let total = HEADER_LEN + payload as usize;
    if dst.remaining_mut() < total {
        return Err(ProtocolError::PayloadTooLarge {
            msg_type: msg.msg_type(),
            length: payload as u64,
        });
    }
    let mut hasher = crc32fast::Hasher::new();
    for_each_payload_piece(msg, &mut |piece| hasher.update(piece));
    let header = Header::new(msg.msg_type(), payload, sequence, hasher.finalize());
    dst.put_slice(header.as_bytes());
    for_each_payload_piece(msg, &mut |piece| dst.put_slice(piece));
    Ok(total)
}

impl Message<'static> {
    /// The Error message that reports `error` to the peer (text capped at 1 KiB).
    pub fn error_from(error: &ProtocolError) -> Message<'static> {
        let mut text = error.to_string();
        if text.len() > 1024 {
            let mut cut = 1024;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Message::Error {
            code: error.code(),
            message: Cow::Owned(text),
        }
    }
}

/// A streaming decoder over a `BytesMut` the caller appends to (tokio-util style): yields
/// each whole, checksum-verified frame, reserving at most the validated frame's length.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_payload: u32,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_PAYLOAD)
    }
}

impl FrameDecoder {
    /// A decoder refusing payloads over `max_payload` bytes.
    pub fn new(max_payload: u32) -> FrameDecoder {
        FrameDecoder { max_payload }
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed, `Err` for a corrupt stream
    /// (after which the stream cannot be resynchronised by this decoder).
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<RawFrame>, ProtocolError> {
        match check_frame(src, self.max_payload)? {
            FrameCheck::Complete { len, msg_type } => {
                let bytes = src.split_to(len).freeze();
                Ok(Some(RawFrame { bytes, msg_type }))
            }
            FrameCheck::Incomplete { needed } => {
                // `needed` is bounded by the validated LENGTH.
                src.reserve(needed.saturating_sub(src.len()));
                Ok(None)
            }
        }
    }
}

/// A whole, checksum-verified frame that owns its bytes.
#[derive(Debug, Clone)]
pub struct RawFrame {
    bytes: Bytes,
    msg_type: MsgType,
}

impl RawFrame {
    /// The header.
    pub fn header(&self) -> &Header {
        Header::ref_from_buf(&self.bytes).expect("a raw frame holds a whole header")
    }

    /// The sequence number.
    pub fn sequence(&self) -> u64 {
        self.header().sequence()
    }

    /// The message type.
    pub fn msg_type(&self) -> MsgType {
        self.msg_type
    }

    /// The frame's bytes, header included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The message, borrowing from the frame's bytes.
    pub fn message(&self) -> Result<Message<'_>, ProtocolError> {
        parse_payload(self.msg_type, &self.bytes[HEADER_LEN..])
    }
}
