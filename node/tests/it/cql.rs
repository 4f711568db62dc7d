//! Ratings in a real three-datacenter CQL cluster: one database node per
//! region at 127.0.0.1/.2/.3, started by `scripts/cql-cluster.sh up` (`.ci/run`
//! does). The tests need `CQL_NODES`; without it they return at once, except
//! under CI, where a missing cluster is a failure.

use std::process::Command;

use ride_types::api::ErrorBody;
use uuid::Uuid;

use crate::mesh::Mesh;
use crate::support::*;

const CLUSTER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cql-cluster.sh");

pub fn cql_nodes() -> Option<String> {
    match std::env::var("CQL_NODES") {
        Ok(nodes) if !nodes.is_empty() => Some(nodes),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CQL_NODES is unset under CI: start the cluster with scripts/cql-cluster.sh up"
            );
            eprintln!("CQL_NODES unset: skipping the CQL cluster test");
            None
        }
    }
}

fn cluster(action: &str, node: &str) {
    let status = Command::new("bash")
        .args([CLUSTER_SCRIPT, action, node])
        .status()
        .expect("run cql-cluster.sh");
    assert!(status.success(), "cql-cluster.sh {action} {node} failed");
}

/// Stops a database node; starts it again when dropped, so a failing test
/// does not leave the cluster short of a datacenter.
struct StoppedDatabase(&'static str);

impl StoppedDatabase {
    fn stop(node: &'static str) -> Self {
        cluster("stop-node", node);
        Self(node)
    }

    fn restart(self) {
        cluster("start-node", self.0);
        std::mem::forget(self);
    }
}

impl Drop for StoppedDatabase {
    fn drop(&mut self) {
        cluster("start-node", self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratings_reach_every_region_once_and_outlive_a_datacenter_outage() {
    let Some(nodes) = cql_nodes() else { return };
    let keyspace = format!("it_{}_{}", std::process::id(), Uuid::now_v7().simple());
    let certs = tempfile::tempdir().unwrap();
    // The north node may not fail over to other datacenters, so that its
    // datacenter's outage shows in its outbox; the others may.
    let mesh = Mesh::start_with(certs.path(), |i| {
        let mut args = vec![
            "--cql-nodes".into(),
            nodes.clone(),
            "--cql-keyspace".into(),
            keyspace.clone(),
        ];
        if i == 0 {
            args.extend(["--cql-dc-failover".into(), "false".into()]);
        }
        args
    })
    .await;
    let http = reqwest::Client::new();
    mesh.converged(&http).await;
    let (north, southeast, southwest) = (mesh.node(0), mesh.node(1), mesh.node(2));

    let told = matched_pairs(&http, north, "CQL", 6).await;

    // Written through the north, read through the south-east's datacenter.
    assert_eq!(rate(&http, north, &told[0], 4).await, Some(201));
    let seen = eventually("the rating in the south-east datacenter", || async {
        rating_of(&http, southeast, &told[0].car_number)
            .await
            .filter(|r| r.count == 1)
    })
    .await;
    assert_eq!(seen.average, Some(4.0));

    // The same rating again: refused by the node that has it, and written a
    // second time by another node (the match is replicated there), without
    // counting twice.
    assert_eq!(rate(&http, north, &told[0], 4).await, Some(409));
    let other = eventually("the match replicated to the south-west", || async {
        rate(&http, southwest, &told[0], 4)
            .await
            .filter(|code| *code != 404)
    })
    .await;
    assert_eq!(other, 201);
    for region in [north, southeast, southwest] {
        let r = rating_of(&http, region, &told[0].car_number).await.unwrap();
        assert_eq!((r.count, r.average), (1, Some(4.0)));
    }

    // The north's database node goes down: ratings are still accepted there,
    // wait on disk, and reads say plainly that the cluster is unavailable.
    let outage = StoppedDatabase::stop("1");
    for (m, stars) in told[1..].iter().zip(1u8..) {
        assert_eq!(rate(&http, north, m, stars).await, Some(201));
    }
    let waiting = eventually("the backlog on /metrics", || async {
        backlog(&http, north).await.filter(|b| *b >= 5.0)
    })
    .await;
    assert_eq!(waiting, 5.0);
    let refused = http
        .get(north.url(&format!("/drivers/{}/rating", told[1].car_number)))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.json::<ErrorBody>().await.unwrap().error.code,
        "storage_unavailable"
    );
    for m in &told[1..] {
        assert!(
            rating_of(&http, southeast, &m.car_number)
                .await
                .is_none_or(|r| r.count == 0),
            "delivered while its datacenter was down"
        );
    }

    // Back: the backlog drains, and every rating is in, once.
    outage.restart();
    eventually("the backlog to drain", || async {
        backlog(&http, north).await.filter(|b| *b == 0.0)
    })
    .await;
    for (m, stars) in told[1..].iter().zip(1u8..) {
        let r = eventually("the queued rating in the south-west", || async {
            rating_of(&http, southwest, &m.car_number)
                .await
                .filter(|r| r.count > 0)
        })
        .await;
        assert_eq!((r.count, r.average), (1, Some(f64::from(stars))));
    }
}
