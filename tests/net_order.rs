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
