//! The engine under load over loopback: a hundred clients exchanging thousands of frames each
//! through an echo server, 16 MiB frames crossing intact (decoded in place), and a peer killed
//! in the middle of a frame while a healthy one carries on.

mod common;

use std::borrow::Cow;
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use common::net::{config, echo_server, start, weight_sync};
use common::raw_peer::{healthy_while, RawPeer};
use nnp::net::{CloseCause, ConnId, Engine, NetEvent};
use nnp::wire::Message;

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
            NetEvent::Disconnected { conn, cause } => panic!("{conn} closed: {cause}"),
            _ => {}
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

#[test]
fn sixteen_mib_frames_cross_intact() {
    let mut cfg = config("big");
    cfg.session.max_payload = 17 << 20;
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
