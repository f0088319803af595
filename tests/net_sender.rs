//! The batching `Sender`: a long stream batched in order with every byte intact (and a second
//! sender on the same connection), and its credit (the room it reserves in the send queue): refusals after a
//! close or a shutdown, the engine's limits, room left for other senders, frames over the
//! batching limit sent alone, types not agreed, a closed connection.

mod common;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::net::{config, forward, start, stream_frame};
use nnp::net::{
    ConnId, Deadline, Engine, EngineConfig, EngineHandle, NetError, NetEvent, Receiver, Sender,
};
use nnp::wire::{capabilities, encode_frame, Message, ProtocolError};

#[test]
fn a_sender_batches_frames_in_order_with_every_byte_intact() {
    const FRAMES: usize = 60_000;
    let (_server, _handle, mut rx, addr) = start(config("server"));
    let (_client, client, _crx) = Engine::start(config("client")).unwrap();
    let conn = client.connect(addr).unwrap();
    let producer = thread::spawn(move || {
        let mut sender = client.sender(conn).unwrap();
        let big = vec![3.0f32; 8 * 1024]; // 32 KiB: not batched, goes alone, in order
        for i in 0..FRAMES {
            let (layer_id, data) = stream_frame(i);
            let msg = Message::ForwardData {
                layer_id,
                data: Cow::Borrowed(&data),
            };
            sender.send(&msg, Duration::from_secs(10)).unwrap();
            if i % 10_000 == 5_000 {
                let msg = Message::BackwardData {
                    layer_id: 7,
                    data: Cow::Borrowed(&big),
                };
                sender.send(&msg, Duration::from_secs(10)).unwrap();
            }
            if i % 997 == 0 {
                sender.flush().unwrap();
            }
        }
        // Held frames leave at the flush: flush before sending by other means.
        sender.flush().unwrap();
        // A second sender on the same connection takes up where the first stopped, and a
        // dropped sender hands over what it holds.
        drop(sender);
        let mut tail = client.sender(conn).unwrap();
        for (layer_id, data) in (FRAMES..FRAMES + 100).map(stream_frame) {
            let msg = Message::ForwardData {
                layer_id,
                data: Cow::Borrowed(&data),
            };
            tail.send(&msg, Duration::from_secs(10)).unwrap();
        }
        drop(tail);
        client
    });
    let mut next = 0;
    let mut bigs = 0;
    let mut last_seq = None;
    while next < FRAMES + 100 {
        let event = rx.recv_timeout(Duration::from_secs(20));
        let event = event.unwrap_or_else(|| panic!("stream stalled at frame {next}"));
        {
            let NetEvent::Frame(frame) = event else {
                continue;
            };
            let seq = frame.sequence();
            assert!(
                last_seq.is_none_or(|l| seq == l + 1),
                "sequence {seq} after {last_seq:?}"
            );
            last_seq = Some(seq);
            match frame.message().unwrap() {
                Message::ForwardData { layer_id, data } => {
                    let (want_layer, want) = stream_frame(next);
                    assert_eq!(layer_id, want_layer, "frame {next}");
                    assert_eq!(&data[..], &want[..], "frame {next}");
                    let mut encoded = Vec::new();
                    let msg = Message::ForwardData {
                        layer_id,
                        data: Cow::Borrowed(&want),
                    };
                    encode_frame(&msg, seq, &mut encoded).unwrap();
                    assert_eq!(frame.bytes(), &encoded[..], "every byte of frame {next}");
                    next += 1;
                }
                Message::BackwardData { layer_id: 7, data } => {
                    assert_eq!(next % 10_000, 5_001, "the large frame keeps its place");
                    assert!(data.iter().all(|&v| v == 3.0));
                    bigs += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(bigs, 6);
    let client = producer.join().unwrap();
    assert_eq!(client.peer(conn).unwrap().queued_bytes, 0);
}

/// A server and a client engine, the client connected and holding a [`Sender`] on the
/// connection: the setup of the tests of a sender's credit.
struct SenderCase {
    _server: (Engine, EngineHandle),
    addr: SocketAddr,
    /// The server's events.
    rx: Receiver,
    client_engine: Engine,
    client: EngineHandle,
    /// The client's events.
    crx: Receiver,
    conn: ConnId,
    sender: Sender,
}

fn sender_case(server: EngineConfig, client: EngineConfig) -> SenderCase {
    let (server_engine, server_handle, rx, addr) = start(server);
    let (client_engine, client, crx) = Engine::start(client).unwrap();
    let conn = client.connect(addr).unwrap();
    let sender = client.sender(conn).unwrap();
    SenderCase {
        _server: (server_engine, server_handle),
        addr,
        rx,
        client_engine,
        client,
        crx,
        conn,
        sender,
    }
}

/// A two-value ForwardData on layer 1: the small frame a sender batches.
fn small_frame() -> Message<'static> {
    Message::ForwardData {
        layer_id: 1,
        data: Cow::Borrowed(&[1.0, 2.0]),
    }
}

#[test]
fn a_sender_within_its_credit_still_refuses_after_a_close_or_a_shutdown() {
    let mut c = sender_case(config("server"), config("client"));
    let msg = small_frame();
    // The first frame opens a block and reserves the rest of it.
    c.sender.send(&msg, Deadline::Now).unwrap();
    c.client
        .close(c.conn, nnp::wire::DisconnectReason::NORMAL, "bye");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !matches!(
        c.crx.recv_timeout(Duration::from_millis(50)),
        Some(NetEvent::Disconnected { .. })
    ) {
        assert!(Instant::now() < deadline, "the close was never seen");
    }
    assert!(matches!(
        c.sender.send(&msg, Deadline::Now),
        Err(NetError::Closed(_))
    ));

    let conn = c.client.connect(c.addr).unwrap();
    let mut sender = c.client.sender(conn).unwrap();
    sender.send(&msg, Deadline::Now).unwrap();
    c.client_engine.shutdown();
    // The shutdown closed the connection too; either is a refusal the caller sees at once.
    let refused = sender.send(&msg, Deadline::Now);
    assert!(
        matches!(refused, Err(NetError::Shutdown | NetError::Closed(_))),
        "{refused:?}"
    );
}

#[test]
fn a_sender_keeps_its_limits_within_its_credit() {
    let mut client_config = config("client");
    client_config.session.max_payload = 1024;
    let mut c = sender_case(config("server"), client_config);
    c.sender.send(&small_frame(), Deadline::Now).unwrap();
    // Over the engine's max_payload: refused, not batched.
    let big = vec![0.5f32; 512];
    assert!(matches!(
        c.sender.send(&forward(1, &big), Deadline::Now),
        Err(NetError::Protocol(ProtocolError::FrameTooLarge { .. }))
    ));
    assert_eq!(c.sender.buffered_frames(), 1);
    // Dropped without a flush: its frame leaves and its credit is given back.
    drop(c.sender);
    c.client.wait_sent(c.conn, Duration::from_secs(5)).unwrap();
    assert_eq!(c.client.peer(c.conn).unwrap().queued_bytes, 0);
}

#[test]
fn a_senders_reserved_room_leaves_others_theirs() {
    let mut client_config = config("client");
    client_config.limits.send_queue_bytes = 100 * 1024;
    let mut c = sender_case(config("server"), client_config);
    c.sender.send(&small_frame(), Deadline::Now).unwrap();
    let held = c.client.peer(c.conn).unwrap().queued_bytes;
    assert!(
        held <= 100 * 1024 / 8 + 64,
        "a c.sender holding one frame reserved {held} B"
    );
    // Another thread's 40 KB frame still finds room beside it.
    let values = vec![0.5f32; 10_000];
    c.client
        .send(c.conn, &forward(2, &values), Deadline::Now)
        .unwrap();
    c.sender.flush().unwrap();
    c.client.wait_sent(c.conn, Duration::from_secs(5)).unwrap();
}

#[test]
fn a_sender_sends_a_frame_over_the_batching_limit_alone() {
    let mut c = sender_case(config("server"), config("client"));
    c.sender.send(&small_frame(), Deadline::Now).unwrap();
    c.sender.send(&small_frame(), Deadline::Now).unwrap();
    let values = vec![0.25f32; (nnp::net::SENDER_BATCH_FRAME_MAX + 4096) / 4];
    c.sender.send(&forward(2, &values), Deadline::Now).unwrap();
    // The two held frames were handed over before it, and it was not held.
    assert_eq!(c.sender.buffered_frames(), 0);
    c.sender.send(&small_frame(), Deadline::Now).unwrap();
    assert_eq!(c.sender.buffered_frames(), 1);
    c.sender.flush().unwrap();
    assert_eq!(next_layers(&mut c.rx, 4), [1, 1, 2, 1]);
}

/// The layer ids of the next `n` ForwardData frames `rx` delivers.
fn next_layers(rx: &mut Receiver, n: usize) -> Vec<u16> {
    let mut layers = Vec::new();
    while layers.len() < n {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Some(NetEvent::Frame(f)) => match f.message().unwrap() {
                Message::ForwardData { layer_id, .. } => layers.push(layer_id),
                other => panic!("{other:?}"),
            },
            Some(NetEvent::Connected { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    layers
}

#[test]
fn a_sender_refuses_a_type_not_agreed_in_the_middle_of_a_block() {
    // The server does not take Hebbian data, so the agreed set lacks it.
    let mut server_config = config("server");
    server_config.session.capabilities = capabilities::ALL & !capabilities::HEBBIAN_LEARNING;
    let mut c = sender_case(server_config, config("client"));
    // The first frame opens a block (and reserves the rest of it); the next are taken into it.
    c.sender.send(&small_frame(), Deadline::Now).unwrap();
    c.sender.send(&small_frame(), Deadline::Now).unwrap();
    let hebbian = Message::HebbianData {
        layer_id: 1,
        learning_rate: 0.1,
        rows: 1,
        cols: 2,
        correlations: Cow::Borrowed(&[0.5, 0.5]),
    };
    assert!(matches!(
        c.sender.send(&hebbian, Deadline::Now),
        Err(NetError::Protocol(
            ProtocolError::CapabilityNotAgreed { .. }
        ))
    ));
    c.sender.send(&small_frame(), Deadline::Now).unwrap();
    assert_eq!(c.sender.buffered_frames(), 3);
    c.sender.flush().unwrap();
    c.client.wait_sent(c.conn, Duration::from_secs(5)).unwrap();
    assert_eq!(next_layers(&mut c.rx, 3), [1, 1, 1]);
}

#[test]
fn a_sender_on_a_closed_connection_says_so() {
    let (_server, _handle, mut rx, addr) = start(config("server"));
    let (_client, client, _crx) = Engine::start(config("client")).unwrap();
    let conn = client.connect(addr).unwrap();
    let mut sender = client.sender(conn).unwrap();
    let msg = Message::ForwardData {
        layer_id: 1,
        data: Cow::Borrowed(&[1.0, 2.0]),
    };
    sender.send(&msg, Deadline::Now).unwrap();
    sender.flush().unwrap();
    client.close(conn, nnp::wire::DisconnectReason::NORMAL, "bye");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match sender.send(&msg, Deadline::Now) {
            Err(NetError::Closed(_)) => break,
            Ok(()) => sender.flush().unwrap_or(()),
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "the close was never seen");
        thread::sleep(Duration::from_millis(5));
    }
    assert!(matches!(
        client.sender(ConnId(9999)),
        Err(NetError::UnknownConnection(_))
    ));
    let mut frames = 0;
    while let Some(event) = rx.recv_timeout(Duration::from_secs(5)) {
        match event {
            NetEvent::Frame(_) => frames += 1,
            NetEvent::Disconnected { .. } => break,
            _ => {}
        }
    }
    assert!(frames >= 1);
}
