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
    let id = ids.request_id(now);
    let scope = r.own_halo().scope_of(SPOT);
    let rider = NewRider {
        name: "Rumi".into(),
        position: SPOT,
        destination: SPOT,
    };
    r.accept_rider(id, rider, scope, now);
    r.arrivals_journaled(true);
    id
}

fn driver(r: &mut Replica, ids: &Entropy, now: Millis) -> RequestId {
    let id = ids.request_id(now);
    let scope = r.own_halo().scope_of(SPOT);
    let driver = NewDriver {
        name: "Karim".into(),
        car_number: "DHA-1".into(),
        position: SPOT,
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
