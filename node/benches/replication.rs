//! The CPU cost of replicating one request to one peer: the owner writes a
//! flush of N rider records into its epoch's document (as the group commit
//! does), syncs it to a peer, and the peer reads the records out (as its
//! ledger does), with the sync protocol's answers going back. Reported per
//! request (`Throughput::Elements`), at 1, 16 and 256 requests a flush.
//! A document takes the flushes of one epoch and is then dropped, so, as in
//! a node, the work grows with the flushes an epoch holds, not with all
//! traffic: here a new epoch every 1,000 flushes (5 s at 200 flushes/s).
//! Flushes are one sync tick (10 ms) apart, so the peer acknowledges them
//! in batches, as it does in a node.
//!
//! `cargo bench -p node --bench replication`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use node::protocol::documents::{DocId, Documents};
use node::protocol::persist::Loaded;
use node::protocol::record::{Record, RiderRecord};
use ride_types::api::Position;
use ride_types::clock::Millis;
use ride_types::halo::{RegionIndex, Scope};
use ride_types::ids::{Entropy, NodeId};

const FLUSHES_PER_EPOCH: usize = 1_000;
/// The node's default `--mesh-sync-interval`.
const SYNC_TICK_MS: u64 = 10;

fn rider(entropy: &Entropy, i: usize) -> Record {
    let at = 1_764_000_000_000 + i as u64;
    Record::Rider(RiderRecord {
        id: entropy.request_id(Millis(at)),
        name: format!("Rider {:04}", i % 10_000),
        position: Position {
            lat: 23.8 + (i % 997) as f64 * 1e-4,
            lon: 90.4 + (i % 991) as f64 * 1e-4,
        },
        destination: Position {
            lat: 23.7,
            lon: 90.3,
        },
        accepted_at: Millis(at),
        expires_at: Millis(at + 30_000),
    })
}

/// Both nodes serve one region, so every document goes to the peer.
const REGION: RegionIndex = 0;

fn open(node: &NodeId) -> Documents {
    Documents::open(node, REGION, 1, false, Loaded::default(), Millis(0))
        .expect("an empty node opens")
}

/// One flush from `a` at `now`, synced to `b` until neither has more to say.
fn replicate(
    a: &mut Documents,
    b: &mut Documents,
    doc: &DocId,
    records: Vec<Record>,
    now: Millis,
) -> usize {
    let (a_id, b_id) = (&doc.owner, NodeId("peer".into()));
    a.write(vec![(doc.clone(), records)], now)
        .expect("own write");
    // What a node would journal: made, as a node makes it, and let go.
    a.take_persist();
    loop {
        let to_b = a.outgoing(&b_id, &Scope::of([REGION]), now);
        for (d, m) in &to_b {
            b.receive(a_id, d, m, now).expect("a good message");
        }
        let to_a = b.outgoing(a_id, &Scope::of([REGION]), now);
        for (d, m) in &to_a {
            a.receive(&b_id, d, m, now).expect("a good message");
        }
        if to_b.is_empty() && to_a.is_empty() {
            break;
        }
    }
    a.take_changes();
    b.take_changes().records.len()
}

fn replication(c: &mut Criterion) {
    let mut group = c.benchmark_group("replicate_to_one_peer");
    for per_flush in [1usize, 16, 256] {
        let owner = NodeId("owner".into());
        let (mut a, mut b) = (open(&owner), open(&NodeId("peer".into())));
        let mut doc = DocId {
            owner: owner.clone(),
            epoch: 0,
            scope: Scope::of([REGION]),
        };
        let mut flushes = 0;
        let entropy = Entropy::seeded(per_flush as u64);
        group.throughput(Throughput::Elements(per_flush as u64));
        group.bench_function(BenchmarkId::from_parameter(per_flush), |bench| {
            bench.iter(|| {
                let now = Millis(flushes as u64 * SYNC_TICK_MS);
                if flushes % FLUSHES_PER_EPOCH == 0 {
                    for node in [&mut a, &mut b] {
                        node.drop_docs(std::slice::from_ref(&doc), 0, now);
                        node.take_persist();
                    }
                    doc.epoch += 1;
                }
                let first = flushes * per_flush;
                flushes += 1;
                let records = (first..first + per_flush)
                    .map(|i| rider(&entropy, i))
                    .collect();
                assert_eq!(replicate(&mut a, &mut b, &doc, records, now), per_flush);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, replication);
criterion_main!(benches);
