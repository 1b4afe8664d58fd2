//! The feeder: reads logged hits back from the journal, in log order, and
//! hands them to the [`Intake`](super::Intake). It runs on its own thread
//! (file reads block) and stops reading while `server.queue_capacity`
//! records are held in memory, so a long ClickHouse outage grows the log on
//! disk, not the process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Intake, Logged};
use crate::backoff::Backoff;
use crate::journal::{record, Entry, Journal};
use crate::metrics::Metrics;

/// Most records fed under one lock.
const CHUNK: usize = 2048;

pub struct Feeder {
    pub journal: Journal,
    /// Number of the first record to feed (everything before it is in
    /// ClickHouse).
    pub from: u64,
    pub intake: Arc<Intake>,
    /// Site id → position in the configuration.
    pub sites: HashMap<Arc<str>, usize>,
    pub capacity: u64,
    pub metrics: Arc<Metrics>,
    /// Set at shutdown: feed what is durable, then stop.
    pub stop: Arc<AtomicBool>,
}

impl Feeder {
    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("tamis-feeder".into())
            .spawn(move || self.run())
    }

    fn run(self) {
        let mut reader = self.journal.reader(self.from);
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            if stopping && reader.position() >= self.journal.durable_end() {
                return;
            }
            if self.metrics.queue_depth.load(Ordering::Acquire) >= self.capacity {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let entries = match reader.read(CHUNK, Duration::from_millis(50)) {
                Ok(entries) => {
                    backoff.reset();
                    entries
                }
                Err(error) => {
                    tracing::error!(error = %error, retry_in = ?backoff.peek(), "cannot read the durable log back; retrying");
                    backoff.wait_blocking();
                    continue;
                }
            };
            if entries.is_empty() {
                continue;
            }
            let records: Vec<Logged> = entries
                .into_iter()
                .map(|entry| match entry {
                    Entry::Record { seq, payload } => match record::decode(&payload, &self.sites) {
                        Ok(messages) => (seq, Some(messages)),
                        Err(error) => {
                            self.metrics.log_corrupt.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(seq, error = %error, "log record cannot be decoded; skipped");
                            (seq, None)
                        }
                    },
                    Entry::Corrupt { seq } => (seq, None),
                })
                .collect();
            if !self.intake.feed(records) {
                return;
            }
        }
    }
}
