//! `tracing` set-up: human or JSON logs to stderr and, optionally, to a
//! daily-rotating file in the same format.
//!
//! Both outputs go through `tracing_appender::non_blocking`, so a slow
//! terminal or disk is absorbed by a writer thread instead of stalling tokio
//! workers in the middle of a delivery. The returned [`LogGuard`] owns those
//! writer threads; keep it alive for the life of the process so buffered
//! lines are flushed on exit.
//!
//! Structured fields (`outbox.id`, `workflow`, `attempt`, `status`,
//! `duration_ms`, ...) come out as `key=value` in human mode and as
//! top-level JSON keys in JSON mode (event fields are flattened; fields of
//! the enclosing spans are under `span` / `spans`), so log pipelines can
//! filter on them without parsing the message.

use std::fmt;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tracing::Subscriber;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::layer::{Layered, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use super::OpsError;

/// Rotated log files kept on disk (two weeks of daily files).
pub const MAX_LOG_FILES: usize = 14;

/// Output format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Plain text, `key=value` fields; coloured only on an interactive stderr.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = OpsError;

    /// Accepts "human", "text" or "json", case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "human" | "text" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            _ => Err(OpsError::LogFormat(s.to_owned())),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        })
    }
}

/// Where and how to log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `EnvFilter` directives, e.g. "info" or "info,ferry::relay=debug".
    pub filter: String,
    /// Directory for the rotating log file; `None` disables file logging.
    pub dir: Option<PathBuf>,
    /// Base name of the log file; rotation appends the date
    /// (`ferry.log.2025-01-31`).
    pub file_name: String,
    /// Also log to stderr.
    pub stderr: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            filter: "info".to_owned(),
            dir: Some(PathBuf::from("logs")),
            file_name: "ferry.log".to_owned(),
            stderr: true,
        }
    }
}

/// Keeps the background log writers alive; dropping it flushes what is
/// buffered and stops them. Hold it until the end of `main`.
#[must_use = "dropping the guard stops log writing; keep it until the process exits"]
pub struct LogGuard {
    _guards: Vec<WorkerGuard>,
}

impl fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogGuard")
            .field("writers", &self._guards.len())
            .finish()
    }
}

/// Install the global subscriber: to stderr (human or JSON) AND, if dir is
/// set, to a daily-rotating file dir/file_name in the same format, keeping
/// the last [`MAX_LOG_FILES`] files. Creates the directory; if it cannot,
/// returns an error naming the directory. Returns a guard the caller keeps
/// alive to flush on exit. A second call returns
/// [`OpsError::LogAlreadyInitialised`] instead of panicking.
pub fn init(config: &LogConfig) -> Result<LogGuard, OpsError> {
    // Checked up front so a second call does not create files or writer
    // threads before failing; `try_init` below still guards the race.
    if tracing::dispatcher::has_been_set() {
        return Err(OpsError::LogAlreadyInitialised(
            "a global tracing subscriber is already set".to_owned(),
        ));
    }
    let (subscriber, guard) = subscriber(config)?;
    subscriber
        .try_init()
        .map_err(|e| OpsError::LogAlreadyInitialised(e.to_string()))?;
    Ok(guard)
}

/// Builds the subscriber [`init`] would install, without installing it.
///
/// Useful with `tracing::subscriber::with_default` (tests, tools embedding
/// Ferry that manage their own global subscriber).
pub fn subscriber(
    config: &LogConfig,
) -> Result<(Box<dyn Subscriber + Send + Sync + 'static>, LogGuard), OpsError> {
    let filter = parse_filter(&config.filter)?;
    let mut layers: Vec<BoxedLayer> = Vec::new();
    let mut guards = Vec::new();

    if let Some(dir) = &config.dir {
        let appender = open_file(dir, &config.file_name)?;
        let (writer, guard) = writer(appender);
        // Never colour a file: escape codes make logs unreadable in less/grep
        // and break line-oriented shippers.
        layers.push(file_layer(config.format, writer));
        guards.push(guard);
    }
    if config.stderr {
        let (writer, guard) = writer(std::io::stderr());
        layers.push(fmt_layer(config.format, writer, stderr_wants_colour()));
        guards.push(guard);
    }

    let subscriber = tracing_subscriber::registry().with(filter).with(layers);
    Ok((Box::new(subscriber), LogGuard { _guards: guards }))
}

type BoxedLayer = Box<dyn Layer<Layered<EnvFilter, Registry>> + Send + Sync + 'static>;

fn parse_filter(filter: &str) -> Result<EnvFilter, OpsError> {
    // An empty filter would silently mean "errors only"; treat it as unset.
    let directives = if filter.trim().is_empty() {
        "info"
    } else {
        filter
    };
    EnvFilter::try_new(directives).map_err(|e| OpsError::LogFilter {
        filter: filter.to_owned(),
        reason: e.to_string(),
    })
}

fn open_file(dir: &Path, file_name: &str) -> Result<RollingFileAppender, OpsError> {
    let dir_error = |reason: String| OpsError::LogDir {
        dir: dir.to_owned(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| dir_error(e.to_string()))?;
    RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(file_name)
        .max_log_files(MAX_LOG_FILES)
        .build(dir)
        .map_err(|e| dir_error(e.to_string()))
}

fn writer<W: std::io::Write + Send + 'static>(inner: W) -> (NonBlocking, WorkerGuard) {
    // Not lossy: under a burst we would rather slow down briefly than silently drop lines.
    // Bounded: the default queue holds 128k lines, tens of MiB when the sink is slow, which
    // breaks the relay's memory budget; 4k lines (about 1 MiB) absorb any short burst.
    NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(4096)
        .finish(inner)
}

fn stderr_wants_colour() -> bool {
    // https://no-color.org: any non-empty NO_COLOR disables colour.
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

fn fmt_layer(format: LogFormat, writer: NonBlocking, ansi: bool) -> BoxedLayer {
    match format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => json_layer(writer),
    }
}

fn file_layer(format: LogFormat, writer: NonBlocking) -> BoxedLayer {
    match format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .fmt_fields(PlainFields::default())
            .with_ansi(false)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => json_layer(writer),
    }
}

fn json_layer(writer: NonBlocking) -> BoxedLayer {
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(writer)
        .boxed()
}

/// `DefaultFields` under a different type, for the human file layer.
///
/// fmt layers cache a span's formatted fields in the span's extensions keyed
/// by the field formatter *type*, and the first layer to see the span wins.
/// If the file and a coloured stderr layer shared `DefaultFields`, span fields
/// formatted with ANSI styling for the terminal could end up in the file.
/// A distinct type gives the file its own uncoloured copy.
#[derive(Debug, Default)]
struct PlainFields(tracing_subscriber::fmt::format::DefaultFields);

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for PlainFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        self.0.format_fields(writer, fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop. Hand
    /// rolled because `tempfile` is not among Ferry's dependencies.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("ferry-ops-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn config(format: LogFormat, dir: &Path) -> LogConfig {
        LogConfig {
            format,
            filter: "info".to_owned(),
            dir: Some(dir.to_owned()),
            file_name: "ferry.log".to_owned(),
            stderr: false,
        }
    }

    /// Logs one span + event through a local subscriber, drops the guard to
    /// flush, and returns the contents of the single log file written.
    fn log_sample(format: LogFormat, dir: &Path) -> String {
        let (subscriber, guard) = subscriber(&config(format, dir)).expect("subscriber");
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("deliver", outbox.id = 42, workflow = "orders");
            let _entered = span.enter();
            tracing::info!(
                key = "ord-7",
                code = "E503",
                attempt = 3,
                status = 503,
                duration_ms = 120,
                "attempt failed"
            );
            tracing::debug!("filtered out at info");
        });
        drop(guard);
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("log dir exists")
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("ferry.log"), "{name}");
        std::fs::read_to_string(&files[0]).unwrap()
    }

    #[test]
    fn format_parsing() {
        assert_eq!("human".parse::<LogFormat>().unwrap(), LogFormat::Human);
        assert_eq!("TEXT".parse::<LogFormat>().unwrap(), LogFormat::Human);
        assert_eq!("Json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        let err = "yaml".parse::<LogFormat>().unwrap_err();
        assert!(err.to_string().contains("\"yaml\""), "{err}");
        let err = "".parse::<LogFormat>().unwrap_err();
        assert!(err.to_string().contains("\"\""), "{err}");
        assert_eq!(LogFormat::Json.to_string(), "json");
    }

    #[test]
    fn defaults() {
        let c = LogConfig::default();
        assert_eq!(c.format, LogFormat::Human);
        assert_eq!(c.filter, "info");
        assert_eq!(c.dir.as_deref(), Some(Path::new("logs")));
        assert_eq!(c.file_name, "ferry.log");
        assert!(c.stderr);
    }

    #[test]
    fn json_file_has_flattened_fields() {
        let tmp = TempDir::new("json");
        let dir = tmp.0.join("nested/logs");
        let text = log_sample(LogFormat::Json, &dir);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "debug event must be filtered: {text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON line");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "attempt failed");
        // Event fields are top-level keys.
        assert_eq!(v["attempt"], 3);
        assert_eq!(v["status"], 503);
        assert_eq!(v["duration_ms"], 120);
        assert_eq!(v["key"], "ord-7");
        assert_eq!(v["code"], "E503");
        // Span fields travel with the event.
        assert_eq!(v["span"]["outbox.id"], 42);
        assert_eq!(v["span"]["workflow"], "orders");
        assert_eq!(v["spans"][0]["name"], "deliver");
    }

    #[test]
    fn human_file_has_key_values_and_no_ansi() {
        let tmp = TempDir::new("human");
        let text = log_sample(LogFormat::Human, &tmp.0);
        assert!(!text.contains('\u{1b}'), "ANSI escape in file: {text:?}");
        for needle in [
            "INFO",
            "attempt failed",
            "outbox.id=42",
            "workflow=\"orders\"",
            "attempt=3",
            "status=503",
            "duration_ms=120",
        ] {
            assert!(text.contains(needle), "missing {needle} in {text:?}");
        }
        assert!(!text.contains("filtered out"));
    }

    #[test]
    fn coloured_stderr_does_not_leak_ansi_into_file() {
        // Same layer wiring as `subscriber`, but with the terminal layer
        // forced to colour and placed first so it formats span fields before
        // the file layer does: the case a shared field cache would get wrong.
        let tmp = TempDir::new("ansi");
        let appender = open_file(&tmp.0, "ferry.log").unwrap();
        let (file_writer, file_guard) = writer(appender);
        let (tty_writer, tty_guard) = writer(std::io::sink());
        let layers: Vec<BoxedLayer> = vec![
            fmt_layer(LogFormat::Human, tty_writer, true),
            file_layer(LogFormat::Human, file_writer),
        ];
        let subscriber = tracing_subscriber::registry()
            .with(parse_filter("info").unwrap())
            .with(layers);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("deliver", outbox.id = 42);
            let _entered = span.enter();
            tracing::info!(attempt = 1, "sent");
        });
        drop((file_guard, tty_guard));
        let path = std::fs::read_dir(&tmp.0)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains("outbox.id=42"), "{text:?}");
        assert!(!text.contains('\u{1b}'), "ANSI escape in file: {text:?}");
    }

    #[test]
    fn uncreatable_directory_is_named() {
        let tmp = TempDir::new("blocked");
        std::fs::create_dir_all(&tmp.0).unwrap();
        let blocker = tmp.0.join("not-a-dir");
        std::fs::write(&blocker, b"file in the way").unwrap();
        let dir = blocker.join("logs");
        let err = subscriber(&config(LogFormat::Json, &dir))
            .err()
            .expect("cannot create a directory under a file");
        let msg = err.to_string();
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
        assert!(matches!(err, OpsError::LogDir { .. }));
    }

    #[test]
    fn bad_filter_is_reported() {
        let mut c = config(LogFormat::Human, Path::new("unused"));
        c.dir = None;
        c.filter = "ferry=loud".to_owned();
        let err = subscriber(&c).err().expect("invalid directive");
        assert!(err.to_string().contains("ferry=loud"), "{err}");
    }

    #[test]
    fn no_outputs_is_allowed() {
        let mut c = config(LogFormat::Human, Path::new("unused"));
        c.dir = None;
        c.stderr = false;
        let (_subscriber, guard) = subscriber(&c).expect("empty subscriber");
        assert!(format!("{guard:?}").contains("writers: 0"));
    }
}
