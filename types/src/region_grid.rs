//! `node regions grid`: writes a layout of `rows x cols` square regions
//! covering a bounding box, one region file each, for trying the mesh with
//! many regions (`scripts/mesh.sh --regions DIR`, the simulation's layouts).
//!
//! Why generate rather than ship them: a 7 x 7 layout is 49 files whose
//! ports, datacenters and edges must agree, and a hand-edited copy drifts.
//! Cells share their edges exactly (every corner is computed once), so the
//! layout passes the node's overlap check, and the folder is loaded back
//! with the node's own loader before the command reports success.

use std::path::{Path, PathBuf};

use crate::regions::{Regions, RegionsError};
use clap::Args;
use serde_json::json;
use thiserror::Error;

/// Fly.io regions, assigned to cells in order and reused past the end
/// (a local mesh never replays to them; a real deployment edits its files).
const FLY_REGIONS: [&str; 35] = [
    "sin", "hkg", "bom", "nrt", "syd", "fra", "ams", "lhr", "cdg", "mad", "arn", "waw", "otp",
    "jnb", "iad", "ewr", "bos", "yyz", "yul", "atl", "mia", "ord", "dfw", "den", "phx", "lax",
    "sjc", "sea", "qro", "gdl", "bog", "scl", "eze", "gru", "gig",
];

#[derive(Debug, Args)]
pub struct GridArgs {
    /// Rows of regions, south to north.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=100))]
    rows: u16,
    /// Columns of regions, west to east.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=100))]
    cols: u16,
    /// The box the grid covers: `min_lat,min_lon,max_lat,max_lon` (default:
    /// the shipped regions' Dhaka).
    #[arg(
        long,
        value_delimiter = ',',
        allow_negative_numbers = true,
        default_value = "23.60,90.30,23.95,90.55"
    )]
    bbox: Vec<f64>,
    /// Where to write the files; created if missing, and it must hold no
    /// region file yet (the node loads every `.json` file of the folder).
    #[arg(long)]
    pub out: PathBuf,
    /// Region ids are `<prefix>-r<row>c<col>`.
    #[arg(long, default_value = "grid")]
    prefix: String,
    /// The first region's HTTP port on 127.0.0.1; the others count up.
    #[arg(long, default_value_t = 8101)]
    http_port: u16,
    /// The first region's QUIC port on 127.0.0.1; the others count up.
    #[arg(long, default_value_t = 9101)]
    quic_port: u16,
}

#[derive(Debug, Error)]
pub enum GridError {
    #[error(
        "--bbox must be min_lat,min_lon,max_lat,max_lon with min < max, inside [-90, 90] x [-180, 180]; got {0:?}"
    )]
    BadBox(Vec<f64>),
    #[error("{rows} x {cols} regions from port {first} would pass port 65535")]
    PortsRunOut { rows: u16, cols: u16, first: u16 },
    #[error("{0} already holds region files; give an empty or new folder")]
    NotEmpty(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the node refuses the layout it wrote: {0}")]
    Refused(#[from] RegionsError),
}

#[cfg(any(test, feature = "testing"))]
impl GridArgs {
    /// The default box (the shipped regions' Dhaka) and ports.
    pub fn for_test(rows: u16, cols: u16, out: &Path) -> Self {
        Self {
            rows,
            cols,
            bbox: vec![23.60, 90.30, 23.95, 90.55],
            out: out.to_owned(),
            prefix: "grid".into(),
            http_port: 8101,
            quic_port: 9101,
        }
    }

    /// Square cells of `deg` degrees from the default box's south-west
    /// corner: the layout grows with the grid.
    pub fn with_cells_of(self, deg: f64) -> Self {
        let (rows, cols) = (f64::from(self.rows), f64::from(self.cols));
        Self {
            bbox: vec![23.60, 90.30, 23.60 + rows * deg, 90.30 + cols * deg],
            ..self
        }
    }
}

/// Writes the layout and loads it back; returns what was written.
pub fn write(args: &GridArgs) -> Result<Regions, GridError> {
    let [min_lat, min_lon, max_lat, max_lon] = match args.bbox[..] {
        [a, b, c, d] => [a, b, c, d],
        _ => return Err(GridError::BadBox(args.bbox.clone())),
    };
    let sane = args.bbox.iter().all(|v| v.is_finite())
        && (-90.0..=90.0).contains(&min_lat)
        && (-90.0..=90.0).contains(&max_lat)
        && (-180.0..=180.0).contains(&min_lon)
        && (-180.0..=180.0).contains(&max_lon)
        && min_lat < max_lat
        && min_lon < max_lon;
    if !sane {
        return Err(GridError::BadBox(args.bbox.clone()));
    }
    let count = u32::from(args.rows) * u32::from(args.cols);
    let last_port = u32::from(args.http_port.max(args.quic_port)) + count - 1;
    if last_port > u32::from(u16::MAX) {
        return Err(GridError::PortsRunOut {
            rows: args.rows,
            cols: args.cols,
            first: args.http_port.max(args.quic_port),
        });
    }
    prepare(&args.out)?;

    // Every edge once, so that neighbours share their corners bit for bit.
    let lats = edges(min_lat, max_lat, args.rows);
    let lons = edges(min_lon, max_lon, args.cols);
    for row in 0..usize::from(args.rows) {
        for col in 0..usize::from(args.cols) {
            let index = row * usize::from(args.cols) + col;
            let id = format!("{}-r{row}c{col}", args.prefix);
            let (south, north, west, east) = (lats[row], lats[row + 1], lons[col], lons[col + 1]);
            let offset = u16::try_from(index).expect("bounded by the port check");
            let file = json!({
                "id": id,
                "name": format!("Grid row {row}, column {col}"),
                "fly_region": FLY_REGIONS[index % FLY_REGIONS.len()],
                "datacenter": id.replace('-', "_"),
                "area": {
                    "type": "Polygon",
                    "coordinates": [[
                        [west, south], [east, south], [east, north], [west, north], [west, south]
                    ]]
                },
                "mesh": {
                    "http": format!("127.0.0.1:{}", args.http_port + offset),
                    "quic": format!("127.0.0.1:{}", args.quic_port + offset),
                }
            });
            let path = args.out.join(format!("{id}.json"));
            let text = serde_json::to_string_pretty(&file).expect("JSON values serialise") + "\n";
            std::fs::write(&path, text).map_err(|source| GridError::Write { path, source })?;
        }
    }
    Ok(Regions::load_dir(&args.out)?)
}

/// `n + 1` edges from `min` to `max`, to the micro-degree (about 0.1 m).
fn edges(min: f64, max: f64, n: u16) -> Vec<f64> {
    (0..=n)
        .map(|i| {
            let at = min + (max - min) * f64::from(i) / f64::from(n);
            (at * 1e6).round() / 1e6
        })
        .collect()
}

fn prepare(out: &Path) -> Result<(), GridError> {
    let write_error = |source| GridError::Write {
        path: out.to_owned(),
        source,
    };
    std::fs::create_dir_all(out).map_err(write_error)?;
    for entry in std::fs::read_dir(out).map_err(write_error)? {
        let entry = entry.map_err(write_error)?;
        if entry.path().extension().is_some_and(|e| e == "json") {
            return Err(GridError::NotEmpty(out.to_owned()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geodesy::Position;

    fn args(rows: u16, cols: u16, out: &Path) -> GridArgs {
        GridArgs::for_test(rows, cols, out)
    }

    #[test]
    fn a_seven_by_seven_grid_loads_with_unique_ports_and_routes_each_cell_to_itself() {
        let dir = tempfile::tempdir().unwrap();
        let regions = write(&args(7, 7, dir.path())).unwrap();
        assert_eq!(regions.iter().count(), 49);
        let mut http: Vec<u16> = regions.iter().map(|r| r.mesh.http.port()).collect();
        let mut quic: Vec<u16> = regions.iter().map(|r| r.mesh.quic.port()).collect();
        http.sort_unstable();
        http.dedup();
        quic.sort_unstable();
        quic.dedup();
        assert_eq!((http.len(), quic.len()), (49, 49));
        assert_eq!(http.first(), Some(&8101));
        // A point a little inside each cell's south-west corner is that cell's.
        let lats = edges(23.60, 23.95, 7);
        let lons = edges(90.30, 90.55, 7);
        for (row, south) in lats.iter().take(7).enumerate() {
            for (col, west) in lons.iter().take(7).enumerate() {
                let placed = regions.place(Position {
                    lat: south + 0.001,
                    lon: west + 0.001,
                });
                assert!(placed.inside);
                assert_eq!(placed.region.id, format!("grid-r{row}c{col}"));
            }
        }
    }

    #[test]
    fn refuses_a_folder_that_already_holds_regions() {
        let dir = tempfile::tempdir().unwrap();
        write(&args(1, 2, dir.path())).unwrap();
        let err = write(&args(3, 3, dir.path())).unwrap_err();
        assert!(matches!(err, GridError::NotEmpty(_)), "{err}");
        // What was there is untouched: still the two regions.
        assert_eq!(Regions::load_dir(dir.path()).unwrap().iter().count(), 2);
    }

    #[test]
    fn refuses_a_box_upside_down_or_off_the_earth_and_ports_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        for bbox in [
            vec![23.95, 90.30, 23.60, 90.55],
            vec![23.60, 90.30, 95.0, 90.55],
            vec![23.60, f64::NAN, 23.95, 90.55],
        ] {
            let bad = GridArgs {
                bbox,
                ..args(2, 2, dir.path())
            };
            assert!(matches!(write(&bad), Err(GridError::BadBox(_))));
        }
        let far = GridArgs {
            http_port: 65_500,
            ..args(10, 10, dir.path())
        };
        assert!(matches!(write(&far), Err(GridError::PortsRunOut { .. })));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
