//! Which breakdowns can be read a page at a time, and what the next read
//! must fetch so that the page is exactly the one a read of every row
//! gives. ClickHouse orders the rows that are not small by a raw count and
//! cuts the list; the small rows' merged `(other)` row is summed in
//! ClickHouse too ([`super::sql::small_rows`]). Pure: the reads themselves
//! are `Api::breakdown`'s. Must not decide what an answer discloses: the
//! rows fetched go through `query::report` like any others.
//!
//! Why the page is exact. A paginated answer is rows `offset .. offset +
//! limit` of the rows that are not small, ordered by the query's first
//! order key, then `(other)`. The first read fetches the rows first by the
//! raw count behind that key, `need = offset + limit` of them and a few
//! more. Fewer than it asked for: every row that is not small is there, so
//! the answer is whole (with the `(other)` row). Otherwise the order is by
//! the *published* value (in
//! protected mode a count moves by at most `b − 1` when rounded, `b` the
//! rounding base; a metric that adds `n` counts moves by `n(b − 1)`): let
//! `P` be the `need`-th published value among the rows read; over all rows
//! the `need`-th published value is at least `P`. Every row whose published
//! value can reach `P` has a raw count of at least `P − slack`: the second
//! read fetches exactly those, ties included, so the rows of the page and
//! every row that ties with them are read, and any other row orders after
//! the page. When the first read's last raw count plus the slack is below
//! `P`, no unread row can reach the page and the second read is skipped.
//! (Ascending order is the mirror image.)
//!
//! Read whole, as before (still bounded by `query.max_result_rows`):
//! breakdowns by a time dimension (small rows merge per time bucket), exact
//! answers to filtered queries (their cells are checked against what the
//! filters leave out), consent metrics, an order by a rate, a duration or a
//! percentage (computed from several rounded counts, or rounded to a tenth,
//! so no raw count bounds them), an order by a dimension when there are
//! several, any read that meets a dimension value spelled `(other)`
//! (such a row orders with the merged one, last), and breakdowns by
//! dimensions with few values only (country, region, browser, OS, device,
//! language, consent, event name): their rows are few, and reading them a
//! page at a time costs a second scan for the small rows' sum (the
//! `cargo bench --bench query` regions, browsers and devices queries took
//! 1.5 to 1.9 times as long that way).

use super::disclosure::{rounding_base, Rounding};
use super::request::{Dimension, Metric, Query};
use super::Base;
use crate::config::{Disclosure, SiteSettings};

/// What a paginated read is ordered by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Order {
    /// A count, or a sum of counts, of [`super::sql::BASE`].
    Metric {
        metric: Metric,
        /// The SQL of the raw value, over the `base` array.
        key: &'static str,
        /// How many rounded counts the published value adds up.
        counts: u32,
        asc: bool,
    },
    /// The one dimension's value (unique per row).
    Dimension { asc: bool },
}

impl Order {
    /// The SQL expression the read is ordered by.
    pub fn key(&self) -> &'static str {
        match self {
            Order::Metric { key, .. } => key,
            Order::Dimension { .. } => "dims[1]",
        }
    }

    pub fn asc(&self) -> bool {
        match self {
            Order::Metric { asc, .. } | Order::Dimension { asc } => *asc,
        }
    }
}

/// Which rows of the order key the second read takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    AtLeast(f64),
    AtMost(f64),
}

/// How `query` can be read a page at a time, or `None` when it is read
/// whole (see the module's list).
pub fn plan(query: &Query, disclosure: Disclosure) -> Option<Order> {
    if query.dimensions.is_empty() || query.dimensions.iter().any(|d| d.is_time()) {
        return None;
    }
    if !query.dimensions.iter().copied().any(many_values) {
        return None;
    }
    // Names are given to codes once read, and two codes may share one
    // (their rows then merge): a page read by code may not be the page by
    // name.
    if query
        .dimensions
        .iter()
        .any(|d| matches!(d, Dimension::CountryName | Dimension::RegionName))
    {
        return None;
    }
    if disclosure == Disclosure::Exact && !query.filters.is_empty() {
        return None;
    }
    // Consent metrics add counts to rows by their time value (and are
    // refused with other dimensions today).
    if query.metrics.iter().any(|m| m.is_consent()) {
        return None;
    }
    // The first order key decides; without one, Plausible's default (no
    // time dimension here): the first metric, descending.
    let (field, asc) = match query.order_by.first() {
        Some((field, asc)) => (field.as_str(), *asc),
        None => (query.metrics.first()?.name(), false),
    };
    if let Some(metric) = query.metrics.iter().copied().find(|m| m.name() == field) {
        let exits = query.dimensions.contains(&Dimension::ExitPage);
        let (key, counts) = match metric {
            Metric::Visitors => ("base[1]", 1),
            Metric::Visits if exits => ("base[7]", 1),
            Metric::Visits => ("base[2]", 1),
            Metric::Pageviews => ("base[3]", 1),
            Metric::Events => ("base[3] + base[4]", 2),
            _ => return None,
        };
        return Some(Order::Metric {
            metric,
            key,
            counts,
            asc,
        });
    }
    match query.dimensions[..] {
        [d] if query.dimension_name(d) == field => Some(Order::Dimension { asc }),
        _ => None,
    }
}

/// Whether a dimension's values are open-ended (pages, sources, campaign
/// tags, property values: thousands on a large site), where reading a
/// page at a time pays; the others have tens of values at most.
fn many_values(d: Dimension) -> bool {
    match d {
        Dimension::Page
        | Dimension::EntryPage
        | Dimension::ExitPage
        | Dimension::Source
        | Dimension::Referrer
        | Dimension::UtmSource
        | Dimension::UtmMedium
        | Dimension::UtmCampaign
        | Dimension::UtmContent
        | Dimension::UtmTerm
        | Dimension::Hostname
        | Dimension::BrowserVersion
        | Dimension::Prop => true,
        // Tens of channels, a few hundred countries or regions at most.
        Dimension::Channel | Dimension::CountryName | Dimension::RegionName => false,
        Dimension::Name
        | Dimension::Goal
        | Dimension::Country
        | Dimension::Region
        | Dimension::Browser
        | Dimension::Os
        | Dimension::OsVersion
        | Dimension::Device
        | Dimension::Language
        | Dimension::Consent
        | Dimension::Hour
        | Dimension::Day
        | Dimension::Week
        | Dimension::Month => false,
    }
}

/// The raw value of `metric` ordered by in SQL (see [`plan`]'s keys).
fn raw(metric: Metric, b: &Base, exits: bool) -> f64 {
    match metric {
        Metric::Visits if exits => b.exits,
        Metric::Visits => b.visits,
        Metric::Pageviews => b.pageviews,
        Metric::Events => b.pageviews + b.events,
        _ => b.visitors,
    }
}

/// After a first read (`read`: the rows first by `order`'s raw value, at
/// least `need` of them, not all there are): `None` when it holds the page
/// and every row that ties with it, else the bound of the second read.
pub fn second_read(
    order: Order,
    query: &Query,
    site: &SiteSettings,
    disclosure: Disclosure,
    read: &[(Vec<String>, Base)],
    need: usize,
) -> Option<Bound> {
    let Order::Metric {
        metric,
        counts,
        asc,
        ..
    } = order
    else {
        // Dimension values are unique and published as they are.
        return None;
    };
    let exits = query.dimensions.contains(&Dimension::ExitPage);
    let rounding = Rounding::new(site.rounding_key(), site.k_threshold, query);
    let slack = match disclosure {
        Disclosure::Protected => f64::from(counts * (rounding_base(site.k_threshold) - 1)),
        Disclosure::Exact => 0.0,
    };
    let mut published: Vec<f64> = read
        .iter()
        .map(|(dims, b)| {
            let p = match disclosure {
                Disclosure::Protected => rounding.publish(dims, b, exits),
                Disclosure::Exact => *b,
            };
            p.value(metric, exits, 0.0)
        })
        .collect();
    let raws = read.iter().map(|(_, b)| raw(metric, b, exits));
    if asc {
        published.sort_by(f64::total_cmp);
    } else {
        published.sort_by(|a, b| b.total_cmp(a));
    }
    let p = *published.get(need.checked_sub(1)?)?;
    if asc {
        let last = raws.fold(f64::NEG_INFINITY, f64::max);
        (p >= last - slack).then_some(Bound::AtMost(p + slack))
    } else {
        let last = raws.fold(f64::INFINITY, f64::min);
        (p <= last + slack).then_some(Bound::AtLeast(p - slack))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::request::{parse, SiteView};

    fn query(body: &str) -> Query {
        let view = SiteView {
            timezone: chrono_tz::UTC,
            campaigns: false,
            prop_keys: Vec::new(),
            goals: Vec::new(),
        };
        parse(
            body.as_bytes(),
            &view,
            "2026-03-20T00:00:00Z".parse().unwrap(),
        )
        .unwrap()
    }

    use crate::query::tests::differencing::site;

    fn check(dimensions: &str, extra: &str, disclosure: Disclosure, expected: Option<&str>) {
        // Pageviews and events are refused with exit pages, as in Plausible.
        let metrics = if dimensions.contains("exit_page") {
            r#"["visitors","visits","bounce_rate","percentage"]"#
        } else {
            r#"["visitors","pageviews","events","bounce_rate","percentage"]"#
        };
        let q = query(&format!(
            r#"{{"site_id":"a.org","metrics":{metrics},"date_range":"7d","dimensions":{dimensions}{extra}}}"#
        ));
        let got = plan(&q, disclosure).map(|o| format!("{} {}", o.key(), o.asc()));
        assert_eq!(got.as_deref(), expected, "{dimensions} {extra}");
    }

    #[test]
    fn which_breakdowns_are_read_a_page_at_a_time() {
        use Disclosure::*;
        check(r#"["event:page"]"#, "", Protected, Some("base[1] false"));
        check(
            r#"["event:page","visit:browser"]"#,
            "",
            Exact,
            Some("base[1] false"),
        );
        check(
            r#"["event:page"]"#,
            r#","order_by":[["pageviews","asc"]]"#,
            Protected,
            Some("base[3] true"),
        );
        check(
            r#"["event:page"]"#,
            r#","order_by":[["events","desc"]]"#,
            Exact,
            Some("base[3] + base[4] false"),
        );
        check(
            r#"["event:page"]"#,
            r#","order_by":[["event:page","asc"]]"#,
            Exact,
            Some("dims[1] true"),
        );
        check(
            r#"["visit:exit_page"]"#,
            r#","order_by":[["bounce_rate","desc"]]"#,
            Exact,
            None,
        );
        check(
            r#"["event:page"]"#,
            r#","order_by":[["percentage","desc"]]"#,
            Exact,
            None,
        );
        check(
            r#"["event:page","visit:browser"]"#,
            r#","order_by":[["event:page","asc"]]"#,
            Exact,
            None,
        );
        check(r#"["time:day","event:page"]"#, "", Exact, None);
        // Few values: read whole, one scan.
        check(r#"["visit:browser"]"#, "", Protected, None);
        check(r#"["visit:region","visit:device"]"#, "", Protected, None);
        let filtered = r#","filters":[["contains","event:page",["a"]]]"#;
        check(
            r#"["event:page"]"#,
            filtered,
            Protected,
            Some("base[1] false"),
        );
        check(r#"["event:page"]"#, filtered, Exact, None);
        let q = query(r#"{"site_id":"a.org","metrics":["visitors"],"date_range":"7d"}"#);
        assert_eq!(plan(&q, Exact), None, "no breakdown");
        let q = query(
            r#"{"site_id":"a.org","metrics":["visits"],"date_range":"7d","dimensions":["visit:exit_page"]}"#,
        );
        assert_eq!(plan(&q, Exact).map(|o| o.key()), Some("base[7]"));
    }

    /// The reads `Api::breakdown` makes, done on rows in memory the way
    /// ClickHouse does them: rows that are not small ordered by the raw
    /// key, ties in any order (here shuffled by `seed`), cut at the first
    /// read's size; the small ones summed.
    fn read_in_pieces(
        rows: &[(Vec<String>, Base)],
        query: &Query,
        site: &SiteSettings,
        disclosure: Disclosure,
        seed: u64,
    ) -> Vec<(Vec<String>, Base)> {
        let k = f64::from(site.k_threshold);
        let order = plan(query, disclosure).expect("a page at a time");
        let exits = query.dimensions.contains(&Dimension::ExitPage);
        let mut kept: Vec<(Vec<String>, Base)> = rows
            .iter()
            .filter(|(_, b)| !b.is_small(k))
            .cloned()
            .collect();
        let mut state = seed | 1;
        for i in (1..kept.len()).rev() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            kept.swap(i, (state >> 33) as usize % (i + 1));
        }
        let key = |r: &(Vec<String>, Base)| match order {
            Order::Metric { metric, .. } => raw(metric, &r.1, exits),
            Order::Dimension { .. } => 0.0,
        };
        kept.sort_by(|a, b| {
            let o = match order {
                Order::Metric { .. } => key(a).total_cmp(&key(b)),
                Order::Dimension { .. } => a.0[0].cmp(&b.0[0]),
            };
            if order.asc() {
                o
            } else {
                o.reverse()
            }
        });
        let need = query.offset + query.limit;
        let fetch = need + (need / 8).max(8);
        if kept.len() < fetch {
            let mut small: Option<Base> = None;
            for (_, b) in rows.iter().filter(|(_, b)| b.is_small(k)) {
                small.get_or_insert_with(Base::default).add(b);
            }
            let n = query.dimensions.len();
            kept.extend(small.map(|b| (vec![super::super::OTHER.to_string(); n], b)));
            return kept;
        }
        let first = kept[..fetch].to_vec();
        match second_read(order, query, site, disclosure, &first, need) {
            None => first,
            Some(Bound::AtLeast(v)) => kept.into_iter().filter(|r| key(r) >= v).collect(),
            Some(Bound::AtMost(v)) => kept.into_iter().filter(|r| key(r) <= v).collect(),
        }
    }

    mod same_page {
        use super::*;
        use crate::query::{report, Counted};
        use proptest::prelude::*;

        proptest! {
            /// The page read in pieces is the page of the whole read, for
            /// both modes, every key and direction, any page, with many
            /// ties and rows around k.
            #[test]
            fn a_page_read_in_pieces_is_the_page_of_the_whole(
                counts in proptest::collection::vec((0u32..40, 0u32..60, 0u32..20), 1..80),
                k in 1u32..9,
                key in 0usize..4,
                asc in any::<bool>(),
                limit in 1usize..12,
                offset in 0usize..60,
                protected in any::<bool>(),
                seed in any::<u64>(),
            ) {
                let field = ["visitors", "pageviews", "events", "event:page"][key];
                let q = query(&format!(
                    r#"{{"site_id":"a.org","metrics":["visitors","pageviews","events","bounce_rate"],"date_range":"7d","dimensions":["event:page"],"order_by":[["{field}","{}"]],"pagination":{{"limit":{limit},"offset":{offset}}},"include":{{"totals":true}}}}"#,
                    if asc { "asc" } else { "desc" }
                ));
                let site = site(k);
                let disclosure = if protected { Disclosure::Protected } else { Disclosure::Exact };
                let rows: Vec<(Vec<String>, Base)> = counts
                    .iter()
                    .enumerate()
                    .map(|(i, (v, p, e))| {
                        let b = Base {
                            visitors: f64::from(*v),
                            visits: f64::from(*v),
                            pageviews: f64::from(*p),
                            events: f64::from(*e),
                            bounces: f64::from(*v / 2),
                            ..Base::default()
                        };
                        (vec![format!("/{i}")], b)
                    })
                    .collect();
                let mut total = Base::default();
                for (_, b) in &rows {
                    total.add(b);
                }
                let counted = |rows| Counted { rows, total, ..Counted::default() };
                let whole = report(&q, &site, disclosure, counted(rows.clone()));
                let pieces = read_in_pieces(&rows, &q, &site, disclosure, seed);
                let paged = report(&q, &site, disclosure, counted(pieces));
                prop_assert_eq!(&paged.rows, &whole.rows);
                prop_assert_eq!(&paged.totals, &whole.totals);
            }
        }
    }

    fn rows(visitors: &[f64]) -> Vec<(Vec<String>, Base)> {
        visitors
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    vec![format!("/{i}")],
                    Base {
                        visitors: *v,
                        ..Base::default()
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_second_read_takes_every_row_that_can_reach_the_page() {
        let q = query(
            r#"{"site_id":"a.org","metrics":["visitors"],"date_range":"7d","dimensions":["event:page"]}"#,
        );
        let order = plan(&q, Disclosure::Exact).unwrap();
        let site = site(5);
        // Exact: the second of 40, 30 is 30 and unread rows have at most 30.
        let read = rows(&[40.0, 30.0]);
        assert_eq!(
            second_read(order, &q, &site, Disclosure::Exact, &read, 2),
            Some(Bound::AtLeast(30.0))
        );
        // The page (one row, 40) is above every unread row (at most 30).
        assert_eq!(
            second_read(order, &q, &site, Disclosure::Exact, &read, 1),
            None
        );
        // Protected: each count may move by 4 either way; 40 published is
        // at least 36 raw, unread rows at most 30 + 4.
        let read = rows(&[40.0, 30.0]);
        match second_read(order, &q, &site, Disclosure::Protected, &read, 1) {
            None => {}
            Some(Bound::AtLeast(b)) => assert!(b <= 36.0, "{b}"),
            other => panic!("{other:?}"),
        }
        let read = rows(&[33.0, 31.0]);
        match second_read(order, &q, &site, Disclosure::Protected, &read, 1) {
            Some(Bound::AtLeast(b)) => assert!((26.0..=31.0).contains(&b), "{b}"),
            other => panic!("rows within the slack need a second read: {other:?}"),
        }
        let asc = plan(
            &query(r#"{"site_id":"a.org","metrics":["visitors"],"date_range":"7d","dimensions":["event:page"],"order_by":[["visitors","asc"]]}"#),
            Disclosure::Exact,
        )
        .unwrap();
        let read = rows(&[5.0, 9.0]);
        assert_eq!(
            second_read(asc, &q, &site, Disclosure::Exact, &read, 2),
            Some(Bound::AtMost(9.0))
        );
        assert_eq!(
            second_read(asc, &q, &site, Disclosure::Exact, &read, 1),
            None
        );
    }
}
