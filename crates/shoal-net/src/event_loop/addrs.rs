//! Addresses peers were reached at, for redials that must not depend on
//! what the behaviours offer for a bare peer id.
//!
//! `Swarm::dial(peer_id)` dials whatever Kademlia, identify and
//! request-response remember, and across a partition that goes wrong two
//! ways. Kademlia drops all of a peer's addresses but one after a dial in
//! which every one failed, and keeps the one whose error came last: often
//! an address on a network we never could reach, which then holds each
//! later dial for the transport's 10 s timeout (and, with the default
//! `DisconnectedAndNotDialing`, every other dial to that peer with it).
//! And identify hands out every listen address, loopback included: where
//! we listen on the same port (4001 by default), the QUIC dial to the
//! peer's 127.0.0.1 completes against our own listener first and fails the
//! whole dial with `WrongPeerId`, however good the other addresses were.
//! So we keep, per peer, addresses something proved: the one we dialed it
//! on, and the ones it listens on at the IP its connection came from; a
//! redial puts them first and is not held back by a dial pending elsewhere.

use std::{collections::HashMap, net::IpAddr, time::Instant};

use libp2p::{Multiaddr, PeerId, core::ConnectedPoint, multiaddr::Protocol};

use super::without_p2p;

/// Peers remembered; when full, the one updated longest ago is dropped.
/// Four times the default `max_connections`: every peer connected at once
/// plus the providers met before, which a redial after a partition wants.
pub(crate) const MAX_ADDR_BOOK_PEERS: usize = 1024;

/// Addresses remembered per peer, newest first. One dial tries them all at
/// once (the swarm dials 8 addresses concurrently), and a peer reachable at
/// one IP rarely listens on more there than TCP and QUIC.
pub(crate) const MAX_ADDRS_PER_PEER: usize = 4;

#[derive(Debug)]
struct Entry {
    /// Remote IP of the latest connection; `None` for transports without
    /// one (memory) and connections dialed by DNS name.
    ip: Option<IpAddr>,
    addrs: Vec<Multiaddr>,
    updated: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct AddrBook {
    peers: HashMap<PeerId, Entry>,
}

/// The IP address in `addr`, if it has one.
pub(crate) fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl AddrBook {
    /// A connection to `peer` is up: its remote IP decides which listen
    /// addresses [`Self::identified`] keeps; an address we dialed is proven.
    pub(crate) fn connected(&mut self, peer: PeerId, endpoint: &ConnectedPoint, now: Instant) {
        let remote = endpoint.get_remote_address();
        let e = self.entry(peer, now);
        e.ip = ip_of(remote);
        if endpoint.is_dialer() {
            push_front(&mut e.addrs, of_peer(remote, peer));
        }
    }

    /// `peer` says it listens on `listen` (identify): keeps those at the IP
    /// of its latest connection (for transports without IPs, those without).
    pub(crate) fn identified(&mut self, peer: PeerId, listen: &[Multiaddr], now: Instant) {
        let Some(e) = self.peers.get_mut(&peer) else { return };
        let ip = e.ip;
        for a in listen.iter().rev().filter(|a| ip_of(a) == ip) {
            push_front(&mut e.addrs, of_peer(a, peer));
        }
        e.updated = now;
    }

    /// The remote IP of the latest connection to `peer`.
    pub(crate) fn ip(&self, peer: &PeerId) -> Option<IpAddr> {
        self.peers.get(peer).and_then(|e| e.ip)
    }

    /// The proven addresses of `peer`, newest first; empty if none.
    pub(crate) fn addrs(&self, peer: &PeerId) -> &[Multiaddr] {
        match self.peers.get(peer) {
            Some(e) => &e.addrs,
            None => &[],
        }
    }

    fn entry(&mut self, peer: PeerId, now: Instant) -> &mut Entry {
        if self.peers.len() >= MAX_ADDR_BOOK_PEERS && !self.peers.contains_key(&peer) {
            let oldest = self.peers.iter().min_by_key(|(_, e)| e.updated).map(|(p, _)| *p);
            if let Some(p) = oldest {
                self.peers.remove(&p);
            }
        }
        let e = self.peers.entry(peer).or_insert_with(|| Entry { ip: None, addrs: Vec::new(), updated: now });
        e.updated = now;
        e
    }
}

/// `addr` ending in `/p2p/<peer>`, as Kademlia's are: the swarm drops
/// duplicates before dialing, so an address both here and in the routing
/// table is dialed once.
fn of_peer(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    without_p2p(addr).with(Protocol::P2p(peer))
}

fn push_front(addrs: &mut Vec<Multiaddr>, addr: Multiaddr) {
    addrs.retain(|a| *a != addr);
    addrs.insert(0, addr);
    addrs.truncate(MAX_ADDRS_PER_PEER);
}

#[cfg(test)]
mod tests {
    use libp2p::core::{Endpoint, transport::PortUse};

    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn inbound(from: &str) -> ConnectedPoint {
        ConnectedPoint::Listener { local_addr: ma("/ip4/10.201.3.72/tcp/4001"), send_back_addr: ma(from) }
    }

    /// relay-bc2 in the Docker testnet: listens on two bridges and loopback.
    fn bridge_listen() -> Vec<Multiaddr> {
        [
            "/ip4/127.0.0.1/udp/4001/quic-v1",
            "/ip4/10.201.2.62/tcp/4001",
            "/ip4/10.201.3.62/tcp/4001",
            "/ip4/127.0.0.1/tcp/4001",
            "/ip4/10.201.3.62/udp/4001/quic-v1",
            "/ip4/10.201.2.62/udp/4001/quic-v1",
        ]
        .into_iter()
        .map(ma)
        .collect()
    }

    #[test]
    fn keeps_only_listen_addresses_at_the_ip_the_peer_came_from() {
        let (mut book, peer, now) = (AddrBook::default(), PeerId::random(), Instant::now());
        book.identified(peer, &bridge_listen(), now);
        assert!(book.addrs(&peer).is_empty(), "no connection yet: nothing is proven");
        book.connected(peer, &inbound("/ip4/10.201.3.62/tcp/4001"), now);
        assert!(book.addrs(&peer).is_empty(), "an inbound remote address is not a listen address");
        book.identified(peer, &bridge_listen(), now);
        let want = ["/ip4/10.201.3.62/tcp/4001", "/ip4/10.201.3.62/udp/4001/quic-v1"];
        assert_eq!(book.addrs(&peer), want.map(|a| ma(&format!("{a}/p2p/{peer}"))));
    }

    #[test]
    fn a_dialed_address_comes_first_and_the_list_is_bounded() {
        let (mut book, peer, now) = (AddrBook::default(), PeerId::random(), Instant::now());
        for port in 1..=MAX_ADDRS_PER_PEER + 2 {
            let address = ma(&format!("/ip4/10.0.0.1/tcp/{port}/p2p/{peer}"));
            let dialer = ConnectedPoint::Dialer { address, role_override: Endpoint::Dialer, port_use: PortUse::Reuse };
            book.connected(peer, &dialer, now);
        }
        let addrs = book.addrs(&peer);
        assert_eq!(addrs.len(), MAX_ADDRS_PER_PEER);
        assert_eq!(addrs[0], ma(&format!("/ip4/10.0.0.1/tcp/{}/p2p/{peer}", MAX_ADDRS_PER_PEER + 2)), "newest first");
    }

    #[test]
    fn loopback_only_for_a_peer_on_loopback() {
        let (mut book, peer, now) = (AddrBook::default(), PeerId::random(), Instant::now());
        book.connected(peer, &inbound("/ip4/127.0.0.1/tcp/51000"), now);
        book.identified(peer, &bridge_listen(), now);
        assert!(book.addrs(&peer).iter().all(|a| ip_of(a).is_some_and(|ip| ip.is_loopback())));
        assert_eq!(book.addrs(&peer).len(), 2);
    }

    #[test]
    fn bounded_by_dropping_the_stalest_peer() {
        let (mut book, start) = (AddrBook::default(), Instant::now());
        let first = PeerId::random();
        book.connected(first, &inbound("/ip4/10.0.0.2/tcp/1"), start);
        for i in 1..MAX_ADDR_BOOK_PEERS + 1 {
            let later = start + std::time::Duration::from_millis(i as u64);
            book.connected(PeerId::random(), &inbound("/ip4/10.0.0.2/tcp/1"), later);
        }
        assert_eq!(book.peers.len(), MAX_ADDR_BOOK_PEERS);
        assert!(book.ip(&first).is_none(), "the stalest entry made room");
    }
}
