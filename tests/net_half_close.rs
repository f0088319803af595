//! A peer that sends its requests and then closes its sending side (a TCP half-close) still
//! gets every answer: the connection lingers open for them, then says Disconnect.

mod common;

use std::borrow::Cow;
use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

use common::net::{config, start};
use common::raw_peer::RawPeer;
use nnp::net::{NetEvent, Receiver};
use nnp::wire::{DisconnectReason, Message, MsgType};

/// Answers every ForwardData with the same values doubled, until the engine shuts down.
fn doubling_server(handle: nnp::net::EngineHandle, mut rx: Receiver) {
    std::thread::spawn(move || {
        while let Some(event) = rx.recv_timeout(Duration::from_secs(30)) {
            if let NetEvent::Frame(f) = event {
                if let Ok(Message::ForwardData { layer_id, data }) = f.message() {
                    let doubled: Vec<f32> = data.iter().map(|v| v * 2.0).collect();
                    let answer = Message::ForwardData {
                        layer_id,
                        data: Cow::Owned(doubled),
                    };
                    if let Err(e) = handle.send(f.conn(), &answer, Duration::from_secs(5)) {
                        eprintln!("answer to {} failed: {e}", f.conn());
                    }
                }
            }
        }
    });
}

/// One client: the handshake, three requests and the FIN in one write; every answer and then
/// a Disconnect NORMAL must come back.
fn half_closing_client(addr: std::net::SocketAddr, round: usize) {
    let mut peer = RawPeer::connect(addr);
    // The handshake, three requests and the FIN, all in one write.
    let mut bytes = peer.frame(&RawPeer::hello());
    for k in 0..3 {
        let values = [round as f32, k as f32];
        bytes.extend(peer.frame(&Message::ForwardData {
            layer_id: k,
            data: Cow::Borrowed(&values),
        }));
    }
    peer.stream.write_all(&bytes).unwrap();
    peer.stream.shutdown(Shutdown::Write).unwrap();
    let mut answers = Vec::new();
    let mut closed_with = None;
    while let Some((msg_type, message)) = peer.read_frame() {
        match message {
            Message::ForwardData { layer_id, data } => answers.push((layer_id, data.to_vec())),
            Message::Disconnect { reason, .. } => closed_with = Some(reason),
            _ => assert_eq!(msg_type, MsgType::HandshakeAck, "round {round}"),
        }
    }
    let want: Vec<(u16, Vec<f32>)> = (0..3)
        .map(|k| (k, vec![round as f32 * 2.0, k as f32 * 2.0]))
        .collect();
    assert_eq!(answers, want, "round {round}");
    assert_eq!(closed_with, Some(DisconnectReason::NORMAL), "round {round}");
}

#[test]
fn requests_sent_before_a_half_close_are_all_answered_fifty_times_in_a_row() {
    // Each connection lingers 300 ms after the FIN; ten clients run side by side, each five
    // times in a row.
    let mut cfg = config("server");
    cfg.linger = Duration::from_millis(300);
    let (_engine, handle, rx, addr) = start(cfg);
    doubling_server(handle, rx);
    let clients: Vec<_> = (0..10)
        .map(|c| {
            std::thread::spawn(move || (0..5).for_each(|r| half_closing_client(addr, c * 5 + r)))
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
}
