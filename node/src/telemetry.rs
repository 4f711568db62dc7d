//! Logs and metrics.
//!
//! Logs go through `tracing` (text or JSON lines, filtered by `RUST_LOG`,
//! default `info`). Metrics are recorded with the `metrics` facade and
//! rendered in the Prometheus text format at `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global log subscriber. Later calls do nothing.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The process-wide Prometheus recorder (several nodes in one test process
/// share it).
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was installed already; /metrics will be empty");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "ride_requests_accepted_total",
        "Rider and driver requests accepted, by kind."
    );
    describe_gauge!("ride_pending", "Requests waiting for a match, by kind.");
    describe_gauge!(
        "ride_ready",
        "1 once this node is ready (in sync with its peers, or past --mesh-ready-grace) and decides; 0 before."
    );
    describe_counter!(
        "ride_matches_committed_total",
        "Matches recorded by this node: its own commits and those it learnt from peers."
    );
    describe_counter!(
        "ride_matches_decided_total",
        "Matches this node committed itself. Each match counts on exactly one node, so the sum over a mesh is the number of riders matched."
    );
    describe_counter!(
        "journal_syncs_total",
        "Journal syncs that reached the disk (a sync another one covered is not counted)."
    );
    describe_histogram!(
        "ride_match_round_seconds",
        "Time to compute one matching round."
    );
    describe_gauge!("ride_ws_connections", "Open /communication websockets.");
    describe_counter!(
        "ride_ws_deliveries_total",
        "Match frames queued to websockets."
    );
    describe_counter!(
        "ride_ws_dropped_slow_total",
        "Websockets cut off for not keeping up."
    );
    describe_counter!(
        "ride_ratings_total",
        "Ratings posted, by outcome (new, duplicate)."
    );
    describe_counter!(
        "http_requests_total",
        "HTTP requests, by method, route and status."
    );
    describe_histogram!(
        "http_request_duration_seconds",
        "HTTP request latency, by method, route and status (a shed 503 is timed apart from a 202)."
    );
    describe_histogram!(
        "ride_group_commit_seconds",
        "A group commit's time by phase: lock_wait (for the core's lock), write (the batch into its document and journal), sync (fdatasync)."
    );
    describe_histogram!(
        "mesh_replication_lag_seconds",
        "From a request's acceptance to its arrival here, by the peer it came from."
    );
    describe_counter!(
        "mesh_bytes_sent_total",
        "Bytes sent to each peer, as framed on the wire (compressed)."
    );
    describe_counter!(
        "mesh_encoded_bytes_sent_total",
        "Bytes of peer messages before compression; over mesh_bytes_sent_total, the compression ratio."
    );
    describe_counter!(
        "mesh_bytes_received_total",
        "Bytes received from each peer."
    );
    describe_counter!(
        "mesh_messages_sent_total",
        "Sync messages sent to each peer."
    );
    describe_gauge!("mesh_peers_connected", "Peers with an open session.");
    describe_counter!("mesh_connect_failures_total", "Failed dials, by peer.");
    describe_counter!(
        "mesh_rejected_peers_total",
        "Peers refused or cut off for breaking the protocol."
    );
    describe_gauge!("mesh_documents", "Replicated documents held.");
    describe_gauge!("mesh_open_claims", "Claims waiting for an answer.");
    describe_counter!(
        "mesh_claims_sent_total",
        "Claims this node made on other nodes' drivers."
    );
    describe_counter!(
        "mesh_claims_granted_total",
        "Claims on this node's drivers it granted."
    );
    describe_counter!(
        "mesh_claims_refused_total",
        "Claims on this node's drivers it refused."
    );
    describe_counter!(
        "mesh_claims_expired_total",
        "This node's claims whose deadline passed unanswered."
    );
    describe_counter!(
        "mesh_records_rejected_total",
        "Replicated records ignored as malformed."
    );
    describe_counter!(
        "mesh_intake_reloaded_total",
        "Requests read back from the journal at start that no document held yet."
    );
    describe_counter!(
        "mesh_candidates_skipped_total",
        "Riders and drivers left out of matching rounds because their owner's region is down."
    );
    describe_gauge!(
        "ride_regions_down",
        "Neighbour regions this node believes down (silent for --adopt-after)."
    );
    describe_gauge!(
        "ride_regions_served",
        "Regions this node accepts requests for: its own and any it adopted."
    );
    describe_counter!(
        "ride_requests_adopted_total",
        "Riders and drivers accepted for a region this node adopted while it is down."
    );
    describe_counter!(
        "ride_fly_replay_fallbacks_total",
        "Requests Fly's proxy brought back after a failed replay."
    );
}
