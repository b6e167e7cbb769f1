//! pvRequest: the client's field selection and record options.
//!
//! On the wire a pvRequest is a structure like
//! `structure { structure field { structure value {} structure alarm {} }
//! structure record { structure _options { string queueSize "4" } } }`.

use std::collections::BTreeMap;

use super::types::{FieldDesc, ScalarType};
use super::value::{BitSet, Value};
use crate::error::{Error, Result};

/// A parsed pvRequest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PvRequest {
    /// Selected fields as dotted paths; empty = everything.
    pub fields: Vec<String>,
    /// record._options, values as text.
    pub options: BTreeMap<String, String>,
}

impl PvRequest {
    /// Parse the decoded pvRequest variant (None = select everything).
    pub fn from_variant(v: Option<&(FieldDesc, Value)>) -> PvRequest {
        let mut out = PvRequest::default();
        let Some((FieldDesc::Structure(m), Value::Struct(vals))) = v else { return out };
        for ((name, d), val) in m.fields.iter().zip(vals) {
            match name.as_str() {
                // put-get requests select the get side with getField (pvAccessCPP).
                "field" | "getField" => collect_paths(d, val, "", &mut out.fields),
                "record" => {
                    if let (FieldDesc::Structure(rm), Value::Struct(rv)) = (d, val) {
                        if let Some((i, FieldDesc::Structure(om))) = rm.field("_options") {
                            if let Some(Value::Struct(ov)) = rv.get(i) {
                                for ((on, _), oval) in om.fields.iter().zip(ov) {
                                    out.options.insert(on.clone(), value_text(oval));
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Parse the textual form used by command-line tools:
    /// `field(value,alarm)record[queueSize=4,pipeline=true]`, or a bare
    /// comma list `value,alarm`.
    pub fn parse(s: &str) -> Result<PvRequest> {
        let mut out = PvRequest::default();
        let mut rest = s.trim();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("field(") {
                let end = r.find(')').ok_or_else(|| Error::Usage(format!("unclosed field( in {s:?}")))?;
                let inner = r.get(..end).unwrap_or("");
                out.fields.extend(inner.split(',').map(str::trim).filter(|f| !f.is_empty()).map(String::from));
                rest = r.get(end + 1..).unwrap_or("").trim();
            } else if let Some(r) = rest.strip_prefix("record[") {
                let end = r.find(']').ok_or_else(|| Error::Usage(format!("unclosed record[ in {s:?}")))?;
                for kv in r.get(..end).unwrap_or("").split(',') {
                    if let Some((k, v)) = kv.split_once('=') {
                        out.options.insert(k.trim().to_string(), v.trim().to_string());
                    }
                }
                rest = r.get(end + 1..).unwrap_or("").trim();
            } else {
                out.fields.extend(rest.split(',').map(str::trim).filter(|f| !f.is_empty()).map(String::from));
                break;
            }
        }
        Ok(out)
    }

    /// Build the wire structure (type and value).
    pub fn to_variant(&self) -> (FieldDesc, Value) {
        // Build a tree of selected paths.
        #[derive(Default)]
        struct Node(BTreeMap<String, Node>, Vec<String>);
        let mut root = Node::default();
        for p in &self.fields {
            let mut n = &mut root;
            for part in p.split('.') {
                if !n.0.contains_key(part) {
                    n.1.push(part.to_string());
                }
                n = n.0.entry(part.to_string()).or_default();
            }
        }
        fn build(n: &Node) -> (FieldDesc, Value) {
            let mut fields = Vec::new();
            let mut vals = Vec::new();
            for name in &n.1 {
                if let Some(child) = n.0.get(name) {
                    let (d, v) = build(child);
                    fields.push((name.as_str(), d));
                    vals.push(v);
                }
            }
            (FieldDesc::structure("", fields), Value::Struct(vals))
        }
        let (fd, fv) = build(&root);
        let mut top_f = vec![("field", fd)];
        let mut top_v = vec![fv];
        if !self.options.is_empty() {
            let od = FieldDesc::structure(
                "",
                self.options.keys().map(|k| (k.as_str(), FieldDesc::Scalar(ScalarType::String))).collect(),
            );
            let ov = Value::Struct(self.options.values().map(|v| Value::String(v.clone())).collect());
            top_f.push(("record", FieldDesc::structure("", vec![("_options", od)])));
            top_v.push(Value::Struct(vec![ov]));
        }
        (FieldDesc::structure("", top_f), Value::Struct(top_v))
    }

    /// The put-get form: `structure { putField {..} getField {..} }` (pvAccessCPP
    /// refuses a plain `field` request for PUT_GET); puts go to every field.
    pub fn to_put_get_variant(&self) -> (FieldDesc, Value) {
        let (d, v) = self.to_variant();
        let (field_d, field_v) = match (&d, &v) {
            (FieldDesc::Structure(m), Value::Struct(vals)) => match (m.fields.first(), vals.first()) {
                (Some((_, fd)), Some(fv)) => (fd.clone(), fv.clone()),
                _ => (FieldDesc::structure("", vec![]), Value::Struct(vec![])),
            },
            _ => (FieldDesc::structure("", vec![]), Value::Struct(vec![])),
        };
        let mut fields = vec![("putField", FieldDesc::structure("", vec![])), ("getField", field_d)];
        let mut vals = vec![Value::Struct(vec![]), field_v];
        if let (FieldDesc::Structure(m), Value::Struct(vs)) = (&d, &v) {
            if let (Some((_, rd)), Some(rv)) = (m.fields.get(1), vs.get(1)) {
                fields.push(("record", rd.clone()));
                vals.push(rv.clone());
            }
        }
        (FieldDesc::structure("", fields), Value::Struct(vals))
    }

    pub fn option(&self, k: &str) -> Option<&str> {
        self.options.get(k).map(String::as_str)
    }

    pub fn option_bool(&self, k: &str) -> bool {
        self.option(k).is_some_and(|v| matches!(v.trim(), "true" | "1" | "yes" | "TRUE" | "True"))
    }

    pub fn option_u32(&self, k: &str) -> Option<u32> {
        self.option(k).and_then(|v| v.trim().parse().ok())
    }

    /// Bits of `desc` covered by the selection (each selected field and
    /// everything below it, plus bit 0 if everything is selected). Paths
    /// that do not exist are ignored, as pvxs does.
    pub fn mask(&self, desc: &FieldDesc) -> BitSet {
        let mut b = BitSet::new();
        if self.fields.is_empty() {
            for i in 0..desc.bit_count() {
                b.set(i);
            }
            return b;
        }
        for p in &self.fields {
            if let Some((d, off)) = desc.lookup(p) {
                for i in off..off + d.bit_count() {
                    b.set(i);
                }
            }
        }
        b
    }
}

fn collect_paths(d: &FieldDesc, v: &Value, prefix: &str, out: &mut Vec<String>) {
    let (FieldDesc::Structure(m), Value::Struct(vals)) = (d, v) else { return };
    for ((name, cd), cv) in m.fields.iter().zip(vals) {
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        match cd {
            FieldDesc::Structure(cm) if !cm.fields.is_empty() => collect_paths(cd, cv, &path, out),
            _ => out.push(path),
        }
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        other => other.as_f64().map(|f| if f.fract() == 0.0 { format!("{}", f as i64) } else { f.to_string() }).unwrap_or_default(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto::nt::{Meta, nt_scalar};

    #[test]
    fn parse_build_roundtrip() {
        let r = PvRequest::parse("field(value,alarm.severity)record[queueSize=4,pipeline=true]").unwrap();
        assert_eq!(r.fields, vec!["value", "alarm.severity"]);
        let (d, v) = r.to_variant();
        let back = PvRequest::from_variant(Some(&(d, v)));
        assert_eq!(back, r);
        assert!(back.option_bool("pipeline"));
        assert_eq!(back.option_u32("queueSize"), Some(4));
    }

    #[test]
    fn mask_selects_subtrees() {
        let d = nt_scalar(ScalarType::F64, Meta::default());
        let m = PvRequest::parse("field(value,alarm)").unwrap().mask(&d);
        assert!(m.get(1) && m.get(2) && m.get(3) && m.get(4) && m.get(5));
        assert!(!m.get(0) && !m.get(6));
        let all = PvRequest::default().mask(&d);
        assert!(all.get(0));
    }
}
