//! The demo PV set served by `weft pv serve`.

use std::sync::Arc;
use std::time::Duration;

use super::{Provider, Server, SharedPv, now_stamp};
use crate::config::ServerConfig;
use crate::error::Result;
use crate::proto::nt::{Builder, Meta, enum_value, nt_enum, nt_ndarray, nt_scalar, nt_scalar_array, nt_table, path_ref};
use crate::proto::{FieldDesc, ScalarArray, ScalarType, UnionValue, Value};

/// A 64x64 ushort test pattern as an NTNDArray (dimension, sizes, codec "" = raw).
fn image() -> (FieldDesc, Value) {
    let n = IMAGE_SIDE;
    let pixels: Vec<u16> = (0..n * n).map(|i| ((i % n) * (i / n)) as u16).collect();
    let dim = |size: usize| {
        Some(vec![Value::I32(size as i32), Value::I32(0), Value::I32(size as i32), Value::I32(1), Value::Bool(false)])
    };
    let bytes = (n * n * 2) as i64;
    Builder::new(nt_ndarray())
        .with("value", Value::Union(UnionValue { selector: Some(6), value: Box::new(Value::Array(ScalarArray::U16(pixels))) }))
        .with("compressedSize", Value::I64(bytes))
        .with("uncompressedSize", Value::I64(bytes))
        .with("dimension", Value::StructArray(vec![dim(n), dim(n)]))
        .with("uniqueId", Value::I32(1))
        .with("timeStamp", now_stamp())
        .with("dataTimeStamp", now_stamp())
        .build()
}

pub const COUNTER: &str = "weft:demo:counter";
pub const WAVEFORM: &str = "weft:demo:waveform";
pub const ENUM: &str = "weft:demo:enum";
pub const TABLE: &str = "weft:demo:table";
pub const SETPOINT: &str = "weft:demo:setpoint";
pub const ADD: &str = "weft:demo:add";
pub const IMAGE: &str = "weft:demo:image";
/// A writable static double array (for big puts; the waveform keeps moving).
pub const BUFFER: &str = "weft:demo:buffer";

/// Writable NTScalar int whose process action (CMD_PROCESS, or a put with
/// `record[process=true]`) adds one: shows the process hook.
pub const PROCESSED: &str = "weft:demo:processed";

/// Side of the demo NTNDArray image (ushort pixels).
pub const IMAGE_SIDE: usize = 64;

/// Points in the demo waveform.
pub const WAVEFORM_LEN: usize = 1000;

fn waveform(phase: f64) -> Vec<f64> {
    (0..WAVEFORM_LEN).map(|i| (i as f64 * 2.0 * std::f64::consts::PI / WAVEFORM_LEN as f64 + phase).sin()).collect()
}

/// Register the demo PVs in `provider`; returns the counter and waveform PVs (for the ticker).
pub fn demo_provider(provider: &Provider) -> (SharedPv, SharedPv) {
    let counter = {
        let (d, v) = Builder::new(nt_scalar(ScalarType::I32, Meta::all()))
            .with("timeStamp", now_stamp())
            .with("display.description", Value::String("counts up at 10 Hz".into()))
            .with("display.limitHigh", Value::F64(1e9))
            .build();
        SharedPv::read_only(d, v)
    };
    let wave = {
        let (d, v) = Builder::new(nt_scalar_array(ScalarType::F64, Meta::all()))
            .with("value", Value::Array(ScalarArray::F64(waveform(0.0))))
            .with("timeStamp", now_stamp())
            .with("display.limitLow", Value::F64(-1.0))
            .with("display.limitHigh", Value::F64(1.0))
            .build();
        SharedPv::writable(d, v)
    };
    let en = {
        let (d, v) = Builder::new(nt_enum())
            .with("value", enum_value(1, &["Off", "On", "Standby", "Fault"]))
            .with("timeStamp", now_stamp())
            .build();
        SharedPv::writable(d, v)
    };
    let table = {
        let (d, v) = Builder::new(nt_table(&[
            ("name", ScalarType::String),
            ("position", ScalarType::F64),
            ("count", ScalarType::I32),
        ]))
        .with("labels", Value::Array(ScalarArray::String(vec!["Name".into(), "Position".into(), "Count".into()])))
        .with("value.name", Value::Array(ScalarArray::String(vec!["alpha".into(), "beta".into(), "gamma".into()])))
        .with("value.position", Value::Array(ScalarArray::F64(vec![1.5, -2.25, 3.0])))
        .with("value.count", Value::Array(ScalarArray::I32(vec![1, 2, 3])))
        .with("timeStamp", now_stamp())
        .build();
        SharedPv::writable(d, v)
    };
    let setpoint = {
        let (d, v) = Builder::new(nt_scalar(ScalarType::F64, Meta::all()))
            .with("value", Value::F64(0.0))
            .with("timeStamp", now_stamp())
            .with("display.units", Value::String("V".into()))
            .with("display.limitLow", Value::F64(-10.0))
            .with("display.limitHigh", Value::F64(10.0))
            .with("control.limitLow", Value::F64(-10.0))
            .with("control.limitHigh", Value::F64(10.0))
            .build();
        SharedPv::writable(d, v)
    };
    provider.add_pv(COUNTER, counter.clone());
    provider.add_pv(WAVEFORM, wave.clone());
    provider.add_pv(ENUM, en);
    provider.add_pv(TABLE, table);
    provider.add_pv(SETPOINT, setpoint);
    provider.add_rpc(ADD, Arc::new(add_rpc));
    let (d, v) = image();
    provider.add_pv(IMAGE, SharedPv::read_only(d, v));
    let (d, v) = Builder::new(nt_scalar_array(ScalarType::F64, Meta::default())).with("timeStamp", now_stamp()).build();
    provider.add_pv(BUFFER, SharedPv::writable(d, v));
    let (d, v) = Builder::new(nt_scalar(ScalarType::I32, Meta::default())).with("timeStamp", now_stamp()).build();
    let processed = SharedPv::writable(d, v);
    processed.set_process_handler(Arc::new(|pv: &SharedPv| {
        let pv = pv.clone();
        Box::pin(async move {
            let n = pv.with_current(|d, v| crate::proto::nt::path_ref(d, v, "value").and_then(|(x, _)| x.as_i64())).flatten();
            let n = n.unwrap_or(0).wrapping_add(1) as i32;
            pv.post_fields(&[("value", Value::I32(n)), ("timeStamp", now_stamp())]).map_err(|e| e.to_string())
        })
    }));
    provider.add_pv(PROCESSED, processed);
    (counter, wave)
}

/// RPC `a + b`: accepts an NTURI (query.a, query.b) or a plain structure with a and b.
pub fn add_rpc(d: &FieldDesc, v: &Value) -> std::result::Result<(FieldDesc, Value), String> {
    let get = |n: &str| {
        path_ref(d, v, &format!("query.{n}"))
            .or_else(|| path_ref(d, v, n))
            .and_then(|(x, _)| x.as_f64())
            .ok_or_else(|| format!("argument {n} missing or not a number"))
    };
    let sum = get("a")? + get("b")?;
    Ok(Builder::new(nt_scalar(ScalarType::F64, Meta::default()))
        .with("value", Value::F64(sum))
        .with("timeStamp", now_stamp())
        .build())
}

/// Start a server with the demo PVs; the counter counts at 10 Hz and the waveform shifts at 1 Hz.
pub async fn serve_demo(config: ServerConfig) -> Result<Server> {
    let provider = Provider::new();
    let (counter, wave) = demo_provider(&provider);
    let mut server = Server::start(config, provider).await?;
    server.attach(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut n: i32 = 0;
        loop {
            tick.tick().await;
            n = n.wrapping_add(1);
            let _ = counter.post_fields(&[("value", Value::I32(n)), ("timeStamp", now_stamp())]);
            if n % 10 == 0 {
                let phase = n as f64 / 10.0 * 0.1;
                let _ = wave.post_fields(&[("value", Value::Array(ScalarArray::F64(waveform(phase)))), ("timeStamp", now_stamp())]);
            }
        }
    }));
    Ok(server)
}
