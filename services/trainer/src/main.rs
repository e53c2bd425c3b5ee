//! The trainer binary: configuration from the environment, then
//! [`trainer::run`] until SIGTERM or Ctrl-C.

fn main() -> std::process::ExitCode {
    fantasy_http::service_main("trainer", trainer::run)
}
