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
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Unix => "unix",
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
}
