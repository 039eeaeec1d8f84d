//! Issue 7, LLM level: faults, malformed model output and prompt injection, end to end
//! through real daemon turns (`memento::daemon::Daemon` in-process, embedded memory MCP
//! server on port 0, real HTTP to its API).
//!
//! - Azure mock faults: a 429 storm, 500s, hangs, cut tool-call arguments, and (at the mock
//!   level, because the daemon never streams from the LLM) a cut stream.
//! - Prompt injection with the offline model and with a scripted OpenAI-compatible model
//!   that obeys the injection (it asks for other users' memories by `user_id`).
//! - Cancellation: a client that hangs up mid-turn stops the turn's LLM work.
//!
//! Every test is bounded ([`bounded`]) and waits on conditions ([`eventually`]), never on
//! fixed sleeps.

mod support;

mod azure;
mod cancellation;
mod injection;
mod slow_tools;
mod stream;
