//! The row types written to ClickHouse, and the one list of their columns
//! ([`BatchRow`], defined with [`TRAFFIC_DIMENSIONS`], [`TRAFFIC_COUNTS`]
//! and [`BATCH_EXTRA`]) that the schema builds its tables from. They are
//! inputs of aggregate tables: `batch_in` is a `Null` table whose
//! materialized views fold rows into `traffic_hourly`, `dropped_hourly`,
//! `props_hourly`, `funnel_hourly` and `batch_receipts` by [`RowKind`], so
//! no row, and no visitor value, is ever stored as is.

use std::borrow::Cow;
use std::sync::Arc;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

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
    pub utm_content: String,
    pub utm_term: String,
    /// `gclid` or `msclkid` when the entry page's URL had one, for the
    /// paid channels; never the id itself.
    pub click_id: String,
    pub country: String,
    pub region: String,
    pub browser: String,
    pub browser_version: String,
    pub os: String,
    pub os_version: String,
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
    /// The page's host name (Plausible's `event:hostname`).
    pub hostname: Arc<str>,
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
    pub engagement: EngagementCounts,
}

/// A page's engagement, as Plausible's `time_on_page` and `scroll_depth`
/// read it: per (visit, page) that reported any, the engaged time summed
/// and the deepest scroll. Written as signed corrections, like exits: a
/// deeper scroll on a page already counted adds only the difference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngagementCounts {
    /// Milliseconds the page was visible and focused.
    pub engaged_ms: i64,
    /// (visit, page) pairs that reported engaged time.
    pub engaged_visits: i64,
    /// Sum over (visit, page) pairs of their deepest scroll, in percent.
    pub scroll_total: i64,
    /// (visit, page) pairs that reported a scroll depth.
    pub scroll_visits: i64,
}

impl EngagementCounts {
    pub fn add(&mut self, other: &EngagementCounts) {
        self.engaged_ms += other.engaged_ms;
        self.engaged_visits += other.engaged_visits;
        self.scroll_total += other.scroll_total;
        self.scroll_visits += other.scroll_visits;
    }

    pub fn is_zero(&self) -> bool {
        *self == EngagementCounts::default()
    }
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
        self.engagement.add(&other.engagement);
    }

    /// The delta as a row of `batch_in`.
    pub fn as_row(&self) -> BatchRow<'_> {
        let d = &*self.dims;
        let mut row = BatchRow::blank(RowKind::Traffic);
        row.site_id = Cow::Borrowed(&d.site_id);
        row.hour = self.hour;
        row.event = Cow::Borrowed(&self.event);
        row.page = Cow::Borrowed(&self.page);
        row.entry_page = Cow::Borrowed(&d.entry_page);
        row.source = Cow::Borrowed(&d.source);
        row.referrer = Cow::Borrowed(&d.referrer);
        row.utm_source = Cow::Borrowed(&d.utm_source);
        row.utm_medium = Cow::Borrowed(&d.utm_medium);
        row.utm_campaign = Cow::Borrowed(&d.utm_campaign);
        row.utm_content = Cow::Borrowed(&d.utm_content);
        row.utm_term = Cow::Borrowed(&d.utm_term);
        row.click_id = Cow::Borrowed(&d.click_id);
        row.country = Cow::Borrowed(&d.country);
        row.region = Cow::Borrowed(&d.region);
        row.browser = Cow::Borrowed(&d.browser);
        row.browser_version = Cow::Borrowed(&d.browser_version);
        row.os = Cow::Borrowed(&d.os);
        row.os_version = Cow::Borrowed(&d.os_version);
        row.device = Cow::Borrowed(d.device);
        row.language = Cow::Borrowed(&d.language);
        row.hostname = Cow::Borrowed(&self.hostname);
        row.consent = Cow::Borrowed(self.consent.as_str());
        // A row that counts no pageview or event (a correction) must not
        // count its visitor for that page.
        row.visitor = if self.pageviews + self.events > 0 {
            self.visitor
        } else {
            0
        };
        row.pageviews = self.pageviews;
        row.events = self.events;
        row.visits = self.visits;
        row.bounces = self.bounces;
        row.duration = self.duration;
        row.exits = self.exits;
        row.engaged_ms = self.engagement.engaged_ms;
        row.engaged_visits = self.engagement.engaged_visits;
        row.scroll_total = self.engagement.scroll_total;
        row.scroll_visits = self.engagement.scroll_visits;
        row
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

/// The value under which a custom event counts for an allowed property
/// key it does not carry, as Plausible's `(none)` row.
pub const NO_PROP_VALUE: &str = "(none)";

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

/// Visits that reached one step of a funnel, by the site-local hour the
/// visits started in (`funnel_hourly`). A count, nothing else: no visitor,
/// page or sequence.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FunnelRow {
    pub site_id: String,
    pub hour: u32,
    pub funnel: String,
    /// From 1; step 0 is where delivery marks live (see [`BatchRow::mark`]).
    pub step: u8,
    pub visits: u64,
}

/// One batch for the writer: everything aggregated from the log records
/// numbered `first_seq..end_seq`.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub traffic: Vec<TrafficDelta>,
    pub dropped: Vec<DroppedRow>,
    pub props: Vec<PropRow>,
    pub funnels: Vec<FunnelRow>,
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
/// leave it out, and `event_names` may not use the name. In
/// `funnel_hourly` a mark is step 0 of a funnel named like a dropped
/// mark's reason, its counter in `visits`; readers read steps from 1.
pub const DELIVERY_MARK: &str = "tamis:delivered";

/// Which table a row of `batch_in` feeds: the materialized views route
/// each kind to its table by the `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowKind {
    Traffic,
    Dropped,
    Prop,
    Receipt,
    Funnel,
}

impl RowKind {
    pub const ALL: [RowKind; 5] = [
        RowKind::Traffic,
        RowKind::Dropped,
        RowKind::Prop,
        RowKind::Receipt,
        RowKind::Funnel,
    ];

    /// The value of `batch_in.kind`, as the materialized views test it.
    /// Traffic rows are `traffic2` since migration 9 added columns to
    /// them: its view reads those, and the view of `traffic` rows stays
    /// for collectors of earlier versions during an upgrade (see
    /// `schema::migration_9`), so no row is counted by both.
    pub const fn as_str(self) -> &'static str {
        match self {
            RowKind::Traffic => "traffic2",
            RowKind::Dropped => "dropped",
            RowKind::Prop => "prop",
            RowKind::Receipt => "receipt",
            RowKind::Funnel => "funnel",
        }
    }

    /// The table the rows of this kind end up in.
    pub const fn table(self) -> &'static str {
        match self {
            RowKind::Traffic => "traffic_hourly",
            RowKind::Dropped => "dropped_hourly",
            RowKind::Prop => "props_hourly",
            RowKind::Receipt => "batch_receipts",
            RowKind::Funnel => "funnel_hourly",
        }
    }

    /// A kind by its name, the name before migration 9 included (rows
    /// kept in an isolation file across the upgrade).
    pub fn parse(s: &str) -> Option<RowKind> {
        match s {
            "traffic" => Some(RowKind::Traffic),
            _ => RowKind::ALL.into_iter().find(|k| k.as_str() == s),
        }
    }
}

// RowBinary has no enums: a kind travels as its name.
impl Serialize for RowKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RowKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = Cow::<'de, str>::deserialize(d)?;
        RowKind::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown row kind {name:?}")))
    }
}

/// A column value that can outlive the batch it was borrowed from.
trait IntoStatic {
    type Static;
    fn into_static(self) -> Self::Static;
}

impl IntoStatic for Cow<'_, str> {
    type Static = Cow<'static, str>;
    fn into_static(self) -> Cow<'static, str> {
        Cow::Owned(self.into_owned())
    }
}

macro_rules! plain_into_static {
    ($($t:ty),*) => { $( impl IntoStatic for $t { type Static = $t; fn into_static(self) -> $t { self } } )* };
}
plain_into_static!(u32, u64, i64);

/// A column value as ClickHouse's Native format writes it.
trait NativeValue {
    fn put(&self, out: &mut Vec<u8>);
}

impl NativeValue for Cow<'_, str> {
    fn put(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        out.extend_from_slice(self.as_bytes());
    }
}

impl NativeValue for RowKind {
    fn put(&self, out: &mut Vec<u8>) {
        put_varint(out, self.as_str().len() as u64);
        out.extend_from_slice(self.as_str().as_bytes());
    }
}

macro_rules! native_le {
    ($($t:ty),*) => { $( impl NativeValue for $t { fn put(&self, out: &mut Vec<u8>) { out.extend_from_slice(&self.to_le_bytes()) } } )* };
}
// `DateTime` is its `u32` of seconds.
native_le!(u32, u64, i64);

/// LEB128, as ClickHouse writes sizes.
fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// One column of a Native block: its name, its type, its values.
fn native_column<'v, T: NativeValue + 'v>(
    out: &mut Vec<u8>,
    name: &str,
    ty: &str,
    values: impl Iterator<Item = &'v T>,
) {
    put_varint(out, name.len() as u64);
    out.extend_from_slice(name.as_bytes());
    put_varint(out, ty.len() as u64);
    out.extend_from_slice(ty.as_bytes());
    for value in values {
        value.put(out);
    }
}

/// Defines [`BatchRow`] and the column lists the schema builds its tables
/// from, out of one list of (column, Rust type, ClickHouse type): adding a
/// dimension touches that list and a migration, nothing else. Field order
/// is column order (RowBinary has no names).
macro_rules! batch_columns {
    (
        <$lt:lifetime>
        dimensions { $( $dim:ident : $dty:ty => $dch:literal ),* $(,)? }
        counts { $( $count:ident : $cty:ty => $cch:literal ),* $(,)? }
        extra { $( $extra:ident : $ety:ty => $ech:literal ),* $(,)? }
    ) => {
        /// One row of the `batch_in` Null table: the materialized views
        /// route each kind of row (traffic deltas, dropped counts,
        /// properties, receipts) to its table. A row of one kind leaves
        /// the columns of the others at their defaults.
        /// A column missing from a row written down by an earlier version
        /// (an isolation file across an upgrade) is at its default.
        #[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
        #[serde(default)]
        pub struct BatchRow<$lt> {
            pub kind: RowKind,
            $( pub $dim: $dty, )*
            $( pub $count: $cty, )*
            $( pub $extra: $ety, )*
        }

        impl<$lt> BatchRow<$lt> {
            /// An owned copy, to keep beyond the batch it was made from.
            pub fn into_owned(self) -> BatchRow<'static> {
                BatchRow {
                    kind: self.kind,
                    $( $dim: IntoStatic::into_static(self.$dim), )*
                    $( $count: IntoStatic::into_static(self.$count), )*
                    $( $extra: IntoStatic::into_static(self.$extra), )*
                }
            }

            /// A row of `kind` with every other column at its default.
            pub fn blank(kind: RowKind) -> Self {
                BatchRow {
                    kind,
                    $( $dim: Default::default(), )*
                    $( $count: Default::default(), )*
                    $( $extra: Default::default(), )*
                }
            }
        }

        impl Default for BatchRow<'_> {
            fn default() -> Self {
                BatchRow::blank(RowKind::Traffic)
            }
        }

        /// `rows` as one block of ClickHouse's Native format, every column
        /// of `batch_in` by name and type. The block states its row count
        /// up front, so a body cut short anywhere is refused whole; RowBinary
        /// has no end, and ClickHouse applies the rows it got before a cut
        /// that falls between two of them.
        pub fn native_block<'r, $lt: 'r>(
            rows: impl Iterator<Item = &'r BatchRow<$lt>> + Clone,
            count: usize,
            out: &mut Vec<u8>,
        ) {
            let columns = 1 $( + { let _ = stringify!($dim); 1 } )* $( + { let _ = stringify!($count); 1 } )* $( + { let _ = stringify!($extra); 1 } )*;
            put_varint(out, columns);
            put_varint(out, count as u64);
            native_column(out, "kind", "String", rows.clone().map(|r| &r.kind));
            $( native_column(out, stringify!($dim), $dch, rows.clone().map(|r| &r.$dim)); )*
            $( native_column(out, stringify!($count), $cch, rows.clone().map(|r| &r.$count)); )*
            $( native_column(out, stringify!($extra), $ech, rows.clone().map(|r| &r.$extra)); )*
        }

        /// The dimensions of an hourly traffic row, in order, with their
        /// ClickHouse types: the key of `traffic_hourly`.
        pub const TRAFFIC_DIMENSIONS: &[(&str, &str)] = &[ $( (stringify!($dim), $dch) ),* ];
        /// The counts of a traffic input row (`traffic_in`, `batch_in`).
        pub const TRAFFIC_COUNTS: &[(&str, &str)] = &[ $( (stringify!($count), $cch) ),* ];
        /// The columns of `batch_in` for the other kinds of rows.
        pub const BATCH_EXTRA: &[(&str, &str)] = &[ $( (stringify!($extra), $ech) ),* ];
    };
}

batch_columns! {
    <'a>
    dimensions {
        site_id: Cow<'a, str> => "String",
        // Start of the site-local hour, seconds since the epoch.
        hour: u32 => "DateTime",
        event: Cow<'a, str> => "String",
        page: Cow<'a, str> => "String",
        entry_page: Cow<'a, str> => "String",
        source: Cow<'a, str> => "String",
        referrer: Cow<'a, str> => "String",
        utm_source: Cow<'a, str> => "String",
        utm_medium: Cow<'a, str> => "String",
        utm_campaign: Cow<'a, str> => "String",
        country: Cow<'a, str> => "String",
        region: Cow<'a, str> => "String",
        browser: Cow<'a, str> => "String",
        browser_version: Cow<'a, str> => "String",
        os: Cow<'a, str> => "String",
        device: Cow<'a, str> => "String",
        language: Cow<'a, str> => "String",
        consent: Cow<'a, str> => "String",
        // Added by migration 9, at the end of the key.
        os_version: Cow<'a, str> => "String",
        hostname: Cow<'a, str> => "String",
        utm_content: Cow<'a, str> => "String",
        utm_term: Cow<'a, str> => "String",
        click_id: Cow<'a, str> => "String",
    }
    counts {
        // Input of the `uniq` sketches only (0: counted without a key);
        // never stored as is.
        visitor: u64 => "UInt64",
        pageviews: u64 => "UInt64",
        events: u64 => "UInt64",
        visits: i64 => "Int64",
        bounces: i64 => "Int64",
        duration: i64 => "Int64",
        exits: i64 => "Int64",
        // Added by migration 9 (see `EngagementCounts`).
        engaged_ms: i64 => "Int64",
        engaged_visits: i64 => "Int64",
        scroll_total: i64 => "Int64",
        scroll_visits: i64 => "Int64",
    }
    extra {
        reason: Cow<'a, str> => "String",
        hits: u64 => "UInt64",
        prop_key: Cow<'a, str> => "String",
        prop_value: Cow<'a, str> => "String",
        journal_id: Cow<'a, str> => "String",
        first_seq: u64 => "UInt64",
        end_seq: u64 => "UInt64",
        part: Cow<'a, str> => "String",
    }
}

/// A column list as DDL: `name Type, name Type, …`.
pub fn column_ddl(columns: &[(&str, &str)]) -> String {
    columns
        .iter()
        .map(|(name, ty)| format!("{name} {ty}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A column list's names: `name, name, …`.
pub fn column_names(columns: &[(&str, &str)]) -> String {
    columns
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl<'a> BatchRow<'a> {
    pub fn traffic(d: &'a TrafficDelta) -> Self {
        d.as_row()
    }

    pub fn dropped(d: &'a DroppedRow) -> Self {
        let mut row = BatchRow::blank(RowKind::Dropped);
        row.site_id = Cow::Borrowed(&d.site_id);
        row.hour = d.hour;
        row.reason = Cow::Borrowed(d.reason);
        row.hits = d.hits;
        row
    }

    pub fn prop(p: &'a PropRow) -> Self {
        let mut row = BatchRow::blank(RowKind::Prop);
        row.site_id = Cow::Borrowed(&p.site_id);
        row.hour = p.hour;
        row.event = Cow::Borrowed(&p.event);
        row.page = Cow::Borrowed(&p.page);
        row.prop_key = Cow::Borrowed(&p.prop_key);
        row.prop_value = Cow::Borrowed(&p.prop_value);
        row.visitor = p.visitor;
        row.events = p.events;
        row
    }

    /// A funnel step's visits: the funnel's name in `event`, the step in
    /// `hits`, the visits in `visits` (`batch_funnel_mv` reads them so).
    pub fn funnel(f: &'a FunnelRow) -> Self {
        let mut row = BatchRow::blank(RowKind::Funnel);
        row.site_id = Cow::Borrowed(&f.site_id);
        row.hour = f.hour;
        row.event = Cow::Borrowed(&f.funnel);
        row.hits = u64::from(f.step);
        row.visits = i64::try_from(f.visits).unwrap_or(i64::MAX);
        row
    }

    /// The delivery mark of `kind` rows for `site_id` and `hour`, written
    /// by `journal_id`: moves the mark forward by `step`. Traffic and
    /// property marks are the event [`DELIVERY_MARK`] on the page named
    /// after the journal; dropped marks are the reason
    /// `tamis:delivered:<journal id>` (see [`mark_label`]); funnel marks
    /// are step 0 (no real step) of the funnel of that name, the step
    /// counted in `visits`.
    pub fn mark(
        kind: RowKind,
        site_id: &'a str,
        hour: u32,
        journal_id: &'a str,
        step: u64,
    ) -> Self {
        let mut row = BatchRow::blank(kind);
        row.site_id = Cow::Borrowed(site_id);
        row.hour = hour;
        match kind {
            RowKind::Dropped => {
                row.reason = Cow::Owned(mark_label(kind, journal_id).into_owned());
                row.hits = step;
            }
            // Below 2^63: a step is at most `end_seq << SHIFT`, and 2^43
            // records is over two years at 100,000 hits a second.
            RowKind::Funnel => {
                row.event = Cow::Owned(mark_label(kind, journal_id).into_owned());
                row.visits = i64::try_from(step).unwrap_or(i64::MAX);
            }
            _ => {
                row.event = Cow::Borrowed(DELIVERY_MARK);
                row.page = Cow::Borrowed(journal_id);
                row.events = step;
            }
        }
        row
    }

    pub fn receipt(r: &'a Receipt) -> Self {
        let mut row = BatchRow::blank(RowKind::Receipt);
        row.journal_id = Cow::Borrowed(&r.journal_id);
        row.first_seq = r.first_seq;
        row.end_seq = r.end_seq;
        row.part = Cow::Borrowed(&r.part);
        row.hits = r.hits;
        row
    }

    /// What an operator sees of a refused row in the dead-letter folder:
    /// every column of its kind by name, the visitor value only as whether
    /// there was one (the row is for diagnosis, not counting).
    pub fn diagnosis(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            let had = map.remove("visitor").and_then(|v| v.as_u64()).unwrap_or(0) != 0;
            map.insert("has_visitor".into(), had.into());
            if self.kind != RowKind::Receipt {
                for name in ["journal_id", "first_seq", "end_seq", "part"] {
                    map.remove(name);
                }
            }
        }
        value
    }
}

/// What names a journal's mark among a table's rows: the page of traffic
/// and property marks, the reason of dropped ones, the funnel of funnel
/// ones.
pub fn mark_label(kind: RowKind, journal_id: &str) -> Cow<'_, str> {
    match kind {
        RowKind::Dropped | RowKind::Funnel => Cow::Owned(format!("{DELIVERY_MARK}:{journal_id}")),
        _ => Cow::Borrowed(journal_id),
    }
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.traffic.is_empty()
            && self.dropped.is_empty()
            && self.props.is_empty()
            && self.funnels.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_native_block_states_its_size_before_its_columns() {
        let mut row = BatchRow::blank(RowKind::Dropped);
        row.site_id = Cow::Borrowed("example.org");
        row.hour = 3600;
        row.hits = 300;
        let mut out = Vec::new();
        native_block(std::iter::once(&row), 1, &mut out);
        let columns = 1 + TRAFFIC_DIMENSIONS.len() + TRAFFIC_COUNTS.len() + BATCH_EXTRA.len();
        assert_eq!(out[0] as usize, columns);
        assert_eq!(out[1], 1, "rows");
        // The first column: name, type, then the value "dropped".
        assert_eq!(&out[2..3], &[4]);
        assert_eq!(&out[3..7], b"kind");
        assert_eq!(&out[7..14], b"\x06String");
        assert_eq!(&out[14..22], b"\x07dropped");
        let mut varint = Vec::new();
        put_varint(&mut varint, 300);
        assert_eq!(varint, [0xac, 0x02]);
    }
}
