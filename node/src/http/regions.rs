//! Regions over HTTP: `GET /regions`, `GET /route`, and the `307` that sends
//! a rider or driver positioned in another region to the region that serves
//! it: its home region, or while that is down, the region that adopted its
//! area ([`crate::runtime::availability`]).
//!
//! A `307` (unlike `302` or `303`) makes clients re-send the same method and
//! body, so a redirected `POST /rider` arrives whole at the right region; the
//! `fly-replay` header lets Fly.io's proxy do the same replay itself when the
//! node runs there, before the client ever sees the redirect. The replay
//! has a timeout and falls back to this node, so a region that dies never
//! makes Fly's proxy answer with an error of its own: the request comes back
//! marked `fly-replay-failed`, and is answered `503 region_unavailable` with
//! `Retry-After` unless this node may serve it.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use geo::CoordsIter;
use serde::Deserialize;

use super::AppState;
use super::error::{ApiError, ApiQuery};
use crate::protocol::intake;
use crate::runtime::availability::Route;
use ride_types::api::{
    ErrorBody, ErrorCode, ErrorDetail, GeoJsonPolygon, MeshAddresses, Position, RegionInfo,
    RegionList, RouteAnswer,
};
use ride_types::regions::{Region, Regions};

/// Fly.io's proxy replays a request in the region this header names.
const FLY_REPLAY: HeaderName = HeaderName::from_static("fly-replay");

/// On a request Fly's proxy brings back because its replay failed.
const FLY_REPLAY_FAILED: HeaderName = HeaderName::from_static("fly-replay-failed");

/// How long Fly's proxy tries the replay's target before it brings the
/// request back: longer than a healthy region takes to answer, short enough
/// that a client's request survives a dead region.
const REPLAY_TIMEOUT: &str = "2s";

/// What a `503 region_unavailable` asks the client to wait.
const RETRY_AFTER_SECS: u32 = 2;

/// Every region, in id order.
#[utoipa::path(get, path = "/regions", tag = "regions",
    responses(
        (status = 200, body = RegionList, description = "In id order"),
        (status = 404, body = ErrorBody, description = "`no_regions`: the node runs without region files"),
    ))]
pub(super) async fn list(State(app): State<Arc<AppState>>) -> Result<Json<RegionList>, ApiError> {
    let regions = app.regions.as_deref().ok_or_else(|| no_regions(&app))?;
    Ok(Json(RegionList {
        regions: regions.iter().map(info).collect(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct RouteQuery {
    /// Latitude, -90 to 90.
    #[param(example = 23.7925)]
    lat: f64,
    /// Longitude, -180 to 180.
    #[param(example = 90.4078)]
    lon: f64,
}

/// The region that serves a position now, and its HTTP API.
#[utoipa::path(get, path = "/route", tag = "regions", params(RouteQuery),
    responses(
        (status = 200, body = RouteAnswer, description = "The serving region and its home"),
        (status = 400, body = ErrorBody, description = "`invalid_query`"),
        (status = 404, body = ErrorBody, description = "`no_regions`"),
        (status = 422, body = ErrorBody, description = "`invalid_field`: a coordinate out of range"),
    ))]
pub(super) async fn route(
    State(app): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<RouteQuery>,
) -> Result<Json<RouteAnswer>, ApiError> {
    let regions = app.regions.as_deref().ok_or_else(|| no_regions(&app))?;
    let position = intake::position(
        "position",
        Position {
            lat: query.lat,
            lon: query.lon,
        },
    )?;
    let placement = regions.place(position);
    let serving = match decide(&app, regions, placement.region) {
        Decision::Redirect { to, .. } => to,
        Decision::Accept { .. } => regions.get(&app.region).unwrap_or(placement.region),
    };
    Ok(Json(RouteAnswer {
        region: serving.id.clone(),
        home: placement.region.id.clone(),
        inside: placement.inside,
        http: serving.http_url(),
    }))
}

/// What this node does with a request for a position of `home`.
enum Decision<'a> {
    Accept {
        adopted: bool,
    },
    Redirect {
        to: &'a Region,
        reason: &'static str,
    },
}

fn decide<'a>(app: &AppState, regions: &'a Regions, home: &'a Region) -> Decision<'a> {
    let availability = app.core.availability();
    let layout = availability.layout();
    let Some(index) = layout.index_of(&home.id) else {
        return Decision::Redirect {
            to: home,
            reason: "home",
        };
    };
    match availability.route(index) {
        Route::Here => Decision::Accept { adopted: false },
        Route::Adopted => Decision::Accept { adopted: true },
        Route::Home => Decision::Redirect {
            to: home,
            reason: "home",
        },
        Route::Adopter(adopter) => Decision::Redirect {
            to: layout
                .id_of(adopter)
                .and_then(|id| regions.get(id))
                .unwrap_or(home),
            reason: "adopter",
        },
    }
}

/// `Ok` when this node serves `position`: it is in this node's region, in
/// one it adopted, or the node has no regions (it then serves every
/// position). Otherwise the redirect to the region that serves it (its home,
/// or while that is down, its adopter), or, for a request that Fly's proxy
/// brought back because the replay failed, `503 region_unavailable`. `path`
/// is the route the request came to, which the redirect keeps.
pub(super) fn check_owner(
    app: &AppState,
    position: Position,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), NotServedHere> {
    let Some(regions) = app.regions.as_deref() else {
        return Ok(());
    };
    let home = regions.route(position);
    let (to, reason) = match decide(app, regions, home) {
        Decision::Accept { adopted } => {
            if adopted {
                metrics::counter!("ride_requests_adopted_total", "region" => home.id.clone())
                    .increment(1);
            }
            return Ok(());
        }
        Decision::Redirect { to, reason } => (to, reason),
    };
    if let Some(failure) = headers.get(FLY_REPLAY_FAILED) {
        metrics::counter!("ride_fly_replay_fallbacks_total").increment(1);
        tracing::warn!(failure = ?failure, region = %to.id, "Fly could not replay a request");
        return Err(NotServedHere::Unavailable(ApiError::unavailable(
            ErrorCode::RegionUnavailable,
            format!(
                "position {},{} is served by region {}, which cannot be reached now; try again",
                position.lat, position.lon, to.id
            ),
            RETRY_AFTER_SECS,
        )));
    }
    metrics::counter!("ride_requests_redirected_total", "to" => to.id.clone(), "reason" => reason)
        .increment(1);
    let why = if to.id == home.id {
        format!("belongs to region {}", home.id)
    } else {
        format!(
            "belongs to region {}, which is down; region {} serves its area",
            home.id, to.id
        )
    };
    Err(NotServedHere::Redirect(WrongRegion {
        location: format!("{}{path}", to.http_url()),
        fly_replay: fly_replay(&to.fly_region),
        message: format!(
            "position {},{} {why}; send it to {}{path}",
            position.lat,
            position.lon,
            to.http_url()
        ),
    }))
}

/// The `fly-replay` value: replay in `fly_region`, and should no Machine
/// there answer within the timeout, bring the request back here (marked
/// `fly-replay-failed`) rather than answer the client with a proxy error.
fn fly_replay(fly_region: &str) -> String {
    format!("region={fly_region};timeout={REPLAY_TIMEOUT};fallback=prefer_self")
}

/// Why a request is not accepted here.
#[derive(Debug)]
pub(super) enum NotServedHere {
    Redirect(WrongRegion),
    Unavailable(ApiError),
}

impl IntoResponse for NotServedHere {
    fn into_response(self) -> Response {
        match self {
            Self::Redirect(redirect) => redirect.into_response(),
            Self::Unavailable(error) => error.into_response(),
        }
    }
}

/// The `307 Temporary Redirect` to the region that serves a position.
#[derive(Debug)]
pub(super) struct WrongRegion {
    location: String,
    fly_replay: String,
    message: String,
}

impl IntoResponse for WrongRegion {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: ErrorCode::WrongRegion.as_str().into(),
                message: self.message,
            },
        };
        (
            StatusCode::TEMPORARY_REDIRECT,
            [
                (header::LOCATION, self.location),
                (FLY_REPLAY, self.fly_replay),
            ],
            Json(body),
        )
            .into_response()
    }
}

fn no_regions(app: &AppState) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NoRegions,
        format!(
            "this node was started without --regions: it serves region {} alone and \
             accepts every position",
            app.region
        ),
    )
}

fn info(region: &Region) -> RegionInfo {
    let ring = |ring: &geo::LineString<f64>| ring.coords_iter().map(|c| [c.x, c.y]).collect();
    let area = &region.area;
    RegionInfo {
        id: region.id.clone(),
        name: region.name.clone(),
        fly_region: region.fly_region.clone(),
        datacenter: region.datacenter.clone(),
        mesh: MeshAddresses {
            http: region.mesh.http,
            quic: region.mesh.quic,
        },
        area: GeoJsonPolygon {
            kind: "Polygon".into(),
            coordinates: std::iter::once(area.exterior())
                .chain(area.interiors())
                .map(ring)
                .collect(),
        },
    }
}
