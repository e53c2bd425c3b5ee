//! The fanout binary: configuration from the environment, then
//! [`fanout::run`] until SIGTERM or Ctrl-C.

fn main() -> std::process::ExitCode {
    fantasy_http::service_main("fanout", fanout::run)
}
