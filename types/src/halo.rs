//! Halo replication: which regions a request concerns, so that it is sent
//! only where it can be matched.
//!
//! Without halos every node stores and merges every request of every
//! region, so adding regions adds no capacity. A rider is only ever paired
//! with a driver within the pickup radius, so a request concerns the
//! regions whose area lies within that radius of it: its own region and,
//! near a border, the neighbours across it (its *scope*). A request deep
//! inside its region concerns no one else and never leaves it.
//!
//! The rule is exact inside the areas: a rider at `p` in region `R` and a
//! driver at `q` within the radius of `p` have `dist(q, R) <= dist(q, p) <=
//! radius`, so `R` is in the driver's scope and the rider's node holds every
//! driver that a node holding everything would offer it (the property test
//! below checks this against the whole pool). The converse holds too, so the
//! driver's owner holds the rider of any claim made on its driver. A
//! position outside every area is owned by the nearest region and scoped
//! the same way, from its own position; near it, a rider of another region
//! may miss it.
//!
//! What is decided about requests follows them: a claim, answer or commit
//! goes to every region that holds its rider or its driver (the union of
//! their scopes), so every node that can see a request also sees what was
//! decided about it, and drops it under the same rule.
//!
//! Every node must draw the same halos, so the layout (region ids, areas and
//! the radius) is hashed into a fingerprint that peers compare at hello; a
//! mismatch is refused. Two regions are *neighbours* when their areas lie
//! within twice the radius: a commit's scope spans at most that far (a
//! rider's region and its driver's may each reach a third region), so
//! sessions between neighbours carry every document straight to every node
//! that needs it.

use std::sync::Arc;

use geo::{BoundingRect, Polygon, Rect};
use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

use crate::adoption::{ADOPTION_RULE, Rankings, RegionSet};
use crate::convergence::EVERY_REGION;
use crate::geodesy::Position;
use crate::regions::{Region, Regions, area_km};

/// A region, by its place in the layout's id order.
pub type RegionIndex = u16;

/// The regions a document goes to: sorted, without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Scope(Vec<RegionIndex>);

impl Scope {
    pub fn of(regions: impl IntoIterator<Item = RegionIndex>) -> Self {
        let mut regions: Vec<RegionIndex> = regions.into_iter().collect();
        regions.sort_unstable();
        regions.dedup();
        Self(regions)
    }

    pub fn contains(&self, region: RegionIndex) -> bool {
        self.0.binary_search(&region).is_ok()
    }

    /// Whether the two share a region.
    pub fn intersects(&self, other: &Scope) -> bool {
        self.0.iter().any(|r| other.contains(*r))
    }

    pub fn union(&self, other: &Scope) -> Scope {
        Self::of(self.0.iter().chain(&other.0).copied())
    }

    pub fn regions(&self) -> &[RegionIndex] {
        &self.0
    }

    /// As a file name part: `0.3.7`.
    pub fn to_file_part(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        parts.join(".")
    }

    /// Reads [`Scope::to_file_part`]'s form back.
    pub fn from_file_part(text: &str) -> Option<Self> {
        let regions: Option<Vec<RegionIndex>> = text.split('.').map(|p| p.parse().ok()).collect();
        let scope = Self::of(regions?);
        (scope.to_file_part() == text).then_some(scope)
    }
}

/// A region as the halos see it: its area and, to skip most distance
/// computations, its bounding box grown by at least the radius.
#[derive(Debug, Clone)]
struct Zone {
    id: String,
    area: Polygon<f64>,
    reach_box: Option<Rect<f64>>,
}

/// The region layout and pickup radius every node of a mesh shares.
///
/// A node started without region files has no map to draw halos on: its
/// layout is *unmapped*, every region counts as one (index 0, shown as
/// [`EVERY_REGION`]), and every document goes to every peer. Peers compare
/// fingerprints, so mapped and unmapped nodes never mix.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Empty when unmapped.
    zones: Vec<Zone>,
    radius_km: f64,
    /// `neighbours[a][b]`: the areas of `a` and `b` lie within twice the
    /// radius (a region is its own neighbour).
    neighbours: Vec<Vec<bool>>,
    /// Who serves each region's area while it is down (see
    /// [`crate::adoption`]).
    adopters: Rankings,
    fingerprint: u64,
}

/// Where this node's own requests go: its layout and its region, held
/// outside the core so that intake scopes a request before it takes the
/// core's lock (the group commit then only writes it).
#[derive(Debug, Clone)]
pub struct OwnHalo {
    layout: Arc<Layout>,
    region: RegionIndex,
}

impl OwnHalo {
    pub fn new(layout: Arc<Layout>, region: RegionIndex) -> Self {
        OwnHalo { layout, region }
    }

    /// The scope of a request this node accepts at `position`.
    pub fn scope_of(&self, position: Position) -> Scope {
        self.layout.scope_of(self.region, position)
    }
}

/// Kilometres per degree of latitude, rounded down: boxes grown with it are
/// never too small.
const KM_PER_DEGREE: f64 = 110.0;

impl Layout {
    pub fn new(regions: &Regions, radius_km: f64) -> Self {
        let zones: Vec<Zone> = regions
            .iter()
            .map(|r| Zone {
                id: r.id.clone(),
                area: r.area.clone(),
                reach_box: reach_box(&r.area, radius_km),
            })
            .collect();
        let neighbours = regions
            .iter()
            .map(|a| {
                regions
                    .iter()
                    .map(|b| a.id == b.id || areas_km(a, b) <= 2.0 * radius_km)
                    .collect()
            })
            .collect::<Vec<Vec<bool>>>();
        let all: Vec<&Region> = regions.iter().collect();
        let adopters = Rankings::new(&all, areas_km, |a, b| {
            neighbours[usize::from(a)][usize::from(b)]
        });
        Self {
            fingerprint: fingerprint(regions, radius_km),
            zones,
            radius_km,
            neighbours,
            adopters,
        }
    }

    /// No region files: every region is one, and everything goes
    /// everywhere.
    pub fn unmapped(radius_km: f64) -> Self {
        Self {
            zones: Vec::new(),
            radius_km,
            neighbours: vec![vec![true]],
            adopters: Rankings::default(),
            fingerprint: 0,
        }
    }

    pub fn index_of(&self, region: &str) -> Option<RegionIndex> {
        if self.zones.is_empty() {
            return Some(0);
        }
        let i = self.zones.iter().position(|z| z.id == region)?;
        RegionIndex::try_from(i).ok()
    }

    pub fn id_of(&self, region: RegionIndex) -> Option<&str> {
        if self.zones.is_empty() {
            return (region == 0).then_some(EVERY_REGION);
        }
        self.zones.get(usize::from(region)).map(|z| z.id.as_str())
    }

    pub fn radius_km(&self) -> f64 {
        self.radius_km
    }

    /// Equal on nodes whose region files and radius are equal.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The scope of a request at `position` owned by `owner`: its owner's
    /// region and every region whose area lies within the radius.
    pub fn scope_of(&self, owner: RegionIndex, position: Position) -> Scope {
        let (lat, lon) = (position.lat, position.lon);
        let near = self.zones.iter().enumerate().filter_map(|(i, zone)| {
            let maybe = zone.reach_box.is_none_or(|b| {
                (b.min().y..=b.max().y).contains(&lat) && (b.min().x..=b.max().x).contains(&lon)
            });
            let within = maybe && area_km(&zone.area, position) <= self.radius_km;
            within.then(|| RegionIndex::try_from(i).ok()).flatten()
        });
        Scope::of(near.chain([owner]))
    }

    /// Whether nodes of these regions keep a session (see the module doc).
    pub fn are_neighbours(&self, a: RegionIndex, b: RegionIndex) -> bool {
        self.neighbours
            .get(usize::from(a))
            .and_then(|row| row.get(usize::from(b)))
            .copied()
            .unwrap_or(false)
    }

    /// Who serves `region`'s area while the regions of `down` are down
    /// (see [`crate::adoption`]); `None` when no neighbour is up, and
    /// always when the layout is unmapped.
    pub fn adopter_of(&self, region: RegionIndex, down: RegionSet) -> Option<RegionIndex> {
        self.adopters.adopter_of(region, down)
    }

    /// The regions `adopter` serves besides its own while `down` are down.
    pub fn adopted_by(&self, adopter: RegionIndex, down: RegionSet) -> RegionSet {
        self.adopters.adopted_by(adopter, down)
    }

    /// How many regions the layout has (one when unmapped).
    pub fn region_count(&self) -> usize {
        self.zones.len().max(1)
    }

    /// The regions neighbouring `region`, itself included.
    pub fn neighbours_of(&self, region: RegionIndex) -> impl Iterator<Item = RegionIndex> + '_ {
        (0..self.zones.len())
            .filter_map(|i| RegionIndex::try_from(i).ok())
            .filter(move |b| self.are_neighbours(region, *b))
    }
}

/// The area's bounding box grown by at least `km` on every side; `None`
/// where that box would reach a pole or cross the antimeridian (every
/// position is then measured exactly).
fn reach_box(area: &Polygon<f64>, km: f64) -> Option<Rect<f64>> {
    let rect = area.bounding_rect()?;
    let dlat = km / KM_PER_DEGREE;
    let (min_lat, max_lat) = (rect.min().y - dlat, rect.max().y + dlat);
    let widest = min_lat.abs().max(max_lat.abs());
    if widest >= 89.0 {
        return None;
    }
    let dlon = km / (KM_PER_DEGREE * widest.to_radians().cos());
    let (min_lon, max_lon) = (rect.min().x - dlon, rect.max().x + dlon);
    if min_lon < -180.0 || max_lon > 180.0 {
        return None;
    }
    Some(Rect::new(
        geo::coord! { x: min_lon, y: min_lat },
        geo::coord! { x: max_lon, y: max_lat },
    ))
}

/// The distance between two areas: between non-overlapping polygons it is
/// reached at a vertex of one of them.
pub(crate) fn areas_km(a: &Region, b: &Region) -> f64 {
    let from = |x: &Region, y: &Region| {
        x.area
            .exterior()
            .points()
            .map(|p| {
                area_km(
                    &y.area,
                    Position {
                        lat: p.y(),
                        lon: p.x(),
                    },
                )
            })
            .fold(f64::INFINITY, f64::min)
    };
    from(a, b).min(from(b, a))
}

/// SHA-256 of the layout, cut to 64 bits: ids, every area coordinate, the
/// radius and the adoption rule, in a fixed order and encoding.
fn fingerprint(regions: &Regions, radius_km: f64) -> u64 {
    let mut hash = Context::new(&SHA256);
    hash.update(&radius_km.to_bits().to_le_bytes());
    hash.update(ADOPTION_RULE.as_bytes());
    for region in regions.iter() {
        hash.update(&(region.id.len() as u64).to_le_bytes());
        hash.update(region.id.as_bytes());
        for ring in std::iter::once(region.area.exterior()).chain(region.area.interiors()) {
            hash.update(&(ring.0.len() as u64).to_le_bytes());
            for c in &ring.0 {
                hash.update(&c.x.to_bits().to_le_bytes());
                hash.update(&c.y.to_bits().to_le_bytes());
            }
        }
    }
    let digest = hash.finish();
    u64::from_le_bytes(
        digest.as_ref()[..8]
            .try_into()
            .expect("SHA-256 has 32 bytes"),
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use proptest::prelude::*;

    use super::*;
    use crate::geodesy::haversine_km;
    use crate::region_grid::{self as grid, GridArgs};

    fn shipped() -> Regions {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../regions");
        Regions::load_dir(&dir).expect("the shipped regions load")
    }

    fn grid(rows: u16, cols: u16) -> (tempfile::TempDir, Regions) {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("regions");
        let regions = grid::write(&GridArgs::for_test(rows, cols, &out)).expect("a grid");
        (dir, regions)
    }

    /// A request and the region that owns it.
    fn owned(regions: &Regions, layout: &Layout, lat: f64, lon: f64) -> (Position, RegionIndex) {
        let position = Position { lat, lon };
        let owner = layout
            .index_of(&regions.route(position).id)
            .expect("a routed region is in the layout");
        (position, owner)
    }

    /// Against the whole pool: every driver within the radius of a rider
    /// inside an area is in the scope of the rider's region, and the
    /// rider is in the scope of the driver's owner (who answers its claim).
    fn halo_pool_is_the_whole_pool_within_the_radius(
        regions: &Regions,
        layout: &Layout,
        rider: (f64, f64),
        drivers: &[(f64, f64)],
    ) -> Result<(), TestCaseError> {
        let (rider, rider_region) = owned(regions, layout, rider.0, rider.1);
        prop_assume!(regions.place(rider).inside);
        let rider_scope = layout.scope_of(rider_region, rider);
        let whole: Vec<(Position, RegionIndex)> = drivers
            .iter()
            .map(|(lat, lon)| owned(regions, layout, *lat, *lon))
            .collect();
        let within = |d: &Position| haversine_km(rider, *d) <= layout.radius_km();
        let seen: Vec<&(Position, RegionIndex)> = whole
            .iter()
            .filter(|(d, owner)| layout.scope_of(*owner, *d).contains(rider_region))
            .collect();
        let expected: Vec<&(Position, RegionIndex)> =
            whole.iter().filter(|(d, _)| within(d)).collect();
        let seen_within: Vec<&(Position, RegionIndex)> =
            seen.into_iter().filter(|(d, _)| within(d)).collect();
        prop_assert_eq!(&seen_within, &expected);
        for (_, owner) in expected {
            prop_assert!(rider_scope.contains(*owner));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn shipped_halos_hold_every_driver_a_single_node_would_offer(
            rider in (23.70f64..23.90, 90.33f64..90.48),
            drivers in prop::collection::vec((23.68f64..23.92, 90.31f64..90.50), 1..40),
        ) {
            let regions = shipped();
            let layout = Layout::new(&regions, 5.0);
            halo_pool_is_the_whole_pool_within_the_radius(&regions, &layout, rider, &drivers)?;
        }

        #[test]
        fn grid_halos_hold_every_driver_a_single_node_would_offer(
            rider in (23.60f64..23.95, 90.30f64..90.55),
            drivers in prop::collection::vec((23.58f64..23.97, 90.28f64..90.57), 1..40),
            radius in 0.5f64..6.0,
        ) {
            let (_dir, regions) = grid(7, 7);
            let layout = Layout::new(&regions, radius);
            halo_pool_is_the_whole_pool_within_the_radius(&regions, &layout, rider, &drivers)?;
        }
    }

    #[test]
    fn interior_requests_stay_home_and_border_ones_reach_across() {
        let (_dir, regions) = grid(7, 7);
        let layout = Layout::new(&regions, 1.0);
        let index = |id: &str| layout.index_of(id).expect("a grid cell");
        let cell = regions.get("grid-r3c3").expect("a grid cell");
        let home = index("grid-r3c3");
        assert_eq!(layout.scope_of(home, cell.centroid()).regions(), &[home]);
        let rect = cell.area.bounding_rect().expect("an area");
        let (north, east) = (rect.max().y - 0.0001, rect.max().x - 0.0001);
        let east_edge = Position {
            lat: cell.centroid().lat,
            lon: east,
        };
        assert_eq!(
            layout.scope_of(home, east_edge),
            Scope::of([home, index("grid-r3c4")])
        );
        let corner = Position {
            lat: north,
            lon: east,
        };
        let four = ["grid-r3c3", "grid-r3c4", "grid-r4c3", "grid-r4c4"].map(index);
        assert_eq!(layout.scope_of(home, corner), Scope::of(four));
        // The owner is always in scope, even for a position it does not hold.
        let other = index("grid-r0c0");
        assert!(layout.scope_of(other, cell.centroid()).contains(other));
    }

    #[test]
    fn neighbours_are_regions_within_twice_the_radius() {
        let (_dir, regions) = grid(7, 7);
        let layout = Layout::new(&regions, 0.1);
        let centre = layout
            .index_of(&regions.iter().nth(24).expect("49").id)
            .expect("indexed");
        // Touching cells (edges and corners) and itself: 9 in a grid.
        assert_eq!(layout.neighbours_of(centre).count(), 9);
        let wide = Layout::new(&regions, 50.0);
        assert_eq!(wide.neighbours_of(centre).count(), 49);
    }

    #[test]
    fn the_fingerprint_changes_with_the_radius_and_the_areas() {
        let regions = shipped();
        let (_dir, grid) = grid(1, 3);
        let a = Layout::new(&regions, 5.0).fingerprint();
        assert_eq!(a, Layout::new(&shipped(), 5.0).fingerprint());
        assert_ne!(a, Layout::new(&regions, 5.5).fingerprint());
        assert_ne!(a, Layout::new(&grid, 5.0).fingerprint());
    }

    #[test]
    fn scopes_round_trip_through_file_names_and_refuse_others() {
        let scope = Scope::of([7, 0, 3, 3]);
        assert_eq!(scope.to_file_part(), "0.3.7");
        assert_eq!(Scope::from_file_part("0.3.7"), Some(scope));
        for bad in ["", "3.0", "0..3", "x", "0.3.3"] {
            assert_eq!(Scope::from_file_part(bad), None, "{bad:?}");
        }
    }
}
