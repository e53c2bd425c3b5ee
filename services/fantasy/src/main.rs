//! `fantasy`: the all-in-one command. See the library for what each
//! subcommand does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use fantasy::{Config, broker, check, migrate, up};
use fantasy_config::{Env, parse_duration};

#[derive(Debug, Parser)]
#[command(
    name = "fantasy",
    version,
    about = "Streaming sports predictions: the all-in-one command"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole stack in one process: broker (unless KAFKA_BROKERS is
    /// set), migrations, collector (a simulated league by default),
    /// predictor, fanout and trainer; prints the URLs once predictions flow.
    Up {
        /// Address the services listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The predictor's port; the fanout, collector and trainer take the
        /// next three.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Where models are kept (unless MODEL_STORE_URL is set).
        #[arg(long, default_value = ".fantasy")]
        data_dir: PathBuf,
        /// Partitions of the embedded broker's topics (default: KAFKA_PARTITIONS, else 8).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=1024))]
        partitions: Option<i32>,
    },
    /// Run the embedded Kafka-protocol broker (in memory) with the stack's topics.
    Broker {
        /// Brokers in the cluster.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=16))]
        brokers: i32,
        /// Partitions per topic (default: KAFKA_PARTITIONS, else 8).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=1024))]
        partitions: Option<i32>,
        /// Also write the bootstrap address to this file.
        #[arg(long)]
        bootstrap_file: Option<PathBuf>,
    },
    /// Run one service, as its own binary would (configuration from the
    /// environment, until SIGTERM or Ctrl-C).
    Run {
        /// The service.
        #[arg(value_enum)]
        service: Service,
    },
    /// Train once now (the trainer's `POST /v1/train` without the service):
    /// the gate against the active model, the registry, the announcement on
    /// `models` when promoted; prints the run's report as JSON.
    Train,
    /// Apply the database migrations (creating the database if needed).
    Migrate,
    /// Check that Postgres, Redis and Kafka answer.
    Check {
        /// How long each dependency may take to answer.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Service {
    Predictor,
    Fanout,
    Collector,
    Trainer,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Run { service } = cli.command {
        // The very code of the service's own binary.
        return match service {
            Service::Predictor => fantasy_http::service_main("predictor", predictor::run),
            Service::Fanout => fantasy_http::service_main("fanout", fanout::run),
            Service::Collector => fantasy_http::service_main("collector", collector::run),
            Service::Trainer => fantasy_http::service_main("trainer", trainer::run),
        };
    }
    let mut env = Env::from_process();
    if env.get("RUST_LOG").is_none() && matches!(cli.command, Command::Up { .. }) {
        // The progress lines say what happens; the services' logs show
        // problems. Not the 503s of /ready while the first model trains
        // (the progress lines poll it), nor each failed readiness probe.
        env = env.with(
            "RUST_LOG",
            "warn,tower_http::trace=off,fantasy_telemetry::health=error",
        );
    } else if env.get("RUST_LOG").is_none() && !matches!(cli.command, Command::Broker { .. }) {
        // One-shot commands print their own results; keep the log to problems.
        env = env.with("RUST_LOG", "warn");
    }
    let cfg = match Config::from_env(&env) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("fantasy: {e}");
            return ExitCode::from(2);
        }
    };
    // Checked with the rest, before anything starts: a bad variable is
    // named and exits 2, as for every other command.
    let train_cfg = match cli.command {
        // It serves nothing, so there is nothing to authenticate: the
        // local profile.
        Command::Train => {
            match trainer::Config::for_profile(&env, fantasy_config::Profile::Local) {
                Ok(c) => Some(c),
                Err(e) => {
                    eprintln!("fantasy: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        _ => None,
    };
    let _telemetry = match fantasy_telemetry::init(&cfg.telemetry) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("fantasy: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fantasy: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    cfg.log();
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up {
                host,
                port,
                data_dir,
                partitions,
            } => {
                println!("fantasy up: starting the stack");
                let shutdown = tokio_util::sync::CancellationToken::new();
                let signal = shutdown.clone();
                tokio::spawn(async move {
                    fantasy_http::shutdown_signal().await;
                    signal.cancel();
                });
                let args = up::UpArgs {
                    host,
                    port,
                    data_dir,
                    partitions: partitions.unwrap_or(cfg.kafka.partitions),
                };
                up::run(&cfg, &env, args, shutdown, None).await?;
                println!("fantasy: stopped");
                Ok(true)
            }
            Command::Broker {
                brokers,
                partitions,
                bootstrap_file,
            } => {
                broker::run(broker::BrokerArgs {
                    brokers,
                    partitions: partitions.unwrap_or(cfg.kafka.partitions),
                    topic_prefix: cfg.kafka.topic_prefix.clone(),
                    bootstrap_file,
                })
                .await?;
                Ok(true)
            }
            Command::Train => {
                let cfg = train_cfg.context("the trainer's configuration was not read")?;
                let report = trainer::train_once(&cfg).await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(true)
            }
            Command::Run { .. } => unreachable!("dispatched before the runtime"),
            Command::Migrate => migrate::run(&cfg.db).await.map(|_| true),
            Command::Check { timeout } => {
                let reports = check::run(&cfg, timeout).await;
                for r in &reports {
                    println!("{r}");
                }
                Ok(reports.iter().all(|r| r.ok))
            }
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("fantasy: {e:#}");
            ExitCode::FAILURE
        }
    }
}
