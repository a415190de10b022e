//! The standard `process_*` metrics of this process, read from `/proc` at each scrape, with the
//! names, types and help texts Prometheus client libraries use (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, …) so dashboards written for any exporter work.
//!
//! It replaces the `prometheus` crate's process collector, which counts CPU in whole seconds
//! (an integer counter of `ticks / CLK_TCK`): a process that used 0.36 s of CPU reported 0, and
//! a CPU panel drew a staircase. Here CPU time is a float counter with the kernel's tick
//! resolution (10 ms). Linux only; elsewhere the collector reports nothing.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, IntGauge, Opts};

/// What one read of `/proc/self/stat` says, in base units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcStat {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    pub threads: i64,
    /// Seconds after boot at which the process started.
    pub start_after_boot_seconds: f64,
    pub virtual_memory_bytes: i64,
    pub resident_memory_bytes: i64,
}

/// Parses the text of `/proc/<pid>/stat` (proc(5)). The command name (field 2) may hold spaces
/// and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str, ticks_per_second: f64, page_size: i64) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state): field n is at index n - 3.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<i64>().ok());
    let utime = field(14)?;
    let stime = field(15)?;
    Some(ProcStat {
        cpu_seconds: (utime + stime) as f64 / ticks_per_second,
        threads: field(20)?,
        start_after_boot_seconds: field(22)? as f64 / ticks_per_second,
        virtual_memory_bytes: field(23)?,
        resident_memory_bytes: field(24)? * page_size,
    })
}

/// `btime` of `/proc/stat`: the boot time in Unix seconds.
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn sysconf(name: libc::c_int) -> Option<i64> {
    // SAFETY: sysconf reads a configuration value and has no preconditions.
    let value = unsafe { libc::sysconf(name) };
    (value > 0).then_some(value as i64)
}

/// The soft limit of open file descriptors.
fn max_fds() -> Option<i64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and has no other effect.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur as i64)
}

/// The process collector registered in the service's one registry.
pub struct ProcessCollector {
    cpu: Counter,
    open_fds: IntGauge,
    max_fds: IntGauge,
    virtual_memory: IntGauge,
    resident_memory: IntGauge,
    start_time: Gauge,
    threads: IntGauge,
    descs: Vec<Desc>,
    ticks_per_second: f64,
    page_size: i64,
}

impl ProcessCollector {
    pub fn for_self() -> ProcessCollector {
        let cpu = Counter::with_opts(Opts::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        ))
        .expect("valid metric");
        let open_fds = IntGauge::new("process_open_fds", "Number of open file descriptors.")
            .expect("valid metric");
        let max_fds = IntGauge::new(
            "process_max_fds",
            "Maximum number of open file descriptors.",
        )
        .expect("valid metric");
        let virtual_memory = IntGauge::new(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        )
        .expect("valid metric");
        let resident_memory = IntGauge::new(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        )
        .expect("valid metric");
        let start_time = Gauge::new(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        )
        .expect("valid metric");
        let threads = IntGauge::new("process_threads", "Number of OS threads in the process.")
            .expect("valid metric");
        let mut descs = Vec::new();
        for c in [
            &open_fds,
            &max_fds,
            &virtual_memory,
            &resident_memory,
            &threads,
        ] {
            descs.extend(c.desc().into_iter().cloned());
        }
        descs.extend(cpu.desc().into_iter().cloned());
        descs.extend(start_time.desc().into_iter().cloned());
        ProcessCollector {
            cpu,
            open_fds,
            max_fds,
            virtual_memory,
            resident_memory,
            start_time,
            threads,
            descs,
            ticks_per_second: sysconf(libc::_SC_CLK_TCK).unwrap_or(100) as f64,
            page_size: sysconf(libc::_SC_PAGESIZE).unwrap_or(4096),
        }
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(text) = std::fs::read_to_string("/proc/self/stat") else {
            return Vec::new();
        };
        let Some(stat) = parse_stat(&text, self.ticks_per_second, self.page_size) else {
            return Vec::new();
        };
        // A counter only moves up: add what was used since the last scrape.
        let seen = self.cpu.get();
        if stat.cpu_seconds > seen {
            self.cpu.inc_by(stat.cpu_seconds - seen);
        }
        self.threads.set(stat.threads);
        self.virtual_memory.set(stat.virtual_memory_bytes);
        self.resident_memory.set(stat.resident_memory_bytes);
        if let Some(boot) = boot_time() {
            self.start_time.set(boot + stat.start_after_boot_seconds);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle itself is one of the entries.
            self.open_fds.set(dir.count().saturating_sub(1) as i64);
        }
        if let Some(max) = max_fds() {
            self.max_fds.set(max);
        }
        let mut families = Vec::new();
        for c in [
            &self.open_fds,
            &self.max_fds,
            &self.virtual_memory,
            &self.resident_memory,
            &self.threads,
        ] {
            families.extend(c.collect());
        }
        families.extend(self.cpu.collect());
        families.extend(self.start_time.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_keeps_its_fraction_of_a_second() {
        // 30 user + 6 system ticks at 100 ticks per second: 0.36 s, not 0.
        let stat = "4242 (certus (x) y) S 1 4242 4242 0 -1 4194560 9000 0 0 0 30 6 0 0 20 0 7 0 \
                    12345 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 4096 17663 0 0 0 17 \
                    1 0 0 0 0 0";
        let parsed = parse_stat(stat, 100.0, 4096).expect("parses");
        assert!((parsed.cpu_seconds - 0.36).abs() < 1e-9, "{parsed:?}");
        assert_eq!(parsed.threads, 7);
        assert!((parsed.start_after_boot_seconds - 123.45).abs() < 1e-9);
        assert_eq!(parsed.virtual_memory_bytes, 123_456_789);
        assert_eq!(parsed.resident_memory_bytes, 2048 * 4096);
    }

    #[test]
    fn the_collector_reports_the_standard_families() {
        let collector = ProcessCollector::for_self();
        // Use at least one clock tick of CPU, so there is something to report.
        let mut x = 0u64;
        while parse_stat(
            &std::fs::read_to_string("/proc/self/stat").unwrap(),
            collector.ticks_per_second,
            collector.page_size,
        )
        .unwrap()
        .cpu_seconds
            == 0.0
        {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
        let families = collector.collect();
        let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
        for expected in [
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
            "process_virtual_memory_bytes",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_threads",
        ] {
            assert!(names.contains(&expected), "{expected} missing: {names:?}");
        }
        let cpu = families
            .iter()
            .find(|f| f.name() == "process_cpu_seconds_total")
            .unwrap();
        assert_eq!(cpu.get_field_type(), prometheus::proto::MetricType::COUNTER);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        let now = parse_stat(&own, collector.ticks_per_second, collector.page_size).unwrap();
        let reported = cpu.get_metric()[0].get_counter().get_value();
        assert!(reported > 0.0 && reported <= now.cpu_seconds, "{reported}");
    }
}
