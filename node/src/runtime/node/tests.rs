use super::*;
use crate::protocol::replica::{Hooks, MIN_REQUEST_TTL_MS};
use crate::testkit::{TestCore, replica_config};
use ride_types::api::Position;

const TTL: u64 = 30_000;
const RETENTION: Retention = Retention {
    ms: 60_000,
    max_matches: 1_000,
};
const MAX_SKEW: Duration = Duration::from_secs(1);

fn core() -> TestCore {
    TestCore::new(
        ReplicaConfig {
            request_ttl_ms: TTL,
            ..replica_config("dhaka-1")
        },
        RETENTION,
    )
}

fn rider(lat: f64) -> NewRider {
    NewRider {
        name: "Rumi".into(),
        position: Position { lat, lon: 90.4 },
        destination: Position {
            lat: 23.9,
            lon: 90.4,
        },
    }
}

fn driver(lat: f64) -> NewDriver {
    NewDriver {
        name: "Karim".into(),
        car_number: "DHA-1".into(),
        position: Position { lat, lon: 90.4 },
    }
}

#[test]
fn a_rider_and_a_driver_are_matched_once_with_the_fare() {
    let core = core();
    let t0 = Millis(1_800_000_000_000);
    let r = core.submit_rider(rider(23.8), t0).0;
    let d = core.submit_driver(driver(23.81), t0).0;
    core.commit_arrivals();
    assert_eq!(r.expires_at, t0.plus(TTL));
    assert_eq!(core.status(&r.id, t0), Status::Pending);

    let made = core.step(t0.plus(1_000)).unwrap();
    assert_eq!(made.len(), 1);
    let m = &made[0];
    assert_eq!((m.rider.id, m.driver.id), (r.id, d.id));
    assert!((m.trip_km - 11.1195).abs() < 1e-3, "{}", m.trip_km);
    assert_eq!(m.fare_taka, 22.24);
    assert_eq!(m.region, "dhaka");
    assert!(matches!(
        core.status(&d.id, t0.plus(1_000)),
        Status::Matched(_)
    ));
    assert!(
        core.step(t0.plus(2_000)).unwrap().is_empty(),
        "matched twice"
    );
}

#[test]
fn a_commit_not_yet_told_keeps_its_rider_and_driver_watched() {
    let core = core();
    let t0 = Millis(1_800_000_000_000);
    let r = core.submit_rider(rider(23.8), t0).0;
    let d = core.submit_driver(driver(23.8), t0).0;
    core.commit_arrivals();
    // The round commits; the step has not told anyone yet.
    {
        let mut state = core.lock();
        let input = state.replica.handle_timeout(t0).unwrap().expect("a round");
        let pairs = input.run();
        state.replica.complete_round(&input, &pairs, t0).unwrap();
    }
    assert_eq!(core.status(&r.id, t0), Status::Pending);
    assert_eq!(core.still_pending(&[r.id, d.id], t0), vec![true, true]);
    assert_eq!(core.step(t0).unwrap().len(), 1);
    assert!(matches!(core.status(&d.id, t0), Status::Matched(_)));
    assert_eq!(core.still_pending(&[r.id, d.id], t0), vec![false, false]);
}

#[test]
fn requests_expire_after_their_ttl_and_never_before() {
    let core = core();
    let t0 = Millis(1_800_000_000_000);
    let r = core.submit_rider(rider(23.8), t0).0;
    core.commit_arrivals();
    core.step(t0.plus(TTL - 1)).unwrap();
    assert_eq!(core.status(&r.id, t0.plus(TTL - 1)), Status::Pending);
    assert_eq!(core.status(&r.id, t0.plus(TTL)), Status::Over);
    core.submit_driver(driver(23.8), t0.plus(TTL));
    core.commit_arrivals();
    assert!(core.step(t0.plus(TTL + 1)).unwrap().is_empty());
}

#[test]
fn intake_is_shed_while_the_queue_is_full_and_admitted_once_it_drains() {
    let core = core().with_limits(Limits {
        max_queue: 2,
        ..Limits::default()
    });
    let t0 = Millis(1_800_000_000_000);
    assert_eq!(core.admit(), Ok(()));
    let (_, first) = core.submit_rider(rider(23.8), t0);
    let (_, second) = core.submit_driver(driver(23.8), t0);
    assert_eq!(core.admit(), Err(Overload::Queue { queued: 2, max: 2 }));
    core.commit_arrivals();
    assert_eq!(core.queued(), 0);
    assert_eq!(core.admit(), Ok(()));
    assert!(
        first.blocking_recv().is_ok() && second.blocking_recv().is_ok(),
        "what was queued is journaled, not dropped"
    );
}

#[test]
fn ttl_is_never_below_five_seconds() {
    let core = TestCore::new(
        ReplicaConfig {
            request_ttl_ms: 10,
            ..replica_config("n")
        },
        Retention {
            ms: 1,
            max_matches: 1,
        },
    );
    assert_eq!(
        core.submit_rider(rider(1.0), Millis(0)).0.expires_at,
        Millis(MIN_REQUEST_TTL_MS)
    );
}

#[test]
fn matches_are_forgotten_after_their_retention() {
    let core = core();
    let t0 = Millis(1_800_000_000_000);
    let r = core.submit_rider(rider(23.8), t0).0;
    core.submit_driver(driver(23.8), t0);
    core.commit_arrivals();
    core.step(t0).unwrap();
    core.step(t0.plus(59_999)).unwrap();
    assert!(core.match_of(&r.id).is_some());
    core.step(t0.plus(60_000)).unwrap();
    assert!(core.match_of(&r.id).is_none());
}

#[test]
fn the_match_log_keeps_only_the_newest_when_full() {
    let core = core();
    let t0 = Millis(1_800_000_000_000);
    let mut riders = Vec::new();
    for i in 0..1_005 {
        let lat = 23.0 + f64::from(i) * 0.1; // 11 km apart: one pair per spot
        // A millisecond apart: ids, and so ties, in the order made.
        let at = t0.plus(u64::try_from(i).unwrap());
        riders.push(core.submit_rider(rider(lat), at).0.id);
        core.submit_driver(driver(lat), at);
    }
    core.commit_arrivals();
    let now = t0.plus(1_005);
    assert_eq!(core.step(now).unwrap().len(), 1_005);
    assert_eq!(core.snapshot(now).committed_matches, 1_000);
    assert!(core.match_of(&riders[0]).is_none());
    assert!(core.match_of(&riders[1_004]).is_some());
}

/// A core journaling in `dir` whose rounds come only once a second, so
/// that only the intake flush writes requests into documents.
fn durable_core(dir: &Path, incarnation: u64, now: Millis) -> Node {
    Node::open(
        dir,
        &NodeId("dhaka-1".into()),
        ReplicaConfig {
            request_ttl_ms: TTL,
            match_interval_ms: 1_000,
            incarnation,
            hooks: Hooks {
                observe: true,
                ..Hooks::default()
            },
            ..replica_config("dhaka-1")
        },
        RETENTION,
        MAX_SKEW,
        Durability::PageCache,
        now,
        Entropy::seeded(incarnation),
    )
    .expect("open the journal")
}

/// The riders and drivers this core wrote into documents since the
/// last call.
fn written(core: &Node) -> Vec<RequestId> {
    core.take_observed()
        .into_iter()
        .filter_map(|(_, record)| Some(record.request()?.id))
        .collect()
}

#[test]
fn accepted_requests_are_pending_at_once_and_written_together_once_the_flush_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Millis(1_800_000_000_000);
    let core = durable_core(dir.path(), 1, t0);
    let peer = NodeId("dhaka-2".into());
    core.step(t0).unwrap();
    let first = core.submit_rider(rider(23.8), t0).0.id;
    core.commit_arrivals();
    assert_eq!(core.status(&first, t0), Status::Pending);
    // Nothing was written for a while: the first goes at once.
    core.outgoing(&peer, t0).unwrap();
    assert_eq!(written(&core), vec![first]);

    let second = core.submit_rider(rider(23.8), t0.plus(5)).0.id;
    core.commit_arrivals();
    let third = core.submit_driver(driver(23.8), t0.plus(10)).0.id;
    core.commit_arrivals();
    core.outgoing(&peer, t0.plus(10)).unwrap();
    assert!(
        written(&core).is_empty(),
        "written before the flush was due"
    );
    assert_eq!(core.status(&second, t0.plus(10)), Status::Pending);
    assert_eq!(core.still_pending(&[third], t0.plus(10)), vec![true]);
    let counted = core.snapshot(t0.plus(10));
    assert_eq!((counted.pending_riders, counted.pending_drivers), (2, 1));
    assert_eq!(counted.own_pending, (2, 1));

    core.outgoing(&peer, t0.plus(20)).unwrap();
    assert_eq!(written(&core), vec![second, third], "one flush writes both");
}

#[test]
fn a_round_writes_every_accepted_request_first() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Millis(1_800_000_000_000);
    let core = durable_core(dir.path(), 1, t0);
    let peer = NodeId("dhaka-2".into());
    // A driver too far away to match, written at t0: the next flush is
    // due at t0 + 20.
    core.submit_driver(driver(25.0), t0);
    core.commit_arrivals();
    core.outgoing(&peer, t0).unwrap();
    let r = core.submit_rider(rider(23.8), t0.plus(1)).0.id;
    let d = core.submit_driver(driver(23.8), t0.plus(1)).0.id;
    core.commit_arrivals();
    // The flush is not due (the last was at t0), the round is.
    let made = core.step(t0.plus(2)).unwrap();
    assert_eq!(made.len(), 1);
    assert_eq!((made[0].rider.id, made[0].driver.id), (r, d));
}

#[test]
fn a_request_answered_before_its_change_survives_a_crash_and_is_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Millis(1_800_000_000_000);
    let core = durable_core(dir.path(), 1, t0);
    core.step(t0).unwrap();
    let (ticket, mut durable) = core.submit_rider(rider(23.8), t0.plus(1));
    core.commit_arrivals();
    assert_eq!(durable.try_recv(), Ok(()), "answered 202");
    drop(core); // a crash: no document holds it yet

    let t1 = t0.plus(500);
    let core = durable_core(dir.path(), 2, t1);
    assert!(written(&core).is_empty(), "no document held it");
    assert_eq!(core.status(&ticket.id, t1), Status::Pending);
    core.step(t1).unwrap();
    assert_eq!(written(&core), vec![ticket.id]);
    drop(core);

    let t2 = t1.plus(500);
    let core = durable_core(dir.path(), 3, t2);
    assert_eq!(written(&core), vec![ticket.id], "loaded from its document");
    core.step(t2.plus(1_000)).unwrap();
    assert!(written(&core).is_empty(), "written twice");
    assert_eq!(core.status(&ticket.id, t2.plus(1_000)), Status::Pending);
}

#[test]
fn accepted_requests_past_their_ttl_are_not_reloaded_and_leave_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Millis(1_800_000_000_000);
    let core = durable_core(dir.path(), 1, t0);
    core.step(t0).unwrap();
    let id = core.submit_rider(rider(23.8), t0.plus(1)).0.id;
    core.commit_arrivals();
    drop(core);
    let intake_files = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "intake"))
            .count()
    };
    assert_eq!(intake_files(), 1);

    let late = t0.plus(TTL + 1);
    let core = durable_core(dir.path(), 2, late);
    assert_eq!(core.status(&id, late), Status::Unknown);
    // The cleanup at the next epoch boundary deletes the file.
    core.step(late.plus(2_000)).unwrap();
    assert!(written(&core).is_empty());
    assert_eq!(intake_files(), 0);
}
