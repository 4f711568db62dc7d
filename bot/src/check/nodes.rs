//! The nodes under check, named on the command line as `ID=URL` (the
//! node's operator listener), and what they answer: `/debug/state`,
//! `/matches` and `/metrics`, read through the node's own wire types.
//!
//! Every node is asked at once, so that the answers are close in time; a
//! node that does not answer (killed on purpose, say) gives `None`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::{Client, Url};
use ride_types::api::MAX_MATCHES_LISTED;
use ride_types::api::{DebugState, MatchList};
use serde::de::DeserializeOwned;
use tracing::debug;

use super::CheckError;
use crate::endpoint::parse_endpoint;
use crate::http::{self, get_json, get_text};

/// How long a node may take to answer `/debug/state` while polling.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a node may take for anything else (a long `/matches` listing).
const TIMEOUT: Duration = Duration::from_secs(5);

/// One `ID=URL` argument.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeUrl {
    pub id: String,
    /// Ends in `/`, so that routes join onto it.
    pub base: Url,
}

/// Parses `ID=URL`, e.g. `dhaka-north-1=http://127.0.0.1:8181`.
pub fn parse_node(input: &str) -> Result<NodeUrl, String> {
    let (id, url) = input
        .split_once('=')
        .ok_or_else(|| format!("expected ID=URL, got {input}"))?;
    if id.is_empty() {
        return Err(format!("no node id in {input}"));
    }
    let base = parse_endpoint(url).map_err(|e| e.to_string())?;
    Ok(NodeUrl {
        id: id.to_owned(),
        base,
    })
}

/// The nodes, in command-line order, and the client that asks them.
pub struct Nodes {
    client: Client,
    nodes: Vec<NodeUrl>,
}

impl Nodes {
    pub fn new(nodes: Vec<NodeUrl>) -> Result<Self, CheckError> {
        let client = http::client(nodes.len()).map_err(CheckError::Client)?;
        Ok(Nodes { client, nodes })
    }

    /// The node ids, in command-line order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| n.id.as_str())
    }

    pub async fn states(&self, timeout: Duration) -> Vec<Option<DebugState>> {
        self.json("debug/state", timeout).await
    }

    /// Every node's newest matches, as many as a node lists.
    pub async fn listings(&self) -> Vec<Option<MatchList>> {
        self.json(&format!("matches?limit={MAX_MATCHES_LISTED}"), TIMEOUT)
            .await
    }

    /// Every node's Prometheus text.
    pub async fn metrics(&self) -> Vec<Option<String>> {
        let asks = self.nodes.iter().map(|node| async move {
            let url = route(node, "metrics")?;
            get_text(&self.client, url, TIMEOUT)
                .await
                .map_err(|reason| debug!(node = %node.id, %reason, "no metrics"))
                .ok()
        });
        join_all(asks).await
    }

    async fn json<T: DeserializeOwned>(&self, path: &str, timeout: Duration) -> Vec<Option<T>> {
        let asks = self.nodes.iter().map(|node| async move {
            let url = route(node, path)?;
            get_json(&self.client, url, timeout)
                .await
                .map_err(|reason| debug!(node = %node.id, path, %reason, "no answer"))
                .ok()
        });
        join_all(asks).await
    }
}

fn route(node: &NodeUrl, path: &str) -> Option<Url> {
    node.base
        .join(path)
        .map_err(|e| debug!(node = %node.id, path, error = %e, "bad route"))
        .ok()
}

/// Every node answered, every one is ready, and each pair holds the same
/// versions of what it shares (halo replication: nodes of different regions
/// hold different documents; see `DebugState::in_step_with`).
pub fn converged(states: &[Option<DebugState>]) -> bool {
    let Some(ready) = states
        .iter()
        .map(|s| s.as_ref().filter(|s| s.ready))
        .collect::<Option<Vec<&DebugState>>>()
    else {
        return false;
    };
    !ready.is_empty() && DebugState::all_in_step(ready)
}

/// Every sample of the labelled counter `name` in Prometheus text: its
/// labels (the text between the braces) and its value.
fn samples<'a>(metrics: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, u64)> + 'a {
    metrics.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (labels, value) = rest.rsplit_once(' ')?;
        // A counter's value is a whole number, as text such as `12` or `1e3`.
        let value = value.parse::<f64>().ok()? as u64;
        Some((labels.strip_suffix('}').unwrap_or(labels), value))
    })
}

/// Requests a node accepted since it started, riders and drivers, from its
/// `ride_requests_accepted_total{kind=...}` counters.
pub fn accepted_by_kind(metrics: &str) -> (u64, u64) {
    let (mut riders, mut drivers) = (0, 0);
    for (labels, value) in samples(metrics, "ride_requests_accepted_total") {
        if labels.contains("kind=\"rider\"") {
            riders += value;
        } else {
            drivers += value;
        }
    }
    (riders, drivers)
}

/// Requests a node accepted since it started for regions it adopted (their
/// own nodes down), by region, from `ride_requests_adopted_total{region=...}`.
pub fn adopted_by_region(metrics: &str) -> BTreeMap<String, u64> {
    let mut adopted = BTreeMap::new();
    for (labels, value) in samples(metrics, "ride_requests_adopted_total") {
        let region = labels
            .split_once("region=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map_or("", |(region, _)| region);
        *adopted.entry(region.to_owned()).or_default() += value;
    }
    adopted
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A node's state with the figures a check looks at: of region `r`,
    /// holding documents for it alone.
    pub fn state(node: &str, digest: &str, ready: bool) -> DebugState {
        DebugState {
            region: "r".into(),
            node: node.into(),
            digests: [("r".to_owned(), digest.to_owned())].into(),
            digest: digest.into(),
            ready,
            ..DebugState::default()
        }
    }

    #[test]
    fn node_arguments_are_id_equals_url() {
        let node = parse_node("north-1=http://127.0.0.1:8181").unwrap();
        assert_eq!(node.id, "north-1");
        assert_eq!(node.base.as_str(), "http://127.0.0.1:8181/");
        assert_eq!(
            route(&node, "debug/state").unwrap().as_str(),
            "http://127.0.0.1:8181/debug/state"
        );
        for bad in ["http://127.0.0.1:8181", "=http://a:1", "n=ftp://a:1"] {
            assert!(parse_node(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn converged_needs_every_node_ready_on_one_digest() {
        let a = || Some(state("a", "d1", true));
        assert!(converged(&[a(), a(), a()]));
        assert!(!converged(&[a(), Some(state("b", "d2", true))]));
        assert!(!converged(&[a(), Some(state("b", "d1", false))]));
        assert!(!converged(&[Some(state("a", "d1", false))]));
        assert!(!converged(&[a(), None]));
        assert!(!converged(&[]));
    }

    #[test]
    fn nodes_of_two_regions_converge_on_what_they_share() {
        let at = |region: &str, digests: &[(&str, &str)]| {
            let mut s = state(region, "whole", true);
            s.region = region.into();
            s.digests = digests
                .iter()
                .map(|(r, d)| ((*r).into(), (*d).into()))
                .collect();
            Some(s)
        };
        // North holds its own (n) and the halo it shares with south (s)...
        let north = at("north", &[("north", "n1"), ("south", "ns")]);
        let south = at("south", &[("north", "ns"), ("south", "s1")]);
        assert!(converged(&[north.clone(), south]));
        // ...and is out of step while south lacks a change to the halo.
        let behind = at("south", &[("north", "ns-old"), ("south", "s1")]);
        assert!(!converged(&[north.clone(), behind]));
        // Regions that share nothing are in step whatever they hold.
        let far = at("far", &[("far", "f1")]);
        assert!(converged(&[north, far]));
    }

    #[test]
    fn accepted_requests_are_read_by_kind() {
        let text = "\
# HELP ride_requests_accepted_total Rider and driver requests accepted, by kind.
# TYPE ride_requests_accepted_total counter
ride_requests_accepted_total{kind=\"rider\"} 12
ride_requests_accepted_total{kind=\"driver\"} 7
ride_requests_accepted_totally_else 99
ride_pending{kind=\"rider\"} 3
";
        assert_eq!(accepted_by_kind(text), (12, 7));
        assert_eq!(accepted_by_kind(""), (0, 0));
    }

    #[test]
    fn adopted_requests_are_read_by_region() {
        let text = "\
# TYPE ride_requests_adopted_total counter
ride_requests_adopted_total{region=\"north\"} 40
ride_requests_adopted_total{region=\"west\",kind=\"x\"} 2
ride_requests_accepted_total{kind=\"rider\"} 12
";
        let adopted = adopted_by_region(text);
        assert_eq!(
            adopted.into_iter().collect::<Vec<_>>(),
            [("north".to_owned(), 40), ("west".to_owned(), 2)]
        );
        assert!(adopted_by_region("").is_empty());
    }
}
