//! `POST /rider` and `POST /driver`: the intake hot path. Validation, a
//! hand-over to the dispatch core that never waits for its lock, and the
//! answer; nothing here waits on I/O or on matching.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;
use super::error::{ApiError, ApiJson};
use crate::clock::Millis;
use crate::dispatch::Ticket;
use crate::intake;
use crate::wire::{Accepted, DriverRequest, RiderRequest};

pub async fn post_rider(
    State(app): State<Arc<AppState>>,
    ApiJson(body): ApiJson<RiderRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let rider = intake::rider(body)?;
    let ticket = app.dispatch.submit_rider(rider, Millis::now());
    metrics::counter!("ride_requests_accepted_total", "kind" => "rider").increment(1);
    Ok(accepted(&app, ticket))
}

pub async fn post_driver(
    State(app): State<Arc<AppState>>,
    ApiJson(body): ApiJson<DriverRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let driver = intake::driver(body)?;
    let ticket = app.dispatch.submit_driver(driver, Millis::now());
    metrics::counter!("ride_requests_accepted_total", "kind" => "driver").increment(1);
    Ok(accepted(&app, ticket))
}

fn accepted(app: &AppState, ticket: Ticket) -> (StatusCode, Json<Accepted>) {
    (
        StatusCode::ACCEPTED,
        Json(Accepted {
            id: ticket.id.0,
            region: app.region.clone(),
            node: app.node.clone(),
            expires_at: ticket.expires_at.to_utc(),
        }),
    )
}
