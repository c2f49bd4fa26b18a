//! What can go wrong in the store, each with the path and what to do.

use std::{io, path::PathBuf};

use shoal_core::{BlockCid, ChannelId, ManifestCid};

/// Errors from opening, reading or writing the store.
///
/// Disk and database failures carry the store's path and a remedy; data
/// errors name the channel, seq or CID. None of them is a panic.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store was written by a newer shoal.
    #[error(
        "store at {path} has schema v{found}, newer than the v{supported} this shoal reads; \
         upgrade shoal, or point [store] at another directory"
    )]
    SchemaTooNew {
        /// The store directory.
        path: PathBuf,
        /// Version found on disk.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The store was written by an older shoal and there is no migration.
    #[error(
        "store at {path} has schema v{found}, older than the v{supported} this shoal reads, and there \
         is no migration from it; the store only caches network data, so move the directory aside \
         (or delete it) and restart: live data is refetched from peers"
    )]
    SchemaTooOld {
        /// The store directory.
        path: PathBuf,
        /// Version found on disk.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The directory holds a RocksDB database that is not a shoal store.
    #[error("{path} holds a database that is not a shoal store ({detail}); point [store] at an empty directory")]
    NotAStore {
        /// The store directory.
        path: PathBuf,
        /// What gave it away.
        detail: String,
    },
    /// Another process has the store open.
    #[error(
        "store at {path} is in use by another process (is another shoal node using this data directory?): {detail}"
    )]
    Locked {
        /// The store directory.
        path: PathBuf,
        /// RocksDB's message.
        detail: String,
    },
    /// The disk is full. RocksDB stops writing until space is freed.
    #[error(
        "no space left on the disk holding the store at {path}: {detail}; free disk space or lower \
         [store] disk_budget_bytes, then restart the node"
    )]
    DiskFull {
        /// The store directory.
        path: PathBuf,
        /// RocksDB's or the OS's message.
        detail: String,
    },
    /// The OS refused access to the store's files.
    #[error(
        "permission denied on the store at {path}: {detail}; the user running shoal needs read and \
         write access to that directory and everything in it"
    )]
    PermissionDenied {
        /// The store directory.
        path: PathBuf,
        /// RocksDB's or the OS's message.
        detail: String,
    },
    /// RocksDB found corrupt files or records.
    #[error(
        "store at {path} is corrupt: {detail}; stop the node, move the directory aside and restart \
         (live data is refetched from peers; archive channels need a backup)"
    )]
    Corruption {
        /// The store directory.
        path: PathBuf,
        /// What is corrupt.
        detail: String,
    },
    /// Any other I/O failure.
    #[error("I/O error in the store at {path}: {detail}")]
    Io {
        /// The store directory.
        path: PathBuf,
        /// The message.
        detail: String,
    },
    /// A block's bytes no longer hash to its CID. The bad copy was deleted
    /// and is never served; refetch the block from a peer and `put_block` it.
    #[error("block {cid} in the store at {path} no longer matches its CID; it was deleted, refetch it from a peer")]
    CorruptBlock {
        /// The block.
        cid: BlockCid,
        /// The store directory.
        path: PathBuf,
    },
    /// A stored manifest no longer decodes or verifies.
    #[error("manifest seq {seq} of channel {channel} in the store at {path} fails verification: {detail}")]
    CorruptManifest {
        /// The channel.
        channel: ChannelId,
        /// The seq.
        seq: u64,
        /// The store directory.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A segment cannot be committed because some blocks are not stored.
    /// Nothing was written.
    #[error(
        "cannot commit manifest seq {seq} of channel {channel}: {n} of its blocks are not stored \
         (first: {first}); put them with put_block or pass them to store_segment",
        n = .missing.len(),
        first = .missing.first().map(ToString::to_string).unwrap_or_default()
    )]
    MissingBlocks {
        /// The channel.
        channel: ChannelId,
        /// The seq.
        seq: u64,
        /// The blocks still needed.
        missing: Vec<BlockCid>,
    },
    /// A block offered for a manifest that does not list it.
    #[error(
        "block {cid} is not listed in manifest seq {seq} of channel {channel}; the store only takes blocks of a manifest"
    )]
    BlockNotInManifest {
        /// The block.
        cid: BlockCid,
        /// The channel.
        channel: ChannelId,
        /// The seq.
        seq: u64,
    },
    /// A block whose length differs from what the manifest claims.
    #[error("block {cid} is {actual} bytes but manifest seq {seq} of channel {channel} says {claimed}")]
    BlockSizeMismatch {
        /// The block.
        cid: BlockCid,
        /// The channel.
        channel: ChannelId,
        /// The seq.
        seq: u64,
        /// Size in the manifest.
        claimed: u32,
        /// Size of the bytes.
        actual: u32,
    },
    /// A different manifest is already stored at this seq: the publisher
    /// signed two histories. Nothing was written.
    #[error(
        "channel {channel} already has a different manifest at seq {seq} (stored {stored}, offered {offered}); \
         the publisher equivocated: record it with record_equivocation"
    )]
    SeqConflict {
        /// The channel.
        channel: ChannelId,
        /// The seq.
        seq: u64,
        /// The stored manifest.
        stored: ManifestCid,
        /// The offered manifest.
        offered: ManifestCid,
    },
    /// Too many block bytes are waiting for their manifest.
    #[error(
        "{pending_bytes} bytes of blocks are waiting for their manifest (limit {limit}); commit or \
         abandon segments first, or raise [store] max_pending_bytes"
    )]
    PendingFull {
        /// Bytes pending now.
        pending_bytes: u64,
        /// The limit.
        limit: u64,
    },
}

impl StoreError {
    /// Classifies a RocksDB error, naming the store's path.
    pub(crate) fn from_rocks(path: &std::path::Path, e: rocksdb::Error) -> Self {
        let kind = e.kind();
        let detail = e.into_string();
        let path = path.to_path_buf();
        let lower = detail.to_ascii_lowercase();
        if lower.contains("no space left") || lower.contains("disk full") {
            Self::DiskFull { path, detail }
        } else if lower.contains("permission denied") || lower.contains("read-only file system") {
            Self::PermissionDenied { path, detail }
        } else if lower.contains("lock")
            && (lower.contains("resource temporarily unavailable") || lower.contains("lock hold"))
        {
            Self::Locked { path, detail }
        } else if kind == rocksdb::ErrorKind::Corruption {
            Self::Corruption { path, detail }
        } else {
            Self::Io { path, detail }
        }
    }

    /// Classifies an OS error on the store directory.
    pub(crate) fn from_io(path: &std::path::Path, e: &io::Error) -> Self {
        let path = path.to_path_buf();
        let detail = e.to_string();
        match e.kind() {
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                Self::PermissionDenied { path, detail }
            }
            io::ErrorKind::StorageFull => Self::DiskFull { path, detail },
            _ => Self::Io { path, detail },
        }
    }

    /// A record that does not decode: the store is corrupt.
    pub(crate) fn record(path: &std::path::Path, cf: &str, what: &str) -> Self {
        Self::Corruption { path: path.to_path_buf(), detail: format!("column family {cf}: {what}") }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn io_errors_are_classified_with_path_and_remedy() {
        let p = Path::new("/var/lib/shoal/store");
        let e = StoreError::from_io(p, &io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(matches!(e, StoreError::PermissionDenied { .. }));
        let msg = e.to_string();
        assert!(msg.contains("/var/lib/shoal/store") && msg.contains("read and write access"), "{msg}");
        let e = StoreError::from_io(p, &io::Error::from(io::ErrorKind::StorageFull));
        assert!(matches!(e, StoreError::DiskFull { .. }));
        assert!(e.to_string().contains("disk_budget_bytes"), "{e}");
    }

    #[test]
    fn missing_blocks_message_counts_and_names_the_first() {
        let ch = shoal_core::ChannelKey::from_secret_bytes(&[9; 32]).channel_id();
        let a = BlockCid::of(b"a");
        let e = StoreError::MissingBlocks { channel: ch, seq: 7, missing: vec![a, BlockCid::of(b"b")] };
        let msg = e.to_string();
        assert!(msg.contains("seq 7") && msg.contains("2 of its blocks") && msg.contains(&a.to_string()), "{msg}");
    }
}
