//! PVs described in configuration (for `weft serve`): a list of specs, each
//! a name, a normative type, an initial value and whether clients may write.
//!
//! ```toml
//! [[pv]]
//! name = "lab:temp"
//! type = "double"          # NTScalar; "double[]" = NTScalarArray; "enum"; "string"; "int" ...
//! value = 21.5
//! writable = true
//! units = "C"
//!
//! [[pv]]
//! name = "lab:mode"
//! type = "enum"
//! choices = ["Off", "On"]
//! value = 1
//! ```

use serde::Deserialize;

use super::{Provider, SharedPv, now_stamp};
use crate::error::{Error, Result};
use crate::proto::nt::{Builder, Meta, enum_value, nt_enum, nt_scalar, nt_scalar_array};
use crate::proto::{FieldDesc, ScalarArray, ScalarType, Value};

/// One configured PV.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PvSpec {
    pub name: String,
    /// Scalar type name (`double`, `int`, `string`, ...), with `[]` for an
    /// array, or `enum`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Initial value (number, string, bool, array; an index for enums).
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    #[serde(default)]
    pub writable: bool,
    /// Enum choices.
    #[serde(default)]
    pub choices: Vec<String>,
    #[serde(default)]
    pub units: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

fn json_scalar(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => n.as_i64().map(Value::I64).unwrap_or_else(|| Value::F64(n.as_f64().unwrap_or(0.0))),
        serde_json::Value::String(s) => Value::String(s.clone()),
        other => Value::String(other.to_string()),
    }
}

impl PvSpec {
    /// The PV's type and initial value.
    pub fn build(&self) -> Result<(FieldDesc, Value)> {
        let bad = |m: String| Error::Usage(format!("PV {}: {m}", self.name));
        if self.kind == "enum" {
            let idx = self.value.as_ref().and_then(|v| v.as_i64()).unwrap_or(0) as i32;
            let choices: Vec<&str> = self.choices.iter().map(String::as_str).collect();
            return Ok(Builder::new(nt_enum()).with("value", enum_value(idx, &choices)).with("timeStamp", now_stamp()).build());
        }
        let (base, array) = match self.kind.strip_suffix("[]") {
            Some(b) => (b, true),
            None => (self.kind.as_str(), false),
        };
        let t = ScalarType::from_name(base).ok_or_else(|| bad(format!("unknown type {:?}", self.kind)))?;
        let meta = Meta { display: true, control: t != ScalarType::String && t != ScalarType::Bool, value_alarm: false };
        let mut b = if array { Builder::new(nt_scalar_array(t, meta)) } else { Builder::new(nt_scalar(t, meta)) };
        if let Some(v) = &self.value {
            let value = if array {
                let items = v.as_array().ok_or_else(|| bad("value must be an array".into()))?;
                let vals: Vec<Value> = items.iter().map(|x| json_scalar(x).convert_to(t)).collect::<Result<_>>()?;
                Value::Array(collect(t, vals))
            } else {
                json_scalar(v).convert_to(t)?
            };
            b.set("value", value);
        }
        if let Some(u) = &self.units {
            b.set("display.units", Value::String(u.clone()));
        }
        if let Some(d) = &self.description {
            b.set("display.description", Value::String(d.clone()));
        }
        b.set("timeStamp", now_stamp());
        Ok(b.build())
    }
}

fn collect(t: ScalarType, vals: Vec<Value>) -> ScalarArray {
    let mut a = ScalarArray::empty(t);
    macro_rules! push {
        ($v:expr, $k:path) => {
            $v.extend(vals.into_iter().filter_map(|x| if let $k(y) = x { Some(y) } else { None }))
        };
    }
    match &mut a {
        ScalarArray::Bool(v) => push!(v, Value::Bool),
        ScalarArray::I8(v) => push!(v, Value::I8),
        ScalarArray::I16(v) => push!(v, Value::I16),
        ScalarArray::I32(v) => push!(v, Value::I32),
        ScalarArray::I64(v) => push!(v, Value::I64),
        ScalarArray::U8(v) => push!(v, Value::U8),
        ScalarArray::U16(v) => push!(v, Value::U16),
        ScalarArray::U32(v) => push!(v, Value::U32),
        ScalarArray::U64(v) => push!(v, Value::U64),
        ScalarArray::F32(v) => push!(v, Value::F32),
        ScalarArray::F64(v) => push!(v, Value::F64),
        ScalarArray::String(v) => push!(v, Value::String),
    }
    a
}

/// A file of specs: `[[pv]]` tables in TOML.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct PvFile {
    #[serde(default)]
    pub pv: Vec<PvSpec>,
}

/// Parse a TOML document of `[[pv]]` tables.
pub fn parse_toml(text: &str) -> Result<Vec<PvSpec>> {
    toml::from_str::<PvFile>(text).map(|f| f.pv).map_err(|e| Error::Usage(format!("PV file: {e}")))
}

/// Add every spec to `provider` (returns the created PVs by name).
pub fn add_specs(provider: &Provider, specs: &[PvSpec]) -> Result<Vec<(String, SharedPv)>> {
    let mut out = Vec::with_capacity(specs.len());
    for s in specs {
        let (d, v) = s.build()?;
        let pv = if s.writable { SharedPv::writable(d, v) } else { SharedPv::read_only(d, v) };
        provider.add_pv(&s.name, pv.clone());
        out.push((s.name.clone(), pv));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto::nt::path_ref;

    #[test]
    fn specs_from_toml() {
        let specs = parse_toml(
            "[[pv]]\nname = \"lab:temp\"\ntype = \"double\"\nvalue = 21.5\nwritable = true\n\n[[pv]]\nname = \"lab:mode\"\ntype = \"enum\"\nchoices = [\"Off\", \"On\"]\nvalue = 1\n",
        )
        .unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[1].choices, vec!["Off", "On"]);
        assert!(specs[0].build().is_ok());
    }

    #[test]
    fn specs_from_json_build_nt_types() {
        let specs: Vec<PvSpec> = serde_json::from_str(
            r#"[{"name":"a","type":"double","value":2.5,"writable":true,"units":"C"},
                {"name":"b","type":"int[]","value":[1,2,3]},
                {"name":"c","type":"enum","choices":["Off","On"],"value":1},
                {"name":"d","type":"string","value":"hi"}]"#,
        )
        .unwrap();
        let p = Provider::new();
        let pvs = add_specs(&p, &specs).unwrap();
        assert_eq!(pvs.len(), 4);
        let (d, v) = pvs[0].1.current();
        assert_eq!(path_ref(&d, &v, "value").unwrap().0, &Value::F64(2.5));
        assert_eq!(path_ref(&d, &v, "display.units").unwrap().0, &Value::String("C".into()));
        let (d, v) = pvs[1].1.current();
        assert_eq!(path_ref(&d, &v, "value").unwrap().0, &Value::Array(ScalarArray::I32(vec![1, 2, 3])));
        let (d, v) = pvs[2].1.current();
        assert_eq!(path_ref(&d, &v, "value.index").unwrap().0, &Value::I32(1));
        assert!(pvs[0].1.is_writable() && !pvs[1].1.is_writable());
        let bad: PvSpec = serde_json::from_str(r#"{"name":"x","type":"quaternion"}"#).unwrap();
        assert!(bad.build().is_err());
    }
}
