//! An S3-compatible server for tests (feature `testing`): moto's S3 server
//! (PyPI's `moto[server]`, which scripts/setup.sh installs in
//! `.tools/moto`; `FANTASY_MOTO_PATH` points elsewhere), started on a free
//! loopback port and stopped on drop.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, bail};

use crate::StoreSettings;

/// A running moto S3 server, with a pair of keys in files (the `_FILE`
/// forms Docker secrets use).
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    endpoint: String,
    keys: PathBuf,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.keys);
    }
}

impl S3Server {
    /// Starts the server and waits until it listens.
    pub fn start() -> anyhow::Result<Self> {
        let moto = std::env::var_os("FANTASY_MOTO_PATH").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/moto"),
            PathBuf::from,
        );
        if !moto.join("moto").is_dir() {
            bail!(
                "moto's S3 server is not installed at {}: run `bash scripts/setup.sh`",
                moto.display()
            );
        }
        let mut child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"])
            .env("PYTHONPATH", &moto)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting moto's S3 server (python3 -m moto.server)")?;
        let stderr = child.stderr.take().context("moto's stderr")?;
        // " * Running on http://127.0.0.1:45537"; it logs every request on
        // stderr afterwards, so a thread keeps draining it.
        let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
        let endpoint = lines.by_ref().find_map(|line| {
            line.split("Running on ")
                .nth(1)
                .map(|url| url.trim().to_owned())
        });
        std::thread::spawn(move || lines.for_each(drop));
        let Some(endpoint) = endpoint else {
            let _ = child.kill();
            bail!("moto's S3 server exited before it listened");
        };
        let keys =
            std::env::temp_dir().join(format!("fantasy-s3-{}-{}", std::process::id(), child.id()));
        std::fs::create_dir_all(&keys)?;
        std::fs::write(keys.join("access_key_id"), "fantasy-test\n")?;
        std::fs::write(keys.join("secret_access_key"), "fantasy-test-secret\n")?;
        Ok(Self {
            child,
            endpoint,
            keys,
        })
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Creates a bucket.
    pub async fn create_bucket(&self, name: &str) -> anyhow::Result<()> {
        let url = format!("{}/{name}", self.endpoint);
        fantasy_telemetry::install_crypto_provider();
        let response = reqwest::Client::new()
            .put(&url)
            .send()
            .await
            .with_context(|| format!("PUT {url}"))?;
        if !response.status().is_success() {
            bail!("PUT {url}: {}", response.status());
        }
        Ok(())
    }

    /// The variables a service needs to reach this server, the keys as
    /// files (`AWS_ACCESS_KEY_ID_FILE`, `AWS_SECRET_ACCESS_KEY_FILE`).
    pub fn env(&self) -> Vec<(String, String)> {
        let file = |name: &str| self.keys.join(name).to_string_lossy().into_owned();
        vec![
            ("AWS_ENDPOINT".into(), self.endpoint.clone()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID_FILE".into(), file("access_key_id")),
            (
                "AWS_SECRET_ACCESS_KEY_FILE".into(),
                file("secret_access_key"),
            ),
        ]
    }

    /// [`S3Server::env`] as store settings.
    pub fn settings(&self) -> StoreSettings {
        StoreSettings::from_pairs(self.env())
    }
}
