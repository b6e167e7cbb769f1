//! Native routes -> (Action, Resource). The table of docs/security.md
//! ("Native routes"). Sans-IO and allocation-free: the resource name is
//! borrowed from the request body (msgpack or JSON) when the route names a
//! topic or queue there.

use serde::Deserialize;

use crate::model::{Action, ResourceKind};

/// Where a route's resource name comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameFrom {
    /// The route itself (endpoint kind).
    Route,
    /// A fixed name (`cluster`).
    Fixed(&'static str),
    /// A top-level string field of the body.
    Field(Field),
    /// `fetch.topic` (group fetch).
    FetchTopic,
    /// Any resource of the kind: listing, group coordination. Passes when
    /// the identity holds the action on *some* resource of the kind.
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Topic,
    Name,
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any authenticated identity (`weft.ping`, `auth.whoami`).
    Authenticated,
    Check { action: Action, kind: ResourceKind, name: NameFrom },
}

const fn check(action: Action, kind: ResourceKind, name: NameFrom) -> Access {
    Access::Check { action, kind, name }
}

/// Routes that only read node state (`endpoint` read); other endpoints are
/// `write` (a call may change something).
const READ_ENDPOINTS: &[&str] =
    &["weft.info", "weft.stats", "weft.stats.current", "weft.stats.gathered", "weft.stats.full", "weft.liveness", "weft.errors.get", "weft.echo", "pva.pvs"];

/// The access a native route needs.
pub fn native_access(route: &str) -> Access {
    use Action::*;
    use ResourceKind::*;
    match route {
        "weft.ping" | "auth.whoami" => Access::Authenticated,
        // Each statement is checked per table and topic in the query layer (weft-api).
        "query.execute" | "query.batch" => Access::Authenticated,
        "log.produce" | "cluster.produce" => check(Write, Topic, NameFrom::Field(Field::Topic)),
        "log.fetch" | "log.offsets" | "cluster.fetch" => check(Read, Topic, NameFrom::Field(Field::Topic)),
        "log.group.fetch" => check(Read, Topic, NameFrom::FetchTopic),
        "log.topic.describe" => check(Read, Topic, NameFrom::Field(Field::Name)),
        "log.topic.create" | "log.topic.alter" | "log.topic.delete" | "cluster.create_topic" => check(Admin, Topic, NameFrom::Field(Field::Name)),
        "log.topic.list" => check(Read, Topic, NameFrom::Any),
        r if r.starts_with("log.group.") => check(Read, Topic, NameFrom::Any),
        "weft.config" | "weft.log_level" => check(Admin, Cluster, NameFrom::Fixed("cluster")),
        r if r.starts_with("weft.config.") || r.starts_with("cluster.") || r.starts_with("auth.") => {
            check(Admin, Cluster, NameFrom::Fixed("cluster"))
        }
        r if r.starts_with("weft.queue.") || r.starts_with("weft.sender.") => {
            let op = r.rsplit('.').next().unwrap_or("");
            match op {
                "ls" => check(Read, Queue, NameFrom::Any),
                "show" | "watch" => check(Read, Queue, NameFrom::Field(Field::Name)),
                _ => check(Write, Queue, NameFrom::Field(Field::Name)),
            }
        }
        r if READ_ENDPOINTS.contains(&r) => check(Read, Endpoint, NameFrom::Route),
        _ => check(Write, Endpoint, NameFrom::Route),
    }
}

#[derive(Deserialize)]
struct TopicBody<'a> {
    #[serde(borrow, default)]
    topic: Option<&'a str>,
}

#[derive(Deserialize)]
struct NameBody<'a> {
    #[serde(borrow, default)]
    name: Option<&'a str>,
}

#[derive(Deserialize)]
struct FetchBody<'a> {
    #[serde(borrow, default)]
    fetch: Option<TopicBody<'a>>,
}

/// A string field of a request body, borrowed (None when absent, not a
/// plain string, or the body does not decode: the check then runs on the
/// empty name, which only a `*` grant matches, and the handler refuses the
/// body anyway).
pub fn body_name<'a>(body: &'a [u8], json: bool, from: NameFrom) -> Option<&'a str> {
    fn de<'a, T: Deserialize<'a>>(body: &'a [u8], json: bool) -> Option<T> {
        if json { serde_json::from_slice(body).ok() } else { rmp_serde::from_slice(body).ok() }
    }
    match from {
        NameFrom::Field(Field::Topic) => de::<TopicBody<'a>>(body, json)?.topic,
        NameFrom::Field(Field::Name) => de::<NameBody<'a>>(body, json)?.name,
        NameFrom::FetchTopic => de::<FetchBody<'a>>(body, json)?.fetch?.topic,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_bodies() {
        let mp = rmp_serde::to_vec_named(&serde_json::json!({"topic": "orders", "partition": 0, "records": [{"value": [1,2]}]})).unwrap();
        assert_eq!(body_name(&mp, false, NameFrom::Field(Field::Topic)), Some("orders"));
        let js = br#"{"fetch": {"topic": "t1", "offset": 3}, "group": "g"}"#;
        assert_eq!(body_name(js, true, NameFrom::FetchTopic), Some("t1"));
        assert_eq!(body_name(b"\xc1", false, NameFrom::Field(Field::Topic)), None);
        assert_eq!(body_name(b"", false, NameFrom::Field(Field::Name)), None);
    }

    #[test]
    fn table() {
        assert_eq!(native_access("log.produce"), check(Action::Write, ResourceKind::Topic, NameFrom::Field(Field::Topic)));
        assert_eq!(native_access("auth.user.add"), check(Action::Admin, ResourceKind::Cluster, NameFrom::Fixed("cluster")));
        assert_eq!(native_access("weft.queue.pause"), check(Action::Write, ResourceKind::Queue, NameFrom::Field(Field::Name)));
        assert_eq!(native_access("my.service"), check(Action::Write, ResourceKind::Endpoint, NameFrom::Route));
        assert_eq!(native_access("weft.ping"), Access::Authenticated);
    }
}
