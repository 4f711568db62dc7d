//! Endpoints for operators and checks: health, metrics, recent matches and
//! the node's state.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::AppState;
use super::error::ApiQuery;
use ride_types::api::{DebugState, ErrorBody, Health, MatchList};
use ride_types::clock::Millis;

use ride_types::api::MAX_MATCHES_LISTED;

/// The node is up and serving.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health, description = "Serving")))]
pub(super) async fn healthz(State(app): State<Arc<AppState>>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        region: app.region.clone(),
        node: app.node.clone(),
    })
}

/// Prometheus metrics, in the text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain; version=0.0.4", body = String,
        description = "Every metric, in the Prometheus text format")))]
pub(super) async fn metrics(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct MatchesQuery {
    /// 1 to 1,000; default 50.
    #[param(minimum = 1, maximum = 1000, example = 10)]
    limit: Option<usize>,
}

/// The most recent committed matches, newest first.
#[utoipa::path(get, path = "/matches", tag = "operations", params(MatchesQuery),
    responses(
        (status = 200, body = MatchList, description = "Newest first"),
        (status = 400, body = ErrorBody, description = "`invalid_query`"),
    ))]
pub(super) async fn matches(
    State(app): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<MatchesQuery>,
) -> Json<MatchList> {
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_MATCHES_LISTED);
    let recent = app.core.recent_matches(limit);
    Json(MatchList {
        matches: recent.iter().map(|m| m.notice()).collect(),
    })
}

/// What this node holds, for operators and checks.
#[utoipa::path(get, path = "/debug/state", tag = "operations", responses((status = 200, body = DebugState, description = "This node's state now")))]
pub(super) async fn debug_state(State(app): State<Arc<AppState>>) -> Json<DebugState> {
    let state = app.core.snapshot(Millis::now());
    Json(DebugState {
        region: app.region.clone(),
        node: app.node.clone(),
        pending_riders: state.pending_riders,
        pending_drivers: state.pending_drivers,
        own_pending_riders: state.own_pending.0,
        own_pending_drivers: state.own_pending.1,
        committed_matches: state.committed_matches,
        open_claims: state.open_claims,
        documents: state.documents,
        digest: format!("{:016x}", state.digest),
        digests: state
            .digests
            .into_iter()
            .map(|(region, d)| (region, format!("{d:016x}")))
            .collect(),
        ready: state.ready,
        owner: state.owner,
        peers: state.peers,
        duplicate_commits: state.duplicate_commits,
        conflicting_commits: state.conflicting_commits,
        serving: app.core.availability().serving_ids(),
        regions_down: app.core.availability().down_ids(),
    })
}
