//! `memento chat`: the seed's interactive loop, as a client of the daemon's HTTP API.
//!
//! Interactive on a terminal (line editing and history with rustyline, a spinner while a
//! turn runs); line by line from a pipe otherwise, printing only the answers, so scripts can
//! use it. Every failure is a one-line message, and the loop goes on.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;

use memento::shared::api::{
    ErrorBody, History, HistoryMessage, MessageRequest, MessageResponse, StreamEvent, ToolCall,
};
use memento::shared::domain::{UserId, ValidationError};
use memento::shared::sse::SseParser;

/// Flags of `memento chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    /// Who you are: 1 to 64 characters of A-Z a-z 0-9 . _ - (switch later with /user NAME).
    #[arg(long, env = "MEMENTO_USER")]
    pub user: String,
    /// The daemon's URL.
    #[arg(long, env = "MEMENTO_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token, when the daemon has tokens configured.
    #[arg(long, env = "MEMENTO_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Show each tool call with its arguments and result, and the trace id of every turn.
    #[arg(long)]
    pub verbose: bool,
    /// Wait for whole answers instead of streaming each turn's progress.
    #[arg(long)]
    pub no_stream: bool,
}

/// Why a chat request failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The daemon is not there.
    #[error("cannot reach the Memento daemon at {0}: is `memento serve` running?")]
    Unreachable(String),
    /// The token is missing or wrong.
    #[error("the daemon refused the request ({0}): check --token / MEMENTO_TOKEN")]
    Auth(String),
    /// The daemon answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Error code.
        code: String,
        /// Error message.
        message: String,
    },
    /// The answer could not be read.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
    /// A bad user name.
    #[error(transparent)]
    InvalidUser(#[from] ValidationError),
    /// The terminal failed.
    #[error("terminal error: {0}")]
    Terminal(String),
}

/// A turn's result as the API returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnReply {
    /// The answer.
    pub reply: String,
    /// Tool calls (`name`, `arguments`, `result`, `is_error`).
    pub tool_calls: Vec<ToolCall>,
    /// Trace id for Jaeger.
    pub trace_id: String,
}

/// A small client of the daemon's API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl ApiClient {
    /// A client of the daemon at `base`.
    pub fn new(base: &str, token: Option<String>) -> ApiClient {
        ApiClient {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ChatError> {
        let response = request.send().await.map_err(|e| {
            if e.is_connect() || e.is_request() {
                ChatError::Unreachable(self.base.clone())
            } else {
                ChatError::Protocol(e.to_string())
            }
        })?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(response);
        }
        let (code, message) = match response.json::<ErrorBody>().await {
            Ok(body) => (body.error.code, body.error.message),
            Err(_) => ("error".to_owned(), format!("HTTP {status}")),
        };
        if status == 401 || (status == 403 && code != "loopback_only") {
            return Err(ChatError::Auth(message));
        }
        Err(ChatError::Api {
            status,
            code,
            message,
        })
    }

    /// One turn, answered whole.
    pub async fn send_turn(&self, user: &UserId, message: &str) -> Result<TurnReply, ChatError> {
        let response = self
            .send(
                self.request(reqwest::Method::POST, &format!("/v1/users/{user}/messages"))
                    .json(&MessageRequest {
                        message: message.to_owned(),
                    }),
            )
            .await?;
        let body: MessageResponse = response
            .json()
            .await
            .map_err(|e| ChatError::Protocol(format!("unexpected answer: {e}")))?;
        Ok(TurnReply::from(body))
    }

    /// One turn, streamed: `on_event` sees the progress events (`tool_call`, `tool_result`,
    /// `text`) as they happen.
    pub async fn stream_turn(
        &self,
        user: &UserId,
        message: &str,
        mut on_event: impl FnMut(StreamEvent),
    ) -> Result<TurnReply, ChatError> {
        let response = self
            .send(
                self.request(reqwest::Method::POST, &format!("/v1/users/{user}/messages"))
                    .header(reqwest::header::ACCEPT, "text/event-stream")
                    .json(&MessageRequest {
                        message: message.to_owned(),
                    }),
            )
            .await?;
        let mut parser = SseParser::new(16 * 1024 * 1024);
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ChatError::Protocol(e.to_string()))?;
            let events = parser
                .push(&chunk)
                .map_err(|e| ChatError::Protocol(e.to_string()))?;
            for event in events {
                let parsed = StreamEvent::parse(&event.event, &event.data).map_err(|e| {
                    ChatError::Protocol(format!("unexpected {} event: {e}", event.event))
                })?;
                match parsed {
                    Some(StreamEvent::Done(answer)) => return Ok(TurnReply::from(answer)),
                    Some(StreamEvent::Error(body)) => {
                        return Err(ChatError::Api {
                            status: 0,
                            code: body.error.code,
                            message: body.error.message,
                        });
                    }
                    Some(progress) => on_event(progress),
                    None => {}
                }
            }
        }
        Err(ChatError::Protocol(
            "the stream ended without an answer".into(),
        ))
    }

    /// The conversation so far, oldest first.
    pub async fn history(&self, user: &UserId) -> Result<Vec<HistoryMessage>, ChatError> {
        let response = self
            .send(self.request(reqwest::Method::GET, &format!("/v1/users/{user}/history")))
            .await?;
        let body: History = response
            .json()
            .await
            .map_err(|e| ChatError::Protocol(format!("unexpected answer: {e}")))?;
        Ok(body.messages)
    }

    /// Forgets the conversation (not the memories).
    pub async fn reset(&self, user: &UserId) -> Result<(), ChatError> {
        self.send(self.request(
            reqwest::Method::DELETE,
            &format!("/v1/users/{user}/history"),
        ))
        .await?;
        Ok(())
    }
}

/// The turn's answer, from the API's shared body ([`memento::shared::api`]).
impl From<MessageResponse> for TurnReply {
    fn from(body: MessageResponse) -> TurnReply {
        TurnReply {
            reply: body.reply,
            tool_calls: body.tool_calls,
            trace_id: body.trace_id,
        }
    }
}

/// A line the person typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Send as a turn.
    Message(String),
    /// `/user NAME`.
    SwitchUser(UserId),
    /// `/history`.
    History,
    /// `/reset`.
    Reset,
    /// `/quit`.
    Quit,
    /// `/help`.
    Help,
    /// Nothing to do.
    Empty,
}

/// Parses one input line; `Err` is a message for the person.
pub fn parse_input(line: &str) -> Result<Input, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(Input::Empty);
    }
    let Some(command) = line.strip_prefix('/') else {
        return Ok(Input::Message(line.to_owned()));
    };
    let mut parts = command.split_whitespace();
    match (parts.next().unwrap_or(""), parts.next()) {
        ("user", Some(name)) => UserId::parse(name)
            .map(Input::SwitchUser)
            .map_err(|e| e.to_string()),
        ("user", None) => Err("usage: /user NAME".into()),
        ("history", _) => Ok(Input::History),
        ("reset", _) => Ok(Input::Reset),
        ("quit" | "exit" | "q", _) => Ok(Input::Quit),
        ("help" | "?", _) => Ok(Input::Help),
        (other, _) => Err(format!("unknown command /{other}; try /help")),
    }
}

const HELP: &str = "Commands: /user NAME (switch user), /history (the conversation so far), \
/reset (forget the conversation, not the memories), /quit. Anything else is sent to Memento.";

/// Renders a turn for the terminal.
pub fn render_reply(reply: &TurnReply, verbose: bool, streamed_tools: bool) -> String {
    let mut out = String::new();
    if verbose && !streamed_tools {
        for call in &reply.tool_calls {
            out.push_str(&render_tool_call(call));
            out.push('\n');
        }
    }
    out.push_str(&format!("🧠 Memento: {}", reply.reply));
    if verbose && !reply.trace_id.is_empty() {
        out.push_str(&format!("\n   trace_id: {}", reply.trace_id));
    }
    out
}

fn render_tool_call(call: &ToolCall) -> String {
    let marker = if call.is_error { "✗" } else { "↳" };
    let result: String = call.result.chars().take(300).collect();
    format!("   {marker} {}({}) → {result}", call.name, call.arguments)
}

/// Renders the conversation history.
pub fn render_history(messages: &[HistoryMessage]) -> String {
    if messages.is_empty() {
        return "(no conversation yet)".into();
    }
    messages
        .iter()
        .filter_map(|m| {
            let content = m.content.as_deref().unwrap_or_default();
            match m.role.as_str() {
                "user" => Some(format!("you: {content}")),
                "assistant" if !content.is_empty() => Some(format!("🧠 Memento: {content}")),
                "assistant" => {
                    let names: Vec<&str> = m
                        .tool_calls
                        .iter()
                        .map(|call| call.function.name.as_str())
                        .collect();
                    Some(format!("   (called {})", names.join(", ")))
                }
                _ => None,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `memento chat`: interactive on a terminal, line by line otherwise.
pub async fn run(args: ChatArgs) -> Result<(), ChatError> {
    let user = UserId::parse(&args.user)?;
    if std::io::stdin().is_terminal() {
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || interactive(args, user, handle))
            .await
            .map_err(|e| ChatError::Terminal(e.to_string()))?
    } else {
        let stdin = std::io::stdin();
        let stdout = std::io::stdout();
        let failures = run_script(&args, stdin.lock(), stdout.lock()).await?;
        if failures.all_unreachable {
            return Err(ChatError::Unreachable(args.url));
        }
        Ok(())
    }
}

/// What a script run saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScriptOutcome {
    /// Turns sent.
    pub turns: usize,
    /// Turns that failed.
    pub failed: usize,
    /// Every turn failed because the daemon was unreachable.
    pub all_unreachable: bool,
}

/// Reads lines from `input`, runs each as a turn (or command), writes answers to `output`.
pub async fn run_script(
    args: &ChatArgs,
    input: impl BufRead,
    mut output: impl Write,
) -> Result<ScriptOutcome, ChatError> {
    let client = ApiClient::new(&args.url, args.token.clone());
    let mut user = UserId::parse(&args.user)?;
    let mut outcome = ScriptOutcome::default();
    let mut unreachable = 0;
    let write = |output: &mut dyn Write, text: &str| {
        writeln!(output, "{text}").map_err(|e| ChatError::Terminal(e.to_string()))
    };
    for line in input.lines() {
        let line = line.map_err(|e| ChatError::Terminal(e.to_string()))?;
        match parse_input(&line) {
            Ok(Input::Empty) => {}
            Ok(Input::Quit) => break,
            Ok(Input::Help) => write(&mut output, HELP)?,
            Ok(Input::SwitchUser(next)) => {
                user = next;
                write(&mut output, &format!("(now talking as {user})"))?;
            }
            Ok(Input::History) => match client.history(&user).await {
                Ok(messages) => write(&mut output, &render_history(&messages))?,
                Err(error) => write(&mut output, &format!("error: {error}"))?,
            },
            Ok(Input::Reset) => match client.reset(&user).await {
                Ok(()) => write(
                    &mut output,
                    "(conversation forgotten; your memories are kept)",
                )?,
                Err(error) => write(&mut output, &format!("error: {error}"))?,
            },
            Ok(Input::Message(message)) => {
                outcome.turns += 1;
                let result = if args.no_stream {
                    client.send_turn(&user, &message).await
                } else {
                    let mut lines = Vec::new();
                    let verbose = args.verbose;
                    let result = client
                        .stream_turn(&user, &message, |event| {
                            if let (true, StreamEvent::ToolResult(result)) = (verbose, &event) {
                                lines.push(render_tool_call(&result.call));
                            }
                        })
                        .await;
                    for line in lines {
                        write(&mut output, &line)?;
                    }
                    result
                };
                match result {
                    Ok(reply) => write(
                        &mut output,
                        &render_reply(&reply, args.verbose, !args.no_stream),
                    )?,
                    Err(error) => {
                        outcome.failed += 1;
                        if matches!(error, ChatError::Unreachable(_)) {
                            unreachable += 1;
                        }
                        write(&mut output, &format!("error: {error}"))?;
                    }
                }
            }
            Err(message) => write(&mut output, &message)?,
        }
    }
    outcome.all_unreachable = outcome.turns > 0 && unreachable == outcome.turns;
    Ok(outcome)
}

fn history_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    let dir = base.join("memento");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join("chat_history"))
}

fn interactive(
    args: ChatArgs,
    mut user: UserId,
    runtime: tokio::runtime::Handle,
) -> Result<(), ChatError> {
    use rustyline::error::ReadlineError;
    let client = ApiClient::new(&args.url, args.token.clone());
    let mut editor =
        rustyline::DefaultEditor::new().map_err(|e| ChatError::Terminal(e.to_string()))?;
    let history = history_file();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    println!("🧠 Memento chat as {user} at {}. {HELP}", args.url);
    loop {
        let line = match editor.readline(&format!("{user}> ")) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(error) => return Err(ChatError::Terminal(error.to_string())),
        };
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.as_str());
        }
        match parse_input(&line) {
            Ok(Input::Empty) => {}
            Ok(Input::Quit) => break,
            Ok(Input::Help) => println!("{HELP}"),
            Ok(Input::SwitchUser(next)) => {
                user = next;
                println!("(now talking as {user})");
            }
            Ok(Input::History) => match runtime.block_on(client.history(&user)) {
                Ok(messages) => println!("{}", render_history(&messages)),
                Err(error) => eprintln!("error: {error}"),
            },
            Ok(Input::Reset) => match runtime.block_on(client.reset(&user)) {
                Ok(()) => println!("(conversation forgotten; your memories are kept)"),
                Err(error) => eprintln!("error: {error}"),
            },
            Ok(Input::Message(message)) => {
                let spinner = indicatif::ProgressBar::new_spinner();
                spinner.set_message("thinking…");
                spinner.enable_steady_tick(Duration::from_millis(100));
                let verbose = args.verbose;
                let result = if args.no_stream {
                    runtime.block_on(client.send_turn(&user, &message))
                } else {
                    runtime.block_on(client.stream_turn(&user, &message, |event| {
                        if let (true, StreamEvent::ToolResult(result)) = (verbose, &event) {
                            spinner.println(render_tool_call(&result.call));
                        }
                    }))
                };
                spinner.finish_and_clear();
                match result {
                    Ok(reply) => println!("{}", render_reply(&reply, verbose, !args.no_stream)),
                    Err(error) => eprintln!("error: {error}"),
                }
            }
            Err(message) => eprintln!("{message}"),
        }
        let _ = std::io::stdout().flush();
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
