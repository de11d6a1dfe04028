//! What `kaws-sdk-loop` and the bench share: reading a process' CPU time.

use std::time::Duration;

/// User + system CPU time from the text of a `/proc/<pid>/stat` (or `/proc/self/stat`). The
/// kernel counts in ticks of 10 ms, so what is measured must last seconds.
pub fn cpu_time(stat: &str) -> Duration {
    // The fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_after_a_name_with_spaces_and_parentheses() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 3 0 99";
        assert_eq!(cpu_time(stat), Duration::from_millis(3_800));
        assert_eq!(cpu_time(""), Duration::ZERO);
    }
}
