//! Regions over HTTP: `GET /regions`, `GET /route`, and the `307` that sends
//! a rider or driver positioned in another region to that region's nodes.
//!
//! A `307` (unlike `302` or `303`) makes clients re-send the same method and
//! body, so a redirected `POST /rider` arrives whole at the right region; the
//! `fly-replay` header lets Fly.io's proxy do the same replay itself when the
//! node runs there, before the client ever sees the redirect.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use geo::CoordsIter;
use serde::Deserialize;

use super::AppState;
use super::error::{ApiError, ApiQuery};
use crate::protocol::intake;
use ride_types::api::{
    ErrorBody, ErrorDetail, GeoJsonPolygon, MeshAddresses, Position, RegionInfo, RegionList,
    RouteAnswer,
};
use ride_types::regions::Region;

/// Fly.io's proxy replays a request in the region this header names.
const FLY_REPLAY: HeaderName = HeaderName::from_static("fly-replay");

pub(super) async fn list(State(app): State<Arc<AppState>>) -> Result<Json<RegionList>, ApiError> {
    let regions = app.regions.as_deref().ok_or_else(|| no_regions(&app))?;
    Ok(Json(RegionList {
        regions: regions.iter().map(info).collect(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteQuery {
    lat: f64,
    lon: f64,
}

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
    Ok(Json(RouteAnswer {
        region: placement.region.id.clone(),
        inside: placement.inside,
        http: placement.region.http_url(),
    }))
}

/// `Err` with the redirect when `position` belongs to a region other than
/// this node's; `Ok` when it is this node's, or when the node has no regions
/// (it then serves every position). `path` is the route the request came
/// to, which the redirect keeps.
pub(super) fn check_owner(
    app: &AppState,
    position: Position,
    path: &str,
) -> Result<(), WrongRegion> {
    let Some(regions) = &app.regions else {
        return Ok(());
    };
    let owner = regions.route(position);
    if owner.id == app.region {
        return Ok(());
    }
    metrics::counter!("ride_requests_redirected_total", "to" => owner.id.clone()).increment(1);
    Err(WrongRegion {
        location: format!("{}{path}", owner.http_url()),
        fly_replay: format!("region={}", owner.fly_region),
        message: format!(
            "position {},{} belongs to region {}; send it to {}{path}",
            position.lat,
            position.lon,
            owner.id,
            owner.http_url()
        ),
    })
}

/// The `307 Temporary Redirect` to the region that owns a position.
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
                code: "wrong_region".into(),
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
        "no_regions",
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
