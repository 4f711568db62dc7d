//! Distances on the Earth.
//!
//! The functions here are small and hot (every candidate pair of a matching
//! round), and this crate is not the one that calls them: `#[inline]` lets
//! the caller's crate inline them, as it did when they lived there.
//!
//! "Linear distance" in this system is the great-circle (haversine) distance,
//! computed by the `geo` crate. For spatial indexing, points are also mapped
//! to 3-D unit vectors: the straight-line chord between two unit vectors grows
//! strictly with their great-circle distance, so an ordinary Euclidean index
//! over unit vectors answers great-circle nearest-neighbour queries exactly,
//! across the antimeridian and the poles too.

use geo::{Distance, Haversine, Point};
use serde::{Deserialize, Serialize};

/// A WGS84 coordinate in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Position {
    #[schema(minimum = -90, maximum = 90)]
    pub lat: f64,
    #[schema(minimum = -180, maximum = 180)]
    pub lon: f64,
}

/// The mean Earth radius that `geo`'s haversine uses, in km.
#[inline]
pub fn earth_radius_km() -> f64 {
    Haversine.radius() / 1000.0
}

/// Great-circle distance in km.
#[inline]
pub fn haversine_km(a: Position, b: Position) -> f64 {
    Haversine.distance(Point::new(a.lon, a.lat), Point::new(b.lon, b.lat)) / 1000.0
}

/// The position as a unit vector (x towards 0°N 0°E, z towards the north pole).
#[inline]
pub fn unit_vector(p: Position) -> [f64; 3] {
    let (lat, lon) = (p.lat.to_radians(), p.lon.to_radians());
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
}

/// The chord length, on the unit sphere, that spans `km` of great circle.
#[inline]
pub fn chord_for_km(km: f64) -> f64 {
    let angle = (km / earth_radius_km()).clamp(0.0, std::f64::consts::PI);
    2.0 * (angle / 2.0).sin()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(lat: f64, lon: f64) -> Position {
        Position { lat, lon }
    }

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn one_degree_of_meridian_is_r_pi_over_180() {
        let expected = earth_radius_km() * std::f64::consts::PI / 180.0;
        assert!(close(
            haversine_km(pos(0.0, 0.0), pos(1.0, 0.0)),
            expected,
            1e-9
        ));
        assert!(close(
            haversine_km(pos(0.0, 0.0), pos(0.0, 1.0)),
            expected,
            1e-9
        ));
        assert!(close(expected, 111.195, 1e-3));
    }

    #[test]
    fn known_city_pair() {
        // Dhaka (Shahbag) to Chattogram (GEC circle): 211.72 km as the crow flies
        // by an independent haversine with R = 6371.0088 km.
        let d = haversine_km(pos(23.7389, 90.3958), pos(22.3590, 91.8217));
        assert!(close(d, 211.724, 0.001), "{d}");
    }

    #[test]
    fn antipodes_are_half_a_circumference_apart() {
        let d = haversine_km(pos(10.0, 20.0), pos(-10.0, -160.0));
        assert!(close(d, earth_radius_km() * std::f64::consts::PI, 1e-3));
    }

    #[test]
    fn crossing_the_antimeridian_is_short() {
        let d = haversine_km(pos(0.0, 179.9), pos(0.0, -179.9));
        assert!(close(d, 0.2 * 111.195, 0.01), "{d}");
    }

    #[test]
    fn chord_agrees_with_the_unit_vectors() {
        let (a, b) = (pos(23.8, 90.4), pos(23.7, 90.3));
        let (ua, ub) = (unit_vector(a), unit_vector(b));
        let chord = ua
            .iter()
            .zip(ub)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f64>()
            .sqrt();
        assert!(close(chord, chord_for_km(haversine_km(a, b)), 1e-12));
    }
}
