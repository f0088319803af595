//! Refusals over sockets: a data frame the application refuses is answered with an Error
//! APPLICATION naming it, in order with the answers sent before it, and the connection stays
//! open.

mod common;

use std::borrow::Cow;
use std::time::Duration;

use common::net::{config, start};
use nnp::net::{Engine, NetEvent};
use nnp::wire::Message;

fn forward(layer_id: u16, values: &[f32]) -> Message<'_> {
    Message::ForwardData {
        layer_id,
        data: Cow::Borrowed(values),
    }
}

#[test]
fn a_refused_frame_is_named_to_its_sender_in_order_and_the_connection_stays_open() {
    let (_server, server, mut server_rx, addr) = start(config("server"));
    let (_client, client, mut client_rx) = Engine::start(config("client")).unwrap();
    let conn = client.connect(addr).unwrap();
    let wait = Duration::from_secs(5);
    // The server answers layer 0 by echoing it and refuses anything else.
    let serve = std::thread::spawn(move || {
        let mut handled = 0;
        while handled < 3 {
            match server_rx.recv_timeout(wait) {
                Some(NetEvent::Frame(f)) => {
                    let message = f.message().unwrap();
                    match message {
                        Message::ForwardData { layer_id: 0, .. } => {
                            server.send(f.conn(), &message, wait).unwrap()
                        }
                        _ => server
                            .refuse(f.conn(), f.sequence(), "this node has no layer 5")
                            .unwrap(),
                    }
                    handled += 1;
                }
                Some(_) => {}
                None => panic!("the server waited in vain"),
            }
        }
        server
    });
    client.send(conn, &forward(0, &[1.0]), wait).unwrap();
    client.send(conn, &forward(5, &[2.0]), wait).unwrap();
    client.send(conn, &forward(0, &[3.0]), wait).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match client_rx.recv_timeout(wait) {
            Some(NetEvent::Frame(f)) => match f.message().unwrap() {
                Message::ForwardData { data, .. } => seen.push(format!("echo {}", data[0])),
                other => panic!("unexpected {other:?}"),
            },
            Some(NetEvent::Refused {
                conn: from,
                sequence,
                reason,
            }) => {
                assert_eq!(from, conn);
                // The handshake took 0; the three frames are 1, 2, 3.
                seen.push(format!("refused {sequence:?}: {reason}"));
            }
            Some(NetEvent::Disconnected { cause, .. }) => panic!("closed: {cause}"),
            Some(_) => {}
            None => panic!("the client waited in vain after {seen:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            "echo 1",
            "refused Some(2): this node has no layer 5",
            "echo 3"
        ]
    );
    // The refusal has arrived, so the server's loop has counted it.
    assert_eq!(serve.join().unwrap().metrics().refusals_sent, 1);
    assert_eq!(client.metrics().refusals_received, 1);
    assert!(client.peer(conn).is_some(), "the connection is still open");
}
