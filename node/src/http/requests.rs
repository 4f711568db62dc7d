//! `POST /rider` and `POST /driver`: the intake hot path. Validation, the
//! region check (a position another region serves is redirected there, see
//! [`super::regions`]), a
//! hand-over to the core that never waits for its lock, and the answer, with
//! the request's token, once the request is journaled (a group commit shared
//! with every request that arrived meanwhile): a 202 is a promise that
//! survives a crash. Nothing here waits on matching, and a node past its
//! capacity refuses at the door (503 `overloaded`, see [`crate::runtime::admission`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::ErrorResponse;

use super::AppState;
use super::error::{ApiError, ApiJson};
use super::regions::check_owner;
use crate::protocol::intake;
use crate::runtime::node::Ticket;
use ride_types::api::{Accepted, DriverRequest, ErrorCode, RiderRequest};
use ride_types::clock::Millis;

/// A rider asks for a ride.
#[utoipa::path(post, path = "/rider", tag = "requests", request_body = RiderRequest,
    responses((status = 202, body = Accepted,
        description = "Journaled: the match will be pushed on `/communication`")))]
pub(super) async fn post_rider(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RiderRequest>,
) -> Result<(StatusCode, Json<Accepted>), ErrorResponse> {
    admit(&app)?;
    let rider = intake::rider(body).map_err(ApiError::from)?;
    check_owner(&app, rider.position, "/rider", &headers)?;
    let (ticket, durable) = app.core.submit_rider(rider, Millis::now());
    durable.await.map_err(|_| not_journaled())?;
    metrics::counter!("ride_requests_accepted_total", "kind" => "rider").increment(1);
    Ok(accepted(&app, ticket))
}

/// A driver offers a ride.
#[utoipa::path(post, path = "/driver", tag = "requests", request_body = DriverRequest,
    responses((status = 202, body = Accepted,
        description = "Journaled: the match will be pushed on `/communication`")))]
pub(super) async fn post_driver(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<DriverRequest>,
) -> Result<(StatusCode, Json<Accepted>), ErrorResponse> {
    admit(&app)?;
    let driver = intake::driver(body).map_err(ApiError::from)?;
    check_owner(&app, driver.position, "/driver", &headers)?;
    let (ticket, durable) = app.core.submit_driver(driver, Millis::now());
    durable.await.map_err(|_| not_journaled())?;
    metrics::counter!("ride_requests_accepted_total", "kind" => "driver").increment(1);
    Ok(accepted(&app, ticket))
}

/// Refuses a request the node could not keep its promise for (see
/// [`crate::runtime::admission`]), before any work is spent on it.
fn admit(app: &AppState) -> Result<(), ApiError> {
    app.core.admit().map_err(|overload| {
        metrics::counter!("ride_requests_shed_total", "reason" => overload.reason()).increment(1);
        ApiError::unavailable(
            ErrorCode::Overloaded,
            format!("this node is at capacity: {overload}; try again"),
            1,
        )
    })
}

/// The journal could not take the request: it is refused, not lost.
fn not_journaled() -> ApiError {
    ApiError::unavailable(
        ErrorCode::StorageUnavailable,
        "the node could not make the request durable; try again",
        1,
    )
}

fn accepted(app: &AppState, ticket: Ticket) -> (StatusCode, Json<Accepted>) {
    (
        StatusCode::ACCEPTED,
        Json(Accepted {
            id: ticket.id.0,
            token: app.tokens.mint(ticket.id.0),
            region: app.region.clone(),
            node: app.node.clone(),
            expires_at: ticket.expires_at.to_utc(),
        }),
    )
}
