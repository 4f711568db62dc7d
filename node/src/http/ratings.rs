//! `POST /rating` and `GET /drivers/{car_number}/rating`.
//!
//! A rating is taken only from the rider (the token their `POST /rider`
//! answered with), only for a match this node knows was committed, and
//! only once per match: the match is named by its rider (a rider is in at
//! most one match), and the store refuses a second rating for it. The token
//! is checked first, so a stranger learns nothing, not even whether the
//! rider has a match.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::AppState;
use super::error::{ApiError, ApiJson};
use crate::disk::ratings::{Rating, Recorded};
use crate::protocol::intake;
use ride_types::api::{DriverRating, ErrorBody, ErrorCode, RatingRecorded, RatingRequest};
use ride_types::clock::Millis;
use ride_types::ids::RequestId;

/// The rider rates the driver of their match, once.
#[utoipa::path(post, path = "/rating", tag = "ratings", request_body = RatingRequest,
    responses(
        (status = 201, body = RatingRecorded, description = "Recorded"),
        (status = 401, body = ErrorBody, description = "`missing_token`"),
        (status = 403, body = ErrorBody, description = "`invalid_token`: not this rider's token"),
        (status = 404, body = ErrorBody,
            description = "`no_such_match`: no committed match of this rider with this car"),
        (status = 409, body = ErrorBody, description = "`already_rated`"),
        (status = 503, body = ErrorBody,
            description = "`storage_unavailable`: the rating store could not take it"),
    ))]
pub(super) async fn post_rating(
    State(app): State<Arc<AppState>>,
    ApiJson(body): ApiJson<RatingRequest>,
) -> Result<(StatusCode, Json<RatingRecorded>), ApiError> {
    app.tokens.verify(body.rider_id, body.token.as_ref())?;
    let stars = intake::stars(body.stars)?;
    let car_number = intake::car_number(body.car_number)?;
    let rider_id = RequestId(body.rider_id);
    let driver_id = {
        let Some(m) = app.core.match_of(&rider_id) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NoSuchMatch,
                format!("no committed match is known for rider {rider_id}"),
            ));
        };
        if m.rider.id != rider_id {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidField,
                format!("rider_id: {rider_id} is a driver's request id, not a rider's"),
            ));
        }
        if m.driver.car_number != car_number {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NoSuchMatch,
                format!("rider {rider_id} was not matched with car {car_number}"),
            ));
        }
        m.driver.id
    };
    let rating = Rating {
        rider_id,
        driver_id,
        car_number,
        stars,
        rated_at: Millis::now(),
    };
    let answer = RatingRecorded {
        rider_id: rider_id.0,
        driver_id: driver_id.0,
        car_number: rating.car_number.clone(),
        stars,
    };
    match app.ratings.record(rating).await? {
        Recorded::New => {
            metrics::counter!("ride_ratings_total", "outcome" => "new").increment(1);
            Ok((StatusCode::CREATED, Json(answer)))
        }
        Recorded::Duplicate => {
            metrics::counter!("ride_ratings_total", "outcome" => "duplicate").increment(1);
            Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::AlreadyRated,
                format!("the match of rider {rider_id} was rated already"),
            ))
        }
    }
}

/// A driver's average rating.
#[utoipa::path(get, path = "/drivers/{car_number}/rating", tag = "ratings",
    params(("car_number" = String, Path, example = "DHA-1234")),
    responses(
        (status = 200, body = DriverRating, description = "`average` is null until the first rating"),
        (status = 503, body = ErrorBody, description = "`storage_unavailable`"),
    ))]
pub(super) async fn get_driver_rating(
    State(app): State<Arc<AppState>>,
    Path(car_number): Path<String>,
) -> Result<Json<DriverRating>, ApiError> {
    let car_number = intake::car_number(car_number)?;
    let summary = app.ratings.summary(&car_number).await?;
    Ok(Json(DriverRating {
        average: summary.average(),
        count: summary.count,
        car_number,
    }))
}
