use std::time::{Duration, Instant};

use super::{CpuMeter, cpu_seconds, parse_stat};

#[test]
fn utime_and_stime_are_read_after_the_command_name() {
    // A command name with a space and a parenthesis, as `comm` allows.
    let stat =
        "4242 (memento (x) y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
    assert_eq!(parse_stat(stat), Some(325));
    assert_eq!(parse_stat("4242 (short) S 1 2"), None, "truncated");
    assert_eq!(parse_stat("no parenthesis"), None);
}

#[test]
fn a_busy_process_shows_cpu_and_a_missing_one_none() {
    let me = std::process::id();
    let meter = CpuMeter::start(&[("me", me), ("gone", u32::MAX)]);
    // Spin (not sleep) until this process has used at least 50 ms of CPU, bounded by a
    // deadline so a starved machine fails instead of hanging.
    let deadline = Instant::now() + Duration::from_secs(30);
    let start = cpu_seconds(me).expect("own /proc/self/stat");
    let mut x = 0u64;
    while cpu_seconds(me).unwrap_or(0.0) - start < 0.05 && Instant::now() < deadline {
        for i in 0..100_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
    }
    let used = meter.stop();
    let cpu = used.cpu_s.get("me").copied().expect("own figure");
    assert!(cpu >= 0.05, "{cpu} s");
    assert!(
        !used.cpu_s.contains_key("gone"),
        "no figure for a missing process"
    );
    assert!(used.us_per("me", 10).is_some_and(|us| us >= 5_000.0));
    assert_eq!(used.us_per("me", 0), None, "no work, no figure");
    assert_eq!(used.us_per("gone", 10), None);
    assert!(used.cores()["me"] > 0.0);
}
