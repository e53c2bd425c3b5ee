//! The collector's `file` source reading a NDJSON file, from bytes in memory
//! (`file_source::read_bytes`, the reader `FileSource` uses, in
//! batches of 3): a malformed record is rejected and counted, never a panic;
//! reading and skipping (what `resume` does) count the same records; every
//! game read keeps the source's invariants.
#![no_main]

use fantasy_fuzz::file_source::{FileFormat, FileSourceConfig, count_bytes, read_bytes};
use fantasy_messages::GameStatus;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for defaults in [false, true] {
        let cfg = FileSourceConfig {
            name: "file:fuzz.ndjson".into(),
            path: "fuzz.ndjson".into(),
            format: FileFormat::Ndjson,
            batch_size: 3,
            default_sport: defaults.then(|| "basketball".to_owned()),
            default_league: defaults.then(|| "nba".to_owned()),
        };
        let read = read_bytes(&cfg, data);
        let counted = count_bytes(&cfg, data);
        let ((games, rejected), counted) = match (read, counted) {
            (Ok(read), Ok(counted)) => (read, counted),
            (Err(_), Err(_)) => continue,
            (read, counted) => panic!(
                "reading and skipping disagree: {:?} vs {:?}",
                read.map(|(g, r)| (g.len(), r)),
                counted
            ),
        };
        assert_eq!(
            games.len() as u64 + rejected,
            counted,
            "records read vs skipped"
        );
        for g in &games {
            assert!(!g.game_id.is_empty() && !g.home_team.is_empty() && !g.away_team.is_empty());
            assert_ne!(g.home_team, g.away_team);
            assert!(g.status != GameStatus::Final || g.final_score().is_some());
        }
    }
});
