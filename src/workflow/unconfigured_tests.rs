//! Tests for loading a directory where some workflows lack their variables: those are set aside
//! as unconfigured, never confused with files that hold a real mistake.

use std::path::{Path, PathBuf};

use super::*;

fn onec_only(name: &str) -> Option<String> {
    match name {
        "ONEC_BASE_URL" => Some("http://127.0.0.1:9/unf".into()),
        "ONEC_USERNAME" => Some("Администратор".into()),
        "ONEC_PASSWORD" => Some("пароль".into()),
        _ => None,
    }
}

fn nothing(_: &str) -> Option<String> {
    None
}

/// A copy of the shipped workflow files, removed on drop.
struct Shipped(PathBuf);

impl Shipped {
    fn new(tag: &str) -> Shipped {
        let dir = std::env::temp_dir().join(format!(
            "ferry-unconf-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
        for entry in std::fs::read_dir(shipped).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
        Shipped(dir)
    }

    fn edit(&self, stem: &str, from: &str, to: &str) {
        let file = self.0.join(format!("{stem}.toml"));
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains(from), "{stem}: no {from:?}");
        std::fs::write(file, text.replacen(from, to, 1)).unwrap();
    }
}

impl Drop for Shipped {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const PARTNER_VARS: [&str; 3] = ["API_BASE_URL", "API_USERNAME", "API_PASSWORD"];

#[test]
fn a_shop_with_only_1c_loads_1c_and_sets_the_partner_workflows_aside() {
    let dir = Shipped::new("onec");
    // The strict loader refuses, as before.
    assert!(Registry::load_dir(&dir.0, &onec_only).is_err());
    let registry = Registry::load_configured(&dir.0, &onec_only).unwrap();
    let names: Vec<&str> = registry.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["onec_invoice"]);
    let unconfigured: Vec<(&str, Vec<&str>)> = registry
        .unconfigured()
        .iter()
        .map(|u| {
            (
                u.name.as_str(),
                u.missing.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        unconfigured,
        [
            ("partner_hoa_don", PARTNER_VARS.to_vec()),
            ("partner_phieu_nhap", PARTNER_VARS.to_vec()),
            ("partner_phieu_xuat", PARTNER_VARS.to_vec()),
        ]
    );
    assert_eq!(
        registry.unconfigured()[0].file,
        dir.0.join("partner_hoa_don.toml")
    );
}

#[test]
fn a_variable_with_a_default_is_not_missing() {
    let dir = Shipped::new("nothing");
    let report = Registry::inspect_dir(&dir.0, &nothing).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.registry.is_empty());
    let onec = &report.registry.unconfigured()[0];
    assert_eq!(onec.name, "onec_invoice");
    // ONEC_INVOICES_ENDPOINT has a default (/hs/invoices): not listed.
    assert_eq!(
        onec.missing,
        ["ONEC_BASE_URL", "ONEC_USERNAME", "ONEC_PASSWORD"]
    );
}

#[test]
fn a_real_mistake_in_an_unconfigured_file_is_an_error() {
    let dir = Shipped::new("broken");
    dir.edit(
        "partner_phieu_xuat",
        r#"timeout = "30s""#,
        r#"timeout = "30 parsecs""#,
    );
    dir.edit(
        "partner_hoa_don",
        r#"path = "/hoadon""#,
        r#"path = "hoadon""#,
    );
    let report = Registry::inspect_dir(&dir.0, &onec_only).unwrap();
    let files: Vec<String> = report
        .errors
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e.file.file_name().unwrap().to_string_lossy(),
                e.field.as_deref().unwrap_or("")
            )
        })
        .collect();
    assert!(
        files.contains(&"partner_phieu_xuat.toml request.timeout".to_string()),
        "{files:?}"
    );
    assert!(
        files.contains(&"partner_hoa_don.toml request.path".to_string()),
        "{files:?}"
    );
    // The broken files also name their unset variables; they are not "unconfigured".
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.field.as_deref() == Some("target.base_url")
                && e.problem.contains("API_BASE_URL is not set")),
        "{:?}",
        report.errors
    );
    let unconfigured: Vec<&str> = report
        .registry
        .unconfigured()
        .iter()
        .map(|u| u.name.as_str())
        .collect();
    assert_eq!(unconfigured, ["partner_phieu_nhap"]);
    assert!(Registry::load_configured(&dir.0, &onec_only).is_err());
}

#[test]
fn a_mistake_beside_a_missing_variable_in_the_same_section_is_found() {
    let dir = Shipped::new("section");
    // base_url is unset (stand-in used); max_concurrency in the same [target] is wrong.
    dir.edit(
        "partner_phieu_nhap",
        "max_concurrency = 8",
        "max_concurrency = 0",
    );
    let report = Registry::inspect_dir(&dir.0, &onec_only).unwrap();
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.field.as_deref() == Some("target.max_concurrency")),
        "{:?}",
        report.errors
    );
}

#[test]
fn a_configured_file_with_a_mistake_is_still_an_error() {
    let dir = Shipped::new("configured");
    dir.edit("onec_invoice", r#"timeout = "60s""#, r#"timeout = "60""#);
    let report = Registry::inspect_dir(&dir.0, &onec_only).unwrap();
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.file.ends_with("onec_invoice.toml")
                && e.field.as_deref() == Some("request.timeout")),
        "{:?}",
        report.errors
    );
    assert_eq!(report.registry.unconfigured().len(), 3);
}
