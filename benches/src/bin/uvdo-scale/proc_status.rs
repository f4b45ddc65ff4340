//! The process's own memory, as the kernel counts it: `VmRSS` (resident now) and `VmHWM`
//! (the peak resident size since the process started) from `/proc/self/status`.

use crate::BenchError;

/// Resident memory of this process, in KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Memory {
    pub(crate) rss_kib: u64,
    pub(crate) hwm_kib: u64,
}

/// Parses the `VmRSS` and `VmHWM` lines of a `/proc/PID/status` text.
pub(crate) fn parse(status: &str) -> Option<Memory> {
    Some(Memory {
        rss_kib: field_kib(status, "VmRSS")?,
        hwm_kib: field_kib(status, "VmHWM")?,
    })
}

/// The value of a `Name:   1234 kB` line.
fn field_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (key, rest) = line.split_once(':')?;
        if key != name {
            return None;
        }
        let mut words = rest.split_whitespace();
        let value = words.next()?.parse().ok()?;
        (words.next() == Some("kB")).then_some(value)
    })
}

/// This process's memory now.
pub(crate) fn read_self() -> Result<Memory, BenchError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse(&status).ok_or_else(|| "no VmRSS/VmHWM in /proc/self/status".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tuvdo-scale\nVmPeak:\t  912345 kB\nVmHWM:\t  401234 kB\n\
                          VmRSS:\t  399876 kB\nRssAnon:\t  390000 kB\nThreads:\t3\n";

    #[test]
    fn reads_rss_and_peak_in_kib() {
        assert_eq!(
            parse(STATUS),
            Some(Memory {
                rss_kib: 399_876,
                hwm_kib: 401_234
            })
        );
    }

    #[test]
    fn refuses_missing_fields_units_and_prefix_matches() {
        assert_eq!(parse("VmRSS:\t 10 kB\n"), None);
        assert_eq!(parse("VmRSS:\t 10 MB\nVmHWM:\t 12 kB\n"), None);
        // `VmRSSx` is not `VmRSS`.
        assert_eq!(parse("VmRSSx:\t 10 kB\nVmHWM:\t 12 kB\n"), None);
    }

    #[test]
    fn this_process_has_some_memory() {
        let memory = read_self().unwrap();
        assert!(memory.rss_kib > 0 && memory.hwm_kib >= memory.rss_kib);
    }
}
