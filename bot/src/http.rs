//! The one HTTP client, the one way the bot POSTs JSON and the one way it
//! GETs what a node reports (its region, its state, its matches).
//!
//! A single shared `reqwest::Client` keeps connections alive between
//! requests (a new TCP connection per request would measure the kernel,
//! not the node). [`post`] follows `307` and `308` itself, re-sending the
//! body, as many times as reqwest's default policy would: reqwest names the
//! URL first asked in the error of a request that could not connect after
//! a redirect, and the failover must know which node was dead (the one
//! redirected to, not the live one that redirected). Load mode's workers
//! write on connections of their own instead ([`crate::conn`]), and read
//! the answer the same way ([`Reply::read`]).

use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::{Client, StatusCode, Url};
use ride_types::api::{ErrorBody, ErrorDetail};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::stats::Outcome;

/// Redirects [`post`] follows, as reqwest's default policy.
const MAX_REDIRECTS: usize = 10;

/// How long one request may take before it counts as a transport error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The code of a `503` from a node that cannot serve the position: its
/// region is down and no live region has adopted the area yet.
const REGION_UNAVAILABLE: &str = "region_unavailable";

/// The shared client. `max_idle` should cover the number of requests in
/// flight so that no connection is closed only to be reopened.
pub fn client(max_idle: usize) -> reqwest::Result<Client> {
    Client::builder()
        .pool_max_idle_per_host(max_idle)
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// An answer from a node.
#[derive(Debug)]
pub struct Reply<T> {
    pub status: StatusCode,
    /// Where a redirect led, when one did.
    pub redirected_to: Option<Url>,
    /// The parsed 2xx body, or a one-line description of the rejection
    /// (`409 already_rated: ...`) or of an unreadable body.
    pub body: Result<T, String>,
    /// When a refusal (a shed request's 503) says to come back.
    pub retry_after: Option<Duration>,
    /// The answer says the node asked is no use for now: a gateway with no
    /// live node behind it (`502`), or a node that cannot serve the
    /// position (`503` `region_unavailable`). Not an overloaded node's `503`.
    pub unavailable: bool,
}

impl<T> Reply<T> {
    pub fn outcome(&self) -> Outcome {
        Outcome::Answered {
            status: self.status.as_u16(),
            redirected: self.redirected_to.is_some(),
        }
    }

    /// Where this answer says a node is dead: the URL that answered (after
    /// any redirect from `asked`), when the answer is
    /// [unavailable](Reply::unavailable).
    pub fn dead_at<'a>(&'a self, asked: &'a Url) -> Option<&'a Url> {
        self.unavailable
            .then(|| self.redirected_to.as_ref().unwrap_or(asked))
    }
}

/// Where a request that failed without an answer met a dead node: the URL
/// it could not connect to. Other failures (a reset, a timeout) say nothing
/// of whether the node is alive.
pub fn refused_at(error: &reqwest::Error) -> Option<&Url> {
    error.is_connect().then(|| error.url()).flatten()
}

/// POSTs `body` as JSON to `url`, following redirects, and reads the whole
/// answer (reading it lets the connection go back to the pool). Pass
/// `serde::de::IgnoredAny` as `T` when the answer's content does not
/// matter. A request that fails names the URL it failed at (`error.url()`),
/// the one a redirect led to if one did; past [`MAX_REDIRECTS`], the last
/// redirect is the answer.
pub async fn post<B, T>(client: &Client, url: &Url, body: &B) -> reqwest::Result<Reply<T>>
where
    B: Serialize + ?Sized,
    T: DeserializeOwned,
{
    let mut at = url.clone();
    let mut response = client.post(at.clone()).json(body).send().await?;
    for _ in 0..MAX_REDIRECTS {
        let Some(next) = redirect_target(&response) else {
            break;
        };
        // Read to the end, so that the connection can be used again.
        response.bytes().await?;
        at = next;
        response = client.post(at.clone()).json(body).send().await?;
    }
    let status = response.status();
    let redirected_to = (at != *url).then_some(at);
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .cloned();
    let bytes = response.bytes().await?;
    Ok(Reply::read(
        url,
        status,
        redirected_to,
        retry_after.as_ref(),
        &bytes,
    ))
}

/// Where a `307` or `308` answer sends the request again, if it says.
fn redirect_target(response: &reqwest::Response) -> Option<Url> {
    let status = response.status();
    if status != StatusCode::TEMPORARY_REDIRECT && status != StatusCode::PERMANENT_REDIRECT {
        return None;
    }
    let location = response.headers().get(reqwest::header::LOCATION)?;
    response.url().join(location.to_str().ok()?).ok()
}

impl<T: DeserializeOwned> Reply<T> {
    /// A node's answer to a request sent to `url`, read from its parts.
    pub fn read(
        url: &Url,
        status: StatusCode,
        redirected_to: Option<Url>,
        retry_after: Option<&HeaderValue>,
        bytes: &[u8],
    ) -> Self {
        let retry_after = retry_after
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .map(Duration::from_secs);
        if status.is_success() {
            let body = serde_json::from_slice(bytes)
                .map_err(|e| format!("{status} with an unreadable body from {url}: {e}"));
            return Reply {
                status,
                redirected_to,
                body,
                retry_after,
                unavailable: false,
            };
        }
        let error = serde_json::from_slice::<ErrorBody>(bytes)
            .ok()
            .map(|body| body.error);
        let code = error.as_ref().map(|e| e.code.as_str());
        Reply {
            status,
            redirected_to,
            unavailable: status == StatusCode::BAD_GATEWAY
                || (status == StatusCode::SERVICE_UNAVAILABLE && code == Some(REGION_UNAVAILABLE)),
            body: Err(describe_rejection(status, error.as_ref(), bytes)),
            retry_after,
        }
    }
}

/// GETs `url` and reads a 2xx answer as text (e.g. `/metrics`), giving up
/// after `timeout`; an error says why in one line.
pub async fn get_text(client: &Client, url: Url, timeout: Duration) -> Result<String, String> {
    let response = client
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| describe_error(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    response.text().await.map_err(|e| describe_error(&e))
}

/// GETs `url` and reads a 2xx answer as JSON of type `T`.
pub async fn get_json<T: DeserializeOwned>(
    client: &Client,
    url: Url,
    timeout: Duration,
) -> Result<T, String> {
    let text = get_text(client, url, timeout).await?;
    serde_json::from_str(&text).map_err(|e| format!("unreadable answer: {e}"))
}

/// `422 invalid_field: lat must be ...`, falling back to the raw body when it
/// is not the API's error shape (e.g. a proxy's HTML page).
fn describe_rejection(status: StatusCode, error: Option<&ErrorDetail>, body: &[u8]) -> String {
    match error {
        Some(error) => format!("{status} {}: {}", error.code, error.message),
        None => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.chars().take(200).collect();
            format!("{status}: {}", text.trim())
        }
    }
}

/// An error with all its causes, e.g. `error sending request for url
/// (http://127.0.0.1:9/rider): client error (Connect): tcp connect error:
/// Connection refused (os error 111)`; reqwest's own `Display` stops at the
/// first line, which hides the useful part.
pub fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use serde::de::IgnoredAny;
    use serde_json::json;

    use super::*;
    use crate::scripted::{answer, nothing_listening, redirect, redirecting_to, serve};

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn read(status: StatusCode, body: &[u8]) -> Reply<IgnoredAny> {
        Reply::read(&url("http://a:1/rider"), status, None, None, body)
    }

    #[test]
    fn describes_api_rejections() {
        let body = br#"{"error":{"code":"already_rated","message":"rider was already rated"}}"#;
        assert_eq!(
            read(StatusCode::CONFLICT, body).body.unwrap_err(),
            "409 Conflict already_rated: rider was already rated"
        );
        assert_eq!(
            read(StatusCode::BAD_GATEWAY, b" <html>oops</html>\n")
                .body
                .unwrap_err(),
            "502 Bad Gateway: <html>oops</html>"
        );
    }

    #[test]
    fn a_node_that_cannot_serve_is_unavailable_and_an_overloaded_one_is_not() {
        let error = |code: &str| {
            format!(r#"{{"error":{{"code":"{code}","message":"come back later"}}}}"#).into_bytes()
        };
        let unavailable = read(StatusCode::SERVICE_UNAVAILABLE, &error(REGION_UNAVAILABLE));
        assert!(unavailable.unavailable);
        let asked = url("http://a:1/rider");
        assert_eq!(unavailable.dead_at(&asked), Some(&asked));
        assert!(read(StatusCode::BAD_GATEWAY, b"no backend").unavailable);
        let overloaded = read(StatusCode::SERVICE_UNAVAILABLE, &error("overloaded"));
        assert!(!overloaded.unavailable, "load, not death");
        assert_eq!(overloaded.dead_at(&asked), None);
        assert!(!read(StatusCode::SERVICE_UNAVAILABLE, b"<html>").unavailable);
        assert!(!read(StatusCode::ACCEPTED, b"{}").unavailable);
    }

    #[test]
    fn a_redirected_answer_names_the_node_it_came_from() {
        let adopter = url("http://b:2/rider");
        let reply: Reply<IgnoredAny> = Reply::read(
            &url("http://a:1/rider"),
            StatusCode::BAD_GATEWAY,
            Some(adopter.clone()),
            None,
            b"",
        );
        assert_eq!(reply.dead_at(&url("http://a:1/rider")), Some(&adopter));
    }

    #[tokio::test]
    async fn a_refused_connection_names_where_the_node_is_dead() {
        let asked = nothing_listening().join("rider").unwrap();
        let error = post::<_, IgnoredAny>(&client(1).unwrap(), &asked, &())
            .await
            .unwrap_err();
        assert_eq!(refused_at(&error), Some(&asked));
    }

    /// A live node that redirects to a dead one: the dead one is named, not
    /// the node asked.
    #[tokio::test]
    async fn a_connection_refused_after_a_redirect_names_the_node_redirected_to() {
        let dead = nothing_listening().join("rider").unwrap();
        let live = redirecting_to(&dead).await;
        let error = post::<_, IgnoredAny>(&client(1).unwrap(), &live.join("rider").unwrap(), &())
            .await
            .unwrap_err();
        assert_eq!(refused_at(&error), Some(&dead));
    }

    #[tokio::test]
    async fn redirects_are_followed_with_the_body_and_reported() {
        let (owner, _) = serve(|_| answer("202 Accepted")).await;
        let target = owner.join("rider").unwrap();
        let elsewhere = redirecting_to(&target).await;
        let asked = elsewhere.join("rider").unwrap();
        let reply = post::<_, serde_json::Value>(&client(1).unwrap(), &asked, &json!({"a": 1}))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::ACCEPTED);
        assert_eq!(
            reply.body.unwrap(),
            json!({"a": 1}),
            "the body is sent again"
        );
        assert_eq!(reply.redirected_to, Some(target));

        // A node redirecting to itself for ever: the last redirect answers.
        let (looping, _) = serve(|path| redirect(path)).await;
        let reply =
            post::<_, IgnoredAny>(&client(1).unwrap(), &looping.join("rider").unwrap(), &())
                .await
                .unwrap();
        assert_eq!(reply.status, StatusCode::TEMPORARY_REDIRECT);
    }

    #[test]
    fn describes_error_chains() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused",
        ));
        assert_eq!(describe_error(&e), "outer: Connection refused");
    }
}
