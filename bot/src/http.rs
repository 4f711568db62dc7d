//! The one HTTP client, the one way the bot POSTs JSON and the one way it
//! GETs what a node reports (its region, its state, its matches).
//!
//! A single shared `reqwest::Client` keeps connections alive between
//! requests (a new TCP connection per request would measure the kernel,
//! not the node). Redirects use reqwest's default policy, which follows
//! `307` and re-sends the body; whether one happened is seen by comparing
//! the final URL with the one asked for. Load mode's workers write on
//! connections of their own instead ([`crate::conn`]), and read the answer
//! the same way ([`Reply::read`]).

use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::{Client, StatusCode, Url};
use ride_types::api::ErrorBody;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::stats::Outcome;

/// How long one request may take before it counts as a transport error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The shared client. `max_idle` should cover the number of requests in
/// flight so that no connection is closed only to be reopened.
pub fn client(max_idle: usize) -> reqwest::Result<Client> {
    Client::builder()
        .pool_max_idle_per_host(max_idle)
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
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
}

impl<T> Reply<T> {
    pub fn outcome(&self) -> Outcome {
        Outcome::Answered {
            status: self.status.as_u16(),
            redirected: self.redirected_to.is_some(),
        }
    }
}

/// POSTs `body` as JSON to `url` and reads the whole answer (reading it lets
/// the connection go back to the pool). Pass `serde::de::IgnoredAny` as `T`
/// when the answer's content does not matter.
pub async fn post<B, T>(client: &Client, url: &Url, body: &B) -> reqwest::Result<Reply<T>>
where
    B: Serialize + ?Sized,
    T: DeserializeOwned,
{
    let response = client.post(url.clone()).json(body).send().await?;
    let status = response.status();
    let redirected_to = (response.url() != url).then(|| response.url().clone());
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
        let body = if status.is_success() {
            serde_json::from_slice(bytes)
                .map_err(|e| format!("{status} with an unreadable body from {url}: {e}"))
        } else {
            Err(describe_rejection(status, bytes))
        };
        Reply {
            status,
            redirected_to,
            body,
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
fn describe_rejection(status: StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => format!("{status} {}: {}", error.code, error.message),
        Err(_) => {
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
    use super::*;

    #[test]
    fn describes_api_rejections() {
        let body = br#"{"error":{"code":"already_rated","message":"rider was already rated"}}"#;
        assert_eq!(
            describe_rejection(StatusCode::CONFLICT, body),
            "409 Conflict already_rated: rider was already rated"
        );
        assert_eq!(
            describe_rejection(StatusCode::BAD_GATEWAY, b" <html>oops</html>\n"),
            "502 Bad Gateway: <html>oops</html>"
        );
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
