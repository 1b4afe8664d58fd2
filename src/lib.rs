//! tamis: a web-analytics collector that keeps aggregates and lets personal
//! information fall through the sieve.
//!
//! Data flows one way: [`ingest`] (HTTP, wire types) → [`privacy`] (pure
//! transforms) → [`aggregate`] (in-memory sessions and hourly rows) →
//! [`sink`] (batching, ClickHouse). [`query`] only reads. See ARCHITECTURE.md.

pub mod aggregate;
pub mod cli;
pub mod clock;
pub mod config;
pub mod ingest;
pub mod metrics;
pub mod privacy;
pub mod query;
pub mod server;
pub mod sink;
pub mod web;
