//! In-memory visits: 30 minutes of inactivity end one. Only their
//! aggregates leave this module (visits, bounces, duration, entry and exit
//! pages), as signed corrections of the hourly rows; sessions are lost on a
//! crash, which can only make a visit look like two. A visit also holds
//! its progress through its site's funnels (a step count per funnel, see
//! `funnels`), which the aggregator moves on and which dies with it.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::privacy::consent::Consent;
use crate::sink::rows::{TrafficDelta, VisitDims};

pub const IDLE: Duration = Duration::minutes(30);

/// Most visits held at once (a few hundred bytes each). Past it, after a
/// sweep, a new visit is counted but not remembered: its later pages start
/// visits of their own. Memory stays bounded whatever the traffic.
pub const MAX_OPEN: usize = 1_000_000;

/// A visit. Its own counts (visit, bounce, duration) live on its first
/// row — start hour, entry page — so visit metrics by hour or entry page add
/// up; its exit lives on the row of its last pageview.
struct Session {
    start_hour: u32,
    start_consent: Consent,
    entry: Arc<str>,
    last_seen: DateTime<Utc>,
    last_page: Arc<str>,
    last_hour: u32,
    last_consent: Consent,
    pageviews: u32,
    dims: Arc<VisitDims>,
    /// Steps reached per funnel of the site (empty without funnels).
    funnels: Box<[u8]>,
}

/// What the aggregator may see of the visit a hit belongs to: where its
/// counts go, and its funnel progress to move on.
pub struct Visit<'a> {
    pub start_hour: u32,
    pub funnels: &'a mut [u8],
}

/// Visits by (site, visitor key). The key is only ever held here, in
/// memory, for at most the idle time after a visitor's last hit.
#[derive(Default)]
pub struct Sessions {
    open: HashMap<(usize, u64), Session>,
    /// When a full table was last swept: a full sweep is O(n), so it runs
    /// at most once a minute however many visits start.
    last_full_sweep: Option<DateTime<Utc>>,
}

/// What a hit contributes, before its visit is known.
pub struct Contribution {
    pub site: usize,
    pub visitor: u64,
    pub at: DateTime<Utc>,
    pub hour: u32,
    pub event: Arc<str>,
    pub page: Arc<str>,
    pub consent: Consent,
    pub is_pageview: bool,
    /// Extends the visit without counting anything (engagement events).
    pub only_engagement: bool,
    pub dims: Arc<VisitDims>,
    /// The site's number of funnels: the progress a new visit holds.
    pub funnels: usize,
}

impl Sessions {
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Turns an identified hit into hourly deltas, pushed onto `out`.
    /// Returns the visit the hit is part of, if one is held: none for an
    /// event outside a visit, or a visit not remembered because
    /// [`MAX_OPEN`] are.
    pub fn record(&mut self, c: Contribution, out: &mut Vec<TrafficDelta>) -> Option<Visit<'_>> {
        let key = (c.site, c.visitor);
        let delta = |dims: &Arc<VisitDims>, event: Arc<str>, page: Arc<str>| TrafficDelta {
            hour: c.hour,
            dims: dims.clone(),
            event,
            page,
            consent: c.consent,
            visitor: c.visitor,
            pageviews: 0,
            events: 0,
            visits: 0,
            bounces: 0,
            duration: 0,
            exits: 0,
        };
        let live = self
            .open
            .get(&key)
            .is_some_and(|s| c.at.signed_duration_since(s.last_seen) < IDLE);

        if !live {
            if !c.is_pageview {
                // An event or engagement outside a visit is counted, but
                // does not start one: a visit starts with a page.
                if !c.only_engagement {
                    let mut d = delta(&c.dims, c.event, c.page);
                    d.events = 1;
                    out.push(d);
                }
                return None;
            }
            let mut d = delta(&c.dims, c.event, c.page.clone());
            d.pageviews = 1;
            d.visits = 1;
            d.bounces = 1;
            d.exits = 1;
            out.push(d);
            if self.open.len() >= MAX_OPEN {
                let due = self
                    .last_full_sweep
                    .is_none_or(|t| c.at.signed_duration_since(t) >= Duration::minutes(1));
                if !due {
                    return None;
                }
                self.last_full_sweep = Some(c.at);
                if self.sweep(c.at) == 0 {
                    return None;
                }
            }
            let session = self.open.entry(key).insert_entry(Session {
                start_hour: c.hour,
                start_consent: c.consent,
                entry: c.page.clone(),
                last_seen: c.at,
                last_page: c.page,
                last_hour: c.hour,
                last_consent: c.consent,
                pageviews: 1,
                dims: c.dims,
                funnels: vec![0; c.funnels].into_boxed_slice(),
            });
            let session = session.into_mut();
            return Some(Visit {
                start_hour: session.start_hour,
                funnels: &mut session.funnels,
            });
        }

        let session = self.open.get_mut(&key)?;
        let elapsed =
            c.at.signed_duration_since(session.last_seen)
                .num_seconds()
                .max(0);
        session.last_seen = session.last_seen.max(c.at);
        let dims = session.dims.clone();
        let pageview: Arc<str> = if c.is_pageview {
            c.event.clone()
        } else {
            Arc::from("pageview")
        };

        // The visit's own counts go to its first row.
        let mut visit = delta(&dims, pageview.clone(), session.entry.clone());
        visit.hour = session.start_hour;
        visit.consent = session.start_consent;
        visit.duration = elapsed;
        if c.is_pageview && session.pageviews == 1 {
            visit.bounces = -1;
        }
        if visit.duration != 0 || visit.bounces != 0 {
            out.push(visit);
        }

        if c.is_pageview {
            // The previous page is no longer where the visit ends. The
            // correction is keyed like that page's row so the two merge
            // when they share a batch.
            let mut correction = delta(&dims, pageview, session.last_page.clone());
            correction.hour = session.last_hour;
            correction.consent = session.last_consent;
            correction.exits = -1;
            out.push(correction);

            let mut d = delta(&dims, c.event, c.page.clone());
            d.pageviews = 1;
            d.exits = 1;
            session.pageviews += 1;
            session.last_page = c.page;
            session.last_hour = c.hour;
            session.last_consent = c.consent;
            out.push(d);
        } else if !c.only_engagement {
            let mut d = delta(&dims, c.event, c.page);
            d.events = 1;
            out.push(d);
        }
        Some(Visit {
            start_hour: session.start_hour,
            funnels: &mut session.funnels,
        })
    }

    /// Forgets visits idle for longer than [`IDLE`]; returns how many.
    pub fn sweep(&mut self, now: DateTime<Utc>) -> usize {
        let before = self.open.len();
        self.open
            .retain(|_, s| now.signed_duration_since(s.last_seen) < IDLE);
        before - self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims() -> Arc<VisitDims> {
        Arc::new(VisitDims {
            site_id: Arc::from("example.org"),
            entry_page: "/".into(),
            source: "Direct / None".into(),
            referrer: String::new(),
            utm_source: String::new(),
            utm_medium: String::new(),
            utm_campaign: String::new(),
            country: "CA".into(),
            region: "CA-QC".into(),
            browser: "Firefox".into(),
            browser_version: "133".into(),
            os: "Linux".into(),
            device: "Desktop",
            language: "fr".into(),
        })
    }

    fn hit(minute: i64, page: &str, pageview: bool) -> Contribution {
        Contribution {
            site: 0,
            visitor: 42,
            at: "2026-11-23T15:00:00Z".parse::<DateTime<Utc>>().unwrap()
                + Duration::minutes(minute),
            hour: 0,
            event: Arc::from(if pageview { "pageview" } else { "signup" }),
            page: Arc::from(page),
            consent: Consent::Unset,
            is_pageview: pageview,
            only_engagement: false,
            dims: dims(),
            funnels: 0,
        }
    }

    /// Sums of (pageviews, visits, bounces, duration) and exits by page.
    fn check(
        hits: Vec<Contribution>,
        expected: (u64, i64, i64, i64),
        expected_exits: &[(&str, i64)],
    ) {
        let mut sessions = Sessions::default();
        let mut out = Vec::new();
        for h in hits {
            sessions.record(h, &mut out);
        }
        let totals = out.iter().fold((0, 0, 0, 0), |t, d| {
            (
                t.0 + d.pageviews,
                t.1 + d.visits,
                t.2 + d.bounces,
                t.3 + d.duration,
            )
        });
        assert_eq!(totals, expected);
        let mut exits: HashMap<&str, i64> = HashMap::new();
        for d in &out {
            *exits.entry(&d.page).or_default() += d.exits;
        }
        exits.retain(|_, n| *n != 0);
        let mut exits: Vec<_> = exits.into_iter().collect();
        exits.sort();
        assert_eq!(exits, expected_exits);
    }

    #[test]
    fn one_page_is_a_bounce() {
        check(vec![hit(0, "/", true)], (1, 1, 1, 0), &[("/", 1)]);
    }

    #[test]
    fn second_page_undoes_the_bounce_and_moves_the_exit() {
        check(
            vec![hit(0, "/", true), hit(2, "/a", true), hit(5, "/b", true)],
            (3, 1, 0, 300),
            &[("/b", 1)],
        );
    }

    #[test]
    fn thirty_idle_minutes_start_a_new_visit() {
        check(
            vec![hit(0, "/", true), hit(31, "/a", true)],
            (2, 2, 2, 0),
            &[("/", 1), ("/a", 1)],
        );
    }

    #[test]
    fn events_extend_but_do_not_start_visits() {
        check(vec![hit(0, "/x", false)], (0, 0, 0, 0), &[]);
        check(
            vec![hit(0, "/", true), hit(3, "/", false)],
            (1, 1, 1, 180),
            &[("/", 1)],
        );
    }

    #[test]
    fn visit_counts_stay_on_the_first_row_and_exits_on_the_last() {
        let mut sessions = Sessions::default();
        let mut out = Vec::new();
        let mut first = hit(0, "/", true);
        first.hour = 100;
        sessions.record(first, &mut out);
        let mut second = hit(10, "/a", true);
        second.hour = 200;
        second.consent = Consent::Granted;
        sessions.record(second, &mut out);
        // By (hour, page, consent): the first row keeps visit, bounce undone,
        // duration and no exit; the second row has the pageview and exit.
        type Counts = (i64, i64, i64, i64);
        let mut rows: HashMap<(u32, &str, Consent), Counts> = HashMap::new();
        for d in &out {
            let r = rows.entry((d.hour, &*d.page, d.consent)).or_default();
            *r = (
                r.0 + d.visits,
                r.1 + d.bounces,
                r.2 + d.duration,
                r.3 + d.exits,
            );
        }
        assert_eq!(rows[&(100, "/", Consent::Unset)], (1, 0, 600, 0));
        assert_eq!(rows[&(200, "/a", Consent::Granted)], (0, 0, 0, 1));
    }

    #[test]
    fn sweep_forgets_idle_visits() {
        let mut sessions = Sessions::default();
        let mut out = Vec::new();
        sessions.record(hit(0, "/", true), &mut out);
        let later = "2026-11-23T15:29:00Z".parse().unwrap();
        assert_eq!(sessions.sweep(later), 0);
        assert_eq!(sessions.sweep(later + Duration::minutes(2)), 1);
        assert!(sessions.is_empty());
    }
}
