//! The Azure OpenAI mock over real HTTP: paths, keys and versions, error bodies, tool calls
//! and their follow-up, streaming, quotas, fault injection, `/stats`, the CLI, and the
//! official Python `AzureOpenAI` client.

mod support;

mod cli;
mod quota_faults;
mod wire;
