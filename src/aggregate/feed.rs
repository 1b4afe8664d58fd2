//! The feeder: hands logged hits to the [`Intake`](super::Intake) in log
//! order, from the in-memory [`Handoff`] when they are there and read back
//! from the journal when not (replay after a restart, a hand-off that was
//! full). It runs on its own thread (file reads block) and stops feeding
//! while `server.queue_capacity` records are held in memory, so a long
//! ClickHouse outage grows the log on disk, not the process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::handoff::{Handoff, Taken};
use super::{Intake, Logged};
use crate::backoff::Backoff;
use crate::config::{LiveSites, SiteSettings};
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
    /// Durable records' messages, as ingest made them.
    pub handoff: Arc<Handoff>,
    /// The configured sites: a record read back names its sites by id.
    pub sites: LiveSites,
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
        // Site id → position, made again when a reload changed the sites.
        let mut known = self.sites.load();
        let mut positions = positions(&known);
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            if stopping && reader.position() >= self.journal.durable_end() {
                return;
            }
            if self.metrics.queue_depth.load(Ordering::Acquire) >= self.capacity {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let next = reader.position();
            // Read before looking in the hand-off: the appender hands a
            // record on before publishing it as durable, so a record below
            // this end and missing from the hand-off is in the log only.
            let durable_end = self.journal.durable_end();
            let next_held = match self.handoff.take(next, CHUNK) {
                Taken::Records(records) => {
                    reader.skip_to(next + records.len() as u64);
                    if !self.intake.feed(records) {
                        return;
                    }
                    continue;
                }
                Taken::Missing { next_held } => next_held,
            };
            if durable_end <= next {
                self.handoff.wait(Duration::from_millis(50));
                continue;
            }
            let most = next_held.map_or(CHUNK, |held| (held - next).min(CHUNK as u64) as usize);
            let entries = match reader.read(most, Duration::from_millis(50)) {
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
            self.metrics
                .log_read_back
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
            let sites = self.sites.load();
            if !Arc::ptr_eq(&sites, &known) {
                positions = self::positions(&sites);
                known = sites;
            }
            let records: Vec<Logged> = entries
                .into_iter()
                .map(|entry| match entry {
                    Entry::Record { seq, payload } => match record::decode(&payload, &positions) {
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

fn positions(sites: &[Arc<SiteSettings>]) -> HashMap<Arc<str>, usize> {
    sites
        .iter()
        .enumerate()
        .map(|(i, site)| (Arc::from(site.id.as_str()), i))
        .collect()
}
