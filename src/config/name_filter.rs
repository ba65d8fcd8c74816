//! Selecting names by an include and an exclude regex, as `topics` and
//! `groups` both do: each regex must match the whole name, and a pattern
//! that does not compile is an error naming its config key.

use regex::Regex;

use super::ConfigError;

/// Compiles `pattern`, the value of config key `key`, to match whole names only.
pub(super) fn anchored(key: &str, pattern: &str) -> Result<Regex, ConfigError> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| ConfigError::Invalid {
        key: key.to_owned(),
        reason: format!("not a valid regex: {e}"),
    })
}

/// The names `include` matches and `exclude` does not.
#[derive(Debug, Clone)]
pub(super) struct NameFilter {
    include: Regex,
    exclude: Option<Regex>,
}

impl NameFilter {
    /// Compiles the `include` and `exclude` keys of section `key` (`topics`,
    /// `flows[0].groups`, ...), whose names prefix the errors.
    pub(super) fn new(
        key: &str,
        include: &str,
        exclude: Option<&str>,
    ) -> Result<NameFilter, ConfigError> {
        Ok(NameFilter {
            include: anchored(&format!("{key}.include"), include)?,
            exclude: exclude
                .map(|p| anchored(&format!("{key}.exclude"), p))
                .transpose()?,
        })
    }

    /// Whether the whole name matches `include` and not `exclude`.
    pub(super) fn matches(&self, name: &str) -> bool {
        self.include.is_match(name) && !self.exclude.as_ref().is_some_and(|e| e.is_match(name))
    }
}
