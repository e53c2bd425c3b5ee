//! The predictor binary: configuration from the environment, then
//! [`predictor::run`] until SIGTERM or Ctrl-C.

fn main() -> std::process::ExitCode {
    fantasy_http::service_main("predictor", predictor::run)
}
