//! The map the simulated nodes serve.

use super::*;

/// The map the simulated nodes serve: the regions, their halos, and where
/// traffic comes from. Node `i` serves region `i mod regions`, so a fourth
/// node on three regions is a second replica.
pub(super) struct World {
    /// Holds a generated layout's files.
    pub(super) _files: Option<tempfile::TempDir>,
    pub(super) regions: Regions,
    pub(super) layout: Arc<Layout>,
    /// Traffic clusters around region corners (where borders are crossed),
    /// or, if empty, is uniform over `bounds`.
    pub(super) corners: Vec<Position>,
    pub(super) bounds: (Position, Position),
    /// Client posts per region per tick, on average.
    pub(super) rate: f64,
}

impl World {
    pub(super) fn load(files: Option<tempfile::TempDir>, regions: Regions, rate: f64) -> Arc<Self> {
        let layout = Arc::new(Layout::new(&regions, PICKUP_KM));
        let mut corners: Vec<Position> = regions
            .iter()
            .flat_map(|r| r.area.exterior().points())
            .map(|p| Position {
                lat: decimals::round(p.y(), 6),
                lon: decimals::round(p.x(), 6),
            })
            .collect();
        corners.sort_by(|a, b| (a.lat, a.lon).partial_cmp(&(b.lat, b.lon)).expect("finite"));
        corners.dedup();
        let (first, last) = (corners[0], corners[corners.len() - 1]);
        let (lons_min, lons_max) = corners.iter().fold((f64::MAX, f64::MIN), |(lo, hi), c| {
            (lo.min(c.lon), hi.max(c.lon))
        });
        let bounds = (
            Position {
                lat: first.lat,
                lon: lons_min,
            },
            Position {
                lat: last.lat,
                lon: lons_max,
            },
        );
        Arc::new(Self {
            _files: files,
            regions,
            layout,
            corners,
            bounds,
            rate,
        })
    }

    /// The shipped three Dhaka regions.
    pub(super) fn shipped() -> Arc<Self> {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../regions");
        Self::load(
            None,
            Regions::load_dir(&dir).expect("the shipped regions"),
            0.1,
        )
    }

    /// `rows x cols` generated regions over Dhaka, each posted to `rate`
    /// times a tick.
    pub(super) fn grid(rows: u16, cols: u16, rate: f64) -> Arc<Self> {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let args = GridArgs::for_test(rows, cols, &dir.path().join("regions"));
        let regions = region_grid::write(&args).expect("a grid layout");
        Self::load(Some(dir), regions, rate)
    }

    /// `rows x cols` square regions of `deg` degrees, traffic uniform over
    /// them: the same per-region load whatever the count.
    pub(super) fn uniform_grid(rows: u16, cols: u16, deg: f64, rate: f64) -> Arc<Self> {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let args = GridArgs::for_test(rows, cols, &dir.path().join("regions")).with_cells_of(deg);
        let regions = region_grid::write(&args).expect("a grid layout");
        let mut world = Self::load(Some(dir), regions, rate);
        Arc::get_mut(&mut world).expect("just made").corners.clear();
        world
    }

    pub(super) fn region_of(&self, node: usize) -> &Region {
        self.regions
            .iter()
            .nth(node % self.region_count())
            .expect("a region")
    }

    pub(super) fn region_count(&self) -> usize {
        self.regions.iter().count()
    }
}
