//! Liveness: a connection whose pings stop coming back is closed within
//! `ping_interval_ms + ping_timeout_ms`, not libp2p's ~16 s.
//!
//! libp2p's ping forgives the first failure silently (for old peers that
//! open a stream per ping), then opens a new stream for the next ping, and
//! on a black-holed connection that stream's negotiation waits out the 10 s
//! upgrade timeout before the second failure is reported. A 10 s partition
//! in the Docker testnet healed before that, so the dead connection was
//! still "up": our 32 requests open on it blocked every new one, and the
//! segments announced at the reconnect missed their deadlines. So the loop
//! keeps, per connection, when it last heard a pong (or was established)
//! and closes it itself.

use std::time::{Duration, Instant};

use libp2p::{PeerId, ping, swarm::ConnectionId};

use super::EventLoop;

/// How often silent connections are looked for: a tenth of the default
/// liveness window (5 s), for a scan over at most `max_connections` entries.
pub(super) const LIVENESS_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// A pong this late is counted as slow (`NetMetricsSnapshot::ping_slow`):
/// ten times a long real RTT, so it measures queueing or a late event loop,
/// not distance. The counter tells which of the two a bench run's closes
/// come after: slow pongs before closes point at the link or the loop.
pub(crate) const SLOW_PING: Duration = Duration::from_secs(1);

impl EventLoop {
    /// A connection is up, or answered a ping: its clock restarts.
    pub(super) fn heard_from(&mut self, connection: ConnectionId, now: Instant) {
        self.last_pong.insert(connection, now);
    }

    /// A ping came back after `rtt`.
    pub(super) fn pong(&mut self, connection: ConnectionId, rtt: Duration, now: Instant) {
        if rtt >= SLOW_PING {
            self.metrics.ping_slow.inc();
        }
        self.heard_from(connection, now);
    }

    /// libp2p reported a failed ping: the connection is closed, and the
    /// failure counted by kind.
    pub(super) fn ping_failed(&mut self, peer: PeerId, connection: ConnectionId, error: &ping::Failure) {
        self.stop_watching(&connection);
        tracing::debug!(%peer, %error, "ping failed, closing the connection");
        match error {
            ping::Failure::Timeout => self.metrics.ping_timeouts.inc(),
            _ => self.metrics.ping_errors.inc(),
        };
        self.metrics.ping_closed.inc();
        self.swarm.close_connection(connection);
    }

    /// The connection closed, or the peer does not speak ping (it is not
    /// dead for that): stop watching it.
    pub(super) fn stop_watching(&mut self, connection: &ConnectionId) {
        self.last_pong.remove(connection);
    }

    /// Closes every connection that has not answered a ping for
    /// `ping_interval_ms + ping_timeout_ms`.
    pub(super) fn close_silent(&mut self, now: Instant) {
        let window = Duration::from_millis(self.config.ping_interval_ms + self.config.ping_timeout_ms);
        let silent: Vec<ConnectionId> =
            self.last_pong.iter().filter(|(_, t)| now.duration_since(**t) > window).map(|(c, _)| *c).collect();
        for c in silent {
            tracing::debug!(connection = ?c, window_ms = window.as_millis() as u64, "no pong, closing the connection");
            self.last_pong.remove(&c);
            self.metrics.ping_closed.inc();
            self.swarm.close_connection(c);
        }
    }
}
