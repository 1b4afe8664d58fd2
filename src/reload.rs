//! What a reload of the configuration file (SIGHUP) may change while tamis
//! runs, decided in one pure step: [`plan`] takes the running settings and
//! the file's new ones and returns the settings to run with, and what was
//! left as it was because it needs a restart. `server` puts the result in
//! place; this module does no I/O.
//!
//! Changed at once: sites (added, or their privacy settings, hostnames,
//! goals, funnels and trackers' ids changed), tokens, the organization
//! (the privacy notice) and whether a rounding key is set. Everything
//! bound at start-up stays: listeners, the durable log, ClickHouse, the
//! GeoIP files, the stats API's limits and the audit retention; so do a
//! site's timezone (its salts and hours are by local day) and a site
//! removed from the file (positions of sites never change while tamis
//! runs: the aggregator, the salts and the durable log's readers use them).

use std::sync::Arc;

use crate::config::fingerprint;
use crate::config::{Settings, SiteSettings};

/// The outcome of [`plan`].
pub struct Plan {
    /// What tamis runs with after the reload.
    pub settings: Settings,
    /// Settings of the file that were not applied, each "needs a restart".
    pub needs_restart: Vec<String>,
    /// Sections of the configuration (as the audit log names them) whose
    /// effective value changed.
    pub changed: Vec<String>,
}

/// The settings to run with once `new` is reloaded over `running`.
pub fn plan(mut running: Settings, mut new: Settings) -> Plan {
    let before = fingerprint::sections(&running);
    let mut needs_restart = Vec::new();
    let mut keep = |name: &str, same: bool| {
        if !same {
            needs_restart.push(name.to_string());
        }
        !same
    };
    // `{:?}` of these settings shows every value (secrets redacted: the
    // ClickHouse password is compared on its own).
    if keep(
        "server",
        format!("{:?}", running.server) == format!("{:?}", new.server),
    ) {
        std::mem::swap(&mut new.server, &mut running.server);
    }
    if keep(
        "clickhouse",
        format!("{:?}", running.clickhouse) == format!("{:?}", new.clickhouse)
            && running.clickhouse.password == new.clickhouse.password,
    ) {
        std::mem::swap(&mut new.clickhouse, &mut running.clickhouse);
    }
    if keep(
        "storage",
        format!("{:?}", running.storage) == format!("{:?}", new.storage),
    ) {
        std::mem::swap(&mut new.storage, &mut running.storage);
    }
    if keep(
        "geoip",
        running.geo.path == new.geo.path && running.geo.path_v6 == new.geo.path_v6,
    ) {
        std::mem::swap(&mut new.geo, &mut running.geo);
    } else {
        // The file was not opened again either way: the loaded database
        // stays, so no reload reads one that changed under it.
        new.geo.db = running.geo.db.clone();
    }
    if keep(
        "query",
        format!("{:?}", running.query) == format!("{:?}", new.query),
    ) {
        std::mem::swap(&mut new.query, &mut running.query);
    }
    if keep(
        "audit.retention_months",
        running.audit_retention_months == new.audit_retention_months,
    ) {
        new.audit_retention_months = running.audit_retention_months;
    }
    let (sites, kept) = merge_sites(&running.sites, &new.sites);
    needs_restart.extend(kept);
    new.sites = sites;
    let changed = fingerprint::changed_sections(&before, &fingerprint::sections(&new));
    Plan {
        settings: new,
        needs_restart,
        changed,
    }
}

/// The running sites at their positions, each with its new settings, then
/// the new sites; and what was kept as it was.
fn merge_sites(
    running: &[Arc<SiteSettings>],
    new: &[Arc<SiteSettings>],
) -> (Vec<Arc<SiteSettings>>, Vec<String>) {
    let mut kept = Vec::new();
    let mut sites: Vec<Arc<SiteSettings>> = running
        .iter()
        .map(|old| match new.iter().find(|s| s.id == old.id) {
            None => {
                kept.push(format!("site {} (removed)", old.id));
                old.clone()
            }
            Some(site) if site.timezone != old.timezone => {
                kept.push(format!("site {} timezone", old.id));
                let mut site = SiteSettings::clone(site);
                site.timezone = old.timezone;
                Arc::new(site)
            }
            Some(site) => site.clone(),
        })
        .collect();
    sites.extend(
        new.iter()
            .filter(|s| !running.iter().any(|old| old.id == s.id))
            .cloned(),
    );
    (sites, kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    const RUNNING: &str = r#"
        [clickhouse]
        flush_interval_ms = 200

        [[site]]
        id = "a.example"
        timezone = "Europe/Paris"

        [[site]]
        id = "b.example"
    "#;

    fn settings(text: &str) -> Settings {
        let config: Config = toml::from_str(text).expect("parses");
        Settings::from_config(config, Path::new(".")).expect("valid")
    }

    /// Reloads `new` over [`RUNNING`]: the sites run with (id, first
    /// hostname, timezone), what needs a restart, what changed.
    fn check(new: &str, sites: &[(&str, &str, &str)], restart: &[&str], changed: &[&str]) {
        let plan = plan(settings(RUNNING), settings(new));
        let got: Vec<(&str, &str, &str)> = plan
            .settings
            .sites
            .iter()
            .map(|s| (s.id.as_str(), s.hostnames[0].as_str(), s.timezone.name()))
            .collect();
        assert_eq!(got, sites, "sites for {new}");
        assert_eq!(plan.needs_restart, restart, "restart for {new}");
        assert_eq!(plan.changed, changed, "changed for {new}");
    }

    #[test]
    fn the_same_file_changes_nothing() {
        check(
            RUNNING,
            &[
                ("a.example", "a.example", "Europe/Paris"),
                ("b.example", "b.example", "America/Toronto"),
            ],
            &[],
            &[],
        );
    }

    #[test]
    fn a_new_site_comes_last_whatever_its_place_in_the_file() {
        check(
            r#"
            [clickhouse]
            flush_interval_ms = 200
            [[site]]
            id = "new.example"
            [[site]]
            id = "b.example"
            hostnames = ["www.b.example"]
            [[site]]
            id = "a.example"
            timezone = "Europe/Paris"
            "#,
            &[
                ("a.example", "a.example", "Europe/Paris"),
                ("b.example", "www.b.example", "America/Toronto"),
                ("new.example", "new.example", "America/Toronto"),
            ],
            &[],
            &["site b.example", "site new.example"],
        );
    }

    #[test]
    fn settings_bound_at_start_up_stay_and_need_a_restart() {
        check(
            r#"
            [server]
            queue_capacity = 1000
            [clickhouse]
            flush_interval_ms = 900
            [storage]
            log_max_bytes = 1048576
            [[site]]
            id = "a.example"
            timezone = "Asia/Tokyo"
            "#,
            // b.example was removed from the file: it stays, at its place.
            &[
                ("a.example", "a.example", "Europe/Paris"),
                ("b.example", "b.example", "America/Toronto"),
            ],
            &[
                "server",
                "clickhouse",
                "storage",
                "site a.example timezone",
                "site b.example (removed)",
            ],
            &[],
        );
    }
}
