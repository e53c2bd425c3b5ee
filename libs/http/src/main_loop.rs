//! The `main` of every service binary.

use std::future::Future;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

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

/// Implements [`ServiceConfig`] for a service's `Config` with the usual
/// shape: `Config::from_env`, `Config::log`, and `telemetry` and `http`
/// fields.
#[macro_export]
macro_rules! service_config {
    ($config:ty) => {
        impl $crate::ServiceConfig for $config {
            fn from_env(
                env: &$crate::__private::Env,
            ) -> ::std::result::Result<Self, $crate::__private::ConfigError> {
                <$config>::from_env(env)
            }
            fn telemetry(&self) -> &$crate::__private::TelemetryConfig {
                &self.telemetry
            }
            fn http_addr(&self) -> ::std::net::SocketAddr {
                self.http.addr
            }
            fn log(&self) {
                <$config>::log(self)
            }
        }
    };
}

/// Asks `GET /health` of the service at `addr` (an unspecified address
/// means this host) over plain HTTP/1.0, without a runtime: what a
/// container's `HEALTHCHECK` runs. `Ok` on a 200.
pub fn probe_health(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let target = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let mut stream = std::net::TcpStream::connect_timeout(&target, timeout)
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(|e| format!("writing to {target}: {e}"))?;
    let mut head = [0u8; 64];
    let n = stream
        .read(&mut head)
        .map_err(|e| format!("reading from {target}: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        Err(format!(
            "{target}/health answered {:?}",
            line.lines().next().unwrap_or("")
        ))
    }
}

/// Reads the configuration (exit 2 with every bad variable named), starts
/// telemetry and the runtime, binds `HTTP_ADDR`, and runs `run` until
/// SIGTERM or Ctrl-C (exit 0) or until it fails (exit 1, cause logged).
///
/// `<binary> healthcheck` instead asks the running service's `/health` on
/// `HTTP_ADDR` and exits 0 or 1: a container health check with no curl in
/// the image.
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
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return match probe_health(cfg.http_addr(), Duration::from_secs(3)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{name}: unhealthy: {e}");
                ExitCode::FAILURE
            }
        };
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A one-shot server answering `reply` to the first request.
    fn answer(reply: &'static str) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            let _ = s.write_all(reply.as_bytes());
        });
        addr
    }

    #[test]
    fn healthy_only_on_a_200() {
        let t = Duration::from_secs(2);
        assert!(probe_health(answer("HTTP/1.1 200 OK\r\n\r\nok"), t).is_ok());
        let err = probe_health(answer("HTTP/1.1 503 Service Unavailable\r\n\r\n"), t).unwrap_err();
        assert!(err.contains("503"), "{err}");
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(
            probe_health(closed, t)
                .unwrap_err()
                .contains("cannot connect")
        );
    }

    #[test]
    fn an_unspecified_address_means_this_host() {
        let addr = answer("HTTP/1.0 200 OK\r\n\r\n");
        let any = SocketAddr::from(([0, 0, 0, 0], addr.port()));
        assert!(probe_health(any, Duration::from_secs(2)).is_ok());
    }
}
