//! Every class of bad input gets a clear 4xx, and the node stays healthy.

use ride_types::api::{ErrorBody, ServerMessage};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::*;

struct Case {
    what: &'static str,
    /// Sent to the admin listener rather than the public one.
    admin: bool,
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: String,
    status: u16,
    code: &'static str,
}

fn case(
    what: &'static str,
    path: &'static str,
    body: Value,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        what,
        admin: false,
        method: "POST",
        path,
        content_type: Some("application/json"),
        body: body.to_string(),
        status,
        code,
    }
}

fn raw(
    what: &'static str,
    path: &'static str,
    body: &str,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        body: body.into(),
        ..case(what, path, Value::Null, status, code)
    }
}

fn get(what: &'static str, path: &'static str, status: u16, code: &'static str) -> Case {
    Case {
        method: "GET",
        ..case(what, path, Value::Null, status, code)
    }
}

/// A `GET` to the admin listener.
fn admin_get(what: &'static str, path: &'static str, status: u16, code: &'static str) -> Case {
    Case {
        admin: true,
        ..get(what, path, status, code)
    }
}

fn rider(name: Value, lat: Value, lon: Value) -> Value {
    json!({"name": name, "position": {"lat": lat, "lon": lon}, "destination": {"lat": 23.8, "lon": 90.4}})
}

/// A rating body for a fresh rider id, with that id's token (the token is
/// checked first, so the other fields' errors show only with it).
fn rating(stars: Value, car: &str) -> Value {
    let id = Uuid::now_v7();
    json!({"rider_id": id, "token": token_for(id), "car_number": car, "stars": stars})
}

fn cases() -> Vec<Case> {
    let good_driver =
        json!({"name": "D", "car_number": "C-1", "position": {"lat": 23.8, "lon": 90.4}});
    let mut extra = good_driver.clone();
    extra["position"]["alt"] = json!(3);
    let mut missing = good_driver.clone();
    missing.as_object_mut().unwrap().remove("car_number");
    vec![
        raw(
            "truncated JSON",
            "/rider",
            r#"{"name": "A", "posi"#,
            400,
            "malformed_json",
        ),
        raw("not JSON at all", "/driver", "hello", 400, "malformed_json"),
        raw(
            "a bare NaN",
            "/rider",
            r#"{"name":"A","position":{"lat":NaN,"lon":1},"destination":{"lat":1,"lon":1}}"#,
            400,
            "malformed_json",
        ),
        raw(
            "a number beyond f64",
            "/rider",
            r#"{"name":"A","position":{"lat":1e999,"lon":1},"destination":{"lat":1,"lon":1}}"#,
            400,
            "malformed_json",
        ),
        case(
            "NaN as a string",
            "/rider",
            rider(json!("A"), json!("NaN"), json!(1)),
            422,
            "invalid_body",
        ),
        case(
            "latitude out of range",
            "/rider",
            rider(json!("A"), json!(90.5), json!(1)),
            422,
            "invalid_field",
        ),
        case(
            "longitude out of range",
            "/rider",
            rider(json!("A"), json!(1), json!(-181)),
            422,
            "invalid_field",
        ),
        case(
            "empty name",
            "/rider",
            rider(json!(" "), json!(1), json!(1)),
            422,
            "invalid_field",
        ),
        case(
            "a 200-character name",
            "/rider",
            rider(json!("n".repeat(200)), json!(1), json!(1)),
            422,
            "invalid_field",
        ),
        case(
            "name of the wrong type",
            "/rider",
            rider(json!(7), json!(1), json!(1)),
            422,
            "invalid_body",
        ),
        case("missing field", "/driver", missing, 422, "invalid_body"),
        case("unknown field", "/driver", extra, 422, "invalid_body"),
        case(
            "array instead of object",
            "/driver",
            json!([1, 2]),
            422,
            "invalid_body",
        ),
        case(
            "bad car number",
            "/driver",
            json!({"name": "D", "car_number": "C/1", "position": {"lat": 1, "lon": 1}}),
            422,
            "invalid_field",
        ),
        case(
            "zero stars",
            "/rating",
            rating(json!(0), "C-1"),
            422,
            "invalid_field",
        ),
        case(
            "six stars",
            "/rating",
            rating(json!(6), "C-1"),
            422,
            "invalid_field",
        ),
        case(
            "stars as text",
            "/rating",
            rating(json!("five"), "C-1"),
            422,
            "invalid_body",
        ),
        case(
            "bad car number in a rating",
            "/rating",
            rating(json!(3), "C/1"),
            422,
            "invalid_field",
        ),
        case(
            "malformed rider id",
            "/rating",
            json!({"rider_id": "not-a-uuid", "car_number": "C-1", "stars": 3}),
            422,
            "invalid_body",
        ),
        case(
            "unknown rider id",
            "/rating",
            rating(json!(3), "C-1"),
            404,
            "no_such_match",
        ),
        case(
            "rating without a token",
            "/rating",
            json!({"rider_id": Uuid::now_v7(), "car_number": "C-1", "stars": 3}),
            401,
            "missing_token",
        ),
        case(
            "rating with another id's token",
            "/rating",
            json!({"rider_id": Uuid::now_v7(), "token": token_for(Uuid::now_v7()),
                   "car_number": "C-1", "stars": 3}),
            403,
            "invalid_token",
        ),
        case(
            "token of the wrong type",
            "/rating",
            json!({"rider_id": Uuid::now_v7(), "token": 7, "car_number": "C-1", "stars": 3}),
            422,
            "invalid_body",
        ),
        Case {
            content_type: Some("text/plain"),
            ..case(
                "wrong content type",
                "/rider",
                rider(json!("A"), json!(1), json!(1)),
                415,
                "unsupported_media_type",
            )
        },
        Case {
            content_type: None,
            ..case(
                "no content type",
                "/driver",
                good_driver.clone(),
                415,
                "unsupported_media_type",
            )
        },
        raw(
            "a body over 64 KiB",
            "/rider",
            &format!(r#"{{"name":"{}"}}"#, "x".repeat(70 * 1024)),
            413,
            "payload_too_large",
        ),
        get("unknown route", "/riders", 404, "not_found"),
        Case {
            method: "DELETE",
            ..case(
                "wrong method",
                "/rider",
                Value::Null,
                405,
                "method_not_allowed",
            )
        },
        get(
            "bad query",
            "/route?lat=north&lon=90.4",
            400,
            "invalid_query",
        ),
        admin_get(
            "bad query on the admin listener",
            "/matches?limit=-3",
            400,
            "invalid_query",
        ),
        admin_get(
            "unknown route on the admin listener",
            "/rider",
            404,
            "not_found",
        ),
        get(
            "bad car number in the path",
            "/drivers/a%2Fb/rating",
            422,
            "invalid_field",
        ),
    ]
}

#[tokio::test]
async fn every_bad_request_gets_a_clear_4xx_and_the_node_stays_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]).await;
    let http = reqwest::Client::new();
    for c in cases() {
        let url = if c.admin {
            node.admin_url(c.path)
        } else {
            node.url(c.path)
        };
        let mut request = http.request(c.method.parse().unwrap(), url);
        if let Some(ct) = c.content_type {
            request = request.header("content-type", ct);
        }
        if c.method == "POST" {
            request = request.body(c.body.clone());
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", c.what));
        assert_eq!(response.status().as_u16(), c.status, "{}", c.what);
        let body: ErrorBody = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: error body is not JSON: {e}", c.what));
        assert_eq!(
            body.error.code, c.code,
            "{}: {}",
            c.what, body.error.message
        );
        assert!(!body.error.message.is_empty(), "{}", c.what);
    }

    // Still healthy, and still taking good requests.
    assert_eq!(
        http.get(node.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    post_rider(&http, &node, "Fine", at(23.8, 90.4), at(23.9, 90.4)).await;
}

#[tokio::test]
async fn bad_websocket_frames_get_error_frames_and_the_socket_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]).await;
    let http = reqwest::Client::new();
    let mut socket = Socket::connect(&node).await;

    for bad in [
        r#"{"type":"subscribe"}"#,
        "garbage",
        r#"{"type":"unsubscribe","ids":[]}"#,
        r#"{"type":"subscribe","ids":["x"]}"#,
        r#"{"type":"subscribe","requests":[{"id":"x","token":"t"}]}"#,
        r#"{"type":"subscribe","requests":[{"id":"0190a5c4-d5c2-7000-8000-000000000000","token":7}]}"#,
    ] {
        socket.send_text(bad).await;
        let ServerMessage::Error { error } = socket.next().await else {
            panic!("no error frame for {bad}");
        };
        assert_eq!(error.code, "malformed_message", "{bad}");
    }
    socket.send_binary(vec![1, 2, 3]).await;
    let ServerMessage::Error { error } = socket.next().await else {
        panic!("no error frame for a binary frame");
    };
    assert_eq!(error.code, "unsupported_frame");

    // The same socket still works.
    let rider = post_rider(&http, &node, "Still", at(23.8, 90.4), at(23.9, 90.4)).await;
    post_driver(&http, &node, "Here", "OK-1", at(23.8, 90.4)).await;
    socket.subscribe(&[&rider]).await;
    assert_eq!(socket.next_match().await.rider_id, rider.id);
}
