//! The editor schema of workflow files (`workflows/ferry-workflow.schema.json`) is what the
//! parser's serde structs generate, and every shipped workflow file points at it.

use std::path::Path;

const REGENERATE: &str = "cargo run -- workflows schema > workflows/ferry-workflow.schema.json";

#[test]
fn the_committed_schema_is_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/ferry-workflow.schema.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = ferry::workflow::schema_json();
    assert!(
        committed == generated,
        "{} differs from the schema the workflow structs (src/workflow/raw.rs) generate; \
         regenerate it with:\n    {REGENERATE}",
        path.display()
    );
    // Sanity: it is a JSON Schema of a table with the file's sections, closed to other fields.
    let schema: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(schema["additionalProperties"], false);
    for section in ["target", "request", "retry"] {
        assert!(schema["required"]
            .as_array()
            .unwrap()
            .contains(&section.into()));
    }
    assert!(schema["properties"]["name"]["description"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
}

#[test]
fn the_binary_prints_the_schema() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["workflows", "schema"])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        ferry::workflow::schema_json()
    );
}

#[test]
fn shipped_workflow_files_name_the_schema() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("#:schema ./ferry-workflow.schema.json\n"),
            "{} does not start with the #:schema directive",
            path.display()
        );
    }
}
