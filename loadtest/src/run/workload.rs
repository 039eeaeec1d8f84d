//! The load a run puts on the daemon (closed or open loop) and what it reads from the
//! processes it measures (`/metrics`, RSS).

use super::*;

/// The load of `args` against `base`, measuring the stack's processes when spawned.
pub(crate) fn load(
    args: &RunArgs,
    scenario: &Scenario,
    base: &str,
    stack: Option<&Stack>,
    rate: Option<f64>,
) -> Load {
    Load {
        base: base.to_owned(),
        users: args.users,
        token: args
            .token
            .clone()
            .or_else(|| stack.and_then(|s| s.service_token.clone())),
        scenario: scenario.clone(),
        turns: args.turns,
        duration: args.duration,
        open: rate.map(|rate| OpenLoop {
            rate,
            seed: args.seed,
        }),
        seed: args.seed,
        quiet: args.quiet,
        processes: stack.map(Stack::processes).unwrap_or_default(),
        kill: None,
    }
}

pub(crate) fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

pub(crate) fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
