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

/// Where the schema is made. A single server is the special case of a
/// cluster with nothing to coordinate: the same steps make the same tables,
/// and only the engines of the tables that hold data differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout<'a> {
    /// One server: plain `*MergeTree` tables.
    Single,
    /// One node of the named cluster (its name in `<remote_servers>`):
    /// each table that holds data is `Replicated*MergeTree`, its ZooKeeper
    /// path made from the node's `{shard}` macro and its replica named by
    /// `{replica}`, with a `Distributed` table `<table>_all` over the
    /// cluster's shards for reading. `Null` tables and materialized views
    /// are made on each node as on a single server: an insert into a node's
    /// `batch_in` lands in that node's replicated tables.
    Cluster(&'a str),
}

/// The suffix of the `Distributed` table over each table on a cluster.
pub const DISTRIBUTED_SUFFIX: &str = "_all";

/// The engine of a table that holds data, replicated on a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    MergeTree,
    SummingMergeTree,
    AggregatingMergeTree,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::MergeTree => "MergeTree",
            Engine::SummingMergeTree => "SummingMergeTree",
            Engine::AggregatingMergeTree => "AggregatingMergeTree",
        }
    }
}

/// A table that holds data: its engine's arguments depend on the
/// [`Layout`], its columns and keys do not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: &'static str,
    /// The column definitions, as between the parentheses of `CREATE TABLE`.
    pub columns: String,
    pub engine: Engine,
    /// What follows the engine: `PARTITION BY … ORDER BY … [SETTINGS …]`.
    pub keys: String,
}

impl Table {
    /// The statements that make the table in `db`, idempotent: on a
    /// cluster, the replicated table and the `Distributed` table over it.
    pub fn create(&self, db: &str, layout: Layout) -> Vec<String> {
        let Table {
            name,
            columns,
            engine,
            keys,
        } = self;
        let engine = engine.name();
        match layout {
            Layout::Single => vec![format!(
                "CREATE TABLE IF NOT EXISTS {db}.{name} ({columns}) ENGINE = {engine}() {keys}"
            )],
            // The path names the database and the table, so that two
            // databases on one cluster never share a table's replicas.
            Layout::Cluster(cluster) => vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {db}.{name} ({columns}) \
                     ENGINE = Replicated{engine}('/clickhouse/tables/{{shard}}/{db}.{name}', '{{replica}}') {keys}"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {db}.{name}{DISTRIBUTED_SUFFIX} AS {db}.{name} \
                     ENGINE = Distributed({cluster}, {db}, {name})"
                ),
            ],
        }
    }
}

/// One step of a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A statement run as it is on every node: idempotent by itself (`IF
    /// NOT EXISTS`).
    Sql(String),
    /// A table that holds data, made as the [`Layout`] says.
    Table(Table),
    /// `ALTER TABLE {db}.<table> ADD COLUMN …` for the columns the table
    /// lacks, then `then` in the same statement when any was missing.
    /// ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`, and accepts a
    /// sorting key that grows by new columns only in the statement that
    /// adds them, so the migration reads `system.columns` first: a table
    /// created with the columns already (a new database, built from the
    /// current column lists) or a migration resumed after a crash skips
    /// them. On a cluster the table's `Distributed` table gets the columns
    /// too (without `then`).
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

    /// The tables an [`Step::AddColumns`] on `table` alters, each with
    /// whether it takes the step's `then`: the table, and on a cluster its
    /// `Distributed` table when it has one.
    pub fn altered_tables(table: &str, layout: Layout) -> Vec<(String, Then)> {
        let mut out = vec![(table.to_string(), Then::Apply)];
        if matches!(layout, Layout::Cluster(_)) && is_data_table(table) {
            out.push((format!("{table}{DISTRIBUTED_SUFFIX}"), Then::Skip));
        }
        out
    }

    /// The statements to run as they are for this step (none for
    /// [`Step::AddColumns`], which reads the table first).
    pub fn statements(&self, db: &str, layout: Layout) -> Vec<String> {
        match self {
            Step::Sql(sql) => vec![sql.replace("{db}", db)],
            Step::Table(table) => table.create(db, layout),
            Step::AddColumns { .. } => Vec::new(),
        }
    }

    /// The step as `tamis migrate --print` shows it (a script for a new
    /// database).
    fn printed(&self, db: &str, layout: Layout) -> Vec<String> {
        let Step::AddColumns {
            table,
            columns,
            then,
        } = self
        else {
            return self.statements(db, layout);
        };
        // A new database has these columns from its `CREATE`; the
        // statement is for one made before, which `tamis migrate` alters
        // for the columns it lacks (18.16 has no `IF NOT EXISTS` here).
        // Shown as a comment, so the script runs as it is on a new
        // database.
        let all: Vec<&(String, String)> = columns.iter().collect();
        Step::altered_tables(table, layout)
            .into_iter()
            .map(|(altered, with_then)| {
                let then = (with_then == Then::Apply).then_some(then.as_deref()).flatten();
                let sql = Step::add_columns_sql(db, &altered, &all, then).unwrap_or_default();
                format!("-- upgrading a database made before this migration, for the columns it lacks:\n-- {sql}")
            })
            .collect()
    }
}

/// Whether an [`Step::AddColumns`] applies its `then` (a new sorting key)
/// to a table: not to a `Distributed` table, which has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    Apply,
    Skip,
}

/// Every table that holds data ([`Step::Table`]), in the order the
/// migrations make them.
pub fn data_tables() -> Vec<&'static str> {
    migrations()
        .iter()
        .flat_map(|m| m.statements.iter())
        .filter_map(|step| match step {
            Step::Table(t) => Some(t.name),
            _ => None,
        })
        .collect()
}

/// Whether `name` is a table that holds data ([`Step::Table`]).
fn is_data_table(name: &str) -> bool {
    migrations()
        .iter()
        .flat_map(|m| &m.statements)
        .any(|step| matches!(step, Step::Table(t) if t.name == name))
}

/// A table that holds data.
fn table(
    name: &'static str,
    columns: impl Into<String>,
    engine: Engine,
    keys: impl Into<String>,
) -> Step {
    Step::Table(Table {
        name,
        columns: columns.into(),
        engine,
        keys: keys.into(),
    })
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
            statements: vec![
                table(
                    "traffic_hourly",
                    format!(
                        "{dims}, \
                         visitors AggregateFunction(uniqIf, UInt64, UInt8), \
                         pageviews AggregateFunction(sum, UInt64), \
                         events AggregateFunction(sum, UInt64), \
                         visits AggregateFunction(sum, Int64), \
                         bounces AggregateFunction(sum, Int64), \
                         duration AggregateFunction(sum, Int64), \
                         exits AggregateFunction(sum, Int64), {engagement_aggregates}"
                    ),
                    Engine::AggregatingMergeTree,
                    format!("PARTITION BY (site_id, toYYYYMM(hour)) ORDER BY ({dim_list})"),
                ),
                Step::Sql(format!(
                    "CREATE TABLE IF NOT EXISTS {{db}}.traffic_in ({dims}, {counts}) ENGINE = Null"
                )),
                Step::Sql(format!(
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
                )),
                table(
                    "dropped_hourly",
                    "site_id String, hour DateTime, reason String, hits UInt64",
                    Engine::SummingMergeTree,
                    "PARTITION BY (site_id, toYYYYMM(hour)) ORDER BY (site_id, hour, reason)",
                ),
            ],
        },
        Migration {
            version: 2,
            name: "daily salts shared by collectors",
            statements: vec![table(
                "salts",
                "site_id String, day Date, salt String, created_at DateTime",
                Engine::MergeTree,
                "PARTITION BY (site_id, toYYYYMMDD(day)) ORDER BY (site_id, day, created_at)",
            )],
        },
        Migration {
            version: 3,
            name: "custom event properties",
            statements: vec![
                table(
                    "props_hourly",
                    "site_id String, hour DateTime, event String, page String, prop_key String, prop_value String, \
                     visitors AggregateFunction(uniqIf, UInt64, UInt8), events AggregateFunction(sum, UInt64)",
                    Engine::AggregatingMergeTree,
                    "PARTITION BY (site_id, toYYYYMM(hour)) ORDER BY (site_id, hour, event, prop_key, prop_value, page)",
                ),
                Step::Sql("CREATE TABLE IF NOT EXISTS {db}.props_in (\
                 site_id String, hour DateTime, event String, page String, prop_key String, prop_value String, \
                 visitor UInt64, events UInt64) ENGINE = Null"
                    .to_string()),
                Step::Sql("CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.props_mv TO {db}.props_hourly AS \
                 SELECT site_id, hour, event, page, prop_key, prop_value, \
                 uniqIfState(visitor, toUInt8(visitor != 0)) AS visitors, sumState(events) AS events \
                 FROM {db}.props_in GROUP BY site_id, hour, event, page, prop_key, prop_value"
                    .to_string()),
            ],
        },
        Migration {
            version: 4,
            name: "one insert per batch, with its receipt",
            statements: vec![
                Step::Sql(format!(
                    "CREATE TABLE IF NOT EXISTS {{db}}.batch_in (kind String, {dims}, {counts}, {extra}) \
                     ENGINE = Null"
                )),
                table(
                    "batch_receipts",
                    "journal_id String, first_seq UInt64, end_seq UInt64, part String, hits UInt64, written_at DateTime",
                    Engine::MergeTree,
                    "PARTITION BY toYYYYMM(written_at) ORDER BY (journal_id, end_seq, part)",
                ),
                Step::Sql(format!(
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
                )),
                Step::Sql("CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.batch_dropped_mv TO {db}.dropped_hourly AS \
                 SELECT site_id, hour, reason, sum(hits) AS hits \
                 FROM {db}.batch_in WHERE kind = 'dropped' GROUP BY site_id, hour, reason"
                    .to_string()),
                Step::Sql("CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.batch_props_mv TO {db}.props_hourly AS \
                 SELECT site_id, hour, event, page, prop_key, prop_value, \
                 uniqIfState(visitor, toUInt8(visitor != 0)) AS visitors, sumState(events) AS events \
                 FROM {db}.batch_in WHERE kind = 'prop' GROUP BY site_id, hour, event, page, prop_key, prop_value"
                    .to_string()),
                // Receipts are inserted alone, once every group of their
                // batch is in (see sink::writer); the view's name, chosen
                // when a batch was one insert, is kept so existing
                // databases need no change.
                Step::Sql("CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.z_batch_receipts_mv TO {db}.batch_receipts AS \
                 SELECT journal_id, first_seq, end_seq, part, hits, now() AS written_at \
                 FROM {db}.batch_in WHERE kind = 'receipt'"
                    .to_string()),
            ],
        },
        // Privacy operations (issue 5): tamis's own records. Each has its
        // own retention (`audit.retention_months`), enforced by the janitor
        // dropping whole months, so they are partitioned by month alone.
        // None of them holds a salt, an address or a raw client string.
        Migration {
            version: 5,
            name: "privacy operations records: deletion reports, salt destructions, audit log",
            statements: vec![
                table(
                    "retention_log",
                    "deleted_at DateTime, site_id String, table_name String, period UInt32, rows UInt64",
                    Engine::MergeTree,
                    "PARTITION BY toYYYYMM(deleted_at) ORDER BY (deleted_at, site_id, table_name, period)",
                ),
                table(
                    "salt_destructions",
                    "destroyed_at DateTime, site_id String, day Date, place String, commitment String",
                    Engine::MergeTree,
                    "PARTITION BY toYYYYMM(destroyed_at) ORDER BY (destroyed_at, site_id, day)",
                ),
                // Append-only: tamis only inserts here, and removes whole
                // months past the audit retention.
                table(
                    "audit_log",
                    "at DateTime, kind String, actor String, client String, site_id String, \
                     summary String, rows UInt64, format String, detail String",
                    Engine::MergeTree,
                    "PARTITION BY toYYYYMM(at) ORDER BY (at, kind, site_id)",
                ),
            ],
        },
        Migration {
            version: 6,
            name: "daily rollups of finished local days",
            statements: vec![
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
                table(
                    "rollup_daily",
                    format!(
                        "site_id String, day Date, version UInt64, dimension String, value String, \
                         visitors UInt64, visits Int64, pageviews UInt64, events UInt64, \
                         bounces Int64, duration Int64, exits Int64, {engagement_plain}"
                    ),
                    Engine::MergeTree,
                    "PARTITION BY (site_id, toYYYYMM(day)) \
                     ORDER BY (site_id, dimension, day, version, value) \
                     SETTINGS index_granularity = 1024",
                ),
                // One row per finished computation, written after its rows:
                // the day's totals as rolled, compared with `traffic_hourly`
                // to notice late data.
                table(
                    "rollup_days",
                    format!(
                        "site_id String, day Date, version UInt64, \
                         pageviews UInt64, events UInt64, visits Int64, bounces Int64, duration Int64, exits Int64, \
                         rolled_at DateTime, {engagement_plain}"
                    ),
                    Engine::MergeTree,
                    "PARTITION BY (site_id, toYYYYMM(day)) ORDER BY (site_id, day, version)",
                ),
            ],
        },
        Migration {
            version: 7,
            name: "visits per funnel step",
            statements: vec![
                // Counts only: the aggregator follows a visit through a
                // funnel in memory and writes "one more visit reached step
                // n", by the hour the visit started. Step 0 holds the
                // delivery marks (see sink::rows::BatchRow::mark).
                table(
                    "funnel_hourly",
                    "site_id String, hour DateTime, funnel String, step UInt8, visits UInt64",
                    Engine::SummingMergeTree,
                    "PARTITION BY (site_id, toYYYYMM(hour)) ORDER BY (site_id, funnel, hour, step)",
                ),
                // Named to sort before `z_batch_receipts_mv`: views run in
                // name order, and the receipt's must run last. A funnel
                // row carries the funnel in `event`, the step in `hits`
                // and the visits in `visits`; its mark rides in the same
                // insert, hence the same part.
                Step::Sql("CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.batch_funnel_mv TO {db}.funnel_hourly AS \
                 SELECT site_id, hour, event AS funnel, toUInt8(hits) AS step, toUInt64(sum(visits)) AS visits \
                 FROM {db}.batch_in WHERE kind = 'funnel' GROUP BY site_id, hour, event, hits"
                    .to_string()),
            ],
        },
        Migration {
            version: 8,
            name: "goals in the daily rollups",
            statements: vec![
                // Which goals (by key) a computation of a day rolled, written
                // after its rows and before its `rollup_days` record: a goal
                // breakdown reads a day's rollup only when its newest
                // computation covered every goal asked (a goal with no row
                // that day then truly had no conversion).
                table(
                    "rollup_goal_days",
                    "site_id String, day Date, version UInt64, goal String",
                    Engine::MergeTree,
                    "PARTITION BY (site_id, toYYYYMM(day)) ORDER BY (site_id, day, version, goal)",
                ),
            ],
        },
        migration_9(),
        migration_10(),
        migration_11(),
        migration_12(),
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
        statements: vec![
            table(
                "imported_daily",
                format!(
                    "site_id String, day Date, version UInt64, report String, {dims}, \
                     visitors UInt64, visits UInt64, pageviews UInt64, bounces UInt64, duration UInt64"
                ),
                Engine::MergeTree,
                "PARTITION BY (site_id, toYYYYMM(day)) ORDER BY (site_id, report, day, version)",
            ),
            table(
                "imported_days",
                "site_id String, report String, day Date, version UInt64, \
                 file String, file_sha256 String, rows UInt64, imported_at DateTime",
                Engine::MergeTree,
                "PARTITION BY site_id ORDER BY (site_id, report, day, version)",
            ),
        ],
    }
}

/// Shared links (issue 17, part 4; `crate::share`): append-only events,
/// `create` and `revoke`, never updated. The secret is stored as its
/// SHA-256 only. In ClickHouse rather than a file under the log folder so
/// that every collector of a cluster refuses a revoked link at once: each
/// request re-reads the link here. A handful of rows per site, kept as long
/// as the database (no retention: a revocation must never be forgotten).
fn migration_11() -> Migration {
    Migration {
        version: 11,
        name: "shared links",
        statements: vec![table(
            "shared_links",
            "at DateTime, kind String, link_id String, site_id String, name String, \
             secret_sha256 String, password_hash String, expires_at DateTime, actor String",
            Engine::MergeTree,
            "PARTITION BY tuple() ORDER BY (link_id, at)",
        )],
    }
}

/// The installation's rounding secret (`sink::rounding`): drawn once by
/// the first collector that needs it, read by every collector, kept for
/// good. Rows, not a single value, because two collectors starting at once
/// may both write one: every collector takes the earliest by (creation
/// time, text).
fn migration_12() -> Migration {
    Migration {
        version: 12,
        name: "the installation's rounding secret",
        statements: vec![table(
            "rounding_secret",
            "created_at DateTime, secret String",
            Engine::MergeTree,
            "ORDER BY (created_at, secret)",
        )],
    }
}

/// The migrations each server (each node of a cluster) has applied: a
/// plain table of its own on every node, never replicated, since each
/// node records what it holds.
pub const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (\
     version UInt32, name String, applied_at DateTime) \
     ENGINE = MergeTree() ORDER BY version";

/// Every statement for `database`, in order, as `tamis migrate --print`
/// shows them: the same on every node of a cluster, whose macros fill in
/// `{shard}` and `{replica}`.
pub fn script(database: &str, layout: Layout) -> Vec<String> {
    let mut out = vec![
        format!("CREATE DATABASE IF NOT EXISTS {database}"),
        MIGRATIONS_TABLE.replace("{db}", database),
    ];
    for m in migrations() {
        out.extend(
            m.statements
                .iter()
                .flat_map(|s| s.printed(database, layout)),
        );
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
        for layout in [Layout::Single, Layout::Cluster("tamis")] {
            for sql in script("tamis", layout) {
                for banned in ["TTL", "LowCardinality", "SimpleAggregateFunction", "{db}"] {
                    assert!(!sql.contains(banned), "{banned} in {sql}");
                }
            }
        }
    }

    /// Every table that holds data is a [`Step::Table`], so that a cluster
    /// replicates it: a `*MergeTree` made by a raw statement would be one
    /// node's alone. Only the migrations record stays per node.
    #[test]
    fn tables_that_hold_data_are_made_by_table_steps() {
        for step in migrations().iter().flat_map(|m| &m.statements) {
            if let Step::Sql(sql) = step {
                assert!(!sql.contains("MergeTree"), "{sql}");
            }
        }
    }

    /// On a cluster each table is replicated under a ZooKeeper path made of
    /// the shard macro, the database and the table, with a `Distributed`
    /// table over it; everything else is the single server's statement.
    #[test]
    fn a_cluster_replicates_each_table_and_reads_it_through_a_distributed_table() {
        let single = script("db1", Layout::Single);
        let cluster = script("db1", Layout::Cluster("tamis"));
        let receipts = |script: &[String]| -> Vec<String> {
            script
                .iter()
                .filter(|s| s.contains("db1.batch_receipts"))
                .filter(|s| s.starts_with("CREATE TABLE"))
                .cloned()
                .collect()
        };
        assert_eq!(
            receipts(&single),
            ["CREATE TABLE IF NOT EXISTS db1.batch_receipts (journal_id String, first_seq UInt64, \
              end_seq UInt64, part String, hits UInt64, written_at DateTime) ENGINE = MergeTree() \
              PARTITION BY toYYYYMM(written_at) ORDER BY (journal_id, end_seq, part)"]
        );
        assert_eq!(
            receipts(&cluster),
            [
                "CREATE TABLE IF NOT EXISTS db1.batch_receipts (journal_id String, first_seq UInt64, \
                 end_seq UInt64, part String, hits UInt64, written_at DateTime) \
                 ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db1.batch_receipts', '{replica}') \
                 PARTITION BY toYYYYMM(written_at) ORDER BY (journal_id, end_seq, part)",
                "CREATE TABLE IF NOT EXISTS db1.batch_receipts_all AS db1.batch_receipts \
                 ENGINE = Distributed(tamis, db1, batch_receipts)"
            ]
        );
        let tables: Vec<Table> = migrations()
            .into_iter()
            .flat_map(|m| m.statements)
            .filter_map(|s| match s {
                Step::Table(t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(tables.len(), 16);
        for t in &tables {
            let replicated = format!(
                "ENGINE = Replicated{}('/clickhouse/tables/{{shard}}/db1.{}', '{{replica}}') {}",
                t.engine.name(),
                t.name,
                t.keys
            );
            assert!(
                cluster.iter().any(|s| s.ends_with(&replicated)),
                "{replicated}"
            );
            let distributed = format!("ENGINE = Distributed(tamis, db1, {})", t.name);
            assert!(
                cluster.iter().any(|s| s.ends_with(&distributed)),
                "{distributed}"
            );
        }
        // Views, Null tables and the migrations record are the same.
        let others = |script: &[String]| -> Vec<String> {
            script
                .iter()
                .filter(|s| !s.contains("MergeTree(") || s.contains("schema_migrations"))
                .filter(|s| !s.contains("Distributed(") && !s.starts_with("-- "))
                .cloned()
                .collect()
        };
        assert_eq!(others(&single), others(&cluster));
        // An upgrade adding columns alters the Distributed table too, but
        // gives it no sorting key.
        let upgrade: Vec<&String> = cluster
            .iter()
            .filter(|s| s.contains("ALTER TABLE db1.traffic_hourly"))
            .collect();
        assert!(upgrade.iter().any(|s| s.contains("MODIFY ORDER BY")));
        let twin: Vec<&String> = cluster
            .iter()
            .filter(|s| s.contains("ALTER TABLE db1.traffic_hourly_all"))
            .collect();
        assert_eq!(twin.len(), 2, "{twin:?}");
        assert!(twin.iter().all(|s| !s.contains("MODIFY ORDER BY")));
        // Null tables have no Distributed table.
        assert!(!cluster.iter().any(|s| s.contains("batch_in_all")));
    }
}
