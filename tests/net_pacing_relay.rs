//! Bulk pacing (`Latency::bulk_rate`: paced frames leave no faster than the rate, small
//! frames pass them, threaded and inline) and relaying a received frame unchanged to other
//! connections (`relay`, waiting or not).

mod common;

use std::borrow::Cow;
use std::thread;
use std::time::{Duration, Instant};

use common::net::{config, inline_config, start, weight_sync};
use nnp::net::{Deadline, Engine, EngineConfig, NetError, NetEvent, ReceivedFrame, Receiver};
use nnp::session::SessionConfig;
use nnp::wire::{capabilities, encode_frame, frame_len, Message, MsgType};

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
        let (client_engine, client, _rx) = Engine::start(base.bulk_rate(Some(RATE))).unwrap();
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
            hub.relay(hub_conn("d"), f.clone(), Deadline::Now).unwrap();
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
