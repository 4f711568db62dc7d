//! The public API's JSON shapes, shared by the node and every client (the bot
//! depends on this module), so that the two can never drift apart.
//!
//! Request bodies reject unknown fields: a misspelt field (`"lng"`) is far more
//! often a client bug than a forward-compatible extension, and the error names
//! the offending field. Responses may gain fields; clients must ignore extras.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub use crate::geodesy::Position;

/// The largest websocket frame `/communication` takes from a client.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// The most matches `GET /matches` lists in one answer.
pub const MAX_MATCHES_LISTED: usize = 1_000;

/// `POST /rider`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Nadia",
    "position": {"lat": 23.7925, "lon": 90.4078},
    "destination": {"lat": 23.7330, "lon": 90.4172}
}))]
pub struct RiderRequest {
    pub name: String,
    pub position: Position,
    pub destination: Position,
}

/// `POST /driver`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Karim",
    "car_number": "DHA-1234",
    "position": {"lat": 23.7935, "lon": 90.4065}
}))]
pub struct DriverRequest {
    pub name: String,
    pub car_number: String,
    pub position: Position,
}

/// A request's capability: whoever holds it may follow the request on
/// `/communication` and, for a rider, rate its match. Opaque to clients.
/// `Debug` never shows it, so logging a value that holds one cannot leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, min_length = 43, max_length = 43)]
pub struct AccessToken(String);

impl AccessToken {
    /// A token's length: an HMAC-SHA256 tag (32 bytes) in unpadded
    /// base64url. Clients size their frames by it.
    pub const LEN: usize = 43;

    pub fn new(token: String) -> Self {
        Self(token)
    }

    /// The token itself, to send or to check; never to log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(..)")
    }
}

/// `202 Accepted` answer to `POST /rider` and `POST /driver`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub id: Uuid,
    /// Needed to follow this id on `/communication` and to rate its match.
    pub token: AccessToken,
    pub region: String,
    /// The node that accepted the request and alone may commit a match for it.
    pub node: String,
    pub expires_at: DateTime<Utc>,
}

/// Frames a client sends on `/communication`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Ask for the match of each request (rider or driver). May be sent any
    /// number of times; a match committed before the subscription is still
    /// delivered.
    Subscribe { requests: Vec<Grant> },
}

/// A request id with the token its `POST` answered with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub id: Uuid,
    /// Optional in the frame so that a missing token is refused for this id
    /// alone (`missing_token`), not as a malformed frame.
    #[serde(default)]
    pub token: Option<AccessToken>,
}

/// Frames the server sends on `/communication`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Match(MatchNotice),
    /// Acknowledges a `subscribe`: the ids now watched (or already delivered).
    Subscribed {
        ids: Vec<Uuid>,
    },
    /// A frame or some of its ids could not be used; the socket stays open.
    Error {
        error: ErrorDetail,
    },
}

/// A committed match, as told to the rider and the driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MatchNotice {
    pub rider_id: Uuid,
    pub driver_id: Uuid,
    pub rider_name: String,
    pub driver_name: String,
    pub car_number: String,
    /// Great-circle distance from the driver to the rider.
    pub pickup_km: f64,
    /// Great-circle distance from the rider's position to the destination.
    pub trip_km: f64,
    /// `trip_km` x 2 taka, rounded to 2 decimals.
    pub fare_taka: f64,
    /// The region of the node that committed the match.
    pub region: String,
    pub committed_at: DateTime<Utc>,
}

/// `POST /rating`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "rider_id": "0193a4b2-7c1d-7e4f-8a9b-0c1d2e3f4a5b",
    "token": "dGhlIHJpZGVyJ3MgdG9rZW4sIDQzIGNoYXJhY3RlcnM",
    "car_number": "DHA-1234",
    "stars": 5
}))]
pub struct RatingRequest {
    pub rider_id: Uuid,
    /// The rider's token. Optional in the body so that a missing one gets
    /// `401 missing_token` rather than a body error.
    #[serde(default)]
    pub token: Option<AccessToken>,
    pub car_number: String,
    /// 1..=5. Wide on purpose, so that `0` or `6` get a range message
    /// rather than a type error.
    #[schema(minimum = 1, maximum = 5)]
    pub stars: i64,
}

/// `201 Created` answer to `POST /rating`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RatingRecorded {
    pub rider_id: Uuid,
    pub driver_id: Uuid,
    pub car_number: String,
    pub stars: u8,
}

/// `GET /drivers/{car_number}/rating`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DriverRating {
    pub car_number: String,
    /// `None` (JSON `null`) until the first rating.
    pub average: Option<f64>,
    pub count: u64,
}

/// `GET /matches`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MatchList {
    pub matches: Vec<MatchNotice>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub region: String,
    pub node: String,
}

/// One frame of `GET /dashboard/events`: what this node sees now.
/// Positions are `[lat, lon]`; pending requests carry the index of their
/// owner's region in `owners`, so that 10,000 points stay compact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardFrame {
    pub node: String,
    pub region: String,
    pub at_ms: u64,
    /// Region ids, referenced by index; `?` for an owner not heard from.
    pub owners: Vec<String>,
    pub riders: Vec<(f64, f64, u16)>,
    pub drivers: Vec<(f64, f64, u16)>,
    /// Recent committed matches, newest first.
    pub matches: Vec<DashboardMatch>,
    /// Cross-owner claims waiting for an answer.
    pub claims: Vec<DashboardClaim>,
    /// This node first, then its peers.
    pub nodes: Vec<NodePanel>,
    /// The regions this node accepts for: its own first, then any it
    /// adopted (or is handing back).
    #[serde(default)]
    pub serving: Vec<String>,
    /// Per neighbour region this node believes down, the region that serves
    /// its area now.
    #[serde(default)]
    pub adopters: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardMatch {
    pub rider: (f64, f64),
    pub driver: (f64, f64),
    pub region: String,
    /// The rider and the driver were accepted in different regions.
    pub cross_border: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardClaim {
    pub rider: (f64, f64),
    pub driver: (f64, f64),
}

/// One node as this node sees it; a peer's figures are its last report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePanel {
    pub node: String,
    /// `?` until the peer has reported.
    pub region: String,
    pub this_node: bool,
    /// A session with it is up now (always true for this node).
    pub reachable: bool,
    pub lag_p50_ms: Option<f64>,
    pub lag_p99_ms: Option<f64>,
    pub requests_per_s: f64,
    pub matches_per_s: f64,
    pub documents: u32,
    /// Bytes of the records its documents hold.
    pub document_bytes: Option<u64>,
    /// Its digest of what it shares with this node's region (of all it
    /// holds, for this node)...
    pub digest: String,
    /// ...and this node's digest of what it shares with that node's region:
    /// equal once the two have converged.
    #[serde(default)]
    pub shared_digest: String,
    pub ready: bool,
    /// The peer's clock minus this node's (absent for this node and until
    /// measured), and whether it is beyond `--max-clock-skew`.
    #[serde(default)]
    pub clock_offset_ms: Option<f64>,
    #[serde(default)]
    pub clock_skewed: bool,
}

/// What a node knows of a peer's session and clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PeerClock {
    pub node: String,
    /// A session with it is up now.
    pub reachable: bool,
    /// This node has held everything the peer held at the start of a
    /// session with it.
    pub in_sync: bool,
    /// The peer's clock minus this node's, once measured.
    pub clock_offset_ms: Option<f64>,
    /// Beyond `--max-clock-skew`.
    pub clock_skewed: bool,
}

/// `GET /debug/state`: what this node holds, for operators and checks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DebugState {
    pub region: String,
    pub node: String,
    pub pending_riders: usize,
    pub pending_drivers: usize,
    /// Of those, the ones this node accepted: each pending request counts
    /// once in the sum over every node.
    #[serde(default)]
    pub own_pending_riders: usize,
    #[serde(default)]
    pub own_pending_drivers: usize,
    /// Committed matches this node retains.
    pub committed_matches: usize,
    /// Claims on drivers still waiting for their owner's answer.
    pub open_claims: usize,
    /// Replicated documents held.
    pub documents: usize,
    /// A hash of every document held: equal on converged nodes of one
    /// region.
    pub digest: String,
    /// Per region id, a hash of the documents this node shares with that
    /// region's nodes (halo replication: nodes of different regions hold
    /// different documents). See [`DebugState::in_step_with`].
    #[serde(default)]
    pub digests: BTreeMap<String, String>,
    /// Whether the node has synced with its peers and makes decisions.
    pub ready: bool,
    /// The identity it writes as (`<node>@<lineage>`): new whenever its
    /// journal was lost.
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub peers: Vec<PeerClock>,
    /// Commits learnt twice (recorded and told once).
    #[serde(default)]
    pub duplicate_commits: u64,
    /// Commits naming another partner for someone already matched: a
    /// broken guarantee, never told. Always 0.
    #[serde(default)]
    pub conflicting_commits: u64,
    /// The regions this node accepts requests for: its own, and any it
    /// adopted while that region is down.
    #[serde(default)]
    pub serving: Vec<String>,
    /// The neighbour regions this node believes down.
    #[serde(default)]
    pub regions_down: Vec<String>,
}

impl DebugState {
    /// Both nodes hold the same versions of the documents they share:
    /// converged, as far as these two go (see [`crate::convergence::in_step`]).
    pub fn in_step_with(&self, other: &DebugState) -> bool {
        crate::convergence::in_step(
            (&self.region, &self.digests),
            (&other.region, &other.digests),
        )
    }

    /// Every pair of `states` is [`DebugState::in_step_with`] the other.
    pub fn all_in_step<'a>(states: impl IntoIterator<Item = &'a DebugState>) -> bool {
        let nodes: Vec<(&str, &BTreeMap<String, String>)> = states
            .into_iter()
            .map(|s| (s.region.as_str(), &s.digests))
            .collect();
        crate::convergence::all_in_step(&nodes)
    }
}

/// Body of every 4xx and 5xx answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable (`invalid_field`, `already_rated`, ...).
    /// A string, not an enum, for clients: a newer node may add codes.
    #[schema(value_type = ErrorCode)]
    pub code: String,
    /// Human-readable: says what is wrong and, where it can, how to fix it.
    pub message: String,
}

/// Every `error.code` the HTTP API answers with. Each names one cause, so a
/// client can act on it without reading the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 307: another region serves this position; follow `Location`.
    WrongRegion,
    /// 400: the body is not JSON.
    MalformedJson,
    /// 400: the query string does not parse (`/route`, `/matches`).
    InvalidQuery,
    /// 400: the body could not be read.
    UnreadableBody,
    /// 401: a request that needs the rider's token came without one.
    MissingToken,
    /// 403: the token is not the one issued for this id.
    InvalidToken,
    /// 404: no such route.
    NotFound,
    /// 404: no committed match is known for this rider and car.
    NoSuchMatch,
    /// 404: the node runs without region files.
    NoRegions,
    /// 405: the route exists, not with this method.
    MethodNotAllowed,
    /// 409: this match was rated already.
    AlreadyRated,
    /// 413: the body is larger than the limit (64 KiB).
    PayloadTooLarge,
    /// 415: the body is not declared `application/json`.
    UnsupportedMediaType,
    /// 422: JSON of the wrong shape: a missing, unknown or mistyped field.
    InvalidBody,
    /// 422: a field out of range (a coordinate, `stars`, an empty name).
    InvalidField,
    /// 429: past the per-client rate limit; see `Retry-After`.
    RateLimited,
    /// 500: the node failed unexpectedly.
    Internal,
    /// 503: the node is at capacity; see `Retry-After`.
    Overloaded,
    /// 503: the region that serves the position cannot be reached; see
    /// `Retry-After`.
    RegionUnavailable,
    /// 503: the node could not make the request or rating durable.
    StorageUnavailable,
}

impl ErrorCode {
    /// Every code, in the order above.
    pub const ALL: [ErrorCode; 20] = [
        Self::WrongRegion,
        Self::MalformedJson,
        Self::InvalidQuery,
        Self::UnreadableBody,
        Self::MissingToken,
        Self::InvalidToken,
        Self::NotFound,
        Self::NoSuchMatch,
        Self::NoRegions,
        Self::MethodNotAllowed,
        Self::AlreadyRated,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::InvalidBody,
        Self::InvalidField,
        Self::RateLimited,
        Self::Internal,
        Self::Overloaded,
        Self::RegionUnavailable,
        Self::StorageUnavailable,
    ];

    /// The code as it appears in `error.code`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WrongRegion => "wrong_region",
            Self::MalformedJson => "malformed_json",
            Self::InvalidQuery => "invalid_query",
            Self::UnreadableBody => "unreadable_body",
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::NotFound => "not_found",
            Self::NoSuchMatch => "no_such_match",
            Self::NoRegions => "no_regions",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::AlreadyRated => "already_rated",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::InvalidBody => "invalid_body",
            Self::InvalidField => "invalid_field",
            Self::RateLimited => "rate_limited",
            Self::Internal => "internal",
            Self::Overloaded => "overloaded",
            Self::RegionUnavailable => "region_unavailable",
            Self::StorageUnavailable => "storage_unavailable",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A GeoJSON `Polygon` geometry (RFC 7946): `coordinates` holds the exterior
/// ring and then any holes, each ring a closed list of `[lon, lat]` pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GeoJsonPolygon {
    /// Always `"Polygon"`.
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = Vec<Vec<Vec<f64>>>)]
    pub coordinates: Vec<Vec<[f64; 2]>>,
}

/// Where the nodes of a region listen for their peers and clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MeshAddresses {
    /// The HTTP API.
    #[schema(value_type = String, example = "127.0.0.1:8081")]
    pub http: SocketAddr,
    /// The QUIC replication endpoint.
    #[schema(value_type = String, example = "127.0.0.1:9081")]
    pub quic: SocketAddr,
}

/// One region, as `GET /regions` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegionInfo {
    pub id: String,
    pub name: String,
    /// The Fly.io region that hosts it (the `fly-replay` target).
    pub fly_region: String,
    /// Its ScyllaDB datacenter.
    pub datacenter: String,
    pub mesh: MeshAddresses,
    pub area: GeoJsonPolygon,
}

/// `GET /regions`: every region, in id order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegionList {
    pub regions: Vec<RegionInfo>,
}

/// `GET /route?lat=&lon=`: the region that serves a position now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RouteAnswer {
    /// The region that serves the position: its home region, or while that
    /// is down, the region that adopted its area.
    pub region: String,
    /// The region whose area holds the position (or the nearest).
    #[serde(default)]
    pub home: String,
    /// False when no region's area holds the position and the nearest region
    /// was chosen.
    pub inside: bool,
    /// Base URL of that region's HTTP API, e.g. `http://127.0.0.1:8081`.
    pub http: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_is_written_as_its_name_says() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::Value::from(code.as_str()), "{code:?}");
            let back: ErrorCode = serde_json::from_value(json).unwrap();
            assert_eq!(back, code);
        }
        let distinct: std::collections::BTreeSet<&str> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(distinct.len(), ErrorCode::ALL.len());
    }
}
