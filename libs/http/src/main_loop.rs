//! The `main` of every service binary.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use fantasy_config::{ConfigError, Env};
use fantasy_telemetry::TelemetryConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What a service's configuration offers its `main`.
pub trait ServiceConfig: Sized {
    /// Reads the process environment (with the binary's defaults).
    fn from_env(env: &Env) -> Result<Self, ConfigError>;
    fn telemetry(&self) -> &TelemetryConfig;
    fn http_addr(&self) -> std::net::SocketAddr;
    /// Logs the effective configuration, secrets redacted.
    fn log(&self);
}

/// Reads the configuration (exit 2 with every bad variable named), starts
/// telemetry and the runtime, binds `HTTP_ADDR`, and runs `run` until
/// SIGTERM or Ctrl-C (exit 0) or until it fails (exit 1, cause logged).
pub fn service_main<C, F, Fut>(name: &str, run: F) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let cfg = match C::from_env(&Env::from_process()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = match fantasy_telemetry::init(cfg.telemetry()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    cfg.log();
    let addr: SocketAddr = cfg.http_addr();
    let result = runtime.block_on(async move {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on HTTP_ADDR {addr}: {e}"))?;
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            crate::shutdown_signal().await;
            tracing::info!("shutdown requested");
            trigger.cancel();
        });
        run(cfg, listener, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
