//! `mcp-bench` against an in-process memory server, both ways of sending a call: every store
//! lands (the server's write counter moves by the calls made) and none fails.

use std::time::Duration;

use clap::Parser;
use memento_loadtest::mcp_bench::{self, CallPath, McpBenchArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: McpBenchArgs,
}

async fn bench(calls: &str) -> mcp_bench::BenchReport {
    let cli = Cli::parse_from([
        "mcp-bench",
        "--tools",
        "store,retrieve",
        "--clients",
        "1,4",
        "--duration",
        "1s",
        "--users",
        "5",
        "--calls",
        calls,
    ]);
    assert_eq!(cli.args.duration, Duration::from_secs(1));
    mcp_bench::run(cli.args).await.expect("mcp-bench runs")
}

#[tokio::test]
async fn stores_and_retrievals_land_over_json_and_over_sessions() {
    for (flag, path) in [("json", CallPath::Json), ("session", CallPath::Session)] {
        let report = bench(flag).await;
        assert_eq!(report.calls, path);
        assert_eq!(report.results.len(), 4, "{flag}");
        for result in &report.results {
            assert_eq!(result.errors, 0, "{flag}: {} errors", result.tool);
            assert!(
                result.calls > 0,
                "{flag}: no {} call completed",
                result.tool
            );
        }
        // Stores commit in groups: at least one store per commit.
        assert!(
            report.stores_per_commit.is_some_and(|n| n >= 1.0),
            "{flag}: {:?}",
            report.stores_per_commit
        );
    }
}
