//! The dashboard in a real browser: headless Chromium (Debian's `chromium`)
//! driven by `node/tests/dashboard/check.mjs` (Playwright), against a real
//! node. Needs `npm ci` in `node/tests/dashboard` and Chromium; without
//! them the test returns at once, except under CI, where they are required.
//! The screenshot is kept as `target/dashboard.png`.

use std::path::Path;
use std::process::Command;

use crate::support::*;

const REGIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../regions");
const CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard/check.mjs");
const MODULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard/node_modules");
const SCREENSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/dashboard.png");

fn browser_ready() -> bool {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ready = Path::new(MODULES).exists() && Path::new(&chromium).exists();
    assert!(
        ready || std::env::var_os("CI").is_none(),
        "the dashboard test needs chromium and `npm ci` in node/tests/dashboard under CI"
    );
    ready
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_draws_pending_requests_and_a_match_and_names_the_region() {
    if !browser_ready() {
        eprintln!("no chromium or playwright: skipping the dashboard test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &[
            "--regions",
            REGIONS,
            "--region",
            "dhaka-north",
            "--max-pickup-km",
            "0.5",
            "--request-ttl",
            "5m",
        ],
    )
    .await;
    let http = reqwest::Client::new();
    // A pair 100 m apart is matched; a rider and a driver 8 km apart, and
    // farther than the pickup limit from anyone, stay pending.
    let (uttara, gulshan) = (at(23.87, 90.40), at(23.80, 90.42));
    post_rider(&http, &node, "Matched", uttara, gulshan).await;
    post_driver(&http, &node, "Near", "DASH-1", at(23.8709, 90.40)).await;
    post_rider(&http, &node, "Waiting", gulshan, uttara).await;
    post_driver(&http, &node, "Idle", "DASH-2", at(23.93, 90.50)).await;

    let url = node.admin_url("");
    let checked = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args([CHECK, &url, SCREENSHOT, "dhaka-north"])
            .output()
            .expect("run node (Node.js)")
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success(),
        "the browser check failed:\n{said}\n{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(said.lines().last().unwrap()).unwrap();
    assert_eq!(summary["riders"], 1, "{summary}");
    assert_eq!(summary["drivers"], 1, "{summary}");
    assert_eq!(summary["matches"], 1, "{summary}");
    assert!(Path::new(SCREENSHOT).exists());
}
