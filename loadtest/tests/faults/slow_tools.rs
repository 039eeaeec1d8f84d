//! An MCP server whose tools are slow or echo their arguments, for the cancellation and
//! injection tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    Implementation, InitializeResult, ListToolsResult, PaginatedRequestParams, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler};
use serde_json::{Value, json};

/// An MCP server with two tools: `slow_note` (takes `user_id`) runs until its request is
/// cancelled, counting what it sees (rmcp#857: tool work that outlives its caller);
/// `echo` (no `user_id`) answers with the arguments it received.
#[derive(Clone, Default)]
pub struct SlowTools {
    pub started: Arc<AtomicUsize>,
    pub cancelled: Arc<AtomicUsize>,
    pub users: Arc<Mutex<Vec<String>>>,
}

impl ServerHandler for SlowTools {
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("slow-tools", "0.0.0"))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = json!({
            "type": "object",
            "properties": {"user_id": {"type": "string"}, "text": {"type": "string"}},
            "required": ["user_id", "text"],
        });
        let echo = json!({"type": "object", "properties": {"text": {"type": "string"}}});
        let (Value::Object(schema), Value::Object(echo)) = (schema, echo) else {
            return Err(ErrorData::internal_error("schema is not an object", None));
        };
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("slow_note", "Keeps a note, slowly.", schema),
            Tool::new("echo", "Says back what it got.", echo),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if request.name == "echo" {
            let received = Value::Object(request.arguments.unwrap_or_default());
            return Ok(
                CallToolResult::success(vec![ContentBlock::text(received.to_string())]).into(),
            );
        }
        let user = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("user_id"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(user);
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::select! {
            () = context.ct.cancelled() => {
                self.cancelled.fetch_add(1, Ordering::SeqCst);
                Err(ErrorData::internal_error("request cancelled", None))
            }
            () = tokio::time::sleep(Duration::from_secs(300)) => {
                Ok(CallToolResult::success(vec![ContentBlock::text("noted")]).into())
            }
        }
    }
}

pub async fn slow_tools_server(tools: SlowTools) -> String {
    let service = StreamableHttpService::new(
        move || Ok(tools.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().disable_allowed_hosts(),
    );
    let app = Router::new().nest_service("/mcp", service);
    format!("http://{}/mcp", testkit::http::serve(app).await)
}
