use super::*;
use proptest::prelude::*;
use uuid::Uuid;

fn id(n: u128) -> RequestId {
    RequestId(Uuid::from_u128(n))
}

fn at(n: u128, lat: f64, lon: f64) -> Candidate {
    Candidate {
        id: id(n),
        position: Position { lat, lon },
    }
}

#[test]
fn pairs_closest_first_not_first_come() {
    // Rider 1 is near both drivers; rider 2 is nearer to driver 10.
    let riders = [at(1, 23.800, 90.400), at(2, 23.810, 90.400)];
    let drivers = [at(10, 23.811, 90.400), at(11, 23.795, 90.400)];
    let pairs = greedy(&riders, &drivers, 5.0);
    let chosen: Vec<_> = pairs.iter().map(|p| (p.rider, p.driver)).collect();
    assert_eq!(chosen, vec![(id(2), id(10)), (id(1), id(11))]);
}

#[test]
fn nobody_beyond_the_radius() {
    let riders = [at(1, 23.8, 90.4)];
    let drivers = [at(10, 23.9, 90.4)]; // ~11 km north
    assert!(greedy(&riders, &drivers, 5.0).is_empty());
    assert_eq!(greedy(&riders, &drivers, 12.0).len(), 1);
}

#[test]
fn ties_go_to_the_lowest_ids() {
    let riders = [at(2, 0.0, 0.0), at(1, 0.0, 0.0)];
    let drivers = [at(11, 0.0, 0.01), at(10, 0.0, -0.01)];
    let pairs = greedy(&riders, &drivers, 5.0);
    let chosen: Vec<_> = pairs.iter().map(|p| (p.rider, p.driver)).collect();
    assert_eq!(chosen, vec![(id(1), id(10)), (id(2), id(11))]);
}

#[test]
fn empty_sides_match_nothing() {
    assert!(greedy(&[], &[at(1, 0.0, 0.0)], 5.0).is_empty());
    assert!(greedy(&[at(1, 0.0, 0.0)], &[], 5.0).is_empty());
}

#[test]
fn matches_across_the_antimeridian() {
    let riders = [at(1, 0.0, 179.99)];
    let drivers = [at(10, 0.0, -179.99), at(11, 0.0, 179.90)];
    let pairs = greedy(&riders, &drivers, 50.0);
    assert_eq!(pairs[0].driver, id(10));
}

/// Points on a coarse grid inside a small box, so that exact ties and
/// shared positions are common, plus out-of-radius pairs.
fn candidates(max: usize, offset: u128) -> impl Strategy<Value = Vec<Candidate>> {
    prop::collection::vec((0u8..12, 0u8..12), 0..max).prop_map(move |cells| {
        cells
            .into_iter()
            .enumerate()
            .map(|(i, (row, col))| {
                at(
                    offset + i as u128,
                    23.7 + f64::from(row) * 0.009,
                    90.3 + f64::from(col) * 0.009,
                )
            })
            .collect()
    })
}

fn scattered(max: usize, offset: u128) -> impl Strategy<Value = Vec<Candidate>> {
    prop::collection::vec((-89.0f64..89.0, -180.0f64..180.0), 0..max).prop_map(move |pts| {
        pts.into_iter()
            .enumerate()
            .map(|(i, (lat, lon))| at(offset + i as u128, lat, lon))
            .collect()
    })
}

/// Everyone within a couple of metres of one crossing, on a handful of
/// shared spots: nearly every distance ties with many others.
fn at_one_crossing(max: usize, offset: u128) -> impl Strategy<Value = Vec<Candidate>> {
    prop::collection::vec((0u8..3, 0u8..3), 0..max).prop_map(move |spots| {
        spots
            .into_iter()
            .enumerate()
            .map(|(i, (row, col))| {
                at(
                    offset + i as u128,
                    23.7509 + f64::from(row) * 1e-5,
                    90.3935 + f64::from(col) * 1e-5,
                )
            })
            .collect()
    })
}

/// Near a pole or near the antimeridian, where longitudes wrap.
fn where_longitude_wraps(max: usize, offset: u128) -> impl Strategy<Value = Vec<Candidate>> {
    let spot = prop_oneof![
        (88.0f64..=90.0, -180.0f64..=180.0),
        (-90.0f64..=-88.0, -180.0f64..=180.0),
        (
            -60.0f64..60.0,
            prop_oneof![179.0f64..=180.0, -180.0f64..-179.0]
        ),
    ];
    prop::collection::vec(spot, 0..max).prop_map(move |spots| {
        spots
            .into_iter()
            .enumerate()
            .map(|(i, (lat, lon))| at(offset + i as u128, lat, lon))
            .collect()
    })
}

/// A city: most people around a few hot spots, the rest spread out, at
/// a size where the grid is refined for the crowd and rebuilt several
/// times as drivers leave.
#[test]
fn equals_the_brute_force_oracle_in_a_crowded_city() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let hot_spots = [(23.733, 90.417), (23.792, 90.408), (23.822, 90.365)];
    let mut side = |offset: u128| -> Vec<Candidate> {
        (0..1_000)
            .map(|i| {
                let (lat, lon) = if rng.random_bool(0.8) {
                    let (lat, lon) = hot_spots[rng.random_range(0..hot_spots.len())];
                    (
                        lat + rng.random_range(-0.02..0.02),
                        lon + rng.random_range(-0.02..0.02),
                    )
                } else {
                    (
                        rng.random_range(23.55..24.05),
                        rng.random_range(90.15..90.70),
                    )
                };
                at(offset + i, lat, lon)
            })
            .collect()
    };
    let riders = side(0);
    let drivers = side(1_000_000);
    for radius in [0.3, 5.0] {
        assert_eq!(
            greedy(&riders, &drivers, radius),
            greedy_naive(&riders, &drivers, radius)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn equals_the_brute_force_oracle_at_one_crossing(
        riders in at_one_crossing(50, 0),
        drivers in at_one_crossing(50, 1_000),
        radius in prop_oneof![Just(0.0), Just(0.001), Just(5.0)],
    ) {
        prop_assert_eq!(greedy(&riders, &drivers, radius), greedy_naive(&riders, &drivers, radius));
    }

    #[test]
    fn equals_the_brute_force_oracle_with_pairs_exactly_at_the_radius(
        riders in candidates(40, 0),
        drivers in candidates(40, 1_000),
        rider in any::<prop::sample::Index>(),
        driver in any::<prop::sample::Index>(),
    ) {
        prop_assume!(!riders.is_empty() && !drivers.is_empty());
        // The oracle's own distance for one pair: that pair, and every
        // pair as far apart, is exactly at the radius.
        let radius = haversine_km(
            driver.get(&drivers).position,
            rider.get(&riders).position,
        );
        prop_assert_eq!(greedy(&riders, &drivers, radius), greedy_naive(&riders, &drivers, radius));
    }

    #[test]
    fn equals_the_brute_force_oracle_where_longitude_wraps(
        riders in where_longitude_wraps(40, 0),
        drivers in where_longitude_wraps(40, 1_000),
        radius in prop_oneof![1.0f64..50.0, 50.0f64..500.0, Just(25_000.0)],
    ) {
        prop_assert_eq!(greedy(&riders, &drivers, radius), greedy_naive(&riders, &drivers, radius));
    }

    #[test]
    fn equals_the_brute_force_oracle_on_a_grid(
        riders in candidates(60, 0),
        drivers in candidates(60, 1_000),
        radius in 0.0f64..6.0,
    ) {
        prop_assert_eq!(greedy(&riders, &drivers, radius), greedy_naive(&riders, &drivers, radius));
    }

    #[test]
    fn equals_the_brute_force_oracle_worldwide(
        riders in scattered(40, 0),
        drivers in scattered(40, 1_000),
        radius in prop_oneof![Just(5.0), 100.0f64..5_000.0, Just(25_000.0)],
    ) {
        prop_assert_eq!(greedy(&riders, &drivers, radius), greedy_naive(&riders, &drivers, radius));
    }

    #[test]
    fn never_reuses_anyone_and_respects_the_radius(
        riders in candidates(80, 0),
        drivers in candidates(80, 1_000),
        radius in 0.0f64..3.0,
    ) {
        let pairs = greedy(&riders, &drivers, radius);
        let riders_seen: std::collections::HashSet<_> = pairs.iter().map(|p| p.rider).collect();
        let drivers_seen: std::collections::HashSet<_> = pairs.iter().map(|p| p.driver).collect();
        prop_assert_eq!(riders_seen.len(), pairs.len());
        prop_assert_eq!(drivers_seen.len(), pairs.len());
        prop_assert!(pairs.iter().all(|p| p.pickup_km <= radius));
    }
}
