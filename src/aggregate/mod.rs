//! The aggregation stage: privacy-processed events in, hourly aggregate
//! deltas out. Request handlers record their hits directly under a short
//! lock ([`Intake::admit`]) — no hand-off to another task per hit — and a
//! flusher task hands full or old-enough batches to the writer. Hits not yet
//! written are bounded: past the capacity, ingest answers 503, so pressure
//! travels upstream instead of memory growing.

pub mod hour;
pub mod sessions;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::SiteSettings;
use crate::metrics::Metrics;
use crate::privacy::pipeline::{DropReason, Dropped, Event, EventKind};
use crate::sink::rows::{Batch, DroppedRow, PropRow, TrafficDelta, VisitDims};
use sessions::{Contribution, Sessions};

/// What ingest hands to the aggregator.
#[derive(Debug)]
pub enum Message {
    Event(Event),
    Dropped(Dropped, DateTime<Utc>),
}

/// Deltas with equal keys become one row of the batch. Visit dimensions are
/// compared by pointer: every delta of a visit shares one `Arc`.
#[derive(PartialEq, Eq, Hash)]
struct RowKey {
    hour: u32,
    dims: usize,
    event: Arc<str>,
    page: Arc<str>,
    consent: &'static str,
    visitor: u64,
}

impl RowKey {
    fn of(d: &TrafficDelta) -> RowKey {
        RowKey {
            hour: d.hour,
            dims: Arc::as_ptr(&d.dims) as usize,
            event: d.event.clone(),
            page: d.page.clone(),
            consent: d.consent,
            visitor: d.visitor,
        }
    }
}

/// Shared entry of the aggregation stage.
pub struct Intake {
    /// `None` once the final batch was taken: nothing may be admitted after.
    state: Mutex<Option<Aggregator>>,
    /// Most hits held between admission and their batch being written.
    capacity: u64,
    batch_rows: usize,
    flush_interval: Duration,
    due: Notify,
    metrics: Arc<Metrics>,
    clock: Clock,
}

/// The hit was not admitted: too many are waiting to be written.
#[derive(Debug)]
pub struct Overloaded;

impl Intake {
    pub fn new(
        sites: Vec<Arc<SiteSettings>>,
        capacity: usize,
        batch_rows: usize,
        flush_interval: Duration,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Intake {
        Intake {
            state: Mutex::new(Some(Aggregator::new(sites))),
            capacity: capacity as u64,
            batch_rows,
            flush_interval,
            due: Notify::new(),
            metrics,
            clock,
        }
    }

    /// Records all of a hit's messages, or none of them.
    pub fn admit(&self, messages: Vec<Message>) -> Result<(), Overloaded> {
        let n = messages.len() as u64;
        // `queue_depth` counts hits admitted and not yet written; the writer
        // takes them off when ClickHouse confirms their batch.
        let before = self.metrics.queue_depth.fetch_add(n, Ordering::AcqRel);
        if before + n > self.capacity {
            self.metrics.queue_depth.fetch_sub(n, Ordering::AcqRel);
            return Err(Overloaded);
        }
        let full = {
            let mut guard = self.lock();
            let Some(state) = guard.as_mut() else {
                // Shutting down: the last batch is gone; refuse, never drop.
                self.metrics.queue_depth.fetch_sub(n, Ordering::AcqRel);
                return Err(Overloaded);
            };
            for message in messages {
                state.handle(message);
            }
            state.rows() >= self.batch_rows
        };
        if full {
            self.due.notify_one();
        }
        Ok(())
    }

    /// Hands batches to the writer when full or old enough, until
    /// `shutdown` turns true; then hands over what is left and returns,
    /// which closes the writer's input.
    pub async fn run(
        self: Arc<Self>,
        output: mpsc::Sender<Batch>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let tick = (self.flush_interval / 4).max(Duration::from_millis(5));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sweep = Instant::now();
        loop {
            let take = tokio::select! {
                _ = ticker.tick() => {
                    if last_sweep.elapsed() >= Duration::from_secs(10) {
                        self.sweep();
                        last_sweep = Instant::now();
                    }
                    self.lock().as_ref().is_some_and(|state| {
                        state.oldest.is_some_and(|t| t.elapsed() >= self.flush_interval) || state.rows() >= self.batch_rows
                    })
                }
                _ = self.due.notified() => true,
                _ = shutdown.changed() => break,
            };
            if take {
                let batch = self.lock().as_mut().map(Aggregator::take_batch);
                self.hand_over(batch, &output).await;
            }
        }
        // Close admission and take what is left in one step, so no hit can
        // slip in after the last batch.
        let last = self.lock().take().map(|mut state| state.take_batch());
        self.hand_over(last, &output).await;
    }

    async fn hand_over(&self, batch: Option<Batch>, output: &mpsc::Sender<Batch>) {
        let Some(batch) = batch.filter(|b| b.hits > 0) else {
            return;
        };
        self.metrics.batches_pending.fetch_add(1, Ordering::Relaxed);
        if output.send(batch).await.is_err() {
            tracing::error!("writer is gone; aggregated rows cannot be written");
        }
    }

    fn sweep(&self) {
        let mut guard = self.lock();
        let Some(state) = guard.as_mut() else {
            return;
        };
        let gone = state.sessions.sweep(self.clock.now());
        self.metrics
            .sessions_open
            .store(state.sessions.len() as u64, Ordering::Relaxed);
        tracing::debug!(
            closed = gone,
            open = state.sessions.len(),
            "swept idle visits"
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Aggregator>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Aggregator {
    sites: Vec<Arc<SiteSettings>>,
    site_ids: Vec<Arc<str>>,
    sessions: Sessions,
    traffic: Vec<TrafficDelta>,
    rows: HashMap<RowKey, usize>,
    scratch: Vec<TrafficDelta>,
    dropped: HashMap<(Option<usize>, u32, DropReason), u64>,
    /// Custom event properties: (site, hour, event, page, key, value,
    /// visitor) → events.
    props: HashMap<(usize, u32, Arc<str>, Arc<str>, String, String, u64), u64>,
    hits: u64,
    oldest: Option<Instant>,
    pageview: Arc<str>,
}

impl Aggregator {
    pub fn new(sites: Vec<Arc<SiteSettings>>) -> Self {
        Aggregator {
            site_ids: sites.iter().map(|s| Arc::from(s.id.as_str())).collect(),
            sites,
            sessions: Sessions::default(),
            traffic: Vec::new(),
            rows: HashMap::new(),
            scratch: Vec::new(),
            dropped: HashMap::new(),
            props: HashMap::new(),
            hits: 0,
            oldest: None,
            pageview: Arc::from("pageview"),
        }
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
                *self
                    .dropped
                    .entry((dropped.site, hour, dropped.reason))
                    .or_default() += 1;
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
        if let EventKind::Custom(_) = &event.kind {
            let visitor = event.visitor.map(|v| v.sketch_input()).unwrap_or(0);
            for (key, value) in &event.props {
                let row = (
                    event.site,
                    hour,
                    name.clone(),
                    page.clone(),
                    key.clone(),
                    value.clone(),
                    visitor,
                );
                *self.props.entry(row).or_default() += 1;
            }
        }
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
        let mut deltas = std::mem::take(&mut self.scratch);
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
                &mut deltas,
            ),
            // Counted without visitor key: pageviews and events only.
            None if !only_engagement => deltas.push(TrafficDelta {
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
        for delta in deltas.drain(..) {
            self.add(delta);
        }
        self.scratch = deltas;
    }

    /// Adds a delta to the batch, merged into an equal-keyed row if any.
    fn add(&mut self, delta: TrafficDelta) {
        match self.rows.entry(RowKey::of(&delta)) {
            std::collections::hash_map::Entry::Occupied(slot) => {
                self.traffic[*slot.get()].absorb(&delta)
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(self.traffic.len());
                self.traffic.push(delta);
            }
        }
    }

    /// Rows the next batch holds so far.
    pub fn rows(&self) -> usize {
        self.traffic.len() + self.dropped.len() + self.props.len()
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
        let props = self
            .props
            .drain()
            .map(
                |((site, hour, event, page, prop_key, prop_value, visitor), events)| PropRow {
                    site_id: self.sites[site].id.clone(),
                    hour,
                    event: event.to_string(),
                    page: page.to_string(),
                    prop_key,
                    prop_value,
                    visitor,
                    events,
                },
            )
            .collect();
        self.oldest = None;
        self.rows.clear();
        Batch {
            props,
            traffic: std::mem::take(&mut self.traffic),
            dropped,
            hits: std::mem::take(&mut self.hits),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::agent::{Agent, Device, ReducedAgent};
    use crate::privacy::geo::Location;
    use crate::privacy::pipeline::test_site;
    use crate::privacy::referrer::{Medium, Referrer};
    use crate::privacy::url::Campaign;

    fn event(minute: i64, page: &str, visitor: Option<u64>) -> Event {
        let start: DateTime<Utc> = "2026-11-23T15:00:00Z".parse().unwrap();
        Event {
            site: 0,
            at: start + chrono::Duration::minutes(minute),
            kind: EventKind::Pageview,
            path: page.into(),
            referrer: Referrer {
                host: String::new(),
                source: "Direct / None".into(),
                medium: Medium::Direct,
            },
            campaign: Campaign::default(),
            location: Location::default(),
            agent: Arc::new(Agent {
                bot: false,
                reduced: ReducedAgent {
                    browser: "Firefox".into(),
                    browser_version: "133".into(),
                    os: "Linux".into(),
                    device: Device::Desktop,
                },
            }),
            language: "fr".into(),
            consent: "none",
            visitor: visitor.map(crate::privacy::visitor::VisitorKey::for_tests),
            props: Vec::new(),
        }
    }

    fn check(events: Vec<Event>, expected_rows: usize, expected: (u64, i64, i64, i64)) {
        let mut agg = Aggregator::new(vec![Arc::new(test_site("example.org"))]);
        for e in events {
            agg.handle(Message::Event(e));
        }
        let batch = agg.take_batch();
        assert_eq!(batch.traffic.len(), expected_rows);
        let t = batch.traffic.iter().fold((0, 0, 0, 0), |t, d| {
            (
                t.0 + d.pageviews,
                t.1 + d.visits,
                t.2 + d.bounces,
                t.3 + d.exits,
            )
        });
        assert_eq!(t, expected);
    }

    #[test]
    fn a_visit_back_and_forth_merges_into_one_row_per_page() {
        // A → B → A → B: the exit corrections cancel against the pages.
        let pages = ["/a", "/b", "/a", "/b"];
        check(
            pages
                .iter()
                .enumerate()
                .map(|(i, p)| event(i as i64, p, Some(7)))
                .collect(),
            2,
            (4, 1, 0, 1),
        );
    }

    #[test]
    fn anonymous_hits_are_not_visits() {
        check(
            vec![event(0, "/", None), event(1, "/", None)],
            2,
            (2, 0, 0, 0),
        );
    }
}
