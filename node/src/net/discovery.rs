//! Peer discovery from Fly.io's private DNS.
//!
//! On Fly, machines come and go (deploys, scaling, host migrations) and their
//! private (6PN) addresses change with them, so a fixed `--peer` list cannot
//! describe the mesh. Fly's resolver answers two questions that can:
//! `vms.<app>.internal` (TXT) lists every machine as `<id> <region>`, and
//! `<id>.vm.<app>.internal` (AAAA) is that machine's address. A node asks
//! both every few seconds and hands the transport the resulting peer list;
//! the transport dials newcomers and stops dialing machines that are gone.
//!
//! Which nodes may join is still decided by the mesh CA: a discovered peer
//! must present a certificate issued to its machine id.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::TokioResolver;
use thiserror::Error;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::transport::Peer;
use ride_types::ids::NodeId;

#[derive(Debug, Error)]
pub enum DiscoveryError {
    #[error("DNS lookup of {name} failed: {reason}")]
    Lookup { name: String, reason: String },
    #[error("cannot use the system's DNS settings: {0}")]
    Resolver(String),
}

/// The two lookups discovery needs; a stub stands in for it in tests.
#[async_trait]
pub(crate) trait Dns: Send + Sync + 'static {
    /// The TXT record's strings, each record's parts joined.
    async fn txt(&self, name: &str) -> Result<Vec<String>, DiscoveryError>;
    async fn aaaa(&self, name: &str) -> Result<Vec<Ipv6Addr>, DiscoveryError>;
}

/// The machine's own resolver (on Fly, `fdaa::3` from `/etc/resolv.conf`).
pub(crate) struct SystemDns(TokioResolver);

impl SystemDns {
    pub(crate) fn new() -> Result<Self, DiscoveryError> {
        let resolver = TokioResolver::builder_tokio()
            .map_err(|e| DiscoveryError::Resolver(e.to_string()))?
            .build();
        Ok(Self(resolver))
    }
}

fn lookup_error(name: &str) -> impl FnOnce(hickory_resolver::ResolveError) -> DiscoveryError {
    let name = name.to_owned();
    move |e| DiscoveryError::Lookup {
        name,
        reason: e.to_string(),
    }
}

#[async_trait]
impl Dns for SystemDns {
    async fn txt(&self, name: &str) -> Result<Vec<String>, DiscoveryError> {
        let answer = self.0.txt_lookup(name).await.map_err(lookup_error(name))?;
        Ok(answer
            .iter()
            .map(|txt| {
                txt.txt_data()
                    .iter()
                    .map(|part| String::from_utf8_lossy(part))
                    .collect()
            })
            .collect())
    }

    async fn aaaa(&self, name: &str) -> Result<Vec<Ipv6Addr>, DiscoveryError> {
        let answer = self.0.ipv6_lookup(name).await.map_err(lookup_error(name))?;
        Ok(answer.iter().map(|a| a.0).collect())
    }
}

/// Finds the other machines of a Fly app.
pub(crate) struct FlyDiscovery<D> {
    pub dns: D,
    pub app: String,
    /// This node's id (its machine id), left out of the peers.
    pub node: NodeId,
    /// The mesh port, the same on every machine.
    pub port: u16,
    /// The Fly regions whose machines to keep: this node's region and its
    /// neighbours' (halo replication has nothing for the others, see
    /// [`ride_types::halo`]); every machine when `None`. A machine listed
    /// without a region is kept.
    pub only: Option<BTreeSet<String>>,
}

impl<D: Dns> FlyDiscovery<D> {
    /// The app's other machines, sorted by id. A machine whose address does
    /// not resolve (it may be starting or stopping) is left out this time.
    pub(crate) async fn peers(&self) -> Result<Vec<Peer>, DiscoveryError> {
        let listing = self.dns.txt(&format!("vms.{}.internal", self.app)).await?;
        let mut peers = Vec::new();
        for (machine, region) in machines(&listing.concat()) {
            let wanted = match (&self.only, region) {
                (Some(only), Some(region)) => only.contains(region),
                _ => true,
            };
            if machine == self.node.0 || !wanted {
                continue;
            }
            let name = format!("{machine}.vm.{}.internal", self.app);
            match self.dns.aaaa(&name).await {
                Ok(addrs) => {
                    if let Some(ip) = addrs.first() {
                        peers.push(Peer {
                            node: NodeId(machine),
                            addr: SocketAddr::new(IpAddr::V6(*ip), self.port),
                        });
                    }
                }
                Err(e) => tracing::debug!(error = %e, "machine not resolvable yet"),
            }
        }
        peers.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(peers)
    }

    /// Re-discovers every `interval` and publishes changes, until
    /// `shutdown`. A failed lookup keeps the last list: a DNS hiccup must
    /// not tear the mesh down. A lookup in flight is dropped at `shutdown`,
    /// so that a resolver that does not answer cannot hold the node's
    /// shutdown up.
    pub(crate) async fn watch(
        self,
        interval: Duration,
        peers: watch::Sender<Vec<Peer>>,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(interval);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let found = tokio::select! {
                () = shutdown.cancelled() => return,
                found = self.peers() => found,
            };
            match found {
                Ok(found) => {
                    peers.send_if_modified(|known| {
                        let changed = *known != found;
                        if changed {
                            tracing::info!(peers = found.len(), "mesh membership changed");
                            *known = found;
                        }
                        changed
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "peer discovery failed; keeping the last peers")
                }
            }
        }
    }
}

/// Machine ids from a `vms.<app>.internal` listing: comma-separated
/// `<id> <region>` entries.
fn machines(listing: &str) -> Vec<(String, Option<&str>)> {
    listing
        .split(',')
        .filter_map(|entry| {
            let mut words = entry.split_whitespace();
            let id = words.next()?;
            id.chars()
                .all(|c| c.is_ascii_alphanumeric())
                .then(|| (id.to_owned(), words.next()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Canned answers, as Fly's resolver would give them.
    struct StubDns {
        txt: HashMap<String, Vec<String>>,
        aaaa: HashMap<String, Vec<Ipv6Addr>>,
    }

    #[async_trait]
    impl Dns for StubDns {
        async fn txt(&self, name: &str) -> Result<Vec<String>, DiscoveryError> {
            self.txt
                .get(name)
                .cloned()
                .ok_or_else(|| DiscoveryError::Lookup {
                    name: name.into(),
                    reason: "NXDOMAIN".into(),
                })
        }

        async fn aaaa(&self, name: &str) -> Result<Vec<Ipv6Addr>, DiscoveryError> {
            self.aaaa
                .get(name)
                .cloned()
                .ok_or_else(|| DiscoveryError::Lookup {
                    name: name.into(),
                    reason: "NXDOMAIN".into(),
                })
        }
    }

    fn fly(txt: &[&str], hosts: &[(&str, &str)]) -> FlyDiscovery<StubDns> {
        FlyDiscovery {
            dns: StubDns {
                txt: HashMap::from([(
                    "vms.ride-mesh.internal".to_owned(),
                    txt.iter().map(|s| (*s).to_owned()).collect(),
                )]),
                aaaa: hosts
                    .iter()
                    .map(|(id, ip)| {
                        (
                            format!("{id}.vm.ride-mesh.internal"),
                            vec![ip.parse().unwrap()],
                        )
                    })
                    .collect(),
            },
            app: "ride-mesh".into(),
            node: NodeId("148e21ea7e0589".into()),
            port: 9090,
            only: None,
        }
    }

    async fn ids_of(discovery: &FlyDiscovery<StubDns>) -> Vec<String> {
        let peers = discovery.peers().await.unwrap();
        peers.into_iter().map(|p| p.node.0).collect()
    }

    #[tokio::test]
    async fn resolves_every_other_machine_at_its_private_address() {
        // Fly may split a long TXT answer into several strings.
        let discovery = fly(
            &[
                "148e21ea7e0589 sin,3d8d9e5c2e4e38 hkg,",
                "91857500c96e83 bom",
            ],
            &[
                ("148e21ea7e0589", "fdaa:0:1:a7b:1::2"),
                ("3d8d9e5c2e4e38", "fdaa:0:1:a7b:2::3"),
                ("91857500c96e83", "fdaa:0:1:a7b:3::4"),
            ],
        );
        let peers = discovery.peers().await.unwrap();
        assert_eq!(
            peers,
            vec![
                Peer {
                    node: NodeId("3d8d9e5c2e4e38".into()),
                    addr: "[fdaa:0:1:a7b:2::3]:9090".parse().unwrap(),
                },
                Peer {
                    node: NodeId("91857500c96e83".into()),
                    addr: "[fdaa:0:1:a7b:3::4]:9090".parse().unwrap(),
                },
            ]
        );
    }

    #[tokio::test]
    async fn skips_machines_without_an_address_and_junk_entries() {
        let discovery = fly(
            &["3d8d9e5c2e4e38 hkg,gone00000000 sin,bad$id sin, ,"],
            &[("3d8d9e5c2e4e38", "fdaa::5")],
        );
        let ids = ids_of(&discovery).await;
        assert_eq!(ids, ["3d8d9e5c2e4e38"]);
    }

    #[tokio::test]
    async fn only_machines_of_neighbouring_regions_are_dialled() {
        let mut discovery = fly(
            &["3d8d9e5c2e4e38 hkg,91857500c96e83 bom,148e21ea7e0589 sin,5a5a5a5a5a5a5a"],
            &[
                ("3d8d9e5c2e4e38", "fdaa::5"),
                ("91857500c96e83", "fdaa::6"),
                ("5a5a5a5a5a5a5a", "fdaa::7"),
            ],
        );
        discovery.only = Some(["sin".to_owned(), "hkg".to_owned()].into());
        let ids = ids_of(&discovery).await;
        // bom is too far; a machine listed without a region is kept.
        assert_eq!(ids, ["3d8d9e5c2e4e38", "5a5a5a5a5a5a5a"]);
    }

    #[tokio::test]
    async fn a_failed_listing_is_an_error_not_an_empty_mesh() {
        let mut discovery = fly(&[], &[]);
        discovery.app = "other".into();
        assert!(matches!(
            discovery.peers().await,
            Err(DiscoveryError::Lookup { .. })
        ));
    }

    #[tokio::test]
    async fn the_watch_publishes_what_it_finds() {
        let discovery = fly(&["3d8d9e5c2e4e38 hkg"], &[("3d8d9e5c2e4e38", "fdaa::5")]);
        let (publish, mut peers) = watch::channel(Vec::new());
        let stop = CancellationToken::new();
        let watching =
            tokio::spawn(discovery.watch(Duration::from_millis(1), publish, stop.clone()));
        peers.changed().await.unwrap();
        assert_eq!(peers.borrow_and_update().len(), 1);
        stop.cancel();
        watching.await.unwrap();
    }
}
