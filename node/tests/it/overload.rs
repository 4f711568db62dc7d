//! The three-region mesh driven past what it can take: the node refuses at
//! the door what it could not keep its promise for (503 `overloaded` with
//! `Retry-After`), keeps its peer sessions, and converges once the load
//! stops.

use std::sync::Arc;
use std::time::Duration;

use ride_types::api::{DriverRequest, ErrorBody, RiderRequest};
use tokio::sync::Mutex;

use crate::mesh::{Mesh, REGIONS};
use crate::support::*;

/// How long each region is flooded.
const BURST: Duration = Duration::from_secs(5);
/// Clients per region, each posting as fast as it is answered.
const CLIENTS: usize = 32;

/// Inside each region's area (south-west corner, north-east corner), away
/// from its borders: nothing is redirected.
const AREAS: [((f64, f64), (f64, f64)); 3] = [
    ((23.80, 90.32), (23.93, 90.53)),
    ((23.62, 90.42), (23.76, 90.53)),
    ((23.62, 90.32), (23.76, 90.38)),
];

#[derive(Default)]
struct Tally {
    accepted: u64,
    shed: u64,
    /// Anything else, described: must stay empty.
    unexpected: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_capacity_the_mesh_sheds_at_the_door_keeps_its_sessions_and_converges() {
    let certs = tempfile::tempdir().unwrap();
    // A short intake queue makes the flood certain to reach it.
    let mesh = Mesh::start_with(certs.path(), |_| {
        vec!["--max-intake-queue".into(), "4".into()]
    })
    .await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    mesh.converged(&http).await;

    let tally = Arc::new(Mutex::new(Tally::default()));
    let until = tokio::time::Instant::now() + BURST;
    let mut clients = tokio::task::JoinSet::new();
    for (region, ((south, west), (north, east))) in AREAS.into_iter().enumerate() {
        let urls = (
            mesh.node(region).url("/rider"),
            mesh.node(region).url("/driver"),
        );
        for client in 0..CLIENTS {
            let (http, tally, urls) = (http.clone(), Arc::clone(&tally), urls.clone());
            clients.spawn(async move {
                // A low-discrepancy walk over the area: uniform, no rng.
                let mut k = client as f64;
                while tokio::time::Instant::now() < until {
                    k += 1.0;
                    let lat = south + (k * 0.618_034).fract() * (north - south);
                    let lon = west + (k * 0.754_878).fract() * (east - west);
                    let position = at(lat, lon);
                    let (url, body) = if (k as u64).is_multiple_of(2) {
                        let rider = RiderRequest {
                            name: "r".into(),
                            position,
                            destination: position,
                        };
                        (&urls.0, serde_json::to_value(rider).unwrap())
                    } else {
                        let driver = DriverRequest {
                            name: "d".into(),
                            car_number: "LOAD".into(),
                            position,
                        };
                        (&urls.1, serde_json::to_value(driver).unwrap())
                    };
                    let Ok(response) = http.post(url).json(&body).send().await else {
                        continue;
                    };
                    let status = response.status().as_u16();
                    let retry_after = response.headers().contains_key("retry-after");
                    let text = response.text().await.unwrap_or_default();
                    let mut tally = tally.lock().await;
                    match status {
                        202 => tally.accepted += 1,
                        503 if retry_after
                            && serde_json::from_str::<ErrorBody>(&text)
                                .is_ok_and(|e| e.error.code == "overloaded") =>
                        {
                            tally.shed += 1;
                        }
                        _ => tally.unexpected.push(format!("{status} {text}")),
                    }
                }
            });
        }
    }
    while clients.join_next().await.is_some() {}
    let tally = tally.lock().await;
    assert!(
        tally.unexpected.is_empty(),
        "every answer is a 202 or a 503 overloaded with Retry-After: {:?}",
        &tally.unexpected[..tally.unexpected.len().min(5)]
    );
    assert!(tally.shed > 0, "the flood was shed at the door");
    assert!(tally.accepted > 0, "and what fits was accepted");

    // Once the load stops, every node holds the same state: every accepted
    // request replicated everywhere, every commit known everywhere.
    mesh.converged(&http).await;
    let mut shed_counted = false;
    for i in 0..REGIONS.len() {
        let metrics = metrics_of(&http, mesh.node(i))
            .await
            .expect("/metrics answers");
        let lost: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("mesh_sessions_lost_total"))
            .collect();
        assert!(lost.is_empty(), "node {i} lost a peer session: {lost:?}");
        shed_counted |= metrics
            .lines()
            .any(|l| l.starts_with("ride_requests_shed_total{reason=\"queue\"}"));
    }
    assert!(shed_counted, "what was shed is counted, with its reason");
}
