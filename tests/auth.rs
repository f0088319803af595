//! Peer authentication through the engine over loopback: the right key gets in, and a wrong
//! key, no key, a replayed handshake, a server that is not the expected one and data before
//! authentication are each refused with their documented code, counted in the metrics.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nnp::auth::{AuthConfig, Credential, NodeKey, PublicKey};
use nnp::net::{Engine, EngineConfig, EngineHandle, NetError, NetEvent, Receiver};
use nnp::session::{Role, Session, SessionConfig};
use nnp::wire::{decode_frame, encode_frame, ErrorCode, Message, DEFAULT_MAX_PAYLOAD};

const SERVER: [u8; 32] = [0x22; 32];
const CLIENT: [u8; 32] = [0x11; 32];
const STRANGER: [u8; 32] = [0x33; 32];

fn public(seed: &[u8; 32]) -> PublicKey {
    NodeKey::from_seed(seed).public_key()
}

fn auth(seed: &[u8; 32], allowed: &[[u8; 32]]) -> Arc<AuthConfig> {
    let mut config = AuthConfig::new(Credential::Ed25519(NodeKey::from_seed(seed)));
    if !allowed.is_empty() {
        config = config.allowed_peers(allowed.iter().map(public).collect());
    }
    Arc::new(config)
}

fn session(node_id: u64, auth: Option<Arc<AuthConfig>>) -> SessionConfig {
    SessionConfig {
        node_id,
        name: format!("node-{node_id}"),
        layer_sizes: vec![4, 2],
        auth,
        ..SessionConfig::default()
    }
}

fn engine(node_id: u64, auth: Option<Arc<AuthConfig>>) -> (Engine, EngineHandle, Receiver) {
    let config = EngineConfig::default()
        .threads(1)
        .session(session(node_id, auth))
        .connect_timeout(Duration::from_secs(5));
    Engine::start(config).unwrap()
}

/// A server that accepts only the client's key.
fn server() -> (Engine, EngineHandle, Receiver, SocketAddr) {
    let (engine, handle, rx) = engine(2, Some(auth(&SERVER, &[CLIENT])));
    let addr = handle.listen("127.0.0.1:0").unwrap();
    (engine, handle, rx, addr)
}

fn refused_with(result: Result<nnp::net::ConnId, NetError>, code: ErrorCode) {
    let err = result.expect_err("the connection should be refused");
    let text = err.to_string();
    assert!(
        text.contains(&format!("error {}", code.0)) || text.contains("authentication failed"),
        "{text}"
    );
}

/// Waits until the server's metrics count `n` authentication failures.
fn wait_for_auth_failures(handle: &EngineHandle, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while handle.metrics().errors_by_code[12] < n {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            handle.metrics().errors_by_code
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_right_key_gets_in_and_its_data_arrives() {
    let (_server, server_handle, mut server_rx, addr) = server();
    let (_client, client_handle, _client_rx) = engine(1, Some(auth(&CLIENT, &[SERVER])));
    let conn = client_handle.connect(addr).unwrap();
    let data = Message::ForwardData {
        layer_id: 0,
        data: Cow::Owned(vec![1.0, 2.0, 3.0, 4.0]),
    };
    client_handle
        .send(conn, &data, Duration::from_secs(5))
        .unwrap();
    let mut peer_key = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match server_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Some(NetEvent::Connected { peer, .. }) => peer_key = peer.public_key.map(|k| *k),
            Some(NetEvent::Frame(frame)) => {
                assert_eq!(frame.message().unwrap(), data);
                break;
            }
            Some(_) => {}
            None => panic!("no data frame arrived"),
        }
    }
    assert_eq!(peer_key, Some(public(&CLIENT)));
    assert_eq!(server_handle.metrics().errors_by_code[12], 0);
}

#[test]
fn a_wrong_key_and_no_key_are_refused_and_counted() {
    let (_server, server_handle, _rx, addr) = server();
    let (_stranger, stranger, _) = engine(3, Some(auth(&STRANGER, &[])));
    refused_with(stranger.connect(addr), ErrorCode::AUTHENTICATION_FAILED);
    let (_plain, plain, _) = engine(4, None);
    refused_with(plain.connect(addr), ErrorCode::AUTHENTICATION_FAILED);
    wait_for_auth_failures(&server_handle, 2);
}

#[test]
fn a_client_refuses_a_server_that_is_not_the_one_it_expects() {
    let (_server, _server_handle, _rx, addr) = server();
    // The client holds a key the server accepts, but expects another server's key.
    let (_client, client, _) = engine(1, Some(auth(&CLIENT, &[STRANGER])));
    refused_with(client.connect(addr), ErrorCode::AUTHENTICATION_FAILED);
    wait_for_auth_failures(&client, 1);
}

/// Drives a client session by hand over a socket; returns every byte it sent.
fn handshake_by_hand(addr: SocketAddr) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let now = Instant::now();
    let config = Arc::new(session(1, Some(auth(&CLIENT, &[SERVER]))));
    let mut client = Session::new(Role::Initiator, config, now);
    let mut sent = Vec::new();
    let mut received = Vec::new();
    while !client.is_established() {
        let mut out = Vec::new();
        while let Some((seq, msg)) = client.poll_transmit() {
            encode_frame(&msg, seq, &mut out).unwrap();
        }
        stream.write_all(&out).unwrap();
        sent.extend_from_slice(&out);
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "server closed during the handshake");
        received.extend_from_slice(&buf[..n]);
        while let Some((frame, used)) = decode_frame(&received, DEFAULT_MAX_PAYLOAD).unwrap() {
            client
                .handle_frame(now, frame.sequence, &frame.message)
                .unwrap();
            received.drain(..used);
        }
    }
    let mut out = Vec::new();
    while let Some((seq, msg)) = client.poll_transmit() {
        encode_frame(&msg, seq, &mut out).unwrap();
    }
    stream.write_all(&out).unwrap();
    sent.extend_from_slice(&out);
    sent
}

/// Writes `bytes` to the server and returns the frames it answers with until it closes.
fn answers_to(addr: SocketAddr, bytes: &[u8]) -> Vec<Message<'static>> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    let mut frames = Vec::new();
    let mut at = 0;
    while let Ok(Some((frame, used))) = decode_frame(&received[at..], DEFAULT_MAX_PAYLOAD) {
        frames.push(frame.message.into_owned());
        at += used;
    }
    frames
}

fn error_code(frames: &[Message<'_>]) -> Option<ErrorCode> {
    frames.iter().find_map(|m| match m {
        Message::Error { code, .. } => Some(*code),
        _ => None,
    })
}

#[test]
fn a_recorded_handshake_replayed_to_a_new_connection_is_refused() {
    let (_server, server_handle, _rx, addr) = server();
    let recorded = handshake_by_hand(addr);
    assert_eq!(server_handle.metrics().errors_by_code[12], 0);
    let answers = answers_to(addr, &recorded);
    assert_eq!(
        error_code(&answers),
        Some(ErrorCode::AUTHENTICATION_FAILED),
        "{answers:?}"
    );
    wait_for_auth_failures(&server_handle, 1);
}

#[test]
fn data_before_the_handshake_and_before_authentication_is_unexpected() {
    let (_server, _server_handle, _rx, addr) = server();
    let data = Message::ForwardData {
        layer_id: 0,
        data: Cow::Owned(vec![1.0; 4]),
    };
    // Data as the first frame.
    let mut bytes = Vec::new();
    encode_frame(&data, 0, &mut bytes).unwrap();
    let answers = answers_to(addr, &bytes);
    assert_eq!(
        error_code(&answers),
        Some(ErrorCode::UNEXPECTED_MESSAGE),
        "{answers:?}"
    );

    // Data after a Handshake that offers authentication, in place of the Challenge.
    let config = Arc::new(session(1, Some(auth(&CLIENT, &[SERVER]))));
    let mut client = Session::new(Role::Initiator, config, Instant::now());
    let (seq, handshake) = client.poll_transmit().unwrap();
    let mut bytes = Vec::new();
    encode_frame(&handshake, seq, &mut bytes).unwrap();
    encode_frame(&data, 1, &mut bytes).unwrap();
    let answers = answers_to(addr, &bytes);
    assert!(
        matches!(answers[0], Message::HandshakeAck(_)),
        "{answers:?}"
    );
    assert_eq!(
        error_code(&answers),
        Some(ErrorCode::UNEXPECTED_MESSAGE),
        "{answers:?}"
    );
    assert!(!answers.iter().any(|m| matches!(m, Message::Auth(_))));
}

#[test]
fn auth_failures_show_in_the_metrics_text() {
    let (_server, server_handle, _rx, addr) = server();
    let (_plain, plain, _) = engine(4, None);
    let _ = plain.connect(addr);
    wait_for_auth_failures(&server_handle, 1);
    let text = nnp::net::prometheus_text(&server_handle.metrics(), &[]);
    assert!(
        text.contains("nnp_errors_total{code=\"authentication_failed\"} 1\n"),
        "{text}"
    );
}

#[test]
fn nodes_authenticate_through_the_node_api() {
    use nnp::nn::{HebbianLearningMode, NeuralNetwork};
    use nnp::node::{DistributedNetwork, NodeConfig};

    let node = |name: &str, auth: Option<Arc<AuthConfig>>| {
        let mut config = NodeConfig::default();
        config.engine.session.auth = auth;
        let network =
            NeuralNetwork::with_layers_and_mode(&[4, 3, 2], 0.1, HebbianLearningMode::Oja);
        DistributedNetwork::with_config(name, "127.0.0.1", 0, network, config).unwrap()
    };
    let (server, _server_rx) = node("server", Some(auth(&SERVER, &[CLIENT])));
    let port = server.start_server().unwrap().port();
    let (client, _client_rx) = node("client", Some(auth(&CLIENT, &[SERVER])));
    let peer = client.connect_to("127.0.0.1", port).unwrap();
    client
        .send_forward_data(peer, 0, &[0.1, 0.2, 0.3, 0.4])
        .unwrap();
    let (stranger, _rx) = node("stranger", Some(auth(&STRANGER, &[])));
    assert!(stranger.connect_to("127.0.0.1", port).is_err());
    let (plain, _rx) = node("plain", None);
    assert!(plain.connect_to("127.0.0.1", port).is_err());
}
