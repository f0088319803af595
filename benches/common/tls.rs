//! TLS for a bench's engines: a CA and a server certificate for 127.0.0.1 made with rcgen at
//! start-up, written as PEM files to a scratch directory and loaded as a user would.

use std::path::PathBuf;

use nnp::net::{TlsClient, TlsConfig, TlsServer};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

/// The server's and the client's TLS configurations.
pub(crate) struct BenchTls {
    pub(crate) server: TlsConfig,
    pub(crate) client: TlsConfig,
}

pub(crate) fn bench_tls() -> BenchTls {
    let dir: PathBuf = std::env::temp_dir().join(format!("nnp-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let path = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    let ca_pem = path("ca.pem", ca.pem());
    let cert_pem = path("node.pem", cert.pem());
    let key_pem = path("node.key", key.serialize_pem());
    let tls = BenchTls {
        server: TlsConfig {
            accept: Some(TlsServer::from_pem_files(&cert_pem, &key_pem, None).unwrap()),
            connect: None,
        },
        client: TlsConfig {
            accept: None,
            connect: Some(TlsClient::from_pem_files(&ca_pem, None).unwrap()),
        },
    };
    let _ = std::fs::remove_dir_all(&dir);
    tls
}
