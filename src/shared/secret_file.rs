//! Secrets the processes keep in their data directory (`mcp-token`, `trace-key`): created
//! once, atomically, readable by the owner only (mode 0600), never overwritten.

use std::io::Write;
use std::path::Path;

/// Creates `path` with `contents` (mode 0600, fsynced) unless it exists. Returns whether it
/// was created; `Ok(false)` means another process or an earlier run made it first.
pub fn create_private(path: &Path, contents: &str) -> std::io::Result<bool> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(contents.as_bytes())?;
            file.sync_all()?;
            Ok(true)
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        assert!(create_private(&path, "one").unwrap());
        assert!(!create_private(&path, "two").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
