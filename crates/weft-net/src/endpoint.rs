use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::NetError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
    Unix,
    /// TLS over TCP.
    Tls,
    /// QUIC (TLS 1.3 inside) over UDP.
    Quic,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Unix => "unix",
            Transport::Tls => "tls",
            Transport::Quic => "quic",
        }
    }
}

/// Where a server listens or a client connects: `tcp://HOST:PORT`,
/// `udp://HOST:PORT` or `unix://PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(String),
    Udp(String),
    Unix(PathBuf),
}

impl Endpoint {
    pub fn transport(&self) -> Transport {
        match self {
            Endpoint::Tcp(_) => Transport::Tcp,
            Endpoint::Udp(_) => Transport::Udp,
            Endpoint::Unix(_) => Transport::Unix,
        }
    }
}

impl FromStr for Endpoint {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self, NetError> {
        let bad = || NetError::BadEndpoint(s.to_owned());
        let (scheme, rest) = s.split_once("://").ok_or_else(bad)?;
        if rest.is_empty() {
            return Err(bad());
        }
        match scheme {
            "tcp" => Ok(Endpoint::Tcp(rest.to_owned())),
            "udp" => Ok(Endpoint::Udp(rest.to_owned())),
            "unix" => Ok(Endpoint::Unix(PathBuf::from(rest))),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::Udp(a) => write!(f, "udp://{a}"),
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// Where a client connects: any [`Endpoint`], or a secured one,
/// `tls://HOST:PORT` (TLS over TCP) or `quic://HOST:PORT`.
///
/// A separate type rather than two more `Endpoint` variants because code
/// outside this crate matches `Endpoint` exhaustively (weft-ekosis' stream
/// client, which speaks no TLS); `Client::connect` takes either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Plain(Endpoint),
    Tls(String),
    Quic(String),
}

impl Target {
    pub fn transport(&self) -> Transport {
        match self {
            Target::Plain(e) => e.transport(),
            Target::Tls(_) => Transport::Tls,
            Target::Quic(_) => Transport::Quic,
        }
    }
}

impl From<Endpoint> for Target {
    fn from(e: Endpoint) -> Self {
        Target::Plain(e)
    }
}

impl FromStr for Target {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self, NetError> {
        let bad = || NetError::BadEndpoint(s.to_owned());
        match s.split_once("://") {
            Some(("tls", rest)) if !rest.is_empty() => Ok(Target::Tls(rest.to_owned())),
            Some(("quic", rest)) if !rest.is_empty() => Ok(Target::Quic(rest.to_owned())),
            Some(("tls" | "quic", _)) => Err(bad()),
            _ => Ok(Target::Plain(s.parse()?)),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Plain(e) => e.fmt(f),
            Target::Tls(a) => write!(f, "tls://{a}"),
            Target::Quic(a) => write!(f, "quic://{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!("tcp://127.0.0.1:7400".parse::<Endpoint>().unwrap(), Endpoint::Tcp("127.0.0.1:7400".into()));
        assert_eq!("unix:///tmp/w.sock".parse::<Endpoint>().unwrap(), Endpoint::Unix("/tmp/w.sock".into()));
        assert_eq!("unix://weft-data/weft.sock".parse::<Endpoint>().unwrap().to_string(), "unix://weft-data/weft.sock");
        assert!("http://x".parse::<Endpoint>().is_err());
        assert!("127.0.0.1:7400".parse::<Endpoint>().is_err());
        assert!("tcp://".parse::<Endpoint>().is_err());
    }

    #[test]
    fn parse_targets() {
        assert_eq!("tls://127.0.0.1:7403".parse::<Target>().unwrap(), Target::Tls("127.0.0.1:7403".into()));
        assert_eq!("quic://[::1]:7401".parse::<Target>().unwrap().to_string(), "quic://[::1]:7401");
        assert_eq!("quic://h:1".parse::<Target>().unwrap().transport(), Transport::Quic);
        assert_eq!("tcp://h:1".parse::<Target>().unwrap(), Target::Plain(Endpoint::Tcp("h:1".into())));
        assert!("tls://".parse::<Target>().is_err());
        assert!("tls://x".parse::<Endpoint>().is_err());
        assert!("ftp://x".parse::<Target>().is_err());
    }
}
