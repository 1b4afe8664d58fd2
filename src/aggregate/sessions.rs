//! In-memory visits: 30 minutes of inactivity end one. Only their
//! aggregates leave this module (visits, bounces, duration, entry and exit
//! pages), as signed corrections of the hourly rows; sessions are lost on a
//! crash, which can only make a visit look like two.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::sink::rows::{TrafficDelta, VisitDims};

pub const IDLE: Duration = Duration::minutes(30);

/// Most visits held at once (a few hundred bytes each). Past it, after a
/// sweep, a new visit is counted but not remembered: its later pages start
/// visits of their own. Memory stays bounded whatever the traffic.
pub const MAX_OPEN: usize = 1_000_000;

struct Session {
    last_seen: DateTime<Utc>,
    last_page: Arc<str>,
    pageviews: u32,
    dims: Arc<VisitDims>,
}

/// Visits by (site, visitor key). The key is only ever held here, in
/// memory, for at most the idle time after a visitor's last hit.
#[derive(Default)]
pub struct Sessions {
    open: HashMap<(usize, u64), Session>,
}

/// What a hit contributes, before its visit is known.
pub struct Contribution {
    pub site: usize,
    pub visitor: u64,
    pub at: DateTime<Utc>,
    pub hour: u32,
    pub event: Arc<str>,
    pub page: Arc<str>,
    pub consent: &'static str,
    pub is_pageview: bool,
    /// Extends the visit without counting anything (engagement events).
    pub only_engagement: bool,
    pub dims: Arc<VisitDims>,
}

impl Sessions {
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Turns an identified hit into hourly deltas, pushed onto `out`.
    pub fn record(&mut self, c: Contribution, out: &mut Vec<TrafficDelta>) {
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
                return;
            }
            let mut d = delta(&c.dims, c.event, c.page.clone());
            d.pageviews = 1;
            d.visits = 1;
            d.bounces = 1;
            d.exits = 1;
            out.push(d);
            if self.open.len() >= MAX_OPEN && self.sweep(c.at) == 0 {
                return;
            }
            self.open.insert(
                key,
                Session {
                    last_seen: c.at,
                    last_page: c.page,
                    pageviews: 1,
                    dims: c.dims,
                },
            );
            return;
        }

        let Some(session) = self.open.get_mut(&key) else {
            return;
        };
        let elapsed = c.at.signed_duration_since(session.last_seen).num_seconds().max(0);
        session.last_seen = session.last_seen.max(c.at);
        let dims = session.dims.clone();
        if c.is_pageview {
            // The previous page is no longer where the visit ends. The
            // correction is keyed like that page's pageview so the two
            // merge into one row when they share a batch.
            let mut correction = delta(&dims, c.event.clone(), session.last_page.clone());
            correction.exits = -1;
            out.push(correction);

            let mut d = delta(&dims, c.event, c.page.clone());
            d.pageviews = 1;
            d.exits = 1;
            d.duration = elapsed;
            if session.pageviews == 1 {
                d.bounces = -1;
            }
            session.pageviews += 1;
            session.last_page = c.page;
            out.push(d);
        } else {
            let mut d = delta(&dims, c.event, c.page);
            d.duration = elapsed;
            if !c.only_engagement {
                d.events = 1;
            }
            if d.duration != 0 || d.events != 0 {
                out.push(d);
            }
        }
    }

    /// Forgets visits idle for longer than [`IDLE`]; returns how many.
    pub fn sweep(&mut self, now: DateTime<Utc>) -> usize {
        let before = self.open.len();
        self.open.retain(|_, s| now.signed_duration_since(s.last_seen) < IDLE);
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
            at: "2026-11-23T15:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(minute),
            hour: 0,
            event: Arc::from(if pageview { "pageview" } else { "signup" }),
            page: Arc::from(page),
            consent: "none",
            is_pageview: pageview,
            only_engagement: false,
            dims: dims(),
        }
    }

    /// Sums of (pageviews, visits, bounces, duration) and exits by page.
    fn check(hits: Vec<Contribution>, expected: (u64, i64, i64, i64), expected_exits: &[(&str, i64)]) {
        let mut sessions = Sessions::default();
        let mut out = Vec::new();
        for h in hits {
            sessions.record(h, &mut out);
        }
        let totals = out.iter().fold((0, 0, 0, 0), |t, d| (t.0 + d.pageviews, t.1 + d.visits, t.2 + d.bounces, t.3 + d.duration));
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
        check(vec![hit(0, "/", true), hit(2, "/a", true), hit(5, "/b", true)], (3, 1, 0, 300), &[("/b", 1)]);
    }

    #[test]
    fn thirty_idle_minutes_start_a_new_visit() {
        check(vec![hit(0, "/", true), hit(31, "/a", true)], (2, 2, 2, 0), &[("/", 1), ("/a", 1)]);
    }

    #[test]
    fn events_extend_but_do_not_start_visits() {
        check(vec![hit(0, "/x", false)], (0, 0, 0, 0), &[]);
        check(vec![hit(0, "/", true), hit(3, "/", false)], (1, 1, 1, 180), &[("/", 1)]);
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
