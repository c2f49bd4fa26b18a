//! Finding and announcing a channel's carriers in the DHT: provider
//! lookups (dialing carriers as they are found), the redial of known
//! carriers while a channel is quiet or thin, and the announcement of this
//! node as a carrier, which is made only when a lookup found few.
//!
//! Why announcements are rationed: every carrier's announcement is a walk
//! to the ~20 nodes nearest the channel's key plus an ADD_PROVIDER to each,
//! repeated every `provider_republish_secs`, and those nodes are the same
//! for every carrier of the channel. Kademlia keeps at most 20 providers
//! per key on each of them (`MemoryStoreConfig::max_providers_per_key`), so
//! with 100 viewers, 80 announcements were work for nothing, aimed at the
//! same 20 nodes as every joiner's lookup (docs/benchmarks.md, "the join
//! storm").

use std::time::Instant;

use libp2p::{PeerId, kad};
use shoal_core::ChannelId;

use super::EventLoop;
use crate::{NetEvent, config::ENOUGH_PROVIDERS};

/// Providers remembered per channel, for redials.
pub(super) const MAX_KNOWN_PROVIDERS: usize = 16;

/// A provider lookup in flight for a joined channel.
pub(super) struct ProviderQuery {
    pub(super) channel: ChannelId,
    pub(super) found: Vec<PeerId>,
    pub(super) dialed: usize,
    pub(super) started: Instant,
}

impl EventLoop {
    /// A step of one of our provider lookups.
    pub(super) fn on_provider_progress(&mut self, id: kad::QueryId, result: kad::GetProvidersResult, last: bool) {
        let local = *self.swarm.local_peer_id();
        let Some(q) = self.provider_queries.get_mut(&id) else { return };
        if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = &result {
            for p in providers {
                if *p != local && !q.found.contains(p) {
                    q.found.push(*p);
                }
            }
        }
        // Enough carriers to reach the mesh: end the walk here rather than
        // ask every node near the channel's key (they are the same ~20 for
        // every joiner, so each step saved is saved at the hot spot).
        if q.found.len() >= ENOUGH_PROVIDERS
            && !last
            && let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id)
        {
            query.finish();
        }
        // Dial providers as they are found rather than at the end: joining
        // a live channel should not wait for the whole lookup.
        let budget = self.config.join_dial_providers;
        let to_dial: Vec<PeerId> = q
            .found
            .iter()
            .filter(|p| !self.swarm.is_connected(p))
            .take(budget.saturating_sub(q.dialed))
            .copied()
            .collect();
        if let Some(q) = self.provider_queries.get_mut(&id) {
            q.dialed += to_dial.len();
        }
        let now = Instant::now();
        for p in to_dial {
            self.redial(p, now);
        }
        if (last || result.is_err())
            && let Some(q) = self.provider_queries.remove(&id)
        {
            let known = self.known_providers.entry(q.channel).or_default();
            for p in q.found.iter().take(MAX_KNOWN_PROVIDERS) {
                if !known.contains(p) {
                    known.insert(0, *p);
                }
            }
            known.truncate(MAX_KNOWN_PROVIDERS);
            tracing::debug!(channel = %q.channel, providers = q.found.len(), "provider lookup finished");
            self.announce_if_needed(q.channel, q.found.len());
            self.emit(NetEvent::ProvidersFound { channel: q.channel, providers: q.found });
        }
    }

    /// Announces this node as a carrier of `channel` if the lookup that
    /// just ended found fewer than `ENOUGH_PROVIDERS` others and the channel
    /// is still joined. Kademlia then republishes it on its own.
    pub(super) fn announce_if_needed(&mut self, channel: ChannelId, found: usize) {
        if found >= ENOUGH_PROVIDERS
            || self.providing.contains(&channel)
            || !self.channels.values().any(|c| *c == channel)
        {
            return;
        }
        match self.swarm.behaviour_mut().kad.start_providing(provider_key(&channel)) {
            Ok(_) => {
                self.providing.insert(channel);
                self.metrics.dht_provider_announcements.inc();
                tracing::debug!(%channel, found, "announcing this node as a carrier");
            }
            Err(e) => tracing::warn!(%channel, error = %e, "cannot provide channel in the DHT"),
        }
    }

    /// Withdraws our announcement of `channel`, if we made one.
    pub(super) fn stop_announcing(&mut self, channel: &ChannelId) {
        if self.providing.remove(channel) {
            self.swarm.behaviour_mut().kad.stop_providing(&provider_key(channel));
        }
    }

    /// Redials up to `join_dial_providers` known providers of `channel`
    /// that are not connected. Cheap first: those we have reached before
    /// (most of the others may sit on networks we cannot reach at all),
    /// the rest in turn, so a fixed few unreachable ones do not take every
    /// turn.
    ///
    /// With a full mesh, providers the peer budget closed in the last
    /// `TRIM_QUARANTINE` are left alone: we closed them because we had
    /// enough peers, and dialing them straight back was a loop (trim,
    /// redial, trim) that kept an idle swarm busy with handshakes
    /// (crate::budget). A thin mesh redials them too.
    pub(super) fn redial_providers(&mut self, ch: ChannelId, now: Instant, thin_mesh: bool) {
        let mut candidates: Vec<PeerId> = self
            .known_providers
            .get(&ch)
            .into_iter()
            .flatten()
            .filter(|p| !self.swarm.is_connected(p) && !self.redials.contains_key(*p))
            .filter(|p| thin_mesh || !self.budget.recently_trimmed(p, now))
            .copied()
            .collect();
        candidates.sort_by_key(|p| self.addr_book.addrs(p).is_empty());
        candidates.truncate(self.config.join_dial_providers);
        let tried: Vec<PeerId> = candidates.iter().filter(|p| self.addr_book.addrs(p).is_empty()).copied().collect();
        if let Some(known) = self.known_providers.get_mut(&ch) {
            known.retain(|p| !tried.contains(p));
            known.extend(tried);
        }
        for p in candidates {
            self.redial(p, now);
        }
    }

    /// Puts `peer` first among the providers remembered for `channel`.
    pub(super) fn remember_provider(&mut self, channel: ChannelId, peer: PeerId) {
        let known = self.known_providers.entry(channel).or_default();
        if !known.contains(&peer) {
            known.insert(0, peer);
            known.truncate(MAX_KNOWN_PROVIDERS);
        }
    }

    /// Starts a provider lookup for `channel`.
    pub(super) fn find_providers(&mut self, channel: ChannelId) {
        let id = self.swarm.behaviour_mut().kad.get_providers(provider_key(&channel));
        self.provider_queries
            .insert(id, ProviderQuery { channel, found: Vec::new(), dialed: 0, started: Instant::now() });
    }
}

/// The DHT key under which a channel's carriers announce themselves.
pub(crate) fn provider_key(channel: &ChannelId) -> kad::RecordKey {
    kad::RecordKey::new(&channel.topic())
}
