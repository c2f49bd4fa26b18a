//! The scheduler's tunables ([`SchedulerConfig`]) and counters
//! ([`SchedulerStats`]), apart from the policy that uses them.

use std::time::Duration;

/// Tunables. Defaults suit 1–2 s segments at a few Mbit/s.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Most requests outstanding at one peer; more queue at the scheduler.
    pub max_inflight_per_peer: usize,
    /// Most blocks tracked at once; beyond this the oldest segments are
    /// given up (bounds memory when a stream outruns the network).
    pub max_tracked_blocks: usize,
    /// Most peers remembered per block as holders.
    pub max_holders_per_block: usize,
    /// How long a peer may hold our want waiting for the block.
    pub max_hold: Duration,
    /// Inside this window before a block's deadline, a second peer may be
    /// asked for it.
    pub hedge_window: Duration,
    /// Rate assumed for a peer we have not measured yet (bytes/s).
    pub initial_rate_bps: f64,
    /// Extra time allowed on every request beyond the transfer estimate.
    pub base_timeout: Duration,
    /// Stalls after which a peer is only used when nobody else can serve.
    pub stall_limit: u32,
    /// How long a DONT_HAVE (or a timeout) keeps a peer from being asked for
    /// that block again. Short: a relay that lacked a block a moment ago
    /// usually has it now.
    pub refuse_ttl: Duration,
    /// A want held by a peer that does not have the block yet moves to a
    /// peer that announced HAVE once it has waited this long. Shorter means
    /// lower latency behind slow relays, longer means less churn (the held
    /// peer is usually about to receive the block).
    pub switch_after: Duration,
    /// How long a peer the upstream redirected us to (a publisher's seed)
    /// may hold our want. Shorter than `max_hold`: the seed is normally a
    /// round trip from the block, and if its own want waits on us (its
    /// manifest came through us) the short hold is what breaks the cycle.
    pub redirect_hold: Duration,
    /// A block nobody announced and no upstream offers is probed at plain
    /// neighbours (without a hold) only after this long, or near its
    /// deadline; until then HAVEs are awaited.
    pub probe_after: Duration,
    /// An unheld want still unanswered this long after its transfer estimate
    /// is late: the block is also asked of a HAVE holder or the upstream (an
    /// early hedge), without cancelling the first want. A peer that
    /// announces HAVE and then stalls would otherwise cost every viewer a
    /// whole request timeout (estimate + `base_timeout`) per stall. 200 ms is
    /// above a healthy round trip plus the estimate's error (the estimate
    /// already counts the bytes queued at that peer), so an honest answer
    /// rarely misses it, and it saves ~300 ms of the 500 ms timeout.
    pub stall_hedge_after: Duration,
    /// Hedges (second requests for a block) earned per first request: a
    /// budget, so that hedging stays a cure for the odd slow peer and does
    /// not become the load. Without it a congested 100-node swarm with
    /// capped uplinks (`constrained`) sent 855 hedges per viewer on 887
    /// first wants: every late block asked twice, the duplicate copies
    /// took as much upload as the payload (wire 0.48 duplicate vs 0.45
    /// payload) on exactly the links that were short of it. 0.25 lets one
    /// block in four be hedged (Dean and Barroso's "tail at scale" hedges
    /// a few per cent; a live deadline is tighter, so more).
    pub hedge_share: f64,
    /// Hedges that may be spent at once beyond what `hedge_share` earned:
    /// the start of a stream, or a burst of stalls at one peer (a whole
    /// segment's blocks), still gets its second requests.
    pub hedge_burst: f64,
    /// When the best holder already has two requests queued, a block whose
    /// first HAVE is younger than this waits (a tick) for other holders to
    /// announce, so one segment spreads over several peers.
    pub spread_wait: Duration,
    /// A peer that delivered us a needed block this recently is busy, not
    /// stalling: a late request of its that another copy beats, or a
    /// refusal of a block it announced (a shed at its upload cap), is not
    /// counted as a stall. Without this a capped seed that is honestly late
    /// collects stalls at every viewer it serves, drops below a plain
    /// neighbour's probe, and the redirects that name it go unused
    /// (docs/benchmarks.md: 440 of 447 ignored redirects named a seed with
    /// `stall_limit` stalls). A peer that claims blocks and never delivers
    /// (attack 6) is never excused; a timeout is never excused. 1 s is
    /// about one segment: a seed serving a viewer delivers several blocks
    /// in that time.
    pub busy_grace: Duration,
    /// How long after a stall (a failed trial, or a request it was asked
    /// when nobody trusted could take the block) a peer that has never
    /// delivered a block to us may be given a trial (see the module docs,
    /// "probation"). A trial costs us a want and, when the peer is honest
    /// but slower than the request it runs beside, one duplicate block; a
    /// staller's trial costs us only the want. 4 s is a few segments: an
    /// honest peer whose trial timed out in a burst gets its next chance
    /// soon, and a staller is asked about once per 4 s per viewer.
    pub trial_retry: Duration,
    /// The node's download cap (`max_download`), shared by every channel's
    /// scheduler: a want is sent only while the bucket has credit, and its
    /// block's size is charged when it is sent. `None`: no cap.
    pub download: Option<DownloadBudget>,
}

/// A node-wide bytes-per-second budget for wants (see
/// [`SchedulerConfig::download`]). Time is passed in, like everywhere here.
pub type DownloadBudget = std::sync::Arc<std::sync::Mutex<shoal_net::TokenBucket>>;

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_inflight_per_peer: 8,
            max_tracked_blocks: 4096,
            max_holders_per_block: 8,
            max_hold: Duration::from_secs(5),
            hedge_window: Duration::from_millis(800),
            initial_rate_bps: 1_000_000.0,
            base_timeout: Duration::from_millis(500),
            stall_limit: 3,
            refuse_ttl: Duration::from_millis(300),
            switch_after: Duration::from_millis(250),
            redirect_hold: Duration::from_millis(1000),
            probe_after: Duration::from_millis(500),
            stall_hedge_after: Duration::from_millis(200),
            hedge_share: 0.25,
            hedge_burst: 16.0,
            spread_wait: Duration::from_millis(50),
            busy_grace: Duration::from_secs(1),
            trial_retry: Duration::from_secs(4),
            download: None,
        }
    }
}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Wants sent.
    pub wants_sent: u64,
    /// Wants sent as hedges (a second peer for the same block).
    pub hedges: u64,
    /// Of `hedges`, those sent early: the first want was late, the deadline
    /// was not near (see [`SchedulerConfig::stall_hedge_after`]).
    pub early_hedges: u64,
    /// Hedges not sent because the budget was spent
    /// ([`SchedulerConfig::hedge_share`]); the block kept its one request.
    pub hedges_skipped: u64,
    /// Blocks that arrived and were needed.
    pub blocks_received: u64,
    /// Bytes of blocks that arrived and were needed.
    pub payload_bytes: u64,
    /// Blocks that arrived after another copy (duplicates).
    pub duplicate_blocks: u64,
    /// Bytes of duplicates.
    pub duplicate_bytes: u64,
    /// Of `duplicate_blocks`, those a switch of a held want caused: the
    /// switched-from peer's copy came anyway (its cancel lost the race),
    /// or it came first and the switched-to peer's copy is the duplicate.
    pub duplicates_switched: u64,
    /// Of `duplicate_blocks`, those from two live requests for the block
    /// (hedges and the wants they hedged).
    pub duplicates_raced: u64,
    /// Of `duplicate_blocks`, those a timeout caused (either copy, as for
    /// a switch). The rest came with no memory of a request (older than
    /// the scheduler remembers, or never asked).
    pub duplicates_timed_out: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Segments completed.
    pub segments_complete: u64,
    /// Segments given up.
    pub segments_given_up: u64,
    /// Bytes received from origin peers (publisher/providers).
    pub origin_bytes: u64,
    /// Held wants moved to a peer that announced HAVE.
    pub switches: u64,
    /// Of `switches`, those the switched-from peer won: its copy came
    /// first after all, and the switch only cost the holder an upload.
    pub switches_lost: u64,
    /// Stalls counted against peers (timeouts, late requests beaten by
    /// another copy, refusals of announced blocks).
    pub stalls: u64,
    /// Late or refused requests not counted as stalls because the peer had
    /// just delivered (see [`SchedulerConfig::busy_grace`]).
    pub stalls_excused: u64,
    /// Trials sent: one block asked of a HAVE holder that has never
    /// delivered to us, beside a request at a peer we trust.
    pub trials: u64,
    /// Trials that failed (timed out or refused): each is also a stall.
    pub trials_failed: u64,
    /// Of `duplicate_blocks`, trials' copies that came after the trusted
    /// request's copy (the price of taking a peer off probation).
    pub duplicates_trial: u64,
    /// Held wants the block's upstream refused without naming anyone
    /// ([`super::Scheduler::on_refused`]): 0 in 22 honest control runs of
    /// the hostile suite (docs/security.md).
    pub upstream_refusals: u64,
}

impl std::ops::AddAssign for SchedulerStats {
    /// Sums counters (e.g. over channels or nodes).
    fn add_assign(&mut self, o: Self) {
        self.wants_sent += o.wants_sent;
        self.hedges += o.hedges;
        self.upstream_refusals += o.upstream_refusals;
        self.early_hedges += o.early_hedges;
        self.hedges_skipped += o.hedges_skipped;
        self.blocks_received += o.blocks_received;
        self.payload_bytes += o.payload_bytes;
        self.duplicate_blocks += o.duplicate_blocks;
        self.duplicate_bytes += o.duplicate_bytes;
        self.duplicates_switched += o.duplicates_switched;
        self.duplicates_raced += o.duplicates_raced;
        self.duplicates_timed_out += o.duplicates_timed_out;
        self.timeouts += o.timeouts;
        self.segments_complete += o.segments_complete;
        self.segments_given_up += o.segments_given_up;
        self.origin_bytes += o.origin_bytes;
        self.switches += o.switches;
        self.switches_lost += o.switches_lost;
        self.stalls += o.stalls;
        self.stalls_excused += o.stalls_excused;
        self.trials += o.trials;
        self.trials_failed += o.trials_failed;
        self.duplicates_trial += o.duplicates_trial;
    }
}
