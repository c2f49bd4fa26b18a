//! The connection gate: the exclusion list (peer ids and CIDR ranges) and
//! the per-IP connection cap, enforced when a connection is made, in both
//! directions. The list can be replaced at run time
//! ([`crate::NetClient::set_deny_list`]); connections that the new list
//! excludes are closed at once.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    convert::Infallible,
    fmt,
    net::IpAddr,
    str::FromStr,
    task::{Context, Poll, Waker},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{ConnectedPoint, Endpoint, multiaddr::Protocol, transport::PortUse},
    swarm::{
        CloseConnection, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
    },
};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};

/// Most entries in the exclusion list. Each connection attempt is checked
/// against every range, so the list must stay small; 4096 covers a large
/// hand-kept list and any sane bulk import.
pub const MAX_DENY_RULES: usize = 4096;

/// Connections tracked for the per-IP cap and for closing excluded peers.
/// Bounded by `max_connections` in practice; this is the hard ceiling.
const MAX_TRACKED_CONNECTIONS: usize = 65_536;

/// One exclusion rule: a peer id (`12D3Koo…`) or an address range in CIDR
/// form (`10.0.0.0/8`, `2001:db8::/32`; a bare address means a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DenyRule {
    /// A peer identity.
    Peer(PeerId),
    /// An IP range.
    Range(IpRange),
}

/// An IPv4 or IPv6 range: the base address and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    base: IpAddr,
    prefix: u8,
}

/// Why a string is not a [`DenyRule`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is neither a peer id (12D3Koo…) nor an IP range like 10.0.0.0/8 or ::1/128")]
pub struct BadDenyRule(pub String);

impl IpRange {
    /// Whether `ip` is inside the range. IPv4-mapped IPv6 addresses match
    /// IPv4 ranges, so `::ffff:10.1.2.3` cannot dodge `10.0.0.0/8`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.base, ip) {
            (IpAddr::V4(b), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(b) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(b), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(b) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl FromStr for DenyRule {
    type Err = BadDenyRule;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadDenyRule(s.to_owned());
        let t = s.trim();
        if let Ok(peer) = t.parse::<PeerId>() {
            return Ok(Self::Peer(peer));
        }
        let (addr, prefix) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let base: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Self::Range(IpRange { base, prefix }))
    }
}

impl TryFrom<String> for DenyRule {
    type Error = BadDenyRule;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for DenyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Peer(p) => write!(f, "{p}"),
            Self::Range(r) => write!(f, "{r}"),
        }
    }
}

impl From<DenyRule> for String {
    fn from(r: DenyRule) -> Self {
        r.to_string()
    }
}

/// The exclusion list, split for fast checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DenyList {
    peers: HashSet<PeerId>,
    ranges: Vec<IpRange>,
}

impl DenyList {
    /// A list from rules (duplicates collapse).
    pub fn new(rules: &[DenyRule]) -> Self {
        let mut list = Self::default();
        for r in rules {
            match r {
                DenyRule::Peer(p) => {
                    list.peers.insert(*p);
                }
                DenyRule::Range(r) if !list.ranges.contains(r) => list.ranges.push(*r),
                DenyRule::Range(_) => {}
            }
        }
        list
    }

    /// Rules in the list.
    pub fn len(&self) -> usize {
        self.peers.len() + self.ranges.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `peer` is excluded by id.
    pub fn denies_peer(&self, peer: &PeerId) -> bool {
        self.peers.contains(peer)
    }

    /// Whether any IP in `addr` is inside an excluded range.
    pub fn denies_addr(&self, addr: &Multiaddr) -> bool {
        ip_of(addr).is_some_and(|ip| self.ranges.iter().any(|r| r.contains(ip)))
    }
}

/// The IP of an address (`/ip4/…` or `/ip6/…`), if it has one. Memory and
/// DNS-only addresses have none, so ranges and the per-IP cap skip them.
pub(crate) fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(a) => Some(IpAddr::V4(a)),
        Protocol::Ip6(a) => Some(IpAddr::V6(a)),
        _ => None,
    })
}

/// Why the gate refused a connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// Peer id or address in the exclusion list.
    #[error("excluded by the [net] deny list")]
    Denied,
    /// Too many inbound connections from one address.
    #[error("{limit} inbound connections from {ip} already (per-IP cap, [net] max_connections_per_ip)")]
    PerIp {
        /// The address.
        ip: IpAddr,
        /// The cap.
        limit: u32,
    },
}

#[derive(Debug, Clone, Copy)]
struct Conn {
    peer: PeerId,
    ip: Option<IpAddr>,
    inbound: bool,
}

/// The gate behaviour (no protocol of its own).
#[derive(Debug)]
pub(crate) struct Gate {
    deny: DenyList,
    max_per_ip: u32,
    conns: HashMap<ConnectionId, Conn>,
    inbound_per_ip: HashMap<IpAddr, u32>,
    close: VecDeque<(PeerId, ConnectionId)>,
    waker: Option<Waker>,
    /// Connections refused (`shoal_net_connections_refused`).
    refused: Counter,
}

impl Gate {
    pub(crate) fn new(deny: DenyList, max_per_ip: u32, refused: Counter) -> Self {
        Self {
            deny,
            max_per_ip,
            conns: HashMap::new(),
            inbound_per_ip: HashMap::new(),
            close: VecDeque::new(),
            waker: None,
            refused,
        }
    }

    /// Replaces the exclusion list and closes every connection it now
    /// excludes. Returns how many connections will be closed.
    pub(crate) fn set_deny(&mut self, deny: DenyList) -> usize {
        self.deny = deny;
        let doomed: Vec<(PeerId, ConnectionId)> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                self.deny.denies_peer(&c.peer) || c.ip.is_some_and(|ip| self.deny.ranges.iter().any(|r| r.contains(ip)))
            })
            .map(|(id, c)| (c.peer, *id))
            .collect();
        let n = doomed.len();
        self.close.extend(doomed);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        n
    }

    pub(crate) fn deny_list(&self) -> &DenyList {
        &self.deny
    }

    fn check(&mut self, peer: Option<&PeerId>, addr: Option<&Multiaddr>) -> Result<(), ConnectionDenied> {
        let denied = peer.is_some_and(|p| self.deny.denies_peer(p)) || addr.is_some_and(|a| self.deny.denies_addr(a));
        if denied {
            self.refused.inc();
            return Err(ConnectionDenied::new(Refused::Denied));
        }
        Ok(())
    }

    fn check_per_ip(&mut self, remote: &Multiaddr) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote) else { return Ok(()) };
        if self.inbound_per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
            self.refused.inc();
            return Err(ConnectionDenied::new(Refused::PerIp { ip, limit: self.max_per_ip }));
        }
        Ok(())
    }
}

impl NetworkBehaviour for Gate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        // Refuse before the noise handshake: an excluded range costs us no
        // crypto, and a flooding address no handshake work past its cap.
        self.check(None, Some(remote))?;
        self.check_per_ip(remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(Some(&peer), Some(remote))?;
        self.check_per_ip(remote)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        addrs: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.check(peer.as_ref(), None)?;
        if !addrs.is_empty() && addrs.iter().all(|a| self.deny.denies_addr(a)) {
            self.refused.inc();
            return Err(ConnectionDenied::new(Refused::Denied));
        }
        Ok(vec![])
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(Some(&peer), Some(addr))?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                let (addr, inbound) = match e.endpoint {
                    ConnectedPoint::Listener { send_back_addr, .. } => (send_back_addr, true),
                    ConnectedPoint::Dialer { address, .. } => (address, false),
                };
                let ip = ip_of(addr);
                if self.conns.len() < MAX_TRACKED_CONNECTIONS {
                    self.conns.insert(e.connection_id, Conn { peer: e.peer_id, ip, inbound });
                    if inbound && let Some(ip) = ip {
                        *self.inbound_per_ip.entry(ip).or_default() += 1;
                    }
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                if let Some(c) = self.conns.remove(&connection_id)
                    && c.inbound
                    && let Some(ip) = c.ip
                    && let Some(n) = self.inbound_per_ip.get_mut(&ip)
                {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.inbound_per_ip.remove(&ip);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some((peer_id, id)) = self.close.pop_front() {
            return Poll::Ready(ToSwarm::CloseConnection { peer_id, connection: CloseConnection::One(id) });
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_print() {
        let peer = PeerId::random();
        assert_eq!(peer.to_string().parse::<DenyRule>().unwrap(), DenyRule::Peer(peer));
        for s in ["10.0.0.0/8", "::1/128", "2001:db8::/32", "192.168.1.7/32"] {
            assert_eq!(s.parse::<DenyRule>().unwrap().to_string(), s);
        }
        assert_eq!("1.2.3.4".parse::<DenyRule>().unwrap().to_string(), "1.2.3.4/32");
        for s in ["10.0.0.0/33", "::1/129", "nonsense", "10.0.0/8", ""] {
            let e = s.parse::<DenyRule>().unwrap_err().to_string();
            assert!(e.contains(&format!("`{s}`")), "{e}");
        }
    }

    #[test]
    fn ranges_match_exactly_their_prefix() {
        let list = DenyList::new(&["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()]);
        let yes = ["/ip4/10.255.0.1/tcp/1", "/ip6/2001:db8::7/udp/1/quic-v1", "/ip6/::ffff:10.1.2.3/tcp/4"];
        let no = ["/ip4/11.0.0.1/tcp/1", "/ip6/2001:db9::1/tcp/1", "/memory/5", "/dns4/example.com/tcp/1"];
        for a in yes {
            assert!(list.denies_addr(&a.parse().unwrap()), "{a}");
        }
        for a in no {
            assert!(!list.denies_addr(&a.parse().unwrap()), "{a}");
        }
        let all = DenyList::new(&["0.0.0.0/0".parse().unwrap()]);
        assert!(all.denies_addr(&"/ip4/1.2.3.4/tcp/1".parse().unwrap()));
        assert!(!all.denies_addr(&"/ip6/::2/tcp/1".parse().unwrap()));
    }

    #[test]
    fn toml_errors_name_the_entry() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct T {
            deny: Vec<DenyRule>,
        }
        let e = toml::from_str::<T>("deny = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/99\",\n]\n").unwrap_err().to_string();
        // toml points at the key; the message names the bad entry.
        assert!(e.contains("10.0.0.0/99") && e.contains("line 1"), "{e}");
    }
}
