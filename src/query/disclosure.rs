//! The disclosure rules of the stats API: which windows count as shorter
//! than a day, and how a *protected* answer publishes a count — consistent
//! random rounding to a base of at least 5 (Statistics Canada's census
//! practice). Pure functions of a cell and the site's rounding key; which
//! cells are withheld is decided in `query::report`. Must not do I/O, and
//! must never reveal the key or the exact count it rounds.
//!
//! Why these rules are enough: every number a protected answer publishes is
//! a multiple of the rounding base `b` (rates and shares are computed from
//! those multiples), and `b` is at least k. A difference of two published
//! numbers — two filters, totals minus rows, a range minus its days — is
//! then 0 or at least k: it can never be a count of 1 to k − 1 visitors.
//!
//! What the draw depends on: the site (through its key), the count's name
//! (visitors, visits, …) and the cell's dimension names and values — what
//! the cell *is*, not how the question was written. Filters, the date range,
//! ordering and pagination are left out on purpose: were they part of the
//! draw, the same count could be asked again through rephrasings that match
//! the same visits (a filter written another way, a range stretched over
//! days without traffic) and the fresh draws averaged back to the exact
//! count. With the draw fixed per cell, asking again in any words gives the
//! same number. For one cell the rounding is then a grid shifted by a
//! secret random offset: monotone in the count and unbiased over cells.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;

use super::request::{local_midnight, Query};
use super::Base;
use crate::config::RoundingKey;

/// The rounding base for a site's k: 5, or k rounded up to a multiple of 5
/// when k is above 5, so that a nonzero difference of published numbers is
/// never below k.
pub fn rounding_base(k: u32) -> u32 {
    5.max(k.div_ceil(5).saturating_mul(5))
}

/// Whether `[from, to)` is shorter than a day: such a window is a time
/// bucket asked another way (an hour as a date range, `realtime`), and its
/// cells below k are withheld in every disclosure mode. One whole local
/// day counts as a day even when daylight saving time makes it 23 hours.
pub fn short_window(from: DateTime<Utc>, to: DateTime<Utc>, tz: Tz) -> bool {
    if to - from >= Duration::hours(24) {
        return false;
    }
    let day = from.with_timezone(&tz).date_naive();
    let whole_day = local_midnight(day, tz) == from
        && day.succ_opt().map(|next| local_midnight(next, tz)) == Some(to);
    !whole_day
}

/// How many draws one cell needs: one per count of [`Base`].
const DRAWS: usize = 12;

/// The rounding of one protected answer: the site's key and base, and the
/// query's dimension names (part of every cell's identity).
pub struct Rounding<'a> {
    key: &'a RoundingKey,
    base: f64,
    dimension_names: Vec<String>,
}

impl<'a> Rounding<'a> {
    pub fn new(key: &'a RoundingKey, k: u32, query: &Query) -> Rounding<'a> {
        Rounding {
            key,
            base: f64::from(rounding_base(k)),
            dimension_names: query
                .dimensions
                .iter()
                .map(|d| query.dimension_name(*d))
                .collect(),
        }
    }

    /// The rounding of cells named by `dimension_names` outside the query
    /// API (the funnel API's steps).
    pub fn for_cells(key: &'a RoundingKey, k: u32, dimension_names: Vec<String>) -> Rounding<'a> {
        Rounding {
            key,
            base: f64::from(rounding_base(k)),
            dimension_names,
        }
    }

    /// The cell's draws in [0, 1): one keyed hash of its identity
    /// (length-prefixed dimension names and values), stretched to one draw
    /// per count.
    fn draws(&self, values: &[String]) -> [f64; DRAWS] {
        let mut hasher = blake3::Hasher::new_keyed(&self.key.0);
        hasher.update(b"tamis 2026 cell");
        for part in self.dimension_names.iter().chain(values) {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        let mut bytes = [0u8; DRAWS * 8];
        hasher.finalize_xof().fill(&mut bytes);
        let mut draws = [0.0; DRAWS];
        for (d, chunk) in draws.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            // The top 53 bits, as a double in [0, 1).
            *d = (u64::from_le_bytes(word) >> 11) as f64 / (1u64 << 53) as f64;
        }
        draws
    }

    /// The published counts of one cell (dimension `values`, empty for
    /// totals): every count rounded; the duration scaled so the mean visit
    /// duration stays the exact mean (a mean over at least k visits, not a
    /// count); bounces capped at the visits they are a share of.
    pub fn publish(&self, values: &[String], b: &Base, exits_as_visits: bool) -> Base {
        let u = self.draws(values);
        let r = |count: f64, draw: f64| round(count, draw, self.base);
        let visits = r(b.visits, u[1]);
        let exits = r(b.exits, u[5]);
        let (exact_per, published_per) = if exits_as_visits {
            (b.exits, exits)
        } else {
            (b.visits, visits)
        };
        let duration = if exact_per > 0.0 {
            b.duration / exact_per * published_per
        } else {
            0.0
        };
        // Like the duration: the pairs rounded, the sums scaled so that
        // the means stay the exact means (`Base::withhold_small_means`
        // leaves out those of fewer than k pairs).
        let engaged_visits = r(b.engaged_visits, u[10]);
        let scroll_visits = r(b.scroll_visits, u[11]);
        let scaled = |sum: f64, exact: f64, published: f64| {
            if exact > 0.0 {
                sum / exact * published
            } else {
                0.0
            }
        };
        let mut consent = [0.0; 4];
        for (i, c) in consent.iter_mut().enumerate() {
            *c = r(b.consent[i], u[6 + i]);
        }
        Base {
            visitors: r(b.visitors, u[0]),
            visits,
            pageviews: r(b.pageviews, u[2]),
            events: r(b.events, u[3]),
            bounces: r(b.bounces, u[4]).min(published_per),
            duration,
            exits,
            engaged_ms: scaled(b.engaged_ms, b.engaged_visits, engaged_visits),
            engaged_visits,
            scroll_total: scaled(b.scroll_total, b.scroll_visits, scroll_visits),
            scroll_visits,
            consent,
        }
    }
}

/// Random rounding of `count` to a multiple of `base`: a multiple stays;
/// otherwise, `r` above the multiple below, it goes up with probability
/// `r / base` (when `draw` < `r / base`) and down otherwise, so its
/// expected value is the count itself (unbiased).
pub fn round(count: f64, draw: f64, base: f64) -> f64 {
    let c = count.max(0.0).round();
    let r = c % base;
    if r == 0.0 {
        c
    } else if draw < r / base {
        c - r + base
    } else {
        c - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_is_five_or_k_rounded_up_to_a_multiple_of_five() {
        for (k, base) in [(1, 5), (3, 5), (5, 5), (6, 10), (10, 10), (11, 15)] {
            assert_eq!(rounding_base(k), base, "k = {k}");
        }
    }

    #[test]
    fn rounding_goes_to_a_neighbouring_multiple_by_distance() {
        let check = |count: f64, draw: f64, expected: f64| {
            assert_eq!(round(count, draw, 5.0), expected, "{count} at {draw}");
        };
        check(0.0, 0.9, 0.0);
        check(10.0, 0.0, 10.0);
        check(7.0, 0.39, 10.0);
        check(7.0, 0.4, 5.0);
        check(9.0, 0.79, 10.0);
        check(1.0, 0.19, 5.0);
        check(1.0, 0.2, 0.0);
    }

    #[test]
    fn rounding_is_unbiased_over_draws() {
        for count in 0..20 {
            let n = 1000;
            let mean: f64 = (0..n)
                .map(|i| round(f64::from(count), (f64::from(i) + 0.5) / f64::from(n), 5.0))
                .sum::<f64>()
                / f64::from(n);
            assert!((mean - f64::from(count)).abs() < 1e-9, "{count}: {mean}");
        }
    }

    #[test]
    fn an_hour_or_realtime_is_a_short_window_and_a_dst_day_is_not() {
        let tz = chrono_tz::America::Toronto;
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        // 07:00 to 08:00 local.
        assert!(short_window(
            t("2026-11-10T12:00:00Z"),
            t("2026-11-10T13:00:00Z"),
            tz
        ));
        // 2026-11-01 has 25 hours, 2026-03-08 23: both whole days.
        assert!(!short_window(
            t("2026-03-08T05:00:00Z"),
            t("2026-03-09T04:00:00Z"),
            tz
        ));
        assert!(!short_window(
            t("2026-11-01T04:00:00Z"),
            t("2026-11-02T05:00:00Z"),
            tz
        ));
        // 23 hours that are not one local day.
        assert!(short_window(
            t("2026-11-10T06:00:00Z"),
            t("2026-11-11T05:00:00Z"),
            tz
        ));
    }
}
