//! The published API contract, fuzzed for real: schemathesis (PyPI, in
//! `.tools/schemathesis`, installed by scripts/setup.sh) reads each
//! service's `/openapi.json` and calls every operation with generated valid
//! and invalid requests, against the whole stack running with
//! authentication on and a model served. Every check is on: no 5xx, no
//! answer the document does not declare (status, body, content type), no
//! invalid request accepted, no valid one refused, no route served without
//! its token. Bounded in examples and time; `SCHEMATHESIS_SEED` replays a
//! run (the default seed is fixed so that CI is reproducible), and
//! `SCHEMATHESIS_EXAMPLES` widens it.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const SECRET: &str = "contract-test-secret-0123456789abcdef";

fn schemathesis() -> PathBuf {
    let dir = std::env::var_os("FANTASY_SCHEMATHESIS_PATH").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/schemathesis"),
        PathBuf::from,
    );
    assert!(
        dir.join("bin/st").is_file(),
        "schemathesis is not in {} (scripts/setup.sh installs it)",
        dir.display()
    );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_keeps_its_published_contract_under_schemathesis() {
    let st = schemathesis();
    let mut stack = common::Stack::start(
        2,
        &[
            ("AUTH_REQUIRED", "true"),
            ("JWT_SECRET", SECRET),
            (
                "COLLECTOR_SOURCES",
                "sim:nba?seed=11&teams=10&games=40&history=30&minutes=2",
            ),
            ("TRAIN_MIN_GAMES", "120"),
        ],
    )
    .await;
    let e = stack.up(Duration::from_secs(120)).await;
    let admin = common::token(SECRET, true, 3600, None);
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261202".into());
    let examples = std::env::var("SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "25".into());
    let st_dir = st.clone();
    let run = move |service: &'static str, addr: std::net::SocketAddr| {
        let st = st_dir.clone();
        let (seed, examples, admin) = (seed.clone(), examples.clone(), admin.clone());
        tokio::task::spawn_blocking(move || {
            let out = Command::new(st.join("bin/st"))
                .env("PYTHONPATH", &st)
                .env("NO_COLOR", "1")
                .args(["run", &format!("http://{addr}/openapi.json")])
                .args(["--checks", "all", "--workers", "1", "--max-time", "60"])
                .args(["--seed", &seed, "--max-examples", &examples])
                .args(["--request-timeout", "10", "--generation-deterministic"])
                .args(["-H", &format!("Authorization: Bearer {admin}")])
                .output()
                .unwrap();
            (service, out)
        })
    };
    // The three at once: each is bounded by --max-time.
    let runs = [
        run("predictor", e.predictor),
        run("trainer", e.trainer),
        run("collector", e.collector),
    ];
    let mut failures = Vec::new();
    for handle in runs {
        let (service, out) = handle.await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !text.contains("Tested:") {
            failures.push(format!(
                "schemathesis on the {service} ({}):\n{text}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    stack.assert_running().await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    stack.stop(Duration::from_secs(60)).await;
}
