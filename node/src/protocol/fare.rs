//! Fares: the trip's great-circle distance x 2 taka, rounded to the paisa.

use ride_types::decimals;

/// Taka per km of trip.
pub(crate) const TAKA_PER_KM: f64 = 2.0;

/// The fare for a trip of `trip_km`, rounded to 2 decimals.
pub(crate) fn fare_taka(trip_km: f64) -> f64 {
    decimals::round(trip_km * TAKA_PER_KM, 2)
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
}
