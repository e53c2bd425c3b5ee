//! HTTP pieces every service shares, so that every API behaves alike:
//!
//! - [`ApiError`]: one error type mapping each kind to a status, a JSON body
//!   `{"error": {"code", "message"}}` and a log level; a 500 says nothing of
//!   its cause to the client (the cause is logged).
//! - [`ApiJson`]: the JSON extractor with our errors (415 without a JSON
//!   content type, 400 malformed or mistyped, 413 too large).
//! - [`auth`]: JWT (HS256) from the `Authorization` header or a `token`
//!   query parameter, with optional admin and channel claims.
//! - [`layers`]: timeouts, concurrency limits with load shedding, body
//!   limits, per-client rate limits, request metrics and request ids.
//! - [`metrics`]: the metrics the layers record, for a service's catalogue.
//! - [`serve`]: the server loop with graceful shutdown, and
//!   [`shutdown_signal`] for Ctrl-C and SIGTERM.
//! - [`service_main`]: the whole `main` of a service binary, and
//!   [`Supervisor`]: the tasks a service runs, what stops it, and the order
//!   of its shutdown.

pub mod auth;
mod error;
mod json;
pub mod layers;
mod main_loop;
pub mod metrics;
pub mod openapi;
mod server;
mod supervisor;

pub use auth::{AuthConfig, Claims, Client};
pub use error::ApiError;
pub use json::ApiJson;
pub use layers::{HttpConfig, RateLimiter};
pub use main_loop::{ServiceConfig, service_main};
pub use server::{serve, shutdown_signal};
pub use supervisor::{Stage, Supervisor, TaskHealth, panic_message};

/// What [`service_config!`] names, from the calling crate.
#[doc(hidden)]
pub mod __private {
    pub use fantasy_config::{ConfigError, Env};
    pub use fantasy_telemetry::TelemetryConfig;
}
