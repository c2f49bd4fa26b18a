//! [`NetConfig`]: every network knob, with production defaults. The same
//! struct is the `[net]` section of `config/default.toml`.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};
use serde::{Deserialize, Serialize};
use shoal_core::limits::MAX_HOLD_MS;

use crate::{
    NetError,
    gate::{DenyRule, MAX_DENY_RULES},
};

/// Who decides Accept/Reject/Ignore for a channel manifest that passed the
/// stateless checks (decode, size, signature, clock bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ManifestValidation {
    /// The node: every manifest that passes the stateless checks is handed
    /// out as [`crate::NetEvent::Manifest`] with `pending_validation: true`,
    /// and the node must call [`crate::NetClient::report_validation`]
    /// (chain order, equivocation). Nothing is forwarded before that.
    #[default]
    Node,
    /// The network itself: the stateless checks decide and the manifest is
    /// accepted at once. For tests of shoal-net alone and for relays with no
    /// chain state.
    Network,
}

/// A provider lookup that finds this many carriers of a channel ends
/// there, and the node does not announce itself as one (docs/protocol.md
/// §5.3): a joiner dials `join_dial_providers` of them and the gossip mesh
/// does the rest. Below the 20 providers Kademlia stores per key, leaving
/// room for carriers that have left but whose records live on until
/// `provider_ttl_secs`; a node whose later lookup (for a quiet or thin
/// channel) finds fewer announces itself then.
pub const ENOUGH_PROVIDERS: usize = 12;

/// Configuration of the network layer. `Default` is a production node:
/// TCP and QUIC on all interfaces, mDNS on, Kademlia in automatic mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetConfig {
    /// Addresses to listen on (`/ip4/0.0.0.0/tcp/4001`, `/ip4/0.0.0.0/udp/4001/quic-v1`,
    /// or `/memory/0` with the memory transport).
    pub listen: Vec<Multiaddr>,
    /// Bootstrap peers. Each must end in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Force Kademlia server mode. Off: server mode once an external address
    /// is confirmed. Tests on loopback need it on.
    pub kad_server_mode: bool,
    /// Kademlia bootstrap interval, seconds (also runs whenever the routing
    /// table is thin).
    pub kad_bootstrap_interval_secs: u64,
    /// LAN discovery with mDNS.
    pub mdns: bool,
    /// How long a channel provider record lives in the DHT, seconds. Live
    /// streams come and go in minutes, so records must too.
    pub provider_ttl_secs: u64,
    /// How often this node re-announces the channels it carries, seconds.
    /// Must be well under `provider_ttl_secs`.
    pub provider_republish_secs: u64,
    /// How many providers to dial when joining a channel.
    pub join_dial_providers: usize,
    /// Most channels this node joins at once (its own gossip subscriptions).
    pub max_channels: usize,
    /// Most topics one remote peer may subscribe to in our view of it.
    pub max_peer_subscriptions: usize,
    /// Who validates channel manifests beyond the stateless checks.
    pub manifest_validation: ManifestValidation,
    /// Live announcements older than this are ignored as replays, ms.
    pub manifest_max_age_ms: u64,
    /// Allowed clock skew for manifests and directory entries dated in the
    /// future, ms.
    pub max_clock_skew_ms: u64,
    /// Gossipsub heartbeat, ms.
    pub gossip_heartbeat_ms: u64,
    /// Held wants one peer may have open at once.
    pub held_wants_per_peer: usize,
    /// Held wants across all peers.
    pub held_wants_total: usize,
    /// Longest hold this node grants, ms (at most `shoal_core::limits::MAX_HOLD_MS`).
    pub max_hold_ms: u32,
    /// Timeout for an exchange or head request, ms. Must exceed
    /// `max_hold_ms`: a held want keeps its request open.
    pub request_timeout_ms: u64,
    /// Exchange and head requests one peer may have open to us per connection.
    pub max_inbound_requests_per_peer: usize,
    /// Our requests open to one peer at once.
    pub max_outbound_requests_per_peer: usize,
    /// Strikes (bad blocks, malformed frames, bad head manifests) before a
    /// peer is disconnected and banned.
    pub max_strikes: u32,
    /// How long a banned peer stays banned, seconds.
    pub ban_secs: u64,
    /// Most established connections in total.
    pub max_connections: u32,
    /// Most established connections to one peer.
    pub max_connections_per_peer: u32,
    /// Most pending (not yet established) connections each way.
    pub max_pending_connections: u32,
    /// Close a connection with no open streams after this long, seconds.
    pub idle_timeout_secs: u64,
    /// The peer budget's high watermark: with more peers than this
    /// connected, the least useful are closed down to `target_peers`
    /// (`crate::budget`). Gossip mesh members, peers with requests open and
    /// peers that exchanged blocks with us in the last 10 s are never
    /// closed. Without it a swarm drifts to a full mesh: gossipsub keeps
    /// every connection a DHT lookup opens alive.
    pub max_peers: u32,
    /// The peer budget's low watermark: trimming stops here.
    pub target_peers: u32,
    /// A new connection is not trimmed for this long, seconds: time to join
    /// a gossip mesh or answer a DHT query.
    pub peer_grace_secs: u64,
    /// Liveness ping on every connection this often, milliseconds.
    pub ping_interval_ms: u64,
    /// A connection whose ping gets no answer within this long is closed,
    /// milliseconds. A cut path (a partition, a dead NAT mapping) otherwise
    /// keeps a dead TCP connection "up" for TCP's retransmission backoff
    /// (tens of seconds), and nothing redials a peer that looks connected.
    pub ping_timeout_ms: u64,
    /// A joined channel with no valid manifest heard (or published) for this
    /// long looks for providers again and dials them, milliseconds: the
    /// mesh may look healthy while every path to the publisher is cut.
    pub quiet_channel_ms: u64,
    /// Directory entries kept (newest per channel), and how long, seconds.
    pub directory_max_entries: usize,
    /// Directory entries not re-announced within this time are dropped.
    pub directory_ttl_secs: u64,
    /// The exclusion list: peer ids (`12D3Koo…`) and IP ranges
    /// (`10.0.0.0/8`, `::1/128`). Enforced on every connection, both ways;
    /// replaced at run time by `shoal peers block/unblock` and a config reload.
    pub deny: Vec<DenyRule>,
    /// Most inbound connections from one IP address (memory transports have
    /// no IP and are not counted). Caps Sybil identities from one host.
    pub max_connections_per_ip: u32,
    /// Refuse new connections while this process uses more than this share
    /// of the machine's memory, percent (0 turns the check off).
    pub max_memory_percent: u8,
    /// Bytes per second one peer may pull from us over the exchange
    /// (token bucket, 250 ms of burst; 0 = no per-peer cap).
    pub serve_bytes_per_sec_per_peer: u64,
    /// Exchange requests per second one peer may send us (burst: two
    /// seconds' worth). Requests over it are answered DONT_HAVE at once.
    pub exchange_requests_per_sec_per_peer: u32,
    /// Head requests per second one peer may send us (burst: four seconds'
    /// worth). Requests over it get an empty answer.
    pub head_requests_per_sec_per_peer: u32,
    /// Exchange request *streams* per second one connection may open
    /// (burst: two seconds' worth), checked in the connection task before a
    /// stream is read. Streams over it are dropped unread and each second
    /// with drops is a flood strike (`crate::guard`). At least
    /// `exchange_requests_per_sec_per_peer`; 4× it by default, so requests
    /// between the two caps are still answered (DONT_HAVE) and only a flood
    /// is dropped. The head protocol's guard is 4× its request rate.
    pub inbound_streams_per_sec_per_peer: u32,
    /// Total bytes per second served to all peers (0 = no cap). Not a
    /// `[net]` key: the node sets it from its top-level `max_upload`.
    #[serde(skip)]
    pub max_upload: u64,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/4001".parse().unwrap_or_else(|_| unreachable!("literal")),
                "/ip4/0.0.0.0/udp/4001/quic-v1".parse().unwrap_or_else(|_| unreachable!("literal")),
            ],
            bootstrap: Vec::new(),
            kad_server_mode: false,
            kad_bootstrap_interval_secs: 300,
            mdns: true,
            provider_ttl_secs: 600,
            provider_republish_secs: 120,
            join_dial_providers: 4,
            max_channels: 32,
            max_peer_subscriptions: 128,
            manifest_validation: ManifestValidation::Node,
            manifest_max_age_ms: 60_000,
            max_clock_skew_ms: 30_000,
            gossip_heartbeat_ms: 1_000,
            held_wants_per_peer: 64,
            held_wants_total: 4_096,
            max_hold_ms: MAX_HOLD_MS,
            request_timeout_ms: 20_000,
            max_inbound_requests_per_peer: 32,
            max_outbound_requests_per_peer: 32,
            max_strikes: 3,
            ban_secs: 600,
            max_connections: 256,
            max_connections_per_peer: 2,
            max_pending_connections: 64,
            idle_timeout_secs: 60,
            max_peers: 48,
            target_peers: 32,
            peer_grace_secs: 10,
            // A 5 s liveness window, at 2.5 pings' cost of 1 s pings.
            ping_interval_ms: 2_500,
            ping_timeout_ms: 2_500,
            quiet_channel_ms: 4_000,
            directory_max_entries: 1_000,
            directory_ttl_secs: 120,
            deny: Vec::new(),
            max_connections_per_ip: 8,
            max_memory_percent: 80,
            serve_bytes_per_sec_per_peer: 8 * 1024 * 1024,
            exchange_requests_per_sec_per_peer: 100,
            head_requests_per_sec_per_peer: 5,
            inbound_streams_per_sec_per_peer: 400,
            max_upload: 0,
        }
    }
}

impl NetConfig {
    /// A config for tests: memory addresses, no mDNS, forced server mode,
    /// network-side validation and a fast gossip heartbeat.
    pub fn for_tests() -> Self {
        Self {
            listen: vec!["/memory/0".parse().unwrap_or_else(|_| unreachable!("literal"))],
            kad_server_mode: true,
            mdns: false,
            manifest_validation: ManifestValidation::Network,
            gossip_heartbeat_ms: 200,
            // In-process memory connections never die silently, but a test
            // process running dozens of nodes on two cores can starve a
            // pong for seconds; a long timeout keeps that from cutting links.
            ping_timeout_ms: 20_000,
            ..Self::default()
        }
    }

    /// Checks cross-field rules; the error names the key to change.
    pub fn validate(&self) -> Result<(), NetError> {
        let bad = |key: &'static str, reason: String| Err(NetError::Config { key, reason });
        for addr in &self.bootstrap {
            if peer_id_of(addr).is_none() {
                return Err(NetError::BootstrapWithoutPeerId { addr: addr.clone() });
            }
        }
        if self.max_hold_ms > MAX_HOLD_MS {
            return bad("max_hold_ms", format!("{} is over the protocol limit {MAX_HOLD_MS}", self.max_hold_ms));
        }
        if self.request_timeout_ms <= u64::from(self.max_hold_ms) {
            return bad(
                "request_timeout_ms",
                format!(
                    "{} must exceed max_hold_ms ({}) or held wants time out",
                    self.request_timeout_ms, self.max_hold_ms
                ),
            );
        }
        if self.provider_republish_secs == 0 || self.provider_republish_secs >= self.provider_ttl_secs {
            return bad(
                "provider_republish_secs",
                format!(
                    "{} must be above 0 and below provider_ttl_secs ({})",
                    self.provider_republish_secs, self.provider_ttl_secs
                ),
            );
        }
        for (key, v) in [
            ("held_wants_per_peer", self.held_wants_per_peer),
            ("max_channels", self.max_channels),
            ("max_inbound_requests_per_peer", self.max_inbound_requests_per_peer),
            ("max_outbound_requests_per_peer", self.max_outbound_requests_per_peer),
            ("directory_max_entries", self.directory_max_entries),
            ("held_wants_total", self.held_wants_total),
            ("max_connections", self.max_connections as usize),
            ("max_connections_per_peer", self.max_connections_per_peer as usize),
            ("max_connections_per_ip", self.max_connections_per_ip as usize),
            ("max_pending_connections", self.max_pending_connections as usize),
            ("max_strikes", self.max_strikes as usize),
            ("max_peer_subscriptions", self.max_peer_subscriptions),
            ("exchange_requests_per_sec_per_peer", self.exchange_requests_per_sec_per_peer as usize),
            ("head_requests_per_sec_per_peer", self.head_requests_per_sec_per_peer as usize),
            ("inbound_streams_per_sec_per_peer", self.inbound_streams_per_sec_per_peer as usize),
            ("request_timeout_ms", self.request_timeout_ms as usize),
            ("idle_timeout_secs", self.idle_timeout_secs as usize),
            ("target_peers", self.target_peers as usize),
            ("ping_interval_ms", self.ping_interval_ms as usize),
            ("ping_timeout_ms", self.ping_timeout_ms as usize),
            ("quiet_channel_ms", self.quiet_channel_ms as usize),
            ("directory_ttl_secs", self.directory_ttl_secs as usize),
            ("manifest_max_age_ms", self.manifest_max_age_ms as usize),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1".into());
            }
        }
        if self.inbound_streams_per_sec_per_peer < self.exchange_requests_per_sec_per_peer {
            return bad(
                "inbound_streams_per_sec_per_peer",
                format!(
                    "{} is below exchange_requests_per_sec_per_peer ({}): honest requests would be dropped unanswered",
                    self.inbound_streams_per_sec_per_peer, self.exchange_requests_per_sec_per_peer
                ),
            );
        }
        if self.target_peers > self.max_peers {
            return bad(
                "target_peers",
                format!("{} is above max_peers ({}): trimming would never stop", self.target_peers, self.max_peers),
            );
        }
        if self.max_peers > self.max_connections {
            return bad(
                "max_peers",
                format!(
                    "{} is above max_connections ({}): the budget would never be reached",
                    self.max_peers, self.max_connections
                ),
            );
        }
        if self.held_wants_per_peer > self.held_wants_total {
            return bad(
                "held_wants_per_peer",
                format!("{} is above held_wants_total ({})", self.held_wants_per_peer, self.held_wants_total),
            );
        }
        if self.max_memory_percent > 100 {
            return bad("max_memory_percent", format!("{} is not a percentage (0..=100)", self.max_memory_percent));
        }
        if self.deny.len() > MAX_DENY_RULES {
            return bad("deny", format!("{} rules; at most {MAX_DENY_RULES}, use wider ranges", self.deny.len()));
        }
        if self.serve_bytes_per_sec_per_peer != 0 && self.serve_bytes_per_sec_per_peer < 16 * 1024 {
            return bad(
                "serve_bytes_per_sec_per_peer",
                format!(
                    "{} B/s cannot carry a video stream; use 0 (no cap) or at least 16384",
                    self.serve_bytes_per_sec_per_peer
                ),
            );
        }
        if self.gossip_heartbeat_ms < 50 {
            return bad("gossip_heartbeat_ms", format!("{} is too fast; use at least 50", self.gossip_heartbeat_ms));
        }
        Ok(())
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// The `/p2p/<peer id>` at the end of an address, if any.
pub fn peer_id_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| if let Protocol::P2p(id) = p { Some(id) } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        net: NetConfig,
    }

    /// The shipped `[net]` section must parse, validate and equal `Default`,
    /// so the documentation cannot drift from the code.
    #[test]
    fn default_toml_net_section_matches_default() {
        let text = include_str!("../../../config/default.toml");
        let table: toml::Table = toml::from_str(text).expect("default.toml parses");
        let net = toml::Table::from_iter([("net".to_string(), table["net"].clone())]);
        let file: File = net.try_into().expect("[net] parses");
        file.net.validate().expect("[net] validates");
        assert_eq!(file.net, NetConfig::default());
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = toml::from_str::<NetConfig>("mdsn = false").unwrap_err().to_string();
        assert!(err.contains("mdsn"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let c = NetConfig { request_timeout_ms: 5_000, ..NetConfig::default() };
        assert!(matches!(c.validate(), Err(NetError::Config { key: "request_timeout_ms", .. })));
        let c = NetConfig { bootstrap: vec!["/memory/5".parse().unwrap()], ..NetConfig::default() };
        assert!(matches!(c.validate(), Err(NetError::BootstrapWithoutPeerId { .. })));
        assert!(NetConfig::for_tests().validate().is_ok());
    }
}
