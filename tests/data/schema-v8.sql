-- The schema of a tamis database at migration 8, the last before
-- migration 9 (commit 66271ae's src/sink/schema.rs and rows.rs), `{db}`
-- standing for the database: `tamis migrate --print` of the commit that
-- added migration 9 without what it added (its steps, and the columns the
-- column lists gained). tests/pipeline.rs builds a database from it to
-- check that migration 9 upgrades one in place.

CREATE DATABASE IF NOT EXISTS {db};

CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, applied_at DateTime) ENGINE = MergeTree() ORDER BY version;

CREATE TABLE IF NOT EXISTS {db}.traffic_hourly (site_id String, hour DateTime, event String, page String, entry_page String, source String, referrer String, utm_source String, utm_medium String, utm_campaign String, country String, region String, browser String, browser_version String, os String, device String, language String, consent String, visitors AggregateFunction(uniqIf, UInt64, UInt8), pageviews AggregateFunction(sum, UInt64), events AggregateFunction(sum, UInt64), visits AggregateFunction(sum, Int64), bounces AggregateFunction(sum, Int64), duration AggregateFunction(sum, Int64), exits AggregateFunction(sum, Int64)) ENGINE = AggregatingMergeTree() PARTITION BY (site_id, toYYYYMM(hour)) ORDER BY (site_id, hour, event, page, entry_page, source, referrer, utm_source, utm_medium, utm_campaign, country, region, browser, browser_version, os, device, language, consent);

CREATE TABLE IF NOT EXISTS {db}.traffic_in (site_id String, hour DateTime, event String, page String, entry_page String, source String, referrer String, utm_source String, utm_medium String, utm_campaign String, country String, region String, browser String, browser_version String, os String, device String, language String, consent String, visitor UInt64, pageviews UInt64, events UInt64, visits Int64, bounces Int64, duration Int64, exits Int64) ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.traffic_mv TO {db}.traffic_hourly AS SELECT site_id, hour, event, page, entry_page, source, referrer, utm_source, utm_medium, utm_campaign, country, region, browser, browser_version, os, device, language, consent, uniqIfState(visitor, toUInt8(visitor != 0)) AS visitors, sumState(pageviews) AS pageviews, sumState(events) AS events, sumState(visits) AS visits, sumState(bounces) AS bounces, sumState(duration) AS duration, sumState(exits) AS exits FROM {db}.traffic_in GROUP BY site_id, hour, event, page, entry_page, source, referrer, utm_source, utm_medium, utm_campaign, country, region, browser, browser_version, os, device, language, consent;

CREATE TABLE IF NOT EXISTS {db}.dropped_hourly (site_id String, hour DateTime, reason String, hits UInt64) ENGINE = SummingMergeTree() PARTITION BY (site_id, toYYYYMM(hour)) ORDER BY (site_id, hour, reason);

CREATE TABLE IF NOT EXISTS {db}.salts (site_id String, day Date, salt String, created_at DateTime) ENGINE = MergeTree() PARTITION BY (site_id, toYYYYMMDD(day)) ORDER BY (site_id, day, created_at);

CREATE TABLE IF NOT EXISTS {db}.props_hourly (site_id String, hour DateTime, event String, page String, prop_key String, prop_value String, visitors AggregateFunction(uniqIf, UInt64, UInt8), events AggregateFunction(sum, UInt64)) ENGINE = AggregatingMergeTree() PARTITION BY (site_id, toYYYYMM(hour)) ORDER BY (site_id, hour, event, prop_key, prop_value, page);

CREATE TABLE IF NOT EXISTS {db}.props_in (site_id String, hour DateTime, event String, page String, prop_key String, prop_value String, visitor UInt64, events UInt64) ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.props_mv TO {db}.props_hourly AS SELECT site_id, hour, event, page, prop_key, prop_value, uniqIfState(visitor, toUInt8(visitor != 0)) AS visitors, sumState(events) AS events FROM {db}.props_in GROUP BY site_id, hour, event, page, prop_key, prop_value;

CREATE TABLE IF NOT EXISTS {db}.batch_in (kind String, site_id String, hour DateTime, event String, page String, entry_page String, source String, referrer String, utm_source String, utm_medium String, utm_campaign String, country String, region String, browser String, browser_version String, os String, device String, language String, consent String, visitor UInt64, pageviews UInt64, events UInt64, visits Int64, bounces Int64, duration Int64, exits Int64, reason String, hits UInt64, prop_key String, prop_value String, journal_id String, first_seq UInt64, end_seq UInt64, part String) ENGINE = Null;

CREATE TABLE IF NOT EXISTS {db}.batch_receipts (journal_id String, first_seq UInt64, end_seq UInt64, part String, hits UInt64, written_at DateTime) ENGINE = MergeTree() PARTITION BY toYYYYMM(written_at) ORDER BY (journal_id, end_seq, part);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.batch_traffic_mv TO {db}.traffic_hourly AS SELECT site_id, hour, event, page, entry_page, source, referrer, utm_source, utm_medium, utm_campaign, country, region, browser, browser_version, os, device, language, consent, uniqIfState(visitor, toUInt8(visitor != 0)) AS visitors, sumState(pageviews) AS pageviews, sumState(events) AS events, sumState(visits) AS visits, sumState(bounces) AS bounces, sumState(duration) AS duration, sumState(exits) AS exits FROM {db}.batch_in WHERE kind = 'traffic' GROUP BY site_id, hour, event, page, entry_page, source, referrer, utm_source, utm_medium, utm_campaign, country, region, browser, browser_version, os, device, language, consent;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.batch_dropped_mv TO {db}.dropped_hourly AS SELECT site_id, hour, reason, sum(hits) AS hits FROM {db}.batch_in WHERE kind = 'dropped' GROUP BY site_id, hour, reason;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.batch_props_mv TO {db}.props_hourly AS SELECT site_id, hour, event, page, prop_key, prop_value, uniqIfState(visitor, toUInt8(visitor != 0)) AS visitors, sumState(events) AS events FROM {db}.batch_in WHERE kind = 'prop' GROUP BY site_id, hour, event, page, prop_key, prop_value;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.z_batch_receipts_mv TO {db}.batch_receipts AS SELECT journal_id, first_seq, end_seq, part, hits, now() AS written_at FROM {db}.batch_in WHERE kind = 'receipt';

CREATE TABLE IF NOT EXISTS {db}.retention_log (deleted_at DateTime, site_id String, table_name String, period UInt32, rows UInt64) ENGINE = MergeTree() PARTITION BY toYYYYMM(deleted_at) ORDER BY (deleted_at, site_id, table_name, period);

CREATE TABLE IF NOT EXISTS {db}.salt_destructions (destroyed_at DateTime, site_id String, day Date, place String, commitment String) ENGINE = MergeTree() PARTITION BY toYYYYMM(destroyed_at) ORDER BY (destroyed_at, site_id, day);

CREATE TABLE IF NOT EXISTS {db}.audit_log (at DateTime, kind String, actor String, client String, site_id String, summary String, rows UInt64, format String, detail String) ENGINE = MergeTree() PARTITION BY toYYYYMM(at) ORDER BY (at, kind, site_id);

CREATE TABLE IF NOT EXISTS {db}.rollup_daily (site_id String, day Date, version UInt64, dimension String, value String, visitors UInt64, visits Int64, pageviews UInt64, events UInt64, bounces Int64, duration Int64, exits Int64) ENGINE = MergeTree() PARTITION BY (site_id, toYYYYMM(day)) ORDER BY (site_id, dimension, day, version, value) SETTINGS index_granularity = 1024;

CREATE TABLE IF NOT EXISTS {db}.rollup_days (site_id String, day Date, version UInt64, pageviews UInt64, events UInt64, visits Int64, bounces Int64, duration Int64, exits Int64, rolled_at DateTime) ENGINE = MergeTree() PARTITION BY (site_id, toYYYYMM(day)) ORDER BY (site_id, day, version);

CREATE TABLE IF NOT EXISTS {db}.funnel_hourly (site_id String, hour DateTime, funnel String, step UInt8, visits UInt64) ENGINE = SummingMergeTree() PARTITION BY (site_id, toYYYYMM(hour)) ORDER BY (site_id, funnel, hour, step);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.batch_funnel_mv TO {db}.funnel_hourly AS SELECT site_id, hour, event AS funnel, toUInt8(hits) AS step, toUInt64(sum(visits)) AS visits FROM {db}.batch_in WHERE kind = 'funnel' GROUP BY site_id, hour, event, hits;

CREATE TABLE IF NOT EXISTS {db}.rollup_goal_days (site_id String, day Date, version UInt64, goal String) ENGINE = MergeTree() PARTITION BY (site_id, toYYYYMM(day)) ORDER BY (site_id, day, version, goal);
