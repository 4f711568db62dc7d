use super::*;
use proptest::prelude::*;
use std::sync::LazyLock;

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../regions")
}

static SHIPPED: LazyLock<Regions> =
    LazyLock::new(|| Regions::load_dir(&shipped_dir()).expect("the shipped regions load"));

fn at(lat: f64, lon: f64) -> Position {
    Position { lat, lon }
}

fn routed(lat: f64, lon: f64) -> (&'static str, bool) {
    let placement = SHIPPED.place(at(lat, lon));
    (placement.region.id.as_str(), placement.inside)
}

#[test]
fn loads_the_shipped_regions_in_id_order() {
    let ids: Vec<&str> = SHIPPED.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["dhaka-north", "dhaka-southeast", "dhaka-southwest"]);
    let north = SHIPPED.get("dhaka-north").unwrap();
    assert_eq!(north.fly_region, "sin");
    assert_eq!(north.datacenter, "dhaka_north");
    assert_eq!(north.http_url(), "http://127.0.0.1:8081");
    assert_eq!(north.mesh.quic.port(), 9081);
    assert!(SHIPPED.get("nowhere").is_none());
}

#[test]
fn centroids_are_the_middle_of_the_shipped_rectangles() {
    let centroids: Vec<(f64, f64)> = SHIPPED
        .iter()
        .map(|r| {
            let c = r.centroid();
            (c.lat, c.lon)
        })
        .collect();
    for ((lat, lon), (want_lat, want_lon)) in
        centroids
            .into_iter()
            .zip([(23.865, 90.425), (23.69, 90.475), (23.69, 90.35)])
    {
        assert!((lat - want_lat).abs() < 1e-9, "{lat} != {want_lat}");
        assert!((lon - want_lon).abs() < 1e-9, "{lon} != {want_lon}");
    }
}

#[test]
fn known_places_route_to_their_region() {
    assert_eq!(routed(23.7925, 90.4078), ("dhaka-north", true)); // Gulshan
    assert_eq!(routed(23.8759, 90.3795), ("dhaka-north", true)); // Uttara
    assert_eq!(routed(23.7389, 90.3958), ("dhaka-southwest", true)); // Shahbag
    assert_eq!(routed(23.7330, 90.4172), ("dhaka-southeast", true)); // Motijheel
}

#[test]
fn shared_borders_go_to_the_first_region_in_id_order() {
    // lat 23.78 separates the north from both southern regions.
    assert_eq!(routed(23.78, 90.35), ("dhaka-north", true));
    assert_eq!(routed(23.78, 90.45), ("dhaka-north", true));
    // lon 90.40 separates the southeast from the southwest.
    assert_eq!(routed(23.70, 90.40), ("dhaka-southeast", true));
    // The corner all three share.
    assert_eq!(routed(23.78, 90.40), ("dhaka-north", true));
    // Just either side of a border.
    assert_eq!(routed(23.7799, 90.35), ("dhaka-southwest", true));
    assert_eq!(routed(23.70, 90.3999), ("dhaka-southwest", true));
}

#[test]
fn positions_outside_every_area_go_to_the_nearest() {
    assert_eq!(routed(22.3590, 91.8217), ("dhaka-southeast", false)); // Chattogram
    assert_eq!(routed(24.7471, 90.4203), ("dhaka-north", false)); // Mymensingh
    assert_eq!(routed(22.8456, 89.5403), ("dhaka-southwest", false)); // Khulna
    // Due west of the southwest, closer to it than to the north.
    assert_eq!(routed(23.70, 90.00), ("dhaka-southwest", false));
}

#[test]
fn any_input_gets_a_region() {
    for p in [
        at(f64::NAN, 90.4),
        at(23.8, f64::INFINITY),
        at(f64::NAN, f64::NAN),
        at(1e300, -1e300),
        at(-23.8, -89.6), // Dhaka's antipode
        at(90.0, 0.0),
        at(-90.0, 180.0),
    ] {
        let _ = SHIPPED.route(p);
    }
    assert_eq!(SHIPPED.route(at(f64::NAN, f64::NAN)).id, "dhaka-north");
}

// ---- loading errors

const GOOD_AREA: &str =
    r#"{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}"#;

fn file(id: &str, area: &str) -> String {
    format!(
        r#"{{"id": "{id}", "name": "Test {id}", "fly_region": "sin", "datacenter": "dc_{id}",
            "area": {area}, "mesh": {{"http": "127.0.0.1:1", "quic": "127.0.0.1:2"}}}}"#
    )
}

fn load(files: &[(&str, &str)]) -> Result<Regions, RegionsError> {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        fs::write(dir.path().join(name), text).unwrap();
    }
    Regions::load_dir(dir.path())
}

/// The error for a single file `bad.json`, checked to name that file.
fn refused(text: &str) -> RegionsError {
    let err = load(&[("bad.json", text)]).unwrap_err();
    assert!(err.to_string().contains("bad.json"), "{err}");
    err
}

#[test]
fn skips_files_that_are_not_json() {
    let regions = load(&[("a.json", &file("a", GOOD_AREA)), ("README.md", "# hi")]).unwrap();
    assert_eq!(regions.iter().count(), 1);
}

#[test]
fn refuses_bad_json_and_unknown_fields() {
    assert!(matches!(refused("{"), RegionsError::BadJson { .. }));
    let extra = file("a", GOOD_AREA).replacen('{', r#"{"colour": "red", "#, 1);
    assert!(matches!(refused(&extra), RegionsError::BadJson { .. }));
    let bad_addr = file("a", GOOD_AREA).replace("127.0.0.1:1", "localhost");
    assert!(matches!(refused(&bad_addr), RegionsError::BadJson { .. }));
}

#[test]
fn refuses_bad_ids_and_names() {
    for (text, field) in [
        (file("", GOOD_AREA), "id"),
        (file("Dhaka North", GOOD_AREA), "id"),
        (
            file("a", GOOD_AREA).replace("\"sin\"", "\"s in\""),
            "fly_region",
        ),
        (file("a", GOOD_AREA).replace("Test a", " "), "name"),
    ] {
        match refused(&text) {
            RegionsError::BadField { field: f, .. } => assert_eq!(f, field, "{text}"),
            other => panic!("{other}"),
        }
    }
}

#[test]
fn refuses_areas_that_are_not_polygons() {
    let point = r#"{"type": "Point", "coordinates": [90.4, 23.8]}"#;
    assert!(matches!(
        refused(&file("a", point)),
        RegionsError::NotAPolygon { found, .. } if found == "Point"
    ));
    let flat = r#"{"type": "Polygon", "coordinates": [[0, 0], [1, 0], [1, 1], [0, 0]]}"#;
    assert!(matches!(
        refused(&file("a", flat)),
        RegionsError::BadCoordinates { .. }
    ));
}

#[test]
fn refuses_open_short_and_missing_rings() {
    let open = r#"{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}"#;
    let short = r#"{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}"#;
    let none = r#"{"type": "Polygon", "coordinates": []}"#;
    let bad_hole = r#"{"type": "Polygon", "coordinates":
        [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], [[0.2, 0.2], [0.4, 0.2], [0.2, 0.4]]]}"#;
    for (area, ring) in [(open, 0), (short, 0), (none, 0), (bad_hole, 1)] {
        match refused(&file("a", area)) {
            RegionsError::BadRing { ring: r, .. } => assert_eq!(r, ring, "{area}"),
            other => panic!("{area}: {other}"),
        }
    }
}

#[test]
fn refuses_out_of_range_coordinates() {
    let area = r#"{"type": "Polygon", "coordinates": [[[0, 0], [181, 0], [1, 1], [0, 0]]]}"#;
    let err = refused(&file("a", area));
    assert!(
        matches!(
            err,
            RegionsError::BadCoordinate {
                ring: 0,
                point: 1,
                ..
            }
        ),
        "{err}"
    );
    // Latitude and longitude the wrong way round, as a GeoJSON novice might.
    let swapped = r#"{"type": "Polygon", "coordinates": [[[23.6, 90.3], [23.6, 90.5], [23.9, 90.5], [23.6, 90.3]]]}"#;
    let err = refused(&file("a", swapped));
    assert!(matches!(err, RegionsError::BadCoordinate { .. }), "{err}");
}

#[test]
fn refuses_self_intersecting_areas() {
    let bow_tie =
        r#"{"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}"#;
    let err = refused(&file("a", bow_tie));
    assert!(matches!(err, RegionsError::InvalidArea { .. }), "{err}");
    let collapsed = r#"{"type": "Polygon", "coordinates": [[[0, 0], [0, 0], [0, 0], [0, 0]]]}"#;
    let err = refused(&file("a", collapsed));
    assert!(matches!(err, RegionsError::InvalidArea { .. }), "{err}");
}

#[test]
fn refuses_duplicate_ids_naming_both_files() {
    let err = load(&[
        ("a.json", &file("x", GOOD_AREA)),
        ("b.json", &file("x", GOOD_AREA)),
    ])
    .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, RegionsError::DuplicateId { .. }), "{message}");
    assert!(
        message.contains("a.json") && message.contains("b.json"),
        "{message}"
    );
}

#[test]
fn refuses_overlapping_areas_but_not_shared_borders() {
    let right = r#"{"type": "Polygon", "coordinates": [[[1, 0], [2, 0], [2, 1], [1, 1], [1, 0]]]}"#;
    assert!(
        load(&[
            ("a.json", &file("a", GOOD_AREA)),
            ("b.json", &file("b", right))
        ])
        .is_ok()
    );
    let inner = r#"{"type": "Polygon", "coordinates":
        [[[0.2, 0.2], [0.4, 0.2], [0.4, 0.4], [0.2, 0.4], [0.2, 0.2]]]}"#;
    let across =
        r#"{"type": "Polygon", "coordinates": [[[0.5, 0], [2, 0], [2, 1], [0.5, 1], [0.5, 0]]]}"#;
    for other in [inner, across, GOOD_AREA] {
        let err = load(&[
            ("a.json", &file("a", GOOD_AREA)),
            ("b.json", &file("b", other)),
        ])
        .unwrap_err();
        assert!(
            matches!(err, RegionsError::Overlap { .. }),
            "{other}: {err}"
        );
    }
}

#[test]
fn refuses_empty_and_missing_directories() {
    let err = load(&[("README.md", "# no regions")]).unwrap_err();
    assert!(matches!(err, RegionsError::NoRegions { .. }), "{err}");
    let err = Regions::load_dir(Path::new("/no/such/dir")).unwrap_err();
    assert!(matches!(err, RegionsError::ReadDir { .. }), "{err}");
    assert!(err.to_string().contains("/no/such/dir"), "{err}");
}

// ---- properties

/// Distance from `p` to the boundary of `area`, by sampling its edges as
/// straight lon/lat lines every ~50 m: an oracle independent of geo's
/// closest-point search.
fn sampled_km(area: &Polygon<f64>, p: Position) -> f64 {
    let mut best = f64::INFINITY;
    for line in area.exterior().lines() {
        let steps = 500;
        for i in 0..=steps {
            let t = f64::from(i) / f64::from(steps);
            let q = at(
                line.start.y + t * (line.end.y - line.start.y),
                line.start.x + t * (line.end.x - line.start.x),
            );
            best = best.min(haversine_km(p, q));
        }
    }
    best
}

proptest! {
    #[test]
    fn every_position_routes_by_the_rules(lat in -90.0f64..=90.0, lon in -180.0f64..=180.0) {
        let p = at(lat, lon);
        let point = Point::new(lon, lat);
        let placement = SHIPPED.place(p);
        let first_holder = SHIPPED.iter().find(|r| r.area.intersects(&point));
        prop_assert_eq!(placement.inside, first_holder.is_some());
        if let Some(holder) = first_holder {
            prop_assert_eq!(&placement.region.id, &holder.id);
        }
        prop_assert_eq!(&SHIPPED.route(p).id, &placement.region.id);
    }

    #[test]
    fn positions_inside_an_area_route_to_it(lat in 23.60f64..23.95, lon in 90.30f64..90.55) {
        let placement = SHIPPED.place(at(lat, lon));
        prop_assert!(placement.inside);
        prop_assert!(placement.region.area.intersects(&Point::new(lon, lat)));
        let holders = SHIPPED.iter().filter(|r| r.area.intersects(&Point::new(lon, lat))).count();
        let on_a_border = lat == 23.78 || lon == 90.40;
        prop_assert!(holders == 1 || on_a_border);
    }

    #[test]
    fn border_positions_go_to_one_region(lon in 90.30f64..90.55, lat in 23.60f64..23.78) {
        prop_assert_eq!(routed(23.78, lon), ("dhaka-north", true));
        prop_assert_eq!(routed(lat, 90.40), ("dhaka-southeast", true));
    }

    #[test]
    fn outside_positions_go_to_the_nearest_area(lat in 21.0f64..27.0, lon in 88.0f64..93.0) {
        let p = at(lat, lon);
        let placement = SHIPPED.place(p);
        prop_assume!(!placement.inside);
        let chosen = sampled_km(&placement.region.area, p);
        let nearest = SHIPPED.iter().map(|r| sampled_km(&r.area, p)).fold(f64::INFINITY, f64::min);
        // Sampling error is at most half a step (~30 m) per side.
        prop_assert!(chosen <= nearest + 0.1, "chose {} at {chosen} km, nearest {nearest} km", placement.region.id);
        let computed = distance_km(&placement.region.area, Point::new(lon, lat));
        prop_assert!((computed - chosen).abs() <= 0.1, "computed {computed} km, sampled {chosen} km");
    }
}
