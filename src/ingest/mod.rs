//! The ingestion stage: HTTP in, privacy pipeline, hand-off to the
//! aggregator. Wire types live here; the full client IP and raw headers are
//! read here and passed to `privacy` only.

pub mod client_ip;
pub mod cors;
pub mod error;
pub mod event;
pub mod ga4;
pub mod handler;
pub mod matomo;
pub mod pixel;
pub mod tracker;
pub mod umami;
