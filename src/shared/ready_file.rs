//! `--ready-file PATH` (`memento serve`, `memento mcp-server`, `memento-loadtest mock-azure`):
//! once a server listens, it writes one JSON object to PATH, so a supervisor, a script or a
//! test learns the bound address (port 0) without scraping the human-readable lines on
//! stdout.
//!
//! The file appears atomically: the object is written to `PATH.tmp` (same directory), synced
//! and renamed over PATH, so a reader that sees PATH sees the whole object. A reader waits
//! for PATH to exist; the file is not removed at exit (a stale file from an earlier run must
//! be deleted before starting, as with any pid file).
//!
//! ```json
//! {"pid": 4242, "http_addr": "127.0.0.1:8080", "url": "http://127.0.0.1:8080",
//!  "mcp_url": "http://127.0.0.1:8000/mcp"}
//! ```
//!
//! - `pid`: the server's process id.
//! - `http_addr`: the bound `IP:PORT` of its HTTP listener; `url`: the same as a base URL.
//! - `mcp_url`: `serve`: the memory MCP server the daemon uses (the embedded one or
//!   `--mcp-url`); `mcp-server`: its Streamable HTTP endpoint (`URL/mcp`). Absent for the mock.
//! - `sse_url`: `mcp-server` only: its legacy HTTP+SSE endpoint (`URL/sse`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The object a ready file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// The server's process id.
    pub pid: u32,
    /// The bound address of its HTTP listener (`IP:PORT`).
    pub http_addr: SocketAddr,
    /// `http://` + `http_addr`: the base URL.
    pub url: String,
    /// The memory MCP server's Streamable HTTP endpoint (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_url: Option<String>,
    /// The memory server's legacy HTTP+SSE endpoint (`mcp-server` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse_url: Option<String>,
}

impl Ready {
    /// This process listening on `addr`, with no MCP endpoints.
    pub fn this_process(addr: SocketAddr) -> Ready {
        Ready {
            pid: std::process::id(),
            http_addr: addr,
            url: format!("http://{addr}"),
            mcp_url: None,
            sse_url: None,
        }
    }
}

/// Why a ready file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ReadyFileError {
    /// Writing, syncing or renaming failed.
    #[error("cannot write the ready file {path}: {source}")]
    Write {
        /// The ready file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading failed (other than "not there yet").
    #[error("cannot read the ready file {path}: {source}")]
    Read {
        /// The ready file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no ready object.
    #[error("the ready file {path} is not a ready object: {source}")]
    Parse {
        /// The ready file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// Writes `ready` to `path` atomically (`path.tmp`, fsync, rename).
pub fn write(path: &Path, ready: &Ready) -> Result<(), ReadyFileError> {
    let error = |source| ReadyFileError::Write {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut json = serde_json::to_vec(ready).map_err(|e| error(std::io::Error::other(e)))?;
    json.push(b'\n');
    let mut file = std::fs::File::create(&tmp).map_err(error)?;
    file.write_all(&json).map_err(error)?;
    file.sync_all().map_err(error)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(error)
}

/// Reads the ready file at `path`: `Ok(None)` while it does not exist yet.
pub fn read(path: &Path) -> Result<Option<Ready>, ReadyFileError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ReadyFileError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| ReadyFileError::Parse {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests;
