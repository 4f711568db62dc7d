//! Who the simulated people are: stable names and unique car numbers.
//!
//! Every bot run draws a random [`RunTag`] and puts it in every name and car
//! number, so that two bots (or two runs against a node that kept its data)
//! never claim the same car, and a match in the node's logs can be traced back
//! to the run that caused it. The tag comes from the OS, not from `--seed`:
//! the seed makes *positions* reproducible, and reusing car numbers across
//! runs is exactly what the tag prevents.

use std::fmt;

use rand::Rng;

/// Common Bangladeshi first names, so logs read like a city rather than ids.
const FIRST_NAMES: &[&str] = &[
    "Amina", "Rahim", "Karim", "Nusrat", "Farhan", "Tahmina", "Sabbir", "Nadia", "Imran",
    "Sumaiya", "Arif", "Jannat", "Tanvir", "Mitu", "Rakib", "Shirin", "Hasan", "Lamia", "Sakib",
    "Ruma",
];

/// Four upper-case letters identifying one bot run (e.g. `KQXZ`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunTag([u8; 4]);

impl RunTag {
    pub fn random(rng: &mut impl Rng) -> Self {
        RunTag(std::array::from_fn(|_| rng.random_range(b'A'..=b'Z')))
    }
}

impl fmt::Display for RunTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always ASCII letters by construction.
        f.write_str(std::str::from_utf8(&self.0).map_err(|_| fmt::Error)?)
    }
}

/// Rider number `index`'s name; the same for the whole run.
pub fn rider_name(run: RunTag, index: usize) -> String {
    format!("{} {run}-R{index}", first_name(index))
}

/// Driver number `index`'s name; the same for the whole run.
pub fn driver_name(run: RunTag, index: usize) -> String {
    // Offset so that rider 0 and driver 0 don't share a first name.
    format!(
        "{} {run}-D{index}",
        first_name(index + FIRST_NAMES.len() / 2)
    )
}

/// A plate in the style `KQXZ-0042`: unique for every `index` within a run,
/// and distinct between runs by the tag.
pub fn car_number(run: RunTag, index: u64) -> String {
    format!("{run}-{index:04}")
}

fn first_name(index: usize) -> &'static str {
    FIRST_NAMES[index % FIRST_NAMES.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::HashSet;

    fn tag() -> RunTag {
        RunTag(*b"KQXZ")
    }

    #[test]
    fn car_numbers_are_unique_within_a_run() {
        let plates: HashSet<String> = (0..100_000).map(|i| car_number(tag(), i)).collect();
        assert_eq!(plates.len(), 100_000);
        assert_eq!(car_number(tag(), 42), "KQXZ-0042");
        assert_eq!(car_number(tag(), 123_456), "KQXZ-123456");
    }

    #[test]
    fn car_numbers_differ_between_runs() {
        assert_ne!(car_number(tag(), 1), car_number(RunTag(*b"KQXY"), 1));
    }

    #[test]
    fn names_are_stable_and_distinct() {
        assert_eq!(rider_name(tag(), 3), rider_name(tag(), 3));
        let riders: HashSet<String> = (0..1000).map(|i| rider_name(tag(), i)).collect();
        let drivers: HashSet<String> = (0..1000).map(|i| driver_name(tag(), i)).collect();
        assert_eq!(riders.len(), 1000);
        assert_eq!(drivers.len(), 1000);
        assert!(riders.is_disjoint(&drivers));
    }

    #[test]
    fn run_tags_are_upper_case_letters() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..1000 {
            let text = RunTag::random(&mut rng).to_string();
            assert_eq!(text.len(), 4);
            assert!(text.bytes().all(|b| b.is_ascii_uppercase()), "{text}");
        }
    }
}
