//! The ClickHouse schema as versioned migrations. Every statement runs
//! unchanged on Debian's ClickHouse 18.16 and on current releases: MergeTree
//! family, `Null` tables, materialized views and `-State`/`-Merge`
//! combinators only (no TTL, no LowCardinality). Every table is partitioned
//! by (site, month) so retention can drop one site's months alone.

use super::rows::{column_ddl, column_names, BATCH_EXTRA, TRAFFIC_COUNTS, TRAFFIC_DIMENSIONS};

/// What `rollup_daily` holds per finished local day, as (`dimension`
/// value, `traffic_hourly` column): every single dimension of the stats API
/// except custom properties and time. `visit:exit_page` reads the `page`
/// rows (their `exits`). The site's totals are dimension `''`.
pub const ROLLUP_DIMENSIONS: [&str; 20] = [
    "page",
    "event",
    "entry_page",
    "source",
    "referrer",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "country",
    "region",
    "browser",
    "browser_version",
    "os",
    "device",
    "language",
    "consent",
    "os_version",
    "hostname",
    "utm_content",
    "utm_term",
];

/// The counts of `rollup_daily` and `traffic_hourly` beside `visitors`,
/// in the order rollups copy and sum them. The last four came with
/// migration 9 (see `sink::rows::EngagementCounts`).
pub const ROLLUP_COUNTS: [&str; 10] = [
    "visits",
    "pageviews",
    "events",
    "bounces",
    "duration",
    "exits",
    "engaged_ms",
    "engaged_visits",
    "scroll_total",
    "scroll_visits",
];

/// The engagement counts migration 9 added to the hourly aggregates.
const ENGAGEMENT_COUNTS: [&str; 4] = [
    "engaged_ms",
    "engaged_visits",
    "scroll_total",
    "scroll_visits",
];

/// The dimensions migration 9 added at the end of `traffic_hourly`'s key.
const MIGRATION_9_DIMENSIONS: [&str; 5] = [
    "os_version",
    "hostname",
    "utm_content",
    "utm_term",
    "click_id",
];

/// The `rollup_daily` dimension of goals: one row per goal a day reaches,
/// its value the goal's key (`crate::goal::Goal::key`), the goals each
/// computation covered recorded in `rollup_goal_days`.
pub const GOAL_DIMENSION: &str = "goal";

pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    /// Steps with `{db}` standing for the database name.
    pub statements: Vec<Step>,
}

/// One step of a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A statement run as it is: idempotent by itself (`IF NOT EXISTS`).
    Sql(String),
    /// `ALTER TABLE {db}.<table> ADD COLUMN …` for the columns the table
    /// lacks, then `then` in the same statement when any was missing.
    /// ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`, and accepts a
    /// sorting key that grows by new columns only in the statement that
    /// adds them, so the migration reads `system.columns` first: a table
    /// created with the columns already (a new database, built from the
    /// current column lists) or a migration resumed after a crash skips
    /// them.
    AddColumns {
        table: &'static str,
        columns: Vec<(String, String)>,
        then: Option<String>,
    },
}

impl Step {
    /// The statement for a table lacking `missing` of the columns, or none.
    pub fn add_columns_sql(
        db: &str,
        table: &str,
        missing: &[&(String, String)],
        then: Option<&str>,
    ) -> Option<String> {
        if missing.is_empty() {
            return None;
        }
        let mut parts: Vec<String> = missing
            .iter()
            .map(|(name, ty)| format!("ADD COLUMN {name} {ty}"))
            .collect();
        parts.extend(then.map(str::to_string));
        Some(format!("ALTER TABLE {db}.{table} {}", parts.join(", ")))
    }

    /// The step as `tamis migrate --print` shows it (a script for a new
    /// database).
    fn printed(&self, db: &str) -> String {
        match self {
            Step::Sql(sql) => sql.replace("{db}", db),
            Step::AddColumns {
                table,
                columns,
                then,
            } => {
                // A new database has these columns from its `CREATE`; the
                // statement is for one made before, which `tamis migrate`
                // alters for the columns it lacks (18.16 has no `IF NOT
                // EXISTS` here). Shown as a comment, so the script runs as
                // it is on a new database.
                let all: Vec<&(String, String)> = columns.iter().collect();
                let sql =
                    Step::add_columns_sql(db, table, &all, then.as_deref()).unwrap_or_default();
                format!("-- upgrading a database made before this migration, for the columns it lacks:\n-- {sql}")
            }
        }
    }
}

impl From<String> for Step {
    fn from(sql: String) -> Step {
        Step::Sql(sql)
    }
}

pub fn migrations() -> Vec<Migration> {
    // The input and aggregate tables' columns come from the row type's one
    // list (`sink::rows`), so they cannot drift apart.
    let dims = column_ddl(TRAFFIC_DIMENSIONS);
    let dim_list = column_names(TRAFFIC_DIMENSIONS);
    let counts = column_ddl(TRAFFIC_COUNTS);
    let extra = column_ddl(BATCH_EXTRA);
    // Columns migration 9 adds to older databases; a new one has them
    // from the start (the migration then finds nothing to add).
    let engagement_aggregates = ENGAGEMENT_COUNTS
        .iter()
        .map(|c| format!("{c} AggregateFunction(sum, Int64)"))
        .collect::<Vec<_>>()
        .join(", ");
    let engagement_plain = ENGAGEMENT_COUNTS
        .iter()
        .map(|c| format!("{c} Int64"))
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        Migration {
            version: 1,
            name: "hourly traffic aggregates",
            statements: sql(vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {{db}}.traffic_hourly ({dims}, \
                     visitors AggregateFunction(uniqIf, UInt64, UInt8), \
                     pageviews AggregateFunction(sum, UInt64), \
                     events AggregateFunction(sum, UInt64), \
                     visits AggregateFunction(sum, Int64), \
                     bounces AggregateFunction(sum, Int64), \
                     duration AggregateFunction(sum, Int64), \
                     exits AggregateFunction(sum, Int64), {engagement_aggregates}) \
                     ENGINE = AggregatingMergeTree() \
                     PARTITION BY (site_id, toYYYYMM(hour)) \
                     ORDER BY ({dim_list})"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {{db}}.traffic_in ({dims}, {counts}) ENGINE = Null"
                ),
                format!(
                    "CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.traffic_mv TO {{db}}.traffic_hourly AS \
                     SELECT {dim_list}, \
                     uniqIfState(visitor, toUInt8(visitor != 0)) AS visitors, \
                     sumState(pageviews) AS pageviews, \
                     sumState(events) AS events, \
                     sumState(visits) AS visits, \
                     sumState(bounces) AS bounces, \
                     sumState(duration) AS duration, \
                     sumState(exits) AS exits \
                     FROM {{db}}.traffic_in GROUP BY {dim_list}"
                ),
                "CREATE TABLE IF NOT EXISTS {db}.dropped_hourly (\
                 site_id String, hour DateTime, reason String, hits UInt64) \
                 ENGINE = SummingMergeTree() \
                 PARTITION BY (site_id, toYYYYMM(hour)) \
                 ORDER BY (site_id, hour, reason)"
                    .to_string(),
            ]),
        },
        Migration {
            version: 2,
            name: "daily salts shared by collectors",
            statements: sql(vec!["CREATE TABLE IF NOT EXISTS {db}.salts (\
                 site_id String, day Date, salt String, created_at DateTime) \
                 ENGINE = MergeTree() \
                 PARTITION BY (site_id, toYYYYMMDD(day)) \
                 ORDER BY (site_id, day, created_at)"
                .to_string()]),
        },
        Migration {
            version: 3,
            name: "custom event properties",
            statements: sql(vec![
                "CREATE TABLE IF NOT EXISTS {db}.props_hourly (\
                 site_id String, hour DateTime, event String, page String, prop_key String, prop_value String, \
                 visitors AggregateFunction(uniqIf, UInt64, UInt8), events AggregateFunction(sum, UInt64)) \
                 ENGINE = AggregatingMergeTree() \
                 PARTITION BY (site_id, toYYYYMM(hour)) \
                 ORDER BY (site_id, hour, event, prop_key, prop_value, page)"
                    .to_string(),
                "CREATE TABLE IF NOT EXISTS {db}.props_in (\
                 site_id String, hour DateTime, event String, page String, prop_key String, prop_value String, \
                 visitor UInt64, events UInt64) ENGINE = Null"
                    .to_string(),
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.props_mv TO {db}.props_hourly AS \
                 SELECT site_id, hour, event, page, prop_key, prop_value, \
                 uniqIfState(visitor, toUInt8(visitor != 0)) AS visitors, sumState(events) AS events \
                 FROM {db}.props_in GROUP BY site_id, hour, event, page, prop_key, prop_value"
                    .to_string(),
            ]),
        },
        Migration {
            version: 4,
            name: "one insert per batch, with its receipt",
            statements: sql(vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {{db}}.batch_in (kind String, {dims}, {counts}, {extra}) \
                     ENGINE = Null"
                ),
                "CREATE TABLE IF NOT EXISTS {db}.batch_receipts (\
                 journal_id String, first_seq UInt64, end_seq UInt64, part String, hits UInt64, written_at DateTime) \
                 ENGINE = MergeTree() \
                 PARTITION BY toYYYYMM(written_at) \
                 ORDER BY (journal_id, end_seq, part)"
                    .to_string(),
                format!(
                    "CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.batch_traffic_mv TO {{db}}.traffic_hourly AS \
                     SELECT {dim_list}, \
                     uniqIfState(visitor, toUInt8(visitor != 0)) AS visitors, \
                     sumState(pageviews) AS pageviews, \
                     sumState(events) AS events, \
                     sumState(visits) AS visits, \
                     sumState(bounces) AS bounces, \
                     sumState(duration) AS duration, \
                     sumState(exits) AS exits \
                     FROM {{db}}.batch_in WHERE kind = 'traffic' GROUP BY {dim_list}"
                ),
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.batch_dropped_mv TO {db}.dropped_hourly AS \
                 SELECT site_id, hour, reason, sum(hits) AS hits \
                 FROM {db}.batch_in WHERE kind = 'dropped' GROUP BY site_id, hour, reason"
                    .to_string(),
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.batch_props_mv TO {db}.props_hourly AS \
                 SELECT site_id, hour, event, page, prop_key, prop_value, \
                 uniqIfState(visitor, toUInt8(visitor != 0)) AS visitors, sumState(events) AS events \
                 FROM {db}.batch_in WHERE kind = 'prop' GROUP BY site_id, hour, event, page, prop_key, prop_value"
                    .to_string(),
                // Receipts are inserted alone, once every group of their
                // batch is in (see sink::writer); the view's name, chosen
                // when a batch was one insert, is kept so existing
                // databases need no change.
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.z_batch_receipts_mv TO {db}.batch_receipts AS \
                 SELECT journal_id, first_seq, end_seq, part, hits, now() AS written_at \
                 FROM {db}.batch_in WHERE kind = 'receipt'"
                    .to_string(),
            ]),
        },
        // Privacy operations (issue 5): tamis's own records. Each has its
        // own retention (`audit.retention_months`), enforced by the janitor
        // dropping whole months, so they are partitioned by month alone.
        // None of them holds a salt, an address or a raw client string.
        Migration {
            version: 5,
            name: "privacy operations records: deletion reports, salt destructions, audit log",
            statements: sql(vec![
                "CREATE TABLE IF NOT EXISTS {db}.retention_log (\
                 deleted_at DateTime, site_id String, table_name String, period UInt32, rows UInt64) \
                 ENGINE = MergeTree() \
                 PARTITION BY toYYYYMM(deleted_at) \
                 ORDER BY (deleted_at, site_id, table_name, period)"
                    .to_string(),
                "CREATE TABLE IF NOT EXISTS {db}.salt_destructions (\
                 destroyed_at DateTime, site_id String, day Date, place String, commitment String) \
                 ENGINE = MergeTree() \
                 PARTITION BY toYYYYMM(destroyed_at) \
                 ORDER BY (destroyed_at, site_id, day)"
                    .to_string(),
                // Append-only: tamis only inserts here, and removes whole
                // months past the audit retention.
                "CREATE TABLE IF NOT EXISTS {db}.audit_log (\
                 at DateTime, kind String, actor String, client String, site_id String, \
                 summary String, rows UInt64, format String, detail String) \
                 ENGINE = MergeTree() \
                 PARTITION BY toYYYYMM(at) \
                 ORDER BY (at, kind, site_id)"
                    .to_string(),
            ]),
        },
        Migration {
            version: 6,
            name: "daily rollups of finished local days",
            statements: sql(vec![
                // Plain numbers per (local day, dimension, value), `dimension`
                // '' being the site's totals. One table rather than one per
                // dimension: sorted by dimension first, a dimension's rows
                // are contiguous, and small granules keep the small ones
                // (totals, regions) from reading 8,192 rows per month
                // (measured on 18.16 over 12 months: totals 3 ms against
                // 1.4 ms in a table of their own and 6.6 ms with the default
                // granules; pages 65 ms against 67 ms). Every computation of a day is
                // written whole under its own `version`; queries read the
                // newest version recorded in `rollup_days`, so a crashed or
                // concurrent computation is never counted (see sink::rollup).
                format!(
                    "CREATE TABLE IF NOT EXISTS {{db}}.rollup_daily (\
                     site_id String, day Date, version UInt64, dimension String, value String, \
                     visitors UInt64, visits Int64, pageviews UInt64, events UInt64, \
                     bounces Int64, duration Int64, exits Int64, {engagement_plain}) \
                     ENGINE = MergeTree() \
                     PARTITION BY (site_id, toYYYYMM(day)) \
                     ORDER BY (site_id, dimension, day, version, value) \
                     SETTINGS index_granularity = 1024"
                ),
                // One row per finished computation, written after its rows:
                // the day's totals as rolled, compared with `traffic_hourly`
                // to notice late data.
                format!(
                    "CREATE TABLE IF NOT EXISTS {{db}}.rollup_days (\
                     site_id String, day Date, version UInt64, \
                     pageviews UInt64, events UInt64, visits Int64, bounces Int64, duration Int64, exits Int64, \
                     rolled_at DateTime, {engagement_plain}) \
                     ENGINE = MergeTree() \
                     PARTITION BY (site_id, toYYYYMM(day)) \
                     ORDER BY (site_id, day, version)"
                ),
            ]),
        },
        Migration {
            version: 7,
            name: "visits per funnel step",
            statements: sql(vec![
                // Counts only: the aggregator follows a visit through a
                // funnel in memory and writes "one more visit reached step
                // n", by the hour the visit started. Step 0 holds the
                // delivery marks (see sink::rows::BatchRow::mark).
                "CREATE TABLE IF NOT EXISTS {db}.funnel_hourly (\
                 site_id String, hour DateTime, funnel String, step UInt8, visits UInt64) \
                 ENGINE = SummingMergeTree() \
                 PARTITION BY (site_id, toYYYYMM(hour)) \
                 ORDER BY (site_id, funnel, hour, step)"
                    .to_string(),
                // Named to sort before `z_batch_receipts_mv`: views run in
                // name order, and the receipt's must run last. A funnel
                // row carries the funnel in `event`, the step in `hits`
                // and the visits in `visits`; its mark rides in the same
                // insert, hence the same part.
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.batch_funnel_mv TO {db}.funnel_hourly AS \
                 SELECT site_id, hour, event AS funnel, toUInt8(hits) AS step, toUInt64(sum(visits)) AS visits \
                 FROM {db}.batch_in WHERE kind = 'funnel' GROUP BY site_id, hour, event, hits"
                    .to_string(),
            ]),
        },
        Migration {
            version: 8,
            name: "goals in the daily rollups",
            statements: sql(vec![
                // Which goals (by key) a computation of a day rolled, written
                // after its rows and before its `rollup_days` record: a goal
                // breakdown reads a day's rollup only when its newest
                // computation covered every goal asked (a goal with no row
                // that day then truly had no conversion).
                "CREATE TABLE IF NOT EXISTS {db}.rollup_goal_days (\
                 site_id String, day Date, version UInt64, goal String) \
                 ENGINE = MergeTree() \
                 PARTITION BY (site_id, toYYYYMM(day)) \
                 ORDER BY (site_id, day, version, goal)"
                    .to_string(),
            ]),
        },
        migration_9(),
        migration_10(),
    ]
}

/// Host names, the campaign's content and term, the click id, the OS's
/// major version, and pages' engagement (issue 13). New dimensions go at
/// the end of `traffic_hourly`'s key, and traffic rows get a new kind
/// (`sink::rows::RowKind::as_str`) read by a view of their own, so that no
/// row can be counted by both views. The view of the old kind stays for
/// collectors of the previous version: ClickHouse 18.16 refuses their
/// inserts once `traffic_hourly` has the new key columns (the old view
/// does not write them), so their hits wait in their logs until they are
/// upgraded, and a current ClickHouse fills the new columns' defaults and
/// counts them once. Replacing the old view instead would leave a moment
/// when their rows reach no view while their receipts are written.
fn migration_9() -> Migration {
    let typed = |names: &[&str], ty: &dyn Fn(&str) -> String| -> Vec<(String, String)> {
        names.iter().map(|n| (n.to_string(), ty(n))).collect()
    };
    let dim_type = |name: &str| {
        TRAFFIC_DIMENSIONS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("String", |(_, t)| t)
            .to_string()
    };
    let count_type = |name: &str| {
        TRAFFIC_COUNTS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("Int64", |(_, t)| t)
            .to_string()
    };
    let aggregates = typed(&ENGAGEMENT_COUNTS, &|_| {
        "AggregateFunction(sum, Int64)".to_string()
    });
    let mut batch_in = typed(&MIGRATION_9_DIMENSIONS, &dim_type);
    batch_in.extend(typed(&ENGAGEMENT_COUNTS, &count_type));
    let plain = typed(&ENGAGEMENT_COUNTS, &|_| "Int64".to_string());
    let dim_list = column_names(TRAFFIC_DIMENSIONS);
    let sums: Vec<String> = [
        "pageviews",
        "events",
        "visits",
        "bounces",
        "duration",
        "exits",
    ]
    .iter()
    .chain(ENGAGEMENT_COUNTS.iter())
    .map(|c| format!("sumState({c}) AS {c}"))
    .collect();
    Migration {
        version: 9,
        name: "host names, campaign content and term, click ids, OS versions, page engagement",
        statements: vec![
            Step::AddColumns {
                table: "traffic_hourly",
                columns: typed(&MIGRATION_9_DIMENSIONS, &dim_type),
                then: Some(format!("MODIFY ORDER BY ({dim_list})")),
            },
            Step::AddColumns {
                table: "traffic_hourly",
                columns: aggregates,
                then: None,
            },
            Step::AddColumns {
                table: "batch_in",
                columns: batch_in.clone(),
                then: None,
            },
            // `traffic_in`, the input of collectors from before batch
            // inserts (and of tests and benches that seed aggregates), gets
            // the same columns, and its view is made anew to write them:
            // ClickHouse 18.16 refuses an insert whose view leaves out a
            // column of the target's key or aggregates. No current
            // collector writes there, so no row passes while it is made.
            Step::AddColumns {
                table: "traffic_in",
                columns: batch_in,
                then: None,
            },
            Step::Sql("DROP TABLE IF EXISTS {db}.traffic_mv".to_string()),
            Step::Sql(format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.traffic_mv TO {{db}}.traffic_hourly AS \
                 SELECT {dim_list}, \
                 uniqIfState(visitor, toUInt8(visitor != 0)) AS visitors, {} \
                 FROM {{db}}.traffic_in GROUP BY {dim_list}",
                sums.join(", ")
            )),
            Step::AddColumns {
                table: "rollup_daily",
                columns: plain.clone(),
                then: None,
            },
            Step::AddColumns {
                table: "rollup_days",
                columns: plain,
                then: None,
            },
            // Named to sort before `z_batch_receipts_mv` (views run in name
            // order, the receipt's last).
            Step::Sql(format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.batch_traffic2_mv TO {{db}}.traffic_hourly AS \
                 SELECT {dim_list}, \
                 uniqIfState(visitor, toUInt8(visitor != 0)) AS visitors, {} \
                 FROM {{db}}.batch_in WHERE kind = 'traffic2' GROUP BY {dim_list}",
                sums.join(", ")
            )),
        ],
    }
}

/// Imported Google Analytics 4 history (`tamis import ga4`, see
/// `sink::imported`): plain daily numbers per report in a table of their
/// own, never mixed with collected traffic, and the ledger saying which
/// import is current for each (site, report, day). The rows are
/// partitioned by (site, month) like every aggregate, so retention drops
/// them with the site's months; the ledger by site alone, so that one
/// import's ledger rows are one insert into one partition, hence one part:
/// an import takes effect whole or not at all.
fn migration_10() -> Migration {
    let dims = crate::import::ga4::COLUMNS
        .iter()
        .map(|c| format!("{c} String"))
        .collect::<Vec<_>>()
        .join(", ");
    Migration {
        version: 10,
        name: "imported Google Analytics 4 history",
        statements: sql(vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {{db}}.imported_daily (\
                 site_id String, day Date, version UInt64, report String, {dims}, \
                 visitors UInt64, visits UInt64, pageviews UInt64, bounces UInt64, duration UInt64) \
                 ENGINE = MergeTree() \
                 PARTITION BY (site_id, toYYYYMM(day)) \
                 ORDER BY (site_id, report, day, version)"
            ),
            "CREATE TABLE IF NOT EXISTS {db}.imported_days (\
             site_id String, report String, day Date, version UInt64, \
             file String, file_sha256 String, rows UInt64, imported_at DateTime) \
             ENGINE = MergeTree() \
             PARTITION BY site_id \
             ORDER BY (site_id, report, day, version)"
                .to_string(),
        ]),
    }
}

/// Statements run as they are.
fn sql(statements: Vec<String>) -> Vec<Step> {
    statements.into_iter().map(Step::Sql).collect()
}

pub const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (\
     version UInt32, name String, applied_at DateTime) \
     ENGINE = MergeTree() ORDER BY version";

/// Every statement for `database`, in order, as `tamis migrate --print`
/// shows them.
pub fn script(database: &str) -> Vec<String> {
    let mut out = vec![
        format!("CREATE DATABASE IF NOT EXISTS {database}"),
        MIGRATIONS_TABLE.replace("{db}", database),
    ];
    for m in migrations() {
        out.extend(m.statements.iter().map(|s| s.printed(database)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_sql_avoids_newer_features() {
        let ms = migrations();
        assert!(ms.windows(2).all(|w| w[0].version < w[1].version));
        for sql in script("tamis") {
            for banned in ["TTL", "LowCardinality", "SimpleAggregateFunction", "{db}"] {
                assert!(!sql.contains(banned), "{banned} in {sql}");
            }
        }
    }
}
