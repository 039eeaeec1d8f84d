//! A private nginx on a free loopback port running deploy/nginx/memento.conf (the file
//! compose mounts) in front of given daemons: the load test's multi-daemon stack and
//! tests/it/deploy.rs use this one starter.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// deploy/nginx/memento.conf.
pub const SITE: &str = include_str!("../../deploy/nginx/memento.conf");

/// A running nginx; stopped with SIGTERM (the master stops its workers) on drop.
pub struct Nginx {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL, which would orphan the workers.
        let _ = crate::process::sigterm(self.child.id());
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Starts nginx in front of `daemons` (base URLs) with `error_log stderr LOG_LEVEL`;
    /// returns once it accepts connections (10 s at most).
    pub async fn start(daemons: &[String], log_level: &str) -> anyhow::Result<Nginx> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let servers: Vec<String> = daemons
            .iter()
            .map(|url| {
                let address = url.trim_start_matches("http://").trim_end_matches('/');
                format!("server {address} max_fails=1 fail_timeout=10s;")
            })
            .collect();
        let site = fill_section(SITE, "daemons", &servers)?;
        let site = fill_section(&site, "listen", &[format!("listen 127.0.0.1:{port};")])?;
        let r = root.display();
        std::fs::write(root.join("memento.conf"), site)?;
        std::fs::write(
            root.join("nginx.conf"),
            format!(
                "pid {r}/nginx.pid;\nerror_log stderr {log_level};\nworker_processes 1;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {r}/body;\n\
                 proxy_temp_path {r}/proxy;\n  include {r}/memento.conf;\n}}\n"
            ),
        )?;
        let child = Command::new(binary()?)
            .arg("-p")
            .arg(root)
            .arg("-c")
            .arg(root.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start nginx")?;
        let mut nginx = Nginx {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(nginx);
            }
            if let Ok(Some(status)) = nginx.child.try_wait() {
                bail!("nginx exited at start: {status}");
            }
            if tokio::time::Instant::now() > deadline {
                bail!("nginx did not listen on 127.0.0.1:{port} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The master's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Replaces the lines between `# BEGIN name` and `# END name` of an nginx site with `lines`.
pub fn fill_section(config: &str, name: &str, lines: &[String]) -> anyhow::Result<String> {
    let begin = format!("# BEGIN {name}");
    let end = format!("# END {name}");
    let mut out = Vec::new();
    let mut inside = false;
    let mut found = false;
    for line in config.lines() {
        let trimmed = line.trim();
        if trimmed == begin {
            inside = true;
            found = true;
            out.push(line.to_owned());
            out.extend(lines.iter().map(|l| format!("    {l}")));
        } else if trimmed == end {
            inside = false;
            out.push(line.to_owned());
        } else if !inside {
            out.push(line.to_owned());
        }
    }
    if !found {
        bail!("deploy/nginx/memento.conf has no `{begin}` marker");
    }
    Ok(out.join("\n"))
}

/// The nginx binary: a packaged one, else what tests/services/nginx.sh installs.
fn binary() -> anyhow::Result<PathBuf> {
    let known = ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if let Some(path) = known {
        return Ok(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/services/nginx.sh");
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !output.status.success() || !path.exists() {
        bail!("nginx is not installed: `bash tests/services/nginx.sh` installs it (apt-get)");
    }
    Ok(path)
}

#[cfg(test)]
mod tests;
