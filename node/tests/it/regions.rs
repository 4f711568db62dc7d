//! Regions: a node started with the shipped `regions/` accepts riders and
//! drivers in its own region, redirects the others to their region's node,
//! and tells anyone which region owns a position.

use std::process::{Command, Stdio};

use reqwest::StatusCode;
use reqwest::header::LOCATION;
use ride_types::api::{Accepted, DriverRequest, ErrorBody, RegionList, RiderRequest, RouteAnswer};

use crate::support::*;

const REGIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../regions");

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn start_north(dir: &std::path::Path) -> NodeProcess {
    NodeProcess::start(dir, &["--regions", REGIONS, "--region", "dhaka-north"]).await
}

#[tokio::test]
async fn accepts_its_own_region_and_redirects_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_north(dir.path()).await;
    let http = client();

    // Gulshan is in dhaka-north.
    let rider = RiderRequest {
        name: "Amina".into(),
        position: at(23.7925, 90.4078),
        destination: at(23.7330, 90.4172),
    };
    let response = http
        .post(node.url("/rider"))
        .json(&rider)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Accepted = response.json().await.unwrap();
    assert_eq!(accepted.region, "dhaka-north");

    // Motijheel is in dhaka-southeast (mesh http 127.0.0.1:8083, Fly hkg).
    let elsewhere = RiderRequest {
        position: at(23.7330, 90.4172),
        ..rider
    };
    let response = http
        .post(node.url("/rider"))
        .json(&elsewhere)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(response.headers()[LOCATION], "http://127.0.0.1:8083/rider");
    assert_eq!(
        response.headers()["fly-replay"],
        "region=hkg;timeout=2s;fallback=prefer_self"
    );
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error.code, "wrong_region");
    assert!(
        body.error.message.contains("dhaka-southeast"),
        "{}",
        body.error.message
    );

    // Drivers too, keeping their route; Shahbag is in dhaka-southwest (bom).
    let driver = DriverRequest {
        name: "Karim".into(),
        car_number: "DHA-1".into(),
        position: at(23.7389, 90.3958),
    };
    let response = http
        .post(node.url("/driver"))
        .json(&driver)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(response.headers()[LOCATION], "http://127.0.0.1:8082/driver");
    assert_eq!(
        response.headers()["fly-replay"],
        "region=bom;timeout=2s;fallback=prefer_self"
    );

    // Bad coordinates are refused as before, not redirected.
    let bad = serde_json::json!({
        "name": "D", "car_number": "C-1", "position": {"lat": 91, "lon": 90.4}
    });
    let response = http
        .post(node.url("/driver"))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn lists_regions_and_routes_positions() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_north(dir.path()).await;
    let http = client();

    let list: RegionList = get_json(&http, &node.url("/regions")).await;
    let ids: Vec<&str> = list.regions.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["dhaka-north", "dhaka-southeast", "dhaka-southwest"]);
    let north = &list.regions[0];
    assert_eq!(
        (north.fly_region.as_str(), north.datacenter.as_str()),
        ("sin", "dhaka_north")
    );
    assert_eq!(north.mesh.http.port(), 8081);
    assert_eq!(north.area.kind, "Polygon");
    let ring = &north.area.coordinates[0];
    assert_eq!(ring.first(), ring.last());

    let route = |query: &'static str| {
        let http = http.clone();
        let url = node.url(&format!("/route?{query}"));
        async move { http.get(url).send().await.unwrap() }
    };
    let inside: RouteAnswer = route("lat=23.7330&lon=90.4172").await.json().await.unwrap();
    assert_eq!(
        inside,
        RouteAnswer {
            region: "dhaka-southeast".into(),
            home: "dhaka-southeast".into(),
            inside: true,
            http: "http://127.0.0.1:8083".into(),
        }
    );
    // Mymensingh, north of every area: the nearest region.
    let outside: RouteAnswer = route("lat=24.7471&lon=90.4203").await.json().await.unwrap();
    assert_eq!(
        (outside.region.as_str(), outside.inside),
        ("dhaka-north", false)
    );

    for (query, status, code) in [
        ("lat=91&lon=90.4", 422, "invalid_field"),
        ("lat=NaN&lon=90.4", 422, "invalid_field"),
        ("lat=north&lon=90.4", 400, "invalid_query"),
        ("lat=23.8", 400, "invalid_query"),
        ("lat=23.8&lon=90.4&alt=3", 400, "invalid_query"),
    ] {
        let response = route(query).await;
        assert_eq!(response.status(), status, "{query}");
        let body: ErrorBody = response.json().await.unwrap();
        assert_eq!(body.error.code, code, "{query}");
    }
}

#[tokio::test]
async fn without_regions_every_position_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]).await;
    let http = client();
    // dhaka-southeast, were regions configured.
    post_rider(&http, &node, "Amina", at(23.7330, 90.4172), at(23.8, 90.4)).await;
    for path in ["/regions", "/route?lat=23.8&lon=90.4"] {
        let response = http.get(node.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: ErrorBody = response.json().await.unwrap();
        assert_eq!(body.error.code, "no_regions", "{path}");
    }
}

#[tokio::test]
async fn refuses_to_start_in_a_region_it_does_not_know() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_node"))
        .args(["--listen", "127.0.0.1:0", "--region", "nowhere"])
        .args(["--regions", REGIONS])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .expect("run node");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--region nowhere is not one of the regions")
            && stderr.contains("dhaka-north"),
        "{stderr}"
    );
}

/// `node regions ...` on `dir`: exit success, stdout, stderr.
fn regions_command(args: &[&str], dir: &str) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_node"))
        .arg("regions")
        .args(args)
        .args(["--regions", dir])
        .env_remove("NODE_REGIONS")
        .stdin(Stdio::null())
        .output()
        .expect("run node regions");
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// What the scripts read: the subcommands answer from the shipped regions
/// as the node loads them, in a form bash reads without a JSON parser.
#[test]
fn the_regions_subcommands_answer_from_the_shipped_regions() {
    let (ok, out, _) = regions_command(&["check"], REGIONS);
    assert!(
        ok && out.contains("3 regions (dhaka-north, dhaka-southeast, dhaka-southwest)"),
        "{out}"
    );

    let (ok, out, _) = regions_command(&["list", "--fields", "id,http,quic,datacenter"], REGIONS);
    assert!(ok);
    assert_eq!(
        out,
        "dhaka-north\t127.0.0.1:8081\t127.0.0.1:9081\tdhaka_north\n\
         dhaka-southeast\t127.0.0.1:8083\t127.0.0.1:9083\tdhaka_southeast\n\
         dhaka-southwest\t127.0.0.1:8082\t127.0.0.1:9082\tdhaka_southwest\n"
    );

    let (ok, out, _) =
        regions_command(&["list", "--fields", "id,lat", "--format", "json"], REGIONS);
    assert!(ok);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[2]["id"], "dhaka-southwest");
    assert!((rows[2]["lat"].as_f64().unwrap() - 23.69).abs() < 1e-9);

    let (ok, out, _) = regions_command(&["distances"], REGIONS);
    assert!(ok);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.starts_with("dhaka-north\tdhaka-southeast\t20.1"),
        "{out}"
    );

    // Motijheel; then Chattogram, outside every area; negative numbers too.
    let (ok, out, _) = regions_command(&["route", "23.7330", "90.4172"], REGIONS);
    assert!(ok);
    assert_eq!(out, "dhaka-southeast\tinside\n");
    let (ok, out, _) = regions_command(&["route", "22.3590", "91.8217"], REGIONS);
    assert!(ok);
    assert_eq!(out, "dhaka-southeast\tnearest\n");
    let (ok, _, err) = regions_command(&["route", "-23.8", "-89.6"], REGIONS);
    assert!(ok, "{err}");
}

#[test]
fn regions_check_fails_with_the_nodes_own_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.json"), "{").unwrap();
    let (ok, out, err) = regions_command(&["check"], dir.path().to_str().unwrap());
    assert!(!ok);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.starts_with("node regions: ") && err.contains("broken.json: not a region file"),
        "{err}"
    );
    let (ok, _, err) = regions_command(&["list"], "/no/such/dir");
    assert!(!ok);
    assert!(
        err.contains("cannot read the regions directory /no/such/dir"),
        "{err}"
    );
}
