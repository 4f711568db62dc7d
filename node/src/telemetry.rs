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

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    /// Rendered as a summary: quantiles of the last minute, `_sum`, `_count`.
    Histogram,
}

use Kind::{Counter, Gauge, Histogram};

/// A metric of the table below: its kind, name and help text.
type Metric = (Kind, &'static str, &'static str);

const fn counter(name: &'static str, help: &'static str) -> Metric {
    (Counter, name, help)
}

const fn gauge(name: &'static str, help: &'static str) -> Metric {
    (Gauge, name, help)
}

const fn histogram(name: &'static str, help: &'static str) -> Metric {
    (Histogram, name, help)
}

/// Every metric the node records, with its `# HELP` text in `/metrics`.
/// Tests check that every name recorded in `node/src` is here, and that
/// the Grafana dashboards and alert rules in `deploy/` name only these.
const METRICS: &[Metric] = &[
    counter(
        "ride_requests_accepted_total",
        "Rider and driver requests accepted, by kind.",
    ),
    counter(
        "ride_requests_shed_total",
        "Rider and driver posts answered 503 overloaded by admission control, by reason (queue, mesh_lag, round).",
    ),
    counter(
        "ride_requests_redirected_total",
        "Requests sent to the region that serves their position (307), by region (to) and reason (home, adopter).",
    ),
    gauge("ride_pending", "Requests waiting for a match, by kind."),
    gauge(
        "ride_ready",
        "1 once this node is ready (in sync with its peers, or past --mesh-ready-grace) and decides; 0 before.",
    ),
    counter(
        "ride_matches_committed_total",
        "Matches recorded by this node: its own commits and those it learnt from peers.",
    ),
    counter(
        "ride_matches_decided_total",
        "Matches this node committed itself. Each match counts on exactly one node, so the sum over a mesh is the number of riders matched.",
    ),
    counter(
        "journal_syncs_total",
        "Journal syncs that reached the disk (a sync another one covered is not counted).",
    ),
    histogram(
        "ride_match_round_seconds",
        "Time to compute one matching round.",
    ),
    gauge("ride_ws_connections", "Open /communication websockets."),
    counter(
        "ride_ws_deliveries_total",
        "Match frames queued to websockets.",
    ),
    counter(
        "ride_ws_dropped_slow_total",
        "Websockets cut off for not keeping up.",
    ),
    counter(
        "ride_ratings_total",
        "Ratings posted, by outcome (new, duplicate).",
    ),
    gauge(
        "ride_ratings_outbox_backlog",
        "Ratings in the outbox, waiting for the CQL cluster (with --cql-nodes).",
    ),
    counter(
        "ride_ratings_delivered_total",
        "Ratings delivered from the outbox to the CQL cluster.",
    ),
    counter(
        "ride_ratings_delivery_failures_total",
        "Deliveries of the outbox to the CQL cluster that failed (retried with backoff).",
    ),
    histogram(
        "ride_ratings_delivery_batch_seconds",
        "Time to write one delivery round of the outbox to the CQL cluster.",
    ),
    counter(
        "http_requests_total",
        "HTTP requests, by method, route and status.",
    ),
    histogram(
        "http_request_duration_seconds",
        "HTTP request latency, by method, route and status (a shed 503 is timed apart from a 202).",
    ),
    histogram(
        "ride_group_commit_seconds",
        "A group commit's time by phase: lock_wait (for the core's lock), write (the batch into its document and journal), sync (fdatasync).",
    ),
    histogram(
        "mesh_replication_lag_seconds",
        "From a request's acceptance to its arrival here, by the peer it came from.",
    ),
    counter(
        "mesh_bytes_sent_total",
        "Bytes sent to each peer, as framed on the wire (compressed).",
    ),
    counter(
        "mesh_encoded_bytes_sent_total",
        "Bytes of peer messages before compression; over mesh_bytes_sent_total, the compression ratio.",
    ),
    counter(
        "mesh_bytes_received_total",
        "Bytes received from each peer.",
    ),
    counter(
        "mesh_messages_sent_total",
        "Sync messages sent to each peer.",
    ),
    (Gauge, "mesh_peers_connected", "Peers with an open session."),
    counter(
        "mesh_sessions_lost_total",
        "Peer sessions that ended on an error, by peer.",
    ),
    counter("mesh_connect_failures_total", "Failed dials, by peer."),
    counter(
        "mesh_rejected_peers_total",
        "Peers refused or cut off for breaking the protocol.",
    ),
    counter(
        "mesh_layout_mismatches_total",
        "Peers refused for another region layout or pickup radius, by peer.",
    ),
    gauge(
        "mesh_peer_clock_offset_seconds",
        "Each peer's clock offset from this node's clock, measured from their status exchange, by peer.",
    ),
    gauge(
        "mesh_peer_clock_skewed",
        "1 while a peer's clock offset is beyond --max-clock-skew, by peer.",
    ),
    (Gauge, "mesh_documents", "Replicated documents held."),
    gauge(
        "mesh_document_bytes",
        "Bytes of the records the replicated documents hold.",
    ),
    counter(
        "mesh_documents_refused_total",
        "Peers' sync messages refused: for a document dropped here before, one of this node's own it does not hold, or one scoped to no region this node serves.",
    ),
    (Gauge, "mesh_open_claims", "Claims waiting for an answer."),
    counter(
        "mesh_claims_sent_total",
        "Claims this node made on other nodes' drivers.",
    ),
    counter(
        "mesh_claims_granted_total",
        "Claims on this node's drivers it granted.",
    ),
    counter(
        "mesh_claims_refused_total",
        "Claims on this node's drivers it refused.",
    ),
    counter(
        "mesh_claims_expired_total",
        "This node's claims whose deadline passed unanswered.",
    ),
    counter(
        "mesh_records_rejected_total",
        "Replicated records ignored as malformed.",
    ),
    counter(
        "mesh_intake_reloaded_total",
        "Requests read back from the journal at start that no document held yet.",
    ),
    counter(
        "mesh_candidates_skipped_total",
        "Riders and drivers left out of matching rounds because their owner's region is down.",
    ),
    counter(
        "ride_commits_duplicate_total",
        "Commits learnt twice (recorded once): harmless.",
    ),
    counter(
        "ride_commits_conflicting_total",
        "Commits naming another partner for a rider or driver already matched (never told to a client): must stay 0.",
    ),
    gauge(
        "ride_regions_down",
        "Neighbour regions this node believes down (silent for --adopt-after).",
    ),
    gauge(
        "ride_regions_served",
        "Regions this node accepts requests for: its own and any it adopted.",
    ),
    counter(
        "ride_requests_adopted_total",
        "Riders and drivers accepted for a region this node adopted while it is down.",
    ),
    counter(
        "ride_fly_replay_fallbacks_total",
        "Requests Fly's proxy brought back after a failed replay.",
    ),
    counter(
        "ride_wan_relay_dropped_total",
        "Datagrams the WAN relay (node wan-relay) dropped as lost.",
    ),
];

fn describe() {
    for &(kind, name, help) in METRICS {
        match kind {
            Counter => metrics::describe_counter!(name, help),
            Gauge => metrics::describe_gauge!(name, help),
            Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

#[cfg(test)]
mod tests;
