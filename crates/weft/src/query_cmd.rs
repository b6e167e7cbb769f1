//! `weft query`, `weft table`, `weft kv`: the query API's CLI (weft-api's
//! cli module), with the global connection options mapped onto gRPC.

use std::time::Duration;

use anyhow::Result;
use weft_api::cli::{self, Connect, GrpcArgs, KvCmd, TableCmd};

use crate::client_cmd::{ClientArgs, OutputArgs};

fn connect(client: &ClientArgs, grpc: &GrpcArgs) -> Connect {
    Connect {
        addr: grpc.grpc_addr.clone(),
        timeout: Duration::from_millis(client.timeout_ms.max(1)),
        ca: client.tls.ca.clone(),
        cert: client.tls.cert.clone(),
        key: client.tls.key.clone(),
        server_name: client.tls.server_name.clone(),
        token: client.tls.token.clone(),
    }
}

/// An UNAUTHENTICATED answer to a call sent without a token says how to
/// pass one (the server's message speaks of the header).
fn hint(client: &ClientArgs, r: Result<(), cli::CliError>) -> Result<()> {
    match r {
        Err(e) if e.is_unauthenticated() && client.tls.token.as_deref().is_none_or(str::is_empty) => {
            Err(anyhow::Error::new(e).context("the node has auth on: pass a token with --token or WEFT_TOKEN (a new node's admin token is in DATA_DIR/admin.token)"))
        }
        r => Ok(r?),
    }
}

pub async fn query(client: &ClientArgs, grpc: &GrpcArgs, out: OutputArgs, aql: &str, serializable: bool) -> Result<()> {
    hint(client, cli::run_query(&connect(client, grpc), aql, out.json, serializable).await)
}

pub async fn table(client: &ClientArgs, grpc: &GrpcArgs, out: OutputArgs, cmd: &TableCmd) -> Result<()> {
    hint(client, cli::run_table(&connect(client, grpc), cmd, out.json).await)
}

pub async fn kv(client: &ClientArgs, grpc: &GrpcArgs, out: OutputArgs, cmd: &KvCmd) -> Result<()> {
    hint(client, cli::run_kv(&connect(client, grpc), cmd, out.json).await)
}
