//! The fixed 22-byte frame header, parsed in place.
//!
//! ```text
//!  0      4   5    6        10               18         22
//!  | MAGIC | V | T  | LENGTH | SEQUENCE       | CHECKSUM | PAYLOAD ...
//!  "NNP\0"  1   u8   u32 BE   u64 BE           u32 BE (CRC-32/IEEE of PAYLOAD)
//! ```
//!
//! [`Header`] is a zerocopy view: [`Header::ref_from_prefix`] borrows the first 22 bytes of a
//! buffer without copying, whatever their alignment. It checks nothing; validation is
//! [`Header::validate`], which the codec calls before it trusts LENGTH.

use zerocopy::network_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::error::ProtocolError;

/// The four bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"NNP\0";
/// The protocol version this crate speaks (and the only one it parses).
pub const VERSION: u8 = 1;
/// Size of the frame header in bytes.
pub const HEADER_LEN: usize = 22;
/// Default cap on a frame's payload length (16 MiB), checked before any buffer grows.
pub const DEFAULT_MAX_PAYLOAD: u32 = 16 * 1024 * 1024;

/// The frame header exactly as it is on the wire (big-endian integers).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Header {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// Protocol version, [`VERSION`].
    pub version: u8,
    /// Message type, see [`MsgType`].
    pub msg_type: u8,
    /// Payload length in bytes (padding included).
    pub length: U32,
    /// Per-direction sequence number, starting at 0.
    pub sequence: U64,
    /// CRC-32/IEEE of the payload.
    pub checksum: U32,
}

const _: () = assert!(core::mem::size_of::<Header>() == HEADER_LEN);

impl Header {
    /// A header for a payload of `length` bytes with the given checksum.
    pub fn new(msg_type: MsgType, length: u32, sequence: u64, checksum: u32) -> Self {
        Header {
            magic: MAGIC,
            version: VERSION,
            msg_type: msg_type as u8,
            length: U32::new(length),
            sequence: U64::new(sequence),
            checksum: U32::new(checksum),
        }
    }

    /// Borrows the header at the front of `buf`, or `None` if fewer than 22 bytes are there.
    pub fn ref_from_buf(buf: &[u8]) -> Option<&Header> {
        Header::ref_from_prefix(buf).ok().map(|(h, _)| h)
    }

    /// Mutably borrows the header at the front of `buf`, or `None` if fewer than 22 bytes are
    /// there: for stamping a frame already encoded (its sequence number).
    pub fn mut_from_buf(buf: &mut [u8]) -> Option<&mut Header> {
        Header::mut_from_prefix(buf).ok().map(|(h, _)| h)
    }

    /// Sets the sequence number.
    pub fn set_sequence(&mut self, sequence: u64) {
        self.sequence = U64::new(sequence);
    }

    /// Payload length in bytes.
    pub fn payload_len(&self) -> u32 {
        self.length.get()
    }

    /// Sequence number.
    pub fn sequence(&self) -> u64 {
        self.sequence.get()
    }

    /// Checksum field.
    pub fn checksum(&self) -> u32 {
        self.checksum.get()
    }

    /// Checks magic, version, type, the length cap and the 4-byte frame-length rule, in that
    /// order, and returns the message type.
    pub fn validate(&self, max_payload: u32) -> Result<MsgType, ProtocolError> {
        if self.magic != MAGIC {
            return Err(ProtocolError::BadMagic { found: self.magic });
        }
        if self.version != VERSION {
            return Err(ProtocolError::UnsupportedVersion {
                version: self.version,
            });
        }
        let msg_type =
            MsgType::from_u8(self.msg_type).ok_or(ProtocolError::UnknownMessageType {
                msg_type: self.msg_type,
            })?;
        let length = self.payload_len();
        if length > max_payload {
            return Err(ProtocolError::FrameTooLarge {
                length,
                max: max_payload,
            });
        }
        if (HEADER_LEN as u64 + u64::from(length)) % 4 != 0 {
            return Err(ProtocolError::UnalignedFrameLength { length });
        }
        Ok(msg_type)
    }
}

impl core::fmt::Debug for Header {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Header")
            .field("magic", &self.magic)
            .field("version", &self.version)
            .field("msg_type", &self.msg_type)
            .field("length", &self.length.get())
            .field("sequence", &self.sequence.get())
            .field("checksum", &format_args!("{:#010x}", self.checksum.get()))
            .finish()
    }
}

/// The message types of protocol version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MsgType {
    /// Opens a session: name, id, versions, capabilities, layer sizes.
    Handshake = 0x01,
    /// Accepts a session: the agreed version and capabilities.
    HandshakeAck = 0x02,
    /// A step of peer authentication (keys, nonces, signatures), when both sides agreed it.
    Auth = 0x03,
    /// Activations of a layer.
    ForwardData = 0x10,
    /// Gradients of a layer.
    BackwardData = 0x11,
    /// A layer's Hebbian correlation matrix.
    HebbianData = 0x12,
    /// A slice of a layer's parameters.
    WeightSync = 0x13,
    /// Liveness and round-trip measurement.
    Heartbeat = 0x20,
    /// Graceful close with a reason.
    Disconnect = 0x21,
    /// A protocol error report.
    Error = 0xFF,
}

impl MsgType {
    /// Every type: those of the first release in wire-code order, then Auth (appended, so
    /// that tables indexed by type keep their first nine places).
    pub const ALL: [MsgType; 10] = [
        MsgType::Handshake,
        MsgType::HandshakeAck,
        MsgType::ForwardData,
        MsgType::BackwardData,
        MsgType::HebbianData,
        MsgType::WeightSync,
        MsgType::Heartbeat,
        MsgType::Disconnect,
        MsgType::Error,
        MsgType::Auth,
    ];

    /// The type's position in [`MsgType::ALL`] (0 to 9), for tables indexed by type.
    pub fn index(self) -> usize {
        match self {
            MsgType::Handshake => 0,
            MsgType::HandshakeAck => 1,
            MsgType::ForwardData => 2,
            MsgType::BackwardData => 3,
            MsgType::HebbianData => 4,
            MsgType::WeightSync => 5,
            MsgType::Heartbeat => 6,
            MsgType::Disconnect => 7,
            MsgType::Error => 8,
            MsgType::Auth => 9,
        }
    }

    /// The type for a wire code, if it is one.
    pub fn from_u8(code: u8) -> Option<MsgType> {
        MsgType::ALL.into_iter().find(|t| *t as u8 == code)
    }

    /// Whether this is a data type (ForwardData, BackwardData, HebbianData, WeightSync),
    /// carried for the application, rather than a control type the session consumes.
    pub fn is_data(self) -> bool {
        self.required_capability().is_some()
    }

    /// The capability a peer must have agreed to for this type, if any (data types only).
    pub fn required_capability(self) -> Option<u32> {
        use super::capabilities::*;
        match self {
            MsgType::ForwardData => Some(FORWARD_PROPAGATION),
            MsgType::BackwardData => Some(BACKPROPAGATION),
            MsgType::HebbianData => Some(HEBBIAN_LEARNING),
            MsgType::WeightSync => Some(WEIGHT_SYNC),
            _ => None,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    static HEARTBEAT_HEADER: [u8; 22] = [
        b'N', b'N', b'P', 0, 1, 0x20, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 7, 0xde, 0xad, 0xbe, 0xef,
    ];

    #[test]
    fn test_deconstruct() {
        let h = Header::ref_from_buf(&HEARTBEAT_HEADER).unwrap();
        assert_eq!(h.validate(DEFAULT_MAX_PAYLOAD).unwrap(), MsgType::Heartbeat);
        assert_eq!(h.payload_len(), 10);
        assert_eq!(h.sequence(), 7);
        assert_eq!(h.checksum(), 0xdead_beef);
    }

    #[test]
    fn test_index_is_the_position_in_all() {
        for (i, t) in MsgType::ALL.into_iter().enumerate() {
            assert_eq!(t.index(), i, "{t:?}");
        }
    }

    #[test]
    fn test_construct() {
        let h = Header::new(MsgType::Heartbeat, 10, 7, 0xdead_beef);
        assert_eq!(h.as_bytes(), &HEARTBEAT_HEADER);
    }

    #[test]
    fn test_set_sequence_in_place() {
        let mut b = HEARTBEAT_HEADER.to_vec();
        b.extend([0xaa; 10]);
        Header::mut_from_buf(&mut b)
            .unwrap()
            .set_sequence(0x0102_0304_0506_0708);
        assert_eq!(&b[10..18], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[..10], &HEARTBEAT_HEADER[..10]);
        assert_eq!(
            &b[18..],
            &[&HEARTBEAT_HEADER[18..], &[0xaa; 10][..]].concat()[..]
        );
        assert!(Header::mut_from_buf(&mut b[..21]).is_none());
    }

    #[test]
    fn test_parse_short() {
        assert!(Header::ref_from_buf(&HEARTBEAT_HEADER[..21]).is_none());
    }

    #[test]
    fn test_parse_bad_fields() {
        let mut b = HEARTBEAT_HEADER;
        b[0] = b'X';
        let h = Header::ref_from_buf(&b).unwrap();
        assert!(matches!(
            h.validate(1 << 20),
            Err(ProtocolError::BadMagic { .. })
        ));
        let mut b = HEARTBEAT_HEADER;
        b[4] = 2;
        let h = Header::ref_from_buf(&b).unwrap();
        assert!(matches!(
            h.validate(1 << 20),
            Err(ProtocolError::UnsupportedVersion { version: 2 })
        ));
        let mut b = HEARTBEAT_HEADER;
        b[5] = 0x30;
        let h = Header::ref_from_buf(&b).unwrap();
        assert!(matches!(
            h.validate(1 << 20),
            Err(ProtocolError::UnknownMessageType { msg_type: 0x30 })
        ));
        let mut b = HEARTBEAT_HEADER;
        b[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
        let h = Header::ref_from_buf(&b).unwrap();
        assert!(matches!(
            h.validate(DEFAULT_MAX_PAYLOAD),
            Err(ProtocolError::FrameTooLarge {
                length: u32::MAX,
                ..
            })
        ));
        let mut b = HEARTBEAT_HEADER;
        b[9] = 11;
        let h = Header::ref_from_buf(&b).unwrap();
        assert!(matches!(
            h.validate(DEFAULT_MAX_PAYLOAD),
            Err(ProtocolError::UnalignedFrameLength { length: 11 })
        ));
    }

    #[test]
    fn every_type_code_round_trips() {
        for t in MsgType::ALL {
            assert_eq!(MsgType::from_u8(t as u8), Some(t));
        }
        assert_eq!(MsgType::from_u8(0), None);
    }
}
