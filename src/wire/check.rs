//! Checking a frame in place, before anything is built from it or trusted: the header, the
//! CRC, and the fields of a data payload.
//!
//! Decoding is strict: the header is validated ([`Header::validate`], including the length
//! cap) as soon as its 22 bytes are there and before any buffer grows; the CRC is checked
//! before a payload is parsed; reserved fields and padding must be zero and every length must
//! match exactly. A frame that decodes therefore re-encodes to the same bytes. A reader that
//! gets a large frame in pieces checksums each piece as it lands ([`check_frame_resumed`],
//! and [`FrameDecoder`](super::FrameDecoder) inside), so the check does not wait for the
//! last byte.
//!
//! The data payloads (ForwardData, BackwardData, HebbianData, WeightSync) are checked here,
//! field by field and without touching their values; `parse.rs` builds its messages on these
//! checks. The control payloads (Handshake, HandshakeAck, Heartbeat, Disconnect, Error) are
//! small and are checked as they are parsed, in `parse.rs`, which [`check_payload`] calls for
//! them.

use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use super::error::{malformed, ProtocolError};
use super::header::{Header, MsgType, HEADER_LEN};
use super::layout::*;
use super::message::SyncMode;
use super::parse::parse_payload;

/// What [`check_frame`] found at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCheck {
    /// More bytes are needed: `needed` is the total the buffer must hold so far (22 until the
    /// header is there, then the whole frame's length).
    Incomplete {
        /// Total bytes needed from the front of the buffer.
        needed: usize,
    },
    /// A whole frame of `len` bytes is there, its header valid and its CRC matching.
    Complete {
        /// The frame's length, header included.
        len: usize,
        /// Its message type.
        msg_type: MsgType,
    },
}

/// Looks at the front of `buf` for one whole frame.
///
/// Returns [`FrameCheck::Incomplete`] with the total number of bytes needed so far (22 until
/// the header is there, then 22 + LENGTH). The header is validated, length cap included, as
/// soon as its 22 bytes are present, so a caller may reserve `needed` bytes safely. Returns
/// [`FrameCheck::Complete`] once the whole frame is there and its CRC matches.
pub fn check_frame(buf: &[u8], max_payload: u32) -> Result<FrameCheck, ProtocolError> {
    check_frame_resumed(buf, max_payload, &mut PartialChecksum::default())
}

/// The checksum of the first bytes of an unfinished frame's payload, carried from one
/// [`check_frame_resumed`] call to the next while the rest of the frame arrives.
///
/// A large frame reaches a reader in several pieces (loopback TCP hands over a 64 KiB frame
/// as about 64 KiB and then the last few bytes, microseconds later); checksumming each piece
/// as it comes leaves only the last piece to hash once the frame is whole, so the check
/// overlaps the wait for the tail instead of following it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartialChecksum {
    /// CRC-32 of the payload bytes hashed so far.
    crc: u32,
    /// How many payload bytes that is.
    hashed: u32,
}

impl PartialChecksum {
    /// Payload bytes of the unfinished frame already checksummed.
    pub fn hashed(&self) -> usize {
        self.hashed as usize
    }

    /// Hashes the bytes of `payload_so_far` (the payload's first bytes, never more than
    /// LENGTH) past those already hashed.
    fn advance(&mut self, payload_so_far: &[u8]) {
        if let Some(new) = payload_so_far.get(self.hashed as usize..) {
            if !new.is_empty() {
                let mut hasher = crc32fast::Hasher::new_with_initial(self.crc);
                hasher.update(new);
                self.crc = hasher.finalize();
                self.hashed = payload_so_far.len() as u32;
            }
        }
    }
}

/// [`check_frame`] for a reader that calls again on the same frame as more of it arrives:
/// `partial` holds the checksum of the payload bytes seen by earlier calls (they must be the
/// same bytes, at the same place after the header), so each byte is hashed once. It is reset
/// once the frame is complete or rejected, ready for the next frame.
pub fn check_frame_resumed(
    buf: &[u8],
    max_payload: u32,
    partial: &mut PartialChecksum,
) -> Result<FrameCheck, ProtocolError> {
    let Some(header) = Header::ref_from_buf(buf) else {
        return Ok(FrameCheck::Incomplete { needed: HEADER_LEN });
    };
    let msg_type = match header.validate(max_payload) {
        Ok(t) => t,
        Err(e) => {
            *partial = PartialChecksum::default();
            return Err(e);
        }
    };
    let len = HEADER_LEN + header.payload_len() as usize;
    let Some(payload) = buf.get(HEADER_LEN..len) else {
        partial.advance(&buf[HEADER_LEN..]);
        return Ok(FrameCheck::Incomplete { needed: len });
    };
    let mut done = std::mem::take(partial);
    done.advance(payload);
    let computed = done.crc;
    if computed != header.checksum() {
        return Err(ProtocolError::ChecksumMismatch {
            expected: header.checksum(),
            computed,
        });
    }
    Ok(FrameCheck::Complete { len, msg_type })
}

/// Checks the payload of a message of type `msg_type` exactly as [`parse_payload`] does (it
/// accepts what `parse_payload` accepts, and refuses the rest with the same error) without
/// building the message: a data frame's fields are checked in place and its values are not
/// touched.
pub fn check_payload(msg_type: MsgType, payload: &[u8]) -> Result<(), ProtocolError> {
    match msg_type {
        MsgType::ForwardData | MsgType::BackwardData => layer_data(msg_type, payload).map(drop),
        MsgType::HebbianData => hebbian_data(payload).map(drop),
        MsgType::WeightSync => weight_sync_data(payload).map(drop),
        _ => parse_payload(msg_type, payload).map(drop),
    }
}

/// The fixed part at the front of a payload, and what follows it.
pub(super) fn fixed<T>(msg_type: MsgType, payload: &[u8]) -> Result<(&T, &[u8]), ProtocolError>
where
    T: FromBytes + KnownLayout + Immutable + Unaligned,
{
    T::ref_from_prefix(payload)
        .map_err(|_| malformed(msg_type, "payload shorter than its fixed fields"))
}

pub(super) fn check_zero_padding(msg_type: MsgType, padding: &[u8]) -> Result<(), ProtocolError> {
    if padding.iter().any(|&b| b != 0) {
        return Err(malformed(msg_type, "nonzero padding"));
    }
    Ok(())
}

fn check_f32_array(msg_type: MsgType, bytes: &[u8]) -> Result<(), ProtocolError> {
    if bytes.len() % 4 != 0 {
        return Err(malformed(
            msg_type,
            "f32 array length is not a multiple of 4 bytes",
        ));
    }
    Ok(())
}

/// ForwardData's or BackwardData's fixed fields and values, checked.
pub(super) fn layer_data(
    msg_type: MsgType,
    payload: &[u8],
) -> Result<(&LayerFixed, &[u8]), ProtocolError> {
    let (f, data) = fixed::<LayerFixed>(msg_type, payload)?;
    check_f32_array(msg_type, data)?;
    Ok((f, data))
}

/// HebbianData's fixed fields and values, checked.
pub(super) fn hebbian_data(payload: &[u8]) -> Result<(&HebbianFixed, &[u8]), ProtocolError> {
    let msg_type = MsgType::HebbianData;
    let (f, data) = fixed::<HebbianFixed>(msg_type, payload)?;
    check_f32_array(msg_type, data)?;
    let expected = u64::from(f.rows.get()) * u64::from(f.cols.get());
    let actual = data.len() as u64 / 4;
    if expected != actual {
        return Err(ProtocolError::F32CountMismatch {
            msg_type,
            expected,
            actual,
        });
    }
    Ok((f, data))
}

/// WeightSync's fixed fields, sync mode and values, checked.
pub(super) fn weight_sync_data(
    payload: &[u8],
) -> Result<(&WeightSyncFixed, SyncMode, &[u8]), ProtocolError> {
    let msg_type = MsgType::WeightSync;
    let (f, data) = fixed::<WeightSyncFixed>(msg_type, payload)?;
    if f.encoding != ENCODING_F32_LE {
        return Err(malformed(
            msg_type,
            "unknown value encoding (version 1 defines only 0, f32 little-endian)",
        ));
    }
    let mode = match f.mode {
        0 => SyncMode::Replace,
        1 => SyncMode::Average,
        _ => return Err(malformed(msg_type, "unknown sync mode")),
    };
    if f.reserved.get() != 0 {
        return Err(malformed(msg_type, "nonzero reserved field"));
    }
    check_f32_array(msg_type, data)?;
    if u64::from(f.offset.get()) + data.len() as u64 / 4 > layer_params(f.rows.get(), f.cols.get())
    {
        return Err(malformed(
            msg_type,
            "offset + value count is past the layer's rows * cols + rows parameters",
        ));
    }
    Ok((f, mode, data))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use bytes::BytesMut;

    use super::super::test_vectors::*;
    use super::super::{
        decode_frame, encode_frame, ErrorCode, FrameDecoder, Message, WeightSync,
        DEFAULT_MAX_PAYLOAD,
    };
    use super::*;

    #[test]
    fn test_parse_bad_magic() {
        let mut b = FORWARD_DATA;
        header_mut(&mut b).magic[1] = b'X';
        assert!(matches!(
            check_frame(&b, DEFAULT_MAX_PAYLOAD),
            Err(ProtocolError::BadMagic { found }) if found == *b"NXP\0"
        ));
    }

    #[test]
    fn a_resumed_check_hashes_each_byte_once_and_finds_an_early_flip() {
        let values: Vec<f32> = (0..300).map(|i| i as f32 * 0.5).collect();
        let message = Message::ForwardData {
            layer_id: 7,
            data: Cow::Borrowed(&values),
        };
        let mut frame = Vec::new();
        let len = encode_frame(&message, 5, &mut frame).unwrap();
        // Two frames back to back, fed in pieces that cut both.
        let stream = [&frame[..], &frame[..]].concat();
        let mut partial = PartialChecksum::default();
        let mut start = 0;
        let mut complete = 0;
        for end in (10..stream.len()).step_by(97).chain([stream.len()]) {
            let buf = &stream[start..end];
            match check_frame_resumed(buf, DEFAULT_MAX_PAYLOAD, &mut partial).unwrap() {
                FrameCheck::Complete { len: l, msg_type } => {
                    assert_eq!((l, msg_type), (len, MsgType::ForwardData));
                    assert_eq!(
                        partial,
                        PartialChecksum::default(),
                        "reset for the next frame"
                    );
                    complete += 1;
                    start += l;
                    // The rest of this piece may hold the next frame's start.
                    let rest = &stream[start..end];
                    let again = check_frame_resumed(rest, DEFAULT_MAX_PAYLOAD, &mut partial);
                    assert!(matches!(again, Ok(FrameCheck::Incomplete { .. })));
                }
                FrameCheck::Incomplete { needed } => {
                    let seen = buf.len().saturating_sub(HEADER_LEN);
                    assert_eq!(partial.hashed(), seen, "every payload byte seen is hashed");
                    assert!(needed > buf.len());
                }
            }
        }
        assert_eq!(complete, 2);

        // A bit flipped in a piece hashed before the rest arrived still fails the frame.
        let mut bad = frame.clone();
        bad[HEADER_LEN + 40] ^= 1;
        let mut partial = PartialChecksum::default();
        assert!(matches!(
            check_frame_resumed(&bad[..600], DEFAULT_MAX_PAYLOAD, &mut partial),
            Ok(FrameCheck::Incomplete { .. })
        ));
        assert_eq!(partial.hashed(), 600 - HEADER_LEN);
        assert!(matches!(
            check_frame_resumed(&bad, DEFAULT_MAX_PAYLOAD, &mut partial),
            Err(ProtocolError::ChecksumMismatch { .. })
        ));
        assert_eq!(partial, PartialChecksum::default());
    }

    #[test]
    fn test_parse_bad_version() {
        let mut b = FORWARD_DATA;
        header_mut(&mut b).version = 2;
        assert_eq!(
            decode_frame(&b, DEFAULT_MAX_PAYLOAD).unwrap_err(),
            ProtocolError::UnsupportedVersion { version: 2 }
        );
    }

    #[test]
    fn test_parse_bad_type() {
        let mut b = FORWARD_DATA;
        header_mut(&mut b).msg_type = 0x14;
        assert_eq!(
            decode_frame(&b, DEFAULT_MAX_PAYLOAD).unwrap_err(),
            ProtocolError::UnknownMessageType { msg_type: 0x14 }
        );
    }

    #[test]
    fn test_parse_bad_too_large() {
        let mut head = [0u8; HEADER_LEN];
        head.copy_from_slice(&FORWARD_DATA[..HEADER_LEN]);
        header_mut(&mut head).length.set(u32::MAX);
        let too_large = ProtocolError::FrameTooLarge {
            length: u32::MAX,
            max: DEFAULT_MAX_PAYLOAD,
        };
        // With only the 22 header bytes there, refused at once.
        assert_eq!(
            check_frame(&head, DEFAULT_MAX_PAYLOAD).unwrap_err(),
            too_large
        );
        assert_eq!(
            decode_frame(&head, DEFAULT_MAX_PAYLOAD).unwrap_err(),
            too_large
        );
        let mut src = BytesMut::with_capacity(HEADER_LEN);
        src.extend_from_slice(&head);
        let mut decoder = FrameDecoder::default();
        assert_eq!(decoder.decode(&mut src).unwrap_err(), too_large);
        assert!(src.capacity() <= 64, "capacity grew to {}", src.capacity());
        // A small cap applies to otherwise valid frames.
        assert_eq!(
            check_frame(&FORWARD_DATA, 8).unwrap_err(),
            ProtocolError::FrameTooLarge { length: 10, max: 8 }
        );
    }

    #[test]
    fn test_parse_bad_checksum() {
        let mut b = FORWARD_DATA;
        b[30] ^= 0x01;
        assert!(matches!(
            decode_frame(&b, DEFAULT_MAX_PAYLOAD),
            Err(ProtocolError::ChecksumMismatch {
                expected: 0xae18_2a4a,
                ..
            })
        ));
        let mut src = BytesMut::from(&b[..]);
        assert!(matches!(
            FrameDecoder::default().decode(&mut src),
            Err(ProtocolError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn test_parse_truncated() {
        for (bytes, _, message) in expected() {
            for cut in 0..bytes.len() {
                assert_eq!(decode_frame(&bytes[..cut], DEFAULT_MAX_PAYLOAD), Ok(None));
                let needed = if cut < HEADER_LEN {
                    HEADER_LEN
                } else {
                    bytes.len()
                };
                assert_eq!(
                    check_frame(&bytes[..cut], DEFAULT_MAX_PAYLOAD),
                    Ok(FrameCheck::Incomplete { needed })
                );
            }
            // A payload cut short (as a caller of parse_payload might pass) is malformed.
            let t = message.msg_type();
            for cut in HEADER_LEN..bytes.len() - 1 {
                let err = parse_payload(t, &bytes[HEADER_LEN..cut]);
                // Cutting exactly 4 bytes off an f32 array leaves a shorter valid array.
                if let Err(err) = err {
                    assert_eq!(err.code(), ErrorCode::MALFORMED_PAYLOAD, "{t:?} cut {cut}");
                }
            }
        }
        assert_eq!(
            malformed_reason(parse_payload(MsgType::WeightSync, &WEIGHT_SYNC[22..40]).unwrap_err()),
            "payload shorter than its fixed fields"
        );
        assert_eq!(
            malformed_reason(parse_payload(MsgType::Heartbeat, &HEARTBEAT[22..31]).unwrap_err()),
            "payload is not exactly 10 bytes"
        );
    }

    #[test]
    fn test_parse_bad_encoding_and_mode() {
        let mut b = WEIGHT_SYNC.to_vec();
        b[22 + 2] = 1;
        assert!(malformed_reason(payload_err(MsgType::WeightSync, &b)).contains("encoding"));
        let mut b = WEIGHT_SYNC.to_vec();
        b[22 + 3] = 2;
        assert_eq!(
            malformed_reason(payload_err(MsgType::WeightSync, &b)),
            "unknown sync mode"
        );
        let mut b = WEIGHT_SYNC.to_vec();
        b[22 + 3] = 0;
        assert!(matches!(
            parse_payload(MsgType::WeightSync, &b[22..]),
            Ok(Message::WeightSync(WeightSync {
                mode: SyncMode::Replace,
                ..
            }))
        ));
    }

    #[test]
    fn test_parse_bad_offset() {
        // rows 2, cols 3: 8 parameters; 3 values from offset 5 fit, from 6 do not.
        let mut b = WEIGHT_SYNC.to_vec();
        b[36..40].copy_from_slice(&5u32.to_le_bytes());
        assert!(parse_payload(MsgType::WeightSync, &b[22..]).is_ok());
        b[36..40].copy_from_slice(&6u32.to_le_bytes());
        assert!(malformed_reason(payload_err(MsgType::WeightSync, &b)).contains("offset"));
        b[36..40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(malformed_reason(payload_err(MsgType::WeightSync, &b)).contains("offset"));
        // Huge shapes do not overflow.
        b[28..36].fill(0xff);
        assert!(parse_payload(MsgType::WeightSync, &b[22..]).is_ok());
    }

    #[test]
    fn test_parse_bad_f32_count() {
        let mut b = HEBBIAN_DATA.to_vec();
        b[28..32].copy_from_slice(&3u32.to_le_bytes()); // rows 3
        assert_eq!(
            payload_err(MsgType::HebbianData, &b),
            ProtocolError::F32CountMismatch {
                msg_type: MsgType::HebbianData,
                expected: 6,
                actual: 4
            }
        );
        b[28..36].fill(0xff);
        assert!(matches!(
            payload_err(MsgType::HebbianData, &b),
            ProtocolError::F32CountMismatch { .. }
        ));
        // ForwardData whose array is not whole f32s.
        assert!(malformed_reason(
            parse_payload(MsgType::ForwardData, &FORWARD_DATA[22..31]).unwrap_err()
        )
        .contains("multiple of 4"));
    }
}
