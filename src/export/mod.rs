//! `tamis export`: one site's month as an open-data package — CSV tables
//! and a `csv-metadata.json` (W3C CSV on the Web) describing each column
//! in French or English, the suppression rule and the licence.
//!
//! Every number comes from the stats API's own query layer
//! ([`crate::query::Api::run`]) in the protected disclosure mode, as a
//! public token reads it: cells below k withheld, counts consistently
//! randomly rounded with the installation's rounding key, so the package
//! and any API answer cannot be differenced down to a small group. Cells
//! are written by the API's CSV writer ([`crate::query::csv`]), which
//! neutralises what a spreadsheet would run as a formula. This module
//! builds no SQL and touches neither hyper nor the `clickhouse` crate.
//!
//! Nothing is written until every table is read; then each file is written
//! to a temporary name, fsync'd and renamed, the metadata last, so a portal
//! watching the folder never picks up half a package.

pub mod tables;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde_json::{json, Value};

use crate::config::{Disclosure, Settings, SiteSettings};
use crate::query::request::{self, SiteView};
use crate::query::{csv, Api};
use tables::{Table, TABLES};

/// The licence stated when `--licence` is not given: the one Québec's
/// open-data portal (Données Québec) publishes under by default.
pub const DEFAULT_LICENCE: &str = "CC-BY-4.0";

/// The metadata file's name, as CSVW's "locating metadata" convention
/// looks for it beside the tables.
pub const METADATA: &str = "csv-metadata.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Fr,
    En,
}

impl Lang {
    pub fn parse(s: &str) -> anyhow::Result<Lang> {
        match s {
            "fr" => Ok(Lang::Fr),
            "en" => Ok(Lang::En),
            other => anyhow::bail!("--lang takes fr or en, not `{other}`"),
        }
    }

    fn code(self) -> &'static str {
        match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        }
    }
}

pub struct Options {
    pub site: String,
    /// `YYYY-MM`.
    pub month: String,
    pub lang: Lang,
    pub out: PathBuf,
    /// An SPDX identifier (`CC-BY-4.0`, `CC0-1.0`, …) or a licence's URL.
    pub licence: String,
}

/// `--month YYYY-MM` as the month's first day.
pub fn parse_month(s: &str) -> anyhow::Result<NaiveDate> {
    let valid = s.len() == 7 && s.as_bytes()[4] == b'-';
    valid
        .then(|| NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| anyhow::anyhow!("--month takes a month as YYYY-MM (2026-03), not `{s}`"))
}

/// The month's last day.
fn last_day(first: NaiveDate) -> NaiveDate {
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    };
    next.and_then(|n| n.pred_opt()).unwrap_or(first)
}

/// Refuses a month that has not started in the site's time zone; says
/// whether it has ended (a month under way is exported, marked partial).
fn month_state(first: NaiveDate, site: &SiteSettings, now: DateTime<Utc>) -> anyhow::Result<bool> {
    let today = now.with_timezone(&site.timezone).date_naive();
    anyhow::ensure!(
        first <= today,
        "--month {} is in the future (today is {today} in {})",
        first.format("%Y-%m"),
        site.timezone
    );
    Ok(last_day(first) < today)
}

/// The licence's URL for the identifiers a portal usually asks for.
fn licence_url(licence: &str) -> Option<&'static str> {
    match licence.to_ascii_uppercase().as_str() {
        "CC-BY-4.0" => Some("https://creativecommons.org/licenses/by/4.0/"),
        "CC0-1.0" => Some("https://creativecommons.org/publicdomain/zero/1.0/"),
        "CC-BY-SA-4.0" => Some("https://creativecommons.org/licenses/by-sa/4.0/"),
        "ODC-BY-1.0" => Some("https://opendatacommons.org/licenses/by/1-0/"),
        "OGL-CANADA-2.0" => Some("https://open.canada.ca/en/open-government-licence-canada"),
        _ => None,
    }
}

/// Runs the export; progress goes to stderr.
pub async fn run(mut settings: Settings, options: Options) -> anyhow::Result<()> {
    let site = settings
        .site(&options.site)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("`{}` is not a configured site id", options.site))?;
    let first = parse_month(&options.month)?;
    let now = Utc::now();
    let complete = month_state(first, &site, now)?;
    let month = first.format("%Y-%m").to_string();
    let out = prepare_folder(&options.out)?;
    if !complete {
        eprintln!(
            "tamis: export: {month} is not over yet: its numbers are partial (metadata says so)"
        );
    }

    let nodes = Arc::new(crate::sink::nodes::Nodes::new(&settings.clickhouse, 0));
    let clock = crate::clock::Clock::system();
    // Rounded with the same key as the stats API's answers: the
    // installation's stored secret unless `query.rounding_key` is set.
    if settings.needs_installation_secret() {
        let secret = crate::sink::rounding::installation_secret(&nodes, &clock)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "reading the installation's rounding secret: {}",
                    crate::sink::rounding::describe(&e)
                )
            })?
            .ok_or_else(|| {
                anyhow::anyhow!("the installation's rounding secret cannot be read: a replica of its ClickHouse shard is out of reach and the others have not fetched everything from it; try again later")
            })?;
        settings.use_installation_secret(&secret);
    }
    let site = settings
        .site(&options.site)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("`{}` is not a configured site id", options.site))?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    // `Api::run` records nothing itself; the export's one audit row is
    // written below. The writer is only there because `Api` holds one.
    let (audit, audit_task) = crate::sink::audit::AuditLog::start(
        nodes.clone(),
        metrics.clone(),
        settings.clickhouse.timeout,
    );
    let api = Api {
        nodes: nodes.clone(),
        sites: settings.sites.clone().into(),
        tokens: crate::config::live::Live::new(Vec::new()),
        clock,
        metrics,
        audit,
        rollups: true,
        limits: crate::query::limits::Limits::new(&settings.query),
    };
    let where_ = match &settings.clickhouse.cluster {
        None => format!("ClickHouse at {}", settings.clickhouse.url),
        Some(cluster) => format!("ClickHouse cluster `{}`", cluster.name),
    };

    let mut files: Vec<(String, String, usize)> = Vec::new();
    for table in TABLES {
        let (text, rows) = read_table(&api, &site, table, &month, first, options.lang, now)
            .await
            .with_context(|| format!("reading {} from {where_}", table.file))?;
        eprintln!("tamis: export: {} {rows} row(s)", table.file);
        files.push((table.file.to_string(), text, rows));
    }
    drop(api);
    audit_task.abort();

    let publisher = settings.organization.name.as_deref().unwrap_or(&site.id);
    let metadata = metadata(&site, publisher, &month, complete, &options, now);
    let mut staged = Vec::new();
    for (name, text, _) in &files {
        staged.push(stage(&out, name, text.as_bytes())?);
    }
    let body = serde_json::to_string_pretty(&metadata).context("encoding the metadata")?;
    staged.push(stage(&out, METADATA, body.as_bytes())?);
    for s in &staged {
        s.commit()?;
    }
    sync_folder(&out);
    let rows: usize = files.iter().map(|(_, _, n)| n).sum();
    eprintln!(
        "tamis: export: {} tables and {METADATA} written to {} (protected disclosure, k = {})",
        files.len(),
        out.display(),
        site.k_threshold
    );

    let entry = crate::sink::audit::AuditEntry {
        at: now,
        kind: "export",
        actor: crate::config::operator_name(),
        client: "cli",
        site_id: site.id.clone(),
        summary: format!(
            "month={month} lang={} disclosure=protected",
            options.lang.code()
        ),
        rows: rows as u64,
        format: "csv",
        detail: "disclosure=protected".into(),
    };
    if let Err(error) = crate::sink::audit::insert(&nodes, &[entry]).await {
        eprintln!("tamis: warning: this export could not be recorded in the audit log: {error}");
    }
    Ok(())
}

/// One table's CSV text and its number of data rows: each ask in the
/// protected mode, page by page.
async fn read_table(
    api: &Api,
    site: &SiteSettings,
    table: &Table,
    month: &str,
    first: NaiveDate,
    lang: Lang,
    now: DateTime<Utc>,
) -> anyhow::Result<(String, usize)> {
    let mut text = String::new();
    csv::line(
        &mut text,
        table.columns.iter().map(|c| c.header(lang).to_string()),
    );
    let mut rows = 0;
    let view = SiteView::of(site);
    for ask in table.asks {
        let mut offset = 0;
        loop {
            let body = json!({
                "site_id": site.id,
                "metrics": ask.metrics,
                "dimensions": ask.dimensions,
                "date_range": [first.to_string(), last_day(first).to_string()],
                "pagination": {"limit": PAGE, "offset": offset},
            });
            let query = request::parse(body.to_string().as_bytes(), &view, now)
                .map_err(|e| anyhow::anyhow!("the export's own query was refused: {e:?}"))?;
            let report = tokio::time::timeout(
                api.limits.settings.timeout,
                api.run(&query, site, Disclosure::Protected),
            )
            .await
            .map_err(|_| anyhow::anyhow!("the read took longer than query.timeout"))?
            .map_err(|e| anyhow::anyhow!(crate::query::limits::Failure::explain(&e)))?;
            for row in &report.rows {
                let label = ask
                    .label
                    .map(|l| if l.is_empty() { month } else { l }.to_string());
                csv::line(
                    &mut text,
                    label.into_iter().chain(csv::cells(row, ask.metrics.len())),
                );
            }
            rows += report.rows.len();
            if report.rows.len() < PAGE {
                break;
            }
            offset += PAGE;
        }
    }
    Ok((text, rows))
}

/// Rows per read: the stats API's largest page.
const PAGE: usize = 10_000;

/// Creates the folder if needed and checks that files can be made in it,
/// before anything is read.
fn prepare_folder(out: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create the output folder {}", out.display()))?;
    let probe = out.join(format!(".tamis-export-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("cannot write in the output folder {}", out.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(out.to_path_buf())
}

/// A file written under a temporary name in its folder and fsync'd, to be
/// renamed into place.
struct Staged {
    temp: PathBuf,
    path: PathBuf,
}

impl Staged {
    fn commit(&self) -> anyhow::Result<()> {
        std::fs::rename(&self.temp, &self.path)
            .with_context(|| format!("cannot rename into {}", self.path.display()))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Gone once renamed; left over only when the export stopped early.
        let _ = std::fs::remove_file(&self.temp);
    }
}

fn stage(out: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<Staged> {
    use std::io::Write;
    let temp = out.join(format!(".{name}.tmp-{}", std::process::id()));
    let staged = Staged {
        temp,
        path: out.join(name),
    };
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&staged.temp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().with_context(|| format!("cannot write {}", staged.temp.display()))?;
    Ok(staged)
}

/// Makes the renames durable; a folder that cannot be opened for that
/// (some filesystems) still has its files.
fn sync_folder(out: &Path) {
    if let Ok(dir) = std::fs::File::open(out) {
        let _ = dir.sync_all();
    }
}

/// The package's description: CSVW (`http://www.w3.org/ns/csvw`) with
/// Dublin Core terms, in the export's language.
fn metadata(
    site: &SiteSettings,
    publisher: &str,
    month: &str,
    complete: bool,
    options: &Options,
    now: DateTime<Utc>,
) -> Value {
    let lang = options.lang;
    let k = site.k_threshold;
    let base = crate::query::disclosure::rounding_base(k);
    let rule = match lang {
        Lang::En => format!(
            "No number describes fewer than {k} visitors. Breakdown rows below {k} visitors are merged into one row named (other); any cell still below {k} (a row, (other), a day) is left empty. Every published count is then rounded by consistent random rounding to a multiple of {base} (a count that is a multiple of {base} stays; another goes to the multiple below or above with probabilities by distance, keyed with the installation's secret, so the same cell always gets the same number). The difference of any two published counts is therefore 0 or at least {base}: neither two tables nor this package and the statistics API can be subtracted to reveal a small group. Rates and means are computed from the rounded counts; visit durations are means over at least {k} visits. Numbers are the same as the tamis statistics API gives a public (protected) token."
        ),
        Lang::Fr => format!(
            "Aucun nombre ne décrit moins de {k} visiteurs. Les lignes de moins de {k} visiteurs sont regroupées en une ligne nommée (other); toute cellule encore sous {k} (une ligne, (other), un jour) est laissée vide. Chaque nombre publié est ensuite arrondi par arrondi aléatoire contrôlé à un multiple de {base} (un multiple de {base} reste tel quel; un autre va au multiple inférieur ou supérieur avec des probabilités selon la distance, tirées avec le secret de l'installation, de sorte qu'une même cellule reçoit toujours le même nombre). La différence entre deux nombres publiés est donc 0 ou au moins {base} : ni deux tableaux ni ce jeu de données et l'API de statistiques ne peuvent être soustraits pour révéler un petit groupe. Les taux et moyennes sont calculés à partir des nombres arrondis; les durées sont des moyennes sur au moins {k} visites. Les nombres sont ceux que l'API de statistiques de tamis donne à un jeton public (protégé)."
        ),
    };
    let licence = match licence_url(&options.licence) {
        Some(url) => json!({"@id": url, "name": options.licence}),
        None if options.licence.starts_with("http://")
            || options.licence.starts_with("https://") =>
        {
            json!({"@id": options.licence})
        }
        None => json!({"name": options.licence}),
    };
    let (title, description) = match lang {
        Lang::En => (
            format!("Audience statistics of {} for {month}", site.id),
            "Aggregate web audience statistics collected by tamis without cookies; no personal information. Empty cells are withheld (see tamis:suppression). Cells that a spreadsheet would run as formulas start with an apostrophe.",
        ),
        Lang::Fr => (
            format!("Statistiques de fréquentation de {} pour {month}", site.id),
            "Statistiques agrégées de fréquentation web recueillies par tamis sans témoins; aucun renseignement personnel. Les cellules vides sont retenues (voir tamis:suppression). Les cellules qu'un tableur exécuterait comme formules commencent par une apostrophe.",
        ),
    };
    let tables: Vec<Value> = TABLES
        .iter()
        .map(|t| {
            json!({
                "url": t.file,
                "dc:title": t.title(lang),
                "tableSchema": {
                    "columns": t.columns.iter().map(|c| json!({
                        "name": c.header(lang),
                        "titles": c.header(lang),
                        "dc:description": c.about(lang),
                        "datatype": c.datatype,
                    })).collect::<Vec<_>>(),
                },
            })
        })
        .collect();
    json!({
        "@context": ["http://www.w3.org/ns/csvw", {"@language": lang.code()}],
        "dc:title": title,
        "dc:description": format!("{description} {rule}"),
        "dc:language": lang.code(),
        "dc:publisher": publisher,
        "dc:license": licence,
        "dc:temporal": month,
        "dc:created": now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "dialect": {"header": true, "encoding": "utf-8", "lineTerminators": ["\r\n"]},
        "null": "",
        "tables": tables,
        "tamis:site": site.id,
        "tamis:month": month,
        "tamis:time_zone": site.timezone.name(),
        "tamis:complete": complete,
        "tamis:suppression": {
            "disclosure": "protected",
            "k": k,
            "rounding_base": base,
            "other_row": crate::query::OTHER,
            "rule": rule,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(month: &str, expected: Option<(&str, &str)>) {
        let got = parse_month(month)
            .ok()
            .map(|first| (first.to_string(), last_day(first).to_string()));
        let expected = expected.map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(got, expected, "{month}");
    }

    #[test]
    fn months_are_yyyy_mm_with_their_last_day() {
        check("2026-03", Some(("2026-03-01", "2026-03-31")));
        check("2028-02", Some(("2028-02-01", "2028-02-29")));
        check("2026-12", Some(("2026-12-01", "2026-12-31")));
        check("2026-13", None);
        check("2026-3", None);
        check("2026-03-01", None);
        check("+12026-03", None);
        check("", None);
    }

    #[test]
    fn a_month_under_way_is_partial_and_a_later_one_refused() {
        let config: crate::config::Config =
            toml::from_str("[[site]]\nid = 'example.org'\ntimezone = 'America/Toronto'")
                .expect("parses");
        let settings = Settings::from_config(config, Path::new(".")).expect("valid");
        let site = &settings.sites[0];
        let state = |month: &str, now: &str| {
            let now: DateTime<Utc> = now.parse().unwrap();
            month_state(parse_month(month).unwrap(), site, now).ok()
        };
        // 02:00 UTC on 1 April is 22:00 on 31 March in Toronto.
        assert_eq!(state("2026-03", "2026-04-01T02:00:00Z"), Some(false));
        assert_eq!(state("2026-04", "2026-04-01T02:00:00Z"), None);
        assert_eq!(state("2026-02", "2026-04-01T02:00:00Z"), Some(true));
        assert_eq!(state("2026-03", "2026-04-01T05:00:00Z"), Some(true));
        assert_eq!(state("2026-04", "2026-04-01T05:00:00Z"), Some(false));
    }
}
