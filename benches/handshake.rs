//! The cost of peer authentication: a whole handshake between two in-memory sessions
//! (CPU only: both sides' state machines, no encoding, no sockets), and a connection over
//! loopback until the engine reports it established, each without authentication (the
//! baseline, same run), with Ed25519 keys and with a shared key. Rounds alternate the three
//! so that load on the machine falls on all alike.
//!
//! `cargo bench --bench handshake` (`-- --quick` for a short run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nnp::auth::{AuthConfig, Credential, NodeKey, PreSharedKey};
use nnp::net::{Engine, EngineConfig, EngineHandle};
use nnp::session::{Role, Session, SessionConfig};
use nnp::wire::DisconnectReason;

#[derive(Clone, Copy)]
enum Kind {
    Plain,
    Ed25519,
    SharedKey,
}

const KINDS: [(Kind, &str); 3] = [
    (Kind::Plain, "no authentication"),
    (Kind::Ed25519, "Ed25519 keys"),
    (Kind::SharedKey, "shared key"),
];

fn configs(kind: Kind) -> (Arc<SessionConfig>, Arc<SessionConfig>) {
    let auth = |credential: Credential| Some(Arc::new(AuthConfig::new(credential)));
    let (client, server) = match kind {
        Kind::Plain => (None, None),
        Kind::Ed25519 => (
            auth(Credential::Ed25519(NodeKey::from_seed(&[1; 32]))),
            auth(Credential::Ed25519(NodeKey::from_seed(&[2; 32]))),
        ),
        Kind::SharedKey => (
            auth(Credential::PreShared(PreSharedKey::new(&[7; 32]).unwrap())),
            auth(Credential::PreShared(PreSharedKey::new(&[7; 32]).unwrap())),
        ),
    };
    let config = |node_id, auth| {
        Arc::new(SessionConfig {
            node_id,
            name: format!("bench-{node_id}"),
            layer_sizes: vec![784, 128, 10],
            auth,
            ..SessionConfig::default()
        })
    };
    (config(1, client), config(2, server))
}

fn in_memory(client_config: &Arc<SessionConfig>, server_config: &Arc<SessionConfig>) -> Duration {
    let start = Instant::now();
    let now = start;
    let mut client = Session::new(Role::Initiator, Arc::clone(client_config), now);
    let mut server = Session::new(Role::Acceptor, Arc::clone(server_config), now);
    while !(client.is_established() && server.is_established()) {
        while let Some((seq, msg)) = client.poll_transmit() {
            server.handle_frame(now, seq, &msg).unwrap();
        }
        while let Some((seq, msg)) = server.poll_transmit() {
            client.handle_frame(now, seq, &msg).unwrap();
        }
    }
    start.elapsed()
}

fn engine(config: &Arc<SessionConfig>) -> (Engine, EngineHandle) {
    let config = EngineConfig::default()
        .threads(1)
        .session((**config).clone());
    let (engine, handle, _rx) = Engine::start(config).unwrap();
    (engine, handle)
}

fn percentiles(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:>7.1} us  p99 {:>7.1} us",
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3
    )
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, per_round) = if quick { (5, 200) } else { (20, 500) };
    let new_histogram = || Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();

    println!(
        "handshake between two in-memory sessions ({} each)",
        rounds * per_round
    );
    let mut memory: Vec<Histogram<u64>> = KINDS.iter().map(|_| new_histogram()).collect();
    let configs: Vec<_> = KINDS.iter().map(|(k, _)| configs(*k)).collect();
    for _ in 0..rounds {
        for (i, (client, server)) in configs.iter().enumerate() {
            for _ in 0..per_round {
                let t = in_memory(client, server);
                memory[i].record(t.as_nanos() as u64).unwrap();
            }
        }
    }
    let base = memory[0].value_at_quantile(0.5) as f64;
    for ((_, name), h) in KINDS.iter().zip(&memory) {
        let ratio = h.value_at_quantile(0.5) as f64 / base;
        println!("  {name:<18} {}  {ratio:>5.1}x p50", percentiles(h));
    }

    let connects = if quick { 100 } else { 400 };
    println!("connect over loopback until established ({connects} each, alternating)");
    let mut net: Vec<Histogram<u64>> = KINDS.iter().map(|_| new_histogram()).collect();
    let engines: Vec<_> = configs
        .iter()
        .map(|(client, server)| {
            let (server_engine, server_handle) = engine(server);
            let addr = server_handle.listen("127.0.0.1:0").unwrap();
            let (client_engine, client_handle) = engine(client);
            (
                server_engine,
                server_handle,
                client_engine,
                client_handle,
                addr,
            )
        })
        .collect();
    for _ in 0..connects {
        for (i, (_, _, _, client, addr)) in engines.iter().enumerate() {
            let start = Instant::now();
            let conn = client.connect(*addr).unwrap();
            net[i].record(start.elapsed().as_nanos() as u64).unwrap();
            client.close(conn, DisconnectReason::NORMAL, "");
        }
    }
    let base = net[0].value_at_quantile(0.5) as f64;
    for ((_, name), h) in KINDS.iter().zip(&net) {
        let ratio = h.value_at_quantile(0.5) as f64 / base;
        println!("  {name:<18} {}  {ratio:>5.2}x p50", percentiles(h));
    }
}
