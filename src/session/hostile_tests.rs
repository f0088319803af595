//! Hostile and clumsy peers, fed to a session as bytes with a fake clock: no sockets, no
//! sleeps. Each case holds what the I/O layer does: bytes arrive in any pieces, the session
//! reads whole frames from the front, and what it did not consume waits for more.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::wire::capabilities::ALL;
use crate::wire::{encode_frame, ErrorCode, MsgType, HEADER_LEN};

fn config(name: &str) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        name: name.into(),
        capabilities: ALL,
        layer_sizes: vec![4, 3, 2],
        max_payload: 1 << 20,
        ..SessionConfig::default()
    })
}

/// One side's receive path: the bytes read and not yet consumed, the data frames found, and
/// the peer's refusals.
struct Inbox {
    session: Session,
    pending: Vec<u8>,
    data: Vec<(u64, Vec<u8>)>,
    refusals: Vec<(Option<u64>, String)>,
}

impl Inbox {
    fn new(role: Role, now: Instant) -> Inbox {
        Inbox {
            session: Session::new(role, config("peer"), now),
            pending: Vec::new(),
            data: Vec::new(),
            refusals: Vec::new(),
        }
    }

    /// Appends `bytes` as one read and lets the session take what it can; returns the
    /// progress.
    fn receive(&mut self, now: Instant, bytes: &[u8]) -> ReadProgress {
        self.pending.extend_from_slice(bytes);
        let pending = &self.pending;
        let (data, refusals) = (&mut self.data, &mut self.refusals);
        let progress = self.session.read(now, pending, |inbound| match inbound {
            Inbound::Data(frame) => {
                let bytes = &pending[frame.start..frame.start + frame.len];
                let header = crate::wire::Header::ref_from_buf(bytes).unwrap();
                data.push((header.sequence(), bytes.to_vec()));
            }
            Inbound::Refused { sequence, reason } => refusals.push((sequence, reason)),
        });
        self.pending.drain(..progress.consumed);
        progress
    }

    /// The control frames the session wants sent, as bytes.
    fn transmit(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some((sequence, message)) = self.session.poll_transmit() {
            encode_frame(&message, sequence, &mut out).unwrap();
        }
        out
    }

    /// The Error frame's code among what the session wants sent, if any.
    fn error_sent(&mut self) -> Option<ErrorCode> {
        let mut code = None;
        while let Some((_, message)) = self.session.poll_transmit() {
            if let Message::Error { code: c, .. } = message {
                code = Some(c);
            }
        }
        code
    }
}

/// A client and a server inbox with the handshake done through bytes.
fn established(now: Instant) -> (Inbox, Inbox) {
    let mut client = Inbox::new(Role::Initiator, now);
    let mut server = Inbox::new(Role::Acceptor, now);
    let hello = client.transmit();
    server.receive(now, &hello);
    let ack = server.transmit();
    client.receive(now, &ack);
    assert!(client.session.is_established() && server.session.is_established());
    (client, server)
}

fn frame(message: &Message<'_>, sequence: u64) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(message, sequence, &mut out).unwrap();
    out
}

fn forward(values: &[f32]) -> Message<'_> {
    Message::ForwardData {
        layer_id: 1,
        data: Cow::Borrowed(values),
    }
}

fn weight_sync(values: &[f32]) -> Message<'_> {
    Message::WeightSync(crate::wire::WeightSync {
        layer_id: 0,
        mode: crate::wire::SyncMode::Replace,
        rows: 1,
        cols: values.len() as u32 - 1,
        offset: 0,
        sample_count: 1,
        values: Cow::Borrowed(values),
    })
}

#[test]
fn a_handshake_and_data_fed_one_byte_at_a_time_arrive_whole_and_in_order() {
    let now = Instant::now();
    let mut client = Inbox::new(Role::Initiator, now);
    let mut server = Inbox::new(Role::Acceptor, now);
    let mut bytes = client.transmit();
    // The handshake took sequence 0; data follows at 1, 2.
    let first = frame(&forward(&[1.0, 2.0]), 1);
    let second = frame(&forward(&[3.0; 50]), 2);
    bytes.extend(&first);
    bytes.extend(&second);
    for byte in &bytes {
        server.receive(now, std::slice::from_ref(byte));
    }
    assert!(server.session.is_established());
    assert!(server.pending.is_empty(), "every byte consumed");
    assert_eq!(server.data, vec![(1, first), (2, second)]);
}

#[test]
fn a_read_reports_where_each_data_frame_lies_and_its_lane() {
    let now = Instant::now();
    let (_, mut server) = established(now);
    let small = frame(&forward(&[0.5; 3]), 1);
    let bulk = frame(&weight_sync(&[0.25; 10]), 2);
    let bytes = [&small[..], &bulk[..], &small[..7]].concat();
    let mut found = Vec::new();
    let progress = server.session.read(now, &bytes, |inbound| {
        if let Inbound::Data(f) = inbound {
            found.push((f.start, f.len, f.lane()))
        }
    });
    assert_eq!(
        found,
        vec![
            (0, small.len(), Lane::Small),
            (small.len(), bulk.len(), Lane::Bulk)
        ]
    );
    assert_eq!(progress.consumed, small.len() + bulk.len());
    assert_eq!(progress.frames, 2);
    assert_eq!(
        progress.needed, HEADER_LEN,
        "the tail's header is not complete"
    );
}

#[test]
fn garbage_gets_an_error_frame_and_a_close() {
    let now = Instant::now();
    let mut server = Inbox::new(Role::Acceptor, now);
    server.receive(now, b"GET / HTTP/1.1\r\nHost: example\r\n\r\n");
    assert!(server.session.is_closed());
    assert_eq!(server.error_sent(), Some(ErrorCode::BAD_MAGIC));
}

#[test]
fn a_large_announcement_before_the_handshake_is_refused_at_its_header() {
    let now = Instant::now();
    let mut server = Inbox::new(Role::Acceptor, now);
    let mut hello = Inbox::new(Role::Initiator, now).transmit();
    // A Handshake header announcing 16 MiB - 2: refused as soon as the 22 bytes are in.
    hello[6..10].copy_from_slice(&((16u32 << 20) - 2).to_be_bytes());
    let progress = server.receive(now, &hello[..HEADER_LEN]);
    assert!(server.session.is_closed());
    assert_eq!(progress.needed, 0);
    assert_eq!(server.error_sent(), Some(ErrorCode::FRAME_TOO_LARGE));
    match server.session.poll_event() {
        Some(SessionEvent::Closed {
            error: Some(ProtocolError::FrameTooLarge { max, .. }),
            ..
        }) => assert_eq!(max, DEFAULT_MAX_HANDSHAKE_PAYLOAD),
        other => panic!("expected a FrameTooLarge close, got {other:?}"),
    }
}

#[test]
fn after_the_handshake_the_full_frame_cap_applies() {
    let now = Instant::now();
    let (_, mut server) = established(now);
    let big = frame(&weight_sync(&vec![1.0; 100_000]), 1);
    assert!(big.len() > DEFAULT_MAX_HANDSHAKE_PAYLOAD as usize);
    let progress = server.receive(now, &big[..HEADER_LEN]);
    assert!(!server.session.is_closed());
    assert_eq!(
        progress.needed,
        big.len(),
        "room for the whole frame is asked"
    );
    server.receive(now, &big[HEADER_LEN..]);
    assert_eq!(server.data.len(), 1);
    // Over the cap: refused at the header.
    let mut over = frame(&forward(&[1.0]), 2);
    over[6..10].copy_from_slice(&((1u32 << 20) + 4).to_be_bytes());
    server.receive(now, &over[..HEADER_LEN]);
    assert_eq!(server.error_sent(), Some(ErrorCode::FRAME_TOO_LARGE));
}

#[test]
fn a_bad_checksum_fed_in_pieces_is_found_and_earlier_frames_are_kept() {
    let now = Instant::now();
    let (_, mut server) = established(now);
    let good = frame(&forward(&[0.5]), 1);
    let mut bad = frame(&weight_sync(&vec![2.0; 50_000]), 2);
    bad[1000] ^= 0x10;
    let bytes = [&good[..], &bad[..]].concat();
    for piece in bytes.chunks(65_000) {
        server.receive(now, piece);
    }
    assert_eq!(server.data.len(), 1, "the good frame before it was taken");
    assert!(server.session.is_closed());
    assert_eq!(server.error_sent(), Some(ErrorCode::CHECKSUM_MISMATCH));
}

#[test]
fn a_data_frame_whose_fields_disagree_is_malformed() {
    let now = Instant::now();
    let (_, mut server) = established(now);
    let hebbian = Message::HebbianData {
        layer_id: 0,
        learning_rate: 0.5,
        rows: 2,
        cols: 2,
        correlations: Cow::Borrowed(&[1.0, 2.0, 3.0, 4.0]),
    };
    let mut bytes = frame(&hebbian, 1);
    // rows (frame offset 28, docs/PROTOCOL.md) says 3 for 4 values, with the checksum
    // recomputed, so only the layout check can catch it.
    bytes[28..32].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32fast::hash(&bytes[HEADER_LEN..]);
    bytes[18..22].copy_from_slice(&crc.to_be_bytes());
    server.receive(now, &bytes);
    assert!(server.data.is_empty());
    assert_eq!(server.error_sent(), Some(ErrorCode::MALFORMED_PAYLOAD));
}

#[test]
fn a_replayed_frame_is_a_sequence_error() {
    let now = Instant::now();
    let (_, mut server) = established(now);
    let f = frame(&forward(&[1.0]), 1);
    server.receive(now, &[&f[..], &f[..]].concat());
    assert_eq!(server.data.len(), 1);
    assert_eq!(server.error_sent(), Some(ErrorCode::SEQUENCE_ERROR));
}

#[test]
fn data_before_the_handshake_is_unexpected() {
    let now = Instant::now();
    let mut server = Inbox::new(Role::Acceptor, now);
    server.receive(now, &frame(&forward(&[1.0]), 0));
    assert!(server.data.is_empty());
    assert_eq!(server.error_sent(), Some(ErrorCode::UNEXPECTED_MESSAGE));
}

#[test]
fn a_peer_that_stalls_mid_handshake_is_timed_out() {
    let now = Instant::now();
    let mut server = Inbox::new(Role::Acceptor, now);
    let hello = Inbox::new(Role::Initiator, now).transmit();
    server.receive(now, &hello[..10]);
    let later = now + SessionConfig::default().handshake_timeout + Duration::from_millis(1);
    assert!(server.session.poll_timeout().is_some_and(|t| t <= later));
    server.session.handle_timeout(later);
    assert!(server.session.is_closed());
    assert_eq!(server.error_sent(), Some(ErrorCode::TIMEOUT));
}

#[test]
fn nothing_after_an_error_is_taken() {
    let now = Instant::now();
    let (_, mut server) = established(now);
    let mut bad = frame(&forward(&[1.0]), 1);
    bad[0] = b'X';
    let after = frame(&forward(&[2.0]), 2);
    let progress = server.receive(now, &[&bad[..], &after[..]].concat());
    assert_eq!(progress.consumed, 0);
    assert!(server.data.is_empty());
    let progress = server.receive(now, &after);
    assert_eq!(
        (progress.consumed, progress.frames),
        (0, 0),
        "a closed session reads nothing"
    );
}

#[test]
fn a_refusal_names_the_frame_and_both_sessions_carry_on() {
    let now = Instant::now();
    let (mut client, mut server) = established(now);
    server.receive(now, &frame(&forward(&[1.0]), 1));
    let refused = server.data[0].0;
    server
        .session
        .refuse(refused, "layer 1 takes 8 values, not 1");
    let refusal = server.transmit();
    assert!(!server.session.is_closed());
    client.receive(now, &refusal);
    assert!(
        !client.session.is_closed(),
        "a refusal does not end the session"
    );
    assert_eq!(
        client.refusals,
        [(Some(1), "layer 1 takes 8 values, not 1".to_string())]
    );
    // Data keeps flowing both ways after it.
    server.receive(now, &frame(&forward(&[2.0; 8]), 2));
    assert_eq!(server.data.len(), 2);
    assert!(client
        .session
        .next_send_sequence(MsgType::ForwardData)
        .is_ok());
}

#[test]
fn any_other_error_still_ends_the_session_and_a_refusal_before_the_handshake_is_not_sent() {
    let now = Instant::now();
    let (mut client, mut server) = established(now);
    let mut other = Vec::new();
    let error = Message::Error {
        code: ErrorCode::MALFORMED_PAYLOAD,
        message: Cow::Borrowed("bad"),
    };
    encode_frame(&error, 1, &mut other).unwrap();
    client.receive(now, &other);
    assert!(client.session.is_closed());
    let mut fresh = Inbox::new(Role::Acceptor, now);
    fresh.session.refuse(0, "no");
    assert!(!fresh.session.has_transmit());
    let _ = &mut server;
}

#[test]
fn a_refusal_keeps_its_place_among_the_data_frames_of_one_read() {
    let now = Instant::now();
    let (mut client, mut server) = established(now);
    server.receive(now, &frame(&forward(&[1.0]), 1));
    // The server sends a data frame (its sequence 1), its refusal (2), and another (3).
    assert_eq!(
        server.session.next_send_sequence(MsgType::ForwardData),
        Ok(1)
    );
    server.session.refuse(1, "no");
    let refusal = server.transmit();
    assert_eq!(
        server.session.next_send_sequence(MsgType::ForwardData),
        Ok(3)
    );
    let bytes = [
        &frame(&forward(&[2.0]), 1)[..],
        &refusal[..],
        &frame(&forward(&[3.0]), 3)[..],
    ]
    .concat();
    let mut order = Vec::new();
    client.session.read(now, &bytes, |inbound| {
        order.push(match inbound {
            Inbound::Data(f) => format!("data at {}", f.start),
            Inbound::Refused { sequence, .. } => format!("refused {sequence:?}"),
        })
    });
    let second = frame(&forward(&[2.0]), 1).len() + refusal.len();
    assert_eq!(
        order,
        [
            "data at 0".to_string(),
            "refused Some(1)".into(),
            format!("data at {second}")
        ]
    );
}
