//! Opaque user ids: what the provider (`user` on the wire) and traces (`memento.user.opaque`)
//! see instead of a user id.
//!
//! A pseudonym is HMAC-SHA256 of the user id under a secret key, cut to 128 bits. Without
//! the key nobody can confirm a guess ("is u3f9... alice?"), which a plain hash of a short,
//! guessable id would allow. The key is `conversation.trace_user_key` when configured, or
//! else generated once per data directory into `DATA_DIR/trace-key` (mode 0600), so a
//! user's pseudonym is stable across restarts and differs between installations.

use std::path::{Path, PathBuf};

use ring::hmac;

/// The key file in the data directory.
pub const TRACE_KEY_FILE: &str = "trace-key";
/// Shortest accepted key, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// Why no key could be had.
#[derive(Debug, thiserror::Error)]
pub enum PseudonymError {
    /// The key file could not be read or created.
    #[error("trace user key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key (configured, or in the file) is too short. The key itself is never shown.
    #[error("{origin} is shorter than {MIN_KEY_LEN} bytes")]
    TooShort {
        /// Where it came from.
        origin: String,
    },
}

/// Turns user ids into keyed pseudonyms. Cheap to share (`Arc`).
pub struct UserPseudonyms {
    key: hmac::Key,
}

impl std::fmt::Debug for UserPseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserPseudonyms(<key>)")
    }
}

impl UserPseudonyms {
    /// With this key (at least [`MIN_KEY_LEN`] bytes).
    pub fn with_key(key: &[u8]) -> UserPseudonyms {
        UserPseudonyms {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// A random key for this process only (pseudonyms change at restart). Used when no data
    /// directory is involved (an `LlmHandle` on its own, in tests).
    pub fn ephemeral() -> UserPseudonyms {
        UserPseudonyms::with_key(&rand::random::<[u8; 32]>())
    }

    /// The configured key, or the data directory's (created on first use).
    pub fn load(
        configured: Option<&str>,
        data_dir: &Path,
    ) -> Result<UserPseudonyms, PseudonymError> {
        if let Some(key) = configured {
            if key.len() < MIN_KEY_LEN {
                return Err(PseudonymError::TooShort {
                    origin: "conversation.trace_user_key".into(),
                });
            }
            return Ok(UserPseudonyms::with_key(key.as_bytes()));
        }
        let path = data_dir.join(TRACE_KEY_FILE);
        let io = |source| PseudonymError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let fresh: String = rand::random::<[u8; 32]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // Another process (or an earlier run) may have made it: then that one is used.
        if crate::shared::secret_file::create_private(&path, &fresh).map_err(io)? {
            tracing::info!(path = %path.display(), "generated the key of opaque user ids in traces");
        }
        let key = std::fs::read_to_string(&path).map_err(io)?;
        let key = key.trim();
        if key.len() < MIN_KEY_LEN {
            return Err(PseudonymError::TooShort {
                origin: path.display().to_string(),
            });
        }
        Ok(UserPseudonyms::with_key(key.as_bytes()))
    }

    /// The pseudonym of `user`: `u` and 32 hex digits.
    pub fn of(&self, user: &str) -> String {
        let tag = hmac::sign(&self.key, user.as_bytes());
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(33);
        out.push('u');
        for byte in &tag.as_ref()[..16] {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        out
    }
}
