//! Decimal rounding for what people read: fares to the paisa, distances to
//! the metre, rates and clock offsets on the dashboard. JSON carries these
//! as numbers, so they are rounded where they are made rather than
//! formatted by every client.

/// Rounds half away from zero to `places` decimal places.
#[inline]
pub fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_away_from_zero_to_the_requested_places() {
        assert_eq!(round(1.23456, 3), 1.235);
        assert_eq!(round(2.5, 0), 3.0);
        assert_eq!(round(-2.5, 0), -3.0);
        assert_eq!(round(23.997, 2), 24.0);
    }
}
