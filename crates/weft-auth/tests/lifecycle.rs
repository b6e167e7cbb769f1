//! Tokens and keys: verify, cache, expire, revoke, persist.

use weft_auth::{Action, AuthOptions, Authorizer, DeniedKind, Resource, State};

#[test]
fn token_life() {
    let authz = Authorizer::in_memory(State::default());
    authz.add_role("reader", vec!["read:topic:orders*".parse().unwrap()]).unwrap();
    authz.add_user("alice", vec!["reader".into()]).unwrap();
    let (tok, id) = authz.create_token("alice", None, "t").unwrap();
    let who = authz.authenticate(&tok).unwrap();
    assert_eq!(&*who.user, "alice");
    // Second time from the cache.
    authz.authenticate(&tok).unwrap();
    assert_eq!(authz.stats().snapshot().iter().find(|(k, _)| *k == "auth.cache_hits").unwrap().1, 1);
    authz.authorize(&who, Action::Read, Resource::topic("orders.eu")).unwrap();
    let d = authz.authorize(&who, Action::Write, Resource::topic("orders.eu")).unwrap_err();
    assert_eq!(d.kind, DeniedKind::Forbidden);
    // Wrong secret, same id.
    let mut wrong = tok.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'Q' } else { 'A' });
    assert_eq!(authz.authenticate(&wrong).unwrap_err().kind, DeniedKind::Unauthenticated);
    // Revocation reaches an identity already verified.
    authz.revoke_token(&id).unwrap();
    assert_eq!(authz.authorize(&who, Action::Read, Resource::topic("orders")).unwrap_err().kind, DeniedKind::Unauthenticated);
    assert_eq!(authz.authenticate(&tok).unwrap_err().kind, DeniedKind::Unauthenticated);
}

#[test]
fn expiry_and_keys() {
    let authz = Authorizer::in_memory(State::default());
    authz.add_user("bob", vec![]).unwrap();
    let (tok, _) = authz.create_token("bob", Some(1000), "").unwrap();
    let now = weft_auth::now_ms();
    let who = authz.authenticate_at(&tok, now).unwrap();
    assert!(authz.authenticate_at(&tok, now + 2000).is_err());
    assert_eq!(authz.authorize_at(&who, Action::Read, Resource::topic("t"), now + 2000).unwrap_err().kind, DeniedKind::Unauthenticated);
    let (key, kid) = authz.create_key("bob", "").unwrap();
    let k = authz.authenticate_header(Some(&format!("ApiKey {key}"))).unwrap();
    assert_eq!(authz.authorize(&k, Action::Read, Resource::topic("t")).unwrap_err().kind, DeniedKind::Forbidden);
    authz.revoke_key(&kid).unwrap();
    assert_eq!(authz.authorize(&k, Action::Read, Resource::topic("t")).unwrap_err().kind, DeniedKind::Unauthenticated);
    assert_eq!(authz.authenticate_header(None).unwrap_err().kind, DeniedKind::Unauthenticated);
}

#[test]
fn disabled_allows_everything() {
    let authz = Authorizer::disabled();
    let who = authz.authenticate_header(None).unwrap();
    authz.authorize(&who, Action::Admin, Resource::cluster()).unwrap();
}

#[test]
fn first_start_writes_admin_token_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let opts = AuthOptions { enabled: true, data_dir: Some(dir.path().to_owned()), replicated: false };
    let (authz, written) = Authorizer::open(&opts).unwrap();
    let path = written.unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(dir.path().join("auth/state.json")).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let tok = std::fs::read_to_string(&path).unwrap();
    let who = authz.authenticate(tok.trim()).unwrap();
    authz.authorize(&who, Action::Admin, Resource::cluster()).unwrap();
    authz.add_user("carol", vec![]).unwrap();
    drop(authz);
    // Second start: the same state, no new token.
    let (again, written) = Authorizer::open(&opts).unwrap();
    assert!(written.is_none());
    assert!(again.state().users.contains_key("carol"));
    again.authenticate(tok.trim()).unwrap();
    // A corrupt file on reload leaves the rules in force.
    std::fs::write(dir.path().join("auth/state.json"), b"{not json").unwrap();
    assert!(again.reload().is_err());
    assert!(again.state().users.contains_key("carol"));
}

#[test]
fn pva_peers_map_onto_users_or_the_anonymous_role() {
    use weft_auth::PvaPolicy;
    let authz = Authorizer::in_memory(State::default());
    authz.add_role("pvread", vec!["read:pv:plant:*".parse().unwrap()]).unwrap();
    authz.add_role("pvwrite", vec!["write:pv:plant:*".parse().unwrap()]).unwrap();
    authz.add_user("alice", vec!["pvwrite".into()]).unwrap();
    let trust = PvaPolicy { trust_ca_user: true, anonymous_role: None };
    let distrust = PvaPolicy { trust_ca_user: false, anonymous_role: Some("pvread".into()) };
    let pv = |p: &PvaPolicy, user: Option<&str>, a: Action, name: &str| authz.authorize_pv(p, user, "127.0.0.1:1", a, name).map_err(|d| d.kind);
    // Trusted and a user: that user's roles.
    assert_eq!(pv(&trust, Some("alice"), Action::Write, "plant:sp"), Ok(()));
    assert_eq!(pv(&trust, Some("alice"), Action::Write, "other"), Err(DeniedKind::Forbidden));
    // Anonymous, unknown names, and untrusted names: the anonymous role (none: unauthenticated).
    assert_eq!(pv(&trust, None, Action::Read, "plant:sp"), Err(DeniedKind::Unauthenticated));
    assert_eq!(pv(&trust, Some("mallory"), Action::Read, "plant:sp"), Err(DeniedKind::Unauthenticated));
    assert_eq!(pv(&distrust, Some("alice"), Action::Read, "plant:sp"), Ok(()));
    assert_eq!(pv(&distrust, Some("alice"), Action::Write, "plant:sp"), Err(DeniedKind::Forbidden), "a claimed name gets nothing when not trusted");
    assert_eq!(pv(&distrust, None, Action::Read, "plant:sp"), Ok(()));
    // Auth off: everything passes.
    let off = Authorizer::disabled();
    assert!(off.authorize_pv(&trust, None, "", Action::Write, "x").is_ok());
}

#[test]
fn cluster_nodes_may_call_cluster_local_routes_only() {
    let authz = Authorizer::in_memory(State::default());
    // A user named like a node grants the node nothing.
    authz.add_role("all", vec!["admin:topic:*".parse().unwrap(), "admin:cluster:*".parse().unwrap()]).unwrap();
    authz.add_user("node-2", vec!["all".into()]).unwrap();
    let node = authz.authenticate_node("node-2");
    assert_eq!(node.via_str(), "node");
    authz.authorize_native(&node, "cluster.local.produce", b"{\"topic\":\"t\"}", true).unwrap();
    authz.authorize_native(&node, "cluster.local.query", b"{}", true).unwrap();
    for route in ["log.produce", "cluster.status", "auth.user.add", "weft.config"] {
        assert_eq!(authz.authorize_native(&node, route, b"{\"topic\":\"t\"}", true).unwrap_err().kind, DeniedKind::Forbidden, "{route}");
    }
    assert_eq!(authz.authorize(&node, Action::Read, Resource::topic("t")).unwrap_err().kind, DeniedKind::Forbidden);
    // Users get no cluster.local.* from a role without cluster admin.
    authz.add_role("writer", vec!["write:topic:*".parse().unwrap()]).unwrap();
    authz.add_user("carol", vec!["writer".into()]).unwrap();
    let carol = authz.authenticate_certificate("carol");
    assert!(authz.authorize_native(&carol, "cluster.local.produce", b"{\"topic\":\"t\"}", true).is_err());
}
