//! The row types written to ClickHouse. They are inputs of aggregate tables:
//! `traffic_in` is a `Null` table whose materialized view folds rows into
//! `traffic_hourly`, so no row, and no visitor value, is ever stored as is.

use std::sync::Arc;

use clickhouse::Row;
use serde::Serialize;

/// What a visit shares across its pageviews: taken from its first hit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VisitDims {
    pub site_id: Arc<str>,
    pub entry_page: String,
    pub source: String,
    pub referrer: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub country: String,
    pub region: String,
    pub browser: String,
    pub browser_version: String,
    pub os: String,
    pub device: &'static str,
    pub language: String,
}

/// One contribution to the hourly aggregates: a pageview or event, or a
/// correction of a visit's bounce, duration or exit page. Counts are signed
/// so a later hit can move a visit's exit page or undo its bounce.
#[derive(Debug, Clone)]
pub struct TrafficDelta {
    /// Start of the site-local hour, in seconds since the epoch.
    pub hour: u32,
    pub dims: Arc<VisitDims>,
    /// `pageview` (also for corrections of a visit), a custom event name,
    /// or "" for engagement.
    pub event: Arc<str>,
    pub page: Arc<str>,
    pub consent: crate::privacy::consent::Consent,
    /// 0 for hits counted without a visitor key. Corrections carry it so
    /// they can merge with the same visitor's rows of the batch; it is
    /// written only for rows that count a pageview or event.
    pub visitor: u64,
    pub pageviews: u64,
    pub events: u64,
    pub visits: i64,
    pub bounces: i64,
    pub duration: i64,
    pub exits: i64,
}

/// The wire form of a [`TrafficDelta`]; field order is the column order of
/// `traffic_in` (RowBinary has no names).
#[derive(Row, Serialize)]
pub struct TrafficRow<'a> {
    pub site_id: &'a str,
    pub hour: u32,
    pub event: &'a str,
    pub page: &'a str,
    pub entry_page: &'a str,
    pub source: &'a str,
    pub referrer: &'a str,
    pub utm_source: &'a str,
    pub utm_medium: &'a str,
    pub utm_campaign: &'a str,
    pub country: &'a str,
    pub region: &'a str,
    pub browser: &'a str,
    pub browser_version: &'a str,
    pub os: &'a str,
    pub device: &'a str,
    pub language: &'a str,
    pub consent: &'a str,
    pub visitor: u64,
    pub pageviews: u64,
    pub events: u64,
    pub visits: i64,
    pub bounces: i64,
    pub duration: i64,
    pub exits: i64,
}

impl TrafficDelta {
    /// Adds `other`'s counts, for two deltas with the same row key.
    pub fn absorb(&mut self, other: &TrafficDelta) {
        self.pageviews += other.pageviews;
        self.events += other.events;
        self.visits += other.visits;
        self.bounces += other.bounces;
        self.duration += other.duration;
        self.exits += other.exits;
    }

    pub fn as_row(&self) -> TrafficRow<'_> {
        let d = &*self.dims;
        TrafficRow {
            site_id: &d.site_id,
            hour: self.hour,
            event: &self.event,
            page: &self.page,
            entry_page: &d.entry_page,
            source: &d.source,
            referrer: &d.referrer,
            utm_source: &d.utm_source,
            utm_medium: &d.utm_medium,
            utm_campaign: &d.utm_campaign,
            country: &d.country,
            region: &d.region,
            browser: &d.browser,
            browser_version: &d.browser_version,
            os: &d.os,
            device: d.device,
            language: &d.language,
            consent: self.consent.as_str(),
            // A row that counts no pageview or event (a correction) must not
            // count its visitor for that page.
            visitor: if self.pageviews + self.events > 0 {
                self.visitor
            } else {
                0
            },
            pageviews: self.pageviews,
            events: self.events,
            visits: self.visits,
            bounces: self.bounces,
            duration: self.duration,
            exits: self.exits,
        }
    }
}

/// Hits not counted, by site, hour and reason (`dropped_hourly`).
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize)]
pub struct DroppedRow {
    pub site_id: String,
    pub hour: u32,
    pub reason: &'static str,
    pub hits: u64,
}

/// A custom event's allow-listed property (`props_in` → `props_hourly`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Row, Serialize)]
pub struct PropRow {
    pub site_id: String,
    pub hour: u32,
    pub event: String,
    pub page: String,
    pub prop_key: String,
    pub prop_value: String,
    pub visitor: u64,
    pub events: u64,
}

/// One batch for the writer: everything aggregated from the log records
/// numbered `first_seq..end_seq`.
#[derive(Debug, Default)]
pub struct Batch {
    pub traffic: Vec<TrafficDelta>,
    pub dropped: Vec<DroppedRow>,
    pub props: Vec<PropRow>,
    /// Hits (accepted or dropped) this batch accounts for.
    pub hits: u64,
    pub first_seq: u64,
    pub end_seq: u64,
}

/// What a batch's receipt says: which log records it applied. Written once
/// every group of the batch is in, by its own insert (`batch_in` →
/// `batch_receipts`).
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, serde::Deserialize)]
pub struct Receipt {
    pub journal_id: String,
    pub first_seq: u64,
    pub end_seq: u64,
    /// "" (batches written before delivery marks used it for parts of a
    /// batch split up because ClickHouse refused some of its rows).
    pub part: String,
    pub hits: u64,
}

/// Event name of the delivery marks in `traffic_hourly` and
/// `props_hourly`, and prefix of their reason in `dropped_hourly`. A mark
/// is a row of its own (page: the journal id) whose `events` (`hits` in
/// `dropped_hourly`) add up to how far the journal's records are applied
/// to that table, site and hour; it is written by the same insert, hence
/// in the same part, as the rows it vouches for (see sink::writer). It
/// counts no pageview, visit or visitor; readers of `events` or `hits`
/// leave it out, and `event_names` may not use the name.
pub const DELIVERY_MARK: &str = "tamis:delivered";

/// One row of the `batch_in` Null table: the materialized views route each
/// kind of row (traffic deltas, dropped counts, properties, receipts) to
/// its table. Field order is the column order of `batch_in`.
#[derive(Debug, Default, Row, Serialize)]
pub struct BatchRow<'a> {
    pub kind: &'a str,
    pub site_id: &'a str,
    pub hour: u32,
    pub event: &'a str,
    pub page: &'a str,
    pub entry_page: &'a str,
    pub source: &'a str,
    pub referrer: &'a str,
    pub utm_source: &'a str,
    pub utm_medium: &'a str,
    pub utm_campaign: &'a str,
    pub country: &'a str,
    pub region: &'a str,
    pub browser: &'a str,
    pub browser_version: &'a str,
    pub os: &'a str,
    pub device: &'a str,
    pub language: &'a str,
    pub consent: &'a str,
    pub visitor: u64,
    pub pageviews: u64,
    pub events: u64,
    pub visits: i64,
    pub bounces: i64,
    pub duration: i64,
    pub exits: i64,
    pub reason: &'a str,
    pub hits: u64,
    pub prop_key: &'a str,
    pub prop_value: &'a str,
    pub journal_id: &'a str,
    pub first_seq: u64,
    pub end_seq: u64,
    pub part: &'a str,
}

impl<'a> BatchRow<'a> {
    pub fn traffic(d: &'a TrafficDelta) -> Self {
        let r = d.as_row();
        BatchRow {
            kind: "traffic",
            site_id: r.site_id,
            hour: r.hour,
            event: r.event,
            page: r.page,
            entry_page: r.entry_page,
            source: r.source,
            referrer: r.referrer,
            utm_source: r.utm_source,
            utm_medium: r.utm_medium,
            utm_campaign: r.utm_campaign,
            country: r.country,
            region: r.region,
            browser: r.browser,
            browser_version: r.browser_version,
            os: r.os,
            device: r.device,
            language: r.language,
            consent: r.consent,
            visitor: r.visitor,
            pageviews: r.pageviews,
            events: r.events,
            visits: r.visits,
            bounces: r.bounces,
            duration: r.duration,
            exits: r.exits,
            ..BatchRow::default()
        }
    }

    pub fn dropped(d: &'a DroppedRow) -> Self {
        BatchRow {
            kind: "dropped",
            site_id: &d.site_id,
            hour: d.hour,
            reason: d.reason,
            hits: d.hits,
            ..BatchRow::default()
        }
    }

    pub fn prop(p: &'a PropRow) -> Self {
        BatchRow {
            kind: "prop",
            site_id: &p.site_id,
            hour: p.hour,
            event: &p.event,
            page: &p.page,
            prop_key: &p.prop_key,
            prop_value: &p.prop_value,
            visitor: p.visitor,
            events: p.events,
            ..BatchRow::default()
        }
    }

    /// The delivery mark of `kind` rows for `site_id` and `hour`: moves the
    /// mark forward by `step`. `label` is the journal id, or for dropped
    /// rows the reason `tamis:delivered:<journal id>`.
    pub fn mark(kind: &'a str, site_id: &'a str, hour: u32, label: &'a str, step: u64) -> Self {
        let mut row = BatchRow {
            kind,
            site_id,
            hour,
            ..BatchRow::default()
        };
        if kind == "dropped" {
            row.reason = label;
            row.hits = step;
        } else {
            row.event = DELIVERY_MARK;
            row.page = label;
            row.events = step;
        }
        row
    }

    pub fn receipt(r: &'a Receipt) -> Self {
        BatchRow {
            kind: "receipt",
            journal_id: &r.journal_id,
            first_seq: r.first_seq,
            end_seq: r.end_seq,
            part: &r.part,
            hits: r.hits,
            ..BatchRow::default()
        }
    }
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.traffic.is_empty() && self.dropped.is_empty() && self.props.is_empty()
    }
}
