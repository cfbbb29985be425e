//! What `/proc` says of a local process: its CPU time and resident memory. The daemon may
//! run elsewhere (a `tcp://` socket): then its pids name nothing here, and `top` shows `-`.

use std::fs;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reading {
    /// User and system CPU time, in clock ticks (`utime + stime`).
    pub(crate) ticks: u64,
    /// Resident set size in KiB (`VmRSS`); `None` for a zombie, which has none.
    pub(crate) rss_kib: Option<u64>,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; `None` if there is no such process.
pub(crate) fn read(pid: i64) -> Option<Reading> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    parse(&stat, &status)
}

/// The reading in the text of `stat` and `status`.
pub(crate) fn parse(stat: &str, status: &str) -> Option<Reading> {
    // pid (comm) state ...: comm may hold spaces and parentheses, the fields follow the
    // last ')'. After it, index 0 is field 3 (state): utime (14) and stime (15) are 11, 12.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    Some(Reading { ticks, rss_kib })
}

/// The clock ticks per second of `/proc`'s CPU times (`sysconf(_SC_CLK_TCK)`, 100 on
/// Linux everywhere in practice).
pub(crate) fn ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as f64,
        _ => 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_are_read_past_a_tricky_name() {
        let stat =
            "4242 (w0 (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 77 1000 300";
        let status = "Name:\tw0\nVmPeak:\t  9000 kB\nVmRSS:\t    4096 kB\nThreads:\t1\n";
        assert_eq!(
            parse(stat, status),
            Some(Reading {
                ticks: 300,
                rss_kib: Some(4096)
            })
        );
        assert_eq!(parse(stat, "Name:\tzombie\n").unwrap().rss_kib, None);
        assert_eq!(parse("4242 (w0) S 1", ""), None);
        assert_eq!(parse("garbage", ""), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let me = read(i64::from(std::process::id())).expect("our own /proc entry");
        assert!(me.rss_kib.is_some_and(|k| k > 0), "{me:?}");
        assert!(read(i64::from(i32::MAX)).is_none());
        assert!(ticks_per_second() >= 1.0);
    }
}
