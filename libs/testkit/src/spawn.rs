//! A service on a random port.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::eventually;

/// How long a service gets to stop once asked.
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// A service started by [`spawn`]. Dropping it asks the service to stop;
/// [`Spawned::stop`] also waits for it and returns what `run` returned.
#[derive(Debug)]
pub struct Spawned {
    /// Where it listens (127.0.0.1, a port of its own).
    pub addr: SocketAddr,
    /// A client for the tests' requests.
    pub http: reqwest::Client,
    /// The `run` function, for messages.
    name: &'static str,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Binds 127.0.0.1:0 and runs `run(cfg, listener, shutdown)` on a task of
/// its own: every service's `run` has that shape. It is not ready yet: see
/// [`Spawned::wait_ready`].
pub async fn spawn<C, F, Fut>(run: F, cfg: C) -> Spawned
where
    F: FnOnce(C, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    // The one TLS stack of the workspace, for the service and `http`.
    fantasy_telemetry::install_crypto_provider();
    let name = std::any::type_name::<F>();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding 127.0.0.1:0");
    let addr = listener.local_addr().expect("the listener's address");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(cfg, listener, shutdown.clone()));
    Spawned {
        addr,
        http: reqwest::Client::new(),
        name,
        shutdown,
        task: Some(task),
    }
}

impl Spawned {
    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path`: the body as JSON (`Null` when it is not JSON).
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path)
            .await
            .json()
            .await
            .unwrap_or(serde_json::Value::Null)
    }

    /// `GET path`: the body as text.
    pub async fn get_text(&self, path: &str) -> String {
        let url = self.url(path);
        self.get(path)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("reading the answer to GET {url}: {e}"))
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        let url = self.url(path);
        self.http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// Waits until `GET /ready` answers 200.
    pub async fn wait_ready(&mut self, within: Duration) {
        self.wait_ok("/ready", within).await;
    }

    /// Waits until `GET path` answers 200; panics with the service's error
    /// if it exits meanwhile, or with the last answer after `within`.
    pub async fn wait_ok(&mut self, path: &str, within: Duration) {
        let url = self.url(path);
        let what = format!("{} to answer 200 on {path}", self.name);
        let exited = eventually(&what, within, || async {
            if self.task.as_ref().is_none_or(JoinHandle::is_finished) {
                return Ok(true);
            }
            match self.http.get(&url).send().await {
                Ok(r) if r.status() == 200 => Ok(false),
                Ok(r) => Err(format!("{}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        if exited {
            let outcome = match self.task.take() {
                Some(task) => task.await,
                None => panic!("{} was stopped already", self.name),
            };
            panic!("{} exited during start-up: {outcome:?}", self.name);
        }
    }

    /// Asks the service to stop and waits for it (30 s at most); returns
    /// what `run` returned. A panic in the service goes on here.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let task = self.task.take().expect("a service is stopped once");
        match tokio::time::timeout(STOP_WITHIN, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(e)) => panic!("{}: {e}", self.name),
            Err(_) => panic!("{} did not stop within {STOP_WITHIN:?}", self.name),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
