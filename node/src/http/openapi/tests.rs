use std::path::PathBuf;

use ride_types::api::ErrorCode;

use crate::http::public_document;

fn committed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
}

/// `docs/openapi.json` is what a client developer generates a client from:
/// it must be the document the node serves. `UPDATE_OPENAPI=1` rewrites it.
#[test]
fn the_committed_document_is_the_one_the_node_serves() {
    let served = crate::server::openapi_json().unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(committed(), &served).unwrap();
    }
    let on_disk = std::fs::read_to_string(committed()).unwrap_or_default();
    assert!(
        on_disk == served,
        "docs/openapi.json differs from the routes' document: run \
         `UPDATE_OPENAPI=1 cargo test -p node --lib openapi` and commit it"
    );
}

#[test]
fn every_error_code_is_named_where_it_can_be_answered() {
    let document = public_document().to_json().unwrap();
    for code in ErrorCode::ALL {
        assert!(
            document.contains(&format!("`{}`", code.as_str())),
            "{code} is in no answer of the public document"
        );
    }
}

/// The statuses an operation of the public document lists, in order.
fn statuses(path: &str, method: &str) -> Vec<String> {
    let document = public_document();
    let item = &document.paths.paths[path];
    let operation = if method == "post" {
        &item.post
    } else {
        &item.get
    };
    let operation = operation.as_ref().unwrap();
    operation.responses.responses.keys().cloned().collect()
}

#[test]
fn intake_is_described_with_the_answers_of_every_layer_it_passes() {
    assert_eq!(
        statuses("/rider", "post"),
        [
            "202", "307", "400", "413", "415", "422", "429", "500", "503"
        ]
    );
    assert_eq!(
        statuses("/healthz", "get"),
        ["200", "429", "500"],
        "no body, no region check"
    );
}

/// Every (status, code) row of the errors table in `docs/api.md` is in the
/// document: a response of that status that names the code, or for the
/// route-level answers (unknown route, wrong method) the document's
/// description.
#[test]
fn every_error_of_the_api_docs_is_in_the_document() {
    let api = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md");
    let api = std::fs::read_to_string(api).unwrap();
    let table = api
        .split("## Errors")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let document = public_document();
    let description = document.info.description.clone().unwrap_or_default();
    let mut rows = 0;
    for line in table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| status"))
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let status = cells[1];
        if status.starts_with('-') {
            continue;
        }
        for code in cells[2].split('`').skip(1).step_by(2) {
            let answered = document.paths.paths.values().any(|item| {
                [&item.get, &item.post].into_iter().flatten().any(|op| {
                    op.responses.responses.get(status).is_some_and(|r| {
                        serde_json::to_string(r)
                            .unwrap()
                            .contains(&format!("`{code}`"))
                    })
                })
            });
            assert!(
                answered || description.contains(&format!("{status} `{code}`")),
                "docs/api.md lists {status} {code}; the OpenAPI document does not"
            );
            rows += 1;
        }
    }
    assert!(
        rows >= ErrorCode::ALL.len(),
        "read {rows} codes from docs/api.md"
    );
}
