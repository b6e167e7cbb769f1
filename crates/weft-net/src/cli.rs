//! `weft tls ...`: development certificates for TLS, mTLS and QUIC.

use std::path::PathBuf;

use crate::error::TlsError;
use crate::tls::dev;

/// Client TLS options of every command that talks to a node over
/// `tls://` or `quic://`; `global` so they may follow a subcommand.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsClientArgs {
    /// tls/quic: PEM bundle of CAs to trust (default: the Mozilla roots).
    #[arg(long, env = "WEFT_TLS_CA", value_name = "PEM", global = true)]
    pub ca: Option<PathBuf>,
    /// tls/quic: client certificate (PEM) for mTLS.
    #[arg(long, env = "WEFT_TLS_CLIENT_CERT", value_name = "PEM", requires = "key", global = true)]
    pub cert: Option<PathBuf>,
    /// tls/quic: the client certificate's private key (PEM).
    #[arg(long, env = "WEFT_TLS_CLIENT_KEY", value_name = "PEM", requires = "cert", global = true)]
    pub key: Option<PathBuf>,
    /// tls/quic: name to verify the server certificate against (default:
    /// the host of --addr).
    #[arg(long, env = "WEFT_TLS_SERVER_NAME", global = true)]
    pub server_name: Option<String>,
    /// Bearer token or API key for a node with auth on (docs/security.md);
    /// sent in the hello on every transport. Here, beside the TLS options,
    /// so every client command of every CLI gets it with them.
    #[arg(long, env = "WEFT_TOKEN", value_name = "TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

impl TlsClientArgs {
    pub fn config(&self) -> crate::TlsClientConfig {
        crate::TlsClientConfig { ca: self.ca.clone(), cert: self.cert.clone(), key: self.key.clone(), server_name: self.server_name.clone() }
    }
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum TlsCommand {
    /// Write a development CA, a server certificate and a client
    /// certificate (for mTLS) into DIR, overwriting what is there.
    Init {
        /// Output directory (created if missing).
        #[arg(long, default_value = "./weft-tls")]
        dir: PathBuf,
        /// Names the server certificate is valid for (repeatable; default:
        /// localhost, 127.0.0.1, ::1 and HOSTNAME when set).
        #[arg(long = "name", value_name = "DNS-OR-IP")]
        names: Vec<String>,
        /// Common name of the client certificate: the identity handlers see.
        #[arg(long, default_value = "weft-client")]
        client_cn: String,
    },
}

/// Runs a `weft tls` command, printing what it wrote.
pub async fn run(cmd: TlsCommand) -> Result<(), TlsError> {
    match cmd {
        TlsCommand::Init { dir, names, client_cn } => {
            let names = if names.is_empty() { dev::default_server_names() } else { names };
            let f = dev::init(&dir, &names, &client_cn)?;
            println!("CA:     {} (key {})", f.ca_cert.display(), f.ca_key.display());
            println!("server: {} (key {}) for {}", f.server_cert.display(), f.server_key.display(), names.join(", "));
            println!("client: {} (key {}) CN={client_cn}", f.client_cert.display(), f.client_key.display());
            println!();
            println!("serve:  WEFT_TLS_CERT={} WEFT_TLS_KEY={} WEFT_TLS_CLIENT_CA={} weft serve --enable tls --enable quic --client-auth require",
                f.server_cert.display(), f.server_key.display(), f.ca_cert.display());
            println!("call:   weft ping --addr tls://127.0.0.1:7403 --ca {} --cert {} --key {}",
                f.ca_cert.display(), f.client_cert.display(), f.client_key.display());
            Ok(())
        }
    }
}
