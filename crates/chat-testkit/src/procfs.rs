//! What the kit reads about a running server from `/proc` (Linux only): its memory
//! (`VmRSS`, `VmHWM`), its CPU time (`utime + stime`), how many descriptors it holds, and
//! whether it is stopped (SIGSTOP).
//!
//! The parsers are plain functions on the file's text so they can be unit-tested on
//! literal samples (`cargo test -p chat-testkit`); the readers around them are thin.

use std::time::Duration;

/// Memory figures of one process, in KiB, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident memory right now.
    pub rss_kib: u64,
    /// `VmHWM`: the peak of `VmRSS` since the process started ("high water mark").
    /// Freed memory may stay resident or not, so the peak is the safer thing to compare.
    pub hwm_kib: u64,
}

/// Parses `VmRSS` and `VmHWM` out of the text of `/proc/PID/status`.
pub fn parse_status_memory(status: &str) -> Result<Memory, String> {
    let field = |name: &str| -> Result<u64, String> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(':'))
            .ok_or_else(|| format!("no `{name}:` line in /proc/PID/status"))?;
        let rest = line[name.len() + 1..].trim();
        let number = rest
            .strip_suffix("kB")
            .ok_or_else(|| format!("`{line}` does not end in kB"))?
            .trim();
        number
            .parse()
            .map_err(|e| format!("`{line}`: bad number: {e}"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS")?,
        hwm_kib: field("VmHWM")?,
    })
}

/// Parses `utime + stime` (fields 14 and 15, in clock ticks) out of `/proc/PID/stat`.
///
/// Field 2 is the command name in parentheses and may itself contain spaces or
/// parentheses, so the fields are counted from the *last* `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Result<u64, String> {
    let after_comm = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| format!("no `)` in /proc/PID/stat: {stat:?}"))?;
    // After the name come field 3 (state), 4, 5, ...: utime is field 14, so index 11 here.
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let get = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .ok_or_else(|| format!("/proc/PID/stat too short: {stat:?}"))?
            .parse::<u64>()
            .map_err(|e| format!("/proc/PID/stat field {}: {e}", i + 3))
    };
    Ok(get(11)? + get(12)?)
}

/// Parses the state (field 3: `R`, `S`, `T` for stopped, ...) out of `/proc/PID/stat`.
pub fn parse_stat_state(stat: &str) -> Result<char, String> {
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .and_then(|f| f.chars().next())
        .ok_or_else(|| format!("no state in /proc/PID/stat: {stat:?}"))
}

/// The scheduler state of process `pid` (`T` while it is stopped by SIGSTOP).
pub fn state(pid: u32) -> Result<char, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    parse_stat_state(&text)
}

/// Reads the memory figures of process `pid`.
pub fn memory(pid: u32) -> Result<Memory, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    parse_status_memory(&text)
}

/// Reads the CPU time (user + system, all threads) that process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Result<Duration, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    let ticks = parse_stat_cpu_ticks(&text)?;
    // SAFETY: sysconf has no preconditions; it only reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("sysconf(_SC_CLK_TCK) returned {per_second}"))?;
    Ok(Duration::from_micros(ticks * 1_000_000 / per_second))
}

/// Time process `pid` has been *runnable* so far: running on a CPU plus waiting for one,
/// summed over its threads (fields 1 and 2 of `/proc/PID/task/TID/schedstat`, in ns).
///
/// Why not CPU time alone: on a loaded machine a thread that spins gets only its share
/// of a core, so its CPU time can look modest, but it is runnable all the time; a thread
/// that backs off sleeps and is runnable almost never. `None` when the kernel keeps no
/// schedstats.
pub fn runnable_time(pid: u32) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    for task in tasks.flatten() {
        // A thread may end while we look: skip it.
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        total += parse_schedstat(&text)?;
    }
    Some(Duration::from_nanos(total))
}

/// `run_ns wait_ns timeslices` -> `run_ns + wait_ns`.
pub fn parse_schedstat(text: &str) -> Option<u64> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some(fields.next()?? + fields.next()??)
}

/// Counts the open descriptors of process `pid` (the entries of `/proc/PID/fd`).
pub fn open_fds(pid: u32) -> Result<usize, String> {
    let path = format!("/proc/{pid}/fd");
    let dir = std::fs::read_dir(&path).map_err(|e| format!("reading {path}: {e}"))?;
    Ok(dir.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tchat-threads\nUmask:\t0022\nState:\tS (sleeping)\n\
        VmPeak:\t  123456 kB\nVmSize:\t  120000 kB\nVmHWM:\t    4321 kB\nVmRSS:\t    3000 kB\n\
        RssAnon:\t    1000 kB\nThreads:\t3\n";

    #[test]
    fn status_memory_is_parsed() {
        assert_eq!(
            parse_status_memory(STATUS),
            Ok(Memory {
                rss_kib: 3000,
                hwm_kib: 4321
            })
        );
    }

    #[test]
    fn status_without_rss_is_an_error() {
        let err = parse_status_memory("Name:\tx\nVmHWM:\t1 kB\n").unwrap_err();
        assert!(err.contains("VmRSS"), "{err}");
    }

    #[test]
    fn stat_cpu_counts_from_the_last_parenthesis() {
        // comm "(a b) c)" contains spaces and a parenthesis; utime=7, stime=5.
        let stat = "4242 ((a b) c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0 12345";
        assert_eq!(parse_stat_cpu_ticks(stat), Ok(12));
    }

    #[test]
    fn stat_state_is_the_field_after_the_name() {
        let stat = "4242 ((a b) c)) T 1 4242 4242 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0 12345";
        assert_eq!(parse_stat_state(stat), Ok('T'));
        assert!(parse_stat_state("4242 (x)").is_err());
        assert!(matches!(state(std::process::id()), Ok(c) if c != 'T'));
    }

    #[test]
    fn truncated_stat_is_an_error() {
        assert!(parse_stat_cpu_ticks("1 (x) S 1 2").is_err());
    }

    #[test]
    fn schedstat_adds_running_and_waiting() {
        assert_eq!(parse_schedstat("1052994 2897565 2\n"), Some(3_950_559));
        assert_eq!(parse_schedstat("12"), None);
    }

    #[test]
    fn our_own_process_can_be_read() {
        let me = std::process::id();
        let mem = memory(me).unwrap();
        assert!(mem.rss_kib > 0 && mem.hwm_kib >= mem.rss_kib, "{mem:?}");
        cpu_time(me).unwrap();
        assert!(open_fds(me).unwrap() >= 3);
    }
}
