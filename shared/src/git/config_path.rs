//! The target's `path` inside the repository, normalised to components.

use super::GitError;

/// A config path as `/`-free components: `/`, `.`, `./` and `` are the root; `config/prod`,
/// `/config/prod/` and `./config//prod` are the same two components. `..` is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPath {
    components: Vec<String>,
}

impl ConfigPath {
    pub fn parse(input: &str) -> Result<Self, GitError> {
        let mut components = Vec::new();
        for part in input.split(['/', '\\']) {
            match part {
                "" | "." => {}
                ".." => {
                    return Err(GitError::InvalidConfigPath {
                        path: input.to_string(),
                        reason: "`..` would leave the repository".into(),
                    });
                }
                other => components.push(other.to_string()),
            }
        }
        Ok(Self { components })
    }

    pub fn components(&self) -> &[String] {
        &self.components
    }

    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// `config/prod`, or `/` for the root.
    pub fn display(&self) -> String {
        if self.is_root() {
            "/".to_string()
        } else {
            self.components.join("/")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_spellings_normalise_to_no_components() {
        for input in ["", "/", ".", "./", "//"] {
            let path = ConfigPath::parse(input).unwrap();

            assert!(path.is_root(), "{input}");
        }
    }

    #[test]
    fn leading_trailing_and_doubled_slashes_are_dropped() {
        let path = ConfigPath::parse("./config//prod/").unwrap();

        assert_eq!(path.components(), ["config", "prod"]);
        assert_eq!(path.display(), "config/prod");
    }

    #[test]
    fn parent_components_are_refused() {
        let err = ConfigPath::parse("config/../../etc").unwrap_err();

        assert!(err.to_string().contains("`..`"), "{err}");
    }
}
