//! One matching round at 1k, 10k and 100k pending riders and drivers, next to
//! the naive all-pairs greedy at the sizes where it finishes.
//!
//! `cargo bench -p node --bench matching`

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use node::ids::RequestId;
use node::matching::{Candidate, greedy, greedy_naive};
use node::wire::Position;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

/// Greater Dhaka, about 55 km x 55 km; the default 5 km pickup radius.
const AREA: (f64, f64, f64, f64) = (23.55, 90.15, 24.05, 90.70);
const RADIUS_KM: f64 = 5.0;

fn scatter(rng: &mut StdRng, n: usize, id_offset: u128) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            id: RequestId(Uuid::from_u128(id_offset + i as u128)),
            position: Position {
                lat: rng.random_range(AREA.0..AREA.2),
                lon: rng.random_range(AREA.1..AREA.3),
            },
        })
        .collect()
}

fn matching_round(c: &mut Criterion) {
    let mut group = c.benchmark_group("matching_round");
    group.sample_size(10);
    for n in [1_000usize, 10_000, 100_000] {
        let mut rng = StdRng::seed_from_u64(n as u64);
        let riders = scatter(&mut rng, n, 0);
        let drivers = scatter(&mut rng, n, 1 << 64);
        group.bench_with_input(BenchmarkId::new("rtree_greedy", n), &n, |b, _| {
            b.iter(|| greedy(&riders, &drivers, RADIUS_KM))
        });
        if n <= 10_000 {
            group.bench_with_input(BenchmarkId::new("naive_greedy", n), &n, |b, _| {
                b.iter(|| greedy_naive(&riders, &drivers, RADIUS_KM))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, matching_round);
criterion_main!(benches);
