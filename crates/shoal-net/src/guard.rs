//! The stream guard: a per-connection cap on how fast a peer may open
//! inbound request streams, enforced inside the connection task, before a
//! stream is read or reaches the event loop.
//!
//! Why a second cap: request-response bounds the *concurrent* inbound
//! streams per connection (`max_inbound_requests_per_peer`) and drops the
//! ones over it without telling anyone, so a flooder whose requests are
//! dropped there is never seen by the request-rate check in the event loop
//! (`admit`), never struck and never banned. And when a node is short of CPU
//! the event loop is the slowest part; the flood must be refused where it
//! costs least. [`Guarded`] wraps a request-response behaviour: its handler
//! passes every event through unchanged except inbound streams over the
//! rate, which it drops (the remote sees a reset), and it reports the
//! refusals to the behaviour at most once per [`REPORT_EVERY`]. The event
//! loop turns each report into a flood strike, so a sustained flood is
//! banned in about `max_strikes` seconds.

use std::{
    collections::VecDeque,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    swarm::{
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm, NetworkBehaviour,
        SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
        handler::{ConnectionEvent, FullyNegotiatedInbound},
    },
};

use crate::rate::TokenBucket;

/// The head protocol's guard is this multiple of its request rate
/// (`head_requests_per_sec_per_peer`); the exchange guard has its own key
/// (`inbound_streams_per_sec_per_peer`, 4× the request rate by default).
/// Requests between 1× and 4× are refused cheaply by the event loop with
/// an answer; only streams beyond — a flood, not an eager honest peer — are
/// dropped unread here.
pub(crate) const STREAM_GUARD_FACTOR: f64 = 4.0;

/// Seconds of the guard's rate a connection may open at once: a peer that
/// reconnects and catches up may burst.
const BURST_SECS: f64 = 2.0;

/// Refusals are reported (and struck) at most this often per connection,
/// so a flood costs its sender one strike per second, not one per stream.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Reports waiting for the swarm to poll the behaviour. Each connection
/// reports at most once a second; this bounds a burst of them.
const MAX_PENDING_REPORTS: usize = 1024;

/// The sans-IO core: a token bucket over stream openings, and the count of
/// refusals not yet reported. Time is passed in.
#[derive(Debug, Clone)]
pub(crate) struct StreamRate {
    bucket: TokenBucket,
    refused: u32,
    last_report: Option<Instant>,
}

impl StreamRate {
    /// `per_sec` streams per second, bursting to `BURST_SECS` of them.
    pub(crate) fn new(per_sec: f64, now: Instant) -> Self {
        let per_sec = per_sec.max(1.0);
        Self { bucket: TokenBucket::new(per_sec, per_sec * BURST_SECS, now), refused: 0, last_report: None }
    }

    /// Whether a new inbound stream may go on; a refusal is counted.
    pub(crate) fn admit(&mut self, now: Instant) -> bool {
        if self.bucket.try_take(1.0, now) {
            return true;
        }
        self.refused = self.refused.saturating_add(1);
        false
    }

    /// Refusals since the last report, if there are any and the last
    /// report is at least [`REPORT_EVERY`] old.
    pub(crate) fn report(&mut self, now: Instant) -> Option<u32> {
        if self.refused == 0 || self.last_report.is_some_and(|t| now.saturating_duration_since(t) < REPORT_EVERY) {
            return None;
        }
        self.last_report = Some(now);
        Some(std::mem::take(&mut self.refused))
    }
}

/// What a guarded behaviour emits: the inner behaviour's events, and
/// streams refused on a connection.
#[derive(Debug)]
pub(crate) enum GuardedEvent<E> {
    /// The wrapped behaviour's event.
    Inner(E),
    /// `streams` inbound streams from `peer` were over the guard's rate and
    /// dropped unread since the last report on this connection.
    Refused {
        /// The flooding peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// Streams dropped.
        streams: u32,
    },
}

/// A behaviour whose connections' inbound streams are rate-capped.
pub(crate) struct Guarded<B> {
    inner: B,
    per_sec: f64,
    reports: VecDeque<(PeerId, ConnectionId, u32)>,
    waker: Option<Waker>,
}

impl<B> Guarded<B> {
    /// Wraps `inner`; each connection may open `per_sec` inbound streams a second.
    pub(crate) fn new(inner: B, per_sec: f64) -> Self {
        Self { inner, per_sec, reports: VecDeque::new(), waker: None }
    }

    /// The wrapped behaviour.
    pub(crate) fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    fn handler<H>(&self, inner: H) -> GuardedHandler<H> {
        GuardedHandler { inner, rate: StreamRate::new(self.per_sec, Instant::now()), report: None }
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for Guarded<B> {
    type ConnectionHandler = GuardedHandler<THandler<B>>;
    type ToSwarm = GuardedEvent<B::ToSwarm>;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner.handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let h = self.inner.handle_established_inbound_connection(connection_id, peer, local_addr, remote_addr)?;
        Ok(self.handler(h))
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(connection_id, maybe_peer, addresses, effective_role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let h =
            self.inner.handle_established_outbound_connection(connection_id, peer, addr, role_override, port_use)?;
        Ok(self.handler(h))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            GuardOut::Inner(e) => self.inner.on_connection_handler_event(peer_id, connection_id, e),
            GuardOut::Refused(streams) => {
                if self.reports.len() < MAX_PENDING_REPORTS {
                    self.reports.push_back((peer_id, connection_id, streams));
                }
                if let Some(w) = self.waker.take() {
                    w.wake();
                }
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some((peer, connection, streams)) = self.reports.pop_front() {
            return Poll::Ready(ToSwarm::GenerateEvent(GuardedEvent::Refused { peer, connection, streams }));
        }
        self.waker = Some(cx.waker().clone());
        self.inner.poll(cx).map(|e| e.map_out(GuardedEvent::Inner))
    }
}

/// What a guarded handler tells its behaviour.
#[derive(Debug)]
pub(crate) enum GuardOut<E> {
    /// The wrapped handler's event.
    Inner(E),
    /// Inbound streams dropped since the last report.
    Refused(u32),
}

/// The connection handler: the inner one, behind the stream-rate check.
pub(crate) struct GuardedHandler<H> {
    inner: H,
    rate: StreamRate,
    report: Option<u32>,
}

impl<H: ConnectionHandler> ConnectionHandler for GuardedHandler<H> {
    type FromBehaviour = H::FromBehaviour;
    type ToBehaviour = GuardOut<H::ToBehaviour>;
    type InboundProtocol = H::InboundProtocol;
    type OutboundProtocol = H::OutboundProtocol;
    type InboundOpenInfo = H::InboundOpenInfo;
    type OutboundOpenInfo = H::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        self.inner.listen_protocol()
    }

    fn connection_keep_alive(&self) -> bool {
        self.inner.connection_keep_alive()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>> {
        if let Some(n) = self.report.take() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(GuardOut::Refused(n)));
        }
        self.inner.poll(cx).map(|e| e.map_custom(GuardOut::Inner))
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        self.inner.poll_close(cx).map(|e| e.map(GuardOut::Inner))
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        self.inner.on_behaviour_event(event);
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        if let ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound { .. }) = &event {
            let now = Instant::now();
            if !self.rate.admit(now) {
                // Dropping the stream resets it; the inner handler never
                // sees it, so it costs no read, no decode, no slot.
                if let Some(n) = self.rate.report(now) {
                    self.report = Some(self.report.unwrap_or(0).saturating_add(n));
                }
                return;
            }
        }
        self.inner.on_connection_event(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honest_rate_passes_and_a_flood_is_reported_once_a_second() {
        let t0 = Instant::now();
        let mut r = StreamRate::new(10.0, t0);
        // 10/s for 5 s after the burst: all admitted.
        let mut admitted = 0;
        for ms in (0..5000u64).step_by(100) {
            if r.admit(t0 + Duration::from_millis(ms)) {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 50);
        assert_eq!(r.report(t0 + Duration::from_secs(5)), None);

        // Then 100/s for 3 s: the burst (20) and 10/s pass, the rest is
        // refused and reported at most once a second.
        let t1 = t0 + Duration::from_secs(5);
        let (mut refused, mut reports) = (0u32, Vec::new());
        for ms in (0..3000u64).step_by(10) {
            let now = t1 + Duration::from_millis(ms);
            if !r.admit(now) {
                refused += 1;
            }
            if let Some(n) = r.report(now) {
                reports.push((ms, n));
            }
        }
        assert!((230..=280).contains(&refused), "refused {refused}");
        assert_eq!(reports.len(), 3, "{reports:?}");
        assert!(reports.windows(2).all(|w| w[1].0 - w[0].0 >= 1000), "{reports:?}");
        // Every refusal but those after the last report has been reported.
        let reported: u32 = reports.iter().map(|(_, n)| n).sum();
        assert!(reported <= refused && refused - reported < 100, "{reported} of {refused}");
    }

    #[test]
    fn no_refusals_no_report() {
        let t0 = Instant::now();
        let mut r = StreamRate::new(1.0, t0);
        assert!(r.admit(t0));
        assert_eq!(r.report(t0 + Duration::from_secs(10)), None);
    }
}
