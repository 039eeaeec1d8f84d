//! `memento-loadtest run --otlp-endpoint URL`: the spawned daemon and MCP server export their
//! traces there (any OTLP collector; `deploy/jaeger-local.sh` starts a Jaeger), and the report
//! says how many spans each side queued, exported and dropped.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The daemon's service name in the traces.
pub const DAEMON_SERVICE: &str = "memento";
/// The MCP server's service name in the traces.
pub const MCP_SERVICE: &str = "memento-mcp-server";

/// The `OTEL_*` variables that make a spawned `memento` process export to `endpoint`.
pub fn otel_env(
    endpoint: Option<&str>,
    protocol: &str,
    service: &str,
) -> Vec<(&'static str, String)> {
    match endpoint {
        Some(endpoint) => vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
            ("OTEL_SERVICE_NAME", service.to_owned()),
        ],
        None => Vec::new(),
    }
}

/// One process's span export counters at the end of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExportCounts {
    /// Spans handed to the export queue.
    pub queued: u64,
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans dropped because the export queue was full.
    pub dropped: u64,
    /// Export requests that failed (their spans are lost).
    pub export_failures: u64,
}

impl ExportCounts {
    /// Queued spans not exported (yet): still in the queue or in flight, or in a failed
    /// export request. Spans dropped at a full queue were never queued.
    pub fn pending(&self) -> u64 {
        self.queued.saturating_sub(self.exported)
    }
}

/// Span export of both spawned services (`--otlp-endpoint`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TelemetryReport {
    /// Where the spans went.
    pub endpoint: String,
    /// `http/protobuf` or `grpc`.
    pub protocol: String,
    /// The daemon's counters (its `/metrics`).
    pub daemon: ExportCounts,
    /// The MCP server's counters (its `/stats`).
    pub mcp_server: ExportCounts,
    /// Every queued span was exported on both sides: none dropped, no failed export.
    pub no_loss: bool,
}

/// Reads both services' export counters, waiting up to 15 s for their queues to drain (a
/// batch leaves at most every 500 ms) so that the counts are final.
pub async fn export_report(
    http: &reqwest::Client,
    endpoint: &str,
    protocol: &str,
    daemon_url: &str,
    mcp_url: &str,
    mcp_token: &str,
) -> TelemetryReport {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let daemon = daemon_counts(http, daemon_url).await;
        let mcp_server = mcp_counts(http, mcp_url, mcp_token).await;
        // The spans of a failed export request stay "pending" forever: stop waiting then.
        let settled = |c: &ExportCounts| c.pending() == 0 || c.export_failures > 0;
        if (settled(&daemon) && settled(&mcp_server)) || Instant::now() > deadline {
            let no_loss = [&daemon, &mcp_server]
                .iter()
                .all(|c| c.dropped == 0 && c.export_failures == 0 && c.pending() == 0);
            return TelemetryReport {
                endpoint: endpoint.to_owned(),
                protocol: protocol.to_owned(),
                daemon,
                mcp_server,
                no_loss,
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn daemon_counts(http: &reqwest::Client, daemon_url: &str) -> ExportCounts {
    let text = match http.get(format!("{daemon_url}/metrics")).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let metric = |name| crate::run::metric(&text, name).unwrap_or(0);
    ExportCounts {
        queued: metric("memento_trace_spans_queued_total"),
        exported: metric("memento_trace_spans_exported_total"),
        dropped: metric("memento_trace_spans_dropped_total"),
        export_failures: metric("memento_trace_export_failures_total"),
    }
}

async fn mcp_counts(http: &reqwest::Client, mcp_url: &str, mcp_token: &str) -> ExportCounts {
    let stats: serde_json::Value = match http
        .get(format!("{mcp_url}/stats"))
        .bearer_auth(mcp_token)
        .send()
        .await
    {
        Ok(response) => response.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    };
    let telemetry = &stats["telemetry"];
    let count = |key: &str| telemetry[key].as_u64().unwrap_or(0);
    ExportCounts {
        queued: count("spans_queued"),
        exported: count("spans_exported"),
        dropped: count("spans_dropped"),
        export_failures: count("export_failures"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_only_with_an_endpoint() {
        assert!(otel_env(None, "grpc", DAEMON_SERVICE).is_empty());
        let env = otel_env(Some("http://127.0.0.1:4317"), "grpc", MCP_SERVICE);
        assert!(env.contains(&(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4317".into()
        )));
        assert!(env.contains(&("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into())));
        assert!(env.contains(&("OTEL_SERVICE_NAME", MCP_SERVICE.into())));
    }

    #[test]
    fn pending_is_what_was_queued_and_not_exported() {
        let counts = ExportCounts {
            queued: 100,
            exported: 90,
            dropped: 7,
            export_failures: 0,
        };
        assert_eq!(counts.pending(), 10);
    }
}
