//! `GET /` (and `/dashboard`): a live map of the mesh, as this node sees it.
//!
//! The page and its script are compiled into the binary, so a node serves
//! its dashboard offline and nothing is fetched from elsewhere. The page
//! draws from one server-sent-event stream, `GET /dashboard/events`: a frame
//! every half second built from this node's own state (its replicated
//! documents and what its peers report), so a browser never polls the
//! regions itself and a partition shows as this node experiences it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use futures_util::{Stream, StreamExt, stream};

use super::AppState;
use ride_types::clock::Millis;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

const FRAME_INTERVAL: Duration = Duration::from_millis(500);
/// Match lines drawn at most (newest first).
const MAX_MATCHES: usize = 500;

/// The live map.
#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 200, content_type = "text/html; charset=utf-8", body = String,
        description = "The map's page")))]
pub(super) async fn page() -> Html<&'static str> {
    Html(INDEX)
}

/// The live map, under its own name.
#[utoipa::path(get, path = "/dashboard", tag = "dashboard",
    responses((status = 200, content_type = "text/html; charset=utf-8", body = String,
        description = "The map's page")))]
pub(super) async fn named_page() -> Html<&'static str> {
    Html(INDEX)
}

/// The map's script.
#[utoipa::path(get, path = "/dashboard/app.js", tag = "dashboard",
    responses((status = 200, content_type = "text/javascript; charset=utf-8", body = String,
        description = "The script")))]
pub(super) async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

/// The map's style sheet.
#[utoipa::path(get, path = "/dashboard/style.css", tag = "dashboard",
    responses((status = 200, content_type = "text/css; charset=utf-8", body = String,
        description = "The style sheet")))]
pub(super) async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

/// Frames until the client goes away or the node shuts down: a `frame`
/// event every 500 ms, whose data is a JSON `DashboardFrame`.
#[utoipa::path(get, path = "/dashboard/events", tag = "dashboard",
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "A stream of `frame` events")))]
pub(super) async fn events(
    State(app): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut ticker = tokio::time::interval(FRAME_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let stopping = app.shutdown.clone().cancelled_owned();
    let frames = stream::unfold((app, ticker), |(app, mut ticker)| async move {
        ticker.tick().await;
        let frame = app.core.dashboard(Millis::now(), MAX_MATCHES);
        let event = Event::default()
            .event("frame")
            .json_data(&frame)
            .unwrap_or_else(|e| Event::default().event("frame_error").data(e.to_string()));
        Some((Ok(event), (app, ticker)))
    })
    .take_until(stopping);
    Sse::new(frames).keep_alive(KeepAlive::default())
}
