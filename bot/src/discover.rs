//! Which endpoints answer at start, and which region each serves, for
//! `--regions`: the region files' own mesh addresses when no `--endpoint`
//! is given, otherwise each endpoint's own word (`GET /healthz` names the
//! node's region), so that endpoints behind other addresses (a gateway, an
//! ephemeral port) map too.

use futures_util::future::join_all;
use reqwest::{Client, Url};
use ride_types::api::Health;
use ride_types::regions::Regions;
use tracing::warn;

use crate::endpoint::{EndpointError, parse_endpoint};
use crate::error::BotError;
use crate::http::{REQUEST_TIMEOUT, get_json};

/// Each region's mesh HTTP address, as (region id, endpoint).
pub fn mesh_endpoints(regions: &Regions) -> Result<Vec<(String, Url)>, EndpointError> {
    regions
        .iter()
        .map(|region| Ok((region.id.clone(), parse_endpoint(&region.http_url())?)))
        .collect()
}

/// What the endpoints said at start.
#[derive(Debug, Default)]
pub struct Probed {
    /// Each endpoint that answered, with the region it serves.
    pub live: Vec<(String, Url)>,
    /// Each endpoint that did not.
    pub dead: Vec<Url>,
}

/// What becomes of an endpoint that does not answer at start.
#[derive(Debug, Clone, Copy)]
pub enum Fate {
    /// Set aside like any dead endpoint, and tried again later.
    SetAside,
    /// Left out of the run: with `--regions` and `--endpoint`, only its
    /// answer says which region it serves.
    LeftOut,
}

impl std::fmt::Display for Fate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fate::SetAside => "its requests go to the other endpoints until it answers",
            Fate::LeftOut => "left out of this run: without an answer its region is unknown",
        })
    }
}

/// Asks every endpoint its health (`GET /healthz`, which names its region),
/// all at once, and warns of each that does not answer, saying what then
/// becomes of it (`fate`). A dead endpoint is not fatal (its region may be
/// adopted by another, or it may come back); none answering is.
pub async fn probe(client: &Client, bases: &[Url], fate: Fate) -> Result<Probed, BotError> {
    let answers = join_all(bases.iter().map(|base| health(client, base))).await;
    let mut probed = Probed::default();
    let mut reasons = Vec::new();
    for (base, answer) in bases.iter().zip(answers) {
        match answer {
            Ok(health) => probed.live.push((health.region, base.clone())),
            Err(reason) => {
                warn!("{base} does not answer (GET /healthz: {reason}); {fate}");
                reasons.push(format!("{base}: {reason}"));
                probed.dead.push(base.clone());
            }
        }
    }
    if probed.live.is_empty() {
        return Err(BotError::NoLiveEndpoint(reasons.join("; ")));
    }
    Ok(probed)
}

async fn health(client: &Client, base: &Url) -> Result<Health, String> {
    let url = base.join("healthz").map_err(|e| e.to_string())?;
    get_json(client, url, REQUEST_TIMEOUT).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn mesh_endpoints_are_the_regions_http_addresses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../regions");
        let regions = Regions::load_dir(&dir).unwrap();
        let served = mesh_endpoints(&regions).unwrap();
        let pairs: Vec<(&str, &str)> = served
            .iter()
            .map(|(region, url)| (region.as_str(), url.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("dhaka-north", "http://127.0.0.1:8081/"),
                ("dhaka-southeast", "http://127.0.0.1:8083/"),
                ("dhaka-southwest", "http://127.0.0.1:8082/"),
            ]
        );
    }
}
