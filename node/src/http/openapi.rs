//! The API as OpenAPI 3.1 documents, made from the handlers' own
//! annotations and the JSON types of `ride_types::api`.
//!
//! The routers are built from the same `routes!` lists as the documents
//! (utoipa-axum), so a route cannot exist without its description, nor a
//! description without its route. The public listener serves its document
//! at `/openapi.json`, the admin listener its own; `docs/openapi.json` is a
//! copy of the public one that a test keeps equal to what the node serves.
//!
//! Answers that come from the layers every route passes, not from a
//! handler (rate limit, body extraction, the region check and admission of
//! intake), are added to each operation here, in one place, as the layers
//! themselves are.

use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::Modify;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response as Answer, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Content, Header, OpenApi, Ref, RefOr};

use ride_types::api::{ClientMessage, ErrorCode, ServerMessage};

/// The public API (`--listen`).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Ride-sharing node: public API",
        description = "Riders and drivers post requests to the region that serves their \
            position; the node answers 202 once the request is journaled, matches riders \
            with the nearest driver, and pushes each match on the `/communication` \
            websocket. Every 4xx and 5xx has the body `{\"error\": {\"code\", \
            \"message\"}}`; an unknown route is 404 `not_found`, a known route with \
            another method 405 `method_not_allowed`.",
        license(name = "MIT OR Apache-2.0")
    ),
    tags(
        (name = "requests", description = "Ride requests and their matches"),
        (name = "ratings", description = "Ratings of drivers by their riders"),
        (name = "regions", description = "The regions and which one serves a position"),
        (name = "operations", description = "Health"),
    ),
    components(schemas(ErrorCode, ClientMessage, ServerMessage))
)]
pub(super) struct PublicApi;

/// The operator API (`--admin-listen`): never on the public listener.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Ride-sharing node: operator API",
        description = "The live map, the node's state, metrics and recent matches. \
            Served on the admin listener only, which should not be reachable from \
            the internet.",
        license(name = "MIT OR Apache-2.0")
    ),
    tags(
        (name = "dashboard", description = "The live map"),
        (name = "operations", description = "State, metrics and matches"),
        (name = "regions", description = "The regions, for the map"),
    )
)]
pub(super) struct AdminApi;

/// `document` with each operation given the answers of the layers it
/// passes. Applied once the routes are merged in: a derive's modifiers run
/// before, on a document without paths.
pub(super) fn with_layer_answers(mut document: OpenApi) -> OpenApi {
    LayerAnswers.modify(&mut document);
    document
}

/// The handler of `/openapi.json`: `document`, serialized once.
pub(super) fn serve(document: OpenApi) -> impl Fn() -> std::future::Ready<Response> + Clone {
    let body = Bytes::from(document.to_pretty_json().unwrap_or_default());
    move || {
        std::future::ready(
            ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response(),
        )
    }
}

/// Adds to each public operation the answers of the layers it passes.
struct LayerAnswers;

impl Modify for LayerAnswers {
    fn modify(&self, openapi: &mut OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for (method, operation) in operations(item) {
                let answers = &mut operation.responses.responses;
                let mut add = |status: &str, response: Answer| {
                    answers.entry(status.into()).or_insert(RefOr::T(response));
                };
                add(
                    "429",
                    retry_later("`rate_limited`: past the per-client rate limit"),
                );
                add(
                    "500",
                    error("`internal`: the node failed; it has logged why"),
                );
                if operation.request_body.is_some() {
                    add(
                        "400",
                        error(
                            "`malformed_json`: the body is not JSON; `unreadable_body`: it could not be read",
                        ),
                    );
                    add("413", error("`payload_too_large`: the body is over 64 KiB"));
                    add(
                        "415",
                        error("`unsupported_media_type`: not `application/json`"),
                    );
                    add(
                        "422",
                        error(
                            "`invalid_body`: a field missing, unknown or of the wrong type; \
                             `invalid_field`: a value out of range",
                        ),
                    );
                }
                let intake = method == "post"
                    && operation
                        .tags
                        .as_ref()
                        .is_some_and(|t| t.iter().any(|t| t == "requests"));
                if intake {
                    add("307", redirect());
                    add(
                        "503",
                        retry_later(
                            "`overloaded`: the node is at capacity; `storage_unavailable`: \
                             the request could not be made durable; `region_unavailable`: \
                             the region that serves the position cannot be reached",
                        ),
                    );
                }
            }
        }
    }
}

/// The operations of a path, by method (the API uses only these two).
fn operations(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [("get", &mut item.get), ("post", &mut item.post)]
        .into_iter()
        .filter_map(|(method, operation)| operation.as_mut().map(|o| (method, o)))
}

fn error(description: &str) -> Answer {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .build()
}

/// An error answer with `Retry-After`.
fn retry_later(description: &str) -> Answer {
    let seconds = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1));
    let mut response = error(description);
    response.headers.insert(
        "Retry-After".into(),
        header(seconds, "Seconds to wait before trying again"),
    );
    response
}

/// `307`: the region that serves the position is elsewhere.
fn redirect() -> Answer {
    let text = || ObjectBuilder::new().schema_type(Type::String);
    let mut response =
        error("`wrong_region`: another region serves this position; the request goes there");
    response.headers.insert(
        "Location".into(),
        header(text(), "The same route on the serving region's HTTP API"),
    );
    response.headers.insert(
        "fly-replay".into(),
        header(text(), "On Fly.io, the proxy replays the request there"),
    );
    response
}

fn header(schema: ObjectBuilder, description: &str) -> RefOr<Header> {
    RefOr::T(
        Header::builder()
            .schema(Some(schema))
            .description(Some(description))
            .build(),
    )
}

#[cfg(test)]
mod tests;
