//! The authenticating part of the handshake: Auth frames between the HandshakeAck and the
//! established session.
//!
//! ```text
//!   initiator                                   acceptor
//!   Handshake (offers AUTHENTICATION)   ──▶
//!   Auth Challenge (key, nonce)         ──▶
//!                                       ◀──     HandshakeAck (agrees AUTHENTICATION)
//!                                       ◀──     Auth Response (key, nonce, proof)
//!   Auth Proof (proof)                  ──▶
//!   established                                 established once the proof verifies
//! ```
//!
//! Each proof covers the transcript of both keys, both nonces, both node ids and what the
//! handshake agreed ([`crate::auth::transcript`]). The initiator pipelines its Challenge
//! behind its Handshake, so authentication costs no round trip: data may follow the Proof at
//! once, and the acceptor takes none before the Proof has verified.

use crate::auth::transcript::{Exchange, CLIENT_LABEL, SERVER_LABEL};
use crate::auth::PublicKey;
use crate::wire::{Auth, AuthScheme, AuthStep, Message, MsgType, ProtocolError};

use super::{PeerInfo, Received, Session, State};

/// What an authenticating handshake has learnt so far.
#[derive(Debug)]
pub(super) struct Pending {
    exchange: Exchange,
    /// The peer, established once its proof verifies (the initiator knows it from the ack).
    peer: Option<PeerInfo>,
}

fn failed(reason: &'static str) -> ProtocolError {
    ProtocolError::AuthenticationFailed { reason }
}

fn unused_fields_not_zero() -> ProtocolError {
    ProtocolError::MalformedPayload {
        msg_type: MsgType::Auth,
        reason: "a field this step does not use is not zero",
    }
}

impl Session {
    /// Initiator with a key: queues the Challenge behind the Handshake.
    pub(super) fn send_challenge(&mut self) {
        let Some(auth) = self.config.auth.clone() else {
            return;
        };
        let exchange = Exchange {
            scheme: auth.scheme(),
            version: 0,
            capabilities: 0,
            client_node_id: self.config.node_id,
            server_node_id: 0,
            client_key: auth.public_key(),
            client_nonce: auth.nonce(),
            server_key: [0; 32],
            server_nonce: [0; 32],
        };
        self.queue(Message::Auth(Box::new(Auth {
            step: AuthStep::Challenge,
            scheme: exchange.scheme,
            key: exchange.client_key,
            nonce: exchange.client_nonce,
            proof: [0; 64],
        })));
        self.auth = Some(Box::new(Pending {
            exchange,
            peer: None,
        }));
    }

    /// Acceptor with a key, HandshakeAck queued: waits for the Challenge.
    pub(super) fn await_challenge(&mut self, peer: PeerInfo) {
        let auth = self.config.auth.clone().expect("only with a key");
        let exchange = Exchange {
            scheme: auth.scheme(),
            version: peer.version,
            capabilities: peer.capabilities,
            client_node_id: peer.node_id,
            server_node_id: self.config.node_id,
            client_key: [0; 32],
            client_nonce: [0; 32],
            server_key: auth.public_key(),
            server_nonce: [0; 32],
        };
        self.auth = Some(Box::new(Pending {
            exchange,
            peer: Some(peer),
        }));
        self.state = State::AwaitingChallenge;
    }

    /// Initiator with a key, HandshakeAck taken: waits for the Response.
    pub(super) fn await_response(&mut self, peer: PeerInfo) {
        if let Some(pending) = self.auth.as_mut() {
            pending.exchange.version = peer.version;
            pending.exchange.capabilities = peer.capabilities;
            pending.exchange.server_node_id = peer.node_id;
            pending.peer = Some(peer);
        }
        self.state = State::AwaitingResponse;
    }

    /// Takes an Auth frame in one of the authenticating states.
    pub(super) fn take_auth(&mut self, step: &Auth) -> Result<Received, ProtocolError> {
        self.check_auth(step).map_err(|e| self.abort(e))?;
        Ok(Received::Control)
    }

    fn check_auth(&mut self, step: &Auth) -> Result<(), ProtocolError> {
        let (Some(auth), Some(pending)) = (self.config.auth.clone(), self.auth.as_mut()) else {
            return Err(failed("no authentication under way"));
        };
        let expected = match self.state {
            State::AwaitingChallenge => AuthStep::Challenge,
            State::AwaitingResponse => AuthStep::Response,
            _ => AuthStep::Proof,
        };
        if step.step != expected {
            return Err(ProtocolError::UnexpectedMessage {
                msg_type: MsgType::Auth,
                state: self.state.describe(),
            });
        }
        if step.scheme != pending.exchange.scheme {
            return Err(failed(
                "the peer authenticates with another scheme (Ed25519 keys or a shared key)",
            ));
        }
        let shows_key = step.step != AuthStep::Proof && step.scheme == AuthScheme::Ed25519;
        let unused_key = !shows_key && step.key != [0; 32];
        let unused_nonce = step.step == AuthStep::Proof && step.nonce != [0; 32];
        let unused_proof = step.step == AuthStep::Challenge && step.proof != [0; 64];
        if unused_key || unused_nonce || unused_proof {
            return Err(unused_fields_not_zero());
        }
        if shows_key && !auth.allows(&step.key) {
            return Err(failed("the peer's key is not in the allowed list"));
        }
        let exchange = &mut pending.exchange;
        match step.step {
            AuthStep::Challenge => {
                exchange.client_key = step.key;
                exchange.client_nonce = step.nonce;
                exchange.server_nonce = auth.nonce();
                let proof = auth.prove(&exchange.transcript(SERVER_LABEL));
                let response = Auth {
                    step: AuthStep::Response,
                    scheme: exchange.scheme,
                    key: exchange.server_key,
                    nonce: exchange.server_nonce,
                    proof,
                };
                self.queue(Message::Auth(Box::new(response)));
                self.state = State::AwaitingProof;
            }
            AuthStep::Response => {
                exchange.server_key = step.key;
                exchange.server_nonce = step.nonce;
                let transcript = exchange.transcript(SERVER_LABEL);
                if !auth.verify(&exchange.server_key, &transcript, &step.proof) {
                    return Err(failed("the server's proof does not verify"));
                }
                let proof = auth.prove(&exchange.transcript(CLIENT_LABEL));
                let server_key = exchange.server_key;
                self.queue(Message::Auth(Box::new(Auth {
                    step: AuthStep::Proof,
                    scheme: step.scheme,
                    key: [0; 32],
                    nonce: [0; 32],
                    proof,
                })));
                self.establish_authenticated(server_key);
            }
            AuthStep::Proof => {
                let transcript = exchange.transcript(CLIENT_LABEL);
                if !auth.verify(&exchange.client_key, &transcript, &step.proof) {
                    return Err(failed("the peer's proof does not verify"));
                }
                let client_key = exchange.client_key;
                self.establish_authenticated(client_key);
            }
        }
        Ok(())
    }

    fn establish_authenticated(&mut self, peer_key: [u8; 32]) {
        let Some(pending) = self.auth.take() else {
            return;
        };
        let Some(mut peer) = pending.peer else {
            return;
        };
        if pending.exchange.scheme == AuthScheme::Ed25519 {
            peer.public_key = Some(Box::new(PublicKey(peer_key)));
        }
        self.establish(peer);
    }
}
