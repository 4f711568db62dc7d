//! What a node promised survives it: ratings a graceful restart, and a
//! request answered 202 a `kill -9` before any document held it.

use ride_types::api::{DebugState, DriverRating};
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

/// A 202 waits for the journal, not for the automerge change: a node killed
/// between the two reads the request back when it starts, and matches it.
#[tokio::test]
async fn a_request_answered_202_survives_a_kill_before_any_document_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    // Past its first round at start, this node writes nothing into its
    // documents for an hour.
    let node = NodeProcess::start(
        dir.path(),
        &["--match-interval", "1h", "--intake-flush-interval", "1h"],
    )
    .await;
    let http = reqwest::Client::new();
    let rider = post_rider(&http, &node, "Kept", at(23.8, 90.4), at(23.9, 90.4)).await;
    let state: DebugState = get_json(&http, &node.admin_url("/debug/state")).await;
    assert_eq!(state.own_pending_riders, 1);
    assert_eq!(state.documents, 0, "already in a document");
    drop(node); // SIGKILL

    let node = NodeProcess::start(dir.path(), &[]).await;
    let mut socket = Socket::connect(&node).await;
    socket.subscribe(&[&rider]).await;
    post_driver(&http, &node, "Found", "KEPT-1", at(23.8, 90.4)).await;
    let told = socket.next_match().await;
    assert_eq!(told.rider_id, rider.id);
    let metrics = eventually("the reload counted", || async {
        metrics_of(&http, &node)
            .await
            .filter(|m| counter(m, "mesh_intake_reloaded_total") > 0.0)
    })
    .await;
    assert_eq!(counter(&metrics, "mesh_intake_reloaded_total"), 1.0);
}

/// `--match-retention` is a promise across a restart: a match whose
/// documents were dropped (they are kept only while their requests are of
/// use) is still ratable after a `kill -9` and a restart.
#[tokio::test]
async fn a_match_outlives_its_documents_and_a_kill_for_the_match_retention() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--match-retention", "10m", "--epoch", "1s"];
    let node = NodeProcess::start(dir.path(), &flags).await;
    let http = reqwest::Client::new();
    let mut socket = Socket::connect(&node).await;
    let rider = post_rider(&http, &node, "Later", at(23.8, 90.4), at(23.9, 90.4)).await;
    post_driver(&http, &node, "Rated", "LATE-1", at(23.8, 90.4)).await;
    socket.subscribe(&[&rider]).await;
    let told = socket.next_match().await;
    eventually("the match's documents to be dropped", || async {
        let state: DebugState = get_json(&http, &node.admin_url("/debug/state")).await;
        (state.documents == 0).then_some(())
    })
    .await;
    drop(node); // SIGKILL

    let node = NodeProcess::start(dir.path(), &flags).await;
    let state: DebugState = get_json(&http, &node.admin_url("/debug/state")).await;
    assert_eq!((state.documents, state.committed_matches), (0, 1));
    assert_eq!(rate(&http, &node, &told, 4).await, Some(201));
}
