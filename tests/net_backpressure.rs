//! Backpressure from a slow reader: `send` with `Deadline::Now` and a `Sender` are refused near the send
//! queue's limit once the kernel buffers are full, the server's memory stays bounded, and
//! draining it delivers every accepted frame.

mod common;

use std::borrow::Cow;
use std::thread;
use std::time::{Duration, Instant};

use common::net::{assert_is_stream_frame, config, start, stream_frame};
use nnp::net::{Deadline, Engine, NetError, NetEvent};
use nnp::wire::{frame_len, Message};

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

/// One peer whose frames the application holds cannot take the others' share of the receive
/// budget: it stops being read at its own share, and a second peer's frames keep arriving.
#[test]
fn a_peer_holding_its_share_of_the_receive_budget_does_not_stall_the_others() {
    let mut cfg = config("server").threads(1);
    cfg.limits.rx_in_flight_bytes = 4 << 20;
    cfg.limits.rx_in_flight_per_conn = 1 << 20;
    let (_server, _handle, mut rx, addr) = start(cfg);
    let (_a, greedy, _arx) = Engine::start(config("greedy")).unwrap();
    let (_b, other, _brx) = Engine::start(config("other")).unwrap();
    let greedy_conn = greedy.connect(addr).unwrap();
    let other_conn = other.connect(addr).unwrap();
    let msg = Message::ForwardData {
        layer_id: 0,
        data: Cow::Owned(vec![1.0f32; 4000]),
    };
    // 8 MiB from the greedy peer, twice the loop's whole budget.
    let greedy_frames = (8 << 20) / frame_len(&msg).unwrap();
    let sending = thread::spawn(move || {
        let msg = Message::ForwardData {
            layer_id: 0,
            data: Cow::Owned(vec![1.0f32; 4000]),
        };
        for _ in 0..greedy_frames {
            greedy
                .send(greedy_conn, &msg, Duration::from_secs(30))
                .unwrap();
        }
        greedy
    });
    // The application holds every frame of the greedy peer and counts the other's.
    let mut held = Vec::new();
    let mut from_other = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut next_other = 0u16;
    while from_other < 200 {
        assert!(
            Instant::now() < deadline,
            "the other peer's frames stopped arriving ({from_other} of 200) while the greedy \
             peer's {} frames are held",
            held.len()
        );
        if next_other < 200 && next_other <= from_other {
            other
                .send(
                    other_conn,
                    &Message::ForwardData {
                        layer_id: 7,
                        data: Cow::Owned(vec![f32::from(next_other)]),
                    },
                    Duration::from_secs(5),
                )
                .unwrap();
            next_other += 1;
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Some(NetEvent::Frame(f)) if f.conn() == other_conn => from_other += 1,
            Some(NetEvent::Frame(f)) => held.push(f),
            _ => {}
        }
    }
    // Give the loop time to read on if it would (it must not), then look at what is held.
    thread::sleep(Duration::from_millis(300));
    while let Some(event) = rx.recv_timeout(Duration::from_millis(50)) {
        if let NetEvent::Frame(f) = event {
            held.push(f);
        }
    }
    let held_bytes: usize = held.iter().map(|f| f.bytes().len()).sum();
    assert!(
        held_bytes < (1 << 20) + (256 << 10),
        "the greedy peer holds {held_bytes} bytes, over its 1 MiB share and a read block"
    );
    // Released, the rest of its frames arrive.
    let mut got = held.len();
    drop(held);
    while got < greedy_frames {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Some(NetEvent::Frame(_)) => got += 1,
            Some(_) => {}
            None => panic!("only {got} of {greedy_frames} frames after the release"),
        }
    }
    drop(sending.join().unwrap());
}
