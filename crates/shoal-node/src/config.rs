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

use crate::{
    scheduler::SchedulerConfig,
    source::{MAX_STRIPE_SEEDS, STRIPE_SEEDS, SourceConfig},
};

/// Default local API / gateway address: loopback only.
pub const DEFAULT_API: &str = "127.0.0.1:8455";

/// Smallest non-zero `max_upload` / `max_download`: 16 KiB/s, far below any
/// video stream; smaller values are typos (bits for bytes, a missing k).
pub const MIN_RATE_CAP: u64 = 16 * 1024;

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
    /// Publisher side: the seeds a segment's blocks are striped over, block
    /// *n* first to seed *n* mod `stripe_seeds`. 1 gives every block to the
    /// same seed (one uplink carries the whole first hop).
    pub stripe_seeds: u32,
    /// Bench baseline only (`shoal-bench --modes origin`): fetch blocks from
    /// this peer id alone (the publisher), ignore other peers' HAVEs and
    /// announce none, i.e. the CDN picture. Unset in real use.
    pub origin_only: Option<String>,
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
            stripe_seeds: STRIPE_SEEDS,
            origin_only: None,
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

    /// The publisher-side configuration of the node's block source.
    pub fn source(&self) -> SourceConfig {
        SourceConfig {
            origin_copies: self.origin_copies,
            origin_grace: Duration::from_millis(self.origin_grace_ms),
            stripe_seeds: self.stripe_seeds,
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
    /// Upload cap, bytes per second, over everything this node serves to
    /// peers (0 = no cap). A node that relays a stream needs about one copy
    /// of the stream's bitrate per downstream peer it feeds.
    pub max_upload: u64,
    /// Download cap, bytes per second, over everything this node fetches
    /// (0 = no cap). The fetch scheduler paces its wants to stay under it;
    /// below the stream's bitrate, segments will be skipped.
    pub max_download: u64,
    /// The file this configuration was read from, if any (for reloads).
    #[serde(skip)]
    pub file: Option<PathBuf>,
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
            max_upload: 0,
            max_download: 0,
            file: None,
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
        cfg.file = file.clone();
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
        self.net.validate().map_err(|e| match e {
            shoal_net::NetError::Config { key, reason } => {
                ConfigError::Invalid { key, reason: format!("[net] {reason}") }
            }
            other => ConfigError::Invalid { key: "net", reason: other.to_string() },
        })?;
        let bad = |key: &'static str, reason: String| Err(ConfigError::Invalid { key, reason });
        for (key, v) in [("max_upload", self.max_upload), ("max_download", self.max_download)] {
            if v != 0 && v < MIN_RATE_CAP {
                return bad(
                    key,
                    format!("{v} B/s cannot carry a video stream; use 0 (no cap) or at least {MIN_RATE_CAP}"),
                );
            }
        }
        let f = &self.fetch;
        if f.max_tracked_blocks == 0 {
            return bad("fetch.max_tracked_blocks", "must be at least 1".into());
        }
        if f.stall_limit == 0 {
            return bad("fetch.stall_limit", "must be at least 1 (one stall would bench every peer)".into());
        }
        if f.base_timeout_ms == 0 || f.base_timeout_ms > 60_000 {
            return bad("fetch.base_timeout_ms", format!("{} must be 1..=60000", f.base_timeout_ms));
        }
        if f.max_hold_ms > u64::from(shoal_core::limits::MAX_HOLD_MS) {
            return bad(
                "fetch.max_hold_ms",
                format!("{} is over the protocol limit {}", f.max_hold_ms, shoal_core::limits::MAX_HOLD_MS),
            );
        }
        if f.hedge_window_ms >= f.target_latency_ms {
            return bad(
                "fetch.hedge_window_ms",
                format!("{} must be below fetch.target_latency_ms ({})", f.hedge_window_ms, f.target_latency_ms),
            );
        }
        if f.target_latency_ms > 600_000 {
            return bad("fetch.target_latency_ms", format!("{} ms is over 10 minutes", f.target_latency_ms));
        }
        if f.origin_grace_ms > 60_000 {
            return bad("fetch.origin_grace_ms", format!("{} ms is over a minute", f.origin_grace_ms));
        }
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
        if let Some(p) = &self.fetch.origin_only
            && p.parse::<libp2p::PeerId>().is_err()
        {
            return Err(ConfigError::Invalid {
                key: "fetch.origin_only",
                reason: format!("{p:?} is not a peer id; give the publisher's peer id (12D3Koo…) or leave it unset"),
            });
        }
        if self.fetch.origin_copies == 0 {
            return Err(ConfigError::Invalid {
                key: "fetch.origin_copies",
                reason: "must be at least 1, or nobody gets the stream first".into(),
            });
        }
        if !(1..=MAX_STRIPE_SEEDS).contains(&self.fetch.stripe_seeds) {
            return Err(ConfigError::Invalid {
                key: "fetch.stripe_seeds",
                reason: format!(
                    "{} is out of range: give 1 (one seed takes every block) to {MAX_STRIPE_SEEDS}",
                    self.fetch.stripe_seeds
                ),
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
    fn unknown_net_key_and_bad_deny_entry_are_named_with_their_line() {
        let err = NodeConfig::from_toml("[net]\nmdns = false\nmax_conections = 3\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_conections") && err.contains("line 3") && err.contains("c.toml"), "{err}");
        let err = NodeConfig::from_toml("[net]\ndeny = [\n  \"10.0.0.0/8\",\n  \"10.1/8\",\n]\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        // toml points at the key whose value failed; the message names the entry.
        assert!(err.contains("10.1/8") && err.contains("line 2") && err.contains("deny"), "{err}");
        let err = NodeConfig::from_toml("max_upload = -5\n", Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains("max_upload") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn every_range_check_names_its_key() {
        type Case = (&'static str, Box<dyn Fn(&mut NodeConfig)>);
        let cases: Vec<Case> = vec![
            ("max_upload", Box::new(|c| c.max_upload = 1000)),
            ("max_download", Box::new(|c| c.max_download = 8)),
            ("fetch.stall_limit", Box::new(|c| c.fetch.stall_limit = 0)),
            ("fetch.max_tracked_blocks", Box::new(|c| c.fetch.max_tracked_blocks = 0)),
            ("fetch.base_timeout_ms", Box::new(|c| c.fetch.base_timeout_ms = 0)),
            ("fetch.max_hold_ms", Box::new(|c| c.fetch.max_hold_ms = 1_000_000)),
            ("fetch.hedge_window_ms", Box::new(|c| c.fetch.hedge_window_ms = 5000)),
            (
                "fetch.target_latency_ms",
                Box::new(|c| {
                    c.fetch.target_latency_ms = 100;
                    c.fetch.hedge_window_ms = 50;
                }),
            ),
            ("fetch.origin_grace_ms", Box::new(|c| c.fetch.origin_grace_ms = 100_000)),
            ("fetch.stripe_seeds", Box::new(|c| c.fetch.stripe_seeds = 0)),
            ("fetch.stripe_seeds", Box::new(|c| c.fetch.stripe_seeds = MAX_STRIPE_SEEDS + 1)),
            ("max_connections_per_ip", Box::new(|c| c.net.max_connections_per_ip = 0)),
            ("max_memory_percent", Box::new(|c| c.net.max_memory_percent = 101)),
            ("held_wants_per_peer", Box::new(|c| c.net.held_wants_per_peer = 10_000)),
            ("serve_bytes_per_sec_per_peer", Box::new(|c| c.net.serve_bytes_per_sec_per_peer = 10)),
            ("exchange_requests_per_sec_per_peer", Box::new(|c| c.net.exchange_requests_per_sec_per_peer = 0)),
            ("max_strikes", Box::new(|c| c.net.max_strikes = 0)),
            ("inbound_streams_per_sec_per_peer", Box::new(|c| c.net.inbound_streams_per_sec_per_peer = 50)),
        ];
        for (key, set) in cases {
            let mut cfg = NodeConfig::default();
            set(&mut cfg);
            let e = cfg.validate().expect_err(key);
            assert!(matches!(&e, ConfigError::Invalid { key: k, .. } if k.ends_with(key)), "{key}: {e}");
        }
        NodeConfig::default().validate().expect("defaults validate");
    }

    #[test]
    fn invalid_values_never_half_start() {
        let mut cfg = NodeConfig::default();
        cfg.fetch.origin_copies = 0;
        assert!(cfg.validate().unwrap_err().to_string().contains("fetch.origin_copies"));
    }

    /// The bench's origin baseline names a peer id; anything else is refused.
    #[test]
    fn origin_only_must_be_a_peer_id() {
        let mut cfg = NodeConfig::default();
        cfg.fetch.origin_only = Some("publisher".into());
        assert!(cfg.validate().unwrap_err().to_string().contains("fetch.origin_only"));
        cfg.fetch.origin_only = Some(libp2p::PeerId::random().to_string());
        assert!(cfg.validate().is_ok());
    }

    #[tokio::test]
    async fn a_bad_config_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("node");
        let mut cfg = NodeConfig { data_dir: dir.clone(), api: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
        cfg.net.max_connections_per_ip = 0;
        let e = crate::Node::start(cfg).await.unwrap_err().to_string();
        assert!(e.contains("max_connections_per_ip"), "{e}");
        assert!(!dir.exists(), "a refused config must not create the data dir, identity or store");
    }
}
