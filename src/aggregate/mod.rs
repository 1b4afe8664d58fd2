//! The aggregation stage: privacy-processed events in, hourly aggregate
//! deltas out. One task owns the in-memory sessions, so they need no lock;
//! it hands full or old-enough batches to the writer and waits when the
//! writer is behind, which fills the ingest queue and makes ingest answer
//! 503: pressure travels upstream instead of memory growing.

pub mod hour;
pub mod sessions;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::SiteSettings;
use crate::metrics::Metrics;
use crate::privacy::pipeline::{DropReason, Dropped, Event, EventKind};
use crate::sink::rows::{Batch, DroppedRow, TrafficDelta, VisitDims};
use sessions::{Contribution, Sessions};

/// What ingest hands to the aggregator.
#[derive(Debug)]
pub enum Message {
    Event(Event),
    Dropped(Dropped, DateTime<Utc>),
}

pub struct Aggregator {
    sites: Vec<Arc<SiteSettings>>,
    site_ids: Vec<Arc<str>>,
    sessions: Sessions,
    traffic: Vec<TrafficDelta>,
    dropped: HashMap<(Option<usize>, u32, DropReason), u64>,
    hits: u64,
    oldest: Option<Instant>,
    batch_rows: usize,
    flush_interval: Duration,
    metrics: Arc<Metrics>,
    clock: Clock,
    pageview: Arc<str>,
}

impl Aggregator {
    pub fn new(
        sites: Vec<Arc<SiteSettings>>,
        batch_rows: usize,
        flush_interval: Duration,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Self {
        Aggregator {
            site_ids: sites.iter().map(|s| Arc::from(s.id.as_str())).collect(),
            sites,
            sessions: Sessions::default(),
            traffic: Vec::new(),
            dropped: HashMap::new(),
            hits: 0,
            oldest: None,
            batch_rows,
            flush_interval,
            metrics,
            clock,
            pageview: Arc::from("pageview"),
        }
    }

    /// Runs until every sender of `input` is gone, then flushes what is
    /// left: every message received ends up in a batch.
    pub async fn run(mut self, mut input: mpsc::Receiver<Message>, output: mpsc::Sender<Batch>) {
        let tick = (self.flush_interval / 4).max(Duration::from_millis(5));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sweep = Instant::now();
        loop {
            tokio::select! {
                message = input.recv() => match message {
                    Some(message) => {
                        self.metrics.queue_depth.store(input.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        self.handle(message);
                        if self.traffic.len() + self.dropped.len() >= self.batch_rows {
                            self.flush(&output).await;
                        }
                    }
                    None => break,
                },
                _ = ticker.tick() => {
                    if self.oldest.is_some_and(|t| t.elapsed() >= self.flush_interval) {
                        self.flush(&output).await;
                    }
                    if last_sweep.elapsed() >= Duration::from_secs(10) {
                        let gone = self.sessions.sweep(self.clock.now());
                        self.metrics.sessions_open.store(self.sessions.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        tracing::debug!(closed = gone, open = self.sessions.len(), "swept idle visits");
                        last_sweep = Instant::now();
                    }
                }
            }
        }
        self.flush(&output).await;
    }

    pub fn handle(&mut self, message: Message) {
        self.hits += 1;
        self.oldest.get_or_insert_with(Instant::now);
        match message {
            Message::Dropped(dropped, at) => {
                let hour = match dropped.site {
                    Some(i) => hour::local_hour_start(at, self.sites[i].timezone),
                    None => hour::local_hour_start(at, chrono_tz::UTC),
                };
                *self.dropped.entry((dropped.site, hour, dropped.reason)).or_default() += 1;
            }
            Message::Event(event) => self.record(event),
        }
    }

    fn record(&mut self, event: Event) {
        let site = &self.sites[event.site];
        let hour = hour::local_hour_start(event.at, site.timezone);
        let page: Arc<str> = Arc::from(event.path.as_str());
        let (name, is_pageview, only_engagement) = match &event.kind {
            EventKind::Pageview => (self.pageview.clone(), true, false),
            EventKind::Engagement => (Arc::from(""), false, true),
            EventKind::Custom(name) => (Arc::from(name.as_str()), false, false),
        };
        let agent = &event.agent.reduced;
        let dims = Arc::new(VisitDims {
            site_id: self.site_ids[event.site].clone(),
            entry_page: event.path,
            source: event.referrer.source,
            referrer: event.referrer.host,
            utm_source: event.campaign.source,
            utm_medium: event.campaign.medium,
            utm_campaign: event.campaign.campaign,
            country: event.location.country,
            region: event.location.region,
            browser: agent.browser.clone(),
            browser_version: agent.browser_version.clone(),
            os: agent.os.clone(),
            device: agent.device.as_str(),
            language: event.language,
        });
        match event.visitor {
            Some(visitor) => self.sessions.record(
                Contribution {
                    site: event.site,
                    visitor: visitor.sketch_input(),
                    at: event.at,
                    hour,
                    event: name,
                    page,
                    consent: event.consent,
                    is_pageview,
                    only_engagement,
                    dims,
                },
                &mut self.traffic,
            ),
            // Counted without visitor key: pageviews and events only.
            None if !only_engagement => self.traffic.push(TrafficDelta {
                hour,
                dims,
                event: name,
                page,
                consent: event.consent,
                visitor: 0,
                pageviews: u64::from(is_pageview),
                events: u64::from(!is_pageview),
                visits: 0,
                bounces: 0,
                duration: 0,
                exits: 0,
            }),
            None => {}
        }
    }

    /// Takes what has accumulated as one batch.
    pub fn take_batch(&mut self) -> Batch {
        let dropped = self
            .dropped
            .drain()
            .map(|((site, hour, reason), hits)| DroppedRow {
                site_id: site.map(|i| self.sites[i].id.clone()).unwrap_or_default(),
                hour,
                reason: reason.as_str(),
                hits,
            })
            .collect();
        self.oldest = None;
        Batch {
            traffic: std::mem::take(&mut self.traffic),
            dropped,
            hits: std::mem::take(&mut self.hits),
        }
    }

    async fn flush(&mut self, output: &mpsc::Sender<Batch>) {
        let batch = self.take_batch();
        if batch.is_empty() && batch.hits == 0 {
            return;
        }
        self.metrics.batches_pending.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if output.send(batch).await.is_err() {
            tracing::error!("writer is gone; aggregated rows cannot be written");
        }
    }
}
