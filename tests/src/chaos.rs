//! The fault suite's record: every fault-injection test adds rows (one per fault kind it
//! injected) to a report directory, and `make chaos` (or `make test`) prints them as one table.
//!
//! Short form by default (`make test`); `CHAOS_LONG=1` (set by `make chaos`) asks each test for
//! its long form (more faults injected).
use std::io::Write;
use std::path::PathBuf;

use crate::repo_root;

/// Whether the long form of the fault suite was asked for (`CHAOS_LONG=1`).
pub fn long() -> bool {
    std::env::var("CHAOS_LONG").is_ok_and(|v| v == "1")
}

/// `short` faults in the short form, `long` in the long form.
pub fn count(short: usize, long_form: usize) -> usize {
    if long() { long_form } else { short }
}

/// The directory rows are written to: `CHAOS_REPORT_DIR`, or target/chaos.
pub fn report_dir() -> PathBuf {
    std::env::var_os("CHAOS_REPORT_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target/chaos"))
}

/// One row of the fault table.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// The fault, e.g. "SIGKILL during forced rotation".
    pub fault: String,
    /// How many times it was injected.
    pub injected: usize,
    /// Things a user cares about that were lost (keys, pages, overrides).
    pub lost: usize,
    /// Actions done twice (a rotation, a page, a flip).
    pub doubled: usize,
    /// Things left unfinished (a staged key, a page never resolved, drift never put back).
    pub stuck: usize,
    /// Free-form figures: "converged in 0.4 s (max 0.9 s)", "RSS 31 MiB".
    pub figures: String,
}

/// Appends `row` to the report (one tab-separated line in a file named after the test binary).
pub fn record(row: &Row) {
    let dir = report_dir();
    std::fs::create_dir_all(&dir).expect("create the chaos report directory");
    let exe = std::env::current_exe().ok();
    let name = exe
        .as_ref()
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().split('-').next().unwrap_or("chaos").to_string())
        .unwrap_or_else(|| "chaos".into());
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.tsv")))
        .expect("open the chaos report");
    let clean = |s: &str| s.replace(['\t', '\n'], " ");
    writeln!(
        f,
        "{}\t{}\t{}\t{}\t{}\t{}",
        clean(&row.fault),
        row.injected,
        row.lost,
        row.doubled,
        row.stuck,
        clean(&row.figures)
    )
    .expect("write the chaos report");
}
