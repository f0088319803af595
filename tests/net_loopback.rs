//! The transport engine over loopback: many clients, hostile peers, large frames, backpressure.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use nnp::net::{
    CloseCause, ConnId, Engine, EngineConfig, EngineHandle, NetError, NetEvent, Polled,
    ReceivedFrame, Receiver, Sender,
};
use nnp::session::SessionConfig;
use nnp::wire::fuzzing::same_message;
use nnp::wire::{
    capabilities, decode_frame, encode_frame, frame_len, ErrorCode, Hello, Message, MsgType,
    ProtocolError, SyncMode, WeightSync, HEADER_LEN,
};

fn config(name: &str) -> EngineConfig {
    EngineConfig {
        event_loops: 2,
        session: SessionConfig {
            node_id: 7,
            name: name.into(),
            layer_sizes: vec![8, 4],
            ..SessionConfig::default()
        },
        connect_timeout: Duration::from_secs(5),
        ..EngineConfig::default()
    }
}

fn start(cfg: EngineConfig) -> (Engine, EngineHandle, Receiver, SocketAddr) {
    let (engine, handle, receiver) = Engine::start(cfg).unwrap();
    let addr = handle.listen("127.0.0.1:0").unwrap();
    (engine, handle, receiver, addr)
}

/// Echoes every data frame back to its sender until `stop` frames were echoed or the engine
/// ends; returns the connections that closed and why.
fn echo_server(
    handle: EngineHandle,
    mut receiver: Receiver,
    stop: usize,
) -> thread::JoinHandle<Vec<(ConnId, CloseCause)>> {
    thread::spawn(move || {
        let mut echoed = 0;
        let mut closed = Vec::new();
        while echoed < stop {
            match receiver.recv_timeout(Duration::from_secs(20)) {
                Some(NetEvent::Frame(frame)) => {
                    let msg = frame.message().unwrap();
                    match handle.send(frame.conn(), &msg, Duration::from_secs(10)) {
                        // A hostile peer may be gone before its valid frames are echoed.
                        Ok(()) | Err(NetError::UnknownConnection(_) | NetError::Closed(_)) => {}
                        Err(e) => panic!("echo failed: {e}"),
                    }
                    echoed += 1;
                }
                Some(NetEvent::Disconnected { conn, cause }) => closed.push((conn, cause)),
                Some(NetEvent::Connected { .. }) => {}
                None => break,
            }
        }
        closed
    })
}

fn values(client: usize, i: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|k| (client * 1_000_003 + i * 131 + k) as f32 * 0.5)
        .collect()
}

#[test]
fn hundred_clients_exchange_thousands_of_frames_each() {
    const CLIENTS: usize = 100;
    const FRAMES: usize = 1000;
    let (_server, server_handle, server_rx, addr) = start(config("server"));
    let echo = echo_server(server_handle.clone(), server_rx, CLIENTS * FRAMES);

    let (_client, handle, mut rx) = Engine::start(config("clients")).unwrap();
    let conns: Vec<ConnId> = (0..CLIENTS)
        .map(|_| handle.connect(addr).unwrap())
        .collect();
    assert_eq!(server_handle.peers().len(), CLIENTS);

    let sender = {
        let handle = handle.clone();
        let conns = conns.clone();
        thread::spawn(move || {
            for i in 0..FRAMES {
                for (c, conn) in conns.iter().enumerate() {
                    let data = values(c, i, 1 + (i + c) % 40);
                    let msg = Message::ForwardData {
                        layer_id: c as u16,
                        data: Cow::Borrowed(&data),
                    };
                    handle.send(*conn, &msg, Duration::from_secs(10)).unwrap();
                }
            }
        })
    };
    let mut next = vec![0usize; CLIENTS];
    let mut received = 0;
    while received < CLIENTS * FRAMES {
        match rx
            .recv_timeout(Duration::from_secs(20))
            .expect("echo arrives")
        {
            NetEvent::Frame(frame) => {
                let c = conns.iter().position(|&x| x == frame.conn()).unwrap();
                let i = next[c];
                match frame.message().unwrap() {
                    Message::ForwardData { layer_id, data } => {
                        assert_eq!(layer_id as usize, c);
                        assert_eq!(
                            &*data,
                            &values(c, i, 1 + (i + c) % 40)[..],
                            "client {c} frame {i}"
                        );
                    }
                    other => panic!("unexpected {other:?}"),
                }
                next[c] += 1;
                received += 1;
            }
            NetEvent::Connected { .. } => {}
            NetEvent::Disconnected { conn, cause } => panic!("{conn} closed: {cause}"),
        }
    }
    sender.join().unwrap();
    assert!(next.iter().all(|&n| n == FRAMES));
    let closed = echo.join().unwrap();
    assert!(closed.is_empty(), "no connection failed: {closed:?}");
    let m = handle.metrics();
    assert_eq!(m.total_errors(), 0);
    assert!(m.traffic.frames_out >= (CLIENTS * FRAMES) as u64);
}

/// A hand-driven client speaking NNP over a blocking socket.
struct RawPeer {
    stream: TcpStream,
    seq: u64,
    buf: Vec<u8>,
}

impl RawPeer {
    fn connect(addr: SocketAddr) -> RawPeer {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        RawPeer {
            stream,
            seq: 0,
            buf: Vec::new(),
        }
    }

    fn frame(&mut self, msg: &Message<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(frame_len(msg).unwrap());
        encode_frame(msg, self.seq, &mut out).unwrap();
        self.seq += 1;
        out
    }

    fn send(&mut self, msg: &Message<'_>) {
        let bytes = self.frame(msg);
        self.stream.write_all(&bytes).unwrap();
    }

    fn hello() -> Message<'static> {
        Message::Handshake(Hello {
            node_id: 99,
            min_version: 1,
            max_version: 1,
            capabilities: capabilities::ALL,
            layer_sizes: Cow::Owned(vec![8]),
            name: Cow::Borrowed("raw"),
        })
    }

    /// Reads until one whole frame is there; returns its type and sequence and the message's
    /// debug text, or None when the stream ends.
    fn read_frame(&mut self) -> Option<(MsgType, Message<'static>)> {
        loop {
            if let Some((frame, used)) = decode_frame(&self.buf, u32::MAX).unwrap() {
                let msg = frame.message.into_owned();
                self.buf.drain(..used);
                if msg.msg_type() == MsgType::Heartbeat {
                    continue;
                }
                return Some((msg.msg_type(), msg));
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn handshake(addr: SocketAddr) -> RawPeer {
        let mut peer = RawPeer::connect(addr);
        peer.send(&RawPeer::hello());
        let (t, _) = peer.read_frame().unwrap();
        assert_eq!(t, MsgType::HandshakeAck);
        peer
    }

    /// Reads until the server closes; returns the Error frame's code if one came.
    fn error_then_close(&mut self) -> Option<ErrorCode> {
        let mut code = None;
        while let Some((_, msg)) = self.read_frame() {
            if let Message::Error { code: c, .. } = msg {
                code = Some(c);
            }
        }
        code
    }
}

/// Runs a healthy echo exchange on its own connection while `hostile` runs.
fn healthy_while(addr: SocketAddr, hostile: impl FnOnce()) {
    let mut good = RawPeer::handshake(addr);
    let data = [1.5f32, -2.0, 3.25];
    good.send(&Message::ForwardData {
        layer_id: 1,
        data: Cow::Borrowed(&data),
    });
    hostile();
    good.send(&Message::ForwardData {
        layer_id: 2,
        data: Cow::Borrowed(&data),
    });
    for layer in [1, 2] {
        let (_, msg) = good.read_frame().expect("the healthy peer is still served");
        assert_eq!(
            msg,
            Message::ForwardData {
                layer_id: layer,
                data: Cow::Borrowed(&data)
            }
        );
    }
}

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

fn weight_sync(values: &[f32]) -> Message<'_> {
    let cols = 1023u32;
    let rows = (values.len() as u32) / (cols + 1);
    Message::WeightSync(WeightSync {
        layer_id: 3,
        mode: SyncMode::Replace,
        rows,
        cols,
        offset: 0,
        sample_count: 1,
        values: Cow::Borrowed(values),
    })
}

#[test]
fn sixteen_mib_frames_cross_intact() {
    let mut cfg = config("big");
    cfg.max_payload = 17 << 20;
    let (_server, handle, rx, addr) = start(cfg.clone());
    let echo = echo_server(handle, rx, 3);
    let (_client, client, mut crx) = Engine::start(cfg).unwrap();
    let conn = client.connect(addr).unwrap();
    let n = (16 << 20) / 4;
    let values: Vec<f32> = (0..n).map(|i| (i as f32).sin()).collect();
    for _ in 0..3 {
        client
            .send(conn, &weight_sync(&values), Duration::from_secs(20))
            .unwrap();
    }
    let mut got = 0;
    while got < 3 {
        if let NetEvent::Frame(frame) = crx.recv_timeout(Duration::from_secs(30)).expect("echo") {
            let Message::WeightSync(ws) = frame.message().unwrap() else {
                panic!()
            };
            assert!(matches!(ws.values, Cow::Borrowed(_)), "decoded in place");
            assert_eq!(ws.values.len(), n);
            assert!(ws
                .values
                .iter()
                .zip(&values)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            got += 1;
        }
    }
    assert!(echo.join().unwrap().is_empty());
}

#[test]
fn a_peer_killed_mid_frame_is_closed_and_others_carry_on() {
    let (_server, handle, mut rx, addr) = start(config("server"));
    let h = handle.clone();
    let server = thread::spawn(move || {
        let mut causes = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while causes.is_empty() && Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Some(NetEvent::Frame(f)) => h
                    .send(f.conn(), &f.message().unwrap(), Duration::from_secs(5))
                    .unwrap(),
                Some(NetEvent::Disconnected { cause, .. }) => causes.push(cause),
                _ => {}
            }
        }
        // Keep echoing for the healthy peer's second frame.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Some(NetEvent::Frame(f)) = rx.recv_timeout(Duration::from_millis(50)) {
                h.send(f.conn(), &f.message().unwrap(), Duration::from_secs(5))
                    .unwrap();
            }
        }
        causes
    });
    healthy_while(addr, || {
        let mut victim = RawPeer::handshake(addr);
        let data = vec![0.25f32; 1000];
        let frame = victim.frame(&Message::ForwardData {
            layer_id: 0,
            data: Cow::Borrowed(&data),
        });
        victim.stream.write_all(&frame[..frame.len() / 2]).unwrap();
        drop(victim);
    });
    let causes = server.join().unwrap();
    assert_eq!(causes, vec![CloseCause::Eof]);
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

#[test]
fn a_slow_reader_gives_backpressure_and_bounded_memory() {
    let mut cfg = config("slow");
    cfg.rx_in_flight_limit = 1 << 20;
    cfg.event_ring_capacity = 64;
    let (_server, _server_handle, mut server_rx, addr) = start(cfg.clone());
    let mut ccfg = config("fast");
    ccfg.send_queue_limit = 1 << 20;
    let (_client, client, _crx) = Engine::start(ccfg).unwrap();
    let conn = client.connect(addr).unwrap();
    let data = vec![1.0f32; 16 * 1024];
    let msg = Message::ForwardData {
        layer_id: 0,
        data: Cow::Borrowed(&data),
    };
    let mut sent = 0usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        match client.try_send(conn, &msg) {
            Ok(()) => sent += 1,
            Err(NetError::WouldBlock { queued, limit }) => {
                // The queue is full only once the kernel buffers are, so it must stay full.
                thread::sleep(Duration::from_millis(200));
                match client.try_send(conn, &msg) {
                    Err(NetError::WouldBlock { .. }) => break (queued, limit),
                    Ok(()) => sent += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            Err(e) => panic!("{e}"),
        }
        assert!(
            Instant::now() < deadline,
            "backpressure never came after {sent} frames"
        );
    };
    assert!(
        refused.0 + 65 * 1024 > refused.1,
        "refused only when near the limit: {refused:?}"
    );
    // The server holds at most its in-flight budget plus one block per connection.
    assert!(
        _server_handle.pool().bytes_in_use() < (3 << 20),
        "server memory bounded: {} bytes in use",
        _server_handle.pool().bytes_in_use()
    );
    // Draining the server lets every frame through: nothing was dropped.
    let mut got = 0;
    while got < sent {
        match server_rx.recv_timeout(Duration::from_secs(10)) {
            Some(NetEvent::Frame(_)) => got += 1,
            Some(_) => {}
            None => panic!("only {got} of {sent} frames arrived"),
        }
    }
    assert_eq!(got, sent);
}

#[test]
fn small_frames_overtake_bulk_on_receipt_and_close_comes_last() {
    let (_server, _handle, mut rx, addr) = start(config("server"));
    let (_client, client, _crx) = Engine::start(config("client")).unwrap();
    let conn = client.connect(addr).unwrap();
    let values = vec![0.5f32; 1024 * 1025];
    for _ in 0..4 {
        client
            .send(conn, &weight_sync(&values), Duration::from_secs(10))
            .unwrap();
    }
    client
        .send(
            conn,
            &Message::ForwardData {
                layer_id: 9,
                data: Cow::Borrowed(&[1.0]),
            },
            Duration::from_secs(10),
        )
        .unwrap();
    // Let everything arrive before the receiver looks.
    thread::sleep(Duration::from_millis(500));
    client.close(conn, nnp::wire::DisconnectReason::NORMAL, "done");
    thread::sleep(Duration::from_millis(200));
    let mut order = Vec::new();
    while let Some(event) = rx.recv_timeout(Duration::from_secs(5)) {
        match event {
            NetEvent::Frame(f) => order.push(format!("{:?}", f.msg_type())),
            NetEvent::Disconnected { .. } => {
                order.push("Disconnected".into());
                break;
            }
            NetEvent::Connected { .. } => order.push("Connected".into()),
        }
    }
    assert_eq!(order[0], "Connected");
    assert_eq!(
        order[1], "ForwardData",
        "the small frame overtakes the bulk ones: {order:?}"
    );
    assert_eq!(order[2..6], ["WeightSync"; 4]);
    assert_eq!(order[6], "Disconnected");
}

#[test]
fn frames_sent_just_before_a_close_are_delivered() {
    let (_server, _handle, mut rx, addr) = start(config("server"));
    let (_client, client, _crx) = Engine::start(config("client")).unwrap();
    let conn = client.connect(addr).unwrap();
    for i in 0..100u16 {
        let msg = Message::ForwardData {
            layer_id: i,
            data: Cow::Borrowed(&[1.0, 2.0]),
        };
        client.send(conn, &msg, Duration::from_secs(5)).unwrap();
    }
    client.close(conn, nnp::wire::DisconnectReason::NORMAL, "bye");
    let mut layers = Vec::new();
    loop {
        match rx
            .recv_timeout(Duration::from_secs(10))
            .expect("events arrive")
        {
            NetEvent::Frame(f) => match f.message().unwrap() {
                Message::ForwardData { layer_id, .. } => layers.push(layer_id),
                other => panic!("{other:?}"),
            },
            NetEvent::Disconnected { cause, .. } => {
                assert_eq!(
                    cause,
                    CloseCause::Disconnect(nnp::wire::DisconnectReason::NORMAL)
                );
                break;
            }
            NetEvent::Connected { .. } => {}
        }
    }
    assert_eq!(layers, (0..100).collect::<Vec<u16>>());
}

/// The i-th frame of a batched stream: a length and values that depend on `i`, so that any
/// lost, repeated, reordered or corrupted frame is caught.
/// Asserts that `f` is frame number `k` of the stream [`stream_frame`] describes.
fn assert_is_stream_frame(f: &ReceivedFrame, k: usize) {
    let (layer_id, data) = stream_frame(k);
    assert_eq!(
        f.message().unwrap(),
        Message::ForwardData {
            layer_id,
            data: Cow::Borrowed(&data)
        }
    );
}

fn stream_frame(i: usize) -> (u16, Vec<f32>) {
    // Runs of 2,000 frames of one length (a Sender numbers a block of those without walking
    // its headers) alternate with runs of varied lengths.
    let n = if (i / 2000) % 2 == 0 {
        100
    } else {
        1 + (i * 7919) % 300
    };
    let data = (0..n).map(|k| (i * 1_000 + k) as f32 * 0.25).collect();
    ((i % 60_000) as u16, data)
}

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
        // send_batch: the same path, one call.
        let tail: Vec<(u16, Vec<f32>)> = (FRAMES..FRAMES + 100).map(stream_frame).collect();
        let msgs: Vec<Message<'_>> = tail
            .iter()
            .map(|(layer_id, data)| Message::ForwardData {
                layer_id: *layer_id,
                data: Cow::Borrowed(data),
            })
            .collect();
        assert_eq!(
            client
                .send_batch(conn, &msgs, Duration::from_secs(10))
                .unwrap(),
            100
        );
        drop(sender);
        client
    });
    let mut events = Vec::new();
    let mut next = 0;
    let mut bigs = 0;
    let mut last_seq = None;
    while next < FRAMES + 100 {
        let n = rx.recv_batch(&mut events, 500, Duration::from_secs(20));
        assert!(n > 0, "stream stalled at frame {next}");
        assert!(n <= 500);
        for event in events.drain(..) {
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

/// Streams `frames` of [`stream_frame`] (and one 32 KiB frame that goes alone) through a
/// `Sender` to a server built from `server`, then closes; the server takes everything through
/// `Receiver::poll` with `max` cycling through small and large values, keeping every 997th
/// frame past its call.
fn poll_a_stream(server: EngineConfig, frames: usize) {
    let (_server, _handle, mut rx, addr) = start(server);
    let (_client, client, _crx) = Engine::start(config("client")).unwrap();
    // Connected from another thread: an inline server's loop runs only while `rx` is called.
    let producer = thread::spawn(move || {
        let conn = client.connect(addr).unwrap();
        let mut sender = client.sender(conn).unwrap();
        let big = vec![3.0f32; 8 * 1024];
        for i in 0..frames {
            let (layer_id, data) = stream_frame(i);
            sender
                .send(&forward(layer_id, &data), Duration::from_secs(10))
                .unwrap();
            if i == frames / 2 {
                let msg = Message::BackwardData {
                    layer_id: 7,
                    data: Cow::Borrowed(&big),
                };
                sender.send(&msg, Duration::from_secs(10)).unwrap();
            }
        }
        sender.flush().unwrap();
        client.wait_sent(conn, Duration::from_secs(20)).unwrap();
        client.close(conn, nnp::wire::DisconnectReason::NORMAL, "done");
        (client, conn)
    });
    let (mut next, mut big_seen, mut connected, mut closed) = (0, false, false, false);
    let mut last_seq = None;
    let mut kept: Vec<(usize, ReceivedFrame)> = Vec::new();
    for max in [1usize, 7, 500, 3, 10_000].into_iter().cycle() {
        if closed {
            break;
        }
        let mut handed = 0;
        let n = rx.poll(max, Duration::from_secs(20), |polled| {
            handed += 1;
            assert!(!closed, "nothing after the close");
            match polled {
                Polled::Frame(frame) => {
                    assert!(connected, "Connected comes before the connection's frames");
                    let seq = frame.sequence();
                    assert!(
                        last_seq.is_none_or(|l| seq == l + 1),
                        "{seq} after {last_seq:?}"
                    );
                    last_seq = Some(seq);
                    match frame.message().unwrap() {
                        Message::BackwardData { layer_id: 7, data } => {
                            assert_eq!(next, frames / 2 + 1, "the large frame keeps its place");
                            assert!(data.iter().all(|&v| v == 3.0));
                            big_seen = true;
                        }
                        _ => {
                            assert_is_stream_frame(&frame.to_received(), next);
                            if next % 997 == 0 {
                                kept.push((next, frame.to_received()));
                            }
                            next += 1;
                        }
                    }
                }
                Polled::Event(NetEvent::Connected { .. }) => connected = true,
                Polled::Event(NetEvent::Disconnected { cause, .. }) => {
                    assert_eq!(
                        cause,
                        CloseCause::Disconnect(nnp::wire::DisconnectReason::NORMAL)
                    );
                    closed = true;
                }
                Polled::Event(NetEvent::Frame(_)) => panic!("frames are lent as views"),
            }
        });
        assert!(n > 0, "the stream stalled at frame {next}");
        assert!(n <= max, "{n} events for a max of {max}");
        assert_eq!(n, handed, "the count is what the handler saw");
    }
    assert!(connected && big_seen);
    assert_eq!(next, frames, "every frame before the close");
    // Kept frames hold their blocks: their bytes are intact after everything read since.
    assert_eq!(kept.len(), frames.div_ceil(997));
    for (k, frame) in &kept {
        assert_is_stream_frame(frame, *k);
    }
    drop(producer.join().unwrap());
    assert_eq!(
        rx.poll(10, Duration::from_millis(20), |_| panic!("nothing left")),
        0
    );
}

#[test]
fn poll_lends_every_frame_in_order_and_a_kept_frame_outlives_the_call() {
    poll_a_stream(config("server"), 30_000);
}

#[test]
fn poll_on_an_inline_engine_lends_every_frame_in_order() {
    poll_a_stream(inline_config("server", false), 10_000);
}

#[test]
fn an_inline_engine_polled_without_waiting_still_makes_progress() {
    // A busy-polling application calls with a zero timeout: each call must give the inline
    // loop a turn (accept, handshake, reads), or nothing ever arrives.
    const FRAMES: usize = 3_000;
    let (_server, _handle, mut rx, addr) = start(inline_config("server", false));
    let producer = thread::spawn(move || {
        let (_client, client, _crx) = Engine::start(config("client")).unwrap();
        let conn = client.connect(addr).unwrap();
        let mut sender = client.sender(conn).unwrap();
        for i in 0..FRAMES {
            let (layer_id, data) = stream_frame(i);
            sender
                .send(&forward(layer_id, &data), Duration::from_secs(10))
                .unwrap();
        }
        sender.flush().unwrap();
        client.wait_sent(conn, Duration::from_secs(20)).unwrap();
        thread::sleep(Duration::from_millis(200));
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut next = 0;
    while next < FRAMES {
        assert!(Instant::now() < deadline, "stalled at frame {next}");
        // Both receiving calls, alternately, never waiting.
        if next % 2 == 0 {
            rx.poll(100, Duration::ZERO, |polled| {
                if let Polled::Frame(frame) = polled {
                    assert_is_stream_frame(&frame.to_received(), next);
                    next += 1;
                }
            });
        } else if let Some(NetEvent::Frame(frame)) = rx.recv_timeout(Duration::ZERO) {
            assert_is_stream_frame(&frame, next);
            next += 1;
        }
    }
    producer.join().unwrap();
}

#[test]
fn a_sender_gives_backpressure_and_drops_nothing() {
    let mut cfg = config("slow");
    cfg.rx_in_flight_limit = 1 << 20;
    cfg.event_ring_capacity = 64;
    let (_server, _server_handle, mut server_rx, addr) = start(cfg);
    let mut ccfg = config("fast");
    ccfg.send_queue_limit = 1 << 20;
    let (_client, client, _crx) = Engine::start(ccfg).unwrap();
    let conn = client.connect(addr).unwrap();
    let mut sender = client.sender(conn).unwrap();
    let mut accepted = 0usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (layer_id, data) = stream_frame(accepted);
        let msg = Message::ForwardData {
            layer_id,
            data: Cow::Borrowed(&data),
        };
        match sender.try_send(&msg) {
            Ok(()) => accepted += 1,
            Err(NetError::WouldBlock { queued, limit }) => {
                assert_eq!(sender.buffered_frames(), 0, "held frames were handed over");
                thread::sleep(Duration::from_millis(200));
                match sender.try_send(&msg) {
                    Err(NetError::WouldBlock { .. }) => {
                        assert!(queued + 65 * 1024 > limit, "refused near the limit");
                        break;
                    }
                    Ok(()) => accepted += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "backpressure never came");
    }
    sender.flush().unwrap();
    let mut got = 0;
    while got < accepted {
        match server_rx.recv_timeout(Duration::from_secs(10)) {
            Some(NetEvent::Frame(f)) => {
                assert_is_stream_frame(&f, got);
                got += 1;
            }
            Some(_) => {}
            None => panic!("only {got} of {accepted} frames arrived"),
        }
    }
    assert!(server_rx.recv_timeout(Duration::from_millis(300)).is_none());
    // Every byte reserved (frames and the sender's credit) was given back.
    client.wait_sent(conn, Duration::from_secs(5)).unwrap();
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

/// A ForwardData of `values` on `layer_id`.
fn forward(layer_id: u16, values: &[f32]) -> Message<'_> {
    Message::ForwardData {
        layer_id,
        data: Cow::Borrowed(values),
    }
}

#[test]
fn a_sender_within_its_credit_still_refuses_after_a_close_or_a_shutdown() {
    let mut c = sender_case(config("server"), config("client"));
    let msg = small_frame();
    // The first frame opens a block and reserves the rest of it.
    c.sender.try_send(&msg).unwrap();
    c.client
        .close(c.conn, nnp::wire::DisconnectReason::NORMAL, "bye");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !matches!(
        c.crx.recv_timeout(Duration::from_millis(50)),
        Some(NetEvent::Disconnected { .. })
    ) {
        assert!(Instant::now() < deadline, "the close was never seen");
    }
    assert!(matches!(c.sender.try_send(&msg), Err(NetError::Closed(_))));

    let conn = c.client.connect(c.addr).unwrap();
    let mut sender = c.client.sender(conn).unwrap();
    sender.try_send(&msg).unwrap();
    c.client_engine.shutdown();
    // The shutdown closed the connection too; either is a refusal the caller sees at once.
    let refused = sender.try_send(&msg);
    assert!(
        matches!(refused, Err(NetError::Shutdown | NetError::Closed(_))),
        "{refused:?}"
    );
}

#[test]
fn a_sender_keeps_its_limits_within_its_credit() {
    let mut client_config = config("client");
    client_config.max_payload = 1024;
    let mut c = sender_case(config("server"), client_config);
    c.sender.try_send(&small_frame()).unwrap();
    // Over the engine's max_payload: refused, not batched.
    let big = vec![0.5f32; 512];
    assert!(matches!(
        c.sender.try_send(&forward(1, &big)),
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
    client_config.send_queue_limit = 100 * 1024;
    let mut c = sender_case(config("server"), client_config);
    c.sender.try_send(&small_frame()).unwrap();
    let held = c.client.peer(c.conn).unwrap().queued_bytes;
    assert!(
        held <= 100 * 1024 / 8 + 64,
        "a c.sender holding one frame reserved {held} B"
    );
    // Another thread's 40 KB frame still finds room beside it.
    let values = vec![0.5f32; 10_000];
    c.client.try_send(c.conn, &forward(2, &values)).unwrap();
    c.sender.flush().unwrap();
    c.client.wait_sent(c.conn, Duration::from_secs(5)).unwrap();
}

#[test]
fn a_sender_sends_a_frame_over_the_batching_limit_alone() {
    let mut c = sender_case(config("server"), config("client"));
    c.sender.try_send(&small_frame()).unwrap();
    c.sender.try_send(&small_frame()).unwrap();
    let values = vec![0.25f32; (nnp::net::SENDER_BATCH_FRAME_MAX + 4096) / 4];
    c.sender.try_send(&forward(2, &values)).unwrap();
    // The two held frames were handed over before it, and it was not held.
    assert_eq!(c.sender.buffered_frames(), 0);
    c.sender.try_send(&small_frame()).unwrap();
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
    c.sender.try_send(&small_frame()).unwrap();
    c.sender.try_send(&small_frame()).unwrap();
    let hebbian = Message::HebbianData {
        layer_id: 1,
        learning_rate: 0.1,
        rows: 1,
        cols: 2,
        correlations: Cow::Borrowed(&[0.5, 0.5]),
    };
    assert!(matches!(
        c.sender.try_send(&hebbian),
        Err(NetError::Protocol(
            ProtocolError::CapabilityNotAgreed { .. }
        ))
    ));
    c.sender.try_send(&small_frame()).unwrap();
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
    sender.try_send(&msg).unwrap();
    sender.flush().unwrap();
    client.close(conn, nnp::wire::DisconnectReason::NORMAL, "bye");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match sender.try_send(&msg) {
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
            NetEvent::Connected { .. } => {}
        }
    }
    assert!(frames >= 1);
}

fn inline_config(name: &str, busy_poll: bool) -> EngineConfig {
    EngineConfig {
        event_loops: 0,
        busy_poll,
        ..config(name)
    }
}

#[test]
fn inline_engines_exchange_frames_and_close_in_order() {
    for busy in [false, true] {
        // The server's loop runs on its echo thread, the client's on this one.
        let (_server, server_handle, server_rx, addr) = start(inline_config("server", busy));
        let echo = echo_server(server_handle.clone(), server_rx, 2_000 + 300);
        let (client_engine, client, mut rx) = Engine::start(inline_config("client", busy)).unwrap();
        // connect drives the loop itself: nobody is receiving yet.
        let conn = client.connect(addr).unwrap();
        match rx.recv_timeout(Duration::from_secs(5)) {
            Some(NetEvent::Connected { conn: c, .. }) => assert_eq!(c, conn),
            other => panic!("{other:?}"),
        }
        for i in 0..2_000 {
            let (layer_id, data) = stream_frame(i);
            let msg = Message::ForwardData {
                layer_id,
                data: Cow::Borrowed(&data),
            };
            client.send(conn, &msg, Duration::from_secs(5)).unwrap();
            match rx.recv_timeout(Duration::from_secs(5)) {
                Some(NetEvent::Frame(f)) => assert_eq!(f.message().unwrap(), msg, "frame {i}"),
                other => panic!("frame {i}: {other:?}"),
            }
        }
        // A batch through an inline engine, echoed back in order.
        let mut sender = client.sender(conn).unwrap();
        for i in 0..300 {
            let (layer_id, data) = stream_frame(i);
            let msg = Message::ForwardData {
                layer_id,
                data: Cow::Borrowed(&data),
            };
            sender.try_send(&msg).unwrap();
        }
        sender.flush().unwrap();
        let mut events = Vec::new();
        let mut got = 0;
        while got < 300 {
            assert!(rx.recv_batch(&mut events, 64, Duration::from_secs(5)) > 0);
            for event in events.drain(..) {
                let NetEvent::Frame(f) = event else {
                    panic!("{event:?}");
                };
                assert_is_stream_frame(&f, got);
                got += 1;
            }
        }
        client.close(conn, nnp::wire::DisconnectReason::NORMAL, "done");
        match rx.recv_timeout(Duration::from_secs(5)) {
            Some(NetEvent::Disconnected { conn: c, .. }) => assert_eq!(c, conn),
            other => panic!("{other:?}"),
        }
        let closed = echo.join().unwrap();
        assert!(closed.is_empty(), "the server echoed everything first");
        client_engine.shutdown();
        assert!(matches!(
            client.try_send(
                conn,
                &Message::ForwardData {
                    layer_id: 0,
                    data: Cow::Borrowed(&[1.0])
                }
            ),
            Err(NetError::UnknownConnection(_) | NetError::Shutdown | NetError::Closed(_))
        ));
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_none());
    }
}

#[test]
fn an_inline_engine_talks_to_a_threaded_one_and_shuts_down_cleanly() {
    let (_server, server_handle, server_rx, addr) = start(config("server"));
    let echo = echo_server(server_handle, server_rx, 500);
    let (client_engine, client, mut rx) = Engine::start(inline_config("client", false)).unwrap();
    let conn = client.connect(addr).unwrap();
    let big = vec![2.5f32; 300_000]; // 1.2 MB: many partial writes, driven by recv
    for i in 0..500 {
        let msg = if i % 100 == 0 {
            Message::BackwardData {
                layer_id: 1,
                data: Cow::Borrowed(&big),
            }
        } else {
            Message::ForwardData {
                layer_id: i,
                data: Cow::Borrowed(&[i as f32]),
            }
        };
        client.send(conn, &msg, Duration::from_secs(5)).unwrap();
        loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Some(NetEvent::Frame(f)) => {
                    assert_eq!(f.message().unwrap(), msg, "frame {i}");
                    break;
                }
                Some(NetEvent::Connected { .. }) => {}
                other => panic!("frame {i}: {other:?}"),
            }
        }
    }
    client_engine.shutdown();
    let closed = echo.join().unwrap();
    assert!(closed.is_empty());
}

#[test]
fn an_inline_engine_serves_replies_while_another_thread_streams_bulk() {
    // Small kernel buffers on both sides: the bulk stream is often blocked in the socket, so
    // the receiving thread must both write the queued bulk and read the replies, while the
    // streaming thread keeps sending through the same inline engine.
    let small_buffers = |name| EngineConfig {
        socket_send_buffer: Some(64 << 10),
        socket_recv_buffer: Some(64 << 10),
        ..inline_config(name, false)
    };
    let (_server, server_handle, server_rx, addr) = start(small_buffers("server"));
    let syncs = 64;
    let pings = 300;
    // The server's loop runs on its echo thread, so it starts before the connect.
    let echo = echo_server(server_handle, server_rx, syncs + pings);
    let (client_engine, client, mut rx) = Engine::start(small_buffers("client")).unwrap();
    let conn = client.connect(addr).unwrap();
    let streamer = {
        let client = client.clone();
        thread::spawn(move || {
            for k in 0..syncs {
                let values = vec![k as f32; 16 * 1024];
                client
                    .send(conn, &weight_sync(&values), Duration::from_secs(20))
                    .unwrap();
            }
        })
    };
    let mut pongs = 0;
    let mut synced = Vec::new();
    for i in 0..pings {
        let data = [i as f32; 100];
        let msg = Message::ForwardData {
            layer_id: 1,
            data: Cow::Borrowed(&data),
        };
        client.send(conn, &msg, Duration::from_secs(20)).unwrap();
        // Echoed WeightSyncs may come first; the reply to this ping comes before the next.
        loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Some(NetEvent::Frame(f)) => match f.message().unwrap() {
                    Message::WeightSync(ws) => {
                        assert!(ws.values.iter().all(|&v| v == ws.values[0]));
                        synced.push(ws.values[0] as usize);
                    }
                    echoed => {
                        assert_eq!(echoed, msg, "ping {i}");
                        pongs += 1;
                        break;
                    }
                },
                Some(NetEvent::Connected { .. }) => {}
                other => panic!("ping {i}: {other:?}"),
            }
        }
    }
    streamer.join().unwrap();
    while synced.len() < syncs {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Some(NetEvent::Frame(f)) => match f.message().unwrap() {
                Message::WeightSync(ws) => synced.push(ws.values[0] as usize),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(pongs, pings);
    assert_eq!(
        synced,
        (0..syncs).collect::<Vec<_>>(),
        "every sync, in order"
    );
    client_engine.shutdown();
    assert!(echo.join().unwrap().len() <= 1);
}

#[test]
fn wait_sent_drives_an_inline_engine_until_its_queue_is_in_the_kernel() {
    let (_server, _server_handle, mut server_rx, addr) = start(config("server"));
    let frames = 8;
    let counter = thread::spawn(move || {
        let mut got = Vec::new();
        while got.len() < frames {
            match server_rx.recv_timeout(Duration::from_secs(20)) {
                Some(NetEvent::Frame(f)) => match f.message().unwrap() {
                    Message::WeightSync(ws) => got.push(ws.values[0] as usize),
                    other => panic!("{other:?}"),
                },
                Some(NetEvent::Connected { .. }) => {}
                other => panic!("after {} frames: {other:?}", got.len()),
            }
        }
        got
    });
    // Small kernel buffers: most of the 8 MiB is still queued in the engine when the last
    // send returns, and only this thread can write it.
    let (client_engine, client, _rx) = Engine::start(EngineConfig {
        socket_send_buffer: Some(64 << 10),
        socket_recv_buffer: Some(64 << 10),
        ..inline_config("client", false)
    })
    .unwrap();
    let conn = client.connect(addr).unwrap();
    for k in 0..frames {
        let values = vec![k as f32; 256 * 1024];
        client
            .send(conn, &weight_sync(&values), Duration::from_secs(20))
            .unwrap();
    }
    client.wait_sent(conn, Duration::from_secs(20)).unwrap();
    assert_eq!(client.peer(conn).unwrap().queued_bytes, 0);
    // Nobody drives the client from here on: what the server still needs is in the kernel.
    assert_eq!(counter.join().unwrap(), (0..frames).collect::<Vec<_>>());
    client_engine.shutdown();
}

#[test]
fn inline_sends_written_from_the_callers_memory_arrive_whole_when_the_socket_takes_part() {
    // An inline engine writes a message straight from the caller's memory when nothing is
    // queued before it; with small kernel buffers the socket takes part of a frame and the
    // rest is copied and queued. Every frame must arrive whole, in order, counted once.
    const FRAMES: usize = 300;
    // No heartbeats: every frame out is the handshake's or the test's.
    let quiet = |cfg: EngineConfig| EngineConfig {
        session: SessionConfig {
            heartbeat_interval: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(1800),
            ..cfg.session
        },
        ..cfg
    };
    let (_server, _server_handle, mut server_rx, addr) = start(quiet(config("server")));
    let receiver = thread::spawn(move || {
        let mut got = Vec::new();
        while got.len() < FRAMES {
            match server_rx.recv_timeout(Duration::from_secs(20)) {
                Some(NetEvent::Frame(f)) => got.push(f.message().unwrap().into_owned()),
                Some(NetEvent::Connected { .. }) => {}
                other => panic!("after {} frames: {other:?}", got.len()),
            }
        }
        got
    });
    let (client_engine, client, _rx) = Engine::start(quiet(EngineConfig {
        socket_send_buffer: Some(16 << 10),
        socket_recv_buffer: Some(16 << 10),
        ..inline_config("client", false)
    }))
    .unwrap();
    let conn = client.connect(addr).unwrap();
    let values: Vec<f32> = (0..64 * 1024).map(|i| i as f32 * 0.25).collect();
    // Sizes from one value to 64 Ki values, ForwardData and WeightSync mixed.
    let sent: Vec<Message<'static>> = (0..FRAMES)
        .map(|k| {
            let n = [1, 7, 100, 3_000, 20_000, 65_536][k % 6];
            let data = &values[k % 97..][..n.min(values.len() - k % 97)];
            if k % 4 == 3 {
                let cols = 15u32;
                let rows = (data.len() as u32 / (cols + 1)).max(1);
                let n = (rows * (cols + 1)) as usize;
                Message::WeightSync(WeightSync {
                    layer_id: k as u16,
                    mode: SyncMode::Replace,
                    rows,
                    cols,
                    offset: 0,
                    sample_count: 1,
                    values: Cow::Owned(values[..n].to_vec()),
                })
            } else {
                Message::ForwardData {
                    layer_id: k as u16,
                    data: Cow::Owned(data.to_vec()),
                }
            }
        })
        .collect();
    for (k, message) in sent.iter().enumerate() {
        // Every other send finds nothing queued: it is written from `sent` directly.
        if k % 2 == 0 {
            client.wait_sent(conn, Duration::from_secs(20)).unwrap();
        }
        client.send(conn, message, Duration::from_secs(20)).unwrap();
    }
    client.wait_sent(conn, Duration::from_secs(20)).unwrap();
    let status = client.peer(conn).unwrap();
    assert_eq!(status.queued_bytes, 0);
    let got = receiver.join().unwrap();
    assert_eq!(got.len(), sent.len());
    // Small frames may pass large ones (a sender queues frames over 64 KiB and WeightSyncs
    // in its bulk lane, a receiver hands WeightSyncs on apart): the order holds per kind.
    let kind = |m: &Message<'_>| match m {
        Message::WeightSync(_) => 2,
        m if frame_len(m).unwrap() > 64 * 1024 => 1,
        _ => 0,
    };
    for lane in 0..3 {
        let is_lane = |m: &&Message<'_>| kind(m) == lane;
        let got: Vec<_> = got.iter().filter(is_lane).collect();
        let sent: Vec<_> = sent.iter().filter(is_lane).collect();
        assert_eq!(got.len(), sent.len());
        for (k, (got, sent)) in got.iter().zip(&sent).enumerate() {
            assert!(same_message(got, sent), "frame {k} of kind {lane} differs");
        }
    }
    let wire_bytes: u64 = sent.iter().map(|m| frame_len(m).unwrap() as u64).sum();
    let status = client.peer(conn).unwrap();
    // The handshake is counted too: one frame out before the data.
    assert_eq!(status.traffic.frames_out, FRAMES as u64 + 1);
    assert!(status.traffic.bytes_out > wire_bytes);
    assert!(status.traffic.bytes_out < wire_bytes + 1024);
    client_engine.shutdown();
}

#[test]
fn paced_bulk_frames_leave_no_faster_than_the_rate_and_small_frames_pass_them() {
    const FRAMES: usize = 12;
    const RATE: u64 = 10_000_000;
    for inline in [false, true] {
        let (_server, _server_handle, mut server_rx, addr) = start(config("server"));
        let receiving = thread::spawn(move || {
            // (what arrived, when): WeightSyncs by their first value, the ForwardData as None.
            let mut got = Vec::new();
            while got.len() < FRAMES + 1 {
                match server_rx.recv_timeout(Duration::from_secs(20)) {
                    Some(NetEvent::Frame(f)) => {
                        let what = match f.message().unwrap() {
                            Message::WeightSync(ws) => {
                                assert!(ws.values.iter().all(|&v| v == ws.values[0]));
                                Some(ws.values[0] as usize)
                            }
                            Message::ForwardData { .. } => None,
                            other => panic!("{other:?}"),
                        };
                        got.push((what, Instant::now()));
                    }
                    Some(NetEvent::Connected { .. }) => {}
                    other => panic!("after {} frames: {other:?}", got.len()),
                }
            }
            got
        });
        let base = if inline {
            inline_config("client", false)
        } else {
            config("client")
        };
        let (client_engine, client, _rx) = Engine::start(EngineConfig {
            bulk_rate: Some(RATE),
            ..base
        })
        .unwrap();
        let conn = client.connect(addr).unwrap();
        let start = Instant::now();
        let mut frame_len = 0;
        for k in 0..FRAMES {
            let values = vec![k as f32; 16 * 1024];
            let msg = weight_sync(&values);
            frame_len = nnp::wire::frame_len(&msg).unwrap();
            client.send(conn, &msg, Duration::from_secs(10)).unwrap();
        }
        let small = Message::ForwardData {
            layer_id: 1,
            data: Cow::Borrowed(&[2.0]),
        };
        client.send(conn, &small, Duration::from_secs(10)).unwrap();
        client.wait_sent(conn, Duration::from_secs(20)).unwrap();
        let got = receiving.join().unwrap();

        let bulk: Vec<_> = got.iter().filter_map(|(k, _)| *k).collect();
        assert_eq!(bulk, (0..FRAMES).collect::<Vec<_>>(), "inline: {inline}");
        let small_at = got.iter().position(|(k, _)| k.is_none()).unwrap();
        assert!(
            small_at < FRAMES,
            "the ForwardData waited for every paced bulk frame (inline: {inline})"
        );
        // The k-th bulk frame may leave k spacings after the first, and the first left after
        // `start`: a lower bound that scheduling noise can only lengthen.
        let spacing = Duration::from_nanos(frame_len as u64 * 1_000_000_000 / RATE);
        let last = got.iter().rev().find(|(k, _)| k.is_some()).unwrap().1;
        assert!(
            last - start >= spacing * (FRAMES as u32 - 1),
            "{FRAMES} frames of {frame_len} B at {RATE} B/s took {:?} (inline: {inline})",
            last - start
        );
        client_engine.shutdown();
    }
}

/// The next data frame on `rx`, skipping connection events.
fn next_data_frame(rx: &mut Receiver) -> ReceivedFrame {
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Some(NetEvent::Frame(f)) => return f,
            Some(NetEvent::Connected { .. }) => {}
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

#[test]
fn a_relayed_frame_arrives_unchanged_on_another_connection_and_back_on_its_own() {
    let (_hub, hub, mut hub_rx, addr) = start(config("hub"));
    let (_a, a, mut a_rx) = Engine::start(config("a")).unwrap();
    let (_c, c, mut c_rx) = Engine::start(config("c")).unwrap();
    // `d` cannot take weight syncs: relaying one to it is refused before anything is queued.
    let (_d, d, _d_rx) = Engine::start(EngineConfig {
        session: SessionConfig {
            capabilities: capabilities::FORWARD_PROPAGATION,
            ..config("d").session
        },
        ..config("d")
    })
    .unwrap();
    let a_conn = a.connect(addr).unwrap();
    c.connect(addr).unwrap();
    d.connect(addr).unwrap();
    let mut hub_conns = Vec::new();
    while hub_conns.len() < 3 {
        if let Some(NetEvent::Connected { conn, peer, .. }) =
            hub_rx.recv_timeout(Duration::from_secs(10))
        {
            hub_conns.push((peer.name.clone(), conn));
        }
    }
    let hub_conn = |name: &str| hub_conns.iter().find(|(n, _)| n == name).unwrap().1;

    let data: Vec<f32> = (0..300).map(|i| i as f32 * 0.25 - 7.0).collect();
    let weights: Vec<f32> = (0..1024 * 40).map(|i| (i % 977) as f32 * 1e-3).collect();
    let messages = [
        Message::ForwardData {
            layer_id: 4,
            data: Cow::Borrowed(&data),
        },
        weight_sync(&weights),
        Message::ForwardData {
            layer_id: 5,
            data: Cow::Borrowed(&data[..3]),
        },
    ];
    for m in &messages {
        a.send(a_conn, m, Duration::from_secs(10)).unwrap();
    }
    // Small frames may overtake the bulk one: frames are matched to what was sent, each once.
    let which = |f: &ReceivedFrame, seen: &mut [bool]| {
        let got = f.message().unwrap();
        let k = messages
            .iter()
            .position(|m| *m == got)
            .expect("a frame that was sent");
        assert!(!seen[k], "frame {k} twice");
        seen[k] = true;
        k
    };
    let mut seen = [false; 3];
    for _ in &messages {
        let f = next_data_frame(&mut hub_rx);
        which(&f, &mut seen);
        hub.relay(hub_conn("c"), f.clone(), Duration::from_secs(10))
            .unwrap();
        if f.msg_type() == MsgType::WeightSync {
            let refused = hub.relay(hub_conn("d"), f.clone(), Duration::from_secs(10));
            assert!(matches!(refused, Err(NetError::Protocol(_))), "{refused:?}");
        } else {
            hub.try_relay(hub_conn("d"), f.clone()).unwrap();
        }
        // The last relay of the frame may take its block rather than copy it.
        hub.relay(f.conn(), f, Duration::from_secs(10)).unwrap();
    }
    // Each receiving session checks sequence numbers: the relayed frames carry their new
    // connection's, or the sessions would have closed on a gap.
    for rx in [&mut c_rx, &mut a_rx] {
        let mut seen = [false; 3];
        for _ in &messages {
            let f = next_data_frame(rx);
            let m = &messages[which(&f, &mut seen)];
            let mut expected = vec![0u8; frame_len(m).unwrap()];
            encode_frame(m, 0, &mut &mut expected[..]).unwrap();
            assert!(f.bytes()[22..] == expected[22..], "payload changed");
            assert_eq!(f.header().checksum(), decode_header_checksum(&expected));
        }
    }
    assert_eq!(hub.peer(hub_conn("c")).unwrap().queued_bytes, 0);
}

fn decode_header_checksum(frame: &[u8]) -> u32 {
    u32::from_be_bytes(frame[18..22].try_into().unwrap())
}
