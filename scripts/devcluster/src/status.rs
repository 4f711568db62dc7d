//! One status line per node, from its `/debug/state` and `/metrics`, asked
//! of every node at once so the answers are close in time.

use std::time::Duration;

use ride_types::api::DebugState;

/// What one node answered; `None` for a node that did not answer.
pub struct Answer {
    pub id: String,
    pub state: Option<DebugState>,
    pub accepted: Option<u64>,
}

/// The sum of `ride_requests_accepted_total` over its labels.
pub fn accepted_total(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("ride_requests_accepted_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn ask(http: &reqwest::Client, id: String, admin: String) -> Answer {
    let get = |path: &str| http.get(format!("http://{admin}{path}")).send();
    let (state, metrics) = tokio::join!(get("/debug/state"), get("/metrics"));
    let state = match state {
        Ok(r) => r.json::<DebugState>().await.ok(),
        Err(_) => None,
    };
    let accepted = match metrics {
        Ok(r) => r.text().await.ok().map(|t| accepted_total(&t)),
        Err(_) => None,
    };
    Answer {
        id,
        state,
        accepted,
    }
}

/// Asks every `(id, admin address)` at once.
pub async fn gather(nodes: Vec<(String, String)>) -> Vec<Answer> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    let asks = nodes.into_iter().map(|(id, admin)| {
        tokio::spawn({
            let http = http.clone();
            async move { ask(&http, id, admin).await }
        })
    });
    let mut answers = Vec::new();
    for ask in asks.collect::<Vec<_>>() {
        if let Ok(answer) = ask.await {
            answers.push(answer);
        }
    }
    answers
}

/// The lines for `answers`, stamped `stamp`; a last line when more than one
/// node answered and every pair is in step on what it shares.
pub fn lines(answers: &[Answer], stamp: &str) -> Vec<String> {
    let width = answers.iter().map(|a| a.id.len()).max().unwrap_or(0);
    let mut out: Vec<String> = answers
        .iter()
        .map(|a| match &a.state {
            None => format!("{stamp} {:<width$}  (not answering)", a.id),
            Some(s) => format!(
                "{stamp} {:<width$}  pending riders {:>4} drivers {:>4}  matches {:>6}  accepted {:>7}  docs {:>4}  digest {}  {}",
                a.id,
                s.pending_riders,
                s.pending_drivers,
                s.committed_matches,
                a.accepted.unwrap_or(0),
                s.documents,
                s.digest,
                if s.ready { "ready" } else { "NOT READY" },
            ),
        })
        .collect();
    let states: Option<Vec<&DebugState>> = answers.iter().map(|a| a.state.as_ref()).collect();
    let in_step = states.is_some_and(DebugState::all_in_step);
    if answers.len() > 1 && in_step {
        out.push(format!("{stamp} {:<width$}  all nodes in step", ""));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: &str, digest: Option<&str>) -> Answer {
        Answer {
            id: id.into(),
            state: digest.map(|d| DebugState {
                region: "r".into(),
                digests: [("r".to_owned(), d.to_owned())].into(),
                pending_riders: 1,
                pending_drivers: 2,
                committed_matches: 3,
                documents: 4,
                digest: d.into(),
                ready: true,
                ..DebugState::default()
            }),
            accepted: Some(7),
        }
    }

    #[test]
    fn accepted_requests_are_summed_over_labels() {
        let metrics = "# HELP x\nride_requests_accepted_total{kind=\"rider\"} 3\n\
                       ride_requests_accepted_total{kind=\"driver\"} 4\nother 9\n";
        assert_eq!(accepted_total(metrics), 7);
    }

    #[test]
    fn equal_digests_are_announced_only_when_every_node_answers() {
        let same = lines(
            &[answer("a", Some("x")), answer("bb", Some("x"))],
            "12:00:00",
        );
        assert_eq!(same.len(), 3);
        assert!(same[0].starts_with("12:00:00 a   pending riders    1 drivers    2"));
        assert!(same[2].ends_with("all nodes in step"));
        let differ = lines(&[answer("a", Some("x")), answer("b", Some("y"))], "t");
        assert_eq!(differ.len(), 2);
        let silent = lines(&[answer("a", Some("x")), answer("b", None)], "t");
        assert_eq!(silent.len(), 2);
        assert!(silent[1].ends_with("(not answering)"));
    }
}
