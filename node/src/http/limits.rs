//! Per-client rate limits on the public API (`--rate-limit-per-second`).
//!
//! A token bucket per client address (the `governor` crate, through
//! `tower_governor`): `--rate-limit-burst` requests at once, refilled at the
//! configured rate. Beyond it the answer is `429 rate_limited` with
//! `Retry-After`, before any handler runs. Behind a proxy every connection
//! comes from the proxy, so the client is read from the header the proxy
//! sets (`--client-ip-header`, `fly-client-ip` on Fly); a request without it
//! counts against its peer address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_governor::GovernorError;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;

use super::error::ApiError;
use ride_types::api::ErrorCode;

/// How often buckets of clients that went quiet are dropped, so that memory
/// tracks recent clients rather than every address ever seen.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum LimitError {
    #[error("--client-ip-header {0:?} is not a header name")]
    HeaderName(String),
    #[error("a rate limit needs a positive rate and burst")]
    Quota,
}

/// The rate limit, as configured.
#[derive(Debug, Clone)]
pub(crate) struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
    /// Where a trusted proxy puts the client's address.
    pub client_ip_header: Option<String>,
}

/// Who a request counts against.
#[derive(Debug, Clone)]
struct ClientAddress {
    header: Option<HeaderName>,
}

impl KeyExtractor for ClientAddress {
    type Key = IpAddr;

    fn extract<T>(&self, request: &Request<T>) -> Result<IpAddr, GovernorError> {
        let forwarded = self
            .header
            .as_ref()
            .and_then(|name| request.headers().get(name))
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse().ok());
        forwarded
            .or_else(|| {
                request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|ConnectInfo(peer)| peer.ip())
            })
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

/// Adds the limit to `router` (a router served with connect info, so that
/// the peer address is known), and sweeps idle clients until `shutdown`, in
/// a task of `tasks` (which shutdown waits for).
pub(super) fn limit(
    router: Router,
    limit: &RateLimit,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> Result<Router, LimitError> {
    let header = limit
        .client_ip_header
        .as_deref()
        .map(|name| HeaderName::try_from(name).map_err(|_| LimitError::HeaderName(name.to_owned())))
        .transpose()?;
    let period = Duration::from_secs(1) / limit.per_second.max(1);
    let config = GovernorConfigBuilder::default()
        .period(period)
        .burst_size(limit.burst)
        .key_extractor(ClientAddress { header })
        .finish()
        .ok_or(LimitError::Quota)?;
    let config = Arc::new(config);
    let limiter = Arc::clone(config.limiter());
    tasks.spawn(async move {
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = sweep.tick() => limiter.retain_recent(),
            }
        }
    });
    Ok(router.layer(GovernorLayer::new(config).error_handler(too_many)))
}

/// The API's error body, with `Retry-After` in whole seconds (at least 1: a
/// client told to retry after 0 s would only be refused again).
fn too_many(error: GovernorError) -> Response<Body> {
    match error {
        GovernorError::TooManyRequests { wait_time, .. } => {
            let seconds = wait_time.max(1);
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                format!("too many requests from this client; retry after {seconds} s"),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            response
        }
        GovernorError::UnableToExtractKey | GovernorError::Other { .. } => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "the node could not tell which client sent this request",
        )
        .into_response(),
    }
}
