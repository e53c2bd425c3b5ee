//! The ESPN scoreboard payload parser (`collector::espn::parse`) on arbitrary
//! bytes: `PayloadError` or a scoreboard, never a panic; each event is kept or
//! rejected (with its index), and a kept one keeps the parser's invariants.
#![no_main]

use fantasy_fuzz::espn::parse;
use fantasy_messages::GameStatus;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(board) = parse(data) else {
        return;
    };
    let mut indexes: Vec<usize> = board.rejected.iter().map(|r| r.index).collect();
    let sorted = indexes.windows(2).all(|w| w[0] < w[1]);
    assert!(sorted, "rejected events out of order: {indexes:?}");
    indexes.dedup();
    for e in &board.events {
        assert!(!e.event_id.is_empty());
        assert_ne!(e.home_team, e.away_team);
        match e.status {
            GameStatus::Final => assert!(e.home_score.is_some() && e.away_score.is_some()),
            GameStatus::Scheduled | GameStatus::Postponed => {
                assert!(e.home_score.is_none() && e.away_score.is_none())
            }
            GameStatus::InProgress => {}
        }
    }
});
