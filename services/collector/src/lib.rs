//! The collector (in progress, issue 5): games and results from sources,
//! deduplicated, with features, to Kafka and Postgres.
//!
//! Here so far: [`espn`], the parser of the public ESPN site-API scoreboard
//! format (the `http` source's payloads).

pub mod espn;
