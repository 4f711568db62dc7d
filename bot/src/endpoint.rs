//! Node endpoints: parsing `--endpoint`, the URLs of each API route, and the
//! one place that decides which endpoint a request goes to: the endpoint of
//! the region that owns the position when endpoints map to regions, otherwise
//! any endpoint (a node answers `307` for a position it does not own, and the
//! HTTP client follows it); a live one in place of one set aside as dead.
//!
//! Route URLs are parsed once per endpoint and cloned per request, so the hot
//! path of load mode never re-parses a URL string.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use reqwest::Url;
use ride_types::api::Position;
use ride_types::regions::Regions;

use crate::failover::SetAside;

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

/// Chooses the endpoint for each request, and keeps which are set aside
/// as dead ([`crate::failover`]).
#[derive(Debug)]
pub struct Router {
    endpoints: Vec<Arc<Endpoint>>,
    /// Every index into `endpoints`, in order: the candidates when no
    /// region narrows them.
    all: Vec<usize>,
    /// When endpoints map to regions (`--regions`).
    by_region: Option<ByRegion>,
    aside: SetAside,
}

#[derive(Debug)]
struct ByRegion {
    regions: Regions,
    /// Region id -> the endpoints that serve it (several nodes may), by
    /// index into the router's endpoints.
    serving: HashMap<String, Vec<usize>>,
}

/// Where one request goes.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    pub endpoint: &'a Arc<Endpoint>,
    /// The endpoint the request would go to was set aside, so it goes to
    /// this one instead.
    pub failover: bool,
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
            all: (0..endpoints.len()).collect(),
            aside: SetAside::new(endpoints.len(), Instant::now()),
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
        let mut serving: HashMap<String, Vec<usize>> = HashMap::new();
        for (region, base) in served {
            if regions.get(region).is_none() {
                let known: Vec<&str> = regions.iter().map(|r| r.id.as_str()).collect();
                return Err(EndpointError::UnknownRegion {
                    endpoint: base.to_string(),
                    region: region.clone(),
                    known: known.join(", "),
                });
            }
            if let Some(i) = router.index_of(base) {
                let ours = serving.entry(region.clone()).or_default();
                if !ours.contains(&i) {
                    ours.push(i);
                }
            }
        }
        router.by_region = Some(ByRegion { regions, serving });
        Ok(router)
    }

    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    fn index_of(&self, base: &Url) -> Option<usize> {
        self.endpoints.iter().position(|e| e.base() == base)
    }

    /// The endpoints that serve the region owning `position`, when that is
    /// known, else all of them.
    fn candidates(&self, position: Position) -> &[usize] {
        let owners = self.by_region.as_ref().and_then(|by_region| {
            let region = by_region.regions.route(position);
            by_region.serving.get(&region.id)
        });
        match owners {
            Some(owners) if !owners.is_empty() => owners,
            _ => &self.all,
        }
    }

    /// Where a request at `position` goes at `now`: one of the endpoints
    /// serving the region that owns it (or any, when that is not known),
    /// chosen by a hash of the position, which spreads riders and drivers
    /// evenly (like round-robin, but stateless and deterministic).
    ///
    /// When that endpoint is set aside, another live one of the same
    /// candidates, else any live endpoint (it redirects to whichever node
    /// serves the position), else, when all are set aside, the one whose
    /// set-aside ends first.
    pub fn route(&self, position: Position, now: Instant) -> Route<'_> {
        let own = self.candidates(position);
        let preferred = own[spread(own.len(), position)];
        let chosen = if self.aside.is_live(preferred, now) {
            preferred
        } else {
            self.live_among(own, position, now)
                .or_else(|| self.live_among(&self.all, position, now))
                .or_else(|| self.aside.first_back(&self.all))
                .unwrap_or(preferred)
        };
        Route {
            endpoint: &self.endpoints[chosen],
            failover: chosen != preferred,
        }
    }

    /// One of the live endpoints among `candidates`, chosen by a hash of
    /// `position`.
    fn live_among(&self, candidates: &[usize], position: Position, now: Instant) -> Option<usize> {
        let live: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| self.aside.is_live(i, now))
            .collect();
        (!live.is_empty()).then(|| live[spread(live.len(), position)])
    }

    /// Sets aside the endpoint that `url` (a route such as
    /// `http://b:8080/rider`, or an endpoint's base) belongs to, because a
    /// request there met a dead node at `now`. Returns whether `url` is one
    /// of the router's endpoints (a node a redirect led to may not be).
    pub fn set_aside(&self, url: &Url, now: Instant) -> bool {
        let Some(i) = self.index_of(&Endpoint::base_of(url)) else {
            return false;
        };
        self.aside.set_aside(i, now);
        true
    }
}

/// An index below `len` (which must not be zero), chosen by a hash of
/// `position`.
fn spread(len: usize, position: Position) -> usize {
    let mut h = position.lat.to_bits() ^ position.lon.to_bits().rotate_left(32);
    // splitmix64 finaliser: nearby coordinates land on unrelated endpoints.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    // The modulus is below `len`, so the cast back cannot truncate.
    (h % len as u64) as usize
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::area::Area;
    use crate::failover::SET_ASIDE;
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
    fn routes_spread_evenly_and_deterministically() {
        let bases = bases(&["a:1", "b:1", "c:1"]);
        let router = Router::new(&bases).unwrap();
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(3);
        let mut counts = [0_u32; 3];
        for _ in 0..30_000 {
            let p = Area::DHAKA.random_position(&mut rng);
            let route = router.route(p, now);
            assert!(!route.failover);
            let chosen = route.endpoint;
            assert!(Arc::ptr_eq(chosen, router.route(p, now).endpoint));
            let i = router
                .endpoints()
                .iter()
                .position(|e| Arc::ptr_eq(e, chosen))
                .unwrap();
            counts[i] += 1;
        }
        assert!(counts.iter().all(|&c| c > 9_000), "{counts:?}");
    }

    fn bases(inputs: &[&str]) -> Vec<Url> {
        inputs.iter().map(|s| parse_endpoint(s).unwrap()).collect()
    }

    fn host_for(router: &Router, p: Position) -> String {
        let endpoint = router.route(p, Instant::now()).endpoint;
        endpoint.base().host_str().unwrap().to_owned()
    }

    fn shipped_regions() -> Regions {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../regions");
        Regions::load_dir(&dir).unwrap()
    }

    /// The shipped regions, and a router over `pairs` of (region, endpoint).
    fn regional(pairs: &[(&str, &str)]) -> (Regions, Router) {
        let regions = shipped_regions();
        let router = Router::by_region(regions.clone(), &served(pairs)).unwrap();
        (regions, router)
    }

    fn served(pairs: &[(&str, &str)]) -> Vec<(String, Url)> {
        pairs
            .iter()
            .map(|(region, base)| ((*region).to_owned(), parse_endpoint(base).unwrap()))
            .collect()
    }

    #[test]
    fn by_region_sends_each_position_to_its_region() {
        let (regions, router) = regional(&[
            ("dhaka-north", "n:1"),
            ("dhaka-southeast", "se:1"),
            ("dhaka-southwest", "sw:1"),
        ]);
        let host_of = |region: &str| match region {
            "dhaka-north" => "n",
            "dhaka-southeast" => "se",
            _ => "sw",
        };
        let mut rng = StdRng::seed_from_u64(5);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3_000 {
            let p = Area::DHAKA.random_position(&mut rng);
            let host = host_for(&router, p);
            assert_eq!(host, host_of(&regions.route(p).id), "{p:?}");
            seen.insert(host);
        }
        // The default area straddles all three regions.
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn by_region_spreads_within_a_region_and_falls_back_for_unserved_ones() {
        let (_, router) = regional(&[("dhaka-north", "n1:1"), ("dhaka-north", "n2:1")]);
        let mut rng = StdRng::seed_from_u64(9);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..3_000 {
            let p = Area::DHAKA.random_position(&mut rng);
            let host = host_for(&router, p);
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

    /// Positions whose own endpoint is `host`, from a seeded stream.
    fn positions_of(router: &Router, host: &str, now: Instant) -> Vec<Position> {
        let mut rng = StdRng::seed_from_u64(11);
        let positions: Vec<Position> = (0..3_000)
            .map(|_| Area::DHAKA.random_position(&mut rng))
            .filter(|&p| router.route(p, now).endpoint.base().host_str() == Some(host))
            .collect();
        assert!(positions.len() > 100, "{host}: {}", positions.len());
        positions
    }

    #[test]
    fn a_set_aside_endpoint_gets_nothing_until_its_set_aside_ends() {
        let bases = bases(&["a:1", "b:1", "c:1"]);
        let router = Router::new(&bases).unwrap();
        let t0 = Instant::now();
        let positions = positions_of(&router, "a", t0);
        assert!(router.set_aside(&router.endpoints()[0].rider, t0));
        let mut others = std::collections::HashSet::new();
        for &p in &positions {
            let route = router.route(p, t0);
            assert!(route.failover);
            let host = route.endpoint.base().host_str().unwrap().to_owned();
            assert_ne!(host, "a");
            others.insert(host);
        }
        assert_eq!(others.len(), 2, "spread over the live ones: {others:?}");
        let back = t0 + SET_ASIDE;
        for &p in &positions {
            let route = router.route(p, back);
            assert!(!route.failover);
            assert_eq!(route.endpoint.base().host_str(), Some("a"));
        }
    }

    #[test]
    fn a_dead_region_fails_over_to_a_live_endpoint_of_its_own_region_first() {
        let (regions, router) = regional(&[
            ("dhaka-north", "n1:1"),
            ("dhaka-north", "n2:1"),
            ("dhaka-southeast", "se:1"),
        ]);
        let t0 = Instant::now();
        // The south-west's positions are unserved, so spread over all three.
        let north: Vec<Position> = positions_of(&router, "n1", t0)
            .into_iter()
            .filter(|&p| regions.route(p).id == "dhaka-north")
            .collect();
        assert!(!north.is_empty());
        router.set_aside(&parse_endpoint("n1:1").unwrap(), t0);
        for &p in &north {
            let route = router.route(p, t0);
            assert!(route.failover);
            assert_eq!(route.endpoint.base().host_str(), Some("n2"));
        }
        router.set_aside(&parse_endpoint("n2:1").unwrap(), t0);
        for &p in &north {
            let route = router.route(p, t0);
            assert_eq!(route.endpoint.base().host_str(), Some("se"), "any live one");
        }
    }

    #[test]
    fn when_every_endpoint_is_set_aside_the_first_back_is_used() {
        let bases = bases(&["a:1", "b:1"]);
        let router = Router::new(&bases).unwrap();
        let t0 = Instant::now();
        let positions = positions_of(&router, "a", t0);
        router.set_aside(&bases[1], t0);
        router.set_aside(&bases[0], t0 + Duration::from_secs(1));
        for &p in &positions {
            let route = router.route(p, t0 + Duration::from_secs(2));
            assert_eq!(route.endpoint.base().host_str(), Some("b"));
            assert!(route.failover);
        }
        assert!(
            !router.set_aside(&parse_endpoint("elsewhere:1").unwrap(), t0),
            "a node outside the list is not one of ours"
        );
    }
}
