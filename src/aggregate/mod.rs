//! The aggregation stage: logged, privacy-processed hits in, hourly
//! aggregate deltas out. The feeder ([`feed`]) reads records back from the
//! journal in order and records them under a short lock
//! ([`Intake::feed`]); a flusher task hands full or old-enough batches,
//! each covering a contiguous range of log records, to the writer. After a
//! restart, the first batch ends exactly where the batch the writer was
//! applying when tamis stopped ended (`cut`), so its groups already in
//! ClickHouse are recognised (see sink::writer). Hits
//! held in memory are bounded by `server.queue_capacity`: past it the
//! feeder waits and the backlog stays on disk.

pub mod feed;
pub mod funnels;
pub mod handoff;
pub mod hour;
pub mod sessions;

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::{LiveSites, SiteSettings};
use crate::metrics::Metrics;
use crate::privacy::consent::Consent;
use crate::privacy::pipeline::{DropReason, Dropped, Event, EventKind};
use crate::sink::rows::{
    Batch, DroppedRow, FunnelRow, PropRow, TrafficDelta, VisitDims, NO_PROP_VALUE,
};
use sessions::{Contribution, Sessions};

/// A custom event property's row: (site, hour, event, page, key, value,
/// visitor).
type PropKey = (usize, u32, Arc<str>, Arc<str>, String, String, u64);

/// What ingest hands to the aggregator. Moved by value, a hit at a time:
/// boxing the event would cost an allocation per hit for nothing.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
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
    hostname: Arc<str>,
    consent: Consent,
    visitor: u64,
}

impl RowKey {
    fn of(d: &TrafficDelta) -> RowKey {
        RowKey {
            hour: d.hour,
            dims: Arc::as_ptr(&d.dims) as usize,
            event: d.event.clone(),
            page: d.page.clone(),
            hostname: d.hostname.clone(),
            consent: d.consent,
            visitor: d.visitor,
        }
    }
}

/// Shared entry of the aggregation stage.
pub struct Intake {
    /// `None` once the final batch was taken: nothing may be fed after.
    state: Mutex<Option<Aggregator>>,
    batch_rows: usize,
    flush_interval: Duration,
    due: Notify,
    metrics: Arc<Metrics>,
    clock: Clock,
    /// The sites as a reload leaves them; the aggregator takes the new
    /// list before it handles the next records (see [`Intake::feed`]).
    sites: LiveSites,
}

/// One log record read back: its number, and its messages (`None` when the
/// record could not be read; its number is still accounted for).
pub type Logged = (u64, Option<Vec<Message>>);

impl Intake {
    /// `cut`: the end of the batch in flight when tamis last stopped, if
    /// replay starts inside it.
    pub fn new(
        sites: impl Into<LiveSites>,
        batch_rows: usize,
        flush_interval: Duration,
        metrics: Arc<Metrics>,
        clock: Clock,
        cut: Option<u64>,
    ) -> Intake {
        let sites = sites.into();
        let mut aggregator = Aggregator::with_sites(sites.load());
        aggregator.cut = cut;
        Intake {
            state: Mutex::new(Some(aggregator)),
            batch_rows,
            flush_interval,
            due: Notify::new(),
            metrics,
            clock,
            sites,
        }
    }

    /// Records log records, in log order. `queue_depth` counts records fed
    /// and not yet confirmed by ClickHouse (the writer takes them off); the
    /// feeder keeps it under `server.queue_capacity`. Returns false when
    /// the final batch is already gone.
    pub fn feed(&self, records: Vec<Logged>) -> bool {
        let n = records.len() as u64;
        let full = {
            let mut guard = self.lock();
            let Some(state) = guard.as_mut() else {
                return false;
            };
            // A reload stores the new sites before ingest can name a new
            // site's position: records that do were made after it.
            let sites = self.sites.load();
            if !Arc::ptr_eq(&sites, &state.sites) {
                state.set_sites(sites);
            }
            for (seq, messages) in records {
                state.reach(seq);
                state.note_seq(seq);
                for message in messages.into_iter().flatten() {
                    state.handle(message);
                }
            }
            !state.ready.is_empty() || state.rows() >= self.batch_rows
        };
        self.metrics.queue_depth.fetch_add(n, Ordering::AcqRel);
        if full {
            self.due.notify_one();
        }
        true
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
            tokio::select! {
                _ = ticker.tick() => {
                    if last_sweep.elapsed() >= Duration::from_secs(10) {
                        self.sweep();
                        last_sweep = Instant::now();
                    }
                }
                _ = self.due.notified() => {}
                _ = shutdown.changed() => break,
            }
            let batches = self
                .lock()
                .as_mut()
                .map(|state| state.take_due(self.flush_interval, self.batch_rows))
                .unwrap_or_default();
            self.hand_over(batches, &output).await;
        }
        // Close admission and take what is left in one step, so no hit can
        // slip in after the last batch.
        let last = self
            .lock()
            .take()
            .map(|mut state| {
                if !state.may_end_here() {
                    // Cut short, it would not line up with the batch it
                    // replays: its records stay in the log for the next start.
                    tracing::info!("stopping before the replayed batch was complete; its records stay in the log");
                }
                state.take_due(Duration::ZERO, 0)
            })
            .unwrap_or_default();
        self.hand_over(last, &output).await;
    }

    async fn hand_over(&self, batches: Vec<Batch>, output: &mpsc::Sender<Batch>) {
        for batch in batches {
            if batch.end_seq <= batch.first_seq {
                continue;
            }
            self.metrics.batches_pending.fetch_add(1, Ordering::Relaxed);
            if output.send(batch).await.is_err() {
                tracing::error!("writer is gone; aggregated rows cannot be written");
            }
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

    /// The aggregator's sessions, rows and batch range change in several
    /// steps per record: a panic while the lock was held stops the process
    /// ([`crate::lock::or_abort`]), and the next start replays the log from
    /// the last receipt.
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Aggregator>> {
        crate::lock::or_abort(self.state.lock(), "the aggregator")
    }
}

pub struct Aggregator {
    sites: Arc<Vec<Arc<SiteSettings>>>,
    site_ids: Vec<Arc<str>>,
    sessions: Sessions,
    traffic: Vec<TrafficDelta>,
    rows: HashMap<RowKey, usize>,
    scratch: Vec<TrafficDelta>,
    dropped: HashMap<(Option<usize>, u32, DropReason), u64>,
    /// Custom event properties: (site, hour, event, page, key, value,
    /// visitor) → events.
    props: HashMap<PropKey, u64>,
    /// Visits that reached a funnel step: (site, hour the visit started,
    /// funnel, step from 1) → visits. Counts only: no visit, page or
    /// order is kept beyond the visit's own progress.
    funnels: HashMap<(usize, u32, usize, u8), u64>,
    hits: u64,
    /// Log records this batch covers: `first_seq..end_seq`.
    first_seq: Option<u64>,
    end_seq: u64,
    oldest: Option<Instant>,
    pageview: Arc<str>,
    /// Where the current batch must end, if it replays a batch in flight
    /// when tamis stopped: no batch ends before it, and one ends at it.
    cut: Option<u64>,
    /// Batches ended at the cut, waiting for the flusher.
    ready: Vec<Batch>,
}

impl Aggregator {
    pub fn new(sites: Vec<Arc<SiteSettings>>) -> Self {
        Aggregator::with_sites(Arc::new(sites))
    }

    fn with_sites(sites: Arc<Vec<Arc<SiteSettings>>>) -> Self {
        Aggregator {
            site_ids: sites.iter().map(|s| Arc::from(s.id.as_str())).collect(),
            sites,
            sessions: Sessions::default(),
            traffic: Vec::new(),
            rows: HashMap::new(),
            scratch: Vec::new(),
            dropped: HashMap::new(),
            props: HashMap::new(),
            funnels: HashMap::new(),
            hits: 0,
            first_seq: None,
            end_seq: 0,
            oldest: None,
            pageview: Arc::from("pageview"),
            cut: None,
            ready: Vec::new(),
        }
    }

    /// Takes a reloaded configuration's sites: the same sites at the same
    /// positions, maybe more at the end. Open visits keep their counts.
    fn set_sites(&mut self, sites: Arc<Vec<Arc<SiteSettings>>>) {
        self.site_ids = sites.iter().map(|s| Arc::from(s.id.as_str())).collect();
        self.sites = sites;
    }

    /// Called before record `seq` is fed: at the cut, the batch so far is
    /// set aside, ending exactly there.
    fn reach(&mut self, seq: u64) {
        if self.cut.is_some_and(|cut| seq >= cut) {
            let batch = self.take_batch();
            self.ready.push(batch);
            self.cut = None;
        }
    }

    /// Batches to hand over now: those ended at the cut, and the current
    /// one if it is full or old enough (and does not stop short of the cut).
    fn take_due(&mut self, flush_interval: Duration, batch_rows: usize) -> Vec<Batch> {
        let mut batches = std::mem::take(&mut self.ready);
        let due =
            self.oldest.is_some_and(|t| t.elapsed() >= flush_interval) || self.rows() >= batch_rows;
        if due && self.may_end_here() {
            batches.push(self.take_batch());
        }
        batches
    }

    /// Whether the current batch may end at the last record fed: not while
    /// it stops short of the cut.
    fn may_end_here(&self) -> bool {
        self.cut.is_none_or(|cut| self.end_seq >= cut)
    }

    /// Notes that log record `seq` is part of the next batch.
    pub fn note_seq(&mut self, seq: u64) {
        self.first_seq.get_or_insert(seq);
        self.end_seq = seq + 1;
        self.oldest.get_or_insert_with(Instant::now);
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
        let hostname: Arc<str> = Arc::from(event.hostname.as_str());
        let (name, is_pageview, interactive, engagement) = match &event.kind {
            EventKind::Pageview => (self.pageview.clone(), true, false, None),
            EventKind::Engagement(report) => (Arc::from(""), false, false, Some(*report)),
            EventKind::Custom { name, interactive } => {
                (Arc::from(name.as_str()), false, *interactive, None)
            }
        };
        let only_engagement = engagement.is_some();
        if let EventKind::Custom { .. } = &event.kind {
            let visitor = event.visitor.map(|v| v.sketch_input()).unwrap_or(0);
            let mut count = |key: &str, value: &str| {
                let row = (
                    event.site,
                    hour,
                    name.clone(),
                    page.clone(),
                    key.to_string(),
                    value.to_string(),
                    visitor,
                );
                *self.props.entry(row).or_default() += 1;
            };
            for (key, value) in &event.props {
                count(key, value);
            }
            // Plausible's `(none)` row: the event counted under each
            // allowed key it does not carry, so a breakdown by a key adds
            // up to the event's total.
            for key in &site.prop_keys {
                if !event.props.iter().any(|(k, _)| k == key) {
                    count(key, NO_PROP_VALUE);
                }
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
            utm_content: event.campaign.content,
            utm_term: event.campaign.term,
            click_id: event.campaign.click_id,
            country: event.location.country,
            region: event.location.region,
            browser: agent.browser.clone(),
            browser_version: agent.browser_version.clone(),
            os: agent.os.clone(),
            os_version: agent.os_version.clone(),
            device: agent.device.as_str(),
            language: event.language,
        });
        let mut deltas = std::mem::take(&mut self.scratch);
        match event.visitor {
            Some(visitor) => {
                let visit = self.sessions.record(
                    Contribution {
                        site: event.site,
                        visitor: visitor.sketch_input(),
                        at: event.at,
                        hour,
                        event: name.clone(),
                        page: page.clone(),
                        hostname: hostname.clone(),
                        consent: event.consent,
                        is_pageview,
                        interactive,
                        engagement,
                        dims,
                        funnels: site.funnels.len(),
                    },
                    &mut deltas,
                );
                // A step belongs to the hour its visit started in, as the
                // visit's own counts do: over any range, the visits
                // counted at a step were counted at the step before.
                if let Some(visit) = visit.filter(|_| !only_engagement) {
                    let counts = &mut self.funnels;
                    funnels::advance(
                        visit.funnels,
                        &site.funnels,
                        &site.goals,
                        &name,
                        &page,
                        |funnel, step| {
                            *counts
                                .entry((event.site, visit.start_hour, funnel, step))
                                .or_default() += 1;
                        },
                    );
                }
            }
            // Counted without visitor key: pageviews and events only.
            None if !only_engagement => deltas.push(TrafficDelta {
                hour,
                dims,
                event: name,
                page,
                hostname,
                consent: event.consent,
                visitor: 0,
                pageviews: u64::from(is_pageview),
                events: u64::from(!is_pageview),
                visits: 0,
                bounces: 0,
                duration: 0,
                exits: 0,
                engagement: Default::default(),
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
        self.traffic.len() + self.dropped.len() + self.props.len() + self.funnels.len()
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
        let funnels = self
            .funnels
            .drain()
            .map(|((site, hour, funnel, step), visits)| FunnelRow {
                site_id: self.sites[site].id.clone(),
                hour,
                funnel: self.sites[site].funnels[funnel].name.clone(),
                step,
                visits,
            })
            .collect();
        self.oldest = None;
        self.rows.clear();
        if self.cut.is_some_and(|cut| self.end_seq >= cut) {
            self.cut = None;
        }
        let first_seq = self.first_seq.take().unwrap_or(self.end_seq);
        Batch {
            props,
            funnels,
            traffic: std::mem::take(&mut self.traffic),
            dropped,
            hits: std::mem::take(&mut self.hits),
            first_seq,
            end_seq: self.end_seq.max(first_seq),
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
            hostname: "example.org".into(),
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
                    os_version: String::new(),
                    device: Device::Desktop,
                },
            }),
            language: "fr".into(),
            consent: Consent::Unset,
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

    /// Feeds records `seqs` (a pageview each) as the feeder does.
    fn feed(intake: &Intake, seqs: std::ops::Range<u64>) {
        let records = seqs
            .map(|seq| {
                let message = Message::Event(event(seq as i64 % 50, "/", Some(seq)));
                (seq, Some(vec![message]))
            })
            .collect();
        assert!(intake.feed(records));
    }

    fn take(intake: &Intake, interval: Duration, rows: usize) -> Vec<(u64, u64)> {
        intake
            .lock()
            .as_mut()
            .unwrap()
            .take_due(interval, rows)
            .into_iter()
            .map(|b| (b.first_seq, b.end_seq))
            .collect()
    }

    #[test]
    fn replay_cuts_the_batch_in_flight_at_the_same_record() {
        // The writer was applying records 10..17 when tamis stopped.
        let intake = Intake::new(
            vec![Arc::new(test_site("example.org"))],
            3,
            Duration::ZERO,
            Arc::new(Metrics::default()),
            Clock::system(),
            Some(17),
        );
        // Full (3 rows) and old enough, but short of the cut: kept.
        feed(&intake, 10..15);
        assert_eq!(take(&intake, Duration::ZERO, 3), vec![]);
        // Records past the cut arrive in the same feed: the batch ends at 17.
        feed(&intake, 15..20);
        assert_eq!(take(&intake, Duration::ZERO, 3), vec![(10, 17), (17, 20)]);
        // After the cut, batches are taken as usual.
        feed(&intake, 20..22);
        assert_eq!(take(&intake, Duration::ZERO, 3), vec![(20, 22)]);
    }

    #[test]
    fn a_cut_at_the_end_of_what_is_fed_is_taken_whole() {
        let intake = Intake::new(
            vec![Arc::new(test_site("example.org"))],
            100,
            Duration::ZERO,
            Arc::new(Metrics::default()),
            Clock::system(),
            Some(13),
        );
        feed(&intake, 10..13);
        assert_eq!(take(&intake, Duration::ZERO, 100), vec![(10, 13)]);
        feed(&intake, 13..15);
        assert_eq!(take(&intake, Duration::ZERO, 100), vec![(13, 15)]);
    }

    /// Visits per (hour, funnel, step) of what `events` make, with goals
    /// /a (page), Signup (event), /b (page) and the funnel a → Signup → b.
    fn funnel_rows(events: Vec<Event>) -> Vec<(u32, String, u8, u64)> {
        let mut site = test_site("example.org");
        site.event_names.insert("Signup".into());
        site.goals = vec![
            crate::goal::Goal::page("/a", None).unwrap(),
            crate::goal::Goal::event("Signup", None).unwrap(),
            crate::goal::Goal::page("/b", None).unwrap(),
        ];
        site.funnels = vec![crate::goal::Funnel {
            name: "f".into(),
            steps: vec![0, 1, 2],
        }];
        let mut agg = Aggregator::new(vec![Arc::new(site)]);
        for e in events {
            agg.handle(Message::Event(e));
        }
        let mut rows: Vec<_> = agg
            .take_batch()
            .funnels
            .into_iter()
            .map(|r| (r.hour, r.funnel, r.step, r.visits))
            .collect();
        rows.sort();
        rows
    }

    fn signup(minute: i64, visitor: u64) -> Event {
        Event {
            kind: EventKind::Custom {
                name: "Signup".into(),
                interactive: true,
            },
            ..event(minute, "/a", Some(visitor))
        }
    }

    #[test]
    fn funnel_steps_count_per_visit_in_the_hour_it_started() {
        // 2026-11-23 15:00 UTC, the hour every visit here starts in.
        let h15 = 1_795_446_000;
        let rows = funnel_rows(vec![
            // Visitor 1: the whole funnel, its last step in the next hour.
            event(50, "/a", Some(1)),
            signup(55, 1),
            event(65, "/b", Some(1)),
            // Visitor 2: Signup before /a (out of order), then /a twice.
            event(10, "/", Some(2)),
            signup(11, 2),
            event(12, "/a", Some(2)),
            event(13, "/a", Some(2)),
            // Visitor 3: /a, then after 30 idle minutes a new visit that
            // signs up: not step 2 of the first visit.
            event(0, "/a", Some(3)),
            signup(40, 3),
            event(41, "/b", Some(3)),
            // Without a visitor key there is no visit to follow.
            event(5, "/a", None),
        ]);
        assert_eq!(
            rows,
            vec![
                (h15, "f".to_string(), 1, 3),
                (h15, "f".to_string(), 2, 1),
                (h15, "f".to_string(), 3, 1),
            ],
            "visitor 1's last step, reached at 16:05, counts at 15:00"
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
