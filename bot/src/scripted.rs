//! A scripted HTTP/1.1 server for the unit tests: it answers each POST as a
//! script says for its path, so that a test can play a live node, a dead
//! region's node or a redirecting one on `127.0.0.1:0` without a node.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use reqwest::Url;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How the server answers a request for a path: its status line, extra
/// header lines, its body (the request's own when `None`), and whether it
/// then closes the connection.
pub struct Scripted {
    pub status: &'static str,
    pub headers: String,
    pub body: Option<String>,
    pub close: bool,
}

/// An answer with `status`, echoing the request's body.
pub fn answer(status: &'static str) -> Scripted {
    Scripted {
        status,
        headers: String::new(),
        body: None,
        close: false,
    }
}

/// A `307` to `location` (a URL, or a path on the same server).
pub fn redirect(location: impl std::fmt::Display) -> Scripted {
    Scripted {
        headers: format!("location: {location}\r\n"),
        ..answer("307 Temporary Redirect")
    }
}

/// A server that redirects every request to `target`; returns its base URL.
pub async fn redirecting_to(target: &Url) -> Url {
    let target = target.clone();
    serve(move |_| redirect(&target)).await.0
}

/// A `503` with the API's error body carrying `code`, as a node sends it.
pub fn refusal(code: &str) -> Scripted {
    Scripted {
        headers: "retry-after: 1\r\ncontent-type: application/json\r\n".into(),
        body: Some(format!(
            r#"{{"error":{{"code":"{code}","message":"scripted"}}}}"#
        )),
        ..answer("503 Service Unavailable")
    }
}

/// A loopback base URL where nothing listens: a port that was free a
/// moment ago, so connecting there is refused.
pub fn nothing_listening() -> Url {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap()
}

type Script = Arc<dyn Fn(&str) -> Scripted + Send + Sync>;

/// A server on `127.0.0.1:0` that answers every request as `script` says
/// for its path. Returns its base URL and how many connections it has
/// accepted.
pub async fn serve(
    script: impl Fn(&str) -> Scripted + Send + Sync + 'static,
) -> (Url, Arc<AtomicUsize>) {
    serve_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), script)
}

/// [`serve`] on a listener of the caller's.
pub fn serve_on(
    listener: TcpListener,
    script: impl Fn(&str) -> Scripted + Send + Sync + 'static,
) -> (Url, Arc<AtomicUsize>) {
    let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let script: Script = Arc::new(script);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Relaxed);
            tokio::spawn(converse(stream, Arc::clone(&script)));
        }
    });
    (url, accepted)
}

/// Answers the requests of one connection until the client closes it or
/// the script says to.
async fn converse(stream: TcpStream, script: Script) {
    let mut stream = BufReader::new(stream);
    while let Some((path, body)) = read_request(&mut stream).await {
        let Scripted {
            status,
            headers,
            body: scripted_body,
            close,
        } = script(&path);
        let body = scripted_body.map_or(body, String::into_bytes);
        let connection = if close { "connection: close\r\n" } else { "" };
        // One write: a head and a body written apart wait out the client's
        // delayed ACK (Nagle), some 40 ms a request.
        let mut answer = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n{headers}{connection}\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(&body);
        stream.get_mut().write_all(&answer).await.unwrap();
        if close {
            return;
        }
    }
}

/// The next request's path and body; `None` once the client has closed.
async fn read_request(stream: &mut BufReader<TcpStream>) -> Option<(String, Vec<u8>)> {
    let (mut path, mut length) = (String::new(), 0);
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
            return None;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        } else if line.starts_with("POST ") {
            path = line.split_whitespace().nth(1).unwrap().to_owned();
        } else if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    Some((path, body))
}
