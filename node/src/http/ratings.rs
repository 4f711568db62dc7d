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
use ride_types::api::{DriverRating, RatingRecorded, RatingRequest};
use ride_types::clock::Millis;
use ride_types::ids::RequestId;

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
                "no_such_match",
                format!("no committed match is known for rider {rider_id}"),
            ));
        };
        if m.rider.id != rider_id {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                format!("rider_id: {rider_id} is a driver's request id, not a rider's"),
            ));
        }
        if m.driver.car_number != car_number {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_such_match",
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
                "already_rated",
                format!("the match of rider {rider_id} was rated already"),
            ))
        }
    }
}

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
