//! The rectangle the bot places riders and drivers in.
//!
//! Nodes only serve positions inside their region, so every position the bot
//! invents must fall inside the area the operator gave; parsing rejects areas
//! that could not possibly be right (swapped corners, out-of-range degrees)
//! with a message that says which number is wrong, instead of letting the node
//! reject every request later.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use ride_types::api::Position;

/// An axis-aligned lat/lon box, `min` corner inclusive, `max` corner exclusive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Area {
    pub min_lat: f64,
    pub min_lon: f64,
    pub max_lat: f64,
    pub max_lon: f64,
}

/// Why an `--area` value was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AreaError {
    #[error("expected 4 comma-separated numbers MIN_LAT,MIN_LON,MAX_LAT,MAX_LON, got {0}")]
    WrongCount(usize),
    #[error("{field} is not a number: {value:?}")]
    NotANumber { field: &'static str, value: String },
    #[error("{field} = {value} is outside {min}..={max} degrees")]
    OutOfRange {
        field: &'static str,
        value: f64,
        min: f64,
        max: f64,
    },
    #[error("MIN_{axis} ({min}) must be smaller than MAX_{axis} ({max}); are the corners swapped?")]
    Empty {
        axis: &'static str,
        min: f64,
        max: f64,
    },
}

impl Area {
    /// Greater Dhaka, the default playground.
    pub const DHAKA: Area = Area {
        min_lat: 23.70,
        min_lon: 90.35,
        max_lat: 23.90,
        max_lon: 90.50,
    };

    /// A uniformly random position inside the area. Half-open ranges keep the
    /// result off the max edges, which a neighbouring region may own.
    pub fn random_position(&self, rng: &mut impl Rng) -> Position {
        Position {
            lat: rng.random_range(self.min_lat..self.max_lat),
            lon: rng.random_range(self.min_lon..self.max_lon),
        }
    }
}

impl FromStr for Area {
    type Err = AreaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const FIELDS: [&str; 4] = ["MIN_LAT", "MIN_LON", "MAX_LAT", "MAX_LON"];
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if parts.len() != FIELDS.len() {
            return Err(AreaError::WrongCount(parts.len()));
        }
        let mut values = [0.0_f64; 4];
        for ((value, part), field) in values.iter_mut().zip(&parts).zip(FIELDS) {
            *value = part
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| AreaError::NotANumber {
                    field,
                    value: (*part).to_owned(),
                })?;
            let limit = if field.ends_with("LAT") { 90.0 } else { 180.0 };
            if !(-limit..=limit).contains(value) {
                return Err(AreaError::OutOfRange {
                    field,
                    value: *value,
                    min: -limit,
                    max: limit,
                });
            }
        }
        let [min_lat, min_lon, max_lat, max_lon] = values;
        for (axis, min, max) in [("LAT", min_lat, max_lat), ("LON", min_lon, max_lon)] {
            if min >= max {
                return Err(AreaError::Empty { axis, min, max });
            }
        }
        Ok(Area {
            min_lat,
            min_lon,
            max_lat,
            max_lon,
        })
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{},{},{}",
            self.min_lat, self.min_lon, self.max_lat, self.max_lon
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// Min inclusive, max exclusive, as `random_position` promises.
    fn contains(area: &Area, p: Position) -> bool {
        (area.min_lat..area.max_lat).contains(&p.lat)
            && (area.min_lon..area.max_lon).contains(&p.lon)
    }

    #[test]
    fn parses_the_default_area() {
        let area: Area = "23.70,90.35,23.90,90.50".parse().unwrap();
        assert_eq!(area, Area::DHAKA);
        assert_eq!(area.to_string().parse::<Area>().unwrap(), area);
    }

    #[test]
    fn tolerates_spaces_and_negative_coordinates() {
        let area: Area = " -34.0 , -58.6, -33.5 ,-58.2 ".parse().unwrap();
        assert_eq!(area.min_lat, -34.0);
        assert_eq!(area.max_lon, -58.2);
    }

    #[test]
    fn rejects_bad_areas_with_clear_errors() {
        let cases: &[(&str, AreaError)] = &[
            ("23.7,90.35,23.9", AreaError::WrongCount(3)),
            ("", AreaError::WrongCount(1)),
            (
                "23.7,east,23.9,90.5",
                AreaError::NotANumber {
                    field: "MIN_LON",
                    value: "east".into(),
                },
            ),
            (
                "23.7,NaN,23.9,90.5",
                AreaError::NotANumber {
                    field: "MIN_LON",
                    value: "NaN".into(),
                },
            ),
            (
                "23.7,90.35,91,90.5",
                AreaError::OutOfRange {
                    field: "MAX_LAT",
                    value: 91.0,
                    min: -90.0,
                    max: 90.0,
                },
            ),
            (
                "23.9,90.35,23.7,90.5",
                AreaError::Empty {
                    axis: "LAT",
                    min: 23.9,
                    max: 23.7,
                },
            ),
            (
                "23.7,90.5,23.9,90.5",
                AreaError::Empty {
                    axis: "LON",
                    min: 90.5,
                    max: 90.5,
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(&input.parse::<Area>().unwrap_err(), expected, "{input}");
        }
        let message = "23.9,90.35,23.7,90.5"
            .parse::<Area>()
            .unwrap_err()
            .to_string();
        assert!(message.contains("swapped"), "{message}");
    }

    #[test]
    fn random_positions_stay_inside() {
        let mut rng = StdRng::seed_from_u64(7);
        for area in [
            Area::DHAKA,
            "0,0,0.0001,0.0001".parse().unwrap(),
            "-90,-180,90,180".parse().unwrap(),
        ] {
            for _ in 0..10_000 {
                let p = area.random_position(&mut rng);
                assert!(contains(&area, p), "{p:?} outside {area}");
            }
        }
    }

    #[test]
    fn seeded_positions_are_reproducible() {
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..5)
                .map(|_| Area::DHAKA.random_position(&mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }
}
