use proptest::prelude::*;
use serde_json::json;

use super::*;

fn q(s: &str) -> Statement {
    match parse(s) {
        Ok(q) => q.stmt,
        Err(e) => panic!("{s}: {e}"),
    }
}

#[test]
fn statements_parse() {
    assert_eq!(q("GET t 'k'"), Statement::Get { table: "t".into(), key: b"k".to_vec(), revision: None });
    assert_eq!(q("get t 'k' at revision 42"), Statement::Get { table: "t".into(), key: b"k".to_vec(), revision: Some(42) });
    assert_eq!(
        q(r#"SET cfg 'a' = {"x": [1, 2]} IF VERSION = 3"#),
        Statement::Set { table: "cfg".into(), key: b"a".to_vec(), value: Value::Json(json!({"x": [1, 2]})), cond: Some(SetCond::Version(3)) }
    );
    assert_eq!(
        q("SET t x'00ff' = 'on' IF ABSENT"),
        Statement::Set { table: "t".into(), key: vec![0, 255], value: Value::Text("on".into()), cond: Some(SetCond::Absent) }
    );
    assert_eq!(q("DELETE t 'k' IF EXISTS"), Statement::Delete { table: "t".into(), key: b"k".to_vec(), cond: Some(DeleteCond::Exists) });
    assert_eq!(
        q("RANGE t FROM 'a' TO 'm' LIMIT 10 AT REVISION 7"),
        Statement::Range {
            table: "t".into(),
            range: KeyRange::From { start: b"a".to_vec(), end: Some(b"m".to_vec()) },
            limit: Some(10),
            revision: Some(7)
        }
    );
    assert_eq!(
        q("RANGE t PREFIX 'user/' LIMIT 5"),
        Statement::Range { table: "t".into(), range: KeyRange::Prefix(b"user/".to_vec()), limit: Some(5), revision: None }
    );
    let Statement::Filter { pred, limit, offset, .. } = q("FILTER t WHERE a.b >= 3 AND NOT (c = 'x' OR EXISTS d) AND e IN (1, 'two', null) LIMIT 2 OFFSET 1")
    else {
        panic!()
    };
    assert_eq!((limit, offset), (Some(2), Some(1)));
    let Predicate::And(l, r) = pred else { panic!() };
    assert!(matches!(*r, Predicate::In { .. }));
    assert!(matches!(*l, Predicate::And(..)));
    let Statement::Update { assigns, .. } = q("UPDATE t SET a.b = 1, c = 'x' WHERE EXISTS a") else { panic!() };
    assert_eq!(assigns.len(), 2);
    assert_eq!(assigns[0].field, FieldPath(vec!["a".into(), "b".into()]));
    let Statement::Batch(Batch::Cond { compares, then, otherwise }) =
        q("BATCH { IF VERSION(t, 'a') = 0 AND VALUE(t, 'b') = 'on' THEN { SET t 'a' = 1; GET t 'b' } ELSE { GET t 'a' } }")
    else {
        panic!()
    };
    assert_eq!(compares.len(), 2);
    assert_eq!(then.len(), 2);
    assert_eq!(otherwise.map(|o| o.len()), Some(1));
    assert_eq!(q("BATCH { SET t 'a' = 1; DELETE t 'b'; }"), q("BATCH { SET t 'a' = 1; DELETE t 'b' }"));
    assert_eq!(q("HISTORY t 'k' LIMIT 3"), Statement::History { table: "t".into(), key: b"k".to_vec(), limit: Some(3) });
    assert_eq!(q("create table \"my.table\""), Statement::CreateTable { table: "my.table".into(), replicas: None });
    assert_eq!(q("CREATE TABLE t REPLICAS 2"), Statement::CreateTable { table: "t".into(), replicas: Some(2) });
    assert_eq!(q("DROP TABLE t"), Statement::DropTable { table: "t".into() });
    assert_eq!(q("COMPACT t REVISION 7"), Statement::Compact { table: "t".into(), revision: Some(7) });
    assert_eq!(q("compact \"compact\""), Statement::Compact { table: "compact".into(), revision: None });
    assert_eq!(q("SHOW TABLES"), Statement::ShowTables);
    let Statement::TopicRead { topic, partition, offset, limit, pred } = q("FROM TOPIC orders PARTITION 2 OFFSET 10 LIMIT 5 WHERE total > 100")
    else {
        panic!()
    };
    assert_eq!((topic.as_str(), partition, offset, limit, pred.is_some()), ("orders", Some(2), 10, Some(5), true));
    assert_eq!(parse("GET t 'k' TIMEOUT 250;").map(|q| q.timeout_ms), Ok(Some(250)));
}

#[test]
fn escapes_and_comments() {
    assert_eq!(
        q("GET t 'it\\'s\\n\\u{e9}' -- a comment"),
        Statement::Get { table: "t".into(), key: "it's\n\u{e9}".as_bytes().to_vec(), revision: None }
    );
    assert_eq!(q(r#"SET t 'k' = "caf\u00e9""#), Statement::Set {
        table: "t".into(),
        key: b"k".to_vec(),
        value: Value::Json(json!("caf\u{e9}")),
        cond: None
    });
}

#[test]
fn errors_have_positions() {
    let e = parse("GET t").unwrap_err();
    assert_eq!((e.line, e.column, e.offset), (1, 6, 5));
    assert!(e.message.contains("expected a key"), "{e}");
    let e = parse("SET t 'k' =\n  {bad").unwrap_err();
    assert_eq!((e.line, e.column), (2, 3));
    let e = parse("RANGE t BETWEEN 'a'").unwrap_err();
    assert_eq!(e.expected.as_deref(), Some("FROM or PREFIX"));
    assert_eq!(e.column, 9);
    let e = parse("GET t 'k' extra").unwrap_err();
    assert!(e.message.contains("end of input"));
    let e = parse("BATCH { CREATE TABLE x }").unwrap_err();
    assert!(e.message.contains("inside BATCH"), "{e}");
    let e = parse("BATCH { SET t 'a' = 1 IF ABSENT }").unwrap_err();
    assert!(e.message.contains("takes no IF"), "{e}");
    let e = parse("GET t 'unterminated").unwrap_err();
    assert!(e.message.contains("unterminated"));
    let e = parse("GET t x'abc'").unwrap_err();
    assert!(e.message.contains("even"));
    let e = parse("LIMIT 99999999999999999999999").unwrap_err();
    assert!(e.message.contains("expected a statement"));
    let deep = format!("FILTER t WHERE {}a = 1{}", "(".repeat(200), ")".repeat(200));
    assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
    let deep = format!("FILTER t WHERE {}a = 1", "NOT ".repeat(200));
    assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
    let long = format!("FILTER t WHERE a = 1{}", " OR a = 1".repeat(2000));
    assert!(parse(&long).unwrap_err().message.contains("more than"));
    assert!(parse("SET t 'k' = truex").is_err());
    assert!(parse("SET t 'k' = 'a' IF VERSION 3").is_err());
}

#[test]
fn precedence_prints_minimal_parens() {
    let s = "FILTER t WHERE a = 1 OR b = 2 AND c = 3";
    let p = parse(s).unwrap();
    assert_eq!(print(&p), s);
    let s = "FILTER t WHERE (a = 1 OR b = 2) AND NOT c = 3";
    assert_eq!(print(&parse(s).unwrap()), s);
    let s = "FILTER t WHERE a = 1 AND (b = 2 AND c = 3)";
    assert_eq!(print(&parse(s).unwrap()), s);
}

// ---- round trip on random trees ----

fn arb_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_][a-z0-9_-]{0,8}",
        Just("where".to_string()),
        Just("x".to_string()),
        Just("not".to_string()),
        "[ -~\\n\\t\u{e9}\u{1F600}]{0,8}",
    ]
    .prop_filter("names are non-empty", |s| !s.is_empty())
}

fn arb_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ -~\\n\u{e9}]{0,10}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..10),
    ]
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        (-1e12f64..1e12).prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        "[ -~\"\\\\\u{e9}]{0,8}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z\"]{0,4}", inner, 0..4).prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[ -~'\\\\\\n\u{0}\u{7f}\u{e9}]{0,8}".prop_map(Value::Text),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bytes),
        arb_json().prop_map(Value::Json),
    ]
}

fn arb_field() -> impl Strategy<Value = FieldPath> {
    prop::collection::vec(prop_oneof![arb_name(), "[0-9]{1,3}"], 1..4).prop_map(FieldPath)
}

fn arb_op() -> impl Strategy<Value = CmpOp> {
    prop_oneof![Just(CmpOp::Eq), Just(CmpOp::Ne), Just(CmpOp::Lt), Just(CmpOp::Le), Just(CmpOp::Gt), Just(CmpOp::Ge)]
}

fn arb_pred() -> impl Strategy<Value = Predicate> {
    let leaf = prop_oneof![
        (arb_field(), arb_op(), arb_value()).prop_map(|(field, op, value)| Predicate::Cmp { field, op, value }),
        arb_field().prop_map(Predicate::Exists),
        (arb_field(), prop::collection::vec(arb_value(), 1..4)).prop_map(|(field, values)| Predicate::In { field, values }),
    ];
    leaf.prop_recursive(5, 24, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|p| Predicate::Not(Box::new(p))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Predicate::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| Predicate::Or(Box::new(a), Box::new(b))),
        ]
    })
}

fn arb_simple() -> impl Strategy<Value = Statement> {
    prop_oneof![
        (arb_name(), arb_key(), any::<Option<u64>>()).prop_map(|(table, key, revision)| Statement::Get { table, key, revision }),
        (arb_name(), arb_key(), arb_value()).prop_map(|(table, key, value)| Statement::Set { table, key, value, cond: None }),
        (arb_name(), arb_key()).prop_map(|(table, key)| Statement::Delete { table, key, cond: None }),
        (arb_name(), arb_key(), any::<Option<u64>>(), any::<Option<u64>>()).prop_map(|(table, p, limit, revision)| Statement::Range {
            table,
            range: KeyRange::Prefix(p),
            limit,
            revision
        }),
    ]
}

fn arb_compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        Just(CompareTarget::Version),
        Just(CompareTarget::CreateRevision),
        Just(CompareTarget::ModRevision),
        Just(CompareTarget::Value)
    ];
    (arb_name(), arb_key(), target, arb_op(), arb_value(), any::<u64>()).prop_map(|(table, key, target, op, v, n)| Compare {
        table,
        key,
        target,
        op,
        value: if target == CompareTarget::Value { v } else { Value::Json(n.into()) },
    })
}

fn arb_statement() -> impl Strategy<Value = Statement> {
    prop_oneof![
        arb_simple(),
        (arb_name(), arb_key(), arb_value(), prop_oneof![Just(None), Just(Some(SetCond::Absent)), any::<u64>().prop_map(|n| Some(SetCond::Version(n)))])
            .prop_map(|(table, key, value, cond)| Statement::Set { table, key, value, cond }),
        (arb_name(), arb_key(), prop_oneof![Just(None), Just(Some(DeleteCond::Exists)), any::<u64>().prop_map(|n| Some(DeleteCond::Version(n)))])
            .prop_map(|(table, key, cond)| Statement::Delete { table, key, cond }),
        (arb_name(), arb_key(), prop::option::of(arb_key()), any::<Option<u64>>(), any::<Option<u64>>()).prop_map(
            |(table, start, end, limit, revision)| Statement::Range { table, range: KeyRange::From { start, end }, limit, revision }
        ),
        (arb_name(), arb_pred(), any::<Option<u64>>(), any::<Option<u64>>())
            .prop_map(|(table, pred, limit, offset)| Statement::Filter { table, pred, limit, offset }),
        (arb_name(), prop::collection::vec((arb_field(), arb_value()).prop_map(|(field, value)| Assign { field, value }), 1..3), arb_pred())
            .prop_map(|(table, assigns, pred)| Statement::Update { table, assigns, pred }),
        prop::collection::vec(arb_simple(), 0..3).prop_map(|ops| Statement::Batch(Batch::Plain(ops))),
        (
            prop::collection::vec(arb_compare(), 1..3),
            prop::collection::vec(arb_simple(), 0..3),
            prop::option::of(prop::collection::vec(arb_simple(), 0..3))
        )
            .prop_map(|(compares, then, otherwise)| Statement::Batch(Batch::Cond { compares, then, otherwise })),
        (arb_name(), arb_key(), any::<Option<u64>>()).prop_map(|(table, key, limit)| Statement::History { table, key, limit }),
        (arb_name(), any::<Option<u64>>()).prop_map(|(table, replicas)| Statement::CreateTable { table, replicas }),
        arb_name().prop_map(|table| Statement::DropTable { table }),
        (arb_name(), any::<Option<u64>>()).prop_map(|(table, revision)| Statement::Compact { table, revision }),
        Just(Statement::ShowTables),
        (arb_name(), any::<Option<u32>>(), any::<u64>(), any::<Option<u64>>(), prop::option::of(arb_pred()))
            .prop_map(|(topic, partition, offset, limit, pred)| Statement::TopicRead { topic, partition, offset, limit, pred }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn print_parse_round_trip(stmt in arb_statement(), timeout_ms in any::<Option<u64>>()) {
        let query = Query { stmt, timeout_ms };
        let text = print(&query);
        let back = parse(&text);
        prop_assert_eq!(back.as_ref(), Ok(&query), "text: {}", text);
    }
}
