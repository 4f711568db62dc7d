//! `node cql`: what a CQL node says about itself and its cluster, through
//! the driver the node stores ratings with.
//!
//! Why a subcommand: `scripts/cql-cluster.sh` must know when a database node
//! serves CQL and which datacenter it believes it is in. It used to speak
//! the CQL protocol through a hand-written Python client; the `scylla`
//! driver the node already links does it properly (protocol negotiation,
//! errors, timeouts), and a script that only calls the binary cannot drift
//! from how the node connects.
//!
//! Each contact point is asked on its own (a session that may only use that
//! node), so that the answer is what that node reports, not whichever node a
//! load-balancing policy picked.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::host_filter::AllowListHostFilter;
use thiserror::Error;

/// How often `wait` asks again.
const POLL: Duration = Duration::from_secs(1);

#[derive(Subcommand)]
pub enum CqlCommand {
    /// Asks every contact point for the datacenter and rack it reports and
    /// the peers it knows; one tab-separated line per node that answers:
    /// `<host:port> <datacenter> <rack> <peers>`, peers as space-separated
    /// `<address>/<datacenter>`, sorted (empty without peers). Nodes that do
    /// not answer are named on stderr; exits non-zero if any did not.
    Status(Contacts),
    /// Waits until every contact point serves CQL, then prints what `status`
    /// prints. Exits 1 if --timeout passes first, and 3 at once if a node
    /// answers with another datacenter than --datacenter gives for it (its
    /// data belongs to another cluster layout).
    Wait {
        #[command(flatten)]
        contacts: Contacts,
        /// The datacenter each contact point must report, in the same order
        /// (comma-separated or repeated); none: any.
        #[arg(long = "datacenter", value_delimiter = ',')]
        datacenters: Vec<String>,
        /// How long to wait for all of them.
        #[arg(long, default_value = "240s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

#[derive(Args)]
pub struct Contacts {
    /// CQL nodes (`host:port`), comma-separated or repeated, as the node's
    /// --cql-nodes.
    #[arg(long = "cql-nodes", value_delimiter = ',', required = true)]
    nodes: Vec<String>,
    /// Limit on one node's answer: connecting and both queries.
    #[arg(long = "cql-timeout", default_value = "5s", value_parser = humantime::parse_duration)]
    per_node: Duration,
}

#[derive(Debug, Error)]
pub enum CqlCommandError {
    #[error("{node}: {reason}")]
    Unreachable { node: String, reason: String },
    #[error("{node}: no answer within {limit:?}")]
    Slow { node: String, limit: Duration },
    #[error("{count} of {total} CQL nodes did not answer")]
    NotAllAnswered { count: usize, total: usize },
    #[error("not every CQL node served CQL within {0:?}; the last failure: {1}")]
    Timeout(Duration, Box<CqlCommandError>),
    #[error(
        "--datacenter gives {expected} datacenters for {nodes} CQL nodes; one per node expected"
    )]
    DatacenterCount { expected: usize, nodes: usize },
    #[error("{node} reports datacenter {found:?}, expected {expected:?}")]
    WrongDatacenter {
        node: String,
        found: String,
        expected: String,
    },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl CqlCommandError {
    /// The exit status: 3 for a node in the wrong datacenter, which waiting
    /// will not mend; 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::WrongDatacenter { .. } => 3,
            _ => 1,
        }
    }
}

/// What one node reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Report {
    node: String,
    datacenter: String,
    rack: String,
    /// `(address, datacenter)`, sorted.
    peers: BTreeSet<(IpAddr, String)>,
}

impl Report {
    fn line(&self) -> String {
        let peers: Vec<String> = self
            .peers
            .iter()
            .map(|(addr, dc)| format!("{addr}/{dc}"))
            .collect();
        format!(
            "{}\t{}\t{}\t{}",
            self.node,
            self.datacenter,
            self.rack,
            peers.join(" ")
        )
    }
}

/// Runs `command`, writing its answer to `out` and each node that did not
/// answer to `err`.
pub async fn run(
    command: CqlCommand,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), CqlCommandError> {
    match command {
        CqlCommand::Status(contacts) => {
            let mut failed = 0;
            for result in ask_all(&contacts).await {
                match result {
                    Ok(report) => writeln!(out, "{}", report.line())?,
                    Err(e) => {
                        failed += 1;
                        writeln!(err, "{e}")?;
                    }
                }
            }
            if failed > 0 {
                return Err(CqlCommandError::NotAllAnswered {
                    count: failed,
                    total: contacts.nodes.len(),
                });
            }
        }
        CqlCommand::Wait {
            contacts,
            datacenters,
            timeout,
        } => {
            if !datacenters.is_empty() && datacenters.len() != contacts.nodes.len() {
                return Err(CqlCommandError::DatacenterCount {
                    expected: datacenters.len(),
                    nodes: contacts.nodes.len(),
                });
            }
            let reports = wait(&contacts, &datacenters, timeout).await?;
            for report in reports {
                writeln!(out, "{}", report.line())?;
            }
        }
    }
    Ok(())
}

/// Every contact point's report, in order, asked at once.
async fn ask_all(contacts: &Contacts) -> Vec<Result<Report, CqlCommandError>> {
    let asks = contacts
        .nodes
        .iter()
        .map(|node| ask(node, contacts.per_node));
    futures_util::future::join_all(asks).await
}

/// Asks until every node answers in its expected datacenter, or `timeout`.
async fn wait(
    contacts: &Contacts,
    datacenters: &[String],
    timeout: Duration,
) -> Result<Vec<Report>, CqlCommandError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut reports = Vec::with_capacity(contacts.nodes.len());
        let mut last_failure = None;
        for result in ask_all(contacts).await {
            match result {
                Ok(report) => reports.push(report),
                Err(e) => last_failure = Some(e),
            }
        }
        for (report, expected) in reports.iter().zip(datacenters) {
            check_datacenter(report, expected)?;
        }
        let Some(failure) = last_failure else {
            return Ok(reports);
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(CqlCommandError::Timeout(timeout, Box::new(failure)));
        }
        tokio::time::sleep_until((now + POLL).min(deadline)).await;
    }
}

fn check_datacenter(report: &Report, expected: &str) -> Result<(), CqlCommandError> {
    if report.datacenter == expected {
        return Ok(());
    }
    Err(CqlCommandError::WrongDatacenter {
        node: report.node.clone(),
        found: report.datacenter.clone(),
        expected: expected.to_owned(),
    })
}

/// What `node` reports about itself, within `limit`.
async fn ask(node: &str, limit: Duration) -> Result<Report, CqlCommandError> {
    match tokio::time::timeout(limit, ask_unbounded(node, limit)).await {
        Ok(answer) => answer,
        Err(_) => Err(CqlCommandError::Slow {
            node: node.to_owned(),
            limit,
        }),
    }
}

async fn ask_unbounded(node: &str, limit: Duration) -> Result<Report, CqlCommandError> {
    let unreachable = |reason: String| CqlCommandError::Unreachable {
        node: node.to_owned(),
        reason,
    };
    let session = connect_to_only(node, limit)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let (datacenter, rack) = session
        .query_unpaged("SELECT data_center, rack FROM system.local", &[])
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .into_rows_result()
        .map_err(|e| unreachable(e.to_string()))?
        .first_row::<(Option<String>, Option<String>)>()
        .map_err(|e| unreachable(format!("system.local: {e}")))?;
    let peer_rows = session
        .query_unpaged("SELECT peer, data_center FROM system.peers", &[])
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .into_rows_result()
        .map_err(|e| unreachable(e.to_string()))?;
    let mut peers = BTreeSet::new();
    for row in peer_rows
        .rows::<(IpAddr, Option<String>)>()
        .map_err(|e| unreachable(format!("system.peers: {e}")))?
    {
        let (addr, dc) = row.map_err(|e| unreachable(format!("system.peers: {e}")))?;
        peers.insert((addr, dc.unwrap_or_default()));
    }
    Ok(Report {
        node: node.to_owned(),
        datacenter: datacenter.unwrap_or_default(),
        rack: rack.unwrap_or_default(),
        peers,
    })
}

/// A session that connects to `node` and no other: the others may be down,
/// and the queries must reach this one.
async fn connect_to_only(node: &str, limit: Duration) -> Result<Session, String> {
    let only = AllowListHostFilter::new([node]).map_err(|e| format!("not an address: {e}"))?;
    let profile = ExecutionProfile::builder()
        .request_timeout(Some(limit))
        .build();
    SessionBuilder::new()
        .known_node(node)
        .host_filter(Arc::new(only))
        .connection_timeout(limit)
        .fetch_schema_metadata(false)
        .default_execution_profile_handle(profile.into_handle())
        .build()
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn report(datacenter: &str, peers: &[(u8, &str)]) -> Report {
        Report {
            node: "127.0.0.1:9042".into(),
            datacenter: datacenter.into(),
            rack: "rack1".into(),
            peers: peers
                .iter()
                .map(|&(last, dc)| (IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), dc.to_owned()))
                .collect(),
        }
    }

    #[test]
    fn a_line_is_node_datacenter_rack_and_sorted_peers() {
        let with = report(
            "dhaka_north",
            &[(3, "dhaka_southwest"), (2, "dhaka_southeast")],
        );
        assert_eq!(
            with.line(),
            "127.0.0.1:9042\tdhaka_north\track1\t127.0.0.2/dhaka_southeast 127.0.0.3/dhaka_southwest"
        );
        assert_eq!(
            report("dhaka_north", &[]).line(),
            "127.0.0.1:9042\tdhaka_north\track1\t"
        );
    }

    #[test]
    fn another_datacenter_is_refused_with_its_own_exit_code() {
        let north = report("dhaka_north", &[]);
        assert!(check_datacenter(&north, "dhaka_north").is_ok());
        let err = check_datacenter(&north, "dhaka_southeast").unwrap_err();
        assert_eq!(err.exit_code(), 3);
        assert_eq!(
            err.to_string(),
            "127.0.0.1:9042 reports datacenter \"dhaka_north\", expected \"dhaka_southeast\""
        );
    }

    #[tokio::test]
    async fn a_node_nobody_listens_on_is_reported_unreachable() {
        // Port 9 (discard) on loopback: nothing listens there in a test run.
        let contacts = Contacts {
            nodes: vec!["127.0.0.1:9".into()],
            per_node: Duration::from_secs(2),
        };
        let answers = ask_all(&contacts).await;
        assert!(matches!(
            answers.as_slice(),
            [Err(
                CqlCommandError::Unreachable { .. } | CqlCommandError::Slow { .. }
            )]
        ));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = run(CqlCommand::Status(contacts), &mut out, &mut err).await;
        assert!(
            matches!(
                result,
                Err(CqlCommandError::NotAllAnswered { count: 1, total: 1 })
            ),
            "{result:?}"
        );
        assert!(out.is_empty());
        assert!(String::from_utf8(err).unwrap().starts_with("127.0.0.1:9: "));
    }
}
