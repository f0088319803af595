//! Backpressure from a slow reader: `send` with `Deadline::Now` and a `Sender` are refused near the send
//! queue's limit once the kernel buffers are full, the server's memory stays bounded, and
//! draining it delivers every accepted frame.

mod common;

use std::borrow::Cow;
use std::thread;
use std::time::{Duration, Instant};

use common::net::{assert_is_stream_frame, config, start, stream_frame};
use nnp::net::{Deadline, Engine, NetError, NetEvent};
use nnp::wire::Message;

#[test]
fn a_slow_reader_gives_backpressure_and_bounded_memory() {
    let mut cfg = config("slow");
    cfg.limits.rx_in_flight_bytes = 1 << 20;
    cfg.limits.event_ring_capacity = 64;
    let (_server, _server_handle, mut server_rx, addr) = start(cfg.clone());
    let mut ccfg = config("fast");
    ccfg.limits.send_queue_bytes = 1 << 20;
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
        match client.send(conn, &msg, Deadline::Now) {
            Ok(()) => sent += 1,
            Err(NetError::WouldBlock { queued, limit }) => {
                // The queue is full only once the kernel buffers are, so it must stay full.
                thread::sleep(Duration::from_millis(200));
                match client.send(conn, &msg, Deadline::Now) {
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
fn a_sender_gives_backpressure_and_drops_nothing() {
    let mut cfg = config("slow");
    cfg.limits.rx_in_flight_bytes = 1 << 20;
    cfg.limits.event_ring_capacity = 64;
    let (_server, _server_handle, mut server_rx, addr) = start(cfg);
    let mut ccfg = config("fast");
    ccfg.limits.send_queue_bytes = 1 << 20;
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
        match sender.send(&msg, Deadline::Now) {
            Ok(()) => accepted += 1,
            Err(NetError::WouldBlock { queued, limit }) => {
                assert_eq!(sender.buffered_frames(), 0, "held frames were handed over");
                thread::sleep(Duration::from_millis(200));
                match sender.send(&msg, Deadline::Now) {
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
