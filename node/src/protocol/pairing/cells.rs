//! The grid [`super::DriverGrid`] searches: available drivers grouped by
//! cell over the tangent plane, cells sized to how many drivers there are
//! and how far they spread. Apart from the search because a build is about
//! memory layout (one slice per cell, available drivers first), the search
//! about distances.

use super::Place;
use ride_types::api::Position;

/// How many drivers a cell should hold on average, counted from the
/// drivers' side (the mean number sharing a driver's cell). A nearest-driver
/// search reads the rider's cell and usually some of its 8 neighbours: with
/// about 2 per cell that is a dozen or two chord tests; bigger cells mean
/// more tests per search, smaller ones more empty cells read.
const CELL_OCCUPANCY: f64 = 2.0;

/// The grid never has more cells than this per driver, whatever the spread:
/// it bounds memory when a few drivers sit far from a dense cluster.
const MAX_CELLS_PER_DRIVER: f64 = 8.0;

/// About 6 µm on the Earth: drivers closer than this share a cell.
const MIN_CELL_SIZE: f64 = 1e-12;

/// One build of the grid: drivers grouped by cell, row by row.
pub(super) struct Cells {
    origin: [f64; 2],
    pub(super) size: f64,
    pub(super) columns: usize,
    pub(super) rows: usize,
    /// Where each cell's drivers start in `slots`.
    pub(super) start: Vec<usize>,
    /// How many of them are still available: they come first.
    pub(super) available: Vec<usize>,
    pub(super) slots: Vec<Slot>,
    /// Per driver: its cell and its index in `slots`.
    pub(super) cell_of: Vec<usize>,
    pub(super) slot_of: Vec<usize>,
    /// How many drivers were available when this grid was built.
    pub(super) built_for: usize,
}

#[derive(Clone, Copy)]
pub(super) struct Slot {
    /// A copy of the driver's place: the search reads it where it reads
    /// the unit vector instead of missing the cache a second time.
    pub(super) place: Place,
    pub(super) driver: usize,
}

impl Cells {
    /// The first ring of cells around (`column`, `row`) that touches the
    /// grid: 0 for a rider on it, further out for one off it.
    #[inline]
    pub(super) fn first_ring(&self, column: i64, row: i64) -> i64 {
        let (columns, rows) = (self.columns as i64, self.rows as i64);
        (-column)
            .max(column - (columns - 1))
            .max(-row)
            .max(row - (rows - 1))
            .max(0)
    }

    /// Groups `drivers` by cell, with cells sized so that a driver shares its
    /// cell with about [`CELL_OCCUPANCY`] others wherever drivers are.
    pub(super) fn build(drivers: &[usize], planar: &[[f64; 2]], places: &[Place]) -> Self {
        let mut low = [f64::INFINITY; 2];
        let mut high = [f64::NEG_INFINITY; 2];
        for &d in drivers {
            for axis in 0..2 {
                low[axis] = low[axis].min(planar[d][axis]);
                high[axis] = high[axis].max(planar[d][axis]);
            }
        }
        let n = drivers.len() as f64;
        let (width, height) = (high[0] - low[0], high[1] - low[1]);
        // No more than MAX_CELLS_PER_DRIVER cells, and none smaller than
        // MIN_CELL_SIZE, which keeps a far rider's cell coordinates small.
        let fitted = |mut size: f64| {
            size = size.max(MIN_CELL_SIZE);
            while (width / size + 1.0) * (height / size + 1.0) > MAX_CELLS_PER_DRIVER * n + 1.0 {
                size *= 2.0;
            }
            size
        };
        // As if the drivers were spread evenly over their bounding box (or
        // along it, when it has no area).
        let even = (width * height * CELL_OCCUPANCY / n)
            .sqrt()
            .max(width.max(height) * CELL_OCCUPANCY / n);
        let mut cells = Self::empty(low, fitted(even), width, height, drivers.len());
        // Where drivers cluster, they share cells with many more than the
        // mean: shrink the cells by the square root of the excess once.
        let shared = cells.count(drivers, planar) / n;
        if shared > 2.0 * CELL_OCCUPANCY {
            let size = fitted(cells.size * (CELL_OCCUPANCY / shared).sqrt());
            cells = Self::empty(low, size, width, height, drivers.len());
            cells.count(drivers, planar);
        }
        cells.fill(drivers, planar, places);
        cells
    }

    fn empty(origin: [f64; 2], size: f64, width: f64, height: f64, n: usize) -> Self {
        let columns = (width / size) as usize + 1;
        let rows = (height / size) as usize + 1;
        Self {
            origin,
            size,
            columns,
            rows,
            start: vec![0; columns * rows + 1],
            available: vec![0; columns * rows],
            slots: Vec::with_capacity(n),
            cell_of: Vec::new(),
            slot_of: Vec::new(),
            built_for: n,
        }
    }

    /// Counts the drivers of each cell into `available`; returns the sum of
    /// the squared counts.
    fn count(&mut self, drivers: &[usize], planar: &[[f64; 2]]) -> f64 {
        self.available.fill(0);
        for &d in drivers {
            let cell = self.cell(planar[d]);
            self.available[cell] += 1;
        }
        self.available.iter().map(|&c| (c * c) as f64).sum()
    }

    /// Lays the counted drivers out cell by cell.
    fn fill(&mut self, drivers: &[usize], planar: &[[f64; 2]], places: &[Place]) {
        let mut next = 0;
        for (cell, &count) in self.available.iter().enumerate() {
            self.start[cell] = next;
            next += count;
        }
        self.start[self.available.len()] = next;
        let total = planar.len();
        self.cell_of = vec![usize::MAX; total];
        self.slot_of = vec![usize::MAX; total];
        let mut cursor = self.start.clone();
        self.slots = vec![
            Slot {
                place: Place {
                    unit: [0.0; 3],
                    position: Position { lat: 0.0, lon: 0.0 },
                },
                driver: usize::MAX,
            };
            drivers.len()
        ];
        for &d in drivers {
            let cell = self.cell(planar[d]);
            let slot = cursor[cell];
            cursor[cell] += 1;
            self.slots[slot] = Slot {
                place: places[d],
                driver: d,
            };
            self.cell_of[d] = cell;
            self.slot_of[d] = slot;
        }
    }

    /// A point's position in cell units from the grid's origin.
    pub(super) fn grid_coordinates(&self, point: [f64; 2]) -> [f64; 2] {
        [
            (point[0] - self.origin[0]) / self.size,
            (point[1] - self.origin[1]) / self.size,
        ]
    }

    /// The cell of a driver (always inside the grid: the origin and the size
    /// were taken from the drivers' own extent).
    fn cell(&self, point: [f64; 2]) -> usize {
        let [u, v] = self.grid_coordinates(point);
        debug_assert!(
            u >= 0.0 && (u as usize) < self.columns && v >= 0.0 && (v as usize) < self.rows
        );
        v as usize * self.columns + u as usize
    }
}
