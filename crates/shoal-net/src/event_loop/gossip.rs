//! Channels and gossip: join/leave, publish, and validation of every
//! received manifest and directory entry before gossipsub may forward it.

use std::time::Instant;

use bytes::Bytes;
use libp2p::{
    PeerId,
    gossipsub::{IdentTopic, Message, MessageAcceptance, MessageId},
};
use shoal_core::ChannelId;

use super::{EventLoop, unix_ms};
use crate::{
    Acceptance, ManifestValidation, NetError, NetEvent,
    client::Topic,
    metrics::{Direction, NetProtocol, Verdict, reason},
    validate::{check_directory, check_manifest},
};

fn verdict_of(a: &MessageAcceptance) -> Verdict {
    match a {
        MessageAcceptance::Accept => Verdict::Accepted,
        MessageAcceptance::Reject => Verdict::Rejected,
        MessageAcceptance::Ignore => Verdict::Ignored,
    }
}

impl EventLoop {
    pub(super) fn join(&mut self, channel: ChannelId) -> Result<(), NetError> {
        let topic = IdentTopic::new(channel.topic());
        if self.channels.contains_key(&topic.hash()) {
            return Ok(());
        }
        if self.channels.len() >= self.config.max_channels {
            return Err(NetError::TooManyChannels { channel, limit: self.config.max_channels });
        }
        let g = &mut self.swarm.behaviour_mut().gossipsub;
        g.subscribe(&topic).map_err(|e| NetError::Publish { topic: topic.to_string(), reason: e.to_string() })?;
        if let Err(e) = g.set_topic_params(topic.clone(), crate::behaviour::topic_score_params()) {
            tracing::warn!(%channel, error = %e, "cannot set topic score parameters");
        }
        self.channels.insert(topic.hash(), channel);
        self.heard.insert(topic.hash(), Instant::now());
        // Announced only if this lookup finds few carriers (providers.rs).
        self.find_providers(channel);
        tracing::info!(%channel, "joined channel");
        Ok(())
    }

    pub(super) fn leave(&mut self, channel: ChannelId) {
        let topic = IdentTopic::new(channel.topic());
        if self.channels.remove(&topic.hash()).is_none() {
            return;
        }
        self.heard.remove(&topic.hash());
        self.swarm.behaviour_mut().gossipsub.unsubscribe(&topic);
        self.stop_announcing(&channel);
        self.provider_queries.retain(|_, q| q.channel != channel);
        self.quiet_lookups.remove(&channel);
        self.known_providers.remove(&channel);
        tracing::info!(%channel, "left channel");
    }

    pub(super) fn publish(&mut self, topic: Topic, bytes: Bytes) -> Result<MessageId, NetError> {
        let (topic, protocol) = match topic {
            Topic::Channel(c) => (IdentTopic::new(c.topic()), NetProtocol::GossipManifest),
            Topic::Directory => (IdentTopic::new(shoal_core::directory::DIRECTORY_TOPIC), NetProtocol::GossipDirectory),
        };
        let len = bytes.len();
        if let Some(t) = self.heard.get_mut(&topic.hash()) {
            *t = Instant::now();
        }
        let id = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic.clone(), bytes.to_vec())
            .map_err(|e| NetError::Publish { topic: topic.to_string(), reason: e.to_string() })?;
        self.metrics.add_bytes(protocol, Direction::Out, len);
        Ok(id)
    }

    fn report(&mut self, id: &MessageId, source: &PeerId, acceptance: MessageAcceptance) {
        self.swarm.behaviour_mut().gossipsub.report_message_validation_result(id, source, acceptance);
    }

    pub(super) fn on_gossip(&mut self, source: PeerId, id: MessageId, message: Message) {
        let now_ms = unix_ms();
        if message.topic == self.directory_topic {
            self.metrics.add_bytes(NetProtocol::GossipDirectory, Direction::In, message.data.len());
            let (acceptance, why) = match check_directory(&message.data, now_ms, self.config.max_clock_skew_ms) {
                Ok(entry) => {
                    let age_ms = now_ms.saturating_sub(entry.entry().announced_at_ms);
                    if age_ms > self.config.directory_ttl_secs * 1000 {
                        (MessageAcceptance::Ignore, reason::TOO_OLD)
                    } else if self.directory.offer(entry.clone(), Instant::now()) {
                        self.emit(NetEvent::Directory { source, entry });
                        (MessageAcceptance::Accept, reason::OK)
                    } else {
                        (MessageAcceptance::Ignore, reason::STALE)
                    }
                }
                Err(((acceptance, why), e)) => {
                    tracing::debug!(%source, error = %e, "directory entry refused");
                    (acceptance, why)
                }
            };
            self.metrics.directory(verdict_of(&acceptance), why);
            let provable = acceptance == MessageAcceptance::Reject;
            self.report(&id, &source, acceptance);
            if provable {
                self.strike(source, crate::Misbehaviour::InvalidGossip, 1);
            }
            return;
        }

        let Some(channel) = self.channels.get(&message.topic).copied() else {
            self.metrics.manifest(Verdict::Ignored, reason::UNKNOWN_TOPIC);
            self.report(&id, &source, MessageAcceptance::Ignore);
            return;
        };
        self.metrics.add_bytes(NetProtocol::GossipManifest, Direction::In, message.data.len());
        let checked = check_manifest(&message.data, &channel, &self.live_policy, now_ms);
        if checked.is_ok() {
            if let Some(t) = self.heard.get_mut(&message.topic) {
                *t = Instant::now();
            }
            // It carries the channel: a redial after a partition should not
            // wait for a lookup to finish (up to the query timeout) to know.
            self.remember_provider(channel, source);
        }
        match checked {
            Ok(manifest) => match self.config.manifest_validation {
                ManifestValidation::Network => {
                    self.metrics.manifest(Verdict::Accepted, reason::OK);
                    self.report(&id, &source, MessageAcceptance::Accept);
                    self.emit(NetEvent::Manifest { source, message_id: id, manifest, pending_validation: false });
                }
                ManifestValidation::Node => {
                    let event =
                        NetEvent::Manifest { source, message_id: id.clone(), manifest, pending_validation: true };
                    if !self.emit(event) {
                        // Never forward what nobody validated.
                        self.metrics.manifest(Verdict::Ignored, reason::BACKPRESSURE);
                        self.report(&id, &source, MessageAcceptance::Ignore);
                    }
                }
            },
            Err(((acceptance, why), e)) => {
                tracing::debug!(%source, %channel, error = %e, "manifest refused at first hop");
                self.metrics.manifest(verdict_of(&acceptance), why);
                // Provable from the bytes, and honest peers validate before
                // forwarding: only the peer that made it up sends one. The
                // gossipsub score drops too (P4); a strike also disconnects.
                let provable = acceptance == MessageAcceptance::Reject;
                self.report(&id, &source, acceptance);
                if provable {
                    self.strike(source, crate::Misbehaviour::InvalidGossip, 1);
                }
            }
        }
    }

    pub(super) fn node_verdict(&mut self, id: MessageId, source: PeerId, acceptance: Acceptance) {
        let (a, why) = match acceptance {
            Acceptance::Accept => (MessageAcceptance::Accept, reason::OK),
            Acceptance::Reject => (MessageAcceptance::Reject, reason::NODE),
            Acceptance::Ignore => (MessageAcceptance::Ignore, reason::NODE),
        };
        self.metrics.manifest(verdict_of(&a), why);
        self.report(&id, &source, a);
    }
}
