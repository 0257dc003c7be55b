//! The binary as it meets shells, man, scripts and operators' typos: `ferry completions`,
//! `ferry man`, payloads as JSON values under `--json`, a warning for unknown `FERRY_*`
//! variables, and the next runs of the cron jobs in `ferry workflows check`. Each command runs
//! with an environment of its own (cleared first) in a directory of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::helpers::{Backend, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("ferry-cli-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run `ferry args` in `dir` with only `vars` (and PATH) set.
fn ferry(dir: &Path, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("FERRY_LOG_DIR", "off");
    for (k, v) in vars {
        c.env(k, v);
    }
    c.output().expect("run ferry")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn completions_for_bash_and_zsh_need_no_configuration() {
    let dir = Scratch::new();
    // A broken setting must not stop a packager from generating them.
    let vars = [
        ("DATABASE_URL", "mysql://nope"),
        ("FERRY_CONCURRENCY", "lots"),
    ];
    for (shell, marker) in [
        ("bash", "complete -F _ferry"),
        ("zsh", "#compdef ferry"),
        ("fish", "complete -c ferry"),
    ] {
        let out = ferry(&dir.0, &vars, &["completions", shell]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{shell}: {stderr}");
        assert!(stdout.contains(marker), "{shell}: {stdout}");
        for sub in ["workflows", "export-invoice", "retry", "completions"] {
            assert!(stdout.contains(sub), "{shell} lacks {sub}");
        }
        assert!(stdout.contains("json"), "{shell}: the global --json flag");
    }
    // bash loads the script and completes `ferry wor` to `workflows`.
    let script = dir.0.join("ferry.bash");
    std::fs::write(&script, ferry(&dir.0, &[], &["completions", "bash"]).stdout).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && COMP_WORDS=(ferry wor) COMP_CWORD=1 COMP_LINE='ferry wor' COMP_POINT=9 \
             && _ferry ferry wor ferry && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .expect("bash");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "workflows", "{stderr}");

    let out = ferry(&dir.0, &[], &["completions", "tcsh"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("possible values"), "{:?}", text(&out));
}

#[test]
fn the_manual_page_is_roff_generated_from_the_commands() {
    let dir = Scratch::new();
    let out = ferry(&dir.0, &[("DATABASE_URL", "mysql://nope")], &["man"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(".TH ferry 1"), "{stdout}");
    assert!(stdout.contains(".SH NAME"), "{stdout}");
    for sub in ["migrate", "workflows", "export\\-invoice", "completions"] {
        assert!(stdout.contains(sub), "man page lacks {sub}");
    }
    // The settings listed in --help are in the page too.
    assert!(stdout.contains("FERRY_PRUNE_SCHEDULE"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_carries_payloads_as_json_values() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = Scratch::new();
    let doc =
        json!({"billCode": "HD-J1", "lines": [{"sku": "SP-1", "qty": 2}], "note": "Công ty \"A\""});
    let id = db
        .store
        .enqueue("partner_hoa_don", "HD-J1", &doc)
        .await
        .unwrap()
        .id;
    let url = db.database_url();
    let vars = [
        ("DATABASE_URL", url.as_str()),
        (
            "FERRY_WORKFLOWS",
            &repo().join("workflows").display().to_string(),
        ),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, *v)).collect();

    let out = ferry(&dir.0, &vars, &["show", &id.to_string(), "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let shown: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(shown["row"]["id"], id);
    assert_eq!(shown["row"]["payload"], doc, "{stdout}");
    assert!(shown["attempts"].is_array());

    let out = ferry(&dir.0, &vars, &["list", "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap();
    assert!(row["payload"].is_object(), "{row}");
    assert_eq!(row["payload"]["lines"][0]["qty"], 2);
}

#[test]
fn an_unknown_ferry_variable_is_named_with_the_setting_it_resembles() {
    let dir = Scratch::new();
    let workflows = repo().join("workflows").display().to_string();
    let db = dir.0.join("f.db").display().to_string();
    let url = format!("sqlite:{db}");
    let base = [
        ("DATABASE_URL", url.as_str()),
        ("FERRY_WORKFLOWS", workflows.as_str()),
    ];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };

    let out = ferry(&dir.0, &with(&[("FERRY_CONCURENCY", "4")]), &["migrate"]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("FERRY_CONCURENCY is set but is not a Ferry setting")
            && stderr.contains("did you mean FERRY_CONCURRENCY?"),
        "{stderr}"
    );

    // The variables the tests, benchmarks and workflow files read are not unknown, and neither
    // are the settings.
    let out = ferry(
        &dir.0,
        &with(&[
            ("FERRY_TEST_PG_URL", "postgres://x"),
            ("FERRY_FAULT_SEED", "7"),
            ("FERRY_SOAK", "1"),
            ("FERRY_BENCH_PG_URL", "postgres://x"),
            ("FERRY_CONCURRENCY", "4"),
            ("FERRY_CONFIG", "/dev/null"),
        ]),
        &["status"],
    );
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("not a Ferry setting"), "{stderr}");

    // `run` warns too, before it starts (here it then refuses: no workflow is configured).
    let out = ferry(
        &dir.0,
        &with(&[("FERRY_METRICS_ADR", "0.0.0.0:1")]),
        &["run"],
    );
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("FERRY_METRICS_ADR") && stderr.contains("FERRY_METRICS_ADDR"),
        "{stderr}"
    );
}

/// Every `FERRY_*` name the code reads is a setting or in `config::OTHER_VARIABLES`, so none of
/// them is ever reported as unknown.
#[test]
fn every_ferry_variable_the_code_reads_is_known() {
    // Typos written on purpose by the tests of the warning.
    const TYPOS: &[&str] = &[
        "FERRY_CONCURENCY",
        "FERRY_METRICS_ADR",
        "FERRY_WORKFLOW",
        "FERRY_POLLINTERVAL",
        "FERRY_SHUTDOWN_GRACE_PERIOD",
        "FERRY_CONFG",
        "FERRY_FROBNICATE",
        "FERRY_PARTNER_URL",
        "FERRY_NOT_READ",
    ];
    let mut found = std::collections::BTreeSet::new();
    let mut stack: Vec<PathBuf> = ["src", "tests", "benches", "build.rs", ".ci", "deploy"]
        .iter()
        .map(|p| repo().join(p))
        .collect();
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for e in std::fs::read_dir(&path).unwrap() {
                stack.push(e.unwrap().path());
            }
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for (i, _) in text.match_indices("FERRY_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.len() > "FERRY_".len() && !name.ends_with('_') {
                found.insert(name);
            }
        }
    }
    assert!(found.contains("FERRY_TEST_PG_URL"), "{found:?}");
    let unknown: Vec<String> =
        ferry::config::unknown_variables(&found.iter().cloned().collect::<Vec<_>>(), &[])
            .into_iter()
            .map(|u| u.name)
            .filter(|n| !TYPOS.contains(&n.as_str()))
            .collect();
    assert!(
        unknown.is_empty(),
        "read by the code but missing from config::OTHER_VARIABLES (they would be warned about): {unknown:?}"
    );
}

#[test]
fn workflows_check_prints_the_next_three_runs_of_each_job() {
    let dir = Scratch::new();
    let workflows = dir.0.join("workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    let shipped = std::fs::read_to_string(repo().join("workflows/partner_hoa_don.toml")).unwrap();
    std::fs::write(
        workflows.join("partner_hoa_don.toml"),
        format!("{shipped}\n[reconcile]\nschedule = \"*/5 * * * *\"\nsql = \"SELECT 'x' AS key LIMIT :limit\"\n"),
    )
    .unwrap();
    let wf = workflows.display().to_string();
    let vars = [
        ("FERRY_WORKFLOWS", wf.as_str()),
        ("API_BASE_URL", "http://127.0.0.1:9"),
        ("API_USERNAME", "u"),
        ("API_PASSWORD", "p"),
        ("FERRY_PRUNE_SCHEDULE", "CRON_TZ=Europe/Moscow 0 3 * * *"),
    ];
    let out = ferry(&dir.0, &vars, &["workflows", "check"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("cron jobs (next three runs):"), "{stdout}");
    let prune = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("prune"))
        .unwrap();
    assert!(prune.contains("CRON_TZ=Europe/Moscow 0 3 * * *"), "{prune}");
    assert_eq!(prune.matches("T03:00:00+03:00").count(), 3, "{prune}");
    let sweep = stdout
        .lines()
        .find(|l| l.contains("reconcile:partner_hoa_don"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(sweep.matches(":00Z").count(), 3, "{sweep}");

    let out = ferry(&dir.0, &vars, &["workflows", "check", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let jobs = report["schedules"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{report}");
    assert_eq!(jobs[0]["job"], "prune");
    assert_eq!(jobs[0]["timezone"], "Europe/Moscow");
    let next: Vec<chrono::DateTime<chrono::Utc>> = jobs[0]["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(next.len(), 3);
    for t in &next {
        // 03:00 in Moscow is midnight UTC.
        assert_eq!(t.format("%H:%M:%S").to_string(), "00:00:00");
    }

    // A bad schedule names the setting and the field; in a workflow file, the field.
    let mut bad = vars.to_vec();
    bad[4] = ("FERRY_PRUNE_SCHEDULE", "0 25 * * *");
    let out = ferry(&dir.0, &bad, &["workflows", "check"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("FERRY_PRUNE_SCHEDULE: '0 25 * * *' hour field '25' is not valid"),
        "{stderr}"
    );
    std::fs::write(
        workflows.join("partner_hoa_don.toml"),
        format!("{shipped}\n[reconcile]\nschedule = \"*/5 * * * MONDAY\"\nsql = \"SELECT 'x' AS key LIMIT :limit\"\n"),
    )
    .unwrap();
    let out = ferry(&dir.0, &vars, &["workflows", "check"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("reconcile.schedule") && stderr.contains("day-of-week field 'MONDAY'"),
        "{stderr}"
    );
}
