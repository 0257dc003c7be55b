//! Process configuration, in layers: built-in defaults, then an optional config file
//! (`--config FILE` or `FERRY_CONFIG`, TOML with the same names in lower case), then environment
//! variables (a `.env` file in the working directory is read first and never overrides what is
//! already set), then command-line flags. Every value is validated into a typed field here, and a
//! bad one is reported with the variable's name, the value that was given (never a password) and
//! what is allowed.
//!
//! Every number and duration has a range ([`Allowed`]), listed in [`SETTINGS`] and in
//! `ferry --help`. The ranges are far wider than any sensible deployment; they exist so that a
//! unit slip (`30d` for `30s`) or a stray digit is refused at start-up, by name, instead of
//! panicking later (a semaphore larger than tokio allows, a deadline past the end of time) or
//! starting a relay whose every claim fails (a lease interval the database cannot represent).

use std::collections::HashMap;
use std::fmt;
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

/// What values a setting accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// A whole number in `min..=max`.
    Count { min: u64, max: u64 },
    /// A duration (`500ms`, `30s`, `5m`, `21d`) in `min..=max`.
    Duration { min: Duration, max: Duration },
    /// Anything of the described form.
    Text(&'static str),
}

impl fmt::Display for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allowed::Count { min, max } => write!(f, "{min}..={max}"),
            Allowed::Duration { min, max } => write!(f, "{}..={}", short(*min), short(*max)),
            Allowed::Text(t) => f.write_str(t),
        }
    }
}

/// A duration in its largest whole unit, days from two on: `10ms`, `1s`, `24h`, `3650d`.
fn short(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        let least = if unit == "d" { 2 * size } else { size };
        if ms >= least && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    if ms == 0 {
        "0s".into()
    } else {
        format!("{ms}ms")
    }
}

/// One setting: its name, default, allowed values and why it exists.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    pub allowed: Allowed,
    pub what: &'static str,
}

const fn count(min: u64, max: u64) -> Allowed {
    Allowed::Count { min, max }
}

const fn span(min: Duration, max: Duration) -> Allowed {
    Allowed::Duration { min, max }
}

const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

pub const CONCURRENCY: Setting = Setting {
    name: "FERRY_CONCURRENCY",
    default: "128",
    allowed: count(1, 10_000),
    what: "deliveries in flight per relay (per-target caps apply too)",
};
pub const BATCH_SIZE: Setting = Setting {
    name: "FERRY_BATCH_SIZE",
    default: "256",
    allowed: count(1, 10_000),
    what: "most rows per claim",
};
pub const POLL_INTERVAL: Setting = Setting {
    name: "FERRY_POLL_INTERVAL",
    default: "1s",
    allowed: span(Duration::from_millis(10), HOUR),
    what: "fallback poll when no wake-up arrives",
};
pub const LEASE_MARGIN: Setting = Setting {
    name: "FERRY_LEASE_MARGIN",
    default: "30s",
    allowed: span(SECOND, DAY),
    what: "added to the longest request timeout to make the lease",
};
pub const SHUTDOWN_GRACE: Setting = Setting {
    name: "FERRY_SHUTDOWN_GRACE",
    default: "30s",
    allowed: span(Duration::ZERO, HOUR),
    what: "time in-flight deliveries get on SIGTERM before release",
};
pub const RETENTION: Setting = Setting {
    name: "FERRY_RETENTION",
    default: "21d",
    allowed: span(HOUR, Duration::from_secs(3650 * 24 * 3600)),
    what: "done rows and attempts older than this are pruned",
};
pub const DB_MAX_CONNECTIONS: Setting = Setting {
    name: "FERRY_DB_MAX_CONNECTIONS",
    default: "8",
    allowed: count(2, 1000),
    what: "database pool size per relay",
};

/// Every setting, with its default, what it accepts and why it exists. `ferry --help` and the
/// README list them.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "DATABASE_URL",
        default: "sqlite:ferry.db",
        allowed: Allowed::Text("postgres://… or sqlite:…"),
        what: "postgres://user@host:5432/db or sqlite:path.db",
    },
    Setting {
        name: "FERRY_SCHEMA",
        default: "(server default)",
        allowed: Allowed::Text("a-z, 0-9 and _, at most 63, not starting with a digit"),
        what: "PostgreSQL schema holding Ferry's tables",
    },
    Setting {
        name: "FERRY_WORKFLOWS",
        default: "./workflows",
        allowed: Allowed::Text("a directory"),
        what: "directory of workflow files (*.toml)",
    },
    Setting {
        name: "FERRY_METRICS_ADDR",
        default: "127.0.0.1:9464",
        allowed: Allowed::Text("host:port, or off"),
        what: "address of /metrics, /healthz, /readyz; 'off' disables",
    },
    Setting {
        name: "FERRY_LOG_FORMAT",
        default: "human",
        allowed: Allowed::Text("human or json"),
        what: "human or json",
    },
    Setting {
        name: "FERRY_LOG",
        default: "info",
        allowed: Allowed::Text("tracing EnvFilter directives"),
        what: "log filter (tracing EnvFilter syntax, e.g. info,ferry=debug)",
    },
    Setting {
        name: "FERRY_LOG_DIR",
        default: "logs",
        allowed: Allowed::Text("a directory, or off"),
        what: "directory of the daily-rotated log file ferry.log; 'off' disables",
    },
    CONCURRENCY,
    BATCH_SIZE,
    POLL_INTERVAL,
    Setting {
        name: "FERRY_LISTEN",
        default: "true",
        allowed: Allowed::Text("true or false"),
        what: "LISTEN/NOTIFY on PostgreSQL; false behind a transaction-mode pooler",
    },
    LEASE_MARGIN,
    SHUTDOWN_GRACE,
    RETENTION,
    Setting {
        name: "FERRY_PRUNE_SCHEDULE",
        default: "0 17 3 * * *",
        allowed: Allowed::Text(
            "a cron expression: 5 fields (min hour day month weekday) or 6 with seconds first, optionally after CRON_TZ=<zone>",
        ),
        what: "cron schedule of the prune job: 5 fields, or 6 with seconds first; UTC unless it starts with CRON_TZ=<zone>",
    },
    DB_MAX_CONNECTIONS,
    Setting {
        name: "FERRY_CONSOLE",
        default: "auto",
        allowed: Allowed::Text("auto, on or off"),
        what: "operator console at / of FERRY_METRICS_ADDR in `ferry run`; auto: only on a loopback address",
    },
    Setting {
        name: "FERRY_CONSOLE_ADDR",
        default: "127.0.0.1:9465",
        allowed: Allowed::Text("host:port"),
        what: "address `ferry console` listens on",
    },
    Setting {
        name: "FERRY_CONSOLE_TOKEN",
        default: "(none: read-only)",
        allowed: Allowed::Text("16 to 256 printable ASCII characters, no spaces"),
        what: "operator token the console's actions need (Authorization: Bearer)",
    },
    Setting {
        name: "FERRY_CONSOLE_HIDE_PAYLOAD",
        default: "false",
        allowed: Allowed::Text("true or false"),
        what: "never show payloads in the console (personal data)",
    },
];

/// Whether `ferry run` serves the console next to `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleMode {
    /// Only when the address is a loopback one (safe by default).
    Auto,
    On,
    Off,
}

/// The console's settings.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    pub mode: ConsoleMode,
    /// Where `ferry console` listens.
    pub addr: String,
    /// The operator token; `None`: read-only. Debug shows `***`.
    pub token: Option<crate::workflow::Secret>,
    pub hide_payload: bool,
}

/// `FERRY_*` variables read outside [`SETTINGS`]: the config file's name, the build's git commit
/// (`build.rs`), and the knobs of the tests and benchmarks. Setting one is never a mistake.
pub const OTHER_VARIABLES: &[&str] = &[
    "FERRY_CONFIG",
    "FERRY_GIT_COMMIT",
    "FERRY_TEST_PG_URL",
    "FERRY_TEST_CHROMIUM",
    "FERRY_TEST_CHROMEDRIVER",
    "FERRY_FAULT_SEED",
    "FERRY_SOAK",
    "FERRY_BENCH_PG_URL",
    "FERRY_BENCH_RSS_ROWS",
    "FERRY_BENCH_CHILD_WRAPPER",
];

/// A `FERRY_*` variable in the environment that no part of Ferry reads: most likely a typo of a
/// setting, which would otherwise be silently ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariable {
    pub name: String,
    /// The closest setting, when one is close enough to be what was meant.
    pub suggestion: Option<&'static str>,
}

impl fmt::Display for UnknownVariable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is set but is not a Ferry setting, so it is ignored",
            self.name
        )?;
        match self.suggestion {
            Some(s) => write!(f, "; did you mean {s}?"),
            None => write!(f, " (`ferry --help` lists the settings)"),
        }
    }
}

/// The `FERRY_*` variables of `env` that are neither a setting, nor in [`OTHER_VARIABLES`], nor
/// in `also_read` (e.g. the variables the workflow files name), sorted by name.
pub fn unknown_variables<'a>(
    env: impl IntoIterator<Item = &'a String>,
    also_read: &[String],
) -> Vec<UnknownVariable> {
    let known = |name: &str| {
        SETTINGS.iter().any(|s| s.name == name)
            || OTHER_VARIABLES.contains(&name)
            || also_read.iter().any(|v| v == name)
    };
    let mut unknown: Vec<UnknownVariable> = env
        .into_iter()
        .filter(|name| name.starts_with("FERRY_") && !known(name))
        .map(|name| UnknownVariable {
            name: name.clone(),
            suggestion: closest_setting(name),
        })
        .collect();
    unknown.sort_by(|a, b| a.name.cmp(&b.name));
    unknown
}

/// The setting whose name is nearest `name`, if it is near enough: at most a third of the
/// differing part edited (a letter missing, doubled or swapped, a word left out).
fn closest_setting(name: &str) -> Option<&'static str> {
    let candidates = SETTINGS
        .iter()
        .map(|s| s.name)
        .chain(std::iter::once("FERRY_CONFIG"));
    let tail = |s: &str| s.strip_prefix("FERRY_").unwrap_or(s).to_ascii_uppercase();
    let wanted = tail(name);
    candidates
        .map(|c| (strsim::damerau_levenshtein(&wanted, &tail(c)), c))
        .filter(|(d, c)| *d <= (tail(c).len().max(wanted.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The variables the workflow files in `dir` name (`${NAME}` or `${NAME:-default}`), so that a
/// `FERRY_…` variable read by a workflow file is not reported as unknown.
pub fn workflow_variables(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return names;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for part in text.split("${").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

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
    pub console: ConsoleSettings,
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
        if !SETTINGS.iter().any(|s| s.name == name) {
            return Err(ConfigError::File {
                path: path.into(),
                problem: format!(
                    "unknown setting '{k}' (known: {})",
                    SETTINGS
                        .iter()
                        .map(|s| s.name.to_ascii_lowercase())
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

/// `NAME: 'value' is not allowed: expected WHAT in RANGE`, for every out-of-range value.
fn out_of_range(setting: &Setting, value: &str, what: &str) -> ConfigError {
    bad(
        setting.name,
        format!(
            "'{value}' is not allowed: expected {what} in {}",
            setting.allowed
        ),
    )
}

/// A duration setting, within its [`Allowed::Duration`] range.
fn duration(src: &Sources, setting: &Setting) -> Result<Duration, ConfigError> {
    let Allowed::Duration { min, max } = setting.allowed else {
        unreachable!("{} is not a duration setting", setting.name)
    };
    let value = src.get(setting.name).unwrap_or(setting.default);
    match humantime::parse_duration(value.trim()) {
        Ok(d) if (min..=max).contains(&d) => Ok(d),
        Ok(_) => Err(out_of_range(setting, value, "a duration")),
        Err(e) => Err(bad(
            setting.name,
            format!(
                "'{value}' is not a duration like 30s or 5m ({e}); allowed: {}",
                setting.allowed
            ),
        )),
    }
}

/// A whole-number setting, within its [`Allowed::Count`] range.
fn number<T>(src: &Sources, setting: &Setting) -> Result<T, ConfigError>
where
    T: TryFrom<u64>,
{
    let Allowed::Count { min, max } = setting.allowed else {
        unreachable!("{} is not a number setting", setting.name)
    };
    let value = src.get(setting.name).unwrap_or(setting.default);
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| out_of_range(setting, value, "a whole number"))
}

/// `host:port` as a listener takes it: a host name, an IPv4 address or a bracketed IPv6 address,
/// and a port in 0..=65535 (0 asks for any free port).
fn check_listen_addr(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| "has no port (expected host:port)".to_string())?;
    if port.parse::<u16>().is_err() {
        return Err(format!("port '{port}' is not a number in 0..=65535"));
    }
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    };
    if host_ok {
        Ok(())
    } else {
        Err(format!("'{host}' is not a host name or IP address"))
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
        if let Some(schema) = &store.schema {
            if !schema_name_ok(schema) {
                return Err(bad(
                    "FERRY_SCHEMA",
                    format!(
                        "'{schema}' is not allowed: expected {}",
                        allowed_text("FERRY_SCHEMA")
                    ),
                ));
            }
        }
        store.max_connections = number(src, &DB_MAX_CONNECTIONS)?;
        let relay = RelayConfig {
            batch_size: number(src, &BATCH_SIZE)?,
            concurrency: number(src, &CONCURRENCY)?,
            lease_margin: duration(src, &LEASE_MARGIN)?,
            poll_interval: duration(src, &POLL_INTERVAL)?,
            listen: boolean(src, "FERRY_LISTEN", true)?,
            shutdown_grace: duration(src, &SHUTDOWN_GRACE)?,
            ..RelayConfig::default()
        };
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
        let (log_name, log_filter) = match (src.get("FERRY_LOG"), src.get("RUST_LOG")) {
            (Some(f), _) => ("FERRY_LOG", f),
            (None, Some(f)) => ("RUST_LOG", f),
            (None, None) => ("FERRY_LOG", "info"),
        };
        crate::ops::logging::check_filter(log_filter).map_err(|e| {
            bad(
                log_name,
                format!("'{log_filter}' is not a log filter like info,ferry=debug: {e}"),
            )
        })?;
        let metrics_addr = off_or(src.get("FERRY_METRICS_ADDR"), "127.0.0.1:9464");
        if let Some(addr) = metrics_addr {
            check_listen_addr(addr).map_err(|problem| {
                bad(
                    "FERRY_METRICS_ADDR",
                    format!(
                        "'{addr}' is not allowed: {problem}; expected {}",
                        allowed_text("FERRY_METRICS_ADDR")
                    ),
                )
            })?;
        }
        let prune_schedule = src
            .get("FERRY_PRUNE_SCHEDULE")
            .unwrap_or("0 17 3 * * *")
            .to_string();
        crate::cron::Schedule::parse(&prune_schedule)
            .map_err(|e| bad("FERRY_PRUNE_SCHEDULE", format!("'{prune_schedule}' {e}")))?;
        let console = console_settings(src)?;
        Ok(Config {
            console,
            store,
            workflows_dir: PathBuf::from(src.get("FERRY_WORKFLOWS").unwrap_or("./workflows")),
            metrics_addr: metrics_addr.map(str::to_string),
            log_json,
            log_filter: log_filter.to_string(),
            log_dir: off_or(src.get("FERRY_LOG_DIR"), "logs").map(PathBuf::from),
            relay,
            retention: duration(src, &RETENTION)?,
            prune_schedule,
        })
    }

    /// An environment lookup for workflow files: the process environment (with `.env`), then
    /// the config file.
    pub fn env_lookup(src: &Sources) -> impl Fn(&str) -> Option<String> + '_ {
        move |name| src.get(name).map(str::to_string)
    }
}

fn console_settings(src: &Sources) -> Result<ConsoleSettings, ConfigError> {
    let mode = match src
        .get("FERRY_CONSOLE")
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("auto") => ConsoleMode::Auto,
        Some("on" | "true" | "1" | "yes") => ConsoleMode::On,
        Some("off" | "false" | "0" | "no") => ConsoleMode::Off,
        Some(v) => {
            return Err(bad(
                "FERRY_CONSOLE",
                format!("'{v}' is not allowed: expected auto, on or off"),
            ))
        }
    };
    let addr = src
        .get("FERRY_CONSOLE_ADDR")
        .map(str::trim)
        .unwrap_or("127.0.0.1:9465")
        .to_string();
    check_listen_addr(&addr).map_err(|problem| {
        bad(
            "FERRY_CONSOLE_ADDR",
            format!("'{addr}' is not allowed: {problem}; expected host:port"),
        )
    })?;
    let token = match src.get("FERRY_CONSOLE_TOKEN") {
        None => None,
        Some(t) => {
            let t = t.trim();
            let printable = t.chars().all(|c| c.is_ascii_graphic());
            let n = t.chars().count();
            if !printable || !(16..=256).contains(&n) {
                // The value is a secret: say what is wrong with it, never what it is.
                return Err(bad(
                    "FERRY_CONSOLE_TOKEN",
                    format!(
                        "the token is not allowed ({}): expected {}",
                        if printable {
                            format!("{n} characters")
                        } else {
                            "it has spaces or characters that are not printable ASCII".into()
                        },
                        allowed_text("FERRY_CONSOLE_TOKEN")
                    ),
                ));
            }
            Some(crate::workflow::Secret::new(t))
        }
    };
    Ok(ConsoleSettings {
        mode,
        addr,
        token,
        hide_payload: boolean(src, "FERRY_CONSOLE_HIDE_PAYLOAD", false)?,
    })
}

/// The rule `Store::open` applies to a PostgreSQL schema name, checked up front.
fn schema_name_ok(schema: &str) -> bool {
    schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit())
}

fn allowed_text(name: &str) -> String {
    SETTINGS
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.allowed.to_string())
        .unwrap_or_default()
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

    fn error(pairs: &[(&str, &str)]) -> String {
        Config::from_sources(&src(pairs)).unwrap_err().to_string()
    }

    /// Every bounded setting: its two bounds are accepted, one step outside each is refused
    /// with the name, the value and the allowed range, and so are absurd values.
    #[test]
    fn numbers_and_durations_are_range_checked() {
        type Get = fn(&Config) -> u128;
        let cases: &[(&str, &str, &str, &str, &str, Get)] = &[
            // (name, lowest, highest, below, above, read back)
            ("FERRY_CONCURRENCY", "1", "10000", "0", "10001", |c| {
                c.relay.concurrency as u128
            }),
            ("FERRY_BATCH_SIZE", "1", "10000", "0", "10001", |c| {
                c.relay.batch_size as u128
            }),
            ("FERRY_DB_MAX_CONNECTIONS", "2", "1000", "1", "1001", |c| {
                c.store.max_connections as u128
            }),
            ("FERRY_POLL_INTERVAL", "10ms", "1h", "9ms", "3601s", |c| {
                c.relay.poll_interval.as_millis()
            }),
            ("FERRY_LEASE_MARGIN", "1s", "24h", "999ms", "86401s", |c| {
                c.relay.lease_margin.as_millis()
            }),
            ("FERRY_SHUTDOWN_GRACE", "0s", "1h", "", "3601s", |c| {
                c.relay.shutdown_grace.as_millis()
            }),
            ("FERRY_RETENTION", "1h", "3650d", "59m", "3651d", |c| {
                c.retention.as_millis()
            }),
        ];
        for &(name, lowest, highest, below, above, get) in cases {
            let setting = SETTINGS.iter().find(|s| s.name == name).unwrap();
            let range = setting.allowed.to_string();
            assert_eq!(range, format!("{lowest}..={highest}"), "{name}");
            let (lo, hi) = (
                Config::from_sources(&src(&[(name, lowest)])).unwrap(),
                Config::from_sources(&src(&[(name, highest)])).unwrap(),
            );
            assert!(get(&lo) < get(&hi), "{name}");
            let mut refused = vec![
                above,
                "-1",
                "2305843009213693952",
                "99999999999999999999999",
            ];
            if !below.is_empty() {
                refused.push(below);
            }
            if matches!(setting.allowed, Allowed::Duration { .. }) {
                refused.extend(["18446744073709551615s", "600000000y"]);
            }
            for value in refused {
                let e = error(&[(name, value)]);
                assert!(e.starts_with(&format!("{name}: '{value}'")), "{e}");
                assert!(e.ends_with(&range), "{name}={value}: {e}");
            }
        }
    }

    #[test]
    fn defaults_come_from_the_table_and_are_in_range() {
        let c = Config::from_sources(&src(&[])).unwrap();
        let r = RelayConfig::default();
        assert_eq!(c.relay.concurrency, r.concurrency);
        assert_eq!(c.relay.batch_size, r.batch_size);
        assert_eq!(c.relay.poll_interval, r.poll_interval);
        assert_eq!(c.relay.lease_margin, r.lease_margin);
        assert_eq!(c.relay.shutdown_grace, r.shutdown_grace);
        assert_eq!(c.store.max_connections, 8);
        assert_eq!(c.retention, Duration::from_secs(21 * 24 * 3600));
        for s in SETTINGS {
            assert!(!s.what.is_empty() && !s.default.is_empty(), "{}", s.name);
        }
    }

    #[test]
    fn other_settings_are_checked_up_front() {
        for (k, v, needle) in [
            ("FERRY_METRICS_ADDR", "127.0.0.1:99999", "0..=65535"),
            ("FERRY_METRICS_ADDR", "127.0.0.1", "no port"),
            ("FERRY_METRICS_ADDR", ":9464", "not a host"),
            ("FERRY_METRICS_ADDR", "[::1:9464", "not a host"),
            ("FERRY_SCHEMA", "Ferry-Prod", "a-z, 0-9 and _"),
            ("FERRY_SCHEMA", "1st", "a-z, 0-9 and _"),
            ("FERRY_LOG", "ferry=loud", "log filter"),
            ("FERRY_PRUNE_SCHEDULE", "0 0 0 1 1 * 2001", "never fires"),
        ] {
            let e = error(&[(k, v)]);
            assert!(e.starts_with(&format!("{k}: ")), "{e}");
            assert!(e.contains(v) && e.contains(needle), "{e}");
        }
        let e = error(&[("RUST_LOG", "ferry=loud")]);
        assert!(e.starts_with("RUST_LOG: "), "{e}");
        for addr in [
            "127.0.0.1:0",
            "localhost:9464",
            "[::1]:9464",
            "0.0.0.0:65535",
        ] {
            let c = Config::from_sources(&src(&[("FERRY_METRICS_ADDR", addr)])).unwrap();
            assert_eq!(c.metrics_addr.as_deref(), Some(addr));
        }
        for schedule in [
            "17 3 * * *",
            "0 17 3 * * *",
            "CRON_TZ=Europe/Moscow 0 3 * * *",
            "@daily",
        ] {
            let c = Config::from_sources(&src(&[("FERRY_PRUNE_SCHEDULE", schedule)])).unwrap();
            assert_eq!(c.prune_schedule, schedule);
        }
        let e = error(&[("FERRY_PRUNE_SCHEDULE", "0 3 * * * * * *")]);
        assert!(
            e.starts_with("FERRY_PRUNE_SCHEDULE: '0 3 * * * * * *' has 8 fields"),
            "{e}"
        );
        let e = error(&[("FERRY_PRUNE_SCHEDULE", "0 25 * * *")]);
        assert!(e.contains("hour field '25'"), "{e}");
        let e = error(&[("FERRY_PRUNE_SCHEDULE", "CRON_TZ=Moscow 0 3 * * *")]);
        assert!(e.contains("unknown time zone 'Moscow'"), "{e}");
        let c = Config::from_sources(&src(&[("FERRY_SCHEMA", "ferry_t_01")])).unwrap();
        assert_eq!(c.store.schema.as_deref(), Some("ferry_t_01"));
    }

    #[test]
    fn console_settings_are_checked_and_the_token_never_shown() {
        let c = Config::from_sources(&src(&[])).unwrap();
        assert_eq!(c.console.mode, ConsoleMode::Auto);
        assert_eq!(c.console.addr, "127.0.0.1:9465");
        assert!(c.console.token.is_none() && !c.console.hide_payload);
        let c = Config::from_sources(&src(&[
            ("FERRY_CONSOLE", "off"),
            ("FERRY_CONSOLE_TOKEN", "0123456789abcdef-secret"),
            ("FERRY_CONSOLE_HIDE_PAYLOAD", "true"),
            ("FERRY_CONSOLE_ADDR", "0.0.0.0:8080"),
        ]))
        .unwrap();
        assert_eq!(c.console.mode, ConsoleMode::Off);
        assert!(c.console.hide_payload);
        assert_eq!(
            c.console.token.as_ref().map(|t| t.expose()),
            Some("0123456789abcdef-secret")
        );
        assert!(!format!("{c:?}").contains("0123456789abcdef-secret"));
        for (k, v, needle) in [
            ("FERRY_CONSOLE", "sometimes", "auto, on or off"),
            ("FERRY_CONSOLE_ADDR", "127.0.0.1", "no port"),
            ("FERRY_CONSOLE_TOKEN", "short-secret", "12 characters"),
            (
                "FERRY_CONSOLE_TOKEN",
                "with spaces in the token",
                "not printable",
            ),
            ("FERRY_CONSOLE_HIDE_PAYLOAD", "perhaps", "true or false"),
        ] {
            let e = error(&[(k, v)]);
            assert!(e.starts_with(&format!("{k}: ")), "{e}");
            assert!(e.contains(needle), "{e}");
            if k == "FERRY_CONSOLE_TOKEN" {
                assert!(!e.contains(v), "the token is shown: {e}");
            }
        }
    }

    #[test]
    fn unknown_ferry_variables_are_named_with_the_closest_setting() {
        let env: Vec<String> = [
            "FERRY_CONCURENCY",
            "FERRY_METRICS_ADR",
            "FERRY_WORKFLOW",
            "FERRY_POLLINTERVAL",
            "FERRY_SHUTDOWN_GRACE_PERIOD",
            "FERRY_CONFG",
            "FERRY_FROBNICATE",
            "FERRY_PARTNER_URL",
            "FERRY_CONCURRENCY",
            "FERRY_TEST_PG_URL",
            "FERRY_FAULT_SEED",
            "FERRY_SOAK",
            "FERRY_CONFIG",
            "DATABASE_URL",
            "PATH",
            "ONEC_BASE_URL",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let unknown = unknown_variables(&env, &["FERRY_PARTNER_URL".to_string()]);
        let got: Vec<(&str, Option<&str>)> = unknown
            .iter()
            .map(|u| (u.name.as_str(), u.suggestion))
            .collect();
        assert_eq!(
            got,
            [
                ("FERRY_CONCURENCY", Some("FERRY_CONCURRENCY")),
                ("FERRY_CONFG", Some("FERRY_CONFIG")),
                ("FERRY_FROBNICATE", None),
                ("FERRY_METRICS_ADR", Some("FERRY_METRICS_ADDR")),
                ("FERRY_POLLINTERVAL", Some("FERRY_POLL_INTERVAL")),
                ("FERRY_SHUTDOWN_GRACE_PERIOD", Some("FERRY_SHUTDOWN_GRACE")),
                ("FERRY_WORKFLOW", Some("FERRY_WORKFLOWS")),
            ]
        );
        assert_eq!(
            unknown[0].to_string(),
            "FERRY_CONCURENCY is set but is not a Ferry setting, so it is ignored; did you mean FERRY_CONCURRENCY?"
        );
        assert!(unknown[2].to_string().contains("ferry --help"));
    }

    #[test]
    fn workflow_files_name_their_variables() {
        let dir = std::env::temp_dir().join(format!("ferry-wfvars-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("a.toml"),
            "base_url = \"${FERRY_PARTNER_URL}\"\npath = \"${X_PATH:-/x}\"\n",
        )
        .unwrap();
        std::fs::write(dir.join("notes.txt"), "${FERRY_NOT_READ}").unwrap();
        let mut vars = workflow_variables(&dir);
        vars.sort();
        assert_eq!(vars, ["FERRY_PARTNER_URL", "X_PATH"]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(workflow_variables(&dir).is_empty());
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
