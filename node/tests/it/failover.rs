//! A region that dies does not take its area with it: with real processes
//! over real QUIC, the node of one region is killed with `kill -9`; its
//! adopter (the rule of `ride_types::adoption`) accepts and matches posts
//! for its area, the other region redirects there, and once the region is
//! back and ready its posts go home again. Nobody is matched twice.

use std::collections::HashMap;

use reqwest::StatusCode;
use reqwest::header::LOCATION;
use ride_types::adoption::RegionSet;
use ride_types::api::{Accepted, DebugState, DriverRequest, MatchNotice, RiderRequest};
use ride_types::halo::Layout;
use ride_types::regions::Regions;

use crate::mesh::{Mesh, REGIONS};
use crate::support::*;

/// Gulshan, inside dhaka-north.
const NORTH_SPOT: (f64, f64) = (23.7925, 90.4078);

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn regions() -> Regions {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../regions");
    Regions::load_dir(std::path::Path::new(dir)).unwrap()
}

/// Which of the mesh's nodes the rule names to adopt north.
fn adopter_of_north() -> usize {
    let layout = Layout::new(&regions(), 5.0);
    let north = layout.index_of(REGIONS[0]).unwrap();
    let adopter = layout
        .adopter_of(north, RegionSet::from_iter([north]))
        .unwrap();
    let id = layout.id_of(adopter).unwrap();
    REGIONS.iter().position(|r| *r == id).unwrap()
}

async fn state(http: &reqwest::Client, node: &NodeProcess) -> Option<DebugState> {
    let response = http.get(node.admin_url("/debug/state")).send().await.ok()?;
    response.json().await.ok()
}

fn rider_at_north(name: &str) -> RiderRequest {
    RiderRequest {
        name: name.into(),
        position: at(NORTH_SPOT.0, NORTH_SPOT.1),
        destination: at(23.7330, 90.4172),
    }
}

fn driver_at_north(car: &str) -> DriverRequest {
    DriverRequest {
        name: "Karim".into(),
        car_number: car.into(),
        position: at(NORTH_SPOT.0, NORTH_SPOT.1 + 0.0005),
    }
}

/// Posts `body` to `path` at `node`: where it was redirected, and the
/// answer; `None` when it was not redirected (or no answer came).
async fn redirect_of(
    http: &reqwest::Client,
    node: &NodeProcess,
    path: &str,
    body: &impl serde::Serialize,
) -> Option<(String, reqwest::Response)> {
    let response = http.post(node.url(path)).json(body).send().await.ok()?;
    let location = response.headers().get(LOCATION)?.to_str().ok()?.to_owned();
    Some((location, response))
}

/// Every match any node retains: nobody is in two matches, and every node
/// that tells a match tells the same one.
async fn nobody_twice(http: &reqwest::Client, mesh: &Mesh) -> Vec<MatchNotice> {
    let mut by_rider: HashMap<_, MatchNotice> = HashMap::new();
    for i in 0..REGIONS.len() {
        let list = mesh.matches(http, i).await.expect("matches");
        for m in list.matches {
            if let Some(seen) = by_rider.get(&m.rider_id) {
                assert_eq!(seen.driver_id, m.driver_id, "a rider in two matches");
            }
            by_rider.insert(m.rider_id, m);
        }
    }
    let mut drivers: HashMap<_, _> = HashMap::new();
    for m in by_rider.values() {
        let other = drivers.insert(m.driver_id, m.rider_id);
        assert!(other.is_none(), "driver {} in two matches", m.driver_id);
    }
    by_rider.into_values().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_region_s_area_is_served_by_its_adopter_and_handed_back() {
    let certs = tempfile::tempdir().unwrap();
    let mut mesh = Mesh::start_with(certs.path(), |_| {
        ["--adopt-after", "3s", "--handback-after", "2s"]
            .map(String::from)
            .to_vec()
    })
    .await;
    let http = no_redirects();
    mesh.converged(&http).await;
    let (north, adopter) = (0, adopter_of_north());
    let other = 3 - adopter;
    let adopter_http = regions().get(REGIONS[adopter]).unwrap().http_url();
    let north_http = regions().get(REGIONS[north]).unwrap().http_url();

    // A driver of north's, then north dies (kill -9).
    let stranded = post_driver(
        &http,
        mesh.node(north),
        "Stranded",
        "OLD-1",
        at(NORTH_SPOT.0, NORTH_SPOT.1 - 0.0005),
    )
    .await;
    drop(mesh.nodes[north].take());

    // The adopter accepts north's posts once north has been silent long
    // enough; until then it redirects them home.
    let rider: Accepted = eventually("the adopter to accept north's riders", || async {
        let response = http
            .post(mesh.node(adopter).url("/rider"))
            .json(&rider_at_north("Amina"))
            .send()
            .await
            .ok()?;
        (response.status() == StatusCode::ACCEPTED).then_some(response.json().await.ok()?)
    })
    .await;
    assert_eq!(rider.region, REGIONS[adopter]);
    let seen = state(&http, mesh.node(adopter)).await.unwrap();
    assert_eq!(seen.serving, [REGIONS[adopter], REGIONS[north]]);
    assert_eq!(seen.regions_down, [REGIONS[north]]);

    // The other live region sends north's posts to the adopter, and Fly's
    // proxy would bring them back rather than fail.
    let redirected = eventually("the other region to redirect to the adopter", || async {
        let body = driver_at_north("NEW-1");
        let (location, response) = redirect_of(&http, mesh.node(other), "/driver", &body).await?;
        (location == format!("{adopter_http}/driver")).then_some(response)
    })
    .await;
    assert_eq!(redirected.status(), StatusCode::TEMPORARY_REDIRECT);
    let replay = redirected.headers()["fly-replay"].to_str().unwrap();
    assert!(
        replay.contains(";timeout=2s;fallback=prefer_self"),
        "{replay}"
    );

    // A request Fly brought back after a failed replay is answered, never
    // a proxy error: 503 region_unavailable with Retry-After.
    let failed = http
        .post(mesh.node(other).url("/driver"))
        .header("fly-replay-failed", "timeout")
        .json(&driver_at_north("NEW-2"))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(failed.headers().contains_key("retry-after"));
    let body: ride_types::api::ErrorBody = failed.json().await.unwrap();
    assert_eq!(body.error.code, "region_unavailable");

    // Followed to the adopter, the driver is accepted and matched with the
    // rider; north's stranded driver, whose owner is down, is not offered.
    let driver = post_driver(
        &http,
        mesh.node(adopter),
        "Karim",
        "NEW-1",
        driver_at_north("NEW-1").position,
    )
    .await;
    let mut rider_socket = Socket::connect(mesh.node(adopter)).await;
    let mut driver_socket = Socket::connect(mesh.node(adopter)).await;
    told_both(&mut rider_socket, &rider, &mut driver_socket, &driver).await;

    // North comes back on its data folder: once it is ready, its posts go
    // home again, at the adopter and at the other region alike.
    mesh.nodes[north] = Some(mesh.launch(north).await);
    for i in [adopter, other] {
        eventually("north's posts to go home", || async {
            let body = rider_at_north("Later");
            let (location, _) = redirect_of(&http, mesh.node(i), "/rider", &body).await?;
            (location == format!("{north_http}/rider")).then_some(())
        })
        .await;
    }
    post_rider(
        &http,
        mesh.node(north),
        "Home",
        rider_at_north("Home").position,
        at(23.7330, 90.4172),
    )
    .await;
    mesh.converged(&http).await;
    let matches = nobody_twice(&http, &mesh).await;
    assert!(
        matches
            .iter()
            .all(|m| m.driver_id != stranded.id || m.rider_id != rider.id)
    );
    assert!(
        matches
            .iter()
            .any(|m| (m.rider_id, m.driver_id) == (rider.id, driver.id))
    );
}
