//! A load worker's own HTTP/1.1 connections.
//!
//! Why not the shared `reqwest::Client`: in load mode the bot shares the
//! machine with the node it measures, and through reqwest each request cost
//! the bot about 31 µs of CPU at 20,000 requests/s (a pool checkout under a
//! lock, URL and header handling, redirect and timeout layers): two thirds
//! of what the node spent answering it, on the same two cores
//! (BENCHMARKS.md). A load worker has at most one request in flight, so it
//! owns one keep-alive connection per endpoint and writes to it with hyper
//! directly: nothing is shared between workers, and nothing is pooled.
//!
//! It behaves as the shared client does where load mode can tell: it follows
//! a `307`/`308` (re-sending the body), speaks TLS to `https://` endpoints
//! (webpki roots), and gives up on a request after
//! [`http::REQUEST_TIMEOUT`](crate::http::REQUEST_TIMEOUT).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use reqwest::Url;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::http::{CONNECT_TIMEOUT, REQUEST_TIMEOUT};

/// As many redirects as reqwest's default policy follows.
const MAX_REDIRECTS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0} is neither an http:// nor an https:// URL with a host")]
    Unsupported(Url),
    #[error("cannot connect to {}", .url.authority())]
    Connect {
        url: Url,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {} timed out", .0.authority())]
    ConnectTimeout(Url),
    #[error("HTTP exchange with {authority} failed")]
    Http {
        authority: String,
        #[source]
        source: hyper::Error,
    },
    #[error("no answer from {0} within the request timeout")]
    Timeout(Url),
    #[error("more than {MAX_REDIRECTS} redirects from {0}")]
    TooManyRedirects(Url),
    #[error("a redirect from {0} has no usable Location")]
    BadRedirect(Url),
}

impl ConnError {
    /// Where a request that got no answer met a dead node: the URL it could
    /// not connect to. Other failures (a reset, a timeout) say nothing of
    /// whether the node is alive.
    pub fn refused_at(&self) -> Option<&Url> {
        match self {
            ConnError::Connect { url, .. } | ConnError::ConnectTimeout(url) => Some(url),
            _ => None,
        }
    }
}

/// A node's whole answer to one request.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// Where a redirect led, when one did.
    pub redirected_to: Option<Url>,
    pub retry_after: Option<header::HeaderValue>,
    pub body: Bytes,
}

/// One worker's open connections, by authority (`host:port`).
#[derive(Default)]
pub struct Connections {
    open: HashMap<String, SendRequest<Full<Bytes>>>,
}

impl Connections {
    /// POSTs `body` (JSON) to `url` on this worker's connection to its
    /// authority, opening one if there is none or the last one closed, and
    /// follows redirects.
    pub async fn post_json(&mut self, url: &Url, body: Bytes) -> Result<Answer, ConnError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.follow(url, body)).await {
            Ok(answer) => answer,
            Err(_) => Err(ConnError::Timeout(url.clone())),
        }
    }

    async fn follow(&mut self, url: &Url, body: Bytes) -> Result<Answer, ConnError> {
        let mut at = Cow::Borrowed(url);
        for _ in 0..=MAX_REDIRECTS {
            let response = self.exchange(&at, body.clone()).await?;
            let status = response.status();
            if status == StatusCode::TEMPORARY_REDIRECT || status == StatusCode::PERMANENT_REDIRECT
            {
                let next = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|location| at.join(location).ok())
                    .ok_or_else(|| ConnError::BadRedirect(at.clone().into_owned()))?;
                // Read the redirect's body so the connection can carry the next request.
                let _ = response.into_body().collect().await;
                at = Cow::Owned(next);
                continue;
            }
            let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
            let authority = at.authority().to_owned();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|source| {
                    self.open.remove(&authority);
                    ConnError::Http { authority, source }
                })?
                .to_bytes();
            let redirected_to = match at {
                Cow::Borrowed(_) => None,
                Cow::Owned(url) => Some(url),
            };
            return Ok(Answer {
                status,
                redirected_to,
                retry_after,
                body,
            });
        }
        Err(ConnError::TooManyRedirects(url.clone()))
    }

    /// Sends one request on the connection to `url`'s authority. A failed
    /// exchange drops that connection, so the next request opens another.
    async fn exchange(
        &mut self,
        url: &Url,
        body: Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ConnError> {
        let authority = url.authority();
        let sender = self.ready(url).await?;
        let target = match url.query() {
            Some(query) => Cow::Owned(format!("{}?{query}", url.path())),
            None => Cow::Borrowed(url.path()),
        };
        let request = Request::post(target.as_ref())
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .expect("a path, a host and a content type make a valid request");
        match sender.send_request(request).await {
            Ok(response) => Ok(response),
            Err(source) => {
                self.open.remove(authority);
                Err(ConnError::Http {
                    authority: authority.to_owned(),
                    source,
                })
            }
        }
    }

    /// This worker's connection to `url`'s authority, ready for a request.
    async fn ready(&mut self, url: &Url) -> Result<&mut SendRequest<Full<Bytes>>, ConnError> {
        let authority = url.authority();
        // A connection the node closed while idle is replaced before
        // anything is sent on it.
        let alive = match self.open.get_mut(authority) {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !alive {
            let sender = connect(url).await?;
            self.open.insert(authority.to_owned(), sender);
        }
        Ok(self
            .open
            .get_mut(authority)
            .expect("inserted above when missing"))
    }
}

/// Opens a connection to `url`'s host (TLS for `https`) and drives it on a
/// task of its own until its sender is dropped.
async fn connect(url: &Url) -> Result<SendRequest<Full<Bytes>>, ConnError> {
    let authority = url.authority().to_owned();
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Err(ConnError::Unsupported(url.clone()));
    };
    // An IPv6 literal comes bracketed (`[::1]`); neither the resolver nor
    // TLS takes the brackets.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        _ => return Err(ConnError::Unsupported(url.clone())),
    };
    let connect_err = |source| ConnError::Connect {
        url: url.clone(),
        source,
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| ConnError::ConnectTimeout(url.clone()))?
        .map_err(connect_err)?;
    tcp.set_nodelay(true).map_err(connect_err)?;
    let http_err = |source| ConnError::Http {
        authority: authority.clone(),
        source,
    };
    if tls {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| ConnError::Unsupported(url.clone()))?;
        let stream = TLS.connect(name, tcp).await.map_err(connect_err)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_err)?;
        tokio::spawn(connection);
        Ok(sender)
    } else {
        let (sender, connection) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(http_err)?;
        tokio::spawn(connection);
        Ok(sender)
    }
}

/// The TLS client configuration for `https://` endpoints: the web's roots,
/// HTTP/1.1 only.
static TLS: LazyLock<TlsConnector> = LazyLock::new(|| {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
});

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use tokio::net::TcpListener;

    use super::*;
    use crate::scripted::{
        Scripted, answer, nothing_listening, redirect, redirecting_to, serve, serve_on,
    };

    async fn post(url: &Url, body: &'static [u8]) -> Result<Answer, ConnError> {
        Connections::default()
            .post_json(url, Bytes::from_static(body))
            .await
    }

    #[tokio::test]
    async fn one_connection_carries_every_request_and_its_body() {
        let (base, accepted) = serve(|_| answer("202 Accepted")).await;
        let url = base.join("rider").unwrap();
        let mut connections = Connections::default();
        for n in 0..3 {
            let body = Bytes::from(format!("{{\"n\":{n}}}"));
            let answer = connections.post_json(&url, body.clone()).await.unwrap();
            assert_eq!(answer.status, StatusCode::ACCEPTED);
            assert_eq!(answer.body, body, "the server echoes what it was sent");
            assert_eq!(answer.redirected_to, None);
        }
        assert_eq!(accepted.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn the_query_goes_with_the_path() {
        let (base, _) = serve(|path| match path {
            "/rider?run=7" => answer("202 Accepted"),
            _ => answer("404 Not Found"),
        })
        .await;
        let answer = post(&base.join("rider?run=7").unwrap(), b"{}")
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::ACCEPTED);
    }

    #[tokio::test]
    async fn an_ipv6_literal_is_reached_without_its_brackets() {
        // Where the machine has no IPv6 loopback, there is nothing to test.
        let Ok(listener) = TcpListener::bind("[::1]:0").await else {
            return;
        };
        let (base, accepted) = serve_on(listener, |_| answer("202 Accepted"));
        assert!(base.as_str().starts_with("http://[::1]:"), "{base}");
        let answer = post(&base.join("rider").unwrap(), b"{}").await.unwrap();
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        assert_eq!(accepted.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced() {
        let (base, accepted) = serve(|_| Scripted {
            close: true,
            ..answer("202 Accepted")
        })
        .await;
        let url = base.join("rider").unwrap();
        let mut connections = Connections::default();
        for _ in 0..2 {
            let answer = connections
                .post_json(&url, Bytes::from_static(b"{}"))
                .await
                .unwrap();
            assert_eq!(answer.status, StatusCode::ACCEPTED);
        }
        assert_eq!(accepted.load(Relaxed), 2);
    }

    #[tokio::test]
    async fn a_redirect_is_followed_with_the_body_and_reported() {
        let (owner, _) = serve(|_| answer("202 Accepted")).await;
        let target = owner.join("rider").unwrap();
        let elsewhere = redirecting_to(&target).await;
        let answer = post(&elsewhere.join("rider").unwrap(), b"{\"a\":1}")
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        assert_eq!(answer.body, Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(answer.redirected_to, Some(target));
    }

    #[tokio::test]
    async fn endless_redirects_are_an_error_not_a_loop() {
        let (base, _) = serve(|path| redirect(path)).await;
        let error = post(&base.join("rider").unwrap(), b"{}").await.unwrap_err();
        assert!(matches!(error, ConnError::TooManyRedirects(_)), "{error}");
        assert_eq!(error.refused_at(), None, "the node answered");
    }

    #[tokio::test]
    async fn a_refusal_keeps_its_retry_after() {
        let (base, _) = serve(|_| Scripted {
            headers: "retry-after: 2\r\n".into(),
            ..answer("503 Service Unavailable")
        })
        .await;
        let answer = post(&base.join("rider").unwrap(), b"{}").await.unwrap();
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.retry_after.unwrap(), "2");
    }

    #[tokio::test]
    async fn nothing_listening_and_other_schemes_are_clear_errors() {
        let url = nothing_listening().join("rider").unwrap();
        let error = post(&url, b"{}").await.unwrap_err();
        assert!(matches!(error, ConnError::Connect { .. }), "{error}");
        assert_eq!(
            error.refused_at(),
            Some(&url),
            "a refused connection is a dead node"
        );
        let url = Url::parse("ftp://127.0.0.1/rider").unwrap();
        let error = post(&url, b"{}").await.unwrap_err();
        assert!(matches!(error, ConnError::Unsupported(_)), "{error}");
    }
}
