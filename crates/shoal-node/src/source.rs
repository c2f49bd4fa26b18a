//! What the network serves from: the store, the set of blocks this node
//! expects soon (so wants for them are held), and the publisher's
//! first-copies gate.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use libp2p::PeerId;
use shoal_core::{BlockCid, ChannelId, SignedManifest, VerifiedBlock};
use shoal_net::BlockSource;
use shoal_store::Store;

/// Most CIDs remembered as "expected soon". Bounded: at 4 blocks per 1 s
/// segment this covers ~17 minutes of one channel.
const MAX_EXPECTED: usize = 4096;
/// Most own blocks tracked by the first-copies gate (oldest forgotten).
const MAX_GATED: usize = 4096;
/// A peer counts as an active fetcher of our stream if it asked for one of
/// our new blocks this recently.
const ACTIVE_WINDOW: Duration = Duration::from_secs(3);
/// Most peers tracked for connection age and activity (one per connection).
const MAX_TRACKED_PEERS: usize = 4096;
/// Default for [`SourceConfig::stripe_seeds`]: the seeds the publisher
/// stripes its new blocks over. Block *i* goes first to pool seed *i* mod 4
/// (and the next `origin_copies - 1`). One seed for every block puts the
/// whole first hop on one viewer's uplink: at 10 Mbit/s a 4-block segment
/// takes that seed 208 ms just to receive-and-pass one copy of each block,
/// and all of its children queue behind it. Four seeds with a block each
/// spread a segment over four lines at once, for the same publisher upload
/// (one copy per block). Four is a 1 s segment at 2 Mbit/s in 64 KiB
/// blocks; more seeds than blocks only rotate.
pub const STRIPE_SEEDS: u32 = 4;
/// Most seeds one stripe may span (the config's upper bound): a stripe
/// wider than a segment's blocks only rotates, and each pool seed costs a
/// first-copies HAVE per segment.
pub const MAX_STRIPE_SEEDS: u32 = 64;

/// The publisher-side knobs of [`NodeSource`] (`[fetch]` in the node's
/// config: `origin_copies`, `origin_grace_ms`, `stripe_seeds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceConfig {
    /// Peers that get each new block straight from the publisher.
    pub origin_copies: u32,
    /// After this long the publisher serves a block to anyone.
    pub origin_grace: Duration,
    /// Seeds a segment's blocks are striped over (at least
    /// `origin_copies`; 1 gives every block to the same seed).
    pub stripe_seeds: u32,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self { origin_copies: 1, origin_grace: Duration::from_millis(1500), stripe_seeds: STRIPE_SEEDS }
    }
}

#[derive(Debug, Default)]
struct Expected {
    set: HashSet<BlockCid>,
    order: VecDeque<BlockCid>,
}

#[derive(Debug)]
struct Gate {
    published: Instant,
    /// A seed (or a fallback asker) has been given this block.
    given: bool,
    /// This block's seeds, chosen when it was published (its stripe); empty
    /// when nobody was fetching yet, and then the seeds of the moment.
    seeds: Vec<PeerId>,
}

/// If no seed has asked for a new block this long after it was published,
/// the first asker gets it. This breaks wait cycles (the seed holding its
/// want at a peer that is itself waiting on the publisher) within one short
/// delay instead of the whole grace period.
const SEED_WAIT: Duration = Duration::from_millis(200);

/// Who gets the publisher's new blocks first.
#[derive(Debug, Default)]
struct Seeds {
    connected_at: HashMap<PeerId, Instant>,
    last_request: HashMap<PeerId, Instant>,
}

#[derive(Debug, Default)]
struct Gates {
    map: HashMap<BlockCid, Gate>,
    order: VecDeque<BlockCid>,
    /// Blocks published so far: where the next block's stripe starts.
    stripe: usize,
}

/// The node's [`BlockSource`]. Every method is a memory lookup or one
/// RocksDB point read, as the trait requires.
#[derive(Debug)]
pub struct NodeSource {
    store: Arc<Store>,
    expected: Mutex<Expected>,
    gates: Mutex<Gates>,
    seeds: Mutex<Seeds>,
    origin_copies: u32,
    origin_grace: Duration,
    stripe_seeds: u32,
}

impl NodeSource {
    /// A source over `store`. During `origin_grace` after publishing, a new
    /// block is served only to the *seeds*: the `origin_copies` peers that
    /// have been connected longest among those actively fetching the stream.
    /// Other askers hear DONT_HAVE and fetch it from the seeds, which is what
    /// keeps the publisher's upload near one copy. Seeds are stable (a tree,
    /// not a lottery per block) and change only when a seed stops asking or
    /// disconnects.
    pub fn new(store: Arc<Store>, config: SourceConfig) -> Self {
        Self {
            store,
            expected: Mutex::new(Expected::default()),
            gates: Mutex::new(Gates::default()),
            seeds: Mutex::new(Seeds::default()),
            origin_copies: config.origin_copies,
            origin_grace: config.origin_grace,
            stripe_seeds: config.stripe_seeds,
        }
    }

    /// Marks blocks as expected soon (their manifest was accepted).
    pub fn expect(&self, cids: impl IntoIterator<Item = BlockCid>) {
        let Ok(mut e) = self.expected.lock() else { return };
        for cid in cids {
            if e.set.insert(cid) {
                e.order.push_back(cid);
                if e.order.len() > MAX_EXPECTED
                    && let Some(old) = e.order.pop_front()
                {
                    e.set.remove(&old);
                }
            }
        }
    }

    /// Blocks this node just published: gate them, each with its own seeds
    /// (a stripe over the seed pool, see [`SourceConfig::stripe_seeds`]).
    pub fn published(&self, cids: impl IntoIterator<Item = BlockCid>) {
        let pool = self
            .seeds
            .lock()
            .map(|mut s| self.current_seeds(&mut s, Instant::now(), self.pool_size()))
            .unwrap_or_default();
        let Ok(mut g) = self.gates.lock() else { return };
        let now = Instant::now();
        let copies = (self.origin_copies as usize).min(pool.len());
        for cid in cids {
            let first = g.stripe;
            g.stripe = g.stripe.wrapping_add(1);
            let seeds = (0..copies).map(|k| pool[(first + k) % pool.len()]).collect();
            if g.map.insert(cid, Gate { published: now, given: false, seeds }).is_none() {
                g.order.push_back(cid);
                if g.order.len() > MAX_GATED
                    && let Some(old) = g.order.pop_front()
                {
                    g.map.remove(&old);
                }
            }
        }
    }

    /// A peer connected (its age ranks it for seeding).
    pub fn peer_connected(&self, peer: PeerId) {
        if let Ok(mut s) = self.seeds.lock()
            && s.connected_at.len() < MAX_TRACKED_PEERS
        {
            s.connected_at.entry(peer).or_insert_with(Instant::now);
        }
    }

    /// A peer disconnected.
    pub fn peer_disconnected(&self, peer: &PeerId) {
        if let Ok(mut s) = self.seeds.lock() {
            s.connected_at.remove(peer);
            s.last_request.remove(peer);
        }
    }

    /// Seeds in the stripe pool: `stripe_seeds`, or more if each block has
    /// more copies.
    fn pool_size(&self) -> usize {
        self.stripe_seeds.max(self.origin_copies) as usize
    }

    /// The `n` longest-connected peers among those that asked for one of
    /// our new blocks within `ACTIVE_WINDOW`.
    fn current_seeds(&self, s: &mut Seeds, now: Instant, n: usize) -> Vec<PeerId> {
        s.last_request.retain(|_, t| now.duration_since(*t) < ACTIVE_WINDOW);
        let mut active: Vec<(Instant, PeerId)> =
            s.last_request.keys().map(|p| (s.connected_at.get(p).copied().unwrap_or(now), *p)).collect();
        active.sort();
        active.into_iter().take(n).map(|(_, p)| p).collect()
    }

    /// The seeds of block `cid`: its stripe's that are still connected, or
    /// (none left, or published before anyone fetched) the
    /// `origin_copies` seeds of the moment. `None` if the block is not
    /// gated.
    fn block_seeds(&self, cid: &BlockCid) -> Option<Vec<PeerId>> {
        let chosen = self.gates.lock().ok()?.map.get(cid)?.seeds.clone();
        let mut s = self.seeds.lock().ok()?;
        Some(self.live_seeds(&mut s, &chosen, Instant::now()))
    }

    /// `chosen` (a block's stripe) less the peers that left; if none is
    /// left, the `origin_copies` seeds of the moment. Under churn a stripe
    /// seed that left would otherwise keep its block from everyone but the
    /// first asker after `SEED_WAIT`, and the gate's redirects would name a
    /// peer that is gone.
    fn live_seeds(&self, s: &mut Seeds, chosen: &[PeerId], now: Instant) -> Vec<PeerId> {
        let live: Vec<PeerId> = chosen.iter().filter(|p| s.connected_at.contains_key(p)).copied().collect();
        if live.is_empty() { self.current_seeds(s, now, self.origin_copies as usize) } else { live }
    }

    /// Which seed gets which of `cids` first, for the publisher's HAVE to
    /// each (`first_copies`, just before the manifest's gossip): a seed whose
    /// gossip copy of the manifest came through another viewer would
    /// otherwise hold its want at that viewer, which the gate refuses, until
    /// the refusal expired (~320 ms on ~1 in 3 segments,
    /// docs/benchmarks.md).
    pub fn first_copies(&self, cids: &[BlockCid]) -> Vec<(PeerId, Vec<BlockCid>)> {
        let mut out: Vec<(PeerId, Vec<BlockCid>)> = Vec::new();
        for cid in cids {
            for seed in self.block_seeds(cid).unwrap_or_default() {
                match out.iter_mut().find(|(p, _)| *p == seed) {
                    Some((_, v)) => v.push(*cid),
                    None => out.push((seed, vec![*cid])),
                }
            }
        }
        out
    }

    /// Whether `peer` may have `cid` from us now.
    fn gate_allows(&self, peer: &PeerId, cid: &BlockCid) -> bool {
        let Ok(mut gates) = self.gates.lock() else { return true };
        let Some(gate) = gates.map.get_mut(cid) else { return true };
        let age = gate.published.elapsed();
        if age >= self.origin_grace {
            return true;
        }
        let Ok(mut s) = self.seeds.lock() else { return true };
        let now = Instant::now();
        if s.last_request.len() < MAX_TRACKED_PEERS || s.last_request.contains_key(peer) {
            s.last_request.insert(*peer, now);
        }
        let is_seed = self.live_seeds(&mut s, &gate.seeds, now).contains(peer);
        let allow = is_seed || (!gate.given && age >= SEED_WAIT);
        if allow {
            gate.given = true;
        }
        allow
    }
}

impl BlockSource for NodeSource {
    fn get_block_for(&self, peer: &PeerId, cid: &BlockCid) -> Option<VerifiedBlock> {
        if !self.gate_allows(peer, cid) {
            return None;
        }
        self.get_block(cid)
    }

    fn get_block(&self, cid: &BlockCid) -> Option<VerifiedBlock> {
        let bytes = self.store.block_bytes(cid).ok().flatten()?;
        // The store verified the bytes on read (verify_reads); hashing again
        // here is the type-level proof, at ~0.3 ms per 256 KiB.
        VerifiedBlock::verify(*cid, bytes).ok()
    }

    fn redirect(&self, peer: &PeerId, cid: &BlockCid) -> Vec<PeerId> {
        // Only for our own young blocks: past the grace anyone is served.
        let gated =
            self.gates.lock().is_ok_and(|g| g.map.get(cid).is_some_and(|g| g.published.elapsed() < self.origin_grace));
        if !gated {
            return Vec::new();
        }
        self.block_seeds(cid).unwrap_or_default().into_iter().filter(|s| s != peer).collect()
    }

    fn has_block(&self, cid: &BlockCid) -> bool {
        self.store.has_block(cid).unwrap_or(false)
    }

    fn expects(&self, cid: &BlockCid) -> bool {
        // Our own gated blocks are not "expected": askers over the gate get
        // DONT_HAVE at once instead of waiting out a hold.
        if self.gates.lock().is_ok_and(|g| g.map.contains_key(cid)) {
            return false;
        }
        self.expected.lock().is_ok_and(|e| e.set.contains(cid))
    }

    fn head(&self, channel: &ChannelId, max: u32) -> Vec<SignedManifest> {
        self.store
            .latest_manifests(channel, max as usize)
            .map(|v| v.into_iter().filter_map(|m| SignedManifest::decode(&m.envelope).ok()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use shoal_store::StoreConfig;

    use super::*;

    #[test]
    fn seeds_are_the_longest_connected_active_askers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), &StoreConfig::default()).unwrap());
        let source = NodeSource::new(store, SourceConfig::default());
        let (old, young, idle) = (PeerId::random(), PeerId::random(), PeerId::random());
        source.peer_connected(idle);
        std::thread::sleep(Duration::from_millis(2));
        source.peer_connected(old);
        std::thread::sleep(Duration::from_millis(2));
        source.peer_connected(young);
        let cid = BlockCid::of(b"new block");
        source.published([cid]);
        assert_eq!(source.first_copies(&[cid]), vec![], "nobody has asked for a new block yet");
        // Asking is what makes a peer active; the idle one never asks.
        assert!(source.gate_allows(&old, &cid), "the older active asker is the seed");
        assert!(!source.gate_allows(&young, &cid), "a younger asker is refused while the gate is young");
        assert_eq!(
            source.first_copies(&[cid]),
            vec![(old, vec![cid])],
            "the connected-earliest idle peer is not a seed"
        );
        assert_eq!(source.redirect(&young, &cid), vec![old], "a refused asker is told where the block went");
        assert!(source.redirect(&old, &cid).is_empty(), "a seed is not redirected to itself");
        assert!(source.redirect(&young, &BlockCid::of(b"not ours")).is_empty(), "only gated blocks redirect");
        source.peer_disconnected(&old);
        assert_eq!(source.first_copies(&[cid]), vec![(young, vec![cid])], "a seed that leaves is replaced at once");
    }

    #[test]
    fn a_stripe_seed_that_leaves_is_replaced_for_its_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), &StoreConfig::default()).unwrap());
        let source = NodeSource::new(store, SourceConfig::default());
        let (first, second) = (PeerId::random(), PeerId::random());
        source.peer_connected(first);
        std::thread::sleep(Duration::from_millis(2));
        source.peer_connected(second);
        let warm = BlockCid::of(b"warm-up");
        source.published([warm]);
        source.gate_allows(&first, &warm);
        source.gate_allows(&second, &warm);
        // Published with a pool of two: the stripe picks one of them.
        let cid = BlockCid::of(b"striped");
        source.published([cid]);
        let [(seed, _)] = source.first_copies(&[cid])[..] else { panic!("one seed") };
        let other = if seed == first { second } else { first };
        assert!(!source.gate_allows(&other, &cid), "while its seed is here, another asker is refused");
        source.peer_disconnected(&seed);
        assert_eq!(source.redirect(&PeerId::random(), &cid), vec![other], "redirects name a live seed");
        assert!(source.gate_allows(&other, &cid), "the block's seed left: the seed of the moment gets it");
    }

    #[test]
    fn a_segments_blocks_are_striped_over_the_seed_pool() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), &StoreConfig::default()).unwrap());
        let source = NodeSource::new(store, SourceConfig::default());
        // Five viewers, connected in order, all fetching: the oldest four
        // make the pool.
        let peers: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        for p in &peers {
            source.peer_connected(*p);
            std::thread::sleep(Duration::from_millis(2));
        }
        let warm = BlockCid::of(b"warm-up");
        source.published([warm]);
        for p in &peers {
            source.gate_allows(p, &warm);
        }
        let seg: Vec<BlockCid> = (0..STRIPE_SEEDS as u8).map(|i| BlockCid::of(&[b's', i])).collect();
        source.published(seg.iter().copied());
        let firsts = source.first_copies(&seg);
        assert_eq!(firsts.len(), STRIPE_SEEDS as usize, "one seed per block: {firsts:?}");
        let mut covered: Vec<BlockCid> = firsts.iter().flat_map(|(_, c)| c.clone()).collect();
        covered.sort();
        let mut want = seg.clone();
        want.sort();
        assert_eq!(covered, want, "every block has exactly one seed");
        assert!(firsts.iter().all(|(p, c)| c.len() == 1 && peers[..4].contains(p)), "the youngest is not in the pool");
        for (seed, cids) in &firsts {
            let cid = cids[0];
            let other = firsts.iter().find(|(p, _)| p != seed).map(|(p, _)| *p).unwrap();
            assert!(!source.gate_allows(&other, &cid), "another pool seed is refused this block");
            assert_eq!(source.redirect(&other, &cid), vec![*seed], "and told which seed has it");
            assert!(source.gate_allows(seed, &cid), "its own seed gets it");
        }
    }
}
