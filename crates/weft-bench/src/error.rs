use weft_net::ClientError;

/// Why a benchmark could not run. Failed requests during a run are not
/// errors of the benchmark: they are counted in the report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The command line asked for something impossible (user's fault).
    #[error("bad arguments: {0}")]
    BadArgs(String),
    /// A client could not connect or handshake (server down, wrong address).
    #[error("client {client} cannot connect to {endpoint}: {source}")]
    Connect { client: usize, endpoint: String, source: ClientError },
    /// A RESP client could not connect to the Redis server.
    #[error("client {client} cannot connect to {endpoint}: {source}")]
    RespConnect { client: usize, endpoint: String, source: std::io::Error },
    /// Building a request failed (a bug here, or a payload over the limits).
    #[error("cannot build the request: {0}")]
    Request(#[from] weft_wire::BodyError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot write the report: {0}")]
    Output(std::io::Error),
}
