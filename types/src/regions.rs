//! Regions: which part of the map each region's nodes own, and which region a
//! position belongs to.
//!
//! A region is one JSON file in a directory (`regions/` at the repository
//! root): an id, the Fly.io region and ScyllaDB datacenter that host it, the
//! addresses its nodes listen on, and its area as a GeoJSON polygon. Nodes and
//! clients load the same directory, so they all agree on who owns a position
//! without asking one another.
//!
//! Routing is total, so that no request is ever stranded: every position
//! belongs to exactly one region. A position inside an area belongs to that
//! region; one on a border that several areas share belongs to the first of
//! them in id order, so every node decides alike; one outside every area (a
//! rider just past the city limits) belongs to the region whose area is
//! nearest along the great circle, rather than being refused.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use geo::Validation;
use geo::coordinate_position::CoordPos;
use geo::dimensions::Dimensions;
use geo::{
    Centroid, Closest, Coord, HaversineClosestPoint, Intersects, LineString, Point, Polygon, Relate,
};
use serde::Deserialize;
use thiserror::Error;

use crate::geodesy::Position;
use crate::geodesy::haversine_km;

/// Longest id, Fly region or datacenter name accepted.
const MAX_KEY_CHARS: usize = 64;
/// Longest human-readable region name accepted.
const MAX_NAME_CHARS: usize = 200;

/// Where a region's nodes listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshEndpoints {
    /// The HTTP API: where clients and redirects for this region go.
    pub http: SocketAddr,
    /// The QUIC endpoint that peers replicate over.
    pub quic: SocketAddr,
}

/// One region, as loaded and checked from its file.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// Short and stable: it names the region in URLs, headers, metrics and
    /// node ids (lowercase letters, digits, `-` and `_`).
    pub id: String,
    /// For people.
    pub name: String,
    /// The Fly.io region hosting it: the `fly-replay` target.
    pub fly_region: String,
    /// Its ScyllaDB datacenter.
    pub datacenter: String,
    /// The ground it owns; coordinates are `x = lon`, `y = lat`.
    pub area: Polygon<f64>,
    pub mesh: MeshEndpoints,
}

impl Region {
    /// Base URL of the region's HTTP API, e.g. `http://127.0.0.1:8081`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.mesh.http)
    }

    /// The area's centroid (holes taken out), planar in lon/lat, which is
    /// close enough at city scale: where a local mesh measures the distance
    /// between two regions from, to give their link a plausible WAN delay.
    pub fn centroid(&self) -> Position {
        // A loaded area is a valid polygon, so it has an area and a
        // centroid; its first vertex stands in should that ever change.
        let point = self
            .area
            .centroid()
            .unwrap_or_else(|| Point::from(self.area.exterior().0[0]));
        Position {
            lat: point.y(),
            lon: point.x(),
        }
    }
}

/// Which region a position belongs to, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement<'a> {
    pub region: &'a Region,
    /// True when the region's area holds the position (border included);
    /// false when no area does and this is the nearest one.
    pub inside: bool,
}

/// Why a regions directory was refused. Every message names the file (or
/// directory) at fault.
#[derive(Debug, Error)]
pub enum RegionsError {
    #[error("cannot read the regions directory {}: {source}", dir.display())]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a region file: {source}", file.display())]
    BadJson {
        file: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: {field} {problem}", file.display())]
    BadField {
        file: PathBuf,
        field: &'static str,
        problem: String,
    },
    #[error("{}: area must be a GeoJSON \"Polygon\", found {found:?}", file.display())]
    NotAPolygon { file: PathBuf, found: String },
    #[error(
        "{}: area coordinates must be a list of rings, each a list of [lon, lat] pairs: {source}",
        file.display()
    )]
    BadCoordinates {
        file: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: area ring {ring} {problem}", file.display())]
    BadRing {
        file: PathBuf,
        ring: usize,
        problem: String,
    },
    #[error(
        "{}: area ring {ring}, point {point}: [{lon}, {lat}] is not a [lon, lat] pair \
         with lon in -180..=180 and lat in -90..=90",
        file.display()
    )]
    BadCoordinate {
        file: PathBuf,
        ring: usize,
        point: usize,
        lon: f64,
        lat: f64,
    },
    #[error("{}: area is not a valid polygon: {problem}", file.display())]
    InvalidArea { file: PathBuf, problem: String },
    #[error("region id {id:?} is used by both {} and {}", first.display(), second.display())]
    DuplicateId {
        id: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error(
        "the areas of {} and {} overlap; regions may share borders, but every position \
         must belong to one region",
        first.display(), second.display()
    )]
    Overlap { first: PathBuf, second: PathBuf },
    #[error("no region files (*.json) in {}", dir.display())]
    NoRegions { dir: PathBuf },
}

/// A region file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionFile {
    id: String,
    name: String,
    fly_region: String,
    datacenter: String,
    area: AreaFile,
    mesh: MeshEndpoints,
}

/// A GeoJSON geometry whose type is checked before its coordinates are read,
/// so that a `Point` or `MultiPolygon` is reported as such rather than as a
/// shape mismatch deep inside `coordinates`. Other GeoJSON members (`bbox`)
/// are allowed and ignored.
#[derive(Deserialize)]
struct AreaFile {
    #[serde(rename = "type")]
    kind: String,
    coordinates: serde_json::Value,
}

/// Every region, in id order; never empty.
#[derive(Debug, Clone)]
pub struct Regions {
    regions: Vec<Region>,
}

impl Regions {
    /// Loads every `*.json` file of `dir` (other files, such as a README,
    /// are skipped), in file-name order, and checks each and all together.
    pub fn load_dir(dir: &Path) -> Result<Self, RegionsError> {
        let unreadable = |source| RegionsError::ReadDir {
            dir: dir.to_owned(),
            source,
        };
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).map_err(unreadable)? {
            let path = entry.map_err(unreadable)?.path();
            if path.extension().is_some_and(|e| e == "json") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();

        let mut loaded: Vec<(PathBuf, Region)> = Vec::with_capacity(files.len());
        for file in files {
            let text = fs::read_to_string(&file).map_err(|source| RegionsError::Read {
                file: file.clone(),
                source,
            })?;
            let region = parse_region(&file, &text)?;
            if let Some((first, _)) = loaded.iter().find(|(_, r)| r.id == region.id) {
                return Err(RegionsError::DuplicateId {
                    id: region.id,
                    first: first.clone(),
                    second: file,
                });
            }
            loaded.push((file, region));
        }
        if loaded.is_empty() {
            return Err(RegionsError::NoRegions {
                dir: dir.to_owned(),
            });
        }
        for (i, (first, a)) in loaded.iter().enumerate() {
            for (second, b) in &loaded[i + 1..] {
                if interiors_meet(&a.area, &b.area) {
                    return Err(RegionsError::Overlap {
                        first: first.clone(),
                        second: second.clone(),
                    });
                }
            }
        }
        let mut regions: Vec<Region> = loaded.into_iter().map(|(_, region)| region).collect();
        regions.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Regions { regions })
    }

    pub fn get(&self, id: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.id == id)
    }

    /// Every region, in id order.
    pub fn iter(&self) -> std::slice::Iter<'_, Region> {
        self.regions.iter()
    }

    /// The region that owns `position`.
    pub fn route(&self, position: Position) -> &Region {
        self.place(position).region
    }

    /// The region that owns `position`, and whether its area holds it. Total:
    /// any input, even a non-finite one, gets a region.
    pub fn place(&self, position: Position) -> Placement<'_> {
        let point = Point::new(position.lon, position.lat);
        if let Some(region) = self.regions.iter().find(|r| r.area.intersects(&point)) {
            return Placement {
                region,
                inside: true,
            };
        }
        // `load_dir` refuses an empty directory, so there is a first region;
        // it also wins when no distance compares (a NaN position).
        let mut nearest = &self.regions[0];
        let mut nearest_km = f64::INFINITY;
        for region in &self.regions {
            let km = distance_km(&region.area, point);
            if km < nearest_km {
                nearest = region;
                nearest_km = km;
            }
        }
        Placement {
            region: nearest,
            inside: false,
        }
    }
}

/// Great-circle distance from `point` to the nearest point of `area`, in km
/// (0 inside). Edges count as great-circle arcs, which for city-sized areas
/// is metres away from the straight lon/lat lines GeoJSON means.
fn distance_km(area: &Polygon<f64>, point: Point<f64>) -> f64 {
    let position = |p: Point<f64>| Position {
        lat: p.y(),
        lon: p.x(),
    };
    // Every ring has at least 4 points (see `ring`), which keeps geo's
    // closest-point search away from its empty-ring `unreachable!`.
    match area.haversine_closest_point(&point) {
        Closest::Intersection(_) => 0.0,
        Closest::SinglePoint(closest) => haversine_km(position(point), position(closest)),
        Closest::Indeterminate => f64::INFINITY,
    }
}

/// [`distance_km`] from a position.
pub(crate) fn area_km(area: &Polygon<f64>, position: Position) -> f64 {
    distance_km(area, Point::new(position.lon, position.lat))
}

/// Whether two areas share more than a border (this includes one holding
/// the other).
fn interiors_meet(a: &Polygon<f64>, b: &Polygon<f64>) -> bool {
    a.relate(b).get(CoordPos::Inside, CoordPos::Inside) != Dimensions::Empty
}

fn parse_region(file: &Path, text: &str) -> Result<Region, RegionsError> {
    let raw: RegionFile = serde_json::from_str(text).map_err(|source| RegionsError::BadJson {
        file: file.to_owned(),
        source,
    })?;
    let bad_field = |field, problem: String| RegionsError::BadField {
        file: file.to_owned(),
        field,
        problem,
    };
    for (field, value) in [
        ("id", &raw.id),
        ("fly_region", &raw.fly_region),
        ("datacenter", &raw.datacenter),
    ] {
        let chars = value.chars().count();
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(c);
        if chars == 0 || chars > MAX_KEY_CHARS || !value.chars().all(allowed) {
            return Err(bad_field(
                field,
                format!(
                    "must be 1 to {MAX_KEY_CHARS} lowercase letters, digits, '-' or '_', \
                     got {value:?}"
                ),
            ));
        }
    }
    let name = raw.name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(bad_field(
            "name",
            format!(
                "must be 1 to {MAX_NAME_CHARS} characters without control characters, \
                 got {:?}",
                raw.name
            ),
        ));
    }
    Ok(Region {
        area: area(file, raw.area)?,
        id: raw.id,
        name: name.to_owned(),
        fly_region: raw.fly_region,
        datacenter: raw.datacenter,
        mesh: raw.mesh,
    })
}

/// The GeoJSON polygon as a checked `geo` polygon: closed rings of at least
/// four in-range points, no self-intersections, holes inside the exterior.
fn area(file: &Path, raw: AreaFile) -> Result<Polygon<f64>, RegionsError> {
    if raw.kind != "Polygon" {
        return Err(RegionsError::NotAPolygon {
            file: file.to_owned(),
            found: raw.kind,
        });
    }
    let rings: Vec<Vec<[f64; 2]>> =
        serde_json::from_value(raw.coordinates).map_err(|source| RegionsError::BadCoordinates {
            file: file.to_owned(),
            source,
        })?;
    let mut rings = rings
        .iter()
        .enumerate()
        .map(|(i, points)| ring(file, i, points));
    let exterior = rings.next().unwrap_or_else(|| {
        Err(RegionsError::BadRing {
            file: file.to_owned(),
            ring: 0,
            problem: "is missing: a polygon needs an exterior ring".into(),
        })
    })?;
    let holes = rings.collect::<Result<Vec<_>, _>>()?;
    let polygon = Polygon::new(exterior, holes);
    polygon
        .check_validation()
        .map_err(|problem| RegionsError::InvalidArea {
            file: file.to_owned(),
            problem: problem.to_string(),
        })?;
    Ok(polygon)
}

fn ring(file: &Path, index: usize, points: &[[f64; 2]]) -> Result<LineString<f64>, RegionsError> {
    let bad_ring = |problem: String| RegionsError::BadRing {
        file: file.to_owned(),
        ring: index,
        problem,
    };
    for (point, &[lon, lat]) in points.iter().enumerate() {
        if !(lon.is_finite() && lat.is_finite() && lon.abs() <= 180.0 && lat.abs() <= 90.0) {
            return Err(RegionsError::BadCoordinate {
                file: file.to_owned(),
                ring: index,
                point,
                lon,
                lat,
            });
        }
    }
    if points.len() < 4 {
        return Err(bad_ring(format!(
            "has {} points; a ring needs at least 4, the last repeating the first",
            points.len()
        )));
    }
    if points.first() != points.last() {
        return Err(bad_ring(
            "is not closed: its last point must repeat its first".into(),
        ));
    }
    Ok(points.iter().map(|&[x, y]| Coord { x, y }).collect())
}

#[cfg(test)]
mod tests;
