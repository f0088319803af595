//! The test vectors in docs/PROTOCOL.md: every ```hex name=… block decodes to the message the
//! document describes and re-encodes to the same bytes.

use std::borrow::Cow;

use nnp::wire::{
    decode_frame, encode_frame, DisconnectReason, ErrorCode, Hello, Message, SyncMode, WeightSync,
    DEFAULT_MAX_PAYLOAD,
};

/// `(name, bytes)` of every vector block in the document.
fn vectors(doc: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in doc.lines() {
        if let Some(name) = line.strip_prefix("```hex name=") {
            assert!(current.is_none(), "unclosed vector block");
            current = Some((name.trim().to_string(), String::new()));
        } else if line.starts_with("```") {
            if let Some((name, hex)) = current.take() {
                out.push((name, decode_hex(&hex)));
            }
        } else if let Some((_, hex)) = current.as_mut() {
            let data = line.split('#').next().unwrap_or("");
            hex.extend(data.chars().filter(|c| !c.is_whitespace()));
        }
    }
    assert!(current.is_none(), "unclosed vector block at the end");
    out
}

fn decode_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len() % 2 == 0, "odd number of hex digits");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
        .collect()
}

/// The sequence number and message each vector is documented to hold.
fn expected(name: &str) -> (u64, Message<'static>) {
    match name {
        "handshake" => (
            0,
            Message::Handshake(Hello {
                node_id: 0x0102_0304_0506_0708,
                min_version: 1,
                max_version: 1,
                capabilities: 0x0f,
                layer_sizes: Cow::Owned(vec![784, 128, 10]),
                name: Cow::Borrowed("node-a"),
            }),
        ),
        "handshake_ack" => (
            0,
            Message::HandshakeAck(Hello {
                node_id: 0x1122_3344_5566_7788,
                min_version: 1,
                max_version: 1,
                capabilities: 0x03,
                layer_sizes: Cow::Owned(vec![784, 10]),
                name: Cow::Borrowed("nœud-b"),
            }),
        ),
        "forward_data" => (
            1,
            Message::ForwardData {
                layer_id: 3,
                data: Cow::Owned(vec![1.0, -2.0]),
            },
        ),
        "backward_data" => (
            2,
            Message::BackwardData {
                layer_id: 1,
                data: Cow::Owned(vec![0.5]),
            },
        ),
        "hebbian_data" => (
            3,
            Message::HebbianData {
                layer_id: 2,
                learning_rate: 0.5,
                rows: 2,
                cols: 2,
                correlations: Cow::Owned(vec![1.0, 2.0, 3.0, 4.0]),
            },
        ),
        "weight_sync" => (
            4,
            Message::WeightSync(WeightSync {
                layer_id: 1,
                mode: SyncMode::Average,
                rows: 2,
                cols: 3,
                offset: 4,
                sample_count: 100,
                values: Cow::Owned(vec![0.25, -1.0, 8.0]),
            }),
        ),
        "heartbeat" => (
            5,
            Message::Heartbeat {
                timestamp_ns: 123_456_789,
                reply: true,
            },
        ),
        "disconnect" => (
            6,
            Message::Disconnect {
                reason: DisconnectReason::SHUTDOWN,
                message: Cow::Borrowed("bye"),
            },
        ),
        "error" => (
            7,
            Message::Error {
                code: ErrorCode::MALFORMED_PAYLOAD,
                message: Cow::Borrowed("bad"),
            },
        ),
        "auth_challenge" | "auth_response" | "auth_proof" => auth_exchange()
            .into_iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, seq, msg)| (seq, msg))
            .expect("the exchange has every step"),
        other => panic!("docs/PROTOCOL.md has a vector named {other:?} this test does not know"),
    }
}

#[test]
fn protocol_md_vectors_decode_and_reencode() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).expect("docs/PROTOCOL.md");
    let vectors = vectors(&doc);

    let mut names: Vec<&str> = vectors.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    let mut want = [
        "backward_data",
        "disconnect",
        "error",
        "forward_data",
        "handshake",
        "handshake_ack",
        "heartbeat",
        "hebbian_data",
        "weight_sync",
        "auth_challenge",
        "auth_response",
        "auth_proof",
    ];
    want.sort_unstable();
    assert_eq!(
        names, want,
        "one vector per message type, and the authentication steps"
    );

    for (name, bytes) in &vectors {
        let (sequence, message) = expected(name);
        let (frame, used) = decode_frame(bytes, DEFAULT_MAX_PAYLOAD)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: incomplete"));
        assert_eq!(used, bytes.len(), "{name}: trailing bytes");
        assert_eq!(frame.sequence, sequence, "{name}");
        assert_eq!(frame.message, message, "{name}");

        let mut out = Vec::new();
        encode_frame(&message, sequence, &mut out).unwrap();
        assert_eq!(&out, bytes, "{name}: re-encoding differs");
    }
}

/// The authenticated exchange of docs/PROTOCOL.md ("Authentication"), made by this crate's
/// sessions from the document's fixed keys and nonces: `(vector name, sequence, message)`.
fn auth_exchange() -> Vec<(&'static str, u64, Message<'static>)> {
    use nnp::auth::{AuthConfig, Credential, NodeKey};
    use nnp::session::{Role, Session, SessionConfig};
    use std::sync::Arc;

    let side = |node_id: u64, name: &str, seed: u8, nonce: u8| {
        let auth = AuthConfig::new(Credential::Ed25519(NodeKey::from_seed(&[seed; 32])))
            .fixed_nonce([nonce; 32]);
        Arc::new(SessionConfig {
            node_id,
            name: name.into(),
            capabilities: 0x0f,
            layer_sizes: vec![784, 10],
            auth: Some(Arc::new(auth)),
            ..SessionConfig::default()
        })
    };
    let now = std::time::Instant::now();
    let mut client = Session::new(
        Role::Initiator,
        side(0x0102_0304_0506_0708, "node-a", 0x11, 0xaa),
        now,
    );
    let mut server = Session::new(
        Role::Acceptor,
        side(0x1122_3344_5566_7788, "node-b", 0x22, 0xbb),
        now,
    );
    // Client: Handshake, Challenge; server: HandshakeAck, Response; client: Proof.
    let mut out = Vec::new();
    let mut take = |from: &mut Session, to: &mut Session, names: &[&'static str]| {
        let mut names = names.iter();
        while let Some((seq, msg)) = from.poll_transmit() {
            to.handle_frame(now, seq, &msg).unwrap();
            if matches!(msg, Message::Auth(_)) {
                out.push((*names.next().expect("one Auth frame a flight"), seq, msg));
            }
        }
    };
    take(&mut client, &mut server, &["auth_challenge"]);
    take(&mut server, &mut client, &["auth_response"]);
    take(&mut client, &mut server, &["auth_proof"]);
    assert!(client.is_established() && server.is_established());
    out
}

#[test]
fn protocol_md_server_transcript_is_the_one_signed() {
    use nnp::auth::transcript::{Exchange, SERVER_LABEL};
    use nnp::auth::NodeKey;
    use nnp::wire::AuthScheme;

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).expect("docs/PROTOCOL.md");
    let block = doc
        .split("```hex transcript=server\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```hex transcript=server block");
    let hex: String = block
        .lines()
        .flat_map(|l| l.split('#').next())
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    let exchange = Exchange {
        scheme: AuthScheme::Ed25519,
        version: 1,
        capabilities: 0x10f,
        client_node_id: 0x0102_0304_0506_0708,
        server_node_id: 0x1122_3344_5566_7788,
        client_key: NodeKey::from_seed(&[0x11; 32]).public_key().0,
        client_nonce: [0xaa; 32],
        server_key: NodeKey::from_seed(&[0x22; 32]).public_key().0,
        server_nonce: [0xbb; 32],
    };
    assert_eq!(decode_hex(&hex), exchange.transcript(SERVER_LABEL).to_vec());
}
