//! The OpenAPI documents against the node that serves them. Each document
//! is read as a client generator reads it (every `$ref` resolves, every
//! answer has a description), and one request per operation, built from
//! the document's own examples, gets an answer the document lists, with a
//! body of the documented shape.

use reqwest::header::{CONNECTION, CONTENT_TYPE, UPGRADE};
use serde_json::Value;

use crate::support::*;

const REGIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../regions");

#[tokio::test]
async fn every_operation_answers_as_its_document_says() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &["--regions", REGIONS, "--region", "dhaka-north"],
    )
    .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut operations = 0;
    for base in [node.url(""), node.admin_url("")] {
        let document: Value = get_json(&http, &format!("{base}/openapi.json")).await;
        assert_eq!(document["openapi"], "3.1.0");
        check_references(&document, &document);
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let answered = send_example(&http, &document, &base, path, method, operation).await;
                check_answer(&document, path, method, operation, answered);
                operations += 1;
            }
        }
    }
    assert_eq!(operations, 8 + 10, "public and admin operations");
    node.stop().await;
}

/// Every `$ref` in `value` names a schema of `document`'s components.
fn check_references(document: &Value, value: &Value) {
    match value {
        Value::Object(fields) => {
            if let Some(Value::String(target)) = fields.get("$ref") {
                let name = target
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("{target}: not a schema reference"));
                assert!(
                    document["components"]["schemas"].get(name).is_some(),
                    "{target} does not resolve"
                );
            }
            fields.values().for_each(|v| check_references(document, v));
        }
        Value::Array(items) => items.iter().for_each(|v| check_references(document, v)),
        _ => {}
    }
}

/// What came back: the status and, for JSON, the body.
struct Answered {
    status: u16,
    json: Option<Value>,
}

/// The operation's request, from the examples of its parameters and of its
/// body's schema. A websocket route is asked to upgrade, as a client does.
async fn send_example(
    http: &reqwest::Client,
    document: &Value,
    base: &str,
    path: &str,
    method: &str,
    operation: &Value,
) -> Answered {
    let mut url = format!("{base}{path}");
    let mut query = Vec::new();
    for parameter in operation["parameters"].as_array().into_iter().flatten() {
        let name = parameter["name"].as_str().unwrap();
        let example = &parameter["example"];
        assert!(
            !example.is_null(),
            "{path}: parameter {name} has no example"
        );
        let text = example
            .as_str()
            .map_or_else(|| example.to_string(), str::to_owned);
        match parameter["in"].as_str().unwrap() {
            "path" => url = url.replace(&format!("{{{name}}}"), &text),
            "query" => query.push((name.to_owned(), text)),
            other => panic!("{path}: parameter in {other}"),
        }
    }
    let mut request = match method {
        "get" => http.get(&url),
        "post" => http.post(&url),
        other => panic!("{path}: method {other}"),
    }
    .query(&query);
    let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
    if !schema.is_null() {
        let example = &resolve(document, schema)["example"];
        assert!(
            !example.is_null(),
            "{method} {path}: its body has no example"
        );
        request = request.json(example);
    }
    if operation["responses"].get("101").is_some() {
        request = request
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    // Only JSON is read: the event stream never ends.
    let json = if is_json {
        Some(response.json().await.unwrap())
    } else {
        None
    };
    Answered { status, json }
}

/// The status is one the operation lists, with a description, and a JSON
/// body has every property its schema requires.
fn check_answer(document: &Value, path: &str, method: &str, operation: &Value, answered: Answered) {
    let responses = operation["responses"].as_object().unwrap();
    for (status, response) in responses {
        assert!(
            response["description"].is_string(),
            "{method} {path} {status}: no description"
        );
    }
    let status = answered.status.to_string();
    let listed = responses
        .get(&status)
        .unwrap_or_else(|| panic!("{method} {path} answered {status}, which it does not list"));
    // The rating example's token is no rider's: a stranger's rating is
    // refused, which is what the example shows. Every other example is
    // taken (a 307 would mean it was posted to the wrong region).
    let refused_by_design = method == "post" && path == "/rating" && status == "403";
    assert!(
        (200..300).contains(&answered.status) || answered.status == 101 || refused_by_design,
        "{method} {path}: its example was refused ({status}: {:?})",
        answered.json
    );
    let Some(body) = answered.json else {
        return;
    };
    let schema = &listed["content"]["application/json"]["schema"];
    assert!(
        !schema.is_null(),
        "{method} {path} {status}: JSON the document does not describe"
    );
    let schema = resolve(document, schema);
    for field in schema["required"].as_array().into_iter().flatten() {
        let field = field.as_str().unwrap();
        assert!(
            body.get(field).is_some(),
            "{method} {path} {status}: no `{field}` in {body}"
        );
    }
}

/// A schema, or the component it refers to.
fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(target) => {
            let name = target.trim_start_matches("#/components/schemas/");
            &document["components"]["schemas"][name]
        }
        None => schema,
    }
}
