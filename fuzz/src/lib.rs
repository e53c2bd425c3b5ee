//! The services' parsers, compiled here on their own.
//!
//! The fuzz targets need the parsing modules of the collector and the
//! fanout, not the services: depending on the service crates would build
//! their Kafka (librdkafka), Postgres, Redis and OpenTelemetry clients under
//! coverage instrumentation, some 400 crates. These modules use nothing of
//! their crates but `crate::source` (compiled here too), so they are
//! included by path: the very source the services build, without the rest.
//! Their `#[cfg(test)]` modules are not compiled here. (`collector_config`,
//! behind the `collector` feature, uses the collector crate itself.)

#[allow(dead_code, unused_imports)]
#[path = "../../services/collector/src/espn.rs"]
pub mod espn;

#[allow(dead_code, unused_imports)]
#[path = "../../services/collector/src/source.rs"]
pub mod source;

#[allow(dead_code, unused_imports)]
#[path = "../../services/collector/src/file_source.rs"]
pub mod file_source;

#[allow(dead_code, unused_imports)]
#[path = "../../services/fanout/src/protocol.rs"]
pub mod protocol;
