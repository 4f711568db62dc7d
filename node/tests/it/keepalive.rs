//! Websocket keep-alive: a client that answers pings stays connected; one
//! that stops reading (and so never answers) is dropped.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_dropped_and_a_live_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--ws-ping-interval", "100ms"]).await;
    let http = reqwest::Client::new();
    let mut live = Socket::connect(&node).await;
    let mut silent = Socket::connect(&node).await;

    // Ten ping intervals: the live socket reads (and answers); the silent
    // one reads nothing.
    live.stay_quiet_for(Duration::from_secs(1)).await;
    silent.until_closed().await;

    let rider = post_rider(&http, &node, "Awake", at(23.8, 90.4), at(23.9, 90.4)).await;
    post_driver(&http, &node, "Still", "PING-1", at(23.8, 90.4)).await;
    live.subscribe(&[&rider]).await;
    assert_eq!(live.next_match().await.rider_id, rider.id);
}
