//! The logic of the `session` fuzz target in `fuzz/`, here so that a stable test
//! (`tests/fuzz_corpus.rs`) replays its corpus through the same code. Not part of the API.
//!
//! A [`Session`] under test talks to an honest peer session; the fuzzer's bytes decide the
//! roles, whether either side authenticates and with which key, and then a script of steps:
//! pass the peer's next frame on as it is, with another sequence number, or not at all; inject
//! a frame made from arbitrary bytes; let time pass; try to send data. It panics if, and only
//! if, the session breaks a promise:
//! - no panic, whatever arrives;
//! - no data frame is taken before the session is established, and with authentication the
//!   session is established only with a peer that proved an allowed key;
//! - data may be sent only once established;
//! - a closed session stays closed: it takes no frame and queues nothing new.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::{Received, Role, Session, SessionConfig, SessionEvent};
use crate::auth::{AuthConfig, Credential, NodeKey, PreSharedKey, PublicKey};
use crate::wire::fuzzing::message_from_bytes;
use crate::wire::{parse_payload, Message, MsgType};

/// The keys a run can pick: ours, an allowed peer's, a stranger's (fixed seeds and nonces, so
/// that a crash replays).
struct Keys {
    ours: Arc<AuthConfig>,
    ours_open: Arc<AuthConfig>,
    friend: Arc<AuthConfig>,
    stranger: Arc<AuthConfig>,
    psk: Arc<AuthConfig>,
    other_psk: Arc<AuthConfig>,
    allowed: PublicKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let ed = |seed: u8| Credential::Ed25519(NodeKey::from_seed(&[seed; 32]));
        let psk = |b: u8| Credential::PreShared(PreSharedKey::new(&[b; 32]).expect("32 bytes"));
        let ours_public = NodeKey::from_seed(&[1; 32]).public_key();
        let allowed = NodeKey::from_seed(&[2; 32]).public_key();
        let config = |c: Credential, nonce: u8, list: Option<PublicKey>| {
            let config = AuthConfig::new(c).fixed_nonce([nonce; 32]);
            Arc::new(match list {
                Some(key) => config.allowed_peers(vec![key]),
                None => config,
            })
        };
        Keys {
            ours: config(ed(1), 0xa1, Some(allowed)),
            ours_open: config(ed(1), 0xa1, None),
            friend: config(ed(2), 0xb2, Some(ours_public)),
            stranger: config(ed(3), 0xc3, None),
            psk: config(psk(7), 0xd4, None),
            other_psk: config(psk(8), 0xe5, None),
            allowed,
        }
    })
}

fn session_config(node_id: u64, auth: Option<Arc<AuthConfig>>) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        node_id,
        name: format!("fuzz-{node_id}"),
        layer_sizes: vec![4, 2],
        heartbeat_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(1000),
        handshake_timeout: Duration::from_millis(500),
        auth,
        ..SessionConfig::default()
    })
}

/// Reads the script's bytes; missing bytes read as zero.
struct Script<'a>(&'a [u8]);

impl<'a> Script<'a> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }
    fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte()).min(self.0.len());
        let (chunk, rest) = self.0.split_at(n);
        self.0 = rest;
        chunk
    }
}

/// The session under test and what has been seen of it.
struct UnderTest {
    session: Session,
    /// Set when the Established event came out.
    established: bool,
    closed: bool,
    /// Frames taken so far: the sequence number the session expects next, while it is open.
    received: u64,
    /// Whether authentication is on, and the key an Ed25519 peer must prove (None: any).
    auth: Option<Option<PublicKey>>,
}

impl UnderTest {
    fn take(&mut self, now: Instant, sequence: u64, message: &Message<'_>) {
        let was_closed = self.closed;
        let result = self.session.handle_frame(now, sequence, message);
        self.received += 1;
        if was_closed {
            assert!(result.is_err(), "a closed session took a frame");
        }
        if result == Ok(Received::Data) {
            assert!(
                self.established,
                "data taken before the session was established"
            );
        }
        self.observe();
    }

    /// Drains the events and checks them.
    fn observe(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match event {
                SessionEvent::Established(peer) => {
                    assert!(
                        !self.established && !self.closed,
                        "established twice or after close"
                    );
                    self.established = true;
                    if let Some(expected) = self.auth {
                        let proved = peer.capabilities & crate::wire::capabilities::AUTHENTICATION;
                        assert!(proved != 0, "established without authentication");
                        if let (Some(want), Some(&got)) = (expected, peer.public_key.as_deref()) {
                            assert_eq!(want, got, "established with a key not allowed");
                        }
                    }
                }
                SessionEvent::Closed { .. } => self.closed = true,
                SessionEvent::RoundTrip(_) => {}
            }
        }
        if self.closed {
            assert!(
                self.session.is_closed(),
                "closed event but the session is open"
            );
        }
    }
}

/// Runs one script against a session (see the module docs).
pub fn session(data: &[u8]) {
    run(data);
}

/// [`session`], returning whether the session was established and whether it closed.
fn run(data: &[u8]) -> (bool, bool) {
    let mut script = Script(data);
    let flags = script.byte();
    let keys = keys();
    let role = if flags & 1 == 0 {
        Role::Acceptor
    } else {
        Role::Initiator
    };
    let ours = match (flags >> 1) & 3 {
        0 => None,
        1 => Some(Arc::clone(&keys.ours)),
        2 => Some(Arc::clone(&keys.ours_open)),
        _ => Some(Arc::clone(&keys.psk)),
    };
    let theirs = match (flags >> 3) & 7 {
        0 => None,
        1 | 2 => Some(Arc::clone(&keys.friend)),
        3 => Some(Arc::clone(&keys.stranger)),
        4 => Some(Arc::clone(&keys.psk)),
        5 => Some(Arc::clone(&keys.other_psk)),
        _ => Some(Arc::clone(&keys.ours)),
    };
    let expected_key = match (flags >> 1) & 3 {
        1 => Some(keys.allowed),
        _ => None,
    };
    let start = Instant::now();
    let mut now = start;
    let mut under = UnderTest {
        session: Session::new(role, session_config(1, ours.clone()), now),
        established: false,
        closed: false,
        received: 0,
        auth: ours.map(|_| expected_key),
    };
    let peer_role = match role {
        Role::Initiator => Role::Acceptor,
        Role::Acceptor => Role::Initiator,
    };
    let mut peer = Session::new(peer_role, session_config(2, theirs), now);
    let mut from_peer: VecDeque<(u64, Message<'static>)> = VecDeque::new();

    for _ in 0..64 {
        if script.0.is_empty() {
            break;
        }
        // Our output to the honest peer, the peer's output queued for the script to pass on.
        while let Some((seq, msg)) = under.session.poll_transmit() {
            let _ = peer.handle_frame(now, seq, &msg);
        }
        from_peer.extend(std::iter::from_fn(|| peer.poll_transmit()));
        while peer.poll_event().is_some() {}

        match script.byte() % 7 {
            0 | 1 => {
                if let Some((seq, msg)) = from_peer.pop_front() {
                    under.take(now, seq, &msg);
                }
            }
            2 => {
                let delta = script.byte();
                if let Some((seq, msg)) = from_peer.pop_front() {
                    under.take(now, seq.wrapping_add(u64::from(delta)), &msg);
                }
            }
            3 => {
                from_peer.pop_front();
            }
            4 => {
                let msg = message_from_bytes(script.chunk());
                let seq = under.received;
                under.take(now, seq, &msg);
            }
            5 => {
                let msg_type = MsgType::ALL[usize::from(script.byte()) % MsgType::ALL.len()];
                if let Ok(msg) = parse_payload(msg_type, script.chunk()) {
                    let seq = under.received;
                    under.take(now, seq, &msg);
                }
            }
            _ => {
                now += Duration::from_millis(u64::from(script.byte()) * 10);
                under.session.handle_timeout(now);
                peer.handle_timeout(now);
                under.observe();
            }
        }
        if under.session.check_send(MsgType::ForwardData).is_ok() {
            assert!(
                under.established,
                "data may be sent before the session is established"
            );
        }
        if under.closed {
            while under.session.poll_transmit().is_some() {}
            under.session.handle_timeout(now + Duration::from_secs(60));
            assert!(
                !under.session.has_transmit(),
                "a closed session queued a frame"
            );
        }
    }
    (under.established, under.closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The honest exchange with every key pairing completes or fails without tripping a check,
    /// and the scripts reach the states they are meant to.
    #[test]
    fn every_pairing_of_keys_runs_the_checks() {
        for flags in 0..=u8::MAX >> 2 {
            session(&[flags, 0, 0, 0, 0, 0, 0, 0, 0, 6, 1, 0, 0]);
        }
        let pass = [0u8; 8];
        let script = |flags: u8| run(&[&[flags][..], &pass].concat());
        assert_eq!(script(0), (true, false), "plain acceptor");
        assert_eq!(script(1), (true, false), "plain initiator");
        assert_eq!(script(0b0000_1010), (true, false), "acceptor, allowed key");
        assert_eq!(
            script(0b0000_1011),
            (true, false),
            "initiator, expected server key"
        );
        assert_eq!(script(0b0010_0110), (true, false), "shared key");
        assert_eq!(
            script(0b0001_1010),
            (false, true),
            "acceptor, stranger's key"
        );
        assert_eq!(
            script(0b0000_0010),
            (false, true),
            "acceptor, peer without a key"
        );
        assert_eq!(
            script(0b0010_1111),
            (false, true),
            "initiator, another shared key"
        );
    }
}
