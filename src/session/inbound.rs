//! Framing inside the session: the bytes read from a peer become whole, checked frames.
//!
//! The I/O layer hands [`Session::read`] the bytes it has read, from the start of the first
//! frame it has not yet had back; the session checks each whole frame (header, length cap,
//! checksum), applies control frames itself and reports where each data frame lies. The
//! checksum of an unfinished frame is carried between calls, so a large frame arriving in
//! pieces is checked as its bytes come, not once at the end, and a corrupt prefix is found
//! before the rest arrives.
//!
//! Memory follows what the peer has earned: before the handshake completes, a frame may
//! announce at most [`SessionConfig::max_handshake_payload`] bytes (a larger announcement
//! is refused with FRAME_TOO_LARGE as soon as its header arrives); after it,
//! [`SessionConfig::max_payload`].

use std::time::Instant;

use super::{Received, Session, State, TypeTally};
use crate::wire::{
    check_frame_resumed, check_payload, parse_payload, FrameCheck, Header, MsgType, ProtocolError,
    HEADER_LEN,
};

/// Which of the receiver's queues a data frame travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Small frames, delivered in batches, overtaking bulk.
    Small,
    /// Weight syncs, delivered one by one behind the small frames.
    Bulk,
}

/// A data frame found by [`Session::read`]: where it lies in the bytes given, and its type.
/// Its payload has been checked ([`crate::wire::check_payload`]) and may be parsed in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFrame {
    /// Offset of the frame's header in the bytes given to [`Session::read`].
    pub start: usize,
    /// The frame's length, header included.
    pub len: usize,
    /// Its type (a data type).
    pub msg_type: MsgType,
}

impl DataFrame {
    /// The lane the frame travels in.
    pub fn lane(&self) -> Lane {
        if self.msg_type == MsgType::WeightSync {
            Lane::Bulk
        } else {
            Lane::Small
        }
    }
}

/// What [`Session::read`] hands the application, in the order the frames came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A data frame.
    Data(DataFrame),
    /// The peer refused one of our data frames (an Error APPLICATION); the session stays open.
    Refused {
        /// The refused frame's sequence number, if the peer's text names it.
        sequence: Option<u64>,
        /// Why, in the peer's words.
        reason: String,
    },
}

/// How far [`Session::read`] got through the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadProgress {
    /// Bytes at the front that were whole frames: the next call starts after them.
    pub consumed: usize,
    /// Whole frames taken (data and control).
    pub frames: u64,
    /// The same frames by type, with their bytes.
    pub by_type: TypeTally,
    /// The bytes the unfinished frame at `consumed` needs in all, as far as is known: its
    /// whole length (checked against the cap) once its header has arrived, the header's
    /// length before. 0 when the session closed.
    pub needed: usize,
}

impl Session {
    /// The largest payload a frame may announce now.
    pub fn max_payload_now(&self) -> u32 {
        match self.state {
            State::Established => self.config.max_payload,
            _ => self
                .config
                .max_handshake_payload
                .min(self.config.max_payload),
        }
    }

    /// Takes in `bytes` received at `now`, which start at the first frame not yet consumed
    /// (the bytes after the previous call's `consumed`, with whatever arrived since): checks
    /// every whole frame, applies the control frames, and hands each data frame and each
    /// refusal from the peer to `on_frame`, in order. Stops at an unfinished frame, or when the session closes: on a
    /// protocol error the session queues its Error frame and closes (see
    /// [`Session::is_closed`]; the error comes out of [`Session::poll_event`]).
    pub fn read(
        &mut self,
        now: Instant,
        bytes: &[u8],
        mut on_frame: impl FnMut(Inbound),
    ) -> ReadProgress {
        let mut progress = ReadProgress::default();
        while !self.is_closed() {
            let buf = &bytes[progress.consumed..];
            let max = self.max_payload_now();
            match check_frame_resumed(buf, max, &mut self.rx_checksum) {
                Ok(FrameCheck::Complete { len, msg_type }) => {
                    let frame = &buf[..len];
                    match self.take_frame(now, frame, msg_type) {
                        Ok(Received::Data) => on_frame(Inbound::Data(DataFrame {
                            start: progress.consumed,
                            len,
                            msg_type,
                        })),
                        Ok(Received::Control) => {}
                        Ok(Received::Refused { sequence, reason }) => {
                            on_frame(Inbound::Refused { sequence, reason })
                        }
                        Err(e) => {
                            self.abort(e);
                            break;
                        }
                    }
                    progress.consumed += len;
                    progress.frames += 1;
                    progress.by_type.add(msg_type, 1, len as u64);
                }
                Ok(FrameCheck::Incomplete { needed }) => {
                    progress.needed = needed;
                    break;
                }
                Err(e) => {
                    self.abort(e);
                    break;
                }
            }
        }
        progress
    }

    /// Applies one whole, checksummed frame: a data frame is checked in place and needs
    /// only its type; a control frame is parsed and handled.
    fn take_frame(
        &mut self,
        now: Instant,
        frame: &[u8],
        msg_type: MsgType,
    ) -> Result<Received, ProtocolError> {
        let header = Header::ref_from_buf(frame).expect("a checked frame has a header");
        let (sequence, payload) = (header.sequence(), &frame[HEADER_LEN..]);
        if msg_type.is_data() {
            check_payload(msg_type, payload)?;
            self.handle_data_frame(now, sequence, msg_type)
        } else {
            let message = parse_payload(msg_type, payload)?;
            self.handle_frame(now, sequence, &message)
        }
    }
}
