//! Two sessions driven against each other in memory, with a fake clock.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::wire::capabilities::*;
use crate::wire::ErrorCode;

fn config(name: &str, capabilities: u32) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        node_id: name.len() as u64,
        name: name.into(),
        capabilities,
        layer_sizes: vec![4, 3, 2],
        heartbeat_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(1000),
        handshake_timeout: Duration::from_millis(500),
        ..SessionConfig::default()
    })
}

/// Moves every queued control frame from `from` into `to`, returning what `to` made of them.
fn deliver(
    now: Instant,
    from: &mut Session,
    to: &mut Session,
) -> Vec<Result<Received, ProtocolError>> {
    let mut results = Vec::new();
    while let Some((seq, msg)) = from.poll_transmit() {
        results.push(to.handle_frame(now, seq, &msg));
    }
    results
}

struct Pair {
    now: Instant,
    client: Session,
    server: Session,
}

impl Pair {
    fn new(client_caps: u32, server_caps: u32) -> Pair {
        let now = Instant::now();
        Pair {
            now,
            client: Session::new(Role::Initiator, config("client", client_caps), now),
            server: Session::new(Role::Acceptor, config("server-node", server_caps), now),
        }
    }

    fn handshake(&mut self) {
        let r = deliver(self.now, &mut self.client, &mut self.server);
        assert_eq!(r, vec![Ok(Received::Control)]);
        let r = deliver(self.now, &mut self.server, &mut self.client);
        assert_eq!(r, vec![Ok(Received::Control)]);
    }
}

fn forward(values: &[f32]) -> Message<'_> {
    Message::ForwardData {
        layer_id: 0,
        data: Cow::Borrowed(values),
    }
}

#[test]
fn handshake_agrees_on_the_intersection() {
    let mut p = Pair::new(
        FORWARD_PROPAGATION | HEBBIAN_LEARNING | REAL_TIME,
        ALL & !REAL_TIME,
    );
    p.handshake();
    assert!(p.client.is_established() && p.server.is_established());
    let agreed = FORWARD_PROPAGATION | HEBBIAN_LEARNING;
    assert_eq!(p.client.agreed_capabilities(), agreed);
    assert_eq!(p.server.agreed_capabilities(), agreed);
    let Some(SessionEvent::Established(client_peer)) = p.client.poll_event() else {
        panic!("the client reports the session established");
    };
    assert_eq!(client_peer.name, "server-node");
    assert_eq!(client_peer.capabilities, agreed);
    assert_eq!(client_peer.layer_sizes, vec![4, 3, 2]);
    assert_eq!(client_peer.version, 1);
    let Some(SessionEvent::Established(server_peer)) = p.server.poll_event() else {
        panic!("the server reports the session established");
    };
    assert_eq!(server_peer.name, "client");
    assert_eq!(server_peer.capabilities, agreed);
}

#[test]
fn no_common_version_gets_an_error_frame_and_closes() {
    let now = Instant::now();
    let mut server = Session::new(Role::Acceptor, config("s", ALL), now);
    let future = Hello {
        node_id: 9,
        min_version: 2,
        max_version: 3,
        capabilities: ALL,
        layer_sizes: Cow::Borrowed(&[]),
        name: Cow::Borrowed("future"),
    };
    let err = server
        .handle_frame(now, 0, &Message::Handshake(future))
        .unwrap_err();
    assert_eq!(
        err,
        ProtocolError::NoCommonVersion {
            ours: (1, 1),
            theirs: (2, 3)
        }
    );
    let (_, reply) = server.poll_transmit().unwrap();
    assert!(matches!(
        reply,
        Message::Error {
            code: ErrorCode::UNSUPPORTED_VERSION,
            ..
        }
    ));
    assert!(server.is_closed());
    assert!(!server.has_transmit());
}

#[test]
fn ack_with_a_version_outside_our_range_is_refused() {
    let mut p = Pair::new(ALL, ALL);
    deliver(p.now, &mut p.client, &mut p.server);
    let bad_ack = Hello {
        node_id: 1,
        min_version: 2,
        max_version: 2,
        capabilities: ALL,
        layer_sizes: Cow::Borrowed(&[]),
        name: Cow::Borrowed("x"),
    };
    let err = p
        .client
        .handle_frame(p.now, 0, &Message::HandshakeAck(bad_ack))
        .unwrap_err();
    assert!(matches!(err, ProtocolError::NoCommonVersion { .. }));
    assert!(p.client.is_closed());
}

#[test]
fn ack_granting_unoffered_capabilities_is_refused() {
    let mut p = Pair::new(FORWARD_PROPAGATION, ALL);
    deliver(p.now, &mut p.client, &mut p.server);
    let greedy = Hello {
        node_id: 1,
        min_version: 1,
        max_version: 1,
        capabilities: FORWARD_PROPAGATION | WEIGHT_SYNC,
        layer_sizes: Cow::Borrowed(&[]),
        name: Cow::Borrowed("x"),
    };
    let err = p
        .client
        .handle_frame(p.now, 0, &Message::HandshakeAck(greedy))
        .unwrap_err();
    assert!(matches!(err, ProtocolError::MalformedPayload { .. }));
}

#[test]
fn data_before_handshake_is_refused() {
    let now = Instant::now();
    let mut server = Session::new(Role::Acceptor, config("s", ALL), now);
    let err = server.handle_frame(now, 0, &forward(&[1.0])).unwrap_err();
    assert!(matches!(
        err,
        ProtocolError::UnexpectedMessage {
            msg_type: MsgType::ForwardData,
            ..
        }
    ));
    let (_, reply) = server.poll_transmit().unwrap();
    assert!(matches!(
        reply,
        Message::Error {
            code: ErrorCode::UNEXPECTED_MESSAGE,
            ..
        }
    ));
}

#[test]
fn second_handshake_is_refused() {
    let mut p = Pair::new(ALL, ALL);
    p.handshake();
    let hello = Hello {
        node_id: 1,
        min_version: 1,
        max_version: 1,
        capabilities: ALL,
        layer_sizes: Cow::Borrowed(&[]),
        name: Cow::Borrowed("again"),
    };
    let err = p
        .server
        .handle_frame(p.now, 1, &Message::Handshake(hello))
        .unwrap_err();
    assert!(matches!(err, ProtocolError::UnexpectedMessage { .. }));
}

#[test]
fn handshake_timeout_closes() {
    let now = Instant::now();
    let mut server = Session::new(Role::Acceptor, config("s", ALL), now);
    assert_eq!(
        server.poll_timeout(),
        Some(now + Duration::from_millis(500))
    );
    server.handle_timeout(now + Duration::from_millis(499));
    assert!(!server.is_closed());
    server.handle_timeout(now + Duration::from_millis(500));
    assert!(server.is_closed());
    let (_, reply) = server.poll_transmit().unwrap();
    assert!(matches!(
        reply,
        Message::Error {
            code: ErrorCode::TIMEOUT,
            ..
        }
    ));
}

#[test]
fn data_flows_with_sequence_numbers_shared_with_control_frames() {
    let mut p = Pair::new(ALL, ALL);
    p.handshake();
    // Client sent Handshake as 0; its first data frame is 1.
    let seq = p.client.next_send_sequence(MsgType::ForwardData).unwrap();
    assert_eq!(seq, 1);
    assert_eq!(
        p.server.handle_frame(p.now, seq, &forward(&[1.0, 2.0])),
        Ok(Received::Data)
    );
    // Server sent HandshakeAck as 0.
    let seq = p.server.next_send_sequence(MsgType::WeightSync).unwrap();
    assert_eq!(seq, 1);
}

#[test]
fn a_run_of_sequence_numbers_is_taken_whole_or_not_at_all() {
    let mut p = Pair::new(ALL & !HEBBIAN_LEARNING, ALL);
    // Not established yet: nothing taken.
    assert!(p
        .client
        .next_send_sequences(MsgType::ForwardData, 5)
        .is_err());
    p.handshake();
    let first = p
        .client
        .next_send_sequences(MsgType::ForwardData, 5)
        .unwrap();
    assert_eq!(first, 1, "the Handshake was 0");
    for seq in first..first + 5 {
        assert_eq!(
            p.server.handle_frame(p.now, seq, &forward(&[1.0])),
            Ok(Received::Data)
        );
    }
    assert_eq!(p.client.next_send_sequence(MsgType::ForwardData), Ok(6));
    // A type outside the agreed capabilities, or a control type: refused, nothing taken.
    assert!(matches!(
        p.client.next_send_sequences(MsgType::HebbianData, 3),
        Err(ProtocolError::CapabilityNotAgreed { .. })
    ));
    assert!(p.client.next_send_sequences(MsgType::Heartbeat, 3).is_err());
    assert_eq!(p.client.next_send_sequence(MsgType::ForwardData), Ok(7));
}

#[test]
fn sequence_gap_and_replay_are_errors() {
    let mut p = Pair::new(ALL, ALL);
    p.handshake();
    let err = p
        .server
        .handle_frame(p.now, 2, &forward(&[1.0]))
        .unwrap_err();
    assert_eq!(
        err,
        ProtocolError::UnexpectedSequence {
            expected: 1,
            received: 2
        }
    );
    let (_, reply) = p.server.poll_transmit().unwrap();
    assert!(matches!(
        reply,
        Message::Error {
            code: ErrorCode::SEQUENCE_ERROR,
            ..
        }
    ));

    let mut p = Pair::new(ALL, ALL);
    p.handshake();
    assert!(p.server.handle_frame(p.now, 1, &forward(&[1.0])).is_ok());
    let err = p
        .server
        .handle_frame(p.now, 1, &forward(&[1.0]))
        .unwrap_err();
    assert_eq!(
        err,
        ProtocolError::UnexpectedSequence {
            expected: 2,
            received: 1
        }
    );
}

#[test]
fn capability_not_agreed_is_refused_both_ways() {
    let mut p = Pair::new(FORWARD_PROPAGATION, ALL);
    p.handshake();
    assert_eq!(
        p.client.next_send_sequence(MsgType::HebbianData),
        Err(ProtocolError::CapabilityNotAgreed {
            msg_type: MsgType::HebbianData,
            capability: HEBBIAN_LEARNING
        })
    );
    assert!(p.client.check_send(MsgType::ForwardData).is_ok());
    let correlations = [0.5f32; 4];
    let hebbian = Message::HebbianData {
        layer_id: 0,
        learning_rate: 0.1,
        rows: 2,
        cols: 2,
        correlations: Cow::Borrowed(&correlations),
    };
    let err = p.server.handle_frame(p.now, 1, &hebbian).unwrap_err();
    assert!(matches!(err, ProtocolError::CapabilityNotAgreed { .. }));
}

#[test]
fn control_types_cannot_be_sent_as_data() {
    let mut p = Pair::new(ALL, ALL);
    p.handshake();
    assert!(p.client.next_send_sequence(MsgType::Heartbeat).is_err());
    assert!(p.client.next_send_sequence(MsgType::Handshake).is_err());
}

#[test]
fn heartbeat_on_a_quiet_connection_measures_round_trip() {
    let mut p = Pair::new(ALL, ALL);
    p.handshake();
    while p.client.poll_event().is_some() {}
    let t1 = p.now + Duration::from_millis(99);
    p.client.handle_timeout(t1);
    assert!(!p.client.has_transmit(), "no heartbeat before the interval");
    let t2 = p.now + Duration::from_millis(100);
    assert_eq!(p.client.poll_timeout(), Some(t2));
    p.client.handle_timeout(t2);
    assert!(p.client.has_transmit());
    p.client.handle_timeout(t2);
    let r = deliver(t2, &mut p.client, &mut p.server);
    assert_eq!(
        r,
        vec![Ok(Received::Control)],
        "exactly one heartbeat queued"
    );
    let t3 = t2 + Duration::from_micros(250);
    let r = deliver(t3, &mut p.server, &mut p.client);
    assert_eq!(r, vec![Ok(Received::Control)]);
    assert_eq!(
        p.client.poll_event(),
        Some(SessionEvent::RoundTrip(Duration::from_micros(250)))
    );
}

#[test]
fn idle_timeout_closes_a_silent_peer() {
    let mut p = Pair::new(ALL, ALL);
    p.handshake();
    while p.server.poll_event().is_some() {}
    let later = p.now + Duration::from_millis(1000);
    p.server.handle_timeout(later);
    assert!(p.server.is_closed());
    let (_, msg) = p.server.poll_transmit().unwrap();
    assert!(matches!(
        msg,
        Message::Disconnect {
            reason: DisconnectReason::IDLE_TIMEOUT,
            ..
        }
    ));
    assert!(matches!(
        p.server.poll_event(),
        Some(SessionEvent::Closed {
            reason: DisconnectReason::IDLE_TIMEOUT,
            error: Some(ProtocolError::IdleTimeout { after_ms: 1000 })
        })
    ));
    assert_eq!(p.server.poll_timeout(), None);
}

#[test]
fn received_frames_keep_a_peer_alive() {
    let mut p = Pair::new(ALL, ALL);
    p.handshake();
    let t = p.now + Duration::from_millis(900);
    let seq = p.client.next_send_sequence(MsgType::ForwardData).unwrap();
    p.server.handle_frame(t, seq, &forward(&[0.0])).unwrap();
    p.server.handle_timeout(p.now + Duration::from_millis(1500));
    assert!(!p.server.is_closed());
}

#[test]
fn graceful_disconnect_reaches_the_peer() {
    let mut p = Pair::new(ALL, ALL);
    p.handshake();
    while p.server.poll_event().is_some() {}
    p.client.close(DisconnectReason::SHUTDOWN, "bye");
    assert!(p.client.is_closed());
    assert!(p.client.next_send_sequence(MsgType::ForwardData).is_err());
    let r = deliver(p.now, &mut p.client, &mut p.server);
    assert_eq!(r, vec![Ok(Received::Control)]);
    assert!(p.server.is_closed());
    assert_eq!(
        p.server.poll_event(),
        Some(SessionEvent::Closed {
            reason: DisconnectReason::SHUTDOWN,
            error: None
        })
    );
    assert!(!p.server.has_transmit(), "no reply to a Disconnect");
}

#[test]
fn peer_error_closes_without_answering() {
    let mut p = Pair::new(ALL, ALL);
    p.handshake();
    let err = p
        .client
        .handle_frame(
            p.now,
            1,
            &Message::Error {
                code: ErrorCode::TIMEOUT,
                message: Cow::Borrowed("no frame for 30 s"),
            },
        )
        .unwrap_err();
    assert_eq!(
        err,
        ProtocolError::Remote {
            code: ErrorCode::TIMEOUT,
            message: "no frame for 30 s".into()
        }
    );
    assert!(p.client.is_closed());
    assert!(!p.client.has_transmit());
}

#[test]
fn abort_on_a_codec_error_sends_its_code_once() {
    let mut p = Pair::new(ALL, ALL);
    p.handshake();
    p.server.abort(ProtocolError::ChecksumMismatch {
        expected: 1,
        computed: 2,
    });
    p.server.abort(ProtocolError::BadMagic { found: [0; 4] });
    let (_, msg) = p.server.poll_transmit().unwrap();
    assert!(matches!(
        msg,
        Message::Error {
            code: ErrorCode::CHECKSUM_MISMATCH,
            ..
        }
    ));
    assert!(p.server.poll_transmit().is_none());
}

#[test]
fn frames_after_close_are_refused() {
    let mut p = Pair::new(ALL, ALL);
    p.handshake();
    p.server.close(DisconnectReason::NORMAL, "");
    assert!(p.server.handle_frame(p.now, 1, &forward(&[1.0])).is_err());
}

#[test]
fn a_data_frame_by_type_alone_is_judged_as_the_decoded_frame_and_a_control_type_is_refused() {
    // The same frame, decoded or by type alone, in each state: the same outcome.
    for handshake in [false, true] {
        let (mut decoded, mut by_type) = (Pair::new(ALL, ALL), Pair::new(ALL, ALL));
        if handshake {
            decoded.handshake();
            by_type.handshake();
        }
        let seq = u64::from(handshake);
        let a = decoded
            .server
            .handle_frame(decoded.now, seq, &forward(&[1.0]));
        let b = by_type
            .server
            .handle_data_frame(by_type.now, seq, MsgType::ForwardData);
        assert_eq!(a, b, "handshake done: {handshake}");
    }
    let mut p = Pair::new(ALL, ALL);
    p.handshake();
    let err = p
        .server
        .handle_data_frame(p.now, 1, MsgType::Heartbeat)
        .unwrap_err();
    assert!(
        matches!(err, ProtocolError::UnexpectedMessage { .. }),
        "{err}"
    );
    assert!(p.server.is_closed());
}
