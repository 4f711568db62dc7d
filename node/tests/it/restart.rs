//! Ratings are durable: they survive a graceful restart of the node.

use node::wire::DriverRating;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn ratings_and_the_node_id_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]).await;
    let http = reqwest::Client::new();
    let mut socket = Socket::connect(&node).await;
    let rider = post_rider(&http, &node, "Keep", at(23.8, 90.4), at(23.9, 90.4)).await;
    post_driver(&http, &node, "Me", "KEEP-1", at(23.8, 90.4)).await;
    socket.subscribe(&[&rider]).await;
    socket.next_match().await;
    let rated = http
        .post(node.url("/rating"))
        .json(&json!({"rider_id": rider.id, "token": rider.token, "car_number": "KEEP-1", "stars": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(rated.status(), 201);

    let first_id = node.node.clone();
    let status = node.stop().await;
    assert!(status.success(), "unclean exit: {status}");

    let node = NodeProcess::start(dir.path(), &[]).await;
    assert_eq!(node.node, first_id);
    let average: DriverRating = get_json(&http, &node.url("/drivers/KEEP-1/rating")).await;
    assert_eq!((average.average, average.count), (Some(5.0), 1));
}
