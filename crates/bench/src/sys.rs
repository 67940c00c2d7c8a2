//! The machine side of a benchmark: descriptor limits, CPU pinning, and what
//! `/proc` tells about a server and the kernel.
//!
//! Everything here is Linux-specific on purpose: the book measures on Linux,
//! and `/proc` is the cheapest honest source for these figures (no sampling
//! profiler, no extra process).

use std::io;
use std::path::Path;
use std::process::Command;

use crate::result::Conditions;

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit and returns
/// the new soft limit. Ten thousand client sockets need more than the usual
/// default of 1024 descriptors.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// Number of CPUs online (not the affinity mask: the generator may already be
/// pinned to one of them).
pub fn cpu_count() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// A CPU set holding exactly `cpu`.
fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET only touches the set we own; cpu is checked by the kernel.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set
}

/// Pins thread `tid` (0: the calling thread) to `cpu`.
pub fn pin_thread(tid: libc::pid_t, cpu: usize) -> io::Result<()> {
    let set = cpu_set(cpu);
    // SAFETY: the set lives for the call; the size is its real size.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Pins every existing thread of process `pid` to `cpu`. Threads it starts
/// later inherit the affinity of the thread that starts them.
pub fn pin_process(pid: u32, cpu: usize) -> io::Result<()> {
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid: libc::pid_t = entry?
            .file_name()
            .to_string_lossy()
            .parse()
            .map_err(|_| io::Error::other("odd /proc task name"))?;
        pin_thread(tid, cpu)?;
    }
    Ok(())
}

/// Prepares a child process so that it runs on `cpu` from its first
/// instruction: the affinity is set between `fork` and `exec`, so the server
/// and every thread it ever starts inherit it.
pub fn pin_child(cmd: &mut Command, cpu: usize) {
    use std::os::unix::process::CommandExt as _;
    let set = cpu_set(cpu);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // one async-signal-safe system call on a value copied in beforehand.
    unsafe {
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
}

/// Makes a child process receive SIGTERM if the thread that started it dies,
/// so that a `compare` interrupted by Ctrl-C or killed leaves no server behind.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the forked child before exec and only makes
    // one async-signal-safe system call.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
}

/// CPU time (user + system) the calling thread has used, in seconds.
///
/// A thread figure, not a process one: tests run fake servers on other
/// threads of the same process, and the generator's event loop is one thread.
pub fn thread_cpu_seconds() -> f64 {
    // SAFETY: rusage is plain data; getrusage fills the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_THREAD is Linux's per-thread figure.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// One reading of a process's `/proc` files.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// Resident set size, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size, KiB (`VmHWM`).
    pub hwm_kib: u64,
    /// Number of threads.
    pub threads: u64,
    /// User plus system CPU time, seconds.
    pub cpu_s: f64,
}

/// The server's figures once its memory has settled: a server may print `listening on` before
/// it has set up everything it allocates once (stage 11 maps its 4 MiB ring of read buffers just
/// after), and what it allocates then is not what its clients cost. Samples every 50 ms until
/// two samples in a row agree on the RSS, for at most a second; `None` if the process is gone.
/// (A server that sits still for more than 50 ms and *then* allocates is not caught: this
/// waits for a start-up to finish, not for one that pauses half-way.)
pub fn settled_sample(pid: u32) -> Option<ProcSample> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let mut last = sample_process(pid).ok()?;
    while std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let now = sample_process(pid).ok()?;
        if now.rss_kib == last.rss_kib {
            return Some(now);
        }
        last = now;
    }
    Some(last)
}

/// Reads `/proc/PID/status` and `/proc/PID/stat`. Fails once the process is gone.
pub fn sample_process(pid: u32) -> io::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let mut s = ProcSample::default();
    for line in status.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(value)) = (it.next(), it.next()) else {
            continue;
        };
        let value: u64 = value.parse().unwrap_or(0);
        match key {
            "VmRSS:" => s.rss_kib = value,
            "VmHWM:" => s.hwm_kib = value,
            "Threads:" => s.threads = value,
            _ => {}
        }
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces, so
    // count fields from the last ')'. utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> f64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    s.cpu_s = (ticks(11) + ticks(12)) / hz;
    Ok(s)
}

/// A reading of a process's CPU clocks, for measuring one window precisely.
///
/// `/proc/PID/stat` counts in clock ticks (10 ms here): over a two-second
/// window that is a few percent of error. Each thread's
/// `/proc/PID/task/TID/schedstat` counts nanoseconds, but a thread that exits
/// takes its count with it. So a window uses the nanosecond counters when
/// every thread of its start is still there at its end, and the ticks otherwise.
#[derive(Debug, Clone, Default)]
pub struct CpuReading {
    /// User plus system time from `/proc/PID/stat`, seconds.
    pub ticks_s: f64,
    /// Nanoseconds on a CPU per thread id, when readable.
    pub tasks: Option<std::collections::HashMap<u32, u64>>,
}

/// Reads both CPU clocks of `pid`.
pub fn cpu_reading(pid: u32) -> io::Result<CpuReading> {
    let ticks_s = sample_process(pid)?.cpu_s;
    let tasks = (|| -> io::Result<std::collections::HashMap<u32, u64>> {
        let mut map = std::collections::HashMap::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let entry = entry?;
            let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            // A thread may exit between the listing and the read: skip it.
            let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
                continue;
            };
            let ns = text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| io::Error::other("odd schedstat"))?;
            map.insert(tid, ns);
        }
        Ok(map)
    })()
    .ok();
    Ok(CpuReading { ticks_s, tasks })
}

/// CPU seconds used between two readings of the same process.
pub fn cpu_between(start: &CpuReading, end: &CpuReading) -> f64 {
    if let (Some(a), Some(b)) = (&start.tasks, &end.tasks) {
        if a.keys().all(|tid| b.contains_key(tid)) {
            let ns: u64 = b
                .iter()
                .map(|(tid, &ns)| ns.saturating_sub(a.get(tid).copied().unwrap_or(0)))
                .sum();
            return ns as f64 / 1e9;
        }
    }
    (end.ticks_s - start.ticks_s).max(0.0)
}

/// The kernel's memory for TCP sockets, in KiB (`mem` of the `TCP:` line of
/// `/proc/net/sockstat`, which counts pages).
pub fn kernel_tcp_kib() -> i64 {
    let Ok(text) = std::fs::read_to_string("/proc/net/sockstat") else {
        return 0;
    };
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as i64;
    text.lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "mem")?;
            words.get(at + 1)?.parse::<i64>().ok()
        })
        .map_or(0, |pages| pages * page / 1024)
}

/// First line of a small text file, trimmed; empty if unreadable.
fn first_line(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_default()
}

/// Output of a command, trimmed; `None` if it failed.
fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The host name.
pub fn host_name() -> String {
    let h = first_line("/proc/sys/kernel/hostname");
    if h.is_empty() {
        "host".to_string()
    } else {
        h
    }
}

/// The current git revision of the working tree, with `-dirty` when it has
/// uncommitted changes, or `unknown` outside a repository.
pub fn git_revision() -> String {
    match command_output("git", &["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) => {
            let dirty = command_output("git", &["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev}-dirty")
            } else {
                rev
            }
        }
        None => "unknown".to_string(),
    }
}

/// Everything that describes where a result came from.
pub fn conditions(pinning: String) -> Conditions {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    Conditions {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        git_revision: git_revision(),
        rustc: env!("CHAT_BENCH_RUSTC").to_string(),
        kernel: first_line("/proc/sys/kernel/osrelease"),
        cpu_model: format!("{cpu_model} ({} CPUs)", cpu_count()),
        host: host_name(),
        pinning,
        date: utc_now(),
    }
}

/// Seconds since the Unix epoch.
fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Converts days since 1970-01-01 to a (year, month, day) civil date
/// (Howard Hinnant's `civil_from_days`, valid for any date after 1970).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = unix_seconds();
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Today, as `YYYY-MM-DD` (UTC), for result folder names.
pub fn utc_date() -> String {
    utc_now()[..10].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }

    #[test]
    fn cpu_between_readings_grows_with_work() {
        let pid = std::process::id();
        let a = cpu_reading(pid).expect("own /proc entry");
        // Burn a little CPU on this thread.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = cpu_reading(pid).expect("own /proc entry");
        assert!(a.tasks.is_some(), "schedstat readable");
        assert!(cpu_between(&a, &b) > 0.0);
    }

    #[test]
    fn own_process_can_be_sampled() {
        let s = sample_process(std::process::id()).expect("own /proc entry");
        assert!(s.rss_kib > 0 && s.threads >= 1);
    }
}
