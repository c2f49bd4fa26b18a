//! The node's one configuration struct, for the file and the command line.
//!
//! Layers apply in order: [`NodeConfig::default`] (what a first-time user
//! should get), the TOML file, `SHOAL_*` environment variables, then flags
//! (clap reads the variables and flags together, flags winning). Unknown keys
//! are an error naming the key and its line, and a config that fails to load
//! or validate never half-starts a node.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

pub use libp2p::{Multiaddr, multiaddr::Protocol};
use serde::{Deserialize, Serialize};
use shoal_net::NetConfig;
use shoal_store::StoreConfig;

use crate::scheduler::SchedulerConfig;

/// Default local API / gateway address: loopback only.
pub const DEFAULT_API: &str = "127.0.0.1:8455";

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a wrong type (the message has the line).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml said, with line and column.
        message: String,
    },
    /// A value that parses but cannot work.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why, and what would work.
        reason: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[fetch]`: the fetch scheduler's knobs (see `scheduler.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FetchConfig {
    /// Playback deadline: a segment is due this long after it was published.
    pub target_latency_ms: u64,
    /// Most wants outstanding at one peer.
    pub max_inflight_per_peer: usize,
    /// Most blocks tracked at once per channel.
    pub max_tracked_blocks: usize,
    /// Longest a peer may hold one of our wants, ms.
    pub max_hold_ms: u64,
    /// Window before a block's deadline in which a second peer may be asked, ms.
    pub hedge_window_ms: u64,
    /// Extra time on every request beyond the transfer estimate, ms.
    pub base_timeout_ms: u64,
    /// Stalls after which a peer is used only when no one else can serve.
    pub stall_limit: u32,
    /// Publisher side: how many peers get each new block straight from the
    /// publisher; everyone else gets it from them. 1–2 keeps the publisher's
    /// upload near one copy of the stream.
    pub origin_copies: u32,
    /// Publisher side: after this long, the publisher serves a block to
    /// anyone (stragglers), ms.
    pub origin_grace_ms: u64,
}

impl Default for FetchConfig {
    fn default() -> Self {
        let s = SchedulerConfig::default();
        Self {
            target_latency_ms: 3000,
            max_inflight_per_peer: s.max_inflight_per_peer,
            max_tracked_blocks: s.max_tracked_blocks,
            max_hold_ms: s.max_hold.as_millis() as u64,
            hedge_window_ms: s.hedge_window.as_millis() as u64,
            base_timeout_ms: s.base_timeout.as_millis() as u64,
            stall_limit: s.stall_limit,
            origin_copies: 1,
            origin_grace_ms: 1500,
        }
    }
}

impl FetchConfig {
    /// The scheduler configuration these knobs describe.
    pub fn scheduler(&self) -> SchedulerConfig {
        SchedulerConfig {
            max_inflight_per_peer: self.max_inflight_per_peer,
            max_tracked_blocks: self.max_tracked_blocks,
            max_hold: Duration::from_millis(self.max_hold_ms),
            hedge_window: Duration::from_millis(self.hedge_window_ms),
            base_timeout: Duration::from_millis(self.base_timeout_ms),
            stall_limit: self.stall_limit,
            ..SchedulerConfig::default()
        }
    }
}

/// The whole node configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Where the node keeps its identity, keys, store and API token.
    pub data_dir: PathBuf,
    /// Local API and HLS gateway address. Loopback by default: the API can
    /// publish on your channels.
    pub api: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
    /// `[net]`: libp2p.
    pub net: NetConfig,
    /// `[store]`: RocksDB.
    pub store: StoreConfig,
    /// `[fetch]`: the fetch scheduler.
    pub fetch: FetchConfig,
}

/// The default data directory: `$HOME/.shoal` (like kubo's `~/.ipfs`).
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".shoal")
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            // Invariant: the constant is a valid socket address.
            api: DEFAULT_API.parse().unwrap_or_else(|_| unreachable!("valid constant")),
            log_format: LogFormat::Text,
            net: NetConfig::default(),
            store: StoreConfig::default(),
            fetch: FetchConfig::default(),
        }
    }
}

/// The daemon's flags; every one can also be set by a `SHOAL_*` variable
/// and in the config file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NodeArgs {
    /// Data directory (identity, keys, store, API token).
    #[arg(long, env = "SHOAL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Config file (default: DATA_DIR/config.toml if it exists).
    #[arg(long, env = "SHOAL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address (repeatable), e.g. /ip4/0.0.0.0/tcp/4001.
    #[arg(long = "listen", env = "SHOAL_LISTEN", value_delimiter = ',')]
    pub listen: Vec<Multiaddr>,
    /// Bootstrap peer (repeatable): MULTIADDR/p2p/PEERID.
    #[arg(long = "bootstrap", env = "SHOAL_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<Multiaddr>,
    /// Local API and gateway address.
    #[arg(long, env = "SHOAL_API")]
    pub api: Option<SocketAddr>,
    /// Log format.
    #[arg(long, env = "SHOAL_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

impl NodeConfig {
    /// Parses TOML text (the `path` is only for messages).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })
    }

    /// Loads defaults, then the file (if any), then `args`; validates.
    pub fn load(args: &NodeArgs) -> Result<Self, ConfigError> {
        let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
        let file = match &args.config {
            Some(p) => Some(p.clone()),
            None => Some(data_dir.join("config.toml")).filter(|p| p.exists()),
        };
        let mut cfg = match &file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.clone(), source })?;
                Self::from_toml(&text, path)?
            }
            None => Self::default(),
        };
        if args.data_dir.is_some() || file.is_none() {
            cfg.data_dir = data_dir;
        }
        if !args.listen.is_empty() {
            cfg.net.listen = args.listen.clone();
        }
        if !args.bootstrap.is_empty() {
            cfg.net.bootstrap = args.bootstrap.clone();
        }
        if let Some(api) = args.api {
            cfg.api = api;
        }
        if let Some(f) = args.log_format {
            cfg.log_format = f;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.net.validate().map_err(|e| ConfigError::Invalid { key: "net", reason: e.to_string() })?;
        if self.fetch.target_latency_ms < 200 {
            return Err(ConfigError::Invalid {
                key: "fetch.target_latency_ms",
                reason: format!(
                    "{} ms is too short to fetch a segment; use at least 200",
                    self.fetch.target_latency_ms
                ),
            });
        }
        if self.fetch.max_inflight_per_peer == 0 {
            return Err(ConfigError::Invalid {
                key: "fetch.max_inflight_per_peer",
                reason: "must be at least 1".into(),
            });
        }
        if self.fetch.origin_copies == 0 {
            return Err(ConfigError::Invalid {
                key: "fetch.origin_copies",
                reason: "must be at least 1, or nobody gets the stream first".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_toml_parses_to_the_defaults() {
        let text = include_str!("../../../config/default.toml");
        let cfg = NodeConfig::from_toml(text, Path::new("config/default.toml")).unwrap();
        let def = NodeConfig::default();
        assert_eq!(cfg.fetch, def.fetch);
        assert_eq!(cfg.store, def.store);
        assert_eq!(cfg.api, def.api);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = NodeConfig::from_toml("api = \"127.0.0.1:1\"\n\n[fetch]\norigin_copiez = 3\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("origin_copiez"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn invalid_values_never_half_start() {
        let mut cfg = NodeConfig::default();
        cfg.fetch.origin_copies = 0;
        assert!(cfg.validate().unwrap_err().to_string().contains("fetch.origin_copies"));
    }
}
