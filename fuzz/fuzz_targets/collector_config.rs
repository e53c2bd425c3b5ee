//! The collector's configuration: `SourceSpec::parse` on the whole input (one
//! `kind:argument?options` spec), then the input as `NAME=value` lines read by
//! `collector::Config::from_env` (which parses `COLLECTOR_SOURCES` and every
//! library's settings). Errors, never panics.
#![no_main]

use collector::SourceSpec;
use fantasy_config::Env;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = SourceSpec::parse(text) {
        let name = spec.name().to_owned();
        assert!(
            text.starts_with(&name),
            "{name:?} is not the head of {text:?}"
        );
        assert!(spec.runs_on(1, 1));
        let shard = collector::config::shard_of(&name, 7);
        assert!((1..=7).contains(&shard));
    }
    // `*_FILE` variables name files to read secrets from: not here.
    let env = Env::from_pairs(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| !k.ends_with("_FILE")),
    );
    if let Ok(cfg) = collector::Config::from_env(&env) {
        assert!(!cfg.sources.is_empty());
        assert!((1..=cfg.shards).contains(&cfg.shard));
    }
});
