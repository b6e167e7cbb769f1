//! Random role sets and requests: the Authorizer answers as a simple model
//! of the rules does (docs/security.md, "Roles").

use proptest::prelude::*;
use weft_auth::{Action, Authorizer, Grant, Resource, ResourceKind, State};

const NAMES: [&str; 6] = ["orders", "orders.eu", "ord", "payments", "x", ""];
const PATTERNS: [&str; 6] = ["orders", "orders*", "ord*", "*", "payments", "x"];

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![Just(Action::Read), Just(Action::Write), Just(Action::Admin)]
}
fn kind() -> impl Strategy<Value = ResourceKind> {
    (0..ResourceKind::ALL.len()).prop_map(|i| ResourceKind::ALL[i])
}
fn grant() -> impl Strategy<Value = (Action, ResourceKind, &'static str)> {
    (action(), kind(), (0..PATTERNS.len()).prop_map(|i| PATTERNS[i]))
}

/// The model: a grant allows when kinds are equal, the grant's level is at
/// least the action's (read < write < admin), and the pattern is `*`, the
/// exact name, or a prefix ending in `*`.
fn model(grants: &[(Action, ResourceKind, &str)], a: Action, k: ResourceKind, name: &str) -> bool {
    let level = |a: Action| match a {
        Action::Read => 0,
        Action::Write => 1,
        Action::Admin => 2,
    };
    grants.iter().any(|(ga, gk, p)| {
        *gk == k
            && level(*ga) >= level(a)
            && match p.strip_suffix('*') {
                Some(stem) => name.starts_with(stem),
                None => *p == name,
            }
    })
}

proptest! {
    // Each case hashes one token with argon2: 64 cases keep this short.
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn authorize_matches_model(
        roles in prop::collection::vec(prop::collection::vec(grant(), 0..4), 0..4),
        assigned in prop::collection::vec(any::<bool>(), 4),
        requests in prop::collection::vec((action(), kind(), 0..NAMES.len()), 1..16),
    ) {
        let authz = Authorizer::in_memory(State::default());
        let mut held = vec![];
        let mut role_names = vec![];
        for (i, gs) in roles.iter().enumerate() {
            let name = format!("r{i}");
            let grants: Vec<Grant> = gs.iter().map(|(a, k, p)| Grant { action: *a, kind: *k, pattern: p.parse().unwrap() }).collect();
            authz.add_role(&name, grants).unwrap();
            if assigned[i] {
                role_names.push(name);
                held.extend(gs.iter().cloned());
            }
        }
        authz.add_user("u", role_names).unwrap();
        let (tok, _) = authz.create_token("u", None, "").unwrap();
        let who = authz.authenticate(&tok).unwrap();
        for (a, k, n) in requests {
            let name = NAMES[n];
            let got = authz.authorize(&who, a, Resource::new(k, name)).is_ok();
            prop_assert_eq!(got, model(&held, a, k, name), "{:?} {:?} {}", a, k, name);
        }
    }
}
