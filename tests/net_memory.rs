//! Memory follows bytes received, not bytes announced: a header that announces a huge frame
//! costs the server next to nothing until the bytes arrive, and a healthy client is served
//! meanwhile. Alone in its test binary, so that the resident memory it measures is its own.

mod common;

use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::memory::resident_bytes;
use nnp::net::{Engine, EngineConfig, EngineHandle, NetEvent, Receiver};
use nnp::wire::{capabilities, encode_frame, Hello, Message, MsgType, HEADER_LEN};

fn frame(message: &Message<'_>, sequence: u64) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(message, sequence, &mut out).unwrap();
    out
}

fn hello() -> Message<'static> {
    Message::Handshake(Hello {
        node_id: 7,
        min_version: 1,
        max_version: 1,
        capabilities: capabilities::ALL,
        layer_sizes: Cow::Owned(vec![8]),
        name: Cow::Borrowed("raw"),
    })
}

/// A 22-byte header of `msg_type` announcing `payload` bytes, with sequence `sequence`.
fn announcing(msg_type: MsgType, payload: u32, sequence: u64) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(b"NNP\0");
    header[4] = 1;
    header[5] = msg_type as u8;
    header[6..10].copy_from_slice(&payload.to_be_bytes());
    header[10..18].copy_from_slice(&sequence.to_be_bytes());
    header
}

/// An echo server: every data frame goes back to its sender.
fn echo(handle: EngineHandle, rx: Receiver) {
    for event in rx {
        if let NetEvent::Frame(f) = event {
            let conn = f.conn();
            let _ = handle.relay(conn, f, Duration::from_secs(5));
        }
    }
}

/// A client engine connected to the server, made before memory is measured.
struct Healthy {
    _engine: Engine,
    handle: EngineHandle,
    rx: Receiver,
    conn: nnp::net::ConnId,
}

impl Healthy {
    fn connect(addr: SocketAddr) -> Healthy {
        let (engine, handle, rx) = Engine::start(EngineConfig::default()).unwrap();
        let conn = handle.connect(addr).unwrap();
        Healthy {
            _engine: engine,
            handle,
            rx,
            conn,
        }
    }
}

/// `rounds` ForwardData round trips; panics if one is lost.
fn healthy_round_trips(client: &mut Healthy, rounds: usize) {
    let Healthy {
        handle, rx, conn, ..
    } = client;
    let conn = *conn;
    for i in 0..rounds {
        let data = [i as f32; 16];
        let msg = Message::ForwardData {
            layer_id: 0,
            data: Cow::Borrowed(&data),
        };
        handle.send(conn, &msg, Duration::from_secs(5)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Some(NetEvent::Frame(f)) => {
                    let Message::ForwardData { data: got, .. } = f.message().unwrap() else {
                        panic!("an echo of ForwardData");
                    };
                    assert_eq!(&got[..], &data[..], "round {i}");
                    break;
                }
                Some(_) => continue,
                None => panic!("round {i}: no echo within 10 s"),
            }
        }
    }
}

#[test]
fn huge_announcements_cost_memory_only_as_their_bytes_arrive() {
    let config = EngineConfig::default().max_payload(17 << 20);
    let (_server, handle, rx) = Engine::start(config).unwrap();
    let addr = handle.listen("127.0.0.1:0").unwrap();
    let echo_handle = handle.clone();
    std::thread::spawn(move || echo(echo_handle, rx));
    let mut client = Healthy::connect(addr);
    healthy_round_trips(&mut client, 10); // warm: pools, threads
    let before = resident_bytes();

    // 200 connections announce a 16 MiB - 2 Handshake before any handshake: each is refused
    // with FRAME_TOO_LARGE at its header, while a healthy client is served.
    let hostile = std::thread::spawn(move || {
        let mut refused = 0;
        let mut streams = Vec::new();
        for _ in 0..200 {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&announcing(MsgType::Handshake, (16 << 20) - 2, 0))
                .unwrap();
            streams.push(s);
        }
        for mut s in streams {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut reply = Vec::new();
            let _ = s.read_to_end(&mut reply);
            // An Error frame (type 0xFF) with code 4 (FRAME_TOO_LARGE) comes before the close.
            if reply.len() > HEADER_LEN + 2
                && reply[5] == MsgType::Error as u8
                && reply[HEADER_LEN..HEADER_LEN + 2] == 4u16.to_le_bytes()
            {
                refused += 1;
            }
        }
        refused
    });
    healthy_round_trips(&mut client, 200);
    assert_eq!(hostile.join().unwrap(), 200, "every announcement refused");
    let after_refusals = resident_bytes();
    eprintln!(
        "resident: {} MB before, +{} KB after 200 refused announcements",
        before >> 20,
        (after_refusals.saturating_sub(before)) >> 10
    );
    assert!(
        after_refusals < before + (20 << 20),
        "200 refused announcements raised resident memory by {} MB",
        (after_refusals - before) >> 20
    );

    // 50 established peers each announce a 16 MiB WeightSync (less 2 bytes: a frame is a
    // multiple of 4 long) and send 1 KiB of it: the
    // server holds their partial frames, committing memory for the bytes, not the length.
    let mut partial = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&frame(&hello(), 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut ack = [0u8; HEADER_LEN];
        s.read_exact(&mut ack).unwrap();
        assert_eq!(ack[5], MsgType::HandshakeAck as u8);
        s.write_all(&announcing(MsgType::WeightSync, (16 << 20) - 2, 1))
            .unwrap();
        s.write_all(&[0u8; 1024]).unwrap();
        partial.push(s);
    }
    healthy_round_trips(&mut client, 100);
    let after_partials = resident_bytes();
    eprintln!(
        "resident: +{} KB after 50 partial 16 MiB frames",
        (after_partials.saturating_sub(after_refusals)) >> 10
    );
    assert!(
        after_partials < after_refusals + (20 << 20),
        "50 announced 16 MiB frames raised resident memory by {} MB",
        (after_partials - after_refusals) >> 20
    );
    drop(partial);
}
