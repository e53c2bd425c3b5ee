//! The dashboard page in a real headless browser: Debian's Chromium driven
//! over the W3C WebDriver protocol by Debian's chromedriver (both installed
//! by scripts/setup.sh). The protocol is JSON over HTTP, so the client is a
//! handful of `reqwest` calls rather than another crate.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantasy_messages::testing::{experiment_standing, model_metrics};
use fantasy_messages::{CalibrationBucket, ExperimentStanding};
use serde_json::{Value, json};

use crate::support::{Infra, client, pred, publish, spawn};

/// A chromedriver process and one browser session in it.
struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`
    session: String,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium is started with a pipe to the driver and exits with it.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts chromedriver on a port of its choosing and opens a headless
    /// Chromium session that records the page's console and script errors.
    async fn start() -> Browser {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let chromedriver =
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        assert!(
            std::path::Path::new(&chromium).exists()
                && std::path::Path::new(&chromedriver).exists(),
            "the dashboard test needs Chromium ({chromium}) and chromedriver ({chromedriver}): \
             run `bash scripts/setup.sh`"
        );
        let mut driver = Command::new(&chromedriver)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {chromedriver}: {e}"));
        let stdout = driver.stdout.take().expect("chromedriver's stdout");
        // "ChromeDriver was started successfully on port 37979."
        let port = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            let port = lines.by_ref().find_map(|line| {
                line.split("started successfully on port ")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches('.').trim().parse::<u16>().ok())
            });
            // Keep draining so the driver never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            port
        })
        .await
        .unwrap()
        .expect("chromedriver did not say which port it listens on");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let mut browser = Browser {
            http,
            session: format!("http://127.0.0.1:{port}/session"),
            driver,
        };
        let created = browser.call(reqwest::Method::POST, "", capabilities).await;
        let id = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_owned();
        browser.session = format!("{}/{id}", browser.session);
        browser
    }

    /// One WebDriver command; its `value`, or a panic with the driver's error.
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.session);
        let response = self
            .http
            .request(method, &url)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {url}: {e}"));
        let status = response.status();
        let mut reply: Value = response.json().await.unwrap();
        assert!(status.is_success(), "WebDriver {url}: {status} {reply}");
        reply["value"].take()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// Runs `script` (a function body; `arguments[0]` is `arg`) in the page.
    async fn eval(&self, script: &str, arg: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": [arg]}),
        )
        .await
    }

    /// Polls `script` until it returns something other than null or false.
    async fn wait_for(&self, what: &str, script: &str, arg: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.eval(script, arg).await;
            if !(v.is_null() || v == Value::Bool(false)) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page never showed {what}; errors: {:?}",
                self.script_errors().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Uncaught script errors and `console.error`s the page logged so far.
    async fn script_errors(&self) -> Vec<String> {
        let log = self
            .call(reqwest::Method::POST, "/se/log", json!({"type": "browser"}))
            .await;
        log.as_array()
            .into_iter()
            .flatten()
            // Not `network`: a missing favicon is no script error.
            .filter(|e| e["level"] == "SEVERE" && e["source"] != "network")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Resizes the window (the viewport follows).
    async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            json!({"width": width, "height": height}),
        )
        .await;
    }

    /// A PNG of the viewport.
    async fn screenshot(&self) -> Vec<u8> {
        let png = self
            .call(reqwest::Method::GET, "/screenshot", json!({}))
            .await;
        base64_decode(png.as_str().expect("a base64 screenshot"))
    }

    async fn quit(self) {
        self.call(reqwest::Method::DELETE, "", json!({})).await;
    }
}

/// What the dashboard shows of game `arguments[0]` and the model, once the
/// game's row is there.
const SEEN: &str = r#"
const row = document.querySelector(`tr[data-game="${arguments[0]}"]`);
if (!row) return null;
const text = (id) => document.getElementById(id).textContent;
const cells = [...row.querySelectorAll('td')].map((td) => td.textContent);
return {
  game: cells[0], home: cells[1], away: cells[2], sport: cells[3], prob: cells[4],
  games: text('games'), model: text('model'), metrics_model: text('metrics-model'),
  accuracy: text('accuracy'), brier: text('brier'),
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_prediction_and_model_metrics_published_while_it_is_open() {
    let infra = Infra::new();
    let app = spawn(&infra, &[]).await;
    let browser = Browser::start().await;
    browser.goto(&app.url("/")).await;
    browser
        .wait_for(
            "the live status",
            "return document.getElementById('status').textContent === arguments[0]",
            "live",
        )
        .await;

    // The page subscribed; now the stack publishes.
    let producer = infra.producer();
    let mut p = pred("dash-1", "nba", 0.42);
    p.model_version = "m-7".into();
    publish(&producer, &[p]).await;
    producer.publish(&model_metrics("m-7")).await.unwrap();

    browser
        .wait_for(
            "the model's metrics",
            "return document.getElementById('model').textContent === arguments[0] \
             && document.getElementById('metrics-model').textContent === arguments[0]",
            "m-7",
        )
        .await;
    let seen = browser.wait_for("the game's row", SEEN, "dash-1").await;
    assert_eq!(seen["game"], "dash-1", "{seen}");
    assert_eq!(seen["home"], "BOS");
    assert_eq!(seen["sport"], "nba");
    assert_eq!(seen["prob"], "42.0%");
    assert_eq!(seen["games"], "1");
    assert_eq!(seen["model"], "m-7");
    assert_eq!(seen["metrics_model"], "m-7");
    assert_eq!(seen["accuracy"], "0.650");
    assert_eq!(seen["brier"], "0.220");
    assert_eq!(
        browser.script_errors().await,
        Vec::<String>::new(),
        "script errors on the page"
    );
    browser.quit().await;
    app.stop().await.unwrap();
}

/// Standard base64 (what WebDriver screenshots come in), padding optional.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("{c:?} is not base64"),
        }
    };
    let digits: Vec<u32> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .map(value)
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, d)| acc | d << (18 - 6 * i));
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// An experiment's standing after the trainer's look number `look` (0..8):
/// every 50 outcomes, the challenger's interval narrows around a small gain
/// without deciding yet; the variants' scores settle.
fn standing(look: usize) -> ExperimentStanding {
    let outcomes = 50 * (look as u64 + 1);
    let n = outcomes as f64;
    let round = |x: f64| (x * 1e4).round() / 1e4;
    let (mean, half) = (-0.025, 0.6 / n.sqrt());
    let mut s = experiment_standing(outcomes, round(mean - half), round(mean + half));
    s.evaluated_at = chrono::Utc::now();
    // Scores settle on the last look's, which the test reads back.
    let early = (7 - look.min(7)) as f64 / 7.0;
    let scores = [
        round(0.6214 + early * (0.05 + 0.006 * (look as f64 * 1.7).sin())),
        round(0.6021 + early * (0.06 + 0.008 * (look as f64 * 2.3).cos())),
    ];
    for (v, log_loss) in s.variants.iter_mut().zip(scores) {
        v.log_loss = log_loss;
        v.brier = round(0.215 + (log_loss - 0.61) * 0.45);
        let shares = [0.15, 0.35, 0.3, 0.2];
        let champion = v.variant == "champion";
        v.calibration_error = if champion { 0.03 } else { 0.024 };
        v.calibration = [(0.2, 0.25), (0.4, 0.45), (0.6, 0.65), (0.8, 0.84)]
            .into_iter()
            .zip(shares)
            .map(|((lower, predicted), share)| CalibrationBucket {
                lower,
                upper: lower + 0.2,
                count: (n * share) as u64,
                mean_predicted: predicted,
                observed_rate: if champion {
                    round(predicted + 0.06 * (predicted - 0.5))
                } else {
                    round(predicted + 0.03 * (predicted - 0.5))
                },
            })
            .collect();
    }
    s
}

/// `ExperimentStanding`s share the `metrics` topic with `ModelMetrics`: a
/// WebSocket client of `metrics` gets each as its own frame type, the
/// standing exactly as published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_standing_reaches_metrics_subscribers_as_an_experiment_frame() {
    let infra = Infra::new();
    let app = spawn(&infra, &[]).await;
    let mut c = client(&app).await;
    c.subscribe(&["metrics"]).await;
    let producer = infra.producer();
    let published = experiment_standing(300, -0.03, 0.01);
    producer.publish(&published).await.unwrap();
    producer.publish(&model_metrics("m-9")).await.unwrap();

    let experiment = c.next().await;
    assert_eq!(experiment["type"], "experiment", "{experiment}");
    assert_eq!(experiment["channel"], "metrics");
    // Parsed as the frame was (serde_json may read a float one ulp off).
    let sent: Value =
        serde_json::from_slice(&fantasy_messages::encode(&published).unwrap()).unwrap();
    assert_eq!(experiment["data"], sent);
    let metrics = c.next().await;
    assert_eq!(metrics["type"], "metrics", "{metrics}");
    assert_eq!(metrics["data"]["model_version"], "m-9");
    // A later subscriber gets both from the channel's history, in order.
    let mut later = client(&app).await;
    later.subscribe(&["metrics"]).await;
    assert_eq!(later.next().await["type"], "experiment");
    assert_eq!(later.next().await["type"], "metrics");
    app.stop().await.unwrap();
}

/// What the experiment view shows, once it shows `arguments[0]` outcomes.
const EXPERIMENT: &str = r#"
const section = document.getElementById('experiment');
if (section.hidden || section.offsetParent === null) return null;
const text = (id) => document.getElementById(id).textContent;
if (text('experiment-outcomes') !== arguments[0]) return null;
const points = (p) => (p.getAttribute('d').match(/[ML]/g) || []).length;
const all = (selector) => [...document.querySelectorAll(selector)];
return {
  id: text('experiment-id'), mode: text('experiment-mode'), status: text('experiment-status'),
  stage: text('experiment-stage'), decision: text('experiment-last-decision'),
  rows: all('#experiment-variants tr').map((tr) => ({
    variant: tr.dataset.variant,
    cells: [...tr.querySelectorAll('td')].map((td) => td.textContent),
  })),
  loss: all('#experiment-loss path.series').map((p) => ({
    variant: p.dataset.variant, kind: p.classList.contains('brier') ? 'brier' : 'log_loss', points: points(p),
  })),
  bands: all('#experiment-boundary path.band').map(points),
  bounds: all('#experiment-boundary path.series').length,
  zero: all('#experiment-boundary line.zero').length,
  boundary_text: all('#experiment-boundary text').map((t) => t.textContent),
  comparisons: all('#experiment-comparisons li').map((li) => li.textContent),
  reliability: all('svg.reliability').map((svg) => ({
    variant: svg.dataset.variant, dots: svg.querySelectorAll('circle').length,
    diagonal: svg.querySelectorAll('line.diagonal').length,
  })),
  games: text('games'), metrics_model: text('metrics-model'),
};
"#;

/// The experiment view, from standings the trainer published before the
/// page (and the fanout) started: the fanout's metrics reader starts from
/// the last 20 per partition, the page gets them from the channel's
/// history. The view's screenshot in docs/ is this test's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_running_experiment() {
    const LOOKS: usize = 8;
    let infra = Infra::new();
    let producer = infra.producer();
    for look in 0..LOOKS {
        producer.publish(&standing(look)).await.unwrap();
    }
    producer
        .publish(&model_metrics("v-champion"))
        .await
        .unwrap();
    let app = spawn(&infra, &[]).await;
    let browser = Browser::start().await;
    browser.resize(1280, 1000).await;
    browser.goto(&app.url("/")).await;
    browser
        .wait_for(
            "the live status",
            "return document.getElementById('status').textContent === arguments[0]",
            "live",
        )
        .await;
    // Some games, for the rest of the page (and the screenshot).
    let games: Vec<_> = [
        ("nba-2026-0457", "nba", 0.63, "v-champion"),
        ("nba-2026-0458", "nba", 0.41, "v-champion"),
        ("nfl-2026-0112", "nfl", 0.57, "v-challenger"),
        ("nba-2026-0459", "nba", 0.72, "v-champion"),
        ("mlb-2026-1301", "mlb", 0.48, "v-champion"),
    ]
    .into_iter()
    .map(|(id, sport, prob, version)| {
        let mut p = pred(id, sport, prob);
        p.model_version = version.into();
        p
    })
    .collect();
    publish(&producer, &games).await;

    let last = standing(LOOKS - 1);
    let seen = browser
        .wait_for("the experiment", EXPERIMENT, &last.outcomes.to_string())
        .await;
    assert_eq!(seen["id"], "#7", "{seen}");
    assert_eq!(seen["mode"], "canary");
    assert_eq!(seen["status"], "running");
    assert_eq!(seen["stage"], "1");
    assert_eq!(
        seen["decision"],
        last.last_decision.as_deref().unwrap(),
        "{seen}"
    );
    let rows: Vec<(String, Vec<String>)> = seen["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let cells = r["cells"].as_array().unwrap();
            let cells = cells.iter().map(|c| c.as_str().unwrap().to_owned());
            (r["variant"].as_str().unwrap().to_owned(), cells.collect())
        })
        .collect();
    let row = |cells: [&str; 8]| cells.map(str::to_owned).to_vec();
    assert_eq!(
        rows,
        [
            (
                "champion".to_owned(),
                row([
                    "champion",
                    "v-champion",
                    "champion",
                    "95.0%",
                    "400",
                    "0.220",
                    "0.621",
                    "0.030"
                ])
            ),
            (
                "challenger".to_owned(),
                row([
                    "challenger",
                    "v-challenger",
                    "challenger",
                    "5.0%",
                    "400",
                    "0.211",
                    "0.602",
                    "0.024"
                ])
            ),
        ],
        "{seen}"
    );
    // A line per variant and score, through every look.
    let loss = seen["loss"].as_array().unwrap();
    assert_eq!(loss.len(), 4, "{seen}");
    for variant in ["champion", "challenger"] {
        for kind in ["log_loss", "brier"] {
            assert!(
                loss.iter()
                    .any(|l| l["variant"] == variant && l["kind"] == kind && l["points"] == LOOKS),
                "no {kind} line of {variant} through {LOOKS} looks: {seen}"
            );
        }
    }
    // The challenger's interval: a band through every look, its bounds,
    // the zero line and which side is which.
    assert_eq!(seen["bands"], json!([2 * LOOKS]), "{seen}");
    assert!(seen["bounds"].as_u64().unwrap() >= 2, "{seen}");
    assert_eq!(seen["zero"], 1, "{seen}");
    let labels = seen["boundary_text"].to_string();
    assert!(
        labels.contains("better ↓") && labels.contains("worse ↑"),
        "{labels}"
    );
    let comparison = seen["comparisons"][0].as_str().unwrap();
    assert!(
        comparison.contains("challenger") && comparison.contains("undecided"),
        "{comparison}"
    );
    // A reliability diagram per variant, a dot per calibration bucket.
    assert_eq!(
        seen["reliability"],
        json!([
            {"variant": "champion", "dots": 4, "diagonal": 1},
            {"variant": "challenger", "dots": 4, "diagonal": 1},
        ]),
        "{seen}"
    );
    // The rest of the page still works beside it.
    browser
        .wait_for(
            "the games",
            "return document.getElementById('games').textContent === arguments[0]",
            &games.len().to_string(),
        )
        .await;
    let seen = browser.eval(EXPERIMENT, "400").await;
    assert_eq!(seen["metrics_model"], "v-champion", "{seen}");
    assert_eq!(
        browser.script_errors().await,
        Vec::<String>::new(),
        "script errors on the page"
    );

    // The whole page, once the rows' highlight has faded.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let height = browser
        .eval(
            "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight \
             + Number(arguments[0])",
            "8",
        )
        .await;
    let height = u32::try_from(height.as_u64().unwrap()).unwrap().min(4000);
    browser.resize(1280, height).await;
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // Always under target/; into docs/ (the docs' image) when asked, so a
    // test run does not leave the checkout modified.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shots = root.join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    std::fs::write(shots.join("dashboard-experiment.png"), &png).unwrap();
    if std::env::var_os("FANTASY_UPDATE_SCREENSHOTS").is_some() {
        std::fs::write(root.join("docs/dashboard-experiment.png"), &png).unwrap();
    }
    browser.quit().await;
    app.stop().await.unwrap();
}
