//! The TLS options shared by the commands: `--tls-cert/--tls-key/--tls-client-ca` on the
//! commands that listen, `--tls-ca/--tls-server-name/--tls-cert/--tls-key` on those that
//! connect. Without them a command speaks plain TCP.

use std::path::PathBuf;

use nnp::net::{EngineConfig, TlsClient, TlsConfig, TlsServer};

/// TLS for the connections a command accepts.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct TlsServerArgs {
    /// Accept TLS 1.3 only, presenting this certificate chain (PEM, leaf first).
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require a client certificate that chains to a CA in this PEM file (mutual TLS).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

/// TLS for the connections a command makes.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct TlsClientArgs {
    /// Connect with TLS 1.3, trusting servers whose certificate chains to a CA in this PEM
    /// file.
    #[arg(long, value_name = "PATH")]
    tls_ca: Option<PathBuf>,
    /// The name the server's certificate must carry [default: the IP address connected to].
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    tls_server_name: Option<String>,
    /// This node's certificate chain (PEM), for servers that require one (mutual TLS).
    #[arg(long, value_name = "PATH", requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl TlsServerArgs {
    /// `config` accepting with TLS if the options ask for it.
    pub(crate) fn apply(&self, config: EngineConfig) -> Result<EngineConfig, nnp::net::TlsError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(config);
        };
        let server = TlsServer::from_pem_files(cert, key, self.tls_client_ca.as_deref())?;
        let tls = TlsConfig {
            accept: Some(server),
            ..config.tls.clone()
        };
        Ok(config.tls(tls))
    }
}

impl TlsClientArgs {
    /// `config` connecting with TLS if the options ask for it.
    pub(crate) fn apply(&self, config: EngineConfig) -> Result<EngineConfig, nnp::net::TlsError> {
        let Some(ca) = &self.tls_ca else {
            return Ok(config);
        };
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            _ => None,
        };
        let mut client = TlsClient::from_pem_files(ca, identity)?;
        if let Some(name) = &self.tls_server_name {
            client = client.server_name(name)?;
        }
        let tls = TlsConfig {
            connect: Some(client),
            ..config.tls.clone()
        };
        Ok(config.tls(tls))
    }
}
