use super::*;
use crate::protocol::intake::{NewDriver, NewRider};
use crate::runtime::recent_matches::Retention;
use crate::testkit::{TestCore, replica_config};
use ride_types::api::Position;

fn core() -> TestCore {
    TestCore::new(
        replica_config("n1"),
        Retention {
            ms: 60_000,
            max_matches: 10_000,
        },
    )
}

fn add_pair(core: &Node) -> (RequestId, RequestId) {
    let p = Position {
        lat: 23.8,
        lon: 90.4,
    };
    let now = Millis::now();
    let (r, _) = core.submit_rider(
        NewRider {
            name: "r".into(),
            position: p,
            destination: p,
        },
        now,
    );
    let (d, _) = core.submit_driver(
        NewDriver {
            name: "d".into(),
            car_number: "C-1".into(),
            position: p,
        },
        now,
    );
    core.commit_arrivals();
    (r.id, d.id)
}

fn run_round(core: &Node) -> Vec<Arc<Match>> {
    core.step(Millis::now()).unwrap()
}

#[test]
fn a_match_reaches_both_watchers_once() {
    let (hub, core) = (Hub::default(), core());
    let (rider, driver) = add_pair(&core);
    let (rs, mut rider_rx) = hub.connect();
    let (ds, mut driver_rx) = hub.connect();
    hub.subscribe(rs, &[rider.0], &core, Millis::now());
    hub.subscribe(ds, &[driver.0], &core, Millis::now());
    let made = run_round(&core);
    assert_eq!(hub.publish(&made), 2);
    assert!(rider_rx.try_recv().unwrap().contains(&rider.0.to_string()));
    assert!(
        driver_rx
            .try_recv()
            .unwrap()
            .contains(&driver.0.to_string())
    );
    assert_eq!(hub.publish(&made), 0, "delivered twice");
}

/// A match learnt again (a reconnect, another peer) and a socket that
/// watches both sides of it, or asks again: told once.
#[test]
fn commits_learnt_twice_are_told_once() {
    let (hub, core) = (Hub::default(), core());
    let (rider, driver) = add_pair(&core);
    let (s, mut rx) = hub.connect();
    hub.subscribe(s, &[rider.0, driver.0], &core, Millis::now());
    let made = run_round(&core);
    assert_eq!(made.len(), 1);
    assert_eq!(hub.publish(&made), 1, "one socket, one notice");
    hub.subscribe(s, &[rider.0, driver.0, rider.0], &core, Millis::now());
    assert_eq!(hub.publish(&made), 0);
    assert!(rx.try_recv().is_ok());
    assert!(rx.try_recv().is_err(), "told twice");
    assert!(run_round(&core).is_empty(), "a commit learnt twice");
}

#[test]
fn subscribing_after_the_match_still_delivers_it() {
    let (hub, core) = (Hub::default(), core());
    let (rider, _) = add_pair(&core);
    let made = run_round(&core);
    assert_eq!(hub.publish(&made), 0);
    let (s, mut rx) = hub.connect();
    let outcome = hub.subscribe(s, &[rider.0], &core, Millis::now());
    assert_eq!(outcome.accepted, vec![rider.0]);
    assert!(rx.try_recv().unwrap().contains(r#""type":"match""#));
    assert_eq!(hub.publish(&made), 0, "the late subscriber got it twice");
}

#[test]
fn unknown_ids_are_reported_not_watched() {
    let (hub, core) = (Hub::default(), core());
    let (s, _rx) = hub.connect();
    // Not UUIDv7, and a UUIDv7 from long ago: neither can still arrive.
    let strangers = [
        Uuid::from_u128(42),
        Uuid::from_u128(0x0100_0000_0000_7000_8000_0000_0000_0000),
    ];
    let outcome = hub.subscribe(s, &strangers, &core, Millis::now());
    assert_eq!(outcome.unknown, strangers.to_vec());
    assert!(outcome.accepted.is_empty());
    assert!(hub.watched().is_empty());
}

/// Behind a load balancer, the subscription may reach a replica before
/// the request does: a fresh id is watched, and its match delivered
/// once the request arrives.
#[test]
fn a_fresh_unknown_id_is_watched_until_it_arrives() {
    let (hub, core) = (Hub::default(), core());
    let (s, mut rx) = hub.connect();
    let early = RequestId::generate();
    let outcome = hub.subscribe(s, &[early.0], &core, Millis::now());
    assert_eq!(outcome.accepted, vec![early.0]);
    assert_eq!(hub.watched(), vec![early]);
    // The request arrives (here: a match naming it as its rider).
    add_pair(&core);
    let mut arrived = (*run_round(&core)[0]).clone();
    arrived.rider.id = early;
    assert_eq!(hub.publish(&[Arc::new(arrived)]), 1);
    assert!(rx.try_recv().unwrap().contains(r#""type":"match""#));
}

#[test]
fn a_slow_socket_is_cut_off_without_blocking_others() {
    let (hub, core) = (Hub::default(), core());
    let (slow, _never_read) = hub.connect();
    let (fast, mut fast_rx) = hub.connect();
    for _ in 0..OUTBOX_DEPTH + 5 {
        let (rider, driver) = add_pair(&core);
        hub.subscribe(slow, &[rider.0], &core, Millis::now());
        hub.subscribe(fast, &[driver.0], &core, Millis::now());
        let made = run_round(&core);
        hub.publish(&made);
        assert!(fast_rx.try_recv().is_ok());
    }
    assert_eq!(hub.connections(), 1, "the slow socket is still connected");
}

#[test]
fn forgotten_ids_are_no_longer_watched() {
    let (hub, core) = (Hub::default(), core());
    let (rider, _) = add_pair(&core);
    let (s, _rx) = hub.connect();
    hub.subscribe(s, &[rider.0], &core, Millis::now());
    assert_eq!(hub.watched(), vec![rider]);
    hub.forget(&[rider]);
    assert!(hub.watched().is_empty());
    assert!(hub.registry.lock().sockets[&s].watching.is_empty());
}
