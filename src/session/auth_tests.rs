//! Authenticated handshakes between two sessions in memory: who gets in, who is refused and
//! with which code, and that no data is taken before both sides have proved their keys.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::auth::{AuthConfig, Credential, NodeKey, PreSharedKey};
use crate::wire::capabilities::{ALL, AUTHENTICATION};
use crate::wire::ErrorCode;

const CLIENT_SEED: [u8; 32] = [0x11; 32];
const SERVER_SEED: [u8; 32] = [0x22; 32];
const STRANGER_SEED: [u8; 32] = [0x33; 32];

fn key(seed: &[u8; 32]) -> Credential {
    Credential::Ed25519(NodeKey::from_seed(seed))
}

fn public(seed: &[u8; 32]) -> crate::auth::PublicKey {
    NodeKey::from_seed(seed).public_key()
}

fn config(node_id: u64, auth: Option<AuthConfig>) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        node_id,
        name: format!("node-{node_id}"),
        layer_sizes: vec![4, 2],
        handshake_timeout: Duration::from_millis(500),
        auth: auth.map(Arc::new),
        ..SessionConfig::default()
    })
}

/// The server accepts only the client's key; the client expects the server's.
fn server_auth() -> AuthConfig {
    AuthConfig::new(key(&SERVER_SEED)).allowed_peers(vec![public(&CLIENT_SEED)])
}

fn client_auth() -> AuthConfig {
    AuthConfig::new(key(&CLIENT_SEED)).allowed_peers(vec![public(&SERVER_SEED)])
}

type Frames = Vec<(u64, Message<'static>)>;

fn drain(session: &mut Session) -> Frames {
    std::iter::from_fn(|| session.poll_transmit()).collect()
}

fn feed(now: Instant, to: &mut Session, frames: &Frames) -> Vec<Result<Received, ProtocolError>> {
    frames
        .iter()
        .map(|(seq, msg)| to.handle_frame(now, *seq, msg))
        .collect()
}

fn error_code(frames: &Frames) -> Option<ErrorCode> {
    frames.iter().find_map(|(_, m)| match m {
        Message::Error { code, .. } => Some(*code),
        _ => None,
    })
}

fn auth_failed(result: &Result<Received, ProtocolError>) -> bool {
    matches!(result, Err(ProtocolError::AuthenticationFailed { .. }))
}

fn forward() -> Message<'static> {
    Message::ForwardData {
        layer_id: 0,
        data: Cow::Owned(vec![1.0; 4]),
    }
}

/// Runs the whole exchange; returns the client's frames and the server's.
fn run(client: &mut Session, server: &mut Session, now: Instant) -> (Frames, Frames) {
    let mut from_client = Frames::new();
    let mut from_server = Frames::new();
    for _ in 0..3 {
        let c = drain(client);
        feed(now, server, &c);
        from_client.extend(c);
        let s = drain(server);
        feed(now, client, &s);
        from_server.extend(s);
    }
    (from_client, from_server)
}

#[test]
fn the_right_keys_establish_both_sides_with_the_peers_keys() {
    let now = Instant::now();
    let mut client = Session::new(Role::Initiator, config(1, Some(client_auth())), now);
    let mut server = Session::new(Role::Acceptor, config(2, Some(server_auth())), now);
    let (c, s) = run(&mut client, &mut server, now);
    assert!(client.is_established() && server.is_established());
    let types = |f: &Frames| f.iter().map(|(_, m)| m.msg_type()).collect::<Vec<_>>();
    assert_eq!(
        types(&c),
        [MsgType::Handshake, MsgType::Auth, MsgType::Auth]
    );
    assert_eq!(types(&s), [MsgType::HandshakeAck, MsgType::Auth]);
    let Some(SessionEvent::Established(peer)) = server.poll_event() else {
        panic!("server not established")
    };
    assert_eq!(peer.public_key.as_deref(), Some(&public(&CLIENT_SEED)));
    assert_eq!(peer.capabilities, ALL | AUTHENTICATION);
    let Some(SessionEvent::Established(peer)) = client.poll_event() else {
        panic!("client not established")
    };
    assert_eq!(peer.public_key.as_deref(), Some(&public(&SERVER_SEED)));

    let seq = client.next_send_sequence(MsgType::ForwardData).unwrap();
    assert_eq!(
        server.handle_frame(now, seq, &forward()),
        Ok(Received::Data)
    );
}

#[test]
fn a_client_key_not_on_the_allowed_list_is_refused_before_any_response() {
    let now = Instant::now();
    let stranger = AuthConfig::new(key(&STRANGER_SEED));
    let mut client = Session::new(Role::Initiator, config(1, Some(stranger)), now);
    let mut server = Session::new(Role::Acceptor, config(2, Some(server_auth())), now);
    let results = feed(now, &mut server, &drain(&mut client));
    assert!(auth_failed(&results[1]), "{results:?}");
    assert!(server.is_closed());
    let s = drain(&mut server);
    assert_eq!(error_code(&s), Some(ErrorCode::AUTHENTICATION_FAILED));
    assert!(!s.iter().any(|(_, m)| m.msg_type() == MsgType::Auth));
}

#[test]
fn a_client_without_a_key_is_refused_by_a_server_that_requires_one() {
    let now = Instant::now();
    let mut client = Session::new(Role::Initiator, config(1, None), now);
    let mut server = Session::new(Role::Acceptor, config(2, Some(server_auth())), now);
    let results = feed(now, &mut server, &drain(&mut client));
    assert!(auth_failed(&results[0]), "{results:?}");
    let s = drain(&mut server);
    assert_eq!(s.len(), 1, "an Error, no HandshakeAck: {s:?}");
    assert_eq!(error_code(&s), Some(ErrorCode::AUTHENTICATION_FAILED));
    let results = feed(now, &mut client, &s);
    assert!(
        matches!(&results[0], Err(ProtocolError::Remote { code, .. }) if *code == ErrorCode::AUTHENTICATION_FAILED)
    );
}

#[test]
fn a_client_with_a_key_refuses_a_server_that_does_not_authenticate() {
    let now = Instant::now();
    let mut client = Session::new(Role::Initiator, config(1, Some(client_auth())), now);
    let mut server = Session::new(Role::Acceptor, config(2, None), now);
    feed(now, &mut server, &drain(&mut client));
    let results = feed(now, &mut client, &drain(&mut server));
    assert!(auth_failed(&results[0]), "{results:?}");
    assert_eq!(
        error_code(&drain(&mut client)),
        Some(ErrorCode::AUTHENTICATION_FAILED)
    );
    assert!(!client.is_established());
}

#[test]
fn a_client_refuses_a_server_whose_key_it_does_not_expect() {
    let now = Instant::now();
    let mut client = Session::new(Role::Initiator, config(1, Some(client_auth())), now);
    let impostor = AuthConfig::new(key(&STRANGER_SEED));
    let mut server = Session::new(Role::Acceptor, config(2, Some(impostor)), now);
    feed(now, &mut server, &drain(&mut client));
    let results = feed(now, &mut client, &drain(&mut server));
    assert!(auth_failed(&results[1]), "{results:?}");
    assert!(!client.is_established() && client.is_closed());
}

#[test]
fn a_recorded_handshake_replayed_to_a_new_connection_is_refused() {
    let now = Instant::now();
    let mut client = Session::new(Role::Initiator, config(1, Some(client_auth())), now);
    let mut server = Session::new(Role::Acceptor, config(2, Some(server_auth())), now);
    let (recorded, _) = run(&mut client, &mut server, now);
    assert!(server.is_established());

    let mut fresh = Session::new(Role::Acceptor, config(2, Some(server_auth())), now);
    let results = feed(now, &mut fresh, &recorded);
    assert!(auth_failed(&results[2]), "{results:?}");
    assert!(!fresh.is_established() && fresh.is_closed());
    assert_eq!(
        error_code(&drain(&mut fresh)),
        Some(ErrorCode::AUTHENTICATION_FAILED)
    );
}

#[test]
fn a_proof_made_for_another_server_is_refused_even_with_the_same_nonces() {
    // Every nonce fixed, so that the only difference between the two servers is who they are.
    let nonce = [0x5a; 32];
    let now = Instant::now();
    let server_b_seed = [0x44; 32];
    let client_cfg = AuthConfig::new(key(&CLIENT_SEED)).fixed_nonce(nonce);
    let mut client = Session::new(Role::Initiator, config(1, Some(client_cfg)), now);
    let a = AuthConfig::new(key(&SERVER_SEED)).fixed_nonce(nonce);
    let mut server_a = Session::new(Role::Acceptor, config(2, Some(a)), now);
    let (recorded, _) = run(&mut client, &mut server_a, now);
    assert!(server_a.is_established());

    for other in [
        // Another key at the same node id, and the same key at another node id.
        (2, AuthConfig::new(key(&server_b_seed)).fixed_nonce(nonce)),
        (3, AuthConfig::new(key(&SERVER_SEED)).fixed_nonce(nonce)),
    ] {
        let mut server_b = Session::new(Role::Acceptor, config(other.0, Some(other.1)), now);
        let results = feed(now, &mut server_b, &recorded);
        assert!(auth_failed(&results[2]), "{results:?}");
        assert!(!server_b.is_established());
    }
}

#[test]
fn data_before_authentication_completes_is_unexpected() {
    let now = Instant::now();
    let mut client = Session::new(Role::Initiator, config(1, Some(client_auth())), now);
    let mut server = Session::new(Role::Acceptor, config(2, Some(server_auth())), now);
    let mut frames = drain(&mut client);
    // Handshake and Challenge taken: the server waits for the proof; data comes instead.
    feed(now, &mut server, &frames[..1].to_vec());
    frames.truncate(2);
    feed(now, &mut server, &frames[1..].to_vec());
    assert!(!server.is_established());
    let result = server.handle_frame(now, 2, &forward());
    assert!(
        matches!(result, Err(ProtocolError::UnexpectedMessage { .. })),
        "{result:?}"
    );
    assert_eq!(
        error_code(&drain(&mut server)),
        Some(ErrorCode::UNEXPECTED_MESSAGE)
    );
    // And the client cannot send data before it has the server's proof.
    assert!(client.check_send(MsgType::ForwardData).is_err());
}

#[test]
fn a_bad_signature_is_refused() {
    let now = Instant::now();
    let mut client = Session::new(Role::Initiator, config(1, Some(client_auth())), now);
    let mut server = Session::new(Role::Acceptor, config(2, Some(server_auth())), now);
    feed(now, &mut server, &drain(&mut client));
    feed(now, &mut client, &drain(&mut server));
    let mut proof = drain(&mut client);
    if let Message::Auth(a) = &mut proof[0].1 {
        a.proof[10] ^= 1;
    }
    let results = feed(now, &mut server, &proof);
    assert!(auth_failed(&results[0]), "{results:?}");
}

#[test]
fn authentication_past_the_handshake_deadline_closes() {
    let now = Instant::now();
    let mut client = Session::new(Role::Initiator, config(1, Some(client_auth())), now);
    let mut server = Session::new(Role::Acceptor, config(2, Some(server_auth())), now);
    feed(now, &mut server, &drain(&mut client)[..1].to_vec());
    assert_eq!(
        server.poll_timeout(),
        Some(now + Duration::from_millis(500))
    );
    server.handle_timeout(now + Duration::from_millis(500));
    assert!(server.is_closed());
}

#[test]
fn a_shared_key_authenticates_and_a_different_one_is_refused() {
    let now = Instant::now();
    let psk = |b: u8| AuthConfig::new(Credential::PreShared(PreSharedKey::new(&[b; 32]).unwrap()));
    let mut client = Session::new(Role::Initiator, config(1, Some(psk(7))), now);
    let mut server = Session::new(Role::Acceptor, config(2, Some(psk(7))), now);
    run(&mut client, &mut server, now);
    assert!(client.is_established() && server.is_established());

    let mut client = Session::new(Role::Initiator, config(1, Some(psk(8))), now);
    let mut server = Session::new(Role::Acceptor, config(2, Some(psk(7))), now);
    feed(now, &mut server, &drain(&mut client));
    let results = feed(now, &mut client, &drain(&mut server));
    assert!(auth_failed(&results[1]), "{results:?}");

    // A shared key against Ed25519 keys: another scheme.
    let mut client = Session::new(Role::Initiator, config(1, Some(psk(7))), now);
    let mut server = Session::new(Role::Acceptor, config(2, Some(server_auth())), now);
    let results = feed(now, &mut server, &drain(&mut client));
    assert!(auth_failed(&results[1]), "{results:?}");
}

#[test]
fn without_keys_the_handshake_is_the_one_without_authentication() {
    let now = Instant::now();
    let mut plain = Session::new(Role::Initiator, config(1, None), now);
    let frames = drain(&mut plain);
    assert_eq!(frames.len(), 1);
    let Message::Handshake(hello) = &frames[0].1 else {
        panic!()
    };
    assert_eq!(hello.capabilities, ALL);
}
