//! Network metrics as values: one struct of prometheus-client metrics,
//! registered under `shoal_net_*` in the registry the caller passes in (the
//! same one libp2p-metrics and gossipsub register into). Cloning shares the
//! underlying atomics, so a test or the node can read them at any time.

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::codec::ProtocolBytes;

/// Application protocols whose bytes are counted here. Kademlia, identify
/// and ping are in libp2p's own transport totals (`libp2p_bandwidth_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub(crate) enum NetProtocol {
    /// `/shoal/xchg/1.0.0` frames.
    Exchange,
    /// `/shoal/head/1.0.0` frames.
    Head,
    /// Manifest payloads on channel topics (published or received; relayed
    /// copies are in gossipsub's `topic_msg_*_bytes`).
    GossipManifest,
    /// Directory payloads.
    GossipDirectory,
}

/// Traffic direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub(crate) enum Direction {
    /// Received.
    In,
    /// Sent.
    Out,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BytesLabels {
    protocol: NetProtocol,
    direction: Direction,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The network's metrics. Names are registered with the `shoal_net` prefix.
#[derive(Debug, Clone)]
pub struct NetMetrics {
    peers: Gauge,
    bytes: Family<BytesLabels, Counter>,
    manifests: Family<VerdictLabels, Counter>,
    directory: Family<VerdictLabels, Counter>,
    pub(crate) blocks_served: Counter,
    pub(crate) blocks_received: Counter,
    pub(crate) bad_blocks: Counter,
    pub(crate) malformed_frames: Counter,
    pub(crate) peers_banned: Counter,
    pub(crate) held_wants: Gauge,
    pub(crate) held_wants_answered: Counter,
    pub(crate) held_wants_expired: Counter,
    pub(crate) held_wants_refused: Counter,
    pub(crate) held_wants_cancelled: Counter,
    pub(crate) held_wants_cycles: Counter,
    pub(crate) wants_unanswered: Counter,
    pub(crate) rate_limited: Counter,
    pub(crate) ping_closed: Counter,
    pub(crate) ping_timeouts: Counter,
    pub(crate) ping_errors: Counter,
    pub(crate) ping_slow: Counter,
    pub(crate) connections_refused: Counter,
    pub(crate) streams_refused: Counter,
    pub(crate) junk_wants: Counter,
    pub(crate) connections_over_limit: Counter,
    pub(crate) peers_trimmed: Counter,
    pub(crate) connections_established: Counter,
    pub(crate) haves_announced: Counter,
    pub(crate) haves_suppressed: Counter,
    pub(crate) provider_redials: Counter,
    pub(crate) redirect_dials: Counter,
    pub(crate) shed_redirects: Counter,
    pub(crate) upload_waits: Counter,
    pub(crate) upload_wait_sheds: Counter,
    pub(crate) upload_slot_timeouts: Counter,
    pub(crate) dht_bootstraps: Counter,
    pub(crate) dht_provider_lookups: Counter,
    pub(crate) dht_provider_announcements: Counter,
    inbound_requests: Family<KindLabels, Counter>,
    events_dropped: Family<KindLabels, Counter>,
}

impl NetMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            peers: Gauge::default(),
            bytes: Family::default(),
            manifests: Family::default(),
            directory: Family::default(),
            blocks_served: Counter::default(),
            blocks_received: Counter::default(),
            bad_blocks: Counter::default(),
            malformed_frames: Counter::default(),
            peers_banned: Counter::default(),
            held_wants: Gauge::default(),
            held_wants_answered: Counter::default(),
            held_wants_expired: Counter::default(),
            held_wants_refused: Counter::default(),
            held_wants_cancelled: Counter::default(),
            held_wants_cycles: Counter::default(),
            wants_unanswered: Counter::default(),
            rate_limited: Counter::default(),
            ping_closed: Counter::default(),
            ping_timeouts: Counter::default(),
            ping_errors: Counter::default(),
            ping_slow: Counter::default(),
            connections_refused: Counter::default(),
            streams_refused: Counter::default(),
            junk_wants: Counter::default(),
            connections_over_limit: Counter::default(),
            peers_trimmed: Counter::default(),
            connections_established: Counter::default(),
            haves_announced: Counter::default(),
            haves_suppressed: Counter::default(),
            provider_redials: Counter::default(),
            redirect_dials: Counter::default(),
            shed_redirects: Counter::default(),
            upload_waits: Counter::default(),
            upload_wait_sheds: Counter::default(),
            upload_slot_timeouts: Counter::default(),
            dht_bootstraps: Counter::default(),
            dht_provider_lookups: Counter::default(),
            dht_provider_announcements: Counter::default(),
            inbound_requests: Family::default(),
            events_dropped: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("shoal_net");
        r.register("peers", "Connected peers", m.peers.clone());
        r.register("bytes", "Bytes per application protocol and direction", m.bytes.clone());
        r.register("manifests", "Channel manifests by verdict and reason", m.manifests.clone());
        r.register("directory_entries", "Directory entries by verdict and reason", m.directory.clone());
        r.register("blocks_served", "Blocks sent to peers", m.blocks_served.clone());
        r.register("blocks_received", "Verified blocks received from peers", m.blocks_received.clone());
        r.register("bad_blocks", "Received blocks whose bytes did not match their CID", m.bad_blocks.clone());
        r.register("malformed_frames", "Exchange/head frames that failed to decode", m.malformed_frames.clone());
        r.register("peers_banned", "Peers disconnected and banned for misbehaviour", m.peers_banned.clone());
        r.register("held_wants", "Want-blocks held for blocks not yet here", m.held_wants.clone());
        r.register("held_wants_answered", "Held wants answered with the block", m.held_wants_answered.clone());
        r.register("held_wants_expired", "Held wants that expired", m.held_wants_expired.clone());
        r.register("held_wants_refused", "Wants not held because a cap was reached", m.held_wants_refused.clone());
        r.register("held_wants_cancelled", "Held wants cancelled by the peer", m.held_wants_cancelled.clone());
        r.register(
            "held_wants_cycles",
            "Held wants answered DONT_HAVE because we asked their peer for the same block (a wait cycle)",
            m.held_wants_cycles.clone(),
        );
        r.register(
            "wants_unanswered",
            "Our want-block requests a peer left unanswered past the hold + 5 s (each a stall strike)",
            m.wants_unanswered.clone(),
        );
        r.register("rate_limited", "Inbound requests or blocks refused by a rate cap", m.rate_limited.clone());
        r.register("ping_closed", "Connections closed because a liveness ping went unanswered", m.ping_closed.clone());
        r.register("ping_timeouts", "Of ping_closed: a ping that libp2p timed out", m.ping_timeouts.clone());
        r.register(
            "ping_errors",
            "Of ping_closed: a ping stream that failed (negotiation, reset, I/O), not a timeout",
            m.ping_errors.clone(),
        );
        r.register(
            "ping_slow",
            "Pongs that came back 1 s or more after their ping (a queued link or a starved event loop)",
            m.ping_slow.clone(),
        );
        r.register(
            "connections_refused",
            "Connections refused by the deny list or the per-IP cap",
            m.connections_refused.clone(),
        );
        r.register(
            "streams_refused",
            "Inbound request streams dropped unread by the stream guard (far over the request rate)",
            m.streams_refused.clone(),
        );
        r.register(
            "junk_wants",
            "Held want-blocks for blocks this node neither holds nor expects (made-up CIDs or races)",
            m.junk_wants.clone(),
        );
        r.register(
            "connections_over_limit",
            "Inbound connections denied by the connection limits (total, per peer, pending)",
            m.connections_over_limit.clone(),
        );
        r.register(
            "peers_trimmed",
            "Peers disconnected by the peer budget (more than max_peers connected)",
            m.peers_trimmed.clone(),
        );
        r.register(
            "connections_established",
            "Connections established (both directions; each costs a handshake)",
            m.connections_established.clone(),
        );
        r.register("haves_announced", "Blocks announced (HAVE) to mesh peers, per peer", m.haves_announced.clone());
        r.register(
            "haves_suppressed",
            "HAVEs not sent because the mesh peer was known to hold the block",
            m.haves_suppressed.clone(),
        );

        r.register(
            "provider_redials",
            "Dials to channel providers: found by a lookup, or redialed while the channel is quiet or thin",
            m.provider_redials.clone(),
        );
        r.register(
            "redirect_dials",
            "Dials to peers a block's upstream named in a redirect (a publisher's seeds)",
            m.redirect_dials.clone(),
        );
        r.register(
            "shed_redirects",
            "Wants shed at the upload cap whose DONT_HAVE named peers just sent the block",
            m.shed_redirects.clone(),
        );
        r.register(
            "upload_waits",
            "Responses with blocks that waited for the upload line (one written at a time, rarest block first)",
            m.upload_waits.clone(),
        );
        r.register(
            "upload_wait_sheds",
            "Responses that waited past the upload line's limit and had their blocks shed (DONT_HAVE with names)",
            m.upload_wait_sheds.clone(),
        );
        r.register(
            "upload_slot_timeouts",
            "Responses that held the upload line past its timeout (a slow or stalled reader); the line moved on",
            m.upload_slot_timeouts.clone(),
        );
        r.register(
            "dht_bootstraps",
            "Kademlia bootstraps finished (ours and Kademlia's automatic ones; each is a lookup per bucket)",
            m.dht_bootstraps.clone(),
        );
        r.register(
            "dht_provider_lookups",
            "Kademlia provider lookups finished (joins and quiet or thin channels)",
            m.dht_provider_lookups.clone(),
        );
        r.register(
            "dht_provider_announcements",
            "Channels this node announced as a carrier in the DHT (only when a lookup found few carriers)",
            m.dht_provider_announcements.clone(),
        );
        r.register("inbound_requests", "Inbound exchange/head requests", m.inbound_requests.clone());
        r.register("events_dropped", "Events dropped because the consumer was slow", m.events_dropped.clone());
        m
    }

    pub(crate) fn protocol_bytes(&self, protocol: NetProtocol) -> ProtocolBytes {
        // Each guard must drop before the next get_or_create: a read guard
        // alive in the same expression deadlocks the family's write lock.
        let inbound = self.bytes.get_or_create(&BytesLabels { protocol, direction: Direction::In }).clone();
        let outbound = self.bytes.get_or_create(&BytesLabels { protocol, direction: Direction::Out }).clone();
        ProtocolBytes { inbound, outbound }
    }

    pub(crate) fn add_bytes(&self, protocol: NetProtocol, direction: Direction, n: usize) {
        self.bytes.get_or_create(&BytesLabels { protocol, direction }).inc_by(n as u64);
    }

    pub(crate) fn set_peers(&self, n: usize) {
        self.peers.set(n as i64);
    }

    pub(crate) fn manifest(&self, verdict: Verdict, reason: &'static str) {
        self.manifests.get_or_create(&VerdictLabels { verdict: verdict.as_str(), reason }).inc();
    }

    pub(crate) fn directory(&self, verdict: Verdict, reason: &'static str) {
        self.directory.get_or_create(&VerdictLabels { verdict: verdict.as_str(), reason }).inc();
    }

    pub(crate) fn inbound_request(&self, kind: &'static str) {
        self.inbound_requests.get_or_create(&KindLabels { kind }).inc();
    }

    pub(crate) fn event_dropped(&self, kind: &'static str) {
        self.events_dropped.get_or_create(&KindLabels { kind }).inc();
    }

    fn verdicts(f: &Family<VerdictLabels, Counter>, verdict: Verdict) -> u64 {
        // Label values are a closed set; summing the known reasons keeps
        // reading cheap and lock-free beyond the family's map lock.
        REASONS.iter().map(|reason| f.get_or_create(&VerdictLabels { verdict: verdict.as_str(), reason }).get()).sum()
    }

    /// Reads every metric into a plain value.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let b = |p, d| self.bytes.get_or_create(&BytesLabels { protocol: p, direction: d }).get();
        let reason = |r: &'static str| {
            [Verdict::Rejected, Verdict::Ignored]
                .iter()
                .map(|v| self.manifests.get_or_create(&VerdictLabels { verdict: v.as_str(), reason: r }).get())
                .sum()
        };
        MetricsSnapshot {
            peers: self.peers.get().max(0) as u64,
            exchange_bytes: (b(NetProtocol::Exchange, Direction::In), b(NetProtocol::Exchange, Direction::Out)),
            head_bytes: (b(NetProtocol::Head, Direction::In), b(NetProtocol::Head, Direction::Out)),
            manifest_bytes: (
                b(NetProtocol::GossipManifest, Direction::In),
                b(NetProtocol::GossipManifest, Direction::Out),
            ),
            directory_bytes: (
                b(NetProtocol::GossipDirectory, Direction::In),
                b(NetProtocol::GossipDirectory, Direction::Out),
            ),
            manifests_accepted: Self::verdicts(&self.manifests, Verdict::Accepted),
            manifests_rejected: Self::verdicts(&self.manifests, Verdict::Rejected),
            manifests_ignored: Self::verdicts(&self.manifests, Verdict::Ignored),
            manifests_bad_signature: reason(reason::BAD_SIGNATURE),
            manifests_too_large: reason(reason::TOO_LARGE),
            manifests_too_old: reason(reason::TOO_OLD),
            manifests_malformed: reason(reason::MALFORMED),
            directory_accepted: Self::verdicts(&self.directory, Verdict::Accepted),
            directory_rejected: Self::verdicts(&self.directory, Verdict::Rejected)
                + Self::verdicts(&self.directory, Verdict::Ignored),
            blocks_served: self.blocks_served.get(),
            blocks_received: self.blocks_received.get(),
            bad_blocks: self.bad_blocks.get(),
            malformed_frames: self.malformed_frames.get(),
            peers_banned: self.peers_banned.get(),
            held_wants: self.held_wants.get().max(0) as u64,
            held_wants_answered: self.held_wants_answered.get(),
            held_wants_expired: self.held_wants_expired.get(),
            held_wants_refused: self.held_wants_refused.get(),
            held_wants_cancelled: self.held_wants_cancelled.get(),
            held_wants_cycles: self.held_wants_cycles.get(),
            wants_unanswered: self.wants_unanswered.get(),
            rate_limited: self.rate_limited.get(),
            connections_refused: self.connections_refused.get(),
            streams_refused: self.streams_refused.get(),
            junk_wants: self.junk_wants.get(),
            connections_over_limit: self.connections_over_limit.get(),
            peers_trimmed: self.peers_trimmed.get(),
            connections_established: self.connections_established.get(),
            haves_announced: self.haves_announced.get(),
            haves_suppressed: self.haves_suppressed.get(),
            provider_redials: self.provider_redials.get(),
            redirect_dials: self.redirect_dials.get(),
            shed_redirects: self.shed_redirects.get(),
            upload_waits: self.upload_waits.get(),
            upload_wait_sheds: self.upload_wait_sheds.get(),
            upload_slot_timeouts: self.upload_slot_timeouts.get(),
            dht_bootstraps: self.dht_bootstraps.get(),
            dht_provider_lookups: self.dht_provider_lookups.get(),
            dht_provider_announcements: self.dht_provider_announcements.get(),
            ping_closed: self.ping_closed.get(),
            ping_timeouts: self.ping_timeouts.get(),
            ping_errors: self.ping_errors.get(),
            ping_slow: self.ping_slow.get(),
            events_dropped: EVENT_KINDS
                .iter()
                .map(|kind| self.events_dropped.get_or_create(&KindLabels { kind }).get())
                .sum(),
        }
    }
}

/// Gossip verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accepted,
    Rejected,
    Ignored,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Ignored => "ignored",
        }
    }
}

/// Reason labels (a closed set so the metric cardinality is bounded).
pub(crate) mod reason {
    pub(crate) const OK: &str = "ok";
    pub(crate) const BAD_SIGNATURE: &str = "bad_signature";
    pub(crate) const TOO_LARGE: &str = "too_large";
    pub(crate) const MALFORMED: &str = "malformed";
    pub(crate) const WRONG_CHANNEL: &str = "wrong_channel";
    pub(crate) const OUT_OF_BOUNDS: &str = "out_of_bounds";
    pub(crate) const FROM_THE_FUTURE: &str = "from_the_future";
    pub(crate) const TOO_OLD: &str = "too_old";
    pub(crate) const UNKNOWN_TOPIC: &str = "unknown_topic";
    pub(crate) const NODE: &str = "node";
    pub(crate) const BACKPRESSURE: &str = "backpressure";
    pub(crate) const STALE: &str = "stale";
}

const REASONS: [&str; 12] = [
    reason::OK,
    reason::BAD_SIGNATURE,
    reason::TOO_LARGE,
    reason::MALFORMED,
    reason::WRONG_CHANNEL,
    reason::OUT_OF_BOUNDS,
    reason::FROM_THE_FUTURE,
    reason::TOO_OLD,
    reason::UNKNOWN_TOPIC,
    reason::NODE,
    reason::BACKPRESSURE,
    reason::STALE,
];

/// Event kinds for the dropped-events metric.
pub(crate) const EVENT_KINDS: [&str; 8] =
    ["manifest", "directory", "haves", "providers", "peer_connected", "peer_disconnected", "peer_banned", "listening"];

/// A plain copy of the network metrics at one moment. Byte pairs are
/// `(in, out)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Connected peers.
    pub peers: u64,
    /// `/shoal/xchg/1.0.0` frame bytes (in, out).
    pub exchange_bytes: (u64, u64),
    /// `/shoal/head/1.0.0` frame bytes (in, out).
    pub head_bytes: (u64, u64),
    /// Manifest payload bytes received (first copy) and published.
    pub manifest_bytes: (u64, u64),
    /// Directory payload bytes received (first copy) and published.
    pub directory_bytes: (u64, u64),
    /// Manifests accepted (by the stateless checks and, in node mode, the node).
    pub manifests_accepted: u64,
    /// Manifests rejected (the forwarding peer is penalised).
    pub manifests_rejected: u64,
    /// Manifests ignored (not forwarded, no penalty).
    pub manifests_ignored: u64,
    /// Of those refused: bad signature.
    pub manifests_bad_signature: u64,
    /// Of those refused: over the size limit.
    pub manifests_too_large: u64,
    /// Of those refused: older than `manifest_max_age_ms` (replays).
    pub manifests_too_old: u64,
    /// Of those refused: not decodable.
    pub manifests_malformed: u64,
    /// Directory entries accepted.
    pub directory_accepted: u64,
    /// Directory entries rejected or ignored.
    pub directory_rejected: u64,
    /// Blocks sent.
    pub blocks_served: u64,
    /// Verified blocks received.
    pub blocks_received: u64,
    /// Bad blocks received.
    pub bad_blocks: u64,
    /// Malformed frames received.
    pub malformed_frames: u64,
    /// Peers banned.
    pub peers_banned: u64,
    /// Wants held now.
    pub held_wants: u64,
    /// Held wants answered with their block.
    pub held_wants_answered: u64,
    /// Held wants expired.
    pub held_wants_expired: u64,
    /// Wants refused a hold by the caps.
    pub held_wants_refused: u64,
    /// Held wants cancelled.
    pub held_wants_cancelled: u64,
    /// Held wants answered DONT_HAVE at once because we sent their peer a
    /// want for the same block: it was waiting on us while we wait on it.
    pub held_wants_cycles: u64,
    /// Our want-block requests left unanswered past their hold + 5 s by a
    /// peer that answered no other want meanwhile (each a `Stall` strike).
    pub wants_unanswered: u64,
    /// Events dropped because the consumer was slow.
    pub events_dropped: u64,
    /// Inbound requests (or blocks in them) refused by a rate cap.
    pub rate_limited: u64,
    /// Connections refused by the deny list or the per-IP cap.
    pub connections_refused: u64,
    /// Inbound request streams dropped unread by the stream guard.
    pub streams_refused: u64,
    /// Held want-blocks for blocks this node neither held nor expected.
    pub junk_wants: u64,
    /// Inbound connections denied by the connection limits.
    pub connections_over_limit: u64,
    /// Peers disconnected by the peer budget.
    pub peers_trimmed: u64,
    /// Connections established, both directions.
    pub connections_established: u64,
    /// Blocks announced (HAVE) to mesh peers, counted per peer.
    pub haves_announced: u64,
    /// HAVEs skipped because the peer was known to hold the block.
    pub haves_suppressed: u64,
    /// Dials to channel providers (found by a lookup, or redialed while the
    /// channel is quiet or thin).
    pub provider_redials: u64,
    /// Dials started to peers a block's upstream named in a redirect.
    pub redirect_dials: u64,
    /// Wants shed at our upload cap whose DONT_HAVE named the peers we just
    /// sent the block to.
    pub shed_redirects: u64,
    /// Responses with blocks that waited for the upload line.
    pub upload_waits: u64,
    /// Of those, responses that waited too long and had their blocks shed.
    pub upload_wait_sheds: u64,
    /// Responses that held the upload line past its timeout.
    pub upload_slot_timeouts: u64,
    /// Kademlia bootstraps finished, automatic ones included.
    pub dht_bootstraps: u64,
    /// Kademlia provider lookups finished.
    pub dht_provider_lookups: u64,
    /// Channels this node announced as a carrier in the DHT.
    pub dht_provider_announcements: u64,
    /// Connections closed because a liveness ping went unanswered: the
    /// sum of `ping_timeouts`, `ping_errors` and closes by the loop's own
    /// liveness window (no pong for `ping_interval_ms + ping_timeout_ms`).
    pub ping_closed: u64,
    /// Of `ping_closed`: pings libp2p reported as timed out.
    pub ping_timeouts: u64,
    /// Of `ping_closed`: ping streams that failed otherwise (negotiation
    /// timeout, reset, I/O error).
    pub ping_errors: u64,
    /// Pongs whose round trip took 1 s (`SLOW_PING`) or longer: a link queued
    /// behind bulk data or an event loop that answered late.
    pub ping_slow: u64,
}
