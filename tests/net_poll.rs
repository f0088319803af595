//! `Receiver::poll` on a threaded and on an inline engine: every frame of a stream lent in
//! order, never more than `max` a call, and a frame kept past its call intact at the end.

mod common;

use std::borrow::Cow;
use std::thread;
use std::time::Duration;

use common::net::{assert_is_stream_frame, config, forward, inline_config, start, stream_frame};
use nnp::net::{CloseCause, Engine, EngineConfig, NetEvent, Polled, ReceivedFrame};
use nnp::wire::Message;

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
                Polled::Event(other) => panic!("unexpected {other:?}"),
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
