//! Configuration: the TOML file as written by the operator ([`Config`]), the
//! environment overrides, and the one step that turns it into validated
//! [`Settings`]. Nothing else in tamis reads the file or the environment.

mod file;
pub mod fingerprint;
pub mod live;
mod settings;

pub use file::{Config, ConsentMode, Disclosure, OnDenied, OnOptOut};
pub use live::{Live, LiveSites, LiveTokens};
pub use settings::{
    ClickHouseSettings, ClickHouseUrl, ClusterSettings, ConfigError, GeoSettings,
    OrganizationSettings, QuerySettings, RoundingKey, RoundingSecret, ServerSettings, Settings,
    SiteSettings, StorageSettings, TokenSettings, TrackerId, MAX_V4_PREFIX, MAX_V6_PREFIX,
};

use std::path::Path;

/// Reads `path`, applies `TAMIS_*` environment overrides and validates.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    config.apply_env(|name| std::env::var(name).ok());
    let base = path.parent().unwrap_or(Path::new("."));
    Settings::from_config(config, base)
}

/// Who runs this tamis, for the audit log's configuration changes:
/// `TAMIS_OPERATOR`, else the OS user (`USER`, `LOGNAME`), else `unknown`.
pub fn operator_name() -> String {
    ["TAMIS_OPERATOR", "USER", "LOGNAME"]
        .iter()
        .find_map(|name| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        })
        .map(|v| v.chars().filter(|c| !c.is_control()).take(100).collect())
        .unwrap_or_else(|| "unknown".to_string())
}
