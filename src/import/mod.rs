//! `tamis import ga4`: a public body's Google Analytics 4 history, from
//! report files the operator exported (tamis calls no one). Every file is
//! read and validated (`ga4`) before anything is written; then the plan
//! says, per file, whether it is new, already imported (same content,
//! nothing to do), or replaces days another file imported (only with
//! `--replace`); then `sink::imported` writes it so that it takes effect
//! whole, and each file written gets an `import` row in the audit log.
//! Must not: write collected traffic, call anything but the configured
//! ClickHouse, write anything when one file is bad or refused.

pub mod ga4;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use chrono::NaiveDate;
use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::sink::imported::{Current, FileImport};
use ga4::Parsed;

/// What the command was asked.
pub struct Options {
    pub site: String,
    pub files: Vec<PathBuf>,
    pub replace: bool,
    pub dry_run: bool,
}

/// One file read and validated.
pub struct FileIn {
    /// As named on the command line (errors and output).
    pub path: String,
    /// The file's name without its folder (kept in the ledger and audit
    /// log).
    pub name: String,
    pub sha256: String,
    pub parsed: Parsed,
}

/// What importing a file does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    New,
    /// The same content is already what these days show.
    AlreadyImported,
    /// Replaces `days` days that these other files imported.
    Replaces {
        days: usize,
        files: BTreeSet<String>,
    },
}

/// Reads and validates every file (with a progress bar over their bytes).
pub fn read_all(paths: &[PathBuf]) -> anyhow::Result<Vec<FileIn>> {
    let coarsen = ga4::Coarsen::new().context("loading the referrer list")?;
    let sizes: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    let bar = progress(sizes, "reading");
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let shown = path.display().to_string();
        let parsed = ga4::parse(&shown, &bytes, &coarsen)?;
        bar.inc(bytes.len() as u64);
        out.push(FileIn {
            path: shown,
            name: file_name(path),
            sha256: hex(&Sha256::digest(&bytes)),
            parsed,
        });
    }
    bar.finish_and_clear();
    Ok(out)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A progress bar on stderr (drawn only when stderr is a terminal).
fn progress(len: u64, what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} ({eta} left)")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what);
    bar
}

/// What each file does against the site's current imports, or why the
/// whole import is refused.
pub fn plan(files: &[FileIn], current: &[Current], replace: bool) -> Result<Vec<Status>, String> {
    let now: BTreeMap<(&str, &str), &Current> = current
        .iter()
        .map(|c| ((c.report.as_str(), c.day.as_str()), c))
        .collect();
    let mut statuses = Vec::with_capacity(files.len());
    let mut refusals = Vec::new();
    // Within one run, one file per (report, day).
    let mut claimed: BTreeMap<(&str, NaiveDate), (&str, &str)> = BTreeMap::new();
    for f in files {
        let report = f.parsed.report.as_str();
        let days = f.parsed.days();
        let mut duplicate = false;
        for day in &days {
            match claimed.get(&(report, *day)) {
                Some((_, sha)) if *sha == f.sha256 => duplicate = true,
                Some((other, _)) => {
                    return Err(format!(
                        "{} and {other} both hold the {report} report for {day}: import them separately (the second with --replace) or leave one out",
                        f.path
                    ))
                }
                None => {
                    claimed.insert((report, *day), (f.path.as_str(), f.sha256.as_str()));
                }
            }
        }
        if duplicate {
            statuses.push(Status::AlreadyImported);
            continue;
        }
        let mut same = 0;
        let mut replaced = 0;
        let mut others = BTreeSet::new();
        for day in &days {
            match now.get(&(report, day.to_string().as_str())) {
                Some(c) if c.file_sha256 == f.sha256 => same += 1,
                Some(c) => {
                    replaced += 1;
                    others.insert(c.file.clone());
                }
                None => {}
            }
        }
        let status = if same == days.len() && !days.is_empty() {
            Status::AlreadyImported
        } else if replaced > 0 {
            if !replace {
                refusals.push(format!(
                    "{}: {replaced} day(s) of the {report} report were imported from another file ({}); add --replace to replace them",
                    f.path,
                    others.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            Status::Replaces {
                days: replaced,
                files: others,
            }
        } else {
            Status::New
        };
        statuses.push(status);
    }
    if refusals.is_empty() {
        Ok(statuses)
    } else {
        Err(format!("nothing imported:\n  {}", refusals.join("\n  ")))
    }
}

/// One line per file: what it holds and what importing it does.
pub fn describe(f: &FileIn, status: Option<&Status>) -> String {
    let days = f.parsed.days();
    let span = match (days.first(), days.last()) {
        (Some(a), Some(b)) => format!("{a}..{b} ({} days)", days.len()),
        _ => "no days".to_string(),
    };
    let t = f.parsed.totals();
    let status = match status {
        None => "status unknown (ClickHouse not reachable)".to_string(),
        Some(Status::New) => "new".to_string(),
        Some(Status::AlreadyImported) => {
            "already imported (same content): nothing to do".to_string()
        }
        Some(Status::Replaces { days, files }) => format!(
            "replaces {days} day(s) imported from {}",
            files.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
    };
    format!(
        "{}: {} report ({}), {span}, {} rows read, {} rows kept; visitors {}, visits {}, pageviews {}, bounces {}, duration {} s: {status}",
        f.path,
        f.parsed.report.as_str(),
        f.parsed.format.as_str(),
        f.parsed.rows_read,
        f.parsed.rows.len(),
        t.visitors,
        t.visits,
        t.pageviews,
        t.bounces,
        t.duration,
    )
}

/// The command: read, plan, print, write (unless `dry_run`), audit.
pub async fn run(settings: &Settings, options: Options) -> anyhow::Result<ExitCode> {
    let site = settings.site(&options.site).ok_or_else(|| {
        anyhow::anyhow!(
            "`{}` is not a configured site id (configured: {})",
            options.site,
            settings
                .sites
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    if options.files.is_empty() {
        anyhow::bail!("no files given: name the GA4 report files to import");
    }
    let files = read_all(&options.files)?;
    for f in &files {
        if !f.parsed.unknown_countries.is_empty() {
            eprintln!(
                "tamis: warning: {}: country names without an ISO code, counted as unknown country: {}",
                f.path,
                f.parsed.unknown_countries.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        if !f.parsed.unknown_regions.is_empty() {
            eprintln!(
                "tamis: warning: {}: region names without an ISO 3166-2 code, counted under their country only: {}",
                f.path,
                f.parsed.unknown_regions.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    let nodes = crate::sink::nodes::Nodes::new(&settings.clickhouse, 0);
    let current = crate::sink::imported::current(&nodes, &site.id).await;
    let current = match (current, options.dry_run) {
        (Ok(c), _) => c,
        (Err(error), true) => {
            eprintln!("tamis: warning: cannot read what was imported before ({error}); showing the files only");
            for f in &files {
                println!("{}", describe(f, None));
            }
            println!("dry run: nothing written");
            return Ok(ExitCode::SUCCESS);
        }
        (Err(error), false) => {
            return Err(error).with_context(|| {
                format!(
                "reading the imports of `{}` from ClickHouse at {} (run `tamis migrate` first?)",
                site.id, settings.clickhouse.url
            )
            })
        }
    };
    let statuses = match plan(&files, &current, options.replace) {
        Ok(s) => s,
        Err(refusal) => {
            for f in &files {
                println!("{}", describe(f, None));
            }
            eprintln!("tamis: {refusal}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for (f, s) in files.iter().zip(&statuses) {
        println!("{}", describe(f, Some(s)));
    }
    let to_write: Vec<(&FileIn, &Status)> = files
        .iter()
        .zip(&statuses)
        .filter(|(_, s)| **s != Status::AlreadyImported)
        .collect();
    let rows: u64 = to_write
        .iter()
        .map(|(f, _)| f.parsed.rows.len() as u64)
        .sum();
    if options.dry_run {
        println!(
            "dry run: would write {} file(s), {rows} rows into imported_daily for site {}; nothing written",
            to_write.len(),
            site.id
        );
        return Ok(ExitCode::SUCCESS);
    }
    if to_write.is_empty() {
        println!("nothing to import: every file is already imported with the same content (no-op)");
        return Ok(ExitCode::SUCCESS);
    }
    let now = chrono::Utc::now();
    let version = u64::try_from(now.timestamp_micros()).unwrap_or(0);
    let imports: Vec<FileImport<'_>> = to_write
        .iter()
        .map(|(f, _)| FileImport {
            file: &f.name,
            sha256: &f.sha256,
            parsed: &f.parsed,
        })
        .collect();
    let bar = progress(rows, "writing");
    crate::sink::imported::write(
        &nodes,
        &site.id,
        version,
        &imports,
        u32::try_from(now.timestamp()).unwrap_or(0),
        &|n| bar.set_position(n),
    )
    .await
    .with_context(|| {
        format!(
            "writing the import to ClickHouse at {} (rows written so far are under version {version}, which no query reads)",
            settings.clickhouse.url
        )
    })?;
    bar.finish_and_clear();
    let entries: Vec<crate::sink::audit::AuditEntry> = to_write
        .iter()
        .map(|(f, s)| {
            let days = f.parsed.days();
            let replaced = match s {
                Status::Replaces { days, files } => format!(
                    ", replacing {days} day(s) from {}",
                    files.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
                _ => String::new(),
            };
            crate::sink::audit::AuditEntry {
                at: now,
                kind: "import",
                actor: crate::config::operator_name(),
                client: "cli",
                site_id: site.id.clone(),
                summary: format!(
                    "GA4 {} report from {} (sha256 {}): {}..{}, {} days{replaced}",
                    f.parsed.report.as_str(),
                    f.name,
                    f.sha256,
                    days.first().map(ToString::to_string).unwrap_or_default(),
                    days.last().map(ToString::to_string).unwrap_or_default(),
                    days.len()
                ),
                rows: f.parsed.rows.len() as u64,
                format: f.parsed.format.as_str(),
                detail: format!("version={version}"),
            }
        })
        .collect();
    if let Err(error) = crate::sink::audit::insert(&nodes, &entries).await {
        eprintln!("tamis: warning: the import is written but could not be recorded in the audit log: {error}");
    }
    println!(
        "imported {} file(s), {rows} rows for site {} (import version {version})",
        to_write.len(),
        site.id
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, sha: &str, report: ga4::Report, days: &[&str]) -> FileIn {
        let mut rows = BTreeMap::new();
        for d in days {
            rows.insert(
                (d.parse().unwrap(), Default::default()),
                ga4::Counts::default(),
            );
        }
        FileIn {
            path: path.into(),
            name: path.into(),
            sha256: sha.into(),
            parsed: Parsed {
                report,
                format: ga4::Format::Json,
                rows_read: days.len(),
                rows,
                unknown_countries: BTreeSet::new(),
                unknown_regions: BTreeSet::new(),
            },
        }
    }

    fn current(report: &str, day: &str, file: &str, sha: &str) -> Current {
        Current {
            report: report.into(),
            day: day.into(),
            file: file.into(),
            file_sha256: sha.into(),
        }
    }

    #[test]
    fn same_content_is_a_no_op_other_content_needs_replace() {
        use ga4::Report::Pages;
        let now = [
            current("pages", "2025-01-01", "a.json", "aa"),
            current("pages", "2025-01-02", "a.json", "aa"),
        ];
        let a = file("a.json", "aa", Pages, &["2025-01-01", "2025-01-02"]);
        assert_eq!(plan(&[a], &now, false), Ok(vec![Status::AlreadyImported]));
        let b = file("b.json", "bb", Pages, &["2025-01-02", "2025-01-03"]);
        let refused = plan(std::slice::from_ref(&b), &now, false).unwrap_err();
        assert!(refused.contains("b.json: 1 day(s) of the pages report were imported from another file (a.json); add --replace"), "{refused}");
        assert_eq!(
            plan(&[b], &now, true),
            Ok(vec![Status::Replaces {
                days: 1,
                files: BTreeSet::from(["a.json".to_string()])
            }])
        );
        // Another report on the same days is new.
        let v = file("v.json", "vv", ga4::Report::Visitors, &["2025-01-01"]);
        assert_eq!(plan(&[v], &now, false), Ok(vec![Status::New]));
    }

    #[test]
    fn two_files_for_the_same_report_and_day_are_refused() {
        use ga4::Report::Pages;
        let a = file("a.json", "aa", Pages, &["2025-01-01"]);
        let b = file("b.json", "bb", Pages, &["2025-01-01"]);
        let refused = plan(&[a, b], &[], true).unwrap_err();
        assert!(
            refused.contains("b.json and a.json both hold the pages report for 2025-01-01"),
            "{refused}"
        );
    }
}
