//! Loopback ports: free ones for a plan, busy ones before a start.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};

use serde::{Deserialize, Serialize};

use crate::Error;

/// `tcp` free TCP ports, then `udp` free UDP ports, on 127.0.0.1, all
/// distinct: every socket is held until all are bound, then released for
/// the processes that take them.
///
/// A port released here is taken by a node process a moment later. The
/// kernel hands out ports from its ephemeral range to every `bind(0)` and
/// every outgoing connection on the machine, and one of those could take a
/// released port in that moment. So the ports come from below that range,
/// where nothing is handed out unasked; each process walks its own stretch
/// of them (by its pid), and within a process a cursor never offers a port
/// twice.
pub fn free(tcp: usize, udp: usize) -> Result<Vec<u16>, Error> {
    let any = |port| (Ipv4Addr::LOCALHOST, port);
    let mut tcp_held = Vec::with_capacity(tcp);
    let mut udp_held = Vec::with_capacity(udp);
    let mut tried = 0;
    while tcp_held.len() < tcp || udp_held.len() < udp {
        if tried == UNASKED_PORTS {
            return Err(Error::io("finding free ports")(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "every port below the ephemeral range is taken",
            )));
        }
        tried += 1;
        let port = next_unasked_port();
        if tcp_held.len() < tcp {
            if let Ok(listener) = TcpListener::bind(any(port)) {
                tcp_held.push(listener);
            }
        } else if let Ok(socket) = UdpSocket::bind(any(port)) {
            udp_held.push(socket);
        }
    }
    let mut ports = Vec::with_capacity(tcp + udp);
    for listener in &tcp_held {
        let addr = listener.local_addr().map_err(Error::io("a TCP port"))?;
        ports.push(addr.port());
    }
    for socket in &udp_held {
        let addr = socket.local_addr().map_err(Error::io("a UDP port"))?;
        ports.push(addr.port());
    }
    Ok(ports)
}

/// The ports `free` offers: below Linux's default ephemeral range
/// (32768-60999), above the well-known and most registered ones.
const UNASKED_FIRST: u16 = 20_000;
const UNASKED_PORTS: u16 = 12_000;

/// The next port of this process's walk through the unasked ports.
fn next_unasked_port() -> u16 {
    static CURSOR: OnceLock<AtomicU16> = OnceLock::new();
    let cursor = CURSOR.get_or_init(|| {
        // Processes that plan at the same time start far apart.
        let start = (std::process::id() % u32::from(UNASKED_PORTS / 97)) * 97;
        AtomicU16::new(u16::try_from(start).unwrap_or(0))
    });
    UNASKED_FIRST + cursor.fetch_add(1, Ordering::Relaxed) % UNASKED_PORTS
}

/// A listening address and its protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Listen {
    Tcp(SocketAddr),
    Udp(SocketAddr),
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "tcp {addr}"),
            Self::Udp(addr) => write!(f, "udp {addr}"),
        }
    }
}

/// The addresses something already listens on. TCP is bound as a listener
/// would (std sets SO_REUSEADDR), so connections in TIME_WAIT do not count.
pub fn busy(addrs: &[Listen]) -> Vec<Listen> {
    addrs
        .iter()
        .copied()
        .filter(|listen| match listen {
            Listen::Tcp(addr) => TcpListener::bind(addr).is_err(),
            Listen::Udp(addr) => UdpSocket::bind(addr).is_err(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_outside_the_ephemeral_range() {
        let ports = free(3, 3).unwrap();
        assert_eq!(ports.len(), 6);
        let unasked = UNASKED_FIRST..UNASKED_FIRST + UNASKED_PORTS;
        assert!(ports.iter().all(|p| unasked.contains(p)), "{ports:?}");
        let again = free(3, 3).unwrap();
        assert!(again.iter().all(|p| !ports.contains(p)), "offered twice");
        let tcp: std::collections::BTreeSet<_> = ports[..3].iter().collect();
        let udp: std::collections::BTreeSet<_> = ports[3..].iter().collect();
        assert_eq!((tcp.len(), udp.len()), (3, 3));
    }

    /// Only what `busy` can know for certain is asserted: a port this test
    /// holds is busy, and port 0 (any port) never is. Whether a port just
    /// released is free again is a race with every other socket on the
    /// machine, so no test asks it.
    #[test]
    fn a_held_port_is_busy_and_any_port_is_not() {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let held = [
            Listen::Udp(udp.local_addr().unwrap()),
            Listen::Tcp(tcp.local_addr().unwrap()),
        ];
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let mut asked = held.to_vec();
        asked.extend([Listen::Udp(any), Listen::Tcp(any)]);
        assert_eq!(busy(&asked), held);
    }
}
