//! `weft serve`'s logs: text or JSON lines on stderr (`log_format`), with
//! a filter (`log`, RUST_LOG wins) that `weft.log_level` / `weft log-level`
//! replace at run time through tracing-subscriber's reload layer.
//!
//! The filter is a per-layer filter on the log output only, so a quieter
//! log level never drops the spans other layers (the OpenTelemetry export)
//! see.

use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// Changes the running log filter; cheap to clone.
#[derive(Clone)]
pub struct LogLevel {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The filter string in force (EnvFilter does not give its source back).
    current: Arc<Mutex<String>>,
}

#[derive(Debug, Deserialize, Default)]
pub struct LogLevelRequest {
    /// A tracing EnvFilter (`debug`, `warn,weft_log=debug`, ...); absent:
    /// only report the filter in force.
    #[serde(default)]
    pub filter: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LogLevelResponse {
    pub filter: String,
    pub previous: String,
}

impl LogLevel {
    pub fn current(&self) -> String {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replace the filter; returns the one it replaced.
    pub fn set(&self, filter: &str) -> Result<String, String> {
        let parsed = EnvFilter::try_new(filter).map_err(|e| format!("bad log filter {filter:?}: {e}"))?;
        self.handle.reload(parsed).map_err(|e| format!("cannot change the log filter: {e}"))?;
        let previous = std::mem::replace(&mut *self.current.lock().unwrap_or_else(|p| p.into_inner()), filter.to_owned());
        tracing::info!(filter, previous = %previous, "log filter changed");
        Ok(previous)
    }

    /// `weft.log_level`: `{"filter": "debug"}` sets, `null` or `{}` reads.
    pub fn register(&self, service: &mut weft_service::Service) -> Result<()> {
        let me = self.clone();
        service.endpoint("weft.log_level", move |req: Option<LogLevelRequest>| {
            let me = me.clone();
            async move {
                match req.unwrap_or_default().filter {
                    None => {
                        let f = me.current();
                        Ok(LogLevelResponse { previous: f.clone(), filter: f })
                    }
                    Some(f) => {
                        let previous = me.set(&f).map_err(weft_service::ServiceError::validation)?;
                        Ok(LogLevelResponse { filter: f, previous })
                    }
                }
            }
        })?;
        Ok(())
    }
}

/// Install the process's subscriber: the log output (filtered, reloadable)
/// plus `extra` (e.g. the OpenTelemetry layer, with its own filter).
pub fn init(filter: &str, format: &str, extra: Option<Box<dyn Layer<Registry> + Send + Sync>>) -> Result<LogLevel> {
    let (filter_str, env_filter) = match std::env::var("RUST_LOG") {
        Ok(s) if EnvFilter::try_new(&s).is_ok() => (s.clone(), EnvFilter::new(s)),
        _ => match EnvFilter::try_new(filter) {
            Ok(f) => (filter.to_owned(), f),
            Err(_) => ("info".to_owned(), EnvFilter::new("info")),
        },
    };
    let (reloadable, handle) = reload::Layer::new(env_filter);
    use std::io::IsTerminal;
    let output: Box<dyn Layer<Registry> + Send + Sync> = match format {
        "text" => tracing_subscriber::fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).boxed(),
        // One JSON object per line; the fields of the spans a line is in
        // (route, client, trace_id) are under "span" and "spans".
        "json" => tracing_subscriber::fmt::layer().json().with_current_span(true).with_span_list(true).with_writer(std::io::stderr).boxed(),
        other => bail!("log_format must be text or json, not {other:?}"),
    };
    let mut layers = vec![output.with_filter(reloadable).boxed()];
    if let Some(extra) = extra {
        layers.push(extra);
    }
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(LogLevel { handle, current: Arc::new(Mutex::new(filter_str)) })
}

/// `weft log-level [LEVEL]`: set (or, without LEVEL, print) a node's filter.
pub async fn cli(args: &crate::client_cmd::ClientArgs, out: crate::client_cmd::OutputArgs, level: Option<&str>) -> Result<()> {
    let client = args.connect().await?;
    let req = serde_json::json!({ "filter": level });
    let r: Result<LogLevelResponse, _> = client.call("weft.log_level", &req).await;
    client.shutdown().await;
    let r = r?;
    if out.json {
        return crate::client_cmd::print_json(&r);
    }
    match level {
        Some(_) => println!("log filter {} (was {})", r.filter, r.previous),
        None => println!("log filter {}", r.filter),
    }
    Ok(())
}
