//! Time as plain milliseconds since the Unix epoch.
//!
//! The dispatch core never reads a clock: callers pass `now` in. That keeps
//! the core deterministic under test and simulation, and makes expiry an
//! absolute instant that means the same on every node that sees a request.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Millis(pub u64);

impl Millis {
    /// The wall clock, for the async shell around the core.
    pub fn now() -> Self {
        let ms = Utc::now().timestamp_millis();
        Self(u64::try_from(ms).unwrap_or(0))
    }

    #[inline]
    pub fn plus(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    #[inline]
    pub fn minus(self, ms: u64) -> Self {
        Self(self.0.saturating_sub(ms))
    }

    pub fn to_utc(self) -> DateTime<Utc> {
        i64::try_from(self.0)
            .ok()
            .and_then(DateTime::from_timestamp_millis)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_rfc3339() {
        assert_eq!(
            Millis(1_700_000_000_123).to_utc().to_rfc3339(),
            "2023-11-14T22:13:20.123+00:00"
        );
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Millis(5).minus(10), Millis(0));
        assert_eq!(Millis(u64::MAX).plus(1), Millis(u64::MAX));
    }
}
