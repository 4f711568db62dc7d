//! Which region each endpoint serves, for `--regions`: the region files' own
//! mesh addresses when no `--endpoint` is given, otherwise each endpoint's
//! own word (`GET /healthz` names the node's region), so that endpoints
//! behind other addresses (a gateway, an ephemeral port) map too.

use reqwest::{Client, Url};
use ride_types::api::Health;
use ride_types::regions::Regions;

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

/// Asks every endpoint its region, as (region id, endpoint).
pub async fn ask_endpoints(client: &Client, bases: &[Url]) -> Result<Vec<(String, Url)>, BotError> {
    let mut served = Vec::with_capacity(bases.len());
    for base in bases {
        let health = health(client, base)
            .await
            .map_err(|reason| BotError::Discovery {
                endpoint: base.to_string(),
                reason,
            })?;
        served.push((health.region, base.clone()));
    }
    Ok(served)
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
