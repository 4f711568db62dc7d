//! Ratings under `kill -9`: a node killed while ratings pour in keeps, after
//! its restart, every rating it answered 201 exactly once, in its embedded
//! store and (with `CQL_NODES`, see `cql.rs`) in the cluster. Ratings cut
//! off unanswered may or may not be in, but never twice.

use std::collections::HashMap;
use std::path::Path;

use node::disk::ratings::{EmbeddedStore, RatingStore};
use ride_types::api::MatchNotice;
use uuid::Uuid;

use crate::cql::cql_nodes;
use crate::support::*;

/// Matches rated, and how many raters send at once.
const MATCHES: usize = 240;
const RATERS: usize = 12;

fn stars_of(i: usize) -> u8 {
    (i % 5 + 1) as u8
}

/// Rates every match from `RATERS` tasks and kills the node (SIGKILL, by
/// dropping it) as soon as a quarter were answered 201. Returns each car's
/// answer, `None` for the ones the kill cut off.
async fn rate_until_killed(
    http: &reqwest::Client,
    node: NodeProcess,
    told: &[MatchNotice],
) -> HashMap<String, Option<u16>> {
    let url = node.url("/rating");
    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
    let indexed: Vec<(usize, MatchNotice)> = told.iter().cloned().enumerate().collect();
    for share in indexed.chunks(told.len() / RATERS) {
        let (http, url, answers, share) =
            (http.clone(), url.clone(), answers.clone(), share.to_vec());
        tokio::spawn(async move {
            for (i, m) in share {
                let code = rate_at(&http, &url, &m, stars_of(i)).await;
                let _ = answers.send((m.car_number, code));
            }
        });
    }
    drop(answers);
    let mut node = Some(node);
    let mut codes = HashMap::new();
    let mut created = 0;
    while let Some((car, code)) = answered.recv().await {
        if code == Some(201) {
            created += 1;
            if created == told.len() / 4 {
                // Drop kills with SIGKILL: no drain, no flush.
                drop(node.take());
            }
        }
        codes.insert(car, code);
    }
    assert!(node.is_none(), "the node was never killed");
    let cut_off = codes.values().filter(|c| c.is_none()).count();
    assert!(cut_off > 0, "every rating was answered before the kill");
    codes
}

/// Checks each car's count and average as `read` reports them.
async fn exactly_once<F, Fut>(
    where_: &str,
    told: &[MatchNotice],
    codes: &HashMap<String, Option<u16>>,
    mut read: F,
) where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = (u64, Option<f64>)>,
{
    for (i, m) in told.iter().enumerate() {
        let (count, average) = read(m.car_number.clone()).await;
        let stars = f64::from(stars_of(i));
        match codes[&m.car_number] {
            Some(201) => assert_eq!(
                (count, average),
                (1, Some(stars)),
                "{where_}: rating of {} answered 201",
                m.car_number
            ),
            code => assert!(
                count == 0 || (count, average) == (1, Some(stars)),
                "{where_}: rating of {} answered {code:?} counted {count} times",
                m.car_number
            ),
        }
    }
}

/// The embedded store (or outbox) the node at `dir` left behind.
async fn in_the_embedded_store(
    dir: &Path,
    outbox: bool,
    told: &[MatchNotice],
    codes: &HashMap<String, Option<u16>>,
) {
    let store = if outbox {
        EmbeddedStore::open_outbox(dir)
    } else {
        EmbeddedStore::open(dir)
    }
    .expect("the node's rating store");
    exactly_once("embedded store", told, codes, |car| {
        let store = &store;
        async move {
            let s = store.summary(&car).await.expect("a summary");
            (s.count, s.average())
        }
    })
    .await;
    store.close().await.unwrap();
}

/// Through the restarted node (its store), then once more again: a rating
/// that was in before the kill is refused after it.
async fn through_the_node(
    http: &reqwest::Client,
    node: &NodeProcess,
    told: &[MatchNotice],
    codes: &HashMap<String, Option<u16>>,
) {
    exactly_once("node", told, codes, |car| async move {
        let r = rating_of(http, node, &car).await.expect("a rating");
        (r.count, r.average)
    })
    .await;
    for (i, m) in told.iter().enumerate() {
        if codes[&m.car_number] == Some(201) {
            assert_ne!(rate(http, node, m, stars_of(i)).await, Some(201));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rating_answered_201_outlives_kill_9_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--request-ttl", "30s"];
    let node = NodeProcess::start(dir.path(), &flags).await;
    let http = reqwest::Client::new();
    let told = matched_pairs(&http, &node, "KILL", MATCHES).await;
    let codes = rate_until_killed(&http, node, &told).await;

    let node = NodeProcess::start(dir.path(), &flags).await;
    through_the_node(&http, &node, &told, &codes).await;
    assert!(node.stop().await.success());
    in_the_embedded_store(dir.path(), false, &told, &codes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rating_answered_201_outlives_kill_9_exactly_once_in_the_cluster() {
    let Some(nodes) = cql_nodes() else { return };
    let dir = tempfile::tempdir().unwrap();
    let keyspace = format!("it_kill_{}", Uuid::now_v7().simple());
    let flags = [
        "--request-ttl",
        "30s",
        "--cql-nodes",
        &nodes,
        "--cql-keyspace",
        &keyspace,
        "--cql-datacenter",
        "dhaka_north",
        "--cql-replication",
        "dhaka_north=1",
    ];
    let node = NodeProcess::start(dir.path(), &flags).await;
    let http = reqwest::Client::new();
    let told = matched_pairs(&http, &node, "KILLCQL", MATCHES).await;
    let codes = rate_until_killed(&http, node, &told).await;

    // Restarted, the node delivers what its outbox kept; reads then come
    // from the cluster.
    let node = NodeProcess::start(dir.path(), &flags).await;
    eventually("the outbox to drain", || async {
        backlog(&http, &node).await.filter(|b| *b == 0.0)
    })
    .await;
    through_the_node(&http, &node, &told, &codes).await;
    assert!(node.stop().await.success());
    in_the_embedded_store(dir.path(), true, &told, &codes).await;
}
