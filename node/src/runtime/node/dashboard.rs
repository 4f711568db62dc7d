//! The dashboard's frame, drawn from the core: pending requests, recent
//! matches, open claims and a panel per node. It lives apart from the
//! protocol because nothing in it feeds a decision; it only reads the state
//! under the core's lock, once per frame.

use std::collections::BTreeMap;

use super::peers::own_status;
use super::{Node, State};
use crate::protocol::message::PeerStatus;
use ride_types::api::{DashboardClaim, DashboardFrame, DashboardMatch, NodePanel, Position};
use ride_types::clock::Millis;
use ride_types::decimals;
use ride_types::ids::NodeId;

impl Node {
    /// What the dashboard draws: pending requests, the newest `max_matches`
    /// matches, open claims, and every node's panel.
    pub(crate) fn dashboard(&self, now: Millis, max_matches: usize) -> DashboardFrame {
        let mut state = self.lock();
        let own = own_status(&mut state, now, None);
        let shared = state.replica.digests();
        let state = &*state;
        let replica = &state.replica;
        let region_of = |owner: &NodeId| -> String {
            if owner == replica.node() {
                replica.region().to_owned()
            } else {
                let node = owner.node_of_owner();
                state.board.region_of(&node).unwrap_or("?").to_owned()
            }
        };
        let mut owners: Vec<String> = Vec::new();
        let mut owner_index = |owner: &NodeId| -> u16 {
            let region = region_of(owner);
            let index = owners.iter().position(|r| *r == region).unwrap_or_else(|| {
                owners.push(region);
                owners.len() - 1
            });
            u16::try_from(index).unwrap_or(u16::MAX)
        };
        let riders = replica
            .pending_riders(now)
            .map(|r| point(r.record.position, owner_index(&r.owner)))
            .collect();
        let drivers = replica
            .pending_drivers(now)
            .map(|d| point(d.record.position, owner_index(&d.owner)))
            .collect();
        let matches = state
            .matches
            .recent(max_matches)
            .map(|m| DashboardMatch {
                rider: lat_lon(m.rider.position),
                driver: lat_lon(m.driver.position),
                region: m.region.clone(),
                cross_border: region_of(&m.rider_owner) != region_of(&m.driver_owner),
            })
            .collect();
        let ledger = replica.ledger();
        let claims = replica
            .waiting_claims(now)
            .filter_map(|c| {
                Some(DashboardClaim {
                    rider: lat_lon(ledger.rider(&c.record.rider)?.record.position),
                    driver: lat_lon(ledger.driver(&c.record.driver)?.record.position),
                })
            })
            .collect();
        let me = replica.node().node_of_owner();
        let mut nodes = vec![panel(&me, &own, true, true, None, None, own.digest)];
        nodes.extend(self.peer_panels(state, &shared));
        DashboardFrame {
            node: me.0,
            region: replica.region().to_owned(),
            at_ms: now.0,
            owners,
            riders,
            drivers,
            matches,
            claims,
            nodes,
            serving: self.availability.serving_ids(),
            adopters: self.availability.adopter_ids(),
        }
    }
}

impl Node {
    /// A panel per peer on the board; a peer not heard from yet is drawn
    /// with an unknown region.
    fn peer_panels<'a>(
        &'a self,
        state: &'a State,
        shared: &'a BTreeMap<String, u64>,
    ) -> impl Iterator<Item = NodePanel> + 'a {
        state.board.iter().map(move |(peer, view)| {
            let status = view.status.clone().unwrap_or_else(|| PeerStatus {
                region: "?".into(),
                ..PeerStatus::default()
            });
            let clock = view.clock_offset_ms.map(|o| (o, self.is_skewed(Some(o))));
            let with_it = state.replica.region_of_peer(peer).unwrap_or(&status.region);
            panel(
                peer,
                &status,
                false,
                view.connected,
                view.lag_percentiles(),
                clock,
                shared.get(with_it).copied().unwrap_or(0),
            )
        })
    }
}

fn panel(
    node: &NodeId,
    status: &PeerStatus,
    this_node: bool,
    reachable: bool,
    lags: Option<(f64, f64)>,
    clock: Option<(f64, bool)>,
    shared_digest: u64,
) -> NodePanel {
    NodePanel {
        node: node.0.clone(),
        region: status.region.clone(),
        this_node,
        reachable,
        lag_p50_ms: lags.map(|l| l.0),
        lag_p99_ms: lags.map(|l| l.1),
        requests_per_s: decimals::round(status.requests_per_s, 1),
        matches_per_s: decimals::round(status.matches_per_s, 1),
        documents: status.documents,
        document_bytes: Some(status.record_bytes),
        digest: format!("{:016x}", status.digest),
        shared_digest: format!("{shared_digest:016x}"),
        ready: status.ready,
        clock_offset_ms: clock.map(|c| decimals::round(c.0, 1)),
        clock_skewed: clock.is_some_and(|c| c.1),
    }
}

/// Five decimals of a degree is about a metre: plenty for a map.
fn lat_lon(p: Position) -> (f64, f64) {
    (decimals::round(p.lat, 5), decimals::round(p.lon, 5))
}

fn point(p: Position, owner: u16) -> (f64, f64, u16) {
    let (lat, lon) = lat_lon(p);
    (lat, lon, owner)
}
