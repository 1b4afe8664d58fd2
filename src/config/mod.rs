//! Configuration: the TOML file as written by the operator ([`Config`]), the
//! environment overrides, and the one step that turns it into validated
//! [`Settings`]. Nothing else in tamis reads the file or the environment.

mod file;
mod settings;

pub use file::{Config, ConsentMode, OnDenied, OnOptOut};
pub use settings::{
    ClickHouseSettings, ConfigError, GeoSettings, ServerSettings, Settings, SiteSettings,
    StorageSettings, TokenSettings,
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
