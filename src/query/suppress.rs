//! The disclosure rules applied to what ClickHouse counted: which rows and
//! cells of an answer are published, merged into `(other)`, withheld or
//! rounded, and the metrics computed from what is published. It is pure:
//! no I/O, no clock; [`super::Api::run`] fetches the [`Counted`] numbers
//! and hands them here, so every rule is tested on plain numbers
//! (the table below) as well as end to end.

use super::disclosure;
use super::request::{Dimension, Metric, Query};
use super::OTHER;
use crate::config::{Disclosure, SiteSettings};

/// The aggregates behind one answered row, in [`sql::BASE`] order.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Base {
    pub visitors: f64,
    pub visits: f64,
    pub pageviews: f64,
    pub events: f64,
    pub bounces: f64,
    pub duration: f64,
    pub exits: f64,
    /// Pages' engagement (`sink::rows::EngagementCounts`): engaged
    /// milliseconds and the (visit, page) pairs they were reported by,
    /// the sum of deepest scrolls (percent) and the pairs that reported one.
    pub engaged_ms: f64,
    pub engaged_visits: f64,
    pub scroll_total: f64,
    pub scroll_visits: f64,
    /// Hits by consent state: granted, denied, unset, opted out (filled
    /// only for consent metrics).
    pub consent: [f64; 4],
}

impl Base {
    pub(crate) fn from_slice(b: &[f64]) -> Option<Base> {
        match *b {
            [visitors, visits, pageviews, events, bounces, duration, exits, engaged_ms, engaged_visits, scroll_total, scroll_visits] => {
                Some(Base {
                    visitors,
                    visits,
                    pageviews,
                    events,
                    bounces,
                    duration,
                    exits,
                    engaged_ms,
                    engaged_visits,
                    scroll_total,
                    scroll_visits,
                    consent: [0.0; 4],
                })
            }
            _ => None,
        }
    }

    pub(crate) fn add(&mut self, o: &Base) {
        self.visitors += o.visitors;
        self.visits += o.visits;
        self.pageviews += o.pageviews;
        self.events += o.events;
        self.bounces += o.bounces;
        self.duration += o.duration;
        self.exits += o.exits;
        self.engaged_ms += o.engaged_ms;
        self.engaged_visits += o.engaged_visits;
        self.scroll_total += o.scroll_total;
        self.scroll_visits += o.scroll_visits;
        for (a, b) in self.consent.iter_mut().zip(o.consent) {
            *a += b;
        }
    }

    /// Too few to show: fewer than `k` visitors or, for traffic counted
    /// without visitor keys, fewer than `k` pageviews and events.
    pub fn is_small(&self, k: f64) -> bool {
        if self.visitors > 0.0 {
            self.visitors < k
        } else {
            self.pageviews + self.events < k
        }
    }

    /// The engagement means drop out (`null`) where fewer than `k` (visit,
    /// page) pairs, counted exactly in `exact`, stand behind them: a mean
    /// of a few would show what those few did, however the cell's other
    /// counts are published.
    pub(crate) fn withhold_small_means(&mut self, exact: &Base, k: f64) {
        if exact.engaged_visits < k {
            self.engaged_ms = 0.0;
            self.engaged_visits = 0.0;
        }
        if exact.scroll_visits < k {
            self.scroll_total = 0.0;
            self.scroll_visits = 0.0;
        }
    }

    /// A metric of this cell. The shares of a whole (percentage, bounce,
    /// exit and conversion rates) are at most 100: counted exactly, a part
    /// never exceeds its whole, but the protected mode rounds the two
    /// independently (a row of 8 published as 10 over a total of 9
    /// published as 5), and a public dashboard reading "200 %" looks
    /// broken. The cap is computed from published numbers only, so it
    /// tells nothing they do not.
    pub(crate) fn value(&self, metric: Metric, exits_as_visits: bool, total_visitors: f64) -> f64 {
        let visits = if exits_as_visits {
            self.exits
        } else {
            self.visits
        };
        let per_visit = |x: f64| if visits > 0.0 { x / visits } else { 0.0 };
        let all: f64 = self.consent.iter().sum();
        let share = |i: usize| {
            if all > 0.0 {
                (self.consent[i] / all * 1000.0).round() / 10.0
            } else {
                0.0
            }
        };
        match metric {
            Metric::Visitors => self.visitors,
            Metric::Visits => visits,
            Metric::Pageviews => self.pageviews,
            Metric::Events => self.events + self.pageviews,
            Metric::ViewsPerVisit => (per_visit(self.pageviews) * 100.0).round() / 100.0,
            Metric::BounceRate => (per_visit(self.bounces) * 100.0).round().min(100.0),
            Metric::VisitDuration => per_visit(self.duration).round(),
            Metric::ConsentRate => share(0),
            Metric::ConsentDeniedRate => share(1),
            Metric::ConsentUnsetRate => share(2),
            Metric::OptOutRate => share(3),
            Metric::Percentage => {
                if total_visitors > 0.0 {
                    ((self.visitors / total_visitors * 1000.0).round() / 10.0).min(100.0)
                } else {
                    0.0
                }
            }
            // Plausible rounds it to one decimal.
            Metric::ExitRate => {
                if self.pageviews > 0.0 {
                    ((self.exits / self.pageviews * 1000.0).round() / 10.0).min(100.0)
                } else {
                    0.0
                }
            }
            // Plausible's `time_on_page` (seconds) and `scroll_depth`
            // (percent), rounded to whole numbers; `null` without a report.
            Metric::TimeOnPage if self.engaged_visits > 0.0 => {
                (self.engaged_ms / self.engaged_visits / 1000.0).round()
            }
            Metric::ScrollDepth if self.scroll_visits > 0.0 => {
                (self.scroll_total / self.scroll_visits).round()
            }
            Metric::TimeOnPage | Metric::ScrollDepth => f64::NAN,
            // Their denominators come from another read: see `report`.
            Metric::ConversionRate | Metric::GroupConversionRate => f64::NAN,
        }
    }
}

/// Visitors in percent of `of`, to two decimals as Plausible writes
/// conversion rates; NaN (written `null`) without a denominator. At most
/// 100, as every share of a whole (see [`Base::value`]).
fn conversion_rate(visitors: f64, of: Option<f64>) -> f64 {
    match of {
        Some(of) if of > 0.0 => ((visitors / of * 10_000.0).round() / 100.0).min(100.0),
        Some(_) => 0.0,
        None => f64::NAN,
    }
}

/// The denominators of conversion rates: what the query counts without
/// its goal filters and goal dimension ([`Query::without_goals`]), in
/// total and by the row's other dimension values.
#[derive(Debug, Clone, Default)]
pub struct Conversions {
    pub total: Base,
    pub groups: Vec<(Vec<String>, Base)>,
}

/// One answered row; `metrics` is `None` when withheld.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub dimensions: Vec<String>,
    pub base: Base,
    pub metrics: Option<Vec<f64>>,
}

/// Everything a query answers.
#[derive(Debug)]
pub struct Report {
    pub rows: Vec<Answer>,
    /// Rows before pagination (small ones merged), for `include.total_rows`.
    pub total_rows: usize,
    pub totals: Option<Option<Vec<f64>>>,
    pub time_labels: Option<Vec<String>>,
    /// What the answer says of imported days, when `include.imports`.
    pub imports: Option<super::imported::Imports>,
}

/// What ClickHouse counted for one query, before any disclosure rule.
#[derive(Debug, Clone, Default)]
pub struct Counted {
    pub rows: Vec<(Vec<String>, Base)>,
    pub total: Base,
    /// For exact answers to filtered queries: the rows and the total the
    /// filters leave out (empty otherwise).
    pub excluded_rows: Vec<(Vec<String>, Base)>,
    pub excluded_total: Base,
    /// For exact answers with filters or goals: what the query counts
    /// without them.
    pub whole: Option<Whole>,
    /// For conversion rates only.
    pub conversions: Option<Conversions>,
}

/// What a query counts without its filters and goal dimension
/// ([`Query::whole`]): rows by the query's other dimensions, and the total.
#[derive(Debug, Clone, Default)]
pub struct Whole {
    pub rows: Vec<(Vec<String>, Base)>,
    pub total: Base,
}

/// The disclosure rules applied to what was counted: the answer's rows
/// (small ones merged or withheld, ordered, paged) and totals, without time
/// labels.
///
/// Every mode merges small breakdown rows into `(other)` and withholds a
/// small time bucket, a small `(other)`, and any small cell of a window
/// shorter than a day (see [`disclosure::short_window`]).
/// - **Protected**: every cell below k is withheld, rows and totals alike,
///   and every published count is consistently randomly rounded
///   ([`disclosure::Rounding`]); rates and shares are computed from the
///   rounded counts.
/// - **Exact**: counts as they are; besides the above, a filtered query
///   withholds its small cells, and cells whose complement (what the
///   filters leave out: the left-out rows, and the visitors the query
///   counts without its filters but not with them) is small, which one
///   subtraction would reveal; so does a goal row whose goal 1 to k−1 of
///   the row's visitors missed.
pub fn report(
    query: &Query,
    site: &SiteSettings,
    disclosure: Disclosure,
    counted: Counted,
) -> Report {
    let k = f64::from(site.k_threshold);
    let Counted {
        rows,
        total,
        excluded_rows,
        excluded_total,
        whole,
        conversions,
    } = counted;
    let exits = query.dimensions.contains(&Dimension::ExitPage);
    let rounding = disclosure::Rounding::new(site.rounding_key(), site.k_threshold, query);
    // What is published of a cell's counts: rounded, or as counted.
    let published = |dims: &[String], b: &Base| {
        let mut p = match disclosure {
            Disclosure::Protected => rounding.publish(dims, b, exits),
            Disclosure::Exact => *b,
        };
        p.withhold_small_means(b, k);
        p
    };
    let published_total = published(&[], &total);
    // Conversion rates divide published counts by published counts: the
    // denominators are cells of the query without its goals, rounded as
    // that query would round them.
    let plain = query.without_goals();
    let plain_rounding = disclosure::Rounding::new(site.rounding_key(), site.k_threshold, &plain);
    let published_plain = |dims: &[String], b: &Base| match disclosure {
        Disclosure::Protected => plain_rounding.publish(dims, b, exits).visitors,
        Disclosure::Exact => b.visitors,
    };
    let goal_at = query.dimensions.iter().position(|d| *d == Dimension::Goal);
    let all_visitors = conversions.as_ref().map(|c| published_plain(&[], &c.total));
    // A row's group: its values of the dimensions other than the goal. The
    // `(other)` row merges several groups and has none.
    let group_visitors = |dims: &[String]| -> Option<f64> {
        if dims.iter().any(|d| d == OTHER) {
            return None;
        }
        let key: Vec<&String> = dims
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != goal_at)
            .map(|(_, v)| v)
            .collect();
        if key.is_empty() {
            return all_visitors;
        }
        let c = conversions.as_ref()?;
        c.groups
            .iter()
            .find(|(g, _)| g.iter().eq(key.iter().copied()))
            .map(|(g, b)| published_plain(g, b))
    };
    let values = |dims: &[String], b: &Base| {
        query
            .metrics
            .iter()
            .map(|m| match m {
                Metric::ConversionRate => conversion_rate(b.visitors, all_visitors),
                Metric::GroupConversionRate => conversion_rate(b.visitors, group_visitors(dims)),
                m => b.value(*m, exits, published_total.visitors),
            })
            .collect::<Vec<_>>()
    };

    let reveals = |b: &Base| b.visitors + b.pageviews + b.events > 0.0 && b.is_small(k);
    let reveals_row = |dims: &[String]| excluded_rows.iter().any(|(d, b)| d == dims && reveals(b));
    // Visitors of the whole (the query without filters or goals) that a
    // cell does not count: 1 to k−1 of them show by one subtraction.
    let few_missed = |whole: &Base, cell: &Base| {
        let missed = whole.visitors - cell.visitors;
        missed > 0.0 && missed < k
    };
    let misses_few = |dims: &[String], b: &Base| {
        let Some(whole) = &whole else { return false };
        let key: Vec<&String> = dims
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != goal_at)
            .map(|(_, v)| v)
            .collect();
        whole
            .rows
            .iter()
            .find(|(d, _)| d.iter().eq(key.iter().copied()))
            .is_some_and(|(_, w)| few_missed(w, b))
    };
    let answers = rows
        .into_iter()
        .map(|(dimensions, base)| Answer {
            metrics: (!reveals_row(&dimensions) && !misses_few(&dimensions, &base)).then(Vec::new),
            dimensions,
            base,
        })
        .collect();
    let mut answers = suppress(answers, &query.dimensions, k);
    let short = disclosure::short_window(query.from, query.to, site.timezone);
    let withhold_small = match disclosure {
        Disclosure::Protected => true,
        Disclosure::Exact => !query.filters.is_empty() || short,
    };
    let time_only = query.dimensions.iter().all(|d| d.is_time()) && !query.dimensions.is_empty();
    // `(other)` rows compare with the unfiltered `(other)`, which holds
    // the small excluded rows: any of those would show by difference.
    let other_reveals = excluded_rows.iter().any(|(_, b)| reveals(b));
    for a in answers.iter_mut() {
        let is_other = a.dimensions.iter().any(|d| d == OTHER);
        let withheld = a.metrics.is_none()
            || is_other && other_reveals
            || a.base.is_small(k) && (withhold_small || time_only || is_other);
        a.metrics = (!withheld).then(|| values(&a.dimensions, &published(&a.dimensions, &a.base)));
    }
    order(&mut answers, query);
    let total_rows = answers.len();
    let rows = answers
        .into_iter()
        .skip(query.offset)
        .take(query.limit)
        .collect();
    let totals = query.include_totals.then(|| {
        let withheld = withhold_small && total.is_small(k)
            || reveals(&excluded_total)
            || whole.as_ref().is_some_and(|w| few_missed(&w.total, &total));
        (!withheld).then(|| values(&[], &published_total))
    });
    Report {
        rows,
        total_rows,
        totals,
        time_labels: None,
        imports: None,
    }
}

/// Merges rows backed by too few visitors (see [`Base::is_small`]) into one
/// `(other)` row per value of the time dimensions. Rows of time dimensions
/// alone are not merged (a bucket of "other times" means nothing); small
/// ones are withheld instead. Rows already withheld (`metrics` is `None`)
/// stay withheld when merged.
pub fn suppress(answers: Vec<Answer>, dimensions: &[Dimension], k: f64) -> Vec<Answer> {
    if dimensions.iter().all(|d| d.is_time()) {
        return answers;
    }
    let mut kept = Vec::with_capacity(answers.len());
    let mut others: Vec<Answer> = Vec::new();
    for a in answers {
        if !a.base.is_small(k) {
            kept.push(a);
            continue;
        }
        let key: Vec<String> = dimensions
            .iter()
            .zip(&a.dimensions)
            .map(|(d, v)| {
                if d.is_time() {
                    v.clone()
                } else {
                    OTHER.to_string()
                }
            })
            .collect();
        match others.iter_mut().find(|o| o.dimensions == key) {
            Some(o) => {
                o.base.add(&a.base);
                if a.metrics.is_none() {
                    o.metrics = None;
                }
            }
            None => others.push(Answer {
                dimensions: key,
                ..a
            }),
        }
    }
    kept.extend(others);
    kept
}

/// Plausible's default order: time ascending, else the first metric
/// descending; `(other)` rows last.
fn order(answers: &mut [Answer], query: &Query) {
    let metric_index = |name: &str| query.metrics.iter().position(|m| m.name() == name);
    let dim_index = |name: &str| {
        query
            .dimensions
            .iter()
            .position(|d| query.dimension_name(*d) == name)
    };
    let mut keys: Vec<(Option<usize>, Option<usize>, bool)> = query
        .order_by
        .iter()
        .map(|(field, asc)| (metric_index(field), dim_index(field), *asc))
        .collect();
    if keys.is_empty() {
        if let Some(t) = query.dimensions.iter().position(|d| d.is_time()) {
            keys.push((None, Some(t), true));
        }
        keys.push((Some(0), None, false));
    }
    answers.sort_by(|a, b| {
        let other = |x: &Answer| x.dimensions.iter().any(|d| d == OTHER);
        other(a).cmp(&other(b)).then_with(|| {
            for (m, d, asc) in &keys {
                let ord = match (m, d) {
                    (Some(i), _) => {
                        let v = |x: &Answer| x.metrics.as_ref().map(|m| m[*i]).unwrap_or(-1.0);
                        v(a).total_cmp(&v(b))
                    }
                    (None, Some(i)) => a.dimensions[*i].cmp(&b.dimensions[*i]),
                    _ => std::cmp::Ordering::Equal,
                };
                let ord = if *asc { ord } else { ord.reverse() };
                if ord.is_ne() {
                    return ord;
                }
            }
            a.dimensions.cmp(&b.dimensions)
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(page: &str, visitors: f64, pageviews: f64) -> Answer {
        Answer {
            dimensions: vec![page.into()],
            base: Base {
                visitors,
                pageviews,
                ..Base::default()
            },
            metrics: None,
        }
    }

    fn check(rows: Vec<Answer>, expected: &[(&str, f64, f64)]) {
        let got = suppress(rows, &[Dimension::Page], 5.0);
        let got: Vec<(String, f64, f64)> = got
            .into_iter()
            .map(|a| (a.dimensions[0].clone(), a.base.visitors, a.base.pageviews))
            .collect();
        let want: Vec<(String, f64, f64)> = expected
            .iter()
            .map(|(p, v, pv)| (p.to_string(), *v, *pv))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn small_rows_merge_into_other() {
        check(
            vec![
                answer("/", 10.0, 20.0),
                answer("/a", 3.0, 3.0),
                answer("/b", 2.0, 4.0),
            ],
            &[("/", 10.0, 20.0), (OTHER, 5.0, 7.0)],
        );
        check(
            vec![answer("/", 10.0, 20.0), answer("/a", 3.0, 3.0)],
            &[("/", 10.0, 20.0), (OTHER, 3.0, 3.0)],
        );
        // Counted without visitor keys: k pageviews.
        check(
            vec![answer("/anon", 0.0, 6.0), answer("/few", 0.0, 2.0)],
            &[("/anon", 0.0, 6.0), (OTHER, 0.0, 2.0)],
        );
    }

    #[test]
    fn derived_metrics() {
        let b = Base {
            visitors: 8.0,
            visits: 10.0,
            pageviews: 25.0,
            events: 5.0,
            bounces: 4.0,
            duration: 1234.0,
            exits: 3.0,
            engaged_ms: 95_000.0,
            engaged_visits: 4.0,
            scroll_total: 130.0,
            scroll_visits: 3.0,
            consent: [2.0, 1.0, 1.0, 0.0],
        };
        let v = |m| b.value(m, false, 16.0);
        assert_eq!(v(Metric::ViewsPerVisit), 2.5);
        assert_eq!(v(Metric::BounceRate), 40.0);
        assert_eq!(v(Metric::VisitDuration), 123.0);
        assert_eq!(v(Metric::Events), 30.0);
        assert_eq!(v(Metric::Percentage), 50.0);
        assert_eq!(v(Metric::ConsentRate), 50.0);
        assert_eq!(v(Metric::OptOutRate), 0.0);
        assert_eq!(b.value(Metric::Visits, true, 16.0), 3.0);
        assert_eq!(Base::default().value(Metric::BounceRate, false, 0.0), 0.0);
        // Rounded apart, a part can be published above its whole: its share
        // is capped at 100 %.
        let rounded = Base {
            visitors: 10.0,
            visits: 5.0,
            pageviews: 5.0,
            bounces: 10.0,
            exits: 10.0,
            ..Base::default()
        };
        assert_eq!(rounded.value(Metric::Percentage, false, 5.0), 100.0);
        assert_eq!(rounded.value(Metric::BounceRate, false, 5.0), 100.0);
        assert_eq!(rounded.value(Metric::ExitRate, false, 5.0), 100.0);
        assert_eq!(conversion_rate(10.0, Some(5.0)), 100.0);
        assert_eq!(conversion_rate(5.0, Some(10.0)), 50.0);
        // 95 s over 4 pairs, 130 % over 3: rounded as Plausible rounds.
        assert_eq!(v(Metric::TimeOnPage), 24.0);
        assert_eq!(v(Metric::ScrollDepth), 43.0);
        let none = Base::default();
        assert!(none.value(Metric::TimeOnPage, false, 0.0).is_nan());
        assert!(none.value(Metric::ScrollDepth, false, 0.0).is_nan());
    }

    /// Engagement means stand on at least k (visit, page) pairs, in both
    /// modes, and a protected answer's means are those of the exact
    /// counts: rounding the pairs must not move (or reveal more of) them.
    #[test]
    fn engagement_means_need_k_pairs() {
        const BODY: &str = r#"{"site_id":"a.org","metrics":["visitors","time_on_page","scroll_depth"],"date_range":["2026-11-01","2026-11-30"],"dimensions":["event:page"]}"#;
        let site = super::super::tests::differencing::site(5);
        let query = plain_query(BODY);
        // (what, disclosure, visitors, [engaged ms, pairs, scroll sum,
        // pairs], time on page, scroll depth; NaN: null).
        let cases: [(&str, Disclosure, f64, [f64; 6]); 5] = [
            (
                "enough pairs: the means",
                Disclosure::Exact,
                12.0,
                [60_000.0, 6.0, 330.0, 5.0, 10.0, 66.0],
            ),
            (
                "fewer than k pairs of a published row: no mean",
                Disclosure::Exact,
                12.0,
                [90_000.0, 3.0, 240.0, 4.0, f64::NAN, f64::NAN],
            ),
            (
                "time without scrolls",
                Disclosure::Exact,
                9.0,
                [70_400.0, 7.0, 0.0, 0.0, 10.0, f64::NAN],
            ),
            (
                "protected: the exact means, whatever the pairs round to",
                Disclosure::Protected,
                12.0,
                [66_000.0, 6.0, 497.0, 7.0, 11.0, 71.0],
            ),
            (
                "protected: fewer than k exact pairs, however they round",
                Disclosure::Protected,
                12.0,
                [12_000.0, 4.0, 280.0, 4.0, f64::NAN, f64::NAN],
            ),
        ];
        for (what, disclosure, visitors, counts) in cases {
            let [engaged_ms, engaged_visits, scroll_total, scroll_visits, top, sd] = counts;
            let b = Base {
                visitors,
                pageviews: visitors,
                engaged_ms,
                engaged_visits,
                scroll_total,
                scroll_visits,
                ..Base::default()
            };
            let counted = Counted {
                rows: vec![(vec!["/".to_string()], b)],
                total: b,
                ..Counted::default()
            };
            let report = report(&query, &site, disclosure, counted);
            let metrics = report.rows[0].metrics.clone().expect(what);
            let same = |got: f64, want: f64| got == want || got.is_nan() && want.is_nan();
            assert!(same(metrics[1], top), "{what}: time_on_page {}", metrics[1]);
            assert!(same(metrics[2], sd), "{what}: scroll_depth {}", metrics[2]);
        }
    }

    /// Counted rows: (dimension values, visitors, pageviews).
    type Rows = &'static [(&'static [&'static str], f64, f64)];

    /// One case of the disclosure rules: what ClickHouse counted for a
    /// query (rows as (dimension values, visitors, pageviews)), and the
    /// answer's rows and totals (`None`: withheld).
    struct Case {
        what: &'static str,
        body: &'static str,
        disclosure: Disclosure,
        rows: &'static [(&'static [&'static str], f64, f64)],
        total: (f64, f64),
        excluded_rows: &'static [(&'static [&'static str], f64, f64)],
        excluded_total: (f64, f64),
        /// Visitors of the query without its goals (conversion rates).
        plain_total: Option<f64>,
        /// What the query counts without its filters and goals: rows, and
        /// the total's visitors and pageviews.
        whole: Option<(Rows, (f64, f64))>,
        expected: &'static [(&'static [&'static str], Option<&'static [f64]>)],
        totals: Option<&'static [f64]>,
        total_rows: usize,
    }

    fn base(visitors: f64, pageviews: f64) -> Base {
        Base {
            visitors,
            pageviews,
            ..Base::default()
        }
    }

    fn counted(rows: &[(&[&str], f64, f64)]) -> Vec<(Vec<String>, Base)> {
        rows.iter()
            .map(|(d, v, p)| (d.iter().map(|s| s.to_string()).collect(), base(*v, *p)))
            .collect()
    }

    const BY_PAGE: &str = r#"{"site_id":"a.org","metrics":["visitors","pageviews"],"date_range":["2026-11-01","2026-11-30"],"dimensions":["event:page"],"include":{"totals":true}}"#;
    const NOT_X: &str = r#"{"site_id":"a.org","metrics":["visitors","pageviews"],"date_range":["2026-11-01","2026-11-30"],"dimensions":["event:page"],"filters":[["is_not","event:page",["/x"]]],"include":{"totals":true}}"#;
    const BY_DAY: &str = r#"{"site_id":"a.org","metrics":["visitors","pageviews"],"date_range":["2026-11-01","2026-11-30"],"dimensions":["time:day"],"include":{"totals":true}}"#;
    const PAGED: &str = r#"{"site_id":"a.org","metrics":["visitors","pageviews"],"date_range":["2026-11-01","2026-11-30"],"dimensions":["event:page"],"pagination":{"limit":1,"offset":1}}"#;
    const BY_GOAL: &str = r#"{"site_id":"a.org","metrics":["visitors","conversion_rate"],"date_range":["2026-11-01","2026-11-30"],"dimensions":["event:goal"],"include":{"totals":true}}"#;
    const IS_GOAL: &str = r#"{"site_id":"a.org","metrics":["visitors","conversion_rate"],"date_range":["2026-11-01","2026-11-30"],"filters":[["is","event:goal",["Signup"]]],"include":{"totals":true}}"#;
    const HOUR: &str = r#"{"site_id":"a.org","metrics":["visitors","pageviews"],"date_range":["2026-11-02T10:00:00","2026-11-02T10:59:59"],"dimensions":["event:page"]}"#;

    fn cases() -> Vec<Case> {
        let exact = Disclosure::Exact;
        vec![
            Case {
                what: "rows under k merge into (other); the rest stand as counted",
                body: BY_PAGE,
                disclosure: exact,
                rows: &[
                    (&["/a"], 10.0, 20.0),
                    (&["/b"], 3.0, 3.0),
                    (&["/c"], 2.0, 4.0),
                ],
                total: (15.0, 27.0),
                excluded_rows: &[],
                excluded_total: (0.0, 0.0),
                plain_total: None,
                whole: None,
                expected: &[
                    (&["/a"], Some(&[10.0, 20.0])),
                    (&[OTHER], Some(&[5.0, 7.0])),
                ],
                totals: Some(&[15.0, 27.0]),
                total_rows: 2,
            },
            Case {
                what: "an (other) row still under k is withheld",
                body: BY_PAGE,
                disclosure: exact,
                rows: &[(&["/a"], 10.0, 20.0), (&["/b"], 3.0, 3.0)],
                total: (13.0, 23.0),
                excluded_rows: &[],
                excluded_total: (0.0, 0.0),
                plain_total: None,
                whole: None,
                expected: &[(&["/a"], Some(&[10.0, 20.0])), (&[OTHER], None)],
                totals: Some(&[13.0, 23.0]),
                total_rows: 2,
            },
            Case {
                what: "time buckets are not merged: a small one is withheld",
                body: BY_DAY,
                disclosure: exact,
                rows: &[(&["2026-11-01"], 10.0, 12.0), (&["2026-11-02"], 2.0, 2.0)],
                total: (12.0, 14.0),
                excluded_rows: &[],
                excluded_total: (0.0, 0.0),
                plain_total: None,
                whole: None,
                expected: &[
                    (&["2026-11-01"], Some(&[10.0, 12.0])),
                    (&["2026-11-02"], None),
                ],
                totals: Some(&[12.0, 14.0]),
                total_rows: 2,
            },
            Case {
                what: "exact, filtered: a row whose left-out part is small is withheld, \
                       and so is the total (one subtraction would show them)",
                body: NOT_X,
                disclosure: exact,
                rows: &[(&["/a"], 10.0, 20.0), (&["/b"], 8.0, 9.0)],
                total: (18.0, 29.0),
                excluded_rows: &[(&["/a"], 2.0, 2.0)],
                excluded_total: (2.0, 2.0),
                plain_total: None,
                whole: None,
                expected: &[(&["/b"], Some(&[8.0, 9.0])), (&["/a"], None)],
                totals: None,
                total_rows: 2,
            },
            Case {
                what: "exact, filtered: a small left-out row withholds the (other) row too",
                body: NOT_X,
                disclosure: exact,
                rows: &[
                    (&["/a"], 10.0, 20.0),
                    (&["/b"], 3.0, 3.0),
                    (&["/c"], 3.0, 3.0),
                ],
                total: (16.0, 26.0),
                excluded_rows: &[(&["/x"], 1.0, 1.0)],
                excluded_total: (1.0, 1.0),
                plain_total: None,
                whole: None,
                expected: &[(&["/a"], Some(&[10.0, 20.0])), (&[OTHER], None)],
                totals: None,
                total_rows: 2,
            },
            Case {
                what: "exact, filtered: left-out rows of k or more hide nothing",
                body: NOT_X,
                disclosure: exact,
                rows: &[(&["/a"], 10.0, 20.0), (&["/b"], 8.0, 9.0)],
                total: (18.0, 29.0),
                excluded_rows: &[(&["/x"], 6.0, 6.0)],
                excluded_total: (6.0, 6.0),
                plain_total: None,
                whole: None,
                expected: &[(&["/a"], Some(&[10.0, 20.0])), (&["/b"], Some(&[8.0, 9.0]))],
                totals: Some(&[18.0, 29.0]),
                total_rows: 2,
            },
            Case {
                what: "a window shorter than a day withholds small cells in exact mode too",
                body: HOUR,
                disclosure: exact,
                rows: &[
                    (&["/a"], 10.0, 20.0),
                    (&["/b"], 6.0, 6.0),
                    (&["/c"], 2.0, 2.0),
                ],
                total: (18.0, 28.0),
                excluded_rows: &[],
                excluded_total: (0.0, 0.0),
                plain_total: None,
                whole: None,
                expected: &[
                    (&["/a"], Some(&[10.0, 20.0])),
                    (&["/b"], Some(&[6.0, 6.0])),
                    (&[OTHER], None),
                ],
                totals: None,
                total_rows: 3,
            },
            Case {
                what: "pagination after suppression and ordering; total_rows counts (other)",
                body: PAGED,
                disclosure: exact,
                rows: &[
                    (&["/b"], 8.0, 9.0),
                    (&["/a"], 10.0, 20.0),
                    (&["/c"], 2.0, 2.0),
                    (&["/d"], 3.0, 3.0),
                ],
                total: (23.0, 34.0),
                excluded_rows: &[],
                excluded_total: (0.0, 0.0),
                plain_total: None,
                whole: None,
                expected: &[(&["/b"], Some(&[8.0, 9.0]))],
                totals: None,
                total_rows: 3,
            },
            Case {
                what: "conversion rate: the goal's visitors over all visitors, two decimals",
                body: BY_GOAL,
                disclosure: exact,
                rows: &[(&["Signup"], 10.0, 0.0), (&["Visit /merci"], 7.0, 7.0)],
                total: (15.0, 7.0),
                excluded_rows: &[],
                excluded_total: (0.0, 0.0),
                plain_total: Some(30.0),
                whole: None,
                expected: &[
                    (&["Signup"], Some(&[10.0, 33.33])),
                    (&["Visit /merci"], Some(&[7.0, 23.33])),
                ],
                totals: Some(&[15.0, 50.0]),
                total_rows: 2,
            },
            Case {
                what: "exact, goal filter: a count 1 to k-1 visitors short of the query \
                       without its goal (those who missed it) is withheld, rate and total too",
                body: IS_GOAL,
                disclosure: exact,
                rows: &[(&[], 20.0, 20.0)],
                total: (20.0, 20.0),
                excluded_rows: &[(&[], 22.0, 22.0)],
                excluded_total: (22.0, 22.0),
                plain_total: Some(22.0),
                whole: Some((&[(&[], 22.0, 42.0)], (22.0, 42.0))),
                expected: &[(&[], None)],
                totals: None,
                total_rows: 1,
            },
            Case {
                what:
                    "exact, by goal: a goal few visitors missed is withheld, one all reached is not",
                body: BY_GOAL,
                disclosure: exact,
                rows: &[(&["Visit /merci"], 20.0, 20.0), (&["Signup"], 22.0, 0.0)],
                total: (22.0, 42.0),
                excluded_rows: &[],
                excluded_total: (0.0, 0.0),
                plain_total: Some(22.0),
                whole: Some((&[(&[], 22.0, 42.0)], (22.0, 42.0))),
                expected: &[
                    (&["Signup"], Some(&[22.0, 100.0])),
                    (&["Visit /merci"], None),
                ],
                totals: Some(&[22.0, 100.0]),
                total_rows: 2,
            },
        ]
    }

    #[test]
    fn disclosure_rules_case_by_case() {
        let site = super::super::tests::differencing::site(5);
        let view = super::super::request::SiteView {
            timezone: chrono_tz::UTC,
            campaigns: false,
            prop_keys: Vec::new(),
            goals: vec![
                crate::goal::Goal::event("Signup", None).unwrap(),
                crate::goal::Goal::page("/merci", None).unwrap(),
            ],
        };
        let now = "2026-12-04T12:00:00Z".parse().unwrap();
        for case in cases() {
            let query = super::super::request::parse(case.body.as_bytes(), &view, now)
                .unwrap_or_else(|e| panic!("{}: {e}", case.what));
            let counted = Counted {
                rows: counted(case.rows),
                total: base(case.total.0, case.total.1),
                excluded_rows: counted(case.excluded_rows),
                excluded_total: base(case.excluded_total.0, case.excluded_total.1),
                whole: case.whole.map(|(rows, (v, p))| Whole {
                    rows: counted(rows),
                    total: base(v, p),
                }),
                conversions: case.plain_total.map(|v| Conversions {
                    total: base(v, 0.0),
                    groups: Vec::new(),
                }),
            };
            let report = report(&query, &site, case.disclosure, counted);
            let got: Vec<(Vec<String>, Option<Vec<f64>>)> = report
                .rows
                .iter()
                .map(|a| (a.dimensions.clone(), a.metrics.clone()))
                .collect();
            let want: Vec<(Vec<String>, Option<Vec<f64>>)> = case
                .expected
                .iter()
                .map(|(d, m)| {
                    (
                        d.iter().map(|s| s.to_string()).collect(),
                        m.map(<[f64]>::to_vec),
                    )
                })
                .collect();
            assert_eq!(got, want, "{}", case.what);
            if query.include_totals {
                assert_eq!(
                    report.totals,
                    Some(case.totals.map(<[f64]>::to_vec)),
                    "{}: totals",
                    case.what
                );
            }
            assert_eq!(
                report.total_rows, case.total_rows,
                "{}: total_rows",
                case.what
            );
        }
    }

    /// `body` parsed for a site without campaigns, properties or goals, on
    /// 2026-12-04.
    fn plain_query(body: &str) -> super::super::request::Query {
        let view = super::super::request::SiteView {
            timezone: chrono_tz::UTC,
            campaigns: false,
            prop_keys: Vec::new(),
            goals: Vec::new(),
        };
        let now = "2026-12-04T12:00:00Z".parse().unwrap();
        super::super::request::parse(body.as_bytes(), &view, now).unwrap()
    }

    #[test]
    fn protected_answers_publish_multiples_of_the_base_and_withhold_small_cells() {
        let site = super::super::tests::differencing::site(5);
        let step = f64::from(super::super::disclosure::rounding_base(5));
        let query = plain_query(BY_PAGE);
        let counted = Counted {
            rows: counted(&[
                (&["/a"], 23.0, 41.0),
                (&["/b"], 7.0, 9.0),
                (&["/c"], 3.0, 3.0),
            ]),
            total: base(33.0, 53.0),
            ..Counted::default()
        };
        let report = report(&query, &site, Disclosure::Protected, counted);
        let rows: Vec<&Answer> = report.rows.iter().collect();
        assert_eq!(rows.len(), 3);
        // The small (other) row (3 visitors) is withheld; the others and
        // the totals are published in multiples of the rounding base.
        assert_eq!(rows[2].dimensions, vec![OTHER.to_string()]);
        assert!(rows[2].metrics.is_none());
        for a in &rows[..2] {
            for m in a.metrics.as_ref().expect("published") {
                assert_eq!(m % step, 0.0, "{m} is a multiple of {step}");
            }
        }
        for m in report.totals.flatten().expect("totals published") {
            assert_eq!(m % step, 0.0, "{m} is a multiple of {step}");
        }
    }
}
