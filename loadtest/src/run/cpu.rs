//! CPU time of the processes under test, from `/proc/PID/stat`: what a turn costs the
//! daemon (`daemon_cpu_us_per_turn`), what a tool call costs the MCP server
//! (`mcp_cpu_us_per_call`), and how busy each process was over the measured window (so a
//! report shows when the load generator or the mock, not the daemon, ran out of CPU).
//!
//! Only Linux has `/proc`; elsewhere the figures are absent, never zero.

use std::collections::BTreeMap;
use std::time::Instant;

/// Clock ticks per second in `/proc/PID/stat`. The kernel reports utime and stime in
/// USER_HZ, which is 100 on every architecture Linux runs this on (x86, arm), whatever
/// CONFIG_HZ is.
const USER_HZ: f64 = 100.0;

/// utime + stime of a process, all its threads, in seconds; `None` when it cannot be read
/// (no such process, or no `/proc`).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|ticks| ticks as f64 / USER_HZ)
}

/// utime + stime in ticks from the text of `/proc/PID/stat`. The command name (field 2)
/// is in parentheses and may itself hold spaces and parentheses, so fields are counted
/// after the last `)`: state is the first of those, utime the 12th and stime the 13th.
pub fn parse_stat(stat: &str) -> Option<u64> {
    let after = stat.rsplit_once(')')?.1;
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU counters of named processes at the start of a window.
pub struct CpuMeter {
    started: Instant,
    start: Vec<(&'static str, u32, Option<f64>)>,
}

/// CPU used in a window, per named process.
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    /// Seconds of wall time in the window.
    pub window_s: f64,
    /// CPU seconds per process name, for the processes that could be read at both ends.
    pub cpu_s: BTreeMap<&'static str, f64>,
}

impl CpuMeter {
    /// Starts a window over `(name, pid)` processes.
    pub fn start(processes: &[(&'static str, u32)]) -> CpuMeter {
        CpuMeter {
            started: Instant::now(),
            start: processes
                .iter()
                .map(|(name, pid)| (*name, *pid, cpu_seconds(*pid)))
                .collect(),
        }
    }

    /// What each process used since [`CpuMeter::start`].
    pub fn stop(&self) -> CpuUse {
        let window_s = self.started.elapsed().as_secs_f64();
        // Several processes of one name (daemons, MCP servers) add up.
        let mut cpu_s: BTreeMap<&'static str, f64> = BTreeMap::new();
        for (name, pid, start) in &self.start {
            if let (Some(now), Some(start)) = (cpu_seconds(*pid), start) {
                *cpu_s.entry(*name).or_default() += (now - start).max(0.0);
            }
        }
        CpuUse { window_s, cpu_s }
    }
}

impl CpuUse {
    /// CPU microseconds of `process` per unit of work; `None` without the process's figure
    /// or without work.
    pub fn us_per(&self, process: &str, work: u64) -> Option<f64> {
        let cpu = self.cpu_s.get(process)?;
        (work > 0).then(|| cpu * 1e6 / work as f64)
    }

    /// Mean cores used by each process over the window (1.0 = one core busy throughout).
    pub fn cores(&self) -> BTreeMap<String, f64> {
        self.cpu_s
            .iter()
            .map(|(name, cpu)| ((*name).to_owned(), cpu / self.window_s.max(1e-9)))
            .collect()
    }
}

#[cfg(test)]
mod tests;
