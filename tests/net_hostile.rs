//! Hand-driven peers ([`common::raw_peer::RawPeer`]) against an engine, beside a healthy peer
//! that must stay served: a peer writing one byte at a time, and hostile bytes (garbage, a bad
//! checksum, payload fields that disagree, a corrupt piece that arrived before the rest of its
//! frame, an oversized length, a replayed sequence number), each answered with the right Error
//! frame and a close.

mod common;

use std::borrow::Cow;
use std::io::Write;
use std::thread;
use std::time::Duration;

use common::net::{config, echo_server, start, weight_sync};
use common::raw_peer::{healthy_while, RawPeer};
use nnp::wire::{ErrorCode, Message, MsgType, HEADER_LEN};

#[test]
fn a_peer_writing_one_byte_at_a_time_is_served() {
    let (_server, handle, rx, addr) = start(config("server"));
    let echo = echo_server(handle, rx, 20);
    let mut peer = RawPeer::connect(addr);
    peer.stream.set_nodelay(true).unwrap();
    let mut bytes = peer.frame(&RawPeer::hello());
    let data: Vec<f32> = (0..100).map(|i| i as f32).collect();
    for i in 0..20 {
        bytes.extend(peer.frame(&Message::ForwardData {
            layer_id: i,
            data: Cow::Borrowed(&data),
        }));
    }
    for b in bytes {
        peer.stream.write_all(&[b]).unwrap();
    }
    assert_eq!(peer.read_frame().unwrap().0, MsgType::HandshakeAck);
    for i in 0..20 {
        let (_, msg) = peer.read_frame().unwrap();
        assert_eq!(
            msg,
            Message::ForwardData {
                layer_id: i,
                data: Cow::Borrowed(&data)
            }
        );
    }
    assert!(echo.join().unwrap().is_empty());
}

/// Sends the healthy peer's two frames and the hostile bytes; `accepted` is how many of the
/// hostile frames are valid and get echoed before the bad one.
fn hostile_case(
    bytes_after_handshake: impl FnOnce(&mut RawPeer) -> Vec<u8>,
    expected: ErrorCode,
    accepted: usize,
) {
    hostile_case_in_pieces(|p| vec![bytes_after_handshake(p)], expected, accepted);
}

/// [`hostile_case`] with the hostile bytes written in pieces, 50 ms apart, so that the server
/// reads (and checks what it can of) each piece before the next arrives.
fn hostile_case_in_pieces(
    pieces_after_handshake: impl FnOnce(&mut RawPeer) -> Vec<Vec<u8>>,
    expected: ErrorCode,
    accepted: usize,
) {
    let (_server, handle, rx, addr) = start(config("server"));
    let echo = echo_server(handle.clone(), rx, 2 + accepted);
    healthy_while(addr, || {
        let mut bad = RawPeer::handshake(addr);
        bad.stream.set_nodelay(true).unwrap();
        for piece in pieces_after_handshake(&mut bad) {
            bad.stream.write_all(&piece).unwrap();
            thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(bad.error_then_close(), Some(expected));
    });
    let closed = echo.join().unwrap();
    assert!(closed.len() <= 1);
    assert!(handle.metrics().errors_by_code[expected.0 as usize] >= 1);
}

#[test]
fn garbage_gets_an_error_frame_and_a_close() {
    hostile_case(
        |_| b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ErrorCode::BAD_MAGIC,
        0,
    );
}

#[test]
fn a_bad_checksum_gets_an_error_frame_and_a_close() {
    hostile_case(
        |p| {
            let mut f = p.frame(&Message::ForwardData {
                layer_id: 0,
                data: Cow::Borrowed(&[1.0, 2.0]),
            });
            let last = f.len() - 1;
            f[last] ^= 0xff;
            f
        },
        ErrorCode::CHECKSUM_MISMATCH,
        0,
    );
}

#[test]
fn a_data_frame_whose_fields_disagree_gets_an_error_frame_and_a_close() {
    // The checksum is right and the header valid: only the payload check can refuse it.
    hostile_case(
        |p| {
            let good = p.frame(&Message::ForwardData {
                layer_id: 1,
                data: Cow::Borrowed(&[0.5]),
            });
            let mut bad = p.frame(&Message::HebbianData {
                layer_id: 1,
                learning_rate: 0.1,
                rows: 2,
                cols: 2,
                correlations: Cow::Borrowed(&[1.0, 2.0, 3.0, 4.0]),
            });
            // rows (after layer_id and learning_rate) from 2 to 3: 6 values promised, 4 sent.
            let rows_at = HEADER_LEN + 2 + 4;
            bad[rows_at..rows_at + 4].copy_from_slice(&3u32.to_le_bytes());
            let crc = crc32fast::hash(&bad[HEADER_LEN..]);
            bad[18..22].copy_from_slice(&crc.to_be_bytes());
            [good, bad].concat()
        },
        ErrorCode::MALFORMED_PAYLOAD,
        1,
    );
}

#[test]
fn a_bad_checksum_is_found_when_the_corrupt_bytes_arrived_before_the_rest_of_the_frame() {
    // The receiver checksums a frame's payload as it arrives: a flipped bit in the first piece
    // is hashed before the last piece is read, and must still fail the frame.
    let data: Vec<f32> = (0..100 * 1024).map(|i| i as f32).collect();
    hostile_case_in_pieces(
        |p| {
            let good = p.frame(&Message::ForwardData {
                layer_id: 1,
                data: Cow::Borrowed(&[0.5]),
            });
            let mut bad = p.frame(&weight_sync(&data));
            bad[1000] ^= 0x10;
            let (first, rest) = bad.split_at(200_000);
            let (second, third) = rest.split_at(100_000);
            vec![[&good[..], first].concat(), second.to_vec(), third.to_vec()]
        },
        ErrorCode::CHECKSUM_MISMATCH,
        1,
    );
}

#[test]
fn an_oversized_length_is_refused_before_reading_it() {
    hostile_case(
        |p| {
            let mut f = p.frame(&Message::ForwardData {
                layer_id: 0,
                data: Cow::Borrowed(&[1.0]),
            });
            f[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
            f
        },
        ErrorCode::FRAME_TOO_LARGE,
        0,
    );
}

#[test]
fn a_sequence_replay_is_refused() {
    hostile_case(
        |p| {
            let f = p.frame(&Message::ForwardData {
                layer_id: 0,
                data: Cow::Borrowed(&[1.0]),
            });
            [f.clone(), f].concat()
        },
        ErrorCode::SEQUENCE_ERROR,
        1,
    );
}
