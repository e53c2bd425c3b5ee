//! The fan-out path: one prediction from Kafka to N subscribers of `all`.
//!
//! What is timed is `Hub::publish`: decode the record once, build the frame
//! of each of its channels once, and hand the same bytes to every
//! subscriber's queue. The subscribers' queues are emptied between
//! iterations, outside the timing (the connection tasks do that in the
//! service, on other threads).
//!
//! `cargo bench -p fantasy-benches --bench fanout`

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fanout::Limits;
use fanout::hub::Hub;
use fanout::protocol::Channel;
use fantasy_kafka::TailRecord;
use fantasy_messages::testing::prediction;

fn record(offset: i64, payload: &[u8]) -> TailRecord {
    TailRecord {
        partition: (offset % 8) as i32,
        offset,
        timestamp_ms: None,
        key: None,
        payload: Some(payload.to_vec()),
        trace: None,
    }
}

fn publish(c: &mut Criterion) {
    // Each record a new event of the game (the hub passes over repeats),
    // encoded outside the timed part.
    let mut p = prediction("nba-2026-27-0457", 0.61);
    let mut group = c.benchmark_group("fanout/publish");
    for n in [1usize, 100, 1_000, 10_000] {
        let hub = Hub::new(
            Limits {
                client_queue: 8,
                ..Limits::default()
            },
            &[0; 8],
        );
        let mut queues = Vec::with_capacity(n);
        for _ in 0..n {
            let (conn, rx) = hub.connect();
            hub.subscribe(&conn, &Channel::All, None);
            queues.push((conn, rx));
        }
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut offset = 0i64;
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    p.event_produced_at =
                        Some(chrono::DateTime::UNIX_EPOCH + chrono::Duration::microseconds(offset));
                    let payload = fantasy_messages::encode(&p).unwrap_or_default();
                    let rec = record(offset, &payload);
                    offset += 1;
                    let t = Instant::now();
                    hub.publish(&rec);
                    spent += t.elapsed();
                    for (_, rx) in &queues {
                        while rx.try_recv().is_some() {}
                    }
                }
                spent
            });
        });
        assert!(
            queues.iter().all(|(conn, _)| conn.kick_reason().is_none()),
            "a subscriber was dropped during the bench"
        );
    }
    group.finish();
}

criterion_group!(benches, publish);
criterion_main!(benches);
