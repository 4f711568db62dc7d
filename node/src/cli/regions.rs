//! `node regions`: the region files, as the node reads them, for scripts.
//!
//! Why a subcommand: the scripts that start a local mesh or a CQL cluster
//! need region ids, addresses, datacenters and the distance between
//! regions. Parsing the JSON themselves would be a second reading of the
//! format that can drift from `ride_types::regions` (its checks, its id order, its
//! routing rules); asking the binary keeps one.
//!
//! Output is tab-separated, one line per item, so that bash reads it with
//! `IFS=$'\t' read -r ...` and no JSON parser; `--format json` is there for
//! other callers. No field can hold a tab or a newline: the loader refuses
//! control characters in names and ids are `[a-z0-9_-]`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use ride_types::api::Position;
use ride_types::geodesy::haversine_km;
use ride_types::regions::{Region, Regions, RegionsError};
use serde_json::{Map, Value};
use thiserror::Error;

use ride_types::region_grid::{self as grid, GridArgs, GridError};

#[derive(Subcommand)]
pub enum RegionsCommand {
    /// Loads the regions as a node would; exits non-zero with the node's own
    /// error (which names the file at fault) if it would refuse them.
    Check(Folder),
    /// One line per region, in id order (the order nodes list them in): the
    /// --fields asked for, tab-separated.
    List {
        #[command(flatten)]
        folder: Folder,
        /// Which fields, in this order; `lat`/`lon` are the area's centroid.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "id,http,quic,datacenter,fly-region,lat,lon"
        )]
        fields: Vec<Field>,
        /// `tsv`: tab-separated lines; `json`: an array of objects.
        #[arg(long, value_enum, default_value_t = Format::Tsv)]
        format: Format,
    },
    /// The great-circle distance between the centroids of every two regions:
    /// `<id a> <id b> <km>` per pair (a before b in id order), tab-separated.
    Distances(Folder),
    /// The region that serves a position: `<id> inside` when its area holds
    /// it, `<id> nearest` when no area does and it is the nearest one
    /// (tab-separated), by the rules every node routes by.
    #[command(allow_negative_numbers = true)]
    Route {
        #[command(flatten)]
        folder: Folder,
        lat: f64,
        lon: f64,
    },
    /// Writes a layout of `--rows x --cols` square regions over `--bbox`
    /// into `--out` (one file each, unique ports), and checks it loads.
    Grid(GridArgs),
}

#[derive(Args)]
pub struct Folder {
    /// The folder of region files (the node's --regions).
    #[arg(long = "regions", env = "NODE_REGIONS", default_value = "regions")]
    dir: PathBuf,
}

/// A column of `node regions list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Field {
    Id,
    Name,
    FlyRegion,
    Datacenter,
    /// The region's HTTP address (`host:port`).
    Http,
    /// The region's QUIC (mesh) address (`host:port`).
    Quic,
    /// The centroid's latitude.
    Lat,
    /// The centroid's longitude.
    Lon,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Tsv,
    Json,
}

#[derive(Debug, Error)]
pub enum RegionsCommandError {
    #[error(transparent)]
    Regions(#[from] RegionsError),
    #[error(transparent)]
    Grid(#[from] GridError),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs `command`, writing its answer to `out`.
pub fn run(command: RegionsCommand, out: &mut impl Write) -> Result<(), RegionsCommandError> {
    match command {
        RegionsCommand::Check(folder) => {
            let regions = Regions::load_dir(&folder.dir)?;
            let ids: Vec<&str> = regions.iter().map(|r| r.id.as_str()).collect();
            writeln!(
                out,
                "{}: {} regions ({})",
                folder.dir.display(),
                ids.len(),
                ids.join(", ")
            )?;
        }
        RegionsCommand::List {
            folder,
            fields,
            format,
        } => {
            let regions = Regions::load_dir(&folder.dir)?;
            out.write_all(list(&regions, &fields, format).as_bytes())?;
        }
        RegionsCommand::Distances(folder) => {
            let regions = Regions::load_dir(&folder.dir)?;
            out.write_all(distances(&regions).as_bytes())?;
        }
        RegionsCommand::Route { folder, lat, lon } => {
            let regions = Regions::load_dir(&folder.dir)?;
            writeln!(out, "{}", route(&regions, Position { lat, lon }))?;
        }
        RegionsCommand::Grid(args) => {
            let regions = grid::write(&args)?;
            let count = regions.iter().count();
            writeln!(out, "{}: {count} regions written", args.out.display())?;
        }
    }
    Ok(())
}

/// Coordinates to the micrometre, more than any region file holds.
fn degrees(value: f64) -> String {
    format!("{value:.6}")
}

fn tsv_field(region: &Region, field: Field) -> String {
    match field {
        Field::Id => region.id.clone(),
        Field::Name => region.name.clone(),
        Field::FlyRegion => region.fly_region.clone(),
        Field::Datacenter => region.datacenter.clone(),
        Field::Http => region.mesh.http.to_string(),
        Field::Quic => region.mesh.quic.to_string(),
        Field::Lat => degrees(region.centroid().lat),
        Field::Lon => degrees(region.centroid().lon),
    }
}

fn json_field(region: &Region, field: Field) -> Value {
    match field {
        Field::Lat => Value::from(region.centroid().lat),
        Field::Lon => Value::from(region.centroid().lon),
        other => Value::from(tsv_field(region, other)),
    }
}

/// The JSON key of a field: its name on the command line.
fn key(field: Field) -> String {
    field
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned())
}

fn list(regions: &Regions, fields: &[Field], format: Format) -> String {
    match format {
        Format::Tsv => regions
            .iter()
            .map(|region| {
                let row: Vec<String> = fields.iter().map(|&f| tsv_field(region, f)).collect();
                row.join("\t") + "\n"
            })
            .collect(),
        Format::Json => {
            let rows: Vec<Value> = regions
                .iter()
                .map(|region| {
                    let object: Map<String, Value> = fields
                        .iter()
                        .map(|&f| (key(f), json_field(region, f)))
                        .collect();
                    Value::Object(object)
                })
                .collect();
            Value::Array(rows).to_string() + "\n"
        }
    }
}

fn distances(regions: &Regions) -> String {
    let all: Vec<&Region> = regions.iter().collect();
    let mut text = String::new();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            let km = haversine_km(a.centroid(), b.centroid());
            text.push_str(&format!("{}\t{}\t{km:.3}\n", a.id, b.id));
        }
    }
    text
}

fn route(regions: &Regions, position: Position) -> String {
    let placement = regions.place(position);
    let how = if placement.inside {
        "inside"
    } else {
        "nearest"
    };
    format!("{}\t{how}", placement.region.id)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn shipped() -> Regions {
        Regions::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../regions"))
            .expect("the shipped regions load")
    }

    #[test]
    fn lists_the_default_fields_as_tab_separated_lines_in_id_order() {
        assert_eq!(
            list(
                &shipped(),
                &[
                    Field::Id,
                    Field::Http,
                    Field::Quic,
                    Field::Datacenter,
                    Field::FlyRegion,
                    Field::Lat,
                    Field::Lon
                ],
                Format::Tsv
            ),
            "dhaka-north\t127.0.0.1:8081\t127.0.0.1:9081\tdhaka_north\tsin\t23.865000\t90.425000\n\
             dhaka-southeast\t127.0.0.1:8083\t127.0.0.1:9083\tdhaka_southeast\thkg\t23.690000\t90.475000\n\
             dhaka-southwest\t127.0.0.1:8082\t127.0.0.1:9082\tdhaka_southwest\tbom\t23.690000\t90.350000\n"
        );
    }

    #[test]
    fn lists_the_selected_fields_in_the_order_asked() {
        let text = list(&shipped(), &[Field::Datacenter, Field::Id], Format::Tsv);
        assert_eq!(
            text.lines().next(),
            Some("dhaka_north\tdhaka-north"),
            "{text}"
        );
        let name = list(&shipped(), &[Field::Name], Format::Tsv);
        assert_eq!(
            name.lines().next(),
            Some("Dhaka North (Uttara, Mirpur, Gulshan, Badda)")
        );
    }

    #[test]
    fn lists_json_objects_keyed_by_field_name() {
        let text = list(
            &shipped(),
            &[Field::Id, Field::FlyRegion, Field::Lat],
            Format::Json,
        );
        let rows: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0]["id"], "dhaka-north");
        assert_eq!(rows[0]["fly-region"], "sin");
        assert!((rows[0]["lat"].as_f64().unwrap() - 23.865).abs() < 1e-9);
        assert_eq!(rows[0].as_object().unwrap().len(), 3);
    }

    #[test]
    fn distances_cover_every_pair_once() {
        // The centroids' great-circle distances, to 0.1 km.
        let text = distances(&shipped());
        let rows: Vec<(&str, &str, f64)> = text
            .lines()
            .map(|line| {
                let parts: Vec<&str> = line.split('\t').collect();
                (parts[0], parts[1], parts[2].parse().unwrap())
            })
            .collect();
        let want = [
            ("dhaka-north", "dhaka-southeast", 20.1),
            ("dhaka-north", "dhaka-southwest", 20.9),
            ("dhaka-southeast", "dhaka-southwest", 12.7),
        ];
        assert_eq!(rows.len(), want.len(), "{text}");
        for ((a, b, km), (want_a, want_b, want_km)) in rows.into_iter().zip(want) {
            assert_eq!((a, b), (want_a, want_b));
            assert!((km - want_km).abs() < 0.05, "{a}-{b}: {km} km");
        }
    }

    #[test]
    fn routes_by_the_nodes_rules() {
        let regions = shipped();
        let at = |lat, lon| route(&regions, Position { lat, lon });
        assert_eq!(at(23.7925, 90.4078), "dhaka-north\tinside"); // Gulshan
        assert_eq!(at(23.78, 90.40), "dhaka-north\tinside"); // the shared corner
        assert_eq!(at(23.7330, 90.4172), "dhaka-southeast\tinside"); // Motijheel
        assert_eq!(at(22.3590, 91.8217), "dhaka-southeast\tnearest"); // Chattogram
    }
}
