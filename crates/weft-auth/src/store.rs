//! Persistence: one JSON file, `DATA_DIR/auth/state.json`, replaced whole
//! by write-to-temporary, fsync, rename, fsync of the directory; mode 0600
//! (it holds password hashes, not secrets, but nobody else needs to read it).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::AuthError;
use crate::model::State;

/// Largest state file read (a bound on what a corrupted or hostile file
/// can make us allocate).
pub const MAX_STATE_BYTES: u64 = 64 * 1024 * 1024;

pub fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("auth").join("state.json")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuthError + '_ {
    move |source| AuthError::Io { path: path.display().to_string(), source }
}

/// None when there is no file yet.
pub fn load(path: &Path) -> Result<Option<State>, AuthError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    if meta.len() > MAX_STATE_BYTES {
        return Err(AuthError::Corrupt { path: path.display().to_string(), message: format!("{} bytes, over {MAX_STATE_BYTES}", meta.len()) });
    }
    let bytes = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| AuthError::Corrupt { path: path.display().to_string(), message: e.to_string() })
}

pub fn save(path: &Path, state: &State) -> Result<(), AuthError> {
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| AuthError::Invalid(e.to_string()))?;
    write_private(path, &bytes)
}

/// Atomically replace `path` with `bytes`, mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(io(&tmp))?;
        // A file left by an older run may have other bits: set them.
        #[cfg(unix)]
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    // The rename is durable once the directory is synced.
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
}
