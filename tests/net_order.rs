//! Delivery order on one connection: a small frame overtakes bulk ones on receipt, and a close
//! comes after every frame sent before it.

mod common;

use std::borrow::Cow;
use std::thread;
use std::time::Duration;

use common::net::{config, start, weight_sync};
use nnp::net::{CloseCause, Engine, NetEvent};
use nnp::wire::Message;

#[test]
fn small_frames_overtake_bulk_on_receipt_and_close_comes_last() {
    // Room for the whole 16 MiB of bulk frames while the receiver is away.
    let mut server_config = config("server");
    server_config.limits.rx_in_flight_per_conn = 32 << 20;
    let (_server, _handle, mut rx, addr) = start(server_config);
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
            other => panic!("unexpected {other:?}"),
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
            _ => {}
        }
    }
    assert_eq!(layers, (0..100).collect::<Vec<u16>>());
}

/// Plain sends of small frames coalesce into open blocks, large frames and a `Sender`'s blocks
/// go by other paths: whatever the mix, each sending thread's frames arrive in the order it
/// sent them, even with several threads sending on one connection at once.
#[test]
fn every_senders_frames_arrive_in_order_whatever_path_they_take() {
    const THREADS: u16 = 3;
    const PER_THREAD: u32 = 6000;
    let (_server, _handle, mut rx, addr) = start(config("server"));
    let (_client, client, _crx) = Engine::start(config("client")).unwrap();
    let conn = client.connect(addr).unwrap();
    let senders: Vec<_> = (0..THREADS)
        .map(|thread_id| {
            let client = client.clone();
            thread::spawn(move || {
                let mut large = vec![0.0f32; 5000];
                let mut i = 0;
                while i < PER_THREAD {
                    match i % 97 {
                        // A frame over the coalescing limit goes alone.
                        0 => {
                            large[0] = i as f32;
                            let msg = Message::ForwardData {
                                layer_id: thread_id,
                                data: Cow::Borrowed(&large),
                            };
                            client.send(conn, &msg, Duration::from_secs(10)).unwrap();
                            i += 1;
                        }
                        // A few frames through a `Sender`, handed over when it drops.
                        50 => {
                            let mut sender = client.sender(conn).unwrap();
                            for _ in 0..5 {
                                let msg = Message::ForwardData {
                                    layer_id: thread_id,
                                    data: Cow::Owned(vec![i as f32, 1.0]),
                                };
                                sender.send(&msg, Duration::from_secs(10)).unwrap();
                                i += 1;
                            }
                        }
                        _ => {
                            let msg = Message::ForwardData {
                                layer_id: thread_id,
                                data: Cow::Owned(vec![i as f32, 2.0, 3.0]),
                            };
                            client.send(conn, &msg, Duration::from_secs(10)).unwrap();
                            i += 1;
                        }
                    }
                }
            })
        })
        .collect();
    let mut next = vec![0u32; THREADS as usize];
    let total = u32::from(THREADS) * PER_THREAD;
    let mut got = 0;
    while got < total {
        match rx
            .recv_timeout(Duration::from_secs(20))
            .expect("frames keep coming")
        {
            NetEvent::Frame(f) => match f.message().unwrap() {
                Message::ForwardData { layer_id, data } => {
                    let expected = &mut next[layer_id as usize];
                    assert_eq!(
                        data[0], *expected as f32,
                        "thread {layer_id}'s frames out of order"
                    );
                    *expected += 1;
                    got += 1;
                }
                other => panic!("{other:?}"),
            },
            NetEvent::Connected { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    for sender in senders {
        sender.join().unwrap();
    }
    assert_eq!(next, vec![PER_THREAD; THREADS as usize]);
}
