//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans reach that endpoint over
//! OTLP/HTTP: a receiver on a local port gets them.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use fantasy_telemetry::TelemetryConfig;

/// Accepts OTLP/HTTP posts; sends each one's request line, content type and
/// body to `tx`.
fn receiver() -> (String, mpsc::Receiver<(String, String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let (mut length, mut kind) = (0usize, String::new());
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                let (name, value) = header.split_once(':').unwrap_or((header, ""));
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "content-type" => kind = value.trim().to_owned(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            let _ = tx.send((line.trim_end().to_owned(), kind, body));
        }
    });
    (format!("http://{addr}"), rx)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn spans_reach_the_otlp_endpoint_with_the_service_name() {
    let (endpoint, posts) = receiver();
    let mut cfg = TelemetryConfig::new("otlp-test-service");
    cfg.otlp_endpoint = Some(endpoint);
    cfg.log_filter = "info".to_owned();
    let guard = fantasy_telemetry::init(&cfg).unwrap();
    tracing::info_span!("otlp.test_span").in_scope(|| tracing::info!("inside the span"));
    // Dropping the guard flushes what is batched.
    drop(guard);

    let (line, kind, body) = posts.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(line.starts_with("POST /v1/traces "), "{line}");
    assert_eq!(kind, "application/x-protobuf");
    assert!(
        contains(&body, b"otlp.test_span"),
        "the span's name is in the export"
    );
    assert!(contains(&body, b"otlp-test-service"), "so is the service's");
}
