//! Global `ops::logging::init`, in its own test binary because it installs
//! the process-wide subscriber, which would leak into every other test
//! sharing the process.

use ferry::ops::logging::{init, LogConfig, LogFormat};
use ferry::ops::OpsError;

#[test]
fn init_installs_global_subscriber_once() {
    let dir = std::env::temp_dir().join(format!("ferry-ops-init-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = LogConfig {
        format: LogFormat::Json,
        filter: "info".to_owned(),
        dir: Some(dir.clone()),
        file_name: "ferry.log".to_owned(),
        stderr: false,
    };

    let guard = init(&config).expect("first init succeeds");
    tracing::info!(
        workflow = "orders",
        attempt = 1,
        "hello from the global subscriber"
    );

    // A second call reports an error instead of panicking.
    let second = init(&config);
    assert!(matches!(second, Err(OpsError::LogAlreadyInitialised(_))));

    drop(guard); // flush the non-blocking writer
    let file = std::fs::read_dir(&dir)
        .expect("log dir created")
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ferry.log")
        })
        .expect("log file created");
    let text = std::fs::read_to_string(&file).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("hello from the global subscriber"))
        .expect("event written");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["workflow"], "orders");
    assert_eq!(v["attempt"], 1);
    let _ = std::fs::remove_dir_all(&dir);
}
