//! The privacy stage: pure transforms from what a browser sent to what tamis
//! may keep. Nothing here does I/O after start-up; the full client IP enters
//! [`ip::truncate`] and never leaves this module in any other form.
//!
//! Order of the steps (see [`pipeline::process`]): opt-out signals → IP
//! truncation → bot filtering → geolocation on the truncated IP → user-agent
//! reduction → referrer classification → URL reduction and redaction →
//! consent decision → daily visitor key.

pub mod agent;
pub mod coded;
pub mod consent;
pub mod geo;
pub mod ip;
pub mod optout;
pub mod pipeline;
pub mod referrer;
pub mod salt;
pub mod subdivision;
pub mod url;
pub mod visitor;
