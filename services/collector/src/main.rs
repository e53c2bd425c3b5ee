//! The collector binary: configuration from the environment, then
//! [`collector::run`] until SIGTERM or Ctrl-C.

fn main() -> std::process::ExitCode {
    fantasy_http::service_main("collector", collector::run)
}
