//! tamis: a web-analytics collector that keeps aggregates and lets personal
//! information fall through the sieve.
//!
//! Data flows one way: [`ingest`] (HTTP, wire types) → [`privacy`] (pure
//! transforms) → [`journal`] (the durable local log) → [`aggregate`]
//! (in-memory sessions and hourly rows) → [`sink`] (batches, ClickHouse).
//! [`query`] only reads. See ARCHITECTURE.md.

pub mod aggregate;
pub mod backoff;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod export;
pub mod goal;
pub mod import;
pub mod ingest;
pub mod journal;
pub mod lock;
pub mod metrics;
pub mod notice;
pub mod privacy;
pub mod query;
pub mod reload;
pub mod server;
pub mod share;
pub mod sink;
pub mod web;
