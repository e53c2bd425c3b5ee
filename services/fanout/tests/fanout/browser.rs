//! The dashboard page in a real headless browser: Debian's Chromium driven
//! over the W3C WebDriver protocol by Debian's chromedriver (both installed
//! by scripts/setup.sh). The protocol is JSON over HTTP, so the client is a
//! handful of `reqwest` calls rather than another crate.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantasy_messages::testing::model_metrics;
use serde_json::{Value, json};

use crate::support::{Infra, pred, publish, spawn};

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
