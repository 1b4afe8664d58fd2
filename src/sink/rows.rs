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
    pub consent: &'static str,
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
            consent: self.consent,
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

/// One batch for the writer: everything aggregated since the last flush.
#[derive(Debug, Default)]
pub struct Batch {
    pub traffic: Vec<TrafficDelta>,
    pub dropped: Vec<DroppedRow>,
    pub props: Vec<PropRow>,
    /// Hits (accepted or dropped) this batch accounts for.
    pub hits: u64,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.traffic.is_empty() && self.dropped.is_empty() && self.props.is_empty()
    }
}
