//! Cluster mode: the auth rules (users, roles, hashed tokens and keys) live
//! in the metadata raft group, so a credential made on one node
//! authenticates on every node and a revocation reaches every node
//! (docs/security.md, "Cluster").
//!
//! A change is a compare-and-set of the whole rules: the node that takes
//! the request applies the change to the replicated rules at version V and
//! proposes "version V -> these rules" (`MetaCommand::SetAuth`); a proposal
//! that lost a race is retried from the newer rules. Every node installs
//! the rules as it applies them (`ClusterNode::on_auth_change`), and keeps
//! `auth/state.json` as a cache for its next start.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};
use weft_auth::{AuthOp, Authorizer, State};
use weft_cluster::{ClusterNode, MetaCommand, MetaResponse};
use weft_service::ServiceError;
use weft_wire::{ErrorBody, ErrorCode};

/// Compare-and-set attempts of one change before giving up (each lost
/// attempt means another change committed meanwhile).
const CAS_ATTEMPTS: usize = 8;
/// Between two attempts of the first node's bootstrap (no leader yet...).
const BOOTSTRAP_RETRY: Duration = Duration::from_millis(500);

fn unavailable(msg: String) -> ServiceError {
    ServiceError::Wire(ErrorBody::new(ErrorCode::Unavailable, msg))
}

/// The replicated rules and their version as this node applied them
/// (version 0: never set: the node's own rules are the base).
fn replicated(node: &ClusterNode, authz: &Authorizer) -> Result<(u64, State), ServiceError> {
    let meta = node.local_meta();
    if meta.auth_version == 0 {
        return Ok((0, State::clone(&authz.state())));
    }
    let state = serde_json::from_value(meta.auth).map_err(|e| unavailable(format!("the replicated auth rules do not parse: {e}")))?;
    Ok((meta.auth_version, state))
}

/// Put `op` through the metadata group for `actor` (the audit line's).
/// `max_bytes`: the largest rules (as JSON) a change may propose.
pub async fn commit(node: &ClusterNode, authz: &Arc<Authorizer>, op: &AuthOp, actor: &str, peer: &str, max_bytes: usize) -> Result<(), ServiceError> {
    for _ in 0..CAS_ATTEMPTS {
        let (version, mut next) = replicated(node, authz)?;
        op.apply(&mut next).map_err(crate::auth_cmd::wire)?;
        let bytes = serde_json::to_vec(&next).map_err(|e| unavailable(e.to_string()))?;
        if bytes.len() > max_bytes {
            let msg = format!("the auth rules would be {} bytes, over the {max_bytes} a metadata entry may carry (half of cluster.max_frame_bytes): remove users or credentials", bytes.len());
            return Err(ServiceError::Wire(ErrorBody::new(ErrorCode::TooLarge, msg)));
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| unavailable(e.to_string()))?;
        let r = node.propose_meta(&MetaCommand::SetAuth { expected: version, state: value }).await.map_err(|e| unavailable(format!("the metadata group did not take the change: {e}")))?;
        match r {
            MetaResponse::Ok => {
                // Applied here before the answer: the observer installed it too.
                authz.install_replicated(next, version + 1);
                authz.audit_change(op, actor, peer);
                return Ok(());
            }
            MetaResponse::Error { code, .. } if code == "conflict" => continue,
            MetaResponse::Error { code, message } => return Err(unavailable(format!("{code}: {message}"))),
            other => return Err(unavailable(format!("unexpected answer {other:?}"))),
        }
    }
    Err(ServiceError::Wire(ErrorBody::new(ErrorCode::Conflict, format!("the auth rules changed under this change {CAS_ATTEMPTS} times; retry"))))
}

/// Install the replicated rules as this node applies them, catch up with
/// those applied before, keep `auth/state.json` as a cache, and bootstrap
/// the cluster's rules if nobody has yet.
pub fn attach(node: &ClusterNode, authz: Arc<Authorizer>, data_dir: PathBuf) {
    let (tx, mut rx) = tokio::sync::watch::channel::<Option<Arc<State>>>(None);
    let install = {
        let authz = authz.clone();
        move |version: u64, value: &serde_json::Value| match serde_json::from_value::<State>(value.clone()) {
            Ok(state) => {
                let state = Arc::new(state);
                if authz.install_replicated(State::clone(&state), version) {
                    let _ = tx.send(Some(state));
                }
            }
            // Every node refuses the same bytes: keep the rules in force.
            Err(e) => warn!(version, error = %e, "replicated auth rules do not parse; the rules in force stay"),
        }
    };
    let install = Arc::new(install);
    let i = install.clone();
    node.on_auth_change(Arc::new(move |v, s| i(v, s)));
    let meta = node.local_meta();
    if meta.auth_version > 0 {
        install(meta.auth_version, &meta.auth);
    }
    // The cache: written off the raft apply path, latest state only.
    if let Some(path) = authz.state_path().map(std::path::Path::to_path_buf) {
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(state) = rx.borrow_and_update().clone() else { continue };
                let p = path.clone();
                match tokio::task::spawn_blocking(move || weft_auth::store::save(&p, &state)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(error = %e, "auth state cache not written"),
                    Err(e) => warn!(error = %e, "auth state cache task failed"),
                }
            }
        });
    }
    tokio::spawn(bootstrap(node.clone(), authz, data_dir));
}

/// The first node to reach the metadata group with no rules there proposes
/// its own: its local rules if it has any (a single node turned cluster),
/// else, with auth on, the `admin` role and user and an admin token. The
/// compare-and-set from version 0 lets exactly one node win; the winner
/// writes `admin.token` (mode 0600). The token goes to `admin.token.pending`
/// first, so a proposal whose fate is unknown (a timeout) still leaves the
/// token with whoever's hash made it into the rules.
async fn bootstrap(node: ClusterNode, authz: Arc<Authorizer>, data_dir: PathBuf) {
    let pending = data_dir.join("admin.token.pending");
    let final_path = data_dir.join("admin.token");
    let local = State::clone(&authz.state());
    let (proposal, token_id) = if local.users.is_empty() && authz.enabled() {
        match weft_auth::bootstrap_state() {
            Ok((state, token, id)) => {
                if let Err(e) = weft_auth::store::write_private(&pending, format!("{token}\n").as_bytes()) {
                    warn!(error = %e, "cannot write the pending admin token; not bootstrapping the cluster's auth rules from this node");
                    return;
                }
                (state, Some(id))
            }
            Err(e) => {
                warn!(error = %e, "cannot make the first admin token");
                return;
            }
        }
    } else {
        (local, None)
    };
    let Ok(value) = serde_json::to_value(&proposal) else { return };
    loop {
        let meta = node.local_meta();
        if meta.auth_version > 0 {
            // Someone set the rules: ours if they hold our token.
            let ours = token_id.as_ref().is_some_and(|id| meta.auth.pointer(&format!("/tokens/{id}")).is_some());
            settle(&pending, &final_path, ours);
            return;
        }
        match node.propose_meta(&MetaCommand::SetAuth { expected: 0, state: value.clone() }).await {
            Ok(MetaResponse::Ok) => {
                authz.install_replicated(proposal.clone(), 1);
                settle(&pending, &final_path, token_id.is_some());
                info!(users = proposal.users.len(), admin_token = token_id.is_some(), "cluster auth rules bootstrapped from this node");
                return;
            }
            // Lost the race (or unknown fate): the loop reads what won.
            Ok(_) | Err(_) => tokio::time::sleep(BOOTSTRAP_RETRY).await,
        }
    }
}

fn settle(pending: &std::path::Path, final_path: &std::path::Path, ours: bool) {
    if !pending.exists() {
        return;
    }
    if ours {
        match std::fs::rename(pending, final_path) {
            Ok(()) => warn!(path = %final_path.display(), "auth on, cluster bootstrapped here: an admin token was written; keep it safe"),
            Err(e) => warn!(error = %e, "cannot move the admin token into place"),
        }
    } else {
        let _ = std::fs::remove_file(pending);
    }
}
