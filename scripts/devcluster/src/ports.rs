//! Loopback ports: free ones for a plan, busy ones before a start.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use serde::{Deserialize, Serialize};

use crate::Error;

/// `tcp` free TCP ports, then `udp` free UDP ports, on 127.0.0.1, all
/// distinct: every socket is held until all are bound, then released for
/// the processes that take them.
pub fn free(tcp: usize, udp: usize) -> Result<Vec<u16>, Error> {
    let any = (Ipv4Addr::LOCALHOST, 0);
    let mut ports = Vec::with_capacity(tcp + udp);
    let tcp_held: Vec<TcpListener> = (0..tcp)
        .map(|_| TcpListener::bind(any))
        .collect::<Result<_, _>>()
        .map_err(Error::io("binding a free TCP port"))?;
    let udp_held: Vec<UdpSocket> = (0..udp)
        .map(|_| UdpSocket::bind(any))
        .collect::<Result<_, _>>()
        .map_err(Error::io("binding a free UDP port"))?;
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
    fn free_ports_are_distinct_and_were_bound() {
        let ports = free(3, 3).unwrap();
        assert_eq!(ports.len(), 6);
        assert!(ports.iter().all(|&p| p != 0));
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
