//! Finding and loading ONNX Runtime, and choosing the execution provider.
//!
//! `ort` loads the library at run time (`load-dynamic`), and panics on first
//! use if the file is missing; so we look for it first and fail with a line
//! that says what to do. The search covers a normal set-up without any
//! variable set: the project's `.tools/onnxruntime/lib` (where
//! `scripts/setup.sh` puts it), the folder of the executable (container
//! images), the usual system folders, and Python's site-packages (the
//! `onnxruntime` or `onnxruntime-gpu` wheel).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider as _};
use ort::session::Session;
use ort::session::builder::SessionBuilder;

use crate::InferenceError;

/// Where inference runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// NVIDIA GPU through the CUDA execution provider; an error if unusable.
    Cuda,
    /// TensorRT (with CUDA for what TensorRT does not take); an error if unusable.
    TensorRt,
    /// CUDA when it works, else CPU with a warning.
    Auto,
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "cpu" => Device::Cpu,
            "cuda" | "gpu" => Device::Cuda,
            "tensorrt" | "trt" => Device::TensorRt,
            "auto" => Device::Auto,
            _ => return Err("expected cpu, cuda, tensorrt or auto".into()),
        })
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::TensorRt => "tensorrt",
            Device::Auto => "auto",
        })
    }
}

/// The file name stem of the library on this platform.
const LIB_PREFIX: &str = "libonnxruntime.so";

fn is_runtime_library(name: &str) -> bool {
    // `libonnxruntime.so`, `libonnxruntime.so.1`, `libonnxruntime.so.1.31.1`,
    // but not `libonnxruntime_providers_cuda.so`.
    name == LIB_PREFIX
        || name
            .strip_prefix(LIB_PREFIX)
            .is_some_and(|rest| rest.starts_with('.'))
}

fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(is_runtime_library))
        .map(|e| e.path())
        .collect();
    // The most specific name (the real file, not a symlink chain's start).
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.into_iter().next()
}

fn glob_dirs(pattern_parent: &Path, prefix: &str, tail: &[&str]) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(pattern_parent) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| tail.iter().fold(e.path(), |p, t| p.join(t)))
        .collect()
}

/// Every folder searched, in order, when `ORT_DYLIB_PATH` is not set.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        dirs.push(dir.to_path_buf());
        dirs.push(dir.join("lib"));
        dirs.push(dir.join("../lib"));
        roots.push(dir.to_path_buf());
    }
    // The project's tools folder, from the working directory or the
    // executable (target/release/...) upwards.
    for root in roots {
        for ancestor in root.ancestors() {
            dirs.push(ancestor.join(".tools/onnxruntime/lib"));
        }
    }
    for d in [
        "/usr/local/lib/onnxruntime",
        "/usr/local/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib",
        "/opt/onnxruntime/lib",
    ] {
        dirs.push(PathBuf::from(d));
    }
    // Python wheels.
    let capi = ["site-packages", "onnxruntime", "capi"];
    let mut python_roots: Vec<PathBuf> = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        python_roots.push(PathBuf::from(venv).join("lib"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let home = PathBuf::from(home);
        python_roots.push(home.join(".local/lib"));
        for v in glob_dirs(&home.join(".pyenv/versions"), "", &["lib"]) {
            python_roots.push(v);
        }
    }
    python_roots.push(PathBuf::from("/usr/local/lib"));
    python_roots.push(PathBuf::from("/usr/lib"));
    for root in python_roots {
        dirs.extend(glob_dirs(&root, "python3", &capi));
        let mut dist = capi;
        dist[0] = "dist-packages";
        dirs.extend(glob_dirs(&root, "python3", &dist));
    }
    dirs.push(PathBuf::from(
        "/usr/lib/python3/dist-packages/onnxruntime/capi",
    ));
    dirs.dedup();
    dirs
}

/// Finds the library: `explicit` (from `ORT_DYLIB_PATH`) if given, else the
/// first hit in [`search_dirs`].
pub fn find_library(explicit: Option<&Path>) -> Result<PathBuf, InferenceError> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(InferenceError::Library(format!(
                "ORT_DYLIB_PATH is {} but there is no such file; point it at libonnxruntime.so \
                 (from `pip install onnxruntime==1.31.1`, in onnxruntime/capi/), or unset it to search",
                path.display()
            )))
        };
    }
    let dirs = search_dirs();
    dirs.iter().find_map(|d| library_in(d)).ok_or_else(|| {
        InferenceError::Library(format!(
            "the ONNX Runtime library ({LIB_PREFIX}) was not found. Run scripts/setup.sh (it puts \
             the library in .tools/onnxruntime/lib), or `pip install onnxruntime==1.31.1` \
             (onnxruntime-gpu for CUDA), or set ORT_DYLIB_PATH to the file. Searched: {}",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// The process's ONNX Runtime: loaded once, shared by every model.
#[derive(Debug)]
pub struct Runtime {
    env: Environment,
    library: PathBuf,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

impl Runtime {
    /// Loads ONNX Runtime once per process (later calls return the first
    /// result, whatever `explicit` they pass).
    pub fn get(explicit: Option<&Path>) -> Result<&'static Runtime, InferenceError> {
        RUNTIME
            .get_or_init(|| Self::load(explicit).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| InferenceError::Library(e.clone()))
    }

    fn load(explicit: Option<&Path>) -> Result<Runtime, InferenceError> {
        let library = find_library(explicit)?;
        let builder = ort::init_from(&library).map_err(|e| {
            InferenceError::Library(format!(
                "cannot load ONNX Runtime from {}: {e} (this build needs ONNX Runtime 1.31)",
                library.display()
            ))
        })?;
        let env = builder
            .with_name("fantasy")
            .with_telemetry(false)
            .build()
            .map_err(|e| InferenceError::Library(format!("cannot start ONNX Runtime: {e}")))?;
        tracing::info!(library = %library.display(), "ONNX Runtime loaded");
        Ok(Runtime { env, library })
    }

    /// The library file in use.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// Whether the loaded library was built with the CUDA execution provider
    /// (the `onnxruntime-gpu` wheel is; the CPU wheel is not).
    pub fn has_cuda(&self) -> bool {
        ep::CUDA::is_available().unwrap_or(false)
    }

    /// Whether the loaded library was built with TensorRT.
    pub fn has_tensorrt(&self) -> bool {
        ep::TensorRT::is_available().unwrap_or(false)
    }

    /// A session for `model` on `device` with `intra_threads` threads and
    /// full float32 precision; returns the device it actually runs on
    /// (`Auto` resolved).
    pub fn session(
        &self,
        model: &[u8],
        device: Device,
        intra_threads: usize,
    ) -> Result<(Session, Device), InferenceError> {
        self.session_with(model, device, intra_threads, false)
    }

    /// [`Runtime::session`], letting cuBLAS use TF32 tensor cores on GPUs
    /// that have them when `tf32` is set (faster for large models; answers
    /// then differ from float32 in the fourth decimal).
    pub fn session_with(
        &self,
        model: &[u8],
        device: Device,
        intra_threads: usize,
        tf32: bool,
    ) -> Result<(Session, Device), InferenceError> {
        let wants_gpu = match device {
            Device::Cpu => false,
            Device::Cuda | Device::TensorRt => true,
            Device::Auto => self.has_cuda(),
        };
        if device == Device::Auto && !wants_gpu {
            tracing::warn!(
                "INFERENCE_DEVICE=auto: this ONNX Runtime library has no CUDA support; running on CPU"
            );
        }
        if wants_gpu {
            match self.gpu_session(model, device, intra_threads, tf32) {
                Ok(s) => return Ok(s),
                Err(e) if device == Device::Auto => {
                    tracing::warn!(
                        "INFERENCE_DEVICE=auto: CUDA is not usable ({e}); running on CPU"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let session = self
            .builder(intra_threads)?
            .commit_from_memory(model)
            .map_err(|e| {
                InferenceError::Model(format!("ONNX Runtime cannot load the model: {e}"))
            })?;
        Ok((session, Device::Cpu))
    }

    fn gpu_session(
        &self,
        model: &[u8],
        device: Device,
        intra_threads: usize,
        tf32: bool,
    ) -> Result<(Session, Device), InferenceError> {
        let (name, available) = match device {
            Device::TensorRt => ("TensorRT", self.has_tensorrt()),
            _ => ("CUDA", self.has_cuda()),
        };
        if !available {
            return Err(InferenceError::Device(format!(
                "INFERENCE_DEVICE={device}: the ONNX Runtime library at {} was built without {name}. \
                 Use the onnxruntime-gpu wheel's library (ORT_DYLIB_PATH), or INFERENCE_DEVICE=cpu",
                self.library.display()
            )));
        }
        // TF32 is on by default in CUDA's math libraries on Ampere and
        // later: it changed a test model's answers by 4e-4 on an H100.
        let cuda = ep::CUDA::default().with_tf32(tf32);
        let providers = match device {
            Device::TensorRt => vec![
                ep::TensorRT::default().build().error_on_failure(),
                cuda.build(),
            ],
            _ => vec![cuda.build().error_on_failure()],
        };
        let builder = self
            .builder(intra_threads)?
            .with_execution_providers(providers)
            .map_err(|e| {
                InferenceError::Device(format!(
                    "INFERENCE_DEVICE={device}: the {name} execution provider cannot start: {e}. \
                     Is there a GPU, with CUDA 13 and cuDNN 9 libraries on the library path?"
                ))
            })?;
        let mut builder = builder;
        let session = builder
            .commit_from_memory(model)
            .map_err(|e| InferenceError::Device(format!("{name} cannot load the model: {e}")))?;
        let resolved = if device == Device::TensorRt {
            Device::TensorRt
        } else {
            Device::Cuda
        };
        Ok((session, resolved))
    }

    fn builder(&self, intra_threads: usize) -> Result<SessionBuilder, InferenceError> {
        let fail =
            |e: ort::Error<SessionBuilder>| InferenceError::Model(format!("session options: {e}"));
        Session::builder(&self.env)
            .map_err(|e| InferenceError::Model(format!("session options: {e}")))?
            .with_intra_threads(intra_threads.max(1))
            .map_err(fail)?
            // Inter-op parallelism helps wide graphs only; ours are small.
            .with_inter_threads(1)
            .map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names_match_the_runtime_only() {
        assert!(is_runtime_library("libonnxruntime.so"));
        assert!(is_runtime_library("libonnxruntime.so.1"));
        assert!(is_runtime_library("libonnxruntime.so.1.31.1"));
        assert!(!is_runtime_library("libonnxruntime_providers_cuda.so"));
        assert!(!is_runtime_library("libonnxruntime_providers_shared.so"));
        assert!(!is_runtime_library("libonnxruntime.sox"));
    }

    #[test]
    fn a_missing_explicit_path_says_what_to_do() {
        let err = find_library(Some(Path::new("/nonexistent/libonnxruntime.so"))).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("ORT_DYLIB_PATH"), "{text}");
        assert!(text.contains("pip install onnxruntime"), "{text}");
    }

    #[test]
    fn devices_parse() {
        assert_eq!("CUDA".parse::<Device>(), Ok(Device::Cuda));
        assert_eq!("auto".parse::<Device>(), Ok(Device::Auto));
        assert!("tpu".parse::<Device>().is_err());
    }
}
