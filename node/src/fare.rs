//! Fares: the trip's great-circle distance x 2 taka, rounded to the paisa.

/// Taka per km of trip.
pub const TAKA_PER_KM: f64 = 2.0;

/// The fare for a trip of `trip_km`, rounded to 2 decimals.
pub fn fare_taka(trip_km: f64) -> f64 {
    round_to(trip_km * TAKA_PER_KM, 2)
}

/// Rounds half away from zero to `decimals` places.
pub fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_taka_per_km_rounded_to_two_decimals() {
        assert_eq!(fare_taka(0.0), 0.0);
        assert_eq!(fare_taka(1.0), 2.0);
        assert_eq!(fare_taka(12.3456), 24.69);
        assert_eq!(fare_taka(0.004), 0.01);
        assert_eq!(fare_taka(212.6), 425.2);
    }

    #[test]
    fn rounds_to_the_requested_places() {
        assert_eq!(round_to(1.23456, 3), 1.235);
        assert_eq!(round_to(2.5, 0), 3.0);
    }
}
