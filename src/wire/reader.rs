//! The one decoder for byte streams: [`FrameDecoder`] splits whole, CRC-checked frames off the
//! front of a `BytesMut` that a reader appends received bytes to, as [`RawFrame`]s that own
//! their bytes and parse in place.
//!
//! It checks nothing itself: it is an adapter over [`check_frame_resumed`], keeping the
//! checksum of the unfinished frame between reads and growing the buffer only to a validated
//! frame length.

use bytes::{Bytes, BytesMut};

use super::check::{check_frame_resumed, FrameCheck, PartialChecksum};
use super::error::ProtocolError;
use super::header::{Header, MsgType, DEFAULT_MAX_PAYLOAD, HEADER_LEN};
use super::message::Message;
use super::parse::parse_payload;

/// A whole, CRC-checked frame that owns its bytes; [`RawFrame::message`] parses it in place.
#[derive(Debug, Clone)]
pub struct RawFrame {
    header: Header,
    msg_type: MsgType,
    bytes: Bytes,
}

impl RawFrame {
    /// The frame's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The header's sequence number.
    pub fn sequence(&self) -> u64 {
        self.header.sequence()
    }

    /// The (validated) message type.
    pub fn msg_type(&self) -> MsgType {
        self.msg_type
    }

    /// The whole frame, header included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The payload, padding included.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// Parses the payload; arrays borrow from this frame's bytes.
    pub fn message(&self) -> Result<Message<'_>, ProtocolError> {
        parse_payload(self.msg_type, self.payload())
    }

    /// The frame's bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

/// Splits whole frames off the front of a `BytesMut` the caller appends received bytes to.
///
/// Call [`FrameDecoder::decode`] after each read until it returns `Ok(None)`. The header is
/// validated, length cap included, before the buffer is grown for the frame: a peer announcing
/// a 4 GiB frame costs nothing but an error. After an `Err` the stream cannot be trusted:
/// report it ([`Message::error_from`]) and close.
///
/// Since every frame is a multiple of 4 bytes long, frames split off a buffer that started
/// 4-byte aligned stay aligned, and their arrays are borrowed in place.
#[derive(Debug)]
pub struct FrameDecoder {
    max_payload: u32,
    /// The checksum of the frame at the front of the buffer, as far as it has arrived.
    checksum: PartialChecksum,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_PAYLOAD)
    }
}

impl FrameDecoder {
    /// A decoder that refuses payloads over `max_payload` bytes.
    pub fn new(max_payload: u32) -> Self {
        FrameDecoder {
            max_payload,
            checksum: PartialChecksum::default(),
        }
    }

    /// The payload cap.
    pub fn max_payload(&self) -> u32 {
        self.max_payload
    }

    /// The next whole frame at the front of `src`, split off it; `Ok(None)` if more bytes are
    /// needed (having reserved room for them, at most the validated frame length).
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<RawFrame>, ProtocolError> {
        match check_frame_resumed(src, self.max_payload, &mut self.checksum)? {
            FrameCheck::Incomplete { needed } => {
                src.reserve(needed - src.len());
                Ok(None)
            }
            FrameCheck::Complete { len, msg_type } => {
                let header = *Header::ref_from_buf(src).expect("a checked frame has a header");
                Ok(Some(RawFrame {
                    header,
                    msg_type,
                    bytes: src.split_to(len).freeze(),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_vectors::*;
    use super::*;

    #[test]
    fn test_decoder_byte_by_byte() {
        let all = expected();
        let stream: Vec<u8> = all.iter().flat_map(|(b, _, _)| b.iter().copied()).collect();
        let mut decoder = FrameDecoder::default();
        let mut src = BytesMut::new();
        let mut got = Vec::new();
        for &byte in &stream {
            src.extend_from_slice(&[byte]);
            while let Some(frame) = decoder.decode(&mut src).unwrap() {
                got.push(frame);
            }
        }
        assert!(src.is_empty());
        assert_eq!(got.len(), all.len());
        for (frame, (bytes, sequence, message)) in got.iter().zip(&all) {
            assert_eq!(frame.as_bytes(), *bytes);
            assert_eq!(frame.sequence(), *sequence);
            assert_eq!(frame.msg_type(), message.msg_type());
            assert_eq!(
                frame.header().payload_len() as usize,
                bytes.len() - HEADER_LEN
            );
            assert_eq!(&frame.message().unwrap(), message);
        }
        // All at once too.
        let mut src = BytesMut::from(&stream[..]);
        let mut n = 0;
        while let Some(frame) = decoder.decode(&mut src).unwrap() {
            assert_eq!(frame.message().unwrap(), all[n].2);
            n += 1;
        }
        assert_eq!(n, all.len());
    }
}
