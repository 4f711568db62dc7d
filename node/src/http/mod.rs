//! The HTTP API: the public and the admin routers, shared state and the
//! layers every request passes.
//!
//! They are two routers on two listeners, not one router with a check,
//! so that an operator route cannot reach the public listener by mistake:
//! it is not there to be reached.

mod dashboard;
mod error;
mod limits;
mod openapi;
mod ops;
mod ratings;
mod regions;
mod requests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) use error::ApiError;
pub(crate) use limits::{LimitError, RateLimit};

use crate::disk::ratings::RatingStore;
use crate::runtime::access::TokenKeys;
use crate::runtime::delivery::{self, Hub, SocketSettings};
use crate::runtime::node::Node;
use ride_types::api::ErrorCode;
use ride_types::regions::Regions;

/// Request bodies larger than this are refused with 413.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler shares.
pub(crate) struct AppState {
    pub region: String,
    pub node: String,
    pub core: Arc<Node>,
    pub hub: Arc<Hub>,
    pub ratings: Arc<dyn RatingStore>,
    pub metrics: PrometheusHandle,
    pub sockets: SocketSettings,
    pub shutdown: CancellationToken,
    /// Every task the node starts besides its listeners (websocket sessions
    /// included), so that shutdown can wait for each to end rather than
    /// leave it running detached.
    pub tasks: TaskTracker,
    /// The regions this node routes by; `None` (no `--regions`) serves every
    /// position here.
    pub regions: Option<Arc<Regions>>,
    /// Mints and checks the tokens that let a client follow and rate its
    /// own requests.
    pub tokens: Arc<TokenKeys>,
}

/// The public API (`--listen`): what riders, drivers and their apps need,
/// and nothing that shows other people's requests. With a rate limit, each
/// client is held to it here.
pub(crate) fn public_router(
    app: Arc<AppState>,
    limit: Option<&RateLimit>,
) -> Result<Router, LimitError> {
    let (routes, document) = public_routes().split_for_parts();
    let routes = routes.route(
        "/openapi.json",
        get(openapi::serve(openapi::with_layer_answers(document))),
    );
    let (shutdown, tasks) = (app.shutdown.clone(), app.tasks.clone());
    let routes = with_layers(routes, app);
    match limit {
        Some(limit) => limits::limit(routes, limit, shutdown, &tasks),
        None => Ok(routes),
    }
}

/// The public routes with their OpenAPI description.
fn public_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(openapi::PublicApi::openapi())
        .routes(routes!(requests::post_rider))
        .routes(routes!(requests::post_driver))
        .routes(routes!(ratings::post_rating))
        .routes(routes!(ratings::get_driver_rating))
        .routes(routes!(communication_socket))
        .routes(routes!(ops::healthz))
        .routes(routes!(regions::list))
        .routes(routes!(regions::route))
}

/// The public API's OpenAPI document, as `/openapi.json` serves it.
pub(crate) fn public_document() -> utoipa::openapi::OpenApi {
    openapi::with_layer_answers(public_routes().split_for_parts().1)
}

/// The operator surfaces (`--admin-listen`): the dashboard, the node's state,
/// metrics and the match list. `/regions` and `/healthz` are here too, for
/// the dashboard and for checking the listener itself.
pub(crate) fn admin_router(app: Arc<AppState>) -> Router {
    let (routes, document) = OpenApiRouter::with_openapi(openapi::AdminApi::openapi())
        .routes(routes!(dashboard::page))
        .routes(routes!(dashboard::named_page))
        .routes(routes!(dashboard::script))
        .routes(routes!(dashboard::style))
        .routes(routes!(dashboard::events))
        .routes(routes!(ops::debug_state))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::matches))
        .routes(routes!(ops::healthz))
        .routes(routes!(regions::list))
        .split_for_parts();
    let routes = routes.route("/openapi.json", get(openapi::serve(document)));
    with_layers(routes, app)
}

/// What every request passes on either listener: JSON errors for unknown
/// routes and methods, the body limit, metrics, panics caught, tracing.
fn with_layers(routes: Router<Arc<AppState>>, app: Arc<AppState>) -> Router {
    routes
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(record_request))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TraceLayer::new_for_http().on_failure(log_failure))
        .with_state(app)
}

/// Server errors are logged, except 503s: a node refusing at the door
/// (overloaded, or its storage failing, which is logged where it fails)
/// would otherwise write a line per refusal just when it is busiest; they
/// are counted in `/metrics` instead.
fn log_failure(failure: ServerErrorsFailureClass, latency: Duration, _span: &tracing::Span) {
    if !matches!(
        failure,
        ServerErrorsFailureClass::StatusCode(StatusCode::SERVICE_UNAVAILABLE)
    ) {
        tracing::error!(classification = %failure, ?latency, "response failed");
    }
}

/// The websocket on which a client follows its requests: it sends
/// `{"type": "subscribe", "requests": [{"id", "token"}]}` and is sent
/// `subscribed`, then a `match` frame per committed match.
#[utoipa::path(get, path = "/communication", tag = "requests",
    responses((status = 101, description = "Switching to the websocket protocol")))]
async fn communication_socket(
    State(app): State<Arc<AppState>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The server runs the upgraded connection in a task of its own, which
    // its graceful shutdown does not wait for; the tracker's token makes the
    // node's shutdown wait for the session instead.
    let session = app.tasks.token();
    upgrade
        .max_message_size(ride_types::api::MAX_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            delivery::serve(
                socket,
                Arc::clone(&app.hub),
                Arc::clone(&app.core),
                app.sockets,
                app.shutdown.clone(),
                Arc::clone(&app.tokens),
            )
            .await;
            drop(session);
        })
}

/// Counts and times every request by route and status.
async fn record_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let response = next.run(request).await;
    let labels = [
        ("method", method.to_string()),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        "the node failed to handle this request; it has been logged",
    )
    .into_response()
}
