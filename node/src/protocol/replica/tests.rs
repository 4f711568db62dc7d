//! The replica driven directly, one part at a time: no runtime, no
//! journal, no sockets; time is whatever the test says.

use super::*;
use crate::protocol::codec::decode_intake;
use crate::protocol::intake::{NewDriver, NewRider};
use crate::testkit::{new_replica, replica_config};
use ride_types::api::Position;
use ride_types::ids::Entropy;

const T0: Millis = Millis(1_800_000_000_000);
const SPOT: Position = Position {
    lat: 23.78,
    lon: 90.40,
};

fn replica(node: &str) -> Replica {
    new_replica(replica_config(node))
}

/// Accepts a rider at `SPOT` and journals it, as the group commit does.
fn rider(r: &mut Replica, ids: &Entropy, now: Millis) -> RequestId {
    rider_at(r, ids, now, SPOT)
}

fn rider_at(r: &mut Replica, ids: &Entropy, now: Millis, position: Position) -> RequestId {
    let id = ids.request_id(now);
    let scope = r.own_halo().scope_of(position);
    let rider = NewRider {
        name: "Rumi".into(),
        position,
        destination: position,
    };
    r.accept_rider(id, rider, scope, now);
    r.arrivals_journaled(true);
    id
}

fn driver(r: &mut Replica, ids: &Entropy, now: Millis) -> RequestId {
    driver_at(r, ids, now, SPOT)
}

fn driver_at(r: &mut Replica, ids: &Entropy, now: Millis, position: Position) -> RequestId {
    let id = ids.request_id(now);
    let scope = r.own_halo().scope_of(position);
    let driver = NewDriver {
        name: "Karim".into(),
        car_number: "DHA-1".into(),
        position,
    };
    r.accept_driver(id, driver, scope, now);
    r.arrivals_journaled(true);
    id
}

/// Steps `r` at `now`, running its round if one is due.
fn step(r: &mut Replica, now: Millis) {
    if let Some(input) = r.handle_timeout(now).expect("a step") {
        let pairs = input.run();
        r.complete_round(&input, &pairs, now).expect("a round");
    }
}

/// Exchanges sync messages between `a` and `b` until neither has more.
fn sync(a: &mut Replica, b: &mut Replica, now: Millis) {
    for _ in 0..50 {
        let to_b = a.outgoing(b.node(), now).expect("a's messages");
        let to_a = b.outgoing(a.node(), now).expect("b's messages");
        if to_b.is_empty() && to_a.is_empty() {
            return;
        }
        for m in to_b {
            b.receive(&a.node().clone(), m, now).expect("b takes them");
        }
        for m in to_a {
            a.receive(&b.node().clone(), m, now).expect("a takes them");
        }
    }
    panic!("the two replicas never stopped sending");
}

fn peers(a: &mut Replica, b: &mut Replica) {
    a.peer_joined(&b.node().clone(), "dhaka")
        .expect("b says hello");
    b.peer_joined(&a.node().clone(), "dhaka")
        .expect("a says hello");
}

#[test]
fn accepted_requests_are_framed_per_epoch_and_forgotten_if_not_appended() {
    let (mut r, ids) = (replica("n1"), Entropy::seeded(1));
    let scope = r.own_halo().scope_of(SPOT);
    let at = |ms| T0.plus(ms);
    let mut accepted = Vec::new();
    for ms in [0, 10, 1_000] {
        let id = ids.request_id(at(ms));
        let new = NewRider {
            name: "Rumi".into(),
            position: SPOT,
            destination: SPOT,
        };
        r.accept_rider(id, new, scope.clone(), at(ms));
        accepted.push(id);
    }
    let frames = r.arrivals_to_journal();
    let epochs: Vec<u64> = frames.iter().map(|(e, _)| *e).collect();
    assert_eq!(epochs, [T0.0 / 1_000, T0.0 / 1_000 + 1]);
    assert_eq!(decode_intake(&frames[0].1).unwrap().len(), 2);
    assert!(accepted.iter().all(|id| r.is_pending(id, at(1_000))));
    // The append failed: the runtime refuses them, and so does the replica.
    r.arrivals_journaled(false);
    assert!(accepted.iter().all(|id| !r.knows(id)));
    assert_eq!(r.pending_counts(at(1_000)), (0, 0));
}

#[test]
fn a_round_commits_a_pair_one_owner_holds_and_queues_the_change() {
    let (mut r, ids) = (replica("n1"), Entropy::seeded(2));
    let (rider_id, driver_id) = (rider(&mut r, &ids, T0), driver(&mut r, &ids, T0));
    step(&mut r, T0);
    let commits = r.take_commits();
    assert_eq!(commits.len(), 1);
    assert_eq!(
        (commits[0].record.rider, commits[0].record.driver),
        (rider_id, driver_id)
    );
    assert!(!r.is_pending(&rider_id, T0) && !r.is_pending(&driver_id, T0));
    let persist = r.take_persist();
    assert!(matches!(persist.as_slice(), [Persist::Changes(c), ..] if !c.is_empty()));
    assert!(r.take_persist().is_empty(), "taken once");
}

#[test]
fn documents_past_use_are_dropped_and_the_drop_is_queued_for_the_disk() {
    let (mut r, ids) = (replica("n1"), Entropy::seeded(3));
    rider(&mut r, &ids, T0);
    driver(&mut r, &ids, T0);
    step(&mut r, T0);
    assert!(r.document_count() > 0);
    r.take_persist();
    let later = T0.plus(2 * r.config.retain_ms());
    step(&mut r, later);
    assert_eq!(r.document_count(), 0);
    let persist = r.take_persist();
    let dropped = persist
        .iter()
        .position(|p| matches!(p, Persist::Dropped(_)));
    let removed = persist.iter().position(|p| matches!(p, Persist::Remove(_)));
    assert!(
        matches!((dropped, removed), (Some(d), Some(r)) if d < r),
        "the dropped set is kept before any file goes: {persist:?}"
    );
}

#[test]
fn two_replicas_in_one_region_converge_on_what_they_hold() {
    let ids = Entropy::seeded(4);
    let (mut a, mut b) = (replica("a"), replica("b"));
    peers(&mut a, &mut b);
    let id = rider(&mut a, &ids, T0);
    sync(&mut a, &mut b, T0.plus(100));
    assert!(b.knows(&id) && b.is_pending(&id, T0.plus(100)));
    assert!(a.is_synced_with(b.node()) && b.is_synced_with(a.node()));
    assert_eq!(a.digest(), b.digest());
}

#[test]
fn a_driver_of_another_owner_is_claimed_handed_over_and_committed_once() {
    let ids = Entropy::seeded(5);
    let (mut a, mut b) = (replica("a"), replica("b"));
    peers(&mut a, &mut b);
    let rider_id = rider(&mut a, &ids, T0);
    let driver_id = driver(&mut b, &ids, T0);
    sync(&mut a, &mut b, T0);
    // a's round pairs its rider with b's driver: a claim, not a commit.
    step(&mut a, T0.plus(10));
    assert!(a.take_commits().is_empty());
    assert_eq!(a.open_claims(T0.plus(10)), 1);
    sync(&mut a, &mut b, T0.plus(20));
    // b answers the claim with a transfer; a then commits alone.
    step(&mut b, T0.plus(30));
    sync(&mut a, &mut b, T0.plus(40));
    step(&mut a, T0.plus(50));
    let commits = a.take_commits();
    assert_eq!(commits.len(), 1);
    assert_eq!(
        (commits[0].record.rider, commits[0].record.driver),
        (rider_id, driver_id)
    );
    sync(&mut a, &mut b, T0.plus(60));
    assert_eq!(b.take_commits().len(), 1, "b learns the one commit");
    assert_eq!(a.digest(), b.digest());
}

/// The shipped regions: north (down in these tests), the region that adopts
/// it, and the third; with a replica of each, joined to one another.
struct ThreeRegions {
    north: RegionIndex,
    replicas: Vec<Replica>,
}

fn three_regions() -> ThreeRegions {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../regions");
    let regions = ride_types::regions::Regions::load_dir(&dir).expect("shipped regions");
    let layout = Arc::new(Layout::new(&regions, 5.0));
    let north = layout.index_of("dhaka-north").expect("shipped");
    let adopter = layout
        .adopter_of(north, RegionSet::from_iter([north]))
        .expect("an adopter");
    let third = (0..3)
        .find(|r| *r != north && *r != adopter)
        .expect("three");
    let mut replicas: Vec<Replica> = [north, adopter, third]
        .iter()
        .map(|r| {
            let id = layout.id_of(*r).expect("indexed").to_owned();
            new_replica(ReplicaConfig {
                region: id.clone(),
                layout: Arc::clone(&layout),
                ..replica_config(&id)
            })
        })
        .collect();
    for i in 0..3 {
        for j in 0..3 {
            if i != j {
                let (peer, region) = (replicas[j].node().clone(), replicas[j].region().to_owned());
                replicas[i].peer_joined(&peer, &region).expect("neighbours");
            }
        }
    }
    ThreeRegions { north, replicas }
}

/// A point of north's area that the third region scopes to north and
/// itself only: the adopter holds what is there only while it serves north.
fn beyond_the_adopter(t: &ThreeRegions) -> Position {
    let third = &t.replicas[2];
    let expected = Scope::of([t.north, third.own_region()]);
    (0..60)
        .flat_map(|i| (0..60).map(move |j| (i, j)))
        .map(|(i, j)| Position {
            lat: 23.70 + f64::from(i) * 0.004,
            lon: 90.30 + f64::from(j) * 0.004,
        })
        .find(|p| third.own_halo().scope_of(*p) == expected)
        .expect("such a point in the shipped map")
}

fn pair_of(replicas: &mut [Replica], a: usize, b: usize) -> (&mut Replica, &mut Replica) {
    let (low, high) = replicas.split_at_mut(b.max(a));
    if a < b {
        (&mut low[a], &mut high[0])
    } else {
        (&mut high[0], &mut low[b])
    }
}

#[test]
fn an_adopter_is_offered_the_documents_of_the_region_it_serves_and_digests_still_pair() {
    let ids = Entropy::seeded(6);
    let mut t = three_regions();
    let spot = beyond_the_adopter(&t);
    let driver_id = driver_at(&mut t.replicas[2], &ids, T0, spot);
    let (adopter, third) = pair_of(&mut t.replicas, 1, 2);
    sync(adopter, third, T0);
    assert!(
        !adopter.knows(&driver_id),
        "not the adopter's before it serves north"
    );

    adopter.set_availability(
        RegionSet::from_iter([t.north]),
        RegionSet::from_iter([t.north]),
    );
    sync(adopter, third, T0.plus(10));
    assert!(
        adopter.knows(&driver_id),
        "offered once the adopter serves north"
    );
    let (a_id, c_id) = (adopter.region().to_owned(), third.region().to_owned());
    assert_eq!(adopter.digests()[&c_id], third.digests()[&a_id]);

    // A rider the adopter accepts for north's area is scoped to north, and
    // matched with the third region's driver there.
    let rider_id = rider_at(adopter, &ids, T0.plus(20), spot);
    step(adopter, T0.plus(30));
    assert_eq!(adopter.open_claims(T0.plus(30)), 1);
    sync(adopter, third, T0.plus(40));
    step(third, T0.plus(50));
    sync(adopter, third, T0.plus(60));
    step(adopter, T0.plus(70));
    let commits = adopter.take_commits();
    assert_eq!(commits.len(), 1);
    assert_eq!(
        (commits[0].record.rider, commits[0].record.driver),
        (rider_id, driver_id)
    );

    // Handed back: it says so, and the pair digests agree again.
    adopter.set_availability(RegionSet::EMPTY, RegionSet::EMPTY);
    sync(adopter, third, T0.plus(80));
    assert_eq!(adopter.digests()[&c_id], third.digests()[&a_id]);
}

#[test]
fn requests_whose_owner_is_down_are_left_out_of_rounds() {
    let ids = Entropy::seeded(7);
    let mut t = three_regions();
    let spot = beyond_the_adopter(&t);
    driver_at(&mut t.replicas[0], &ids, T0, spot);
    let (north, third) = pair_of(&mut t.replicas, 0, 2);
    sync(north, third, T0);
    rider_at(third, &ids, T0.plus(10), spot);
    // North is down: the third region's rider waits, no claim that could
    // only time out.
    third.set_availability(RegionSet::EMPTY, RegionSet::from_iter([t.north]));
    step(third, T0.plus(20));
    assert_eq!(third.open_claims(T0.plus(20)), 0);
    assert_eq!(third.stats().candidates_skipped, 1);
    // Back: the claim goes out.
    third.set_availability(RegionSet::EMPTY, RegionSet::EMPTY);
    step(third, T0.plus(30));
    assert_eq!(third.open_claims(T0.plus(30)), 1);
}

#[test]
fn a_peer_that_says_it_serves_a_region_outside_the_layout_is_refused() {
    let mut t = three_regions();
    let from = t.replicas[1].node().clone();
    let bogus = PeerMessage::V1(PeerMessageV1::Serving {
        regions: Scope::of([0, 7]),
    });
    let refused = t.replicas[0].receive(&from, bogus, T0);
    assert!(matches!(
        refused,
        Err(ReplicaError::ServesUnknownRegion { region: 7, .. })
    ));
}
