//! The ride flow: request, match on both sockets, fare, rating, average.

use ride_types::api::{
    DebugState, DriverRating, ErrorBody, MatchList, RatingRecorded, ServerMessage,
};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn rider_and_driver_are_matched_told_the_fare_and_rated() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]).await;
    let http = reqwest::Client::new();
    let mut rider_socket = Socket::connect(&node).await;
    let mut driver_socket = Socket::connect(&node).await;

    // Shahbag to Gulshan; the driver is 111 m north of the rider.
    let (from, to) = (at(23.7389, 90.3958), at(23.7925, 90.4078));
    let rider = post_rider(&http, &node, "Amina", from, to).await;
    let driver = post_driver(&http, &node, "Karim", "DHA-11-2233", at(23.7399, 90.3958)).await;
    assert_eq!(rider.node, node.node);
    let told_rider = told_both(&mut rider_socket, &rider, &mut driver_socket, &driver).await;
    assert_eq!(told_rider.car_number, "DHA-11-2233");
    assert_eq!(
        (
            told_rider.rider_name.as_str(),
            told_rider.driver_name.as_str()
        ),
        ("Amina", "Karim")
    );
    assert_eq!(told_rider.region, "test");
    // Independent haversine (R = 6371.0088 km): 6.0839 km trip, 0.1112 km pickup.
    assert_eq!(told_rider.trip_km, 6.084);
    assert_eq!(told_rider.pickup_km, 0.111);
    assert_eq!(told_rider.fare_taka, 12.17);

    let rate = |stars: i64, car: &str| {
        http.post(node.url("/rating"))
            .json(&json!({"rider_id": rider.id, "token": rider.token, "car_number": car, "stars": stars}))
            .send()
    };
    let first = rate(4, "DHA-11-2233").await.unwrap();
    assert_eq!(first.status(), 201);
    let recorded: RatingRecorded = first.json().await.unwrap();
    assert_eq!((recorded.driver_id, recorded.stars), (driver.id, 4));

    let again = rate(2, "DHA-11-2233").await.unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(
        again.json::<ErrorBody>().await.unwrap().error.code,
        "already_rated"
    );

    let wrong_car = rate(3, "DHA-00-0000").await.unwrap();
    assert_eq!(wrong_car.status(), 404);
    assert_eq!(
        wrong_car.json::<ErrorBody>().await.unwrap().error.code,
        "no_such_match"
    );

    let average: DriverRating = get_json(&http, &node.url("/drivers/DHA-11-2233/rating")).await;
    assert_eq!((average.average, average.count), (Some(4.0), 1));

    let listed: MatchList = get_json(&http, &node.admin_url("/matches?limit=5")).await;
    assert_eq!(listed.matches, vec![told_rider]);
}

#[tokio::test]
async fn closest_pairs_win_and_nobody_is_matched_twice() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--match-interval", "3s"]).await;
    let http = reqwest::Client::new();
    let mut socket = Socket::connect(&node).await;
    // Two riders, two drivers, posted within one round: rider B is closer to
    // driver X than rider A is, so greedy must give X to B and Y to A.
    let a = post_rider(&http, &node, "A", at(23.800, 90.40), at(23.9, 90.4)).await;
    let b = post_rider(&http, &node, "B", at(23.810, 90.40), at(23.9, 90.4)).await;
    let x = post_driver(&http, &node, "X", "X-1", at(23.811, 90.40)).await;
    let y = post_driver(&http, &node, "Y", "Y-1", at(23.795, 90.40)).await;
    socket.subscribe(&[&a, &b]).await;
    let mut pairs = vec![];
    for _ in 0..2 {
        let m = socket.next_match().await;
        pairs.push((m.rider_id, m.driver_id));
    }
    pairs.sort();
    let mut expected = vec![(a.id, y.id), (b.id, x.id)];
    expected.sort();
    assert_eq!(pairs, expected);
}

#[tokio::test]
async fn a_match_made_before_the_subscription_is_still_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]).await;
    let http = reqwest::Client::new();
    let rider = post_rider(&http, &node, "Late", at(23.8, 90.4), at(23.81, 90.4)).await;
    let driver = post_driver(&http, &node, "Early", "LATE-1", at(23.8, 90.4)).await;
    eventually("the match to be committed", || async {
        let listed: MatchList = http
            .get(node.admin_url("/matches"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        listed
            .matches
            .iter()
            .any(|m| m.rider_id == rider.id)
            .then_some(())
    })
    .await;

    let mut socket = Socket::connect(&node).await;
    socket.subscribe(&[&driver]).await;
    let m = socket.next_match().await;
    assert_eq!((m.rider_id, m.driver_id), (rider.id, driver.id));
}

#[tokio::test]
async fn an_unmatched_request_expires_after_its_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]).await;
    let http = reqwest::Client::new();
    let rider = post_rider(&http, &node, "Alone", at(23.8, 90.4), at(23.81, 90.4)).await;
    let ttl = rider.expires_at - chrono::Utc::now();
    assert!(
        ttl <= chrono::Duration::seconds(5) && ttl > chrono::Duration::seconds(3),
        "{ttl}"
    );

    let state = |http: reqwest::Client, url: String| async move {
        http.get(url)
            .send()
            .await
            .ok()?
            .json::<DebugState>()
            .await
            .ok()
    };
    let pending = state(http.clone(), node.admin_url("/debug/state"))
        .await
        .unwrap();
    assert_eq!(pending.pending_riders, 1);
    eventually("the rider to expire", || async {
        let s = state(http.clone(), node.admin_url("/debug/state")).await?;
        (s.pending_riders == 0).then_some(())
    })
    .await;
    assert!(
        chrono::Utc::now() >= rider.expires_at,
        "expired before its time"
    );

    // Gone for good: a driver on the same spot gets nobody.
    let mut socket = Socket::connect(&node).await;
    socket.subscribe(&[&rider]).await;
    let ServerMessage::Subscribed { ids } = socket.next().await else {
        panic!("expected an acknowledgement first");
    };
    assert!(ids.is_empty());
    let ServerMessage::Error { error } = socket.next().await else {
        panic!("expected an unknown-id error");
    };
    assert_eq!(error.code, "unknown_id");
    post_driver(&http, &node, "Too late", "LATE-2", at(23.8, 90.4)).await;
    eventually("a matching round to pass", || async {
        let s = state(http.clone(), node.admin_url("/debug/state")).await?;
        (s.pending_drivers == 1).then_some(s)
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let s = state(http.clone(), node.admin_url("/debug/state"))
        .await
        .unwrap();
    assert_eq!((s.pending_drivers, s.committed_matches), (1, 0));
}
