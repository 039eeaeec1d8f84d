//! `DATA_DIR/mcp-token`: the memory server's token when none is configured.
//!
//! The MCP token acts for every user's memories, so `memento mcp-server` never serves without
//! one unless told to (`--insecure-no-token`). With no token configured it generates one
//! into this file (mode 0600, created atomically, never overwritten), and `memento serve`
//! pointed at a local server reads the same file.

use std::path::{Path, PathBuf};

/// The file's name inside the data directory.
pub const FILE_NAME: &str = "mcp-token";

/// Why the token file could not be used. Messages never contain the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// Reading or writing failed.
    #[error("token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Others may read it.
    #[error("token file {path} can be read by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It holds no usable token.
    #[error("token file {path} is empty or not one line of text; delete it to generate a new one")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
}

/// The token file of `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// The token in `data_dir`, if the file exists.
pub fn read(data_dir: &Path) -> Result<Option<String>, TokenFileError> {
    let path = path(data_dir);
    let io = |source| TokenFileError::Io {
        path: path.clone(),
        source,
    };
    let metadata = match std::fs::metadata(&path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io(error)),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenFileError::Exposed { path, mode });
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    let text = std::fs::read_to_string(&path).map_err(io)?;
    let token = text.trim();
    if token.is_empty() || token.lines().count() != 1 {
        return Err(TokenFileError::Malformed { path });
    }
    Ok(Some(token.to_owned()))
}

/// The token in `data_dir`, generating the file first when it does not exist. Returns the
/// token and whether it was just created.
pub fn load_or_create(data_dir: &Path) -> Result<(String, bool), TokenFileError> {
    if let Some(token) = read(data_dir)? {
        return Ok((token, false));
    }
    let path = path(data_dir);
    let io = |source| TokenFileError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let token = crate::shared::edge::bearer::generate()
        .map_err(|_| io(std::io::Error::other("the system random generator failed")))?;
    if crate::shared::secret_file::create_private(&path, &format!("{token}\n")).map_err(io)? {
        return Ok((token, true));
    }
    // Another process created it first: use theirs.
    read(data_dir)?
        .map(|t| (t, false))
        .ok_or(TokenFileError::Malformed { path })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn generated_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (token, created) = load_or_create(dir.path()).unwrap();
        assert!(created);
        assert_eq!(crate::shared::edge::bearer::weakness(&token), None);
        let (again, created) = load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(again, token);
        assert_eq!(read(dir.path()).unwrap(), Some(token));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(path(dir.path()), std::fs::Permissions::from_mode(0o644))
                .unwrap();
            let error = read(dir.path()).unwrap_err().to_string();
            assert!(error.contains("chmod 600"), "{error}");
        }
    }

    #[test]
    fn missing_is_none_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path(dir.path())).unwrap();
        file.write_all(b"\n\n").unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(TokenFileError::Malformed { .. })
        ));
    }
}
