//! The standard `process_*` metrics (the names every Prometheus client library uses, so the
//! usual dashboards and alerts work on Ferry too) and `ferry_build_info`.
//!
//! On Linux they are read from `/proc/self` at each scrape: a handful of small reads, no
//! background task. Elsewhere the `process_*` families are left out (a family with made-up
//! values would be worse than none); `ferry_build_info` is always there.

use std::fmt::Write as _;

/// The crate version and the git commit it was built from (`unknown` when built outside a git
/// checkout without `FERRY_GIT_COMMIT` set; see `build.rs`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_COMMIT: &str = env!("FERRY_GIT_COMMIT");

/// A point-in-time reading of the process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_memory_bytes: f64,
    pub virtual_memory_bytes: f64,
    /// `None` when `/proc/stat` (the boot time) is hidden, e.g. by systemd's `ProcSubset=pid`.
    pub start_time_seconds: Option<f64>,
    pub open_fds: f64,
    pub max_fds: Option<f64>,
}

/// Clock ticks per second of the times in `/proc/*/stat`: `USER_HZ`, which the kernel fixes at
/// 100 for user space on every architecture Linux runs Ferry on (Prometheus' own `procfs`
/// library assumes the same).
#[cfg(target_os = "linux")]
const USER_HZ: f64 = 100.0;

/// Read the process's own statistics, or `None` when `/proc` cannot be read (not Linux, or a
/// sandbox without it).
pub fn read() -> Option<ProcessStats> {
    #[cfg(target_os = "linux")]
    {
        read_linux()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(target_os = "linux")]
fn read_linux() -> Option<ProcessStats> {
    use std::sync::OnceLock;
    static BOOT_TIME: OnceLock<Option<f64>> = OnceLock::new();

    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields = parse_stat(&stat)?;
    let boot = *BOOT_TIME.get_or_init(|| {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_btime(&s))
    });
    let resident = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_vm_rss(&s))?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| parse_max_open_files(&s));
    Some(ProcessStats {
        cpu_seconds: (fields.utime + fields.stime) as f64 / USER_HZ,
        resident_memory_bytes: resident,
        virtual_memory_bytes: fields.vsize as f64,
        start_time_seconds: boot.map(|b| b + fields.starttime as f64 / USER_HZ),
        open_fds,
        max_fds,
    })
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, PartialEq, Eq)]
struct StatFields {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
}

/// `/proc/<pid>/stat`: `pid (comm) state ppid …`. The command name may hold spaces and
/// parentheses, so fields are counted from the last `)`. Field numbers as in `proc(5)`.
fn parse_stat(text: &str) -> Option<StatFields> {
    let after = &text[text.rfind(')')? + 1..];
    // `after` starts at field 3 (state).
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(StatFields {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
        vsize: field(23)?,
    })
}

/// `btime` of `/proc/stat`: the boot time, in seconds since the epoch.
fn parse_btime(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS:` of `/proc/self/status`, in bytes (the file gives kB).
fn parse_vm_rss(text: &str) -> Option<f64> {
    let line = text.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024.0)
}

/// The soft limit of `Max open files` in `/proc/self/limits` (`None` when unlimited).
fn parse_max_open_files(text: &str) -> Option<f64> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// Render `ferry_build_info` and, when `stats` is given, the `process_*` families.
pub(crate) fn render(out: &mut String, stats: Option<&ProcessStats>) {
    if let Some(s) = stats {
        let families: [(&str, &str, &str, Option<f64>); 6] = [
            (
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                "counter",
                Some(s.cpu_seconds),
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                "gauge",
                Some(s.resident_memory_bytes),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                "gauge",
                Some(s.virtual_memory_bytes),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                "gauge",
                s.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                "gauge",
                Some(s.open_fds),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                "gauge",
                s.max_fds,
            ),
        ];
        for (name, help, kind, value) in families {
            let Some(value) = value else { continue };
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP ferry_build_info The version and git commit of this build; always 1."
    );
    let _ = writeln!(out, "# TYPE ferry_build_info gauge");
    let _ = writeln!(
        out,
        "ferry_build_info{{version=\"{}\",git=\"{}\"}} 1",
        label(VERSION),
        label(GIT_COMMIT)
    );
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis must not shift the fields.
        let line = "4242 (ferry (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 \
                    9 0 123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 \
                    0 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(StatFields {
                utime: 250,
                stime: 75,
                starttime: 123456,
                vsize: 987654321,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn status_limits_and_boot_time() {
        assert_eq!(
            parse_vm_rss("Name:\tferry\nVmRSS:\t   10240 kB\nThreads: 9\n"),
            Some(10240.0 * 1024.0)
        );
        assert_eq!(
            parse_max_open_files(
                "Limit                     Soft Limit           Hard Limit           Units\n\
                 Max open files            1024                 524288               files\n"
            ),
            Some(1024.0)
        );
        assert_eq!(
            parse_max_open_files("Max open files            unlimited  unlimited  files\n"),
            None
        );
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1796143580\nprocesses 9\n"),
            Some(1796143580.0)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_sensibly() {
        let s = read().expect("/proc/self is readable");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = s.start_time_seconds.expect("/proc/stat is readable");
        assert!(start <= now + 1.0, "{s:?}");
        assert!(start > now - 7.0 * 86_400.0, "{s:?}");
        assert!(s.resident_memory_bytes > 1e5, "{s:?}");
        assert!(s.virtual_memory_bytes >= s.resident_memory_bytes, "{s:?}");
        assert!(s.open_fds >= 3.0, "{s:?}");
        assert!(s.cpu_seconds >= 0.0, "{s:?}");
    }

    #[test]
    fn build_info_is_one_series() {
        let mut out = String::new();
        render(&mut out, None);
        assert!(out.contains("# TYPE ferry_build_info gauge\n"), "{out}");
        let line = out
            .lines()
            .find(|l| l.starts_with("ferry_build_info{"))
            .unwrap();
        assert!(
            line.starts_with(&format!("ferry_build_info{{version=\"{VERSION}\",git=\"")),
            "{line}"
        );
        assert!(line.ends_with("\"} 1"), "{line}");
        assert!(!out.contains("process_"), "{out}");
    }
}
