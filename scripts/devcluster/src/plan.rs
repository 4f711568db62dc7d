//! The plan of a mesh: which nodes, where each listens, and, on a simulated
//! WAN, which relay each node dials for each peer and with what delay.
//! Made once (`devcluster plan`) and kept in the state file, so a node
//! restarted later gets the same addresses.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::ports::Listen;
use crate::process::output;

/// A region as the node reads it from the region files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Region {
    pub id: String,
    pub http: SocketAddr,
    pub quic: SocketAddr,
}

/// One node of the mesh.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The region id with one node per region, else `<region>-<k>`.
    pub id: String,
    pub region: String,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub quic: SocketAddr,
}

/// The one-way delay between two regions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    pub a: String,
    pub b: String,
    /// Great-circle distance between the regions' centroids.
    pub km: f64,
    /// The delay the distance gives (see [`delay_ms`]).
    pub computed_ms: f64,
    /// What the relays use: `--wan-delay` if given, else the computed delay
    /// rounded and raised to `min_ms` if below it.
    pub delay: String,
}

/// A `node wan-relay`: node `from` reaches node `to` through it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Relay {
    pub from: usize,
    pub to: usize,
    pub listen: SocketAddr,
    pub delay: String,
}

/// How a simulated WAN behaves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WanOptions {
    /// One delay for every pair instead of the computed ones.
    pub delay: Option<String>,
    pub jitter: String,
    pub loss: String,
    /// The least delay a computed one is raised to: the shipped regions
    /// are a few km apart, which alone would be a LAN.
    pub min_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Wan {
    pub options: WanOptions,
    pub pairs: Vec<Pair>,
    pub relays: Vec<Relay>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub regions: Vec<Region>,
    /// Nodes per region; above 1, nginx listens on the region's HTTP address.
    pub replicas: usize,
    pub nodes: Vec<Node>,
    pub wan: Option<Wan>,
}

/// `(a, b, km)`: the great-circle distance between two regions' centroids.
pub type Distance = (String, String, f64);

/// The computed one-way delay for `km` between centroids: 5 us/km in
/// fibre, doubled for real routes, plus 10 ms for a few hops.
pub fn delay_ms(km: f64) -> f64 {
    km * 5.0 * 2.0 / 1000.0 + 10.0
}

/// The whole milliseconds a relay uses for `computed`: rounded half to even
/// (as the shell version's awk did), at least `min_ms`.
pub fn used_ms(computed: f64, min_ms: u64) -> u64 {
    (computed.round_ties_even() as u64).max(min_ms)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

impl Plan {
    /// Lays out the mesh. `admin_offset`: with one node per region, a
    /// node's operator listener is its HTTP port plus this (100: the north's
    /// map is on :8181); replicas take free ports, as do relays, from
    /// `free(tcp, udp)`. `distances` are `(a, b, km)` per pair of regions.
    pub fn build(
        regions: Vec<Region>,
        replicas: usize,
        admin_offset: u16,
        wan: Option<(WanOptions, Vec<Distance>)>,
        free: &mut dyn FnMut(usize, usize) -> Result<Vec<u16>, Error>,
    ) -> Result<Self, Error> {
        let mut nodes = Vec::new();
        if replicas == 1 {
            for r in &regions {
                let mut admin = r.http;
                admin.set_port(r.http.port() + admin_offset);
                nodes.push(Node {
                    id: r.id.clone(),
                    region: r.id.clone(),
                    http: r.http,
                    admin,
                    quic: r.quic,
                });
            }
        } else {
            // The region's own HTTP port belongs to nginx.
            let n = regions.len() * replicas;
            let ports = free(2 * n, n)?;
            let slots = regions
                .iter()
                .flat_map(|r| (1..=replicas).map(move |k| (r, k)));
            for (i, (r, k)) in slots.enumerate() {
                nodes.push(Node {
                    id: format!("{}-{k}", r.id),
                    region: r.id.clone(),
                    http: loopback(ports[i]),
                    admin: loopback(ports[n + i]),
                    quic: loopback(ports[2 * n + i]),
                });
            }
        }
        let wan = match wan {
            None => None,
            Some((options, distances)) => Some(Self::wan(&nodes, options, distances, free)?),
        };
        Ok(Self {
            regions,
            replicas,
            nodes,
            wan,
        })
    }

    fn wan(
        nodes: &[Node],
        options: WanOptions,
        distances: Vec<Distance>,
        free: &mut dyn FnMut(usize, usize) -> Result<Vec<u16>, Error>,
    ) -> Result<Wan, Error> {
        let pairs: Vec<Pair> = distances
            .into_iter()
            .map(|(a, b, km)| {
                let computed_ms = delay_ms(km);
                let delay = options
                    .delay
                    .clone()
                    .unwrap_or_else(|| format!("{}ms", used_ms(computed_ms, options.min_ms)));
                Pair {
                    a,
                    b,
                    km,
                    computed_ms,
                    delay,
                }
            })
            .collect();
        let crossings: Vec<(usize, usize)> = (0..nodes.len())
            .flat_map(|i| (0..nodes.len()).map(move |j| (i, j)))
            .filter(|&(i, j)| nodes[i].region != nodes[j].region)
            .collect();
        let ports = free(0, crossings.len())?;
        let mut relays = Vec::new();
        for (&(from, to), port) in crossings.iter().zip(ports) {
            let (a, b) = (&nodes[from].region, &nodes[to].region);
            let pair = pairs
                .iter()
                .find(|p| (&p.a, &p.b) == (a, b) || (&p.a, &p.b) == (b, a))
                .ok_or_else(|| Error::Parse {
                    what: "the region distances".into(),
                    detail: format!("no distance between {a} and {b}"),
                })?;
            relays.push(Relay {
                from,
                to,
                listen: loopback(port),
                delay: pair.delay.clone(),
            });
        }
        Ok(Wan {
            options,
            pairs,
            relays,
        })
    }

    /// The address node `from` dials for node `to`: its relay on a WAN,
    /// else the node itself.
    pub fn peer_addr(&self, from: usize, to: usize) -> SocketAddr {
        self.wan
            .iter()
            .flat_map(|w| &w.relays)
            .find(|r| (r.from, r.to) == (from, to))
            .map_or(self.nodes[to].quic, |r| r.listen)
    }

    /// What must be free before the mesh starts: the regions' HTTP (and,
    /// with one node per region, QUIC) addresses and every admin listener.
    /// Catches a second mesh (scripts/mesh.sh while chaos.sh runs).
    pub fn fixed_listeners(&self) -> Vec<Listen> {
        let mut listen = Vec::new();
        for r in &self.regions {
            listen.push(Listen::Tcp(r.http));
            if self.replicas == 1 {
                listen.push(Listen::Udp(r.quic));
            }
        }
        listen.extend(self.nodes.iter().map(|n| Listen::Tcp(n.admin)));
        listen
    }

    pub fn node_index(&self, id: &str) -> Result<usize, Error> {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .ok_or_else(|| Error::UnknownNode(id.into()))
    }
}

/// The regions in `regions_dir`, as `node_bin` reads them (its checks, its
/// id order).
pub fn regions(node_bin: &Path, regions_dir: &Path) -> Result<Vec<Region>, Error> {
    let text = output(
        Command::new(node_bin)
            .args(["regions", "list", "--fields", "id,http,quic", "--regions"])
            .arg(regions_dir),
    )?;
    text.lines()
        .map(|line| {
            let bad = |detail: String| Error::Parse {
                what: format!("`node regions list` line {line:?}"),
                detail,
            };
            let fields: Vec<&str> = line.split('\t').collect();
            let [id, http, quic] = fields[..] else {
                return Err(bad("expected id, http and quic".into()));
            };
            Ok(Region {
                id: id.into(),
                http: http.parse().map_err(|e| bad(format!("{e}")))?,
                quic: quic.parse().map_err(|e| bad(format!("{e}")))?,
            })
        })
        .collect()
}

/// `(a, b, km)` for every pair of regions, from `node regions distances`.
pub fn distances(node_bin: &Path, regions_dir: &Path) -> Result<Vec<Distance>, Error> {
    let text = output(
        Command::new(node_bin)
            .args(["regions", "distances", "--regions"])
            .arg(regions_dir),
    )?;
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            match fields[..] {
                [a, b, km] => km
                    .parse()
                    .map(|km| (a.to_string(), b.to_string(), km))
                    .map_err(|e| format!("{e}")),
                _ => Err("expected a, b and km".into()),
            }
            .map_err(|detail| Error::Parse {
                what: format!("`node regions distances` line {line:?}"),
                detail,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: &str, port: u16) -> Region {
        Region {
            id: id.into(),
            http: loopback(port),
            quic: loopback(port + 10),
        }
    }

    fn counting() -> impl FnMut(usize, usize) -> Result<Vec<u16>, Error> {
        let mut next = 40000;
        move |tcp, udp| {
            let ports = (next..next + (tcp + udp) as u16).collect();
            next += (tcp + udp) as u16;
            Ok(ports)
        }
    }

    fn wan(delay: Option<&str>) -> WanOptions {
        WanOptions {
            delay: delay.map(Into::into),
            jitter: "5ms".into(),
            loss: "0.01".into(),
            min_ms: 20,
        }
    }

    #[test]
    fn delays_grow_with_distance_round_half_to_even_and_have_a_floor() {
        assert_eq!(delay_ms(0.0), 10.0);
        assert_eq!(delay_ms(1000.0), 20.0);
        assert_eq!(used_ms(delay_ms(1000.0), 20), 20);
        assert_eq!(used_ms(delay_ms(5.0), 20), 20, "a few km: the minimum");
        assert_eq!(used_ms(delay_ms(8050.0), 20), 90, "90.5 rounds to even");
        assert_eq!(used_ms(delay_ms(8150.0), 20), 92, "91.5 rounds to even");
    }

    #[test]
    fn one_node_per_region_listens_on_the_region_and_admin_at_the_offset() {
        let regions = vec![region("a", 8081), region("b", 8082)];
        let plan = Plan::build(regions, 1, 100, None, &mut counting()).unwrap();
        let ids: Vec<_> = plan.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(plan.nodes[1].http, loopback(8082));
        assert_eq!(plan.nodes[1].admin, loopback(8182));
        assert_eq!(plan.nodes[1].quic, loopback(8092));
        assert_eq!(plan.peer_addr(0, 1), loopback(8092));
        assert!(
            plan.fixed_listeners()
                .contains(&Listen::Udp(loopback(8091)))
        );
    }

    #[test]
    fn replicas_take_distinct_free_ports_and_leave_the_region_to_nginx() {
        let regions = vec![region("a", 8081), region("b", 8082)];
        let plan = Plan::build(regions, 2, 100, None, &mut counting()).unwrap();
        let ids: Vec<_> = plan.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["a-1", "a-2", "b-1", "b-2"]);
        let mut ports: Vec<u16> = plan
            .nodes
            .iter()
            .flat_map(|n| [n.http.port(), n.admin.port(), n.quic.port()])
            .collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 12);
        assert!(ports.iter().all(|&p| p >= 40000));
        assert!(
            !plan
                .fixed_listeners()
                .iter()
                .any(|l| matches!(l, Listen::Udp(_))),
            "replicas' QUIC ports are free ones, not the region's"
        );
    }

    #[test]
    fn a_wan_has_one_relay_per_ordered_cross_region_pair_with_the_pair_delay() {
        let regions = vec![region("a", 8081), region("b", 8082), region("c", 8083)];
        let distances = vec![
            ("a".into(), "b".into(), 5.0),
            ("a".into(), "c".into(), 8050.0),
            ("b".into(), "c".into(), 3000.0),
        ];
        let plan = Plan::build(
            regions,
            2,
            100,
            Some((wan(None), distances)),
            &mut counting(),
        )
        .unwrap();
        let wan = plan.wan.as_ref().unwrap();
        // 6 nodes, each reaching the 4 in other regions.
        assert_eq!(wan.relays.len(), 24);
        let delays: Vec<_> = wan.pairs.iter().map(|p| p.delay.as_str()).collect();
        assert_eq!(delays, ["20ms", "90ms", "40ms"]);
        // Node 5 (c-2) dials node 0 (a-1) through a relay with a<->c's delay,
        // and its own region's node directly.
        let relay = wan
            .relays
            .iter()
            .find(|r| (r.from, r.to) == (5, 0))
            .unwrap();
        assert_eq!(relay.delay, "90ms");
        assert_eq!(plan.peer_addr(5, 0), relay.listen);
        assert_eq!(plan.peer_addr(5, 4), plan.nodes[4].quic);
    }

    #[test]
    fn a_fixed_wan_delay_applies_to_every_pair() {
        let regions = vec![region("a", 8081), region("b", 8082)];
        let distances = vec![("a".into(), "b".into(), 8050.0)];
        let options = wan(Some("150ms"));
        let plan =
            Plan::build(regions, 1, 100, Some((options, distances)), &mut counting()).unwrap();
        let wan = plan.wan.unwrap();
        assert!(wan.relays.iter().all(|r| r.delay == "150ms"));
        assert_eq!(wan.relays.len(), 2);
    }
}
