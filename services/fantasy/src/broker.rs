//! `fantasy broker`: the embedded Kafka-protocol broker, standalone.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use fantasy_kafka::EmbeddedBroker;
use fantasy_messages::Topic;

/// What `fantasy broker` was asked for.
#[derive(Clone, Debug)]
pub struct BrokerArgs {
    /// Brokers in the cluster (3 lets topics replicate).
    pub brokers: i32,
    /// Partitions of each topic.
    pub partitions: i32,
    /// Put before every topic name.
    pub topic_prefix: String,
    /// Also write the bootstrap address to this file (for scripts).
    pub bootstrap_file: Option<PathBuf>,
}

/// Starts the broker and creates the topics; the broker runs until the
/// returned handle is dropped.
pub fn start(args: &BrokerArgs) -> anyhow::Result<EmbeddedBroker> {
    let broker = EmbeddedBroker::start(args.brokers)?;
    let specs: Vec<_> = Topic::ALL
        .iter()
        .map(|t| t.spec(&args.topic_prefix, args.partitions))
        .collect();
    broker.create_topics(&specs)?;
    if let Some(path) = &args.bootstrap_file {
        // Write then rename, so a script polling for the file never reads half
        // an address.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, broker.bootstrap_servers())
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing the bootstrap address to {}", path.display()))?;
    }
    Ok(broker)
}

/// Runs `fantasy broker` until Ctrl-C or SIGTERM.
pub async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let broker = start(&args)?;
    let names: Vec<String> = Topic::ALL
        .iter()
        .map(|t| t.name(&args.topic_prefix))
        .collect();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Embedded Kafka-protocol broker running ({} brokers, in memory).\n\
         \n  bootstrap:  {bootstrap}\n  topics:     {} ({} partitions each)\n\
         \nConnect other processes with:\n  export KAFKA_BROKERS={bootstrap}\n\
         \nCtrl-C stops it (and forgets every message).",
        broker.brokers(),
        names.join(", "),
        args.partitions,
        bootstrap = broker.bootstrap_servers(),
    )?;
    out.flush()?;
    drop(out);
    fantasy_http::shutdown_signal().await;
    tracing::info!("stopping the embedded broker");
    drop(broker);
    if let Some(path) = &args.bootstrap_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
