//! `node wan-relay`: a user-space WAN between regions on one machine.
//!
//! Many VMs and containers (this project's CI machine among them) have no
//! `netem` qdisc, so delay, jitter and loss between regions cannot come from
//! the kernel. The relay sits between two nodes' QUIC endpoints instead: a
//! node is told that its peer lives at the relay's address, and the relay
//! forwards every datagram to the real peer and every answer back, each one
//! held for `delay ± jitter` and dropped with probability `loss`. Jitter
//! reorders datagrams, as a real path does.
//!
//! One relay serves any number of clients: each client address gets its own
//! upstream socket, so the peer sees distinct flows and answers reach the
//! client they belong to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// Largest datagram relayed (QUIC never sends more than this over UDP).
const MAX_DATAGRAM: usize = 65_535;

#[derive(Debug, Error)]
pub enum RelayError {
    #[error("cannot bind the relay on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("relay socket failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("loss must be a probability between 0 and 1, got {0}")]
    Loss(f64),
}

/// What the emulated path does to each datagram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    pub delay: Duration,
    pub jitter: Duration,
    pub loss: f64,
}

impl Impairment {
    pub fn new(delay: Duration, jitter: Duration, loss: f64) -> Result<Self, RelayError> {
        if !(0.0..=1.0).contains(&loss) {
            return Err(RelayError::Loss(loss));
        }
        Ok(Self {
            delay,
            jitter,
            loss,
        })
    }

    /// How long to hold one datagram, or `None` to drop it.
    pub fn hold(&self, rng: &mut impl Rng) -> Option<Duration> {
        if self.loss > 0.0 && rng.random::<f64>() < self.loss {
            return None;
        }
        let low = self.delay.saturating_sub(self.jitter);
        let high = self.delay + self.jitter;
        Some(if low == high {
            low
        } else {
            rng.random_range(low..=high)
        })
    }
}

/// A bound relay; [`WanRelay::run`] forwards until shutdown.
pub struct WanRelay {
    socket: Arc<UdpSocket>,
    forward: SocketAddr,
    impairment: Impairment,
}

impl WanRelay {
    pub async fn bind(
        listen: SocketAddr,
        forward: SocketAddr,
        impairment: Impairment,
    ) -> Result<Self, RelayError> {
        let socket = UdpSocket::bind(listen)
            .await
            .map_err(|source| RelayError::Bind {
                addr: listen,
                source,
            })?;
        Ok(Self {
            socket: Arc::new(socket),
            forward,
            impairment,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, RelayError> {
        Ok(self.socket.local_addr()?)
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RelayError> {
        let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (len, client) = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok(received) => received,
                    // A peer's ICMP "port unreachable" surfaces here on
                    // Linux; the path stays up, as a real one would.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => return Err(e.into()),
                },
            };
            let upstream = match upstreams.get(&client) {
                Some(upstream) => Arc::clone(upstream),
                None => {
                    let upstream = self.open_upstream(client, &shutdown).await?;
                    upstreams.insert(client, Arc::clone(&upstream));
                    tracing::debug!(%client, "new flow through the relay");
                    upstream
                }
            };
            let forward = self.forward;
            schedule(&self.impairment, &buf[..len], move |datagram| async move {
                let _ = upstream.send_to(&datagram, forward).await;
            });
        }
    }

    /// A socket of the client's own towards the peer, whose answers go back
    /// to the client from the relay's address.
    async fn open_upstream(
        &self,
        client: SocketAddr,
        shutdown: &CancellationToken,
    ) -> Result<Arc<UdpSocket>, RelayError> {
        let upstream = Arc::new(UdpSocket::bind(SocketAddr::new(self.forward.ip(), 0)).await?);
        let reader = Arc::clone(&upstream);
        let back = Arc::clone(&self.socket);
        let impairment = self.impairment;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                let len = tokio::select! {
                    () = shutdown.cancelled() => return,
                    received = reader.recv_from(&mut buf) => match received {
                        Ok((len, _)) => len,
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                        Err(_) => return,
                    },
                };
                let back = Arc::clone(&back);
                schedule(&impairment, &buf[..len], move |datagram| async move {
                    let _ = back.send_to(&datagram, client).await;
                });
            }
        });
        Ok(upstream)
    }
}

/// Sends a copy of `datagram` after the path's delay, unless it is lost.
fn schedule<F, Fut>(impairment: &Impairment, datagram: &[u8], send: F)
where
    F: FnOnce(Vec<u8>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let Some(hold) = impairment.hold(&mut rand::rng()) else {
        metrics::counter!("ride_wan_relay_dropped_total").increment(1);
        return;
    };
    let datagram = datagram.to_vec();
    tokio::spawn(async move {
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
        send(datagram).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn holds_within_the_jitter_and_drops_at_the_loss_rate() {
        let mut rng = StdRng::seed_from_u64(7);
        let path =
            Impairment::new(Duration::from_millis(30), Duration::from_millis(5), 0.25).unwrap();
        let holds: Vec<Option<Duration>> = (0..10_000).map(|_| path.hold(&mut rng)).collect();
        let kept: Vec<Duration> = holds.iter().flatten().copied().collect();
        let lost = holds.len() - kept.len();
        assert!((2_200..2_800).contains(&lost), "{lost} of 10000 lost");
        assert!(
            kept.iter()
                .all(|h| { (Duration::from_millis(25)..=Duration::from_millis(35)).contains(h) })
        );
        assert!(kept.iter().any(|h| *h < Duration::from_millis(27)));
        assert!(kept.iter().any(|h| *h > Duration::from_millis(33)));

        let exact = Impairment::new(Duration::from_millis(10), Duration::ZERO, 0.0).unwrap();
        assert_eq!(exact.hold(&mut rng), Some(Duration::from_millis(10)));
        let cut = Impairment::new(Duration::ZERO, Duration::ZERO, 1.0).unwrap();
        assert_eq!(cut.hold(&mut rng), None);
        assert!(matches!(
            Impairment::new(Duration::ZERO, Duration::ZERO, 1.5),
            Err(RelayError::Loss(_))
        ));
    }

    /// Datagrams cross the relay both ways, each client getting its own
    /// answers.
    #[tokio::test]
    async fn relays_both_ways_per_client() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((len, from)) = echo.recv_from(&mut buf).await {
                let mut answer = b"echo:".to_vec();
                answer.extend_from_slice(&buf[..len]);
                let _ = echo.send_to(&answer, from).await;
            }
        });
        let path =
            Impairment::new(Duration::from_millis(2), Duration::from_millis(1), 0.0).unwrap();
        let relay = WanRelay::bind("127.0.0.1:0".parse().unwrap(), echo_addr, path)
            .await
            .unwrap();
        let relay_addr = relay.local_addr().unwrap();
        let stop = CancellationToken::new();
        let running = tokio::spawn(relay.run(stop.clone()));

        for name in ["a", "b"] {
            let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            client.send_to(name.as_bytes(), relay_addr).await.unwrap();
            let mut buf = [0u8; 64];
            let (len, from) = client.recv_from(&mut buf).await.unwrap();
            assert_eq!(from, relay_addr);
            assert_eq!(&buf[..len], format!("echo:{name}").as_bytes());
        }
        stop.cancel();
        running.await.unwrap().unwrap();
    }
}
