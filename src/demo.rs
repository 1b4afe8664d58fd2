//! `tamis demo`: synthetic traffic for every configured site over the past
//! weeks, so a first-time user sees a populated dashboard. The hits are
//! made up (visitors from Canadian provinces, search, social and direct
//! sources, desktop and phone browsers, French and English, a consent mix,
//! some opt-outs and bots) but everything after that is production code:
//! the real privacy pipeline (`privacy::pipeline::Privacy`), the real
//! aggregator and the real batch writer, so the stored rows have exactly
//! the production shape and privacy treatment. Daily salts for those past
//! days are random, live in this process only and die with it.
//!
//! One liberty: the synthetic addresses do not come from real provincial
//! networks, so the location the GeoIP step found is replaced by the
//! visitor's made-up province (cut to the site's `geo_level`).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

use crate::aggregate::{Aggregator, Message};
use crate::config::Settings;
use crate::journal::{Journal, Options as JournalOptions};
use crate::metrics::Metrics;
use crate::privacy::geo::GeoLevel;
use crate::privacy::pipeline::{Privacy, RawHit};
use crate::privacy::salt::SaltStore;
use crate::sink::writer::Writer;

/// What the demo wrote, per site: hits sent into the pipeline, and how
/// many of them were pageviews that were counted.
#[derive(Debug, Default, Clone)]
pub struct SiteSummary {
    pub site: String,
    pub hits: u64,
    pub pageviews: u64,
    pub dropped: u64,
}

const PAGES: &[&str] = &[
    "/",
    "/",
    "/",
    "/services",
    "/services/permis",
    "/services/permis/renouvellement",
    "/nouvelles",
    "/nouvelles/budget-2026",
    "/contact",
    "/emplois",
    "/en",
    "/en/services",
    "/en/contact",
    "/carte-interactive",
    "/loisirs/piscines",
    "/collectes/calendrier",
    "/avis-publics",
    "/a-propos",
    "/recherche",
    "/foire-aux-questions",
];
const REFERRERS: &[(&str, u32)] = &[
    ("", 40),
    ("https://www.google.com/", 30),
    ("https://www.google.ca/", 8),
    ("https://www.bing.com/", 5),
    ("https://duckduckgo.com/", 3),
    ("https://www.facebook.com/", 6),
    ("https://t.co/", 2),
    ("https://www.linkedin.com/", 2),
    ("https://www.quebec.ca/", 3),
    ("https://www.lapresse.ca/", 2),
    ("https://mail.google.com/", 1),
];
const REGIONS: &[(&str, &str, u32)] = &[
    ("CA", "CA-QC", 62),
    ("CA", "CA-ON", 18),
    ("CA", "CA-BC", 4),
    ("CA", "CA-AB", 4),
    ("CA", "CA-NB", 3),
    ("CA", "CA-NS", 2),
    ("CA", "CA-MB", 1),
    ("CA", "CA-SK", 1),
    ("FR", "FR-IDF", 2),
    ("US", "US-NY", 1),
    ("US", "US-VT", 1),
    ("BE", "BE-BRU", 1),
];
const AGENTS: &[(&str, u32)] = &[
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", 30),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", 20),
    ("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36", 12),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0", 12),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15", 10),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", 6),
    ("Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", 5),
    ("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36", 5),
];
const BOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

fn pick<'a, T>(rng: &mut StdRng, items: &'a [(T, u32)]) -> &'a T {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut n = rng.random_range(0..total);
    for (item, w) in items {
        if n < *w {
            return item;
        }
        n -= w;
    }
    &items[0].0
}

/// One synthetic visitor: an address in its own /24 (so visitor keys
/// differ), a browser, a province, a language and a consent habit.
struct Visitor {
    ip: IpAddr,
    agent: &'static str,
    country: &'static str,
    region: &'static str,
    language: &'static str,
    consent: Option<&'static str>,
    gpc: bool,
}

fn visitor(rng: &mut StdRng, n: u32) -> Visitor {
    let (country, region, _) = *pick_region(rng);
    let language = if region == "CA-QC" || country == "FR" || country == "BE" {
        if rng.random_bool(0.85) {
            "fr-CA,fr;q=0.9,en;q=0.8"
        } else {
            "en-CA,en;q=0.9"
        }
    } else if rng.random_bool(0.2) {
        "fr-CA,fr;q=0.9"
    } else {
        "en-CA,en;q=0.9"
    };
    let consent = match rng.random_range(0..100) {
        0..55 => None,
        55..85 => Some("granted"),
        _ => Some("denied"),
    };
    Visitor {
        // tamis keeps the /24: the visitor number goes into the network
        // part (16,384 networks of 100.64.0.0/10), or visitors would merge.
        ip: IpAddr::V4(Ipv4Addr::new(
            100,
            64 + ((n >> 8) & 0x3f) as u8,
            (n & 0xff) as u8,
            7,
        )),
        agent: pick::<&'static str>(rng, AGENTS),
        country,
        region,
        language,
        consent,
        gpc: rng.random_bool(0.04),
    }
}

fn pick_region(rng: &mut StdRng) -> &'static (&'static str, &'static str, u32) {
    let total: u32 = REGIONS.iter().map(|r| r.2).sum();
    let mut n = rng.random_range(0..total);
    for r in REGIONS {
        if n < r.2 {
            return r;
        }
        n -= r.2;
    }
    &REGIONS[0]
}

/// A hit to run through the pipeline.
struct Hit {
    at: DateTime<Utc>,
    site: usize,
    visitor: usize,
    name: String,
    url: String,
    referrer: Option<&'static str>,
    props: Vec<(String, String)>,
    /// What an engagement reports (zero for other hits).
    engagement: crate::privacy::pipeline::Engagement,
}

/// Generates `days` days of traffic ending now, runs it through the
/// pipeline and aggregator, and writes it with the batch writer.
pub async fn run(settings: &Settings, days: u32, seed: u64) -> anyhow::Result<Vec<SiteSummary>> {
    crate::sink::migrate::run(&settings.clickhouse)
        .await
        .context("migrating ClickHouse")?;
    let mut rng = StdRng::seed_from_u64(seed);
    let now = Utc::now();
    let salts = Arc::new(SaltStore::new());
    let privacy = Privacy::new(settings.sites.clone(), settings.geo.db.clone(), salts)?;

    let mut visitors = Vec::new();
    let mut hits = Vec::new();
    for (site_index, site) in settings.sites.iter().enumerate() {
        // Sites differ in size: the first is the largest.
        let daily = 260.0 / (1.0 + site_index as f64 * 0.8);
        let hostname = site
            .hostnames
            .first()
            .cloned()
            .unwrap_or_else(|| site.id.clone());
        let events: Vec<&String> = {
            let mut e: Vec<&String> = site.event_names.iter().collect();
            e.sort();
            e
        };
        let mut props: Vec<&String> = site.prop_keys.iter().collect();
        props.sort();
        // A pool of regulars who come back on several days, plus newcomers.
        let regulars: Vec<usize> = (0..(daily as usize / 3).max(10))
            .map(|_| {
                visitors.push(visitor(&mut rng, visitors.len() as u32 + 1));
                visitors.len() - 1
            })
            .collect();
        for day in (0..days).rev() {
            let weekday = (now - Duration::days(day as i64)).format("%u").to_string();
            let weekend = weekday == "6" || weekday == "7";
            let growth = 1.0 + 0.01 * (days - day) as f64;
            let count =
                (daily * growth * if weekend { 0.6 } else { 1.0 } * rng.random_range(0.85..1.15))
                    as usize;
            for _ in 0..count {
                let v = if rng.random_bool(0.3) {
                    regulars[rng.random_range(0..regulars.len())]
                } else {
                    visitors.push(visitor(&mut rng, visitors.len() as u32 + 1));
                    visitors.len() - 1
                };
                // Daytime-heavy hour of arrival, in the site's time zone
                // (approximately: a fixed five-hour offset is enough here).
                let hour = [
                    7, 8, 9, 10, 10, 11, 11, 12, 13, 13, 14, 14, 15, 15, 16, 19, 20, 20, 21, 22,
                ][rng.random_range(0..20)]
                    + 5;
                let start_of_day = (now - Duration::days(day as i64))
                    .date_naive()
                    .and_hms_opt(0, 0, 0)
                    .map(|d| d.and_utc())
                    .unwrap_or(now);
                let mut at = start_of_day
                    + Duration::hours(hour)
                    + Duration::seconds(rng.random_range(0..3600));
                if at > now {
                    if day == 0 {
                        at = now - Duration::seconds(rng.random_range(60..4 * 3600));
                    } else {
                        continue;
                    }
                }
                let referrer = *pick(&mut rng, REFERRERS);
                let referrer = (!referrer.is_empty()).then_some(referrer);
                let campaign = if site.collect_campaigns && rng.random_bool(0.12) {
                    [
                        "?utm_source=infolettre&utm_medium=email&utm_campaign=automne",
                        "?utm_source=facebook&utm_medium=social&utm_campaign=budget-2026",
                    ][rng.random_range(0..2)]
                } else {
                    ""
                };
                let pages = 1 + [0, 0, 0, 1, 1, 2, 3, 5][rng.random_range(0..8)];
                let mut page = PAGES[rng.random_range(0..PAGES.len())].to_string();
                for i in 0..pages {
                    // Now and then an old notice few people read: the
                    // long tail that small-count suppression groups.
                    if rng.random_bool(0.04) {
                        page = format!("/avis-publics/archives/avis-{}", rng.random_range(1..400));
                    }
                    let url = format!(
                        "https://{hostname}{page}{}",
                        if i == 0 { campaign } else { "" }
                    );
                    hits.push(Hit {
                        at,
                        site: site_index,
                        visitor: v,
                        name: "pageview".into(),
                        url: url.clone(),
                        referrer,
                        props: Vec::new(),
                        engagement: Default::default(),
                    });
                    if !events.is_empty() && rng.random_bool(0.08) {
                        let name = events[rng.random_range(0..events.len())].clone();
                        let p = props
                            .iter()
                            .map(|k| {
                                (
                                    k.to_string(),
                                    ["basique", "famille", "entreprise"][rng.random_range(0..3)]
                                        .to_string(),
                                )
                            })
                            .collect();
                        hits.push(Hit {
                            at: at + Duration::seconds(20),
                            site: site_index,
                            visitor: v,
                            name,
                            url: url.clone(),
                            referrer,
                            props: p,
                            engagement: Default::default(),
                        });
                    }
                    let stay = Duration::seconds(rng.random_range(8..240));
                    hits.push(Hit {
                        at: at + stay,
                        site: site_index,
                        visitor: v,
                        name: "engagement".into(),
                        url,
                        referrer,
                        props: Vec::new(),
                        // Visible most of the stay; scrolled part of the way.
                        engagement: crate::privacy::pipeline::Engagement {
                            engaged_ms: (stay.num_milliseconds() * rng.random_range(5..10) / 10)
                                as u32,
                            scroll_depth: Some(rng.random_range(20..=100)),
                        },
                    });
                    at += stay + Duration::seconds(2);
                    page = PAGES[rng.random_range(0..PAGES.len())].to_string();
                }
                if rng.random_bool(0.03) {
                    hits.push(Hit {
                        at,
                        site: site_index,
                        visitor: usize::MAX,
                        name: "pageview".into(),
                        url: format!("https://{hostname}/"),
                        referrer: None,
                        props: Vec::new(),
                        engagement: Default::default(),
                    });
                }
            }
        }
    }
    hits.retain(|h| h.at <= now);
    hits.sort_by_key(|h| h.at);

    let metrics = Arc::new(Metrics::default());
    let (tx, rx) = mpsc::channel(4);
    // The writer confirms batches to a journal and marks them with its
    // receipts; the demo's hits are made here, not received, so a
    // throw-away journal numbers them.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let journal_dir =
        std::env::temp_dir().join(format!("tamis-demo-{}-{nanos}", std::process::id()));
    let (journal, _) = Journal::open(
        &journal_dir,
        JournalOptions {
            max_bytes: 1 << 20,
            fsync: false,
        },
        metrics.clone(),
    )
    .with_context(|| format!("creating a scratch journal in {}", journal_dir.display()))?;
    let writer = tokio::spawn(
        Writer::new(
            Arc::new(crate::sink::nodes::Nodes::new(&settings.clickhouse, 0)),
            settings.clickhouse.timeout,
            metrics.clone(),
            journal.clone(),
        )
        .run(rx),
    );
    let mut aggregator = Aggregator::new(settings.sites.clone());
    let mut summary: Vec<SiteSummary> = settings
        .sites
        .iter()
        .map(|s| SiteSummary {
            site: s.id.clone(),
            ..Default::default()
        })
        .collect();
    let mut in_batch = 0;
    let mut seq = 0;
    for hit in &hits {
        let site = &settings.sites[hit.site];
        let bot = Visitor {
            ip: IpAddr::V4(Ipv4Addr::new(66, 249, 66, 1)),
            agent: BOT,
            country: "",
            region: "",
            language: "",
            consent: None,
            gpc: false,
        };
        let v = visitors.get(hit.visitor).unwrap_or(&bot);
        let raw = RawHit {
            name: &hit.name,
            url: &hit.url,
            domain: &site.id,
            referrer: hit.referrer,
            props: &hit.props,
            hash_mode: crate::privacy::url::HashMode::Off,
            consent: v.consent,
            opt_out: false,
            client_ip: v.ip,
            user_agent: v.agent,
            sec_gpc: v.gpc.then_some(b"1".as_slice()),
            dnt: None,
            sec_purpose: None,
            purpose: None,
            accept_language: Some(v.language),
            engagement: hit.engagement,
            interactive: true,
            at: hit.at,
        };
        summary[hit.site].hits += 1;
        let message = match privacy.process(hit.site, &raw) {
            Ok(mut event) => {
                if hit.name == "pageview" {
                    summary[hit.site].pageviews += 1;
                }
                event.location.country = if site.geo_level == GeoLevel::None {
                    String::new()
                } else {
                    v.country.to_string()
                };
                event.location.region = if site.geo_level == GeoLevel::Region {
                    v.region.to_string()
                } else {
                    String::new()
                };
                Message::Event(event)
            }
            Err(dropped) => {
                summary[hit.site].dropped += 1;
                Message::Dropped(dropped, hit.at)
            }
        };
        seq += 1;
        aggregator.note_seq(seq);
        aggregator.handle(message);
        in_batch += 1;
        if in_batch >= 20_000 {
            send(&mut aggregator, &tx, &metrics).await?;
            in_batch = 0;
        }
    }
    send(&mut aggregator, &tx, &metrics).await?;
    drop(tx);
    writer
        .await
        .context("the batch writer stopped abnormally")?;
    drop(journal);
    let _ = std::fs::remove_dir_all(&journal_dir);
    let rejected = metrics.rows_rejected.load(Ordering::Relaxed);
    anyhow::ensure!(
        rejected == 0,
        "ClickHouse refused {rejected} rows (see the log)"
    );
    Ok(summary)
}

async fn send(
    aggregator: &mut Aggregator,
    tx: &mpsc::Sender<crate::sink::rows::Batch>,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let batch = aggregator.take_batch();
    if batch.hits == 0 {
        return Ok(());
    }
    // The writer takes written records off the queue depth.
    metrics
        .queue_depth
        .fetch_add(batch.end_seq - batch.first_seq, Ordering::AcqRel);
    metrics.batches_pending.fetch_add(1, Ordering::Relaxed);
    tx.send(batch)
        .await
        .map_err(|_| anyhow::anyhow!("the batch writer stopped"))
}
