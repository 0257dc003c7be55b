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

use tracing::field::{Field, Visit};
use tracing::Subscriber;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;
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
    // Dropped first: the last spans are exported while the log writers still run.
    _otel: Option<super::otel::OtelGuard>,
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
    let mut filter = parse_filter(&config.filter)?;
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

    // With OTEL_EXPORTER_OTLP_ENDPOINT set, the OpenTelemetry layer takes the attempt spans
    // whatever the log level: the filter lets them through (they are spans, not log lines).
    let otel = super::otel::layer()?.map(|(layer, guard)| {
        layers.push(layer);
        guard
    });
    if otel.is_some() {
        filter = filter.add_directive(super::otel::attempt_directive());
    }
    let subscriber = tracing_subscriber::registry().with(filter).with(layers);
    Ok((
        Box::new(subscriber),
        LogGuard {
            _otel: otel,
            _guards: guards,
        },
    ))
}

pub(crate) type BoxedLayer = Box<dyn Layer<Layered<EnvFilter, Registry>> + Send + Sync + 'static>;

/// Whether `filter` is valid `EnvFilter` syntax; the reason when it is not. For configuration,
/// so a bad filter is refused by name before anything starts.
pub fn check_filter(filter: &str) -> Result<(), String> {
    parse_filter(filter).map(drop).map_err(|e| match e {
        OpsError::LogFilter { reason, .. } => reason,
        other => other.to_string(),
    })
}

fn parse_filter(filter: &str) -> Result<EnvFilter, OpsError> {
    // An empty filter would silently mean "errors only"; treat it as unset.
    let directives = if filter.trim().is_empty() {
        "info"
    } else {
        filter
    };
    EnvFilter::try_new(with_quiet_sqlx(directives)).map_err(|e| OpsError::LogFilter {
        filter: filter.to_owned(),
        reason: e.to_string(),
    })
}

/// sqlx logs the server's NOTICEs (`relation … already exists, skipping` on every start-up
/// migration) at INFO and its own chatter below WARN: at Ferry's `info` they would drown the
/// start-up lines. Unless the filter names `sqlx` itself or asks for `debug`/`trace` everywhere,
/// `sqlx=warn` is added, so they show up only when debugging (`FERRY_LOG=debug` or
/// `info,sqlx=info`). Slow statements and errors (WARN and above) are always logged.
fn with_quiet_sqlx(directives: &str) -> String {
    let parts: Vec<&str> = directives.split(',').map(str::trim).collect();
    let names_sqlx = parts.iter().any(|d| d.starts_with("sqlx"));
    let verbose_default = parts.iter().any(|d| {
        let level = d.strip_prefix('=').unwrap_or(d);
        level.eq_ignore_ascii_case("debug") || level.eq_ignore_ascii_case("trace")
    });
    if names_sqlx || verbose_default {
        directives.to_owned()
    } else {
        format!("{directives},sqlx=warn")
    }
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
            .fmt_fields(HumanFields)
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => json_layer(writer),
    }
}

fn file_layer(format: LogFormat, writer: NonBlocking) -> BoxedLayer {
    match format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .fmt_fields(PlainFields)
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

/// Human-format field formatter that escapes control characters.
///
/// A logged value can come from outside: a row's key or payload, a target's error body. Written
/// raw, `"K\n2026-12-01T00:00:00Z INFO ferry: delivered fake"` makes a forged line in the log,
/// and an ESC sequence can rewrite the operator's terminal. Every field value and the message
/// go through [`Escaped`], so one event is always one line: `\n`, `\r`, `\t` become those two
/// characters, other C0 controls, DEL and C1 controls become `\xNN` / `\u{NN}`, and U+2028,
/// U+2029 (line and paragraph separators) and the bidirectional overrides become `\u{…}`.
/// Everything else, Cyrillic and Vietnamese included, is written as is. Field names are static
/// (they come from the code), so they are not escaped.
///
/// Otherwise this writes what `DefaultFields` writes: the message first as is, then
/// `name=value` with string values quoted (`workflow="orders"`) and `%`-recorded values bare
/// (`key=K-1`); names italic and `=` dimmed when the writer is coloured.
///
/// The JSON format needs none of this: serde_json escapes every control character below U+0020
/// in strings, so a JSON event is one line too.
#[derive(Debug, Default)]
struct HumanFields;

/// [`HumanFields`] under a different type, for the file layer.
///
/// fmt layers cache a span's formatted fields in the span's extensions keyed
/// by the field formatter *type*, and the first layer to see the span wins.
/// If the file and a coloured stderr layer shared one type, span fields
/// formatted with ANSI styling for the terminal could end up in the file.
/// A distinct type gives the file its own uncoloured copy.
#[derive(Debug, Default)]
struct PlainFields;

impl<'writer> FormatFields<'writer> for HumanFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        EscapingVisitor::format(writer, fields)
    }
}

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        EscapingVisitor::format(writer, fields)
    }
}

struct EscapingVisitor<'a> {
    writer: Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl<'a> EscapingVisitor<'a> {
    fn format<R: RecordFields>(writer: Writer<'a>, fields: R) -> fmt::Result {
        let mut v = EscapingVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }

    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        // `log` records bridged into tracing carry their metadata as `log.*` fields, which the
        // event formatter has already shown.
        if name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let sep = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        self.result = if name == "message" {
            write!(self.writer, "{sep}")
                .and_then(|()| fmt::Write::write_fmt(&mut Escaped(&mut self.writer), value))
        } else if self.writer.has_ansi_escapes() {
            write!(self.writer, "{sep}\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m")
                .and_then(|()| fmt::Write::write_fmt(&mut Escaped(&mut self.writer), value))
        } else {
            write!(self.writer, "{sep}{name}=")
                .and_then(|()| fmt::Write::write_fmt(&mut Escaped(&mut self.writer), value))
        };
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, format_args!("{value}"));
        } else {
            self.write(field, format_args!("{value:?}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The error and its causes, as anyhow's `{:#}` shows them.
        let mut text = value.to_string();
        let mut next = value.source();
        while let Some(cause) = next {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            next = cause.source();
        }
        self.write(field, format_args!("{text}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

/// A `fmt::Write` that escapes what could break a log line or a terminal (see [`HumanFields`]).
struct Escaped<'w, W: fmt::Write>(&'w mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut clean = 0;
        for (i, c) in s.char_indices() {
            if !needs_escape(c) {
                continue;
            }
            self.0.write_str(&s[clean..i])?;
            clean = i + c.len_utf8();
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c if (c as u32) < 0x80 => write!(self.0, "\\x{:02x}", c as u32)?,
                c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
        }
        self.0.write_str(&s[clean..])
    }
}

/// C0 controls, DEL, C1 controls, the line and paragraph separators, and the bidirectional
/// embedding, override and isolate controls (they reorder what follows them on screen).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;
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

    const FORGED: &str = "2026-12-01T00:00:00Z INFO ferry: delivered fake";

    /// Logs hostile values every way the code records fields (`%`, `?`, a plain string, an
    /// error, the message and a span field) and returns the file's text.
    fn log_hostile(format: LogFormat, dir: &Path) -> String {
        let key = format!("K\n{FORGED}");
        let (subscriber, guard) = subscriber(&config(format, dir)).expect("subscriber");
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("deliver", key = %key);
            let _entered = span.enter();
            let error = std::io::Error::other(format!("bad\r\n{FORGED}"));
            tracing::info!(
                key = %key,
                debug = ?key,
                plain = key.as_str(),
                error = &error as &(dyn std::error::Error + 'static),
                other = "tab\there esc\u{1b}[31m nel\u{85} ls\u{2028} ps\u{2029} rlo\u{202e} bell\u{7} del\u{7f} ok: Пароль mật-khẩu",
                "delivered {key}"
            );
        });
        drop(guard);
        let path = std::fs::read_dir(dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn human_lines_cannot_be_forged_by_logged_values() {
        let tmp = TempDir::new("forged");
        let text = log_hostile(LogFormat::Human, &tmp.0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "one event, one line: {text:?}");
        let line = lines[0];
        assert!(!line.starts_with(FORGED), "{text:?}");
        let escaped = format!(r"K\n{FORGED}");
        assert!(
            line.contains(&format!("delivered {escaped}")),
            "message: {line}"
        );
        assert!(line.contains(&format!("key={escaped}")), "%-field: {line}");
        assert!(
            line.contains(&format!("debug=\"{escaped}\"")),
            "?-field: {line}"
        );
        assert!(
            line.contains(&format!("plain=\"{escaped}\"")),
            "str field: {line}"
        );
        assert!(
            line.contains(&format!(r"error=bad\r\n{FORGED}")),
            "error: {line}"
        );
        assert!(
            line.contains(&format!("deliver{{key={escaped}}}")),
            "span: {line}"
        );
        for needle in [
            r"tab\there",
            r"esc\u{1b}[31m",
            r"nel\u{85}",
            r"ls\u{2028}",
            r"ps\u{2029}",
            r"rlo\u{202e}",
            r"bell\u{7}",
            r"del\u{7f}",
            "ok: Пароль mật-khẩu",
        ] {
            assert!(line.contains(needle), "missing {needle} in {line}");
        }
        assert!(
            !line.contains(['\r', '\u{1b}', '\u{85}', '\u{2028}', '\u{2029}', '\u{202e}']),
            "{line:?}"
        );
    }

    #[test]
    fn escaping_leaves_ordinary_text_alone_and_marks_controls() {
        let escape = |s: &str| {
            let mut out = String::new();
            Escaped(&mut out).write_str(s).unwrap();
            out
        };
        assert_eq!(
            escape("Иван Иванов, mật-khẩu 42 \\n"),
            "Иван Иванов, mật-khẩu 42 \\n"
        );
        assert_eq!(escape("a\nb\rc\td"), r"a\nb\rc\td");
        assert_eq!(escape("\u{0}\u{1b}\u{7f}"), r"\x00\x1b\x7f");
        assert_eq!(
            escape("\u{9b}2J\u{2028}\u{2066}"),
            r"\u{9b}2J\u{2028}\u{2066}"
        );
    }

    #[test]
    fn json_lines_cannot_be_forged_by_logged_values() {
        let tmp = TempDir::new("forged-json");
        let text = log_hostile(LogFormat::Json, &tmp.0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "one event, one line: {text:?}");
        assert!(!lines[0].contains(['\r', '\u{1b}', '\u{7}']), "{text:?}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON line");
        let key = format!("K\n{FORGED}");
        assert_eq!(v["key"], key.as_str());
        assert_eq!(v["plain"], key.as_str());
        assert_eq!(v["message"], format!("delivered {key}"));
        assert_eq!(v["span"]["key"], key.as_str());
    }

    #[test]
    fn sqlx_chatter_is_quiet_unless_asked_for() {
        assert_eq!(with_quiet_sqlx("info"), "info,sqlx=warn");
        assert_eq!(
            with_quiet_sqlx("warn,ferry=debug"),
            "warn,ferry=debug,sqlx=warn"
        );
        assert_eq!(with_quiet_sqlx("debug"), "debug");
        assert_eq!(with_quiet_sqlx("ferry=info,TRACE"), "ferry=info,TRACE");
        assert_eq!(with_quiet_sqlx("info,sqlx=info"), "info,sqlx=info");
        assert!(check_filter("info,ferry::relay=debug").is_ok());
        assert!(check_filter("ferry=loud").is_err());

        // A NOTICE as sqlx logs it: hidden at info, shown at debug.
        let notice = |filter: &str| {
            let tmp = TempDir::new("notice");
            let mut c = config(LogFormat::Human, &tmp.0);
            c.filter = filter.to_owned();
            let (subscriber, guard) = subscriber(&c).unwrap();
            tracing::subscriber::with_default(subscriber, || {
                tracing::info!(target: "sqlx::postgres::notice", message = "relation \"ferry_outbox\" already exists, skipping");
                tracing::info!("ferry line");
            });
            drop(guard);
            let path = std::fs::read_dir(&tmp.0)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path();
            std::fs::read_to_string(path).unwrap()
        };
        let text = notice("info");
        assert!(
            text.contains("ferry line") && !text.contains("already exists"),
            "{text}"
        );
        assert!(notice("debug").contains("already exists"));
        assert!(notice("info,sqlx=info").contains("already exists"));
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
