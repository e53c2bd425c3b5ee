//! The embedded broker: librdkafka's mock cluster, in process.
//!
//! It speaks the Kafka protocol over TCP on 127.0.0.1, so clients in this
//! process and in others connect to it like to any broker. It keeps
//! everything in memory and is meant for local runs and tests; the Compose and
//! Swarm stacks use Apache Kafka.
//!
//! The mock cluster handle is not `Send` (it wraps a raw pointer), so it lives
//! on a thread of its own and this handle talks to that thread: the handle can
//! then move between async tasks freely.

use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::{Context as _, anyhow};
use fantasy_messages::TopicSpec;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

enum Command {
    CreateTopic {
        name: String,
        partitions: i32,
        reply: mpsc::Sender<anyhow::Result<()>>,
    },
    BrokerDown {
        id: i32,
        reply: mpsc::Sender<anyhow::Result<()>>,
    },
    BrokerUp {
        id: i32,
        reply: mpsc::Sender<anyhow::Result<()>>,
    },
    FailRequests {
        api: RDKafkaApiKey,
        errors: Vec<RDKafkaRespErr>,
        reply: mpsc::Sender<anyhow::Result<()>>,
    },
    Stop,
}

/// A running embedded broker; stops when dropped.
pub struct EmbeddedBroker {
    bootstrap: String,
    brokers: i32,
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("bootstrap", &self.bootstrap)
            .field("brokers", &self.brokers)
            .finish()
    }
}

impl EmbeddedBroker {
    /// Starts a cluster of `brokers` brokers (3 gives replicated topics).
    pub fn start(brokers: i32) -> anyhow::Result<Self> {
        let (commands, inbox) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow!(e).context("starting the mock cluster")));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Serve commands until told to stop or the handle is gone.
                while let Ok(command) = inbox.recv() {
                    match command {
                        Command::CreateTopic {
                            name,
                            partitions,
                            reply,
                        } => {
                            let result = cluster
                                .create_topic(&name, partitions, brokers.min(3))
                                .with_context(|| format!("creating topic {name}"));
                            let _ = reply.send(result);
                        }
                        Command::BrokerDown { id, reply } => {
                            let _ = reply.send(cluster.broker_down(id).map_err(Into::into));
                        }
                        Command::BrokerUp { id, reply } => {
                            let _ = reply.send(cluster.broker_up(id).map_err(Into::into));
                        }
                        Command::FailRequests { api, errors, reply } => {
                            cluster.request_errors(api, &errors);
                            let _ = reply.send(Ok(()));
                        }
                        Command::Stop => break,
                    }
                }
            })
            .context("spawning the embedded broker thread")?;
        let bootstrap = ready_rx
            .recv()
            .context("the embedded broker thread died while starting")??;
        tracing::info!(%bootstrap, brokers, "embedded Kafka broker started");
        Ok(Self {
            bootstrap,
            brokers,
            commands,
            thread: Some(thread),
        })
    }

    /// The bootstrap servers to give clients (`127.0.0.1:port,...`).
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Broker count.
    pub fn brokers(&self) -> i32 {
        self.brokers
    }

    fn call(
        &self,
        make: impl FnOnce(mpsc::Sender<anyhow::Result<()>>) -> Command,
    ) -> anyhow::Result<()> {
        let (reply, answer) = mpsc::channel();
        self.commands
            .send(make(reply))
            .map_err(|_| anyhow!("the embedded broker has stopped"))?;
        answer
            .recv()
            .map_err(|_| anyhow!("the embedded broker has stopped"))?
    }

    /// Creates a topic with `partitions` partitions, replicated on up to three
    /// brokers. (The mock cluster has no retention or compaction settings; it
    /// keeps everything until it stops.)
    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        self.call(|reply| Command::CreateTopic {
            name: name.to_owned(),
            partitions,
            reply,
        })
    }

    /// Creates every topic of `specs`.
    pub fn create_topics(&self, specs: &[TopicSpec]) -> anyhow::Result<()> {
        specs
            .iter()
            .try_for_each(|s| self.create_topic(&s.name, s.partitions))
    }

    /// Takes broker `id` (1-based) down: its connections drop and it refuses
    /// new ones, as a crashed broker does.
    pub fn broker_down(&self, id: i32) -> anyhow::Result<()> {
        self.call(|reply| Command::BrokerDown { id, reply })
    }

    /// Brings broker `id` back.
    pub fn broker_up(&self, id: i32) -> anyhow::Result<()> {
        self.call(|reply| Command::BrokerUp { id, reply })
    }

    /// Answers the next requests of kind `api`, from any client, with
    /// `errors`, one each, in order (then normally again).
    pub fn fail_requests(
        &self,
        api: RDKafkaApiKey,
        errors: &[RDKafkaRespErr],
    ) -> anyhow::Result<()> {
        self.call(|reply| Command::FailRequests {
            api,
            errors: errors.to_vec(),
            reply,
        })
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
