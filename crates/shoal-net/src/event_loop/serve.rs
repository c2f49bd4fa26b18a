//! The exchange and head protocols, both directions: serving peers from the
//! [`crate::BlockSource`] (holding wants for expected blocks), and our own
//! requests with their per-peer cap.

use std::{
    io,
    time::{Duration, Instant},
};

use libp2p::{
    PeerId,
    gossipsub::IdentTopic,
    request_response::{self, InboundFailure, InboundRequestId, Message, OutboundFailure, ResponseChannel},
};
use shoal_core::{
    BlockCid, ChannelId, VerifiedBlock, VerifiedManifest, VerifyPolicy,
    exchange::{ExchangeRequest, ExchangeResponse, HeadRequest, HeadResponse, WantKind},
    limits::MAX_HEAD_RESPONSE_BYTES,
};

use super::{EventLoop, RateKind, Reply, unix_ms};
use crate::{
    Misbehaviour, NetError, NetEvent,
    codec::Inbound,
    held::{HeldWant, ResponseBuilder, add_redirects},
    upload::Submit,
};

/// An inbound exchange request's reply handle with its id: the upload line
/// frees a slot by the id when libp2p reports the response written.
pub(super) type ExchangeReply = (InboundRequestId, ResponseChannel<ExchangeResponse>);

type ExchangeEvent = request_response::Event<Inbound<ExchangeRequest>, ExchangeResponse>;
type HeadEvent = request_response::Event<Inbound<HeadRequest>, HeadResponse>;

fn is_invalid_data(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidData
}

/// How long past its longest hold a request with want-blocks may go
/// unanswered before the silence is a stall. An honest peer answers a
/// want-block at once or when the hold ends (the block, a DONT_HAVE, or an
/// empty answer once we cancel), and its upload line sheds a response that
/// waits 0.5 s; 5 s more is a 2 MiB response (8 blocks) at 4 Mbit/s.
pub(super) const UNANSWERED_GRACE: Duration = Duration::from_secs(5);

/// One of our open exchange requests.
pub(super) struct PendingExchange {
    /// `None` for announcements nobody waits on.
    pub(super) reply: Option<Reply<ExchangeResponse>>,
    /// For a request with want-blocks: when it was sent, and when an honest
    /// peer has answered it by (its longest hold + [`UNANSWERED_GRACE`]).
    pub(super) wants: Option<(Instant, Instant)>,
}

/// A failure that is the peer's silence, not the connection's end or ours:
/// our request timed out, or the peer reset the stream (a staller that
/// drops its streams just before our timeout).
fn is_silence(e: &OutboundFailure) -> bool {
    match e {
        OutboundFailure::Timeout => true,
        OutboundFailure::Io(e) => !is_invalid_data(e),
        _ => false,
    }
}

fn outbound_reason(e: &OutboundFailure) -> String {
    match e {
        OutboundFailure::Timeout => "timed out (the peer is slow or gone)".into(),
        OutboundFailure::UnsupportedProtocols => "the peer does not speak this protocol".into(),
        other => other.to_string(),
    }
}

/// Turns the block that just arrived into a DONT_HAVE in a held response:
/// the upload cap is spent, so the peer should fetch it from someone else
/// now rather than wait in our queue. Held wants all fire when a fresh
/// block arrives; without this a popular relay would send a copy to every
/// holder at once, far past its line, and every one would arrive late.
/// Blocks the response already carried were served (and charged) when the
/// request came in, and stay. The DONT_HAVE names peers just given the block
/// (`names`, see [`crate::served`]). Returns whether anything was shed.
fn shed_block(resp: &mut ExchangeResponse, cid: &BlockCid, names: impl FnOnce() -> Vec<PeerId>) -> bool {
    let before = resp.blocks.len();
    resp.blocks.retain(|b| b.cid() != *cid);
    let shed = resp.blocks.len() < before;
    if shed {
        resp.dont_haves.push(*cid);
        add_redirects(resp, names());
    }
    shed
}

impl EventLoop {
    fn outbound_slot(&mut self, peer: PeerId) -> Result<(), NetError> {
        let limit = self.config.max_outbound_requests_per_peer;
        let n = self.outbound.entry(peer).or_default();
        if *n >= limit {
            return Err(NetError::PeerBusy { peer, limit });
        }
        *n += 1;
        Ok(())
    }

    fn release_slot(&mut self, peer: &PeerId) {
        if let Some(n) = self.outbound.get_mut(peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.outbound.remove(peer);
            }
        }
    }

    /// A request with want-blocks ended in the peer's silence past its hold
    /// and [`UNANSWERED_GRACE`], and the peer has answered no want of ours
    /// since it was sent: a stall (attack 6: HAVE, then hold our streams
    /// open), one strike. A peer that is slow but answering other wants is
    /// not struck, nor one whose connection closed (liveness closes a dead
    /// link in 5 s, with `ConnectionClosed`).
    fn unanswered_wants(&mut self, peer: PeerId, pending: &PendingExchange, error: &OutboundFailure) {
        let Some((sent, answer_by)) = pending.wants else { return };
        if !is_silence(error) || Instant::now() < answer_by {
            return;
        }
        if self.wants_answered.get(&peer).is_some_and(|at| *at >= sent) {
            return;
        }
        self.metrics.wants_unanswered.inc();
        self.strike(peer, Misbehaviour::Stall, 1);
    }

    pub(super) fn send_exchange(&mut self, peer: PeerId, request: ExchangeRequest, reply: Reply<ExchangeResponse>) {
        if let Err(e) = self.outbound_slot(peer) {
            let _ = reply.send(Err(e));
            return;
        }
        // Wanting a block from `peer` means we lack it: a want of its for the
        // same block that we hold is a wait cycle (a publisher's seed whose
        // manifest came through us, now redirected to it). Free it at once.
        let asked: Vec<BlockCid> = request.wants.iter().filter(|w| w.kind == WantKind::Block).map(|w| w.cid).collect();
        if !asked.is_empty() && self.held.len_for(&peer) > 0 {
            let (n, ready) = self.held.refuse(&peer, &asked);
            if n > 0 {
                tracing::trace!(%peer, n, "held wants released: we asked that peer for the same blocks");
                self.metrics.held_wants_cycles.inc_by(n as u64);
                self.metrics.held_wants.set(self.held.len() as i64);
            }
            for (p, ch, resp) in ready {
                self.respond(p, ch, resp);
            }
        }
        let longest_hold = request
            .wants
            .iter()
            .filter(|w| w.kind == WantKind::Block)
            .map(|w| Duration::from_millis(u64::from(w.hold_ms.min(shoal_core::limits::MAX_HOLD_MS))))
            .max();
        let now = Instant::now();
        let wants = longest_hold.map(|hold| (now, now + hold + UNANSWERED_GRACE));
        let id = self.swarm.behaviour_mut().exchange.inner_mut().send_request(&peer, Inbound::Valid(request));
        self.pending_exchange.insert(id, PendingExchange { reply: Some(reply), wants });
    }

    /// Tells the channel's mesh peers that we hold `cids` (HAVE), except
    /// the blocks each is known to hold already. One request per peer that
    /// still needs to hear; a peer at its outbound cap is skipped (it is
    /// busy with our wants, and a HAVE is a hint, not a promise).
    pub(super) fn announce(&mut self, channel: ChannelId, cids: &[BlockCid]) {
        let topic = IdentTopic::new(channel.topic()).hash();
        let mesh: Vec<PeerId> = self.swarm.behaviour().gossipsub.mesh_peers(&topic).copied().collect();
        for peer in mesh {
            self.send_haves_to(peer, cids, false);
        }
    }

    /// One fire-and-forget HAVE request to `peer` with those of `cids` it
    /// is not known to hold; `first_copies` marks them as blocks we just
    /// published and will serve it first (it is one of our seeds).
    pub(super) fn send_haves_to(&mut self, peer: PeerId, cids: &[BlockCid], first_copies: bool) {
        let haves: Vec<BlockCid> = cids.iter().filter(|c| !self.known.knows(&peer, c)).copied().collect();
        let skipped = (cids.len() - haves.len()) as u64;
        self.metrics.haves_suppressed.inc_by(skipped);
        if haves.is_empty() || self.outbound_slot(peer).is_err() {
            return;
        }
        self.metrics.haves_announced.inc_by(haves.len() as u64);
        let request = ExchangeRequest { haves, first_copies, ..Default::default() };
        let id = self.swarm.behaviour_mut().exchange.inner_mut().send_request(&peer, Inbound::Valid(request));
        self.pending_exchange.insert(id, PendingExchange { reply: None, wants: None });
    }

    pub(super) fn send_head(
        &mut self,
        peer: PeerId,
        channel: ChannelId,
        max: u32,
        reply: Reply<Vec<VerifiedManifest>>,
    ) {
        if let Err(e) = self.outbound_slot(peer) {
            let _ = reply.send(Err(e));
            return;
        }
        let max = max.clamp(1, shoal_core::limits::MAX_HEAD_MANIFESTS);
        let id = self
            .swarm
            .behaviour_mut()
            .head
            .inner_mut()
            .send_request(&peer, Inbound::Valid(HeadRequest { channel, max }));
        self.pending_head.insert(id, (peer, channel, reply));
    }

    /// Answers a held want (its blocks are not charged to the caps yet):
    /// charges them and puts the response on the upload line.
    fn respond(&mut self, peer: PeerId, reply: ExchangeReply, response: ExchangeResponse) {
        let bytes: u64 = response.blocks.iter().map(|b| b.data().len() as u64).sum();
        self.known.record(peer, response.blocks.iter().map(VerifiedBlock::cid));
        if bytes > 0 {
            self.charge_upload(peer, bytes);
            self.budget.used(&peer, Instant::now());
        }
        self.submit_response(peer, reply, response);
    }

    /// Sends a response whose blocks were already charged to the caps, by
    /// way of the upload line (`upload.rs`): written now, or queued behind
    /// the response being written.
    fn submit_response(&mut self, peer: PeerId, reply: ExchangeReply, response: ExchangeResponse) {
        let now = Instant::now();
        if self.serve_total.is_none() {
            // No `max_upload`: we do not know our line, so we cannot tell
            // that it is the bottleneck; waiting for each write's end would
            // only add an event-loop turn per response (measured: +10 ms
            // median on an uncapped loopback swarm, docs/benchmarks.md).
            self.write_response(peer, reply, response, now);
            return;
        }
        match self.upload.submit(reply.0, peer, reply, response, now) {
            Submit::Now(_, peer, reply, response) => self.write_response(peer, reply, response, now),
            Submit::Queued => {
                self.metrics.upload_waits.inc();
                // The line may be free while others wait (a slot let go by
                // its timeout): move now, not at the next sweep.
                self.pump_upload();
            }
        }
    }

    /// Hands a response to libp2p; one with blocks holds the upload line
    /// until it is written ([`Self::upload_done`]).
    fn write_response(&mut self, peer: PeerId, reply: ExchangeReply, response: ExchangeResponse, now: Instant) {
        let (id, channel) = reply;
        let n = response.blocks.len() as u64;
        // Recorded as it goes out, not when queued: a shed names only peers
        // that are being given the block, and rarity counts only them.
        for b in &response.blocks {
            self.served.record(peer, b.cid());
        }
        // Err means the peer gave up (timeout, disconnect): nothing to do.
        if self.swarm.behaviour_mut().exchange.inner_mut().send_response(channel, response).is_ok() {
            self.metrics.blocks_served.inc_by(n);
            if n > 0 {
                self.upload.started(id, now);
            }
        }
    }

    /// The response `id` was written or failed: the upload line moves on.
    fn upload_done(&mut self, id: InboundRequestId) {
        self.upload.finished(&id);
        self.pump_upload();
    }

    /// Sheds the blocks of responses that waited too long for the upload
    /// line (DONT_HAVE, naming peers that just got each block, and the
    /// charge refunded), then writes the next waiting response if the line
    /// is free: the one whose block went to the fewest peers so far.
    pub(super) fn pump_upload(&mut self) {
        let now = Instant::now();
        for (_, peer, reply, mut response) in self.upload.expired(now) {
            let blocks: Vec<(BlockCid, u64)> =
                response.blocks.iter().map(|b| (b.cid(), b.data().len() as u64)).collect();
            let mut refund = 0;
            for (cid, len) in blocks {
                if shed_block(&mut response, &cid, || self.shed_names(&cid, &peer)) {
                    refund += len;
                }
            }
            self.metrics.upload_wait_sheds.inc();
            self.refund_upload(peer, refund);
            self.write_response(peer, reply, response, now);
        }
        while let Some((_, peer, reply, response)) = self.upload.next(now, |c| self.served.count(c)) {
            self.write_response(peer, reply, response, now);
        }
        self.metrics.upload_slot_timeouts.inc_by(self.upload.take_slot_timeouts());
    }

    fn serve_exchange(&mut self, peer: PeerId, request: ExchangeRequest, channel: ExchangeReply) {
        self.metrics.inbound_request("exchange");
        if !request.cancels.is_empty() {
            let (n, ready) = self.held.cancel(&peer, &request.cancels);
            self.metrics.held_wants_cancelled.inc_by(n as u64);
            for (p, ch, resp) in ready {
                self.respond(p, ch, resp);
            }
            let (bytes, ready) = self.upload.cancel(&peer, &request.cancels);
            self.refund_upload(peer, bytes);
            for (_, p, reply, resp) in ready {
                self.write_response(p, reply, resp, Instant::now());
            }
        }
        let now = Instant::now();
        if !self.admit(peer, RateKind::Exchange, now) {
            // Over the request rate: answer at once, hold nothing, serve
            // nothing, and do not pass its HAVEs on.
            let mut builder = ResponseBuilder::default();
            for w in request.wants.iter().filter(|w| w.send_dont_have) {
                builder.push_dont_have(w.cid);
            }
            self.respond(peer, channel, builder.response);
            return;
        }
        if !request.haves.is_empty() {
            self.known.record(peer, request.haves.iter().copied());
            self.emit(NetEvent::PeerHaves { peer, cids: request.haves, first_copies: request.first_copies });
        }
        let mut upload_ok = self.upload_ready(peer, now);
        let mut builder = ResponseBuilder::default();
        let mut hold = Vec::new();
        let mut junk = 0u32;
        for w in request.wants {
            match w.kind {
                WantKind::Have => {
                    if self.source.has_block(&w.cid) {
                        builder.push_have(w.cid);
                    } else if w.send_dont_have {
                        builder.push_dont_have(w.cid);
                    }
                }
                WantKind::Block => {
                    if !upload_ok {
                        // Over an upload cap: say so cheaply (DONT_HAVE),
                        // so the peer asks someone else now.
                        if w.send_dont_have {
                            builder.push_dont_have(w.cid);
                            let names = self.shed_names(&w.cid, &peer);
                            builder.push_redirects(names);
                        }
                        self.metrics.rate_limited.inc();
                    } else if let Some(block) = self.source.get_block_for(&peer, &w.cid) {
                        // One block may overdraw the buckets; the next waits.
                        self.charge_upload(peer, block.data().len() as u64);
                        self.budget.used(&peer, now);
                        upload_ok = self.upload_ready(peer, now);
                        builder.push_block(block);
                    } else if w.hold_ms > 0 && self.source.expects(&w.cid) {
                        let ms = w.hold_ms.min(self.config.max_hold_ms);
                        hold.push(HeldWant {
                            cid: w.cid,
                            deadline: now + std::time::Duration::from_millis(u64::from(ms)),
                            send_dont_have: w.send_dont_have,
                        });
                    } else {
                        // Held elsewhere only for a block's manifest or a
                        // redirect: a hold for a block we never heard of
                        // (not even gated here) is a race or made up.
                        if w.hold_ms > 0 && !self.source.has_block(&w.cid) {
                            junk += 1;
                        }
                        if w.send_dont_have {
                            builder.push_dont_have(w.cid);
                            builder.push_redirects(self.source.redirect(&peer, &w.cid));
                        }
                    }
                }
            }
        }
        if junk > 0 && self.junk_wants(peer, junk, now) {
            // Banned: its connections are closing; answer nothing.
            drop(channel);
            return;
        }
        if hold.is_empty() {
            self.known.record(peer, builder.response.blocks.iter().map(VerifiedBlock::cid));
            self.submit_response(peer, channel, builder.response);
            return;
        }
        self.known.record(peer, builder.response.blocks.iter().map(VerifiedBlock::cid));
        let (outcome, ready) = self.held.hold(peer, channel, builder, hold);
        self.metrics.held_wants_refused.inc_by(outcome.refused as u64);
        self.metrics.held_wants.set(self.held.len() as i64);
        if outcome.held > 0 {
            tracing::trace!(%peer, held = outcome.held, "holding wants");
        }
        if let Some((ch, resp)) = ready {
            self.submit_response(peer, ch, resp);
        }
    }

    /// Counts `n` junk wants from `peer` (crate::junk); true if that got
    /// it banned.
    fn junk_wants(&mut self, peer: PeerId, n: u32, now: Instant) -> bool {
        self.metrics.junk_wants.inc_by(u64::from(n));
        let strikes = self.junk.record(peer, n, now);
        if strikes == 0 {
            return false;
        }
        tracing::debug!(%peer, junk = n, "held wants for blocks this node never heard of");
        self.strike(peer, Misbehaviour::JunkWants, strikes);
        self.banned.contains_key(&peer)
    }

    /// Peers to name in a DONT_HAVE for `cid` shed at our upload cap: the
    /// connected peers we just sent it to, rotating, never `asker` itself.
    fn shed_names(&mut self, cid: &BlockCid, asker: &PeerId) -> Vec<PeerId> {
        let swarm = &self.swarm;
        let names = self.served.names(cid, asker, |p| swarm.is_connected(p));
        if !names.is_empty() {
            self.metrics.shed_redirects.inc();
        }
        names
    }

    fn malformed_request(&mut self, peer: PeerId, protocol: &'static str, why: &str) {
        tracing::debug!(%peer, protocol, error = why, "malformed request");
        self.metrics.malformed_frames.inc();
        self.strike(peer, Misbehaviour::MalformedFrame, 1);
    }

    pub(super) fn block_available(&mut self, block: VerifiedBlock) {
        let before = self.held.len();
        let ready = self.held.block_arrived(&block);
        self.metrics.held_wants_answered.inc_by((before - self.held.len()) as u64);
        self.metrics.held_wants.set(self.held.len() as i64);
        let now = Instant::now();
        let cid = block.cid();
        for (p, ch, mut resp) in ready {
            if !self.upload_ready(p, now) && shed_block(&mut resp, &cid, || self.shed_names(&cid, &p)) {
                self.metrics.rate_limited.inc();
            }
            self.respond(p, ch, resp);
        }
    }

    pub(super) fn expire_held(&mut self) {
        self.pump_upload();
        if self.held.len() == 0 {
            return;
        }
        let (n, ready) = self.held.expire(Instant::now());
        self.metrics.held_wants_expired.inc_by(n as u64);
        self.metrics.held_wants.set(self.held.len() as i64);
        for (p, ch, resp) in ready {
            self.respond(p, ch, resp);
        }
    }

    pub(super) fn on_exchange_event(&mut self, event: ExchangeEvent) {
        match event {
            request_response::Event::Message {
                peer,
                message: Message::Request { request_id, request, channel },
                ..
            } => {
                match request {
                    Inbound::Valid(request) => self.serve_exchange(peer, request, (request_id, channel)),
                    Inbound::Invalid(why) => {
                        // Dropping the channel resets the stream: no answer.
                        drop(channel);
                        self.malformed_request(peer, "exchange", &why);
                    }
                }
            }
            request_response::Event::Message { peer, message: Message::Response { request_id, response }, .. } => {
                self.release_slot(&peer);
                self.metrics.blocks_received.inc_by(response.blocks.len() as u64);
                self.known
                    .record(peer, response.blocks.iter().map(VerifiedBlock::cid).chain(response.haves.iter().copied()));
                if !response.blocks.is_empty() {
                    self.budget.used(&peer, Instant::now());
                }
                if !response.bad_blocks.is_empty() {
                    self.metrics.bad_blocks.inc_by(response.bad_blocks.len() as u64);
                    tracing::warn!(%peer, bad = response.bad_blocks.len(), "peer sent blocks that do not match their CIDs");
                    // Proof, not suspicion: we asked for these CIDs and the
                    // bytes, authenticated end to end by noise, hash to
                    // something else. No honest peer sends that (its store
                    // checks blocks on read), and every corrupt block costs
                    // the asker a refetch, so the first one bans: one
                    // strike per block let a corrupter serve three rounds
                    // to every viewer that asked it (6 s to ban).
                    self.strike(peer, Misbehaviour::BadBlock, self.config.max_strikes);
                }
                if let Some(pending) = self.pending_exchange.remove(&request_id) {
                    if pending.wants.is_some() {
                        self.wants_answered.insert(peer, Instant::now());
                    }
                    if let Some(reply) = pending.reply {
                        let _ = reply.send(Ok(response));
                    }
                }
            }
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                self.release_slot(&peer);
                if matches!(&error, OutboundFailure::Io(e) if is_invalid_data(e)) {
                    self.metrics.malformed_frames.inc();
                    self.strike(peer, Misbehaviour::MalformedFrame, 1);
                }
                if let Some(pending) = self.pending_exchange.remove(&request_id) {
                    self.unanswered_wants(peer, &pending, &error);
                    if let Some(reply) = pending.reply {
                        let reason = outbound_reason(&error);
                        let _ = reply.send(Err(NetError::Request { peer, protocol: "exchange", reason }));
                    }
                }
            }
            request_response::Event::InboundFailure { peer, error: InboundFailure::Io(e), .. }
                if is_invalid_data(&e) =>
            {
                tracing::debug!(%peer, error = %e, "malformed exchange request");
                self.metrics.malformed_frames.inc();
                self.strike(peer, Misbehaviour::MalformedFrame, 1);
            }
            request_response::Event::ResponseSent { request_id, .. }
            | request_response::Event::InboundFailure { request_id, .. } => self.upload_done(request_id),
        }
    }

    pub(super) fn on_head_event(&mut self, event: HeadEvent) {
        match event {
            request_response::Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                let request = match request {
                    Inbound::Valid(r) => r,
                    Inbound::Invalid(why) => {
                        drop(channel);
                        self.malformed_request(peer, "head", &why);
                        return;
                    }
                };
                self.metrics.inbound_request("head");
                if !self.admit(peer, RateKind::Head, Instant::now()) {
                    let _ = self.swarm.behaviour_mut().head.inner_mut().send_response(channel, HeadResponse::default());
                    return;
                }
                let mut manifests = self.source.head(&request.channel, request.max);
                // Keep the newest ones that fit the count and the frame cap.
                let excess = manifests.len().saturating_sub(request.max as usize);
                manifests.drain(..excess);
                let mut total: usize = manifests.iter().map(|m| m.encoded_len() + 8).sum();
                while total > MAX_HEAD_RESPONSE_BYTES && !manifests.is_empty() {
                    total -= manifests.remove(0).encoded_len() + 8;
                }
                let _ = self.swarm.behaviour_mut().head.inner_mut().send_response(channel, HeadResponse { manifests });
            }
            request_response::Event::Message { peer, message: Message::Response { request_id, response }, .. } => {
                self.release_slot(&peer);
                let Some((_, channel, reply)) = self.pending_head.remove(&request_id) else { return };
                let policy =
                    VerifyPolicy { max_future_skew_ms: self.config.max_clock_skew_ms, ..VerifyPolicy::default() };
                let now = unix_ms();
                let mut verified = Vec::with_capacity(response.manifests.len());
                for m in response.manifests {
                    let seq = m.claimed().seq;
                    match m.verify_for(&channel, &policy, now) {
                        Ok(v) => verified.push(v),
                        Err(e) => {
                            self.strike(peer, Misbehaviour::BadHeadManifest, 1);
                            let reason = format!("manifest seq {seq} did not verify: {e}");
                            let _ = reply.send(Err(NetError::Request { peer, protocol: "head", reason }));
                            return;
                        }
                    }
                }
                verified.sort_by_key(|v| v.seq());
                verified.dedup_by_key(|v| v.seq());
                let _ = reply.send(Ok(verified));
            }
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                self.release_slot(&peer);
                if matches!(&error, OutboundFailure::Io(e) if is_invalid_data(e)) {
                    self.metrics.malformed_frames.inc();
                    self.strike(peer, Misbehaviour::MalformedFrame, 1);
                }
                if let Some((_, _, reply)) = self.pending_head.remove(&request_id) {
                    let reason = outbound_reason(&error);
                    let _ = reply.send(Err(NetError::Request { peer, protocol: "head", reason }));
                }
            }
            request_response::Event::InboundFailure { peer, error: InboundFailure::Io(e), .. }
                if is_invalid_data(&e) =>
            {
                self.metrics.malformed_frames.inc();
                self.strike(peer, Misbehaviour::MalformedFrame, 1);
            }
            _ => {}
        }
    }
}
