//! TLS 1.3 between engines, nodes and `nnp serve` over loopback, with certificates made here:
//! data crosses intact, a server the client does not trust is refused, mutual TLS refuses a
//! client without a certificate signed by its CA, and OpenSSL's own client completes a
//! TLS 1.3 handshake with `nnp serve` and an NNP handshake through it.

mod common;

use std::borrow::Cow;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::net::{config, echo_server, start, weight_sync};
use common::pcap::{required_tool, scratch_dir};
use common::process::Processes;
use common::raw_peer::RawPeer;
use nnp::net::{
    CloseCause, Engine, EngineConfig, EngineHandle, NetError, NetEvent, TlsClient, TlsConfig,
    TlsServer,
};
use nnp::nn::NeuralNetwork;
use nnp::node::{DistributedNetwork, NodeConfig, NodeEvent};
use nnp::wire::{decode_frame, encode_frame, Message, MsgType};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// A CA that signs certificates, its PEM written to `dir/<name>-ca.pem`.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        Ca { cert, key, pem }
    }

    /// A certificate for localhost and 127.0.0.1 signed by this CA; returns the paths of
    /// its PEM chain and key.
    fn issue(&self, dir: &Path, name: &str, usage: ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

/// A server CA with a server certificate, and a client CA with a client certificate.
struct Pki {
    dir: PathBuf,
    server_ca: Ca,
    server: (PathBuf, PathBuf),
    client_ca: Ca,
    client: (PathBuf, PathBuf),
}

impl Pki {
    fn new(test: &str) -> Pki {
        let dir = scratch_dir(test);
        let server_ca = Ca::new(&dir, "server");
        let server = server_ca.issue(&dir, "node", ExtendedKeyUsagePurpose::ServerAuth);
        let client_ca = Ca::new(&dir, "client");
        let client = client_ca.issue(&dir, "peer", ExtendedKeyUsagePurpose::ClientAuth);
        Pki {
            dir,
            server_ca,
            server,
            client_ca,
            client,
        }
    }

    fn server(&self, client_ca: Option<&Path>) -> TlsConfig {
        TlsConfig {
            accept: Some(
                TlsServer::from_pem_files(&self.server.0, &self.server.1, client_ca).unwrap(),
            ),
            connect: None,
        }
    }

    fn client(&self, ca: &Path, identity: Option<(&Path, &Path)>) -> TlsConfig {
        TlsConfig {
            accept: None,
            connect: Some(TlsClient::from_pem_files(ca, identity).unwrap()),
        }
    }
}

fn forward(values: &[f32]) -> Message<'_> {
    Message::ForwardData {
        layer_id: 1,
        data: Cow::Borrowed(values),
    }
}

/// Waits until the server's engine has counted a TLS failure.
fn tls_failures_reach(server: &EngineHandle, at_least: u64) -> u64 {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = server.metrics().tls_failures;
        if seen >= at_least || Instant::now() > until {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn refused_for_tls(result: Result<nnp::net::ConnId, NetError>) -> String {
    match result {
        Err(NetError::Closed(CloseCause::Tls(reason))) => reason,
        other => panic!("expected a TLS refusal, got {other:?}"),
    }
}

#[test]
fn frames_small_and_bulk_cross_tls_intact_and_come_back() {
    let pki = Pki::new("tls_round_trip");
    let (_server, handle, rx, addr) = start(config("server").tls(pki.server(None)));
    let echo = echo_server(handle.clone(), rx, 3);
    let (_client, client, mut crx) =
        Engine::start(config("client").tls(pki.client(&pki.server_ca.pem, None))).unwrap();
    let conn = client.connect(addr).unwrap();
    let small = [1.5f32, -2.0, 3.25];
    let bulk: Vec<f32> = (0..1024 * 1024).map(|i| i as f32).collect();
    client
        .send(conn, &forward(&small), Duration::from_secs(5))
        .unwrap();
    client
        .send(conn, &weight_sync(&bulk), Duration::from_secs(5))
        .unwrap();
    client
        .send(conn, &forward(&small[..1]), Duration::from_secs(5))
        .unwrap();
    let mut back = Vec::new();
    while back.len() < 3 {
        match crx
            .recv_timeout(Duration::from_secs(10))
            .expect("the echoes arrive")
        {
            NetEvent::Frame(frame) => back.push(frame.message().unwrap().into_owned()),
            NetEvent::Connected { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut forwards: Vec<_> = back
        .iter()
        .filter(|m| m.msg_type() == MsgType::ForwardData)
        .collect();
    forwards.sort_by_key(|m| match m {
        Message::ForwardData { data, .. } => std::cmp::Reverse(data.len()),
        _ => unreachable!(),
    });
    assert_eq!(*forwards[0], forward(&small));
    assert_eq!(*forwards[1], forward(&small[..1]));
    let sync = back
        .iter()
        .find(|m| m.msg_type() == MsgType::WeightSync)
        .expect("the WeightSync comes back");
    assert_eq!(*sync, weight_sync(&bulk));
    client.close(conn, nnp::wire::DisconnectReason::NORMAL, "done");
    drop(handle);
    let _ = echo;
    assert_eq!(client.metrics().tls_failures, 0);
}

#[test]
fn nodes_exchange_data_over_tls() {
    let pki = Pki::new("tls_nodes");
    let node_config = |tls: TlsConfig| NodeConfig {
        engine: NodeConfig::default().engine.tls(tls),
        ..NodeConfig::default()
    };
    let net =
        || NeuralNetwork::with_layers_and_mode(&[4, 3, 2], 0.1, nnp::nn::HebbianLearningMode::Oja);
    let (hub, mut hub_rx) = DistributedNetwork::with_config(
        "hub",
        "127.0.0.1",
        0,
        net(),
        node_config(pki.server(None)),
    )
    .unwrap();
    let addr = hub.start_server().unwrap();
    let (spoke, _spoke_rx) = DistributedNetwork::with_config(
        "spoke",
        "127.0.0.1",
        0,
        net(),
        node_config(pki.client(&pki.server_ca.pem, None)),
    )
    .unwrap();
    let peer = spoke.connect_to("127.0.0.1", addr.port()).unwrap();
    let values = [0.25f32, 0.5, -1.0, 2.0];
    spoke.send_forward_data(peer, 0, &values).unwrap();
    loop {
        match hub_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the data arrives")
        {
            NodeEvent::Message(m) => {
                assert_eq!(
                    m.message(),
                    Message::ForwardData {
                        layer_id: 0,
                        data: Cow::Borrowed(&values)
                    }
                );
                break;
            }
            NodeEvent::PeerDisconnected { cause, .. } => panic!("the spoke left: {cause}"),
            _ => {}
        }
    }
}

#[test]
fn a_client_that_does_not_trust_the_server_ca_is_refused_and_counted() {
    let pki = Pki::new("tls_untrusted");
    let (_server, handle, _rx, addr) = start(config("server").tls(pki.server(None)));
    // The client trusts only the client CA, which did not sign the server's certificate.
    let (_client, client, _crx) =
        Engine::start(config("client").tls(pki.client(&pki.client_ca.pem, None))).unwrap();
    let reason = refused_for_tls(client.connect(addr));
    assert!(
        reason.contains("UnknownIssuer") || reason.contains("unknown issuer"),
        "the refusal names the untrusted issuer: {reason}"
    );
    assert_eq!(client.metrics().tls_failures, 1);
    assert_eq!(
        tls_failures_reach(&handle, 1),
        1,
        "the server counts it too"
    );
    assert!(handle.peers().is_empty());
}

#[test]
fn a_plain_client_gets_nowhere_with_a_tls_server() {
    let pki = Pki::new("tls_plain_client");
    let (_server, handle, _rx, addr) = start(config("server").tls(pki.server(None)));
    let mut raw = RawPeer::connect(addr);
    raw.send(&RawPeer::hello());
    assert!(raw.read_frame().is_none(), "no NNP frame comes back");
    assert_eq!(tls_failures_reach(&handle, 1), 1);
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate_and_accepts_one_signed_by_its_ca() {
    let pki = Pki::new("tls_mutual");
    let (_server, handle, rx, addr) =
        start(config("server").tls(pki.server(Some(&pki.client_ca.pem))));
    let echo = echo_server(handle.clone(), rx, 1);

    let (_anonymous, anonymous, _arx) =
        Engine::start(config("anonymous").tls(pki.client(&pki.server_ca.pem, None))).unwrap();
    let reason = refused_for_tls(anonymous.connect(addr));
    assert!(
        reason.to_lowercase().contains("certificate"),
        "the refusal says a certificate was required: {reason}"
    );
    assert_eq!(tls_failures_reach(&handle, 1), 1);

    // A certificate from a CA the server does not know is no better.
    let stranger_ca = Ca::new(&pki.dir, "stranger");
    let stranger = stranger_ca.issue(
        &pki.dir,
        "stranger-peer",
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let (_stranger, stranger_handle, _srx) = Engine::start(
        config("stranger").tls(pki.client(&pki.server_ca.pem, Some((&stranger.0, &stranger.1)))),
    )
    .unwrap();
    refused_for_tls(stranger_handle.connect(addr));
    assert_eq!(tls_failures_reach(&handle, 2), 2);

    let identity = Some((pki.client.0.as_path(), pki.client.1.as_path()));
    let (_client, client, mut crx) =
        Engine::start(config("client").tls(pki.client(&pki.server_ca.pem, identity))).unwrap();
    let conn = client
        .connect(addr)
        .expect("a client with a certificate is accepted");
    let values = [7.0f32, 8.0];
    client
        .send(conn, &forward(&values), Duration::from_secs(5))
        .unwrap();
    loop {
        match crx
            .recv_timeout(Duration::from_secs(10))
            .expect("the echo arrives")
        {
            NetEvent::Frame(frame) => {
                assert_eq!(frame.message().unwrap(), forward(&values));
                break;
            }
            NetEvent::Connected { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let _ = echo;
    assert_eq!(handle.metrics().tls_failures, 2);
}

#[test]
fn loading_errors_name_the_file() {
    let pki = Pki::new("tls_loading");
    let missing = pki.dir.join("missing.pem");
    let e = TlsServer::from_pem_files(&missing, &pki.server.1, None).unwrap_err();
    assert!(e.to_string().contains("missing.pem"), "{e}");
    // A certificate where the key should be.
    let e = TlsServer::from_pem_files(&pki.server.0, &pki.server.0, None).unwrap_err();
    assert!(
        e.to_string().contains("node.pem") && e.to_string().contains("private key"),
        "{e}"
    );
    // A key that is not the certificate's.
    let e = TlsServer::from_pem_files(&pki.server.0, &pki.client.1, None).unwrap_err();
    assert!(e.to_string().contains("peer.key"), "{e}");
    let e = TlsClient::from_pem_files(&pki.server.1, None).unwrap_err();
    assert!(e.to_string().contains("node.key"), "{e}");
    let e = TlsClient::from_pem_files(&pki.server_ca.pem, None)
        .unwrap()
        .server_name("not a name!")
        .unwrap_err();
    assert!(e.to_string().contains("not a name!"), "{e}");
}

/// `EngineConfig` stays plain unless told otherwise.
#[test]
fn plain_tcp_is_the_default() {
    let config = EngineConfig::default();
    assert!(config.tls.accept.is_none() && config.tls.connect.is_none());
}

/// Starts `nnp serve` with TLS on a free port; returns it and its address.
fn serve_tls(pki: &Pki) -> (Processes, String) {
    let mut server = Command::new(env!("CARGO_BIN_EXE_nnp"))
        .args(["serve", "--port", "0", "--tls-cert"])
        .arg(&pki.server.0)
        .arg("--tls-key")
        .arg(&pki.server.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = server.stdout.take().unwrap();
    let processes = Processes(vec![server]);
    let line = std::io::BufReader::new(stdout)
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("not a listening line: {line:?}"))
        .to_owned();
    (processes, addr)
}

#[test]
fn nnp_send_with_the_ca_reaches_nnp_serve_over_tls_and_without_it_does_not() {
    let pki = Pki::new("tls_cli_send");
    let (_processes, addr) = serve_tls(&pki);
    let data = vec!["0.5"; 64].join(",");
    let send = |extra: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_nnp"))
            .args(["send", "--to", &addr, "--type", "forward", "--data", &data])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = send(&["--tls-ca".as_ref(), pki.server_ca.pem.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = send(&[
        "--tls-ca".as_ref(),
        pki.server_ca.pem.as_os_str(),
        "--tls-server-name".as_ref(),
        "localhost".as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Trusting the wrong CA: refused, and told why.
    let out = send(&["--tls-ca".as_ref(), pki.client_ca.pem.as_os_str()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS"), "{err}");
    // A missing CA file is named.
    let missing = pki.dir.join("nowhere.pem");
    let out = send(&["--tls-ca".as_ref(), missing.as_os_str()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere.pem"));
}

#[test]
fn openssl_s_client_completes_tls13_and_an_nnp_handshake_with_nnp_serve() {
    let Some(openssl) = required_tool("openssl", "openssl") else {
        return;
    };
    let pki = Pki::new("tls_openssl");
    let (mut processes, addr) = serve_tls(&pki);

    let mut client = Command::new(openssl)
        .args(["s_client", "-tls1_3", "-quiet", "-verify_return_error"])
        .args(["-connect", &addr, "-servername", "localhost", "-CAfile"])
        .arg(&pki.server_ca.pem)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    let mut stdout = client.stdout.take().unwrap();
    let mut stderr = client.stderr.take().unwrap();
    processes.0.push(client);
    // The Handshake frame, encoded by the crate's own encoder.
    let mut hello = Vec::new();
    encode_frame(&RawPeer::hello(), 0, &mut hello).unwrap();
    stdin.write_all(&hello).unwrap();
    stdin.flush().unwrap();

    let (tx, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Ok(Some((frame, _))) = decode_frame(&buf, u32::MAX) {
                let _ = tx.send(Ok(frame.message.msg_type()));
                return;
            }
            match stdout.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    let mut err = String::new();
                    let _ = stderr.read_to_string(&mut err);
                    let _ = tx.send(Err(err));
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    match answer.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(msg_type)) => assert_eq!(msg_type, MsgType::HandshakeAck),
        Ok(Err(stderr)) => panic!("s_client ended without an answer: {stderr}"),
        Err(_) => panic!("no answer through s_client within 20 s"),
    }
    drop(stdin);
    drop(processes);
}
