use super::*;
use crate::protocol::record::sample_rider as rider;
use ride_types::halo::Scope;

#[test]
fn each_flush_key_sorts_before_every_earlier_one() {
    let keys = [
        batch_key(1, 0),
        batch_key(1, 1),
        batch_key(1, 9),
        batch_key(1, 10),
        batch_key(1, 1_000),
        // A restarted node writes as its next incarnation.
        batch_key(2, 0),
        batch_key(2, 1),
    ];
    for pair in keys.windows(2) {
        assert!(
            pair[1] < pair[0],
            "{} should sort before {}",
            pair[1],
            pair[0]
        );
    }
}

/// Hands `messages` from `from` to `to`; returns how many records `to`
/// read out of them.
fn deliver(from: &NodeId, to: &mut Documents, messages: &[(DocId, Vec<u8>)], now: Millis) -> usize {
    for (doc, message) in messages {
        assert!(to.receive(from, doc, message, now).expect("a good message"));
    }
    to.take_changes().records.len()
}

#[test]
fn a_peer_acknowledges_in_batches_while_the_writer_keeps_pushing() {
    let (a_id, b_id) = (NodeId("a".into()), NodeId("b".into()));
    let open = |id: &NodeId| {
        Documents::open(id, 0, 1, false, Loaded::default(), Millis(0)).expect("opens")
    };
    let (mut a, mut b) = (open(&a_id), open(&b_id));
    let doc = DocId {
        owner: a_id.clone(),
        epoch: 0,
        scope: Scope::of([0]),
    };
    let write = |a: &mut Documents, n: u64| {
        a.write(vec![(doc.clone(), vec![rider(n)])], Millis(n))
            .expect("own write");
    };

    // A first sync takes round trips (heads, then what is missing):
    // run it to its end, late enough each time that no ack waits.
    write(&mut a, 0);
    let (mut now, mut read) = (0, 0);
    loop {
        let to_b = a.outgoing(&b_id, &Scope::of([0]), Millis(now));
        read += deliver(&a_id, &mut b, &to_b, Millis(now));
        let to_a = b.outgoing(&a_id, &Scope::of([0]), Millis(now));
        deliver(&b_id, &mut a, &to_a, Millis(now));
        if to_b.is_empty() && to_a.is_empty() {
            break;
        }
        now += ACK_EVERY_MS;
    }
    assert_eq!(read, 1);

    // A change long after the peer's last message is acknowledged at
    // once...
    let first = now + ACK_EVERY_MS;
    write(&mut a, first);
    let to_b = a.outgoing(&b_id, &Scope::of([0]), Millis(first));
    assert_eq!(deliver(&a_id, &mut b, &to_b, Millis(first)), 1);
    let ack = b.outgoing(&a_id, &Scope::of([0]), Millis(first));
    assert_eq!(ack.len(), 1);
    deliver(&b_id, &mut a, &ack, Millis(first));

    // ...and each one after it is pushed on the next tick,
    // unacknowledged, until `ACK_EVERY_MS` has passed.
    for n in [first + 10, first + 20, first + 30] {
        write(&mut a, n);
        let to_b = a.outgoing(&b_id, &Scope::of([0]), Millis(n));
        assert_eq!(to_b.len(), 1, "change {n} is pushed");
        assert_eq!(deliver(&a_id, &mut b, &to_b, Millis(n)), 1);
        assert!(
            b.outgoing(&a_id, &Scope::of([0]), Millis(n)).is_empty(),
            "no ack at {n}"
        );
    }
    let ack = b.outgoing(&a_id, &Scope::of([0]), Millis(first + ACK_EVERY_MS));
    assert_eq!(ack.len(), 1, "one ack for the three changes");
    deliver(&b_id, &mut a, &ack, Millis(first + ACK_EVERY_MS));

    // Then both are at the sync's fixed point: nothing more, ever.
    let later = Millis(first + 10 * ACK_EVERY_MS);
    assert!(a.outgoing(&b_id, &Scope::of([0]), later).is_empty());
    assert!(b.outgoing(&a_id, &Scope::of([0]), later).is_empty());
}
