//! In-memory visits: 30 minutes of inactivity end one. Only their
//! aggregates leave this module (visits, bounces, duration, entry and exit
//! pages), as signed corrections of the hourly rows; sessions are lost on a
//! crash, which can only make a visit look like two. A visit also holds
//! its progress through its site's funnels (a step count per funnel, see
//! `funnels`), which the aggregator moves on and which dies with it, and
//! what its pages reported of their engagement, so that each (visit, page)
//! counts once in `time_on_page` and `scroll_depth` as in Plausible.

use foldhash::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::privacy::consent::Consent;
use crate::privacy::pipeline::Engagement;
use crate::sink::rows::{EngagementCounts, TrafficDelta, VisitDims};

pub const IDLE: Duration = Duration::minutes(30);

/// Most visits held at once (a few hundred bytes each). Past it, after a
/// sweep, a new visit is counted but not remembered: its later pages start
/// visits of their own. Memory stays bounded whatever the traffic.
pub const MAX_OPEN: usize = 1_000_000;

/// Most pages of one visit whose engagement is remembered. A visit's page
/// past them counts as a new (visit, page) each time it reports, which
/// can only lower that page's averages a little.
pub const MAX_ENGAGED_PAGES: usize = 32;

/// What one page of a visit has reported so far.
struct PageEngagement {
    page: Arc<str>,
    hostname: Arc<str>,
    engaged: bool,
    depth: Option<u8>,
}

/// A visit. Its own counts (visit, bounce, duration) live on its first
/// row — start hour, entry page — so visit metrics by hour or entry page add
/// up; its exit lives on the row of its last pageview.
struct Session {
    start_hour: u32,
    start_consent: Consent,
    entry: Arc<str>,
    entry_host: Arc<str>,
    /// The last hit of any kind: what keeps the visit open.
    last_seen: DateTime<Utc>,
    /// The last pageview or event: where the visit's duration has got to.
    last_counted: DateTime<Utc>,
    last_page: Arc<str>,
    last_host: Arc<str>,
    last_hour: u32,
    last_consent: Consent,
    /// Still one pageview and no interactive event.
    bounce: bool,
    dims: Arc<VisitDims>,
    pages: Vec<PageEngagement>,
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
    pub hostname: Arc<str>,
    pub consent: Consent,
    pub is_pageview: bool,
    /// A custom event that ends a bounce.
    pub interactive: bool,
    /// An engagement event's report: it extends the visit and counts
    /// only the page's engagement.
    pub engagement: Option<Engagement>,
    pub dims: Arc<VisitDims>,
    /// The site's number of funnels: the progress a new visit holds.
    pub funnels: usize,
}

impl Session {
    /// Notes a page's engagement report; returns what it adds to the
    /// page's counts: its engaged time, the (visit, page) the first time it
    /// reports time or depth, and how much deeper it scrolled than before.
    fn engage(
        &mut self,
        page: &Arc<str>,
        hostname: &Arc<str>,
        report: Engagement,
    ) -> EngagementCounts {
        let i = match self
            .pages
            .iter()
            .position(|p| p.page == *page && p.hostname == *hostname)
        {
            Some(i) => i,
            None => {
                if self.pages.len() >= MAX_ENGAGED_PAGES {
                    self.pages.remove(0);
                }
                self.pages.push(PageEngagement {
                    page: page.clone(),
                    hostname: hostname.clone(),
                    engaged: false,
                    depth: None,
                });
                self.pages.len() - 1
            }
        };
        let seen = &mut self.pages[i];
        let mut counts = EngagementCounts::default();
        if report.engaged_ms > 0 {
            counts.engaged_ms = i64::from(report.engaged_ms);
            if !seen.engaged {
                seen.engaged = true;
                counts.engaged_visits = 1;
            }
        }
        if let Some(depth) = report.scroll_depth {
            match seen.depth {
                None => {
                    counts.scroll_total = i64::from(depth);
                    counts.scroll_visits = 1;
                    seen.depth = Some(depth);
                }
                Some(before) if depth > before => {
                    counts.scroll_total = i64::from(depth - before);
                    seen.depth = Some(depth);
                }
                Some(_) => {}
            }
        }
        counts
    }
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
        let delta = |dims: &Arc<VisitDims>, event: Arc<str>, page: Arc<str>, hostname: Arc<str>| {
            TrafficDelta {
                hour: c.hour,
                dims: dims.clone(),
                event,
                page,
                hostname,
                consent: c.consent,
                visitor: c.visitor,
                pageviews: 0,
                events: 0,
                visits: 0,
                bounces: 0,
                duration: 0,
                exits: 0,
                engagement: EngagementCounts::default(),
            }
        };
        let live = self
            .open
            .get(&key)
            .is_some_and(|s| c.at.signed_duration_since(s.last_seen) < IDLE);

        if !live {
            if !c.is_pageview {
                // An event or engagement outside a visit is counted, but
                // does not start one: a visit starts with a page.
                if c.engagement.is_none() {
                    let mut d = delta(&c.dims, c.event, c.page, c.hostname);
                    d.events = 1;
                    out.push(d);
                }
                return None;
            }
            let mut d = delta(&c.dims, c.event, c.page.clone(), c.hostname.clone());
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
                entry_host: c.hostname.clone(),
                last_seen: c.at,
                last_counted: c.at,
                last_page: c.page,
                last_host: c.hostname,
                last_hour: c.hour,
                last_consent: c.consent,
                bounce: true,
                dims: c.dims,
                pages: Vec::new(),
                funnels: vec![0; c.funnels].into_boxed_slice(),
            });
            let session = session.into_mut();
            return Some(Visit {
                start_hour: session.start_hour,
                funnels: &mut session.funnels,
            });
        }

        let session = self.open.get_mut(&key)?;
        session.last_seen = session.last_seen.max(c.at);
        // An engagement keeps the visit open but, as in Plausible, does
        // not lengthen it: a visit lasts from its first hit to its last
        // pageview or event.
        let elapsed = if c.engagement.is_some() {
            0
        } else {
            let elapsed =
                c.at.signed_duration_since(session.last_counted)
                    .num_seconds()
                    .max(0);
            session.last_counted = session.last_counted.max(c.at);
            elapsed
        };
        let dims = session.dims.clone();
        let pageview: Arc<str> = if c.is_pageview {
            c.event.clone()
        } else {
            Arc::from("pageview")
        };

        // The visit's own counts go to its first row.
        let mut visit = delta(
            &dims,
            pageview.clone(),
            session.entry.clone(),
            session.entry_host.clone(),
        );
        visit.hour = session.start_hour;
        visit.consent = session.start_consent;
        visit.duration = elapsed;
        if (c.is_pageview || c.interactive) && session.bounce {
            visit.bounces = -1;
            session.bounce = false;
        }
        if visit.duration != 0 || visit.bounces != 0 {
            out.push(visit);
        }

        if c.is_pageview {
            // The previous page is no longer where the visit ends. The
            // correction is keyed like that page's row so the two merge
            // when they share a batch.
            let mut correction = delta(
                &dims,
                pageview,
                session.last_page.clone(),
                session.last_host.clone(),
            );
            correction.hour = session.last_hour;
            correction.consent = session.last_consent;
            correction.exits = -1;
            out.push(correction);

            let mut d = delta(&dims, c.event, c.page.clone(), c.hostname.clone());
            d.pageviews = 1;
            d.exits = 1;
            session.last_page = c.page;
            session.last_host = c.hostname;
            session.last_hour = c.hour;
            session.last_consent = c.consent;
            out.push(d);
        } else if let Some(report) = c.engagement {
            let counts = session.engage(&c.page, &c.hostname, report);
            if !counts.is_zero() {
                let mut d = delta(&dims, pageview, c.page, c.hostname);
                d.engagement = counts;
                out.push(d);
            }
        } else {
            let mut d = delta(&dims, c.event, c.page, c.hostname);
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
            utm_content: String::new(),
            utm_term: String::new(),
            click_id: String::new(),
            country: "CA".into(),
            region: "CA-QC".into(),
            browser: "Firefox".into(),
            browser_version: "133".into(),
            os: "Linux".into(),
            os_version: String::new(),
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
            hostname: Arc::from("example.org"),
            consent: Consent::Unset,
            is_pageview: pageview,
            interactive: false,
            engagement: None,
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
        let mut exits: HashMap<&str, i64> = HashMap::default();
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
        let mut rows: HashMap<(u32, &str, Consent), Counts> = HashMap::default();
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

    #[test]
    fn an_interactive_event_ends_a_bounce_once_and_a_quiet_one_does_not() {
        let event = |minute, interactive| {
            let mut h = hit(minute, "/", false);
            h.interactive = interactive;
            h
        };
        check(
            vec![hit(0, "/", true), event(1, false)],
            (1, 1, 1, 60),
            &[("/", 1)],
        );
        check(
            vec![hit(0, "/", true), event(1, true)],
            (1, 1, 0, 60),
            &[("/", 1)],
        );
        // The second page finds the bounce already undone.
        check(
            vec![
                hit(0, "/", true),
                event(1, true),
                hit(2, "/a", true),
                event(3, true),
            ],
            (2, 1, 0, 180),
            &[("/a", 1)],
        );
    }

    fn engagement(
        minute: i64,
        page: &str,
        engaged_ms: u32,
        scroll_depth: Option<u8>,
    ) -> Contribution {
        let mut h = hit(minute, page, false);
        h.event = Arc::from("engagement");
        h.engagement = Some(Engagement {
            engaged_ms,
            scroll_depth,
        });
        h
    }

    /// Engagement counts by page: (engaged ms, engaged visits, scroll
    /// total, scroll visits).
    fn engaged(hits: Vec<Contribution>) -> Vec<(String, [i64; 4])> {
        let mut sessions = Sessions::default();
        let mut out = Vec::new();
        for h in hits {
            sessions.record(h, &mut out);
        }
        let mut pages: HashMap<String, [i64; 4]> = HashMap::default();
        for d in &out {
            let e = &d.engagement;
            let p = pages.entry(d.page.to_string()).or_default();
            for (sum, x) in p.iter_mut().zip([
                e.engaged_ms,
                e.engaged_visits,
                e.scroll_total,
                e.scroll_visits,
            ]) {
                *sum += x;
            }
            if !e.is_zero() {
                assert_eq!(
                    (d.pageviews, d.events, d.visits, d.exits),
                    (0, 0, 0, 0),
                    "counts nothing else"
                );
            }
        }
        let mut pages: Vec<_> = pages.into_iter().filter(|(_, c)| *c != [0; 4]).collect();
        pages.sort();
        pages
    }

    #[test]
    fn a_pages_engagement_counts_once_per_visit_with_its_deepest_scroll() {
        let got = engaged(vec![
            hit(0, "/", true),
            engagement(1, "/", 20_000, Some(40)),
            hit(2, "/a", true),
            engagement(3, "/a", 5_000, Some(90)),
            // Back on the first page: more time, a deeper scroll, still
            // one (visit, page).
            hit(4, "/", true),
            engagement(5, "/", 10_000, Some(70)),
            engagement(6, "/", 1_000, Some(50)),
        ]);
        assert_eq!(
            got,
            vec![
                ("/".to_string(), [31_000, 1, 70, 1]),
                ("/a".to_string(), [5_000, 1, 90, 1]),
            ]
        );
        // Engagements keep a visit open without lengthening it.
        check(
            vec![
                hit(0, "/", true),
                engagement(20, "/", 1_000, None),
                engagement(40, "/", 1_000, None),
                hit(45, "/a", true),
            ],
            (2, 1, 0, 45 * 60),
            &[("/a", 1)],
        );
        check(
            vec![hit(0, "/", true), engagement(20, "/", 1_000, None)],
            (1, 1, 1, 0),
            &[("/", 1)],
        );
        // Outside a visit an engagement counts nothing.
        assert!(engaged(vec![engagement(0, "/", 5_000, Some(10))]).is_empty());
        // A report of depth only, then of time only.
        assert_eq!(
            engaged(vec![
                hit(0, "/", true),
                engagement(1, "/", 0, Some(0)),
                engagement(2, "/", 700, None)
            ]),
            vec![("/".to_string(), [700, 1, 0, 1])]
        );
    }
}
