//! Rider and driver intake: turns untrusted request bodies into values the
//! rest of the node can rely on (finite, in-range coordinates; sane names).
//!
//! Validation lives here, apart from HTTP, so that the same rules guard every
//! way a request can arrive (the HTTP API now, replicated peers later).

use thiserror::Error;

use ride_types::api::{DriverRequest, Position, RiderRequest};

pub(crate) const MAX_NAME_CHARS: usize = 100;
pub(crate) const MAX_CAR_NUMBER_CHARS: usize = 20;

/// What is wrong with a request, naming the field.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{field}: {reason}")]
pub(crate) struct InvalidInput {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidInput {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// A rider request that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewRider {
    pub name: String,
    pub position: Position,
    pub destination: Position,
}

/// A driver request that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewDriver {
    pub name: String,
    pub car_number: String,
    pub position: Position,
}

pub(crate) fn rider(req: RiderRequest) -> Result<NewRider, InvalidInput> {
    Ok(NewRider {
        name: name("name", req.name)?,
        position: position("position", req.position)?,
        destination: position("destination", req.destination)?,
    })
}

pub(crate) fn driver(req: DriverRequest) -> Result<NewDriver, InvalidInput> {
    Ok(NewDriver {
        name: name("name", req.name)?,
        car_number: car_number(req.car_number)?,
        position: position("position", req.position)?,
    })
}

/// A rating's stars: 1 to 5.
pub(crate) fn stars(stars: i64) -> Result<u8, InvalidInput> {
    u8::try_from(stars)
        .ok()
        .filter(|s| (1..=5).contains(s))
        .ok_or_else(|| InvalidInput::new("stars", format!("must be 1 to 5, got {stars}")))
}

/// A car number: 1 to 20 letters, digits, spaces or dashes.
pub(crate) fn car_number(raw: String) -> Result<String, InvalidInput> {
    let trimmed = raw.trim();
    let chars = trimmed.chars().count();
    if chars == 0 || chars > MAX_CAR_NUMBER_CHARS {
        return Err(InvalidInput::new(
            "car_number",
            format!("must be 1 to {MAX_CAR_NUMBER_CHARS} characters, got {chars}"),
        ));
    }
    if let Some(bad) = trimmed
        .chars()
        .find(|c| !(c.is_alphanumeric() || *c == '-' || *c == ' '))
    {
        return Err(InvalidInput::new(
            "car_number",
            format!("may hold letters, digits, spaces and dashes only, found {bad:?}"),
        ));
    }
    Ok(trimmed.to_owned())
}

fn name(field: &'static str, raw: String) -> Result<String, InvalidInput> {
    let trimmed = raw.trim();
    let chars = trimmed.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(InvalidInput::new(
            field,
            format!("must be 1 to {MAX_NAME_CHARS} characters, got {chars}"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(InvalidInput::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(trimmed.to_owned())
}

/// A WGS84 position: finite, latitude within ±90, longitude within ±180.
pub(crate) fn position(field: &'static str, p: Position) -> Result<Position, InvalidInput> {
    let check = |axis: &str, value: f64, limit: f64| {
        if !value.is_finite() || value.abs() > limit {
            Err(InvalidInput::new(
                field,
                format!("{axis} must be a finite number from -{limit} to {limit}, got {value}"),
            ))
        } else {
            Ok(())
        }
    };
    check("lat", p.lat, 90.0)?;
    check("lon", p.lon, 180.0)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(lat: f64, lon: f64) -> Position {
        Position { lat, lon }
    }

    fn rider_at(name: &str, position: Position) -> RiderRequest {
        RiderRequest {
            name: name.into(),
            position,
            destination: pos(23.8, 90.4),
        }
    }

    #[test]
    fn accepts_a_good_rider_and_trims_its_name() {
        let ok = rider(rider_at("  Amina ", pos(23.7, 90.3))).unwrap();
        assert_eq!(ok.name, "Amina");
    }

    #[test]
    fn rejects_bad_coordinates_naming_the_field() {
        for bad in [
            pos(f64::NAN, 0.0),
            pos(0.0, f64::INFINITY),
            pos(90.0001, 0.0),
            pos(0.0, -180.5),
        ] {
            let err = rider(rider_at("x", bad)).unwrap_err();
            assert_eq!(err.field, "position", "{bad:?}");
        }
        assert!(rider(rider_at("x", pos(-90.0, 180.0))).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_control_names() {
        assert!(rider(rider_at("   ", pos(0.0, 0.0))).is_err());
        assert!(rider(rider_at(&"a".repeat(MAX_NAME_CHARS + 1), pos(0.0, 0.0))).is_err());
        assert!(rider(rider_at(&"é".repeat(MAX_NAME_CHARS), pos(0.0, 0.0))).is_ok());
        assert!(rider(rider_at("a\u{0}b", pos(0.0, 0.0))).is_err());
    }

    #[test]
    fn car_numbers_and_stars() {
        assert_eq!(car_number(" DHA-1234 ".into()).unwrap(), "DHA-1234");
        assert!(car_number("".into()).is_err());
        assert!(car_number("DHA/1234".into()).is_err());
        assert!(car_number("X".repeat(21)).is_err());
        assert_eq!(stars(5), Ok(5));
        for bad in [0, 6, -1, i64::MAX] {
            assert_eq!(stars(bad).unwrap_err().field, "stars");
        }
    }
}
