//! Inline engines (no event loop thread; the engine runs on the application's threads): busy
//! polling with a zero timeout, inline engines with each other and with a threaded one,
//! replies served while another thread streams bulk, `wait_sent`, and sends written straight
//! from the caller's memory when the socket takes only part of a frame.

mod common;

use std::borrow::Cow;
use std::thread;
use std::time::{Duration, Instant};

use common::net::{
    assert_is_stream_frame, config, echo_server, forward, inline_config, start, stream_frame,
    weight_sync,
};
use nnp::net::{Deadline, Engine, EngineConfig, NetError, NetEvent, Polled};
use nnp::session::SessionConfig;
use nnp::wire::fuzzing::same_message;
use nnp::wire::{frame_len, Message, SyncMode, WeightSync};

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
            sender.send(&msg, Deadline::Now).unwrap();
        }
        sender.flush().unwrap();
        let mut got = 0;
        while got < 300 {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Some(NetEvent::Frame(f)) => assert_is_stream_frame(&f, got),
                other => panic!("frame {got}: {other:?}"),
            }
            got += 1;
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
            client.send(
                conn,
                &Message::ForwardData {
                    layer_id: 0,
                    data: Cow::Borrowed(&[1.0])
                },
                Deadline::Now,
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
    let small_buffers =
        |name| inline_config(name, false).socket_buffers(Some(64 << 10), Some(64 << 10));
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
    let (client_engine, client, _rx) = Engine::start(
        inline_config("client", false).socket_buffers(Some(64 << 10), Some(64 << 10)),
    )
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
    let (client_engine, client, _rx) = Engine::start(quiet(
        inline_config("client", false).socket_buffers(Some(16 << 10), Some(16 << 10)),
    ))
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
