//! Process configuration, in layers: built-in defaults, then an optional config file
//! (`--config FILE` or `FERRY_CONFIG`, TOML with the same names in lower case), then environment
//! variables (a `.env` file in the working directory is read first and never overrides what is
//! already set), then command-line flags. Every value is validated into a typed field here, and a
//! bad one is reported with the variable's name and the value that was given (never a password).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::outbox::{DatabaseUrl, StoreConfig, StoreError};
use crate::relay::RelayConfig;

/// A configuration mistake, naming the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}: {problem}")]
    Invalid { name: String, problem: String },
    #[error("config file {path}: {problem}")]
    File { path: PathBuf, problem: String },
}

/// Every setting, with its default and why it exists. `ferry --help` and the README list them.
pub const SETTINGS: &[(&str, &str, &str)] = &[
    (
        "DATABASE_URL",
        "sqlite:ferry.db",
        "postgres://user@host:5432/db or sqlite:path.db",
    ),
    (
        "FERRY_SCHEMA",
        "(server default)",
        "PostgreSQL schema holding Ferry's tables",
    ),
    (
        "FERRY_WORKFLOWS",
        "./workflows",
        "directory of workflow files (*.toml)",
    ),
    (
        "FERRY_METRICS_ADDR",
        "127.0.0.1:9464",
        "address of /metrics, /healthz, /readyz; 'off' disables",
    ),
    ("FERRY_LOG_FORMAT", "human", "human or json"),
    (
        "FERRY_LOG",
        "info",
        "log filter (tracing EnvFilter syntax, e.g. info,ferry=debug)",
    ),
    (
        "FERRY_LOG_DIR",
        "logs",
        "directory of the daily-rotated log file ferry.log; 'off' disables",
    ),
    (
        "FERRY_CONCURRENCY",
        "128",
        "deliveries in flight per relay (per-target caps apply too)",
    ),
    ("FERRY_BATCH_SIZE", "256", "most rows per claim"),
    (
        "FERRY_POLL_INTERVAL",
        "1s",
        "fallback poll when no wake-up arrives",
    ),
    (
        "FERRY_LISTEN",
        "true",
        "LISTEN/NOTIFY on PostgreSQL; false behind a transaction-mode pooler",
    ),
    (
        "FERRY_LEASE_MARGIN",
        "30s",
        "added to the longest request timeout to make the lease",
    ),
    (
        "FERRY_SHUTDOWN_GRACE",
        "30s",
        "time in-flight deliveries get on SIGTERM before release",
    ),
    (
        "FERRY_RETENTION",
        "21d",
        "done rows and attempts older than this are pruned",
    ),
    (
        "FERRY_PRUNE_SCHEDULE",
        "0 17 3 * * *",
        "cron schedule of the prune job (sec min hour day month weekday)",
    ),
    (
        "FERRY_DB_MAX_CONNECTIONS",
        "8",
        "database pool size per relay",
    ),
];

/// The validated configuration of a Ferry process.
#[derive(Debug, Clone)]
pub struct Config {
    pub store: StoreConfig,
    pub workflows_dir: PathBuf,
    pub metrics_addr: Option<String>,
    pub log_json: bool,
    pub log_filter: String,
    pub log_dir: Option<PathBuf>,
    pub relay: RelayConfig,
    pub retention: Duration,
    pub prune_schedule: String,
}

/// Where values come from, highest priority last.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub file: HashMap<String, String>,
    pub env: HashMap<String, String>,
}

impl Sources {
    /// Read the process environment (after `.env`) and the config file, if one is named.
    ///
    /// # Errors
    /// A config file that cannot be read or parsed.
    pub fn from_process(config_file: Option<&Path>) -> Result<Sources, ConfigError> {
        let _ = dotenvy::dotenv();
        let env: HashMap<String, String> = std::env::vars().collect();
        let path = config_file
            .map(Path::to_path_buf)
            .or_else(|| env.get("FERRY_CONFIG").map(PathBuf::from));
        let file = match path {
            Some(p) => read_file(&p)?,
            None => HashMap::new(),
        };
        Ok(Sources { file, env })
    }

    /// The value of a setting: environment first, then the file.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .or_else(|| self.file.get(name))
            .map(String::as_str)
    }
}

fn read_file(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.into(),
        problem: e.to_string(),
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::File {
            path: path.into(),
            problem: e.message().to_string(),
        })?;
    let mut out = HashMap::new();
    for (k, v) in table {
        let name = k.to_ascii_uppercase();
        if !SETTINGS.iter().any(|(n, _, _)| *n == name) {
            return Err(ConfigError::File {
                path: path.into(),
                problem: format!(
                    "unknown setting '{k}' (known: {})",
                    SETTINGS
                        .iter()
                        .map(|s| s.0.to_ascii_lowercase())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let value = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(ConfigError::File {
                    path: path.into(),
                    problem: format!(
                        "'{k}' must be a string, number or boolean, not {}",
                        other.type_str()
                    ),
                })
            }
        };
        out.insert(name, value);
    }
    Ok(out)
}

fn bad(name: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name: name.into(),
        problem: problem.into(),
    }
}

fn duration(src: &Sources, name: &str, default: Duration) -> Result<Duration, ConfigError> {
    match src.get(name) {
        None => Ok(default),
        Some(v) => humantime::parse_duration(v.trim())
            .map_err(|e| bad(name, format!("'{v}' is not a duration like 30s or 5m: {e}"))),
    }
}

fn number<T>(src: &Sources, name: &str, default: T, min: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    match src.get(name) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<T>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(bad(name, format!("'{v}' is not a whole number ≥ {min}"))),
        },
    }
}

fn boolean(src: &Sources, name: &str, default: bool) -> Result<bool, ConfigError> {
    match src.get(name).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) => match v.as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(bad(name, format!("'{v}' is not true or false"))),
        },
    }
}

fn off_or<'a>(v: Option<&'a str>, default: &'a str) -> Option<&'a str> {
    match v.map(str::trim) {
        Some("" | "off" | "none" | "false") => None,
        Some(v) => Some(v),
        None => Some(default),
    }
}

impl Config {
    /// Validate every setting.
    ///
    /// # Errors
    /// The first bad setting, by name.
    pub fn from_sources(src: &Sources) -> Result<Config, ConfigError> {
        let url: DatabaseUrl = match src.get("DATABASE_URL") {
            None => DatabaseUrl::default_sqlite(),
            Some(v) => v
                .parse()
                .map_err(|e: StoreError| bad("DATABASE_URL", strip_prefix(&e)))?,
        };
        let mut store = StoreConfig::new(url);
        store.schema = src
            .get("FERRY_SCHEMA")
            .map(str::to_string)
            .filter(|s| !s.is_empty());
        store.max_connections = number(src, "FERRY_DB_MAX_CONNECTIONS", 8u32, 2)?;
        let relay = RelayConfig {
            batch_size: number(src, "FERRY_BATCH_SIZE", 256u32, 1)?,
            concurrency: number(src, "FERRY_CONCURRENCY", 128usize, 1)?,
            lease_margin: duration(src, "FERRY_LEASE_MARGIN", Duration::from_secs(30))?,
            poll_interval: duration(src, "FERRY_POLL_INTERVAL", Duration::from_secs(1))?,
            listen: boolean(src, "FERRY_LISTEN", true)?,
            shutdown_grace: duration(src, "FERRY_SHUTDOWN_GRACE", Duration::from_secs(30))?,
            ..RelayConfig::default()
        };
        if relay.poll_interval.is_zero() {
            return Err(bad("FERRY_POLL_INTERVAL", "must be more than 0"));
        }
        let log_json = match src
            .get("FERRY_LOG_FORMAT")
            .map(|v| v.trim().to_ascii_lowercase())
        {
            None => false,
            Some(v) if v == "human" || v == "text" => false,
            Some(v) if v == "json" => true,
            Some(v) => {
                return Err(bad(
                    "FERRY_LOG_FORMAT",
                    format!("'{v}' is not human or json"),
                ))
            }
        };
        let prune_schedule = src
            .get("FERRY_PRUNE_SCHEDULE")
            .unwrap_or("0 17 3 * * *")
            .to_string();
        prune_schedule.parse::<cron::Schedule>().map_err(|e| {
            bad(
                "FERRY_PRUNE_SCHEDULE",
                format!("'{prune_schedule}' is not a cron expression: {e}"),
            )
        })?;
        Ok(Config {
            store,
            workflows_dir: PathBuf::from(src.get("FERRY_WORKFLOWS").unwrap_or("./workflows")),
            metrics_addr: off_or(src.get("FERRY_METRICS_ADDR"), "127.0.0.1:9464")
                .map(str::to_string),
            log_json,
            log_filter: src
                .get("FERRY_LOG")
                .or_else(|| src.get("RUST_LOG"))
                .unwrap_or("info")
                .to_string(),
            log_dir: off_or(src.get("FERRY_LOG_DIR"), "logs").map(PathBuf::from),
            relay,
            retention: duration(src, "FERRY_RETENTION", Duration::from_secs(21 * 24 * 3600))?,
            prune_schedule,
        })
    }

    /// An environment lookup for workflow files: the process environment (with `.env`), then
    /// the config file.
    pub fn env_lookup(src: &Sources) -> impl Fn(&str) -> Option<String> + '_ {
        move |name| src.get(name).map(str::to_string)
    }
}

fn strip_prefix(e: &StoreError) -> String {
    let s = e.to_string();
    s.strip_prefix("DATABASE_URL is not usable: ")
        .map(str::to_string)
        .unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(pairs: &[(&str, &str)]) -> Sources {
        Sources {
            file: HashMap::new(),
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn defaults_need_no_configuration() {
        let c = Config::from_sources(&src(&[])).unwrap();
        assert_eq!(c.store.url, DatabaseUrl::Sqlite("ferry.db".into()));
        assert_eq!(c.workflows_dir, PathBuf::from("./workflows"));
        assert_eq!(c.metrics_addr.as_deref(), Some("127.0.0.1:9464"));
        assert!(c.relay.listen);
    }

    #[test]
    fn bad_values_name_the_setting() {
        for (k, v) in [
            ("DATABASE_URL", "mysql://x"),
            ("FERRY_CONCURRENCY", "lots"),
            ("FERRY_CONCURRENCY", "0"),
            ("FERRY_POLL_INTERVAL", "5 parsecs"),
            ("FERRY_LISTEN", "maybe"),
            ("FERRY_LOG_FORMAT", "xml"),
            ("FERRY_PRUNE_SCHEDULE", "every day"),
        ] {
            let e = Config::from_sources(&src(&[(k, v)]))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(k), "{e}");
        }
        let e = Config::from_sources(&src(&[("DATABASE_URL", "postgres://u:topsecret@/x")]));
        if let Err(e) = e {
            assert!(!e.to_string().contains("topsecret"));
        }
    }

    #[test]
    fn env_overrides_file_and_off_disables() {
        let mut s = src(&[("FERRY_METRICS_ADDR", "off")]);
        s.file
            .insert("FERRY_METRICS_ADDR".into(), "0.0.0.0:1".into());
        s.file.insert("FERRY_BATCH_SIZE".into(), "7".into());
        let c = Config::from_sources(&s).unwrap();
        assert_eq!(c.metrics_addr, None);
        assert_eq!(c.relay.batch_size, 7);
    }
}
