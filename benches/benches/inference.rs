//! The dynamic batcher against raw ONNX Runtime on the same model.
//!
//! For each batch size B: `raw` runs one `Session::run` on a [B, n] tensor
//! (the best case: the caller already holds a batch). `batcher` serves
//! single-row requests through the dynamic batcher (max_batch = B) under
//! steady load, as a busy server does: 2·B requests stay in flight, each
//! answer is followed by a new request, so the batcher must group single
//! requests into batches itself while answering the last ones. Both report
//! rows per second; the ratio is what dynamic batching costs.
//!
//! `cargo bench -p fantasy-benches --bench inference`
//! (`BENCH_MODEL=mlp_torch.onnx` for the small fixture, default bench_mlp.onnx;
//! `BENCH_QUEUE_DELAY_US`, default 0 as in production, the batcher's max_queue_delay)

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fantasy_inference::model::{inspect, run_rows};
use fantasy_inference::{Batcher, BatcherConfig, Device, Runtime};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

const SIZES: [usize; 4] = [1, 32, 256, 1024];

fn model() -> (String, Vec<u8>) {
    let name = std::env::var("BENCH_MODEL").unwrap_or_else(|_| "bench_mlp.onnx".into());
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../libs/inference/fixtures")
        .join(&name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (name, bytes)
}

fn rows(n_rows: usize, width: usize) -> Vec<f32> {
    (0..n_rows * width)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn inference(c: &mut Criterion) {
    let runtime = Runtime::get(None).unwrap_or_else(|e| panic!("{e}"));
    let (name, bytes) = model();
    let (mut session, _) = runtime
        .session(&bytes, Device::Cpu, 1)
        .unwrap_or_else(|e| panic!("{e}"));
    let spec = inspect(&session, None).unwrap_or_else(|e| panic!("{e}"));
    let width = spec.n_features;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));

    let delay = std::time::Duration::from_micros(
        std::env::var("BENCH_QUEUE_DELAY_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let mut group = c.benchmark_group(format!("inference/{name}"));
    for &b in &SIZES {
        group.throughput(Throughput::Elements(b as u64));
        let input = rows(b, width);
        let mut out = Vec::with_capacity(b);
        group.bench_with_input(BenchmarkId::new("raw", b), &b, |bench, &b| {
            bench.iter(|| {
                run_rows(&mut session, &spec, black_box(&input), b, &mut out)
                    .unwrap_or_else(|e| panic!("{e}"));
            })
        });

        // A short queue delay lets a batch fill when requests trickle in,
        // as MAX_QUEUE_DELAY does in production.
        let cfg = BatcherConfig {
            device: Device::Cpu,
            max_batch: b,
            max_queue_delay: delay,
            queue_capacity: 4 * b.max(16),
            ..BatcherConfig::default()
        };
        let batcher = Arc::new(
            Batcher::load(runtime, &bytes, &name, None, &cfg).unwrap_or_else(|e| panic!("{e}")),
        );
        let singles: Vec<Vec<f32>> = input.chunks(width).map(<[f32]>::to_vec).collect();
        group.bench_with_input(BenchmarkId::new("batcher", b), &b, |bench, &b| {
            bench.iter_custom(|iters| {
                tokio.block_on(async {
                    let total = iters as usize * b;
                    let window = 2 * b;
                    let mut in_flight = FuturesUnordered::new();
                    let started = std::time::Instant::now();
                    let mut submitted = 0;
                    let mut done = 0;
                    while done < total {
                        while submitted < total && in_flight.len() < window {
                            let row = singles[submitted % b].clone();
                            let batcher = Arc::clone(&batcher);
                            in_flight.push(async move { batcher.predict(row, 1).await });
                            submitted += 1;
                        }
                        if let Some(answer) = in_flight.next().await {
                            black_box(answer.unwrap_or_else(|e| panic!("{e}")));
                            done += 1;
                        }
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, inference);
criterion_main!(benches);
