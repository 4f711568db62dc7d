//! One matching round at 1k, 10k and 100k pending riders and drivers, spread
//! evenly or crowded around a city's hot spots, next to the naive all-pairs
//! greedy at the sizes where it finishes.
//!
//! `cargo bench -p node --bench matching`

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use node::protocol::pairing::{Candidate, greedy, greedy_naive};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ride_types::api::Position;
use ride_types::ids::RequestId;
use uuid::Uuid;

/// Greater Dhaka, about 55 km x 55 km; the default 5 km pickup radius.
const AREA: (f64, f64, f64, f64) = (23.55, 90.15, 24.05, 90.70);
const RADIUS_KM: f64 = 5.0;

/// Motijheel, Gulshan, Mirpur, Uttara and Dhanmondi: in the clustered city,
/// 80% of riders and of drivers are within 3 km of one of these.
const HOT_SPOTS: [(f64, f64); 5] = [
    (23.7330, 90.4172),
    (23.7925, 90.4078),
    (23.8223, 90.3654),
    (23.8759, 90.3795),
    (23.7461, 90.3742),
];
const HOT_SHARE: f64 = 0.8;
const HOT_RADIUS_KM: f64 = 3.0;

/// Where the next rider or driver appears.
type Placement = fn(&mut StdRng) -> Position;

fn uniform(rng: &mut StdRng) -> Position {
    Position {
        lat: rng.random_range(AREA.0..AREA.2),
        lon: rng.random_range(AREA.1..AREA.3),
    }
}

/// Uniform over a disc of 3 km around a random hot spot, or anywhere in the
/// area for the other 20%.
fn clustered(rng: &mut StdRng) -> Position {
    if !rng.random_bool(HOT_SHARE) {
        return uniform(rng);
    }
    let (lat, lon) = HOT_SPOTS[rng.random_range(0..HOT_SPOTS.len())];
    let km = HOT_RADIUS_KM * rng.random::<f64>().sqrt();
    let bearing = rng.random_range(0.0..std::f64::consts::TAU);
    let km_per_degree = ride_types::geodesy::earth_radius_km().to_radians();
    Position {
        lat: lat + km * bearing.cos() / km_per_degree,
        lon: lon + km * bearing.sin() / (km_per_degree * lat.to_radians().cos()),
    }
}

fn scatter(rng: &mut StdRng, n: usize, id_offset: u128, place: Placement) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            id: RequestId(Uuid::from_u128(id_offset + i as u128)),
            position: place(rng),
        })
        .collect()
}

fn matching_round(c: &mut Criterion) {
    let mut group = c.benchmark_group("matching_round");
    group.sample_size(10);
    let cities: [(&str, Placement); 2] = [("uniform", uniform), ("clustered", clustered)];
    for (city, place) in cities {
        for n in [1_000usize, 10_000, 100_000] {
            let mut rng = StdRng::seed_from_u64(n as u64);
            let riders = scatter(&mut rng, n, 0, place);
            let drivers = scatter(&mut rng, n, 1 << 64, place);
            group.bench_with_input(BenchmarkId::new(format!("greedy_{city}"), n), &n, |b, _| {
                b.iter(|| greedy(&riders, &drivers, RADIUS_KM))
            });
            if n <= 10_000 {
                group.bench_with_input(
                    BenchmarkId::new(format!("naive_greedy_{city}"), n),
                    &n,
                    |b, _| b.iter(|| greedy_naive(&riders, &drivers, RADIUS_KM)),
                );
            }
        }
    }
    group.finish();
}

criterion_group!(benches, matching_round);
criterion_main!(benches);
