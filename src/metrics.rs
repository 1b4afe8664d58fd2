//! Counters and gauges for `GET /metrics`, in Prometheus text format.
//! Labels are fixed words (drop reasons); nothing a client sends, and no
//! address, ever becomes a label or a value here.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::privacy::pipeline::DropReason;

const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
pub struct Metrics {
    pub hits_received: AtomicU64,
    pub hits_accepted: AtomicU64,
    hits_dropped: [AtomicU64; DropReason::ALL.len()],
    pub hits_overloaded: AtomicU64,
    pub hits_written: AtomicU64,
    pub batches_written: AtomicU64,
    pub rows_written: AtomicU64,
    pub rows_rejected: AtomicU64,
    pub insert_failures: AtomicU64,
    insert_latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    insert_latency_sum_us: AtomicU64,
    insert_latency_count: AtomicU64,
    pub queue_depth: AtomicU64,
    pub batches_pending: AtomicU64,
    pub sessions_open: AtomicU64,
    pub clickhouse_up: AtomicU64,
    pub api_queries: AtomicU64,
    /// Stats and audit reads answered 503 because a shard of the cluster
    /// had no replica that answered (never answered with partial numbers).
    pub api_shard_unreachable: AtomicU64,
    pub log_bytes: AtomicU64,
    pub log_backlog: AtomicU64,
    /// When the oldest record not yet in ClickHouse became durable, in
    /// milliseconds since the epoch; 0 when there is none.
    pub log_oldest_unconfirmed_ms: AtomicU64,
    pub log_full: AtomicU64,
    pub log_torn_tails: AtomicU64,
    pub log_corrupt: AtomicU64,
    pub log_fsyncs: AtomicU64,
    /// Records the feeder read back from the log instead of taking them
    /// from memory (replay, or a full hand-off).
    pub log_read_back: AtomicU64,
    pub log_write_errors: AtomicU64,
    pub rows_dead_lettered: AtomicU64,
    /// Groups whose refused rows were isolated.
    pub groups_isolated: AtomicU64,
    /// 1 while ClickHouse refuses tamis's own rows (not the data's fault).
    pub delivery_blocked: AtomicU64,
    /// The ClickHouse code holding delivery up, 0 when none.
    pub delivery_blocked_code: AtomicU64,
    // Privacy operations (issue 5).
    pub salts_in_memory: AtomicU64,
    /// Unix time of the start of the oldest local day whose salt is held.
    pub salt_oldest_day_start: AtomicU64,
    pub audit_rows_written: AtomicU64,
    pub audit_failures: AtomicU64,
    pub audit_rows_lost: AtomicU64,
    // The edge (issue 12).
    /// Stats and audit API requests whose bearer token was refused.
    pub api_auth_failures: AtomicU64,
    /// Requests answered 429 because their network failed too often.
    pub api_auth_throttled: AtomicU64,
    /// Connections answered 503 and closed: `server.max_connections` open.
    pub connections_refused: AtomicU64,
    /// Connections being served.
    pub connections_open: AtomicU64,
    /// `storage.log_max_bytes`, for the log's usage.
    pub log_max_bytes: AtomicU64,
    /// Reloads of the configuration file applied (SIGHUP).
    pub config_reloads: AtomicU64,
    /// 1 when the last reload was applied (and at start-up), 0 when the
    /// file was refused.
    pub config_last_reload_successful: AtomicU64,
}

impl Metrics {
    pub fn dropped(&self, reason: DropReason) {
        self.hits_dropped[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.hits_dropped[reason as usize].load(Ordering::Relaxed)
    }

    pub fn observe_insert(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (bucket, le) in self.insert_latency_buckets.iter().zip(LATENCY_BUCKETS) {
            if secs <= le {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.insert_latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.insert_latency_count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            );
        };
        counter(
            "tamis_hits_received_total",
            "Hits received on ingestion endpoints.",
            get(&self.hits_received),
        );
        counter(
            "tamis_hits_accepted_total",
            "Hits accepted (answered 202) and counted.",
            get(&self.hits_accepted),
        );
        counter(
            "tamis_hits_overloaded_total",
            "Hits refused with 503 because the queue was full.",
            get(&self.hits_overloaded),
        );
        counter(
            "tamis_hits_written_total",
            "Hits whose aggregates were written to ClickHouse.",
            get(&self.hits_written),
        );
        counter(
            "tamis_batches_written_total",
            "Inserts that ClickHouse confirmed.",
            get(&self.batches_written),
        );
        counter(
            "tamis_rows_written_total",
            "Aggregate input rows ClickHouse confirmed.",
            get(&self.rows_written),
        );
        counter(
            "tamis_rows_rejected_total",
            "Rows ClickHouse refused as bad data (not retried).",
            get(&self.rows_rejected),
        );
        counter(
            "tamis_insert_failures_total",
            "Failed insert attempts (retried).",
            get(&self.insert_failures),
        );
        counter(
            "tamis_api_queries_total",
            "Stats API queries answered.",
            get(&self.api_queries),
        );
        counter(
            "tamis_api_shard_unreachable_total",
            "Stats API reads refused (503) because a shard of the ClickHouse cluster had no replica that answered.",
            get(&self.api_shard_unreachable),
        );
        counter(
            "tamis_log_fsyncs_total",
            "Group commits of the durable log (one fsync each).",
            get(&self.log_fsyncs),
        );
        counter(
            "tamis_log_records_read_back_total",
            "Log records read back from disk for the aggregator: replay after a restart, or hits that arrived while the in-memory hand-off was full.",
            get(&self.log_read_back),
        );
        counter(
            "tamis_log_write_errors_total",
            "Failed writes to the durable log (those hits got 503).",
            get(&self.log_write_errors),
        );
        counter(
            "tamis_rows_dead_lettered_total",
            "Rows ClickHouse refused, written to the dead-letter folder.",
            get(&self.rows_dead_lettered),
        );
        counter(
            "tamis_groups_isolated_total",
            "Groups of rows split up to isolate rows ClickHouse refused.",
            get(&self.groups_isolated),
        );
        counter(
            "tamis_audit_rows_written_total",
            "Audit log rows ClickHouse confirmed.",
            get(&self.audit_rows_written),
        );
        counter(
            "tamis_audit_failures_total",
            "Failed audit log inserts (retried).",
            get(&self.audit_failures),
        );
        counter(
            "tamis_audit_rows_lost_total",
            "Audit log rows given up after retries or a full queue (also logged).",
            get(&self.audit_rows_lost),
        );
        out.push_str("# HELP tamis_log_records_skipped_total Log records found unreadable at start-up, by reason.\n# TYPE tamis_log_records_skipped_total counter\n");
        let _ = writeln!(
            out,
            "tamis_log_records_skipped_total{{reason=\"torn_tail\"}} {}",
            get(&self.log_torn_tails)
        );
        let _ = writeln!(
            out,
            "tamis_log_records_skipped_total{{reason=\"corrupt\"}} {}",
            get(&self.log_corrupt)
        );

        out.push_str("# HELP tamis_hits_dropped_total Hits not counted, by reason.\n# TYPE tamis_hits_dropped_total counter\n");
        for reason in DropReason::ALL {
            let _ = writeln!(
                out,
                "tamis_hits_dropped_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                self.dropped_count(reason)
            );
        }

        let mut gauge = |name: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            );
        };
        gauge(
            "tamis_queue_depth",
            "Logged hits held in memory by the aggregator, not yet written to ClickHouse.",
            get(&self.queue_depth),
        );
        gauge(
            "tamis_log_bytes",
            "Size of the durable log on disk.",
            get(&self.log_bytes),
        );
        gauge(
            "tamis_log_backlog_hits",
            "Hits in the durable log not yet confirmed by ClickHouse.",
            get(&self.log_backlog),
        );
        gauge(
            "tamis_delivery_blocked",
            "1 while ClickHouse refuses tamis's own rows (a table missing, read-only, a permission): hits wait in the log, nothing is dead-lettered.",
            get(&self.delivery_blocked),
        );
        gauge(
            "tamis_delivery_blocked_code",
            "The ClickHouse error code holding delivery up, 0 when none.",
            get(&self.delivery_blocked_code),
        );
        gauge(
            "tamis_log_full",
            "1 while the durable log is at its size cap (ingestion answers 503).",
            get(&self.log_full),
        );
        gauge(
            "tamis_batches_pending",
            "Batches waiting to be written.",
            get(&self.batches_pending),
        );
        gauge(
            "tamis_sessions_open",
            "Visits held in memory.",
            get(&self.sessions_open),
        );
        gauge(
            "tamis_clickhouse_up",
            "1 when the last ClickHouse call succeeded.",
            get(&self.clickhouse_up),
        );
        gauge(
            "tamis_salts_in_memory",
            "Daily salts held in this collector's memory.",
            get(&self.salts_in_memory),
        );
        gauge(
            "tamis_salt_oldest_day_start_seconds",
            "Unix time at which the oldest local day whose salt is held began (0: none).",
            get(&self.salt_oldest_day_start),
        );
        gauge(
            "tamis_log_max_bytes",
            "The durable log's size cap (storage.log_max_bytes): at it, hits are answered 503.",
            get(&self.log_max_bytes),
        );
        gauge(
            "tamis_config_last_reload_successful",
            "1 when the last reload of the configuration file (SIGHUP) was applied, or none was asked; 0 when the file was refused and the running configuration stayed.",
            get(&self.config_last_reload_successful),
        );
        let oldest = get(&self.log_oldest_unconfirmed_ms);
        let age = if oldest == 0 {
            0.0
        } else {
            (now_ms().saturating_sub(oldest)) as f64 / 1000.0
        };
        let _ = write!(out, "# HELP tamis_log_backlog_age_seconds Age of the oldest hit not yet confirmed by ClickHouse.\n# TYPE tamis_log_backlog_age_seconds gauge\ntamis_log_backlog_age_seconds {age}\n");

        out.push_str("# HELP tamis_insert_duration_seconds ClickHouse insert latency.\n# TYPE tamis_insert_duration_seconds histogram\n");
        for (bucket, le) in self.insert_latency_buckets.iter().zip(LATENCY_BUCKETS) {
            let _ = writeln!(
                out,
                "tamis_insert_duration_seconds_bucket{{le=\"{le}\"}} {}",
                get(bucket)
            );
        }
        let count = get(&self.insert_latency_count);
        let _ = writeln!(
            out,
            "tamis_insert_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "tamis_insert_duration_seconds_sum {}",
            get(&self.insert_latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(out, "tamis_insert_duration_seconds_count {count}");
        let _ = write!(
            out,
            "# HELP tamis_api_auth_failures_total Stats and audit API requests with a refused token.\n# TYPE tamis_api_auth_failures_total counter\ntamis_api_auth_failures_total {}\n",
            get(&self.api_auth_failures)
        );
        let _ = write!(
            out,
            "# HELP tamis_api_auth_throttled_total API requests answered 429 after repeated refused tokens from their network.\n# TYPE tamis_api_auth_throttled_total counter\ntamis_api_auth_throttled_total {}\n",
            get(&self.api_auth_throttled)
        );
        let _ = write!(
            out,
            "# HELP tamis_connections_refused_total Connections answered 503 because server.max_connections were open.\n# TYPE tamis_connections_refused_total counter\ntamis_connections_refused_total {}\n",
            get(&self.connections_refused)
        );
        let _ = write!(
            out,
            "# HELP tamis_config_reloads_total Reloads of the configuration file (SIGHUP) applied.\n# TYPE tamis_config_reloads_total counter\ntamis_config_reloads_total {}\n",
            get(&self.config_reloads)
        );
        let _ = write!(
            out,
            "# HELP tamis_connections_open Connections being served.\n# TYPE tamis_connections_open gauge\ntamis_connections_open {}\n",
            get(&self.connections_open)
        );
        out
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_reason_and_the_histogram() {
        let m = Metrics::default();
        m.dropped(DropReason::Bot);
        m.observe_insert(Duration::from_millis(20));
        let text = m.render();
        assert!(text.contains("tamis_hits_dropped_total{reason=\"bot\"} 1"));
        assert!(text.contains("tamis_hits_dropped_total{reason=\"opt_out\"} 0"));
        assert!(text.contains("tamis_insert_duration_seconds_bucket{le=\"0.025\"} 1"));
        assert!(text.contains("tamis_insert_duration_seconds_bucket{le=\"0.01\"} 0"));
    }
}
