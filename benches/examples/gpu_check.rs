//! The CUDA path on a GPU machine: correctness against ONNX Runtime's own
//! CPU outputs, `auto` resolution, and throughput CPU vs CUDA.
//!
//!   ORT_DYLIB_PATH=/path/to/onnxruntime-gpu/capi/libonnxruntime.so.1.31.1 \
//!     cargo run --release -p fantasy-benches --example gpu_check
//!
//! (The `onnxruntime-gpu` 1.31 library needs CUDA 13 and cuDNN 9 on the
//! library path.) Exits non-zero if CUDA is unusable or an output differs
//! from the expected one by more than 1e-5.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantasy_inference::model::{inspect, run_rows};
use fantasy_inference::{Batcher, BatcherConfig, Device, Runtime};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

fn fixtures() -> PathBuf {
    // FIXTURES when the binary runs away from its source tree (a GPU box).
    std::env::var_os("FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../libs/inference/fixtures")
        })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let lib = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    let rt = Runtime::get(lib.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "library: {} (CUDA: {}, TensorRT: {})",
        rt.library().display(),
        rt.has_cuda(),
        rt.has_tensorrt()
    );

    // 1. Correctness on CUDA.
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json"))?)?;
    let inputs: Vec<Vec<f32>> = serde_json::from_value(expected["inputs"].clone())?;
    let flat: Vec<f32> = inputs.concat();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cuda = BatcherConfig {
        device: Device::Cuda,
        ..BatcherConfig::default()
    };
    let mut worst = 0.0f64;
    for name in ["logreg_skl.onnx", "mlp_torch.onnx", "prob_1d.onnx"] {
        let bytes = std::fs::read(fixtures().join(name))?;
        let b = Batcher::load(rt, &bytes, name, None, &cuda)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        anyhow::ensure!(
            b.info().device == "cuda",
            "{name} runs on {}",
            b.info().device
        );
        let got = tokio.block_on(b.predict(flat.clone(), inputs.len()))?;
        let want: Vec<f64> = serde_json::from_value(expected["models"][name].clone())?;
        let diff = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (f64::from(*g) - w).abs())
            .fold(0.0, f64::max);
        println!(
            "{name}: device {} max |cuda - onnxruntime cpu| = {diff:.2e}",
            b.info().device
        );
        worst = worst.max(diff);
    }
    anyhow::ensure!(worst <= 1e-5, "CUDA outputs differ by {worst:e}");
    let bytes = std::fs::read(fixtures().join("mlp_torch.onnx"))?;
    let (_, auto) = rt
        .session(&bytes, Device::Auto, 1)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("INFERENCE_DEVICE=auto resolves to {auto}");

    // 2. Throughput, raw session: CPU (1 thread) vs CUDA, bench_mlp.onnx.
    let bytes = std::fs::read(fixtures().join("bench_mlp.onnx"))?;
    println!("\nbench_mlp.onnx (32 -> 256 -> 256 -> 1), median of 50 runs");
    println!(
        "{:>6} {:>14} {:>14} {:>10}",
        "batch", "cpu rows/s", "cuda rows/s", "cuda/cpu"
    );
    for &b in &[1usize, 32, 256, 1024, 4096, 16384] {
        let mut rates = Vec::new();
        for device in [Device::Cpu, Device::Cuda] {
            let (mut s, _) = rt
                .session(&bytes, device, 1)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let spec = inspect(&s, None).map_err(|e| anyhow::anyhow!("{e}"))?;
            let input: Vec<f32> = (0..b * spec.n_features)
                .map(|i| (i % 97) as f32 / 50.0 - 1.0)
                .collect();
            let mut out = Vec::new();
            for _ in 0..5 {
                run_rows(&mut s, &spec, &input, b, &mut out).map_err(|e| anyhow::anyhow!(e))?;
            }
            let times: Vec<Duration> = (0..50)
                .map(|_| {
                    let t = Instant::now();
                    let _ = run_rows(&mut s, &spec, &input, b, &mut out);
                    t.elapsed()
                })
                .collect();
            rates.push(b as f64 / median(times).as_secs_f64());
        }
        println!(
            "{b:>6} {:>14.0} {:>14.0} {:>9.1}x",
            rates[0],
            rates[1],
            rates[1] / rates[0]
        );
    }

    // 3. The batcher on CUDA under steady load: single-row requests, 2*B in
    //    flight, against the raw CUDA session at the same B.
    println!("\nbatcher on CUDA, single-row requests, steady load (2*B in flight)");
    println!("{:>6} {:>16}", "batch", "rows/s");
    for &b in &[32usize, 256, 1024, 4096] {
        let cfg = BatcherConfig {
            device: Device::Cuda,
            max_batch: b,
            queue_capacity: 4 * b,
            ..BatcherConfig::default()
        };
        let batcher = Arc::new(
            Batcher::load(rt, &bytes, "bench", None, &cfg).map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        let row: Vec<f32> = (0..32).map(|i| i as f32 / 32.0).collect();
        let total = 50 * b;
        let elapsed = tokio.block_on(async {
            let mut in_flight = FuturesUnordered::new();
            let (mut submitted, mut done) = (0, 0);
            let t = Instant::now();
            while done < total {
                while submitted < total && in_flight.len() < 2 * b {
                    let (batcher, row) = (Arc::clone(&batcher), row.clone());
                    in_flight.push(async move { batcher.predict(row, 1).await });
                    submitted += 1;
                }
                if let Some(r) = in_flight.next().await {
                    r?;
                    done += 1;
                }
            }
            Ok::<_, anyhow::Error>(t.elapsed())
        })?;
        println!("{b:>6} {:>16.0}", total as f64 / elapsed.as_secs_f64());
    }
    Ok(())
}
