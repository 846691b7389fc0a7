//! A refused configuration, and the key path it names.

use std::fmt;

/// A refused configuration: `path` is the dotted key path (`budgets.rpm.window_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "invalid configuration: {}", self.message)
        } else {
            write!(f, "invalid configuration at `{}`: {}", self.path, self.message)
        }
    }
}

pub(super) fn err<T>(path: impl Into<String>, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError { path: path.into(), message: message.into() })
}

/// Refusals worded by the raw structs while serde reads (`raw/tagged.rs`) start with this
/// mark, so that they read as `compile`'s own do: without serde_json's " at line L column C".
pub(super) const WORDED: &str = "\u{1}";

impl From<serde_path_to_error::Error<serde_json::Error>> for ConfigError {
    fn from(e: serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let text = inner.to_string();
        let message = match text.strip_prefix(WORDED) {
            Some(ours) => ours.strip_suffix(&format!(" at line {} column {}", inner.line(), inner.column())).unwrap_or(ours).to_string(),
            None => text,
        };
        ConfigError { path, message }
    }
}
