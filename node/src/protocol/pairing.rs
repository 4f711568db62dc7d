//! One matching round: greedy closest-pair-first within a pickup radius.
//!
//! The rule: repeatedly take the closest (rider, driver) pair of all that are
//! still unmatched, breaking distance ties by rider id and then driver id,
//! until no pair lies within the radius. Every node that holds the same
//! candidates computes the same pairs, which is what lets regions agree on a
//! match across a border without asking each other who should have it.
//!
//! [`greedy`] keeps each rider's best available driver in a queue ordered by
//! the rule, refreshed lazily when that driver is taken: the least offer whose
//! driver is still free is the closest pair of all that remain, because
//! drivers only ever leave and every other rider's true best is no closer
//! than its offer.
//! Drivers sit in a uniform grid (see [`DriverGrid`]); [`greedy_naive`] sorts
//! all n x m pairs: it is the oracle for the property tests and the baseline
//! in the benchmarks.
//!
//! Distances are ordered by the exact haversine kilometres that the oracle
//! uses; the grid only narrows the drivers a rider has to look at, using
//! chord lengths between 3-D unit vectors (see [`ride_types::geodesy`]), which grow
//! with great-circle distance. Drivers whose chord is within rounding of the
//! nearest one all get the exact haversine test, so the two always agree.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use ride_types::api::Position;
use ride_types::geodesy::{chord_for_km, haversine_km, unit_vector};
use ride_types::ids::RequestId;

use cells::{Cells, Slot};

/// A rider or a driver that can be matched in this round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub id: RequestId,
    pub position: Position,
}

/// A pair chosen by a round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    pub rider: RequestId,
    pub driver: RequestId,
    pub pickup_km: f64,
}

/// Greedy matching with a spatial index, in O((n + m) log n) expected time
/// for points spread over an area. Ids are unique on each side (UUIDv7); the
/// pairs come in the order the rule commits them.
pub fn greedy(riders: &[Candidate], drivers: &[Candidate], max_pickup_km: f64) -> Vec<Pair> {
    if riders.is_empty() || drivers.is_empty() || max_pickup_km.is_nan() || max_pickup_km < 0.0 {
        return Vec::new();
    }
    let riders = ById::new(riders);
    let drivers = ById::new(drivers);
    let mut pool = DriverGrid::new(&drivers, max_pickup_km);
    // Every rider's first offer is known up front: those are sorted once and
    // read in order, and only offers made again, after a driver went to a
    // closer rider, wait in a heap. Taking the lesser head of the two is the
    // order of a single heap of everything, at a fraction of its cost.
    let mut first: Vec<Offer> = pool
        .in_grid_order(&riders)
        .iter()
        .filter_map(|(rider, place)| pool.best_for(*rider, place))
        .collect();
    first.sort_unstable();
    let mut first = first.into_iter().peekable();
    let mut again: BinaryHeap<Reverse<Offer>> = BinaryHeap::new();
    let mut pairs = Vec::with_capacity(riders.len().min(drivers.len()));
    loop {
        let offer = match (first.peek(), again.peek()) {
            (Some(head), Some(Reverse(other))) if other < head => again.pop(),
            (Some(_), _) => first.next().map(Reverse),
            (None, _) => again.pop(),
        };
        let Some(Reverse(offer)) = offer else {
            break;
        };
        if pool.take(offer.driver) {
            pairs.push(Pair {
                rider: riders.ids[offer.rider],
                driver: drivers.ids[offer.driver],
                pickup_km: offer.km,
            });
        } else if let Some(next) = pool.best_for(offer.rider, &riders.places[offer.rider]) {
            // The driver went to a closer rider; this rider's next best can
            // only be farther, so it rejoins the queue in order.
            again.push(Reverse(next));
        }
    }
    pairs
}

/// Greedy matching by sorting every pair: O(n·m log(n·m)).
pub fn greedy_naive(riders: &[Candidate], drivers: &[Candidate], max_pickup_km: f64) -> Vec<Pair> {
    let mut all: Vec<Pair> = riders
        .iter()
        .flat_map(|r| {
            drivers.iter().map(move |d| Pair {
                rider: r.id,
                driver: d.id,
                pickup_km: haversine_km(d.position, r.position),
            })
        })
        .filter(|p| p.pickup_km <= max_pickup_km)
        .collect();
    all.sort_by(|a, b| {
        a.pickup_km
            .total_cmp(&b.pickup_km)
            .then(a.rider.cmp(&b.rider))
            .then(a.driver.cmp(&b.driver))
    });
    let mut riders_taken = std::collections::HashSet::new();
    let mut drivers_taken = std::collections::HashSet::new();
    all.retain(|p| {
        let free = !riders_taken.contains(&p.rider) && !drivers_taken.contains(&p.driver);
        if free {
            riders_taken.insert(p.rider);
            drivers_taken.insert(p.driver);
        }
        free
    });
    all
}

/// One side of the round sorted by id, so that comparing two indices
/// compares the ids (the tie-break) and an offer carries no ids.
struct ById {
    ids: Vec<RequestId>,
    places: Vec<Place>,
}

/// Where a candidate is, in both forms a search reads, side by side so that
/// looking a candidate up costs one cache miss rather than two.
#[derive(Clone, Copy)]
struct Place {
    unit: [f64; 3],
    position: Position,
}

impl ById {
    fn new(candidates: &[Candidate]) -> Self {
        let mut candidates = candidates.to_vec();
        // Callers list requests in id order already, which this sort detects.
        candidates.sort_unstable_by_key(|c| c.id);
        Self {
            ids: candidates.iter().map(|c| c.id).collect(),
            places: candidates
                .iter()
                .map(|c| Place {
                    unit: unit_vector(c.position),
                    position: c.position,
                })
                .collect(),
        }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// A rider's best available driver, ordered as the greedy rule orders pairs
/// (indices are in id order, see [`ById`]).
#[derive(Debug, Clone, Copy)]
struct Offer {
    km: f64,
    rider: usize,
    driver: usize,
}

impl Ord for Offer {
    fn cmp(&self, other: &Self) -> Ordering {
        self.km
            .total_cmp(&other.km)
            .then(self.rider.cmp(&other.rider))
            .then(self.driver.cmp(&other.driver))
    }
}

impl PartialOrd for Offer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Offer {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Offer {}

/// Chord lengths are compared with this slack before the exact haversine
/// distance decides: far wider than floating-point error, far narrower than
/// any real difference in distance.
const CHORD_SLACK_RELATIVE: f64 = 1e-9;
const CHORD_SLACK_ABSOLUTE: f64 = 1e-12;

/// The chord up to which a driver may still beat one at `chord` once exact
/// haversine distances decide.
fn window(chord: f64) -> f64 {
    chord * (1.0 + CHORD_SLACK_RELATIVE) + CHORD_SLACK_ABSOLUTE
}

/// The available drivers in a uniform grid over the plane tangent to their
/// mean position.
///
/// A driver's grid position is its unit vector projected orthogonally onto
/// that plane. The projection never lengthens a distance, so a cell's
/// distance from a rider's projection is a lower bound on the chord to every
/// driver in it: the search stops at exact bounds for any positions on the
/// sphere, across the antimeridian and at the poles. Far from the centre the
/// grid only gets coarser (the far hemisphere folds onto the near one), never
/// wrong.
///
/// Drivers on one exact spot all tie, so a search reads every one of them
/// there (as the R-tree before it did): a thousand drivers at one GPS fix
/// cost a thousand chord tests per rider near it.
///
/// Taking a driver is O(1): it swaps places with the last available driver
/// of its cell. Whenever half the drivers have gone, the grid is rebuilt over
/// the rest with cells sized to them, so that late searches, which reach
/// farther, cross a few big cells rather than many empty small ones.
struct DriverGrid<'a> {
    drivers: &'a ById,
    max_km: f64,
    /// Chord bound for the radius, padded so rounding never drops a driver
    /// that the exact haversine test would keep.
    max_chord: f64,
    /// Orthonormal axes of the tangent plane.
    axes: [[f64; 3]; 2],
    /// Each driver's projection onto the tangent plane.
    planar: Vec<[f64; 2]>,
    taken: Vec<bool>,
    remaining: usize,
    cells: Cells,
    /// Drivers a search found within the window of the nearest one so far;
    /// kept between searches to reuse its allocation.
    near: Vec<(f64, Slot)>,
}

impl<'a> DriverGrid<'a> {
    fn new(drivers: &'a ById, max_km: f64) -> Self {
        let axes = tangent_axes(&drivers.places);
        let planar: Vec<[f64; 2]> = drivers
            .places
            .iter()
            .map(|p| project(&axes, &p.unit))
            .collect();
        let everyone: Vec<usize> = (0..drivers.len()).collect();
        let cells = Cells::build(&everyone, &planar, &drivers.places);
        Self {
            drivers,
            max_km,
            max_chord: window(chord_for_km(max_km)),
            axes,
            planar,
            taken: vec![false; drivers.len()],
            remaining: drivers.len(),
            cells,
            near: Vec::new(),
        }
    }

    /// Removes the driver from the pool; false if it was already taken.
    fn take(&mut self, driver: usize) -> bool {
        if self.taken[driver] {
            return false;
        }
        self.taken[driver] = true;
        self.remaining -= 1;
        let cells = &mut self.cells;
        let cell = cells.cell_of[driver];
        let slot = cells.slot_of[driver];
        cells.available[cell] -= 1;
        let last = cells.start[cell] + cells.available[cell];
        cells.slots.swap(slot, last);
        cells.slot_of[cells.slots[slot].driver] = slot;
        if self.remaining > 0 && self.remaining * 2 <= cells.built_for {
            let rest: Vec<usize> = (0..self.taken.len()).filter(|&d| !self.taken[d]).collect();
            self.cells = Cells::build(&rest, &self.planar, &self.drivers.places);
        }
        true
    }

    /// The riders ordered by the grid cell they fall in, row by row: asked
    /// for their nearest drivers in this order, consecutive searches read
    /// the same few rows of cells, which stay in cache (in id order, which
    /// is random in space, nearly every search missed it).
    fn in_grid_order(&self, riders: &ById) -> Vec<(usize, Place)> {
        let mut keyed: Vec<(i64, i64, usize)> = riders
            .places
            .iter()
            .enumerate()
            .map(|(rider, place)| {
                let [tu, tv] = self
                    .cells
                    .grid_coordinates(project(&self.axes, &place.unit));
                (tv.floor() as i64, tu.floor() as i64, rider)
            })
            .collect();
        keyed.sort_unstable();
        // Copied next to each other, so that the searches read them in
        // sequence.
        keyed
            .into_iter()
            .map(|(_, _, rider)| (rider, riders.places[rider]))
            .collect()
    }

    /// The nearest available driver within the radius; among drivers at the
    /// same distance, the lowest id.
    fn best_for(&mut self, rider: usize, place: &Place) -> Option<Offer> {
        let here = place.unit;
        let cells = &self.cells;
        let [tu, tv] = cells.grid_coordinates(project(&self.axes, &here));
        let (column, row) = (tu.floor(), tv.floor());
        let (fu, fv) = (tu - column, tv - row);
        let (column, row) = (column as i64, row as i64);
        let (columns, rows) = (cells.columns as i64, cells.rows as i64);
        // Only drivers within `limit` can matter: the radius at first, then
        // the window of the nearest driver found so far.
        let mut limit = self.max_chord;
        let mut nearest = f64::INFINITY;
        self.near.clear();
        for ring in cells.first_ring(column, row).. {
            if ring > 0 {
                // Every cell of this ring lies outside the square of the
                // rings before it, at least this far from the rider.
                let k = ring as f64;
                let gap = (fu + k - 1.0).min(k - fu).min(fv + k - 1.0).min(k - fv);
                if gap * cells.size > limit + CHORD_SLACK_ABSOLUTE {
                    break;
                }
            }
            let (left, right) = (column - ring, column + ring);
            let (bottom, top) = (row - ring, row + ring);
            if left < 0 && right >= columns && bottom < 0 && top >= rows {
                break;
            }
            let mut visit = |c: i64, r: i64| {
                // The rider's distance from the cell, in cell units.
                let gap = |cell: i64, at: f64, own: i64| match cell.cmp(&own) {
                    Ordering::Greater => cell as f64 - at,
                    Ordering::Less => at - (cell + 1) as f64,
                    Ordering::Equal => 0.0,
                };
                let (gu, gv) = (gap(c, tu, column), gap(r, tv, row));
                let reach = limit + CHORD_SLACK_ABSOLUTE;
                if (gu * gu + gv * gv) * cells.size * cells.size > reach * reach {
                    return;
                }
                let cell = (r * columns + c) as usize;
                let from = cells.start[cell];
                for slot in &cells.slots[from..from + cells.available[cell]] {
                    let squared = squared_chord(&slot.place.unit, &here);
                    if squared <= limit * limit {
                        self.near.push((squared, *slot));
                        if squared < nearest {
                            nearest = squared;
                            limit = limit.min(window(squared.sqrt()));
                        }
                    }
                }
            };
            let (c0, c1) = (left.max(0), right.min(columns - 1));
            for r in [bottom, top] {
                if (0..rows).contains(&r) {
                    (c0..=c1).for_each(|c| visit(c, r));
                }
                if ring == 0 {
                    break;
                }
            }
            let (r0, r1) = ((bottom + 1).max(0), (top - 1).min(rows - 1));
            for c in [left, right] {
                if ring > 0 && (0..columns).contains(&c) {
                    (r0..=r1).for_each(|r| visit(c, r));
                }
            }
        }
        self.nearest_found(limit, rider, place)
    }

    /// Of the drivers [`Self::best_for`] gathered, the nearest on the sphere
    /// within the final window and the radius; the lowest id breaks a tie.
    #[inline]
    fn nearest_found(&self, limit: f64, rider: usize, place: &Place) -> Option<Offer> {
        self.near
            .iter()
            .filter(|(squared, _)| *squared <= limit * limit)
            .map(|(_, slot)| {
                let km = haversine_km(slot.place.position, place.position);
                (km, slot.driver)
            })
            .filter(|(km, _)| *km <= self.max_km)
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
            .map(|(km, driver)| Offer { km, rider, driver })
    }
}

/// Two orthonormal vectors spanning the plane tangent to the sphere at the
/// drivers' mean direction (any plane if they cancel out).
fn tangent_axes(places: &[Place]) -> [[f64; 3]; 2] {
    let mut centre = places.iter().fold([0.0; 3], |sum, p| {
        [sum[0] + p.unit[0], sum[1] + p.unit[1], sum[2] + p.unit[2]]
    });
    let norm = dot(&centre, &centre).sqrt();
    centre = if norm > 1e-9 {
        centre.map(|x| x / norm)
    } else {
        [0.0, 0.0, 1.0]
    };
    // Start from the coordinate axis least aligned with the centre.
    let smallest = (0..3)
        .min_by(|&a, &b| centre[a].abs().total_cmp(&centre[b].abs()))
        .unwrap_or(0);
    let mut axis = [0.0; 3];
    axis[smallest] = 1.0;
    let along = dot(&axis, &centre);
    let first = [
        axis[0] - along * centre[0],
        axis[1] - along * centre[1],
        axis[2] - along * centre[2],
    ];
    let length = dot(&first, &first).sqrt();
    let first = first.map(|x| x / length);
    let second = [
        centre[1] * first[2] - centre[2] * first[1],
        centre[2] * first[0] - centre[0] * first[2],
        centre[0] * first[1] - centre[1] * first[0],
    ];
    [first, second]
}

fn project(axes: &[[f64; 3]; 2], unit: &[f64; 3]) -> [f64; 2] {
    [dot(&axes[0], unit), dot(&axes[1], unit)]
}

fn dot(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn squared_chord(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    let d = [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
    dot(&d, &d)
}
mod cells;
#[cfg(test)]
mod tests;
