//! Node endpoints: parsing `--endpoint`, the URLs of each API route, and the
//! one place that decides which endpoint a request goes to: the endpoint of
//! the region that owns the position when endpoints map to regions, otherwise
//! any endpoint (a node answers `307` for a position it does not own, and the
//! HTTP client follows it).
//!
//! Route URLs are parsed once per endpoint and cloned per request, so the hot
//! path of load mode never re-parses a URL string.

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::Url;
use ride_types::api::Position;
use ride_types::regions::Regions;

/// Why an `--endpoint` value was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EndpointError {
    #[error("{input:?} is not a URL: {reason}")]
    NotAUrl { input: String, reason: String },
    #[error("{input:?}: an endpoint is an http:// or https:// URL")]
    UnsupportedScheme { input: String },
    #[error("{input:?}: an endpoint must not carry a query or fragment")]
    HasQuery { input: String },
    #[error("no endpoint given; pass --endpoint http://HOST:PORT")]
    NoEndpoints,
    #[error("{endpoint} serves region {region:?}, which is not in --regions ({known})")]
    UnknownRegion {
        endpoint: String,
        region: String,
        known: String,
    },
}

/// Parses one endpoint, e.g. `http://127.0.0.1:8080` or `localhost:8080`
/// (`http://` is assumed when no scheme is given). The result always ends in
/// `/` so that route names can be joined onto it, keeping any path prefix.
pub fn parse_endpoint(input: &str) -> Result<Url, EndpointError> {
    let input = input.trim();
    let with_scheme = if input.contains("://") {
        input.to_owned()
    } else {
        format!("http://{input}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|e| EndpointError::NotAUrl {
        input: input.to_owned(),
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EndpointError::UnsupportedScheme {
            input: input.to_owned(),
        });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(EndpointError::HasQuery {
            input: input.to_owned(),
        });
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// One node's API, with every route resolved up front.
#[derive(Debug)]
pub struct Endpoint {
    base: Url,
    pub rider: Url,
    pub driver: Url,
    pub rating: Url,
    /// `ws://…/communication`.
    pub communication: Url,
}

impl Endpoint {
    /// `base` must end in `/` (as [`parse_endpoint`] and [`Endpoint::base_of`]
    /// guarantee).
    pub fn new(base: Url) -> Result<Self, EndpointError> {
        let join = |route: &str| {
            base.join(route).map_err(|e| EndpointError::NotAUrl {
                input: base.to_string(),
                reason: e.to_string(),
            })
        };
        let rider = join("rider")?;
        let driver = join("driver")?;
        let rating = join("rating")?;
        let mut communication = join("communication")?;
        // http -> ws and https -> wss are always allowed: all are "special".
        let socket_scheme = if base.scheme() == "https" {
            "wss"
        } else {
            "ws"
        };
        communication
            .set_scheme(socket_scheme)
            .map_err(|()| EndpointError::UnsupportedScheme {
                input: base.to_string(),
            })?;
        Ok(Endpoint {
            base,
            rider,
            driver,
            rating,
            communication,
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The endpoint that served a response whose final URL is `url` (a route
    /// such as `http://b:8080/rider`, possibly reached by a redirect).
    pub fn base_of(url: &Url) -> Url {
        let mut base = url.join(".").unwrap_or_else(|_| url.clone());
        base.set_query(None);
        base.set_fragment(None);
        base
    }
}

/// Chooses the endpoint for each request.
#[derive(Debug)]
pub struct Router {
    endpoints: Vec<Arc<Endpoint>>,
    /// When endpoints map to regions (`--regions`).
    by_region: Option<ByRegion>,
}

#[derive(Debug)]
struct ByRegion {
    regions: Regions,
    /// Region id -> the endpoints that serve it (several nodes may).
    serving: HashMap<String, Vec<Arc<Endpoint>>>,
}

impl Router {
    /// Duplicates are dropped: listing an endpoint twice would only skew the
    /// spread.
    pub fn new(bases: &[Url]) -> Result<Self, EndpointError> {
        let mut endpoints: Vec<Arc<Endpoint>> = Vec::with_capacity(bases.len());
        for base in bases {
            if endpoints.iter().all(|e| e.base() != base) {
                endpoints.push(Arc::new(Endpoint::new(base.clone())?));
            }
        }
        if endpoints.is_empty() {
            return Err(EndpointError::NoEndpoints);
        }
        Ok(Router {
            endpoints,
            by_region: None,
        })
    }

    /// A router that sends each request to an endpoint of the region owning
    /// its position. `served` pairs each endpoint with the id of the region
    /// it serves; positions of a region no endpoint serves are spread over
    /// all of them, as [`Router::new`] does.
    pub fn by_region(regions: Regions, served: &[(String, Url)]) -> Result<Self, EndpointError> {
        let bases: Vec<Url> = served.iter().map(|(_, base)| base.clone()).collect();
        let mut router = Router::new(&bases)?;
        let mut serving: HashMap<String, Vec<Arc<Endpoint>>> = HashMap::new();
        for (region, base) in served {
            if regions.get(region).is_none() {
                let known: Vec<&str> = regions.iter().map(|r| r.id.as_str()).collect();
                return Err(EndpointError::UnknownRegion {
                    endpoint: base.to_string(),
                    region: region.clone(),
                    known: known.join(", "),
                });
            }
            if let Some(endpoint) = router.endpoints.iter().find(|e| e.base() == base) {
                let ours = serving.entry(region.clone()).or_default();
                if !ours.iter().any(|e| Arc::ptr_eq(e, endpoint)) {
                    ours.push(Arc::clone(endpoint));
                }
            }
        }
        router.by_region = Some(ByRegion { regions, serving });
        Ok(router)
    }

    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// The endpoint a request at `position` is sent to: one serving the
    /// region that owns it, when that is known, else any.
    ///
    /// Among the candidates, the position is hashed, which spreads riders
    /// and drivers evenly (like round-robin, but stateless and
    /// deterministic).
    pub fn endpoint_for(&self, position: Position) -> &Arc<Endpoint> {
        let owners = self.by_region.as_ref().and_then(|by_region| {
            let region = by_region.regions.route(position);
            by_region.serving.get(&region.id)
        });
        match owners {
            Some(owners) if !owners.is_empty() => spread(owners, position),
            _ => spread(&self.endpoints, position),
        }
    }
}

/// One of `endpoints` (which must not be empty), chosen by a hash of
/// `position`.
fn spread(endpoints: &[Arc<Endpoint>], position: Position) -> &Arc<Endpoint> {
    let mut h = position.lat.to_bits() ^ position.lon.to_bits().rotate_left(32);
    // splitmix64 finaliser: nearby coordinates land on unrelated endpoints.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    // The modulus is below `len`, so the cast back cannot truncate.
    &endpoints[(h % endpoints.len() as u64) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::area::Area;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn parses_endpoints() {
        let url = parse_endpoint("http://127.0.0.1:8080").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/");
        let url = parse_endpoint(" localhost:9000 ").unwrap();
        assert_eq!(url.as_str(), "http://localhost:9000/");
        let url = parse_endpoint("http://gw.example/dhaka").unwrap();
        assert_eq!(url.as_str(), "http://gw.example/dhaka/");
    }

    #[test]
    fn rejects_bad_endpoints() {
        assert!(matches!(
            parse_endpoint("ftp://x:1"),
            Err(EndpointError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            parse_endpoint("http://x:99999"),
            Err(EndpointError::NotAUrl { .. })
        ));
        assert!(matches!(
            parse_endpoint(""),
            Err(EndpointError::NotAUrl { .. })
        ));
        assert!(matches!(
            parse_endpoint("http://x:1/?a=b"),
            Err(EndpointError::HasQuery { .. })
        ));
        let message = parse_endpoint("ftp://x:1").unwrap_err().to_string();
        assert!(message.contains("http://"), "{message}");
    }

    #[test]
    fn a_tls_endpoint_gets_a_tls_websocket() {
        let e = Endpoint::new(parse_endpoint("https://ride-mesh.fly.dev").unwrap()).unwrap();
        assert_eq!(e.rider.as_str(), "https://ride-mesh.fly.dev/rider");
        assert_eq!(
            e.communication.as_str(),
            "wss://ride-mesh.fly.dev/communication"
        );
    }

    #[test]
    fn resolves_routes() {
        let e = Endpoint::new(parse_endpoint("http://h:1/api").unwrap()).unwrap();
        assert_eq!(e.rider.as_str(), "http://h:1/api/rider");
        assert_eq!(e.driver.as_str(), "http://h:1/api/driver");
        assert_eq!(e.rating.as_str(), "http://h:1/api/rating");
        assert_eq!(e.communication.as_str(), "ws://h:1/api/communication");
        assert_eq!(Endpoint::base_of(&e.rider), *e.base());
        let redirected = Url::parse("http://other:2/rider").unwrap();
        assert_eq!(Endpoint::base_of(&redirected).as_str(), "http://other:2/");
    }

    #[test]
    fn router_needs_an_endpoint_and_drops_duplicates() {
        assert_eq!(Router::new(&[]).unwrap_err(), EndpointError::NoEndpoints);
        let a = parse_endpoint("a:1").unwrap();
        let b = parse_endpoint("b:1").unwrap();
        let router = Router::new(&[a.clone(), b, a]).unwrap();
        assert_eq!(router.endpoints().len(), 2);
    }

    #[test]
    fn endpoint_for_spreads_evenly_and_deterministically() {
        let bases: Vec<Url> = ["a:1", "b:1", "c:1"]
            .iter()
            .map(|s| parse_endpoint(s).unwrap())
            .collect();
        let router = Router::new(&bases).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let mut counts = [0_u32; 3];
        for _ in 0..30_000 {
            let p = Area::DHAKA.random_position(&mut rng);
            let chosen = router.endpoint_for(p);
            assert!(Arc::ptr_eq(chosen, router.endpoint_for(p)));
            let i = router
                .endpoints()
                .iter()
                .position(|e| Arc::ptr_eq(e, chosen))
                .unwrap();
            counts[i] += 1;
        }
        assert!(counts.iter().all(|&c| c > 9_000), "{counts:?}");
    }

    fn shipped_regions() -> Regions {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../regions");
        Regions::load_dir(&dir).unwrap()
    }

    fn served(pairs: &[(&str, &str)]) -> Vec<(String, Url)> {
        pairs
            .iter()
            .map(|(region, base)| ((*region).to_owned(), parse_endpoint(base).unwrap()))
            .collect()
    }

    #[test]
    fn by_region_sends_each_position_to_its_region() {
        let regions = shipped_regions();
        let router = Router::by_region(
            regions.clone(),
            &served(&[
                ("dhaka-north", "n:1"),
                ("dhaka-southeast", "se:1"),
                ("dhaka-southwest", "sw:1"),
            ]),
        )
        .unwrap();
        let host_of = |region: &str| match region {
            "dhaka-north" => "n",
            "dhaka-southeast" => "se",
            _ => "sw",
        };
        let mut rng = StdRng::seed_from_u64(5);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3_000 {
            let p = Area::DHAKA.random_position(&mut rng);
            let host = router.endpoint_for(p).base().host_str().unwrap().to_owned();
            assert_eq!(host, host_of(&regions.route(p).id), "{p:?}");
            seen.insert(host);
        }
        // The default area straddles all three regions.
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn by_region_spreads_within_a_region_and_falls_back_for_unserved_ones() {
        let regions = shipped_regions();
        let router = Router::by_region(
            regions.clone(),
            &served(&[("dhaka-north", "n1:1"), ("dhaka-north", "n2:1")]),
        )
        .unwrap();
        let mut rng = StdRng::seed_from_u64(9);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..3_000 {
            let p = Area::DHAKA.random_position(&mut rng);
            let host = router.endpoint_for(p).base().host_str().unwrap().to_owned();
            *counts.entry(host).or_insert(0) += 1;
        }
        // Every position, wherever it is, goes to one of the two; both get some.
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert!(counts.values().all(|&n| n > 500), "{counts:?}");
    }

    #[test]
    fn by_region_refuses_an_endpoint_of_an_unknown_region() {
        let err = Router::by_region(shipped_regions(), &served(&[("mars", "m:1")])).unwrap_err();
        assert!(matches!(err, EndpointError::UnknownRegion { .. }));
        assert!(err.to_string().contains("dhaka-north"), "{err}");
        assert_eq!(
            Router::by_region(shipped_regions(), &[]).unwrap_err(),
            EndpointError::NoEndpoints
        );
    }
}
