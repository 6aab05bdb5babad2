//! Process metrics (`process_*`, the names every Prometheus client uses), read from
//! `/proc/self` at each scrape. Linux only: elsewhere the families are simply absent.

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`). The kernel fixes
/// it at 100 for user space on every mainstream architecture; the Prometheus project's
/// `procfs` library hard-codes it the same way rather than calling `sysconf`.
const USER_HZ: f64 = 100.0;

/// What the process metrics report.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ProcessStats {
    /// User plus system CPU time, seconds.
    pub(crate) cpu_seconds: f64,
    /// Resident set size, bytes.
    pub(crate) resident_bytes: u64,
    /// Virtual memory size, bytes.
    pub(crate) virtual_bytes: u64,
    /// Open file descriptors.
    pub(crate) open_fds: u64,
    /// The soft limit on open file descriptors (`None` when unlimited).
    pub(crate) max_fds: Option<u64>,
    /// Start time, seconds since the Unix epoch (`None` when `/proc/stat` is hidden).
    pub(crate) start_time_seconds: Option<f64>,
}

/// The fields of `/proc/self/stat` used here: CPU ticks (user + system), start time in
/// ticks after boot, virtual size in bytes.
fn parse_stat(stat: &str) -> Option<(u64, u64, u64)> {
    // `pid (comm) state ...`: comm may hold spaces and parentheses, so split after the last `)`.
    let (_, after) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state) of proc(5); field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)? + field(15)?, field(22)?, field(23)?))
}

/// A `Key:   123 kB` line of `/proc/self/status`, in bytes.
fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
    let mut parts = line.split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    (parts.next() == Some("kB")).then(|| value.saturating_mul(1024))
}

/// Boot time (`btime`) from `/proc/stat`, seconds since the epoch.
fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft `Max open files` limit from `/proc/self/limits`: `Some(None)` when unlimited.
fn parse_max_fds(limits: &str) -> Option<Option<u64>> {
    let rest = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    match rest.split_whitespace().next()? {
        "unlimited" => Some(None),
        soft => soft.parse().ok().map(Some),
    }
}

/// Reads this process's figures; `None` where `/proc` is missing or unreadable.
pub(crate) fn read() -> Option<ProcessStats> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let (ticks, start_ticks, virtual_bytes) = parse_stat(&read("/proc/self/stat")?)?;
    let status = read("/proc/self/status")?;
    let btime = read("/proc/stat").as_deref().and_then(parse_btime);
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(ProcessStats {
        cpu_seconds: ticks as f64 / USER_HZ,
        resident_bytes: parse_status_kb(&status, "VmRSS")?,
        virtual_bytes,
        // The directory handle of the count above is one of the entries; not ours to report.
        open_fds: open_fds.saturating_sub(1),
        max_fds: read("/proc/self/limits")
            .as_deref()
            .and_then(parse_max_fds)
            .flatten(),
        start_time_seconds: btime.map(|b| b as f64 + start_ticks as f64 / USER_HZ),
    })
}

/// Appends the process families to `out` (OpenMetrics text, no `# EOF`).
pub(crate) fn encode(out: &mut String) {
    let Some(stats) = read() else { return };
    let mut registry = Registry::with_prefix("process");
    registry.register_with_unit(
        "cpu",
        "Total user and system CPU time spent",
        Unit::Seconds,
        ConstCounter::new(stats.cpu_seconds),
    );
    registry.register_with_unit(
        "resident_memory",
        "Resident memory size",
        Unit::Bytes,
        ConstGauge::new(stats.resident_bytes as f64),
    );
    registry.register_with_unit(
        "virtual_memory",
        "Virtual memory size",
        Unit::Bytes,
        ConstGauge::new(stats.virtual_bytes as f64),
    );
    registry.register(
        "open_fds",
        "Open file descriptors",
        ConstGauge::new(stats.open_fds as f64),
    );
    if let Some(max) = stats.max_fds {
        registry.register(
            "max_fds",
            "Limit on open file descriptors",
            ConstGauge::new(max as f64),
        );
    }
    if let Some(start) = stats.start_time_seconds {
        registry.register_with_unit(
            "start_time",
            "Start time of the process since the Unix epoch",
            Unit::Seconds,
            ConstGauge::new(start),
        );
    }
    let _ = prometheus_client::encoding::text::encode_registry(out, &registry);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_after_an_awkward_command_name() {
        // comm with spaces and a `)`: fields 14/15 (utime/stime), 22 (starttime), 23 (vsize).
        let stat = "4242 (mesh node) (x)) S 1 4242 4242 0 -1 4194304 500 0 0 0 \
                    250 50 0 0 20 0 9 0 123456 987654321 4000 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((300, 123456, 987654321)));
        assert_eq!(parse_stat("4242 (short) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn status_limits_and_boot_time_are_parsed() {
        let status = "Name:\tmeshnode\nVmSize:\t  20000 kB\nVmRSS:\t    1536 kB\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(1536 * 1024));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
        assert_eq!(parse_status_kb("VmRSS:\t12 MB\n", "VmRSS"), None);
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(Some(1024)));
        assert_eq!(
            parse_max_fds(
                "Max open files            unlimited            unlimited            files\n"
            ),
            Some(None)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_measured() {
        let before = read().expect("/proc is readable on Linux");
        // Other tests of this process open files too: only a lower bound holds.
        assert!(before.open_fds >= 1, "{before:?}");
        assert!(before.cpu_seconds >= 0.0, "{before:?}");
        assert!(before.resident_bytes > 1024 * 1024, "{before:?}");
        assert!(before.virtual_bytes >= before.resident_bytes, "{before:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = before
            .start_time_seconds
            .expect("/proc/stat is readable here");
        assert!(start <= now + 1.0 && start > now - 3600.0, "{before:?}");
        let mut text = String::new();
        encode(&mut text);
        assert!(
            text.contains("# TYPE process_cpu_seconds counter"),
            "{text}"
        );
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
    }
}
