//! The node's libp2p identity and its API token, persisted in the data dir.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use libp2p::identity::Keypair;

/// File name of the node identity inside the data dir.
pub const IDENTITY_FILE: &str = "identity.key";
/// File name of the API token inside the data dir.
pub const TOKEN_FILE: &str = "api.token";
/// File the running daemon writes its API address to (like kubo's `api`).
pub const API_FILE: &str = "api";

/// Why the identity or token could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The identity file is not a libp2p protobuf-encoded key.
    #[error("{path} is not a libp2p identity key ({reason}); move it away and run `shoal init` for a new identity")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// Others can read a secret.
    #[error("{path} is readable by group or others; run `chmod 600 {path}`")]
    TooOpen {
        /// The file.
        path: PathBuf,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io { path: path.to_owned(), source }
}

/// Writes `bytes` to a new file created 0600 (never world-readable, even
/// briefly), atomically via a temp file and rename.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

fn read_secret(path: &Path) -> Result<Vec<u8>, IdentityError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path).map_err(io(path))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(IdentityError::TooOpen { path: path.to_owned() });
        }
    }
    fs::read(path).map_err(io(path))
}

/// Loads the node identity, creating one on first use.
pub fn load_or_create_identity(data_dir: &Path) -> Result<Keypair, IdentityError> {
    let path = data_dir.join(IDENTITY_FILE);
    if path.exists() {
        let bytes = read_secret(&path)?;
        return Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| IdentityError::Corrupt { path: path.clone(), reason: e.to_string() });
    }
    fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let key = Keypair::generate_ed25519();
    let bytes =
        key.to_protobuf_encoding().map_err(|e| IdentityError::Corrupt { path: path.clone(), reason: e.to_string() })?;
    write_secret(&path, &bytes)?;
    Ok(key)
}

/// Loads the API token, creating a random one on first use.
pub fn load_or_create_token(data_dir: &Path) -> Result<String, IdentityError> {
    let path = data_dir.join(TOKEN_FILE);
    if path.exists() {
        let bytes = read_secret(&path)?;
        return Ok(String::from_utf8_lossy(&bytes).trim().to_owned());
    }
    fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let mut raw = [0u8; 32];
    rand::fill(&mut raw);
    let token = hex::encode(raw);
    write_secret(&path, token.as_bytes())?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_token_persist_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_identity(dir.path()).unwrap();
        let b = load_or_create_identity(dir.path()).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        let t1 = load_or_create_token(dir.path()).unwrap();
        assert_eq!(t1.len(), 64);
        assert_eq!(load_or_create_token(dir.path()).unwrap(), t1);
        use std::os::unix::fs::PermissionsExt;
        let p = dir.path().join(TOKEN_FILE);
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load_or_create_token(dir.path()), Err(IdentityError::TooOpen { .. })));
    }
}
