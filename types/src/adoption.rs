//! Adoption: which live region serves the area of a region that is down.
//!
//! A region is a single place, so without a rule of this kind its riders
//! and drivers lose service whenever it does. Every node computes the same
//! adopter from the region files alone, with no vote and no message: the
//! rule below is a pure function of the layout and of the set of regions
//! the node believes down. Two nodes with the same view pick the same
//! adopter; nodes whose views differ for a moment (one sees the region
//! down a little sooner) may both accept in one area, which the matching
//! protocol already makes safe (every request keeps one owner).
//!
//! The adopter of `r` is the first region of `r`'s *ranking* that is up:
//! its neighbours (areas within twice the pickup radius, so that they keep
//! sessions with the nodes that share `r`'s documents) ordered by the
//! distance between the areas, then by the distance between their
//! centroids (of several touching neighbours, the one whose centre is
//! nearest), then by id. The rule's name is part of the layout's
//! fingerprint ([`ADOPTION_RULE`]), so nodes that would choose differently
//! never mesh.

use std::fmt;

use crate::geodesy::haversine_km;
use crate::halo::RegionIndex;
use crate::regions::Region;

/// Names the ranking rule; hashed into the layout fingerprint, so changing
/// the rule changes the fingerprint.
pub const ADOPTION_RULE: &str = "adopt: neighbours by area distance, centroid distance, id";

/// A set of regions by index, in one word so that intake can read it with
/// one atomic load. Regions past the 64th are never in a set: a layout that
/// large judges only its first 64 regions (none is adopted past that).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RegionSet(u64);

impl RegionSet {
    /// The most regions a set can hold.
    pub const CAPACITY: usize = 64;

    pub const EMPTY: RegionSet = RegionSet(0);

    pub fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    pub fn bits(self) -> u64 {
        self.0
    }

    pub fn contains(self, region: RegionIndex) -> bool {
        usize::from(region) < Self::CAPACITY && self.0 & (1 << region) != 0
    }

    /// Adds `region`; one past the capacity is left out.
    pub fn insert(&mut self, region: RegionIndex) {
        if usize::from(region) < Self::CAPACITY {
            self.0 |= 1 << region;
        }
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn iter(self) -> impl Iterator<Item = RegionIndex> {
        (0..Self::CAPACITY as RegionIndex).filter(move |r| self.contains(*r))
    }
}

impl FromIterator<RegionIndex> for RegionSet {
    fn from_iter<I: IntoIterator<Item = RegionIndex>>(iter: I) -> Self {
        let mut set = Self::EMPTY;
        for region in iter {
            set.insert(region);
        }
        set
    }
}

impl fmt::Debug for RegionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Each region's candidate adopters, best first.
#[derive(Debug, Clone, Default)]
pub struct Rankings(Vec<Vec<RegionIndex>>);

impl Rankings {
    /// The rankings of `regions` (in layout order), where `area_km(a, b)`
    /// is the distance between two areas and `neighbours(a, b)` says
    /// whether they keep sessions.
    pub fn new(
        regions: &[&Region],
        area_km: impl Fn(&Region, &Region) -> f64,
        neighbours: impl Fn(RegionIndex, RegionIndex) -> bool,
    ) -> Self {
        let index = |i: usize| RegionIndex::try_from(i).expect("a layout's regions fit an index");
        let rankings = regions
            .iter()
            .enumerate()
            .map(|(r, region)| {
                let mut ranked: Vec<(f64, f64, RegionIndex)> = regions
                    .iter()
                    .enumerate()
                    .filter(|(c, _)| *c != r && neighbours(index(r), index(*c)))
                    .map(|(c, candidate)| {
                        let centres = haversine_km(region.centroid(), candidate.centroid());
                        (area_km(region, candidate), centres, index(c))
                    })
                    .collect();
                ranked.sort_by(|a, b| {
                    a.0.total_cmp(&b.0)
                        .then(a.1.total_cmp(&b.1))
                        .then(a.2.cmp(&b.2))
                });
                ranked.into_iter().map(|(_, _, c)| c).collect()
            })
            .collect();
        Self(rankings)
    }

    /// Who serves `region` while the regions of `down` are down: the first
    /// of its ranking that is up; `None` when every neighbour is down too
    /// (or `region` is unknown).
    pub fn adopter_of(&self, region: RegionIndex, down: RegionSet) -> Option<RegionIndex> {
        self.0
            .get(usize::from(region))?
            .iter()
            .copied()
            .find(|candidate| !down.contains(*candidate))
    }

    /// The regions `adopter` serves besides its own while `down` are down.
    pub fn adopted_by(&self, adopter: RegionIndex, down: RegionSet) -> RegionSet {
        down.iter()
            .filter(|r| *r != adopter && self.adopter_of(*r, down) == Some(adopter))
            .collect()
    }

    /// `region`'s candidates, best first.
    pub fn ranking(&self, region: RegionIndex) -> &[RegionIndex] {
        self.0.get(usize::from(region)).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use proptest::prelude::*;

    use super::*;
    use crate::halo::Layout;
    use crate::region_grid::{self as grid, GridArgs};
    use crate::regions::Regions;

    fn shipped() -> Regions {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../regions");
        Regions::load_dir(&dir).expect("the shipped regions load")
    }

    #[test]
    fn region_sets_hold_the_first_64_regions() {
        let mut set: RegionSet = [0, 5, 63].into_iter().collect();
        set.insert(64);
        assert!(set.contains(5) && set.contains(63) && !set.contains(64) && !set.contains(1));
        assert_eq!(set.len(), 3);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 5, 63]);
        assert_eq!(format!("{set:?}"), "{0, 5, 63}");
        assert_eq!(RegionSet::from_bits(set.bits()), set);
    }

    #[test]
    fn each_shipped_region_has_an_adopter_and_a_second_one() {
        let regions = shipped();
        let layout = Layout::new(&regions, 5.0);
        let index = |id: &str| layout.index_of(id).expect("a shipped region");
        let north = index("dhaka-north");
        for region in regions.iter() {
            let r = index(&region.id);
            let first = layout
                .adopter_of(r, RegionSet::from_iter([r]))
                .expect("an adopter");
            assert_ne!(first, r);
            let second = layout.adopter_of(r, RegionSet::from_iter([r, first]));
            assert!(
                second.is_some_and(|s| s != first && s != r),
                "{}",
                region.id
            );
            assert_eq!(layout.adopter_of(r, RegionSet::from_iter([0, 1, 2])), None);
        }
        // An up region serves only itself; a down one is served by one other.
        assert!(layout.adopted_by(north, RegionSet::EMPTY).is_empty());
        let down = RegionSet::from_iter([north]);
        let adopters: Vec<RegionIndex> = (0..3)
            .filter(|a| layout.adopted_by(*a, down).contains(north))
            .collect();
        assert_eq!(adopters, vec![layout.adopter_of(north, down).unwrap()]);
    }

    fn grid_layout(rows: u16, cols: u16, radius: f64) -> (tempfile::TempDir, Regions, Layout) {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("regions");
        let regions = grid::write(&GridArgs::for_test(rows, cols, &out)).expect("a grid");
        let layout = Layout::new(&regions, radius);
        (dir, regions, layout)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Against a brute-force oracle: the adopter is up, a neighbour and
        /// not the region itself; no up neighbour is nearer; there is one
        /// whenever a neighbour is up; and every node (a layout built again
        /// from the same files) picks the same.
        #[test]
        fn the_adopter_is_the_nearest_live_neighbour(
            down_bits in any::<u64>(),
            radius in 0.2f64..3.0,
        ) {
            let (_dir, regions, layout) = grid_layout(4, 4, radius);
            let again = Layout::new(&regions, radius);
            let down = RegionSet::from_bits(down_bits & 0xffff);
            let all: Vec<&Region> = regions.iter().collect();
            for r in 0..16 {
                let adopter = layout.adopter_of(r, down);
                prop_assert_eq!(adopter, again.adopter_of(r, down));
                let live: Vec<RegionIndex> = layout
                    .neighbours_of(r)
                    .filter(|n| *n != r && !down.contains(*n))
                    .collect();
                match adopter {
                    None => prop_assert!(live.is_empty()),
                    Some(a) => {
                        prop_assert!(a != r && !down.contains(a) && layout.are_neighbours(r, a));
                        let gap = |n: RegionIndex| crate::halo::areas_km(all[r as usize], all[n as usize]);
                        for n in live {
                            prop_assert!(gap(n) >= gap(a));
                        }
                    }
                }
            }
        }
    }
}
