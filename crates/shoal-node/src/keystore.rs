//! The node's channel keystore: `DATA_DIR/keys/NAME.pem`, one PKCS#8 file per
//! channel key, directory 0700, files 0600. Private keys never leave the
//! node over the API; `shoal key export` reads the file locally.

use std::{
    fs,
    path::{Path, PathBuf},
};

use shoal_core::{
    ChannelId, ChannelKey,
    keyfile::{KeyFileError, read_key_file, write_key_file},
};

/// Why a keystore operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// Names are limited so they are safe as file names and in URLs.
    #[error("key name '{0}' is not allowed: use 1-64 characters from a-z, A-Z, 0-9, '-' and '_'")]
    BadName(String),
    /// No such key.
    #[error("no key named '{name}' in {dir}; create one with `shoal key generate {name}`")]
    NotFound {
        /// The name asked for.
        name: String,
        /// The keystore directory.
        dir: PathBuf,
    },
    /// A key file problem (permissions, format, exists).
    #[error(transparent)]
    File(#[from] KeyFileError),
    /// The keystore directory could not be created or listed.
    #[error("keystore {dir}: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One keystore entry: a name and its channel id, or why the file is unusable.
pub type KeyEntry = (String, Result<ChannelId, String>);

/// A directory of channel keys.
#[derive(Debug, Clone)]
pub struct Keystore {
    dir: PathBuf,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Keystore {
    /// Opens (creating with mode 0700 if needed) `DATA_DIR/keys`.
    pub fn open(data_dir: &Path) -> Result<Self, KeystoreError> {
        let dir = data_dir.join("keys");
        let io = |source| KeystoreError::Io { dir: dir.clone(), source };
        fs::create_dir_all(&dir).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> Result<PathBuf, KeystoreError> {
        if !valid_name(name) {
            return Err(KeystoreError::BadName(name.chars().take(80).collect()));
        }
        Ok(self.dir.join(format!("{name}.pem")))
    }

    /// Generates and stores a new key; returns its channel id.
    pub fn generate(&self, name: &str) -> Result<ChannelId, KeystoreError> {
        let key = ChannelKey::generate();
        write_key_file(&self.path(name)?, &key)?;
        Ok(key.channel_id())
    }

    /// Imports a PKCS#8 PEM file under `name` (the source must itself be 0600).
    pub fn import(&self, name: &str, file: &Path) -> Result<ChannelId, KeystoreError> {
        let key = read_key_file(file)?;
        write_key_file(&self.path(name)?, &key)?;
        Ok(key.channel_id())
    }

    /// Loads a key for signing.
    pub fn load(&self, name: &str) -> Result<ChannelKey, KeystoreError> {
        let path = self.path(name)?;
        if !path.exists() {
            return Err(KeystoreError::NotFound { name: name.to_owned(), dir: self.dir.clone() });
        }
        Ok(read_key_file(&path)?)
    }

    /// The PEM text of a key (for `shoal key export`, local only).
    pub fn export(&self, name: &str) -> Result<String, KeystoreError> {
        let key = self.load(name)?;
        key.to_pkcs8_pem().map_err(|e| {
            KeystoreError::File(KeyFileError::BadFormat { path: self.dir.join(name), reason: e.to_string() })
        })
    }

    /// Every key: (name, channel id), sorted by name. Unreadable files are
    /// reported, not skipped silently.
    pub fn list(&self) -> Result<Vec<KeyEntry>, KeystoreError> {
        let rd = fs::read_dir(&self.dir).map_err(|source| KeystoreError::Io { dir: self.dir.clone(), source })?;
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let p = entry.path();
            let Some(name) =
                p.file_stem().and_then(|s| s.to_str()).filter(|_| p.extension().is_some_and(|e| e == "pem"))
            else {
                continue;
            };
            out.push((name.to_owned(), read_key_file(&p).map(|k| k.channel_id()).map_err(|e| e.to_string())));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_list_load_export_import() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::open(dir.path()).unwrap();
        let id = ks.generate("main").unwrap();
        assert_eq!(ks.load("main").unwrap().channel_id(), id);
        let listed = ks.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, "main");
        assert_eq!(listed[0].1, Ok(id));
        let pem = ks.export("main").unwrap();
        let src = dir.path().join("exported.pem");
        std::fs::write(&src, pem).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(ks.import("copy", &src).unwrap(), id);
        assert!(matches!(ks.generate("main"), Err(KeystoreError::File(KeyFileError::Exists { .. }))));
    }

    #[test]
    fn names_are_checked_and_missing_keys_say_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::open(dir.path()).unwrap();
        assert!(matches!(ks.generate("../etc/passwd"), Err(KeystoreError::BadName(_))));
        assert!(matches!(ks.generate(""), Err(KeystoreError::BadName(_))));
        let err = ks.load("nope").unwrap_err().to_string();
        assert!(err.contains("shoal key generate nope"), "{err}");
    }
}
