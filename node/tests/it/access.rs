//! Who may see and do what: a stranger who knows an id but not its token can
//! neither follow nor rate it; the operator surfaces exist only on the
//! admin listener; the public API holds each client to its rate limit.

use reqwest::StatusCode;
use ride_types::api::{AccessToken, ErrorBody, Grant, ServerMessage};
use serde_json::json;

use crate::support::*;

/// Every route of the admin listener, none of which the public one serves.
const ADMIN_ONLY: [&str; 8] = [
    "/",
    "/dashboard",
    "/dashboard/app.js",
    "/dashboard/style.css",
    "/dashboard/events",
    "/debug/state",
    "/metrics",
    "/matches",
];

/// The next frame, which must be an error; returns its code.
async fn error_code(socket: &mut Socket) -> String {
    match socket.next().await {
        ServerMessage::Error { error } => error.code,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

/// The next frame, which must acknowledge a subscription; returns its ids.
async fn subscribed(socket: &mut Socket) -> Vec<uuid::Uuid> {
    match socket.next().await {
        ServerMessage::Subscribed { ids } => ids,
        other => panic!("expected an acknowledgement, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stranger_who_knows_an_id_can_neither_follow_nor_rate_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]).await;
    let http = reqwest::Client::new();
    let rider = post_rider(&http, &node, "Owner", at(23.8, 90.4), at(23.9, 90.4)).await;
    let driver = post_driver(&http, &node, "Driver", "OWN-1", at(23.8, 90.4)).await;
    assert_ne!(rider.token, driver.token);

    // No token, someone else's token, a token from another mesh's key, junk.
    let other_mesh = node::runtime::access::TokenKeys::ephemeral()
        .unwrap()
        .mint(rider.id);
    let mut stranger = Socket::connect(&node).await;
    for (token, code) in [
        (None, "missing_token"),
        (Some(driver.token.clone()), "invalid_token"),
        (Some(other_mesh.clone()), "invalid_token"),
        (
            Some(AccessToken::new("not-a-token".into())),
            "invalid_token",
        ),
    ] {
        stranger
            .subscribe_grants(vec![Grant {
                id: rider.id,
                token,
            }])
            .await;
        assert!(subscribed(&mut stranger).await.is_empty(), "{code}");
        assert_eq!(error_code(&mut stranger).await, code);
    }

    // The socket stays open, and an id it holds the token of is watched,
    // next to one it does not in the same frame.
    stranger
        .subscribe_grants(vec![
            Grant {
                id: driver.id,
                token: Some(driver.token.clone()),
            },
            Grant {
                id: rider.id,
                token: None,
            },
        ])
        .await;
    assert_eq!(subscribed(&mut stranger).await, vec![driver.id]);
    assert_eq!(error_code(&mut stranger).await, "missing_token");
    let told = stranger.next_match().await;
    assert_eq!((told.rider_id, told.driver_id), (rider.id, driver.id));

    // Rating: refused without the rider's token, and nothing is used up.
    let rate = |token: Option<&AccessToken>| {
        let mut body = json!({"rider_id": rider.id, "car_number": "OWN-1", "stars": 1});
        if let Some(token) = token {
            body["token"] = json!(token);
        }
        http.post(node.url("/rating")).json(&body).send()
    };
    for (token, status, code) in [
        (None, StatusCode::UNAUTHORIZED, "missing_token"),
        (Some(&driver.token), StatusCode::FORBIDDEN, "invalid_token"),
        (Some(&other_mesh), StatusCode::FORBIDDEN, "invalid_token"),
    ] {
        let answer = rate(token).await.unwrap();
        assert_eq!(answer.status(), status, "{code}");
        assert_eq!(answer.json::<ErrorBody>().await.unwrap().error.code, code);
    }
    assert_eq!(
        rate(Some(&rider.token)).await.unwrap().status(),
        StatusCode::CREATED
    );

    // Tokens are nowhere an operator looks: not in metrics, the match
    // list, the node's state or a dashboard frame.
    for path in ["/metrics", "/matches", "/debug/state", "/dashboard/events"] {
        let mut answer = http.get(node.admin_url(path)).send().await.unwrap();
        // The events stream never ends: its first frame is enough.
        let text = match path {
            "/dashboard/events" => {
                String::from_utf8_lossy(&answer.chunk().await.unwrap().unwrap()).into_owned()
            }
            _ => answer.text().await.unwrap(),
        };
        for token in [&rider.token, &driver.token] {
            assert!(!text.contains(token.expose()), "a token in {path}");
        }
    }
}

#[tokio::test]
async fn operator_routes_exist_only_on_the_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let regions = concat!(env!("CARGO_MANIFEST_DIR"), "/../regions");
    let node = NodeProcess::start(
        dir.path(),
        &["--regions", regions, "--region", "dhaka-north"],
    )
    .await;
    let http = reqwest::Client::new();
    for path in ADMIN_ONLY {
        let public = http.get(node.url(path)).send().await.unwrap();
        assert_eq!(public.status(), StatusCode::NOT_FOUND, "public {path}");
        let body: ErrorBody = public.json().await.unwrap();
        assert_eq!(body.error.code, "not_found", "public {path}");
        // Status only: the events stream never ends.
        let admin = http.get(node.admin_url(path)).send().await.unwrap();
        assert_eq!(admin.status(), StatusCode::OK, "admin {path}");
    }
    // And the public API is not on the admin listener.
    let rider = json!({"name": "A", "position": {"lat": 23.8, "lon": 90.4},
                       "destination": {"lat": 23.9, "lon": 90.4}});
    let on_admin = http
        .post(node.admin_url("/rider"))
        .json(&rider)
        .send()
        .await
        .unwrap();
    assert_eq!(on_admin.status(), StatusCode::NOT_FOUND);
    for path in ["/healthz", "/regions", "/route?lat=23.8&lon=90.4"] {
        let status = http.get(node.url(path)).send().await.unwrap().status();
        assert_eq!(status, StatusCode::OK, "public {path}");
    }
    for path in ["/healthz", "/regions"] {
        let status = http
            .get(node.admin_url(path))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK, "admin {path}");
    }
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &[
            "--rate-limit-per-second",
            "1",
            "--rate-limit-burst",
            "3",
            "--client-ip-header",
            "x-client-ip",
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let get = |client_ip: &'static str| {
        http.get(node.url("/healthz"))
            .header("x-client-ip", client_ip)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(get("192.0.2.1").await.unwrap().status(), StatusCode::OK);
    }
    let refused = get("192.0.2.1").await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    let body: ErrorBody = refused.json().await.unwrap();
    assert_eq!(body.error.code, "rate_limited");

    // Another client, and the operator listener, are not held back.
    assert_eq!(get("192.0.2.2").await.unwrap().status(), StatusCode::OK);
    for _ in 0..5 {
        let status = http
            .get(node.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK);
    }
}
