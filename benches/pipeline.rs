//! Criterion benchmarks of the per-hit hot path: the privacy pipeline
//! (with warm user-agent cache, as in steady state), its costliest steps
//! alone, and event parsing. Run: `cargo bench --bench pipeline`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};

use tamis::config::{Config, Settings};
use tamis::privacy::geo::{GeoDb, GeoLevel};
use tamis::privacy::ip::truncate;
use tamis::privacy::pipeline::{Privacy, RawHit};
use tamis::privacy::salt::SaltStore;

const UAS: [&str; 4] = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
];

fn privacy() -> Privacy {
    let config: Config = toml::from_str("[[site]]\nid = 'example.org'\n").expect("config");
    let settings = Settings::from_config(config, std::path::Path::new(".")).expect("settings");
    let geo = GeoDb::open(
        Some(std::path::Path::new(
            "tests/data/test-data/GeoIP2-City-Test.mmdb",
        )),
        None,
    )
    .expect("test GeoIP database");
    Privacy::new(
        settings.sites.clone(),
        Arc::new(geo),
        Arc::new(SaltStore::new()),
    )
    .expect("privacy")
}

fn hit(i: usize) -> RawHit<'static> {
    RawHit {
        name: "pageview",
        url: "https://example.org/services/permis/4501234567?utm_source=x&q=1#top",
        domain: "example.org",
        referrer: Some("https://www.google.com/search?q=permis"),
        props: &[],
        hash_mode: tamis::privacy::url::HashMode::Off,
        consent: None,
        opt_out: false,
        client_ip: std::net::IpAddr::from([81, 2, 69, (i % 250) as u8]),
        user_agent: UAS[i % UAS.len()],
        sec_gpc: None,
        dnt: None,
        sec_purpose: None,
        purpose: None,
        accept_language: Some("fr-CA,fr;q=0.9,en;q=0.8"),
        engagement: Default::default(),
        interactive: true,
        at: chrono::Utc::now(),
    }
}

fn benches(c: &mut Criterion) {
    let p = privacy();
    let hits: Vec<RawHit<'static>> = (0..1024).map(hit).collect();
    let mut i = 0;
    c.bench_function("pipeline/process (warm caches)", |b| {
        b.iter(|| {
            i = (i + 1) % hits.len();
            black_box(p.process(0, &hits[i]).is_ok())
        })
    });
    c.bench_function("step/truncate", |b| {
        b.iter(|| truncate(black_box("198.51.100.77".parse().unwrap()), 24, 48))
    });
    let geo = GeoDb::open(
        Some(std::path::Path::new(
            "tests/data/test-data/GeoIP2-City-Test.mmdb",
        )),
        None,
    )
    .expect("geo");
    let ip = truncate("81.2.69.160".parse().unwrap(), 24, 48);
    c.bench_function("step/geo lookup", |b| {
        b.iter(|| black_box(geo.lookup(&ip, GeoLevel::Region)))
    });
    let site = p.sites()[0].clone();
    c.bench_function("step/url reduce", |b| {
        b.iter(|| {
            tamis::privacy::url::reduce(
                black_box("https://example.org/users/jean.tremblay@example.com/4501234567?q=1#x"),
                &site,
                tamis::privacy::url::HashMode::Off,
            )
        })
    });
    let body = br#"{"n":"pageview","u":"https://example.org/services","d":"example.org","r":"https://www.google.com/"}"#;
    c.bench_function("ingest/parse event", |b| {
        b.iter(|| tamis::ingest::event::parse(black_box(body)))
    });
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
