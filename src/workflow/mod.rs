//! Declarative workflows: one `workflows/*.toml` file per export.
//!
//! A workflow says what document is sent (`document`), where (`[target]`,
//! `[request]`), how hard to try (`[retry]`) and what to record when it
//! succeeded (`[on_done]`). Files are loaded once at startup by
//! [`Registry::load_dir`] and turned into validated types that cannot hold
//! an invalid value, so the delivery engine never re-checks them: the method
//! is a [`reqwest::Method`], the extra headers a [`reqwest::header::HeaderMap`],
//! the request URL a [`reqwest::Url`] parsed once, and building the
//! deliverer from a [`Registry`] cannot fail on anything a file says.
//!
//! The file is read one way. The serde structs of `raw.rs` are the only
//! definition of its fields (names, which are required, their types);
//! everything else reads them:
//!
//! 1. parse the TOML (syntax errors carry toml's line and column);
//! 2. expand `${VAR}` / `${VAR:-default}` in every string value through a
//!    caller-supplied lookup (`env.rs`);
//! 3. deserialize into the raw structs (`raw::read`), naming *every*
//!    unknown, missing or mistyped field with its path, not only serde's
//!    first;
//! 4. validate the raw values into [`Workflow`] (`validate.rs`) and then
//!    check the workflows against each other (duplicate names, targets that
//!    are declared differently in two files).
//!
//! Each stage collects all its problems, so an operator fixes a broken
//! deployment in one pass instead of one restart per typo. [`peek`] (what
//! commands that only enqueue need) deserializes the same structs, without
//! expanding variables, so it works on a host where they are unset.
//!
//! Secrets (passwords, tokens) are held in [`Secret`], whose `Debug` and
//! `Display` print `***`, and are never echoed in error messages; header
//! values are marked sensitive for the same reason.

mod env;
mod raw;
mod retry;
mod sql;
mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod unconfigured_tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::HeaderMap;

use crate::documents::{document_code, DocumentKind};

pub use env::EnvLookup;
pub use retry::{Backoff, RetryPolicy};
pub use sql::{bind_params, ParamStyle, ON_DONE_PARAMS, RECONCILE_PARAMS, SOURCE_PARAMS};

/// A credential. Printing it, by `Debug` or `Display`, shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The clear text, for building the request and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How requests to a target authenticate. `Debug` is derived but safe:
/// every credential that matters is a [`Secret`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Basic { username: String, password: Secret },
    Bearer { token: Secret },
}

/// When a target's circuit breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitPolicy {
    /// Consecutive failures that open the circuit.
    pub failures: u32,
    /// How long it stays open the first time.
    pub open_for: Duration,
    /// Upper bound when repeated failures lengthen the open period.
    pub max_open_for: Duration,
}

impl Default for CircuitPolicy {
    fn default() -> CircuitPolicy {
        CircuitPolicy {
            failures: 5,
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(5 * 60),
        }
    }
}

/// A remote system. Workflows naming the same target share its concurrency
/// cap and circuit breaker, so they must declare it identically.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    /// `http://` or `https://`, no trailing slash, no credentials.
    pub base_url: String,
    pub auth: Auth,
    pub max_concurrency: usize,
    pub tls_verify: bool,
    pub circuit: CircuitPolicy,
    /// Its `rate_limit`, shared by every relay on the database; `None`: unlimited.
    pub rate_limit: Option<crate::outbox::RateLimit>,
}

/// SQL used to build a document from business tables (`ferry export-invoice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSql {
    pub order_sql: String,
    pub items_sql: String,
}

/// What commands that only enqueue need of a workflow: its name, document kind and `[source]`
/// SQL, read from the file without resolving environment variables (an operator's machine need
/// not have the targets' URLs and passwords to enqueue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowSummary {
    pub name: String,
    pub file: PathBuf,
    pub document: DocumentKind,
    pub source: Option<SourceSql>,
    /// The payload field holding the document code (`identify_by`), if the file names one.
    pub identify_by: Option<String>,
    /// The target's name (`[target] name`), as written.
    pub target: Option<String>,
}

impl From<&Workflow> for WorkflowSummary {
    fn from(w: &Workflow) -> Self {
        WorkflowSummary {
            name: w.name.clone(),
            file: w.file.clone(),
            document: w.document,
            source: w.source.clone(),
            identify_by: w.identify_by.clone(),
            target: Some(w.target.name.clone()),
        }
    }
}

/// The JSON Schema (draft-07) of workflow files, as pretty JSON ending in a newline: generated
/// from the serde structs the parser reads files into (`raw.rs`), their doc comments becoming
/// descriptions. `workflows/ferry-workflow.schema.json` is this text, committed for editors
/// (regenerate it with `cargo run -- workflows schema > workflows/ferry-workflow.schema.json`).
pub fn schema_json() -> String {
    let mut schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<raw::RawWorkflow>();
    schema.insert("title".into(), "Ferry workflow file".into());
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema is JSON");
    text.push('\n');
    text
}

/// Read the summary of workflow `name` from `dir/name.toml`. Use `ferry workflows check` (a
/// full [`Registry::load_dir`]) to validate the whole file.
///
/// # Errors
/// An unknown workflow (naming the ones that exist), an unreadable file, or a missing or unknown
/// `document`.
pub fn peek(dir: &Path, name: &str) -> Result<WorkflowSummary, WorkflowError> {
    let file = dir.join(format!("{name}.toml"));
    let err = |field: Option<&str>, problem: String| WorkflowError {
        file: file.clone(),
        field: field.map(str::to_string),
        problem,
    };
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid || !file.is_file() {
        let mut known: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        known.sort();
        return Err(err(
            None,
            format!("unknown workflow '{name}' (known: {})", known.join(", ")),
        ));
    }
    let text =
        std::fs::read_to_string(&file).map_err(|e| err(None, format!("cannot read: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| err(None, format!("TOML syntax error: {}", e.message())))?;
    // The same structs as a full load, with `${VAR}` left as written: nothing read here needs
    // the targets' URLs and passwords.
    let raw = raw::read(table).map_err(|problems| {
        let (field, problem) = problems.into_iter().next().unwrap_or_default();
        err((!field.is_empty()).then_some(field.as_str()), problem)
    })?;
    let document = DocumentKind::parse(&raw.document).ok_or_else(|| {
        err(
            Some("document"),
            format!("unknown document kind '{}'", raw.document),
        )
    })?;
    Ok(WorkflowSummary {
        name: name.to_string(),
        file,
        document,
        source: raw.source.map(|s| SourceSql {
            order_sql: s.order_sql,
            items_sql: s.items_sql,
        }),
        identify_by: raw.identify_by,
        target: Some(raw.target.name),
    })
}

/// [`peek`] at every `*.toml` file of `dir`, sorted by name; files that cannot be read as a
/// summary are left out (`ferry workflows check` names their problems).
pub fn peek_all(dir: &Path) -> Vec<WorkflowSummary> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .filter_map(|name| peek(dir, name).ok())
        .collect()
}

/// A periodic sweep that finds documents that should have been exported.
#[derive(Debug, Clone)]
pub struct Reconcile {
    pub schedule: crate::cron::Schedule,
    /// The expression as written, for logs.
    pub schedule_text: String,
    pub sql: String,
}

/// One validated export.
#[derive(Clone)]
pub struct Workflow {
    pub name: String,
    pub description: String,
    /// The file it was loaded from, for messages.
    pub file: PathBuf,
    pub document: DocumentKind,
    /// Payload field shown in logs as the document code.
    pub identify_by: Option<String>,
    pub target: Target,
    /// `POST`, `PUT` or `PATCH`.
    pub method: reqwest::Method,
    /// Starts with `/`; appended to the target's base URL.
    pub path: String,
    /// The full request URL (`target.base_url` + `path`), parsed once.
    pub endpoint: reqwest::Url,
    pub timeout: Duration,
    /// Extra request headers; values marked sensitive.
    pub headers: HeaderMap,
    pub retry: RetryPolicy,
    pub on_done_sql: Option<String>,
    pub source: Option<SourceSql>,
    pub reconcile: Option<Reconcile>,
}

impl Workflow {
    /// The full request URL.
    pub fn url(&self) -> &str {
        self.endpoint.as_str()
    }

    /// The document code of `payload` for logs, via `identify_by`.
    pub fn document_code(&self, payload: &serde_json::Value) -> Option<String> {
        document_code(payload, self.identify_by.as_deref()?)
    }
}

/// Hand-written so header values are not printed: a file may well put an
/// API key in `X-Api-Key = "${PARTNER_KEY}"`.
impl fmt::Debug for Workflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .keys()
            .map(|name| (name.as_str(), "***"))
            .collect();
        f.debug_struct("Workflow")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("file", &self.file)
            .field("document", &self.document)
            .field("identify_by", &self.identify_by)
            .field("target", &self.target)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("timeout", &self.timeout)
            .field("headers", &headers)
            .field("retry", &self.retry)
            .field("on_done_sql", &self.on_done_sql)
            .field("source", &self.source)
            .field("reconcile", &self.reconcile)
            .finish()
    }
}

/// One problem in one workflow file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{problem}", file.display(), field_prefix(field.as_deref()))]
pub struct WorkflowError {
    pub file: PathBuf,
    /// Dotted path of the field, e.g. `retry.waits[1]`; `None` for problems
    /// with the file as a whole (syntax, I/O).
    pub field: Option<String>,
    pub problem: String,
}

fn field_prefix(field: Option<&str>) -> String {
    field.map(|f| format!("{f}: ")).unwrap_or_default()
}

/// Every problem found while loading, across all files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(.0))]
pub struct WorkflowErrors(pub Vec<WorkflowError>);

fn lines(errors: &[WorkflowError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A workflow file that is valid but cannot run on this host: variables it reads with no default
/// (`${ONEC_BASE_URL}`) are not set. Its rows are not claimed (they stay `pending`) until the
/// variables are set and the relay is restarted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unconfigured {
    pub name: String,
    pub file: PathBuf,
    /// The unset variables, in the order the file uses them, each once.
    pub missing: Vec<String>,
}

/// What [`Registry::inspect_dir`] found in a directory.
#[derive(Debug, Clone, Default)]
pub struct DirReport {
    /// The configured, valid workflows; [`Registry::unconfigured`] lists the others.
    pub registry: Registry,
    /// Real mistakes (syntax, fields, values, files that contradict each other). A file with a
    /// mistake is reported here, with its unset variables too, never as merely unconfigured.
    pub errors: Vec<WorkflowError>,
}

/// All loaded workflows, by name, and the valid ones that lack their variables.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    workflows: BTreeMap<String, Workflow>,
    unconfigured: Vec<Unconfigured>,
}

/// Stands in for an unset variable while a file is checked for real mistakes; problems in the
/// fields that use it are not reported (they would be about the stand-in).
fn stand_in(name: &str) -> String {
    if name.to_ascii_uppercase().contains("URL") {
        "http://unset.invalid".into()
    } else {
        "unset".into()
    }
}

/// `(path, text)` of each readable workflow file, and a problem per unreadable one.
type ReadFiles = (Vec<(PathBuf, String)>, Vec<WorkflowError>);

/// The `*.toml` files of `dir`, sorted, with their text; unreadable files become errors.
fn read_workflow_files(dir: &Path) -> Result<ReadFiles, WorkflowErrors> {
    let failure = |problem: String| {
        WorkflowErrors(vec![WorkflowError {
            file: dir.to_path_buf(),
            field: None,
            problem,
        }])
    };
    let entries = std::fs::read_dir(dir).map_err(|e| {
        failure(format!(
            "cannot read workflow directory {}: {e}",
            dir.display()
        ))
    })?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            failure(format!(
                "cannot read workflow directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err(failure(format!(
            "no workflow files (*.toml) in {}",
            dir.display()
        )));
    }
    // Sorted so errors and registry order do not depend on the file system.
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => files.push((path, text)),
            Err(e) => errors.push(WorkflowError {
                file: path,
                field: None,
                problem: format!("cannot read file: {e}"),
            }),
        }
    }
    Ok((files, errors))
}

impl Registry {
    /// Load every `*.toml` file in `dir` (other files are ignored). Strict: a file whose
    /// variables are unset is an error like any other; see [`Registry::load_configured`].
    pub fn load_dir(dir: &Path, env: EnvLookup<'_>) -> Result<Registry, WorkflowErrors> {
        let (files, mut errors) = read_workflow_files(dir)?;
        match Registry::from_files(&files, env) {
            Ok(registry) if errors.is_empty() => Ok(registry),
            Ok(_) => Err(WorkflowErrors(errors)),
            Err(WorkflowErrors(more)) => {
                errors.extend(more);
                Err(WorkflowErrors(errors))
            }
        }
    }

    /// Load the workflows of `dir` that can run here and set the others aside: a valid file
    /// whose variables (with no default) are unset is listed in [`Registry::unconfigured`]
    /// instead of failing the whole load. Any real mistake, in any file, is still an error.
    /// The registry may be empty: the caller decides whether that is acceptable.
    pub fn load_configured(dir: &Path, env: EnvLookup<'_>) -> Result<Registry, WorkflowErrors> {
        let report = Registry::inspect_dir(dir, env)?;
        if report.errors.is_empty() {
            Ok(report.registry)
        } else {
            Err(WorkflowErrors(report.errors))
        }
    }

    /// Check every `*.toml` file of `dir`, sorting them into configured workflows, valid but
    /// unconfigured ones (variables unset) and real mistakes. Only a directory that cannot be
    /// read or holds no workflow file is an `Err`.
    pub fn inspect_dir(dir: &Path, env: EnvLookup<'_>) -> Result<DirReport, WorkflowErrors> {
        let (files, mut errors) = read_workflow_files(dir)?;
        let mut configured = Vec::new();
        let mut unconfigured = Vec::new();
        for (path, text) in files {
            let unset = match text.parse::<toml::Table>() {
                Ok(table) => env::unset_in_table(&table, env),
                // The syntax error is reported by the normal load below.
                Err(_) => Vec::new(),
            };
            if unset.is_empty() {
                configured.push((path, text));
                continue;
            }
            let mut missing: Vec<String> = Vec::new();
            for (_, name) in &unset {
                if !missing.contains(name) {
                    missing.push(name.clone());
                }
            }
            // In the order the file mentions them (the parsed table is sorted by key).
            missing.sort_by_key(|name| text.find(&format!("${{{name}")).unwrap_or(usize::MAX));
            let with_stand_ins = |name: &str| {
                env(name).or_else(|| missing.iter().any(|m| m == name).then(|| stand_in(name)))
            };
            let mistakes: Vec<WorkflowError> =
                match validate::load_file(&path, &text, &with_stand_ins) {
                    Ok(_) => Vec::new(),
                    Err(problems) => problems
                        .into_iter()
                        .filter(|p| {
                            !p.field.as_deref().is_some_and(|f| {
                                unset.iter().any(|(u, _)| {
                                    f == u
                                        || f.strip_prefix(u.as_str())
                                            .is_some_and(|r| r.starts_with(['.', '[']))
                                })
                            })
                        })
                        .collect(),
                };
            if mistakes.is_empty() {
                let name = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .to_string();
                unconfigured.push(Unconfigured {
                    name,
                    file: path,
                    missing,
                });
            } else {
                errors.extend(mistakes);
                for (field, name) in unset {
                    errors.push(WorkflowError {
                        file: path.clone(),
                        field: Some(field),
                        problem: format!(
                            "environment variable {name} is not set and has no default (write ${{{name}:-default}} to give one)"
                        ),
                    });
                }
            }
        }
        let mut registry = match Registry::from_files(&configured, env) {
            Ok(registry) => registry,
            Err(WorkflowErrors(more)) => {
                errors.extend(more);
                Registry::default()
            }
        };
        registry.unconfigured = unconfigured;
        Ok(DirReport { registry, errors })
    }

    /// Build a registry from `(path, contents)` pairs; the path's stem is
    /// the expected workflow name.
    pub fn from_files(
        files: &[(PathBuf, String)],
        env: EnvLookup<'_>,
    ) -> Result<Registry, WorkflowErrors> {
        let mut errors = Vec::new();
        let mut loaded = Vec::new();
        for (path, text) in files {
            match validate::load_file(path, text, env) {
                Ok(workflow) => loaded.push(workflow),
                Err(mut problems) => errors.append(&mut problems),
            }
        }
        let mut registry = Registry::default();
        validate::cross_check(&loaded, &mut errors);
        if !errors.is_empty() {
            return Err(WorkflowErrors(errors));
        }
        for workflow in loaded {
            registry.workflows.insert(workflow.name.clone(), workflow);
        }
        Ok(registry)
    }

    /// Valid workflows whose variables are unset on this host (only [`Registry::load_configured`]
    /// and [`Registry::inspect_dir`] set any aside), sorted by file name.
    pub fn unconfigured(&self) -> &[Unconfigured] {
        &self.unconfigured
    }

    pub fn get(&self, name: &str) -> Option<&Workflow> {
        self.workflows.get(name)
    }

    /// Workflows sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Workflow> {
        self.workflows.values()
    }

    pub fn len(&self) -> usize {
        self.workflows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workflows.is_empty()
    }

    /// Each distinct target once (they are identical across workflows, which
    /// loading guarantees), sorted by name.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        let mut seen = BTreeMap::new();
        for workflow in self.workflows.values() {
            seen.entry(workflow.target.name.as_str())
                .or_insert(&workflow.target);
        }
        seen.into_values()
    }

    /// The longest request timeout, e.g. to size a shutdown grace period;
    /// zero for an empty registry.
    pub fn max_timeout(&self) -> Duration {
        self.iter()
            .map(|w| w.timeout)
            .max()
            .unwrap_or(Duration::ZERO)
    }
}
