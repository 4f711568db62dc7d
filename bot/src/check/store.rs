//! `bot check snapshot`: every match any node ever listed, kept in a file.
//!
//! A node lists at most [`MAX_MATCHES_LISTED`] matches, newest first, so a
//! run that commits more is only seen whole if it is looked at often:
//! `scripts/chaos.sh` takes a snapshot every few seconds and the final
//! check adds one last. A full listing whose oldest match was not seen
//! before may hide older ones; that is kept as a gap, which the check
//! reports (snapshot more often).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ride_types::api::MAX_MATCHES_LISTED;
use ride_types::api::{MatchList, MatchNotice};
use serde::{Deserialize, Serialize};

use super::nodes::{NodeUrl, Nodes, parse_node};
use super::{CheckError, now_secs, read_json};

#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    /// The nodes' operator listeners, as ID=URL.
    #[arg(required = true, value_name = "ID=URL", value_parser = parse_node)]
    nodes: Vec<NodeUrl>,
    /// The snapshot store (JSON), created if missing.
    #[arg(long, value_name = "FILE")]
    store: PathBuf,
}

/// Every match each node listed, over every snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Store {
    /// Node id → `rider/driver` → the match as that node first listed it.
    pub nodes: BTreeMap<String, BTreeMap<String, MatchNotice>>,
    pub gaps: Vec<Gap>,
    pub snapshots: u64,
}

/// A full listing whose oldest match was new: older ones may have been
/// missed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    pub node: String,
    /// Epoch seconds.
    pub at: f64,
    pub oldest: MatchNotice,
}

/// The key of a match in the store: its rider and driver.
pub fn pair_key(m: &MatchNotice) -> String {
    format!("{}/{}", m.rider_id, m.driver_id)
}

impl Store {
    pub fn load(path: &Path) -> Result<Self, CheckError> {
        Ok(read_json(path)?.unwrap_or_default())
    }

    /// Writes the store whole, through a temporary file, so that a killed
    /// run never leaves half a store.
    pub fn save(&self, path: &Path) -> Result<(), CheckError> {
        let error = |source| CheckError::Write {
            path: path.to_owned(),
            source,
        };
        let json = serde_json::to_vec(self).map_err(|e| error(e.into()))?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(error)
    }

    /// Adds what every node listed (`None`: it did not answer, e.g. killed
    /// on purpose; the next snapshot sees it).
    pub fn add<'a>(
        &mut self,
        listings: impl IntoIterator<Item = (&'a str, Option<MatchList>)>,
        at: f64,
    ) {
        for (node, listing) in listings {
            let Some(MatchList { matches }) = listing else {
                continue;
            };
            let seen = self.nodes.entry(node.to_owned()).or_default();
            if let Some(oldest) = matches.last()
                && matches.len() >= MAX_MATCHES_LISTED
                && !seen.contains_key(&pair_key(oldest))
            {
                self.gaps.push(Gap {
                    node: node.to_owned(),
                    at,
                    oldest: oldest.clone(),
                });
            }
            for m in matches {
                seen.entry(pair_key(&m)).or_insert(m);
            }
        }
        self.snapshots += 1;
    }
}

/// Takes one snapshot of every node into the store at `path`.
pub async fn snapshot(nodes: &Nodes, path: &Path) -> Result<Store, CheckError> {
    let mut store = Store::load(path)?;
    let listings = nodes.listings().await;
    store.add(nodes.ids().zip(listings), now_secs());
    store.save(path)?;
    Ok(store)
}

pub async fn run(args: SnapshotArgs) -> Result<(), CheckError> {
    snapshot(&Nodes::new(args.nodes)?, &args.store)
        .await
        .map(drop)
}

#[cfg(test)]
pub mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;

    /// A match of rider `r` with driver `d` (small numbers, as ids).
    pub fn notice(r: u128, d: u128) -> MatchNotice {
        MatchNotice {
            rider_id: Uuid::from_u128(r),
            driver_id: Uuid::from_u128(d),
            rider_name: "rider".into(),
            driver_name: "driver".into(),
            car_number: "DHA-1".into(),
            pickup_km: 1.0,
            trip_km: 2.0,
            fare_taka: 4.0,
            region: "north".into(),
            committed_at: Utc.timestamp_opt(1_800_000_000, 0).unwrap(),
        }
    }

    fn listing(matches: Vec<MatchNotice>) -> Option<MatchList> {
        Some(MatchList { matches })
    }

    #[test]
    fn snapshots_accumulate_every_pair_once_per_node() {
        let mut store = Store::default();
        store.add([("a", listing(vec![notice(1, 10)])), ("b", None)], 1.0);
        store.add(
            [
                ("a", listing(vec![notice(2, 20), notice(1, 10)])),
                ("b", listing(vec![notice(1, 10)])),
            ],
            2.0,
        );
        assert_eq!(store.snapshots, 2);
        let keys = |node: &str| -> Vec<String> { store.nodes[node].keys().cloned().collect() };
        assert_eq!(
            keys("a"),
            [pair_key(&notice(1, 10)), pair_key(&notice(2, 20))]
        );
        assert_eq!(keys("b"), [pair_key(&notice(1, 10))]);
        assert!(store.gaps.is_empty());
    }

    #[test]
    fn a_full_listing_that_reaches_nothing_seen_is_a_gap() {
        let full = |from: u128| -> Vec<MatchNotice> {
            (from..from + MAX_MATCHES_LISTED as u128)
                .rev()
                .map(|i| notice(i, 1_000_000 + i))
                .collect()
        };
        let mut store = Store::default();
        store.add([("a", listing(full(0)))], 1.0);
        assert_eq!(store.gaps.len(), 1, "nothing was seen before");
        // Overlapping the last one: its oldest match was seen.
        store.add([("a", listing(full(10)))], 2.0);
        assert_eq!(store.gaps.len(), 1);
        // Past everything seen: older matches may be hidden.
        store.add([("a", listing(full(5_000)))], 3.0);
        assert_eq!(store.gaps.len(), 2);
        assert_eq!(store.gaps[1].oldest, notice(5_000, 1_005_000));
    }

    #[test]
    fn the_store_survives_a_save_and_a_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("matches.json");
        assert_eq!(Store::load(&path).unwrap(), Store::default());
        let mut store = Store::default();
        store.add([("a", listing(vec![notice(1, 10)]))], 1.0);
        store.save(&path).unwrap();
        assert_eq!(Store::load(&path).unwrap(), store);
    }
}
