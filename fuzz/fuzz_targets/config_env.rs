//! `fantasy_config`: the typed readers of a `Parser` and `parse_duration` on
//! arbitrary values. Each line of the input is the value of one variable (by
//! position), so the fuzzer controls the values directly. A bad value is a
//! problem reported by name, never a panic.
#![no_main]

use std::time::Duration;

use fantasy_config::{Env, Parser, parse_duration, redact_url};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 10] = [
    "U32",
    "F64",
    "RANGED",
    "FLAG",
    "DURATION",
    "URL",
    "STRING",
    "DATABASE_URL",
    "DATABASE_PASSWORD",
    "I64",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for value in text.split('\n') {
        let _ = parse_duration(value);
        let _ = redact_url(value);
    }
    let env = Env::from_pairs(NAMES.iter().zip(text.split('\n')).map(|(n, v)| (*n, v)));
    let mut p = Parser::new(&env);
    let _: u32 = p.parse("U32", 0);
    let _: f64 = p.parse("F64", 0.0);
    let r: u16 = p.ranged("RANGED", 1, 1..=1024);
    assert!((1..=1024).contains(&r));
    let _ = p.flag("FLAG", false);
    let _ = p.duration("DURATION", Duration::from_secs(1));
    let _ = p.url_opt("URL", &["http", "https"]);
    let _ = p.string("STRING", "default");
    let _ = p.string_opt("STRING");
    let db = p.secret_url_with_password(
        "DATABASE_URL",
        "DATABASE_PASSWORD",
        "postgres://localhost/fantasy",
        &["postgres", "postgresql"],
    );
    let _ = redact_url(db.expose());
    let _: Option<i64> = p.parse_opt("I64");
    if let Err(e) = p.finish() {
        assert!(!e.problems.is_empty());
        let _ = e.to_string();
    }
});
