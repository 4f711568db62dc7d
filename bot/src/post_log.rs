//! `--post-log`: one JSON line per rider or driver `POST` of simulation
//! mode, saying when it was sent and answered, where it went (the endpoint
//! asked, and the one it ended at after any redirect), what came back, and
//! which node accepted it. A timeline of who served an area, for scripts
//! such as `scripts/bench-failover.sh` (how soon a dead region's area is
//! answered `202` again, and when it goes home).
//!
//! Lines are written by the simulation's coordinator through the same
//! [`Recorder`](crate::record::Recorder) as `--record`.

use reqwest::Url;
use ride_types::api::Accepted;
use serde::Serialize;
use uuid::Uuid;

use crate::endpoint::Endpoint;
use crate::http::{Reply, describe_error};

/// One rider or driver `POST`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PostLine {
    /// `rider` or `driver`.
    pub role: &'static str,
    /// Epoch seconds, when the request left and when its answer (or its
    /// failure) came back.
    pub sent_at: f64,
    pub answered_at: f64,
    /// The endpoint asked.
    pub asked: String,
    /// The endpoint the request ended at, after any redirect: the one that
    /// answered, or the one that could not be reached.
    pub reached: String,
    /// The final HTTP status; none when no answer came (a refused
    /// connection, a timeout).
    pub status: Option<u16>,
    /// Of an accepted request: its id, and the region and node that
    /// accepted it (the node owns it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Of anything else: the refusal or the transport error, in one line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl PostLine {
    /// The line for a request to `asked` (a route such as `/rider`) sent at
    /// `sent_at` and finished at `answered_at`, with its result.
    pub fn new(
        role: &'static str,
        (sent_at, answered_at): (f64, f64),
        asked: &Url,
        result: &reqwest::Result<Reply<Accepted>>,
    ) -> Self {
        let mut line = PostLine {
            role,
            sent_at,
            answered_at,
            asked: Endpoint::base_of(asked).to_string(),
            reached: Endpoint::base_of(asked).to_string(),
            status: None,
            id: None,
            region: None,
            node: None,
            problem: None,
        };
        match result {
            Ok(reply) => {
                if let Some(to) = &reply.redirected_to {
                    line.reached = Endpoint::base_of(to).to_string();
                }
                line.status = Some(reply.status.as_u16());
                match &reply.body {
                    Ok(accepted) => {
                        line.id = Some(accepted.id);
                        line.region = Some(accepted.region.clone());
                        line.node = Some(accepted.node.clone());
                    }
                    Err(problem) => line.problem = Some(problem.clone()),
                }
            }
            Err(e) => {
                if let Some(url) = e.url() {
                    line.reached = Endpoint::base_of(url).to_string();
                }
                line.problem = Some(describe_error(e));
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn an_accepted_post_names_the_node_it_reached_through_a_redirect() {
        let body = br#"{"id":"0191c1d2-0000-7000-8000-000000000001","token":"t",
            "region":"south","node":"south-1","expires_at":"2030-01-01T00:00:00Z"}"#;
        let reply = Reply::read(
            &url("http://a:1/rider"),
            StatusCode::ACCEPTED,
            Some(url("http://b:2/rider")),
            None,
            body,
        );
        let line = PostLine::new("rider", (1.0, 1.5), &url("http://a:1/rider"), &Ok(reply));
        assert_eq!(line.asked, "http://a:1/");
        assert_eq!(line.reached, "http://b:2/");
        assert_eq!(line.status, Some(202));
        assert_eq!(line.region.as_deref(), Some("south"));
        assert_eq!(line.node.as_deref(), Some("south-1"));
        assert_eq!(line.problem, None);
        let json = serde_json::to_value(&line).unwrap();
        assert_eq!(json["sent_at"], 1.0);
        assert_eq!(json["answered_at"], 1.5);
    }

    #[test]
    fn a_refusal_keeps_its_status_and_reason() {
        let body = br#"{"error":{"code":"region_unavailable","message":"later"}}"#;
        let asked = url("http://a:1/driver");
        let reply = Reply::read(&asked, StatusCode::SERVICE_UNAVAILABLE, None, None, body);
        let line = PostLine::new("driver", (2.0, 2.1), &asked, &Ok(reply));
        assert_eq!((line.status, line.id), (Some(503), None));
        assert_eq!(line.reached, "http://a:1/");
        assert!(line.problem.unwrap().contains("region_unavailable"));
        let json = serde_json::to_value(PostLine::new(
            "driver",
            (2.0, 2.1),
            &asked,
            &Ok(Reply::read(
                &asked,
                StatusCode::BAD_GATEWAY,
                None,
                None,
                b"",
            )),
        ))
        .unwrap();
        assert!(json.get("node").is_none(), "{json}");
    }

    #[tokio::test]
    async fn a_post_that_met_no_node_has_no_status_and_says_why() {
        let asked = crate::scripted::nothing_listening().join("rider").unwrap();
        let client = crate::http::client(1).unwrap();
        let result = crate::http::post::<_, Accepted>(&client, &asked, &()).await;
        let line = PostLine::new("rider", (3.0, 3.0), &asked, &result);
        assert_eq!(line.status, None);
        assert_eq!(line.reached, Endpoint::base_of(&asked).to_string());
        assert!(line.problem.unwrap().contains("refused"));
    }
}
