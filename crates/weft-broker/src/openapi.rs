//! The OpenAPI 3.0 document of the HTTP gateway, served at `/openapi.json`.

use serde_json::{json, Value};

fn op(summary: &str, params: Value, body: Option<&str>, ok: &str, ok_status: &str) -> Value {
    let mut o = json!({
        "summary": summary,
        "parameters": params,
        "responses": {
            ok_status: { "description": "OK", "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{ok}") } } } },
            "default": { "description": "Error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
        }
    });
    if let Some(b) = body {
        o["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{b}") } } } });
        let error = json!({ "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } });
        o["responses"]["400"] = json!({ "description": "Bad JSON, an unknown field (named in the message), or invalid values", "content": error.clone() });
        o["responses"]["413"] = json!({ "description": "Body over http.max_body_bytes (details.max_bytes)", "content": error });
    }
    o
}

/// Request bodies refuse fields they do not define (a misspelling is a 400
/// naming the field, never silently ignored); the document says so.
const CLOSED_SCHEMAS: &[&str] = &["TopicConfig", "AlterTopic", "CreateTopic", "RecordIn", "Produce", "Join", "MemberRef", "Commit", "ResetOffsets"];

fn close_request_schemas(doc: &mut Value) {
    for name in CLOSED_SCHEMAS {
        if let Some(o) = doc["components"]["schemas"][*name].as_object_mut() {
            o.insert("additionalProperties".into(), Value::Bool(false));
        }
    }
    if let Some(items) = doc["components"]["schemas"]["Commit"]["properties"]["offsets"]["items"].as_object_mut() {
        items.insert("additionalProperties".into(), Value::Bool(false));
    }
}

fn path_param(name: &str, ty: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": ty } })
}

fn query_param(name: &str, ty: &str, desc: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "schema": { "type": ty }, "description": desc })
}

pub fn document() -> Value {
    let mut doc = paths_and_schemas();
    close_request_schemas(&mut doc);
    doc
}

fn paths_and_schemas() -> Value {
    let topic = path_param("topic", "string");
    let partition = path_param("partition", "integer");
    let group = path_param("group", "string");
    json!({
        "openapi": "3.0.3",
        "info": { "title": "Weft streaming log gateway", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Topics, partitions, records and consumer groups. Values are UTF-8 text or base64, flagged by `encoding`. Every error, whatever its status (400, 404, 405, 413, ...), is an `Error` object; unknown fields in bodies and query strings are refused with 400. A produce answers 200 when at least one record was written (check each result's `error`), else an error status." },
        "paths": {
            "/v1/topics": {
                "get": op("List topics", json!([]), None, "TopicNames", "200"),
                "post": op("Create a topic", json!([]), Some("CreateTopic"), "TopicDescription", "201")
            },
            "/v1/topics/{topic}": {
                "get": op("Describe a topic", json!([topic]), None, "TopicDescription", "200"),
                "delete": op("Delete a topic", json!([topic]), None, "Done", "200"),
                "patch": op("Change a topic's configuration", json!([topic]), Some("AlterTopic"), "TopicDescription", "200")
            },
            "/v1/topics/{topic}/records": {
                "post": op("Produce records", json!([topic]), Some("Produce"), "ProduceResponse", "200")
            },
            "/v1/topics/{topic}/partitions/{partition}/records": {
                "get": op("Fetch records (long-poll with wait_ms)", json!([topic, partition,
                    query_param("offset", "integer", "first offset (default: earliest)"),
                    query_param("max_records", "integer", "at most this many records"),
                    query_param("max_bytes", "integer", "at most about this many bytes"),
                    query_param("wait_ms", "integer", "wait up to this long for data when there is none"),
                    query_param("encoding", "string", "utf8 (default) or base64")]), None, "FetchResponse", "200")
            },
            "/v1/topics/{topic}/partitions/{partition}/offsets": {
                "get": op("Earliest, latest or by-timestamp offset", json!([topic, partition,
                    query_param("spec", "string", "earliest, latest (default) or timestamp"),
                    query_param("timestamp", "integer", "milliseconds since the epoch, with spec=timestamp")]), None, "Offset", "200")
            },
            "/v1/topics/{topic}/partitions/{partition}/stream": {
                "get": { "summary": "WebSocket: stream a partition live; one JSON Record per text message",
                         "parameters": [topic, partition, query_param("offset", "string", "a number, earliest or latest (default)"), query_param("encoding", "string", "utf8 or base64")],
                         "responses": { "101": { "description": "Switching protocols" }, "default": { "description": "Error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } } } }
            },
            "/v1/topics/{topic}/stream": {
                "get": { "summary": "WebSocket: stream every partition of a topic live",
                         "parameters": [topic, query_param("offset", "string", "earliest or latest (default), per partition"), query_param("encoding", "string", "utf8 or base64")],
                         "responses": { "101": { "description": "Switching protocols" } } }
            },
            "/v1/groups": { "get": op("List consumer groups", json!([]), None, "GroupSummaries", "200") },
            "/v1/groups/{group}": { "get": op("Describe a group, with lag", json!([group]), None, "GroupDescription", "200"),
                "delete": op("Delete a group: its committed offsets (refused while it has live members)", json!([group]), None, "Done", "200") },
            "/v1/groups/{group}/join": { "post": op("Join (or rejoin) a group", json!([group]), Some("Join"), "Member", "200") },
            "/v1/groups/{group}/heartbeat": { "post": op("Heartbeat; returns generation and assignment", json!([group]), Some("MemberRef"), "Member", "200") },
            "/v1/groups/{group}/leave": { "post": op("Leave a group", json!([group]), Some("MemberRef"), "Done", "200") },
            "/v1/groups/{group}/commit": { "post": op("Commit offsets", json!([group]), Some("Commit"), "Done", "200") },
            "/v1/groups/{group}/committed": { "get": op("Committed offset of a partition", json!([group,
                query_param("topic", "string", "topic"), query_param("partition", "integer", "partition")]), None, "Committed", "200") },
            "/v1/groups/{group}/reset-offsets": { "post": op("Move a group's committed offsets (refused while it has live members)", json!([group]), Some("ResetOffsets"), "ResetOffsetsAnswer", "200") }
        },
        "components": { "schemas": {
            "Error": { "type": "object", "required": ["code", "message"], "properties": {
                "code": { "type": "string", "enum": ["not_found", "conflict", "out_of_range", "too_large", "validation", "bad_body", "unavailable", "internal", "unknown_route", "unauthorized", "busy", "timeout"] },
                "message": { "type": "string" }, "details": { "type": "object" } } },
            "TopicNames": { "type": "array", "items": { "type": "string" } },
            "TopicConfig": { "type": "object", "properties": {
                "partitions": { "type": "integer" }, "retention_ms": { "type": "integer", "nullable": true },
                "retention_bytes": { "type": "integer", "nullable": true }, "max_record_bytes": { "type": "integer" },
                "segment_bytes": { "type": "integer" }, "segment_ms": { "type": "integer" },
                "cleanup": { "type": "string", "enum": ["delete", "compact"] }, "delete_retention_ms": { "type": "integer" } } },
            "AlterTopic": { "type": "object", "description": "absent fields stay as they are; a negative retention means no limit", "properties": {
                "partitions": { "type": "integer", "minimum": 1, "description": "more partitions, never fewer" },
                "retention_ms": { "type": "integer" }, "retention_bytes": { "type": "integer" },
                "max_record_bytes": { "type": "integer" }, "segment_bytes": { "type": "integer" }, "segment_ms": { "type": "integer" },
                "cleanup": { "type": "string", "enum": ["delete", "compact"] }, "delete_retention_ms": { "type": "integer" } } },
            "CreateTopic": { "type": "object", "required": ["name"], "properties": { "name": { "type": "string" }, "config": { "$ref": "#/components/schemas/TopicConfig" } } },
            "TopicDescription": { "type": "object", "properties": { "name": { "type": "string" }, "internal": { "type": "boolean" }, "created_ms": { "type": "integer" },
                "config": { "$ref": "#/components/schemas/TopicConfig" }, "partitions": { "type": "array", "items": { "type": "object" } } } },
            "RecordIn": { "type": "object", "properties": {
                "partition": { "type": "integer" }, "key": { "type": "string" }, "value": { "type": "string", "nullable": true },
                "headers": { "type": "object", "additionalProperties": { "type": "string" } }, "timestamp_ms": { "type": "integer" },
                "encoding": { "type": "string", "enum": ["utf8", "base64"] } } },
            "Produce": { "type": "object", "required": ["records"], "properties": { "records": { "type": "array", "items": { "$ref": "#/components/schemas/RecordIn" } },
                "encoding": { "type": "string", "enum": ["utf8", "base64"] },
                "producer_id": { "type": "integer", "description": "idempotent producer (cluster, replicated topic; with sequence)" },
                "sequence": { "type": "integer", "description": "the first record's sequence in its partition for this producer" },
                "acks": { "type": "string", "enum": ["all", "leader"] } } },
            "ProduceResponse": { "type": "object", "properties": { "results": { "type": "array", "items": { "type": "object", "properties": {
                "partition": { "type": "integer" }, "offset": { "type": "integer" }, "timestamp_ms": { "type": "integer" }, "error": { "$ref": "#/components/schemas/Error" } } } } } },
            "Record": { "type": "object", "properties": { "partition": { "type": "integer" }, "offset": { "type": "integer" }, "timestamp_ms": { "type": "integer" },
                "key": { "type": "string", "nullable": true }, "value": { "type": "string", "nullable": true },
                "headers": { "type": "object", "additionalProperties": { "type": "string" } }, "encoding": { "type": "string", "enum": ["utf8", "base64"] } } },
            "FetchResponse": { "type": "object", "properties": { "topic": { "type": "string" }, "partition": { "type": "integer" },
                "high_watermark": { "type": "integer" }, "log_start_offset": { "type": "integer" }, "next_offset": { "type": "integer" },
                "records": { "type": "array", "items": { "$ref": "#/components/schemas/Record" } } } },
            "Offset": { "type": "object", "properties": { "offset": { "type": "integer" } } },
            "Done": { "type": "object", "properties": { "ok": { "type": "boolean" } } },
            "Join": { "type": "object", "required": ["topics"], "properties": { "member_id": { "type": "string" }, "client_id": { "type": "string" },
                "topics": { "type": "array", "items": { "type": "string" } }, "strategy": { "type": "string", "enum": ["range", "roundrobin"] },
                "session_timeout_ms": { "type": "integer" } } },
            "MemberRef": { "type": "object", "required": ["member_id"], "properties": { "member_id": { "type": "string" }, "generation": { "type": "integer", "description": "heartbeat: the generation this member has adopted (hands off the partitions it lost)" } } },
            "Member": { "type": "object", "properties": { "group": { "type": "string" }, "member_id": { "type": "string" }, "generation": { "type": "integer" },
                "assignment": { "type": "array", "items": { "type": "array", "items": {} } }, "members": { "type": "integer" } } },
            "Commit": { "type": "object", "required": ["offsets"], "properties": { "member_id": { "type": "string" }, "generation": { "type": "integer" },
                "offsets": { "type": "array", "items": { "type": "object", "required": ["topic", "partition", "offset"], "properties": {
                    "topic": { "type": "string" }, "partition": { "type": "integer" }, "offset": { "type": "integer" }, "metadata": { "type": "string" } } } } } },
            "Committed": { "type": "object", "properties": { "offset": { "type": "integer", "nullable": true }, "metadata": { "type": "string" } } },
            "GroupSummaries": { "type": "array", "items": { "type": "object" } },
            "GroupDescription": { "type": "object" },
            "ResetOffsets": { "type": "object", "required": ["topic", "to"], "properties": { "topic": { "type": "string" }, "partition": { "type": "integer" },
                "to": { "description": "\"earliest\", \"latest\", {\"offset\": N} or {\"timestamp\": MS}" }, "dry_run": { "type": "boolean" } } },
            "ResetOffsetsAnswer": { "type": "object" }
        } }
    })
}
