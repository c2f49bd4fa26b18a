//! The node's event loop: one task owns every channel's chain state and
//! fetch scheduler. Inputs: network events, finished fetches, commands from
//! the API, a tick. It never awaits anything slow: fetches run in their own
//! tasks and report back over a bounded channel.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use libp2p::PeerId;
use shoal_core::{
    BlockCid, BlockRef, ChainDecision, ChainState, ChannelId, ChannelKey, Manifest, Segment, StreamInfo, VerifiedBlock,
    VerifiedManifest, VerifyPolicy, exchange::ExchangeResponse,
};
use shoal_net::{Acceptance, NetEvent};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{SegmentEvent, Shared};
use crate::scheduler::{Action, Scheduler, SchedulerConfig};

/// Capacity of the finished-fetch channel: one slot per want in flight is
/// plenty (the scheduler caps wants per peer).
pub(crate) const FETCH_RESULT_CAPACITY: usize = 1024;
/// Tick: timeouts, hedges and HAVE batches run this often.
const TICK: Duration = Duration::from_millis(50);
/// Chain window in seqs: matches a 5-minute live window of 1 s segments.
pub(crate) const CHAIN_WINDOW: u64 = 300;
/// Manifests asked for when joining a channel (the live edge).
const JOIN_HEAD_MANIFESTS: u32 = 3;
/// Peers asked for the head when joining.
const JOIN_HEAD_PEERS: usize = 3;
/// How long the engine waits for room in the network's command queue to
/// hand it a HAVE batch: a HAVE older than this is worth less than the
/// engine's next turn, so it is dropped.
const ANNOUNCE_WAIT: Duration = Duration::from_millis(250);
/// A gap still open this long after its last head request is asked of
/// another peer. The peer that forwarded the manifest which opened it is
/// asked first, but it may be catching up on the same gap itself (it
/// forwards a manifest as soon as it has checked it, before it holds the
/// seqs below): after a partition, its answer was the newest manifests it
/// had *stored*, all older than the gap, and with no second ask the gap
/// stayed open for good (docker/test.sh: 11 segments never fetched). A head
/// answer takes a few ms on a live link; 500 ms is 10 ticks, and half a
/// segment.
const BACKFILL_RETRY: Duration = Duration::from_millis(500);
/// Peers asked for one gap in all (the forwarder included) before it is
/// left open: mesh peers first, so within two asks a carrier of the channel
/// is reached; each answer is at most `MAX_HEAD_MANIFESTS` small manifests.
const BACKFILL_PEERS: usize = 4;

/// A segment to publish, cut by the publisher's ingest.
#[derive(Debug)]
pub struct PublishSegment {
    /// The segment's bytes.
    pub data: Bytes,
    /// True duration, ms.
    pub duration_ms: u32,
    /// Starts at a random access point.
    pub keyframe: bool,
    /// Block size to split into.
    pub block_size: usize,
    /// Optional stream description.
    pub info: Option<StreamInfo>,
}

/// Per-channel view for the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChannelStatus {
    /// The channel (k51… text).
    pub channel: String,
    /// Highest accepted seq.
    pub head_seq: Option<u64>,
    /// Segments fully fetched and stored (or published) since start.
    pub segments_complete: u64,
    /// Segments given up.
    pub segments_skipped: u64,
    /// Equivocation seen.
    pub flagged: bool,
    /// This node publishes it.
    pub publishing: bool,
}

/// Commands from the API and CLI handlers.
#[derive(Debug)]
pub(crate) enum Command {
    Join { channel: ChannelId, history: u32, reply: oneshot::Sender<Result<(), String>> },
    Leave { channel: ChannelId, reply: oneshot::Sender<Result<(), String>> },
    Publish { key: Arc<ChannelKey>, segment: PublishSegment, reply: oneshot::Sender<Result<u64, String>> },
    Channels { reply: oneshot::Sender<Vec<ChannelStatus>> },
    HeadManifests { source: PeerId, manifests: Vec<VerifiedManifest> },
}

#[derive(Debug)]
pub(crate) struct FetchDone {
    channel: ChannelId,
    peer: PeerId,
    cid: BlockCid,
    result: Result<ExchangeResponse, String>,
}

/// A gap being backfilled: the peers asked (at most `BACKFILL_PEERS`) and
/// when to ask the next one if the chain still has holes.
struct Backfill {
    asked: Vec<PeerId>,
    next: Instant,
}

struct ChannelRt {
    chain: ChainState,
    /// The open gap's backfill, if any; one per channel (a newer gap
    /// replaces it; the retries look at every hole, older ones too).
    backfill: Option<Backfill>,
    sched: Scheduler<PeerId>,
    manifests: BTreeMap<u64, VerifiedManifest>,
    /// Which pending segments reference each wanted block.
    block_seq: HashMap<BlockCid, Vec<u64>>,
    pending_haves: Vec<BlockCid>,
    publishing: bool,
    complete: u64,
    skipped: u64,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(crate) struct Engine {
    shared: Arc<Shared>,
    channels: HashMap<ChannelId, ChannelRt>,
    connected: HashSet<PeerId>,
    fetch_tx: mpsc::Sender<FetchDone>,
    fetch_rx: mpsc::Receiver<FetchDone>,
    cmd_rx: mpsc::Receiver<Command>,
    events: mpsc::Receiver<NetEvent>,
    cancel: CancellationToken,
    /// `fetch.origin_only` (bench baseline): the one peer blocks come from.
    origin_only: Option<PeerId>,
    /// `max_download`, shared by every channel's scheduler.
    download: Option<crate::scheduler::DownloadBudget>,
}

impl Engine {
    pub(crate) fn new(
        shared: Arc<Shared>,
        cmd_rx: mpsc::Receiver<Command>,
        events: mpsc::Receiver<NetEvent>,
        cancel: CancellationToken,
    ) -> Self {
        let (fetch_tx, fetch_rx) = mpsc::channel(FETCH_RESULT_CAPACITY);
        // Validated with the config; an unparsable value means "unset".
        let origin_only = shared.config.fetch.origin_only.as_deref().and_then(|p| p.parse().ok());
        let cap = shared.config.max_download;
        let download = (cap > 0).then(|| {
            // One second of burst, but at least one largest response, so a
            // single block can always be fetched.
            let burst = (cap as f64).max(shoal_core::limits::MAX_EXCHANGE_RESPONSE_BYTES as f64);
            Arc::new(std::sync::Mutex::new(shoal_net::TokenBucket::new(cap as f64, burst, Instant::now())))
        });
        Self {
            download,
            shared,
            channels: HashMap::new(),
            connected: HashSet::new(),
            fetch_tx,
            fetch_rx,
            cmd_rx,
            events,
            cancel,
            origin_only,
        }
    }

    /// Whether blocks may be fetched from `peer` (always, unless the
    /// origin-only baseline names another peer).
    fn fetches_from(origin_only: Option<PeerId>, peer: &PeerId) -> bool {
        origin_only.is_none_or(|o| o == *peer)
    }

    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => break,
                Some(ev) = self.events.recv() => self.on_net_event(ev).await,
                Some(done) = self.fetch_rx.recv() => self.on_fetch_done(done).await,
                Some(cmd) = self.cmd_rx.recv() => self.on_command(cmd).await,
                _ = tick.tick() => self.on_tick().await,
            }
        }
        tracing::debug!("node engine stopped");
    }

    fn rt(&mut self, channel: ChannelId) -> &mut ChannelRt {
        let shared = &self.shared;
        let connected = &self.connected;
        let origin_only = self.origin_only;
        let download = self.download.clone();
        self.channels.entry(channel).or_insert_with(|| {
            let chain = shared
                .store
                .chain_state(&channel, CHAIN_WINDOW)
                .ok()
                .flatten()
                .unwrap_or_else(|| ChainState::new(channel, CHAIN_WINDOW));
            let mut sched = Scheduler::new(SchedulerConfig { download, ..shared.config.fetch.scheduler() });
            for p in connected.iter().filter(|p| Self::fetches_from(origin_only, p)) {
                sched.peer_connected(*p, false);
            }
            ChannelRt {
                chain,
                backfill: None,
                sched,
                manifests: BTreeMap::new(),
                block_seq: HashMap::new(),
                pending_haves: Vec::new(),
                publishing: false,
                complete: 0,
                skipped: 0,
            }
        })
    }

    async fn on_net_event(&mut self, ev: NetEvent) {
        match ev {
            NetEvent::PeerConnected { peer } => {
                self.connected.insert(peer);
                self.shared.source.peer_connected(peer);
                let mut headless = Vec::new();
                let fetch = Self::fetches_from(self.origin_only, &peer);
                for (channel, rt) in &mut self.channels {
                    if fetch {
                        rt.sched.peer_connected(peer, false);
                    }
                    if rt.chain.head().is_none() {
                        headless.push(*channel);
                    }
                }
                // A channel joined before any peer was connected has not
                // reached the live edge yet: ask each new peer for the head.
                for channel in headless {
                    self.request_head(peer, channel, JOIN_HEAD_MANIFESTS);
                }
            }
            NetEvent::PeerDisconnected { peer } => {
                self.connected.remove(&peer);
                self.shared.source.peer_disconnected(&peer);
                let now = Instant::now();
                for rt in self.channels.values_mut() {
                    rt.sched.peer_disconnected(&peer, now);
                }
                self.drain_actions().await;
            }
            NetEvent::Manifest { source, message_id, manifest, pending_validation } => {
                let verdict = self.on_manifest(manifest, Some(source)).await;
                if pending_validation {
                    let _ = self.shared.net.report_validation(message_id, source, verdict).await;
                }
            }
            NetEvent::PeerHaves { peer, cids, first_copies } => {
                if !Self::fetches_from(self.origin_only, &peer) {
                    return;
                }
                tracing::trace!(%peer, n = cids.len(), first = ?cids.first(), first_copies, "HAVE heard");
                let now = Instant::now();
                // Every channel's scheduler hears every HAVE: one for a block
                // whose manifest has not arrived yet is kept (bounded) until
                // it does.
                for rt in self.channels.values_mut() {
                    for cid in &cids {
                        if first_copies {
                            rt.sched.on_first_copy_have(peer, *cid, now);
                        } else {
                            rt.sched.on_have(peer, *cid, now);
                        }
                    }
                }
                self.drain_actions().await;
            }
            NetEvent::PeerPenalised { peer, reason, strikes, banned } => {
                tracing::warn!(%peer, ?reason, strikes, banned, "peer penalised");
            }
            NetEvent::Directory { .. } | NetEvent::Listening { .. } | NetEvent::ProvidersFound { .. } => {}
        }
    }

    /// Chain decision for a verified manifest; schedules its fetch if new.
    async fn on_manifest(&mut self, m: VerifiedManifest, source: Option<PeerId>) -> Acceptance {
        let channel = m.channel();
        if !self.channels.contains_key(&channel) {
            return Acceptance::Ignore;
        }
        let target = self.shared.config.fetch.target_latency_ms;
        let rt = self.rt(channel);
        if rt.publishing {
            // Our own channel: we are the source of truth.
            return Acceptance::Ignore;
        }
        let decision = rt.chain.decide(&m);
        self.shared.metrics.manifest_decision(&decision);
        tracing::debug!(channel = %channel, seq = m.seq(), ?source, ?decision, "manifest");
        match decision {
            ChainDecision::Accept | ChainDecision::Backfill | ChainDecision::Gap { .. } => {
                if let ChainDecision::Gap { missing } = &decision
                    && let Some(peer) = source
                {
                    self.backfill(channel, peer, (*missing.end() - *missing.start() + 1) as u32);
                }
                let now = Instant::now();
                let now_wall = now_ms();
                // Due at publish time + target latency, but never less than
                // half the target from now (history fetched on join).
                let due_ms = (m.manifest().published_at_ms + target).max(now_wall + target / 2);
                let deadline = now + Duration::from_millis(due_ms - now_wall);
                let blocks: Vec<BlockRef> = m.manifest().segment.blocks.clone();
                let seq = m.seq();
                let store = self.shared.store.clone();
                self.shared.source.expect(blocks.iter().map(|b| b.cid));
                let _ = self.shared.events.send(SegmentEvent::Accepted { channel, seq });
                let rt = self.rt(channel);
                for b in &blocks {
                    let seqs = rt.block_seq.entry(b.cid).or_default();
                    if !seqs.contains(&seq) {
                        seqs.push(seq);
                    }
                }
                rt.manifests.insert(seq, m);
                // Origin-only baseline: the publisher is everyone's upstream.
                let upstream = self.origin_only.or(source);
                let rt = self.rt(channel);
                rt.sched.add_segment(seq, &blocks, deadline, upstream, |c| store.has_block(c).unwrap_or(false), now);
                self.drain_actions().await;
                Acceptance::Accept
            }
            ChainDecision::Duplicate | ChainDecision::Stale { .. } => Acceptance::Ignore,
            ChainDecision::Equivocation(eq) => {
                tracing::warn!(channel = %channel, seq = eq.seq, "equivocation: the channel key signed two histories");
                if let Err(e) = self.shared.store.record_equivocation(&eq, &m) {
                    tracing::error!(error = %e, "could not store equivocation evidence");
                }
                Acceptance::Ignore
            }
        }
    }

    /// Asks the peer that forwarded a manifest past a gap for the manifests
    /// below it; `retry_backfills` asks others while holes remain.
    fn backfill(&mut self, channel: ChannelId, peer: PeerId, missing: u32) {
        let max = missing.min(shoal_core::limits::MAX_HEAD_MANIFESTS - 1) + 1;
        self.request_head(peer, channel, max);
        if let Some(rt) = self.channels.get_mut(&channel) {
            rt.backfill = Some(Backfill { asked: vec![peer], next: Instant::now() + BACKFILL_RETRY });
        }
    }

    /// For each channel whose last backfill ask is `BACKFILL_RETRY` old and
    /// that still has holes: asks a peer not asked yet (mesh peers first).
    /// Gives up after `BACKFILL_PEERS` asks, or when no connected peer is
    /// left to ask.
    async fn retry_backfills(&mut self, now: Instant) {
        let due: Vec<ChannelId> = self
            .channels
            .iter()
            .filter(|(_, rt)| rt.backfill.as_ref().is_some_and(|b| now >= b.next))
            .map(|(c, _)| *c)
            .collect();
        for channel in due {
            let mesh = self.shared.net.mesh_peers(channel).await.unwrap_or_default();
            let origin_only = self.origin_only;
            let Some(rt) = self.channels.get_mut(&channel) else { continue };
            let (Some(lowest), Some((head, _))) = (rt.chain.holes().first().copied(), rt.chain.head()) else {
                rt.backfill = None;
                continue;
            };
            let Some(b) = rt.backfill.as_mut() else { continue };
            let next = mesh
                .iter()
                .filter(|p| self.connected.contains(*p))
                .chain(self.connected.iter())
                .find(|p| !b.asked.contains(*p) && Self::fetches_from(origin_only, p))
                .copied();
            let Some(peer) = next.filter(|_| b.asked.len() < BACKFILL_PEERS) else {
                tracing::debug!(channel = %channel, lowest, asked = b.asked.len(), "gap left open");
                rt.backfill = None;
                continue;
            };
            b.asked.push(peer);
            b.next = now + BACKFILL_RETRY;
            tracing::debug!(channel = %channel, %peer, lowest, head, "gap still open; asking another peer");
            // All a head answer may hold: it counts back from the peer's
            // newest manifest, and the peer may be ahead of us.
            self.request_head(peer, channel, shoal_core::limits::MAX_HEAD_MANIFESTS);
        }
    }

    async fn on_fetch_done(&mut self, done: FetchDone) {
        let now = Instant::now();
        let FetchDone { channel, peer, cid, result } = done;
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%peer, %cid, error = %e, "want failed");
                if let Some(rt) = self.channels.get_mut(&channel) {
                    rt.sched.on_dont_have(&peer, cid, now);
                }
                self.drain_actions().await;
                return;
            }
        };
        tracing::trace!(%peer, %cid, blocks = resp.blocks.len(), haves = resp.haves.len(), dont_haves = resp.dont_haves.len(), "want answered");
        let mut got = false;
        let mut redirect_dials = Vec::new();
        for block in resp.blocks {
            got |= block.cid() == cid;
            self.on_block(channel, peer, block, now).await;
        }
        if !got && let Some(rt) = self.channels.get_mut(&channel) {
            // Not delivered: DONT_HAVE, "have" (did not fit), bad, or the
            // hold expired. A peer that says it has it may be asked again.
            if resp.haves.contains(&cid) {
                rt.sched.on_deferred(&peer, cid, now);
                rt.sched.on_have(peer, cid, now);
            } else {
                // Where the block went (a publisher's seeds). Bytes that
                // are not a peer id were shaped like one (the decoder
                // checked); they name nobody we can reach, so skip them.
                let to: Vec<PeerId> = resp.redirects.iter().filter_map(|r| PeerId::from_bytes(r).ok()).collect();
                if to.is_empty() {
                    rt.sched.on_refused(&peer, cid, now);
                } else {
                    redirect_dials = rt.sched.on_redirect(&peer, cid, to.iter().copied());
                    tracing::trace!(%peer, %cid, ?to, unconnected = ?redirect_dials, "want redirected");
                    rt.sched.on_dont_have(&peer, cid, now);
                }
            }
        }
        // Seeds the upstream named that we are not connected to: connect
        // (at most one dial pending per peer), so the next segment's
        // redirect can be followed. Only from an honoured redirect.
        for p in redirect_dials {
            let _ = self.shared.net.connect(p).await;
        }
        self.drain_actions().await;
        self.flush_haves().await;
    }

    async fn on_block(&mut self, channel: ChannelId, peer: PeerId, block: VerifiedBlock, now: Instant) {
        let Some(rt) = self.channels.get_mut(&channel) else { return };
        let cid = block.cid();
        let Some(manifest) = rt.block_seq.get(&cid).and_then(|seqs| seqs.iter().find_map(|s| rt.manifests.get(s)))
        else {
            // Not (or no longer) needed: a duplicate.
            rt.sched.on_block(&peer, cid, now);
            rt.sched.on_duplicate_bytes(block.data().len() as u64);
            self.shared.metrics.duplicate_bytes.inc_by(block.data().len() as u64);
            return;
        };
        if let Err(e) = self.shared.store.put_block(manifest, &block) {
            tracing::error!(error = %e, %cid, "could not store block; it will be refetched");
            rt.sched.on_dont_have(&peer, cid, now);
            return;
        }
        let len = block.data().len() as u64;
        self.shared.metrics.received(peer, len);
        self.shared.metrics.block_bytes_received.inc_by(len);
        rt.block_seq.remove(&cid);
        rt.sched.on_block(&peer, cid, now);
        // Held wants from our own downstream peers are answered now.
        let _ = self.shared.net.block_available(block).await;
    }

    async fn drain_actions(&mut self) {
        let chans: Vec<ChannelId> = self.channels.keys().copied().collect();
        for channel in chans {
            while let Some(rt) = self.channels.get_mut(&channel) {
                let Some(action) = rt.sched.poll_action() else { break };
                match action {
                    Action::Want { peer, cid, hold } => self.spawn_want(channel, peer, cid, hold),
                    Action::Cancel { peer, cid } => {
                        let net = self.shared.net.clone();
                        self.shared.tasks.spawn(async move {
                            let _ = tokio::time::timeout(Duration::from_secs(5), net.cancel(peer, &[cid])).await;
                        });
                    }
                    // The origin-only baseline announces nothing: viewers
                    // of a CDN do not serve each other.
                    Action::AnnounceHave { cid } => {
                        if self.origin_only.is_none() {
                            rt.pending_haves.push(cid);
                        }
                    }
                    Action::SegmentComplete { seq } => {
                        if let Some(m) = rt.manifests.remove(&seq) {
                            match self.shared.store.commit_segment(&m) {
                                Ok(_) => {
                                    rt.complete += 1;
                                    self.shared.metrics.segments_complete.inc();
                                    let latency = now_ms().saturating_sub(m.manifest().published_at_ms);
                                    self.shared.metrics.latency(latency);
                                    tracing::debug!(channel = %channel, seq, latency_ms = latency, "segment complete");
                                    let _ = self.shared.events.send(SegmentEvent::Ready { channel, seq });
                                }
                                Err(e) => tracing::error!(error = %e, seq, "could not commit segment"),
                            }
                        }
                    }
                    Action::GiveUp { seq, missing } => {
                        tracing::warn!(channel = %channel, seq, missing, "segment missed its deadline; skipped");
                        if let Some(m) = rt.manifests.remove(&seq) {
                            for b in &m.manifest().segment.blocks {
                                if let Some(seqs) = rt.block_seq.get_mut(&b.cid) {
                                    seqs.retain(|s| *s != seq);
                                    if seqs.is_empty() {
                                        rt.block_seq.remove(&b.cid);
                                    }
                                }
                            }
                        }
                        rt.skipped += 1;
                        self.shared.metrics.segments_skipped.inc();
                        let _ = self.shared.events.send(SegmentEvent::Skipped { channel, seq });
                    }
                }
            }
        }
    }

    fn spawn_want(&self, channel: ChannelId, peer: PeerId, cid: BlockCid, hold: Duration) {
        let net = self.shared.net.clone();
        let tx = self.fetch_tx.clone();
        let hold_ms = hold.as_millis().min(u128::from(shoal_core::limits::MAX_HOLD_MS)) as u32;
        tracing::trace!(%peer, %cid, hold_ms, "want sent");
        self.shared.tasks.spawn(async move {
            // The network has its own request timeout; this outer bound
            // guarantees the scheduler always hears back.
            let limit = hold + Duration::from_secs(10);
            let result = match tokio::time::timeout(limit, net.want_blocks(peer, &[cid], hold_ms)).await {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_owned()),
            };
            let _ = tx.send(FetchDone { channel, peer, cid, result }).await;
        });
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        let mut sum = crate::scheduler::SchedulerStats::default();
        for rt in self.channels.values_mut() {
            rt.sched.tick(now);
            sum += rt.sched.stats();
        }
        self.shared.metrics.set_scheduler(sum);
        self.retry_backfills(now).await;
        self.drain_actions().await;
        self.flush_haves().await;
    }

    /// Sends pending HAVEs to each channel's mesh neighbours only: enough for
    /// the next hop to pull, without flooding the swarm. Called as soon as
    /// blocks arrive (a HAVE that waits for a tick is latency on every hop).
    /// Mesh neighbours only: measured, sending HAVEs to every connected peer
    /// multiplied control traffic into congestion collapse (30-node run:
    /// duplicates 17% -> 140%). The network layer skips, per peer, blocks it
    /// knows the peer holds (it sent them, announced them, or was sent them).
    async fn flush_haves(&mut self) {
        let batches: Vec<(ChannelId, Vec<BlockCid>)> = self
            .channels
            .iter_mut()
            .filter(|(_, rt)| !rt.pending_haves.is_empty())
            .map(|(c, rt)| (*c, std::mem::take(&mut rt.pending_haves)))
            .collect();
        for (channel, cids) in batches {
            // Bounded wait: the command queue is the loop's backpressure, and
            // a HAVE is a hint the engine must not stall for.
            let _ = tokio::time::timeout(ANNOUNCE_WAIT, self.shared.net.announce(channel, cids)).await;
        }
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Join { channel, history, reply } => {
                let r = self.join(channel, history).await;
                let _ = reply.send(r);
            }
            Command::Leave { channel, reply } => {
                self.channels.remove(&channel);
                let r = self.shared.net.leave_channel(channel).await.map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            Command::Publish { key, segment, reply } => {
                let r = self.publish(&key, segment).await;
                let _ = reply.send(r);
            }
            Command::Channels { reply } => {
                let mut out: Vec<ChannelStatus> = self
                    .channels
                    .iter()
                    .map(|(c, rt)| ChannelStatus {
                        channel: c.to_string(),
                        head_seq: rt.chain.head().map(|h| h.0),
                        segments_complete: rt.complete,
                        segments_skipped: rt.skipped,
                        flagged: rt.chain.is_flagged(),
                        publishing: rt.publishing,
                    })
                    .collect();
                out.sort_by(|a, b| a.channel.cmp(&b.channel));
                let _ = reply.send(out);
            }
            Command::HeadManifests { source, manifests } => {
                for m in manifests {
                    self.on_manifest(m, Some(source)).await;
                }
            }
        }
    }

    /// Joins a channel and asks a few connected peers for its newest
    /// `history` manifests (at least the live edge; more for `--from-start`).
    /// Joining a joined channel only asks for the extra history.
    async fn join(&mut self, channel: ChannelId, history: u32) -> Result<(), String> {
        let max = history.clamp(JOIN_HEAD_MANIFESTS, shoal_core::limits::MAX_HEAD_MANIFESTS);
        if !self.channels.contains_key(&channel) {
            self.shared.net.join_channel(channel).await.map_err(|e| e.to_string())?;
            self.rt(channel);
        } else if max <= JOIN_HEAD_MANIFESTS {
            return Ok(());
        }
        // Start at the live edge: ask a few connected peers for the newest
        // manifests instead of waiting for the next announcement.
        let peers: Vec<PeerId> = self.connected.iter().take(JOIN_HEAD_PEERS).copied().collect();
        for peer in peers {
            self.request_head(peer, channel, max);
        }
        Ok(())
    }

    /// Asks `peer` for the channel's newest manifests, in a task; they come
    /// back as a command and go through the same chain decision as gossip.
    fn request_head(&self, peer: PeerId, channel: ChannelId, max: u32) {
        let net = self.shared.net.clone();
        let cmd = self.shared.cmd.clone();
        self.shared.tasks.spawn(async move {
            let fut = net.request_head(peer, channel, max);
            if let Ok(Ok(manifests)) = tokio::time::timeout(Duration::from_secs(5), fut).await
                && !manifests.is_empty()
            {
                let _ = cmd.try_send(Command::HeadManifests { source: peer, manifests });
            }
        });
    }

    async fn publish(&mut self, key: &ChannelKey, seg: PublishSegment) -> Result<u64, String> {
        let channel = key.channel_id();
        if !self.channels.contains_key(&channel) {
            self.join(channel, JOIN_HEAD_MANIFESTS).await?;
        }
        let rt = self.rt(channel);
        rt.publishing = true;
        // Continue the chain from what is stored: a restarted publisher never
        // reuses a seq or forks its own history.
        let (seq, prev) = match rt.chain.head() {
            Some((s, cid)) => (s + 1, Some(cid)),
            None => (0, None),
        };
        let blocks: Vec<VerifiedBlock> = seg
            .data
            .chunks(seg.block_size.max(1))
            .map(|c| VerifiedBlock::from_content(seg.data.slice_ref(c)))
            .collect();
        if blocks.is_empty() {
            return Err("empty segment".into());
        }
        let manifest = Manifest {
            channel,
            seq,
            published_at_ms: now_ms(),
            prev,
            segment: Segment {
                number: seq,
                duration_ms: seg.duration_ms,
                rendition: 0,
                keyframe: seg.keyframe,
                blocks: blocks.iter().map(|b| BlockRef { cid: b.cid(), size: b.data().len() as u32 }).collect(),
            },
            info: seg.info,
        };
        let signed = key.sign_manifest(&manifest).map_err(|e| e.to_string())?;
        let verified = signed.verify(&VerifyPolicy::default(), now_ms()).map_err(|e| e.to_string())?;
        let decision = rt.chain.decide(&verified);
        if !decision.is_accepted() {
            return Err(format!("own manifest seq {seq} not accepted by the chain: {decision:?}"));
        }
        self.shared.store.store_segment(&verified, &blocks).map_err(|e| e.to_string())?;
        self.shared.source.published(blocks.iter().map(|b| b.cid()));
        self.rt(channel).complete += 1;
        let cids: Vec<BlockCid> = blocks.iter().map(VerifiedBlock::cid).collect();
        for b in blocks {
            let _ = self.shared.net.block_available(b).await;
        }
        // Seeds hear HAVE first, so they ask us even when another viewer's
        // copy of the manifest reaches them first (NodeSource::first_copies).
        for (seed, cids) in self.shared.source.first_copies(&cids) {
            let _ = self.shared.net.announce_to(vec![seed], cids).await;
        }
        if let Err(e) = self.shared.net.publish_manifest(channel, Bytes::from(verified.encode())).await {
            // No peers yet is normal for a fresh publisher: the segment is
            // stored and served to anyone who asks for the head.
            tracing::debug!(error = %e, seq, "manifest not gossiped");
        }
        let _ = self.shared.events.send(SegmentEvent::Accepted { channel, seq });
        let _ = self.shared.events.send(SegmentEvent::Ready { channel, seq });
        self.shared.metrics.segments_published.inc();
        Ok(seq)
    }
}
