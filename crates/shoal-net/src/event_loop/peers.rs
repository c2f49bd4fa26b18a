//! Penalties: strikes for provable misbehaviour on the exchange and head
//! protocols, and bans once a peer reaches `max_strikes`. Gossip
//! misbehaviour is scored by gossipsub itself; strikes also lower the
//! gossipsub application score so a peer that cheats on one protocol is
//! trusted less on the other.

use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::{EventLoop, MAX_BANNED_PEERS, MAX_STRUCK_PEERS};
use crate::{Misbehaviour, NetEvent};

/// Gossipsub application score per strike (the graylist threshold is -80).
const SCORE_PER_STRIKE: f64 = -10.0;

impl EventLoop {
    pub(super) fn strike(&mut self, peer: PeerId, reason: Misbehaviour, n: u32) {
        if self.strikes.len() >= MAX_STRUCK_PEERS && !self.strikes.contains_key(&peer) {
            self.strikes.clear();
        }
        let strikes = {
            let s = self.strikes.entry(peer).or_default();
            *s = s.saturating_add(n);
            *s
        };
        self.swarm.behaviour_mut().gossipsub.set_application_score(&peer, f64::from(strikes) * SCORE_PER_STRIKE);
        let banned = strikes >= self.config.max_strikes;
        tracing::warn!(%peer, ?reason, strikes, banned, "peer penalised");
        if banned {
            self.ban(peer);
        }
        self.emit(NetEvent::PeerPenalised { peer, reason, strikes, banned });
    }

    fn ban(&mut self, peer: PeerId) {
        self.strikes.remove(&peer);
        if self.banned.len() >= MAX_BANNED_PEERS {
            let soonest = self.banned.iter().min_by_key(|(_, until)| **until).map(|(p, _)| *p);
            if let Some(p) = soonest {
                self.banned.remove(&p);
                self.swarm.behaviour_mut().blocked.unblock_peer(p);
            }
        }
        self.banned.insert(peer, Instant::now() + Duration::from_secs(self.config.ban_secs));
        // Closes every connection to the peer and refuses new ones.
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        self.held.peer_gone(&peer);
        self.upload.peer_gone(&peer);
        self.metrics.held_wants.set(self.held.len() as i64);
        self.metrics.peers_banned.inc();
    }
}
