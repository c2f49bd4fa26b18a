//! Channel key files: PKCS#8 v2 PEM, mode 0600, refused when others can read
//! them.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use crate::ChannelKey;

/// What went wrong with a key file, with the path and the fix.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Group or others may read the file.
    #[error(
        "key file {path} is readable by group or others (mode {mode:o}); a channel key is a secret: run `chmod 600 {path}`"
    )]
    TooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not a PKCS#8 ed25519 PEM key.
    #[error("key file {path} is not a PKCS#8 PEM ed25519 private key: {reason}")]
    BadFormat {
        /// The key file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The target already exists and would be overwritten.
    #[error("key file {path} already exists; refusing to overwrite a key")]
    Exists {
        /// The key file.
        path: PathBuf,
    },
}

/// Writes `key` to a new file at `path` with mode 0600. Never overwrites.
pub fn write_key_file(path: &Path, key: &ChannelKey) -> Result<(), KeyFileError> {
    let io_err = |source| KeyFileError::Io { path: path.to_owned(), source };
    let pem =
        key.to_pkcs8_pem().map_err(|e| KeyFileError::BadFormat { path: path.to_owned(), reason: e.to_string() })?;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Created 0600 from the start: no window where the key is world-readable.
        opts.mode(0o600);
    }
    let mut file = opts.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            KeyFileError::Exists { path: path.to_owned() }
        } else {
            io_err(e)
        }
    })?;
    file.write_all(pem.as_bytes()).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    Ok(())
}

/// Reads a key file, refusing one that group or others can read.
pub fn read_key_file(path: &Path) -> Result<ChannelKey, KeyFileError> {
    let io_err = |source| KeyFileError::Io { path: path.to_owned(), source };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path).map_err(io_err)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::TooOpen { path: path.to_owned(), mode });
        }
    }
    let pem = fs::read_to_string(path).map_err(io_err)?;
    ChannelKey::from_pkcs8_pem(&pem)
        .map_err(|e| KeyFileError::BadFormat { path: path.to_owned(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn written_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let key = ChannelKey::generate();
        write_key_file(&path, &key).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read_key_file(&path).unwrap().channel_id(), key.channel_id());
        assert!(matches!(write_key_file(&path, &key), Err(KeyFileError::Exists { .. })));
    }

    #[test]
    fn group_readable_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write_key_file(&path, &ChannelKey::generate()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_key_file(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn garbage_is_a_format_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        fs::write(&path, "not a key").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(read_key_file(&path), Err(KeyFileError::BadFormat { .. })));
    }
}
