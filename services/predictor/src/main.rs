//! The predictor binary: configuration from the environment, then
//! [`predictor::run`] until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use fantasy_config::Env;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cfg = match predictor::Config::from_env(&Env::from_process(), true) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("predictor: {e}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = match fantasy_telemetry::init(&cfg.telemetry) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("predictor: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("predictor: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    cfg.log();
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(cfg.http.addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on HTTP_ADDR {}: {e}", cfg.http.addr))?;
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            fantasy_http::shutdown_signal().await;
            tracing::info!("shutdown requested");
            trigger.cancel();
        });
        predictor::run(cfg, listener, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("predictor: {e:#}");
            ExitCode::FAILURE
        }
    }
}
