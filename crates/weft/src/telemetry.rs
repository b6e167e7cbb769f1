//! OpenTelemetry traces: Weft's `tracing` spans exported over OTLP/HTTP
//! (protobuf) when `otel.endpoint` is set (docs/observability.md, "Traces").
//!
//! The exporter's HTTP client is a small blocking HTTP/1.1 client of our
//! own ([`PlainHttp`]): the SDK's batch processor exports from a thread of
//! its own, where a blocking socket is right, and it spares the build
//! reqwest and its runtime. It speaks plain `http://` only (a collector
//! beside the node; TLS to a collector is not supported yet).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use opentelemetry::trace::TracerProvider;
use opentelemetry::KeyValue;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::{Layer, Registry};

use crate::config::OtelConf;

/// Largest response body read from a collector (an OTLP answer is tiny).
const MAX_RESPONSE_BYTES: u64 = 1 << 20;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The running exporter; [`Tracing::shutdown`] flushes what is buffered.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "flushing traces at shutdown failed");
        }
    }
}

pub type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The tracing layer exporting spans, or `None` when `otel.endpoint` is empty.
pub fn layer(cfg: &OtelConf, node_name: &str) -> Result<Option<(BoxedLayer, Tracing)>> {
    if cfg.endpoint.is_empty() {
        return Ok(None);
    }
    if !(0.0..=1.0).contains(&cfg.sample_ratio) {
        bail!("otel.sample_ratio must be between 0 and 1, not {}", cfg.sample_ratio);
    }
    let endpoint = traces_url(&cfg.endpoint)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(PlainHttp)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(IO_TIMEOUT)
        .build()
        .context("otel: building the OTLP exporter")?;
    let resource = Resource::builder()
        .with_service_name(cfg.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attribute(KeyValue::new("weft.node.name", node_name.to_owned()))
        .build();
    // A caller's sampling decision (traceparent flags) is kept; new traces
    // are sampled at otel.sample_ratio.
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(cfg.sample_ratio)));
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_sampler(sampler).with_resource(resource).build();
    let tracer = provider.tracer("weft");
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.filter).with_context(|| format!("otel.filter {:?}", cfg.filter))?;
    let layer = tracing_opentelemetry::layer().with_tracer(tracer).with_filter(filter).boxed();
    Ok(Some((layer, Tracing { provider })))
}

/// The `traceparent` this process's native clients send (to servers that
/// accept it): the current span's when it is traced, else the
/// `TRACEPARENT` environment variable (OpenTelemetry's carrier for
/// command-line tools), e.g. `TRACEPARENT=00-... weft produce t`.
pub fn outgoing_traceparent() -> Option<String> {
    weft_service::trace::current_traceparent()
        .or_else(|| std::env::var("TRACEPARENT").ok().filter(|t| weft_service::trace::parse_traceparent(t).is_some()))
}

/// `http://host:port` gets the OTLP traces path; a URL with a path is used as is.
fn traces_url(endpoint: &str) -> Result<String> {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        bail!("otel.endpoint must be an http:// URL (OTLP/HTTP), not {endpoint:?}");
    };
    Ok(match rest.find('/') {
        Some(i) if i + 1 < rest.len() => endpoint.to_owned(),
        _ => format!("http://{}/v1/traces", rest.trim_end_matches('/')),
    })
}

/// A blocking HTTP/1.1 client for `http://` URLs, one connection per export.
#[derive(Debug)]
struct PlainHttp;

#[async_trait::async_trait]
impl HttpClient for PlainHttp {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let uri = request.uri();
        if uri.scheme_str() != Some("http") {
            return Err(format!("only http:// collectors are supported, not {uri}").into());
        }
        let host = uri.host().ok_or("collector URL without a host")?;
        let port = uri.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let addr = (host, port).to_socket_addrs()?.next().ok_or("collector host does not resolve")?;
        let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut head = format!("{} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n", request.method());
        for (k, v) in request.headers() {
            if k != "host" && k != "content-length" && k != "connection" {
                head.push_str(&format!("{k}: {}\r\n", v.to_str()?));
            }
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", request.body().len()));
        s.write_all(head.as_bytes())?;
        s.write_all(request.body())?;
        let mut raw = vec![];
        s.take(MAX_RESPONSE_BYTES).read_to_end(&mut raw)?;
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("collector answer without a header end")?;
        let head = std::str::from_utf8(raw.get(..split).unwrap_or_default())?;
        let status: u16 = head.split_whitespace().nth(1).ok_or("collector answer without a status")?.parse()?;
        let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        // The SDK only reads an answer's body for partial-success details;
        // a chunked one is passed on empty rather than decoded.
        let body = if chunked { Bytes::new() } else { Bytes::copy_from_slice(raw.get(split + 4..).unwrap_or_default()) };
        Ok(Response::builder().status(status).body(body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn endpoint_urls() {
        assert_eq!(traces_url("http://127.0.0.1:4318").unwrap(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://127.0.0.1:4318/").unwrap(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://c:1/x/traces").unwrap(), "http://c:1/x/traces");
        assert!(traces_url("https://c:1").is_err());
    }
}
