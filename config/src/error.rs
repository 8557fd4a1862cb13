//! Config errors: every one names the file, the line and the key path it is about.

use std::fmt;
use std::path::PathBuf;

/// A dotted key path such as `models."gpt-5.4".provider`; segments that contain a dot
/// are quoted the way TOML would write them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<String>);

impl KeyPath {
    pub fn new<I, S>(segments: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        KeyPath(segments.into_iter().map(Into::into).collect())
    }

    pub fn child(&self, segment: impl Into<String>) -> Self {
        let mut next = self.0.clone();
        next.push(segment.into());
        KeyPath(next)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            let bare = !seg.is_empty()
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if bare {
                f.write_str(seg)?;
            } else {
                write!(f, "\"{seg}\"")?;
            }
        }
        Ok(())
    }
}

/// What went wrong while loading a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{file}: cannot read the config file: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is read but a key is wrong; `line` is 1-based, 0 when unknown.
    #[error("{file}:{line}: {key}: {message}")]
    Invalid {
        file: PathBuf,
        line: usize,
        key: KeyPath,
        message: String,
    },
    /// Several keys are wrong: every one, in file order, a line each.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// One error, or all of them (never an empty list).
    pub fn all(mut errors: Vec<ConfigError>) -> Option<ConfigError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => {
                errors.sort_by_key(ConfigError::line);
                Some(ConfigError::Several(errors))
            }
        }
    }

    /// Each error on its own (one for all but [`ConfigError::Several`]).
    pub fn each(&self) -> Vec<&ConfigError> {
        match self {
            ConfigError::Several(all) => all.iter().collect(),
            one => vec![one],
        }
    }

    /// The message without the location, for tests and summaries.
    pub fn message(&self) -> String {
        match self {
            ConfigError::Read { source, .. } => source.to_string(),
            ConfigError::Invalid { message, .. } => message.clone(),
            ConfigError::Several(all) => all.first().map(ConfigError::message).unwrap_or_default(),
        }
    }

    pub fn line(&self) -> usize {
        match self {
            ConfigError::Read { .. } => 0,
            ConfigError::Invalid { line, .. } => *line,
            ConfigError::Several(all) => all.first().map_or(0, ConfigError::line),
        }
    }

    pub fn key(&self) -> Option<&KeyPath> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Several(all) => all.first().and_then(ConfigError::key),
        }
    }
}

/// The closest candidate by edit distance, if it is close enough to be a likely typo.
pub fn closest<'a, I>(wrong: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(wrong, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_quote_dotted_segments() {
        let p = KeyPath::new(["models", "gpt-5.4", "provider"]);
        assert_eq!(p.to_string(), "models.\"gpt-5.4\".provider");
    }

    #[test]
    fn closest_finds_typos_only() {
        assert_eq!(closest("lisen", ["listen", "log_format"]), Some("listen"));
        assert_eq!(closest("zzzz", ["listen", "log_format"]), None);
    }
}
